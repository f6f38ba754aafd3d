/*
 * cg_gemm_ops.c: matmul and the convolutions described as GEMMs for the
 * driver in cg_gemm.c (see cg_gemm.h for the shape of a description).
 *
 * Each description reproduces its Kernel IR lowering (ir/lower_nn.c)
 * exactly: the same sum order per output element, taps in the padding
 * contributing fma(0, w, acc) = acc (the lowering skips them; the two agree
 * for finite weights, acc never being -0), so the compiled kernel writes
 * kir_eval's bits.
 *
 *   op                 batch   M     N        KB x KI           A (in place)          B (packed)
 *   matmul             batch   m     n        1 x k             a (any strides)       b rows / b^T
 *   (b broadcast)      1       b*m   n        1 x k             a's stacked rows      b rows / b^T
 *   (batch summed)     kept    m     n        summed x k (sum_kb)  a (any strides)    b rows / b^T
 *   conv2d             N*G     Og    Ho*Wo    1 x Cg*kh*kw      w[o, c, i, j]         im2col of x
 *   conv_transpose2d   N*G     Cog   Ho*Wo    kh*kw x Cig       w[c, o, i, j] per tap windows covering
 *   conv2d_back_w      G       Og    Cg*kh*kw N x Ho*Wo         gy[b, o, p]           im2col^T of x
 *
 * (conv_transpose2d sums taps outermost and channels inside, as its
 * lowering does, so its K panels are one tap's channels; conv2d_back_w
 * sums images outermost, in chunks of images when its output is small, a
 * task per chunk and group.)  conv2d with K <= DIRECT_K and stride 1
 * along x packs nothing: B is read in place from the (padded) image
 * (Gemm.conv_direct).
 *
 * Packing a panel is Kernel IR built here and emitted by cg_loop.c:
 * convolution rows are copied as runs (the part of an output row whose
 * tap lands inside the input is a contiguous or strided copy, the rest
 * zeros), so the copies vectorize; nothing divides per element.
 */
#include <stdlib.h>
#include <string.h>

#include "cg_gemm.h"

#define IC(v) ke_idx(k, (int64_t)(v))
#define FZ ke_f32(k, 0)
#define ADD(a, b) ke_binary(k, KO_ADD, a, b)
#define SUB(a, b) ke_binary(k, KO_SUB, a, b)
#define MUL(a, b) ke_binary(k, KO_MUL, a, b)
#define FDIV(a, b) ke_binary(k, KO_FLOORDIV, a, b)
#define MOD(a, b) ke_binary(k, KO_MOD, a, b)
#define MIN(a, b) ke_binary(k, KO_MIN, a, b)
#define MAX(a, b) ke_binary(k, KO_MAX, a, b)
#define GE(a, b) ke_binary(k, KO_GE, a, b)
#define LT(a, b) ke_binary(k, KO_LT, a, b)
#define EQ(a, b) ke_binary(k, KO_EQ, a, b)
#define AND(a, b) ke_binary(k, KO_AND, a, b)
#define SEL(c, a, b) ke_select(k, c, a, b)
#define VAR(v) ke_var(k, v)
#define LOAD(b, i) ke_load(k, b, i)

/* --- building blocks ------------------------------------------------------------- */

/* e itself if it is a constant or a variable, else a local set to it. */
static KExpr *let(Kernel *k, KStmt *body, const char *name, KExpr *e) {
  if (e->kind == KE_ICONST || e->kind == KE_VAR)
    return e;
  int v = kir_var(k, name, e->type);
  ks_add(k, body, ks_decl(k, v, e));
  return ke_var(k, v);
}

/* for v in 0..extent, appended to parent. */
static KStmt *loop(Kernel *k, KStmt *parent, const char *name, KExpr *extent, KLoopKind kind,
                   KExpr **v) {
  int var = kir_var(k, name, KT_IDX);
  KStmt *l = ks_loop(k, var, extent, kind);
  ks_add(k, parent, l);
  *v = ke_var(k, var);
  return l;
}

/* buf[dst + o * ds] = 0 for o in [lo, hi). */
static void zeros_in(Gemm *g, KStmt *body, int buf, KExpr *dst, int64_t ds, KExpr *lo, KExpr *hi) {
  Kernel *k = g->pk;
  KExpr *q;
  KStmt *l = loop(k, body, "z", SUB(hi, lo), KL_VECTOR, &q);
  ks_add(k, l, ks_store(k, buf, ADD(dst, MUL(ADD(lo, q), IC(ds))), FZ));
}

static void zeros(Gemm *g, KStmt *body, KExpr *dst, int64_t ds, KExpr *lo, KExpr *hi) {
  zeros_in(g, body, g->bp_buf, dst, ds, lo, hi);
}

/* Positions o in [oa, ob) of one row of the panel: bp[dst + o ds] =
 * x[src + o s + off] where ok and 0 <= o s + off < len, else 0: a run of
 * zeros, a copy, a run of zeros (the copy's bounds by ceiling division);
 * without zero_rest, the copy alone (the rest is zero already). */
static void row_copy_to(Gemm *g, KStmt *body, int dbuf, int xbuf, KExpr *dst, int64_t ds,
                        KExpr *src, int64_t s, KExpr *off, int64_t len, KExpr *oa, KExpr *ob,
                        KExpr *ok, bool zero_rest) {
  Kernel *k = g->pk;
  KExpr *lo = FDIV(SUB(IC(s - 1), off), IC(s));             /* first o with o s + off >= 0 */
  KExpr *hi = FDIV(ADD(SUB(IC(len), off), IC(s - 1)), IC(s)); /* first o with o s + off >= len */
  KExpr *lo1 = MIN(MAX(lo, oa), ob);
  if (ok)
    lo1 = SEL(ok, lo1, ob);
  lo1 = let(k, body, "lo", lo1);
  KExpr *hi1 = let(k, body, "hi", MIN(MAX(hi, lo1), ob)), *q;
  if (zero_rest)
    zeros_in(g, body, dbuf, dst, ds, oa, lo1);
  KStmt *l = loop(k, body, "cp", SUB(hi1, lo1), KL_VECTOR, &q);
  KExpr *o = ADD(lo1, q);
  ks_add(k, l, ks_store(k, dbuf, ADD(dst, MUL(o, IC(ds))),
                        LOAD(xbuf, ADD(src, ADD(MUL(o, IC(s)), off)))));
  if (zero_rest)
    zeros_in(g, body, dbuf, dst, ds, hi1, ob);
}

