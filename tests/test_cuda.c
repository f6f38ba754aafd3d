/*
 * test_cuda.c: the CUDA backend's generated source (codegen/cuda) run on
 * the host emulator (tests/cuda_emu.h, cuda_helpers.h) and compared bit
 * for bit with the KIR interpreter (ir/kir_eval.c), the oracle:
 *
 *  1. hand-built kernels: elementwise semantics with NaN and infinities,
 *     kiln's exp/tanh/erf, reductions in order, floordiv/mod/div of every
 *     sign and by zero, guarded loads next to inaccessible pages, casts,
 *     random bits, wrapping integer arithmetic, a kernel cut into parts
 *     with a local carried between them, loop nests flattened into one
 *     grid-stride space (or not, when a serial loop depends on itself), a
 *     serial loop around an independent one run per iteration of the
 *     inner one (or not, when two of those would write one element);
 *  2. every op with a lowering, through small graphs and their backward
 *     passes (op_cases), as program steps: unfused with every value its own
 *     bytes, and fused; the whole arena after the step must be kir_eval's;
 *  2b. the kernels with schedules of their own: tiled GEMMs (matmul and
 *     conv2d of odd shapes, transposed, batched, fused, with padding taps
 *     and infinite weights) and the sums of cuda_reduce.c (shuffles,
 *     outer axes, chains in registers), bit for bit; reassociated
 *     sums (cu_reassociate) within a tolerance of the exact sum;
 *  3. whole models (mlp, lenet5, attention; inference and training step)
 *     as program steps (codegen/program.c's calls, cuda_program.h's
 *     launches, in-place and shared buffers as planned);
 *  4. what the source says (names, parts, __device__ locals) and the
 *     errors the emitter gives.
 * Each run uses both of the emulator's schedules (cuda_helpers.h: strided,
 * and reversed with one-thread parts launched on 8 threads).
 *
 * op_cases (tests/op_cases.h) are test_codegen.c's cases too (the same
 * graphs, so the same ops reach both backends); every_op fails for an op with a lowering that no
 * case computes.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <math.h>
#include <sys/mman.h>

#include "cuda_helpers.h"
#include "kmath.h"
#include "op_cases.h"
#include "program.h"

static Arena *ar;

static int arena_setup(void **state) { return !(ar = arena_new()); }
static int arena_teardown(void **state) {
  arena_free(ar);
  return 0;
}

static size_t buf_bytes(const KBuf *b) { return (size_t)b->numel * (b->type == KT_IDX ? 8 : 4); }

/* Where two byte ranges first differ, as an element index of `elem` bytes. */
static long long first_diff(const void *a, const void *b, size_t n, size_t elem) {
  const unsigned char *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i])
      return (long long)(i / elem);
  return -1;
}

/* --- tier 1: hand-built kernels ------------------------------------------------------ */

/* Runs kernel k on bufs in the emulator (both schedules) and checks every
 * output against kir_eval's bits; bufs end with the results.  Returns the
 * module's source (malloc'ed) for checks of its text. */
static char *run1(Kernel *k, void *const *bufs) {
  char err[1024];
  CuSrc *s = cu_new("t");
  if (!cu_kernel(s, k, err, sizeof err))
    fail_msg("cu_kernel: %s", err);
  Emu e;
  emu_build(&e, s);
  const CuKernel *ck = cu_find(s, k->name);
  void *want[32] = {0};
  assert_true(k->n_bufs <= 32);
  for (int b = 0; b < k->n_bufs; b++)
    if (k->bufs[b].role != KB_IN) {
      memset(bufs[b], 0xff, buf_bytes(&k->bufs[b]));
      want[b] = malloc(buf_bytes(&k->bufs[b]));
    }
  kir_eval(k, bufs);
  for (int b = 0; b < k->n_bufs; b++)
    if (want[b])
      memcpy(want[b], bufs[b], buf_bytes(&k->bufs[b]));
  for (int mode = 0; mode < 2; mode++) {
    for (int b = 0; b < k->n_bufs; b++)
      if (want[b])
        memset(bufs[b], 0xff, buf_bytes(&k->bufs[b]));
    for (int j = 0; j < ck->n_launches; j++)
      emu_launch(&e, ck->launches[j].fn, ck->launches[j].threads, bufs, (EmuMode)mode);
    for (int b = 0; b < k->n_bufs; b++) {
      long long at = want[b] ? first_diff(bufs[b], want[b], buf_bytes(&k->bufs[b]),
                                          k->bufs[b].type == KT_IDX ? 8 : 4)
                             : -1;
      if (at >= 0)
        fail_msg("%s (%s schedule): %s[%lld] differs from kir_eval's", k->name,
                 mode ? "reversed" : "strided", k->bufs[b].name, at);
    }
  }
  for (int b = 0; b < k->n_bufs; b++)
    free(want[b]);
  char *text = strdup(cu_text(s));
  if (getenv("KILN_TEST_PRINT_CUDA")) /* to look at what a test emits */
    puts(strstr(text, "end of the prelude"));
  emu_free(&e);
  cu_free(s);
  return text;
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

enum { NE = 37 };

/* y = max(a, b) * b - min(a, b) + exp(a) / (|b| + 1) + pow, log, sqrt, ...;
 * z = isnan(a) + (a < b) + (a != b) + (a && b) */
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
  KExpr *fns = ADD(ke_unary(k, KO_LOG, av), ke_unary(k, KO_SQRT, bv));
  fns = ADD(fns, ADD(ke_unary(k, KO_SIN, av), ke_unary(k, KO_COS, bv)));
  fns = ADD(fns, ADD(ke_unary(k, KO_LOG1P, av), ke_unary(k, KO_FLOOR, bv)));
  fns = ADD(fns, ADD(BIN(KO_POW, av, bv), ke_unary(k, KO_NEG, ke_unary(k, KO_TANH, av))));
  fns = ADD(fns, ADD(ke_unary(k, KO_ERF, bv), ke_fma(k, av, bv, F(-0.0))));
  ks_add(k, l, ks_store(k, y, V(i), ADD(e, MUL(fns, F(INFINITY)))));
  KExpr *zi = ADD(ke_unary(k, KO_ISNAN, av), BIN(KO_LT, av, bv));
  zi = ADD(zi, ADD(BIN(KO_NE, av, bv), BIN(KO_AND, av, bv)));
  ks_add(k, l, ks_store(k, z, V(i), ADD(zi, BIN(KO_OR, BIN(KO_GE, av, F(0)), BIN(KO_EQ, av, bv)))));
  float A[NE], B[NE], Y[NE];
  int32_t Z[NE];
  uint64_t s = 1;
  for (int t = 0; t < NE; t++)
    A[t] = frand(&s, -3, 3), B[t] = frand(&s, -3, 3);
  A[3] = NAN, B[4] = NAN, A[5] = B[5] = NAN, A[6] = INFINITY, B[7] = -INFINITY, A[8] = -0.0f;
  A[9] = 0.0f, B[9] = -0.0f, A[10] = B[10] = 1.5f;
  free(run1(k, (void *[]){A, B, Y, Z}));
  assert_true(isnan(Y[3]) && isnan(Y[5]));
  assert_int_equal(Z[10], 0 + 0 + 0 + 1 + 1);
}

