/*
 * test_codegen.c: the LLVM backend (codegen/llvm) run in this process.
 *
 *  1. Hand-built kernels (kir.h builders), JIT-compiled at -O0 and -O3;
 *     after each run kir_eval must write the same bits, and the results
 *     are checked against values computed here.
 *  2. Every op with a LOWER function, through small models (op_cases):
 *     each node of a case's graph and of its backward pass is lowered,
 *     JIT-compiled, run on the reference evaluator's inputs, and compared
 *     with the reference (ir/eval*.c) and, bit for bit, with kir_eval.
 *     Then every model of models/, inference and training step, as one
 *     module with one step function over a planned arena: every root is
 *     compared with the reference, and the compile times are printed.
 *  3. Object files, assembly and textual IR.
 *
 * Tolerances.  The reference computes an element in double and rounds
 * once; KIR rounds every f32 operation, so an n-term sum may differ by
 * ~sqrt(n) ulp (n at worst).  Per op: rtol 1e-5 plus 1e-6 times the
 * tensor's largest magnitude (for elements that cancel).  The worst error
 * seen is 0.49 of that, in 14400-term sums (sum, conv2d_back_w); the libm
 * f32 functions are within an ulp or two, far below 1e-5, so transcendental
 * ops need no looser bound.  Whole models chain hundreds of ops: rtol 1e-4
 * (worst seen 0.16 of it).  Each tier prints its worst ratio.
 *
 * Adding a case: a kernel is a test that builds it with kir_new/kir_buf/
 * ks_* and calls run1(), listed in main; an op gets a line in op_cases
 * (every_op fails for an op with a lowering that no case computes).
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <math.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kiln_test.h"
#include "op_cases.h"
#include "cg.h"
#include "kmath.h"
#include "program.h"
#include "rt_pool.h"

/* --- helpers ----------------------------------------------------------------------- */

static const int opt_levels[] = {0, 3};
static Arena *ar; /* each test's, made and freed around it */

static int arena_setup(void **state) { return !(ar = arena_new()); }
static int arena_teardown(void **state) { arena_free(ar); return 0; }

/* A JIT holding the given kernels, optimized at `opt`. */
static CgJit *jit_of(Kernel *const *ks, int n, int opt) {
  char err[4096];
  Cg *cg = cg_new("test", &(CgOpts){.opt_level = opt, .verify = true}, err, sizeof err);
  if (!cg)
    fail_msg("cg_new: %s", err);
  for (int i = 0; i < n; i++)
    if (!cg_kernel(cg, ks[i], err, sizeof err))
      fail_msg("cg_kernel %s: %s", ks[i]->name, err);
  if (!cg_optimize(cg, err, sizeof err))
    fail_msg("cg_optimize: %s", err);
  CgJit *j = cg_jit(cg, err, sizeof err);
  if (!j)
    fail_msg("cg_jit: %s", err);
  cg_free(cg);
  return j;
}

static CgKernelFn kfn(CgJit *j, const char *name) {
  CgKernelFn f = cg_jit_kernel(j, name);
  if (!f)
    fail_msg("lookup %s: %s", name, cg_jit_error(j));
  return f;
}

/* Runs kernel k on bufs JIT-compiled at -O0 and at -O3, and checks after
 * each run that the interpreter, kir_eval, writes the same bits (so k must
 * not run in place); the buffers end with the -O3 results. */
static void run1(Kernel *k, void *const *bufs) {
  for (int o = 0; o < 2; o++) {
    CgJit *j = jit_of(&k, 1, opt_levels[o]);
    kfn(j, k->name)(bufs);
    cg_jit_free(j);
    void *jit[16] = {0};
    size_t size[16];
    for (int b = 0; b < k->n_bufs && b < 16; b++) {
      size[b] = (size_t)k->bufs[b].numel * (k->bufs[b].type == KT_IDX ? 8 : 4);
      if (k->bufs[b].role == KB_OUT)
        jit[b] = memcpy(malloc(size[b]), bufs[b], size[b]);
    }
    kir_eval(k, bufs);
    for (int b = 0; b < k->n_bufs && b < 16; b++) {
      if (jit[b] && memcmp(jit[b], bufs[b], size[b]) != 0)
        fail_msg("%s at -O%d: %s differs from kir_eval's", k->name, opt_levels[o], k->bufs[b].name);
      free(jit[b]);
    }
  }
}

/* |got - want| <= atol + rtol |want|, NaN matching NaN, infinities exactly. */
static bool close_f32(double got, double want, double rtol, double atol) {
  if (isnan(want) || isnan(got))
    return isnan(want) && isnan(got);
  if (isinf(want) || isinf(got))
    return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

static float frand(uint64_t *s, float lo, float hi) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * (float)((*s >> 40) * 0x1.0p-24);
}

#define I(v) ke_idx(k, v)
#define V(x) ke_var(k, x)
#define BIN(op, a, b) ke_binary(k, op, a, b)
#define LD(b, i) ke_load(k, b, i)
#define F(v) ke_f32(k, v)
#define ADD(a, b) BIN(KO_ADD, a, b)
#define MUL(a, b) BIN(KO_MUL, a, b)

/* --- tier 1: hand-built kernels ------------------------------------------------------ */

enum { NE = 37 }; /* odd, so vector loops have remainders */

/* y = max(a, b) * b - min(a, b) + exp(a) / (|b| + 1); z = isnan(a) + (a < b) */
static void elementwise(void **state) {
  Kernel *k = kir_new(ar, "ew", NULL);
  int a = kir_buf(k, "a", KT_F32, NE, KB_IN, 0), b = kir_buf(k, "b", KT_F32, NE, KB_IN, 1);
  int y = kir_buf(k, "y", KT_F32, NE, KB_OUT, 2), z = kir_buf(k, "z", KT_I32, NE, KB_OUT, 3);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(NE), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *av = LD(a, V(i)), *bv = LD(b, V(i));
  KExpr *e = BIN(KO_SUB, MUL(BIN(KO_MAX, av, bv), bv), BIN(KO_MIN, av, bv));
  e = ADD(e, BIN(KO_DIV, ke_unary(k, KO_EXP, av), ADD(ke_unary(k, KO_ABS, bv), F(1))));
  ks_add(k, l, ks_store(k, y, V(i), e));
  ks_add(k, l, ks_store(k, z, V(i), ADD(ke_unary(k, KO_ISNAN, av), BIN(KO_LT, av, bv))));
  float A[NE], B[NE], Y[NE], W[NE];
  int32_t Z[NE];
  uint64_t s = 1;
  for (int t = 0; t < NE; t++)
    A[t] = frand(&s, -3, 3), B[t] = frand(&s, -3, 3);
  A[3] = NAN, B[4] = NAN, A[5] = B[5] = NAN, A[6] = INFINITY, B[7] = -INFINITY;
  for (int t = 0; t < NE; t++) {
    float mx = A[t] < B[t] ? B[t] : A[t], mn = B[t] < A[t] ? B[t] : A[t]; /* kir_eval's */
    W[t] = mx * B[t] - mn + expf(A[t]) / (fabsf(B[t]) + 1);
  }
  run1(k, (void *[]){A, B, Y, Z});
  for (int t = 0; t < NE; t++) {
    assert_true(close_f32(Y[t], W[t], 1e-6, 1e-6)); /* expf's in both: exact but for fdiv */
    assert_int_equal(Z[t], (int)isnan(A[t]) + (A[t] < B[t]));
  }
  assert_true(isnan(Y[3]) && isnan(Y[5]));
}

