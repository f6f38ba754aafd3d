/*
 * cg_pool.c: the gradient of max pooling for windows two pixels wide at
 * stride 2 that tile the input (the usual 2x2 stride-2 pooling), as
 * explicit 16-lane vector code: one vector holds 16 windows of a window
 * row, its taps read as two contiguous vectors per input row and split
 * into even and odd columns by shuffles, the results interleaved back.
 *
 * Why: the loop nests of ir/lower_nn.c (unrolled taps, the loop over a
 * row's windows innermost) read every tap at stride 2; LLVM vectorizes
 * such a loop only as wide as its trip count allows (4 windows for a
 * 14-window row, plus a scalar remainder), which made the gradient of
 * LeNet's first pooling 0.14 ms of a 1.2 ms training step (0.05 ms here,
 * where a row of up to 16 windows is one masked vector step).  The forward
 * pooling keeps its loop nest: it does one store per window, not four, and
 * measured no faster this way (slower for 5-window rows).
 *
 * Bit for bit the Kernel IR's (ir/lower_nn.c, maxpool2d_back_disjoint):
 * taps in order (i, then j), best = isnan(v) ? v : max(best, v) with
 * max(a, b) = a < b ? b : a, from -inf; 0 + gy goes to the first tap equal
 * to best or NaN, 0 to the others.  Which kernels: a maxpool2d_back node's
 * kernel in the standard layout (gy, x, then the output, all f32), kernel
 * [kh, 2], stride [kh, 2], no padding or dilation, windows that tile the
 * input exactly (H = kh Ho, W = 2 Wo), so every input position is
 * written.  Everything else, and CgOpts.no_schedule, keeps the loop nest.
 *
 *   void K(bufs)                 rt_parallel_for(N C Ho, grain, K.rows, &bufs)
 *   void K.rows(ctx, r0, r1)     for window row r, for x0 in 0..Wo by 16: ...
 */
#include <stdlib.h>
#include <string.h>

#include "cg_internal.h"

enum {
  LANES = 16,
  ROW_GRAIN_TAPS = 8192, /* taps per parallel task, roughly */
  SERIAL_TAPS = 16384,   /* below this in all, no rt_parallel_for */
  KH_MAX = 64,           /* window rows (the taps are straight-line code) */
};

typedef struct Pool {
  int64_t rows, h, w, ho, wo, kh; /* rows = N C Ho window rows */
} Pool;

/* Whether k is such a kernel; its geometry into p. */
static bool describe(const Kernel *k, Pool *p) {
  const Node *n = k->node;
  if (!n || n->op != OP_MAXPOOL2D_BACK || k->n_bufs != n->n_in + 1)
    return false;
  for (int i = 0; i <= n->n_in; i++) {
    const KBuf *b = &k->bufs[i];
    const Node *v = i < n->n_in ? n->in[i] : n;
    if (b->node != v->id || b->type != KT_F32 || b->role != (i < n->n_in ? KB_IN : KB_OUT) ||
        b->numel != shape_numel(&v->shape) || v->dtype != DT_F32 || v->shape.rank != 4)
      return false;
  }
  const Shape *x = &n->in[1]->shape, *y = &n->in[0]->shape;
  const Attrs *at = &n->at;
  p->h = x->dim[2], p->w = x->dim[3], p->ho = y->dim[2], p->wo = y->dim[3], p->kh = at->kernel[0];
  p->rows = y->dim[0] * y->dim[1] * p->ho;
  bool dil = (at->dilation[0] && at->dilation[0] != 1) || (at->dilation[1] && at->dilation[1] != 1);
  if (at->kernel[1] != 2 || at->stride[1] != 2 || at->stride[0] != p->kh || p->kh < 1 ||
      at->pad[0] || at->pad[1] || dil || p->rows * p->wo == 0)
    return false;
  return p->h == p->kh * p->ho && p->w == 2 * p->wo;
}

/* --- helpers ------------------------------------------------------------------------ */

