/*
 * test_shape.c: the shape and dtype rules (ir/shape.c, ir/shape_nn.c),
 * exercised through graph_add: accepted nodes get the right shape, dtype
 * and normalized attributes; rejected ones add nothing and report the
 * offending input (ShapeErr.arg, -1 for the op as a whole) and a sentence
 * naming the op and the types involved.
 *
 * Adding a case: in a `static void test_x(void **state)`, call reset(),
 * make inputs with in_f / in_i, then either
 *     ok(add(OP_X, &attrs, n, inputs...), shp(rank, dims...));
 * or
 *     bad(add(OP_X, &attrs, n, inputs...), arg, "substring of the message");
 * and list the test in main().  Expected sizes are worked out by hand from
 * the formulas in shape_nn.c's header (floor division).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ir.h"
#include "ir_helpers.h"

static Arena *A;
static Graph *G;
static ShapeErr E;
static const Loc L0;

static void reset(void) {
  arena_free(A);
  A = arena_new();
  G = graph_new(A, "t");
}

/* The group teardown: frees the last case's graph. */
static int teardown(void **state) {
  (void)state;
  arena_free(A);
  return 0;
}

static Node *in_f(Shape s) { return graph_input(G, "x", DT_F32, s, L0); }
static Node *in_i(Shape s) { return graph_input(G, "k", DT_I32, s, L0); }

/* add(op, attrs or NULL for the defaults, n_in, inputs...) */
static Node *add(Op op, const Attrs *at, int n_in, ...) {
  Node *in[8];
  va_list ap;
  va_start(ap, n_in);
  for (int i = 0; i < n_in; i++)
    in[i] = va_arg(ap, Node *);
  va_end(ap);
  Attrs d = def(op);
  return graph_add(G, op, in, n_in, at ? at : &d, L0, &E);
}

static void ok(const Node *n, Shape s) {
  char a[160], b[160];
  if (!n)
    fail_msg("unexpected shape error: %s", E.msg);
  if (!shape_eq(&n->shape, &s))
    fail_msg("%s: shape %s, want %s", op_name(n->op), shape_str(&n->shape, a, sizeof a),
             shape_str(&s, b, sizeof b));
}

static void bad(const Node *n, int arg, const char *sub) {
  if (n)
    fail_msg("%s was accepted; wanted an error containing \"%s\"", op_name(n->op), sub);
  if (!strstr(E.msg, sub))
    fail_msg("error \"%s\" does not contain \"%s\"", E.msg, sub);
  if (E.arg != arg)
    fail_msg("error \"%s\" names input %d, want %d", E.msg, E.arg, arg);
}

/* An error caused by an attribute's value must name that attribute. */
static void bad_attr(const Node *n, const char *attr, const char *sub) {
  bad(n, -1, sub);
  if (!E.attr || strcmp(E.attr, attr) != 0)
    fail_msg("error \"%s\" names attribute %s, want %s", E.msg, E.attr ? E.attr : "none", attr);
}

/* --- elementwise ----------------------------------------------------------- */

static void test_broadcast(void **state) {
  reset();
  Node *a = in_f(shp(2, 2, 3)), *b = in_f(shp(1, 3)), *s = in_f(shp(0));
  ok(add(OP_ADD, NULL, 2, a, b), shp(2, 2, 3));
  ok(add(OP_MUL, NULL, 2, in_f(shp(3, 4, 1, 3)), in_f(shp(2, 2, 1))), shp(3, 4, 2, 3));
  ok(add(OP_SUB, NULL, 2, s, in_f(shp(1, 5))), shp(1, 5));
  ok(add(OP_DIV, NULL, 2, s, s), shp(0));
  ok(add(OP_ADD, NULL, 2, in_f(shp(2, 0, 3)), in_f(shp(1, 1))), shp(2, 0, 3));
  bad(add(OP_ADD, NULL, 2, a, in_f(shp(1, 4))), 1, "add: cannot broadcast f32[2, 3] with f32[4]");
  bad(add(OP_MAXIMUM, NULL, 2, in_f(shp(2, 2, 3)), in_f(shp(2, 3, 3))), 1,
      "maximum: cannot broadcast f32[2, 3] with f32[3, 3]");
  Node *k = in_i(shp(1, 3));
  int before = G->n_nodes;
  bad(add(OP_ADD, NULL, 2, a, k), 1,
      "add: operands have different dtypes, f32[2, 3] and i32[3]");
  assert_int_equal(G->n_nodes, before); /* nothing was added */
}

