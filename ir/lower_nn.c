/*
 * lower_nn.c: lowering of the reuse-heavy ops: matmul (transposes, broadcast
 * batch axes), conv2d, conv_transpose2d and conv2d's weight gradient, max
 * and average pooling and their gradients, upsampling and its gradient.
 *
 * Each kernel is the reference kernel of eval_nn.c / eval_back.c as a loop
 * nest: a parallel nest over the output elements, a local accumulator, and
 * KL_REDUCE loops over the taps in the reference's order, with the same
 * window geometry (eval_internal.h): taps at y*s - p + i*d, out-of-range
 * taps skipped (no test at all when the padding is 0, as every tap is then
 * in range), the transposed and backward kernels gathering through
 * "window o's tap t lands on pos iff pos + p - t*d = o*s" (win_covering),
 * max pooling's first-maximum/first-NaN pick, average pooling's divisor
 * (the window, or its in-bounds taps: a closed form per axis), upsampling's
 * source indices and weights (up_taps: computed in exact integer arithmetic
 * in the kernel, and checked against up_taps itself when lowering).
 * Accumulators are f32 (the reference's are double), so these kernels agree
 * within rounding; max pooling and nearest upsampling are exact.  Matmul
 * and the convolutions accumulate with fma (one rounding per term): the
 * GEMM schedule of codegen/llvm/cg_gemm.c does, in the same order.
 */
#include <math.h>

#include "eval_internal.h"
#include "lower_internal.h"

/* --- matmul ------------------------------------------------------------------ */

/* acc = sum_p A(ao, p) B(bo, p) from 0, p ascending, one fma per term
 * (decls into body); acc's variable. */
static int dot(Kernel *k, KStmt *body, const MatStrides *ms, KExpr *ao, KExpr *bo) {
  int br = ms->br, acc = kir_var(k, "acc", KT_F32);
  ks_add(k, body, ks_decl(k, acc, FC(0)));
  KExpr *p;
  KStmt *l = lw_for(k, body, "p", ms->k, KL_REDUCE, &p);
  KExpr *av = LOAD(0, ADD(ao, MUL(p, IC(ms->a[br + 1]))));
  KExpr *bv = LOAD(1, ADD(bo, MUL(p, IC(ms->b[br]))));
  if (ms->k > 0)
    ks_add(k, l, ks_set(k, acc, ke_fma(k, av, bv, VAR(acc))));
  return acc;
}

/* out[.., i, j] = sum_p a[.., i, p] b[.., p, j] (a's / b's last two axes
 * swapped when ta / tb), the batch axes broadcast, p ascending; operands
 * and result where matmul_strides puts them (views included).  Batch axes
 * summed (Attrs.bsum, passes/batchsum.c) loop inside each output element:
 * tot = 0, then tot + each batch element's sum, in row-major order (the
 * unfused sum kernel's order, ir/lower_reduce.c: the same bits). */
Kernel *lower_matmul(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  MatStrides ms;
  matmul_strides(n, &ms);
  int br = ms.br, r = br + 2, nk = 0, ns_ = 0;
  int64_t st[LW_OPS][MAX_RANK], sst[LW_OPS][MAX_RANK], kd[MAX_RANK], sd[MAX_RANK];
  if (shape_numel(&n->shape) == 0)
    return k;
  for (int d = 0; d < r; d++) {
    int64_t sa = d < br ? ms.a[d] : d == br ? ms.a[br] : 0;
    int64_t sb = d < br ? ms.b[d] : d == br ? 0 : ms.b[br + 1];
    if (d < br && (n->at.bsum & (1 << d))) { /* summed: a, b (the output's stride is 0) */
      sd[ns_] = ms.dim[d], sst[0][ns_] = sa, sst[1][ns_++] = sb;
    } else {
      kd[nk] = ms.dim[d], st[0][nk] = ms.c[d], st[1][nk] = sa, st[2][nk++] = sb;
    }
  }
  Nest ns, ni;
  lw_nest(k, k->body, nk, kd, 3, st, NEST_ROWS, &ns);
  KExpr *ao = lw_at(k, &ns, 1, 0), *bo = lw_at(k, &ns, 2, 0);
  if (!ns_) {
    int acc = dot(k, ns.body, &ms, lw_bind(k, ns.body, "ao", ao), lw_bind(k, ns.body, "bo", bo));
    ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), VAR(acc)));
    return k;
  }
  int tot = kir_var(k, "tot", KT_F32);
  ks_add(k, ns.body, ks_decl(k, tot, FC(0)));
  lw_nest(k, ns.body, ns_, sd, 2, sst, NEST_REDUCE, &ni);
  KExpr *sa = lw_bind(k, ni.body, "ao", ADD(ao, lw_at(k, &ni, 0, 0)));
  KExpr *sb = lw_bind(k, ni.body, "bo", ADD(bo, lw_at(k, &ni, 1, 0)));
  int acc = dot(k, ni.body, &ms, sa, sb);
  ks_add(k, ni.body, ks_set(k, tot, ADD(VAR(tot), VAR(acc))));
  ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), VAR(tot)));
  return k;
}

/* --- window geometry ---------------------------------------------------------- */

/* Win of eval_internal.h from shapes: x is the input side [N, C, H, W], y
 * the output side [N, O, Ho, Wo]. */
