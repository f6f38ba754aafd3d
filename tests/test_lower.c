/*
 * test_lower.c: lowering to Kernel IR (ir/lower*.c) against the reference
 * evaluator, through the Kernel IR interpreter (ir/kir_eval.c).
 *
 * Every case builds a small graph (eval_helpers.h: inputs with data, mk()),
 * evaluates it with the reference evaluator (run()), then for each node of
 * interest lowers it, checks the kernel (kir_verify, buffer layout), runs it
 * with kir_eval on the very input values the reference read, and compares
 * the result with the reference's (check()):
 *  - EXACT: bit for bit (any NaN matches any NaN): data movement, selects,
 *    comparisons, casts, max / argmax / max pooling, one-operation
 *    arithmetic (+ - * / sqrt: rounding the reference's double result to
 *    f32 is the f32 result), i32 (wrapping) arithmetic;
 *  - ELEM, |a - b| <= 1e-6 + 1e-6 |b|: f32 libm calls and short formulas
 *    against the reference's double math rounded once (a few ulps; the
 *    absolute part covers gelu's 1 + erf(x) cancellation for x << 0);
 *  - RED, 1e-5 + 1e-5 |b|: reductions of up to a few dozen terms of size
 *    <= 1, accumulated in f32 where the reference uses double: an f32 sum
 *    of n such terms errs by about n 6e-8 when their signs are random (4e-6
 *    at n = 64), and by up to n^2 3e-8 when they share a sign, but then
 *    |b| ~ n and the relative part covers it;
 * inf must equal inf.  Every op with a LOWER function must be lowered by
 * some case (test_every_op_lowered, last).
 *
 * Then every model of models/, shrunk (kt_small_consts' sizes, and N=2,
 * blocks=1 where it has them: the interpreter is slow), in inference and as
 * the whole training step (lower_helpers.h, check_model): each node's
 * kernel on the reference's inputs against the reference (the case
 * tolerances, except for the long reductions: the classic bound of a
 * computed sum, 1e-5 of the same kernel run on |inputs|, or 1e-5 of the
 * node's scale for softmax and the loss), and the whole graph run node by
 * node through kir_eval alone, its roots (outputs; loss and every update's
 * value) within 1e-3 of their scale.  A parameter whose gradient is
 * rounding noise in the reference (attention's key bias: exactly 0 in
 * exact arithmetic) has its updates skipped, Adam making O(lr) steps of
 * arbitrary sign from noise, and both gradients must vanish instead.  A
 * golden kir_print keeps the printer covered.
 *
 * The whole-graph run is as written, so an activation that lands within
 * rounding of a ReLU's (or ReLU6's) threshold can fall on one side in
 * kir_eval's run and on the other in the reference's, and everything
 * downstream of that mask differs by far more than rounding: mobilenet_v2
 * at width 32 (a depthwise batchnorm output of -3.2e-7 in kir_eval, +1.1e-7
 * in the reference, the stem's gradient then 0.3% apart; float64 PyTorch
 * sides with kir_eval) and unet at 64x64, base 16 (a ReLU input at ~1e-8,
 * a weight gradient 0.13% apart) do.  The small sizes keep such near-ties
 * unlikely (fewer activations); when only a root fails, with every kernel
 * passing on the reference's inputs, look for one first.
 *
 * LOWER_ONLY=name checks only the models whose file name contains name;
 * LOWER_STATS=1 prints the largest error each op showed, as a fraction of
 * its bound (all well below 1).
 *
 * Adding a case: start() (reset() and an empty keep() list), build inputs
 * and keep(mk(...)) each node to check, run() (or prep(), adjust EV.cx,
 * go()), then check_all(): each kept node against the op's tolerance
 * (op_tol); or check(node, tol) for another.  A new op needs a case here,
 * or test_every_op_lowered fails.
 */

#include "eval_helpers.h"
#include "lower_helpers.h"

static bool lowered[OP_COUNT]; /* by a case (test_every_op_lowered) */

/* After run(): n's kernel on the reference's inputs against its value. */
static void check(const Node *n, Tol t) {
  Kernel *k = lower_checked(A, n);
  void **vals = calloc((size_t)G->n_nodes, sizeof *vals);
  for (int i = 0; i < G->n_nodes; i++)
    vals[i] = EV.vals[i].data;
  void *out = malloc((size_t)shape_numel(&n->shape) * 4 + 4);
  exec(k, vals, out, (int64_t)EV.cx.step);
  compare("case", n, out, EV.vals[n->id].data, t, NULL);
  lowered[n->op] = true;
  free(out);
  free(vals);
}

#define CHECK(n) check((n), op_tol(n))

static Node *ins[256];
static int n_ins;
/* mk() that remembers the node for check_all(). */
static Node *keep(Node *n) {
  assert_true(n_ins < countof(ins));
  return ins[n_ins++] = n;
}
/* reset() for a case that uses keep(). */
static void start(void) {
  reset();
  n_ins = 0;
}
static void check_all(void) {
  for (int i = 0; i < n_ins; i++)
    CHECK(ins[i]);
  n_ins = 0;
}

static Attrs with_alpha(Op op, double alpha, double beta, int mode) {
  Attrs at = def(op);
  at.alpha = alpha, at.beta = beta, at.mode = mode;
  return at;
}

static const float special[] = {-3, -1, -0.5f, -0.0f, 0, 0.5f, 1, 3, 25, -25, 1e-4f, -1e-4f,
                                88, -100, NAN, INFINITY, -INFINITY, 0.7f, 5e-39f, -7.5f};