static void test_elementwise_dtypes(void **state) {
  reset();
  Node *k = in_i(shp(1, 3)), *x = in_f(shp(1, 3));
  bad(add(OP_RELU, NULL, 1, k), 0, "relu expects f32, got i32[3]");
  bad(add(OP_EXP, NULL, 1, k), 0, "exp expects f32, got i32[3]");
  bad(add(OP_DIV, NULL, 2, k, k), 0, "div expects f32, got i32[3]");
  Node *n = add(OP_NEG, NULL, 1, k);
  ok(n, shp(1, 3));
  assert_int_equal(n->dtype, DT_I32);
  n = add(OP_LESS, NULL, 2, x, x);
  ok(n, shp(1, 3));
  assert_int_equal(n->dtype, DT_I32);
  bad(add(OP_EQUAL, NULL, 2, x, k), 1, "different dtypes");
  Attrs c = def(OP_CAST);
  c.to = DT_I32;
  n = add(OP_CAST, &c, 1, x);
  assert_int_equal(n->dtype, DT_I32);
  Attrs cl = def(OP_CLAMP), sp = def(OP_SOFTPLUS);
  cl.alpha = 2, cl.beta = 1, sp.alpha = 0;
  bad_attr(add(OP_CLAMP, &cl, 1, x), "min", "clamp: min 2 is greater than max 1");
  bad_attr(add(OP_SOFTPLUS, &sp, 1, x), "beta", "softplus: beta must be positive");
  bad(add(OP_ADD, NULL, 1, x), -1, "add takes 2 tensor inputs, got 1");
  bad(add(OP_CONCAT, NULL, 0), -1, "concat takes at least one tensor");
}

static void test_where(void **state) {
  reset();
  Node *c = in_i(shp(2, 2, 1)), *a = in_f(shp(2, 2, 3)), *b = in_f(shp(0));
  ok(add(OP_WHERE, NULL, 3, c, a, b), shp(2, 2, 3));
  bad(add(OP_WHERE, NULL, 3, in_i(shp(1, 4)), a, b), 0,
      "where: condition i32[4] does not broadcast");
  bad(add(OP_WHERE, NULL, 3, c, a, in_i(shp(0))), 2, "different dtypes");
}

/* --- reductions -------------------------------------------------------------- */

static void test_reduce(void **state) {
  reset();
  Node *x = in_f(shp(3, 2, 3, 4));
  Attrs s = def(OP_SUM), k = def(OP_MEAN), bad_ax = def(OP_SUM), dup = def(OP_MAX);
  s.n_axes = 2, s.axes[0] = -1, s.axes[1] = 0;
  k.n_axes = 1, k.axes[0] = 1, k.keepdims = true;
  bad_ax.n_axes = 1, bad_ax.axes[0] = 3;
  dup.n_axes = 2, dup.axes[0] = 0, dup.axes[1] = -3;
  Node *n = add(OP_SUM, &s, 1, x);
  ok(n, shp(1, 3));
  assert_true(n->at.axes[0] == 2 && n->at.axes[1] == 0); /* normalized */
  ok(add(OP_MEAN, &k, 1, x), shp(3, 2, 1, 4));
  n = add(OP_SUM, NULL, 1, x);
  ok(n, shp(0));
  assert_int_equal(n->at.n_axes, 3); /* default: every axis, made explicit */
  bad_attr(add(OP_SUM, &bad_ax, 1, x), "axis", "sum: axis 3 is out of range for f32[2, 3, 4]");
  bad_attr(add(OP_MAX, &dup, 1, x), "axis", "max: axis -3 is listed twice");
  bad(add(OP_MEAN, NULL, 1, in_i(shp(1, 2))), 0, "mean expects f32, got i32[2]");
  bad(add(OP_MAX, NULL, 1, in_f(shp(2, 0, 2))), 0, "max over an empty axis");
  Attrs am = def(OP_ARGMAX);
  am.axis = -2;
  n = add(OP_ARGMAX, &am, 1, x);
  ok(n, shp(2, 2, 4));
  assert_true(n->dtype == DT_I32 && n->at.axis == 1);
  am.axis = 5;
  bad_attr(add(OP_ARGMAX, &am, 1, x), "axis", "argmax: axis 5 is out of range");
  Attrs sm = def(OP_SOFTMAX);
  sm.axis = 3;
  bad_attr(add(OP_SOFTMAX, &sm, 1, x), "axis", "softmax: axis 3 is out of range for f32[2, 3, 4]");
  bad(add(OP_LOG_SOFTMAX, NULL, 1, in_i(shp(1, 2))), 0, "log_softmax expects f32");
}