/* exp, tanh and erf (the prelude's, printed from ir/kmath.h) give kir_eval's
 * bits over [-110, 110], NaN, infinities and exp's flush below -87.33 included. */
static void kmath(void **state) {
  enum { NK = 40009 };
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
  float special[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 88.72f, 88.73f, -87.5f, -103.9f,
                     -0.625f, 0.625f, 0.9f, -0.9f, 4.0f, 1e-30f, -1e-30f, -104.5f, 89.5f};
  for (int t = 0; t < countof(special); t++)
    X[t] = special[t];
  char *text = run1(k, (void *[]){X, E, T, R});
  assert_non_null(strstr(text, "kiln_exp(x[i0])"));
  free(text);
  for (int t = 0; t < NK; t++) /* and they are kmath.c's */
    assert_true(memcmp(&E[t], &(float){km_expf(X[t])}, 4) == 0 &&
                memcmp(&R[t], &(float){km_erff(X[t])}, 4) == 0);
}

/* out[r] = sum_c x[r*C + c] in order: in one thread (a serial outer loop),
 * and per row in a parallel loop; cancellation shows any reordering. */
static void reduction(void **state) {
  enum { R = 5, C = 1001 };
  static float X[R * C];
  float O[R];
  uint64_t s = 7;
  for (int t = 0; t < R * C; t++)
    X[t] = frand(&s, -1, 1) * (t % 3 ? 1.0f : 1e4f);
  for (int kind = 0; kind < 3; kind++) {
    static const char *const names[] = {"rowsum", "rowsum_vec", "rowsum_par"};
    Kernel *k = kir_new(ar, names[kind], NULL);
    int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), out = kir_buf(k, "out", KT_F32, R, KB_OUT, 1);
    int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), acc = kir_var(k, "acc", KT_F32);
    KStmt *lr = ks_loop(k, r, I(R), kind == 2 ? KL_PARALLEL : KL_SERIAL);
    KStmt *lc = ks_loop(k, c, I(C), kind == 1 ? KL_VECTOR : KL_REDUCE);
    ks_add(k, k->body, lr);
    ks_add(k, lr, ks_decl(k, acc, F(0)));
    ks_add(k, lr, lc);
    ks_add(k, lc, ks_set(k, acc, ADD(V(acc), LD(x, ADD(MUL(V(r), I(C)), V(c))))));
    ks_add(k, lr, ks_store(k, out, V(r), V(acc)));
    char *text = run1(k, (void *[]){X, O});
    /* a serial outer loop runs on one thread; a parallel one grid-strides */
    assert_true((strstr(text, "one thread runs this part") != NULL) == (kind < 2));
    free(text);
  }
}

/* floordiv/mod with either sign, i32 division by a variable that is
 * sometimes 0, a transpose through floordiv/mod of a flat index. */
static void nested_index(void **state) {
  enum { H = 6, W = 9 };
  Kernel *k = kir_new(ar, "nest", NULL);
  int x = kir_buf(k, "x", KT_F32, H * W, KB_IN, 0), y = kir_buf(k, "y", KT_F32, H * W, KB_OUT, 1);
  int q = kir_buf(k, "q", KT_I32, 6 * H * W, KB_OUT, 2);
  int i = kir_var(k, "i", KT_IDX), h = kir_var(k, "h", KT_IDX), w = kir_var(k, "w", KT_IDX);
  KStmt *li = ks_loop(k, i, I(H * W), KL_PARALLEL);
  ks_add(k, k->body, li);
  KExpr *src = ADD(MUL(BIN(KO_MOD, V(i), I(H)), I(W)), BIN(KO_FLOORDIV, V(i), I(H)));
  ks_add(k, li, ks_store(k, y, V(i), ADD(LD(x, src), ke_cast(k, KT_F32, V(i)))));
  KStmt *lh = ks_loop(k, h, I(H), KL_PARALLEL), *lw = ks_loop(k, w, I(W), KL_VECTOR);
  ks_add(k, k->body, lh);
  ks_add(k, lh, lw);
  KExpr *v = BIN(KO_SUB, ADD(MUL(V(h), I(W)), V(w)), I(27)); /* -27 .. 26 */
  KExpr *at = MUL(ADD(MUL(V(h), I(W)), V(w)), I(6));
  KExpr *vi = ke_cast(k, KT_I32, v), *wi = ke_cast(k, KT_I32, BIN(KO_SUB, V(w), I(4)));
  KExpr *vals[] = {BIN(KO_FLOORDIV, v, I(4)), BIN(KO_MOD, v, I(4)),
                   ke_cast(k, KT_IDX, BIN(KO_DIV, vi, wi)), BIN(KO_MOD, v, BIN(KO_SUB, V(w), I(9))),
                   ke_cast(k, KT_IDX, BIN(KO_FLOORDIV, vi, wi)),
                   ke_cast(k, KT_IDX, BIN(KO_MOD, vi, BIN(KO_SUB, wi, ke_int(k, KT_I32, 2))))};
  for (int e = 0; e < 6; e++)
    ks_add(k, lw, ks_store(k, q, ADD(at, I(e)), ke_cast(k, KT_I32, vals[e])));
  float X[H * W], Y[H * W];
  int32_t Q[6 * H * W];
  for (int t = 0; t < H * W; t++)
    X[t] = (float)(100 + t);
  char *text = run1(k, (void *[]){X, Y, Q});
  assert_non_null(strstr(text, "nest_part1")); /* two parallel loops: two launches */
  free(text);
  for (int t = 0; t < H * W; t++) {
    assert_true(Y[t] == X[(t % H) * W + t / H] + (float)t);
    int vv = t - 27, fd = (int)floor(vv / 4.0), d = t % W - 4;
    assert_int_equal(Q[6 * t], fd);
    assert_int_equal(Q[6 * t + 1], vv - 4 * fd);
    assert_int_equal(Q[6 * t + 2], d ? vv / d : 0);
  }
}

