/*
 * test_eval_back.c: the reference evaluator on the ops autodiff makes
 * (ir/eval_back.c, sc_gelu_back in ir/eval_elem.c): add_n, stop_gradient,
 * gelu_back, conv2d_back_w, maxpool2d_back, avgpool2d_back, upsample_back,
 * slice_back, embedding_back and cross_entropy_back, and their FLOP counts.
 *
 * Two kinds of checks, because each alone could be fooled:
 *  - hand-computed values: literals worked out on paper (a calculator for
 *    erf, exp and tanh), never produced by the code under test; the comment
 *    above each case says how.  One is the DIGEST's mean-pool vector.
 *  - adjoint identities on pseudo-random data: a backward kernel must be
 *    the transpose of its forward, <F(x), dy> == <x, B(dy)>, for every
 *    geometry variant (stride, padding, dilation, groups, modes).  A wrong
 *    tap, weight or index breaks the identity by O(1), so it cannot be met
 *    by accident.  Nonlinear ops are checked against central finite
 *    differences in double instead.
 *
 * The last test, test_every_op_covered, fails until each op that
 * eval_test_file() gives this file (op_is_backward_only() ops and
 * stop_gradient) has been evaluated by some case here.
 */
#include "eval_helpers.h"

/* Window attributes: strides (sy, sx), padding p and dilation d on both
 * axes, groups g. */
static Attrs win_at(Op op, int sy, int sx, int p, int d, int g) {
  Attrs at = def(op);
  at.stride[0] = sy, at.stride[1] = sx, at.pad[0] = at.pad[1] = p;
  at.dilation[0] = at.dilation[1] = d, at.groups = g;
  return at;
}

static double norm(const Node *n) { return sqrt(dot(n, n)); }

/* a == b up to f32 rounding of values whose products sum (in absolute
 * value) to at most scale. */
static void same(double a, double b, double scale, const char *what) {
  if (!(fabs(a - b) <= 1e-6 * scale + 1e-12))
    fail_msg("%s: %.12g != %.12g (scale %g)", what, a, b, scale);
}

/* <F(x), gy> == <x, bx> where y = F(x) and bx = F^T(gy). */
static void adjoint(const Node *x, const Node *y, const Node *gy, const Node *bx,
                    const char *what) {
  check_shape(bx, x->shape);
  same(dot(y, gy), dot(x, bx), norm(y) * norm(gy) + norm(x) * norm(bx), what);
}

/* --- aggregation, identity, gelu -------------------------------------------------- */

/* Column sums; the single input is a copy.  1e8 + 1 - 1e8 is 0 when summed
 * in f32 (1e8 + 1 rounds to 1e8) but 1 in double, which add_n uses.
 * stop_gradient copies f32 and i32 bit for bit. */
static void test_add_n_stop_gradient(void **state) {
  reset();
  Node *a = IN_F("a", shp(1, 4), 1, 2, 3, 4), *b = IN_F("b", shp(1, 4), 10, 20, 30, 40);
  Node *c = IN_F("c", shp(1, 4), .5f, .5f, .5f, .5f);
  Node *big = IN_F("big", shp(1, 1), 1e8f), *one = IN_F("one", shp(1, 1), 1);
  Node *nbig = IN_F("nbig", shp(1, 1), -1e8f);
  Node *xf = IN_F("xf", shp(1, 2), 1.5f, -2), *xi = IN_I("xi", shp(1, 3), 7, -3, INT32_MAX);
  Node *s3 = mk(OP_ADD_N, NULL, 3, a, b, c), *s1 = mk(OP_ADD_N, NULL, 1, a);
  Node *sd = mk(OP_ADD_N, NULL, 3, big, one, nbig);
  Node *sf = mk(OP_STOP_GRADIENT, NULL, 1, xf), *si = mk(OP_STOP_GRADIENT, NULL, 1, xi);
  run();
  EXPECT_F(s3, 11.5f, 22.5f, 33.5f, 44.5f);
  EXPECT_F(s1, 1, 2, 3, 4);
  EXPECT_F(sd, 1);
  EXPECT_F(sf, 1.5f, -2);
  EXPECT_I(si, 7, -3, INT32_MAX);
}

/* gelu'(x) = Phi(x) + x phi(x) (mode 0) at 0, 1, -1, 2, -3:
 * 0.5, 0.841344746 + 0.241970725, 0.158655254 - 0.241970725,
 * 0.977249868 + 2 * 0.053990967, 0.001349898 - 3 * 0.004431848;
 * the tanh form (mode 1), d/dx 0.5 x (1 + tanh(k (x + 0.044715 x^3))):
 * 0.5, 1.08296408, -0.0829640838, 1.08609926, -0.0115841666.  dy scales
 * (2 at x = -1; a broadcast scalar 3). */