/* --- elementwise --------------------------------------------------------------- */

static void test_unary(void **state) {
  start();
  Node *x = input("x", DT_F32, shp(2, 4, 5), (void *)special, countof(special));
  Node *xi = IN_I("xi", shp(1, 5), INT32_MIN, -5, 0, 7, INT32_MAX);
  for (int op = OP_NEG; op <= OP_CLAMP; op++)
    keep(mk((Op)op, NULL, 1, x));
  Attrs v[] = {with_alpha(OP_LEAKY_RELU, 0.1, 0, 0), with_alpha(OP_ELU, 1.5, 0, 0),
               with_alpha(OP_GELU, 0, 0, 1), with_alpha(OP_SOFTPLUS, 2, 5, 0),
               with_alpha(OP_SOFTPLUS, 0.5, 1, 0), with_alpha(OP_CLAMP, -0.5, 2, 0),
               with_alpha(OP_CLAMP, 0.1, 0.1, 0)};
  Op vop[] = {OP_LEAKY_RELU, OP_ELU, OP_GELU, OP_SOFTPLUS, OP_SOFTPLUS, OP_CLAMP, OP_CLAMP};
  for (int i = 0; i < countof(v); i++)
    keep(mk(vop[i], &v[i], 1, x));
  keep(mk(OP_NEG, NULL, 1, xi)), keep(mk(OP_ABS, NULL, 1, xi));
  run();
  check_all();
}

static void test_binary(void **state) {
  start();
  Node *a = rand_input("a", shp(3, 2, 3, 4), 1), *b = rand_input("b", shp(3, 2, 3, 4), 2);
  Node *r = rand_input("r", shp(1, 4), 3), *c = rand_input("c", shp(2, 3, 1), 4);
  Node *s = IN_F("s", shp(0), 0.5f);
  Node *p = IN_F("p", shp(1, 8), 1, NAN, 2, -0.0f, 0, 3, INFINITY, -INFINITY);
  Node *q = IN_F("q", shp(1, 8), NAN, 1, 2, 0, -0.0f, -3, INFINITY, 1);
  Node *pairs[][2] = {{a, b}, {a, r}, {r, a}, {c, r}, {s, a}, {a, s}, {a, c}, {p, q}, {q, p}};
  Op ops[] = {OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_POW, OP_MAXIMUM, OP_MINIMUM, OP_EQUAL,
              OP_NOT_EQUAL, OP_LESS, OP_LESS_EQUAL, OP_GREATER, OP_GREATER_EQUAL, OP_GELU_BACK};
  Attrs tanh_form = with_alpha(OP_GELU_BACK, 0, 0, 1);
  for (int i = 0; i < countof(pairs); i++) {
    for (int j = 0; j < countof(ops); j++)
      keep(mk(ops[j], NULL, 2, pairs[i][0], pairs[i][1]));
    keep(mk(OP_GELU_BACK, &tanh_form, 2, pairs[i][0], pairs[i][1]));
  }
  Node *ia = IN_I("ia", shp(2, 2, 3), INT32_MAX, INT32_MIN, -7, 0, 5, 100000);
  Node *ib = IN_I("ib", shp(1, 3), 1, -1, 100000);
  Op iops[] = {OP_ADD, OP_SUB, OP_MUL, OP_MAXIMUM, OP_MINIMUM, OP_EQUAL, OP_NOT_EQUAL,
               OP_LESS, OP_LESS_EQUAL, OP_GREATER, OP_GREATER_EQUAL};
  for (int j = 0; j < countof(iops); j++)
    keep(mk(iops[j], NULL, 2, ia, ib)), keep(mk(iops[j], NULL, 2, ib, ia));
  run();
  check_all();
}

static void test_where_cast(void **state) {
  start();
  Node *cf = IN_F("cf", shp(2, 2, 3), 0, NAN, -0.0f, 1, -2, 0);
  Node *ci = IN_I("ci", shp(2, 2, 1), 0, 5);
  Node *a = rand_input("a", shp(2, 2, 3), 5), *b = rand_input("b", shp(1, 3), 6);
  Node *ia = IN_I("ia", shp(1, 3), 1, 2, 3), *ib = IN_I("ib", shp(2, 2, 1), -1, -2);
  keep(mk(OP_WHERE, NULL, 3, cf, a, b)), keep(mk(OP_WHERE, NULL, 3, ci, a, b));
  keep(mk(OP_WHERE, NULL, 3, ci, b, a)), keep(mk(OP_WHERE, NULL, 3, cf, ia, ib));
  Node *f = IN_F("f", shp(1, 14), NAN, INFINITY, -INFINITY, 3e9f, -3e9f, 2147483520.0f,
                 -2147483648.0f, 2.7f, -2.7f, 0.5f, -0.0f, 1e-30f, 2147483648.0f, -2147483904.0f);
  Node *i = IN_I("i", shp(1, 5), 16777217, -16777219, INT32_MAX, INT32_MIN, 3);
  Attrs ti = def(OP_CAST), tf = def(OP_CAST);
  ti.to = DT_I32, tf.to = DT_F32;
  keep(mk(OP_CAST, &ti, 1, f)), keep(mk(OP_CAST, &tf, 1, i));
  keep(mk(OP_CAST, &tf, 1, f)), keep(mk(OP_CAST, &ti, 1, i));
  run();
  check_all();
}

/* sum / mean / max with axes {all, 0, 1, 2, (0, 2), (1, 2)}, keepdims or
 * not; i32 sums that wrap; NaN; empty axes. */
