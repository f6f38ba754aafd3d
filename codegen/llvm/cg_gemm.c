/*
 * cg_gemm.c: matmul and convolution kernels with a real schedule: cache
 * blocking, a packed B panel, and a register-blocked micro-kernel of
 * 16-lane vector FMAs, split across threads by blocks of C.
 *
 * Which kernels: those cg_gemm_ops.c can describe as a GEMM (a matmul,
 * conv2d, conv_transpose2d or conv2d_back_w node's kernel in the standard
 * layout of ir/lower_nn.c).  Everything else, and these with CgOpts.
 * no_schedule, is emitted from its Kernel IR as before.
 *
 * Bit for bit: each element of C is summed by one task, from 0, in the
 * order of the Kernel IR's reduction loops, one fma per term (KE_FMA),
 * so the result is kir_eval's exactly, for every thread count and every
 * schedule parameter; only the speed differs.  (A kernel whose lowering
 * sums in chunks, conv2d_back_w's images, has one task per chunk, each
 * summing its partial from 0, and `finish` adds the partials in order
 * after the tasks, as the lowering does: the chunks are the lowering's,
 * fixed by the shapes, so the bits still never depend on the threads.)
 *
 * The code, for a kernel K (all sizes are compile-time constants):
 *
 *   void K(void *const *bufs)         rt_parallel_for(tasks, grain, K.gemm, &bufs)
 *   void K.gemm(ctx, t0, t1)          for task t in [t0, t1):
 *       (bt, mi, ni) = t              a batch element and a block of C: rows
 *                                     m0 + [0, mb), columns n0 + [0, nb)
 *       for kb in 0..KB (or the task's kb_lo..kb_hi), for pc in 0..KI by kc:
 *         pack B[kb, pc.., n0..] into bp (kc x nb, stack, zero-padded)
 *         for ir in m0.. by MR:
 *           for jr in n0.. by NR:
 *             K.ukr(A at (ir, kb, pc), bp + jr, C at (ir, jr), kc, rows, cols, first)
 *                                     (conv_direct: no packing; for each
 *                                     output row y, for jr in 0..Wo by NR,
 *                                     B at the row's pixels in the image
 *                                     or its padded copy, split into phases
 *                                     at a stride along x; its rows at
 *                                     K.ukr.taps's offsets)
 *           if that was the last K panel (of the last kb), C's rows ir..
 *           of the block are final: a fused kernel's epilogue over them,
 *           K.tile_epilogue(bufs, C's offset at (ir, n0), rows, ldc, nb)
 *       (conv_transpose2d: after col2im, K.tile_epilogue over the
 *       task's output channels)
 *       (then, with chunks: finish: C = 0 + partial 0 + partial 1 + ...)
 *       (kb_inner, a batch sum with B in place: the kb loop runs once
 *       and K.ukr walks the blocks itself, C += each block's sum)
 *   (K.epilogue after the tasks instead, where the epilogue is not one
 *   elementwise nest over C, or with chunks: see tile_epilogue)
 *   void K.tile_epilogue(bufs, s, rows, ld, cols)
 *                                     a fused kernel's epilogue (the
 *                                     statements after Kernel.n_head) over
 *                                     the flat runs [s + r ld, + cols),
 *                                     r < rows, while they are in L1
 *   void K.ukr(...)                   MR x NR accumulators in registers,
 *                                     loaded from C (or 0 on the first
 *                                     panel); per k: NV vector loads of bp,
 *                                     MR broadcasts of A, MR*NV fmas;
 *                                     masked stores (edges need no other
 *                                     code: masks cover rows >= rows and
 *                                     lanes >= cols)
 *
 * Parameters, and why (AVX-512: 32 vector registers of 16 floats; 48 KiB
 * L1d and 2 MiB L2 per core on the machine of docs/benchmarks.md):
 *   NR = 16 NV, NV = 4 when N >= 49 (fewer for narrow N, which would
 *        waste lanes), MR = 6 for NV = 4 (24 accumulators + 4 B vectors +
 *        a broadcast = 29 registers), 8 for NV = 3, 12 for NV = 2, and
 *        for NV = 1 16 with AVX-512's 32 registers (12 without); MR
 *        never exceeds M.  The 24 independent accumulators cover the 4-cycle
 *        FMA latency of two FMA ports with room to spare.
 *   kc <= KC_MAX = 256: a micro-kernel call runs over a panel of kc, its A
 *        sliver (MR x kc = 6 KiB) stays in L1 while the loop over jr
 *        streams the panel (kc x nb <= 256 x 512 floats = 512 KiB) from L2.
 *        Where a task's columns are one micro-tile (one jr), the sliver is
 *        read once and kc goes up to 256 x 512 / ldbp (panel_depth): A's
 *        rows are then read in longer runs.  KI is cut into equal panels,
 *        so no panel is a short remainder.
 *   nb <= NB_MAX = 512 columns per task; tasks are then split (nb halved,
 *        then mb) until there are TASKS_WANT of them when the kernel has
 *        enough work, so both threads of a 2-core machine get several
 *        tasks.  A is never packed (it is read in place: broadcasts
 *        need no layout), so splitting N costs no repacking; B's panel is
 *        packed once per task and panel, and reused by every ir.
 *   The panel's row stride ldbp is nb rounded up to NR, plus 16 floats
 *   when that is a multiple of 1024 floats (4 KiB aliasing between rows).
 *   The panel lives on the stack of the thread running the task (at most
 *   KC_MAX x (NB_MAX + 16) floats: ~530 KiB of the 8 MiB default).
 */
#include <stdlib.h>
#include <string.h>

#include "cg_gemm.h"

enum {
  KC_MAX = GEMM_KC_MAX,
  NB_MAX = 512,
  TASKS_WANT = 8,
  TASK_MIN_FLOPS = 1 << 18, /* below this per task, splitting further does not pay */
  SERIAL_FLOPS = 1 << 16,   /* below this in all, no rt_parallel_for */
  MB_MIN = 96,              /* rows per task before splitting M pays for repacking */
  MR_MAX = 16,              /* a micro-tile's rows, at most */
  PANEL_FLOATS = KC_MAX * NB_MAX, /* a deeper panel's floats, at most (panel_depth) */
  NV_MAX = 4,               /* and its vectors */
};

static int64_t up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static int64_t cdiv(int64_t x, int64_t m) { return (x + m - 1) / m; }

/* --- the schedule ------------------------------------------------------------------ */

static void count_tasks(Gemm *g) {
  GemmSched *s = &g->s;
  s->m_blocks = cdiv(g->m, s->mb);
  s->n_blocks = cdiv(g->n, s->nb);
  s->tasks = g->batch * s->m_blocks * s->n_blocks;
}

static int64_t env_or(const char *name, int64_t v) {
  const char *e = getenv(name);
  return e && *e ? atoll(e) : v;
}

/* The deepest K panel for a task's columns (ldbp, micro-tiles of nr):
 * KC_MAX, so that the micro-kernel's A sliver (MR x kc) stays in L1 while
 * the calls of one panel go along the columns; deeper where the columns
 * are one micro-tile, whose sliver is read once: the panel (kc x ldbp,
 * read from L2 by each micro-tile of rows) is then the bound.  A is read
 * in place, MR rows at a time, each for kc floats: at batch 1 the late
 * layers of a CNN (4 x 4 pixels: one micro-tile; 512 x 4608 weights, read
 * once per call from memory) spent their time waiting on those short runs
 * of 256 (docs/benchmarks.md, twelfth session). */
