/*
 * test_eval.c: the reference evaluator (ir/eval*.c) on elementwise ops,
 * reductions and data movement; the random streams and parameter
 * initializers (ir/rng.c); the evaluation driver; the FLOP counts
 * (ir/stats.c).  The network ops (matmul, convolutions, pooling,
 * upsampling, embedding, cross_entropy, dropout) are in test_eval_nn.c.
 *
 * Every expected value here is a literal worked out by hand (or with a
 * calculator for transcendental functions), never produced by the code
 * under test.  The comment above each case says how it was derived.
 *
 * Adding a case: write a `static void test_x(void **state)` with the
 * helpers of eval_helpers.h (reset(), IN_F / IN_I, mk(), run(), EXPECT_F /
 * EXPECT_I) and add it to the tests[] array in main().  The last test,
 * test_every_op_covered, fails until each op that eval_test_file() gives
 * this file has been evaluated by some case: a new op of those classes
 * needs a case here.
 */
#include "eval_helpers.h"

/* The out-of-memory test asks for a 4 TiB buffer; under AddressSanitizer
 * that must return NULL rather than abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

/* --- elementwise ---------------------------------------------------------- */

/* Values from the definitions (calculator for exp, erf, tanh, log1p). */
static void test_unary_f32(void **state) {
  reset();
  Node *x = IN_F("x", shp(1, 5), -2, -0.5f, 0, 0.5f, 2);
  Node *y = IN_F("y", shp(1, 4), 0.25f, 1, 4, 9);
  Attrs lk = def(OP_LEAKY_RELU), cl = def(OP_CLAMP), gt = def(OP_GELU), sp = def(OP_SOFTPLUS);
  lk.alpha = 0.1;
  cl.alpha = -1, cl.beta = 1;
  gt.mode = 1;
  sp.alpha = 2, sp.beta = 1; /* beta 2, threshold 1 */
  Node *r[] = {
      mk(OP_NEG, NULL, 1, x),  mk(OP_ABS, NULL, 1, x),     mk(OP_EXP, NULL, 1, x),
      mk(OP_RELU, NULL, 1, x), mk(OP_LEAKY_RELU, &lk, 1, x), mk(OP_ELU, NULL, 1, x),
      mk(OP_SIGMOID, NULL, 1, x), mk(OP_TANH, NULL, 1, x), mk(OP_GELU, NULL, 1, x),
      mk(OP_GELU, &gt, 1, x), mk(OP_SOFTPLUS, NULL, 1, x), mk(OP_SOFTPLUS, &sp, 1, x),
      mk(OP_SIN, NULL, 1, x), mk(OP_COS, NULL, 1, x),  mk(OP_CLAMP, &cl, 1, x),
      mk(OP_LOG, NULL, 1, y), mk(OP_SQRT, NULL, 1, y), mk(OP_RSQRT, NULL, 1, y)};
  run();
  EXPECT_F(r[0], 2, 0.5f, 0, -0.5f, -2);
  EXPECT_F(r[1], 2, 0.5f, 0, 0.5f, 2);
  EXPECT_F(r[2], 0.135335283f, 0.60653066f, 1, 1.64872127f, 7.3890561f);
  EXPECT_F(r[3], 0, 0, 0, 0.5f, 2);
  EXPECT_F(r[4], -0.2f, -0.05f, 0, 0.5f, 2);
  EXPECT_F(r[5], -0.864664717f, -0.39346934f, 0, 0.5f, 2);
  EXPECT_F(r[6], 0.119202922f, 0.377540669f, 0.5f, 0.622459331f, 0.880797078f);
  EXPECT_F(r[7], -0.96402758f, -0.462117157f, 0, 0.462117157f, 0.96402758f);
  EXPECT_F(r[8], -0.0455002639f, -0.154268769f, 0, 0.345731231f, 1.95449974f);
  EXPECT_F(r[9], -0.0454023059f, -0.15428599f, 0, 0.34571401f, 1.95459769f);
  EXPECT_F(r[10], 0.126928011f, 0.474076984f, 0.693147181f, 0.974076984f, 2.12692801f);
  /* beta x = 4 > 1 at x = 2 is linear; the rest log1p(exp(2x)) / 2 */
  EXPECT_F(r[11], 0.00907496396f, 0.156630844f, 0.34657359f, 0.656630844f, 2);
  EXPECT_F(r[12], -0.909297427f, -0.479425539f, 0, 0.479425539f, 0.909297427f);
  EXPECT_F(r[13], -0.416146837f, 0.877582562f, 1, 0.877582562f, -0.416146837f);
  EXPECT_F(r[14], -1, -0.5f, 0, 0.5f, 1);
  EXPECT_F(r[15], -1.38629436f, 0, 1.38629436f, 2.19722458f);
  EXPECT_F(r[16], 0.5f, 1, 2, 3);
  EXPECT_F(r[17], 2, 1, 0.5f, 0.333333333f);
}

/* Large arguments must not overflow; NaN passes through relu and clamp. */
static void test_unary_stability(void **state) {
  reset();
  Node *x = IN_F("x", shp(1, 3), -1000, 1000, NAN);
  Attrs cl = def(OP_CLAMP), sp = def(OP_SOFTPLUS);
  cl.alpha = 0, cl.beta = 1;
  sp.beta = 1e30; /* threshold never reached: the log1p branch for all */
  Node *s = mk(OP_SIGMOID, NULL, 1, x), *p = mk(OP_SOFTPLUS, &sp, 1, x);
  Node *r = mk(OP_RELU, NULL, 1, x), *c = mk(OP_CLAMP, &cl, 1, x);
  run();
  EXPECT_F(s, 0, 1, NAN);
  EXPECT_F(p, 0, 1000, NAN);
  EXPECT_F(r, 0, 1000, NAN);
  EXPECT_F(c, 0, 1, NAN);
}

