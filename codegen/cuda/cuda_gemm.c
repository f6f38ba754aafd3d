/*
 * cuda_gemm.c: matmul and conv2d kernels tiled through shared memory with
 * register blocking, in place of the Kernel IR's one-thread-per-element
 * nest.
 *
 * Which kernels: a matmul or conv2d node's own kernel (ir/lower_nn.c:
 * lower_matmul with transposed operands and broadcast batch dimensions,
 * lower_conv2d with stride, padding, dilation and groups), and a fused
 * kernel led by one (Kernel.head): its first n_head statements, the node's
 * nest, become the tiled function.  The epilogue after them is applied to
 * each element of C right after the tile stores it, in the same function
 * (CuEpi; cuda_emit.c decides when that is safe), else it stays the
 * emitter's ordinary parts, launched after it.  The IR is checked to be
 * the lowering's (one fma update, of loads of buffers 0 and 1, buffer 2
 * stored from its accumulator, f32, sizes the node's); anything else keeps
 * the generic code.
 *
 * Both are a batch of GEMMs C[bt] (M x N) = A[bt] (M x K) B[bt] (K x N):
 *   matmul   bt over the output's batch dimensions, A and B the operands
 *            (broadcast: stride 0);
 *   conv2d   bt = (image, group); M = the group's output channels, N =
 *            the output pixels, K = (input channel, tap row, tap column)
 *            in that order: the IR's loop order; A = the weights, whose
 *            rows are contiguous along K; B(k, n) = the input pixel tap k
 *            of output pixel n reads, gathered while loading the tile
 *            (implicit im2col: no column matrix is stored), with a flag
 *            for taps in the padding, which the IR skips (no fma at all).
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
 * added.  So kir_eval's bits.  Shared rows are padded to 65 floats so that
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

/* Finds in s the fma update of the reduction and the store of its result. */
static void scan(const KStmt *s, const KStmt **upd, const KStmt **store, int *n_upd,
                 int *n_store) {
  if (s->kind == KS_SET && s->value->kind == KE_FMA) {
    *upd = s;
    (*n_upd)++;
  }
  if (s->kind == KS_STORE) {
    *store = s;
    (*n_store)++;
  }
  for (int i = 0; i < s->n_body; i++)
    scan(s->body[i], upd, store, n_upd, n_store);
}

/* Whether the head's statements are lower_matmul's or lower_conv2d's nest
 * for node n: its fma reads buffers 0 and 1, its store writes buffer 2. */