static int64_t panel_depth(const GemmSched *s) {
  if (s->ldbp > s->nr)
    return KC_MAX;
  int64_t deep = PANEL_FLOATS / s->ldbp;
  return deep > KC_MAX ? deep : KC_MAX;
}

void gemm_schedule(Gemm *g) {
  GemmSched *s = &g->s;
  /* rows of a micro-tile by its vectors (the header).  A one-vector tile
   * of 16 rows: the attention's batched [16, 8] x [8, 16] products at
   * batch 32 went from 10 to 8 us (12 rows left a 4-row remainder) */
  static const int mr_of[] = {0, 12, 12, 8, 6};
  int64_t nv = cdiv(g->conv_direct ? g->d_wo : g->n, 16); /* direct: tiles within a row */
  s->nv = nv >= 4 ? 4 : (int)nv;
  s->nr = 16 * s->nv;
  int mr = s->nv == 1 && g->regs32 ? MR_MAX : mr_of[s->nv];
  s->mr = mr < g->m ? mr : (int)g->m;
  int64_t nbmax = env_or("KILN_GEMM_NB", NB_MAX);
  int64_t want = env_or("KILN_GEMM_TASKS", TASKS_WANT);
  int64_t nalign = g->n_align > 1 ? g->n_align : s->nr;
  s->nb = g->n_whole || g->n <= nbmax ? g->n : (nbmax / nalign > 0 ? nbmax / nalign * nalign : nalign);
  int64_t align = g->m_align > 1 ? g->m_align : s->mr;
  s->mb = g->m;
  if (g->mb_max && s->mb > g->mb_max)
    s->mb = g->mb_max / align > 0 ? g->mb_max / align * align : align;
  count_tasks(g);
  double flops = 2.0 * (double)g->batch * (double)g->m * (double)g->n * (double)(g->kb * g->ki);
  while (!g->n_whole && s->tasks < want && s->nb > s->nr && s->nb > nalign &&
         flops / (double)s->tasks >= 2.0 * TASK_MIN_FLOPS) {
    s->nb = up(cdiv(s->nb, 2), nalign);
    count_tasks(g);
  }
  /* each block of rows packs its panels again: only blocks of MB_MIN rows
   * or more amortize that */
  while (!g->m_whole && s->tasks < want && s->mb > align && s->mb >= 2 * MB_MIN &&
         flops / (double)s->tasks >= 2.0 * TASK_MIN_FLOPS) {
    s->mb = up(cdiv(s->mb, 2), align);
    count_tasks(g);
  }
  s->ldbp = up(s->nb, s->nr);
  if (s->ldbp % 1024 == 0)
    s->ldbp += 16;
  int64_t kcmax = env_or("KILN_GEMM_KC", panel_depth(s));
  s->kc = g->conv_direct || g->sum_kb ? g->ki : cdiv(g->ki, cdiv(g->ki, kcmax));
}

/* --- helpers --------------------------------------------------------------------------- */

/* The output buffer the GEMM's node writes (a fused kernel's epilogue
 * reads it there, and writes the group's output over it). */
static int gemm_out(const Gemm *g) { return (g->k->head ? g->k->head : g->k->node)->n_in; }

static LLVMValueRef i64c(Cg *cg, int64_t v) {
  return LLVMConstInt(cg->t_i64, (unsigned long long)v, 1);
}

static LLVMValueRef get(Fn *f, int var) {
  return LLVMBuildLoad2(f->b, f->cg->t_i64, cg_slot(f, var), "");
}

static void set(Fn *f, int var, LLVMValueRef v) { LLVMBuildStore(f->b, v, cg_slot(f, var)); }

static LLVMValueRef smin(Fn *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(f->b, LLVMBuildICmp(f->b, LLVMIntSLT, a, b, ""), a, b, "");
}

static LLVMValueRef gep(Fn *f, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildGEP2(f->b, f->cg->t_f32, p, &i, 1, "");
}

/* for (var = lo; var < hi; var += step) { ... }: hl_begin opens the body,
 * hl_end closes it.  hi is evaluated before the loop. */
typedef struct HLoop {
  LLVMBasicBlockRef head, done;
  int var;
  int64_t step;
} HLoop;

static void hl_begin(Fn *f, HLoop *l, int var, LLVMValueRef lo, LLVMValueRef hi, int64_t step) {
  Cg *cg = f->cg;
  l->var = var, l->step = step;
  l->head = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "g.loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "g.body");
  l->done = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "g.done");
  set(f, var, lo);
  LLVMBuildBr(f->b, l->head);
  LLVMPositionBuilderAtEnd(f->b, l->head);
  LLVMBuildCondBr(f->b, LLVMBuildICmp(f->b, LLVMIntSLT, get(f, var), hi, ""), body, l->done);
  LLVMPositionBuilderAtEnd(f->b, body);
  f->depth++;
}

static void hl_end(Fn *f, HLoop *l) {
  set(f, l->var, LLVMBuildNSWAdd(f->b, get(f, l->var), i64c(f->cg, l->step), ""));
  LLVMBuildBr(f->b, l->head);
  LLVMPositionBuilderAtEnd(f->b, l->done);
  f->depth--;
}

/* --- the micro-kernel ------------------------------------------------------------------ */

/* conv_direct's per-tap offsets of B's rows, a private constant array. */
static LLVMValueRef tap_table(Gemm *g, Cg *cg, const char *ukr_name) {
  char name[320];
  snprintf(name, sizeof name, "%s.taps", ukr_name);
  LLVMValueRef *v = malloc((size_t)g->ki * sizeof *v);
  ASSERT(v);
  for (int64_t i = 0; i < g->ki; i++)
    v[i] = i64c(cg, g->d_off[i]);
  LLVMTypeRef ty = LLVMArrayType2(cg->t_i64, (uint64_t)g->ki);
  LLVMValueRef gl = LLVMAddGlobal(cg->mod, ty, name);
  LLVMSetInitializer(gl, LLVMConstArray2(cg->t_i64, v, (uint64_t)g->ki));
  LLVMSetGlobalConstant(gl, 1);
  LLVMSetLinkage(gl, LLVMPrivateLinkage);
  free(v);
  return gl;
}

/* void ukr(ptr a, ptr b, ptr c, i64 kc, i64 rows, i64 cols, i1 first, i64 nkb),
 * with nv vectors of columns (the schedule's NV, or fewer: ukr_variants):
 * C[r, 0..cols) (+)= sum over k < kc of A(r, k) bp[k, ..] for r < rows,
 * A(r, k) at a[r a_rs + k a_ks], bp rows ldbp apart, C rows ldc apart.
 * The sum continues C's (from 0 when first); with sum_kb it starts from 0
 * and is then added to C (to 0 when first).  With kb_inner, so for each
 * of nkb blocks kb in turn, A and B a_kbs and b_kbs floats further on
 * (first: C from 0 at block 0); otherwise nkb is 1. */