/* i32 neg/abs wrap at INT32_MIN instead of overflowing. */
static void test_unary_i32(void **state) {
  reset();
  Node *x = IN_I("x", shp(1, 4), -3, 0, 5, INT32_MIN);
  Node *ng = mk(OP_NEG, NULL, 1, x), *ab = mk(OP_ABS, NULL, 1, x);
  run();
  EXPECT_I(ng, 3, 0, -5, INT32_MIN);
  EXPECT_I(ab, 3, 0, 5, INT32_MIN);
}

/* NumPy broadcasting: trailing axes align, size-1 and missing axes repeat. */
static void test_binary_broadcast(void **state) {
  reset();
  Node *a = IN_F("a", shp(2, 2, 3), 1, 2, 3, 4, 5, 6);
  Node *b = IN_F("b", shp(1, 3), 10, 20, 30);
  Node *s = IN_F("s", shp(0), 2);
  Node *c = IN_F("c", shp(2, 2, 1), 1, 2);
  Node *e = IN_F("e", shp(3, 2, 1, 2), 1, 2, 3, 4);
  Node *f = IN_F("f", shp(2, 3, 1), 10, 20, 30);
  Node *add = mk(OP_ADD, NULL, 2, a, b), *mul = mk(OP_MUL, NULL, 2, a, s);
  Node *sub = mk(OP_SUB, NULL, 2, s, a), *dv = mk(OP_DIV, NULL, 2, b, c);
  Node *add3 = mk(OP_ADD, NULL, 2, e, f), *ss = mk(OP_MUL, NULL, 2, s, s);
  run();
  EXPECT_F(add, 11, 22, 33, 14, 25, 36);
  EXPECT_F(mul, 2, 4, 6, 8, 10, 12);
  EXPECT_F(sub, 1, 0, -1, -2, -3, -4);
  check_shape(dv, shp(2, 2, 3)); /* [3] / [2, 1] */
  EXPECT_F(dv, 10, 20, 30, 5, 10, 15);
  check_shape(add3, shp(3, 2, 3, 2)); /* out[i,j,k] = e[i,0,k] + f[j,0] */
  EXPECT_F(add3, 11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34);
  check_shape(ss, shp(0));
  EXPECT_F(ss, 4);
}

static void test_binary_math(void **state) {
  reset();
  Node *a = IN_F("a", shp(1, 3), 1, 5, -2), *b = IN_F("b", shp(1, 3), 3, 3, 3);
  Node *p = IN_F("p", shp(1, 2), 2, 3), *q = IN_F("q", shp(1, 2), 3, 0.5f);
  Node *nn = IN_F("nn", shp(1, 2), NAN, 1), *one = IN_F("one", shp(0), 1);
  Node *mx = mk(OP_MAXIMUM, NULL, 2, a, b), *mn = mk(OP_MINIMUM, NULL, 2, a, b);
  Node *pw = mk(OP_POW, NULL, 2, p, q), *mxn = mk(OP_MAXIMUM, NULL, 2, nn, one);
  Node *mnn = mk(OP_MINIMUM, NULL, 2, one, nn);
  run();
  EXPECT_F(mx, 3, 5, 3);
  EXPECT_F(mn, 1, 3, -2);
  EXPECT_F(pw, 8, 1.73205081f);
  EXPECT_F(mxn, NAN, 1);
  EXPECT_F(mnn, NAN, 1);
}

/* i32 arithmetic wraps: INT32_MAX + 1 = INT32_MIN, 65536 * 65536 = 0. */
static void test_binary_i32(void **state) {
  reset();
  Node *a = IN_I("a", shp(1, 3), INT32_MAX, 5, 65536), *b = IN_I("b", shp(1, 3), 1, 7, 65536);
  Node *k = IN_I("k", shp(0), -2);
  Node *ad = mk(OP_ADD, NULL, 2, a, b), *sb = mk(OP_SUB, NULL, 2, b, a);
  Node *ml = mk(OP_MUL, NULL, 2, a, b), *mk2 = mk(OP_MUL, NULL, 2, b, k);
  Node *mx = mk(OP_MAXIMUM, NULL, 2, a, k), *mn = mk(OP_MINIMUM, NULL, 2, b, a);
  run();
  EXPECT_I(ad, INT32_MIN, 12, 131072);
  EXPECT_I(sb, INT32_MIN + 2, 2, 0); /* 1 - INT32_MAX */
  EXPECT_I(ml, INT32_MAX, 35, 0);
  EXPECT_I(mk2, -2, -14, -131072);
  EXPECT_I(mx, INT32_MAX, 5, 65536);
  EXPECT_I(mn, 1, 5, 65536);
}

/* Comparisons give i32 0/1 for either operand dtype.  16777217 and
 * 16777216 are equal as f32 but not as i32: ints are compared exactly. */