static void row_copy(Gemm *g, KStmt *body, int xbuf, KExpr *dst, int64_t ds, KExpr *src,
                     int64_t s, KExpr *off, int64_t len, KExpr *oa, KExpr *ob, KExpr *ok) {
  row_copy_to(g, body, g->bp_buf, xbuf, dst, ds, src, s, off, len, oa, ob, ok, true);
}

/* Columns nb..rnb of the panel's kc rows: zeros. */
static void tail_zeros(Gemm *g, KStmt *body) {
  Kernel *k = g->pk;
  KExpr *kk;
  KStmt *l = loop(k, body, "tr", VAR(g->v_kc), KL_SERIAL, &kk);
  zeros(g, l, MUL(kk, IC(g->s.ldbp)), 1, VAR(g->v_nb), VAR(g->v_rnb));
}

/* The rows of a [rows x len] image that the flat range [first, first +
 * cnt) touches: a loop over them, with the row in *r and the part of the
 * row inside the range in [*oa, *ob). */
static KStmt *rows_of(Gemm *g, KStmt *body, KExpr *first, KExpr *cnt, int64_t len, KExpr **r,
                      KExpr **oa, KExpr **ob) {
  Kernel *k = g->pk;
  KExpr *r0 = let(k, body, "r0", FDIV(first, IC(len))), *q;
  KExpr *n_rows = ADD(SUB(FDIV(SUB(ADD(first, cnt), IC(1)), IC(len)), r0), IC(1));
  KStmt *l = loop(k, body, "row", n_rows, KL_SERIAL, &q);
  *r = let(k, l, "y", ADD(r0, q));
  KExpr *start = MUL(*r, IC(len));
  *oa = let(k, l, "oa", MAX(IC(0), SUB(first, start)));
  *ob = let(k, l, "ob", MIN(IC(len), SUB(ADD(first, cnt), start)));
  return l;
}

/* --- the kernels --------------------------------------------------------------------- */

/* The node whose GEMM k computes: its own, or a fused kernel's head. */
static const Node *gemm_node(const Kernel *k) { return k->head ? k->head : k->node; }

/* Whether k is n's kernel in lw_kernel's layout: inputs in order, then
 * the output, all f32 and of their nodes' sizes (a fused kernel's head
 * writes the group's output, and the epilogue's buffers follow). */
static bool standard_layout(const Kernel *k) {
  const Node *n = gemm_node(k);
  if (!n || (k->head ? k->n_bufs < n->n_in + 1 : k->n_bufs != n->n_in + 1))
    return false;
  for (int i = 0; i <= n->n_in; i++) {
    const KBuf *b = &k->bufs[i];
    const Node *v = i < n->n_in ? n->in[i] : n;
    if ((b->node != v->id && !(k->head && i == n->n_in)) || b->type != KT_F32 ||
        b->role != (i < n->n_in ? KB_IN : KB_OUT) || b->numel != shape_numel(&v->shape) ||
        v->dtype != DT_F32)
      return false;
  }
  return true;
}

static void begin(Gemm *g, Arena *a, const Kernel *k0) {
  memset(g, 0, sizeof *g);
  g->k = k0;
  Kernel *k = g->pk = kir_new(a, k0->name, gemm_node(k0));
  for (int i = 0; i < k0->n_bufs; i++)
    kir_buf(k, k0->bufs[i].name, k0->bufs[i].type, k0->bufs[i].numel, k0->bufs[i].role,
            k0->bufs[i].node);
  for (int i = 0; i < k0->n_vars; i++) { /* k's own, at the same indices: a fused kernel's
                                          * epilogue statements run here too (tile_epilogue) */
    int v = kir_var(k, k0->vars[i].name, k0->vars[i].type);
    k->vars[v].name = k0->vars[i].name;
  }
  g->bp_buf = kir_buf(k, "bp", KT_F32, 1, KB_SCRATCH, -1);
  g->xs_buf = g->cs_buf = g->ps_buf = -1;
  g->c_buf = gemm_node(k0)->n_in;
  int *vs[] = {&g->v_t, &g->v_bt, &g->v_kb, &g->v_pc, &g->v_kc, &g->v_m0,
               &g->v_mc, &g->v_n0, &g->v_nb, &g->v_rnb, &g->v_ir, &g->v_jr, &g->v_y};
  static const char *const names[] = {"t", "bt", "kb", "pc", "kc", "m0",
                                      "mc", "n0", "nb", "rnb", "ir", "jr", "y"};
  for (int i = 0; i < countof(vs); i++)
    *vs[i] = kir_var(k, names[i], KT_IDX);
  g->pack = ks_block(k);
}

/* Sizes known: the schedule, then the panel's size. */
static void sized(Gemm *g) {
  gemm_schedule(g);
  g->pk->bufs[g->bp_buf].numel = g->s.kc * g->s.ldbp;
}

/* The offset of a matrix whose batch axes have strides st (0: broadcast),
 * for flat index bt of the product's batch axes dim[0..br) not summed and
 * flat index kb of those summed (bits of sum: Attrs.bsum). */