static LLVMValueRef emit_ukr(Gemm *g, Cg *cg, const char *name, int nv) {
  const GemmSched *s = &g->s;
  int mr = s->mr;
  LLVMTypeRef vf = LLVMVectorType(cg->t_f32, 16), vi = LLVMVectorType(cg->t_i32, 16);
  LLVMTypeRef vm = LLVMVectorType(cg->t_i1, 16);
  LLVMTypeRef ps[] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_i64,
                      cg->t_i64, cg->t_i64, cg->t_i1,  cg->t_i64};
  LLVMTypeRef ty = LLVMFunctionType(cg->t_void, ps, 8, 0);
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, ty);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  cg_set_fn_attrs(cg, fn);
  unsigned nocap = LLVMGetEnumAttributeKindForName("nocapture", 9);
  for (unsigned i = 1; i <= 3; i++)
    LLVMAddAttributeAtIndex(fn, i, LLVMCreateEnumAttribute(cg->ctx, nocap, 0));
  LLVMValueRef a = LLVMGetParam(fn, 0), bp = LLVMGetParam(fn, 1), c = LLVMGetParam(fn, 2);
  LLVMValueRef kc = LLVMGetParam(fn, 3), rows = LLVMGetParam(fn, 4), cols = LLVMGetParam(fn, 5);
  LLVMValueRef first = LLVMGetParam(fn, 6), nkb = LLVMGetParam(fn, 7);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
  LLVMBasicBlockRef kbh = g->kb_inner ? LLVMAppendBasicBlockInContext(cg->ctx, fn, "kb") : NULL;
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, fn, "k");
  LLVMBasicBlockRef kbt = g->kb_inner ? LLVMAppendBasicBlockInContext(cg->ctx, fn, "kb.add") : NULL;
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, fn, "store");
  LLVMBuilderRef b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(b, entry);
  Fn f = {.cg = cg, .fn = fn, .b = b};

  LLVMValueRef lane[16], zero_m = LLVMConstNull(vm), zero_v = LLVMConstNull(vf);
  LLVMValueRef masks[NV_MAX], rowa[MR_MAX], rowc[MR_MAX];
  LLVMValueRef acc0[MR_MAX][NV_MAX], acc[MR_MAX][NV_MAX], nxt[MR_MAX][NV_MAX], smask[MR_MAX][NV_MAX];
  LLVMValueRef cold[MR_MAX][NV_MAX]; /* sum_kb: C before (0 when first) */
  LLVMValueRef okr[MR_MAX];
  LLVMValueRef cols32 = LLVMBuildTrunc(b, cols, cg->t_i32, "");
  LLVMValueRef splat_cols = LLVMBuildShuffleVector(
      b, LLVMBuildInsertElement(b, LLVMGetPoison(vi), cols32, LLVMConstInt(cg->t_i32, 0, 0), ""),
      LLVMGetPoison(vi), LLVMConstNull(vi), "");
  for (int v = 0; v < nv; v++) {
    for (int l = 0; l < 16; l++)
      lane[l] = LLVMConstInt(cg->t_i32, (unsigned long long)(16 * v + l), 0);
    masks[v] = LLVMBuildICmp(b, LLVMIntSLT, LLVMConstVector(lane, 16), splat_cols, "");
  }
  LLVMValueRef notfirst = LLVMBuildNot(b, first, "");
  LLVMValueRef last = LLVMBuildSub(b, rows, i64c(cg, 1), "");
  LLVMTypeRef mtys[] = {vf, cg->t_ptr};
  LLVMValueRef align4 = LLVMConstInt(cg->t_i32, 4, 0);
  for (int r = 0; r < mr; r++) {
    LLVMValueRef ok = okr[r] = LLVMBuildICmp(b, LLVMIntSLT, i64c(cg, r), rows, "");
    LLVMValueRef rr = LLVMBuildSelect(b, ok, i64c(cg, r), last, ""); /* stay inside A */
    rowa[r] = gep(&f, a, LLVMBuildMul(b, rr, i64c(cg, g->a_rs), ""));
    rowc[r] = gep(&f, c, i64c(cg, r * g->ldc));
    LLVMValueRef load_ok = LLVMBuildAnd(b, ok, notfirst, "");
    for (int v = 0; v < nv; v++) {
      smask[r][v] = LLVMBuildSelect(b, ok, masks[v], zero_m, "");
      LLVMValueRef args[] = {gep(&f, rowc[r], i64c(cg, 16 * v)), align4,
                             LLVMBuildSelect(b, load_ok, masks[v], zero_m, ""), zero_v};
      acc0[r][v] = g->sum_kb ? zero_v : cg_intrinsic(cg, b, "llvm.masked.load", mtys, 2, args, 4);
      cold[r][v] = g->sum_kb && !g->kb_inner
                       ? cg_intrinsic(cg, b, "llvm.masked.load", mtys, 2, args, 4)
                       : NULL;
    }
  }
  LLVMValueRef kbv = NULL, kb1 = NULL, kbb = NULL;
  if (g->kb_inner) { /* block kb: A and B at their offsets */
    LLVMBuildBr(b, kbh);
    LLVMPositionBuilderAtEnd(b, kbh);
    kbv = LLVMBuildPhi(b, cg->t_i64, "kb");
    kbb = gep(&f, bp, LLVMBuildMul(b, kbv, i64c(cg, g->b_kbs), ""));
  }
  LLVMBasicBlockRef pre = g->kb_inner ? kbh : entry;
  LLVMBuildBr(b, body);

  LLVMPositionBuilderAtEnd(b, body);
  LLVMValueRef k = LLVMBuildPhi(b, cg->t_i64, "k");
  for (int r = 0; r < mr; r++)
    for (int v = 0; v < nv; v++)
      acc[r][v] = LLVMBuildPhi(b, vf, "");
  LLVMValueRef bv[NV_MAX];
  int64_t ldb = g->b_direct ? g->b_rs : g->s.ldbp;
  LLVMValueRef brow = gep(&f, kbb ? kbb : bp, LLVMBuildMul(b, k, i64c(cg, ldb), ""));
  if (g->conv_direct) { /* row k of B: the tap's offset, from a table */
    LLVMValueRef pk = LLVMBuildGEP2(b, cg->t_i64, tap_table(g, cg, name), &k, 1, "");
    brow = gep(&f, bp, LLVMBuildLoad2(b, cg->t_i64, pk, ""));
  }
  for (int v = 0; v < nv; v++) {
    LLVMValueRef p = gep(&f, brow, i64c(cg, 16 * v));
    if (g->b_direct || g->conv_direct) { /* B in place: lanes past its last column are not
                                          * ours to read */
      LLVMValueRef args[] = {p, align4, masks[v], zero_v};
      bv[v] = cg_intrinsic(cg, b, "llvm.masked.load", mtys, 2, args, 4);
    } else {
      bv[v] = LLVMBuildLoad2(b, vf, p, "");
      LLVMSetAlignment(bv[v], 64);
    }
  }
  LLVMValueRef koff = LLVMBuildMul(b, k, i64c(cg, g->a_ks), "");
  if (kbv)
    koff = LLVMBuildAdd(b, koff, LLVMBuildMul(b, kbv, i64c(cg, g->a_kbs), ""), "");
  for (int r = 0; r < mr; r++) {
    LLVMValueRef av = LLVMBuildLoad2(b, cg->t_f32, gep(&f, rowa[r], koff), "");
    LLVMValueRef sv = LLVMBuildShuffleVector(
        b, LLVMBuildInsertElement(b, LLVMGetPoison(vf), av, LLVMConstInt(cg->t_i32, 0, 0), ""),
        LLVMGetPoison(vf), LLVMConstNull(vi), "");
    for (int v = 0; v < nv; v++) {
      LLVMValueRef args[] = {sv, bv[v], acc[r][v]};
      nxt[r][v] = cg_intrinsic(cg, b, "llvm.fma", &vf, 1, args, 3);
    }
  }
  LLVMValueRef k1 = LLVMBuildNSWAdd(b, k, i64c(cg, 1), "");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, k1, kc, ""), body, kbt ? kbt : exit);
  LLVMValueRef zero = i64c(cg, 0);
  LLVMAddIncoming(k, (LLVMValueRef[]){zero, k1}, (LLVMBasicBlockRef[]){pre, body}, 2);
  for (int r = 0; r < mr; r++)
    for (int v = 0; v < nv; v++)
      LLVMAddIncoming(acc[r][v], (LLVMValueRef[]){acc0[r][v], nxt[r][v]},
                      (LLVMBasicBlockRef[]){pre, body}, 2);

  if (g->kb_inner) { /* C = (0 when first at block 0, else C) + the block's sum */
    LLVMPositionBuilderAtEnd(b, kbt);
    LLVMValueRef fresh = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntEQ, kbv, zero, ""), first, "");
    LLVMValueRef keep = LLVMBuildNot(b, fresh, "");
    for (int r = 0; r < mr; r++)
      for (int v = 0; v < nv; v++) {
        LLVMValueRef at = gep(&f, rowc[r], i64c(cg, 16 * v));
        LLVMValueRef largs[] = {at, align4,
                                LLVMBuildSelect(b, LLVMBuildAnd(b, okr[r], keep, ""), masks[v],
                                                zero_m, ""),
                                zero_v};
        LLVMValueRef old = cg_intrinsic(cg, b, "llvm.masked.load", mtys, 2, largs, 4);
        LLVMValueRef args[] = {LLVMBuildFAdd(b, old, nxt[r][v], ""), at, align4, smask[r][v]};
        cg_intrinsic(cg, b, "llvm.masked.store", mtys, 2, args, 4);
      }
    kb1 = LLVMBuildNSWAdd(b, kbv, i64c(cg, 1), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, kb1, nkb, ""), kbh, exit);
    LLVMAddIncoming(kbv, (LLVMValueRef[]){zero, kb1}, (LLVMBasicBlockRef[]){entry, kbt}, 2);
  }

  LLVMPositionBuilderAtEnd(b, exit);
  for (int r = 0; r < mr && !g->kb_inner; r++)
    for (int v = 0; v < nv; v++) {
      LLVMValueRef val = g->sum_kb ? LLVMBuildFAdd(b, cold[r][v], nxt[r][v], "") : nxt[r][v];
      LLVMValueRef args[] = {val, gep(&f, rowc[r], i64c(cg, 16 * v)), align4, smask[r][v]};
      cg_intrinsic(cg, b, "llvm.masked.store", mtys, 2, args, 4);
    }
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  return fn;
}

