/*
 * cg_math.c: KO_EXP, KO_TANH and KO_ERF as LLVM instructions: the f32
 * sequences of ir/kmath.h, operation for operation as ir/kmath.c computes
 * them, so a compiled kernel gives kir_eval's bits.  Straight-line code
 * (selects, no branches, no calls) that the loop vectorizer widens to
 * 16 lanes, where libm's expf/tanhf/erff were one call per element.
 */
#include <math.h>

#include "cg_internal.h"
#include "kmath.h"

static LLVMValueRef fc(Fn *f, float v) { return LLVMConstReal(f->cg->t_f32, (double)v); }

static LLVMValueRef fma3(Fn *f, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[] = {a, b, c};
  return cg_intrinsic(f->cg, f->b, "llvm.fma", &f->cg->t_f32, 1, args, 3);
}

static LLVMValueRef fcmp(Fn *f, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(f->b, p, a, b, "");
}

static LLVMValueRef sel(Fn *f, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(f->b, c, a, b, "");
}

static LLVMValueRef horner(Fn *f, const float *c, int n, LLVMValueRef x) {
  LLVMValueRef p = fc(f, c[n - 1]);
  for (int i = n - 2; i >= 0; i--)
    p = fma3(f, p, x, fc(f, c[i]));
  return p;
}

LLVMValueRef cg_km_exp(Fn *f, LLVMValueRef x) {
  LLVMBuilderRef b = f->b;
  LLVMValueRef nan = fcmp(f, LLVMRealUNO, x, x);
  LLVMValueRef xc = sel(f, nan, fc(f, 0.0f), x);
  xc = sel(f, fcmp(f, LLVMRealOGT, xc, fc(f, KM_EXP_HI)), fc(f, KM_EXP_HI), xc);
  xc = sel(f, fcmp(f, LLVMRealOLT, xc, fc(f, KM_EXP_LO)), fc(f, KM_EXP_LO), xc);
  LLVMValueRef kf = fma3(f, xc, fc(f, KM_LOG2E), fc(f, 0.5f));
  kf = cg_intrinsic(f->cg, b, "llvm.floor", &f->cg->t_f32, 1, &kf, 1);
  LLVMValueRef r = fma3(f, kf, fc(f, -KM_LN2_HI), xc);
  r = fma3(f, kf, fc(f, -KM_LN2_LO), r);
  LLVMValueRef p = horner(f, km_exp_c, KM_EXP_N, r);
  /* p 2^k: k added to p's exponent bits (kmath.h), inf past the top */
  Cg *cg = f->cg;
  LLVMValueRef k = LLVMBuildFPToSI(b, kf, cg->t_i32, ""); /* in [-126, 128] */
  LLVMValueRef bits = LLVMBuildAdd(b, LLVMBuildBitCast(b, p, cg->t_i32, ""),
                                   LLVMBuildShl(b, k, LLVMConstInt(cg->t_i32, 23, 0), ""), "");
  LLVMValueRef over = LLVMBuildICmp(b, LLVMIntUGE, bits, LLVMConstInt(cg->t_i32, KM_INF_BITS, 0), "");
  LLVMValueRef y = sel(f, over, fc(f, INFINITY), LLVMBuildBitCast(b, bits, cg->t_f32, ""));
  y = sel(f, fcmp(f, LLVMRealOLT, x, fc(f, KM_EXP_LO)), fc(f, 0.0f), y);
  return sel(f, nan, cg_intrinsic(f->cg, b, "llvm.fabs", &f->cg->t_f32, 1, &x, 1), y);
}

/* v with x's sign: x < 0 ? -v : v. */
static LLVMValueRef signed_like(Fn *f, LLVMValueRef x, LLVMValueRef v) {
  return sel(f, fcmp(f, LLVMRealOLT, x, fc(f, 0.0f)), LLVMBuildFNeg(f->b, v, ""), v);
}

LLVMValueRef cg_km_tanh(Fn *f, LLVMValueRef x) {
  LLVMBuilderRef b = f->b;
  LLVMValueRef a = cg_intrinsic(f->cg, b, "llvm.fabs", &f->cg->t_f32, 1, &x, 1);
  LLVMValueRef small =
      LLVMBuildFMul(b, x, horner(f, km_tanh_c, KM_TANH_N, LLVMBuildFMul(b, x, x, "")), "");
  LLVMValueRef e = cg_km_exp(f, LLVMBuildFAdd(b, a, a, ""));
  LLVMValueRef q = LLVMBuildFDiv(b, fc(f, 2.0f), LLVMBuildFAdd(b, e, fc(f, 1.0f), ""), "");
  LLVMValueRef t = signed_like(f, x, LLVMBuildFSub(b, fc(f, 1.0f), q, ""));
  return sel(f, fcmp(f, LLVMRealOLT, a, fc(f, KM_TANH_SMALL)), small, t);
}

LLVMValueRef cg_km_erf(Fn *f, LLVMValueRef x) {
  LLVMBuilderRef b = f->b;
  LLVMValueRef a = cg_intrinsic(f->cg, b, "llvm.fabs", &f->cg->t_f32, 1, &x, 1);
  LLVMValueRef x2 = LLVMBuildFMul(b, x, x, "");
  LLVMValueRef small = LLVMBuildFMul(b, x, horner(f, km_erf_small_c, KM_ERF_SMALL_N, x2), "");
  LLVMValueRef ac = sel(f, fcmp(f, LLVMRealOGT, a, fc(f, KM_ERF_CLAMP)), fc(f, KM_ERF_CLAMP), a);
  LLVMValueRef g = horner(f, km_erf_large_c, KM_ERF_LARGE_N,
                          LLVMBuildFAdd(b, ac, fc(f, KM_ERF_CENTER), ""));
  LLVMValueRef e = cg_km_exp(f, LLVMBuildFNeg(b, x2, ""));
  LLVMValueRef t =
      signed_like(f, x, LLVMBuildFSub(b, fc(f, 1.0f), LLVMBuildFMul(b, e, g, ""), ""));
  return sel(f, fcmp(f, LLVMRealOLT, a, fc(f, KM_ERF_SMALL)), small, t);
}