static void test_reduce(void **state) {
  start();
  Node *x = rand_input("x", shp(3, 2, 3, 4), 7);
  Node *xi = IN_I("xi", shp(2, 2, 3), INT32_MAX, 1, 5, -3, INT32_MIN, -1);
  Node *xn = IN_F("xn", shp(2, 2, 3), 1, NAN, 3, -INFINITY, -INFINITY, -INFINITY);
  Node *xe = input("xe", DT_F32, shp(3, 2, 0, 3), (float[1]){0}, 0);
  int axes[][3] = {{-1}, {1, 0}, {1, 1}, {1, 2}, {2, 0, 2}, {2, 1, 2}, {2, 2, 0}};
  Op ops[] = {OP_SUM, OP_MEAN, OP_MAX};
  for (int o = 0; o < 3; o++)
    for (int i = 0; i < countof(axes); i++)
      for (int kd = 0; kd < 2; kd++) {
        Attrs at = def(ops[o]);
        at.n_axes = axes[i][0], at.keepdims = kd;
        for (int j = 0; j < at.n_axes; j++)
          at.axes[j] = axes[i][j + 1];
        keep(mk(ops[o], &at, 1, x));
        if (o != 1 && i < 3)
          keep(mk(ops[o], &at, 1, xi));
        if (i < 3)
          keep(mk(ops[o], &at, 1, xn));
        if (o != 2 && i == 2)
          keep(mk(ops[o], &at, 1, xe));
      }
  run();
  check_all();
}

/* Sums and means over outer axes, the kept run contiguous (a bias
 * gradient): in registers for runs up to 256 (chunks of 64: 4, 32, 100,
 * 256), in the output row beyond (300).  Either way each element adds its
 * column from 0 in row-major order: the bits of that loop in C. */
static void test_column_sums(void **state) {
  const int64_t widths[] = {4, 32, 100, 256, 300};
  for (int w = 0; w < countof(widths); w++) {
    start();
    int64_t c = widths[w], rows = 24 * 5;
    Node *x = rand_input("x", shp(3, 24, 5, c), 11 + (uint64_t)w);
    Node *r[2];
    for (int o = 0; o < 2; o++) {
      Attrs at = def(o ? OP_MEAN : OP_SUM);
      at.n_axes = 2, at.axes[0] = 0, at.axes[1] = 1, at.keepdims = o;
      r[o] = keep(mk(o ? OP_MEAN : OP_SUM, &at, 1, x));
    }
    run();
    check_all();
    const float *xv = EV.vals[x->id].data;
    float *want = calloc((size_t)c, sizeof(float)), *got = malloc((size_t)c * 4 + 4);
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < c; j++)
        want[j] += xv[i * c + j];
    void **vals = calloc((size_t)G->n_nodes, sizeof *vals);
    vals[x->id] = EV.vals[x->id].data;
    for (int o = 0; o < 2; o++) {
      exec(lower_checked(A, r[o]), vals, got, 0);
      for (int64_t j = 0; j < c; j++) {
        float e = o ? want[j] / (float)rows : want[j];
        if (memcmp(&e, &got[j], 4) != 0)
          fail_msg("%s over [24, 5, %lld], column %lld: %.9g, in order %.9g", o ? "mean" : "sum",
                   (long long)c, (long long)j, got[j], e);
      }
    }
    free(want), free(got), free(vals);
  }
}

/* The order lower_reduce documents for sums and means over the last axes:
 * a contiguous run of 32 or more in 16 partials, a row of 16 to 31 (the
 * whole reduction one run) in 8, element i to partial i mod lanes, then the
 * tree p[l] += p[l + w]; anything shorter, or a run of 16 to 31 repeated
 * over outer reduced axes (a batchnorm's statistics over N, H, W), one
 * chain.  Row lengths 16, 21, 31, 32, 37 and 15; then [2, 5, 20] summed
 * over axes 0 and 2 (runs of 20 under an outer axis: the chain).  Bit for
 * bit against that order in C, through kir_eval and the reference check. */
static float order_sum(const float *x, int64_t outer, int64_t ostride, int64_t run, bool row) {
  int lanes = run >= 32 ? 16 : run >= 16 && row ? 8 : 1;
  float p[16] = {0};
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < run; i++)
      p[i % lanes] += x[o * ostride + i];
  for (int w = lanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; l++)
      p[l] += p[l + w];
  return p[0];
}

static void test_row_sums(void **state) {
  const int64_t lens[] = {16, 21, 31, 32, 37, 15, 20};
  for (int c = 0; c < countof(lens); c++) {
    start();
    bool outer = c == countof(lens) - 1; /* [2, 5, 20] over axes 0, 2 */
    int64_t len = lens[c], rows = outer ? 5 : 6;
    Node *x = outer ? rand_input("x", shp(3, 2, 5, len), 40 + (uint64_t)c)
                    : rand_input("x", shp(2, rows, len), 40 + (uint64_t)c);
    Node *r[2];
    for (int o = 0; o < 2; o++) {
      Attrs at = def(o ? OP_MEAN : OP_SUM);
      if (outer)
        at.n_axes = 2, at.axes[0] = 0, at.axes[1] = 2;
      else
        at.n_axes = 1, at.axes[0] = 1;
      r[o] = keep(mk(o ? OP_MEAN : OP_SUM, &at, 1, x));
    }
    run();
    check_all();
    const float *xv = EV.vals[x->id].data;
    float *got = malloc((size_t)rows * 4 + 4);
    void **vals = calloc((size_t)G->n_nodes, sizeof *vals);
    vals[x->id] = EV.vals[x->id].data;
    for (int o = 0; o < 2; o++) {
      exec(lower_checked(A, r[o]), vals, got, 0);
      for (int64_t i = 0; i < rows; i++) {
        float e = outer ? order_sum(xv + i * len, 2, 5 * len, len, false)
                        : order_sum(xv + i * len, 1, 0, len, true);
        e = o ? e / (float)(outer ? 2 * len : len) : e;
        if (memcmp(&e, &got[i], 4) != 0)
          fail_msg("%s of %s%lld elements, row %lld: %.9g, in the documented order %.9g",
                   o ? "mean" : "sum", outer ? "2 runs of " : "", (long long)len, (long long)i,
                   got[i], e);
      }
    }
    free(got), free(vals);
  }
}