static LLVMValueRef i64c(Cg *cg, int64_t v) {
  return LLVMConstInt(cg->t_i64, (unsigned long long)v, 1);
}

static LLVMValueRef i32c(Cg *cg, int64_t v) {
  return LLVMConstInt(cg->t_i32, (unsigned long long)v, 1);
}

static LLVMValueRef gep(Cg *cg, LLVMBuilderRef b, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildGEP2(b, cg->t_f32, p, &i, 1, "");
}

/* Lane l of the mask: l + off < n (n an i32 splat). */
static LLVMValueRef lanes_below(Cg *cg, LLVMBuilderRef b, LLVMValueRef splat_n, int off) {
  LLVMValueRef lane[LANES];
  for (int l = 0; l < LANES; l++)
    lane[l] = i32c(cg, l + off);
  return LLVMBuildICmp(b, LLVMIntSLT, LLVMConstVector(lane, LANES), splat_n, "");
}

/* A shuffle of a and b taking lanes first, first + step, ... (16 of them). */
static LLVMValueRef pick(Cg *cg, LLVMBuilderRef b, LLVMValueRef x, LLVMValueRef y,
                         const int *idx) {
  LLVMValueRef m[LANES];
  for (int l = 0; l < LANES; l++)
    m[l] = i32c(cg, idx[l]);
  return LLVMBuildShuffleVector(b, x, y, LLVMConstVector(m, LANES), "");
}

typedef struct Vec {
  Cg *cg;
  LLVMBuilderRef b;
  LLVMTypeRef vf, mtys[2];
  LLVMValueRef zero_v, align4;
} Vec;

static LLVMValueRef vload(Vec *v, LLVMValueRef p, LLVMValueRef mask) {
  LLVMValueRef args[] = {p, v->align4, mask, v->zero_v};
  return cg_intrinsic(v->cg, v->b, "llvm.masked.load", v->mtys, 2, args, 4);
}

static void vstore(Vec *v, LLVMValueRef x, LLVMValueRef p, LLVMValueRef mask) {
  LLVMValueRef args[] = {x, p, v->align4, mask};
  cg_intrinsic(v->cg, v->b, "llvm.masked.store", v->mtys, 2, args, 4);
}

static LLVMValueRef isnan_v(Vec *v, LLVMValueRef x) {
  return LLVMBuildFCmp(v->b, LLVMRealUNO, x, x, "");
}

/* --- the row function -------------------------------------------------------------- */

/* One step: windows x0 + [0, cnt) of a window row (its kh input rows of W
 * floats at in, and of the output at out; its gy at gy). */