/* y[i] = i >= 1 && i < N-1 ? x[i-1] + x[i+1] : -1 with x between two
 * inaccessible pages: ?: loads only on the branch it takes. */
static void select_guarded(void **state) {
  enum { N = 1024 };
  long pg = sysconf(_SC_PAGESIZE);
  assert_true(pg >= N * 4);
  char *m = mmap(NULL, (size_t)(3 * pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  assert_true(m != MAP_FAILED);
  assert_true(!mprotect(m, (size_t)pg, PROT_NONE) && !mprotect(m + 2 * pg, (size_t)pg, PROT_NONE));
  float *X = (float *)(m + pg), Y[N];
  Kernel *k = kir_new(ar, "sel", NULL);
  int x = kir_buf(k, "x", KT_F32, N, KB_IN, 0), y = kir_buf(k, "y", KT_F32, N, KB_OUT, 1);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *in = BIN(KO_AND, BIN(KO_GE, V(i), I(1)), BIN(KO_LT, V(i), I(N - 1)));
  KExpr *sum = ADD(LD(x, BIN(KO_SUB, V(i), I(1))), LD(x, ADD(V(i), I(1))));
  ks_add(k, l, ks_store(k, y, V(i), ke_select(k, in, sum, F(-1))));
  for (int t = 0; t < N; t++)
    X[t] = (float)(t % 7) - 3;
  free(run1(k, (void *[]){X, Y}));
  assert_true(Y[0] == -1 && Y[5] == X[4] + X[6]);
  munmap(m, (size_t)(3 * pg));
}

/* f32 -> i32 and -> idx saturate with NaN -> 0; i32 -> f32; idx -> i32 wraps. */
static void casts(void **state) {
  enum { N = 12 };
  float X[N] = {0.5f, -0.5f, 2.7f, -2.7f, 3e9f, -3e9f, NAN, INFINITY, -INFINITY, 2147483520.0f,
                -2147483648.0f, 1e30f};
  int32_t Q[N], W[N], Iv[N] = {0, 1, -1, 7, INT32_MAX, INT32_MIN, 16777217, -5, 3, 4, 5, 6};
  float Fv[N], G[N];
  Kernel *k = kir_new(ar, "casts", NULL);
  int x = kir_buf(k, "x", KT_F32, N, KB_IN, 0), iv = kir_buf(k, "iv", KT_I32, N, KB_IN, 1);
  int q = kir_buf(k, "q", KT_I32, N, KB_OUT, 2), f = kir_buf(k, "f", KT_F32, N, KB_OUT, 3);
  int g = kir_buf(k, "g", KT_F32, N, KB_OUT, 4), w = kir_buf(k, "w", KT_I32, N, KB_OUT, 5);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_SERIAL);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_store(k, q, V(i), ke_cast(k, KT_I32, LD(x, V(i)))));
  ks_add(k, l, ks_store(k, f, V(i), ke_cast(k, KT_F32, LD(iv, V(i)))));
  ks_add(k, l, ks_store(k, g, V(i), ke_cast(k, KT_F32, ke_cast(k, KT_IDX, LD(x, V(i))))));
  KExpr *big = MUL(ke_cast(k, KT_IDX, LD(iv, V(i))), I(3000000000LL)); /* wraps to i32 */
  ks_add(k, l, ks_store(k, w, V(i), ke_cast(k, KT_I32, big)));
  free(run1(k, (void *[]){X, Iv, Q, Fv, G, W}));
  int32_t want[N] = {0, 0, 2, -2, INT32_MAX, INT32_MIN, 0, INT32_MAX, INT32_MIN, 2147483520,
                     INT32_MIN, INT32_MAX};
  assert_memory_equal(Q, want, sizeof want);
}

/* Integer + - * and negation that overflow wrap, in i32 (data) and in
 * index arithmetic (a constant near 2^63): the prelude's helpers. */
static void wrapping(void **state) {
  enum { N = 16 };
  int32_t A[N], B[N], Z[N];
  int64_t Y[N];
  for (int t = 0; t < N; t++)
    A[t] = INT32_MAX - t * 1000, B[t] = t * 123457 - 7;
  Kernel *k = kir_new(ar, "wrap", NULL);
  int a = kir_buf(k, "a", KT_I32, N, KB_IN, 0), b = kir_buf(k, "b", KT_I32, N, KB_IN, 1);
  int z = kir_buf(k, "z", KT_I32, N, KB_OUT, 2), y = kir_buf(k, "y", KT_IDX, N, KB_OUT, 3);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_PARALLEL);
  ks_add(k, k->body, l);
  KExpr *av = LD(a, V(i)), *bv = LD(b, V(i));
  KExpr *e = BIN(KO_SUB, MUL(av, bv), ke_unary(k, KO_NEG, ADD(av, bv)));
  e = ADD(e, BIN(KO_MAX, ke_unary(k, KO_ABS, bv), ke_int(k, KT_I32, INT32_MIN)));
  ks_add(k, l, ks_store(k, z, V(i), e));
  KExpr *huge = ADD(MUL(V(i), I(INT64_C(0x7000000000000000))), I(INT64_MAX - 5));
  ks_add(k, l, ks_store(k, y, V(i), ke_unary(k, KO_NEG, ADD(huge, V(i)))));
  char *text = run1(k, (void *[]){A, B, Z, Y});
  assert_non_null(strstr(text, "kiln_mul(a[i0], b[i0])"));
  assert_non_null(strstr(text, "kiln_mul(i0, 8070450532247928832LL)"));
  assert_non_null(strstr(text, "a[i0]")); /* the index itself is plain C */
  free(text);
}

/* y[r, c] = x[r, c] * scale + r + rowsum(x[r]): scale an outer local read
 * from a one-element input (its definition runs in every thread of the
 * launch, as a fused kernel's one-element values do), the inner parallel
 * loop serial in each row's thread.  Then scale read from x itself, which
 * has y's size and type (in-place planning could make them one buffer):
 * one thread computes it, in a part of its own. */
