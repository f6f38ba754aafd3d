/*
 * cg_expr.c: Kernel IR expressions to LLVM instructions.
 *
 * Types: KT_F32 is float, KT_I32 i32, KT_IDX i64; comparisons and logic
 * give i32 0/1.  The semantics are the KIR interpreter's (ir/kir_eval.c),
 * bit for bit:
 *
 *   f32 + - * /      fadd/fsub/fmul/fdiv, no fast-math flags: rounded like C
 *   fma(a, b, c)     llvm.fma.f32: fused, one rounding, like fmaf (never
 *                    llvm.fmuladd, which may or may not fuse)
 *   int + - *        wrapping (no nsw/nuw)
 *   int /            truncating; x / 0 and MIN / -1 give 0 (guarded, since
 *                    they are undefined in LLVM); i32 operands are divided
 *                    as i64 and wrapped, as the interpreter does
 *   floordiv, mod    rounding toward -inf (any sign of b), same guards
 *   min, max         b < a ? b : a and a < b ? b : a: with a NaN or equal
 *                    operands the first comes back (max(x, 0) keeps a NaN
 *                    or -0 in x); not llvm.minnum/maxnum, which differ
 *   f32 compare      ordered, except != (true with a NaN), as in C
 *   && ||            nonzero is true (f32: x != 0, so NaN is true); both
 *                    sides evaluated, as in the interpreter
 *   log sqrt sin cos floor abs pow   LLVM intrinsics, which become the
 *                    same libm calls (logf, ...) the interpreter makes
 *   log1p            libm's log1pf, declared memory(none)
 *   exp tanh erf     kiln's f32 sequences of ir/kmath.h (cg_math.c), which
 *                    the interpreter runs too (ir/kmath.c) and which vectorize
 *   f32 -> int       llvm.fptosi.sat: truncation, saturating, NaN -> 0
 *   hash(a, b)       SplitMix64 as ir/rng.c: mix(mix(a) + G (b + 1)), >> 11
 *                    for KO_HASH, all 64 bits for KO_HASH64
 *
 * A select whose unselected branch loads (conv padding reads are guarded
 * this way) becomes branches and a phi, like C's ?: and the interpreter,
 * so a load that would be out of bounds never happens; other selects are
 * LLVM selects, which vectorize freely.  The vectorizer if-converts the
 * branches into masked loads.
 */
#include <string.h>

#include "cg_internal.h"

LLVMTypeRef cg_type(Cg *cg, KType t) {
  switch (t) {
  case KT_F32: return cg->t_f32;
  case KT_I32: return cg->t_i32;
  case KT_IDX: return cg->t_i64;
  }
  unreachable();
}

LLVMValueRef cg_slot(Fn *f, int v) {
  if (!f->slot[v])
    f->slot[v] = LLVMBuildAlloca(f->ab, cg_type(f->cg, f->k->vars[v].type), f->k->vars[v].name);
  return f->slot[v];
}

LLVMValueRef cg_elem_ptr(Fn *f, int buf, LLVMValueRef index) {
  LLVMTypeRef t = cg_type(f->cg, f->k->bufs[buf].type);
  return LLVMBuildInBoundsGEP2(f->b, t, f->buf[buf], &index, 1, "");
}

LLVMValueRef cg_truth(Fn *f, LLVMValueRef v) {
  LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(v));
  if (LLVMTypeOf(v) == f->cg->t_f32)
    return LLVMBuildFCmp(f->b, LLVMRealUNE, v, zero, "");
  return LLVMBuildICmp(f->b, LLVMIntNE, v, zero, "");
}

static LLVMValueRef bool_i32(Fn *f, LLVMValueRef c) {
  return LLVMBuildZExt(f->b, c, f->cg->t_i32, "");
}

bool cg_expr_unsafe(const KExpr *e) {
  if (!e)
    return false;
  return e->kind == KE_LOAD || cg_expr_unsafe(e->a) || cg_expr_unsafe(e->b) || cg_expr_unsafe(e->c);
}