/* The micro-kernels: u[NV] the schedule's, and, where the last tile of a
 * task's columns (or of the last task's) is narrower than NR, u[v] for
 * the v = cdiv(width, 16) < NV vectors it needs (NULL otherwise): such a
 * tile runs that one instead of NV vectors of which the masks keep a few
 * lanes (ResNet-50's 14 x 14 images: 196 pixels = 64 + 64 + 64 + 4 in
 * tiles of 64; the last tile's fmas were 94% masked off).  The same sums
 * in the same order per column, so the same bits. */
static void ukr_variants(Gemm *g, Cg *cg, const char *name, LLVMValueRef *u) {
  const GemmSched *s = &g->s;
  /* the widths of last tiles: of a task's block, and of the last block */
  int64_t last[2] = {(g->conv_direct ? g->d_wo : s->nb) % s->nr,
                     g->conv_direct ? 0 : g->n % s->nb % s->nr};
  for (int v = 1; v <= NV_MAX; v++)
    u[v] = NULL;
  u[s->nv] = emit_ukr(g, cg, name, s->nv);
  for (int i = 0; i < 2 && !getenv("KILN_NO_NARROW_UKR"); i++) {
    int v = (int)((last[i] + 15) / 16);
    if (v == 0 || v >= s->nv || u[v])
      continue;
    char vname[320];
    snprintf(vname, sizeof vname, "%s.v%d", name, v);
    u[v] = emit_ukr(g, cg, vname, v);
  }
}

/* Calls the micro-kernel for a tile of `cols` columns (ukr_variants). */
static void call_ukr(Fn *f, Gemm *g, LLVMValueRef *u, LLVMValueRef *args) {
  Cg *cg = f->cg;
  int nv = g->s.nv, n_narrow = 0;
  LLVMTypeRef ty = LLVMGlobalGetValueType(u[nv]);
  for (int v = 1; v < nv; v++)
    n_narrow += u[v] != NULL;
  if (!n_narrow) {
    LLVMBuildCall2(f->b, ty, u[nv], args, 8, "");
    return;
  }
  LLVMValueRef vecs = LLVMBuildSDiv(f->b, LLVMBuildAdd(f->b, args[5], i64c(cg, 15), ""),
                                    i64c(cg, 16), "vecs");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "ukr.done");
  LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "ukr.full");
  LLVMValueRef sw = LLVMBuildSwitch(f->b, vecs, full, (unsigned)n_narrow);
  for (int v = 1; v <= nv; v++) {
    if (!u[v])
      continue;
    LLVMBasicBlockRef bb = full;
    if (v < nv) {
      bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "ukr.narrow");
      LLVMAddCase(sw, i64c(cg, v), bb);
    }
    LLVMPositionBuilderAtEnd(f->b, bb);
    LLVMBuildCall2(f->b, ty, u[v], args, 8, "");
    LLVMBuildBr(f->b, done);
  }
  LLVMPositionBuilderAtEnd(f->b, done);
}

/* --- a fused kernel's epilogue, per tile ------------------------------------------------ */

/* Outputs of at least this many bytes (about one core's L2 here) get their
 * epilogue per tile; smaller ones after the tasks (cg_gemm). */
#define EPI_TILE_MIN (1024.0 * 1024.0)

/* The epilogue of a fused kernel (Kernel.head: the statements after the
 * first n_head) is, as ir/lower_fuse.c makes it, scalar locals (KS_DECL),
 * then one loop nest over the output's elements, row-major: loops of
 * constant extents E[0..R) (extent-1 axes dropped, axes merged), whose
 * innermost body, free of loops, handles the element at flat index
 * sum of var[d] * (E[d+1] ... E[R-1]): it loads every input there or at
 * its broadcast index, the GEMM's result there, and stores each output
 * there.  tile_epilogue checks that shape (the flat index of every store
 * and of every load of an output buffer, from the loop variables through
 * the body's locals) and rebuilds it as statements of pk over flat runs:
 *
 *   prelude (the scalar locals)
 *   for r in 0..rows:                    runs [s + r ld, s + r ld + cols)
 *     lo = s + r ld, hi = lo + cols
 *     for o in lo / E[R-1] ..= (hi - 1) / E[R-1]:    rows of the nest
 *       var[d] = o / (E[d+1] ... E[R-2]) mod E[d], d < R - 1
 *       a = max(lo - o E[R-1], 0), b = min(hi - o E[R-1], E[R-1])
 *       for u in 0..b - a (KL_VECTOR when the innermost loop is):
 *         var[R-1] = a + u
 *         the innermost body
 *
 * so each element gets its own formula, with the loop variables the nest
 * would give it: the same bits, in any order and on any thread, as long
 * as each element is handled once, after its GEMM value is final, and no
 * input aliases an output (passes/inplace.c never lets an epilogue
 * group's output overwrite an input).  NULL (the epilogue then runs after
 * the GEMM, as K.epilogue) when the statements have another shape. */