static void test_argmax_softmax(void **state) {
  start();
  Node *x = rand_input("x", shp(3, 2, 3, 4), 8);
  Node *t = IN_F("t", shp(2, 2, 4), 1, 3, 3, 2, 5, 5, 5, 5);
  Node *nn = IN_F("nn", shp(2, 2, 4), 1, NAN, 7, NAN, -INFINITY, -INFINITY, 2, NAN);
  Node *xi = IN_I("xi", shp(2, 2, 3), 4, 9, 9, -1, -1, -1);
  Node *big = IN_F("big", shp(2, 3, 4), 1000, 1000, -1000, -INFINITY, -INFINITY, -INFINITY, 0,
                   NAN, 1, 88, -88, 0);
  Node *xs[] = {x, t, nn, xi};
  for (int i = 0; i < countof(xs); i++)
    for (int axis = 0; axis < xs[i]->shape.rank; axis++) {
      Attrs at = def(OP_ARGMAX);
      at.axis = axis, at.keepdims = axis == 1;
      keep(mk(OP_ARGMAX, &at, 1, xs[i]));
    }
  /* Rows of 32 or more take their maximum and sum in 16 partials
   * (lower_softmax, lanes_for): rows of 37, so 5 elements follow the partials' loop.
   * Row 0's maximum (100: were it missed, its exponential would overflow)
   * is one of those, row 1's is in the loop, row 2 has a NaN (skipped by
   * the maximum, the row NaN), row 3 a -inf among values of +-88. */
  static float long_rows[4 * 37];
  for (int i = 0; i < countof(long_rows); i++)
    long_rows[i] = (float)((i * 37 % 23) - 11) * (i >= 3 * 37 ? 8.0f : 0.5f);
  long_rows[36] = 100, long_rows[37 + 19] = 40, long_rows[2 * 37 + 7] = NAN;
  long_rows[3 * 37 + 33] = -INFINITY;
  Node *lr = input("lr", DT_F32, shp(2, 4, 37), long_rows, countof(long_rows));
  /* rows of 16 to 31 take 8 partials: rows of 21, 5 after the loop;
   * row 0's maximum (100) among those, row 1's (90) in the loop */
  static float mid_rows[3 * 21];
  for (int i = 0; i < countof(mid_rows); i++)
    mid_rows[i] = (float)((i * 13 % 17) - 8) * 0.75f;
  mid_rows[20] = 100, mid_rows[21 + 6] = 90, mid_rows[2 * 21 + 3] = NAN;
  Node *mr = input("mr", DT_F32, shp(2, 3, 21), mid_rows, countof(mid_rows));
  /* lr's 4 rows and lx's 6 run in blocks of 4 and 2 rows (softmax_blocks),
   * mr's 3 and l16's 5 a row at a time */
  Node *fs[] = {x, big, t, lr, mr, rand_input("lx", shp(2, 6, 64), 12),
                rand_input("l16", shp(2, 5, 16), 13)};
  for (int i = 0; i < countof(fs); i++)
    for (int axis = -1; axis < fs[i]->shape.rank; axis++) {
      Attrs at = def(OP_SOFTMAX);
      at.axis = axis;
      keep(mk(OP_SOFTMAX, &at, 1, fs[i])), keep(mk(OP_LOG_SOFTMAX, &at, 1, fs[i]));
    }
  run();
  check_all();
}

/* --- data movement ---------------------------------------------------------------- */

static Attrs slice2(int64_t b0, int64_t e0, int64_t s0, int64_t b1, int64_t e1, int64_t s1) {
  Attrs at = def(OP_SLICE);
  at.begin[0] = b0, at.end[0] = e0, at.step[0] = s0;
  at.begin[1] = b1, at.end[1] = e1, at.step[1] = s1;
  return at;
}