/* kir_inline_input (fuse kind const): y = a * c + n + d and z = c - a + d,
 * c an f32 scalar input, n an i32 one, the loads of c and of d (a later
 * buffer, so renumbered) each one expression shared by both stores.  Made
 * literals, c and n leave the kernel (d, y and z move down), and the
 * compiled kernel and kir_eval write what the kernel with the buffers
 * wrote.  An input of more than one element, or an output, stays. */
static void inline_inputs(void **state) {
  Kernel *k = kir_new(ar, "lit", NULL);
  int a = kir_buf(k, "a", KT_F32, NE, KB_IN, 0), c = kir_buf(k, "c", KT_F32, 1, KB_IN, 1);
  int n = kir_buf(k, "n", KT_I32, 1, KB_IN, 2), d = kir_buf(k, "d", KT_F32, NE, KB_IN, 3);
  int y = kir_buf(k, "y", KT_F32, NE, KB_OUT, 4), z = kir_buf(k, "z", KT_F32, NE, KB_OUT, 5);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(NE), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *cv = LD(c, I(0)), *av = LD(a, V(i)), *dv = LD(d, V(i));
  KExpr *nv = ke_cast(k, KT_F32, LD(n, I(0)));
  ks_add(k, l, ks_store(k, y, V(i), ADD(ADD(MUL(av, cv), nv), dv)));
  ks_add(k, l, ks_store(k, z, V(i), ADD(BIN(KO_SUB, cv, av), dv)));
  float A[NE], D[NE], C = 0.7f, Y0[NE], Z0[NE], Y[NE], Z[NE];
  int32_t N = -3;
  uint64_t s = 5;
  for (int t = 0; t < NE; t++)
    A[t] = frand(&s, -3, 3), D[t] = frand(&s, -3, 3);
  kir_eval(k, (void *[]){A, &C, &N, D, Y0, Z0});
  assert_false(kir_inline_input(k, a, 1.0)); /* 37 elements */
  assert_false(kir_inline_input(k, y, 1.0)); /* an output */
  assert_int_equal(k->n_bufs, 6);
  assert_true(kir_inline_input(k, c, (double)C));
  assert_int_equal(k->n_bufs, 5);
  assert_string_equal(k->bufs[1].name, "n");
  assert_true(kir_inline_input(k, 1, -3));
  assert_int_equal(k->n_bufs, 4);
  assert_string_equal(k->bufs[1].name, "d");
  assert_string_equal(k->bufs[2].name, "y");
  assert_string_equal(k->bufs[3].name, "z");
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  run1(k, (void *[]){A, D, Y, Z});
  assert_memory_equal(Y, Y0, sizeof Y);
  assert_memory_equal(Z, Z0, sizeof Z);
}

/* Error of got against the exact want in units of f32's last place at want. */
static double ulps(float got, double want) {
  float w = (float)fabs(want);
  double ulp = (double)nextafterf(w, INFINITY) - (double)w;
  return fabs((double)got - want) / ulp;
}

/* exp, tanh and erf (ir/kmath.h): vectorized, kir_eval's bits, within
 * their documented error of the exact functions, NaN and infinities
 * included; exp is 0 below KM_EXP_LO, where the exact value is about FLT_MIN
 * or less. */
static void kmath(void **state) {
  enum { NK = 200003 };
  static float X[NK], E[NK], T[NK], R[NK];
  Kernel *k = kir_new(ar, "km", NULL);
  int x = kir_buf(k, "x", KT_F32, NK, KB_IN, 0);
  int ye = kir_buf(k, "e", KT_F32, NK, KB_OUT, 1), yt = kir_buf(k, "t", KT_F32, NK, KB_OUT, 2);
  int yr = kir_buf(k, "r", KT_F32, NK, KB_OUT, 3);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(NK), KL_VECTOR);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_store(k, ye, V(i), ke_unary(k, KO_EXP, LD(x, V(i)))));
  ks_add(k, l, ks_store(k, yt, V(i), ke_unary(k, KO_TANH, LD(x, V(i)))));
  ks_add(k, l, ks_store(k, yr, V(i), ke_unary(k, KO_ERF, LD(x, V(i)))));
  for (int t = 0; t < NK; t++) /* [-110, 110], denser near 0 */
    X[t] = (float)(110.0 * pow((t - NK / 2) / (double)(NK / 2), 3));
  /* exp's edges: k = 128 from 88.3763 on, the largest finite result
   * (log FLT_MAX = 88.7228391), k = -126 at KM_EXP_LO */
  float special[] = {NAN,      -NAN,      INFINITY,   -INFINITY, 0.0f,    -0.0f,   88.72f,
                     88.73f,   88.3762f,  88.3763f,   88.722839f, 88.72284f, KM_EXP_LO,
                     -87.329f, -87.5f,    -103.9f,    -0.625f,   0.625f,  0.9f,
                     -0.9f,    4.0f,      1e-30f,     -1e-30f};
  for (int t = 0; t < countof(special); t++)
    X[t] = special[t];
  run1(k, (void *[]){X, E, T, R});
  double worst[3] = {0};
  for (int t = 0; t < NK; t++) {
    double want[3] = {exp((double)X[t]), tanh((double)X[t]), erf((double)X[t])};
    float got[3] = {E[t], T[t], R[t]};
    for (int f = 0; f < 3; f++) {
      if (f == 0 && X[t] < KM_EXP_LO) { /* flushed: the exact value is about FLT_MIN or less */
        if (got[f] != 0.0f || !(want[f] <= exp((double)KM_EXP_LO)))
          fail_msg("exp at %g: %g, want 0 (exact %g)", X[t], got[f], want[f]);
        continue;
      }
      if (isnan(want[f]) || isinf(want[f]) || (float)want[f] == 0.0f) {
        if (!(isnan(want[f]) ? isnan(got[f]) : got[f] == (float)want[f]))
          fail_msg("function %d at %g: %g, want %g", f, X[t], got[f], want[f]);
        continue;
      }
      double u = ulps(got[f], want[f]);
      worst[f] = u > worst[f] ? u : worst[f];
    }
  }
  print_message("  worst ulps: exp %.2f tanh %.2f erf %.2f\n", worst[0], worst[1], worst[2]);
  assert_true(worst[0] <= 1.5 && worst[1] <= 1.5 && worst[2] <= 3.0);
}

/* out[r] = sum_c x[r*C + c] in order, bit-exact: no reassociation, in a
 * KL_REDUCE loop or in a KL_VECTOR one that updates an outer local. */
static void reduction(void **state) {
  enum { R = 5, C = 1001 };
  static float X[R * C];
  float O[R];
  uint64_t s = 7;
  for (int t = 0; t < R * C; t++)
    X[t] = frand(&s, -1, 1) * (t % 3 ? 1.0f : 1e4f); /* cancellation shows reordering */
  for (int vec = 0; vec < 2; vec++) {
    Kernel *k = kir_new(ar, vec ? "rowsum_vec" : "rowsum", NULL);
    int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), out = kir_buf(k, "out", KT_F32, R, KB_OUT, 1);
    int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), acc = kir_var(k, "acc", KT_F32);
    KStmt *lr = ks_loop(k, r, I(R), KL_SERIAL);
    KStmt *lc = ks_loop(k, c, I(C), vec ? KL_VECTOR : KL_REDUCE);
    ks_add(k, k->body, lr);
    ks_add(k, lr, ks_decl(k, acc, F(0)));
    ks_add(k, lr, lc);
    ks_add(k, lc, ks_set(k, acc, ADD(V(acc), LD(x, ADD(MUL(V(r), I(C)), V(c))))));
    ks_add(k, lr, ks_store(k, out, V(r), V(acc)));
    run1(k, (void *[]){X, O}); /* the same bits as kir_eval's in-order float sum */
  }
}