static KExpr *batch_offset(Kernel *k, KExpr *bt, KExpr *kb, int br, const int64_t *dim,
                           const int64_t *st, unsigned sum) {
  KExpr *off = IC(0);
  int64_t inner[2] = {1, 1};
  for (int d = br - 1; d >= 0; d--) {
    int s = (sum >> d) & 1;
    if (st[d] && dim[d] > 1)
      off = ADD(off, MUL(MOD(FDIV(s ? kb : bt, IC(inner[s])), IC(dim[d])), IC(st[d])));
    inner[s] *= dim[d];
  }
  return off;
}

/* Whether the batch axes only stack rows: B the same matrix for every
 * batch element, A's and C's matrices one after another (a dense layer on
 * [N, T, D], the weight broadcast).  Then the matmul is one GEMM of
 * batch x M rows: B packed once per task instead of once per batch element
 * and task, and row blocks across the batch.  Each output is the same sum,
 * so the same bits. */
static bool stacked_rows(const MatStrides *ms) {
  int br = ms->br;
  int64_t ra = ms->dim[br] * ms->a[br], rc = ms->dim[br] * ms->c[br];
  for (int d = br - 1; d >= 0; d--) {
    if (ms->dim[d] > 1 && (ms->b[d] != 0 || ms->a[d] != ra || ms->c[d] != rc))
      return false;
    ra *= ms->dim[d], rc *= ms->dim[d];
  }
  return br > 0;
}

/* Whether a task of g has so few blocks of MR rows (at most
 * B_DIRECT_BLOCKS) that B is better read in place, its rows (b_ks floats
 * apart) aligned to 64 bytes and not a multiple of 4 KiB apart: packing a
 * panel costs a pass over it that so few blocks do not win back.  The MLP
 * at batch 64 ([64, 784] x [784, 256], 11 blocks of 6 rows): 176-182 us
 * packed, 158-160 in place, 1 thread; the transformer at batch 64 (1024
 * rows, 128 a task: 22 blocks) was 4-11% slower in place.  Not for
 * the K blocks of a batch sum (sum_kb): in place alone they measured no
 * faster (a panel is one block's 16 or so rows); kb_inner below reads
 * them in place with the blocks walked by the micro-kernel.
 * KILN_BPACK=1 in the environment packs them anyway (to compare). */
enum { B_DIRECT_BLOCKS = 12 };
static bool few_row_blocks(const Gemm *g, int64_t b_ks) {
  return !g->sum_kb && b_ks % 16 == 0 && b_ks % 1024 != 0 &&
         (g->s.mb + g->s.mr - 1) / g->s.mr <= B_DIRECT_BLOCKS;
}

/* The stride of flat index kb over the summed axes (bits of sum) of a
 * matrix whose batch axes have strides st, when kb's offset is kb times
 * it (*st_kb), as batch_offset computes the offset. */
static bool kb_linear(int br, const int64_t *dim, const int64_t *st, unsigned sum,
                      int64_t *st_kb) {
  int64_t inner = 1, s = -1;
  for (int d = br - 1; d >= 0; d--) {
    if (!((sum >> d) & 1) || dim[d] == 1)
      continue;
    if (s < 0)
      s = st[d];
    else if (st[d] != s * inner)
      return false;
    inner *= dim[d];
  }
  *st_kb = s < 0 ? 0 : s;
  return true;
}

/* Whether a batch sum's K blocks can be walked by the micro-kernel
 * (Gemm.kb_inner): B's rows in place (aligned, not a multiple of 4 KiB
 * apart), A's and B's blocks at constant strides, and A and B together
 * at most KB_INNER_BYTES.  fc1's weight gradient in the transformer at
 * batch 32 ([32, 128] from 32 blocks of [32, 16] x [16, 128], 320 KiB):
 * 28-30 us against 31-32 packed, the twelve such GEMMs of the training
 * step 169-173 against 181-186 us at 1 thread (docs/benchmarks.md, eighth
 * session).  Each micro-tile walks every block's rows of A and B, so they
 * must stay in the core's cache from one tile to the next: at the peer
 * block's size (T = 64, D = 128) fc1's gradient, [128, 512] from 32
 * blocks of [128, 64] x [64, 512] (5 MiB), took 4.8 ms walked and 1.7 ms
 * with a packed panel a block.  The bound sits between sizes measured
 * either way (ninth session): 640 KiB walked faster (the twelve GEMMs at
 * T = 16, D = 64: 565 against 586 us), 960 KiB slower (T = 32, D = 48:
 * 666 against 616 us).  KILN_KB_OUTER=1 in the environment keeps the
 * blocks in the task loop (to compare). */
enum { KB_INNER_BYTES = 768 << 10 };
static bool kb_inner(Gemm *g, const MatStrides *ms, unsigned sum, int64_t b_ks) {
  int br = ms->br;
  int64_t m = ms->dim[br], n = ms->dim[br + 1], k = ms->k * g->kb;
  return sum && ms->b[br + 1] == 1 && b_ks % 16 == 0 && b_ks % 1024 != 0 &&
         (m + n) * k * 4 <= KB_INNER_BYTES &&
         kb_linear(br, ms->dim, ms->a, sum, &g->a_kbs) &&
         kb_linear(br, ms->dim, ms->b, sum, &g->b_kbs) && !getenv("KILN_KB_OUTER");
}

/* A matmul, its operands and product where matmul_strides puts them (a
 * view of a transposed operand included, passes/view.c): A is read in
 * place at any strides; C's rows must be contiguous, and B's rows (copied
 * into the panel) or its columns (gathered 16 at a time).  Batch axes
 * summed (Attrs.bsum, passes/batchsum.c) are the K blocks, each summed
 * from 0 in one panel and added to C (Gemm.sum_kb), as lower_matmul's
 * nest adds them. */