static Win geo(const Node *n, const Shape *x, const Shape *y) {
  Win g = {
      .n = x->dim[0], .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
      .o = y->dim[1], .ho = y->dim[2], .wo = y->dim[3],
      .kh = n->at.kernel[0], .kw = n->at.kernel[1],
      .sy = n->at.stride[0], .sx = n->at.stride[1],
      .py = n->at.pad[0], .px = n->at.pad[1],
      .dy = n->at.dilation[0] ? n->at.dilation[0] : 1,
      .dx = n->at.dilation[1] ? n->at.dilation[1] : 1,
      .groups = n->at.groups ? n->at.groups : 1,
  };
  return g;
}

/* The input position o*s - p + t*d of window o's tap t (declared in body),
 * and in *ok the test 0 <= it < len, or NULL when no tap can be out of
 * range (no padding: the shape rules keep every window inside). */
static KExpr *tap(Kernel *k, KStmt *body, const char *name, KExpr *o, KExpr *t, int64_t s,
                  int64_t p, int64_t d, int64_t len, KExpr **ok) {
  KExpr *pos = lw_bind(k, body, name, ADD(SUB(MUL(o, IC(s)), IC(p)), MUL(t, IC(d))));
  *ok = p ? IN_RANGE(pos, 0, len) : NULL;
  return pos;
}

/* win_covering: the window whose tap t lands on pos, if any: v = pos + p -
 * t*d must be >= 0, a multiple of s, and v / s < n_out.  Declares the
 * window index in body and returns it; *ok gets the test. */
static KExpr *covering(Kernel *k, KStmt *body, const char *name, KExpr *pos, KExpr *t, int64_t s,
                       int64_t p, int64_t d, int64_t n_out, KExpr **ok) {
  KExpr *v = lw_bind(k, body, "v", SUB(ADD(pos, IC(p)), MUL(t, IC(d))));
  KExpr *w = lw_bind(k, body, name, FDIV(v, IC(s)));
  *ok = AND(GE(v, IC(0)), LT(w, IC(n_out)));
  if (s > 1)
    *ok = AND(*ok, EQ(MOD(v, IC(s)), IC(0)));
  return w;
}

/* acc = acc + e */
static void accumulate(Kernel *k, KStmt *body, int acc, KExpr *e) {
  ks_add(k, body, ks_set(k, acc, ADD(VAR(acc), e)));
}

/* acc = fma(a, b, acc): the multiply-accumulate of matmul and convolution,
 * one rounding per term, so codegen/llvm's GEMM schedule (cg_gemm.c),
 * which sums each output in the same order with vector FMAs, matches it
 * bit for bit. */
static void fused(Kernel *k, KStmt *body, int acc, KExpr *a, KExpr *b) {
  ks_add(k, body, ks_set(k, acc, ke_fma(k, a, b, VAR(acc))));
}

static int decl(Kernel *k, KStmt *body, const char *name, KType t, KExpr *init) {
  int v = kir_var(k, name, t);
  ks_add(k, body, ks_decl(k, v, init));
  return v;
}

static const char *const out_names[] = {"b", "g", "o", "y", "x"};

/* --- convolutions -------------------------------------------------------------- */

/* conv_at: sum over the group's channels c and taps (i, j) in range of
 * x[b, g*Cg + c, y*sy - py + i*dy, x*sx - px + j*dx] * w[o, c, i, j]. */
Kernel *lower_conv2d(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[0]->shape, &n->shape);
  int64_t cg = g.c / g.groups, og = g.o / g.groups;
  if (shape_numel(&n->shape) == 0)
    return k;
  KExpr *v[5], *c, *i, *j, *oky, *okx;
  KStmt *body = lw_fors(k, k->body, 5, (int64_t[]){g.n, g.groups, og, g.ho, g.wo}, out_names, v,
                        KL_PARALLEL, KL_SERIAL);
  KExpr *o = lw_bind(k, body, "oc", ADD(MUL(v[1], IC(og)), v[2]));
  int acc = decl(k, body, "acc", KT_F32, FC(0));
  KStmt *lc = lw_for(k, body, "c", cg, KL_REDUCE, &c);
  KExpr *xc =
      lw_let(k, lc, "xc", MUL(ADD(MUL(v[0], IC(g.c)), ADD(MUL(v[1], IC(cg)), c)), IC(g.h * g.w)));
  KExpr *wc = lw_let(k, lc, "wc", MUL(ADD(MUL(o, IC(cg)), c), IC(g.kh * g.kw)));
  KStmt *li = lw_for(k, lc, "i", g.kh, KL_REDUCE, &i);
  KExpr *iy = tap(k, li, "iy", v[3], i, g.sy, g.py, g.dy, g.h, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g.kw, KL_REDUCE, &j);
  KExpr *ix = tap(k, lj, "ix", v[4], j, g.sx, g.px, g.dx, g.w, &okx);
  KExpr *xv = LOAD(0, ADD(xc, ADD(MUL(iy, IC(g.w)), ix)));
  KExpr *wv = LOAD(1, ADD(wc, ADD(MUL(i, IC(g.kw)), j)));
  fused(k, lw_if(k, lj, okx), acc, xv, wv);
  KExpr *oi = ADD(MUL(ADD(MUL(ADD(MUL(v[0], IC(g.o)), o), IC(g.ho)), v[3]), IC(g.wo)), v[4]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(acc)));
  return k;
}

