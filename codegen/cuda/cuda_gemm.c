/*
 * cuda_gemm.c: matmul and convolution kernels tiled through shared memory
 * with register blocking, in place of the Kernel IR's one-thread-per-element
 * nest.
 *
 * Which kernels: a matmul, conv2d, conv_transpose2d or conv2d_back_w
 * node's own kernel (ir/lower_nn.c: lower_matmul with transposed operands
 * and broadcast batch dimensions, the convolutions with stride, padding,
 * dilation and groups), and a fused kernel led by one (Kernel.head): its
 * first n_head statements, the node's nest, become the tiled function.
 * The epilogue after them is applied to each element of C right after the
 * tile stores it, in the same function (CuEpi; cuda_emit.c decides when
 * that is safe), else it stays the emitter's ordinary parts, launched
 * after it.  The IR is checked to be the lowering's (one fma update, of
 * loads of buffers 0 and 1, buffer 2 stored from its accumulator, or from
 * a total that adds the fma's partial sums, f32, sizes the node's);
 * anything else keeps the generic code.
 *
 * All are a batch of GEMMs C[bt] (M x N) = A[bt] (M x K) B[bt] (K x N),
 * with K in the IR's loop order:
 *   matmul   bt over the output's batch dimensions, A and B the operands
 *            (broadcast: stride 0);
 *   conv2d   bt = (image, group); M = the group's output channels, N =
 *            the output pixels, K = (input channel, tap row, tap column);
 *            A = the weights, whose rows are contiguous along K; B(k, n) =
 *            the input pixel tap k of output pixel n reads, gathered while
 *            loading the tile (implicit im2col: no column matrix is
 *            stored), with a flag for taps in the padding, which the IR
 *            skips (no fma at all);
 *   conv_transpose2d  bt = (image, group); M = the group's output
 *            channels, N = the output pixels, K = (tap row, tap column,
 *            input channel); A(m, k) = w[group's channel, m, tap]; B(k, n)
 *            = the input pixel whose window covers output pixel n through
 *            tap k, flagged when none does.  The IR sums each tap's
 *            channels from 0 and adds that to the total (segments of Cin/g
 *            terms, below);
 *   conv2d_back_w  bt = group; M = the group's output channels, N = (input
 *            channel, tap row, tap column), K = (image, output row, output
 *            column); A(m, k) = the output gradient, B(k, n) = the input
 *            pixel that tap n reads for output pixel k, flagged in the
 *            padding.  When the IR sums the images in chunks
 *            (conv2d_back_w_chunk: small weight gradients), each chunk is
 *            a segment.
 *
 * The function (BN = 64, BM = 16 TM with TM = 1, 2 or 4 by M, BK = 16, 256
 * threads):
 *
 *   for each tile t = (bt, BM rows, 64 columns) of C, grid-stride over
 *       blockIdx.x (a block's threads all take the same tiles, so the
 *       barriers below are uniform):
 *     acc[TM][4] = 0                         thread (ty, tx) = tid / 16, tid % 16
 *                                            owns rows ty + 16 i, columns tx + 16 j
 *     for k0 in 0..K by 16:
 *       A's BM x 16 and B's 16 x 64 tiles into __shared__ (consecutive
 *       threads read consecutive addresses of the operand's contiguous
 *       dimension, whichever it is: coalesced for transposed and plain
 *       operands, and along output pixels for a convolution's input;
 *       0 outside the matrix)
 *       __syncthreads
 *       for kk in 0 .. min(16, K - k0): TM + 4 shared loads, 4 TM fmaf
 *       __syncthreads
 *     store the results that lie inside C (rows and columns guarded),
 *     each followed by the epilogue at that element (when fused)
 *
 * Bit for bit: each element of C is one accumulator, from +0, updated by
 * fmaf(a, b, acc) with the IR's operand order for k = 0, 1, ..., K - 1 in
 * that order (padding taps skipped, as the IR's `if`), nothing else: the
 * inner loop stops at K, so the zero padding of an edge tile is never
 * added.  With segments (seg > 0) the fmas go into a partial sum from +0
 * that is added to the total, total = total + part, at every multiple of
 * seg and at the end, as the IR's `acc = acc + s`.  A transposed
 * convolution's tap that covers no input pixel adds nothing in the IR and
 * +0 here: the same bits, because a total that starts at +0 and only ever
 * has values added to it is never -0 (x + y rounds to -0 only when both
 * are -0), and t + 0 = t for every other t, NaN and infinities included.
 * So kir_eval's bits.  Shared rows are padded to 65 floats so that
 * a warp's stores of a transposed tile hit different banks.
 *
 * The launch wants blocks of exactly CU_GEMM_THREADS threads
 * (CuLaunch.block); the function traps otherwise.  threads = tiles x
 * CU_GEMM_THREADS, so a launcher's usual grid (threads / block, capped)
 * covers the tiles.
 */
