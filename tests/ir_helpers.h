/*
 * ir_helpers.h: small builders shared by the tests that make Graph IR nodes
 * by hand (test_shape.c, and test_eval.c / test_eval_nn.c through
 * eval_helpers.h): shp() writes a shape inline, def() gives an op's
 * default attributes to adjust.
 *
 * Everything is static inline, so including this header gives the test
 * file private helpers and nothing to link.
 */
#ifndef KILN_TESTS_IR_HELPERS_H
#define KILN_TESTS_IR_HELPERS_H

#include <stdarg.h>

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

#endif