static void emit_step(const Pool *p, Vec *v, LLVMValueRef in, LLVMValueRef gy, LLVMValueRef out,
                      LLVMValueRef x0, LLVMValueRef cnt) {
  Cg *cg = v->cg;
  LLVMBuilderRef b = v->b;
  LLVMTypeRef vi = LLVMVectorType(cg->t_i32, LANES);
  LLVMValueRef c32 = LLVMBuildTrunc(b, cnt, cg->t_i32, "");
  LLVMValueRef n_win = LLVMBuildShuffleVector(
      b, LLVMBuildInsertElement(b, LLVMGetPoison(vi), c32, i32c(cg, 0), ""), LLVMGetPoison(vi),
      LLVMConstNull(vi), "");
  LLVMValueRef n_px = LLVMBuildAdd(b, n_win, n_win, "");
  LLVMValueRef m_win = lanes_below(cg, b, n_win, 0);
  LLVMValueRef m_lo = lanes_below(cg, b, n_px, 0), m_hi = lanes_below(cg, b, n_px, LANES);
  int even[LANES], odd[LANES], lo[LANES], hi[LANES];
  for (int l = 0; l < LANES; l++) {
    even[l] = 2 * l, odd[l] = 2 * l + 1;
    lo[l] = l / 2 + (l % 2 ? LANES : 0), hi[l] = LANES / 2 + l / 2 + (l % 2 ? LANES : 0);
  }
  LLVMValueRef px = LLVMBuildAdd(b, x0, x0, ""); /* the window's first column */
  LLVMValueRef tv[2 * KH_MAX], best = LLVMConstReal(cg->t_f32, -__builtin_inf());
  LLVMValueRef splat_inf[LANES];
  for (int l = 0; l < LANES; l++)
    splat_inf[l] = best;
  best = LLVMConstVector(splat_inf, LANES);
  for (int64_t i = 0; i < p->kh; i++) {
    LLVMValueRef row = gep(cg, b, in, LLVMBuildAdd(b, px, i64c(cg, i * p->w), ""));
    LLVMValueRef a = vload(v, row, m_lo), c = vload(v, gep(cg, b, row, i64c(cg, LANES)), m_hi);
    tv[2 * i] = pick(cg, b, a, c, even), tv[2 * i + 1] = pick(cg, b, a, c, odd);
    for (int j = 0; j < 2; j++) {
      LLVMValueRef t = tv[2 * i + j];
      LLVMValueRef mx = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, best, t, ""), t, best, "");
      best = LLVMBuildSelect(b, isnan_v(v, t), t, mx, "");
    }
  }
  LLVMValueRef g = LLVMBuildFAdd(b, LLVMConstNull(v->vf), vload(v, gep(cg, b, gy, x0), m_win), "");
  LLVMTypeRef vm = LLVMVectorType(cg->t_i1, LANES);
  LLVMValueRef done = LLVMConstNull(vm);
  for (int64_t i = 0; i < p->kh; i++) {
    LLVMValueRef val[2];
    for (int j = 0; j < 2; j++) {
      LLVMValueRef t = tv[2 * i + j];
      LLVMValueRef hit = LLVMBuildOr(b, LLVMBuildFCmp(b, LLVMRealOEQ, t, best, ""), isnan_v(v, t), "");
      LLVMValueRef m = LLVMBuildAnd(b, hit, LLVMBuildNot(b, done, ""), "");
      done = LLVMBuildOr(b, done, m, "");
      val[j] = LLVMBuildSelect(b, m, g, v->zero_v, "");
    }
    LLVMValueRef row = gep(cg, b, out, LLVMBuildAdd(b, px, i64c(cg, i * p->w), ""));
    vstore(v, pick(cg, b, val[0], val[1], lo), row, m_lo);
    vstore(v, pick(cg, b, val[0], val[1], hi), gep(cg, b, row, i64c(cg, LANES)), m_hi);
  }
}