/* tconv_at: for taps (i, j) whose input position (iy, ix) exists (the
 * window covering output (y, x) through that tap), and the group's input
 * channels ic: x[b, ic, iy, ix] * w[ic, oc % Cog, i, j].  Each tap's
 * channel sum is a partial sum of its own, added to the total in tap
 * order: the "col2im" form, where the per-tap sums are one GEMM over the
 * input's pixels (codegen/llvm/cg_gemm_ops.c computes it that way). */
Kernel *lower_conv_transpose2d(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[0]->shape, &n->shape);
  int64_t cog = g.o / g.groups, cig = g.c / g.groups;
  if (shape_numel(&n->shape) == 0)
    return k;
  KExpr *v[5], *c, *i, *j, *oky, *okx;
  KStmt *body = lw_fors(k, k->body, 5, (int64_t[]){g.n, g.groups, cog, g.ho, g.wo}, out_names, v,
                        KL_PARALLEL, KL_SERIAL);
  int acc = decl(k, body, "acc", KT_F32, FC(0));
  KStmt *li = lw_for(k, body, "i", g.kh, KL_REDUCE, &i);
  KExpr *iy = covering(k, li, "iy", v[3], i, g.sy, g.py, g.dy, g.h, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g.kw, KL_REDUCE, &j);
  KExpr *ix = covering(k, lj, "ix", v[4], j, g.sx, g.px, g.dx, g.w, &okx);
  KStmt *tap = lw_if(k, lj, okx);
  int part = decl(k, tap, "s", KT_F32, FC(0));
  KStmt *lc = lw_for(k, tap, "c", cig, KL_REDUCE, &c);
  KExpr *ic = lw_bind(k, lc, "ic", ADD(MUL(v[1], IC(cig)), c));
  KExpr *xv = LOAD(0, ADD(MUL(ADD(MUL(ADD(MUL(v[0], IC(g.c)), ic), IC(g.h)), iy), IC(g.w)), ix));
  KExpr *wv = LOAD(1, ADD(MUL(ADD(MUL(ADD(MUL(ic, IC(cog)), v[2]), IC(g.kh)), i), IC(g.kw)), j));
  fused(k, lc, part, xv, wv);
  accumulate(k, tap, acc, VAR(part));
  KExpr *o = ADD(MUL(v[1], IC(cog)), v[2]);
  KExpr *oi = ADD(MUL(ADD(MUL(ADD(MUL(v[0], IC(g.o)), o), IC(g.ho)), v[3]), IC(g.wo)), v[4]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(acc)));
  return k;
}

/* Chunks of conv2d_back_w's image sum: a weight gradient this small (at
 * most BW_SMALL elements) has too few outputs to keep two threads busy, its
 * work being all in the long sum over the images, so the sum is cut into
 * BW_CHUNKS chunks of whole images that threads can share; the partials
 * cost BW_CHUNKS times the output in scratch. */
enum { BW_SMALL = 4096, BW_CHUNKS = 8 };

int64_t conv2d_back_w_chunk(const Node *n) {
  int64_t imgs = n->in[0]->shape.dim[0], out = shape_numel(&n->shape);
  if (imgs < 2 || out > BW_SMALL)
    return imgs > 0 ? imgs : 1;
  int64_t want = imgs < BW_CHUNKS ? imgs : BW_CHUNKS;
  return (imgs + want - 1) / want;
}

/* dW[o, c, i, j] = sum over b, oy, ox (taps in range) of
 * x[b, g*Cg + c, oy*sy - py + i*dy, ox*sx - px + j*dx] * gy[b, o, oy, ox],
 * b in chunks of conv2d_back_w_chunk images when that is less than N:
 * acc = 0 + part(chunk 0) + part(chunk 1) + ..., each part from 0. */