/* A transpose through floordiv/mod of a flat index, index -> f32 casts in
 * nested loops, and integer division: floordiv/mod with either sign, i32
 * division by a variable that is sometimes 0 (0, as in kir_eval). */
static void nested_index(void **state) {
  enum { H = 6, W = 9 };
  Kernel *k = kir_new(ar, "nest", NULL);
  int x = kir_buf(k, "x", KT_F32, H * W, KB_IN, 0), y = kir_buf(k, "y", KT_F32, H * W, KB_OUT, 1);
  int q = kir_buf(k, "q", KT_I32, 4 * H * W, KB_OUT, 2);
  int i = kir_var(k, "i", KT_IDX), h = kir_var(k, "h", KT_IDX), w = kir_var(k, "w", KT_IDX);
  KStmt *li = ks_loop(k, i, I(H * W), KL_SERIAL);
  ks_add(k, k->body, li);
  /* y[i] = x[(i mod H) * W + floordiv(i, H)] + i (y is x transposed, as [W, H]) */
  KExpr *src = ADD(MUL(BIN(KO_MOD, V(i), I(H)), I(W)), BIN(KO_FLOORDIV, V(i), I(H)));
  ks_add(k, li, ks_store(k, y, V(i), ADD(LD(x, src), ke_cast(k, KT_F32, V(i)))));
  KStmt *lh = ks_loop(k, h, I(H), KL_SERIAL), *lw = ks_loop(k, w, I(W), KL_VECTOR);
  ks_add(k, k->body, lh);
  ks_add(k, lh, lw);
  KExpr *v = BIN(KO_SUB, ADD(MUL(V(h), I(W)), V(w)), I(27)); /* -27 .. 26 */
  KExpr *at = MUL(ADD(MUL(V(h), I(W)), V(w)), I(4));
  KExpr *vals[] = {BIN(KO_FLOORDIV, v, I(4)), BIN(KO_MOD, v, I(4)),
                   BIN(KO_DIV, ke_cast(k, KT_I32, v), ke_cast(k, KT_I32, BIN(KO_SUB, V(w), I(4)))),
                   BIN(KO_MOD, v, BIN(KO_SUB, V(w), I(9)))};
  for (int e = 0; e < 4; e++)
    ks_add(k, lw, ks_store(k, q, ADD(at, I(e)), ke_cast(k, KT_I32, vals[e])));
  float X[H * W], Y[H * W];
  int32_t Q[4 * H * W];
  for (int t = 0; t < H * W; t++)
    X[t] = (float)(100 + t);
  run1(k, (void *[]){X, Y, Q});
  for (int t = 0; t < H * W; t++) {
    assert_true(Y[t] == X[(t % H) * W + t / H] + (float)t);
    int vv = t - 27, fd = (int)floor(vv / 4.0), d = t % W - 4, m = t % W - 9;
    assert_int_equal(Q[4 * t], fd);
    assert_int_equal(Q[4 * t + 1], vv - 4 * fd);
    assert_int_equal(Q[4 * t + 2], d ? vv / d : 0);
    assert_int_equal(Q[4 * t + 3], vv - m * (int)floor((double)vv / m));
  }
}

/* y[i] = i >= 1 && i < N-1 ? x[i-1] + x[i+1] : -1, with x between two
 * inaccessible pages: the unselected loads must not happen. */
static void select_guarded(void **state) {
  enum { N = 1024 }; /* a 4 KiB page of floats: x[N] is guarded too */
  long pg = sysconf(_SC_PAGESIZE);
  assert_true(pg >= N * 4);
  char *m = mmap(NULL, (size_t)(3 * pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  assert_true(m != MAP_FAILED);
  assert_true(!mprotect(m, (size_t)pg, PROT_NONE) && !mprotect(m + 2 * pg, (size_t)pg, PROT_NONE));
  float *X = (float *)(m + pg), Y[N], S[N];
  Kernel *k = kir_new(ar, "sel", NULL);
  int x = kir_buf(k, "x", KT_F32, N, KB_IN, 0), y = kir_buf(k, "y", KT_F32, N, KB_OUT, 1);
  int s = kir_buf(k, "s", KT_F32, N, KB_OUT, 2);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *in = BIN(KO_AND, BIN(KO_GE, V(i), I(1)), BIN(KO_LT, V(i), I(N - 1)));
  KExpr *sum = ADD(LD(x, BIN(KO_SUB, V(i), I(1))), LD(x, ADD(V(i), I(1))));
  ks_add(k, l, ks_store(k, y, V(i), ke_select(k, in, sum, F(-1))));
  /* a load-free select and || : s = (x > 0 || i == 5) ? x : 0.5 */
  KExpr *c = BIN(KO_OR, BIN(KO_GT, LD(x, V(i)), F(0)), BIN(KO_EQ, V(i), I(5)));
  ks_add(k, l, ks_store(k, s, V(i), ke_select(k, c, LD(x, V(i)), F(0.5))));
  for (int t = 0; t < N; t++)
    X[t] = (float)(t % 7) - 3;
  run1(k, (void *[]){X, Y, S});
  for (int t = 0; t < N; t++) {
    assert_true(Y[t] == (t >= 1 && t < N - 1 ? X[t - 1] + X[t + 1] : -1.0f));
    assert_true(S[t] == (X[t] > 0 || t == 5 ? X[t] : 0.5f));
  }
  munmap(m, (size_t)(3 * pg));
}

/* f32 -> i32 saturates with NaN -> 0; i32 -> f32; f32 -> idx -> f32. */
static void casts(void **state) {
  enum { N = 12 };
  float X[N] = {0.5f, -0.5f, 2.7f, -2.7f, 3e9f, -3e9f, NAN, INFINITY, -INFINITY, 2147483520.0f,
                -2147483648.0f, 1e12f};
  int32_t Q[N], Iv[N] = {0, 1, -1, 7, INT32_MAX, INT32_MIN, 16777217, -5, 3, 4, 5, 6};
  float F[N], G[N];
  Kernel *k = kir_new(ar, "casts", NULL);
  int x = kir_buf(k, "x", KT_F32, N, KB_IN, 0), iv = kir_buf(k, "iv", KT_I32, N, KB_IN, 1);
  int q = kir_buf(k, "q", KT_I32, N, KB_OUT, 2), f = kir_buf(k, "f", KT_F32, N, KB_OUT, 3);
  int g = kir_buf(k, "g", KT_F32, N, KB_OUT, 4);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_SERIAL);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_store(k, q, V(i), ke_cast(k, KT_I32, LD(x, V(i)))));
  ks_add(k, l, ks_store(k, f, V(i), ke_cast(k, KT_F32, LD(iv, V(i)))));
  ks_add(k, l, ks_store(k, g, V(i), ke_cast(k, KT_F32, ke_cast(k, KT_IDX, LD(x, V(i))))));
  run1(k, (void *[]){X, Iv, Q, F, G});
  int32_t want[N] = {0, 0, 2, -2, INT32_MAX, INT32_MIN, 0, INT32_MAX, INT32_MIN, 2147483520,
                     INT32_MIN, INT32_MAX};
  float wg[N] = {0, 0, 2, -2, 3e9f, -3e9f, 0, 0x1p63f, -0x1p63f, 2147483520.0f, -0x1p31f, 1e12f};
  assert_memory_equal(Q, want, sizeof want);
  assert_memory_equal(G, wg, sizeof wg);
  for (int t = 0; t < N; t++)
    assert_true(F[t] == (float)Iv[t]);
}