/* --- data movement ----------------------------------------------------------- */

static Attrs reshape_at(int rank, int64_t a, int64_t b, int64_t c) {
  Attrs at = def(OP_RESHAPE);
  at.n_shape = rank, at.shape[0] = a, at.shape[1] = b, at.shape[2] = c;
  return at;
}

static void test_reshape(void **state) {
  reset();
  Node *x = in_f(shp(3, 2, 3, 4)), *y = in_f(shp(2, 2, 3));
  Attrs r1 = reshape_at(2, -1, 4, 0), r2 = reshape_at(2, 0, -1, 0), r3 = reshape_at(2, 4, 2, 0);
  Attrs r4 = reshape_at(2, -1, 4, 0), r5 = reshape_at(2, -1, -1, 0), r6 = reshape_at(1, -1, 0, 0);
  Node *n = add(OP_RESHAPE, &r1, 1, x);
  ok(n, shp(2, 6, 4));
  assert_int_equal(n->at.shape[0], 6); /* -1 resolved in the attributes */
  ok(add(OP_RESHAPE, &r2, 1, x), shp(2, 2, 12)); /* 0 copies the input's dim */
  ok(add(OP_RESHAPE, &r6, 1, x), shp(1, 24));
  bad_attr(add(OP_RESHAPE, &r3, 1, y), "shape",
           "reshape: cannot reshape f32[2, 3] (6 elements) to [4, 2] (8 elements)");
  bad_attr(add(OP_RESHAPE, &r4, 1, y), "shape", "cannot infer the -1 dimension");
  bad_attr(add(OP_RESHAPE, &r5, 1, y), "shape", "more than one -1");
}

static void test_transpose(void **state) {
  reset();
  Node *x = in_f(shp(3, 2, 3, 4)), *y = in_f(shp(2, 2, 3));
  Attrs p = def(OP_TRANSPOSE), dup = def(OP_TRANSPOSE), len = def(OP_TRANSPOSE);
  p.n_axes = 3, p.axes[0] = 1, p.axes[1] = -1, p.axes[2] = 0;
  dup.n_axes = 2, dup.axes[0] = 0, dup.axes[1] = 0;
  len.n_axes = 3, len.axes[0] = 0, len.axes[1] = 1, len.axes[2] = 2;
  Node *n = add(OP_TRANSPOSE, &p, 1, x);
  ok(n, shp(3, 3, 4, 2));
  assert_int_equal(n->at.axes[1], 2);
  ok(add(OP_TRANSPOSE, NULL, 1, x), shp(3, 2, 4, 3)); /* default: swap the last two */
  bad_attr(add(OP_TRANSPOSE, &dup, 1, y), "perm", "transpose: perm is not a permutation of 0..1");
  bad_attr(add(OP_TRANSPOSE, &len, 1, y), "perm", "perm has 3 axes but the input is f32[2, 3]");
  bad(add(OP_TRANSPOSE, NULL, 1, in_f(shp(1, 3))), 0, "needs at least 2 axes");
}

