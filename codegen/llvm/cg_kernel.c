/*
 * cg_kernel.c: kernel functions and step functions.
 *
 *   void K(void *const *bufs)             one per Kernel: loads every buffer
 *                                         pointer at entry, then the body
 *   void STEP(char *arena, void *const *ext)
 *                                         for each call: fills an array of
 *                                         buffer pointers (arena + offset, or
 *                                         ext[slot]) and calls the kernel
 *
 * Kernels are noinline: a step calls each through an ordinary call (a few
 * nanoseconds against a loop nest), which keeps the step function small
 * and compiles each kernel once (an inlined kernel, which stays callable
 * on its own, would be compiled twice).  Step functions are optnone: a
 * large model's step is thousands of calls in one function, whose O3 and
 * instruction selection cost seconds (4.2 s for ResNet-50's training
 * step) and buy nothing measurable at run time.
 *
 * Subnormals.  On x86 a step function sets FTZ and DAZ in MXCSR for its
 * calls and restores the caller's mode after them (the pool's workers
 * follow the caller's mode: runtime/pool.c), unless CgOpts.keep_denormals.
 * An arithmetic operation with a subnormal operand or result takes this
 * CPU ~100 cycles: an MLP's gradients and momenta drifting into that range
 * made its training epochs after the first 1.5x slower
 * (docs/benchmarks.md, tenth session).  Flushed, such values are zero, as
 * in XLA's and TensorFlow's CPU code; only values below 1.18e-38 change,
 * so the reference evaluator, which keeps them, agrees within any
 * tolerance the tests use.
 */
#include <stdlib.h>
#include <string.h>

#include "cg_internal.h"

/* --- functions ------------------------------------------------------------------- */

void cg_fn_begin(Fn *f, Cg *cg, const Kernel *k, const char *name, LLVMTypeRef ty,
                 LLVMLinkage linkage) {
  memset(f, 0, sizeof *f);
  f->cg = cg;
  f->k = k;
  f->fn = LLVMAddFunction(cg->mod, name, ty);
  LLVMSetLinkage(f->fn, linkage);
  cg_set_fn_attrs(cg, f->fn);
  f->entry = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "entry");
  LLVMBasicBlockRef code = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "code");
  f->ab = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(f->ab, f->entry);
  f->b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(f->b, code);
  f->buf = calloc((size_t)(k ? k->n_bufs : 0) + 1, sizeof *f->buf);
  f->slot = calloc((size_t)(k ? k->n_vars : 0) + 1, sizeof *f->slot);
  ASSERT(f->buf && f->slot);
}

void cg_fn_load_bufs(Fn *f, LLVMValueRef bufs) {
  Cg *cg = f->cg;
  f->bufs = bufs;
  for (int i = 0; i < f->k->n_bufs; i++) {
    LLVMValueRef idx = LLVMConstInt(cg->t_i64, (unsigned long long)i, 0);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(f->ab, cg->t_ptr, bufs, &idx, 1, "");
    f->buf[i] = LLVMBuildLoad2(f->ab, cg->t_ptr, p, f->k->bufs[i].name);
  }
}

void cg_fn_end(Fn *f) {
  ASSERT(f->depth == 0); /* every loop opened was closed (style rule 20) */
  LLVMBuildRetVoid(f->b);
  LLVMBuildBr(f->ab, LLVMGetNextBasicBlock(f->entry));
  LLVMDisposeBuilder(f->b);
  LLVMDisposeBuilder(f->ab);
  free(f->buf);
  free(f->slot);
}

static bool name_free(Cg *cg, const char *name, char *err, size_t n) {
  if (!LLVMGetNamedFunction(cg->mod, name) && !LLVMGetNamedGlobal(cg->mod, name))
    return true;
  cg_errf(err, n, "codegen: the module already has a function named %s", name);
  return false;
}

/* --- kernels ---------------------------------------------------------------------- */

bool cg_kernel(Cg *cg, const Kernel *k, char *err, size_t n) {
  char kerr[512];
  if (!cg_have_module(cg, err, n) || !name_free(cg, k->name, err, n))
    return false;
  if (!kir_verify(k, kerr, sizeof kerr)) {
    cg_errf(err, n, "codegen: invalid kernel: %s", kerr);
    return false;
  }
  if (!cg_check_parallel(k, err, n))
    return false;
  if (cg_gemm(cg, k) || cg_pool(cg, k))
    return !cg->verify || cg_verify(cg, err, n);
  int n_outlined = 0;
  Fn f;
  cg_fn_begin(&f, cg, k, k->name, cg->t_kernel, LLVMExternalLinkage);
  cg_fn_attr(cg, f.fn, "noinline");
  f.n_outlined = &n_outlined;
  cg_fn_load_bufs(&f, LLVMGetParam(f.fn, 0));
  cg_stmt(&f, k->body);
  cg_fn_end(&f);
  return !cg->verify || cg_verify(cg, err, n);
}