static void test_gelu_back(void **state) {
  reset();
  Node *dy = IN_F("dy", shp(1, 5), 1, 1, 2, 1, 1), *x = IN_F("x", shp(1, 5), 0, 1, -1, 2, -3);
  Node *k3 = IN_F("k3", shp(0), 3);
  Attrs th = def(OP_GELU_BACK);
  th.mode = 1;
  Node *g0 = mk(OP_GELU_BACK, NULL, 2, dy, x), *g1 = mk(OP_GELU_BACK, &th, 2, dy, x);
  Node *gs = mk(OP_GELU_BACK, NULL, 2, k3, x);
  run();
  EXPECT_F(g0, 0.5f, 1.08331547f, -0.166630941f, 1.0852318f, -0.0119456472f);
  EXPECT_F(g1, 0.5f, 1.08296408f, -0.165928168f, 1.08609926f, -0.0115841666f);
  EXPECT_F(gs, 1.5f, 3.24994641f, -0.249946412f, 3.2556954f, -0.0358369416f);
  /* central differences of sc_gelu, in double, against sc_gelu_back */
  const double xs[] = {-4, -3, -1, -0.5, 0, 0.3, 1, 2.5, 5};
  for (int mode = 0; mode < 2; mode++) {
    Attrs at = def(OP_GELU);
    at.mode = mode;
    for (int i = 0; i < countof(xs); i++) {
      double h = 1e-5, x0 = xs[i];
      double fd = (sc_gelu(x0 + h, 0, &at) - sc_gelu(x0 - h, 0, &at)) / (2 * h);
      double an = sc_gelu_back(1, x0, &at);
      if (fabs(fd - an) > 1e-8)
        fail_msg("gelu mode %d at %g: finite difference %.12g, gelu_back %.12g", mode, x0, fd,
                 an);
      assert_true(fabs(sc_gelu_back(2.5, x0, &at) - 2.5 * an) < 1e-12);
    }
  }
}

/* --- convolution weights -------------------------------------------------------------- */

/* dW[i][j] = sum over windows of x[oy + i][ox + j] * dy[oy][ox]:
 *  (a) x = 0..8 as 3x3, dy [[1,2],[3,4]], 2x2: dW00 = 0 + 2 + 9 + 16 = 27,
 *      dW01 = 1 + 4 + 12 + 20 = 37, dW10 = 3 + 8 + 18 + 28 = 57, dW11 = 67;
 *  (b) x[r][c] = 4r + c, dy = ones 2x2, 3x3 stride 2 pad 1: tap i reads
 *      rows {i-1, i+1} in bounds, so R0 = {1}, R1 = {0,2}, R2 = {1,3} (and
 *      columns likewise) and dW[i][j] = sum of x over R_i x C_j, e.g.
 *      dW00 = x11 = 5, dW11 = x00 + x02 + x20 + x22 = 20, dW22 = 40;
 *  (c) 1x1, channels x = (1,2), (3,4) and dy = (5,6), (7,8): groups 2 pairs
 *      channel o with o: 1*5 + 2*6 = 17, 3*7 + 4*8 = 53; groups 1 all
 *      pairs: 17, 3*5 + 4*6 = 39, 1*7 + 2*8 = 23, 53;
 *  (d) two images summed: 1*5 + 2*6 + 3*7 + 4*8 = 70;
 *  (e) dilation 2, 1x2 kernel on the row 0..4 with dy = (1, 10, 100):
 *      taps 0 and 2: 0 + 10 + 200 = 210 and 2 + 30 + 400 = 432. */
static void test_conv2d_back_w(void **state) {
  reset();
  Node *x3 = iota_input("x3", shp(4, 1, 1, 3, 3)), *x4 = iota_input("x4", shp(4, 1, 1, 4, 4));
  Node *d2 = IN_F("d2", shp(4, 1, 1, 2, 2), 1, 2, 3, 4);
  Node *ones = IN_F("ones", shp(4, 1, 1, 2, 2), 1, 1, 1, 1);
  Node *xc = IN_F("xc", shp(4, 1, 2, 1, 2), 1, 2, 3, 4);
  Node *dc = IN_F("dc", shp(4, 1, 2, 1, 2), 5, 6, 7, 8);
  Node *xb = IN_F("xb", shp(4, 2, 1, 1, 2), 1, 2, 3, 4);
  Node *db = IN_F("db", shp(4, 2, 1, 1, 2), 5, 6, 7, 8);
  Node *xr = iota_input("xr", shp(4, 1, 1, 1, 5)), *dr = IN_F("dr", shp(4, 1, 1, 1, 3), 1, 10, 100);
  Attrs a = win_at(OP_CONV2D_BACK_W, 1, 1, 0, 1, 1), b = win_at(OP_CONV2D_BACK_W, 2, 2, 1, 1, 1);
  Attrs g2 = win_at(OP_CONV2D_BACK_W, 1, 1, 0, 1, 2), g1 = a;
  Attrs dl = win_at(OP_CONV2D_BACK_W, 1, 1, 0, 2, 1);
  a.kernel[0] = a.kernel[1] = 2, b.kernel[0] = b.kernel[1] = 3;
  g2.kernel[0] = g2.kernel[1] = g1.kernel[0] = g1.kernel[1] = 1;
  dl.kernel[0] = 1, dl.kernel[1] = 2;
  Node *wa = mk(OP_CONV2D_BACK_W, &a, 2, x3, d2), *wb = mk(OP_CONV2D_BACK_W, &b, 2, x4, ones);
  Node *wg2 = mk(OP_CONV2D_BACK_W, &g2, 2, xc, dc), *wg1 = mk(OP_CONV2D_BACK_W, &g1, 2, xc, dc);
  Node *wn = mk(OP_CONV2D_BACK_W, &g1, 2, xb, db), *wd = mk(OP_CONV2D_BACK_W, &dl, 2, xr, dr);
  run();
  EXPECT_F(wa, 27, 37, 57, 67);
  EXPECT_F(wb, 5, 10, 12, 10, 20, 24, 18, 36, 40);
  check_shape(wg2, shp(4, 2, 1, 1, 1));
  EXPECT_F(wg2, 17, 53);
  check_shape(wg1, shp(4, 2, 2, 1, 1));
  EXPECT_F(wg1, 17, 39, 23, 53);
  EXPECT_F(wn, 70);
  EXPECT_F(wd, 210, 432);
}