static void test_movement(void **state) {
  reset();
  Node *x = in_f(shp(2, 4, 5)), *y = in_f(shp(2, 3, 5));
  Attrs c1 = def(OP_CONCAT), b = def(OP_BROADCAST_TO), sl = def(OP_SLICE);
  c1.axis = -2;
  ok(add(OP_CONCAT, &c1, 3, x, y, x), shp(2, 11, 5));
  c1.axis = 1;
  bad(add(OP_CONCAT, &c1, 2, x, y), 1,
      "concat: f32[3, 5] does not match f32[4, 5] except on axis 1");
  bad(add(OP_CONCAT, &c1, 2, x, in_i(shp(2, 4, 1))), 1, "does not match");
  b.n_shape = 3, b.shape[0] = 7, b.shape[1] = 4, b.shape[2] = 5;
  ok(add(OP_BROADCAST_TO, &b, 1, x), shp(3, 7, 4, 5));
  b.n_shape = 2, b.shape[0] = 2, b.shape[1] = 5;
  bad(add(OP_BROADCAST_TO, &b, 1, x), 0, "broadcast_to: cannot broadcast f32[4, 5] to [2, 5]");
  sl.begin[0] = 1, sl.end[0] = 4, sl.step[0] = 2;
  sl.begin[1] = -3, sl.end[1] = 99, sl.step[1] = 1;
  Node *n = add(OP_SLICE, &sl, 1, x);
  ok(n, shp(2, 2, 3));
  assert_true(n->at.begin[1] == 2 && n->at.end[1] == 5); /* clamped like Python */
  sl.step[1] = 0;
  bad(add(OP_SLICE, &sl, 1, x), -1, "slice: step must be positive, got 0");
  Attrs f = def(OP_FULL), ar = def(OP_ARANGE);
  f.n_shape = 2, f.shape[0] = 2, f.shape[1] = 3, f.to = DT_I32;
  n = add(OP_FULL, &f, 0);
  ok(n, shp(2, 2, 3));
  assert_int_equal(n->dtype, DT_I32);
  f.n_shape = 2, f.shape[0] = 1 << 21, f.shape[1] = 1 << 20;
  bad(add(OP_FULL, &f, 0), -1, "more than 2^40 elements");
  ar.n_shape = 1, ar.shape[0] = 5;
  ok(add(OP_ARANGE, &ar, 0), shp(1, 5));
  ar.shape[0] = -1;
  bad_attr(add(OP_ARANGE, &ar, 0), "n", "arange: n must be one non-negative integer");
  Attrs rn = def(OP_RANDN);
  rn.n_shape = 2, rn.shape[0] = 4, rn.shape[1] = 3;
  n = add(OP_RANDN, &rn, 0);
  ok(n, shp(2, 4, 3));
  assert_int_equal(n->dtype, DT_F32);
  rn.shape[1] = -3;
  bad_attr(add(OP_RANDN, &rn, 0), "shape", "randn: negative dimension in [4, -3]");
}

/* --- matmul, convolution, pooling ------------------------------------------------ */

static void test_matmul(void **state) {
  reset();
  Attrs ta = def(OP_MATMUL), tb = def(OP_MATMUL);
  ta.ta = true, tb.tb = true;
  ok(add(OP_MATMUL, NULL, 2, in_f(shp(2, 2, 3)), in_f(shp(2, 3, 5))), shp(2, 2, 5));
  ok(add(OP_MATMUL, &ta, 2, in_f(shp(2, 3, 2)), in_f(shp(2, 3, 5))), shp(2, 2, 5));
  ok(add(OP_MATMUL, &tb, 2, in_f(shp(2, 2, 3)), in_f(shp(2, 5, 3))), shp(2, 2, 5));
  ok(add(OP_MATMUL, NULL, 2, in_f(shp(4, 7, 1, 2, 3)), in_f(shp(3, 5, 3, 4))),
     shp(4, 7, 5, 2, 4));
  bad(add(OP_MATMUL, NULL, 2, in_f(shp(2, 2, 3)), in_f(shp(2, 4, 5))), 1,
      "matmul: inner dimensions differ: f32[2, 3] @ f32[4, 5] (3 vs 4)");
  bad(add(OP_MATMUL, &tb, 2, in_f(shp(2, 2, 3)), in_f(shp(2, 3, 5))), 1,
      "(with transposes) (3 vs 5)");
  bad(add(OP_MATMUL, NULL, 2, in_f(shp(1, 3)), in_f(shp(2, 3, 5))), 0, "at least 2 axes");
  bad(add(OP_MATMUL, NULL, 2, in_f(shp(3, 2, 2, 3)), in_f(shp(3, 3, 3, 4))), 1,
      "matmul: batch dimensions of f32[2, 2, 3] and f32[3, 3, 4] do not broadcast");
  bad(add(OP_MATMUL, NULL, 2, in_i(shp(2, 2, 3)), in_f(shp(2, 3, 5))), 0,
      "matmul expects f32 for input 1, got i32[2, 3]");
}

static Attrs conv_attrs(Op op, int stride, int pad, int dil, int groups) {
  Attrs at = def(op);
  at.stride[0] = at.stride[1] = stride, at.pad[0] = at.pad[1] = pad;
  at.dilation[0] = at.dilation[1] = dil, at.groups = groups;
  return at;
}

/* out = (in + 2 pad - dil (k - 1) - 1) / stride + 1:
 * 32, k5 -> 28; 7, k3 d2 -> 3; 5, k3 s2 p1 -> 3; 8, k3 s3 -> 2 (floor). */