Kernel *lower_conv2d_back_w(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[0]->shape, &n->in[1]->shape);
  int64_t cg = g.c / g.groups, og = g.o / g.groups, cs = conv2d_back_w_chunk(n);
  static const char *const names[] = {"g", "o", "c", "i", "j"};
  if (shape_numel(&n->shape) == 0)
    return k;
  KExpr *v[5], *b, *oy, *ox, *oky, *okx, *ch;
  KStmt *body = lw_fors(k, k->body, 5, (int64_t[]){g.groups, og, cg, g.kh, g.kw}, names, v,
                        KL_PARALLEL, KL_SERIAL);
  KExpr *o = lw_bind(k, body, "oc", ADD(MUL(v[0], IC(og)), v[1]));
  int acc = decl(k, body, "acc", KT_F32, FC(0)), part = acc;
  KStmt *lb;
  if (cs < g.n) {
    int64_t nch = (g.n + cs - 1) / cs;
    KStmt *lch = lw_for(k, body, "ch", nch, KL_REDUCE, &ch);
    part = decl(k, lch, "part", KT_F32, FC(0));
    KExpr *b0 = lw_let(k, lch, "b0", MUL(ch, IC(cs)));
    int bi = kir_var(k, "bi", KT_IDX);
    lb = ks_loop(k, bi, MIN(IC(cs), SUB(IC(g.n), b0)), KL_REDUCE);
    ks_add(k, lch, lb);
    b = lw_bind(k, lb, "b", ADD(b0, VAR(bi)));
    accumulate(k, lch, acc, VAR(part));
  } else {
    lb = lw_for(k, body, "b", g.n, KL_REDUCE, &b);
  }
  KExpr *xc =
      lw_let(k, lb, "xc", MUL(ADD(MUL(b, IC(g.c)), ADD(MUL(v[0], IC(cg)), v[2])), IC(g.h * g.w)));
  KExpr *gc = lw_let(k, lb, "gc", MUL(ADD(MUL(b, IC(g.o)), o), IC(g.ho * g.wo)));
  KStmt *ly = lw_for(k, lb, "oy", g.ho, KL_REDUCE, &oy);
  KExpr *iy = tap(k, ly, "iy", oy, v[3], g.sy, g.py, g.dy, g.h, &oky);
  KStmt *lx = lw_for(k, lw_if(k, ly, oky), "ox", g.wo, KL_REDUCE, &ox);
  KExpr *ix = tap(k, lx, "ix", ox, v[4], g.sx, g.px, g.dx, g.w, &okx);
  KExpr *xv = LOAD(0, ADD(xc, ADD(MUL(iy, IC(g.w)), ix)));
  KExpr *gv = LOAD(1, ADD(gc, ADD(MUL(oy, IC(g.wo)), ox)));
  fused(k, lw_if(k, lx, okx), part, xv, gv);
  KExpr *oi = ADD(MUL(ADD(MUL(ADD(MUL(o, IC(cg)), v[2]), IC(g.kh)), v[3]), IC(g.kw)), v[4]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(acc)));
  return k;
}

/* --- pooling ----------------------------------------------------------------------- */

/* Loops over (channel plane bc, y, x) of an [N*C, H, W] output, parallel
 * over the planes: v[0..3) get the indices; returns the body. */
static KStmt *plane_loops(Kernel *k, int64_t nc, int64_t h, int64_t w, KExpr **v) {
  static const char *const names[] = {"bc", "y", "x"};
  return lw_fors(k, k->body, 3, (int64_t[]){nc, h, w}, names, v, KL_PARALLEL, KL_SERIAL);
}

/* The max of the window (y, x) over plane xc (an index) into `best`, as
 * maxpool_pick selects it: taps in range, a NaN tap wins and sticks
 * (max(NaN, v) keeps the NaN), otherwise the first maximum.  With want_pick
 * also the offset iy * w + ix of the picked tap in *pick (-1: none). */
static int window_max(Kernel *k, KStmt *body, const Win *g, KExpr *xc, KExpr *y, KExpr *x,
                      int *pick) {
  KExpr *i, *j, *oky, *okx;
  int best = decl(k, body, "best", KT_F32, FC(-INFINITY)), done = -1;
  if (pick) {
    *pick = decl(k, body, "pick", KT_IDX, IC(-1));
    done = decl(k, body, "done", KT_I32, ke_int(k, KT_I32, 0));
  }
  KStmt *li = lw_for(k, body, "i", g->kh, KL_REDUCE, &i);
  KExpr *iy = tap(k, li, "iy", y, i, g->sy, g->py, g->dy, g->h, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g->kw, KL_REDUCE, &j);
  KExpr *ix = tap(k, lj, "ix", x, j, g->sx, g->px, g->dx, g->w, &okx);
  KStmt *in = lw_if(k, lj, okx);
  KExpr *off = lw_bind(k, in, "off", ADD(MUL(iy, IC(g->w)), ix));
  KExpr *v = lw_let(k, in, "v", LOAD(pick ? 1 : 0, ADD(xc, off)));
  if (!pick) {
    ks_add(k, in, ks_set(k, best, SEL(UN(KO_ISNAN, v), v, MAX(VAR(best), v))));
    return best;
  }
  KExpr *better = OR(UN(KO_ISNAN, v), OR(LT(VAR(*pick), IC(0)), GT(v, VAR(best))));
  KExpr *take = lw_let(k, in, "take", AND(NOT(VAR(done)), better));
  ks_add(k, in, ks_set(k, *pick, SEL(take, off, VAR(*pick))));
  ks_add(k, in, ks_set(k, best, SEL(take, v, VAR(best))));
  ks_add(k, in, ks_set(k, done, OR(VAR(done), UN(KO_ISNAN, v))));
  return best;
}

/* Small windows without padding (every tap in bounds): the taps written
 * out one by one, so the loop over a row's windows (x) is innermost and
 * vectorizes.  UNROLL_TAPS bounds the window. */
enum { UNROLL_TAPS = 16 };

static bool unrolled_taps(const Win *g) {
  return g->py == 0 && g->px == 0 && g->kh * g->kw <= UNROLL_TAPS;
}

/* The input offset of window (y, x)'s tap (i, j), no padding. */
static KExpr *tap_at(Kernel *k, const Win *g, KExpr *xc, KExpr *y, KExpr *x, int64_t i, int64_t j) {
  return ADD(xc, ADD(MUL(ADD(MUL(y, IC(g->sy)), IC(i * g->dy)), IC(g->w)),
                     ADD(MUL(x, IC(g->sx)), IC(j * g->dx))));
}