static void parallel_prefix(void **state) {
  enum { R = 300, C = 257 };
  float *X = malloc(sizeof(float) * R * C), *Y = malloc(sizeof(float) * R * C), S = 0.75f;
  uint64_t s = 3;
  for (int t = 0; t < R * C; t++)
    X[t] = frand(&s, -1, 1);
  for (int own = 0; own < 2; own++) {
  Kernel *k = kir_new(ar, own ? "par_x" : "par", NULL);
  int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), y = kir_buf(k, "y", KT_F32, R * C, KB_OUT, 1);
  int sc = kir_buf(k, "sc", KT_F32, 1, KB_IN, 2);
  int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), c2 = kir_var(k, "c", KT_IDX);
  int scale = kir_var(k, "scale", KT_F32), acc = kir_var(k, "acc", KT_F32);
  ks_add(k, k->body, ks_decl(k, scale, MUL(F(0.5), own ? LD(x, I(7)) : LD(sc, I(0)))));
  KStmt *lr = ks_loop(k, r, I(R), KL_PARALLEL);
  ks_add(k, k->body, lr);
  ks_add(k, lr, ks_decl(k, acc, F(0)));
  KStmt *lc = ks_loop(k, c, I(C), KL_REDUCE);
  ks_add(k, lr, lc);
  ks_add(k, lc, ks_set(k, acc, ADD(V(acc), LD(x, ADD(MUL(V(r), I(C)), V(c))))));
  KStmt *lc2 = ks_loop(k, c2, I(C), KL_PARALLEL);
  ks_add(k, lr, lc2);
  KExpr *at2 = ADD(MUL(V(r), I(C)), V(c2));
  KExpr *e = ADD(MUL(LD(x, at2), V(scale)), ke_cast(k, KT_F32, V(r)));
  ks_add(k, lc2, ks_store(k, y, at2, ADD(e, V(acc))));
  char *text = run1(k, (void *[]){X, Y, &S});
  if (!own) {
    assert_non_null(strstr(text, "extern \"C\" __global__ void par(")); /* one launch */
    assert_null(strstr(text, "par_part"));
  } else {
    assert_non_null(strstr(text, "kiln_g_par_x_scale3 = 0.5f * x[7LL];"));
    assert_non_null(strstr(text, "par_x_part1("));
  }
  free(text);
  }
  free(X), free(Y);
}

/* A kernel cut in three parts: a sum in one thread, a parallel loop that
 * reads it (a __device__ variable between the launches), then a serial
 * tail reading what the loop wrote and the sum. */
static void parts(void **state) {
  enum { N = 1000 };
  Kernel *k = kir_new(ar, "parts", NULL);
  int x = kir_buf(k, "x", KT_F32, N, KB_IN, 0), y = kir_buf(k, "y", KT_F32, N, KB_OUT, 1);
  int z = kir_buf(k, "z", KT_F32, 2, KB_OUT, 2);
  int sv = kir_var(k, "s", KT_F32), i = kir_var(k, "i", KT_IDX), j = kir_var(k, "j", KT_IDX);
  int mv = kir_var(k, "m", KT_F32);
  ks_add(k, k->body, ks_decl(k, sv, F(0)));
  KStmt *li = ks_loop(k, i, I(N), KL_REDUCE);
  ks_add(k, k->body, li);
  ks_add(k, li, ks_set(k, sv, ADD(V(sv), LD(x, V(i)))));
  KStmt *lj = ks_loop(k, j, I(N), KL_VECTOR);
  ks_add(k, k->body, lj);
  ks_add(k, lj, ks_store(k, y, V(j), BIN(KO_DIV, LD(x, V(j)), V(sv))));
  ks_add(k, k->body, ks_decl(k, mv, MUL(LD(y, I(N - 1)), F(2))));
  ks_add(k, k->body, ks_store(k, z, I(0), ADD(V(mv), V(sv))));
  ks_add(k, k->body, ks_store(k, z, I(1), V(mv)));
  float X[N], Y[N], Z[2];
  uint64_t s = 5;
  for (int t = 0; t < N; t++)
    X[t] = frand(&s, 0, 1);
  char *text = run1(k, (void *[]){X, Y, Z});
  assert_non_null(strstr(text, "static __device__ float kiln_g_parts_s0;"));
  assert_non_null(strstr(text, "parts_part2("));
  assert_null(strstr(text, "parts_part3("));
  free(text);
}

/* parallel r { serial c { y[r, c] = 2 x[r, c] } } flattens into one
 * grid-stride space; a running sum along c (each c reads y[c - 1]) does not. */
static void flatten(void **state) {
  enum { R = 7, C = 45 };
  float X[R * C], Y[R * C];
  for (int t = 0; t < R * C; t++)
    X[t] = (float)t * 0.25f;
  for (int dep = 0; dep < 2; dep++) {
    Kernel *k = kir_new(ar, dep ? "scan" : "twice", NULL);
    int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), y = kir_buf(k, "y", KT_F32, R * C, KB_OUT, 1);
    int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), at = kir_var(k, "at", KT_IDX);
    KStmt *lr = ks_loop(k, r, I(R), KL_PARALLEL), *lc = ks_loop(k, c, I(C), KL_SERIAL);
    ks_add(k, k->body, lr);
    ks_add(k, lr, lc);
    ks_add(k, lc, ks_decl(k, at, ADD(MUL(V(r), I(C)), V(c))));
    KExpr *v = MUL(LD(x, V(at)), F(2));
    if (dep) /* y[at] = c > 0 ? y[at - 1] + x[at] : x[at] */
      v = ke_select(k, BIN(KO_GT, V(c), I(0)),
                    ADD(LD(y, BIN(KO_SUB, V(at), I(1))), LD(x, V(at))), LD(x, V(at)));
    ks_add(k, lc, ks_store(k, y, V(at), v));
    char *text = run1(k, (void *[]){X, Y});
    assert_true((strstr(text, "kiln_i = ") != NULL) == !dep);
    free(text);
  }
}

/* out[c] = sum over r of x[r, c] as `for r { for c (vector) { out[c] +=
 * x[r, c] } }` (a bias gradient): one thread per c, each adding its rows
 * in order; but out[c + r] += x[r, c], where two threads would add to one
 * element, stays on one thread. */