/* Whether e, through the body's locals (def), is c + sum coef[d] var[d];
 * adds mult times it to *c and coef. */
static bool linear(const KExpr *e, int64_t mult, KExpr *const *def, const int *nest_d,
                   int64_t *coef, int64_t *c, int depth) {
  if (depth > 64)
    return false;
  switch (e->kind) {
  case KE_ICONST: *c += mult * e->i; return true;
  case KE_VAR:
    if (nest_d[e->var] >= 0) {
      coef[nest_d[e->var]] += mult;
      return true;
    }
    return def[e->var] && linear(def[e->var], mult, def, nest_d, coef, c, depth + 1);
  case KE_BINARY:
    if (e->type != KT_IDX)
      return false;
    if (e->op == KO_ADD || e->op == KO_SUB)
      return linear(e->a, mult, def, nest_d, coef, c, depth + 1) &&
             linear(e->b, e->op == KO_SUB ? -mult : mult, def, nest_d, coef, c, depth + 1);
    if (e->op == KO_MUL && e->b->kind == KE_ICONST)
      return linear(e->a, mult * e->b->i, def, nest_d, coef, c, depth + 1);
    if (e->op == KO_MUL && e->a->kind == KE_ICONST)
      return linear(e->b, mult * e->a->i, def, nest_d, coef, c, depth + 1);
    return false;
  default: return false;
  }
}

typedef struct EpiCheck {
  const Kernel *k;
  KExpr **def;       /* per variable: its KS_DECL's value in the innermost body */
  const int *nest_d; /* per variable: its loop's depth in the nest, or -1 */
  const int64_t *flat; /* the row-major stride of each loop */
  int rank;
} EpiCheck;

static bool flat_index(const EpiCheck *c, const KExpr *e) {
  int64_t coef[MAX_RANK] = {0}, k0 = 0;
  if (!linear(e, 1, c->def, c->nest_d, coef, &k0, 0) || k0 != 0)
    return false;
  for (int d = 0; d < c->rank; d++)
    if (coef[d] != c->flat[d])
      return false;
  return true;
}

/* Loads of an output buffer in e: at the flat index only. */
static bool loads_ok(const EpiCheck *c, const KExpr *e) {
  if (!e)
    return true;
  if (e->kind == KE_LOAD && c->k->bufs[e->buf].role != KB_IN && !flat_index(c, e->a))
    return false;
  return loads_ok(c, e->a) && loads_ok(c, e->b) && loads_ok(c, e->c);
}

/* The innermost body's statements: locals, and stores of outputs at the
 * flat index (an if around them is fine; no loops, no KS_SET). */
static bool body_ok(EpiCheck *c, const KStmt *s) {
  switch (s->kind) {
  case KS_DECL:
    if (!loads_ok(c, s->value))
      return false;
    c->def[s->var] = s->value;
    return true;
  case KS_STORE:
    return c->k->bufs[s->buf].role == KB_OUT && flat_index(c, s->index) &&
           loads_ok(c, s->value);
  case KS_IF:
  case KS_BLOCK:
    if (s->kind == KS_IF && !loads_ok(c, s->cond))
      return false;
    for (int i = 0; i < s->n_body; i++)
      if (!body_ok(c, s->body[i]))
        return false;
    return true;
  default: return false;
  }
}

static bool loads_no_output(const Kernel *k, const KExpr *e) {
  if (!e)
    return true;
  if (e->kind == KE_LOAD && k->bufs[e->buf].role != KB_IN)
    return false;
  return loads_no_output(k, e->a) && loads_no_output(k, e->b) && loads_no_output(k, e->c);
}

static KStmt *tile_epilogue(Gemm *g) {
  const Kernel *k = g->k;
  Kernel *pk = g->pk;
  if (!k->head || getenv("KILN_EPILOGUE_AFTER"))
    return NULL;
  const KStmt *const *body = (const KStmt *const *)k->body->body;
  int first = k->n_head, last = k->body->n_body - 1;
  if (last < first || body[last]->kind != KS_LOOP)
    return NULL;
  for (int i = first; i < last; i++)
    if (body[i]->kind != KS_DECL || !loads_no_output(k, body[i]->value))
      return NULL;
  const KStmt *nest[MAX_RANK];
  int rank = 0;
  for (const KStmt *s = body[last];; s = s->body[0]) {
    if (rank == MAX_RANK || s->extent->kind != KE_ICONST || s->extent->i < 1)
      return NULL;
    nest[rank++] = s;
    if (s->n_body != 1 || s->body[0]->kind != KS_LOOP)
      break;
  }
  int64_t flat[MAX_RANK], numel = 1;
  for (int d = rank - 1; d >= 0; d--)
    flat[d] = numel, numel *= nest[d]->extent->i;
  if (numel != k->bufs[gemm_out(g)].numel)
    return NULL;
  int *nest_d = malloc(sizeof(int) * (size_t)(k->n_vars + 1));
  KExpr **def = calloc((size_t)k->n_vars + 1, sizeof *def);
  ASSERT(nest_d && def);
  for (int v = 0; v < k->n_vars; v++)
    nest_d[v] = -1;
  for (int d = 0; d < rank; d++)
    nest_d[nest[d]->var] = d;
  EpiCheck c = {k, def, nest_d, flat, rank};
  const KStmt *in = nest[rank - 1];
  bool ok = true;
  for (int i = 0; ok && i < in->n_body; i++)
    ok = body_ok(&c, in->body[i]);
  free(nest_d), free(def);
  if (!ok)
    return NULL;

#define IC(v) ke_idx(pk, (int64_t)(v))
#define BIN(op, a, b) ke_binary(pk, op, a, b)
#define VAR(v) ke_var(pk, v)
  int64_t e = nest[rank - 1]->extent->i;
  g->v_es = kir_var(pk, "es", KT_IDX), g->v_erows = kir_var(pk, "erows", KT_IDX);
  g->v_eld = kir_var(pk, "eld", KT_IDX), g->v_ecols = kir_var(pk, "ecols", KT_IDX);
  int v_r = kir_var(pk, "er", KT_IDX), v_lo = kir_var(pk, "elo", KT_IDX);
  int v_hi = kir_var(pk, "ehi", KT_IDX), v_o0 = kir_var(pk, "eo0", KT_IDX);
  int v_q = kir_var(pk, "eq", KT_IDX), v_o = kir_var(pk, "eo", KT_IDX);
  int v_a = kir_var(pk, "ea", KT_IDX), v_b = kir_var(pk, "eb", KT_IDX);
  int v_u = kir_var(pk, "eu", KT_IDX);
  KStmt *blk = ks_block(pk);
  for (int i = first; i < last; i++)
    ks_add(pk, blk, k->body->body[i]);
  KStmt *lr = ks_loop(pk, v_r, VAR(g->v_erows), KL_SERIAL);
  ks_add(pk, blk, lr);
  KExpr *lo = VAR(v_lo), *hi = VAR(v_hi), *o = VAR(v_o);
  KExpr *start = BIN(KO_ADD, VAR(g->v_es), BIN(KO_MUL, VAR(v_r), VAR(g->v_eld)));
  ks_add(pk, lr, ks_decl(pk, v_lo, start));
  ks_add(pk, lr, ks_decl(pk, v_hi, BIN(KO_ADD, lo, VAR(g->v_ecols))));
  ks_add(pk, lr, ks_decl(pk, v_o0, BIN(KO_FLOORDIV, lo, IC(e))));
  KExpr *n_o = BIN(KO_ADD, BIN(KO_SUB, BIN(KO_FLOORDIV, BIN(KO_SUB, hi, IC(1)), IC(e)), VAR(v_o0)),
                   IC(1));
  KStmt *lq = ks_loop(pk, v_q, BIN(KO_MAX, n_o, IC(0)), KL_SERIAL);
  ks_add(pk, lr, lq);
  ks_add(pk, lq, ks_decl(pk, v_o, BIN(KO_ADD, VAR(v_o0), VAR(v_q))));
  for (int d = rank - 2; d >= 0; d--) {
    KExpr *x = BIN(KO_FLOORDIV, o, IC(flat[d] / e));
    ks_add(pk, lq, ks_decl(pk, nest[d]->var, d ? BIN(KO_MOD, x, IC(nest[d]->extent->i)) : x));
  }
  KExpr *at = BIN(KO_MUL, o, IC(e));
  ks_add(pk, lq, ks_decl(pk, v_a, BIN(KO_MAX, BIN(KO_SUB, lo, at), IC(0))));
  ks_add(pk, lq, ks_decl(pk, v_b, BIN(KO_MIN, BIN(KO_SUB, hi, at), IC(e))));
  KLoopKind kind = in->loop == KL_VECTOR ? KL_VECTOR : KL_SERIAL;
  KStmt *lu = ks_loop(pk, v_u, BIN(KO_SUB, VAR(v_b), VAR(v_a)), kind);
  ks_add(pk, lq, lu);
  ks_add(pk, lu, ks_decl(pk, in->var, BIN(KO_ADD, VAR(v_a), VAR(v_u))));
  for (int i = 0; i < in->n_body; i++)
    ks_add(pk, lu, in->body[i]);
#undef IC
#undef BIN
#undef VAR
  return blk;
}