/* The window max as window_max computes it (a NaN tap sticks, else the
 * max), from straight-line taps. */
static KExpr *unrolled_max(Kernel *k, KStmt *body, const Win *g, KExpr *xc, KExpr *y, KExpr *x) {
  int best = decl(k, body, "best", KT_F32, FC(-INFINITY));
  for (int64_t i = 0; i < g->kh; i++)
    for (int64_t j = 0; j < g->kw; j++) {
      KExpr *v = lw_let(k, body, "v", LOAD(k->n_bufs - 2, tap_at(k, g, xc, y, x, i, j)));
      ks_add(k, body, ks_set(k, best, SEL(UN(KO_ISNAN, v), v, MAX(VAR(best), v))));
    }
  return VAR(best);
}

Kernel *lower_maxpool2d(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[0]->shape, &n->shape);
  KExpr *v[3];
  if (shape_numel(&n->shape) == 0)
    return k;
  if (unrolled_taps(&g)) {
    static const char *const names[] = {"bc", "y", "x"};
    KStmt *row = lw_fors(k, k->body, 2, (int64_t[]){g.n * g.c, g.ho}, names, v, KL_PARALLEL,
                         KL_SERIAL);
    KExpr *xc = lw_bind(k, row, "xc", MUL(v[0], IC(g.h * g.w)));
    KStmt *lx = lw_for(k, row, "x", g.wo, KL_VECTOR, &v[2]);
    KExpr *best = unrolled_max(k, lx, &g, xc, v[1], v[2]);
    KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(g.ho)), v[1]), IC(g.wo)), v[2]);
    ks_add(k, lx, ks_store(k, lw_out(n), oi, best));
    return k;
  }
  KStmt *body = plane_loops(k, g.n * g.c, g.ho, g.wo, v);
  KExpr *xc = lw_bind(k, body, "xc", MUL(v[0], IC(g.h * g.w)));
  int best = window_max(k, body, &g, xc, v[1], v[2], NULL);
  KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(g.ho)), v[1]), IC(g.wo)), v[2]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(best)));
  return k;
}

/* Windows that never share an input position (each one's span, (k - 1) d
 * + 1, at most its stride, on both axes, as in the usual 2x2 stride-2
 * pooling): each plane is zeroed, then each window routes 0 + gy (the
 * reference's one-term sum) to the position it picks, so the pick is
 * computed once per window instead of once per window per covered
 * position. */
static Kernel *maxpool2d_back_disjoint(Kernel *k, const Node *n, const Win *g) {
  KExpr *v[3], *e;
  static const char *const names[] = {"bc", "y", "x"};
  int64_t plane = g->h * g->w;
  KStmt *lp = lw_fors(k, k->body, 1, (int64_t[]){g->n * g->c}, names, v, KL_PARALLEL, KL_SERIAL);
  KExpr *xc = lw_bind(k, lp, "xc", MUL(v[0], IC(plane)));
  bool tiled = g->py == 0 && g->px == 0 && g->kh * g->dy == g->sy && g->kw * g->dx == g->sx &&
               g->ho * g->sy == g->h && g->wo * g->sx == g->w && g->dy == 1 && g->dx == 1;
  if (!tiled || !unrolled_taps(g)) { /* positions no window picks stay 0 */
    KStmt *lz = lw_for(k, lp, "e", plane, KL_VECTOR, &e);
    ks_add(k, lz, ks_store(k, lw_out(n), ADD(xc, e), FC(0)));
  }
  if (unrolled_taps(g)) { /* every tap of the window written: gy at its pick, else 0 */
    KStmt *row = lw_for(k, lp, "y", g->ho, KL_SERIAL, &v[1]);
    KStmt *lx = lw_for(k, row, "x", g->wo, KL_VECTOR, &v[2]);
    KExpr *best = lw_let(k, lx, "best", unrolled_max(k, lx, g, xc, v[1], v[2]));
    KExpr *gi = ADD(MUL(ADD(MUL(v[0], IC(g->ho)), v[1]), IC(g->wo)), v[2]);
    KExpr *gv = lw_let(k, lx, "g", ADD(FC(0), LOAD(0, gi)));
    int done = decl(k, lx, "done", KT_I32, ke_int(k, KT_I32, 0));
    for (int64_t i = 0; i < g->kh; i++)
      for (int64_t j = 0; j < g->kw; j++) {
        KExpr *at = lw_let(k, lx, "at", tap_at(k, g, xc, v[1], v[2], i, j));
        KExpr *tv = LOAD(1, at);
        KExpr *m = lw_let(k, lx, "m", AND(NOT(VAR(done)), OR(EQ(tv, best), UN(KO_ISNAN, tv))));
        ks_add(k, lx, ks_set(k, done, OR(VAR(done), m)));
        ks_add(k, lx, ks_store(k, lw_out(n), at, SEL(m, gv, FC(0))));
      }
    return k;
  }
  KStmt *body = lw_fors(k, lp, 2, (int64_t[]){g->ho, g->wo}, names + 1, v + 1, KL_SERIAL,
                        KL_SERIAL);
  int pick;
  window_max(k, body, g, xc, v[1], v[2], &pick);
  KExpr *gi = ADD(MUL(ADD(MUL(v[0], IC(g->ho)), v[1]), IC(g->wo)), v[2]);
  KStmt *hit = lw_if(k, body, GE(VAR(pick), IC(0)));
  ks_add(k, hit, ks_store(k, lw_out(n), ADD(xc, VAR(pick)), ADD(FC(0), LOAD(0, gi))));
  return k;
}