/* --- calls ---------------------------------------------------------------------- */

/* A call of the intrinsic `name` overloaded on type t (one or two). */
LLVMValueRef cg_intrinsic(Cg *cg, LLVMBuilderRef b, const char *name, LLVMTypeRef *tys,
                          int n_tys, LLVMValueRef *args, int n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  ASSERT(id != 0);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, tys, (size_t)n_tys);
  LLVMTypeRef ty = LLVMIntrinsicGetType(cg->ctx, id, tys, (size_t)n_tys);
  return LLVMBuildCall2(b, ty, fn, args, (unsigned)n_args, "");
}

static LLVMValueRef intrinsic(Fn *f, const char *name, LLVMTypeRef *tys, int n_tys,
                              LLVMValueRef *args, int n_args) {
  return cg_intrinsic(f->cg, f->b, name, tys, n_tys, args, n_args);
}

static LLVMValueRef f32_intrinsic(Fn *f, const char *name, LLVMValueRef a) {
  return intrinsic(f, name, &f->cg->t_f32, 1, &a, 1);
}

/* float name(float) from libm, declared pure so LLVM may hoist and CSE it
 * (the functions set errno at most, which kiln never reads). */
static LLVMValueRef libm_call(Fn *f, const char *name, LLVMValueRef a) {
  Cg *cg = f->cg;
  LLVMTypeRef ty = LLVMFunctionType(cg->t_f32, &cg->t_f32, 1, 0);
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (!fn) {
    fn = LLVMAddFunction(cg->mod, name, ty);
    static const char *const attrs[] = {"nounwind", "willreturn", "nosync", "memory"};
    for (int i = 0; i < 4; i++)
      cg_fn_attr(cg, fn, attrs[i]); /* memory with value 0 is memory(none) */
  }
  return LLVMBuildCall2(f->b, ty, fn, &a, 1, "");
}

/* --- control flow inside expressions ------------------------------------------ */

/* c ? then : other, evaluating only the chosen side (like C's ?:). */
static LLVMValueRef lazy_select(Fn *f, LLVMValueRef c, const KExpr *then, const KExpr *other) {
  LLVMBasicBlockRef bt = LLVMAppendBasicBlockInContext(f->cg->ctx, f->fn, "sel.then");
  LLVMBasicBlockRef be = LLVMAppendBasicBlockInContext(f->cg->ctx, f->fn, "sel.else");
  LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(f->cg->ctx, f->fn, "sel.join");
  LLVMBuildCondBr(f->b, c, bt, be);
  LLVMPositionBuilderAtEnd(f->b, bt);
  LLVMValueRef vt = cg_expr(f, then);
  LLVMBasicBlockRef et = LLVMGetInsertBlock(f->b);
  LLVMBuildBr(f->b, bj);
  LLVMPositionBuilderAtEnd(f->b, be);
  LLVMValueRef ve = cg_expr(f, other);
  LLVMBasicBlockRef ee = LLVMGetInsertBlock(f->b);
  LLVMBuildBr(f->b, bj);
  LLVMPositionBuilderAtEnd(f->b, bj);
  LLVMValueRef phi = LLVMBuildPhi(f->b, LLVMTypeOf(vt), "");
  LLVMValueRef vals[] = {vt, ve};
  LLVMBasicBlockRef from[] = {et, ee};
  LLVMAddIncoming(phi, vals, from, 2);
  return phi;
}

static LLVMValueRef select_expr(Fn *f, const KExpr *e) {
  LLVMValueRef c = cg_truth(f, cg_expr(f, e->a));
  if (cg_expr_unsafe(e->b) || cg_expr_unsafe(e->c))
    return lazy_select(f, c, e->b, e->c);
  LLVMValueRef x = cg_expr(f, e->b), y = cg_expr(f, e->c);
  return LLVMBuildSelect(f->b, c, x, y, "");
}