static bool matmul(Gemm *g) {
  Kernel *k = g->pk;
  const Node *n = gemm_node(g->k);
  MatStrides ms;
  matmul_strides(n, &ms);
  int br = ms.br;
  unsigned sum = n->at.bsum;
  int64_t m = ms.dim[br], nn = ms.dim[br + 1], kk = ms.k;
  int64_t b_ks = ms.b[br], b_ns = ms.b[br + 1];
  if (ms.c[br + 1] != 1 || (b_ns != 1 && b_ks != 1) || (sum && kk > GEMM_KC_MAX))
    return false;
  g->batch = g->kb = 1;
  for (int d = 0; d < br; d++)
    *(sum >> d & 1 ? &g->kb : &g->batch) *= ms.dim[d];
  g->sum_kb = sum != 0;
  int nb = br; /* batch axes the offsets walk: none when they only stack rows */
  if (!sum && stacked_rows(&ms))
    m *= g->batch, g->batch = 1, nb = 0;
  g->m = m, g->n = nn, g->ki = kk;
  if (g->batch * g->kb * m * nn * kk == 0)
    return false;
  sized(g);
  KExpr *bt = VAR(g->v_bt), *kb = VAR(g->v_kb);
  g->a_buf = 0;
  g->a_base = batch_offset(k, bt, kb, nb, ms.dim, ms.a, sum);
  g->a_rs = ms.a[br], g->a_ks = ms.a[br + 1];
  g->c_base = n->at.view & 4 ? batch_offset(k, bt, kb, nb, ms.dim, ms.c, 0) : MUL(bt, IC(m * nn));
  g->ldc = ms.c[br];
  g->kb_inner = kb_inner(g, &ms, sum, b_ks);
  if (g->kb_inner ||
      (b_ns == 1 && (g->s.mb <= g->s.mr || (!getenv("KILN_BPACK") && few_row_blocks(g, b_ks))))) {
    g->b_direct = true, g->b_buf = 1, g->b_rs = b_ks;
    g->b_base = batch_offset(k, bt, kb, nb, ms.dim, ms.b, sum);
    return true;
  }
  KStmt *body = g->pack;
  KExpr *bb = let(k, body, "bb", batch_offset(k, bt, kb, nb, ms.dim, ms.b, sum)), *r, *c;
  KExpr *pc = VAR(g->v_pc), *n0 = VAR(g->v_n0), *ld = IC(g->s.ldbp);
  if (b_ns == 1) { /* rows of b are contiguous: copy row segments */
    KStmt *lr = loop(k, body, "r", VAR(g->v_kc), KL_SERIAL, &r);
    KExpr *src = let(k, lr, "src", ADD(bb, ADD(MUL(ADD(pc, r), IC(b_ks)), n0)));
    KStmt *lc = loop(k, lr, "c", VAR(g->v_nb), KL_VECTOR, &c);
    ks_add(k, lc, ks_store(k, g->bp_buf, ADD(MUL(r, ld), c), LOAD(1, ADD(src, c))));
  } else { /* b's columns are contiguous (b^T): a transpose, 16 columns at a
             * time (16 columns read in step, each panel row written 16
             * floats at a time) */
    KExpr *cb, *c16;
    KStmt *lb = loop(k, body, "cb", FDIV(ADD(VAR(g->v_nb), IC(15)), IC(16)), KL_SERIAL, &cb);
    KExpr *cw = let(k, lb, "cw", MIN(IC(16), SUB(VAR(g->v_nb), MUL(cb, IC(16)))));
    KExpr *src = let(k, lb, "src", ADD(bb, ADD(MUL(ADD(n0, MUL(cb, IC(16))), IC(b_ns)), pc)));
    KStmt *lr = loop(k, lb, "r", VAR(g->v_kc), KL_SERIAL, &r);
    KStmt *lc = loop(k, lr, "c", cw, KL_VECTOR, &c16);
    ks_add(k, lc, ks_store(k, g->bp_buf, ADD(MUL(r, ld), ADD(MUL(cb, IC(16)), c16)),
                          LOAD(1, ADD(src, ADD(MUL(c16, IC(b_ns)), r)))));
  }
  tail_zeros(g, body);
  return true;
}

/* Window geometry from the input-side [N, C, H, W] and output-side
 * [N, O, Ho, Wo] shapes (eval_internal.h's Win). */
typedef struct Geo {
  int64_t n, c, h, w, o, ho, wo, kh, kw, sy, sx, py, px, dy, dx, groups;
} Geo;

static Geo geo(const Node *n, const Shape *x, const Shape *y) {
  Geo g = {x->dim[0], x->dim[1], x->dim[2], x->dim[3], y->dim[1], y->dim[2], y->dim[3],
           n->at.kernel[0], n->at.kernel[1], n->at.stride[0], n->at.stride[1],
           n->at.pad[0], n->at.pad[1],
           n->at.dilation[0] ? n->at.dilation[0] : 1, n->at.dilation[1] ? n->at.dilation[1] : 1,
           n->at.groups ? n->at.groups : 1};
  return g;
}

/* Scratch limits, in floats: col2im's C (conv_t), a zero-padded image (xs). */
enum { CS_MAX = 1 << 17, XS_MAX = 1 << 16 };

/* prep: image b's channels of group gi copied into xs, zero-padded to
 * [Cg, H + 2 py, W + 2 px], so B's reads need no bounds tests; with
 * `phases` > 1, each padded row split into that many phases, xs being
 * [Cg, phases, H + 2 py, wq] with element (c, p, r, q) the padded image's
 * (c, r, q phases + p), wq = ceil((W + 2 px) / phases): at stride sx along
 * x, phases = sx puts the inputs that one tap reads for an output row's
 * pixels side by side (conv2d_direct).  The padding is the same zeros for
 * every image and group: the task function zeroes xs once (xs is always
 * this copy) and prep copies the image's own elements only (a depthwise convolution's
 * copies of 16 x 16 channels took as long as its fmas with the zeros). */