/* y[i] = (a[i] + b[i]) * mul over a flat vector loop. */
static Kernel *axpb(const char *name, int n, float mul) {
  Kernel *k = kir_new(ar, name, NULL);
  int a = kir_buf(k, "a", KT_F32, n, KB_IN, 0), b = kir_buf(k, "b", KT_F32, n, KB_IN, 1);
  int y = kir_buf(k, "y", KT_F32, n, KB_OUT, 2), i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(n), KL_VECTOR);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_store(k, y, V(i), MUL(ADD(LD(a, V(i)), LD(b, V(i))), F(mul))));
  return k;
}

/* y[r, c] = x[r, c] * scale + r + rowsum(x[r]), r parallel, c vector,
 * scale an outer local; an inner parallel loop runs serially. */
static Kernel *parallel_kernel(int R, int C) {
  Kernel *k = kir_new(ar, "par", NULL);
  int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), y = kir_buf(k, "y", KT_F32, R * C, KB_OUT, 1);
  int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), c2 = kir_var(k, "c", KT_IDX);
  int scale = kir_var(k, "scale", KT_F32), acc = kir_var(k, "acc", KT_F32);
  ks_add(k, k->body, ks_decl(k, scale, F(0.5)));
  KStmt *lr = ks_loop(k, r, I(R), KL_PARALLEL);
  ks_add(k, k->body, lr);
  ks_add(k, lr, ks_decl(k, acc, F(0)));
  KStmt *lc = ks_loop(k, c, I(C), KL_REDUCE);
  ks_add(k, lr, lc);
  KExpr *at = ADD(MUL(V(r), I(C)), V(c));
  ks_add(k, lc, ks_set(k, acc, ADD(V(acc), LD(x, at))));
  KStmt *lc2 = ks_loop(k, c2, I(C), KL_PARALLEL);
  ks_add(k, lr, lc2);
  KExpr *at2 = ADD(MUL(V(r), I(C)), V(c2));
  KExpr *e = ADD(MUL(LD(x, at2), V(scale)), ke_cast(k, KT_F32, V(r)));
  ks_add(k, lc2, ks_store(k, y, at2, ADD(e, V(acc))));
  return k;
}

static void parallel(void **state) {
  enum { R = 300, C = 257 };
  Kernel *k = parallel_kernel(R, C);
  float *X = malloc(sizeof(float) * R * C), *Y = malloc(sizeof(float) * R * C);
  uint64_t s = 3;
  for (int t = 0; t < R * C; t++)
    X[t] = frand(&s, -1, 1);
  char err[512];
  Cg *cg = cg_new("p", &(CgOpts){.opt_level = 3, .verify = true}, err, sizeof err);
  assert_true(cg_kernel(cg, k, err, sizeof err));
  char *ir = cg_print_ir(cg);
  assert_non_null(strstr(ir, "call void @rt_parallel_for"));
  assert_non_null(strstr(ir, "par.par0"));
  assert_null(strstr(ir, "par.par1")); /* the nested parallel loop is serial */
  free(ir);
  assert_true(cg_kernel(cg, axpb("flat", 1 << 16, 1), err, sizeof err));
  assert_true(cg_kernel(cg, axpb("small", 1000, 1), err, sizeof err));
  ir = cg_print_ir(cg);
  assert_non_null(strstr(ir, "flat.par0")); /* a big outermost vector loop goes parallel */
  assert_null(strstr(ir, "small.par0"));
  free(ir);
  cg_free(cg);
  /* KILN_PAR_WORK moves the line: 1000 elements split at 100 operations a
   * task, 2^16 stay serial at 10^9 */
  static const struct { const char *work, *yes, *no; } knob[] = {{"100", "small.par0", NULL},
                                                                 {"1e9", NULL, "flat.par0"}};
  for (int i = 0; i < 2; i++) {
    setenv("KILN_PAR_WORK", knob[i].work, 1);
    cg = cg_new("p", &(CgOpts){.opt_level = 3, .verify = true}, err, sizeof err);
    assert_true(cg_kernel(cg, axpb("flat", 1 << 16, 1), err, sizeof err));
    assert_true(cg_kernel(cg, axpb("small", 1000, 1), err, sizeof err));
    ir = cg_print_ir(cg);
    if (knob[i].yes)
      assert_non_null(strstr(ir, knob[i].yes));
    if (knob[i].no)
      assert_null(strstr(ir, knob[i].no));
    free(ir);
    cg_free(cg);
  }
  unsetenv("KILN_PAR_WORK");
  for (int threads = 1; threads <= 2; threads++) {
    rt_set_threads(threads);
    run1(k, (void *[]){X, Y}); /* the same bits as kir_eval's, with 1 and 2 threads */
  }
  rt_set_threads(1);
  free(X), free(Y);
}

/* Row r's L partials of op over x[r, :]: element c L + l into acc[l]
 * (ir/lower_reduce.c's lanes), stored to y[r, l]; with leak, the loop also
 * reads acc[0] (other += acc[0], stored to y[r, L]). */
static Kernel *lanes_kernel(const char *name, KOp op, int L, int R, int C, bool leak) {
  Kernel *k = kir_new(ar, name, NULL);
  int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0);
  int y = kir_buf(k, "y", KT_F32, R * (L + 1), KB_OUT, 1);
  int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), other = kir_var(k, "other", KT_F32);
  int acc[16];
  KStmt *lr = ks_loop(k, r, I(R), KL_PARALLEL);
  ks_add(k, k->body, lr);
  for (int l = 0; l < L; l++) {
    acc[l] = kir_var(k, "acc", KT_F32);
    ks_add(k, lr, ks_decl(k, acc[l], F(op == KO_MAX ? -INFINITY : 0)));
  }
  ks_add(k, lr, ks_decl(k, other, F(0)));
  KStmt *lc = ks_loop(k, c, I(C / L), KL_REDUCE);
  ks_add(k, lr, lc);
  for (int l = 0; l < L; l++) {
    KExpr *at = ADD(ADD(MUL(V(r), I(C)), MUL(V(c), I(L))), I(l));
    ks_add(k, lc, ks_set(k, acc[l], BIN(op, V(acc[l]), LD(x, at))));
  }
  if (leak)
    ks_add(k, lc, ks_set(k, other, ADD(V(other), V(acc[0]))));
  for (int l = 0; l < L; l++)
    ks_add(k, lr, ks_store(k, y, ADD(MUL(V(r), I(L + 1)), I(l)), V(acc[l])));
  ks_add(k, lr, ks_store(k, y, ADD(MUL(V(r), I(L + 1)), I(L)), V(other)));
  return k;
}

/* Whether kernel k's IR, unoptimized and optimized, contains want and want_opt. */
static void lanes_ir(Kernel *k, const char *want, const char *want_opt, bool present) {
  char err[512];
  Cg *cg = cg_new("l", &(CgOpts){.opt_level = 3, .verify = true}, err, sizeof err);
  assert_true(cg_kernel(cg, k, err, sizeof err));
  char *ir = cg_print_ir(cg);
  if ((strstr(ir, want) != NULL) != present)
    fail_msg("%s: %s %s in the IR", k->name, want, present ? "missing" : "found");
  free(ir);
  assert_true(cg_optimize(cg, err, sizeof err));
  ir = cg_print_ir(cg);
  if (want_opt && !strstr(ir, want_opt))
    fail_msg("%s: %s missing in the optimized IR", k->name, want_opt);
  free(ir);
  cg_free(cg);
}