#include <string.h>

#include "cuda_internal.h"

enum { BN = 64, BK = 16, TN = 4, NT = CU_GEMM_THREADS, PAD = 65 };

/* The head's statements: k's first n_head (the whole body for a node's own kernel). */
static int head_len(const Kernel *k) { return k->head ? k->n_head : k->body->n_body; }

/* What the head's statements do with their accumulators. */
typedef struct Scan {
  const KStmt *upd, *store, *add; /* the fma update; the store; total = total + part */
  int n_upd, n_store, n_add;
} Scan;

static bool is_var(const KExpr *e, int var) { return e->kind == KE_VAR && e->var == var; }

/* Finds in s the fma update of the reduction, the store of its result and
 * the additions of one variable to another (a segment's partial sum to
 * the total). */
static void scan(const KStmt *s, Scan *c) {
  if (s->kind == KS_SET && s->value->kind == KE_FMA) {
    c->upd = s;
    c->n_upd++;
  }
  if (s->kind == KS_SET && s->value->kind == KE_BINARY && s->value->op == KO_ADD &&
      is_var(s->value->a, s->var) && s->value->b->kind == KE_VAR) {
    c->add = s;
    c->n_add++;
  }
  if (s->kind == KS_STORE) {
    c->store = s;
    c->n_store++;
  }
  for (int i = 0; i < s->n_body; i++)
    scan(s->body[i], c);
}

/* Whether the head's statements are the lowering's nest for node n: its
 * fma reads buffers 0 and 1, its store writes buffer 2 from the fma's
 * accumulator, or (segmented: *segmented) from a total to which the
 * accumulator is added. */
static bool is_gemm_nest(const Kernel *k, const Node *n, bool *segmented) {
  Scan c = {0};
  for (int i = 0; i < head_len(k); i++)
    scan(k->body->body[i], &c);
  if (c.n_upd != 1 || c.n_store != 1 || c.n_add > 1 || k->n_bufs < 3)
    return false;
  const KExpr *f = c.upd->value;
  if (f->a->kind != KE_LOAD || f->a->buf != 0 || f->b->kind != KE_LOAD || f->b->buf != 1 ||
      !is_var(f->c, c.upd->var))
    return false;
  *segmented = c.n_add == 1;
  int total = *segmented ? c.add->var : c.upd->var;
  if (*segmented && !is_var(c.add->value->b, c.upd->var))
    return false;
  if (c.store->buf != 2 || !is_var(c.store->value, total))
    return false;
  for (int b = 0; b < 3; b++)
    if (k->bufs[b].type != KT_F32)
      return false;
  return k->bufs[0].numel == shape_numel(&n->in[0]->shape) &&
         k->bufs[1].numel == shape_numel(&n->in[1]->shape) &&
         k->bufs[2].numel >= shape_numel(&n->shape) && k->bufs[2].role == KB_OUT;
}

/* Element strides of one operand's matrices over the output's batch
 * dimensions (0 where the operand broadcasts), as lower_matmul's. */