static KStmt *padded_copy(Gemm *g, const Geo *w, int64_t cg, KExpr *b, KExpr *gi,
                          int64_t phases) {
  Kernel *k = g->pk;
  int64_t hp = w->h + 2 * w->py, wq = (w->w + 2 * w->px + phases - 1) / phases;
  KStmt *prep = ks_block(k);
  KExpr *xb = let(k, prep, "xb", MUL(ADD(MUL(b, IC(w->c)), MUL(gi, IC(cg))), IC(w->h * w->w)));
  KExpr *c, *ph, *iy;
  KStmt *lc = loop(k, prep, "c", IC(cg), KL_SERIAL, &c);
  KStmt *lp = loop(k, lc, "ph", IC(phases), KL_SERIAL, &ph);
  KStmt *lr = loop(k, lp, "iy", IC(w->h), KL_SERIAL, &iy);
  KExpr *row = ADD(MUL(ADD(MUL(c, IC(phases)), ph), IC(hp)), ADD(iy, IC(w->py)));
  row_copy_to(g, lr, g->xs_buf, 0, MUL(row, IC(wq)), 1,
              ADD(xb, ADD(MUL(c, IC(w->h * w->w)), MUL(iy, IC(w->w)))), phases,
              SUB(ph, IC(w->px)), w->w, IC(0), IC(wq), NULL, false);
  return prep;
}

/* conv2d with B in place (Gemm.conv_direct): an output row's pixels read
 * tap (c, i, j)'s inputs contiguously, at offset c plane + i dy wp + j dx
 * from the row's start in the (padded) image, so the micro-kernel reads
 * them there and nothing is packed.  At a stride sx > 1 along x they are
 * sx apart in the image; in a copy split into sx phases (padded_copy) they
 * are side by side again, in phase (j dx) mod sx, (j dx) div sx on.  For
 * K up to DIRECT_K: small K leaves packing as costly as the FMAs (LeNet's
 * first layer, K = 25, spent most of its time packing; MobileNet's
 * stride-2 depthwise convolutions, K = 9, 115 us of its 339 us step at
 * batch 1 on one thread, docs/benchmarks.md, twelfth session). */
enum { DIRECT_K = 64 };
/* At a stride along x, only for up to this many output channels per group
 * (a depthwise convolution has one): a panel packed once serves every row
 * of the weights, where the split copy is made for every image and group
 * (ResNet's 1 x 1 stride-2 projections to 32 and 64 channels took 2.5x as
 * long direct). */
enum { DIRECT_STRIDED_M = 4 };

static bool conv2d_direct(Gemm *g, const Geo *w, int64_t cg, KExpr *b, KExpr *gi) {
  Kernel *k = g->pk;
  int64_t sx = w->sx;
  bool copy = w->py || w->px || sx > 1;
  int64_t hp = w->h + 2 * w->py, wq = (w->w + 2 * w->px + sx - 1) / sx, taps = w->kh * w->kw;
  if (g->ki > DIRECT_K || (sx > 1 && g->m > DIRECT_STRIDED_M) ||
      (copy && cg * sx * hp * wq > XS_MAX))
    return false;
  g->conv_direct = true, g->n_whole = true;
  g->d_ho = w->ho, g->d_wo = w->wo, g->d_rs = w->sy * wq;
  g->d_off = arena_alloc(k->arena, (size_t)g->ki * sizeof *g->d_off);
  for (int64_t t = 0; t < g->ki; t++) {
    int64_t c = t / taps, i = t / w->kw % w->kh, j = t % w->kw;
    g->d_off[t] = (c * sx + j * w->dx % sx) * hp * wq + i * w->dy * wq + j * w->dx / sx;
  }
  if (copy) {
    g->xs_buf = kir_buf(k, "xs", KT_F32, cg * sx * hp * wq, KB_SCRATCH, -1);
    g->prep = padded_copy(g, w, cg, b, gi, sx);
    g->b_buf = g->xs_buf, g->b_base = IC(0);
  } else {
    g->b_buf = 0, g->b_base = MUL(ADD(MUL(b, IC(w->c)), MUL(gi, IC(cg))), IC(w->h * w->w));
  }
  sized(g);
  k->bufs[g->bp_buf].numel = 1; /* no panel */
  return true;
}

/* conv2d: per image b and group gi, C = w_g [Og x Cg*kh*kw] times the
 * image's columns; panel row kk is tap (c, i, j) = pc + kk, its columns
 * the output positions n0.. read through that tap. */