typedef struct Conv {
  int n, c, o, h, w, kh, kw, sy, sx, p, d, g;
} Conv;

/* y = conv2d(x, w): <y, gy> == <x, conv_transpose2d(gy, w)> (grad.c's data
 * gradient, output_padding restoring the rows the stride dropped) ==
 * <w, conv2d_back_w(x, gy)>. */
static void conv_adjoint(const Conv *k, uint64_t seed) {
  reset();
  Node *x = rand_input("x", shp(4, k->n, k->c, k->h, k->w), seed);
  Node *w = rand_input("w", shp(4, k->o, k->c / k->g, k->kh, k->kw), seed + 1);
  Attrs ca = win_at(OP_CONV2D, k->sy, k->sx, k->p, k->d, k->g);
  Attrs ta = win_at(OP_CONV_TRANSPOSE2D, k->sy, k->sx, k->p, k->d, k->g);
  Attrs ba = win_at(OP_CONV2D_BACK_W, k->sy, k->sx, k->p, k->d, k->g);
  int dim[2] = {k->h, k->w}, ks[2] = {k->kh, k->kw}, st[2] = {k->sy, k->sx};
  for (int i = 0; i < 2; i++)
    ta.out_pad[i] = (dim[i] + 2 * k->p - (k->d * (ks[i] - 1) + 1)) % st[i];
  ba.kernel[0] = k->kh, ba.kernel[1] = k->kw;
  Node *y = mk(OP_CONV2D, &ca, 2, x, w);
  Node *gy = rand_input("gy", y->shape, seed + 2);
  Node *dx = mk(OP_CONV_TRANSPOSE2D, &ta, 2, gy, w), *dw = mk(OP_CONV2D_BACK_W, &ba, 2, x, gy);
  run();
  adjoint(x, y, gy, dx, "conv2d / conv_transpose2d");
  adjoint(w, y, gy, dw, "conv2d / conv2d_back_w");
}

typedef struct ConvT {
  int n, ci, co, h, w, k, s, p, op, d, g;
} ConvT;

/* t = conv_transpose2d(x, w): <t, gy> == <x, conv2d(gy, w) cropped to x>
 * == <w, conv2d_back_w(gy, x)> (the roles exchanged, as grad.c does). */
static void convt_adjoint(const ConvT *k, uint64_t seed) {
  reset();
  Node *x = rand_input("x", shp(4, k->n, k->ci, k->h, k->w), seed);
  Node *w = rand_input("w", shp(4, k->ci, k->co / k->g, k->k, k->k), seed + 1);
  Attrs ta = win_at(OP_CONV_TRANSPOSE2D, k->s, k->s, k->p, k->d, k->g);
  Attrs ca = win_at(OP_CONV2D, k->s, k->s, k->p, k->d, k->g);
  Attrs ba = win_at(OP_CONV2D_BACK_W, k->s, k->s, k->p, k->d, k->g), crop = def(OP_SLICE);
  ta.out_pad[0] = ta.out_pad[1] = k->op;
  ba.kernel[0] = ba.kernel[1] = k->k;
  for (int i = 0; i < 4; i++)
    crop.begin[i] = 0, crop.end[i] = x->shape.dim[i], crop.step[i] = 1;
  Node *t = mk(OP_CONV_TRANSPOSE2D, &ta, 2, x, w);
  Node *gy = rand_input("gy", t->shape, seed + 2);
  Node *dx = mk(OP_SLICE, &crop, 1, mk(OP_CONV2D, &ca, 2, gy, w));
  Node *dw = mk(OP_CONV2D_BACK_W, &ba, 2, gy, x);
  run();
  adjoint(x, t, gy, dx, "conv_transpose2d / conv2d");
  adjoint(w, t, gy, dw, "conv_transpose2d / conv2d_back_w");
}