static void test_movement(void **state) {
  start();
  Node *x = rand_input("x", shp(3, 2, 3, 4), 9), *m = iota_input("m", shp(2, 4, 5));
  Node *xi = IN_I("xi", shp(2, 2, 3), 1, 2, 3, 4, 5, 6),
       *c1 = rand_input("c1", shp(3, 2, 1, 4), 10);
  Attrs rs = def(OP_RESHAPE), p1 = def(OP_TRANSPOSE), p2 = p1;
  rs.n_shape = 2, rs.shape[0] = 4, rs.shape[1] = 6;
  p1.n_axes = p2.n_axes = 3;
  p1.axes[0] = 2, p1.axes[1] = 0, p1.axes[2] = 1;
  p2.axes[0] = 1, p2.axes[1] = 0, p2.axes[2] = 2;
  keep(mk(OP_RESHAPE, &rs, 1, x)), keep(mk(OP_STOP_GRADIENT, NULL, 1, x));
  keep(mk(OP_TRANSPOSE, NULL, 1, x)), keep(mk(OP_TRANSPOSE, &p1, 1, x));
  keep(mk(OP_TRANSPOSE, &p2, 1, x)), keep(mk(OP_TRANSPOSE, NULL, 1, xi));
  Attrs bt = def(OP_BROADCAST_TO);
  bt.n_shape = 3, bt.shape[0] = 2, bt.shape[1] = 3, bt.shape[2] = 4;
  keep(mk(OP_BROADCAST_TO, &bt, 1, mk(OP_SLICE, (Attrs[]){slice2(0, 3, 1, 0, 1, 1)}, 1, m)));
  keep(mk(OP_BROADCAST_TO, &bt, 1, IN_F("s", shp(0), 2.5f)));
  keep(mk(OP_BROADCAST_TO, &bt, 1, IN_I("r", shp(1, 4), 1, 2, 3, 4)));
  Attrs sl[] = {slice2(1, 4, 2, 0, 5, 2), slice2(-1, 4, 1, 1, -1, 1), slice2(2, 1, 1, 0, 5, 1),
                slice2(0, 100, 3, 4, 5, 1), slice2(0, 4, 1, 0, 5, 1)};
  Node *sn[countof(sl)];
  for (int i = 0; i < countof(sl); i++)
    sn[i] = keep(mk(OP_SLICE, &sl[i], 1, m));
  Attrs s3 = slice2(1, 2, 1, 0, 3, 2);
  s3.begin[2] = 1, s3.end[2] = 4, s3.step[2] = 2;
  keep(mk(OP_SLICE, &s3, 1, x));
  for (int i = 0; i < countof(sl); i++) { /* the gradient of each slice of m */
    Attrs sb = sn[i]->at;
    sb.n_shape = 2, sb.shape[0] = 4, sb.shape[1] = 5;
    keep(mk(OP_SLICE_BACK, &sb, 1, rand_input("g", sn[i]->shape, 20 + (uint64_t)i)));
  }
  Attrs si = sl[0];
  si.n_shape = 2, si.shape[0] = 2, si.shape[1] = 3, si.begin[0] = 0, si.end[0] = 2;
  si.step[0] = 2, si.begin[1] = 1, si.end[1] = 3;
  keep(mk(OP_SLICE_BACK, &si, 1, IN_I("gi", shp(2, 1, 1), 9)));
  Attrs a1 = def(OP_CONCAT), a2 = def(OP_CONCAT);
  a1.axis = 1, a2.axis = -1;
  keep(mk(OP_CONCAT, NULL, 2, x, x)), keep(mk(OP_CONCAT, &a1, 3, x, c1, x));
  keep(mk(OP_CONCAT, &a2, 2, x, x)), keep(mk(OP_CONCAT, NULL, 2, xi, xi));
  keep(mk(OP_CONCAT, NULL, 1, c1));
  Attrs fl[4];
  double fv_[] = {2.5, 3.7, -1e10, NAN};
  for (int i = 0; i < 4; i++) {
    fl[i] = def(OP_FULL);
    fl[i].n_shape = i == 3 ? 0 : 2, fl[i].shape[0] = 2, fl[i].shape[1] = 3;
    fl[i].value = fv_[i], fl[i].to = i ? DT_I32 : DT_F32;
    keep(mk(OP_FULL, &fl[i], 0));
  }
  Attrs ar = def(OP_ARANGE), af = ar, a0 = ar;
  ar.n_shape = af.n_shape = a0.n_shape = 1, ar.shape[0] = 5, af.shape[0] = 7, a0.shape[0] = 0;
  af.to = DT_F32;
  keep(mk(OP_ARANGE, &ar, 0)), keep(mk(OP_ARANGE, &af, 0)), keep(mk(OP_ARANGE, &a0, 0));
  run();
  check_all();
}

static void test_embedding(void **state) {
  start();
  Node *tab = rand_input("tab", shp(2, 5, 3), 11), *gy = rand_input("gy", shp(3, 2, 3, 3), 12);
  Node *ids = IN_I("ids", shp(2, 2, 3), 0, 4, -1, 5, 2, 2);
  Node *empty = input("empty", DT_F32, shp(2, 0, 3), (float[1]){0}, 0);
  keep(mk(OP_EMBEDDING, NULL, 2, ids, tab)), keep(mk(OP_EMBEDDING, NULL, 2, ids, empty));
  Attrs eb = def(OP_EMBEDDING_BACK);
  eb.n_shape = 2, eb.shape[0] = 5, eb.shape[1] = 3;
  keep(mk(OP_EMBEDDING_BACK, &eb, 2, ids, gy));
  Node *lg = rand_input("lg", shp(2, 4, 5), 13), *l3 = rand_input("l3", shp(3, 2, 2, 5), 14);
  Node *lb = IN_I("lb", shp(1, 4), 0, 4, 2, 1), *bad = IN_I("bad", shp(1, 4), 0, 5, 2, -1);
  Node *l2 = IN_I("l2", shp(2, 2, 2), 3, 3, 0, 4), *dy = IN_F("dy", shp(0), 1.5f);
  Node *hot = IN_F("hot", shp(2, 2, 3), 1000, -1000, 0, 88, 88, 88);
  Node *lh = IN_I("lh", shp(1, 2), 1, 2);
  /* 37 classes: the row's maximum and sum in 16 partials (ce_row), 5
   * elements after their loop; row 0's maximum (100) among those, row 1's
   * in the loop, row 2 with a NaN, row 3's label out of range. */
  static float wide[4 * 37];
  for (int i = 0; i < countof(wide); i++)
    wide[i] = (float)((i * 29 % 19) - 9) * 0.7f;
  wide[36] = 100, wide[37 + 3] = 60, wide[2 * 37 + 20] = NAN;
  Node *lw = input("lw", DT_F32, shp(2, 4, 37), wide, countof(wide));
  Node *lwl = IN_I("lwl", shp(1, 4), 36, 0, 5, 37);
  /* 19 classes: 8 partials, 3 after their loop; row 0's maximum among those */
  static float mid[2 * 19];
  for (int i = 0; i < countof(mid); i++)
    mid[i] = (float)((i * 7 % 11) - 5) * 0.9f;
  mid[18] = 100, mid[19 + 4] = 70;
  Node *lm = input("lm", DT_F32, shp(2, 2, 19), mid, countof(mid));
  Node *lml = IN_I("lml", shp(1, 2), 18, 1);
  Node *pairs[][2] = {{lg, lb}, {lg, bad}, {l3, l2}, {hot, lh}, {lw, lwl}, {lm, lml}};
  for (int i = 0; i < countof(pairs); i++) {
    keep(mk(OP_CROSS_ENTROPY, NULL, 2, pairs[i][0], pairs[i][1]));
    keep(mk(OP_CROSS_ENTROPY_BACK, NULL, 3, pairs[i][0], pairs[i][1], dy));
  }
  run();
  check_all();
}