static bool conv2d(Gemm *g) {
  Kernel *k = g->pk;
  const Node *n = gemm_node(g->k);
  Geo w = geo(n, &n->in[0]->shape, &n->shape);
  int64_t cg = w.c / w.groups, og = w.o / w.groups, taps = w.kh * w.kw, hw = w.ho * w.wo;
  g->batch = w.n * w.groups, g->m = og, g->n = hw, g->kb = 1, g->ki = cg * taps;
  if (g->batch * og * hw * g->ki == 0)
    return false;
  KExpr *bt = VAR(g->v_bt), *b = FDIV(bt, IC(w.groups)), *gi = MOD(bt, IC(w.groups));
  g->a_buf = 1, g->a_base = MUL(gi, IC(og * g->ki)), g->a_rs = g->ki, g->a_ks = 1;
  g->c_base = MUL(ADD(MUL(b, IC(w.o)), MUL(gi, IC(og))), IC(hw)), g->ldc = hw;
  if (!getenv("KILN_NO_CONV_DIRECT") && conv2d_direct(g, &w, cg, b, gi))
    return true;
  sized(g);
  KStmt *body = g->pack;
  KExpr *xb = let(k, body, "xb", MUL(ADD(MUL(b, IC(w.c)), MUL(gi, IC(cg))), IC(w.h * w.w)));
  KExpr *kk, *y, *oa, *ob;
  KStmt *lk = loop(k, body, "kk", VAR(g->v_kc), KL_SERIAL, &kk);
  KExpr *t = let(k, lk, "tap", ADD(VAR(g->v_pc), kk));
  KExpr *c = FDIV(t, IC(taps)), *i = MOD(FDIV(t, IC(w.kw)), IC(w.kh));
  KExpr *j = let(k, lk, "j", MOD(t, IC(w.kw)));
  KExpr *xc = let(k, lk, "xc", ADD(xb, MUL(c, IC(w.h * w.w))));
  KExpr *iy0 = let(k, lk, "iy0", SUB(MUL(i, IC(w.dy)), IC(w.py)));
  KExpr *offx = let(k, lk, "offx", SUB(MUL(j, IC(w.dx)), IC(w.px)));
  KExpr *rowdst = let(k, lk, "dst", SUB(MUL(kk, IC(g->s.ldbp)), VAR(g->v_n0)));
  KStmt *lr = rows_of(g, lk, VAR(g->v_n0), VAR(g->v_nb), w.wo, &y, &oa, &ob);
  KExpr *iy = let(k, lr, "iy", ADD(MUL(y, IC(w.sy)), iy0));
  KExpr *ok = AND(GE(iy, IC(0)), LT(iy, IC(w.h)));
  row_copy(g, lr, 0, ADD(rowdst, MUL(y, IC(w.wo))), 1, ADD(xc, MUL(iy, IC(w.w))), w.sx, offx,
           w.w, oa, ob, ok);
  tail_zeros(g, body);
  return true;
}

/* conv_transpose2d as col2im: per image and group, the per-tap sums
 * col[(o, i, j), q] = sum over channels c of w[c, o, i, j] x[b, c, q] for
 * every input pixel q are one GEMM (A = w viewed as [(o, i, j), c], in
 * place; B = the image's channel rows, copied), into a scratch C; the
 * epilogue adds them up, tap by tap in order, into the outputs each tap's
 * window covers: out[o, y, x] = sum over (i, j) of col[(o, i, j), iy, ix]
 * with y + py - i dy = iy sy (and likewise for x), as the lowering does.
 * A task is an image and a run of whole output channels whose columns fit
 * CS_MAX floats; larger images keep the plain loop nest. */

static KStmt *col2im(Gemm *g, const Geo *w, int64_t cog, int64_t taps, KExpr *b, KExpr *gi) {
  Kernel *k = g->pk;
  int64_t hw_in = w->h * w->w, hw = w->ho * w->wo;
  KStmt *body = ks_block(k);
  KExpr *oc0 = let(k, body, "oc0", FDIV(VAR(g->v_m0), IC(taps))), *ol, *e, *i, *j, *y, *q;
  KStmt *lo = loop(k, body, "ol", FDIV(VAR(g->v_mc), IC(taps)), KL_SERIAL, &ol);
  KExpr *ob = let(k, lo, "ob", MUL(ADD(ADD(MUL(b, IC(w->o)), MUL(gi, IC(cog))), ADD(oc0, ol)),
                                   IC(hw)));
  int out = gemm_node(g->k)->n_in;
  KStmt *lz = loop(k, lo, "e", IC(hw), KL_VECTOR, &e);
  ks_add(k, lz, ks_store(k, out, ADD(ob, e), FZ));
  KStmt *li = loop(k, lo, "i", IC(w->kh), KL_SERIAL, &i);
  KStmt *lj = loop(k, li, "j", IC(w->kw), KL_SERIAL, &j);
  KExpr *cb = let(k, lj, "cb", MUL(ADD(MUL(ol, IC(taps)), ADD(MUL(i, IC(w->kw)), j)), IC(hw_in)));
  KExpr *offx = let(k, lj, "offx", SUB(IC(w->px), MUL(j, IC(w->dx))));
  KStmt *ly = loop(k, lj, "y", IC(w->ho), KL_SERIAL, &y);
  KExpr *v = let(k, ly, "v", ADD(y, SUB(IC(w->py), MUL(i, IC(w->dy)))));
  KExpr *iy = let(k, ly, "iy", FDIV(v, IC(w->sy)));
  KExpr *ok = AND(GE(v, IC(0)), LT(iy, IC(w->h)));
  if (w->sy > 1)
    ok = AND(ok, EQ(MOD(v, IC(w->sy)), IC(0)));
  KStmt *row = ks_if(k, ok);
  ks_add(k, ly, row);
  KExpr *dst = let(k, row, "dst", ADD(ob, MUL(y, IC(w->wo))));
  KExpr *src = let(k, row, "src", ADD(cb, MUL(iy, IC(w->w))));
  /* x reads ix = (x + offx) / sx when sx divides x + offx and 0 <= ix < W */
  KExpr *xmin = let(k, row, "xm", MAX(IC(0), SUB(IC(0), offx)));
  KExpr *xmax = MIN(IC(w->wo), SUB(IC(w->w * w->sx), offx));
  KExpr *first = xmin, *cnt;
  if (w->sx > 1)
    first = let(k, row, "xf", ADD(xmin, MOD(SUB(IC(0), ADD(xmin, offx)), IC(w->sx))));
  cnt = FDIV(ADD(SUB(xmax, first), IC(w->sx - 1)), IC(w->sx));
  KStmt *lx = loop(k, row, "x", cnt, w->sx == 1 ? KL_VECTOR : KL_SERIAL, &q);
  KExpr *oi = ADD(dst, ADD(first, MUL(q, IC(w->sx))));
  KExpr *ci = ADD(ADD(src, FDIV(ADD(first, offx), IC(w->sx))), q);
  ks_add(k, lx, ks_store(k, out, oi, ke_binary(k, KO_ADD, LOAD(out, oi), LOAD(g->cs_buf, ci))));
  return body;
}