/* in[0] = gy, in[1] = x: each input position sums gy over the windows that
 * cover it (win_covering, taps in order) and picked it (window_max). */
Kernel *lower_maxpool2d_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[1]->shape, &n->in[0]->shape);
  KExpr *v[3], *i, *j, *oky, *okx;
  if (shape_numel(&n->shape) == 0)
    return k;
  if ((g.kh - 1) * g.dy + 1 <= g.sy && (g.kw - 1) * g.dx + 1 <= g.sx)
    return maxpool2d_back_disjoint(k, n, &g);
  KStmt *body = plane_loops(k, g.n * g.c, g.h, g.w, v);
  KExpr *xc = lw_bind(k, body, "xc", MUL(v[0], IC(g.h * g.w)));
  KExpr *gc = lw_bind(k, body, "gc", MUL(v[0], IC(g.ho * g.wo)));
  KExpr *self = lw_bind(k, body, "self", ADD(MUL(v[1], IC(g.w)), v[2]));
  int acc = decl(k, body, "acc", KT_F32, FC(0)), pick;
  KStmt *li = lw_for(k, body, "i", g.kh, KL_REDUCE, &i);
  KExpr *oy = covering(k, li, "oy", v[1], i, g.sy, g.py, g.dy, g.ho, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g.kw, KL_REDUCE, &j);
  KExpr *ox = covering(k, lj, "ox", v[2], j, g.sx, g.px, g.dx, g.wo, &okx);
  KStmt *in = lw_if(k, lj, okx);
  window_max(k, in, &g, xc, oy, ox, &pick);
  KStmt *hit = lw_if(k, in, EQ(VAR(pick), self));
  accumulate(k, hit, acc, LOAD(0, ADD(gc, ADD(MUL(oy, IC(g.wo)), ox))));
  ks_add(k, body, ks_store(k, lw_out(n), ADD(MUL(v[0], IC(g.h * g.w)), self), VAR(acc)));
  return k;
}

/* avgpool_divisor of window (y, x), as an f32 expression: kh*kw with
 * count_include_pad (or no padding), else the in-bounds taps, per axis
 * max(0, min(o*s - p + k, len) - max(o*s - p, 0)). */
static KExpr *divisor(Kernel *k, KStmt *body, const Win *g, bool incl, KExpr *y, KExpr *x) {
  if (incl || (g->py == 0 && g->px == 0))
    return FC((double)(g->kh * g->kw));
  KExpr *y0 = lw_bind(k, body, "y0", SUB(MUL(y, IC(g->sy)), IC(g->py)));
  KExpr *x0 = lw_bind(k, body, "x0", SUB(MUL(x, IC(g->sx)), IC(g->px)));
  KExpr *cy = MAX(SUB(MIN(ADD(y0, IC(g->kh)), IC(g->h)), MAX(y0, IC(0))), IC(0));
  KExpr *cx = MAX(SUB(MIN(ADD(x0, IC(g->kw)), IC(g->w)), MAX(x0, IC(0))), IC(0));
  return lw_let(k, body, "div", ke_cast(k, KT_F32, MUL(cy, cx)));
}

/* avgpool_at: the sum of the in-range taps (adjacent: no dilation) over
 * the divisor. */
Kernel *lower_avgpool2d(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->in[0]->shape, &n->shape);
  KExpr *v[3], *i, *j, *oky, *okx;
  if (shape_numel(&n->shape) == 0)
    return k;
  KStmt *body = plane_loops(k, g.n * g.c, g.ho, g.wo, v);
  KExpr *xc = lw_bind(k, body, "xc", MUL(v[0], IC(g.h * g.w)));
  int sum = decl(k, body, "sum", KT_F32, FC(0));
  KStmt *li = lw_for(k, body, "i", g.kh, KL_REDUCE, &i);
  KExpr *iy = tap(k, li, "iy", v[1], i, g.sy, g.py, 1, g.h, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g.kw, KL_REDUCE, &j);
  KExpr *ix = tap(k, lj, "ix", v[2], j, g.sx, g.px, 1, g.w, &okx);
  accumulate(k, lw_if(k, lj, okx), sum, LOAD(0, ADD(xc, ADD(MUL(iy, IC(g.w)), ix))));
  KExpr *div = divisor(k, body, &g, n->at.count_include_pad, v[1], v[2]);
  KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(g.ho)), v[1]), IC(g.wo)), v[2]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, DIV(VAR(sum), div)));
  return k;
}

/* in[0] = gy: each input position sums gy / divisor over the windows that
 * cover it (taps in order). */