static void interchange(void **state) {
  enum { R = 50, C = 33 };
  static float X[R * C], O[R + C];
  uint64_t s = 9;
  for (int t = 0; t < R * C; t++)
    X[t] = frand(&s, -1, 1) * (t % 3 ? 1.0f : 1e4f);
  for (int shifted = 0; shifted < 2; shifted++) {
    Kernel *k = kir_new(ar, shifted ? "colsum_shifted" : "colsum", NULL);
    int x = kir_buf(k, "x", KT_F32, R * C, KB_IN, 0), o = kir_buf(k, "o", KT_F32, R + C, KB_OUT, 1);
    int r = kir_var(k, "r", KT_IDX), c = kir_var(k, "c", KT_IDX), c0 = kir_var(k, "c", KT_IDX);
    int rb = kir_var(k, "rb", KT_IDX);
    KStmt *l0 = ks_loop(k, c0, I(R + C), KL_VECTOR);
    ks_add(k, k->body, l0);
    ks_add(k, l0, ks_store(k, o, V(c0), F(0)));
    KStmt *lr = ks_loop(k, r, I(R), KL_SERIAL), *lc = ks_loop(k, c, I(C), KL_VECTOR);
    ks_add(k, k->body, lr);
    ks_add(k, lr, ks_decl(k, rb, MUL(V(r), I(C))));
    ks_add(k, lr, lc);
    KExpr *at = shifted ? ADD(V(c), V(r)) : V(c);
    ks_add(k, lc, ks_store(k, o, at, ADD(LD(o, at), LD(x, ADD(V(rb), V(c))))));
    char *text = run1(k, (void *[]){X, O});
    assert_true((strstr(text, "is the thread's") != NULL) == !shifted);
    assert_true((strstr(text, "one thread runs this part") != NULL) == shifted);
    free(text);
  }
}

/* bits[i] = rng_hash(seed, step * N + i) >> 11, seed above 2^63; then
 * KO_HASH64 with the operands swapped, and from i32 operands. */
static void hash(void **state) {
  enum { N = 19 };
  const uint64_t seed = 0xfedcba9876543210ull;
  Kernel *k = kir_new(ar, "hash", NULL);
  int st = kir_buf(k, "step", KT_IDX, 1, KB_IN, KBUF_STEP);
  int o = kir_buf(k, "bits", KT_IDX, 3 * N, KB_OUT, 0);
  int i = kir_var(k, "i", KT_IDX);
  KStmt *l = ks_loop(k, i, I(N), KL_VECTOR);
  ks_add(k, k->body, l);
  KExpr *ctr = ADD(MUL(LD(st, I(0)), I(N)), V(i));
  ks_add(k, l, ks_store(k, o, V(i), BIN(KO_HASH, I((int64_t)seed), ctr)));
  ks_add(k, l, ks_store(k, o, ADD(V(i), I(N)), BIN(KO_HASH64, ctr, I((int64_t)seed))));
  KExpr *narrow = BIN(KO_HASH64, ke_cast(k, KT_I32, V(i)), ke_int(k, KT_I32, -3));
  ks_add(k, l, ks_store(k, o, ADD(V(i), I(2 * N)), ke_cast(k, KT_IDX, narrow)));
  int64_t step = 41, bits[3 * N];
  free(run1(k, (void *[]){&step, bits}));
  for (int u = 0; u < N; u++) {
    assert_true((uint64_t)bits[u] == rt_rng_hash(seed, (uint64_t)(step * N + u)) >> 11);
    assert_true((uint64_t)bits[N + u] == rt_rng_hash((uint64_t)(step * N + u), seed));
  }
}

/* Kernels the emitter refuses, with a message. */
static void errors(void **state) {
  char err[512];
  CuSrc *s = cu_new("x");
  Kernel *k = kir_new(ar, "bad", NULL);
  int y = kir_buf(k, "y", KT_F32, 4, KB_OUT, 0), u = kir_var(k, "u", KT_F32);
  ks_add(k, k->body, ks_store(k, y, I(0), V(u))); /* u undeclared */
  assert_false(cu_kernel(s, k, err, sizeof err));
  assert_non_null(strstr(err, "invalid kernel"));
  k = kir_new(ar, "racy", NULL);
  int i = kir_var(k, "i", KT_IDX), acc = kir_var(k, "acc", KT_F32);
  ks_add(k, k->body, ks_decl(k, acc, F(0)));
  KStmt *l = ks_loop(k, i, I(100), KL_PARALLEL);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_set(k, acc, ADD(V(acc), F(1))));
  assert_false(cu_kernel(s, k, err, sizeof err));
  assert_non_null(strstr(err, "assigns acc"));
  k = kir_new(ar, "leaky", NULL); /* a local of a parallel loop read after it */
  y = kir_buf(k, "y", KT_F32, 4, KB_OUT, 0);
  i = kir_var(k, "i", KT_IDX);
  int t = kir_var(k, "t", KT_F32);
  l = ks_loop(k, i, I(4), KL_PARALLEL);
  ks_add(k, k->body, l);
  ks_add(k, l, ks_decl(k, t, ke_cast(k, KT_F32, V(i))));
  ks_add(k, l, ks_store(k, y, V(i), V(t)));
  ks_add(k, k->body, ks_store(k, y, I(0), V(t)));
  assert_false(cu_kernel(s, k, err, sizeof err));
  assert_non_null(strstr(err, "declared inside a parallel loop"));
  k = kir_new(ar, "ok", NULL);
  kir_buf(k, "y", KT_F32, 4, KB_OUT, 0);
  assert_true(cu_kernel(s, k, err, sizeof err));
  assert_false(cu_kernel(s, k, err, sizeof err));
  assert_non_null(strstr(err, "already has a kernel named ok"));
  assert_int_equal(cu_n_kernels(s), 1);
  cu_free(s);
}

/* --- tiers 2 and 3: program steps ------------------------------------------------------ */

/* One step to check: its graph, plan, calls and launches. */
typedef struct Step {
  Compiled c;
  char what[160];
  const char *fill;
  Plan plan;
  CgCall *calls;
  int n_calls;
  RtCuLaunch *ls;
  int n_ls;
  void **ext; /* [0] the step counter, [1 + i] parameter i's data */
  int64_t counter;
} Step;