/* A reduction loop that updates several accumulators with one operation
 * and reads them nowhere else keeps them as the lanes of one vector
 * (cg_loop.c): the IR has the vector, LLVM makes 16-lane code of it, and
 * the bits are kir_eval's, for maxima over NaN, infinities, -0 and +0, and
 * for sums.  A loop that reads an accumulator elsewhere keeps scalars. */
static void vector_accumulators(void **state) {
  enum { R = 37, C = 16 * 5 };
  float *X = malloc(sizeof(float) * R * C), *Y = malloc(sizeof(float) * R * 17);
  uint64_t s = 11;
  const float odd[] = {NAN, -0.0f, 0.0f, INFINITY, -INFINITY};
  for (int t = 0; t < R * C; t++)
    X[t] = t % 7 == 3 ? odd[(t / 7) % 5] : frand(&s, -2, 2);
  for (int t = 0; t < C; t++) /* a row of zeros of both signs: which one max keeps */
    X[t] = t % 3 ? 0.0f : -0.0f;
  Kernel *mx = lanes_kernel("lanes_max", KO_MAX, 16, R, C, false);
  Kernel *sum = lanes_kernel("lanes_sum", KO_ADD, 16, R, C, false);
  Kernel *leak = lanes_kernel("lanes_leak", KO_ADD, 16, R, C, true);
  Kernel *few = lanes_kernel("lanes_few", KO_MIN, 5, R, C - 5, false);
  lanes_ir(mx, "alloca <16 x float>", "fcmp olt <16 x float>", true);
  lanes_ir(sum, "alloca <16 x float>", "fadd <16 x float>", true);
  lanes_ir(leak, "x float>", NULL, false);
  lanes_ir(few, "alloca <5 x float>", NULL, true);
  Kernel *ks[] = {mx, sum, leak, few};
  for (int i = 0; i < 4; i++)
    for (int threads = 1; threads <= 2; threads++) {
      rt_set_threads(threads);
      run1(ks[i], (void *[]){X, Y});
    }
  rt_set_threads(1);
  free(X), free(Y);
}

/* G rows' L partials of op in one loop (row g's element c L + l into
 * acc[g][l], ir/lower_reduce.c's rows_lanes), then each row's tree p[l] =
 * p[l] op p[l + w], w = L/2 .. 1; every partial stored, to y[row, l].  With
 * `cut`, a statement that is not a tree's (other = acc[0][0] + 1, stored
 * too) stands between row 0's tree and the others'. */
static Kernel *trees_kernel(const char *name, KOp op, int G, int L, int R, int C, bool cut) {
  Kernel *k = kir_new(ar, name, NULL);
  int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0);
  int y = kir_buf(k, "y", KT_F32, R * L + 1, KB_OUT, 1);
  int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), other = kir_var(k, "other", KT_F32);
  int acc[8][16];
  KStmt *lr = ks_loop(k, r, I(R / G), KL_SERIAL);
  ks_add(k, k->body, lr);
  for (int g = 0; g < G; g++)
    for (int l = 0; l < L; l++) {
      acc[g][l] = kir_var(k, "acc", KT_F32);
      ks_add(k, lr, ks_decl(k, acc[g][l], F(op == KO_MAX ? -INFINITY : 0)));
    }
  KStmt *lc = ks_loop(k, c, I(C / L), KL_REDUCE);
  ks_add(k, lr, lc);
  for (int g = 0; g < G; g++)
    for (int l = 0; l < L; l++) {
      KExpr *at = ADD(ADD(MUL(ADD(MUL(V(r), I(G)), I(g)), I(C)), MUL(V(c), I(L))), I(l));
      ks_add(k, lc, ks_set(k, acc[g][l], BIN(op, V(acc[g][l]), LD(x, at))));
    }
  for (int g = 0; g < G; g++) {
    for (int w = L / 2; w >= 1; w /= 2)
      for (int l = 0; l < w; l++)
        ks_add(k, lr, ks_set(k, acc[g][l], BIN(op, V(acc[g][l]), V(acc[g][l + w]))));
    if (cut && g == 0)
      ks_add(k, lr, ks_decl(k, other, ADD(V(acc[0][0]), F(1))));
  }
  for (int g = 0; g < G; g++)
    for (int l = 0; l < L; l++)
      ks_add(k, lr, ks_store(k, y, ADD(MUL(ADD(MUL(V(r), I(G)), I(g)), I(L)), I(l)), V(acc[g][l])));
  if (cut)
    ks_add(k, lr, ks_store(k, y, I(R * L), V(other)));
  return k;
}

/* The trees after a loop of vector accumulators are done on the vector
 * (cg_loop.c, vacc_tree): 4 rows of 16 partials, 8 rows of 8, as waves
 * of shuffles and one vector op each (the IR's 32-lane add is the first
 * wave of 4 rows of 16); every partial's final value, sums and maxima
 * over NaN, infinities and signed zeros, the bits of kir_eval's scalar
 * trees.  A statement between the trees stops the folding there; the
 * bits stay the same. */
static void vector_trees(void **state) {
  enum { R = 40, C = 16 * 3 };
  float *X = malloc(sizeof(float) * R * C), *Y = malloc(sizeof(float) * (R * 16 + 1));
  uint64_t s = 13;
  const float odd[] = {NAN, -0.0f, 0.0f, INFINITY, -INFINITY};
  for (int t = 0; t < R * C; t++)
    X[t] = t % 11 == 5 ? odd[(t / 11) % 5] : frand(&s, -3, 3);
  Kernel *sum = trees_kernel("trees_sum", KO_ADD, 4, 16, R, C, false);
  Kernel *mx = trees_kernel("trees_max", KO_MAX, 8, 8, R, C, false);
  Kernel *cut = trees_kernel("trees_cut", KO_ADD, 4, 16, R, C, true);
  lanes_ir(sum, "fadd <32 x float>", NULL, true);
  lanes_ir(mx, "<32 x float>", NULL, true);
  lanes_ir(cut, "fadd <8 x float>", NULL, true); /* row 0's tree, on its own */
  Kernel *ks[] = {sum, mx, cut};
  for (int i = 0; i < countof(ks); i++)
    run1(ks[i], (void *[]){X, Y});
  free(X), free(Y);
}

/* bits[i] = rng_hash(seed, step * N + i) >> 11, seed above 2^63; then
 * KO_HASH64 with the operands swapped: all 64 bits. */
static void hash(void **state) {
  enum { N = 19 };
  const uint64_t seed = 0xfedcba9876543210ull;
  Kernel *k = kir_new(ar, "hash", NULL);
  int st = kir_buf(k, "step", KT_IDX, 1, KB_IN, KBUF_STEP);
  int o = kir_buf(k, "bits", KT_IDX, 2 * N, KB_OUT, 0);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *ctr = ADD(MUL(LD(st, I(0)), I(N)), V(i));
  ks_add(k, l, ks_store(k, o, V(i), BIN(KO_HASH, I((int64_t)seed), ctr)));
  ks_add(k, l, ks_store(k, o, ADD(V(i), I(N)), BIN(KO_HASH64, ctr, I((int64_t)seed))));
  int64_t step = 41, bits[2 * N];
  run1(k, (void *[]){&step, bits});
  for (int u = 0; u < N; u++) {
    assert_true((uint64_t)bits[u] == rng_hash(seed, (uint64_t)(step * N + u)) >> 11);
    assert_true((uint64_t)bits[N + u] == rng_hash((uint64_t)(step * N + u), seed));
  }
}