/* void K.tile_epilogue(ptr bufs, i64 s, i64 rows, i64 ld, i64 cols): the
 * epilogue over the flat runs [s + r ld, s + r ld + cols), r < rows. */
static LLVMValueRef emit_tile_epilogue(Gemm *g, Cg *cg) {
  char name[300];
  snprintf(name, sizeof name, "%s.tile_epilogue", g->k->name);
  LLVMTypeRef ps[] = {cg->t_ptr, cg->t_i64, cg->t_i64, cg->t_i64, cg->t_i64};
  int n_outlined = 0;
  Fn e;
  cg_fn_begin(&e, cg, g->pk, name, LLVMFunctionType(cg->t_void, ps, 5, 0), LLVMInternalLinkage);
  e.in_parallel = true; /* called by a task: its loops stay serial */
  /* not inlined into the task loop: there it slowed ResNet-small's first
   * convolution (conv_direct) by 30% at batch 64 */
  cg_fn_attr(cg, e.fn, "noinline");
  e.n_outlined = &n_outlined;
  LLVMValueRef bufs = LLVMGetParam(e.fn, 0);
  e.bufs = bufs;
  for (int i = 0; i < g->k->n_bufs; i++) { /* not the scratch: no such pointers */
    LLVMValueRef idx = i64c(cg, i);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e.ab, cg->t_ptr, bufs, &idx, 1, "");
    e.buf[i] = LLVMBuildLoad2(e.ab, cg->t_ptr, p, g->k->bufs[i].name);
  }
  int vars[] = {g->v_es, g->v_erows, g->v_eld, g->v_ecols};
  for (int i = 0; i < 4; i++)
    set(&e, vars[i], LLVMGetParam(e.fn, (unsigned)i + 1));
  cg_stmt(&e, g->tile_epi);
  LLVMValueRef fn = e.fn;
  cg_fn_end(&e);
  return fn;
}

/* --- the task loop ---------------------------------------------------------------------- */

/* t -> (bt, block of rows, block of columns), as Kernel IR statements. */
static KStmt *task_split(Gemm *g) {
  Kernel *k = g->pk;
  const GemmSched *s = &g->s;
  KStmt *blk = ks_block(k);
  KExpr *t = ke_var(k, g->v_t);
#define IC(v) ke_idx(k, (int64_t)(v))
#define BIN(op, a, b) ke_binary(k, op, a, b)
  KExpr *per = IC(s->m_blocks * s->n_blocks);
  ks_add(k, blk, ks_set(k, g->v_bt, BIN(KO_FLOORDIV, t, per)));
  KExpr *mi = BIN(KO_MOD, BIN(KO_FLOORDIV, t, IC(s->n_blocks)), IC(s->m_blocks));
  ks_add(k, blk, ks_set(k, g->v_m0, BIN(KO_MUL, mi, IC(s->mb))));
  KExpr *m0 = ke_var(k, g->v_m0), *n0 = ke_var(k, g->v_n0), *nb = ke_var(k, g->v_nb);
  ks_add(k, blk, ks_set(k, g->v_mc, BIN(KO_MIN, IC(s->mb), BIN(KO_SUB, IC(g->m), m0))));
  ks_add(k, blk, ks_set(k, g->v_n0, BIN(KO_MUL, BIN(KO_MOD, t, IC(s->n_blocks)), IC(s->nb))));
  ks_add(k, blk, ks_set(k, g->v_nb, BIN(KO_MIN, IC(s->nb), BIN(KO_SUB, IC(g->n), n0))));
  KExpr *rnb = BIN(KO_MUL, BIN(KO_FLOORDIV, BIN(KO_ADD, nb, IC(s->nr - 1)), IC(s->nr)), IC(s->nr));
  ks_add(k, blk, ks_set(k, g->v_rnb, rnb));
#undef IC
#undef BIN
  return blk;
}