static bool fill_range(const char *spec, const char *name, double *lo, double *hi) {
  size_t nl = strlen(name);
  for (const char *s = spec; s && *s; s += strcspn(s, " ")) {
    s += strspn(s, " ");
    if (strncmp(s, name, nl) == 0 && s[nl] == '=')
      return sscanf(s + nl + 1, "%lf:%lf", lo, hi) == 2;
  }
  return false;
}

static void fill_random(const Node *v, void *d, const char *fill, uint64_t *s) {
  double lo = v->dtype == DT_F32 ? -2 : 0, hi = v->dtype == DT_F32 ? 2 : 3;
  if (v->op == OP_PARAM)
    lo = -0.5, hi = 0.5;
  size_t nl = strlen(v->name);
  if (nl > 11 && strcmp(v->name + nl - 11, ".exp_avg_sq") == 0)
    lo = 0.01, hi = 0.5; /* Adam's second moments: positive */
  fill_range(fill, v->name, &lo, &hi);
  if (strcmp(v->name, "train.lr") == 0 || strcmp(v->name, "train.step") == 0)
    lo = hi = strcmp(v->name, "train.lr") == 0 ? 0.01 : 3;
  for (int64_t j = 0; j < shape_numel(&v->shape); j++) {
    float r = frand(s, (float)lo, (float)hi);
    if (v->dtype == DT_F32)
      ((float *)d)[j] = r;
    else
      ((int32_t *)d)[j] = (int32_t)floorf(r);
  }
}

static bool covered[OP_COUNT];

/* Plans st's graph for roots and makes its calls (kernel names prefixed
 * with `tag`, unique in the shared module) and parameter buffers. */
static void step_prepare(Step *st, Node *const *roots, int n_roots, const PlanOpts *po,
                         const char *tag, CuSrc *s) {
  Graph *g = st->c.g;
  Arena *a = st->c.a;
  plan_build(g, roots, n_roots, po, &st->plan);
  int *slot = arena_alloc(a, sizeof(int) * (size_t)(g->n_nodes + 1));
  st->ext = arena_alloc(a, sizeof(void *) * (size_t)(g->n_nodes + 2));
  st->ext[0] = &st->counter;
  st->counter = 5;
  uint64_t seed = 11;
  int np = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op != OP_PARAM || st->plan.time[i] < 0)
      continue;
    slot[i] = 1 + np;
    void *d = arena_alloc(a, (size_t)node_bytes(v) + 4);
    const char *dot = strrchr(v->name, '.');
    bool state = !v->trainable && dot && strncmp(dot, ".exp_avg", 8) == 0;
    if (st->fill || state)
      fill_random(v, d, st->fill, &seed);
    else
      param_init_fill(v, 11, d);
    st->ext[1 + np++] = d;
  }
  st->calls = arena_alloc(a, sizeof(CgCall) * (size_t)(st->plan.n_order + 1));
  char err[1024];
  if (!program_calls(g, &st->plan, slot, st->calls, &st->n_calls, err, sizeof err))
    fail_msg("%s: %s", st->what, err);
  for (int i = 0; i < st->n_calls; i++) {
    Kernel *k = (Kernel *)st->calls[i].k;
    k->name = arena_fmt(a, "%s_%s", tag, k->name);
    covered[k->node->op] = true;
    for (int m = 0; m < k->n_members; m++)
      covered[k->members[m]->op] = true;
  }
  if (!cu_step(s, st->calls, st->n_calls, a, &st->ls, &st->n_ls, err, sizeof err))
    fail_msg("%s: %s", st->what, err);
}

/* Runs the step in kir_eval and on the emulator (both schedules) from the
 * same arena (NaN everywhere but the inputs); every byte must agree. */
static void step_check(Step *st, Emu *e) {
  Graph *g = st->c.g;
  size_t bytes = (size_t)st->plan.arena + 64;
  char *init = malloc(bytes), *want = malloc(bytes), *got = malloc(bytes);
  assert_true(init && want && got);
  memset(init, 0xff, bytes);
  uint64_t seed = 17;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op == OP_INPUT && st->plan.time[i] >= 0 && st->plan.offset[i] >= 0)
      fill_random(v, init + st->plan.offset[i], st->fill, &seed);
  }
  memcpy(want, init, bytes);
  kir_step(st->calls, st->n_calls, want, st->ext);
  for (int mode = 0; mode < 2; mode++) {
    memcpy(got, init, bytes);
    emu_step(e, st->ls, st->n_ls, got, st->ext, (EmuMode)mode);
    long long at = first_diff(got, want, bytes, 1);
    if (at < 0)
      continue;
    const char *who = "?";
    for (int i = 0; i < g->n_nodes; i++)
      if (st->plan.offset[i] >= 0 && st->plan.offset[i] <= at &&
          at < st->plan.offset[i] + st->plan.size[i])
        who = g->nodes[i]->name;
    fail_msg("%s (%s schedule): arena byte %lld (%s) differs from kir_eval's", st->what,
             mode ? "reversed" : "strided", at, who);
  }
  free(init), free(want), free(got);
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

/* Each case (with grads: its graph and its backward pass, every value a
 * root; without: y, the only root), unfused (every value its own bytes:
 * each kernel's output survives the step, so the arena check sees all of
 * them) and fused, in one module; n[i] gets how many times the module's
 * source has count[i] in it. */
