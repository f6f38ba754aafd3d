/*
 * ir_helpers.h: small builders shared by the tests that make Graph IR nodes
 * by hand (test_shape.c, test_ops_table.c, and test_eval.c, test_eval_nn.c
 * and test_eval_back.c through eval_helpers.h): shp() writes a shape
 * inline, def() gives an op's default attributes to adjust, and
 * op_is_backward_only() tells the ops that only autodiff makes.
 *
 * Everything is static inline, so including this header gives the test
 * file private helpers and nothing to link.
 */
#ifndef KILN_TESTS_IR_HELPERS_H
#define KILN_TESTS_IR_HELPERS_H

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "ir.h"

/* shp(rank, dims...): the shape with those dimensions. */
static inline Shape shp(int rank, ...) {
  va_list ap;
  Shape s = {0};
  va_start(ap, rank);
  s.rank = rank;
  for (int i = 0; i < rank; i++)
    s.dim[i] = va_arg(ap, int);
  va_end(ap);
  return s;
}

static inline Attrs def(Op op) {
  Attrs at;
  attrs_default(op, &at);
  return at;
}

/* The ops only autodiff makes and nothing else computes: the backward
 * kernels (named *_back or *_back_*, e.g. maxpool2d_back, conv2d_back_w)
 * and gradient aggregation (add_n).  test_ops_table.c checks they are
 * internal; eval_helpers.h gives them to test_eval_back.c. */
static inline bool op_is_backward_only(Op op) {
  const char *nm = op_info[op].name;
  size_t len = strlen(nm);
  return op == OP_ADD_N || strstr(nm, "_back_") != NULL ||
         (len > 5 && strcmp(nm + len - 5, "_back") == 0);
}

#endif