/* a && b, a || b: nonzero is true; 0 or 1. */
static LLVMValueRef logic(Fn *f, KOp op, LLVMValueRef a, LLVMValueRef b) {
  a = cg_truth(f, a), b = cg_truth(f, b);
  return bool_i32(f, op == KO_AND ? LLVMBuildAnd(f->b, a, b, "") : LLVMBuildOr(f->b, a, b, ""));
}

/* --- unary ------------------------------------------------------------------------- */

static LLVMValueRef unary_int(Fn *f, KOp op, LLVMValueRef a) {
  switch (op) {
  case KO_NEG: return LLVMBuildNeg(f->b, a, "");
  case KO_ABS: {
    LLVMTypeRef t = LLVMTypeOf(a);
    LLVMValueRef args[] = {a, LLVMConstInt(f->cg->t_i1, 0, 0)}; /* INT_MIN wraps to itself */
    return intrinsic(f, "llvm.abs", &t, 1, args, 2);
  }
  case KO_ISNAN: return LLVMConstInt(f->cg->t_i32, 0, 0);
  default: die("codegen: kernel %s: %s is not an integer operation", f->k->name, kop_name(op));
  }
}

static LLVMValueRef unary(Fn *f, const KExpr *e) {
  LLVMValueRef a = cg_expr(f, e->a);
  if (e->a->type != KT_F32)
    return unary_int(f, e->op, a);
  switch (e->op) {
  case KO_NEG: return LLVMBuildFNeg(f->b, a, "");
  case KO_ABS: return f32_intrinsic(f, "llvm.fabs", a);
  case KO_EXP: return cg_km_exp(f, a);
  case KO_LOG: return f32_intrinsic(f, "llvm.log", a);
  case KO_SQRT: return f32_intrinsic(f, "llvm.sqrt", a);
  case KO_SIN: return f32_intrinsic(f, "llvm.sin", a);
  case KO_COS: return f32_intrinsic(f, "llvm.cos", a);
  case KO_FLOOR: return f32_intrinsic(f, "llvm.floor", a);
  case KO_TANH: return cg_km_tanh(f, a);
  case KO_ERF: return cg_km_erf(f, a);
  case KO_LOG1P: return libm_call(f, "log1pf", a);
  case KO_ISNAN: return bool_i32(f, LLVMBuildFCmp(f->b, LLVMRealUNO, a, a, ""));
  default: die("codegen: kernel %s: %s is not a unary operation", f->k->name, kop_name(e->op));
  }
}

/* --- binary -------------------------------------------------------------------------- */

static LLVMValueRef icmp(Fn *f, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(f->b, p, a, b, "");
}

/* Integer /, floordiv and mod with the interpreter's guards: a divisor of
 * 0, or MIN / -1, gives 0 (the divide runs on 1 instead). */
static LLVMValueRef int_div(Fn *f, KOp op, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bd = f->b;
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef zero = LLVMConstNull(t), one = LLVMConstInt(t, 1, 0);
  LLVMValueRef min = LLVMConstInt(t, 1ull << (LLVMGetIntTypeWidth(t) - 1), 0);
  LLVMValueRef overflow = LLVMBuildAnd(bd, icmp(f, LLVMIntEQ, a, min),
                                       icmp(f, LLVMIntEQ, b, LLVMConstAllOnes(t)), "");
  LLVMValueRef bad = LLVMBuildOr(bd, icmp(f, LLVMIntEQ, b, zero), overflow, "");
  LLVMValueRef sb = LLVMBuildSelect(bd, bad, one, b, "");
  LLVMValueRef q = LLVMBuildSDiv(bd, a, sb, ""), r = LLVMBuildSRem(bd, a, sb, ""), v = q;
  if (op != KO_DIV) { /* a remainder of the other sign than b: one step toward -inf */
    LLVMValueRef other_sign = icmp(f, LLVMIntSLT, LLVMBuildXor(bd, r, sb, ""), zero);
    LLVMValueRef off = LLVMBuildAnd(bd, icmp(f, LLVMIntNE, r, zero), other_sign, "");
    v = op == KO_FLOORDIV ? LLVMBuildSub(bd, q, LLVMBuildZExt(bd, off, t, ""), "")
                          : LLVMBuildAdd(bd, r, LLVMBuildSelect(bd, off, sb, zero, ""), "");
  }
  return LLVMBuildSelect(bd, bad, zero, v, "");
}