static void test_conv_adjoint(void **state) {
  const Conv cs[] = {
      /* n c o  h  w kh kw sy sx p d g */
      {1, 1, 1, 5, 5, 3, 3, 1, 1, 0, 1, 1}, /* plain */
      {2, 2, 3, 8, 6, 3, 2, 2, 2, 1, 1, 1}, /* stride 2, pad 1, a row left over */
      {1, 2, 2, 7, 7, 2, 2, 1, 1, 1, 2, 1}, /* dilation 2 */
      {2, 4, 6, 6, 6, 1, 1, 1, 1, 0, 1, 2}, /* groups 2, 1x1 */
      {2, 4, 6, 8, 7, 3, 3, 2, 1, 1, 2, 2}, /* all of them, strides (2, 1) */
      {1, 3, 3, 9, 8, 3, 2, 3, 2, 1, 2, 3}, /* depthwise, stride 3 */
  };
  for (int i = 0; i < countof(cs); i++)
    conv_adjoint(&cs[i], 100 + 10 * (uint64_t)i);
  const ConvT ts[] = {
      /* n ci co h  w  k  s  p op d g */
      {1, 2, 2, 3, 3, 3, 2, 1, 1, 1, 1}, /* stride 2, pad 1, output_padding 1 */
      {2, 4, 2, 3, 4, 2, 2, 0, 0, 3, 2}, /* dilation 3, groups 2 */
      {1, 2, 4, 3, 2, 2, 2, 1, 2, 3, 2}, /* output_padding 2 >= stride: crop */
  };
  for (int i = 0; i < countof(ts); i++)
    convt_adjoint(&ts[i], 200 + 10 * (uint64_t)i);
}

/* --- pooling -------------------------------------------------------------------------- */

/* Each window's gradient goes to its first maximum:
 *  (a) 2x2 windows {1,3 / 3,2} and {3,0 / 1,3} tie; the first in row-major
 *      order wins, (0,1) and (0,2);
 *  (b) a 1x2 window sliding over [1, 5, 2] picks 5 twice: 1 + 2 = 3;
 *  (c) k2 s1 p1 on [[-1,-2],[-3,-4]]: the padding acts as -inf, never
 *      zero, so the nine windows pick (0,0) (0,0) (0,1) / (0,0) (0,0) (0,1)
 *      / (1,0) (1,0) (1,1) and dy = 1..9 sums to 1+2+4+5, 3+6, 7+8, 9;
 *  (d) a NaN is the window's value (the forward gives NaN), so it takes dy;
 *  (e) k2 dilation 2 on x[r][c] = 4r + c: window (r, c) picks x(r+2, c+2). */