Kernel *lower_avgpool2d_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  Win g = geo(n, &n->shape, &n->in[0]->shape);
  KExpr *v[3], *i, *j, *oky, *okx;
  if (shape_numel(&n->shape) == 0)
    return k;
  KStmt *body = plane_loops(k, g.n * g.c, g.h, g.w, v);
  KExpr *gc = lw_bind(k, body, "gc", MUL(v[0], IC(g.ho * g.wo)));
  int acc = decl(k, body, "acc", KT_F32, FC(0));
  KStmt *li = lw_for(k, body, "i", g.kh, KL_REDUCE, &i);
  KExpr *oy = covering(k, li, "oy", v[1], i, g.sy, g.py, 1, g.ho, &oky);
  KStmt *lj = lw_for(k, lw_if(k, li, oky), "j", g.kw, KL_REDUCE, &j);
  KExpr *ox = covering(k, lj, "ox", v[2], j, g.sx, g.px, 1, g.wo, &okx);
  KStmt *in = lw_if(k, lj, okx);
  KExpr *div = divisor(k, in, &g, n->at.count_include_pad, oy, ox);
  accumulate(k, in, acc, DIV(LOAD(0, ADD(gc, ADD(MUL(oy, IC(g.wo)), ox))), div));
  KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(g.h)), v[1]), IC(g.w)), v[2]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(acc)));
  return k;
}

/* --- upsampling ------------------------------------------------------------------------ */

/* up_taps of output index d along an axis len -> len_out, in exact integer
 * arithmetic: align_corners: src = d (len - 1) / (len_out - 1); otherwise
 * src = (d + 0.5) / s - 0.5 = (2d + 1 - s) / 2s, clamped at 0.  i0 =
 * floor(src) is the integer quotient, the weight of i1 = min(i0 + 1,
 * len - 1) the remainder over the divisor, rounded once to f32. */
typedef struct Taps {
  KExpr *i0, *i1, *w0, *w1;
} Taps;

static void up_div(const Node *n, int64_t len, int64_t len_out, int64_t *mul, int64_t *add,
                   int64_t *den) {
  int s = n->at.scale;
  if (n->at.align_corners) {
    *mul = len_out > 1 ? len - 1 : 0, *add = 0, *den = len_out > 1 ? len_out - 1 : 1;
  } else
    *mul = 2, *add = 1 - s, *den = 2 * (int64_t)s;
}

static Taps taps(Kernel *k, KStmt *body, const Node *n, KExpr *d, int64_t len, int64_t len_out,
                 const char *name) {
  int64_t mul, add, den;
  up_div(n, len, len_out, &mul, &add, &den);
  KExpr *num = lw_let(k, body, "num", MAX(ADD(MUL(d, IC(mul)), IC(add)), IC(0)));
  Taps t;
  t.i0 = lw_let(k, body, name, FDIV(num, IC(den)));
  t.i1 = lw_let(k, body, name, MIN(ADD(t.i0, IC(1)), IC(len - 1)));
  KExpr *rem = ke_cast(k, KT_F32, SUB(num, MUL(t.i0, IC(den))));
  t.w1 = lw_let(k, body, "w", DIV(rem, FC((double)den)));
  t.w0 = lw_let(k, body, "w", SUB(FC(1), t.w1));
  /* the same indices as the reference's up_taps, for every output index */
  for (int64_t o = 0; o < len_out; o++) {
    UpTaps r = up_taps(o, len, len_out, n->at.scale, 1, n->at.align_corners);
    int64_t nm = o * mul + add;
    ASSERT(r.i[0] == (nm > 0 ? nm : 0) / den);
  }
  return t;
}

/* mode 0: out[y][x] = in[y / s][x / s] (loops over the input and the s x s
 * copies, no division); mode 1: the bilinear blend of up_at,
 * wy0 (wx0 v00 + wx1 v01) + wy1 (wx0 v10 + wx1 v11). */
Kernel *lower_upsample(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  const Shape *xs = &n->in[0]->shape;
  int64_t nc = xs->dim[0] * xs->dim[1], h = xs->dim[2], w = xs->dim[3], s = n->at.scale;
  int64_t ho = n->shape.dim[2], wo = n->shape.dim[3];
  if (shape_numel(&n->shape) == 0)
    return k;
  if (n->at.mode == 0) {
    int64_t dim[4] = {nc * h, s, w, s}, st[LW_OPS][MAX_RANK] = {{s * wo, wo, s, 1}, {w, 0, 1, 0}};
    Nest ns;
    lw_nest(k, k->body, 4, dim, 2, st, NEST_MAP, &ns);
    ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), LOAD(0, lw_at(k, &ns, 1, 0))));
    return k;
  }
  KExpr *v[3];
  static const char *const names[] = {"bc", "y", "x"};
  KStmt *ly = lw_fors(k, k->body, 2, (int64_t[]){nc, ho}, names, v, KL_PARALLEL, KL_SERIAL);
  Taps ty = taps(k, ly, n, v[1], h, ho, "iy");
  KExpr *xc = lw_bind(k, ly, "xc", MUL(v[0], IC(h * w)));
  KExpr *r0 = lw_let(k, ly, "r0", ADD(xc, MUL(ty.i0, IC(w))));
  KExpr *r1 = lw_let(k, ly, "r1", ADD(xc, MUL(ty.i1, IC(w))));
  KStmt *lx = lw_for(k, ly, "x", wo, ly == k->body ? KL_PARALLEL : KL_SERIAL, &v[2]);
  Taps tx = taps(k, lx, n, v[2], w, wo, "ix");