/* void NAME(ptr ctx, i64 t0, i64 t1): ctx holds the buffer-pointer array. */
static LLVMValueRef emit_tasks(Gemm *g, Cg *cg, LLVMValueRef *ukrs, LLVMValueRef epi,
                               const char *name) {
  const GemmSched *s = &g->s;
  const Kernel *k = g->pk;
  int n_outlined = 0;
  Fn f;
  cg_fn_begin(&f, cg, k, name, cg->t_body, LLVMInternalLinkage);
  f.in_parallel = true;
  f.n_outlined = &n_outlined;
  LLVMValueRef bufs = LLVMBuildLoad2(f.ab, cg->t_ptr, LLVMGetParam(f.fn, 0), "bufs");
  if (g->ps_buf >= 0) { /* ctx = {bufs, ps} (emit_kernel) */
    LLVMValueRef one = i64c(cg, 1);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(f.ab, cg->t_ptr, LLVMGetParam(f.fn, 0), &one, 1, "");
    f.buf[g->ps_buf] = LLVMBuildLoad2(f.ab, cg->t_ptr, p, "ps");
  }
  for (int i = 0; i < g->k->n_bufs; i++) {
    LLVMValueRef idx = i64c(cg, i);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(f.ab, cg->t_ptr, bufs, &idx, 1, "");
    f.buf[i] = LLVMBuildLoad2(f.ab, cg->t_ptr, p, k->bufs[i].name);
  }
  int scratch[] = {g->bp_buf, g->xs_buf, g->cs_buf};
  for (int i = 0; i < 3; i++) {
    if (scratch[i] < 0)
      continue;
    const KBuf *sb = &k->bufs[scratch[i]];
    LLVMTypeRef ty = LLVMArrayType2(cg->t_f32, (uint64_t)sb->numel);
    f.buf[scratch[i]] = LLVMBuildAlloca(f.ab, ty, sb->name);
    LLVMSetAlignment(f.buf[scratch[i]], 64);
  }
  if (g->xs_buf >= 0) /* the zero padding of every task's copy (cg_gemm_ops.c, padded_copy) */
    LLVMBuildMemSet(f.b, f.buf[g->xs_buf], LLVMConstInt(cg->t_i8, 0, 0),
                    i64c(cg, k->bufs[g->xs_buf].numel * 4), 64);
  KStmt *split = task_split(g);
  LLVMTypeRef epi_ty = epi ? LLVMGlobalGetValueType(epi) : NULL;

  HLoop lt, lk, lp, li, lj;
  hl_begin(&f, &lt, g->v_t, LLVMGetParam(f.fn, 1), LLVMGetParam(f.fn, 2), 1);
  cg_stmt(&f, split);
  LLVMValueRef cbase = cg_expr(&f, g->c_base);
  LLVMValueRef kb_lo = g->kb_lo ? cg_expr(&f, g->kb_lo) : i64c(cg, 0);
  /* kb_inner: the micro-kernel walks the blocks; the loop here runs once */
  LLVMValueRef kb_hi = g->kb_hi ? cg_expr(&f, g->kb_hi) : i64c(cg, g->kb_inner ? 1 : g->kb);
  LLVMValueRef nkb = i64c(cg, g->kb_inner ? g->kb : 1);
  hl_begin(&f, &lk, g->v_kb, kb_lo, kb_hi, 1);
  LLVMValueRef abase = cg_expr(&f, g->a_base);
  if (g->prep)
    cg_stmt(&f, g->prep);
  hl_begin(&f, &lp, g->v_pc, i64c(cg, 0), i64c(cg, g->ki), s->kc);
  LLVMValueRef pc = get(&f, g->v_pc);
  set(&f, g->v_kc, smin(&f, i64c(cg, s->kc), LLVMBuildSub(f.b, i64c(cg, g->ki), pc, "")));
  LLVMValueRef panel = f.buf[g->bp_buf];
  if (g->conv_direct) {
    panel = gep(&f, f.buf[g->b_buf], cg_expr(&f, g->b_base));
  } else if (g->b_direct) {
    LLVMValueRef off = LLVMBuildAdd(f.b, cg_expr(&f, g->b_base), get(&f, g->v_n0), "");
    off = LLVMBuildAdd(f.b, off, LLVMBuildMul(f.b, pc, i64c(cg, g->b_rs), ""), "");
    panel = gep(&f, f.buf[g->b_buf], off);
  } else {
    cg_stmt(&f, g->pack);
  }
  pc = get(&f, g->v_pc);
  LLVMValueRef z = i64c(cg, 0);
  LLVMValueRef first = LLVMBuildAnd(f.b, LLVMBuildICmp(f.b, LLVMIntEQ, get(&f, g->v_kb), kb_lo, ""),
                                    LLVMBuildICmp(f.b, LLVMIntEQ, pc, z, ""), "first");
  LLVMValueRef aoff = LLVMBuildAdd(f.b, abase, LLVMBuildMul(f.b, pc, i64c(cg, g->a_ks), ""), "");
  LLVMValueRef kc = get(&f, g->v_kc), mc = get(&f, g->v_mc), nb = get(&f, g->v_nb);
  hl_begin(&f, &li, g->v_ir, z, mc, s->mr);
  LLVMValueRef ir = get(&f, g->v_ir), m = LLVMBuildAdd(f.b, get(&f, g->v_m0), ir, "");
  LLVMValueRef rows = smin(&f, i64c(cg, s->mr), LLVMBuildSub(f.b, mc, ir, ""));
  LLVMValueRef arow = gep(&f, f.buf[g->a_buf],
                          LLVMBuildAdd(f.b, aoff, LLVMBuildMul(f.b, m, i64c(cg, g->a_rs), ""), ""));
  LLVMValueRef coff = LLVMBuildAdd(f.b, LLVMBuildAdd(f.b, cbase, get(&f, g->v_n0), ""),
                                   LLVMBuildMul(f.b, m, i64c(cg, g->ldc), ""), "");
  LLVMValueRef crow = gep(&f, f.buf[g->c_buf], coff);
  if (g->conv_direct) { /* tiles within each output row y */
    HLoop ly;
    hl_begin(&f, &ly, g->v_y, z, i64c(cg, g->d_ho), 1);
    LLVMValueRef y = get(&f, g->v_y);
    LLVMValueRef brow = gep(&f, panel, LLVMBuildMul(f.b, y, i64c(cg, g->d_rs), ""));
    LLVMValueRef orow = gep(&f, crow, LLVMBuildMul(f.b, y, i64c(cg, g->d_wo), ""));
    hl_begin(&f, &lj, g->v_jr, z, i64c(cg, g->d_wo), s->nr);
    LLVMValueRef jr = get(&f, g->v_jr);
    LLVMValueRef cols = smin(&f, i64c(cg, s->nr), LLVMBuildSub(f.b, i64c(cg, g->d_wo), jr, ""));
    LLVMValueRef args[] = {arow, gep(&f, brow, jr), gep(&f, orow, jr), kc, rows, cols, first, nkb};
    call_ukr(&f, g, ukrs, args);
    hl_end(&f, &lj);
    hl_end(&f, &ly);
  } else {
    hl_begin(&f, &lj, g->v_jr, z, nb, s->nr);
    LLVMValueRef jr = get(&f, g->v_jr);
    LLVMValueRef cols = smin(&f, i64c(cg, s->nr), LLVMBuildSub(f.b, nb, jr, ""));
    LLVMValueRef args[] = {arow, gep(&f, panel, jr), gep(&f, crow, jr), kc, rows, cols, first, nkb};
    call_ukr(&f, g, ukrs, args);
    hl_end(&f, &lj);
  }
  if (epi && !g->epilogue) {
    /* rows m.. of C, columns n0 + [0, nb) (conv_direct: all of them), are
     * final once the last K panel of the last block has been stored into
     * them: the fused epilogue runs over them now, while they are in L1 */
    LLVMValueRef last_kb = LLVMBuildICmp(
        f.b, LLVMIntEQ, get(&f, g->v_kb), LLVMBuildSub(f.b, kb_hi, i64c(cg, 1), ""), "");
    LLVMValueRef last_pc = LLVMBuildICmp(
        f.b, LLVMIntSGE, LLVMBuildAdd(f.b, get(&f, g->v_pc), get(&f, g->v_kc), ""),
        i64c(cg, g->ki), "");
    LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(cg->ctx, f.fn, "g.epi");
    LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(cg->ctx, f.fn, "g.epi.done");
    LLVMBuildCondBr(f.b, LLVMBuildAnd(f.b, last_kb, last_pc, "final"), run, after);
    LLVMPositionBuilderAtEnd(f.b, run);
    LLVMValueRef args[] = {bufs, coff, rows, i64c(cg, g->ldc), get(&f, g->v_nb)};
    LLVMBuildCall2(f.b, epi_ty, epi, args, 5, "");
    LLVMBuildBr(f.b, after);
    LLVMPositionBuilderAtEnd(f.b, after);
  }
  hl_end(&f, &li);
  hl_end(&f, &lp);
  hl_end(&f, &lk);
  if (g->epilogue) {
    cg_stmt(&f, g->epilogue);
    if (epi) { /* C was scratch: the output is final where the task's epilogue wrote it */
      LLVMValueRef args[] = {bufs, cg_expr(&f, g->done_lo), i64c(cg, 1), i64c(cg, 0),
                             cg_expr(&f, g->done_n)};
      LLVMBuildCall2(f.b, epi_ty, epi, args, 5, "");
    }
  }
  hl_end(&f, &lt);
  cg_fn_end(&f);
  return f.fn;
}