static void check_cases(const OpCase *cases, int nc, bool grads, const char *module,
                        const char *const *count, int *n, int n_count) {
  Step *steps = calloc((size_t)(2 * nc), sizeof *steps);
  assert_non_null(steps);
  CuSrc *s = cu_new(module);
  for (int i = 0; i < 2 * nc; i++) {
    const OpCase *oc = &cases[i / 2];
    Step *st = &steps[i];
    memset(st, 0, sizeof *st);
    char text[1024];
    snprintf(text, sizeof text, "model m() {\n  %s\n}\n", oc->body);
    for (char *p = text; *p; p++)
      *p = *p == ';' ? '\n' : *p;
    st->c = compile_opts(text, true, NULL, 0);
    MUST_COMPILE(st->c);
    Graph *g = st->c.g;
    if (grads && graph_find_value(g, "y")->dtype == DT_F32 &&
        diag_protect(&st->c.d, autodiff_run, &st->c))
      fail_msg("%s: autodiff: %s", oc->body, st->c.d.msg);
    snprintf(st->what, sizeof st->what, "%.120s (%s)", oc->body, i % 2 ? "fused" : "unfused");
    st->fill = oc->fill ? oc->fill : "";
    PlanOpts po = i % 2 ? (PlanOpts){0} : (PlanOpts){true, true, false, FUSE_NONE};
    char tag[16];
    snprintf(tag, sizeof tag, "c%d", i);
    Node *y = graph_find_value(g, "y");
    if (grads) /* every value a root: kept, and checked */
      step_prepare(st, g->nodes, g->n_nodes, &po, tag, s);
    else /* y alone: its producers fuse as in a real program */
      step_prepare(st, &y, 1, &po, tag, s);
  }
  Emu e;
  emu_build(&e, s);
  int kernels = cu_n_kernels(s);
  double t0 = emu_now_ms();
  for (int i = 0; i < 2 * nc; i++) {
    step_check(&steps[i], &e);
    compiled_free(&steps[i].c);
  }
  print_message("  %d cases, %d kernels: host compile %.0f ms, run %.0f ms\n", 2 * nc, kernels,
                e.compile_ms, emu_now_ms() - t0);
  for (int i = 0; i < n_count; i++) {
    n[i] = 0;
    for (const char *p = cu_text(s); (p = strstr(p, count[i])); p++)
      n[i]++;
  }
  emu_free(&e);
  cu_free(s);
  free(steps);
}

static void every_op(void **state) {
  check_cases(op_cases, countof(op_cases), true, "ops", NULL, NULL, 0);
  for (int op = 0; op < OP_COUNT; op++)
    if (op_info[op].lower && !covered[op])
      fail_msg("op %s has a lowering but no case computes it", op_name((Op)op));
}

/* Matmuls and convolutions the tiled GEMM (codegen/cuda/cuda_gemm.c)
 * computes: shapes that are not multiples of its tiles (1 x 1 x 1, 33 x
 * 17 x 65, several tiles with ragged edges), transposed operands, broadcast
 * batch dimensions, fused epilogues, their backward passes (more
 * transposed matmuls), and convolutions with stride, padding, dilation,
 * groups, 1 x 1 kernels and infinite weights; every element must be
 * kir_eval's bits, so a tile edge read wrongly, a K tile added twice or
 * out of order, a padding tap added, or a missing barrier shows.  Each
 * case's matmul or convolution must have taken the tiled path. */
static void gemm(void **state) {
  static const OpCase cases[] = {
      {"input a: f32[1, 1]; input b: f32[1, 1]; y = a @ b", NULL},
      {"input a: f32[33, 17]; input b: f32[17, 65]; y = a @ b", NULL},
      {"input a: f32[17, 33]; input b: f32[17, 65]; y = matmul(a, b, transpose_a=true)", NULL},
      {"input a: f32[33, 17]; input b: f32[65, 17]; y = matmul(a, b, transpose_b=true)", NULL},
      {"input a: f32[17, 33]; input b: f32[65, 17]; "
       "y = matmul(a, b, transpose_a=true, transpose_b=true)", NULL},
      {"input a: f32[130, 47]; input b: f32[47, 129]; y = a @ b", "a=-3:3 b=-3:3"},
      {"input a: f32[2, 1, 70, 19]; input b: f32[3, 19, 66]; y = a @ b", NULL},
      {"input x: f32[5, 70]; input w: f32[70, 33]; input c: f32[33]; "
       "y = relu(x @ w + c) * 2 - sigmoid(x @ w)", NULL},
      {"input x: f32[1, 300]; input w: f32[300, 7]; y = tanh(x @ w)", NULL},
      {"input x: f32[70, 20]; input w: f32[20, 66]; y = relu((x @ w)[1:, ::2]) * 2", NULL},
      {"input x: f32[2, 4, 9, 11]; input w: f32[6, 2, 3, 3]; "
       "y = op.conv2d(x, w, stride=2, pad=1, groups=2)", NULL},
      {"input x: f32[1, 3, 13, 10]; input w: f32[70, 3, 3, 2]; "
       "y = relu(op.conv2d(x, w, pad=2, dilation=2)) + 1", NULL},
      {"input x: f32[3, 33, 5, 7]; input w: f32[17, 33, 1, 1]; y = op.conv2d(x, w)", NULL},
      /* infinite weights: a padding tap must add nothing (0 * inf would be NaN) */
      {"input x: f32[1, 2, 6, 7]; input w: f32[3, 2, 3, 3]; "
       "y = op.conv2d(x, w * 1e30 * 1e30, pad=1)", "x=1:2 w=1:2"},
  };
  static const char *const count[] = {"(cuda_gemm.c)", "the epilogue at this element"};
  int n[2], ne;
  check_cases(cases, countof(cases), true, "gemm", count, n, 1);
  assert_true(n[0] >= countof(cases)); /* each case's matmul at least (twins merge) */
  /* without the backward pass, the epilogues fuse: applied in the tiles */
  check_cases(cases, countof(cases), false, "gemm_fwd", count + 1, &ne, 1);
  assert_true(ne >= 3);
  print_message("  %d tiled GEMM functions; %d with their epilogue in the tiles\n", n[0], ne);
}

/* Sums and means of their own kernels (codegen/cuda/cuda_reduce.c), in
 * the Kernel IR's order, kir_eval's bits:
 *   - SUM_LANES, a half-warp per output, the Kernel IR's 16 partial sums
 *     and its tree through shuffles: rows of 64 (the fewest elements it
 *     takes), 65 (one partial gets an extra element), a ragged count of
 *     rows, a whole tensor; and runs with outer reduced axes, as a
 *     batchnorm's channel sums over axes 0, 2, 3 (runs of 42: ragged
 *     partials in each run; kept axes in the middle and at both ends);
 *   - SUM_RUNS, a thread per output and its chain in a register: a bias
 *     gradient's sum over leading axes, kept axes of 24 and 7 x 5.
 * Each case's reduction must take its path (the counted comments). */