static void batch_strides(const Shape *op, const Shape *out, int64_t mat, int64_t *st) {
  int br = out->rank - 2, orb = op->rank - 2;
  int64_t s = mat;
  for (int d = br - 1; d >= 0; d--) {
    int od = d - (br - orb);
    st[d] = od >= 0 && op->dim[od] != 1 ? s : 0;
    if (od >= 0)
      s *= op->dim[od];
  }
}

static void describe_matmul(const Node *n, CuGemm *g) {
  const Shape *as = &n->in[0]->shape, *os = &n->shape;
  g->br = os->rank - 2;
  g->m = os->dim[g->br];
  g->n = os->dim[g->br + 1];
  g->k = n->at.ta ? as->dim[as->rank - 2] : as->dim[as->rank - 1];
  g->kind = CU_GEMM_MATMUL;
  g->ta = n->at.ta;
  g->tb = n->at.tb;
  g->batch = 1;
  for (int d = 0; d < g->br; d++) {
    g->bdim[d] = os->dim[d];
    g->batch *= os->dim[d];
  }
  batch_strides(as, os, g->m * g->k, g->sa);
  batch_strides(&n->in[1]->shape, os, g->k * g->n, g->sb);
}

/* The window geometry of ir/lower_nn.c's geo(): x, the input side [N, C,
 * H, W], y the output side [N, O, Ho, Wo]. */
static void window(const Node *n, const Shape *xs, const Shape *ys, CuGemm *g) {
  g->groups = n->at.groups ? n->at.groups : 1;
  g->nimg = xs->dim[0];
  g->c = xs->dim[1], g->h = xs->dim[2], g->w = xs->dim[3];
  g->o = ys->dim[1], g->ho = ys->dim[2], g->wo = ys->dim[3];
  g->kh = n->at.kernel[0], g->kw = n->at.kernel[1];
  g->sy = n->at.stride[0], g->sx = n->at.stride[1];
  g->py = n->at.pad[0], g->px = n->at.pad[1];
  g->dy = n->at.dilation[0] ? n->at.dilation[0] : 1;
  g->dx = n->at.dilation[1] ? n->at.dilation[1] : 1;
  g->cg = g->c / g->groups;
  g->og = g->o / g->groups;
}

/* conv2d: x [N, C, H, W], w [O, C/groups, kh, kw], out [N, O, Ho, Wo]. */
static void describe_conv(const Node *n, CuGemm *g) {
  window(n, &n->in[0]->shape, &n->shape, g);
  g->kind = CU_GEMM_CONV;
  g->batch = g->nimg * g->groups;
  g->m = g->og;
  g->n = g->ho * g->wo;
  g->k = g->cg * g->kh * g->kw;
}

/* conv_transpose2d: x [N, C, H, W], w [C, O/groups, kh, kw], out [N, O,
 * Ho, Wo]; each tap's channel sum is a segment. */
static void describe_tconv(const Node *n, CuGemm *g) {
  window(n, &n->in[0]->shape, &n->shape, g);
  g->kind = CU_GEMM_TCONV;
  g->batch = g->nimg * g->groups;
  g->m = g->og;
  g->n = g->ho * g->wo;
  g->k = g->kh * g->kw * g->cg;
  g->seg = g->cg;
}

/* conv2d_back_w: x [N, C, H, W], gy [N, O, Ho, Wo], out [O, C/groups, kh,
 * kw]; chunks of images are segments. */
static void describe_backw(const Node *n, CuGemm *g) {
  window(n, &n->in[0]->shape, &n->in[1]->shape, g);
  g->kind = CU_GEMM_BACKW;
  g->batch = g->groups;
  g->m = g->og;
  g->n = g->cg * g->kh * g->kw;
  g->k = g->nimg * g->ho * g->wo;
  int64_t cs = conv2d_back_w_chunk(n);
  g->seg = cs < g->nimg ? cs * g->ho * g->wo : 0;
}