/* y = 2 (a + b) through a step: t = a + b in the arena, y extern; and a
 * kernel run in place (input and output the same pointer). */
static void step_function(void **state) {
  enum { N = 100 };
  Kernel *k1 = axpb("add", N, 1), *k2 = axpb("twice", N, 1);
  float A[N], B[N], Y[N];
  for (int t = 0; t < N; t++)
    A[t] = (float)t, B[t] = 0.25f * (float)t;
  CgRef r1[] = {{CG_EXTERN, 0}, {CG_EXTERN, 1}, {CG_ARENA, 64}};
  CgRef r2[] = {{CG_ARENA, 64}, {CG_ARENA, 64}, {CG_EXTERN, 2}};
  CgCall calls[] = {{k1, r1}, {k2, r2}};
  for (int o = 0; o < 2; o++) {
    char err[2048];
    Cg *cg = cg_new("s", &(CgOpts){.opt_level = opt_levels[o], .verify = true}, err, sizeof err);
    assert_true(cg_step(cg, "step", calls, 2, err, sizeof err));
    assert_false(cg_step(cg, "step", calls, 2, err, sizeof err)); /* the name is taken */
    assert_true(cg_optimize(cg, err, sizeof err));
    CgJit *j = cg_jit(cg, err, sizeof err);
    assert_non_null(j);
    assert_false(cg_kernel(cg, k1, err, sizeof err)); /* the module has moved */
    cg_free(cg);
    float *arena = calloc(1, 64 + sizeof(float) * N);
    cg_jit_step(j, "step")((char *)arena, (void *[]){A, B, Y});
    for (int t = 0; t < N; t++)
      assert_true(Y[t] == 2 * (A[t] + B[t]));
    kfn(j, "add")((void *[]){Y, A, Y}); /* in place: Y = Y + A */
    for (int t = 0; t < N; t++)
      assert_true(Y[t] == 2 * (A[t] + B[t]) + A[t]);
    assert_true(!cg_jit_lookup(j, "no_such_function") && strlen(cg_jit_error(j)) > 0);
    free(arena);
    cg_jit_free(j);
  }
}

/* --- tier 2: lowered graph nodes against the reference evaluator -------------------- */


static bool fill_range(const char *spec, const char *name, double *lo, double *hi) {
  size_t nl = strlen(name);
  for (const char *s = spec; s && *s; s += strcspn(s, " ")) {
    s += strspn(s, " ");
    if (strncmp(s, name, nl) == 0 && s[nl] == '=')
      return sscanf(s + nl + 1, "%lf:%lf", lo, hi) == 2;
  }
  return false;
}

/* Whether param p is an optimizer's state: not trainable, and named after a
 * trainable parameter plus a suffix (h.weight.exp_avg). */
static bool optimizer_state(const Graph *g, const Node *p) {
  const char *dot = strrchr(p->name, '.');
  if (p->trainable || !dot)
    return false;
  size_t len = (size_t)(dot - p->name);
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *q = g->nodes[i];
    if (q->op == OP_PARAM && q->trainable && strlen(q->name) == len &&
        strncmp(q->name, p->name, len) == 0)
      return true;
  }
  return false;
}

/* The reference's run of g on random inputs and parameters: ev holds every
 * live node's value; params' buffers are ev's bound ones.  With init_params
 * (whole models) the model's parameters get their own initializers instead:
 * uniform +-0.5 weights in a deep stack without normalization (a U-Net, a
 * VGG) grow activations by orders of magnitude per layer, and the outputs
 * then differ by summation order alone; optimizer state stays random. */
static void ref_run(Eval *ev, Graph *g, Node *const *roots, int n_roots, const char *fill,
                    bool *own, bool init_params) {
  eval_init(ev, g);
  ev->cx.step = 5;
  bool *live = calloc((size_t)g->n_nodes + 1, 1);
  graph_live(g, roots, n_roots, live);
  uint64_t s = 11;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op != OP_INPUT && v->op != OP_PARAM)
      continue;
    int64_t cnt = shape_numel(&v->shape);
    double lo = v->dtype == DT_F32 ? -2 : 0, hi = v->dtype == DT_F32 ? 2 : 3;
    if (v->op == OP_PARAM)
      lo = -0.5, hi = 0.5;
    size_t nl = strlen(v->name);
    if (nl > 11 && strcmp(v->name + nl - 11, ".exp_avg_sq") == 0)
      lo = 0.01, hi = 0.5; /* Adam's second moments: positive, and not so small that
                            * m / sqrt(v) turns rounding in the gradient into big steps */
    fill_range(fill, v->name, &lo, &hi);
    if (strcmp(v->name, "train.lr") == 0 || strcmp(v->name, "train.step") == 0)
      lo = hi = strcmp(v->name, "train.lr") == 0 ? 0.01 : 3;
    void *d = v->op == OP_PARAM ? malloc((size_t)cnt * 4 + 4) : eval_input(ev, v);
    own[i] = v->op == OP_PARAM;
    if (own[i])
      eval_bind(ev, v, d);
    if (init_params && v->op == OP_PARAM && !optimizer_state(g, v)) {
      param_init_fill(v, 11, d);
      continue;
    }
    for (int64_t j = 0; j < cnt; j++) {
      float r = frand(&s, (float)lo, (float)hi);
      if (v->dtype == DT_F32)
        ((float *)d)[j] = r;
      else
        ((int32_t *)d)[j] = (int32_t)floorf(r);
    }
  }
  char err[256];
  if (eval_run(ev, live, err, sizeof err))
    fail_msg("reference: %s", err);
  free(live);
}

static void ref_free(Eval *ev, bool *own) {
  for (int i = 0; i < ev->g->n_nodes; i++)
    if (own[i])
      free(ev->vals[i].data);
  eval_free(ev);
  free(own);
}

static double worst; /* the largest |got - want| / tolerance seen */

/* got against the reference's want for node n: i32 exactly; f32 within
 * rtol |want| + atol, atol = rtol / 10 * max(1, max |want|). */
static void compare_node(const Node *n, const void *got, const void *want, double rtol,
                         const char *what) {
  int64_t cnt = shape_numel(&n->shape);
  if (n->dtype == DT_I32) {
    for (int64_t i = 0; i < cnt; i++)
      if (((const int32_t *)got)[i] != ((const int32_t *)want)[i])
        fail_msg("%s: %s[%lld] = %d, the reference says %d", what, n->name, (long long)i,
                 ((const int32_t *)got)[i], ((const int32_t *)want)[i]);
    return;
  }
  const float *g = got, *w = want;
  double m = 1;
  for (int64_t i = 0; i < cnt; i++)
    m = isfinite(w[i]) && fabs(w[i]) > m ? fabs(w[i]) : m;
  for (int64_t i = 0; i < cnt; i++) {
    double r = fabs((double)g[i] - w[i]) / (rtol / 10 * m + rtol * fabs(w[i]));
    worst = rtol > 0 && isfinite(r) && r > worst ? r : worst;
    if (!close_f32(g[i], w[i], rtol, rtol / 10 * m))
      fail_msg("%s: %s (%s)[%lld] = %.9g, the reference says %.9g", what, n->name,
               op_name(n->op), (long long)i, g[i], w[i]);
  }
}