/* --- step functions --------------------------------------------------------------- */

static bool check_call(Cg *cg, const CgCall *c, char *err, size_t n) {
  for (int i = 0; i < c->k->n_bufs; i++) {
    if (c->refs[i].at < 0 || (c->refs[i].base != CG_ARENA && c->refs[i].base != CG_EXTERN)) {
      cg_errf(err, n, "codegen: call of %s: buffer %s has an invalid location", c->k->name,
              c->k->bufs[i].name);
      return false;
    }
  }
  return LLVMGetNamedFunction(cg->mod, c->k->name) || cg_kernel(cg, c->k, err, n);
}

/* The data pointer of one buffer: arena + at, or ext[at]. */
static LLVMValueRef ref_ptr(Fn *f, CgRef r) {
  Cg *cg = f->cg;
  LLVMValueRef at = LLVMConstInt(cg->t_i64, (unsigned long long)r.at, 0);
  if (r.base == CG_ARENA)
    return LLVMBuildInBoundsGEP2(f->b, cg->t_i8, LLVMGetParam(f->fn, 0), &at, 1, "");
  LLVMValueRef p = LLVMBuildInBoundsGEP2(f->b, cg->t_ptr, LLVMGetParam(f->fn, 1), &at, 1, "");
  return LLVMBuildLoad2(f->b, cg->t_ptr, p, "");
}

static void emit_call(Fn *f, const CgCall *c) {
  Cg *cg = f->cg;
  int nb = c->k->n_bufs;
  LLVMTypeRef at = LLVMArrayType2(cg->t_ptr, (uint64_t)(nb ? nb : 1));
  LLVMValueRef arr = LLVMBuildAlloca(f->ab, at, c->k->name);
  for (int i = 0; i < nb; i++) {
    LLVMValueRef idx = LLVMConstInt(cg->t_i64, (unsigned long long)i, 0);
    LLVMValueRef slot = LLVMBuildInBoundsGEP2(f->b, cg->t_ptr, arr, &idx, 1, "");
    LLVMBuildStore(f->b, ref_ptr(f, c->refs[i]), slot);
  }
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, c->k->name);
  LLVMBuildCall2(f->b, cg->t_kernel, fn, &arr, 1, "");
}

/* MXCSR := mode (through the stack slot the intrinsics take). */
static void set_mxcsr(Fn *f, LLVMValueRef mode) {
  LLVMValueRef slot = LLVMBuildAlloca(f->ab, f->cg->t_i32, "mxcsr");
  LLVMBuildStore(f->b, mode, slot);
  cg_intrinsic(f->cg, f->b, "llvm.x86.sse.ldmxcsr", NULL, 0, &slot, 1);
}

/* Sets FTZ (bit 15) and DAZ (bit 6); returns the caller's MXCSR. */
static LLVMValueRef flush_begin(Fn *f) {
  Cg *cg = f->cg;
  LLVMValueRef slot = LLVMBuildAlloca(f->ab, cg->t_i32, "caller_mxcsr");
  cg_intrinsic(cg, f->b, "llvm.x86.sse.stmxcsr", NULL, 0, &slot, 1);
  LLVMValueRef old = LLVMBuildLoad2(f->b, cg->t_i32, slot, "");
  set_mxcsr(f, LLVMBuildOr(f->b, old, LLVMConstInt(cg->t_i32, 0x8040, 0), ""));
  return old;
}

bool cg_step(Cg *cg, const char *name, const CgCall *calls, int n_calls, char *err, size_t n) {
  if (!cg_have_module(cg, err, n) || !name_free(cg, name, err, n))
    return false;
  for (int i = 0; i < n_calls; i++)
    if (!check_call(cg, &calls[i], err, n))
      return false;
  Fn f;
  cg_fn_begin(&f, cg, NULL, name, cg->t_step, LLVMExternalLinkage);
  cg_fn_attr(cg, f.fn, "noinline");
  cg_fn_attr(cg, f.fn, "optnone");
  LLVMValueRef mode = cg->flush ? flush_begin(&f) : NULL;
  for (int i = 0; i < n_calls; i++)
    emit_call(&f, &calls[i]);
  if (mode)
    set_mxcsr(&f, mode);
  cg_fn_end(&f);
  return !cg->verify || cg_verify(cg, err, n);
}
