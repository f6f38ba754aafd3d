/*
 * test_gemm.c: the GEMM schedule of codegen/llvm (cg_gemm.c, cg_gemm_ops.c)
 * for matmul, conv2d, conv_transpose2d and conv2d_back_w.
 *
 * Every case is a small model (statements separated by ';', output `y`);
 * for an f32 `y` the harness appends loss = sum(y * r) and differentiates
 * it with respect to every f32 input, so the backward kernels (matmuls
 * with other transposes, conv_transpose2d, conv2d_back_w) are in the graph
 * too.  Each of its matmul and convolution nodes is lowered, compiled at
 * O3 with the schedule (the test checks that the NAME.ukr micro-kernel was
 * emitted, or, for the cases that must fall back, that it was not) and
 * without it (CgOpts.no_schedule), and run on the reference evaluator's
 * inputs:
 *   - bit for bit: scheduled == plain loop nest == kir_eval (the schedule
 *     sums each output in the Kernel IR's order with fma, so it changes
 *     no bit), with 1 and 2 threads;
 *   - against the reference (double accumulation, ir/eval*.c) within the
 *     classic bound of an f32 sum of n products, each fused, in any order:
 *       |got - ref| <= gamma_n * S + 2^-23 |ref|,   gamma_n = n u / (1 - n u),
 *     u = 2^-24, S the same op evaluated by the reference on |inputs| (the
 *     sum of |a_k b_k|), n the number of terms of one output (K for matmul,
 *     Cg kh kw for conv2d, Cin/groups kh kw for conv_transpose2d, N Ho Wo
 *     for conv2d_back_w); the second term is the reference's own rounding
 *     to f32.  The test prints the worst error seen as a fraction of it.
 * Determinism: a large matmul and a convolution run three times with 2
 * threads and once with 1 give identical bits.
 * The gradient of 2-wide stride-2 max pooling (codegen/llvm/cg_pool.c, a
 * NAME.rows function instead of NAME.ukr) is checked the same way, bit for
 * bit (pooling is exact, so there is no bound to check).
 */
#include <math.h>

#include "kiln_test.h"
#include "cg.h"
#include "cg_gemm.h"
#include "program.h"
#include "rt_pool.h"

typedef struct Case {
  const char *body;
  bool fallback; /* some kernel keeps the plain loop nest (an image too large) */
} Case;