static void test_conv2d(void **state) {
  reset();
  Attrs plain = conv_attrs(OP_CONV2D, 1, 0, 1, 1), d2 = conv_attrs(OP_CONV2D, 1, 0, 2, 1);
  Attrs s2p1 = conv_attrs(OP_CONV2D, 2, 1, 1, 1), s3 = conv_attrs(OP_CONV2D, 3, 0, 1, 1);
  Attrs g3 = conv_attrs(OP_CONV2D, 1, 0, 1, 3), dw = conv_attrs(OP_CONV2D, 1, 1, 1, 4);
  Node *n = add(OP_CONV2D, &plain, 2, in_f(shp(4, 1, 3, 32, 32)), in_f(shp(4, 6, 3, 5, 5)));
  ok(n, shp(4, 1, 6, 28, 28)); /* the seeds' 32x32x3 * six 5x5 filters */
  assert_true(n->at.kernel[0] == 5 && n->at.kernel[1] == 5);
  ok(add(OP_CONV2D, &d2, 2, in_f(shp(4, 1, 1, 7, 7)), in_f(shp(4, 1, 1, 3, 3))),
     shp(4, 1, 1, 3, 3));
  ok(add(OP_CONV2D, &s2p1, 2, in_f(shp(4, 2, 1, 5, 5)), in_f(shp(4, 4, 1, 3, 3))),
     shp(4, 2, 4, 3, 3));
  ok(add(OP_CONV2D, &s3, 2, in_f(shp(4, 1, 1, 8, 8)), in_f(shp(4, 1, 1, 3, 3))),
     shp(4, 1, 1, 2, 2));
  ok(add(OP_CONV2D, &dw, 2, in_f(shp(4, 1, 4, 6, 6)), in_f(shp(4, 4, 1, 3, 3))),
     shp(4, 1, 4, 6, 6)); /* depthwise */
  bad(add(OP_CONV2D, &plain, 2, in_f(shp(2, 64, 784)), in_f(shp(4, 6, 1, 5, 5))), 0,
      "conv2d expects a 4-D input [N, C, H, W], got f32[64, 784]");
  bad(add(OP_CONV2D, &plain, 2, in_f(shp(4, 1, 3, 8, 8)), in_f(shp(4, 6, 4, 3, 3))), 1,
      "conv2d: weight f32[6, 4, 3, 3] expects 4 input channels (groups=1), but the input "
      "f32[1, 3, 8, 8] has 3");
  bad_attr(add(OP_CONV2D, &g3, 2, in_f(shp(4, 1, 4, 8, 8)), in_f(shp(4, 6, 2, 3, 3))), "groups",
      "groups=3 must divide both 4 input and 6 output channels");
  bad(add(OP_CONV2D, &plain, 2, in_f(shp(4, 1, 1, 4, 4)), in_f(shp(4, 1, 1, 5, 5))), 0,
      "conv2d: the 5x5 kernel (dilation 1, pad 0) does not fit in the f32[1, 1, 4, 4] input");
  bad(add(OP_CONV2D, &d2, 2, in_f(shp(4, 1, 1, 4, 4)), in_f(shp(4, 1, 1, 3, 3))), 0,
      "does not fit"); /* span 5 > 4 */
  Attrs s0 = conv_attrs(OP_CONV2D, 0, 0, 1, 1);
  bad_attr(add(OP_CONV2D, &s0, 2, in_f(shp(4, 1, 1, 4, 4)), in_f(shp(4, 1, 1, 3, 3))), "stride",
      "conv2d: stride must be at least 1, got 0");
}

/* out = (in - 1) stride - 2 pad + dil (k - 1) + output_padding + 1:
 * 3, k3 s2 p1 op1 -> 6; 3, k3 d2 -> 7; 2, k3 s1 -> 4. */