/* void NAME(ptr ctx, i64 r0, i64 r1): ctx holds the buffer-pointer array. */
static LLVMValueRef emit_rows(const Pool *p, Cg *cg, const Kernel *k, const char *name) {
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, cg->t_body);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  cg_set_fn_attrs(cg, fn);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(cg->ctx, fn, "row");
  LLVMBasicBlockRef step = LLVMAppendBasicBlockInContext(cg->ctx, fn, "step");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(cg->ctx, fn, "next");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "exit");
  LLVMPositionBuilderAtEnd(b, entry);
  LLVMValueRef bufs = LLVMBuildLoad2(b, cg->t_ptr, LLVMGetParam(fn, 0), "bufs"), ptr[3];
  for (int i = 0; i < k->n_bufs; i++) {
    LLVMValueRef idx = i64c(cg, i);
    ptr[i] = LLVMBuildLoad2(b, cg->t_ptr, LLVMBuildInBoundsGEP2(b, cg->t_ptr, bufs, &idx, 1, ""),
                            k->bufs[i].name);
  }
  LLVMValueRef gy = ptr[0], x = ptr[1], out = ptr[2];
  LLVMValueRef r0 = LLVMGetParam(fn, 1), r1 = LLVMGetParam(fn, 2);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, r0, r1, ""), head, exit);

  LLVMPositionBuilderAtEnd(b, head); /* r: plane r / Ho, window row r % Ho */
  LLVMValueRef r = LLVMBuildPhi(b, cg->t_i64, "r");
  LLVMValueRef plane = LLVMBuildSDiv(b, r, i64c(cg, p->ho), "");
  LLVMValueRef y = LLVMBuildSRem(b, r, i64c(cg, p->ho), "");
  LLVMValueRef ib = LLVMBuildAdd(b, LLVMBuildMul(b, plane, i64c(cg, p->h * p->w), ""),
                                 LLVMBuildMul(b, y, i64c(cg, p->kh * p->w), ""), "");
  LLVMValueRef in = gep(cg, b, x, ib), orow = gep(cg, b, out, ib);
  LLVMValueRef grow = gep(cg, b, gy, LLVMBuildMul(b, r, i64c(cg, p->wo), ""));
  LLVMBuildBr(b, step);

  LLVMPositionBuilderAtEnd(b, step);
  LLVMValueRef x0 = LLVMBuildPhi(b, cg->t_i64, "x0");
  LLVMValueRef left = LLVMBuildSub(b, i64c(cg, p->wo), x0, "");
  LLVMValueRef cnt = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, left, i64c(cg, LANES), ""),
                                     left, i64c(cg, LANES), "");
  Vec v = {.cg = cg, .b = b, .vf = LLVMVectorType(cg->t_f32, LANES), .align4 = i32c(cg, 4)};
  v.mtys[0] = v.vf, v.mtys[1] = cg->t_ptr, v.zero_v = LLVMConstNull(v.vf);
  emit_step(p, &v, in, grow, orow, x0, cnt);
  LLVMValueRef x1 = LLVMBuildNSWAdd(b, x0, i64c(cg, LANES), "");
  LLVMBasicBlockRef step_end = LLVMGetInsertBlock(b);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, x1, i64c(cg, p->wo), ""), step, next);
  LLVMAddIncoming(x0, (LLVMValueRef[]){i64c(cg, 0), x1}, (LLVMBasicBlockRef[]){head, step_end}, 2);

  LLVMPositionBuilderAtEnd(b, next);
  LLVMValueRef rn = LLVMBuildNSWAdd(b, r, i64c(cg, 1), "");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, rn, r1, ""), head, exit);
  LLVMAddIncoming(r, (LLVMValueRef[]){r0, rn}, (LLVMBasicBlockRef[]){entry, next}, 2);

  LLVMPositionBuilderAtEnd(b, exit);
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  return fn;
}

bool cg_pool(Cg *cg, const Kernel *k) {
  Pool p;
  if (cg->no_schedule || getenv("KILN_NO_POOL") || !describe(k, &p) || p.kh > KH_MAX)
    return false;
  char name[300];
  snprintf(name, sizeof name, "%s.rows", k->name);
  LLVMValueRef rows = emit_rows(&p, cg, k, name);
  Fn f;
  cg_fn_begin(&f, cg, k, k->name, cg->t_kernel, LLVMExternalLinkage);
  cg_fn_attr(cg, f.fn, "noinline");
  LLVMValueRef ctx = LLVMBuildAlloca(f.ab, cg->t_ptr, "ctx");
  LLVMBuildStore(f.b, LLVMGetParam(f.fn, 0), ctx);
  int64_t taps = 2 * p.kh * p.wo, grain = ROW_GRAIN_TAPS / taps;
  if (p.rows * taps < SERIAL_TAPS || p.rows == 1) {
    LLVMValueRef args[] = {ctx, i64c(cg, 0), i64c(cg, p.rows)};
    LLVMBuildCall2(f.b, cg->t_body, rows, args, 3, "");
  } else {
    LLVMValueRef pfor = LLVMGetNamedFunction(cg->mod, "rt_parallel_for");
    if (!pfor)
      pfor = LLVMAddFunction(cg->mod, "rt_parallel_for", cg->t_pfor);
    LLVMValueRef args[] = {i64c(cg, p.rows), i64c(cg, grain > 1 ? grain : 1), rows, ctx};
    LLVMBuildCall2(f.b, cg->t_pfor, pfor, args, 4, "");
  }
  cg_fn_end(&f);
  return true;
}