/* --- networks ---------------------------------------------------------------------- */

static Attrs win(Op op, int sy, int sx, int py, int px, int d, int g) {
  Attrs at = def(op);
  at.stride[0] = sy, at.stride[1] = sx, at.pad[0] = py, at.pad[1] = px;
  at.dilation[0] = at.dilation[1] = d, at.groups = g;
  return at;
}

static void test_matmul(void **state) {
  start();
  Node *a = rand_input("a", shp(2, 2, 3), 1), *at_ = rand_input("at", shp(2, 3, 2), 2);
  Node *b = rand_input("b", shp(2, 3, 4), 3), *bt = rand_input("bt", shp(2, 4, 3), 4);
  Node *ba = rand_input("ba", shp(3, 2, 2, 3), 5), *bb = rand_input("bb", shp(3, 2, 3, 4), 6);
  Node *b4 = rand_input("b4", shp(4, 2, 1, 2, 3), 7), *b3 = rand_input("b3", shp(3, 3, 3, 4), 8);
  Node *k1 = rand_input("k1", shp(2, 2, 1), 9), *k2 = rand_input("k2", shp(2, 1, 4), 10);
  Attrs ta = def(OP_MATMUL), tb = ta, tab = ta;
  ta.ta = true, tb.tb = true, tab.ta = tab.tb = true;
  keep(mk(OP_MATMUL, NULL, 2, a, b)), keep(mk(OP_MATMUL, &ta, 2, at_, b));
  keep(mk(OP_MATMUL, &tb, 2, a, bt)), keep(mk(OP_MATMUL, &tab, 2, at_, bt));
  keep(mk(OP_MATMUL, NULL, 2, ba, bb)), keep(mk(OP_MATMUL, NULL, 2, b4, b3));
  keep(mk(OP_MATMUL, NULL, 2, a, b3)), keep(mk(OP_MATMUL, NULL, 2, ba, b));
  keep(mk(OP_MATMUL, &tb, 2, ba, mk(OP_TRANSPOSE, NULL, 1, bb)));
  keep(mk(OP_MATMUL, NULL, 2, k1, k2));
  run();
  check_all();
}

static void test_conv(void **state) {
  start();
  Node *x = rand_input("x", shp(4, 2, 4, 7, 6), 21);
  Node *w3 = rand_input("w3", shp(4, 3, 4, 3, 3), 22),
       *wg = rand_input("wg", shp(4, 4, 2, 3, 2), 23);
  Node *w1 = rand_input("w1", shp(4, 5, 4, 1, 1), 24);
  struct { Attrs at; Node *w; } cv[] = {
      {win(OP_CONV2D, 1, 1, 0, 0, 1, 1), w3}, {win(OP_CONV2D, 2, 2, 1, 1, 1, 1), w3},
      {win(OP_CONV2D, 1, 2, 2, 1, 2, 1), w3}, {win(OP_CONV2D, 1, 1, 1, 0, 1, 2), wg},
      {win(OP_CONV2D, 2, 3, 0, 0, 1, 1), w1}, {win(OP_CONV2D, 2, 1, 1, 2, 1, 2), wg}};
  for (int i = 0; i < countof(cv); i++) {
    Node *y = keep(mk(OP_CONV2D, &cv[i].at, 2, x, cv[i].w));
    Attrs bw = cv[i].at;
    bw.kernel[0] = (int)cv[i].w->shape.dim[2], bw.kernel[1] = (int)cv[i].w->shape.dim[3];
    keep(mk(OP_CONV2D_BACK_W, &bw, 2, x, rand_input("gy", y->shape, 30 + (uint64_t)i)));
  }
  /* conv_transpose2d's weight gradient: a gradient smaller than the windows */
  Attrs bw = win(OP_CONV2D_BACK_W, 2, 2, 0, 0, 1, 1);
  bw.kernel[0] = bw.kernel[1] = 3;
  keep(mk(OP_CONV2D_BACK_W, &bw, 2, rand_input("x7", shp(4, 1, 2, 7, 7), 40),
          rand_input("g2", shp(4, 1, 3, 2, 2), 41)));
  Node *xt = rand_input("xt", shp(4, 2, 4, 3, 4), 42);
  Node *wt = rand_input("wt", shp(4, 4, 3, 3, 3), 43),
       *wtg = rand_input("wtg", shp(4, 4, 2, 2, 3), 44);
  struct { Attrs at; Node *w; int op0, op1; } tc[] = {
      {win(OP_CONV_TRANSPOSE2D, 1, 1, 0, 0, 1, 1), wt, 0, 0},
      {win(OP_CONV_TRANSPOSE2D, 2, 2, 1, 1, 1, 1), wt, 1, 1},
      {win(OP_CONV_TRANSPOSE2D, 3, 2, 0, 1, 2, 1), wt, 2, 0},
      {win(OP_CONV_TRANSPOSE2D, 2, 1, 1, 0, 1, 2), wtg, 1, 0},
      {win(OP_CONV_TRANSPOSE2D, 1, 1, 1, 1, 2, 2), wtg, 1, 1}};
  for (int i = 0; i < countof(tc); i++) {
    tc[i].at.out_pad[0] = tc[i].op0, tc[i].at.out_pad[1] = tc[i].op1;
    keep(mk(OP_CONV_TRANSPOSE2D, &tc[i].at, 2, xt, tc[i].w));
  }
  run();
  check_all();
}