bool cu_gemm_describe(const Kernel *k, CuGemm *g) {
  const Node *n = k->head ? k->head : k->node;
  bool segmented;
  if (!n || (n->op != OP_MATMUL && n->op != OP_CONV2D && n->op != OP_CONV_TRANSPOSE2D &&
             n->op != OP_CONV2D_BACK_W) ||
      shape_numel(&n->shape) == 0 || n->n_in != 2 || head_len(k) < 1 ||
      !is_gemm_nest(k, n, &segmented))
    return false;
  if (n->op == OP_MATMUL && (n->at.view || n->at.bsum))
    return false; /* strided views (passes/view.c), batch sums (batchsum.c): the loop nest */
  memset(g, 0, sizeof *g);
  switch (n->op) {
  case OP_MATMUL: describe_matmul(n, g); break;
  case OP_CONV2D: describe_conv(n, g); break;
  case OP_CONV_TRANSPOSE2D: describe_tconv(n, g); break;
  default: describe_backw(n, g); break;
  }
  if (g->k < 1 || segmented != (g->seg > 0))
    return false;
  g->tm = g->m <= 16 ? 1 : g->m <= 32 ? 2 : 4;
  g->n_head = head_len(k);
  int64_t bm = 16 * g->tm;
  g->tiles = g->batch * ((g->m + bm - 1) / bm) * ((g->n + BN - 1) / BN);
  return true;
}

static bool is_conv(const CuGemm *g) { return g->kind != CU_GEMM_MATMUL; }

/* kiln_ao, kiln_bo: the tile's batch element's A and B. */
static void batch_offsets(Em *m, const CuGemm *g) {
  long long hw = g->h * g->w;
  switch (g->kind) {
  case CU_GEMM_CONV: /* bt = (image, group) */
  case CU_GEMM_TCONV:
    cu_line(m, "  const long long kiln_img = kiln_bt / %lldLL, kiln_grp = kiln_bt %% %lldLL;",
            (long long)g->groups, (long long)g->groups);
    cu_line(m, "  const long long kiln_ao = kiln_grp * %lldLL, kiln_bo = (kiln_img * %lldLL + "
               "kiln_grp * %lldLL) * %lldLL;",
            (long long)(g->og * g->cg * g->kh * g->kw), (long long)g->c, (long long)g->cg, hw);
    return;
  case CU_GEMM_BACKW: /* bt = group */
    cu_line(m, "  const long long kiln_ao = kiln_bt * %lldLL, kiln_bo = kiln_bt * %lldLL;",
            (long long)(g->og * g->ho * g->wo), (long long)g->cg * hw);
    return;
  case CU_GEMM_MATMUL: break;
  }
  cu_line(m, "  long long kiln_ao = 0, kiln_bo = 0, kiln_q = kiln_bt;");
  for (int d = g->br - 1; d >= 0; d--) {
    if (g->sa[d] || g->sb[d])
      cu_line(m, "  { const long long kiln_i = kiln_q %% %lldLL; kiln_ao += kiln_i * %lldLL; "
                 "kiln_bo += kiln_i * %lldLL; }",
              (long long)g->bdim[d], (long long)g->sa[d], (long long)g->sb[d]);
    cu_line(m, "  kiln_q /= %lldLL;", (long long)g->bdim[d]);
  }
  cu_line(m, "  (void)kiln_q;");
}

/* A(kiln_gm, kiln_gk)'s offset from kiln_ao. */
static const char *a_index(Arena *a, const CuGemm *g) {
  long long M = g->m, K = g->k, khw = g->kh * g->kw, howo = g->ho * g->wo;
  switch (g->kind) {
  case CU_GEMM_MATMUL:
    return g->ta ? arena_fmt(a, "kiln_gk * %lldLL + kiln_gm", M)
                 : arena_fmt(a, "kiln_gm * %lldLL + kiln_gk", K);
  case CU_GEMM_CONV: return arena_fmt(a, "kiln_gm * %lldLL + kiln_gk", K);
  case CU_GEMM_TCONV: /* k = (tap, channel): w[channel, m, tap] */
    return arena_fmt(a, "(kiln_gk %% %lldLL * %lldLL + kiln_gm) * %lldLL + kiln_gk / %lldLL",
                     (long long)g->cg, (long long)g->og, khw, (long long)g->cg);
  case CU_GEMM_BACKW: /* k = (image, pixel): gy[image, m, pixel] */
    return arena_fmt(a, "kiln_gk / %lldLL * %lldLL + kiln_gm * %lldLL + kiln_gk %% %lldLL", howo,
                     (long long)g->o * howo, howo, howo);
  }
  return "";
}