/* i32 division as the interpreter does it: in i64, wrapped back. */
static LLVMValueRef divide(Fn *f, KOp op, LLVMValueRef a, LLVMValueRef b) {
  Cg *cg = f->cg;
  if (LLVMTypeOf(a) == cg->t_i64)
    return int_div(f, op, a, b);
  a = LLVMBuildSExt(f->b, a, cg->t_i64, "");
  b = LLVMBuildSExt(f->b, b, cg->t_i64, "");
  return LLVMBuildTrunc(f->b, int_div(f, op, a, b), cg->t_i32, "");
}

/* min: b < a ? b : a; max: a < b ? b : a (f32: ordered compares). */
static LLVMValueRef minmax(Fn *f, KOp op, bool flt, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef x = op == KO_MIN ? b : a, y = op == KO_MIN ? a : b; /* x < y ? y : x */
  LLVMValueRef lt = flt ? LLVMBuildFCmp(f->b, LLVMRealOLT, x, y, "") : icmp(f, LLVMIntSLT, x, y);
  return LLVMBuildSelect(f->b, lt, b, a, "");
}

static LLVMValueRef compare(Fn *f, KOp op, bool flt, LLVMValueRef a, LLVMValueRef b) {
  static const LLVMRealPredicate fp[] = {LLVMRealOEQ, LLVMRealUNE, LLVMRealOLT,
                                         LLVMRealOLE, LLVMRealOGT, LLVMRealOGE};
  static const LLVMIntPredicate ip[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT,
                                        LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};
  int i = op - KO_EQ;
  return bool_i32(f, flt ? LLVMBuildFCmp(f->b, fp[i], a, b, "") : icmp(f, ip[i], a, b));
}

static LLVMValueRef splitmix(Fn *f, LLVMValueRef z) {
  Cg *cg = f->cg;
  LLVMBuilderRef b = f->b;
  static const unsigned long long mul[] = {0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull};
  static const unsigned shift[] = {30, 27, 31};
  for (int i = 0; i < 3; i++) {
    LLVMValueRef s = LLVMBuildLShr(b, z, LLVMConstInt(cg->t_i64, shift[i], 0), "");
    z = LLVMBuildXor(b, z, s, "");
    if (i < 2)
      z = LLVMBuildMul(b, z, LLVMConstInt(cg->t_i64, mul[i], 0), "");
  }
  return z;
}

static LLVMValueRef hash(Fn *f, KOp op, LLVMValueRef a, LLVMValueRef c) {
  Cg *cg = f->cg;
  LLVMBuilderRef b = f->b;
  if (LLVMTypeOf(a) != cg->t_i64)
    a = LLVMBuildSExt(b, a, cg->t_i64, "");
  if (LLVMTypeOf(c) != cg->t_i64)
    c = LLVMBuildSExt(b, c, cg->t_i64, "");
  LLVMValueRef c1 = LLVMBuildAdd(b, c, LLVMConstInt(cg->t_i64, 1, 0), "");
  LLVMValueRef g = LLVMBuildMul(b, c1, LLVMConstInt(cg->t_i64, 0x9e3779b97f4a7c15ull, 0), "");
  LLVMValueRef h = splitmix(f, LLVMBuildAdd(b, splitmix(f, a), g, ""));
  return op == KO_HASH64 ? h : LLVMBuildLShr(b, h, LLVMConstInt(cg->t_i64, 11, 0), "");
}