static void test_conv_transpose2d(void **state) {
  reset();
  const Op T = OP_CONV_TRANSPOSE2D;
  Attrs a = conv_attrs(T, 2, 1, 1, 1), d = conv_attrs(T, 1, 0, 2, 1);
  Attrs g = conv_attrs(T, 1, 0, 1, 2), p = conv_attrs(T, 1, 0, 1, 1);
  a.out_pad[0] = a.out_pad[1] = 1;
  ok(add(OP_CONV_TRANSPOSE2D, &a, 2, in_f(shp(4, 1, 1, 3, 3)), in_f(shp(4, 1, 2, 3, 3))),
     shp(4, 1, 2, 6, 6));
  ok(add(OP_CONV_TRANSPOSE2D, &d, 2, in_f(shp(4, 1, 1, 3, 3)), in_f(shp(4, 1, 1, 3, 3))),
     shp(4, 1, 1, 7, 7));
  ok(add(OP_CONV_TRANSPOSE2D, &p, 2, in_f(shp(4, 1, 1, 2, 2)), in_f(shp(4, 1, 1, 3, 3))),
     shp(4, 1, 1, 4, 4));
  ok(add(OP_CONV_TRANSPOSE2D, &g, 2, in_f(shp(4, 1, 4, 2, 2)), in_f(shp(4, 4, 3, 1, 1))),
     shp(4, 1, 6, 2, 2)); /* C_out = 3 * groups */
  a.out_pad[0] = 2;
  bad_attr(add(OP_CONV_TRANSPOSE2D, &a, 2, in_f(shp(4, 1, 1, 3, 3)), in_f(shp(4, 1, 2, 3, 3))),
           "output_padding",
      "output_padding 2 must be smaller than stride 2 or dilation 1");
  bad(add(OP_CONV_TRANSPOSE2D, &p, 2, in_f(shp(4, 1, 2, 3, 3)), in_f(shp(4, 1, 2, 3, 3))), 1,
      "conv_transpose2d: weight f32[1, 2, 3, 3] expects 1 input channels, but the input "
      "f32[1, 2, 3, 3] has 2");
  g.groups = 3;
  bad_attr(add(OP_CONV_TRANSPOSE2D, &g, 2, in_f(shp(4, 1, 4, 2, 2)), in_f(shp(4, 4, 3, 1, 1))),
           "groups",
      "groups=3 must divide");
}

static Attrs pool_attrs(Op op, int k, int s, int p) {
  Attrs at = def(op);
  at.kernel[0] = at.kernel[1] = k, at.stride[0] = at.stride[1] = s;
  at.pad[0] = at.pad[1] = p;
  return at;
}

static void test_pool(void **state) {
  reset();
  Node *x = in_f(shp(4, 2, 3, 8, 8));
  Attrs k2 = pool_attrs(OP_MAXPOOL2D, 2, 0, 0), k3 = pool_attrs(OP_AVGPOOL2D, 3, 2, 1);
  Attrs big = pool_attrs(OP_MAXPOOL2D, 2, 1, 2), none = def(OP_MAXPOOL2D);
  Attrs huge = pool_attrs(OP_AVGPOOL2D, 9, 1, 0);
  Node *n = add(OP_MAXPOOL2D, &k2, 1, x);
  ok(n, shp(4, 2, 3, 4, 4));
  assert_true(n->at.stride[0] == 2 && n->at.stride[1] == 2); /* stride 0 -> kernel */
  ok(add(OP_AVGPOOL2D, &k3, 1, x), shp(4, 2, 3, 4, 4)); /* (8 + 2 - 3) / 2 + 1 */
  bad_attr(add(OP_MAXPOOL2D, &big, 1, x), "pad", "maxpool2d: pad 2 must be at most half the kernel 2");
  bad_attr(add(OP_MAXPOOL2D, &none, 1, x), "kernel", "maxpool2d: kernel must be at least 1, got 0");
  bad(add(OP_AVGPOOL2D, &huge, 1, x), 0, "avgpool2d: the 9x9 window does not fit");
  bad(add(OP_MAXPOOL2D, &k2, 1, in_f(shp(3, 3, 8, 8))), 0,
      "maxpool2d expects a 4-D input [N, C, H, W], got f32[3, 8, 8]");
  Attrs up = def(OP_UPSAMPLE);
  ok(add(OP_UPSAMPLE, &up, 1, in_f(shp(4, 1, 2, 3, 4))), shp(4, 1, 2, 6, 8));
  up.scale = 0;
  bad_attr(add(OP_UPSAMPLE, &up, 1, x), "scale", "upsample: scale must be an integer in 1..1024, got 0");
}

/* --- opaque ops ---------------------------------------------------------------- */

static void test_opaque(void **state) {
  reset();
  Node *ids = in_i(shp(2, 2, 3)), *tab = in_f(shp(2, 10, 4));
  ok(add(OP_EMBEDDING, NULL, 2, ids, tab), shp(3, 2, 3, 4));
  bad(add(OP_EMBEDDING, NULL, 2, ids, in_f(shp(1, 10))), 1,
      "embedding expects a 2-D table [V, D], got f32[10]");
  bad(add(OP_EMBEDDING, NULL, 2, in_f(shp(1, 2)), tab), 0,
      "embedding expects i32 for input 1, got f32[2]");
  Node *lg = in_f(shp(2, 4, 10));
  Node *n = add(OP_CROSS_ENTROPY, NULL, 2, lg, in_i(shp(1, 4)));
  ok(n, shp(0));
  bad(add(OP_CROSS_ENTROPY, NULL, 2, lg, in_i(shp(2, 4, 1))), 1,
      "cross_entropy: labels must be i32[4] to match logits f32[4, 10], got i32[4, 1]");
  bad(add(OP_CROSS_ENTROPY, NULL, 2, lg, in_f(shp(1, 4))), 1,
      "cross_entropy expects i32 for input 2, got f32[4]");
  Attrs d = def(OP_DROPOUT);
  ok(add(OP_DROPOUT, &d, 1, lg), shp(2, 4, 10));
  d.p = 1;
  bad_attr(add(OP_DROPOUT, &d, 1, lg), "p", "dropout: p must be in [0, 1), got 1");
}