/* --- the kernel ------------------------------------------------------------------------- */

/* The partial sums' scratch (ps) of a kernel with a finish, on the stack of
 * the kernel function, which outlives its tasks; ctx gets {bufs, ps}. */
static LLVMValueRef kernel_ctx(Gemm *g, Fn *f) {
  Cg *cg = f->cg;
  LLVMValueRef ctx = LLVMBuildAlloca(f->ab, LLVMArrayType2(cg->t_ptr, 2), "ctx");
  LLVMBuildStore(f->b, LLVMGetParam(f->fn, 0), ctx);
  if (g->ps_buf < 0)
    return ctx;
  const KBuf *pb = &g->pk->bufs[g->ps_buf];
  f->buf[g->ps_buf] = LLVMBuildAlloca(f->ab, LLVMArrayType2(cg->t_f32, (uint64_t)pb->numel), "ps");
  LLVMSetAlignment(f->buf[g->ps_buf], 64);
  LLVMValueRef one = i64c(cg, 1);
  LLVMBuildStore(f->b, f->buf[g->ps_buf], LLVMBuildInBoundsGEP2(f->b, cg->t_ptr, ctx, &one, 1, ""));
  for (int i = 0; i < g->k->n_bufs; i++) {
    LLVMValueRef idx = i64c(cg, i);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(f->ab, cg->t_ptr, LLVMGetParam(f->fn, 0), &idx, 1, "");
    f->buf[i] = LLVMBuildLoad2(f->ab, cg->t_ptr, p, g->k->bufs[i].name);
  }
  return ctx;
}

/* A fused kernel's epilogue (Kernel.head): the statements after the
 * head's own, over the output the tasks wrote, as a function of the
 * kernel's own buffers and variables, `void K.epilogue(void *const *bufs)`,
 * which the kernel calls last. */
static void emit_epilogue(Gemm *g, Fn *f) {
  const Kernel *k = g->k;
  if (!k->head)
    return;
  Cg *cg = f->cg;
  char name[300];
  snprintf(name, sizeof name, "%s.epilogue", k->name);
  int n_outlined = 0;
  Fn e;
  cg_fn_begin(&e, cg, k, name, cg->t_kernel, LLVMInternalLinkage);
  e.n_outlined = &n_outlined;
  cg_fn_load_bufs(&e, LLVMGetParam(e.fn, 0));
  for (int i = k->n_head; i < k->body->n_body; i++)
    cg_stmt(&e, k->body->body[i]);
  LLVMValueRef fn = e.fn;
  cg_fn_end(&e);
  LLVMValueRef bufs = LLVMGetParam(f->fn, 0);
  LLVMBuildCall2(f->b, cg->t_kernel, fn, &bufs, 1, "");
}

static void emit_kernel(Gemm *g, Cg *cg, LLVMValueRef tasks_fn) {
  const GemmSched *s = &g->s;
  Fn f;
  cg_fn_begin(&f, cg, g->pk, g->k->name, cg->t_kernel, LLVMExternalLinkage);
  cg_fn_attr(cg, f.fn, "noinline");
  LLVMValueRef ctx = kernel_ctx(g, &f);
  double flops = 2.0 * (double)g->batch * (double)g->m * (double)g->n * (double)(g->kb * g->ki);
  double per_task = flops / (double)s->tasks;
  if (s->tasks == 1 || flops < SERIAL_FLOPS) {
    LLVMValueRef args[] = {ctx, i64c(cg, 0), i64c(cg, s->tasks)};
    LLVMBuildCall2(f.b, cg->t_body, tasks_fn, args, 3, "");
  } else {
    double grain = (double)TASK_MIN_FLOPS / per_task;
    LLVMValueRef pfor = LLVMGetNamedFunction(cg->mod, "rt_parallel_for");
    if (!pfor)
      pfor = LLVMAddFunction(cg->mod, "rt_parallel_for", cg->t_pfor);
    LLVMValueRef args[] = {i64c(cg, s->tasks), i64c(cg, grain > 1 ? (int64_t)grain : 1), tasks_fn,
                           ctx};
    LLVMBuildCall2(f.b, cg->t_pfor, pfor, args, 4, "");
  }
  if (g->finish) {
    f.in_parallel = true; /* its loops stay here: ps is on this stack */
    cg_stmt(&f, g->finish);
  }
  if (!g->tile_epi)
    emit_epilogue(g, &f);
  cg_fn_end(&f);
}

bool cg_gemm(Cg *cg, const Kernel *k) {
  if (cg->no_schedule || !k->node || getenv("KILN_NO_GEMM"))
    return false;
  Arena *a = arena_new();
  Gemm g;
  if (!gemm_describe(&g, a, k, cg->avx512)) {
    arena_free(a);
    return false;
  }
  char name[300];
  snprintf(name, sizeof name, "%s.ukr", k->name);
  LLVMValueRef ukrs[NV_MAX + 1];
  ukr_variants(&g, cg, name, ukrs);
  /* the epilogue per tile where C is the output, or the task's epilogue
   * finishes a known range of it; not after a finish (conv2d_back_w's
   * partial sums, never a fused head): K.epilogue after the tasks then.
   * Nor for an output under EPI_TILE_MIN bytes: it is still in the cache
   * when the tasks end, and there the one pass after them was faster
   * than a call per block of rows (attention at batch 1 on 2 threads:
   * 11.3 against 12.4 us a step).  KILN_EPILOGUE_PER_TILE=1 (tests) drops
   * that bound. */
  bool big = (double)g.k->bufs[gemm_out(&g)].numel * 4 >= EPI_TILE_MIN ||
             getenv("KILN_EPILOGUE_PER_TILE");
  bool per_tile = big && g.ps_buf < 0 && !g.finish &&
                  (g.epilogue ? g.done_lo != NULL : g.c_buf == gemm_out(&g));
  g.tile_epi = per_tile ? tile_epilogue(&g) : NULL;
  LLVMValueRef epi = g.tile_epi ? emit_tile_epilogue(&g, cg) : NULL;
  snprintf(name, sizeof name, g.b_direct ? "%s.gemm_direct" : "%s.gemm", k->name);
  LLVMValueRef tasks = emit_tasks(&g, cg, ukrs, epi, name);
  emit_kernel(&g, cg, tasks);
  arena_free(a);
  return true;
}