static void test_maxpool_back(void **state) {
  reset();
  Node *xa = IN_F("xa", shp(4, 1, 1, 2, 4), 1, 3, 3, 0, 3, 2, 1, 3);
  Node *da = IN_F("da", shp(4, 1, 1, 1, 2), 10, 20);
  Node *xb = IN_F("xb", shp(4, 1, 1, 1, 3), 1, 5, 2), *db = IN_F("db", shp(4, 1, 1, 1, 2), 1, 2);
  Node *xc = IN_F("xc", shp(4, 1, 1, 2, 2), -1, -2, -3, -4);
  Node *dc = IN_F("dc", shp(4, 1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
  Node *xd = IN_F("xd", shp(4, 1, 1, 2, 2), 1, NAN, 3, 4), *dd = IN_F("dd", shp(4, 1, 1, 1, 1), 5);
  Node *xe = iota_input("xe", shp(4, 1, 1, 4, 4)), *de = IN_F("de", shp(4, 1, 1, 2, 2), 1, 2, 3, 4);
  Attrs k2 = pool_at(OP_MAXPOOL2D_BACK, 2, 0, 0, 1), k12 = pool_at(OP_MAXPOOL2D_BACK, 1, 1, 0, 1);
  Attrs pad = pool_at(OP_MAXPOOL2D_BACK, 2, 1, 1, 1), dil = pool_at(OP_MAXPOOL2D_BACK, 2, 1, 0, 2);
  k12.kernel[1] = 2;
  Node *ba = mk(OP_MAXPOOL2D_BACK, &k2, 2, da, xa), *bb = mk(OP_MAXPOOL2D_BACK, &k12, 2, db, xb);
  Node *bc = mk(OP_MAXPOOL2D_BACK, &pad, 2, dc, xc), *bd = mk(OP_MAXPOOL2D_BACK, &k2, 2, dd, xd);
  Node *be = mk(OP_MAXPOOL2D_BACK, &dil, 2, de, xe);
  run();
  EXPECT_F(ba, 0, 10, 20, 0, 0, 0, 0, 0);
  EXPECT_F(bb, 0, 3, 0);
  EXPECT_F(bc, 12, 9, 15, 9);
  EXPECT_F(bd, 0, 5, 0, 0);
  EXPECT_F(be, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4);
}

/* The DIGEST's mean-pool backward vector (seed 002:6332-6349, DIGEST.md
 * section 6 row 18): the pooled gradient [[1,3],[2,4]] of a 2x2 mean pool
 * over 4x4 spreads back as each value / 4 over its block.  With padding
 * (k2 s1 p1, 2x2 input, dy = 1..9 over the 3x3 windows, window (r, c)
 * covering rows r-1..r and columns c-1..c): counting the padding, x(0,0)
 * gets (1 + 2 + 4 + 5) / 4 = 3, then 16/4, 24/4, 28/4; not counting it, the
 * windows have 1 2 1 / 2 4 2 / 1 2 1 real taps, so x(0,0) gets
 * 1/1 + 2/2 + 4/2 + 5/4 = 5.25, x(0,1) 2/2 + 3 + 5/4 + 6/2 = 8.25,
 * x(1,0) 4/2 + 5/4 + 7 + 8/2 = 14.25, x(1,1) 5/4 + 6/2 + 8/2 + 9 = 17.25
 * (they add up to 45 = 1 + ... + 9: every window hands on all of dy). */
static void test_avgpool_back(void **state) {
  reset();
  Node *dg = IN_F("dg", shp(4, 1, 1, 2, 2), 1, 3, 2, 4);
  Node *dp = IN_F("dp", shp(4, 1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
  Attrs k2 = pool_at(OP_AVGPOOL2D_BACK, 2, 0, 0, 1), inc = pool_at(OP_AVGPOOL2D_BACK, 2, 1, 1, 1);
  k2.n_shape = 4, k2.shape[0] = k2.shape[1] = 1, k2.shape[2] = k2.shape[3] = 4;
  inc.n_shape = 4, inc.shape[0] = inc.shape[1] = 1, inc.shape[2] = inc.shape[3] = 2;
  Attrs exc = inc;
  exc.count_include_pad = false;
  Node *bg = mk(OP_AVGPOOL2D_BACK, &k2, 1, dg);
  Node *bi = mk(OP_AVGPOOL2D_BACK, &inc, 1, dp), *be = mk(OP_AVGPOOL2D_BACK, &exc, 1, dp);
  run();
  check_shape(bg, shp(4, 1, 1, 4, 4));
  EXPECT_F(bg, .25f, .25f, .75f, .75f, .25f, .25f, .75f, .75f, .5f, .5f, 1, 1, .5f, .5f, 1, 1);
  EXPECT_F(bi, 3, 4, 6, 7);
  EXPECT_F(be, 5.25f, 8.25f, 14.25f, 17.25f);
}

/* <pool(x), gy> == <x, pool_back(gy)> on random x (no ties, so max pooling
 * is linear around x), kernels (kh, kw), strides, pads and dilations. */
static void test_pool_adjoint(void **state) {
  const int cs[][7] = {
      /* kh kw sy sx py px d */
      {2, 2, 2, 2, 0, 0, 1}, {3, 3, 2, 2, 1, 1, 1}, {2, 2, 1, 1, 1, 1, 1},
      {3, 2, 1, 2, 1, 0, 1}, {2, 3, 1, 1, 1, 1, 2}, {3, 3, 3, 2, 0, 1, 2},
  };
  for (int i = 0; i < countof(cs); i++)
    for (int v = 0; v < 3; v++) { /* maxpool, avgpool counting the pad, avgpool not */
      const int *k = cs[i];
      Op fwd = v ? OP_AVGPOOL2D : OP_MAXPOOL2D, back = v ? OP_AVGPOOL2D_BACK : OP_MAXPOOL2D_BACK;
      if (v && k[6] != 1)
        continue; /* average pooling has no dilation */
      reset();
      Attrs at = def(fwd);
      at.kernel[0] = k[0], at.kernel[1] = k[1], at.stride[0] = k[2], at.stride[1] = k[3];
      at.pad[0] = k[4], at.pad[1] = k[5], at.dilation[0] = at.dilation[1] = k[6];
      at.count_include_pad = v == 1;
      Node *x = rand_input("x", shp(4, 2, 2, 7, 6), 300 + 10 * (uint64_t)i + (uint64_t)v);
      Node *y = mk(fwd, &at, 1, x), *gy = rand_input("gy", y->shape, 7 + (uint64_t)i);
      Attrs bt = y->at;
      bt.n_shape = 4;
      memcpy(bt.shape, x->shape.dim, sizeof bt.shape);
      Node *bx = v ? mk(back, &bt, 1, gy) : mk(back, &bt, 2, gy, x);
      run();
      adjoint(x, y, gy, bx, op_name(back));
    }
}

/* --- upsampling ------------------------------------------------------------------------- */

/* Nearest: each input pixel sums its 2x2 block of dy = 0..15: 0+1+4+5,
 * 2+3+6+7, 8+9+12+13, 10+11+14+15.  Bilinear from a 1x3 row to 2x6: both
 * output rows read input row 0 with total weight 1, so dy's column sums
 * (2, 3, 4, 5, 6, 7) are spread by the width weights.  align_corners=false
 * samples at 0 (clamped), .25, .75, 1.25, 1.75, 2.25 (upper tap clamped):
 * dx = (2 + .75*3 + .25*4, .25*3 + .75*4 + .75*5 + .25*6, .25*5 + .75*6 + 7)
 * = (5.25, 9, 12.75); true samples at 0, .4, .8, 1.2, 1.6, 2:
 * (2 + .6*3 + .2*4, .4*3 + .8*4 + .8*5 + .4*6, .2*5 + .6*6 + 7)
 * = (4.6, 10.8, 11.6).  Both total 27, the sum of dy. */
static void test_upsample_back(void **state) {
  reset();
  Node *dn = iota_input("dn", shp(4, 1, 1, 4, 4));
  Node *db = IN_F("db", shp(4, 1, 1, 2, 6), 1, 2, 3, 4, 5, 6, 1, 1, 1, 1, 1, 1);
  Attrs nr = def(OP_UPSAMPLE_BACK), bl = nr, ba = nr;
  bl.mode = ba.mode = 1, ba.align_corners = true;
  Node *un = mk(OP_UPSAMPLE_BACK, &nr, 1, dn);
  Node *ub = mk(OP_UPSAMPLE_BACK, &bl, 1, db), *ua = mk(OP_UPSAMPLE_BACK, &ba, 1, db);
  run();
  check_shape(un, shp(4, 1, 1, 2, 2));
  EXPECT_F(un, 10, 18, 42, 50);
  check_shape(ub, shp(4, 1, 1, 1, 3));
  EXPECT_F(ub, 5.25f, 9, 12.75f);
  EXPECT_F(ua, 4.6f, 10.8f, 11.6f);
}

/* <upsample(x), gy> == <x, upsample_back(gy)> for every mode, several
 * scales and sizes (a side of 1, where bilinear taps clamp). */
static void test_upsample_adjoint(void **state) {
  const int sizes[][3] = {{3, 4, 2}, {1, 5, 3}, {4, 2, 1}, {2, 3, 4}}; /* h, w, scale */
  for (int i = 0; i < countof(sizes); i++)
    for (int m = 0; m < 3; m++) { /* nearest, bilinear, bilinear align_corners */
      reset();
      Attrs at = def(OP_UPSAMPLE);
      at.scale = sizes[i][2], at.mode = m > 0, at.align_corners = m == 2;
      Shape xs = shp(4, 2, 3, sizes[i][0], sizes[i][1]);
      Node *x = rand_input("x", xs, 400 + (uint64_t)(3 * i + m));
      Node *y = mk(OP_UPSAMPLE, &at, 1, x), *gy = rand_input("gy", y->shape, 9 + (uint64_t)i);
      Node *bx = mk(OP_UPSAMPLE_BACK, &at, 1, gy);
      run();
      adjoint(x, y, gy, bx, m == 0 ? "upsample nearest" : "upsample bilinear");
    }
}

/* --- slice, embedding, cross_entropy ------------------------------------------------------ */

/* [2, 2] back into [3, 4] at rows 0:3:2 and columns 1:4:2; i32 [-5, 7] into
 * [4] at 1:4:2.  Random: <slice(x), gy> == <x, slice_back(gy)> for a slice
 * with a negative begin (normalized by shape_slice) and steps 1 and 2. */
static void test_slice_back(void **state) {
  reset();
  Node *g = IN_F("g", shp(2, 2, 2), 1, 2, 3, 4), *gi = IN_I("gi", shp(1, 2), -5, 7);
  Attrs a = def(OP_SLICE_BACK), b = def(OP_SLICE_BACK);
  a.n_shape = 2, a.shape[0] = 3, a.shape[1] = 4;
  a.begin[0] = 0, a.end[0] = 3, a.step[0] = 2, a.begin[1] = 1, a.end[1] = 4, a.step[1] = 2;
  b.n_shape = 1, b.shape[0] = 4, b.begin[0] = 1, b.end[0] = 4, b.step[0] = 2;
  Node *s = mk(OP_SLICE_BACK, &a, 1, g), *si = mk(OP_SLICE_BACK, &b, 1, gi);
  run();
  EXPECT_F(s, 0, 1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4);
  EXPECT_I(si, 0, -5, 0, 7);
  reset();
  Node *x = rand_input("x", shp(3, 3, 5, 4), 500);
  Attrs sl = def(OP_SLICE);
  const int64_t be[3] = {1, 0, -3}, en[3] = {3, 5, 4}, st[3] = {1, 2, 2};
  for (int d = 0; d < 3; d++)
    sl.begin[d] = be[d], sl.end[d] = en[d], sl.step[d] = st[d];
  Node *y = mk(OP_SLICE, &sl, 1, x);
  check_shape(y, shp(3, 2, 3, 2));
  Node *gy = rand_input("gy", y->shape, 501);
  Attrs bt = y->at;
  bt.n_shape = 3;
  memcpy(bt.shape, x->shape.dim, sizeof bt.shape);
  Node *bx = mk(OP_SLICE_BACK, &bt, 1, gy);
  run();
  adjoint(x, y, gy, bx, "slice");
}

/* Rows of dy (1..8 as [2, 2, 2]) added at ids [[3,0],[1,3]]: row 0 = (3,4),
 * row 1 = (5,6), row 2 = 0, row 3 = (1,2) + (7,8).  Ids 4 and -1 are out of
 * [0, 4) and skipped.  D = 300 (over one 256-column chunk) with ids
 * (0, 2, 0) and dy[p][k] = 300p + k: row 0 = k + 600 + k, row 2 = 300 + k.
 * Random: <embedding(ids, T), gy> == <T, embedding_back(ids, gy)>. */
static void test_embedding_back(void **state) {
  reset();
  Node *ids = IN_I("ids", shp(2, 2, 2), 3, 0, 1, 3), *bad = IN_I("bad", shp(1, 3), 1, 4, -1);
  Node *g = IN_F("g", shp(3, 2, 2, 2), 1, 2, 3, 4, 5, 6, 7, 8);
  Node *gb = IN_F("gb", shp(2, 3, 2), 1, 2, 3, 4, 5, 6);
  Node *wid = IN_I("wid", shp(1, 3), 0, 2, 0), *gw = iota_input("gw", shp(2, 3, 300));
  Attrs at = def(OP_EMBEDDING_BACK), aw = at;
  at.n_shape = 2, at.shape[0] = 4, at.shape[1] = 2;
  aw.n_shape = 2, aw.shape[0] = 3, aw.shape[1] = 300;
  Node *e = mk(OP_EMBEDDING_BACK, &at, 2, ids, g), *eb = mk(OP_EMBEDDING_BACK, &at, 2, bad, gb);
  Node *ew = mk(OP_EMBEDDING_BACK, &aw, 2, wid, gw);
  run();
  EXPECT_F(e, 3, 4, 5, 6, 0, 0, 8, 10);
  EXPECT_F(eb, 0, 0, 1, 2, 0, 0, 0, 0);
  for (int k = 0; k < 300; k++)
    if (fv(ew)[k] != 600 + 2 * k || fv(ew)[300 + k] != 0 || fv(ew)[600 + k] != 300 + k)
      fail_msg("embedding_back, D = 300: column %d is wrong", k);
  reset();
  Node *tab = rand_input("tab", shp(2, 5, 3), 600);
  Node *rid = IN_I("rid", shp(2, 2, 3), 4, 0, 4, 2, 2, 4);
  Node *y = mk(OP_EMBEDDING, NULL, 2, rid, tab), *gy = rand_input("gy", y->shape, 601);
  at.shape[0] = 5, at.shape[1] = 3;
  Node *bt = mk(OP_EMBEDDING_BACK, &at, 2, rid, gy);
  run();
  adjoint(tab, y, gy, bt, "embedding");
}

/* The mean cross-entropy in double, written from its definition. */
static double ce_ref(const double *z, const int32_t *lab, int rows, int c) {
  double total = 0;
  for (int r = 0; r < rows; r++) {
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < c; k++)
      mx = z[r * c + k] > mx ? z[r * c + k] : mx;
    for (int k = 0; k < c; k++)
      s += exp(z[r * c + k] - mx);
    total += mx + log(s) - z[r * c + lab[r]];
  }
  return total / rows;
}

/* (softmax - onehot) dy / M.  [[0,0],[0,ln 3]], labels (0, 1), dy 2, M 2:
 * (.5 - 1, .5) and (1/4, 3/4 - 1).  [1000, 0] label 1: softmax (1, 0), no
 * overflow.  Label 5 of C = 2: that row is NaN, the other (.5 - 1, .5) / 2.
 * Then central differences of ce_ref, in double, for [2, 3, 4] logits. */
static void test_cross_entropy_back(void **state) {
  reset();
  Node *lg = IN_F("lg", shp(2, 2, 2), 0, 0, 0, 1.09861229f), *lb = IN_I("lb", shp(1, 2), 0, 1);
  Node *two = IN_F("two", shp(0), 2), *one = IN_F("one", shp(0), 1);
  Node *big = IN_F("big", shp(2, 1, 2), 1000, 0), *bl = IN_I("bl", shp(1, 1), 1);
  Node *bad = IN_I("bad", shp(1, 2), 0, 5);
  Node *c = mk(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, lb, two);
  Node *cb = mk(OP_CROSS_ENTROPY_BACK, NULL, 3, big, bl, one);
  Node *cx = mk(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, bad, one);
  run();
  EXPECT_F(c, -.5f, .5f, .25f, -.25f);
  EXPECT_F(cb, 1, -1);
  EXPECT_F(cx, -.25f, .25f, NAN, NAN);
  reset();
  static int32_t labs[6] = {3, 0, 1, 2, 2, 0};
  Node *z = rand_input("z", shp(3, 2, 3, 4), 700);
  Node *zl = input("zl", DT_I32, shp(2, 2, 3), labs, 6);
  Node *dy = IN_F("dy", shp(0), 0.7f);
  Node *loss = mk(OP_CROSS_ENTROPY, NULL, 2, z, zl);
  Node *g = mk(OP_CROSS_ENTROPY_BACK, NULL, 3, z, zl, dy);
  run();
  double zd[24];
  for (int i = 0; i < 24; i++)
    zd[i] = fv(z)[i];
  assert_true(fabs(fv(loss)[0] - ce_ref(zd, labs, 6, 4)) < 1e-6);
  for (int i = 0; i < 24; i++) {
    double h = 1e-4, keep = zd[i], lp, lm;
    zd[i] = keep + h, lp = ce_ref(zd, labs, 6, 4);
    zd[i] = keep - h, lm = ce_ref(zd, labs, 6, 4);
    zd[i] = keep;
    double fd = (double)0.7f * (lp - lm) / (2 * h);
    if (fabs(fd - fv(g)[i]) > 1e-6)
      fail_msg("cross_entropy_back[%d] = %.9g, finite difference %.9g", i, fv(g)[i], fd);
  }
}

/* --- FLOPs ------------------------------------------------------------------------------ */

/* stats.c: a backward kernel counts what its forward counts.  conv2d_back_w
 * of the seeds' 32x32x3 * six 5x5 -> 28x28x6 convolution: 705600, like
 * the forward; add_n of 3 [2, 2]: 2 adds per element; pooling backward
 * with 2x2 windows: 4 per pooled element, 3*16*16*4; upsample_back
 * bilinear from 6x6 (2 channels): 4 per element of the large side, 288;
 * cross_entropy_back: 4 per logit. */
static void test_flops_back(void **state) {
  reset();
  Node *x = graph_input(G, "x", DT_F32, shp(4, 1, 3, 32, 32), L0);
  Node *gy = graph_input(G, "gy", DT_F32, shp(4, 1, 6, 28, 28), L0);
  Node *a = graph_input(G, "a", DT_F32, shp(2, 2, 2), L0);
  Node *gp = graph_input(G, "gp", DT_F32, shp(4, 1, 3, 16, 16), L0);
  Node *gu = graph_input(G, "gu", DT_F32, shp(4, 1, 2, 6, 6), L0);
  Node *lg = graph_input(G, "lg", DT_F32, shp(2, 4, 10), L0);
  Node *lb = graph_input(G, "lb", DT_I32, shp(1, 4), L0);
  Node *s = graph_input(G, "s", DT_F32, shp(0), L0);
  Attrs bw = def(OP_CONV2D_BACK_W), mp = pool_at(OP_MAXPOOL2D_BACK, 2, 0, 0, 1);
  Attrs ap = pool_at(OP_AVGPOOL2D_BACK, 2, 0, 0, 1), up = def(OP_UPSAMPLE_BACK);
  bw.kernel[0] = bw.kernel[1] = 5;
  ap.n_shape = 4;
  memcpy(ap.shape, x->shape.dim, sizeof ap.shape);
  up.mode = 1;
  assert_true(node_flops(mk(OP_CONV2D_BACK_W, &bw, 2, x, gy)) == 705600);
  assert_true(node_flops(mk(OP_ADD_N, NULL, 3, a, a, a)) == 8);
  assert_true(node_flops(mk(OP_MAXPOOL2D_BACK, &mp, 2, gp, x)) == 3072);
  assert_true(node_flops(mk(OP_AVGPOOL2D_BACK, &ap, 1, gp)) == 3072);
  assert_true(node_flops(mk(OP_UPSAMPLE_BACK, &up, 1, gu)) == 288);
  assert_true(node_flops(mk(OP_CROSS_ENTROPY_BACK, NULL, 3, lg, lb, s)) == 160);
}

/* Runs last: each op this file is responsible for (eval_test_file) must
 * have been evaluated by a case above. */
static void test_every_op_covered(void **state) { check_ops_covered("test_eval_back.c"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_add_n_stop_gradient), cmocka_unit_test(test_gelu_back),
      cmocka_unit_test(test_conv2d_back_w),       cmocka_unit_test(test_conv_adjoint),
      cmocka_unit_test(test_maxpool_back),        cmocka_unit_test(test_avgpool_back),
      cmocka_unit_test(test_pool_adjoint),        cmocka_unit_test(test_upsample_back),
      cmocka_unit_test(test_upsample_adjoint),    cmocka_unit_test(test_slice_back),
      cmocka_unit_test(test_embedding_back),      cmocka_unit_test(test_cross_entropy_back),
      cmocka_unit_test(test_flops_back),          cmocka_unit_test(test_every_op_covered),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