/* --- backward-only ops (made by autodiff, ir/grad.c) ------------------------------- */

/* add_n, slice_back, upsample_back, embedding_back, cross_entropy_back. */
static void test_backward_simple(void **state) {
  reset();
  Node *a = in_f(shp(2, 2, 3)), *b = in_f(shp(2, 2, 3));
  ok(add(OP_ADD_N, NULL, 3, a, b, a), shp(2, 2, 3));
  ok(add(OP_ADD_N, NULL, 1, a), shp(2, 2, 3));
  bad(add(OP_ADD_N, NULL, 2, a, in_f(shp(1, 3))), 1,
      "add_n: f32[3] does not have the shape of f32[2, 3]");
  bad(add(OP_ADD_N, NULL, 2, a, in_i(shp(2, 2, 3))), 1, "add_n expects f32, got i32[2, 3]");
  /* x [3, 4] sliced rows 0:3:2, cols 1:4:2 -> [2, 2] */
  Attrs sb = def(OP_SLICE_BACK);
  sb.n_shape = 2, sb.shape[0] = 3, sb.shape[1] = 4;
  sb.begin[0] = 0, sb.end[0] = 3, sb.step[0] = 2, sb.begin[1] = 1, sb.end[1] = 4, sb.step[1] = 2;
  ok(add(OP_SLICE_BACK, &sb, 1, in_f(shp(2, 2, 2))), shp(2, 3, 4));
  ok(add(OP_SLICE_BACK, &sb, 1, in_i(shp(2, 2, 2))), shp(2, 3, 4));
  bad(add(OP_SLICE_BACK, &sb, 1, in_f(shp(2, 2, 3))), 0,
      "slice_back: the gradient f32[2, 3] does not match slicing [3, 4] (axis 1)");
  sb.begin[1] = -1;
  bad(add(OP_SLICE_BACK, &sb, 1, in_f(shp(2, 2, 2))), -1,
      "slice_back: axis 1: -1:4:2 is not a normalized slice of 4");
  sb.n_shape = -1;
  bad_attr(add(OP_SLICE_BACK, &sb, 1, in_f(shp(2, 2, 2))), "shape",
           "the shape attribute is required");
  Attrs up = def(OP_UPSAMPLE_BACK);
  ok(add(OP_UPSAMPLE_BACK, &up, 1, in_f(shp(4, 1, 2, 4, 6))), shp(4, 1, 2, 2, 3));
  bad(add(OP_UPSAMPLE_BACK, &up, 1, in_f(shp(4, 1, 2, 5, 6))), 0,
      "upsample_back: the gradient f32[1, 2, 5, 6] is not 2 times an image");
  Attrs eb = def(OP_EMBEDDING_BACK);
  eb.n_shape = 2, eb.shape[0] = 10, eb.shape[1] = 4;
  Node *ids = in_i(shp(2, 2, 3));
  ok(add(OP_EMBEDDING_BACK, &eb, 2, ids, in_f(shp(3, 2, 3, 4))), shp(2, 10, 4));
  bad(add(OP_EMBEDDING_BACK, &eb, 2, ids, in_f(shp(3, 2, 3, 5))), 1,
      "embedding_back: the gradient f32[2, 3, 5] does not match ids i32[2, 3] and D = 4");
  bad(add(OP_EMBEDDING_BACK, &eb, 2, in_f(shp(2, 2, 3)), in_f(shp(3, 2, 3, 4))), 0,
      "embedding_back expects i32 for input 1");
  Node *lg = in_f(shp(2, 4, 3)), *lb = in_i(shp(1, 4)), *g = in_f(shp(0));
  ok(add(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, lb, g), shp(2, 4, 3));
  bad(add(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, lb, in_f(shp(1, 1))), 2,
      "cross_entropy_back: the loss gradient must be f32[], got f32[1]");
  bad(add(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, in_i(shp(1, 3)), g), 1, "labels must be i32[4]");
}