static bool conv_t(Gemm *g) {
  Kernel *k = g->pk;
  const Node *n = gemm_node(g->k);
  Geo w = geo(n, &n->in[0]->shape, &n->shape);
  int64_t cig = w.c / w.groups, cog = w.o / w.groups, taps = w.kh * w.kw, hw_in = w.h * w.w;
  g->batch = w.n * w.groups, g->m = cog * taps, g->n = hw_in, g->kb = 1, g->ki = cig;
  if (g->batch * g->m * hw_in * cig == 0 || w.ho * w.wo == 0 || taps * hw_in > CS_MAX)
    return false;
  g->m_align = taps, g->mb_max = CS_MAX / hw_in, g->n_whole = true;
  g->cs_buf = kir_buf(k, "cs", KT_F32, 1, KB_SCRATCH, -1);
  sized(g);
  k->bufs[g->cs_buf].numel = g->s.mb * hw_in;
  KExpr *bt = VAR(g->v_bt), *b = FDIV(bt, IC(w.groups)), *gi = MOD(bt, IC(w.groups)), *r, *c;
  g->a_buf = 1, g->a_base = MUL(gi, IC(cig * cog * taps)), g->a_rs = 1, g->a_ks = cog * taps;
  g->c_buf = g->cs_buf, g->c_base = MUL(VAR(g->v_m0), IC(-hw_in)), g->ldc = hw_in;
  KStmt *body = g->pack;
  KExpr *xb = let(k, body, "xb", MUL(ADD(MUL(b, IC(w.c)), MUL(gi, IC(cig))), IC(hw_in)));
  KStmt *lr = loop(k, body, "r", VAR(g->v_kc), KL_SERIAL, &r);
  KExpr *src = let(k, lr, "src", ADD(xb, ADD(MUL(ADD(VAR(g->v_pc), r), IC(hw_in)), VAR(g->v_n0))));
  KStmt *lc = loop(k, lr, "c", VAR(g->v_nb), KL_VECTOR, &c);
  ks_add(k, lc, ks_store(k, g->bp_buf, ADD(MUL(r, IC(g->s.ldbp)), c), LOAD(0, ADD(src, c))));
  tail_zeros(g, body);
  g->epilogue = col2im(g, &w, cog, taps, b, gi);
  /* what col2im finished: the task's whole output channels of image b */
  g->done_lo = MUL(ADD(ADD(MUL(b, IC(w.o)), MUL(gi, IC(cog))), FDIV(VAR(g->v_m0), IC(taps))),
                   IC(w.ho * w.wo));
  g->done_n = MUL(FDIV(VAR(g->v_mc), IC(taps)), IC(w.ho * w.wo));
  return true;
}

/* conv2d_back_w's chunks (conv2d_back_w_chunk: cs images each, nch of
 * them): task batch index bt is (chunk bt / G, group bt % G); a task sums
 * its chunk's images into its partial, ps[chunk] (shaped like the output),
 * and finish adds the partials up in order, from 0, as the lowering does:
 * out = ((0 + ps[0]) + ps[1]) + ... */
static void back_w_chunks(Gemm *g, int64_t groups, int64_t imgs, int64_t cs, int64_t numel) {
  Kernel *k = g->pk;
  int64_t nch = (imgs + cs - 1) / cs;
  KExpr *ch = FDIV(VAR(g->v_bt), IC(groups)), *e, *c;
  g->batch = groups * nch, g->kb = cs;
  g->kb_lo = MUL(ch, IC(cs));
  g->kb_hi = MIN(IC(imgs), ADD(MUL(ch, IC(cs)), IC(cs)));
  g->ps_buf = kir_buf(k, "ps", KT_F32, nch * numel, KB_SCRATCH, -1);
  g->c_buf = g->ps_buf;
  KStmt *fin = g->finish = ks_block(k);
  int out = gemm_node(g->k)->n_in;
  KStmt *l0 = loop(k, fin, "e", IC(numel), KL_VECTOR, &e);
  ks_add(k, l0, ks_store(k, out, e, ADD(FZ, LOAD(g->ps_buf, e))));
  KStmt *lc = loop(k, fin, "ch", IC(nch - 1), KL_SERIAL, &c);
  KStmt *l1 = loop(k, lc, "e", IC(numel), KL_VECTOR, &e);
  KExpr *src = ADD(MUL(ADD(c, IC(1)), IC(numel)), e);
  ks_add(k, l1, ks_store(k, out, e, ADD(LOAD(out, e), LOAD(g->ps_buf, src))));
}

/* conv2d_back_w: per group, dW_g [Og x Cg*kh*kw] = sum over images kb and
 * output positions p of gy[kb, o, p] times x through tap (c, i, j) at p:
 * panel row kk is position p = pc + kk of image kb, column jj the tap.
 * With padding, prep first copies the image's channels into a zero-padded
 * scratch image (when it fits XS_MAX floats), so a panel row is kh runs
 * of kw pixels per channel, copied without a test.  Small gradients sum
 * the images in chunks (back_w_chunks), which is what parallelizes them. */
