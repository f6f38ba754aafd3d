/*
 * eval_helpers.h: the scaffolding shared by test_eval.c, test_eval_nn.c and
 * test_eval_back.c, the reference evaluator's tests (one test binary each,
 * so each file has its own copy of the state below).
 *
 * A case calls reset(), builds nodes with IN_F / IN_I (inputs with their
 * data), iota_input(), rand_input() and mk(), calls run(), and checks
 * values with EXPECT_F / EXPECT_I, check_shape() and dot().  run() (through go()) records
 * which ops were evaluated; each file's last test, test_every_op_covered,
 * calls check_ops_covered() for the ops eval_test_file() gives that file,
 * so between them the three binaries (test_eval, test_eval_nn,
 * test_eval_back) check that every op in ops.def is evaluated by some case
 * (tests/test_ops_table.c lists them).
 *
 * Everything is static (inline), so including this header in one test
 * file gives that file private helpers and nothing to link.
 */
#ifndef KILN_TESTS_EVAL_HELPERS_H
#define KILN_TESTS_EVAL_HELPERS_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ir.h"
#include "ir_helpers.h"

static Arena *A;
static Graph *G;
static Eval EV;
static bool ev_on;
static bool covered[OP_COUNT];
static const Loc L0;

/* Pending input bindings, bound by run(). */
static struct { Node *n; void *data; } binds[16];
static int n_binds;

static inline void reset(void) {
  if (ev_on)
    eval_free(&EV);
  ev_on = false;
  arena_free(A);
  A = arena_new();
  G = graph_new(A, "t");
  n_binds = 0;
}

static inline Node *input(const char *name, DType dt, Shape s, void *data, int count) {
  Node *n = graph_input(G, name, dt, s, L0);
  assert_int_equal(shape_numel(&s), count);
  assert_true(n_binds < countof(binds));
  binds[n_binds].n = n;
  binds[n_binds++].data = data;
  return n;
}

#define FL(...) ((float[]){__VA_ARGS__})
#define IN_F(name, s, ...) input(name, DT_F32, s, FL(__VA_ARGS__), countof(FL(__VA_ARGS__)))
#define IN_I(name, s, ...) \
  input(name, DT_I32, s, (int32_t[]){__VA_ARGS__}, countof(((int32_t[]){__VA_ARGS__})))

/* mk(op, attrs or NULL, n_in, inputs...) */
static inline Node *mk(Op op, const Attrs *at, int n_in, ...) {
  Node *in[8];
  va_list ap;
  va_start(ap, n_in);
  for (int i = 0; i < n_in; i++)
    in[i] = va_arg(ap, Node *);
  va_end(ap);
  Attrs d = def(op);
  return graph_add_checked(G, op, in, n_in, at ? at : &d, L0);
}

/* Starts an evaluation with the pending bindings; go() runs it. */
static inline void prep(void) {
  if (ev_on)
    eval_free(&EV);
  eval_init(&EV, G);
  ev_on = true;
  for (int i = 0; i < n_binds; i++)
    eval_bind(&EV, binds[i].n, binds[i].data);
}

static inline void go(void) {
  char err[256] = "";
  if (eval_run(&EV, NULL, err, sizeof err) != 0)
    fail_msg("eval_run: %s", err);
  for (int i = 0; i < G->n_nodes; i++)
    covered[G->nodes[i]->op] = true;
}

static inline void run(void) {
  prep();
  go();
}

static inline float *fv(const Node *n) { return EV.vals[n->id].data; }
static inline int32_t *iv(const Node *n) { return EV.vals[n->id].data; }

static inline void check_shape(const Node *n, Shape s) {
  char a[160], b[160];
  if (!shape_eq(&n->shape, &s))
    fail_msg("%s: shape %s, want %s", n->name, shape_str(&n->shape, a, sizeof a),
             shape_str(&s, b, sizeof b));
}

/* Relative tolerance tol (plus tol absolute near 0); NaN must match NaN. */
static inline void check_f(const Node *n, const float *want, int cnt, double tol) {
  assert_int_equal(n->dtype, DT_F32);
  assert_int_equal(shape_numel(&n->shape), cnt);
  for (int i = 0; i < cnt; i++) {
    double got = fv(n)[i], w = want[i];
    bool ok = isnan(w) ? isnan(got) : fabs(got - w) <= tol * (1.0 + fabs(w));
    if (!ok)
      fail_msg("%s (%s)[%d] = %.9g, want %.9g", n->name, op_name(n->op), i, got, w);
  }
}