LLVMValueRef cg_arith(Fn *f, KOp op, bool flt, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bd = f->b;
  switch (op) {
  case KO_ADD: return flt ? LLVMBuildFAdd(bd, a, b, "") : LLVMBuildAdd(bd, a, b, "");
  case KO_SUB: return flt ? LLVMBuildFSub(bd, a, b, "") : LLVMBuildSub(bd, a, b, "");
  case KO_MUL: return flt ? LLVMBuildFMul(bd, a, b, "") : LLVMBuildMul(bd, a, b, "");
  case KO_DIV: return flt ? LLVMBuildFDiv(bd, a, b, "") : divide(f, op, a, b);
  case KO_MIN:
  case KO_MAX: return minmax(f, op, flt, a, b);
  case KO_POW: {
    LLVMValueRef args[] = {a, b};
    return intrinsic(f, "llvm.pow", &f->cg->t_f32, 1, args, 2);
  }
  case KO_FLOORDIV:
  case KO_MOD: return divide(f, op, a, b);
  case KO_HASH:
  case KO_HASH64: return hash(f, op, a, b);
  default: die("codegen: kernel %s: %s is not a binary operation", f->k->name, kop_name(op));
  }
}

static LLVMValueRef binary(Fn *f, const KExpr *e) {
  LLVMValueRef a = cg_expr(f, e->a), b = cg_expr(f, e->b);
  bool flt = e->a->type == KT_F32;
  if (e->op == KO_AND || e->op == KO_OR)
    return logic(f, e->op, a, b);
  if (e->op >= KO_EQ && e->op <= KO_GE)
    return compare(f, e->op, flt, a, b);
  return cg_arith(f, e->op, flt, a, b);
}

/* --- casts ------------------------------------------------------------------------- */

static LLVMValueRef cast(Fn *f, const KExpr *e) {
  LLVMValueRef a = cg_expr(f, e->a);
  KType from = e->a->type, to = e->type;
  LLVMTypeRef t = cg_type(f->cg, to);
  if (from == to)
    return a;
  if (from == KT_F32) {
    LLVMTypeRef tys[] = {t, f->cg->t_f32};
    return intrinsic(f, "llvm.fptosi.sat", tys, 2, &a, 1);
  }
  if (to == KT_F32)
    return LLVMBuildSIToFP(f->b, a, t, "");
  return to == KT_IDX ? LLVMBuildSExt(f->b, a, t, "") : LLVMBuildTrunc(f->b, a, t, "");
}

/* --- the dispatcher ------------------------------------------------------------- */

LLVMValueRef cg_expr(Fn *f, const KExpr *e) {
  Cg *cg = f->cg;
  switch (e->kind) {
  case KE_FCONST: return LLVMConstReal(cg->t_f32, (double)(float)e->f);
  case KE_ICONST: return LLVMConstInt(cg_type(cg, e->type), (unsigned long long)e->i, 1);
  case KE_VAR: return LLVMBuildLoad2(f->b, cg_type(cg, e->type), cg_slot(f, e->var), "");
  case KE_LOAD: {
    LLVMValueRef p = cg_elem_ptr(f, e->buf, cg_expr(f, e->a));
    LLVMValueRef v = LLVMBuildLoad2(f->b, cg_type(cg, e->type), p, "");
    cg_tag_access(f, v);
    return v;
  }
  case KE_UNARY: return unary(f, e);
  case KE_BINARY: return binary(f, e);
  case KE_SELECT: return select_expr(f, e);
  case KE_CAST: return cast(f, e);
  case KE_FMA: {
    LLVMValueRef args[] = {cg_expr(f, e->a), cg_expr(f, e->b), cg_expr(f, e->c)};
    return intrinsic(f, "llvm.fma", &cg->t_f32, 1, args, 3);
  }
  }
  unreachable();
}