/* Max pooling over data with ties, NaN and -inf; average pooling with both
 * divisors; the gradients of each. */
static void test_pool(void **state) {
  static float tie[2 * 7 * 6];
  for (int i = 0; i < countof(tie); i++)
    tie[i] = (float)((i * 7) % 3);
  tie[5] = NAN, tie[40] = NAN, tie[20] = tie[21] = tie[26] = tie[27] = -INFINITY;
  /* kernel, stride, pad, dilation (max pooling), count_include_pad */
  int v[][5] = {{2, 0, 0, 1, 0}, {3, 2, 1, 1, 1}, {2, 1, 1, 2, 0}, {3, 1, 1, 1, 1},
                {2, 1, 0, 2, 1}, {3, 3, 1, 1, 0}};
  for (int i = 0; i < countof(v); i++) {
    start();
    Node *x = rand_input("x", shp(4, 2, 3, 7, 6), 51);
    Node *xt = input("xt", DT_F32, shp(4, 1, 2, 7, 6), tie, countof(tie));
    for (int t = 0; t < 2; t++) {
      Node *in = t ? xt : x;
      Attrs mp = pool_at(OP_MAXPOOL2D, v[i][0], v[i][1], v[i][2], v[i][3]);
      Attrs ap = pool_at(OP_AVGPOOL2D, v[i][0], v[i][1], v[i][2], 1);
      ap.count_include_pad = v[i][4];
      if (i == 5) /* a 3 x 2 window */
        mp.kernel[1] = ap.kernel[1] = 2, mp.pad[1] = ap.pad[1] = 0, mp.stride[1] = ap.stride[1] = 1;
      Node *m = keep(mk(OP_MAXPOOL2D, &mp, 1, in)), *av = keep(mk(OP_AVGPOOL2D, &ap, 1, in));
      Attrs mb = m->at, ab = av->at;
      ab.n_shape = 4;
      memcpy(ab.shape, in->shape.dim, sizeof ab.shape);
      keep(mk(OP_MAXPOOL2D_BACK, &mb, 2, rand_input("gm", m->shape, 60 + (uint64_t)i), in));
      keep(mk(OP_AVGPOOL2D_BACK, &ab, 1, rand_input("ga", av->shape, 70 + (uint64_t)i)));
    }
    run();
    check_all();
  }
}

static void test_upsample(void **state) {
  Shape xs[] = {shp(4, 2, 2, 3, 4), shp(4, 1, 1, 1, 3), shp(4, 1, 2, 2, 1)};
  for (int i = 0; i < countof(xs); i++)
    for (int s = 1; s <= 3; s++) {
      start();
      Node *x = rand_input("x", xs[i], 81 + (uint64_t)i);
      for (int mode = 0; mode < 3; mode++) { /* nearest, bilinear, bilinear aligned */
        Attrs at = def(OP_UPSAMPLE);
        at.scale = s, at.mode = mode > 0, at.align_corners = mode == 2;
        Node *y = keep(mk(OP_UPSAMPLE, &at, 1, x));
        keep(mk(OP_UPSAMPLE_BACK, &at, 1, rand_input("gy", y->shape, 90 + (uint64_t)mode)));
      }
      run();
      check_all();
    }
}

/* Dropout in training at steps 0 and 3: the mask bit for bit; the kept
 * values too where 1 / (1 - p) is an f32 (p = 0.5, 0.2), else within an
 * ulp (p = 0.3: x * f32(1 / 0.7) against the double product rounded). */
static void test_dropout(void **state) {
  start();
  Node *x = rand_input("x", shp(1, 3000), 91);
  double ps[] = {0.5, 0.2, 0.3, 0};
  Node *d[countof(ps)];
  for (int i = 0; i < countof(ps); i++) {
    Attrs at = def(OP_DROPOUT);
    at.p = ps[i], at.seed = 1234567 + (uint64_t)i;
    d[i] = mk(OP_DROPOUT, &at, 1, x);
  }
  for (int step = 0; step <= 3; step += 3) {
    prep();
    EV.cx.training = true, EV.cx.step = (uint64_t)step;
    go();
    for (int i = 0; i < countof(ps); i++) {
      check(d[i], i == 2 ? ELEM : EXACT);
      Kernel *k = lower_checked(A, d[i]); /* the mask: zero exactly where the reference's is */
      void *vals[2] = {fv(x), NULL}, *out = malloc(3000 * 4);
      exec(k, vals, out, step);
      for (int j = 0; j < 3000; j++)
        assert_true((((float *)out)[j] == 0) == (fv(d[i])[j] == 0));
      free(out);
    }
  }
}