static inline void check_i(const Node *n, const int32_t *want, int cnt) {
  assert_int_equal(n->dtype, DT_I32);
  assert_int_equal(shape_numel(&n->shape), cnt);
  for (int i = 0; i < cnt; i++)
    if (iv(n)[i] != want[i])
      fail_msg("%s (%s)[%d] = %d, want %d", n->name, op_name(n->op), i, iv(n)[i], want[i]);
}

#define TOL 1e-6
#define EXPECT_F(n, ...) check_f(n, FL(__VA_ARGS__), countof(FL(__VA_ARGS__)), TOL)
#define EXPECT_I(n, ...) \
  check_i(n, (int32_t[]){__VA_ARGS__}, countof(((int32_t[]){__VA_ARGS__})))

/* 0, 1, 2, ... as f32 data for an input of shape s. */
static inline Node *iota_input(const char *name, Shape s) {
  int64_t cnt = shape_numel(&s);
  float *d = arena_alloc(A, sizeof(float) * (size_t)cnt);
  for (int64_t i = 0; i < cnt; i++)
    d[i] = (float)i;
  return input(name, DT_F32, s, d, (int)cnt);
}

/* Pooling attributes, the same on both axes: a k x k window, stride s (0
 * means the default, the kernel size), padding p and dilation d (which
 * avgpool2d has no attribute for, so it ignores d). */
static inline Attrs pool_at(Op op, int k, int s, int p, int d) {
  Attrs at = def(op);
  at.kernel[0] = at.kernel[1] = k, at.stride[0] = at.stride[1] = s;
  at.pad[0] = at.pad[1] = p, at.dilation[0] = at.dilation[1] = d;
  return at;
}

/* Deterministic pseudo-random f32 data in [-1, 1) for an input of shape s
 * (a 64-bit LCG; the adjoint tests need values, not statistics). */
static inline Node *rand_input(const char *name, Shape s, uint64_t seed) {
  int64_t cnt = shape_numel(&s);
  float *d = arena_alloc(A, sizeof(float) * (size_t)(cnt ? cnt : 1));
  uint64_t st = seed * 2862933555777941757ull + 3037000493ull;
  for (int64_t i = 0; i < cnt; i++) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    d[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return input(name, DT_F32, s, d, (int)cnt);
}

/* <a, b>: the inner product of two evaluated f32 nodes of the same size,
 * in double. */
static inline double dot(const Node *a, const Node *b) {
  assert_int_equal(shape_numel(&a->shape), shape_numel(&b->shape));
  double s = 0.0;
  for (int64_t i = 0; i < shape_numel(&a->shape); i++)
    s += (double)fv(a)[i] * fv(b)[i];
  return s;
}

/* Frees the last case's graph and evaluation: main gives it to cmocka as
 * the group teardown, so leak checkers see a clean run. */
static inline int teardown(void **state) {
  (void)state;
  reset();
  if (ev_on)
    eval_free(&EV);
  arena_free(A);
  return 0;
}

/* --- coverage ---------------------------------------------------------------------- */

/* The file whose cases must evaluate op.  The ops autodiff makes (the
 * backward kernels and add_n, op_is_backward_only) and stop_gradient
 * belong to test_eval_back.c; the other network ops, the reuse-heavy loop
 * nests (CL_COMPLEX: matmul, convolutions, pooling, upsampling) and the
 * opaque ops (CL_OPAQUE: embedding, cross_entropy, dropout), to
 * test_eval_nn.c; everything else (leaves, elementwise, reductions, data
 * movement) to test_eval.c.  Every op gets exactly one file, so a new op
 * fails the coverage test of its file until a case there runs it. */
static inline const char *eval_test_file(Op op) {
  OpClass c = op_info[op].cls;
  if (op_is_backward_only(op) || op == OP_STOP_GRADIENT)
    return "test_eval_back.c";
  return c == CL_COMPLEX || c == CL_OPAQUE ? "test_eval_nn.c" : "test_eval.c";
}

/* Each op that eval_test_file() assigns to file must have been evaluated
 * by run() or go() in this process. */
static inline void check_ops_covered(const char *file) {
  int mine = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    if (strcmp(eval_test_file((Op)op), file) != 0)
      continue;
    mine++;
    if (!covered[op])
      fail_msg("no test in %s evaluates %s", file, op_name((Op)op));
  }
  assert_true(mine > 0);
}

#endif