static void test_compare(void **state) {
  reset();
  Node *a = IN_F("a", shp(1, 3), 1, 2, 3), *b = IN_F("b", shp(0), 2);
  Node *c = IN_I("c", shp(2, 2, 1), 1, 2), *d = IN_I("d", shp(1, 2), 1, 2);
  Node *u = IN_I("u", shp(1, 1), 16777217), *v = IN_I("v", shp(1, 1), 16777216);
  Node *r[] = {mk(OP_EQUAL, NULL, 2, a, b),        mk(OP_NOT_EQUAL, NULL, 2, a, b),
               mk(OP_LESS, NULL, 2, a, b),         mk(OP_LESS_EQUAL, NULL, 2, a, b),
               mk(OP_GREATER, NULL, 2, a, b),      mk(OP_GREATER_EQUAL, NULL, 2, a, b),
               mk(OP_EQUAL, NULL, 2, c, d),        mk(OP_NOT_EQUAL, NULL, 2, u, v),
               mk(OP_GREATER, NULL, 2, u, v)};
  run();
  EXPECT_I(r[0], 0, 1, 0);
  EXPECT_I(r[1], 1, 0, 1);
  EXPECT_I(r[2], 1, 0, 0);
  EXPECT_I(r[3], 1, 1, 0);
  EXPECT_I(r[4], 0, 0, 1);
  EXPECT_I(r[5], 0, 1, 1);
  check_shape(r[6], shp(2, 2, 2));
  EXPECT_I(r[6], 1, 0, 0, 1);
  EXPECT_I(r[7], 1);
  EXPECT_I(r[8], 1);
}

/* where: 3-way broadcast; a nonzero (or NaN) condition selects the first. */
static void test_where(void **state) {
  reset();
  Node *c = IN_I("c", shp(2, 2, 1), 1, 0), *a = IN_F("a", shp(2, 2, 2), 1, 2, 3, 4);
  Node *b = IN_F("b", shp(0), -1);
  Node *cf = IN_F("cf", shp(1, 4), 0, 0.5f, -2, NAN);
  Node *ai = IN_I("ai", shp(1, 4), 1, 2, 3, 4), *bi = IN_I("bi", shp(1, 1), 9);
  Node *w1 = mk(OP_WHERE, NULL, 3, c, a, b), *w2 = mk(OP_WHERE, NULL, 3, cf, ai, bi);
  run();
  EXPECT_F(w1, 1, 2, -1, -1);
  EXPECT_I(w2, 9, 2, 3, 4);
}

/* f32 -> i32 truncates toward 0; NaN -> 0; out of range saturates. */
static void test_cast(void **state) {
  reset();
  Node *x = IN_F("x", shp(1, 7), -2.7f, -0.5f, 0.5f, 2.9f, 3e9f, -3e9f, NAN);
  Node *k = IN_I("k", shp(1, 2), -3, 16777217);
  Attrs ti = def(OP_CAST), tf = def(OP_CAST);
  ti.to = DT_I32, tf.to = DT_F32;
  Node *xi = mk(OP_CAST, &ti, 1, x), *kf = mk(OP_CAST, &tf, 1, k), *xf = mk(OP_CAST, &tf, 1, x);
  run();
  EXPECT_I(xi, -2, 0, 0, 2, INT32_MAX, INT32_MIN, 0);
  EXPECT_F(kf, -3, 16777216); /* nearest f32 */
  EXPECT_F(xf, -2.7f, -0.5f, 0.5f, 2.9f, 3e9f, -3e9f, NAN);
}

/* --- reductions -------------------------------------------------------------- */