/* conv2d_back_w, maxpool2d_back, avgpool2d_back: the forward's geometry. */
static void test_backward_windows(void **state) {
  reset();
  /* x [2, 4, 7, 7], k3 s2 p1: (7 + 2 - 3) / 2 + 1 = 4 windows; groups 2 */
  Attrs cw = def(OP_CONV2D_BACK_W);
  cw.kernel[0] = cw.kernel[1] = 3, cw.stride[0] = cw.stride[1] = 2;
  cw.pad[0] = cw.pad[1] = 1, cw.groups = 2;
  Node *x = in_f(shp(4, 2, 4, 7, 7));
  ok(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 2, 6, 4, 4))), shp(4, 6, 2, 3, 3));
  ok(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 2, 6, 3, 4))), shp(4, 6, 2, 3, 3));
  bad(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 2, 6, 5, 4))), 1,
      "conv2d_back_w: the gradient f32[2, 6, 5, 4] does not fit the 3x3 windows");
  bad(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 1, 6, 4, 4))), 1, "differ in batch");
  bad_attr(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 2, 5, 4, 4))), "groups",
           "groups=2 must divide both 4 input and 5 output channels");
  cw.kernel[1] = 0;
  bad_attr(add(OP_CONV2D_BACK_W, &cw, 2, x, in_f(shp(4, 2, 6, 4, 4))), "kernel",
           "kernel must be in 1..100000, got 0");
  /* maxpool2d_back(dy, x): x [1, 2, 5, 5] k2 -> [1, 2, 2, 2] */
  Attrs mp = pool_attrs(OP_MAXPOOL2D_BACK, 2, 0, 0);
  Node *px = in_f(shp(4, 1, 2, 5, 5));
  Node *n = add(OP_MAXPOOL2D_BACK, &mp, 2, in_f(shp(4, 1, 2, 2, 2)), px);
  ok(n, shp(4, 1, 2, 5, 5));
  assert_true(n->at.stride[0] == 2 && n->at.dilation[1] == 1); /* normalized as the forward */
  bad(add(OP_MAXPOOL2D_BACK, &mp, 2, in_f(shp(4, 1, 2, 3, 3)), px), 0,
      "maxpool2d_back: the gradient f32[1, 2, 3, 3] is not the shape of pooling f32[1, 2, 5, 5]");
  bad(add(OP_MAXPOOL2D_BACK, &mp, 2, in_f(shp(4, 1, 2, 2, 2)), in_f(shp(3, 2, 5, 5))), 1,
      "expects a 4-D input");
  /* avgpool2d_back(dy) with the forward input's shape [1, 2, 4, 4], k2 */
  Attrs ap = pool_attrs(OP_AVGPOOL2D_BACK, 2, 0, 0);
  ap.n_shape = 4, ap.shape[0] = 1, ap.shape[1] = 2, ap.shape[2] = 4, ap.shape[3] = 4;
  ok(add(OP_AVGPOOL2D_BACK, &ap, 1, in_f(shp(4, 1, 2, 2, 2))), shp(4, 1, 2, 4, 4));
  bad(add(OP_AVGPOOL2D_BACK, &ap, 1, in_f(shp(4, 1, 2, 3, 2))), 0,
      "avgpool2d_back: the gradient f32[1, 2, 3, 2] is not the shape of pooling [1, 2, 4, 4]");
  ap.kernel[0] = 5;
  bad_attr(add(OP_AVGPOOL2D_BACK, &ap, 1, in_f(shp(4, 1, 2, 2, 2))), "shape",
           "avgpool2d_back: the 5x2 window does not fit");
  ap.n_shape = 3;
  bad_attr(add(OP_AVGPOOL2D_BACK, &ap, 1, in_f(shp(4, 1, 2, 2, 2))), "shape",
           "shape must be the forward input's [N, C, H, W]");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_broadcast),  cmocka_unit_test(test_elementwise_dtypes),
      cmocka_unit_test(test_where),      cmocka_unit_test(test_reduce),
      cmocka_unit_test(test_reshape),    cmocka_unit_test(test_transpose),
      cmocka_unit_test(test_movement),   cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_conv2d),     cmocka_unit_test(test_conv_transpose2d),
      cmocka_unit_test(test_pool),       cmocka_unit_test(test_opaque),
      cmocka_unit_test(test_backward_simple), cmocka_unit_test(test_backward_windows),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