static const Case cases[] = {
    /* matmul: primes, degenerate sizes, panels, broadcast batches, transposes */
    {"input a: f32[1, 1]; input b: f32[1, 1]; y = a @ b", false},
    {"input a: f32[7, 17]; input b: f32[17, 13]; y = a @ b", false},
    {"input a: f32[64, 64]; input b: f32[64, 64]; y = a @ b", false},
    {"input a: f32[100, 300]; input b: f32[300, 50]; y = a @ b", false},
    {"input a: f32[5, 1]; input b: f32[1, 9]; y = a @ b", false},
    {"input a: f32[33, 40]; input b: f32[40, 5]; y = a @ b", false},
    {"input a: f32[20, 600]; input b: f32[600, 70]; y = a @ b", false},
    {"input a: f32[400, 64]; input b: f32[64, 64]; y = a @ b", false},
    {"input a: f32[130, 200]; input b: f32[200, 300]; y = a @ b", false},
    {"input a: f32[2, 1, 5, 7]; input b: f32[3, 7, 6]; y = a @ b", false},
    {"input a: f32[3, 7, 5]; input b: f32[6, 7]; "
     "y = matmul(a, b, transpose_a=true, transpose_b=true)", false},
    {"input a: f32[9, 11]; input b: f32[19, 9]; y = matmul(a, b, transpose_a=true, "
     "transpose_b=true) + matmul(a, transpose(b), transpose_a=true)", false},
    {"input a: f32[2, 23, 3]; input b: f32[2, 23, 70]; y = matmul(a, b, transpose_a=true)", false},
    /* batch axes that only stack rows (one B): one GEMM of 111 and 54 rows;
     * the weight's gradient one product over the stacked rows */
    {"input a: f32[3, 37, 20]; input b: f32[20, 50]; y = a @ b", false},
    {"input a: f32[2, 3, 9, 20]; input b: f32[50, 20]; y = matmul(a, b, transpose_b=true)", false},
    /* one-vector tiles (N <= 16): 16 rows with 32 vector registers (AVX-512),
     * whole tiles, a 3-row remainder; the attention's batched Q K^T */
    {"input a: f32[35, 9]; input b: f32[9, 16]; y = a @ b", false},
    {"input a: f32[3, 16, 8]; input b: f32[3, 16, 8]; y = matmul(a, b, transpose_b=true)", false},
    /* K panels deeper than KC_MAX where a task's columns are one micro-tile
     * (cg_gemm.c, panel_depth): 700 = one panel; a 4 x 4 image with K = 576;
     * 1100 over 64 columns, in panels of 550 */
    {"input a: f32[20, 700]; input b: f32[700, 10]; y = a @ b", false},
    {"input x: f32[1, 64, 4, 4]; input w: f32[40, 64, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
    {"input a: f32[30, 1100]; input b: f32[1100, 64]; y = a @ b", false},
    /* convolutions: padding, stride, dilation, groups, depthwise, 1x1, rectangular */
    {"input x: f32[2, 3, 9, 9]; input w: f32[4, 3, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
    {"input x: f32[2, 3, 10, 9]; input w: f32[5, 3, 3, 3]; y = op.conv2d(x, w, stride=2, pad=1)",
     false},
    {"input x: f32[1, 2, 11, 11]; input w: f32[3, 2, 3, 3]; y = op.conv2d(x, w, dilation=2, pad=2)",
     false},
    {"input x: f32[2, 4, 8, 8]; input w: f32[6, 2, 3, 3]; y = op.conv2d(x, w, groups=2, pad=1)",
     false},
    {"input x: f32[2, 4, 7, 7]; input w: f32[4, 1, 3, 3]; y = op.conv2d(x, w, groups=4, stride=2)",
     false},
    {"input x: f32[3, 5, 6, 6]; input w: f32[7, 5, 1, 1]; y = op.conv2d(x, w)", false},
    {"input x: f32[2, 3, 8, 7]; input w: f32[4, 3, 3, 2]; "
     "y = op.conv2d(x, w, stride=[2, 1], pad=[1, 0], dilation=[1, 2])", false},
    {"input x: f32[3, 1, 28, 28]; input w: f32[6, 1, 5, 5]; y = op.conv2d(x, w, pad=2)", false},
    {"input x: f32[3, 6, 14, 14]; input w: f32[16, 6, 5, 5]; y = op.conv2d(x, w)", false},
    {"input x: f32[1, 4, 3, 3]; input w: f32[4, 2, 3, 2]; "
     "y = op.conv_transpose2d(x, w, stride=2, pad=1, output_padding=1, groups=2)", false},
    {"input x: f32[2, 3, 5, 4]; input w: f32[3, 2, 3, 3]; "
     "y = op.conv_transpose2d(x, w, dilation=2, pad=1)", false},
    /* conv2d with B read in place (K <= 64, stride 1 along x): rows of 70
     * pixels (two tiles), 20 output channels (two row blocks), batch 1 */
    {"input x: f32[1, 2, 5, 70]; input w: f32[3, 2, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
    {"input x: f32[2, 1, 6, 6]; input w: f32[20, 1, 3, 3]; y = op.conv2d(x, w, stride=[2, 1])",
     false},
    /* conv2d_back_w's chunks of images (conv2d_back_w_chunk): 9 and 20
     * images (a short last chunk), padding, groups; and a gradient too large
     * to chunk (16x32x3x3 > 4096 elements) */
    {"input x: f32[9, 2, 7, 6]; input w: f32[3, 2, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
    {"input x: f32[20, 4, 6, 5]; input w: f32[6, 2, 3, 2]; "
     "y = op.conv2d(x, w, groups=2, stride=[1, 2], pad=[2, 0], dilation=[2, 1])", false},
    {"input x: f32[3, 16, 5, 5]; input w: f32[32, 16, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
    /* the gradient of 2-wide stride-2 max pooling (cg_pool.c): ties (relu's
     * zeros), NaN and -inf (log of x <= 0), rows of more than 16 windows,
     * kernel [3, 2]; windows that do not tile W keep the loop nest */
    {"input x: f32[2, 3, 12, 40]; y = maxpool2d(relu(x), 2) + maxpool2d(log(x), 2)", false},
    {"input x: f32[1, 2, 6, 36]; y = maxpool2d(relu(x) - log(x), kernel=[3, 2], stride=[3, 2])",
     false},
    {"input x: f32[1, 2, 9, 37]; y = maxpool2d(log(x), kernel=[3, 2], stride=[3, 2])", true},
    {"input x: f32[1, 1, 2, 2]; y = maxpool2d(x, 2)", false},
    {"input x: f32[2, 1, 18, 8]; y = maxpool2d(relu(x), kernel=[9, 2], stride=[9, 2])", false},
    /* too large for col2im's scratch (taps x pixels > 2^17): the loop nest */
    {"input x: f32[1, 1, 130, 130]; input w: f32[1, 1, 3, 3]; y = op.conv_transpose2d(x, w)",
     true},
};

static Arena *ar;
static double worst;

static float frand(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return -2 + 4 * (float)((*s >> 40) * 0x1.0p-24);
}

static bool pool_op(Op op) { return op == OP_MAXPOOL2D_BACK; }

static bool gemm_op(Op op) {
  return op == OP_MATMUL || op == OP_CONV2D || op == OP_CONV_TRANSPOSE2D ||
         op == OP_CONV2D_BACK_W || pool_op(op);
}

/* Terms in the sum of one output element (see the header). */
static double terms(const Node *n) {
  const Shape *b = &n->in[1]->shape;
  int groups = n->at.groups ? n->at.groups : 1;
  switch (n->op) {
  case OP_MATMUL: { /* k terms, then one add per summed batch element (Attrs.bsum) */
    MatStrides ms;
    matmul_strides(n, &ms);
    double t = (double)ms.k;
    for (int d = 0; d < ms.br; d++)
      t *= n->at.bsum & (1 << d) ? (double)ms.dim[d] : 1.0;
    return t + (n->at.bsum ? t / (double)ms.k : 0);
  }
  case OP_CONV2D: return (double)(b->dim[1] * b->dim[2] * b->dim[3]);
  case OP_CONV_TRANSPOSE2D: return (double)(b->dim[0] / groups * b->dim[2] * b->dim[3]);
  case OP_CONV2D_BACK_W: return (double)(b->dim[0] * b->dim[2] * b->dim[3]);
  default: return 1;
  }
}

/* The reference kernel of n on |inputs|: the bound's S. */
static float *abs_reference(const Node *n, Eval *ev) {
  RtTensor in[2], out = ev->vals[n->id];
  const RtTensor *ins[2] = {&in[0], &in[1]};
  for (int i = 0; i < 2; i++) {
    in[i] = ev->vals[n->in[i]->id];
    int64_t cnt = shape_numel(&n->in[i]->shape);
    float *d = malloc((size_t)cnt * 4 + 4), *s = in[i].data;
    for (int64_t j = 0; j < cnt; j++)
      d[j] = fabsf(s[j]);
    in[i].data = d;
  }
  out.data = malloc((size_t)shape_numel(&n->shape) * 4 + 4);
  op_info[n->op].eval(n, &out, ins, &ev->cx);
  free(in[0].data), free(in[1].data);
  return out.data;
}

static void check_bound(const Node *n, const float *got, const float *ref, const float *s,
                        const char *what) {
  double u = 0x1.0p-24, t = terms(n), gamma = t * u / (1 - t * u);
  for (int64_t i = 0; i < shape_numel(&n->shape); i++) {
    double bound = gamma * s[i] + 0x1.0p-23 * fabs(ref[i]) + 1e-37;
    double err = fabs((double)got[i] - ref[i]);
    worst = err / bound > worst ? err / bound : worst;
    if (!(err <= bound))
      fail_msg("%s: %s (%s)[%lld] = %.9g, the reference says %.9g (bound %.3g)", what, n->name,
               op_name(n->op), (long long)i, got[i], ref[i], bound);
  }
}

/* A JIT with k alone; *scheduled says whether NAME.ukr was emitted, and
 * *tile (if asked) whether a fused epilogue runs per tile (NAME.tile_epilogue
 * and no NAME.epilogue after the tasks). */
/* Scheduled kernels seen whose micro-kernel walks a batch sum's blocks
 * itself (cg_gemm.c: its "kb.add" block; Gemm.kb_inner). */
static int kb_inner_seen;
/* Scheduled convolutions reading B in place (Gemm.conv_direct: the
 * micro-kernel's table of tap offsets, NAME.ukr.taps). */
static int direct_seen;
/* Scheduled kernels with micro-kernels of fewer vectors for their last,
 * narrower tiles of columns (cg_gemm.c, ukr_variants: NAME.ukr.vN). */
static int narrow_seen;

static CgJit *compile_k(Kernel *k, bool no_schedule, bool *scheduled, bool *tile) {
  char err[2048];
  Cg *cg = cg_new("t", &(CgOpts){.opt_level = 3, .verify = true, .no_schedule = no_schedule},
                  err, sizeof err);
  if (!cg || !cg_kernel(cg, k, err, sizeof err))
    fail_msg("compiling %s: %s", k->name, err);
  char *ir = cg_print_ir(cg), want[300];
  snprintf(want, sizeof want, "@%s.ukr", k->name); /* .ukr or .ukr_direct */
  *scheduled = strstr(ir, want) != NULL;
  snprintf(want, sizeof want, "@%s.rows(", k->name); /* cg_pool.c's */
  *scheduled = *scheduled || strstr(ir, want) != NULL;
  kb_inner_seen += strstr(ir, "\nkb.add:") != NULL;
  direct_seen += strstr(ir, ".ukr.taps") != NULL;
  narrow_seen += strstr(ir, ".ukr.v") != NULL;
  if (tile) {
    snprintf(want, sizeof want, "@%s.tile_epilogue(", k->name);
    char after[300];
    snprintf(after, sizeof after, "@%s.epilogue(", k->name);
    *tile = strstr(ir, want) && !strstr(ir, after);
  }
  free(ir);
  if (!cg_optimize(cg, err, sizeof err))
    fail_msg("optimizing %s: %s", k->name, err);
  CgJit *j = cg_jit(cg, err, sizeof err);
  if (!j)
    fail_msg("jit %s: %s", k->name, err);
  cg_free(cg);
  return j;
}

static CgJit *compile(Kernel *k, bool no_schedule, bool *scheduled) {
  return compile_k(k, no_schedule, scheduled, NULL);
}

/* Runs k's compiled code on bufs, the output into out (numel floats). */
static void run(CgJit *j, const Kernel *k, void **bufs, float *out, int64_t numel) {
  CgKernelFn f = cg_jit_kernel(j, k->name);
  if (!f)
    fail_msg("lookup %s: %s", k->name, cg_jit_error(j));
  memset(out, 0xff, (size_t)numel * 4);
  bufs[k->n_bufs - 1] = out;
  f(bufs);
}

static void diff(Compiled *c) {
  Graph *g = c->g;
  Node *r, *loss = probe_loss(g, &r), *wrt[16], *grads[16];
  int n = 0;
  for (int i = 0; i < g->n_nodes && n < 16; i++)
    if (g->nodes[i]->op == OP_INPUT && g->nodes[i] != r)
      wrt[n++] = g->nodes[i];
  pass_autodiff(g, &c->d, loss, wrt, n, grads);
}

static void diff_run(void *ud) { diff(ud); }

/* ev: g run by the reference evaluator on seeded random inputs. */
/* Cases whose graph passes/view.c rewrites after autodiff (one_case's
 * `views`: at least that many matmuls then read or write a view). */
static const struct {
  Case c;
  int views;
} view_cases[] = {
    /* attention's heads split and joined by transposes the matmuls read
     * and write in place, forward and backward; T = 37
     * rows (panels, row blocks), d = 20 columns (two vectors), and T = 5
     * with d = 4 (B read in place); a transpose of the last two axes (ta),
     * a view moving the contiguous axis to the batch and a result
     * transpose moving the last axis (both left as transposes) */
    {{"input q: f32[2, 37, 40]; input k: f32[2, 37, 40]; input v: f32[2, 37, 40]; "
     "qh = transpose(reshape(q, [2, 37, 2, 20]), [0, 2, 1, 3]); "
     "kh = transpose(reshape(k, [2, 37, 2, 20]), [0, 2, 1, 3]); "
     "vh = transpose(reshape(v, [2, 37, 2, 20]), [0, 2, 1, 3]); "
     "y = reshape(transpose(matmul(qh, kh, transpose_b=true) @ vh, [0, 2, 1, 3]), [2, 37, 40])",
     false}, 6},
    {{"input q: f32[3, 5, 12]; input v: f32[3, 5, 12]; "
     "qh = transpose(reshape(q, [3, 5, 3, 4]), [0, 2, 1, 3]); "
     "vh = transpose(reshape(v, [3, 5, 3, 4]), [0, 2, 1, 3]); "
     "y = reshape(transpose(matmul(qh, qh, transpose_b=true) @ vh, [0, 2, 1, 3]), [3, 5, 12])",
     false}, 5},
    {{"input a: f32[3, 6, 5]; input b: f32[3, 6, 7]; input c: f32[7, 4, 3]; "
     "input d: f32[3, 4, 5]; "
     "y = transpose(transpose(a, [0, 2, 1]) @ b, [0, 2, 1]) + transpose(c, [2, 0, 1]) @ d",
     false}, 0},
    /* a view beside a broadcast 2-D operand, and a result viewed with the
     * batch axis moved: [T, N, D] @ [D, E], [N, T, E] -> [T, N, E] */
    {{"input x: f32[4, 18, 5]; input w: f32[5, 7]; input z: f32[4, 18, 7]; "
      "y = transpose(x, [1, 0, 2]) @ w + transpose(x @ w + z, [1, 0, 2]) + "
      "transpose(z @ transpose(w), [1, 0, 2]) @ w",
      false}, 2},
};

static void eval_random(Eval *ev, Graph *g, uint64_t seed, const char *what) {
  eval_init(ev, g);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT) {
      float *d = eval_input(ev, g->nodes[i]);
      for (int64_t j = 0; j < shape_numel(&g->nodes[i]->shape); j++)
        d[j] = frand(&seed);
    }
  char err[512];
  if (eval_run(ev, NULL, err, sizeof err))
    fail_msg("%s: reference: %s", what, err);
}

/* Cases whose graph passes/batchsum.c rewrites after autodiff (and
 * view.c before it, as kiln does): at least `sums` matmuls then sum over
 * batch axes.  Weight gradients of dense layers on [N, T, D] (the sum over
 * N of x^T dy), with K = T of 37 (panels, row blocks) and 5 (B in place),
 * through views and with two batch axes summed; and a K of 300, over one
 * GEMM panel: not rewritten, the count says.  `inner` of those GEMMs walk
 * the blocks in the micro-kernel (Gemm.kb_inner: dy's rows a multiple of
 * 16 floats apart, one summed axis or two that merge, rows of C past the
 * last full micro-tile, a second column tile, A and B just under
 * KB_INNER_BYTES of cg_gemm_ops.c: 23 blocks of 16 rows, (8 + 512) x 368
 * floats), but not the last, over it (25 blocks, (8 + 512) x 400). */
static const struct {
  Case c;
  int sums, inner;
} sum_cases[] = {
    {{"input x: f32[3, 37, 20]; input w: f32[20, 50]; y = x @ w", false}, 1, 0},
    {{"input x: f32[4, 5, 7]; input w: f32[7, 3]; y = x @ w", false}, 1, 0},
    {{"input x: f32[2, 3, 6, 9]; input w: f32[9, 20]; y = x @ w", false}, 1, 0},
    {{"input q: f32[2, 37, 40]; input k: f32[2, 37, 40]; input w: f32[20, 20]; "
      "qh = transpose(reshape(q, [2, 37, 2, 20]), [0, 2, 1, 3]); "
      "kh = transpose(reshape(k, [2, 37, 2, 20]), [0, 2, 1, 3]); "
      "y = matmul(qh @ w, kh, transpose_b=true)", false}, 1, 0},
    {{"input x: f32[2, 300, 6]; input w: f32[6, 5]; y = x @ w", false}, 0, 0},
    {{"input x: f32[3, 11, 20]; input w: f32[20, 32]; y = x @ w", false}, 1, 1},
    {{"input x: f32[5, 16, 13]; input w: f32[13, 80]; y = x @ w", false}, 1, 1},
    {{"input x: f32[2, 3, 5, 16]; input w: f32[16, 48]; y = x @ w", false}, 1, 1},
    {{"input x: f32[23, 16, 8]; input w: f32[8, 512]; y = x @ w", false}, 1, 1},
    {{"input x: f32[25, 16, 8]; input w: f32[8, 512]; y = x @ w", false}, 1, 0},
};

/* The matmuls of g whose attributes have bits of mask (1: views, 2: sums). */
static int marked(const Graph *g, int mask) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += g->nodes[i]->op == OP_MATMUL &&
         (((mask & 1) && g->nodes[i]->at.view) || ((mask & 2) && g->nodes[i]->at.bsum));
  return n;
}

/* rewrite 0: the graph as autodiff left it; 1: passes/view.c after
 * autodiff, and then at least `want` matmuls must read or write through a
 * view; 2: view.c, then batchsum.c, and exactly `want` matmuls sum batch
 * axes.  Every value the reference computes stays the same bits. */
static void one_case(const Case *cs, int rewrite, int want) {
  char text[1024];
  snprintf(text, sizeof text, "model m() {\n  %s\n}\n", cs->body);
  for (char *p = text; *p; p++)
    *p = *p == ';' ? '\n' : *p;
  Compiled c = compile_opts(text, true, NULL, 0);
  MUST_COMPILE(c);
  if (diag_protect(&c.d, diff_run, &c))
    fail_msg("%s: autodiff: %s", cs->body, c.d.msg);
  Graph *g = c.g;
  Eval ev0; /* rewritten: the reference before, each transpose and product materialized */
  if (rewrite) {
    eval_random(&ev0, g, 7, cs->body);
    char err[512] = "";
    int folded = pass_matmul_views(g);
    if (rewrite == 2)
      folded = pass_matmul_batch_sums(g);
    int got = marked(g, rewrite);
    if ((rewrite == 1 ? folded == 0 || got < want : folded != want || got != want) ||
        !graph_verify(g, err, sizeof err))
      fail_msg("%s: %d folded, %d matmuls rewritten (want %d): %s", cs->body, folded, got, want,
               err);
  }
  Eval ev;
  eval_random(&ev, g, 7, cs->body);
  for (int i = 0; i < g->n_nodes && rewrite; i++) { /* every value as before, bit for bit */
    const void *was = ev0.vals[i].data, *now = ev.vals[i].data;
    if (was && now && memcmp(was, now, (size_t)node_bytes(g->nodes[i])))
      fail_msg("%s: the reference's %s differs after the rewrite", cs->body, g->nodes[i]->name);
  }
  if (rewrite)
    eval_free(&ev0);
  int seen = 0, plain = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (!gemm_op(n->op))
      continue;
    Kernel *k = lower_node(ar, n);
    int64_t cnt = shape_numel(&n->shape);
    void *bufs[3] = {ev.vals[n->in[0]->id].data, NULL, NULL}; /* inputs, then the output */
    if (n->n_in > 1)
      bufs[1] = ev.vals[n->in[1]->id].data;
    float *got = malloc((size_t)cnt * 4 + 4), *loops = malloc((size_t)cnt * 4 + 4);
    float *oracle = malloc((size_t)cnt * 4 + 4);
    bool sched, sched_plain;
    CgJit *j = compile(k, false, &sched), *jp = compile(k, true, &sched_plain);
    assert_false(sched_plain);
    plain += !sched;
    run(jp, k, bufs, loops, cnt);
    bufs[k->n_bufs - 1] = oracle;
    kir_eval(k, bufs);
    for (int threads = 1; threads <= 2; threads++) {
      rt_set_threads(threads);
      run(j, k, bufs, got, cnt);
      if (memcmp(got, oracle, (size_t)cnt * 4) || memcmp(loops, oracle, (size_t)cnt * 4))
        fail_msg("%s: %s (%s): not kir_eval's bits (%d threads)", cs->body, n->name,
                 op_name(n->op), threads);
    }
    rt_set_threads(1);
    if (!pool_op(n->op)) { /* pooling is exact: kir_eval's bits are the check (and
                            * test_codegen compares them with the reference) */
      float *s = abs_reference(n, &ev);
      check_bound(n, got, ev.vals[n->id].data, s, cs->body);
      free(s);
    }
    free(got), free(loops), free(oracle);
    cg_jit_free(j), cg_jit_free(jp);
    seen++;
  }
  assert_true(seen > 0);
  if (cs->fallback ? plain == 0 : plain > 0)
    fail_msg("%s: %d of %d kernels kept the plain loop nest", cs->body, plain, seen);
  eval_free(&ev);
  compiled_free(&c);
}

static void shapes(void **state) {
  ar = arena_new();
  for (int i = 0; i < countof(cases); i++)
    one_case(&cases[i], 0, 0);
  print_message("  %d cases; worst |kiln - reference| / bound: %.3g\n", countof(cases), worst);
  arena_free(ar);
}

/* Same bits on every run with 2 threads, and with 1. */
/* Matmuls reading and writing through views: the same checks. */
static void views(void **state) {
  ar = arena_new();
  for (int i = 0; i < countof(view_cases); i++)
    one_case(&view_cases[i].c, 1, view_cases[i].views);
  arena_free(ar);
}

/* Matmuls summing their products over batch axes: the same checks, and
 * the GEMM, the loop nest and kir_eval write the unfused sum's bits. */
static void batch_sums(void **state) {
  ar = arena_new();
  for (int i = 0; i < countof(sum_cases); i++) {
    kb_inner_seen = 0;
    one_case(&sum_cases[i].c, 2, sum_cases[i].sums);
    if (kb_inner_seen != sum_cases[i].inner)
      fail_msg("%s: %d GEMMs walk the summed blocks in the micro-kernel (want %d)",
               sum_cases[i].c.body, kb_inner_seen, sum_cases[i].inner);
  }
  arena_free(ar);
}

/* A case and how many of its GEMM kernels must take a path of the
 * schedule (counted by compile_k into one of the *_seen counters). */
typedef struct Counted {
  Case c;
  int want;
} Counted;

/* Runs each case (one_case: kir_eval's bits, the bound) and checks how
 * many of its kernels took the path `what` counts in *seen. */
static void counted_cases(const Counted *cs, int n, int *seen, const char *what) {
  ar = arena_new();
  for (int i = 0; i < n; i++) {
    *seen = 0;
    one_case(&cs[i].c, 0, 0);
    if (*seen != cs[i].want)
      fail_msg("%s: %d kernels %s (want %d)", cs[i].c.body, *seen, what, cs[i].want);
  }
  arena_free(ar);
}

/* Convolutions at a stride along x read B in place from a copy of the
 * image split into that many phases (cg_gemm_ops.c, conv2d_direct) when a
 * group has at most DIRECT_STRIDED_M output channels: depthwise at stride
 * 2 with padding; an odd width without padding (phases of 6 and 5); two
 * channels per group at stride 3 along x with dilation 2 (taps in phases
 * 0, 2 and 1) and a rectangular kernel; and 8 channels per group, packed
 * instead.  `want`: how many take the path (the forward convolution). */
static const Counted strided_cases[] = {
    {{"input x: f32[2, 6, 10, 10]; input w: f32[6, 1, 3, 3]; "
      "y = op.conv2d(x, w, groups=6, stride=2, pad=1)", false}, 1},
    {{"input x: f32[1, 3, 9, 11]; input w: f32[3, 1, 3, 3]; y = op.conv2d(x, w, groups=3, stride=2)",
      false}, 1},
    {{"input x: f32[1, 4, 8, 17]; input w: f32[8, 1, 2, 3]; "
      "y = op.conv2d(x, w, groups=4, stride=[1, 3], pad=[1, 2], dilation=[1, 2])", false}, 1},
    {{"input x: f32[1, 2, 9, 9]; input w: f32[16, 1, 3, 3]; y = op.conv2d(x, w, groups=2, stride=2)",
      false}, 0},
};

static void strided_direct(void **state) {
  counted_cases(strided_cases, countof(strided_cases), &direct_seen, "read B in place");
}

/* A task's last tile of columns narrower than the micro-tile runs a
 * micro-kernel of fewer vectors (cg_gemm.c, ukr_variants): 196 columns
 * (a 14 x 14 image) are tiles of 64, 64, 64 and 4, the last one vector;
 * 64 or 256 columns are whole tiles.  `want`: kernels with variants
 * among the case's GEMMs: the matmul's product and B's gradient (196
 * columns; A's has 64); the convolution's product and input gradient at
 * 14 x 14 (196 pixels), none of them at 16 x 16, and its weight gradient
 * at both (8 channels x 9 taps = 72 columns, not whole tiles of 64). */
static const Counted narrow_cases[] = {
    {{"input a: f32[20, 64]; input b: f32[64, 196]; y = a @ b", false}, 2},
    {{"input a: f32[20, 64]; input b: f32[64, 256]; y = a @ b", false}, 0},
    {{"input x: f32[1, 8, 14, 14]; input w: f32[16, 8, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
     3},
    {{"input x: f32[1, 8, 16, 16]; input w: f32[16, 8, 3, 3]; y = op.conv2d(x, w, pad=1)", false},
     1},
};

static void narrow_tiles(void **state) {
  counted_cases(narrow_cases, countof(narrow_cases), &narrow_seen, "have narrow micro-kernels");
}

/* The K panel's depth (cg_gemm.c, panel_depth): KC_MAX where a task has
 * several micro-tiles of columns; where it has one, as deep as a panel of
 * KC_MAX x NB_MAX floats allows, K cut into equal panels.  (Any depth
 * gives the same bits: the shapes cases above check panels of both kinds.) */
static void deep_panels(void **state) {
  static const struct {
    int64_t m, n, ki, kc;
  } want[] = {
      {512, 16, 4608, 4608},  /* a 4 x 4 image's 3 x 3 conv over 512 channels: one panel */
      {256, 64, 2304, 1152},  /* 8 x 8 over 256: 2048 at most, two panels */
      {256, 64, 9000, 1800},  /* five panels of 1800 */
      {64, 256, 2304, 1152},  /* 16 x 16 over 64: tasks of one micro-tile of columns */
      {2, 256, 600, 200},     /* too little work to split: two micro-tiles, KC_MAX */
      {20, 10, 700, 700},
      {20, 10, 200, 200},
  };
  for (int i = 0; i < countof(want); i++) {
    Gemm g = {.batch = 1, .m = want[i].m, .n = want[i].n, .kb = 1, .ki = want[i].ki,
              .regs32 = true};
    gemm_schedule(&g);
    if (g.s.kc != want[i].kc)
      fail_msg("%lld x %lld, K = %lld: panels of %lld, want %lld", (long long)want[i].m,
               (long long)want[i].n, (long long)want[i].ki, (long long)g.s.kc,
               (long long)want[i].kc);
  }
}

static void determinism(void **state) {
  static const char *const bodies[] = {
      "input a: f32[300, 500]; input b: f32[500, 260]; y = a @ b",
      "input x: f32[8, 6, 30, 30]; input w: f32[16, 6, 5, 5]; y = op.conv2d(x, w, pad=2)",
  };
  ar = arena_new();
  for (int b = 0; b < countof(bodies); b++) {
    char text[512];
    snprintf(text, sizeof text, "model m() {\n  %s\n}\n", bodies[b]);
    for (char *p = text; *p; p++)
      *p = *p == ';' ? '\n' : *p;
    Compiled c = compile_opts(text, false, NULL, 0);
    MUST_COMPILE(c);
    Node *y = graph_find_value(c.g, "y");
    Kernel *k = lower_node(ar, y);
    bool sched;
    CgJit *j = compile(k, false, &sched);
    assert_true(sched);
    uint64_t seed = 3;
    float *in[2];
    for (int i = 0; i < 2; i++) {
      int64_t cnt = shape_numel(&y->in[i]->shape);
      in[i] = malloc((size_t)cnt * 4);
      for (int64_t e = 0; e < cnt; e++)
        in[i][e] = frand(&seed);
    }
    int64_t cnt = shape_numel(&y->shape);
    float *first = malloc((size_t)cnt * 4), *again = malloc((size_t)cnt * 4);
    void *bufs[3] = {in[0], in[1], NULL};
    rt_set_threads(2);
    run(j, k, bufs, first, cnt);
    for (int rep = 0; rep < 3; rep++) {
      rt_set_threads(rep < 2 ? 2 : 1);
      run(j, k, bufs, again, cnt);
      assert_memory_equal(first, again, (size_t)cnt * 4);
    }
    rt_set_threads(1);
    free(in[0]), free(in[1]), free(first), free(again);
    cg_jit_free(j);
    compiled_free(&c);
  }
  arena_free(ar);
}

/* --- fused epilogues, per tile ------------------------------------------------------ */

/* A matmul or convolution leading an elementwise epilogue (passes/fuse.c,
 * kind epilogue) that reads broadcast inputs (bias, batchnorm parameters)
 * and a residual; shapes that no tile divides.  The fused kernel compiled
 * with the schedule must run the epilogue per tile (NAME.tile_epilogue,
 * no NAME.epilogue pass after the tasks), and give, with 1 and 2 threads,
 * the bits of kir_eval on the fused kernel, of the plain loop nest, and of
 * the unfused kernels one after another.  Each case also runs with small
 * K panels, column blocks and many tasks (KILN_GEMM_KC, _NB, _TASKS), so an
 * epilogue applied before a block's last K panel would show, and with
 * KILN_EPILOGUE_AFTER (the pass after the tasks: same bits); all with
 * KILN_EPILOGUE_PER_TILE, as these outputs are under the 1 MB from which
 * the epilogue runs per tile by default (checked on one small and one
 * large output without it).  A
 * one-element output has no loop nest to run per tile: it must fall back
 * to the pass after the tasks. */
static const char *const epi_cases[] = {
    "input a: f32[100, 300]; input b: f32[300, 150]; input c: f32[150]; "
    "input r: f32[100, 150]; y = relu(a @ b + c + r)",
    "input a: f32[3, 40, 30]; input b: f32[3, 50, 40]; input s: f32[50]; "
    "y = tanh(matmul(a, b, transpose_a=true, transpose_b=true) * s)",
    "input a: f32[2, 1, 37, 30]; input b: f32[3, 30, 70]; input c: f32[3, 1, 70]; "
    "y = sigmoid(a @ b - c)",
    "input a: f32[1, 64]; input b: f32[64, 100]; input c: f32[100]; input r: f32[1, 100]; "
    "y = relu(a @ b + c) + r",
    "input a: f32[3, 5]; input b: f32[5, 4]; input c: f32[4]; y = relu(a @ b + c)",
    "input x: f32[2, 8, 13, 11]; input w: f32[12, 8, 3, 3]; input b: f32[12, 1, 1]; "
    "input r: f32[2, 12, 13, 11]; y = relu(op.conv2d(x, w, pad=1) + b + r)",
    "input x: f32[2, 2, 9, 70]; input w: f32[20, 2, 3, 3]; input m: f32[20, 1, 1]; "
    "input s: f32[20, 1, 1]; input t: f32[20, 1, 1]; input r: f32[2, 20, 9, 70]; "
    "y = relu((op.conv2d(x, w, pad=1) - m) * s + t) + r",
    "input x: f32[3, 4, 10, 9]; input w: f32[6, 2, 3, 3]; input b: f32[6, 1, 1]; "
    "y = tanh(op.conv2d(x, w, groups=2, stride=2, pad=1) + b)",
    "input x: f32[2, 4, 5, 6]; input w: f32[4, 3, 3, 3]; input b: f32[3, 1, 1]; "
    "input r: f32[2, 3, 9, 11]; y = relu(op.conv_transpose2d(x, w, stride=2, pad=1) + b + r)",
    /* one element: no loop nest, so the epilogue stays after the tasks */
    "input a: f32[1, 5]; input b: f32[5, 1]; input c: f32[1]; y = relu(a @ b + c)",
};
static const int epi_after_only = 1; /* the last cases: K.epilogue expected */

/* The value of every node, each computed by its own kernel under kir_eval
 * (the unfused program's bits), leaves from the reference evaluator. */
static float **unfused_values(Graph *g, Eval *ev) {
  float **val = calloc((size_t)g->n_nodes, sizeof *val);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    Kernel *k = n->op == OP_INPUT ? NULL : lower_node(ar, n);
    if (!k) {
      val[i] = ev->vals[i].data;
      continue;
    }
    void *bufs[16];
    assert_true(k->n_bufs <= 16);
    for (int b = 0; b < k->n_bufs; b++)
      bufs[b] = k->bufs[b].role == KB_IN ? val[k->bufs[b].node] : NULL;
    bufs[k->n_bufs - 1] = val[i] = malloc((size_t)node_bytes(n) + 4);
    kir_eval(k, bufs);
  }
  return val;
}

static void epi_case(const char *body, const char *variant, bool after) {
  char text[1024];
  snprintf(text, sizeof text, "model m() {\n  %s\n  output y\n}\n", body);
  for (char *p = text; *p; p++)
    *p = *p == ';' ? '\n' : *p;
  Compiled c = compile_opts(text, false, NULL, 0);
  MUST_COMPILE(c);
  Graph *g = c.g;
  Node *y = graph_find_value(g, "y");
  Eval ev;
  eval_random(&ev, g, 11, body);
  float **val = unfused_values(g, &ev);
  Plan p;
  plan_build(g, &y, 1, &(PlanOpts){0}, &p);
  Kernel *k = program_kernel_at(ar, &p, y);
  if (!k || !k->head)
    fail_msg("%s: y is not a fused kernel with an epilogue", body);
  void *bufs[16], *oracle[16];
  float *outs[16] = {0};
  assert_true(k->n_bufs <= 16);
  for (int b = 0; b < k->n_bufs; b++) {
    const KBuf *kb = &k->bufs[b];
    bufs[b] = oracle[b] = kb->role == KB_IN ? val[kb->node] : NULL;
    if (kb->role == KB_OUT) {
      assert_int_equal(kb->numel, shape_numel(&g->nodes[kb->node]->shape));
      oracle[b] = malloc((size_t)kb->numel * 4 + 4);
      bufs[b] = outs[b] = malloc((size_t)kb->numel * 4 + 4);
    }
  }
  kir_eval(k, oracle);
  bool sched, tile, sched_plain;
  CgJit *j = compile_k(k, false, &sched, &tile), *jp = compile(k, true, &sched_plain);
  assert_true(sched);
  if (tile == after)
    fail_msg("%s (%s): the epilogue %s per tile", body, variant, tile ? "runs" : "does not run");
  for (int run_i = 0; run_i < 3; run_i++) { /* plain, then 1 and 2 threads */
    rt_set_threads(run_i == 2 ? 2 : 1);
    CgKernelFn f = cg_jit_kernel(run_i ? j : jp, k->name);
    assert_non_null(f);
    for (int b = 0; b < k->n_bufs; b++)
      if (outs[b])
        memset(outs[b], 0xff, (size_t)k->bufs[b].numel * 4);
    f(bufs);
    for (int b = 0; b < k->n_bufs; b++) {
      if (!outs[b])
        continue;
      size_t bytes = (size_t)k->bufs[b].numel * 4;
      if (memcmp(outs[b], oracle[b], bytes) || memcmp(outs[b], val[k->bufs[b].node], bytes))
        fail_msg("%s (%s): %s of %s: not the bits of kir_eval and of the unfused kernels (%s)",
                 body, variant, k->bufs[b].name, k->name,
                 run_i ? (run_i == 1 ? "1 thread" : "2 threads") : "plain loop nest");
    }
  }
  rt_set_threads(1);
  for (int b = 0; b < k->n_bufs; b++)
    if (outs[b])
      free(outs[b]), free(oracle[b]);
  for (int i = 0; i < g->n_nodes; i++)
    if (val[i] != ev.vals[i].data)
      free(val[i]);
  free(val);
  cg_jit_free(j), cg_jit_free(jp);
  eval_free(&ev);
  compiled_free(&c);
}

static void epilogues(void **state) {
  static const char *const env[][2] = {{"KILN_GEMM_KC", "16"}, {"KILN_GEMM_NB", "64"},
                                       {"KILN_GEMM_TASKS", "64"}};
  ar = arena_new();
  for (int v = 0; v < 3; v++) {
    for (int e = 0; e < countof(env); e++)
      if (v == 1)
        setenv(env[e][0], env[e][1], 1);
      else
        unsetenv(env[e][0]);
    if (v == 2)
      setenv("KILN_EPILOGUE_AFTER", "1", 1);
    setenv("KILN_EPILOGUE_PER_TILE", "1", 1); /* outputs under 1 MB too */
    for (int i = 0; i < countof(epi_cases); i++)
      epi_case(epi_cases[i], v == 0 ? "default schedule" : v == 1 ? "small blocks" : "after",
               v == 2 || i >= countof(epi_cases) - epi_after_only);
    unsetenv("KILN_EPILOGUE_AFTER");
    unsetenv("KILN_EPILOGUE_PER_TILE");
  }
  /* by default an output under 1 MB (cg_gemm.c: EPI_TILE_MIN) takes the
   * pass after the tasks, a larger one the per-tile epilogue */
  epi_case(epi_cases[0], "small output", true);
  epi_case("input a: f32[600, 64]; input b: f32[64, 520]; input c: f32[520]; "
           "y = relu(a @ b + c)", "large output", false);
  arena_free(ar);
}

/* An epilogue group's output never takes an input's bytes (passes/inplace.c):
 * its tiles' GEMMs still read h while other tiles' epilogues write y, so
 * y over h (same shape, h's last read) would be wrong; the planned program
 * gives the unfused program's bits with 2 threads. */
static void epilogue_in_place(void **state) {
  Compiled c = compile_text(
      "model m() {\n  input x: f32[2, 6, 11, 13]\n  input w1: f32[8, 6, 3, 3]\n"
      "  input w2: f32[8, 8, 3, 3]\n  input b1: f32[8, 1, 1]\n  input b2: f32[8, 1, 1]\n"
      "  h = relu(op.conv2d(x, w1, pad=1) + b1)\n"
      "  y = relu(op.conv2d(h, w2, pad=1) + b2 + h)\n  output y\n}\n");
  MUST_COMPILE(c);
  Graph *g = c.g;
  Node *y = graph_find_value(g, "y"), *h = graph_find_value(g, "h");
  float *got[2];
  rt_set_threads(2);
  for (int v = 0; v < 2; v++) {
    Program p;
    char err[2048];
    PlanOpts po = {.fuse = v ? (FuseOpts){0} : FUSE_NONE};
    if (!program_compile(&p, g, &y, 1, &po, &(CgOpts){.opt_level = 2}, err, sizeof err))
      fail_msg("%s", err);
    if (v) {
      const FuseGroup *G = plan_group(&p.plan, y);
      assert_true(G && G->head && G->head->op == OP_CONV2D);
      assert_true(plan_in_arena(&p.plan, h) && !p.plan.internal[h->id]);
      assert_int_equal(p.plan.alias[y->id], -1);
      assert_false(p.plan.offset[y->id] == p.plan.offset[h->id]);
    }
    for (int i = 0; i < g->n_nodes; i++) {
      const Node *n = g->nodes[i];
      float *at = n->op == OP_INPUT ? program_value(&p, n) : NULL;
      uint64_t s = 5 + (uint64_t)i;
      for (int64_t e = 0; at && e < shape_numel(&n->shape); e++)
        at[e] = frand(&s);
    }
    program_run(&p, 1);
    got[v] = malloc((size_t)node_bytes(y));
    memcpy(got[v], program_value(&p, y), (size_t)node_bytes(y));
    program_free(&p);
  }
  rt_set_threads(1);
  assert_memory_equal(got[0], got[1], (size_t)node_bytes(y));
  free(got[0]), free(got[1]);
  compiled_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(shapes), cmocka_unit_test(views),
                                     cmocka_unit_test(batch_sums),
                                     cmocka_unit_test(deep_panels),
                                     cmocka_unit_test(strided_direct),
                                     cmocka_unit_test(narrow_tiles),
                                     cmocka_unit_test(determinism),
                                     cmocka_unit_test(epilogues),
                                     cmocka_unit_test(epilogue_in_place)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  rt_pool_shutdown();
  return rc;
}