/* randn at steps 0 and 3, in and out of training: the reference's bits
 * (both compute in f32 with the same libm calls), a different sample each
 * step. */
static void test_randn(void **state) {
  start();
  Attrs at = def(OP_RANDN);
  at.n_shape = 3, at.shape[0] = 3, at.shape[1] = 7, at.shape[2] = 50, at.seed = 99;
  Node *r = mk(OP_RANDN, &at, 0);
  float s0 = 0;
  for (int step = 0; step <= 3; step += 3) {
    prep();
    EV.cx.training = step == 3, EV.cx.step = (uint64_t)step;
    go();
    check(r, EXACT);
    if (step == 0)
      s0 = fv(r)[17];
    else
      assert_true(fv(r)[17] != s0);
  }
}

static void test_add_n(void **state) {
  start();
  Node *x[6];
  for (int i = 0; i < 6; i++)
    x[i] = rand_input("x", shp(2, 3, 5), 100 + (uint64_t)i);
  keep(mk(OP_ADD_N, NULL, 1, x[0])), keep(mk(OP_ADD_N, NULL, 2, x[0], x[1]));
  keep(mk(OP_ADD_N, NULL, 3, x[0], x[1], x[2]));
  keep(mk(OP_ADD_N, NULL, 6, x[0], x[1], x[2], x[3], x[4], x[5]));
  run();
  check_all();
}

/* --- printing ----------------------------------------------------------------------- */

static void expect_print(const Node *n, const char *want) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  kir_print(lower_checked(A, n), f);
  fclose(f);
  if (strcmp(text, want) != 0)
    fail_msg("kir_print:\n%s\nwant:\n%s", text, want);
  free(text);
}

static void test_print(void **state) {
  start();
  Node *x = IN_F("x", shp(1, 4), 1, 2, 3, 4);
  Node *a = rand_input("a", shp(2, 2, 3), 1), *b = rand_input("b", shp(2, 3, 4), 2);
  Node *y = mk(OP_RELU, NULL, 1, x), *m = mk(OP_MATMUL, NULL, 2, a, b);
  graph_rename(G, y, "y.relu");
  expect_print(y, "kernel relu_y_relu(in x: f32[4], out y_relu: f32[4]) {\n"
                  "  vector for i0 in 0..4 {\n"
                  "    y_relu[i0] = max(x[i0], 0)\n"
                  "  }\n"
                  "}\n");
  expect_print(m, "kernel matmul_t4(in a: f32[6], in b: f32[12], out t4: f32[8]) {\n"
                  "  parallel for i0 in 0..2 {\n"
                  "    for j1 in 0..4 {\n"
                  "      idx ao2 = (i0 * 3)\n"
                  "      f32 acc3 = 0\n"
                  "      reduce for p4 in 0..3 {\n"
                  "        acc3 = fma(a[(ao2 + p4)], b[(j1 + (p4 * 4))], acc3)\n"
                  "      }\n"
                  "      t4[((i0 * 4) + j1)] = acc3\n"
                  "    }\n"
                  "  }\n"
                  "}\n");
}

/* --- models and coverage ------------------------------------------------------------- */

static void test_models(void **state) {
  char names[64][64];
  int n = list_models(names, 64);
  assert_true(n >= 4);
  for (int i = 0; i < n; i++) {
    if (getenv("LOWER_ONLY") && !strstr(names[i], getenv("LOWER_ONLY")))
      continue;
    check_model(names[i], false);
    check_model(names[i], true);
  }
}

/* --- coverage ------------------------------------------------------------------------ */

/* Runs last: every op with a LOWER function was lowered and checked by a
 * case above; leaves have none.  LOWER_STATS=1 prints the largest error
 * each op showed, as a fraction of its bound. */
static void test_every_op_lowered(void **state) {
  for (int op = 0; op < OP_COUNT; op++) {
    bool leaf = op_info[op].cls == CL_LEAF;
    if ((op_info[op].lower == NULL) != leaf)
      fail_msg("%s: LOWER function %s", op_name((Op)op), leaf ? "set on a leaf" : "missing");
    if (!leaf && !lowered[op])
      fail_msg("no case in test_lower.c lowers %s", op_name((Op)op));
    if (getenv("LOWER_STATS") && worst[op] > 0)
      printf("%-20s %.3f of the bound\n", op_name((Op)op), worst[op]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),     cmocka_unit_test(test_binary),
      cmocka_unit_test(test_where_cast), cmocka_unit_test(test_reduce),
      cmocka_unit_test(test_column_sums), cmocka_unit_test(test_row_sums),
      cmocka_unit_test(test_argmax_softmax), cmocka_unit_test(test_movement),
      cmocka_unit_test(test_embedding), cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_conv),      cmocka_unit_test(test_pool),
      cmocka_unit_test(test_upsample),  cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_randn),
      cmocka_unit_test(test_add_n),     cmocka_unit_test(test_print),
      cmocka_unit_test(test_models),    cmocka_unit_test(test_every_op_lowered),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}