/* The case's graph: y, then (for an f32 y) the backward pass of sum(y * r). */
static void autodiff_run(void *ud) {
  Compiled *c = ud;
  Graph *g = c->g;
  Node *r, *loss = probe_loss(g, &r), *wrt[64], *grads[64];
  int n = 0;
  for (int i = 0; i < g->n_nodes && n < 64; i++)
    if ((g->nodes[i]->op == OP_INPUT || g->nodes[i]->op == OP_PARAM) && g->nodes[i] != r &&
        g->nodes[i]->dtype == DT_F32)
      wrt[n++] = g->nodes[i];
  pass_autodiff(g, &c->d, loss, wrt, n, grads);
}

static bool covered[OP_COUNT];
static int n_checked;

/* Runs kernel k of node n on the reference's inputs: JIT-compiled, and in
 * the interpreter; both against the reference, and against each other. */
static void check_kernel(CgJit *j, const Kernel *k, const Node *n, Eval *ev, const char *what) {
  int64_t step = (int64_t)ev->cx.step;
  size_t bytes = (size_t)node_bytes(n) + 4;
  void **bufs = calloc((size_t)k->n_bufs, sizeof *bufs), **kb = calloc((size_t)k->n_bufs, 8);
  void *out = malloc(bytes), *kout = malloc(bytes);
  memset(out, 0xff, bytes), memset(kout, 0xff, bytes); /* NaN or -1 where nothing is written */
  for (int b = 0; b < k->n_bufs; b++) {
    const KBuf *kf = &k->bufs[b];
    bufs[b] = kf->node == KBUF_STEP ? (void *)&step
              : kf->role == KB_OUT  ? out
                                    : ev->vals[kf->node].data;
    kb[b] = kf->role == KB_OUT ? kout : bufs[b];
  }
  kfn(j, k->name)(bufs);
  compare_node(n, out, ev->vals[n->id].data, 1e-5, what);
  kir_eval(k, kb);
  compare_node(n, out, kout, 0, "JIT against kir_eval"); /* bit for bit */
  covered[n->op] = true, n_checked++;
  free(bufs), free(kb), free(out), free(kout);
}

/* Every node of the case: its kernel on the reference's inputs. */
static void op_case(const OpCase *c, int opt) {
  char text[1024];
  snprintf(text, sizeof text, "model m() {\n  %s\n}\n", c->body);
  for (char *p = text; *p; p++)
    *p = *p == ';' ? '\n' : *p;
  Compiled cc = compile_opts(text, true, NULL, 0);
  MUST_COMPILE(cc);
  Graph *g = cc.g;
  if (graph_find_value(g, "y")->dtype == DT_F32 && diag_protect(&cc.d, autodiff_run, &cc))
    fail_msg("%s: autodiff: %s", c->body, cc.d.msg);
  Eval ev;
  bool *own = calloc((size_t)g->n_nodes, 1);
  ref_run(&ev, g, g->nodes, g->n_nodes, c->fill, own, false);
  Kernel **ks = calloc((size_t)g->n_nodes, sizeof *ks), **kn = calloc((size_t)g->n_nodes, 8);
  int nk = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if ((kn[i] = lower_node(cc.a, g->nodes[i])))
      ks[nk++] = kn[i];
  CgJit *j = jit_of(ks, nk, opt);
  for (int i = 0; i < g->n_nodes; i++)
    if (kn[i])
      check_kernel(j, kn[i], g->nodes[i], &ev, c->body);
  cg_jit_free(j);
  free(ks), free(kn);
  ref_free(&ev, own);
  compiled_free(&cc);
}

static void every_op(void **state) {
  for (int threads = 1; threads <= 2; threads++) {
    rt_set_threads(threads);
    for (int i = 0; i < countof(op_cases); i++)
      op_case(&op_cases[i], opt_levels[(i + threads) % 2]);
  }
  rt_set_threads(1);
  print_message("  %d kernels; worst |JIT - reference| / tolerance: %.3g\n", n_checked, worst);
  worst = 0;
  for (int op = 0; op < OP_COUNT; op++)
    if (op_info[op].lower && !covered[op])
      fail_msg("op %s has a lowering but no case computes it", op_name((Op)op));
}

/* --- tier 2b: whole models, one step function over a planned arena ------------------ */

#define NOW_MS() (1e3 * (double)clock() / CLOCKS_PER_SEC) /* compiling is single-threaded */

/* Where buffer b of a kernel lives: the arena (planned values), or an
 * extern slot: node id for parameters, n_nodes for the step counter. */
static CgRef locate(const Graph *g, const Plan *p, const KBuf *b) {
  if (b->node == KBUF_STEP)
    return (CgRef){CG_EXTERN, g->n_nodes};
  ASSERT(b->node >= 0); /* no lowering asks for scratch */
  const Node *n = g->nodes[b->node];
  return plan_in_arena(p, n) ? (CgRef){CG_ARENA, p->offset[n->id]} : (CgRef){CG_EXTERN, n->id};
}

/* Compiles roots' plan into one step function, runs it on the reference's
 * inputs, and compares every root. */
static void run_model(Graph *g, Node *const *roots, int n_roots, const char *what, double rtol) {
  Eval ev;
  bool *own = calloc((size_t)g->n_nodes, 1);
  ref_run(&ev, g, roots, n_roots, NULL, own, true);
  Plan p;
  plan_build(g, roots, n_roots, &(PlanOpts){0}, &p);
  CgCall *calls = calloc((size_t)p.n_order, sizeof *calls);
  int nc = 0;
  for (int i = 0; i < p.n_order; i++) {
    Node *n = p.order[i];
    Kernel *k = program_kernel_at(g->arena, &p, n); /* fused groups too */
    if (!k)
      continue;
    CgRef *refs = arena_alloc(g->arena, sizeof(CgRef) * (size_t)k->n_bufs);
    for (int b = 0; b < k->n_bufs; b++)
      refs[b] = locate(g, &p, &k->bufs[b]);
    calls[nc++] = (CgCall){k, refs};
  }
  char err[4096];
  double t1 = NOW_MS();
  Cg *cg = cg_new(what, &(CgOpts){.opt_level = 3}, err, sizeof err);
  if (!cg_step(cg, "step", calls, nc, err, sizeof err) || !cg_optimize(cg, err, sizeof err))
    fail_msg("%s: %s", what, err);
  double t2 = NOW_MS();
  CgJit *j = cg_jit(cg, err, sizeof err);
  CgStepFn step = j ? cg_jit_step(j, "step") : NULL;
  if (!step)
    fail_msg("%s: %s", what, j ? cg_jit_error(j) : err);
  double t3 = NOW_MS();
  print_message("  %-34s %4d kernels: emit+optimize %6.0f ms, jit %6.0f ms\n", what, nc, t2 - t1,
                t3 - t2);
  char *arena = aligned_alloc(64, (size_t)p.arena + 64);
  void **ext = calloc((size_t)g->n_nodes + 1, sizeof *ext);
  int64_t counter = (int64_t)ev.cx.step;
  ext[g->n_nodes] = &counter;
  for (int i = 0; i < g->n_nodes; i++)
    ext[i] = plan_in_arena(&p, g->nodes[i]) ? NULL : ev.vals[i].data;
  memset(arena, 0xff, (size_t)p.arena); /* NaN: no kernel may read what it did not write */
  for (int rep = 0; rep < 2; rep++) { /* again, on the first run's leftovers */
    for (int i = 0; i < g->n_nodes; i++) /* inputs, whose bytes other values reuse */
      if (g->nodes[i]->op == OP_INPUT && p.time[i] >= 0 && plan_in_arena(&p, g->nodes[i]))
        memcpy(arena + p.offset[i], ev.vals[i].data, (size_t)node_bytes(g->nodes[i]));
    step(arena, ext);
  }
  for (int r = 0; r < n_roots; r++) {
    const Node *n = roots[r];
    const void *got = plan_in_arena(&p, n) ? arena + p.offset[n->id] : ext[n->id];
    compare_node(n, got, ev.vals[n->id].data, rtol, what);
  }
  free(arena), free(ext), free(calls);
  cg_jit_free(j);
  cg_free(cg);
  ref_free(&ev, own);
}