/* One thread's share of the A tile: BM x BK, consecutive threads along
 * A's contiguous dimension (K, or M when transposed or for a transposed
 * convolution's weights, where M's stride is the shorter). */
static void load_a(Em *m, const CuGemm *g) {
  int bm = 16 * g->tm;
  cu_line(m, "    for (int kiln_r = 0; kiln_r < %d; kiln_r++) {", bm * BK / NT);
  cu_line(m, "      const int kiln_e = kiln_tid + %d * kiln_r;", NT);
  if (g->ta || g->kind == CU_GEMM_TCONV)
    cu_line(m, "      const int kiln_row = kiln_e %% %d, kiln_kk = kiln_e / %d;", bm, bm);
  else
    cu_line(m, "      const int kiln_row = kiln_e / %d, kiln_kk = kiln_e %% %d;", BK, BK);
  cu_line(m, "      const long long kiln_gm = kiln_m0 + kiln_row, kiln_gk = kiln_k0 + kiln_kk;");
  cu_line(m, "      kiln_as[kiln_kk][kiln_row] = kiln_gm < %lldLL && kiln_gk < %lldLL ? "
             "%s[kiln_ao + %s] : 0.0f;", (long long)g->m, (long long)g->k,
          m->buf[is_conv(g) ? 1 : 0], a_index(m->k->arena, g));
  cu_line(m, "    }");
}

/* The input pixel (kiln_iy, kiln_ix) of B(kiln_gk, kiln_gn), in channel
 * kiln_ci (and image kiln_im), and whether there is one (kiln_ok). */
static void conv_pixel(Em *m, const CuGemm *g) {
  long long khw = g->kh * g->kw, kw = g->kw, kh = g->kh, wo = g->wo;
  switch (g->kind) {
  case CU_GEMM_CONV: /* k = (channel, tap), n = output pixel */
    cu_line(m, "      const long long kiln_ci = kiln_gk / %lldLL, kiln_ti = kiln_gk / %lldLL %% "
               "%lldLL, kiln_tj = kiln_gk %% %lldLL, kiln_im = 0;", khw, kw, kh, kw);
    cu_line(m, "      const long long kiln_oy = kiln_gn / %lldLL, kiln_ox = kiln_gn %% %lldLL;",
            wo, wo);
    break;
  case CU_GEMM_BACKW: /* k = (image, output pixel), n = (channel, tap) */
    cu_line(m, "      const long long kiln_ci = kiln_gn / %lldLL, kiln_ti = kiln_gn / %lldLL %% "
               "%lldLL, kiln_tj = kiln_gn %% %lldLL;", khw, kw, kh, kw);
    cu_line(m, "      const long long kiln_im = kiln_gk / %lldLL, kiln_oy = kiln_gk / %lldLL %% "
               "%lldLL, kiln_ox = kiln_gk %% %lldLL;",
            (long long)(g->ho * g->wo), wo, (long long)g->ho, wo);
    break;
  case CU_GEMM_TCONV: /* k = (tap, channel), n = output pixel: the covering window */
    cu_line(m, "      const long long kiln_ci = kiln_gk %% %lldLL, kiln_ti = kiln_gk / %lldLL / "
               "%lldLL, kiln_tj = kiln_gk / %lldLL %% %lldLL, kiln_im = 0;",
            (long long)g->cg, (long long)g->cg, kw, (long long)g->cg, kw);
    cu_line(m, "      const long long kiln_vy = kiln_gn / %lldLL + %lldLL - kiln_ti * %lldLL, "
               "kiln_vx = kiln_gn %% %lldLL + %lldLL - kiln_tj * %lldLL;",
            wo, (long long)g->py, (long long)g->dy, wo, (long long)g->px, (long long)g->dx);
    cu_line(m, "      const long long kiln_iy = kiln_vy / %lldLL, kiln_ix = kiln_vx / %lldLL;",
            (long long)g->sy, (long long)g->sx);
    cu_line(m, "      const bool kiln_ok = kiln_gn < %lldLL && kiln_gk < %lldLL && kiln_vy >= 0 && "
               "kiln_vx >= 0 && kiln_vy %% %lldLL == 0 && kiln_vx %% %lldLL == 0 && kiln_iy < "
               "%lldLL && kiln_ix < %lldLL;",
            (long long)g->n, (long long)g->k, (long long)g->sy, (long long)g->sx,
            (long long)g->h, (long long)g->w);
    return;
  case CU_GEMM_MATMUL: return;
  }
  cu_line(m, "      const long long kiln_iy = kiln_oy * %lldLL - %lldLL + kiln_ti * %lldLL, "
             "kiln_ix = kiln_ox * %lldLL - %lldLL + kiln_tj * %lldLL;",
          (long long)g->sy, (long long)g->py, (long long)g->dy, (long long)g->sx,
          (long long)g->px, (long long)g->dx);
  cu_line(m, "      const bool kiln_ok = kiln_gn < %lldLL && kiln_gk < %lldLL && kiln_iy >= 0 && "
             "kiln_iy < %lldLL && kiln_ix >= 0 && kiln_ix < %lldLL;",
          (long long)g->n, (long long)g->k, (long long)g->h, (long long)g->w);
}