/* x[i,j,k] = 12i + 4j + k over [2, 3, 4]. */
static void test_reduce(void **state) {
  reset();
  Node *x = iota_input("x", shp(3, 2, 3, 4));
  Attrs s1 = def(OP_SUM), s02 = def(OP_SUM), m = def(OP_MEAN), mx = def(OP_MAX);
  Attrs mk0 = def(OP_MAX);
  s1.n_axes = 1, s1.axes[0] = 1;
  s02.n_axes = 2, s02.axes[0] = 0, s02.axes[1] = -1, s02.keepdims = true;
  m.n_axes = 1, m.axes[0] = -1;
  mx.n_axes = 2, mx.axes[0] = 1, mx.axes[1] = 0;
  mk0.n_axes = 1, mk0.axes[0] = 0, mk0.keepdims = true;
  Node *all = mk(OP_SUM, NULL, 1, x), *a1 = mk(OP_SUM, &s1, 1, x), *a02 = mk(OP_SUM, &s02, 1, x);
  Node *mean = mk(OP_MEAN, &m, 1, x), *max01 = mk(OP_MAX, &mx, 1, x);
  Node *max0 = mk(OP_MAX, &mk0, 1, x), *mall = mk(OP_MEAN, NULL, 1, x);
  run();
  check_shape(all, shp(0));
  EXPECT_F(all, 276);                                 /* 23 * 24 / 2 */
  EXPECT_F(a1, 12, 15, 18, 21, 48, 51, 54, 57);       /* 36i + 3k + 12 */
  check_shape(a02, shp(3, 1, 3, 1));
  EXPECT_F(a02, 60, 92, 124);                         /* 60 + 32j */
  EXPECT_F(mean, 1.5f, 5.5f, 9.5f, 13.5f, 17.5f, 21.5f); /* 4m + 1.5 */
  EXPECT_F(max01, 20, 21, 22, 23);                    /* 20 + k */
  check_shape(max0, shp(3, 1, 3, 4));
  EXPECT_F(max0, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
  EXPECT_F(mall, 11.5f);
}

/* i32 sum accumulates in int64 and wraps; mean of an empty axis is NaN;
 * max propagates NaN. */
static void test_reduce_edge(void **state) {
  reset();
  Node *k = IN_I("k", shp(1, 3), INT32_MAX, 1, 1), *j = IN_I("j", shp(1, 3), -5, 7, 3);
  Node *nn = IN_F("nn", shp(2, 2, 2), 1, NAN, 3, 4), *nm = mk(OP_MAX, NULL, 1, nn);
  Node *e = input("e", DT_F32, shp(2, 0, 3), NULL, 0);
  Attrs m0 = def(OP_MEAN), s0 = def(OP_SUM);
  m0.n_axes = 1, m0.axes[0] = 0;
  s0.n_axes = 1, s0.axes[0] = 0;
  Node *ks = mk(OP_SUM, NULL, 1, k), *jm = mk(OP_MAX, NULL, 1, j);
  Node *em = mk(OP_MEAN, &m0, 1, e), *es = mk(OP_SUM, &s0, 1, e);
  n_binds--; /* e has no elements: bind a dummy word */
  prep();
  static float dummy;
  eval_bind(&EV, e, &dummy);
  go();
  EXPECT_I(ks, INT32_MIN + 1);
  EXPECT_I(jm, 7);
  EXPECT_F(nm, NAN);
  EXPECT_F(em, NAN, NAN, NAN);
  EXPECT_F(es, 0, 0, 0);
}

/* argmax: the first index of the maximum; NaN counts as the maximum. */
static void test_argmax(void **state) {
  reset();
  Node *x = IN_F("x", shp(2, 2, 3), 1, 3, 3, 5, 2, 5);
  Node *nn = IN_F("nn", shp(1, 3), 1, NAN, 3), *k = IN_I("k", shp(1, 3), 4, 9, 9);
  Attrs a0 = def(OP_ARGMAX), kd = def(OP_ARGMAX);
  a0.axis = 0;
  kd.keepdims = true;
  Node *r1 = mk(OP_ARGMAX, NULL, 1, x), *r0 = mk(OP_ARGMAX, &a0, 1, x);
  Node *rk = mk(OP_ARGMAX, &kd, 1, x), *rn = mk(OP_ARGMAX, NULL, 1, nn);
  Node *ri = mk(OP_ARGMAX, NULL, 1, k);
  run();
  EXPECT_I(r1, 1, 0);
  EXPECT_I(r0, 1, 0, 1);
  check_shape(rk, shp(2, 2, 1));
  EXPECT_I(rk, 1, 0);
  EXPECT_I(rn, 1);
  EXPECT_I(ri, 1);
}

/* softmax([1,2,3]) = e^{-2,-1,0} / (1 + e^-1 + e^-2); a row of 1000s must
 * not overflow; axis 0 of [[0, 0], [0, ln 3]] gives columns (1/2, 1/2) and
 * (1/4, 3/4). */
static void test_softmax(void **state) {
  reset();
  Node *x = IN_F("x", shp(2, 2, 3), 1, 2, 3, 1000, 1000, 1000);
  Node *z = IN_F("z", shp(2, 2, 2), 0, 0, 0, 1.09861229f);
  Attrs a0 = def(OP_SOFTMAX);
  a0.axis = 0;
  Node *sm = mk(OP_SOFTMAX, NULL, 1, x), *ls = mk(OP_LOG_SOFTMAX, NULL, 1, x);
  Node *s0 = mk(OP_SOFTMAX, &a0, 1, z);
  run();
  EXPECT_F(sm, 0.0900305732f, 0.244728471f, 0.665240956f, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f);
  EXPECT_F(ls, -2.40760596f, -1.40760596f, -0.407605964f, -1.09861229f, -1.09861229f,
           -1.09861229f);
  EXPECT_F(s0, 0.5f, 0.25f, 0.5f, 0.75f);
  for (int r = 0; r < 2; r++)
    assert_true(fabs(fv(sm)[3 * r] + fv(sm)[3 * r + 1] + fv(sm)[3 * r + 2] - 1.0) < 1e-6);
}

/* --- data movement -------------------------------------------------------------- */

static void test_reshape_transpose(void **state) {
  reset();
  Node *x = iota_input("x", shp(3, 2, 3, 4)), *m = iota_input("m", shp(2, 2, 3));
  Node *k = IN_I("k", shp(1, 4), 7, 8, 9, 10);
  Attrs rs = def(OP_RESHAPE), tp = def(OP_TRANSPOSE), ri = def(OP_RESHAPE);
  rs.n_shape = 2, rs.shape[0] = 3, rs.shape[1] = -1;
  tp.n_axes = 3, tp.axes[0] = 2, tp.axes[1] = 0, tp.axes[2] = 1;
  ri.n_shape = 2, ri.shape[0] = 2, ri.shape[1] = 2;
  Node *r = mk(OP_RESHAPE, &rs, 1, m), *t = mk(OP_TRANSPOSE, &tp, 1, x);
  Node *t2 = mk(OP_TRANSPOSE, NULL, 1, m), *rk = mk(OP_RESHAPE, &ri, 1, k);
  run();
  check_shape(r, shp(2, 3, 2));
  EXPECT_F(r, 0, 1, 2, 3, 4, 5);
  check_shape(t, shp(3, 4, 2, 3)); /* out[k][i][j] = x[i][j][k] = 12i + 4j + k */
  EXPECT_F(t, 0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21, 2, 6, 10, 14, 18, 22, 3, 7, 11, 15,
           19, 23);
  check_shape(t2, shp(2, 3, 2));
  EXPECT_F(t2, 0, 3, 1, 4, 2, 5);
  EXPECT_I(rk, 7, 8, 9, 10);
}

static void test_broadcast_to(void **state) {
  reset();
  Node *x = IN_F("x", shp(2, 3, 1), 1, 2, 3), *s = IN_I("s", shp(0), 5);
  Attrs b1 = def(OP_BROADCAST_TO), b2 = def(OP_BROADCAST_TO);
  b1.n_shape = 3, b1.shape[0] = 2, b1.shape[1] = 3, b1.shape[2] = 2;
  b2.n_shape = 1, b2.shape[0] = 3;
  Node *r = mk(OP_BROADCAST_TO, &b1, 1, x), *rs = mk(OP_BROADCAST_TO, &b2, 1, s);
  run();
  EXPECT_F(r, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
  EXPECT_I(rs, 5, 5, 5);
}

static Attrs slice_at(int64_t b0, int64_t e0, int64_t s0, int64_t b1, int64_t e1, int64_t s1) {
  Attrs at = def(OP_SLICE);
  at.begin[0] = b0, at.end[0] = e0, at.step[0] = s0;
  at.begin[1] = b1, at.end[1] = e1, at.step[1] = s1;
  return at;
}

/* x[i][j] = 5i + j over [4, 5]. */
static void test_slice(void **state) {
  reset();
  Node *x = iota_input("x", shp(2, 4, 5));
  Attrs a = slice_at(1, 4, 2, 0, 5, 2), b = slice_at(-1, 4, 1, 1, -1, 1);
  Attrs c = slice_at(2, 1, 1, 0, 5, 1), d = slice_at(0, 100, 3, 4, 5, 1);
  Node *sa = mk(OP_SLICE, &a, 1, x), *sb = mk(OP_SLICE, &b, 1, x);
  Node *sc = mk(OP_SLICE, &c, 1, x), *sd = mk(OP_SLICE, &d, 1, x);
  run();
  check_shape(sa, shp(2, 2, 3));
  EXPECT_F(sa, 5, 7, 9, 15, 17, 19);  /* rows 1, 3; columns 0, 2, 4 */
  EXPECT_F(sb, 16, 17, 18);           /* row 3; columns 1..3 */
  check_shape(sc, shp(2, 0, 5));      /* end < begin: empty */
  EXPECT_F(sd, 4, 19);                /* rows 0, 3; column 4 */
}

static void test_concat(void **state) {
  reset();
  Node *a = IN_F("a", shp(2, 2, 1), 1, 2), *b = IN_F("b", shp(2, 2, 2), 3, 4, 5, 6);
  Node *c = IN_F("c", shp(2, 2, 3), 7, 8, 9, 10, 11, 12);
  Node *p = IN_I("p", shp(2, 1, 2), 1, 2), *q = IN_I("q", shp(2, 2, 2), 3, 4, 5, 6);
  Attrs a1 = def(OP_CONCAT);
  a1.axis = 1;
  Node *r = mk(OP_CONCAT, &a1, 3, a, b, c), *ri = mk(OP_CONCAT, NULL, 2, p, q);
  run();
  check_shape(r, shp(2, 2, 6));
  EXPECT_F(r, 1, 3, 4, 7, 8, 9, 2, 5, 6, 10, 11, 12);
  check_shape(ri, shp(2, 3, 2));
  EXPECT_I(ri, 1, 2, 3, 4, 5, 6);
}

static void test_full_arange_const(void **state) {
  reset();
  Attrs f = def(OP_FULL), fi = def(OP_FULL), ar = def(OP_ARANGE), af = def(OP_ARANGE);
  f.n_shape = 2, f.shape[0] = 2, f.shape[1] = 2, f.value = 1.5;
  fi.n_shape = 1, fi.shape[0] = 3, fi.value = -7, fi.to = DT_I32;
  ar.n_shape = 1, ar.shape[0] = 4;
  af.n_shape = 1, af.shape[0] = 3, af.to = DT_F32;
  Node *nf = mk(OP_FULL, &f, 0), *nfi = mk(OP_FULL, &fi, 0);
  Node *na = mk(OP_ARANGE, &ar, 0), *naf = mk(OP_ARANGE, &af, 0);
  Node *k = graph_const(G, DT_F32, 2.5, L0);
  Node *sum = mk(OP_ADD, NULL, 2, naf, k);
  run();
  EXPECT_F(nf, 1.5f, 1.5f, 1.5f, 1.5f);
  EXPECT_I(nfi, -7, -7, -7);
  EXPECT_I(na, 0, 1, 2, 3);
  EXPECT_F(naf, 0, 1, 2);
  EXPECT_F(k, 2.5f);
  EXPECT_F(sum, 2.5f, 3.5f, 4.5f);
}

/* --- random streams and initializers -------------------------------------------------- */

/* rng_hash(0, c) is SplitMix64 seeded with 0: its first outputs are the
 * published 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4.  Backends must match. */
static void test_rng(void **state) {
  assert_true(rng_hash(0, 0) == 0xe220a8397b1dcdafull);
  assert_true(rng_hash(0, 1) == 0x6e789e6aa1b965f4ull);
  assert_true(rng_hash(1, 0) != rng_hash(0, 0));
  double mean = 0;
  for (uint64_t i = 0; i < 20000; i++) {
    double u = rng_uniform(5, i);
    assert_true(u >= 0 && u < 1);
    mean += u / 20000;
  }
  assert_true(fabs(mean - 0.5) < 0.01); /* std of the mean: 0.002 */
  assert_true(rng_normal(3, 9) == rng_normal(3, 9));
  assert_true(rng_seed_for(1, "a") != rng_seed_for(1, "b"));
  assert_true(rng_seed_for(1, "a") != rng_seed_for(2, "a"));
}

static Node *param(const char *name, DType dt, Shape s, InitKind k, double a, double b) {
  Init in = {k, a, b, 0, 0};
  return graph_param(G, name, dt, s, in, true, L0);
}

static void moments(const float *v, int n, double *mean, double *sd, double *amax) {
  double s = 0, s2 = 0;
  *amax = 0;
  for (int i = 0; i < n; i++) {
    s += v[i];
    *amax = fabs(v[i]) > *amax ? fabs(v[i]) : *amax;
  }
  *mean = s / n;
  for (int i = 0; i < n; i++)
    s2 += (v[i] - *mean) * (v[i] - *mean);
  *sd = sqrt(s2 / n);
}

#define NP 20000 /* a [200, 100] parameter: fan_in 100, fan_out 200 */

/* Xavier: |v| <= sqrt(6 / 300), std bound / sqrt 3.  He: std sqrt(2 / 100).
 * Sample std is within 0.5% of sigma (1 sd) at n = 20000; 5% is allowed. */
static void test_init_stats(void **state) {
  reset();
  static float v[NP];
  Node *px = param("wx", DT_F32, shp(2, 200, 100), RT_INIT_XAVIER, 0, 0);
  Node *ph = param("wh", DT_F32, shp(2, 200, 100), RT_INIT_HE, 0, 0);
  Node *pxn = param("wxn", DT_F32, shp(2, 200, 100), RT_INIT_XAVIER_NORMAL, 0, 0);
  Node *phu = param("whu", DT_F32, shp(2, 200, 100), RT_INIT_HE_UNIFORM, 0, 0);
  Node *pn = param("wn", DT_F32, shp(2, 200, 100), RT_INIT_NORMAL, 1, 2);
  Node *pu = param("wu", DT_F32, shp(2, 200, 100), RT_INIT_UNIFORM, 2, 3);
  graph_resolve_init(G);
  assert_int_equal(px->init.fan_in, 100);
  assert_int_equal(px->init.fan_out, 200);
  double mean, sd, amax, xb = sqrt(6.0 / 300), hb = sqrt(6.0 / 100);
  param_init_fill(px, 1, v);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(amax <= xb && amax > 0.99 * xb && fabs(mean) < 0.03 * xb);
  assert_true(fabs(sd / (xb / sqrt(3)) - 1) < 0.05);
  param_init_fill(ph, 1, v);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(fabs(sd / sqrt(0.02) - 1) < 0.05 && fabs(mean) < 0.005);
  param_init_fill(pxn, 1, v);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(fabs(sd / sqrt(2.0 / 300) - 1) < 0.05);
  param_init_fill(phu, 1, v);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(amax <= hb && fabs(sd / (hb / sqrt(3)) - 1) < 0.05);
  param_init_fill(pn, 1, v);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(fabs(mean - 1) < 0.06 && fabs(sd / 2 - 1) < 0.05);
  param_init_fill(pu, 1, v);
  for (int i = 0; i < NP; i++)
    assert_true(v[i] >= 2 && v[i] <= 3);
  moments(v, NP, &mean, &sd, &amax);
  assert_true(fabs(mean - 2.5) < 0.01);
}

/* Values depend on (seed, name), not on creation order. */
static void test_init_determinism(void **state) {
  static float a1[64], a2[64], b1[64], a3[64];
  reset();
  Node *a = param("enc.w", DT_F32, shp(2, 8, 8), RT_INIT_HE, 0, 0);
  Node *b = param("dec.w", DT_F32, shp(2, 8, 8), RT_INIT_HE, 0, 0);
  graph_resolve_init(G);
  param_init_fill(a, 42, a1);
  param_init_fill(a, 42, a2);
  param_init_fill(b, 42, b1);
  param_init_fill(a, 43, a3);
  assert_memory_equal(a1, a2, sizeof a1);
  assert_memory_not_equal(a1, b1, sizeof a1);
  assert_memory_not_equal(a1, a3, sizeof a1);
  reset(); /* the other order, with a node in between */
  param("dec.w", DT_F32, shp(2, 8, 8), RT_INIT_HE, 0, 0);
  param("other", DT_F32, shp(1, 3), RT_INIT_ZEROS, 0, 0);
  Node *a_again = param("enc.w", DT_F32, shp(2, 8, 8), RT_INIT_HE, 0, 0);
  graph_resolve_init(G);
  param_init_fill(a_again, 42, a2);
  assert_memory_equal(a1, a2, sizeof a1);
}

static void test_init_constant(void **state) {
  float f[4];
  int32_t k[3];
  reset();
  Node *z = param("z", DT_F32, shp(1, 4), RT_INIT_ZEROS, 0, 0);
  Node *o = param("o", DT_F32, shp(1, 4), RT_INIT_ONES, 0, 0);
  Node *c = param("c", DT_F32, shp(1, 4), RT_INIT_CONSTANT, 0.5, 0);
  Node *ki = param("k", DT_I32, shp(1, 3), RT_INIT_CONSTANT, 3, 0);
  graph_resolve_init(G);
  param_init_fill(z, 0, f);
  assert_true(f[0] == 0 && f[3] == 0);
  param_init_fill(o, 0, f);
  assert_true(f[0] == 1 && f[3] == 1);
  param_init_fill(c, 0, f);
  assert_true(f[0] == 0.5f && f[3] == 0.5f);
  param_init_fill(ki, 0, k);
  assert_true(k[0] == 3 && k[2] == 3);
}

/* --- the driver and statistics -------------------------------------------------------- */

/* A parameter is bound like an input, with values from param_init_fill:
 * x * 0.5 for a constant-initialized [2] parameter. */
static void test_param_in_graph(void **state) {
  reset();
  char err[256];
  float w[2];
  Node *x = IN_F("x", shp(1, 2), 1, 2);
  Node *p = param("w", DT_F32, shp(1, 2), RT_INIT_CONSTANT, 0.5, 0);
  Node *y = mk(OP_MUL, NULL, 2, x, p);
  graph_resolve_init(G);
  prep();
  assert_int_equal(eval_run(&EV, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "param w has no value"));
  param_init_fill(p, 0, w);
  eval_bind(&EV, p, w);
  go();
  EXPECT_F(y, 0.5f, 1);
}

/* eval_apply_updates is one simultaneous assignment at the end of the
 * step.  a <- b * 1, b <- a * 1 (computed values) and c <- d, d <- c (the
 * values are the other parameters themselves, as assign(c, d) and
 * assign(d, c) make) both swap; a second step swaps back. */
static void test_apply_updates(void **state) {
  reset();
  float a[] = {1, 2}, b[] = {10, 20}, c[] = {3, 4}, d[] = {30, 40};
  Node *pa = param("a", DT_F32, shp(1, 2), RT_INIT_ZEROS, 0, 0);
  Node *pb = param("b", DT_F32, shp(1, 2), RT_INIT_ZEROS, 0, 0);
  Node *pc = param("c", DT_F32, shp(1, 2), RT_INIT_ZEROS, 0, 0);
  Node *pd = param("d", DT_F32, shp(1, 2), RT_INIT_ZEROS, 0, 0);
  Node *one = graph_const(G, DT_F32, 1, L0);
  graph_add_update(G, pa, mk(OP_MUL, NULL, 2, pb, one));
  graph_add_update(G, pb, mk(OP_MUL, NULL, 2, pa, one));
  graph_add_update(G, pc, pd);
  graph_add_update(G, pd, pc);
  prep();
  eval_bind(&EV, pa, a), eval_bind(&EV, pb, b), eval_bind(&EV, pc, c), eval_bind(&EV, pd, d);
  go();
  eval_apply_updates(&EV);
  assert_true(a[0] == 10 && a[1] == 20 && b[0] == 1 && b[1] == 2);
  assert_true(c[0] == 30 && c[1] == 40 && d[0] == 3 && d[1] == 4);
  go();
  eval_apply_updates(&EV);
  assert_true(a[0] == 1 && a[1] == 2 && b[0] == 10 && b[1] == 20);
  assert_true(c[0] == 3 && c[1] == 4 && d[0] == 30 && d[1] == 40);
}

static void test_eval_errors(void **state) {
  reset();
  char err[256];
  Node *x = graph_input(G, "x", DT_F32, shp(1, 2), L0);
  Node *y = mk(OP_EXP, NULL, 1, x);
  prep();
  assert_int_equal(eval_run(&EV, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "input x has no value"));
  /* bind, run, rebind, run again: owned values are recomputed */
  float a[] = {0, 0}, b[] = {1, 1};
  eval_bind(&EV, x, a);
  assert_int_equal(eval_run(&EV, NULL, err, sizeof err), 0);
  assert_true(fv(y)[0] == 1.0f);
  eval_bind(&EV, x, b);
  assert_int_equal(eval_run(&EV, NULL, err, sizeof err), 0);
  assert_true(fabs(fv(y)[1] - 2.71828183) < 1e-6);
  /* a live mask: unmarked nodes are not computed */
  bool live[2] = {true, false};
  eval_free(&EV);
  eval_init(&EV, G);
  eval_bind(&EV, x, a);
  assert_int_equal(eval_run(&EV, live, err, sizeof err), 0);
  assert_null(EV.vals[y->id].data);
}

/* 2^40 f32 (4 TiB) cannot be allocated unless the kernel overcommits
 * blindly (vm.overcommit_memory = 1), where the test is skipped. */
static void test_eval_oom(void **state) {
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = 1;
  if (f) {
    if (fscanf(f, "%d", &mode) != 1)
      mode = 1;
    fclose(f);
  }
  if (mode == 1)
    skip();
  reset();
  Attrs at = def(OP_FULL);
  at.n_shape = 1, at.shape[0] = (int64_t)1 << 40;
  mk(OP_FULL, &at, 0);
  char err[256];
  prep();
  assert_int_equal(eval_run(&EV, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "out of memory allocating 4398046511104 bytes for t0 f32["));
}

/* Conventions of stats.c: a multiply-add is 2 FLOPs.  The seeds' example
 * 32x32x3 * six 5x5 filters -> 28x28x6: 2 * 6*28*28 * 3*5*5 = 705600. */
static void test_flops(void **state) {
  reset();
  Node *x = graph_input(G, "x", DT_F32, shp(4, 1, 3, 32, 32), L0);
  Node *w = graph_input(G, "w", DT_F32, shp(4, 6, 3, 5, 5), L0);
  Node *c = mk(OP_CONV2D, NULL, 2, x, w);
  Node *a = graph_input(G, "a", DT_F32, shp(2, 2, 3), L0);
  Node *b = graph_input(G, "b", DT_F32, shp(2, 3, 4), L0);
  Node *m = mk(OP_MATMUL, NULL, 2, a, b), *e = mk(OP_EXP, NULL, 1, a);
  Node *s = mk(OP_SUM, NULL, 1, a), *sm = mk(OP_SOFTMAX, NULL, 1, a);
  Node *t = graph_input(G, "t", DT_F32, shp(4, 1, 2, 3, 3), L0);
  Node *tw = graph_input(G, "tw", DT_F32, shp(4, 2, 4, 2, 2), L0);
  Node *tc = mk(OP_CONV_TRANSPOSE2D, NULL, 2, t, tw);
  Attrs pk = pool_at(OP_MAXPOOL2D, 2, 0, 0, 1), up = def(OP_UPSAMPLE);
  up.mode = 1;
  Node *p = mk(OP_MAXPOOL2D, &pk, 1, x), *u = mk(OP_UPSAMPLE, &up, 1, t);
  assert_true(node_flops(c) == 705600);
  assert_true(node_flops(m) == 2 * 2 * 4 * 3);
  assert_true(node_flops(e) == 24 && node_flops(s) == 6 && node_flops(sm) == 30);
  assert_true(node_flops(tc) == 2 * 18 * 4 * 4); /* 2 * N Cin H W * Cout/g kh kw */
  assert_true(node_flops(p) == 3 * 16 * 16 * 4);
  assert_true(node_flops(u) == 4 * 2 * 36);
  assert_true(node_flops(x) == 0);
  assert_int_equal(node_bytes(m), 32);
  assert_int_equal(node_traffic(m), 24 + 48 + 32);
}

/* F_INPLACE promises that the output may overwrite input 0 (DIGEST 7.8: a
 * kernel must be correct with and without aliasing).  Each such op is run
 * once normally and once with out->data == in[0]->data; the bits must
 * match. */
static void test_inplace_aliasing(void **state) {
  reset();
  Node *x = IN_F("x", shp(2, 2, 3), 0.5f, 1, 1.5f, 2, 2.5f, 3);
  Node *b = IN_F("b", shp(1, 3), 1, 2, 0.5f), *nodes[OP_COUNT];
  Node *b6 = IN_F("b6", shp(2, 2, 3), 1, 2, 0.5f, -1, 3, 0.25f); /* add_n: x's shape */
  Attrs rs = def(OP_RESHAPE);
  rs.n_shape = 2, rs.shape[0] = 3, rs.shape[1] = 2;
  int cnt = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    if (!op_has((Op)op, F_INPLACE))
      continue;
    const OpInfo *oi = &op_info[op];
    assert_true(oi->cls == CL_ELTWISE || op == OP_RESHAPE);
    nodes[cnt++] = op == OP_RESHAPE ? mk(OP_RESHAPE, &rs, 1, x)
                   : op == OP_ADD_N ? mk(OP_ADD_N, NULL, 2, x, b6)
                   : oi->arity == 1 ? mk((Op)op, NULL, 1, x)
                                    : mk((Op)op, NULL, 2, x, b);
  }
  run();
  for (int i = 0; i < cnt; i++) {
    float buf[6];
    memcpy(buf, fv(x), sizeof buf);
    RtTensor out = EV.vals[nodes[i]->id], a = EV.vals[x->id];
    out.data = a.data = buf;
    const RtTensor *ins[2] = {&a, nodes[i]->n_in > 1 ? &EV.vals[nodes[i]->in[1]->id] : NULL};
    op_info[nodes[i]->op].eval(nodes[i], &out, ins, &EV.cx);
    if (memcmp(buf, fv(nodes[i]), sizeof buf) != 0)
      fail_msg("%s gives a different result in place", op_name(nodes[i]->op));
  }
  assert_true(cnt >= 20);
}

/* Runs last: each op this file is responsible for (eval_test_file) must
 * have been evaluated by a case above. */
static void test_every_op_covered(void **state) { check_ops_covered("test_eval.c"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary_f32),       cmocka_unit_test(test_unary_stability),
      cmocka_unit_test(test_unary_i32),       cmocka_unit_test(test_binary_broadcast),
      cmocka_unit_test(test_binary_math),     cmocka_unit_test(test_binary_i32),
      cmocka_unit_test(test_compare),         cmocka_unit_test(test_where),
      cmocka_unit_test(test_cast),            cmocka_unit_test(test_reduce),
      cmocka_unit_test(test_reduce_edge),     cmocka_unit_test(test_argmax),
      cmocka_unit_test(test_softmax),         cmocka_unit_test(test_reshape_transpose),
      cmocka_unit_test(test_broadcast_to),    cmocka_unit_test(test_slice),
      cmocka_unit_test(test_concat),          cmocka_unit_test(test_full_arange_const),
      cmocka_unit_test(test_rng),             cmocka_unit_test(test_init_stats),
      cmocka_unit_test(test_init_determinism), cmocka_unit_test(test_init_constant),
      cmocka_unit_test(test_param_in_graph),  cmocka_unit_test(test_apply_updates),
      cmocka_unit_test(test_eval_errors),
      cmocka_unit_test(test_eval_oom),        cmocka_unit_test(test_flops),
      cmocka_unit_test(test_inplace_aliasing), cmocka_unit_test(test_every_op_covered),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