static bool is_gemm_nest(const Kernel *k, const Node *n) {
  const KStmt *upd = NULL, *store = NULL;
  int n_upd = 0, n_store = 0;
  for (int i = 0; i < head_len(k); i++)
    scan(k->body->body[i], &upd, &store, &n_upd, &n_store);
  if (n_upd != 1 || n_store != 1 || k->n_bufs < 3)
    return false;
  const KExpr *f = upd->value;
  if (f->a->kind != KE_LOAD || f->a->buf != 0 || f->b->kind != KE_LOAD || f->b->buf != 1 ||
      f->c->kind != KE_VAR || f->c->var != upd->var)
    return false;
  if (store->buf != 2 || store->value->kind != KE_VAR || store->value->var != upd->var)
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

/* The geometry of ir/lower_nn.c's geo(): x [N, C, H, W], w [O, C/groups,
 * kh, kw], out [N, O, Ho, Wo]. */
static void describe_conv(const Node *n, CuGemm *g) {
  const Shape *xs = &n->in[0]->shape, *os = &n->shape;
  g->conv = true;
  g->groups = n->at.groups ? n->at.groups : 1;
  g->c = xs->dim[1], g->h = xs->dim[2], g->w = xs->dim[3];
  g->ho = os->dim[2], g->wo = os->dim[3];
  g->kh = n->at.kernel[0], g->kw = n->at.kernel[1];
  g->sy = n->at.stride[0], g->sx = n->at.stride[1];
  g->py = n->at.pad[0], g->px = n->at.pad[1];
  g->dy = n->at.dilation[0] ? n->at.dilation[0] : 1;
  g->dx = n->at.dilation[1] ? n->at.dilation[1] : 1;
  g->cg = g->c / g->groups;
  g->og = os->dim[1] / g->groups;
  g->batch = xs->dim[0] * g->groups;
  g->m = g->og;
  g->n = g->ho * g->wo;
  g->k = g->cg * g->kh * g->kw;
}

bool cu_gemm_describe(const Kernel *k, CuGemm *g) {
  const Node *n = k->head ? k->head : k->node;
  if (!n || (n->op != OP_MATMUL && n->op != OP_CONV2D) || shape_numel(&n->shape) == 0 ||
      n->n_in != 2 || head_len(k) < 1 || !is_gemm_nest(k, n))
    return false;
  memset(g, 0, sizeof *g);
  if (n->op == OP_MATMUL)
    describe_matmul(n, g);
  else
    describe_conv(n, g);
  if (g->k < 1)
    return false;
  g->tm = g->m <= 16 ? 1 : g->m <= 32 ? 2 : 4;
  g->n_head = head_len(k);
  int64_t bm = 16 * g->tm;
  g->tiles = g->batch * ((g->m + bm - 1) / bm) * ((g->n + BN - 1) / BN);
  return true;
}

/* kiln_ao, kiln_bo: the tile's batch element's A and B. */
static void batch_offsets(Em *m, const CuGemm *g) {
  if (g->conv) { /* bt = (image, group) */
    cu_line(m, "  const long long kiln_img = kiln_bt / %lldLL, kiln_grp = kiln_bt %% %lldLL;",
            (long long)g->groups, (long long)g->groups);
    cu_line(m, "  const long long kiln_ao = kiln_grp * %lldLL, kiln_bo = (kiln_img * %lldLL + "
               "kiln_grp * %lldLL) * %lldLL;",
            (long long)(g->og * g->k), (long long)g->c, (long long)g->cg,
            (long long)(g->h * g->w));
    return;
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

/* One thread's share of the A tile: BM x BK, consecutive threads along
 * A's contiguous dimension (K, or M when transposed). */
static void load_a(Em *m, const CuGemm *g) {
  int bm = 16 * g->tm;
  long long M = g->m, K = g->k;
  cu_line(m, "    for (int kiln_r = 0; kiln_r < %d; kiln_r++) {", bm * BK / NT);
  cu_line(m, "      const int kiln_e = kiln_tid + %d * kiln_r;", NT);
  if (g->ta)
    cu_line(m, "      const int kiln_row = kiln_e %% %d, kiln_kk = kiln_e / %d;", bm, bm);
  else
    cu_line(m, "      const int kiln_row = kiln_e / %d, kiln_kk = kiln_e %% %d;", BK, BK);
  cu_line(m, "      const long long kiln_gm = kiln_m0 + kiln_row, kiln_gk = kiln_k0 + kiln_kk;");
  cu_line(m, "      kiln_as[kiln_kk][kiln_row] = kiln_gm < %lldLL && kiln_gk < %lldLL ? "
             "%s[kiln_ao + %s] : 0.0f;", M, K, m->buf[g->conv ? 1 : 0],
          g->ta ? arena_fmt(m->k->arena, "kiln_gk * %lldLL + kiln_gm", M)
                : arena_fmt(m->k->arena, "kiln_gm * %lldLL + kiln_gk", K));
  cu_line(m, "    }");
}

/* A convolution's B element: input pixel of tap kiln_gk for output pixel
 * kiln_gn, and whether the tap is inside the image. */
static void conv_b(Em *m, const CuGemm *g) {
  long long khw = g->kh * g->kw;
  cu_line(m, "      const long long kiln_ci = kiln_gk / %lldLL, kiln_ti = kiln_gk / %lldLL %% "
             "%lldLL, kiln_tj = kiln_gk %% %lldLL;", khw, (long long)g->kw, (long long)g->kh,
          (long long)g->kw);
  cu_line(m, "      const long long kiln_iy = kiln_gn / %lldLL * %lldLL - %lldLL + "
             "kiln_ti * %lldLL;",
          (long long)g->wo, (long long)g->sy, (long long)g->py, (long long)g->dy);
  cu_line(m, "      const long long kiln_ix = kiln_gn %% %lldLL * %lldLL - %lldLL + "
             "kiln_tj * %lldLL;",
          (long long)g->wo, (long long)g->sx, (long long)g->px, (long long)g->dx);
  cu_line(m, "      const bool kiln_ok = kiln_gn < %lldLL && kiln_gk < %lldLL && kiln_iy >= 0 && "
             "kiln_iy < %lldLL && kiln_ix >= 0 && kiln_ix < %lldLL;",
          (long long)g->n, (long long)g->k, (long long)g->h, (long long)g->w);
  cu_line(m, "      kiln_bs[kiln_kk][kiln_col] = kiln_ok ? %s[kiln_bo + kiln_ci * %lldLL + kiln_iy "
             "* %lldLL + kiln_ix] : 0.0f;", m->buf[0], (long long)(g->h * g->w), (long long)g->w);
  cu_line(m, "      kiln_bok[kiln_kk][kiln_col] = kiln_ok;");
}

/* One thread's share of the B tile: BK x BN, consecutive threads along
 * B's contiguous dimension (N, or K when transposed; output pixels for a
 * convolution). */
static void load_b(Em *m, const CuGemm *g) {
  long long N = g->n, K = g->k;
  cu_line(m, "    for (int kiln_r = 0; kiln_r < %d; kiln_r++) {", BN * BK / NT);
  cu_line(m, "      const int kiln_e = kiln_tid + %d * kiln_r;", NT);
  if (g->tb)
    cu_line(m, "      const int kiln_col = kiln_e / %d, kiln_kk = kiln_e %% %d;", BK, BK);
  else
    cu_line(m, "      const int kiln_col = kiln_e %% %d, kiln_kk = kiln_e / %d;", BN, BN);
  cu_line(m, "      const long long kiln_gn = kiln_n0 + kiln_col, kiln_gk = kiln_k0 + kiln_kk;");
  if (g->conv)
    conv_b(m, g);
  else
    cu_line(m, "      kiln_bs[kiln_kk][kiln_col] = kiln_gn < %lldLL && kiln_gk < %lldLL ? "
               "%s[kiln_bo + %s] : 0.0f;", N, K, m->buf[1],
            g->tb ? arena_fmt(m->k->arena, "kiln_gn * %lldLL + kiln_gk", K)
                  : arena_fmt(m->k->arena, "kiln_gk * %lldLL + kiln_gn", N));
  cu_line(m, "    }");
}

/* The multiply-adds of one K tile: k ascending, one fmaf per term with the
 * IR's operand order (matmul: A's, B's; conv2d: the input's, the weight's),
 * none for a convolution's padding taps. */
static void tile_fmas(Em *m, const CuGemm *g) {
  cu_line(m, "    const int kiln_kn = %lldLL - kiln_k0 < %d ? (int)(%lldLL - kiln_k0) : %d;",
          (long long)g->k, BK, (long long)g->k, BK);
  cu_line(m, "    for (int kiln_kk = 0; kiln_kk < kiln_kn; kiln_kk++) {");
  cu_line(m, "      float kiln_a[%d], kiln_b[%d];", g->tm, TN);
  cu_line(m, "      for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->tm);
  cu_line(m, "        kiln_a[kiln_i] = kiln_as[kiln_kk][kiln_ty + 16 * kiln_i];");
  cu_line(m, "      for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  cu_line(m, "        kiln_b[kiln_j] = kiln_bs[kiln_kk][kiln_tx + 16 * kiln_j];");
  cu_line(m, "      for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  if (g->conv)
    cu_line(m, "        if (kiln_bok[kiln_kk][kiln_tx + 16 * kiln_j])");
  cu_line(m, "%s        for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->conv ? "  " : "", g->tm);
  cu_line(m, "%s          kiln_acc[kiln_i][kiln_j] = fmaf(%s, kiln_acc[kiln_i][kiln_j]);",
          g->conv ? "  " : "",
          g->conv ? "kiln_b[kiln_j], kiln_a[kiln_i]" : "kiln_a[kiln_i], kiln_b[kiln_j]");
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

void cu_gemm_body(Em *m, const CuGemm *g, CuLaunch *l, const CuEpi *epi) {
  int bm = 16 * g->tm;
  long long mt = (g->m + bm - 1) / bm, nt = (g->n + BN - 1) / BN;
  if (g->conv)
    cu_line(m, "/* conv2d as %lld GEMMs of %lld x %lld over K = %lld (channel, tap row, tap "
               "column), implicit im2col: tiles of %dx%d, K by %d, %dx%d per thread "
               "(cuda_gemm.c) */",
            (long long)g->batch, (long long)g->m, (long long)g->n, (long long)g->k, bm, BN, BK,
            g->tm, TN);
  else
    cu_line(m, "/* C[%lld][%lld x %lld] = A%s B%s over K = %lld: tiles of %dx%d, K by %d, %dx%d "
               "per thread (cuda_gemm.c) */",
            (long long)g->batch, (long long)g->m, (long long)g->n, g->ta ? "^T" : "",
            g->tb ? "^T" : "", (long long)g->k, bm, BN, BK, g->tm, TN);
  cu_line(m, "__shared__ float kiln_as[%d][%d], kiln_bs[%d][%d];", BK, PAD, BK, PAD);
  if (g->conv)
    cu_line(m, "__shared__ bool kiln_bok[%d][%d]; /* the tap is inside the image */", BK, PAD);
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
  cu_line(m, "  float kiln_acc[%d][%d];", g->tm, TN);
  cu_line(m, "  for (int kiln_i = 0; kiln_i < %d; kiln_i++)", g->tm);
  cu_line(m, "    for (int kiln_j = 0; kiln_j < %d; kiln_j++)", TN);
  cu_line(m, "      kiln_acc[kiln_i][kiln_j] = 0.0f;");
  cu_line(m, "  for (long long kiln_k0 = 0; kiln_k0 < %lldLL; kiln_k0 += %d) {", (long long)g->k,
          BK);
  load_a(m, g);
  load_b(m, g);
  cu_line(m, "    __syncthreads();");
  tile_fmas(m, g);
  cu_line(m, "    __syncthreads();");
  cu_line(m, "  }");
  store_c(m, g, epi);
  cu_line(m, "}");
  l->threads = g->tiles * NT;
  l->block = NT;
}