/* A convolution's B element: the input pixel, 0 and flagged off where
 * there is none (padding; no covering window). */
static void conv_b(Em *m, const CuGemm *g) {
  long long hw = g->h * g->w;
  conv_pixel(m, g);
  cu_line(m, "      kiln_bs[kiln_kk][kiln_col] = kiln_ok ? %s[kiln_bo + kiln_im * %lldLL + "
             "kiln_ci * %lldLL + kiln_iy * %lldLL + kiln_ix] : 0.0f;",
          m->buf[0], (long long)g->c * hw, hw, (long long)g->w);
  cu_line(m, "      kiln_bok[kiln_kk][kiln_col] = kiln_ok;");
}

/* One thread's share of the B tile: BK x BN, consecutive threads along
 * B's contiguous dimension (N, or K when transposed; output pixels or a
 * weight gradient's taps for a convolution). */
static void load_b(Em *m, const CuGemm *g) {
  long long N = g->n, K = g->k;
  cu_line(m, "    for (int kiln_r = 0; kiln_r < %d; kiln_r++) {", BN * BK / NT);
  cu_line(m, "      const int kiln_e = kiln_tid + %d * kiln_r;", NT);
  if (g->tb)
    cu_line(m, "      const int kiln_col = kiln_e / %d, kiln_kk = kiln_e %% %d;", BK, BK);
  else
    cu_line(m, "      const int kiln_col = kiln_e %% %d, kiln_kk = kiln_e / %d;", BN, BN);
  cu_line(m, "      const long long kiln_gn = kiln_n0 + kiln_col, kiln_gk = kiln_k0 + kiln_kk;");
  if (is_conv(g))
    conv_b(m, g);
  else
    cu_line(m, "      kiln_bs[kiln_kk][kiln_col] = kiln_gn < %lldLL && kiln_gk < %lldLL ? "
               "%s[kiln_bo + %s] : 0.0f;", N, K, m->buf[1],
            g->tb ? arena_fmt(m->k->arena, "kiln_gn * %lldLL + kiln_gk", K)
                  : arena_fmt(m->k->arena, "kiln_gk * %lldLL + kiln_gn", N));
  cu_line(m, "    }");
}