static void model_step(Graph *g, Node **roots, int n, const char *file, bool train,
                       const char *what) {
  if (train) { /* as kiln's cli_train_passes, every fusion kind on (the reference runs it too) */
    pass_step_transposes(g);
    pass_share_derivatives(g);
  }
  run_model(g, roots, n, what, 1e-4);
}

static void every_model(void **state) {
  rt_set_threads(2);
  kt_every_model_step(model_step);
  rt_set_threads(1);
  print_message("  worst |JIT - reference| / tolerance: %.3g\n", worst);
}

/* --- tier 3: object files, assembly, IR ------------------------------------------- */

static void emit_files(void **state) {
  Kernel *k = axpb("emitted_kernel", 64, 3);
  char err[2048], obj[] = "/tmp/kiln_cg_XXXXXX";
  Cg *cg = cg_new("e", &(CgOpts){.opt_level = 2}, err, sizeof err);
  assert_true(cg_kernel(cg, k, err, sizeof err));
  assert_true(cg_optimize(cg, err, sizeof err));
  char *ir = cg_print_ir(cg);
  assert_non_null(strstr(ir, "define void @emitted_kernel(ptr"));
  assert_non_null(strstr(ir, "\"target-cpu\""));
  free(ir);
  assert_int_equal(close(mkstemp(obj)), 0);
  assert_true(cg_emit_file(cg, obj, false, err, sizeof err));
  unsigned char magic[4] = {0};
  FILE *f = fopen(obj, "rb");
  assert_int_equal(fread(magic, 1, 4, f), 4);
  fclose(f);
  assert_memory_equal(magic, "\x7f" "ELF", 4);
  char cmd[600], line[512];
  snprintf(cmd, sizeof cmd, "nm %s 2>/dev/null", obj);
  FILE *p = popen(cmd, "r");
  int lines = 0, found = 0;
  while (p && fgets(line, sizeof line, p))
    lines++, found += strstr(line, " T emitted_kernel") != NULL;
  assert_true(found == 1 || lines == 0); /* no nm installed: the magic check stands */
  if (p)
    pclose(p);
  assert_true(cg_emit_file(cg, obj, true, err, sizeof err));
  f = fopen(obj, "r");
  bool label = false;
  while (fgets(line, sizeof line, f))
    label |= strncmp(line, "emitted_kernel:", 15) == 0;
  fclose(f);
  assert_true(label);
  assert_false(cg_emit_file(cg, "/nonexistent/dir/x.o", false, err, sizeof err));
  remove(obj);
  cg_free(cg);
}

/* kir_verify failures, duplicate names, and a parallel loop that assigns
 * an outer local come back as messages. */
static void errors(void **state) {
  Kernel *k = kir_new(ar, "bad", NULL);
  int y = kir_buf(k, "y", KT_F32, 4, KB_OUT, 0), u = kir_var(k, "u", KT_F32);
  ks_add(k, k->body, ks_store(k, y, I(0), V(u))); /* u undeclared */
  char err[512];
  Cg *cg = cg_new("x", &(CgOpts){0}, err, sizeof err);
  assert_false(cg_kernel(cg, k, err, sizeof err));
  assert_non_null(strstr(err, "invalid kernel"));
  Kernel *ok = axpb("ok", 4, 1);
  assert_true(cg_kernel(cg, ok, err, sizeof err));
  assert_false(cg_kernel(cg, ok, err, sizeof err));
  assert_non_null(strstr(err, "already has a function named ok"));
  k = kir_new(ar, "racy", NULL);
  int i = kir_var(k, "i", KT_IDX), acc = kir_var(k, "acc", KT_F32);
  ks_add(k, k->body, ks_decl(k, acc, F(0)));
  KStmt *l = ks_loop(k, i, I(100000), KL_PARALLEL);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_set(k, acc, ADD(V(acc), F(1))));
  assert_false(cg_kernel(cg, k, err, sizeof err));
  assert_non_null(strstr(err, "assigns acc"));
  cg_free(cg);
}

/* Subnormal numbers in a compiled step (codegen/llvm/cg_kernel.c,
 * "Subnormals"): flushed to zero by default, on the caller's thread and on
 * the pool's workers (a loop long enough to be split over 2 threads), the
 * caller's MXCSR as it was after the step; kept with keep_denormals. */
static void subnormals(void **state) {
  (void)state;
  Compiled c = compile_text("model m() {\n  input x: f32[1048576]\n  input d: f32[1048576]\n"
                            "  y = x * 1e-30\n  z = d * 1e30\n  output y\n  output z\n}\n");
  MUST_COMPILE(c);
  Graph *g = c.g;
  Node *roots[2] = {graph_find_value(g, "y"), graph_find_value(g, "z")};
  rt_set_threads(2);
  for (int keep = 0; keep < 2; keep++) {
    Program p;
    char err[2048];
    if (!program_compile(&p, g, roots, 2, &(PlanOpts){0},
                         &(CgOpts){.opt_level = 2, .keep_denormals = keep}, err, sizeof err))
      fail_msg("%s", err);
    float *x = program_value(&p, graph_find_value(g, "x"));
    float *d = program_value(&p, graph_find_value(g, "d"));
    int64_t n = 1048576;
    for (int64_t i = 0; i < n; i++)
      x[i] = 1e-10f, d[i] = 1e-39f; /* x * 1e-30 is subnormal; d is */
    unsigned before = rt_fp_flush();
    rt_fp_restore(before);
    program_run(&p, 1);
    unsigned after = rt_fp_flush();
    rt_fp_restore(after);
    assert_int_equal(before, after); /* the caller's mode is back */
    const float *y = program_value(&p, roots[0]), *z = program_value(&p, roots[1]);
    int64_t y_zero = 0, z_zero = 0;
    for (int64_t i = 0; i < n; i++)
      y_zero += y[i] == 0, z_zero += z[i] == 0;
    if (keep) { /* IEEE: 1e-40 and 1e-9 */
      assert_int_equal(y_zero, 0);
      assert_int_equal(z_zero, 0);
      assert_true(fabsf(z[0] - 1e-9f) < 1e-15f && fabsf(z[n - 1] - 1e-9f) < 1e-15f);
    } else { /* FTZ: every result below 1.18e-38 is 0; DAZ: every d is 0 */
      assert_int_equal(y_zero, n);
      assert_int_equal(z_zero, n);
    }
    program_free(&p);
  }
  rt_set_threads(1);
  compiled_free(&c);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, arena_setup, arena_teardown)
  const struct CMUnitTest tests[] = {
      T(elementwise), T(inline_inputs),   T(kmath),        T(reduction),    T(nested_index), T(select_guarded), T(casts),
      T(parallel),      T(vector_accumulators), T(vector_trees), T(hash), T(step_function),
      T(emit_files),
      T(errors),        T(every_op),     T(every_model), T(subnormals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