static bool back_w(Gemm *g) {
  Kernel *k = g->pk;
  const Node *n = gemm_node(g->k);
  Geo w = geo(n, &n->in[0]->shape, &n->in[1]->shape);
  int64_t cg = w.c / w.groups, og = w.o / w.groups, taps = w.kh * w.kw, hw = w.ho * w.wo;
  int64_t cs = conv2d_back_w_chunk(n);
  g->batch = w.groups, g->m = og, g->n = cg * taps, g->kb = w.n, g->ki = hw;
  if (g->batch * og * g->n * w.n * hw == 0)
    return false;
  KExpr *gi = VAR(g->v_bt), *c_chunk = IC(0);
  if (cs < w.n) {
    back_w_chunks(g, w.groups, w.n, cs, w.o * g->n);
    gi = MOD(VAR(g->v_bt), IC(w.groups));
    c_chunk = MUL(FDIV(VAR(g->v_bt), IC(w.groups)), IC(w.o * g->n));
  }
  g->m_whole = true; /* every row block would pack the same panels again */
  g->n_align = taps;  /* column blocks of whole channels: no tests when packing */
  int64_t hp = w.h + 2 * w.py, wp = w.w + 2 * w.px;
  bool padded = w.py || w.px, direct = !padded || cg * hp * wp <= XS_MAX;
  if (padded && direct)
    g->xs_buf = kir_buf(k, "xs", KT_F32, cg * hp * wp, KB_SCRATCH, -1);
  sized(g);
  KExpr *b = VAR(g->v_kb);
  g->a_buf = 1, g->a_base = MUL(ADD(MUL(b, IC(w.o)), MUL(gi, IC(og))), IC(hw));
  g->a_rs = hw, g->a_ks = 1;
  g->c_base = ADD(c_chunk, MUL(gi, IC(og * g->n))), g->ldc = g->n;
  KStmt *body = g->pack;
  int64_t ld = g->s.ldbp;
  if (direct) {
    int sbuf = 0;
    KExpr *sb; /* the image in the source buffer, and its row length */
    int64_t rl = padded ? wp : w.w, plane = padded ? hp * wp : w.h * w.w;
    if (padded) {
      g->prep = padded_copy(g, &w, cg, b, gi, 1);
      sbuf = g->xs_buf, sb = IC(0);
    } else {
      sb = let(k, body, "xb", MUL(ADD(MUL(b, IC(w.c)), MUL(gi, IC(cg))), IC(w.h * w.w)));
    }
    KExpr *kk, *c, *i, *j;
    KStmt *lk = loop(k, body, "kk", VAR(g->v_kc), KL_SERIAL, &kk);
    KExpr *p = let(k, lk, "p", ADD(VAR(g->v_pc), kk));
    KExpr *base = let(k, lk, "base", ADD(sb, ADD(MUL(MUL(FDIV(p, IC(w.wo)), IC(w.sy)), IC(rl)),
                                                 MUL(MOD(p, IC(w.wo)), IC(w.sx)))));
    KExpr *dst = let(k, lk, "dst", SUB(MUL(kk, IC(ld)), VAR(g->v_n0)));
    /* this task's taps: whole channels (n_align), c0 + [0, nb / taps) */
    KExpr *c0 = let(k, lk, "c0", FDIV(VAR(g->v_n0), IC(taps)));
    KStmt *lc = loop(k, lk, "c", FDIV(VAR(g->v_nb), IC(taps)), KL_SERIAL, &c);
    KStmt *li = loop(k, lc, "i", IC(w.kh), KL_SERIAL, &i);
    KExpr *rb = let(k, li, "rb", ADD(base, ADD(MUL(ADD(c0, c), IC(plane)), MUL(i, IC(w.dy * rl)))));
    KExpr *nt = let(k, li, "nt", ADD(dst, MUL(ADD(MUL(ADD(c0, c), IC(w.kh)), i), IC(w.kw))));
    KStmt *lj = loop(k, li, "j", IC(w.kw), KL_VECTOR, &j);
    ks_add(k, lj, ks_store(k, g->bp_buf, ADD(nt, j), LOAD(sbuf, ADD(rb, MUL(j, IC(w.dx))))));
    tail_zeros(g, body);
    return true;
  }
  KExpr *xb = let(k, body, "xb", MUL(ADD(MUL(b, IC(w.c)), MUL(gi, IC(cg))), IC(w.h * w.w)));
  KExpr *jj, *y, *oa, *ob;
  KStmt *lj = loop(k, body, "jj", VAR(g->v_nb), KL_SERIAL, &jj);
  KExpr *t = let(k, lj, "tap", ADD(VAR(g->v_n0), jj));
  KExpr *c = FDIV(t, IC(taps)), *i = MOD(FDIV(t, IC(w.kw)), IC(w.kh));
  KExpr *j = let(k, lj, "j", MOD(t, IC(w.kw)));
  KExpr *xc = let(k, lj, "xc", ADD(xb, MUL(c, IC(w.h * w.w))));
  KExpr *iy0 = let(k, lj, "iy0", SUB(MUL(i, IC(w.dy)), IC(w.py)));
  KExpr *offx = let(k, lj, "offx", SUB(MUL(j, IC(w.dx)), IC(w.px)));
  KStmt *lr = rows_of(g, lj, VAR(g->v_pc), VAR(g->v_kc), w.wo, &y, &oa, &ob);
  KExpr *iy = let(k, lr, "iy", ADD(MUL(y, IC(w.sy)), iy0));
  KExpr *ok = AND(GE(iy, IC(0)), LT(iy, IC(w.h)));
  KExpr *dst = ADD(MUL(SUB(MUL(y, IC(w.wo)), VAR(g->v_pc)), IC(ld)), jj);
  row_copy(g, lr, 0, dst, ld, ADD(xc, MUL(iy, IC(w.w))), w.sx, offx, w.w, oa, ob, ok);
  tail_zeros(g, body);
  return true;
}

bool gemm_describe(Gemm *g, Arena *a, const Kernel *k, bool regs32) {
  if (!standard_layout(k))
    return false;
  begin(g, a, k);
  g->regs32 = regs32;
  switch (gemm_node(k)->op) {
  case OP_MATMUL: return matmul(g);
  case OP_CONV2D: return conv2d(g);
  case OP_CONV_TRANSPOSE2D: return conv_t(g);
  case OP_CONV2D_BACK_W: return back_w(g);
  default: return false;
  }
}