static void warp_sums(void **state) {
  static const OpCase cases[] = {
      {"input x: f32[3, 64]; y = sum(x, axis=1)", "x=-100:100"},
      {"input x: f32[17, 65]; y = mean(x, axis=1) + sum(x, axis=1)", "x=-100:100"},
      {"input x: f32[7, 5, 33]; y = sum(x, axis=[1, 2])", "x=-1:1000"},
      {"input x: f32[40, 50]; y = sum(x) + mean(x)", "x=-1e3:1e4"},
      {"input x: f32[3, 5, 6, 7]; y = mean(x, axis=[0, 2, 3]) + sum(x, axis=[0, 2, 3])",
       "x=-100:100"},
      {"input x: f32[4, 3, 2, 40]; y = sum(x, axis=[1, 3])", "x=-1:1000"},
      {"input x: f32[300, 24]; y = sum(x, axis=0)", "x=-100:100"},
      {"input x: f32[9, 7, 5]; y = mean(x, axis=0)", "x=-100:100"},
  };
  static const char *const count[] = {"bit for bit (cuda_reduce.c)",
                                      "in a register (cuda_reduce.c)", "kiln_o0"};
  int n[3];
  check_cases(cases, countof(cases), true, "sums", count, n, 3);
  assert_true(n[0] >= 6);
  assert_true(n[1] >= 2);
  assert_true(n[2] >= 4);
  print_message("  %d shuffle reductions (%d with outer axes), %d in registers\n", n[0], n[2],
                n[1]);
}

/* The reassociated schedule (cu_reassociate): a block per row.  Its sums
 * are not kir_eval's bits, so they are checked against the exact sum (in
 * double) within 4 n eps sum |x| (the worst case of kir_eval's own order
 * is about n / 16 eps sum |x|, the tree's much less), and the schedule must
 * differ from kir_eval's somewhere on rows made to cancel (showing the
 * order really changed, so the bit-exact tests are not what checks it). */
static void reassociated_sums(void **state) {
  static const int64_t shapes[][2] = {{1, 100000}, {3, 4096}, {2, 5000}};
  int differ = 0;
  for (int c = 0; c < countof(shapes); c++) {
    int64_t rows = shapes[c][0], cnt = shapes[c][1];
    char text[256];
    snprintf(text, sizeof text,
             "model m() {\n  input x: f32[%lld, %lld]\n  output y = %s(x, axis=1)\n}\n",
             (long long)rows, (long long)cnt, c == 1 ? "mean" : "sum");
    Compiled cc = compile_opts(text, false, NULL, 0);
    MUST_COMPILE(cc);
    Kernel *k = lower_node(ar, graph_find_value(cc.g, "y"));
    CuSrc *s = cu_new("re");
    cu_reassociate(s, true);
    char err[512];
    if (!cu_kernel(s, k, err, sizeof err))
      fail_msg("cu_kernel: %s", err);
    assert_non_null(strstr(cu_text(s), "reassociated (cuda_reduce.c)"));
    float *x = malloc(sizeof(float) * (size_t)(rows * cnt)), *want = calloc((size_t)rows, 4),
          *got = calloc((size_t)rows, 4);
    uint64_t seed = 5;
    for (int64_t i = 0; i < rows * cnt; i++) /* large terms that cancel, small ones that don't */
      x[i] = i % 3 ? frand(&seed, -1, 1) : (i % 2 ? 1e4f : -1e4f) + frand(&seed, -1, 1);
    void *bufs[2] = {x, want};
    kir_eval(k, bufs);
    Emu e;
    emu_build(&e, s);
    const CuKernel *ck = cu_find(s, k->name);
    assert_int_equal(ck->n_launches, 1);
    for (int mode = 0; mode < 2; mode++) {
      bufs[1] = got;
      emu_launch(&e, ck->launches[0].fn, ck->launches[0].threads, bufs, (EmuMode)mode);
      for (int64_t r = 0; r < rows; r++) {
        double exact = 0, abs_sum = 0;
        for (int64_t i = 0; i < cnt; i++) {
          exact += x[r * cnt + i];
          abs_sum += fabs(x[r * cnt + i]);
        }
        double scale = c == 1 ? 1.0 / (double)cnt : 1.0;
        double tol = 4.0 * (double)cnt * 0x1p-24 * abs_sum * scale;
        if (fabs(got[r] - exact * scale) > tol || fabs(want[r] - exact * scale) > tol)
          fail_msg("row %lld of %lld: %.9g (reassociated), %.9g (kir_eval), %.9g exact",
                   (long long)r, (long long)cnt, got[r], want[r], exact * scale);
        differ += memcmp(&got[r], &want[r], 4) != 0;
      }
    }
    emu_free(&e);
    cu_free(s);
    free(x), free(want), free(got);
    compiled_free(&cc);
  }
  assert_true(differ > 0);
  print_message("  %d of the rows' results differ from kir_eval's bits (within tolerance)\n",
                differ);
}

/* mlp, lenet5 (batch 8) and attention: inference and training step. */
static void models(void **state) {
  static const char *const files[] = {"mlp.kiln", "lenet5.kiln", "attention.kiln"};
  static Step steps[6];
  CuSrc *s = cu_new("models");
  double t0 = emu_now_ms();
  for (int i = 0; i < 6; i++) {
    Step *st = &steps[i];
    memset(st, 0, sizeof *st);
    char *text = read_model(files[i / 2]);
    const char *defs[] = {"N=8"};
    bool train = i % 2;
    st->c = compile_opts(text, train, defs, strcmp(files[i / 2], "attention.kiln") ? 1 : 0);
    free(text);
    MUST_COMPILE(st->c);
    int n;
    Node **roots = kt_step_roots(&st->c, train, &n);
    snprintf(st->what, sizeof st->what, "%s (%s)", files[i / 2],
             train ? "training step" : "inference");
    char tag[16];
    snprintf(tag, sizeof tag, "m%d", i);
    step_prepare(st, roots, n, &(PlanOpts){0}, tag, s);
  }
  Emu e;
  emu_build(&e, s);
  for (int i = 0; i < 6; i++) {
    double t1 = emu_now_ms();
    step_check(&steps[i], &e);
    print_message("  %-28s %3d launches: checked in %5.0f ms\n", steps[i].what, steps[i].n_ls,
                  emu_now_ms() - t1);
    compiled_free(&steps[i].c);
  }
  print_message("  host compile %.0f ms, total %.0f ms\n", e.compile_ms, emu_now_ms() - t0);
  emu_free(&e);
  cu_free(s);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, arena_setup, arena_teardown)
  const struct CMUnitTest tests[] = {
      T(elementwise), T(kmath),  T(reduction), T(nested_index), T(select_guarded),
      T(casts),       T(wrapping), T(parallel_prefix), T(parts), T(flatten), T(interchange),
      T(hash),        T(errors), T(every_op),  T(gemm),   T(warp_sums),
      T(reassociated_sums), T(models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