#define ROW(r) ADD(MUL(tx.w0, LOAD(0, ADD(r, tx.i0))), MUL(tx.w1, LOAD(0, ADD(r, tx.i1))))
  KExpr *val = ADD(MUL(ty.w0, ROW(r0)), MUL(ty.w1, ROW(r1)));
#undef ROW
  KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(ho)), v[1]), IC(wo)), v[2]);
  ks_add(k, lx, ks_store(k, lw_out(n), oi, val));
  return k;
}

/* The outputs that read input index i along an axis lie in [s*i - off,
 * s*i - off + cnt): off and cnt from a scan of up_taps (the reference's
 * up_range), so the kernel's candidate window provably holds them all. */
static void reader_window(const Node *n, int64_t len, int64_t len_out, int64_t *off,
                          int64_t *cnt) {
  int64_t s = n->at.scale, lo_off = INT64_MIN, hi_end = INT64_MIN;
  for (int64_t o = 0; o < len_out; o++) {
    UpTaps t = up_taps(o, len, len_out, n->at.scale, n->at.mode, n->at.align_corners);
    for (int q = 0; q < t.n; q++) {
      int64_t i = t.i[q];
      lo_off = s * i - o > lo_off ? s * i - o : lo_off; /* off >= s*i - o for each reader o */
      hi_end = o - s * i > hi_end ? o - s * i : hi_end;
    }
  }
  *off = lo_off;
  *cnt = hi_end + lo_off + 1;
}

/* in[0] = gy: dx[iy][ix] = sum over the outputs (oy, ox) that read (iy, ix),
 * in order, of wy(oy, iy) wx(ox, ix) gy[oy][ox] (eval_upsample_back); the
 * candidates come from reader_window, the weight of a candidate is the sum
 * of its taps' weights that land on the index (0 taps: skipped). */
Kernel *lower_upsample_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  const Shape *gs = &n->in[0]->shape;
  int64_t nc = n->shape.dim[0] * n->shape.dim[1], h = n->shape.dim[2], w = n->shape.dim[3];
  int64_t ho = gs->dim[2], wo = gs->dim[3], s = n->at.scale;
  if (shape_numel(&n->shape) == 0)
    return k;
  KExpr *v[3], *a1, *b1;
  KStmt *body = plane_loops(k, nc, h, w, v);
  KExpr *gc = lw_bind(k, body, "gc", MUL(v[0], IC(ho * wo)));
  int acc = decl(k, body, "acc", KT_F32, FC(0));
  if (n->at.mode == 0) { /* the s x s block of copies, rows then columns */
    KStmt *la = lw_for(k, body, "a", s, KL_REDUCE, &a1);
    KStmt *lb = lw_for(k, la, "b", s, KL_REDUCE, &b1);
    KExpr *oy = ADD(MUL(v[1], IC(s)), a1), *ox = ADD(MUL(v[2], IC(s)), b1);
    accumulate(k, lb, acc, LOAD(0, ADD(gc, ADD(MUL(oy, IC(wo)), ox))));
  } else {
    int64_t offy, cy, offx, cx;
    reader_window(n, h, ho, &offy, &cy);
    reader_window(n, w, wo, &offx, &cx);
    KExpr *wy, *wx, *t;
    KStmt *ly = lw_for(k, body, "ty", cy, KL_REDUCE, &t);
    KExpr *oy = lw_let(k, ly, "oy", ADD(SUB(MUL(v[1], IC(s)), IC(offy)), t));
    KStmt *iny = lw_if(k, ly, IN_RANGE(oy, 0, ho));
    Taps tyy = taps(k, iny, n, oy, h, ho, "iy");
    KExpr *ry0 = lw_let(k, iny, "ry", EQ(tyy.i0, v[1])),
          *ry1 = lw_let(k, iny, "ry", EQ(tyy.i1, v[1]));
    KStmt *ry = lw_if(k, iny, OR(ry0, ry1));
    wy = lw_let(k, ry, "wy", ADD(SEL(ry0, tyy.w0, FC(0)), SEL(ry1, tyy.w1, FC(0))));
    KStmt *lx = lw_for(k, ry, "tx", cx, KL_REDUCE, &t);
    KExpr *ox = lw_let(k, lx, "ox", ADD(SUB(MUL(v[2], IC(s)), IC(offx)), t));
    KStmt *inx = lw_if(k, lx, IN_RANGE(ox, 0, wo));
    Taps txx = taps(k, inx, n, ox, w, wo, "ix");
    KExpr *rx0 = lw_let(k, inx, "rx", EQ(txx.i0, v[2])),
          *rx1 = lw_let(k, inx, "rx", EQ(txx.i1, v[2]));
    KStmt *rx = lw_if(k, inx, OR(rx0, rx1));
    wx = lw_let(k, rx, "wx", ADD(SEL(rx0, txx.w0, FC(0)), SEL(rx1, txx.w1, FC(0))));
    accumulate(k, rx, acc, MUL(MUL(wy, wx), LOAD(0, ADD(gc, ADD(MUL(oy, IC(wo)), ox)))));
  }
  KExpr *oi = ADD(MUL(ADD(MUL(v[0], IC(h)), v[1]), IC(w)), v[2]);
  ks_add(k, body, ks_store(k, lw_out(n), oi, VAR(acc)));
  return k;
}