/* total = total + part, part = +0: a segment's end. */
static void end_segment(Em *m, const CuGemm *g, const char *indent) {
  cu_line(m, "%sfor (int kiln_i = 0; kiln_i < %d; kiln_i++)", indent, g->tm);
  cu_line(m, "%s  for (int kiln_j = 0; kiln_j < %d; kiln_j++) {", indent, TN);
  cu_line(m, "%s    kiln_acc[kiln_i][kiln_j] = kiln_acc[kiln_i][kiln_j] + "
             "kiln_part[kiln_i][kiln_j];", indent);
  cu_line(m, "%s    kiln_part[kiln_i][kiln_j] = 0.0f;", indent);
  cu_line(m, "%s  }", indent);
}

/* The multiply-adds of one K tile: k ascending, one fmaf per term with the
 * IR's operand order (buffer 0's operand first: matmul's A, a
 * convolution's input), none where B's flag is off; a segment ends at
 * every multiple of seg. */
static void tile_fmas(Em *m, const CuGemm *g) {
  const char *into = g->seg ? "kiln_part" : "kiln_acc";
  cu_line(m, "    const int kiln_kn = %lldLL - kiln_k0 < %d ? (int)(%lldLL - kiln_k0) : %d;",
          (long long)g->k, BK, (long long)g->k, BK);
  cu_line(m, "    for (int kiln_kk = 0; kiln_kk < kiln_kn; kiln_kk++) {");
  if (g->seg) {
    cu_line(m, "      if (kiln_k0 + kiln_kk > 0 && (kiln_k0 + kiln_kk) %% %lldLL == 0)",
            (long long)g->seg);
    end_segment(m, g, "        ");
  }
  cu_line(m, "      float kiln_a[%d], kiln_b[%d];", g->tm, TN);
  cu_line(m, "      for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->tm);
  cu_line(m, "        kiln_a[kiln_i] = kiln_as[kiln_kk][kiln_ty + 16 * kiln_i];");
  cu_line(m, "      for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  cu_line(m, "        kiln_b[kiln_j] = kiln_bs[kiln_kk][kiln_tx + 16 * kiln_j];");
  cu_line(m, "      for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  const char *ind = is_conv(g) ? "  " : "";
  if (is_conv(g))
    cu_line(m, "        if (kiln_bok[kiln_kk][kiln_tx + 16 * kiln_j])");
  cu_line(m, "%s        for (int kiln_i = 0; kiln_i < %d; kiln_i++)", ind, g->tm);
  cu_line(m, "%s          %s[kiln_i][kiln_j] = fmaf(%s, %s[kiln_i][kiln_j]);", ind, into,
          is_conv(g) ? "kiln_b[kiln_j], kiln_a[kiln_i]" : "kiln_a[kiln_i], kiln_b[kiln_j]", into);
  cu_line(m, "    }");
}

/* The results inside C, each followed by the epilogue at its element. */
static void store_c(Em *m, const CuGemm *g, const CuEpi *epi) {
  cu_line(m, "  for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->tm);
  cu_line(m, "    for (int kiln_j = 0; kiln_j < %d; kiln_j++) {", TN);
  cu_line(m, "      const long long kiln_gm = kiln_m0 + kiln_ty + 16 * kiln_i, "
             "kiln_gn = kiln_n0 + kiln_tx + 16 * kiln_j;");
  cu_line(m, "      if (kiln_gm < %lldLL && kiln_gn < %lldLL) {", (long long)g->m,
          (long long)g->n);
  cu_line(m, "        const long long kiln_c = kiln_bt * %lldLL + kiln_gm * %lldLL + kiln_gn;",
          (long long)(g->m * g->n), (long long)g->n);
  cu_line(m, "        %s[kiln_c] = kiln_acc[kiln_i][kiln_j];", m->buf[2]);
  if (epi) {
    cu_line(m, "        /* the epilogue at this element */");
    m->indent += 4;
    epi->element(m, epi->ctx);
    m->indent -= 4;
  }
  cu_line(m, "      }");
  cu_line(m, "    }");
}

/* The function's opening comment: what it computes and how. */
static void describe_line(Em *m, const CuGemm *g) {
  static const char *const what[] = {
      [CU_GEMM_CONV] = "conv2d as %lld GEMMs of %lld x %lld over K = %lld (channel, tap row, "
                       "tap column), implicit im2col",
      [CU_GEMM_TCONV] = "conv_transpose2d as %lld GEMMs of %lld x %lld over K = %lld (tap row, "
                        "tap column, channel; a sum per tap), covering input pixels gathered",
      [CU_GEMM_BACKW] = "conv2d_back_w as %lld GEMMs of %lld x %lld over K = %lld (image, output "
                        "row, output column), input pixels gathered",
  };
  int bm = 16 * g->tm;
  if (is_conv(g)) {
    Sb t = {0};
    sb_printf(&t, what[g->kind], (long long)g->batch, (long long)g->m, (long long)g->n,
              (long long)g->k);
    cu_line(m, "/* %s: tiles of %dx%d, K by %d, %dx%d per thread%s (cuda_gemm.c) */", t.s, bm,
            BN, BK, g->tm, TN,
            g->seg ? arena_fmt(m->k->arena, ", partial sums of %lld terms", (long long)g->seg)
                   : "");
    sb_free(&t);
    return;
  }
  cu_line(m, "/* C[%lld][%lld x %lld] = A%s B%s over K = %lld: tiles of %dx%d, K by %d, %dx%d "
             "per thread (cuda_gemm.c) */",
          (long long)g->batch, (long long)g->m, (long long)g->n, g->ta ? "^T" : "",
          g->tb ? "^T" : "", (long long)g->k, bm, BN, BK, g->tm, TN);
}

/* acc (and part, with segments) = +0 */
static void zero_accumulators(Em *m, const CuGemm *g) {
  cu_line(m, "  float kiln_acc[%d][%d]%s;", g->tm, TN,
          g->seg ? arena_fmt(m->k->arena, ", kiln_part[%d][%d]", g->tm, TN) : "");
  cu_line(m, "  for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->tm);
  cu_line(m, "    for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  cu_line(m, "      kiln_acc[kiln_i][kiln_j] = 0.0f%s;",
          g->seg ? ", kiln_part[kiln_i][kiln_j] = 0.0f" : "");
}

void cu_gemm_body(Em *m, const CuGemm *g, CuLaunch *l, const CuEpi *epi) {
  int bm = 16 * g->tm;
  long long mt = (g->m + bm - 1) / bm, nt = (g->n + BN - 1) / BN;
  describe_line(m, g);
  cu_line(m, "__shared__ float kiln_as[%d][%d], kiln_bs[%d][%d];", BK, PAD, BK, PAD);
  if (is_conv(g))
    cu_line(m, "__shared__ bool kiln_bok[%d][%d]; /* B's element is an input pixel */", BK, PAD);
  cu_line(m, "if (blockDim.x != %du)", NT);
  cu_line(m, "  __trap(); /* the tiles assume exactly this many threads */");
  if (epi)
    epi->top(m, epi->ctx);
  cu_line(m, "const int kiln_tid = threadIdx.x, kiln_tx = kiln_tid %% 16, "
             "kiln_ty = kiln_tid / 16;");
  cu_line(m, "for (long long kiln_t = blockIdx.x; kiln_t < %lldLL; kiln_t += gridDim.x) {",
          (long long)g->tiles);
  cu_line(m, "  const long long kiln_bt = kiln_t / %lldLL, "
             "kiln_m0 = kiln_t / %lldLL %% %lldLL * %d, kiln_n0 = kiln_t %% %lldLL * %d;",
          mt * nt, nt, mt, bm, nt, BN);
  batch_offsets(m, g);
  zero_accumulators(m, g);
  cu_line(m, "  for (long long kiln_k0 = 0; kiln_k0 < %lldLL; kiln_k0 += %d) {", (long long)g->k,
          BK);
  load_a(m, g);
  load_b(m, g);
  cu_line(m, "    __syncthreads();");
  tile_fmas(m, g);
  cu_line(m, "    __syncthreads();");
  cu_line(m, "  }");
  if (g->seg)
    end_segment(m, g, "  ");
  store_c(m, g, epi);
  cu_line(m, "}");
  l->threads = g->tiles * NT;
  l->block = NT;
}
