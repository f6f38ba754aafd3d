/*
 * cuda_expr.c: Kernel IR expressions printed as C, with the semantics of
 * the KIR interpreter (ir/kir_eval.c), bit for bit:
 *
 *   f32 + - * /        C's float operations; NVRTC compiles with --fmad=false,
 *                      IEEE division and no flush to zero, so each rounds
 *                      once as in kir_eval (no contraction into fma)
 *   fma(a, b, c)       fmaf: one rounding
 *   int + - * neg      plain C where the operands' ranges show the result
 *                      fits its type (loop indices: [0, extent)), else the
 *                      prelude's wrapping kiln_add/sub/mul/neg
 *   int /              plain C by a constant other than 0 and -1, else
 *                      kiln_div (x / 0 and MIN / -1 give 0)
 *   floordiv, mod      plain / and % for a constant divisor > 0 and a
 *                      dividend known >= 0, else kiln_floordiv/kiln_mod
 *   min, max           kiln_min/kiln_max: b < a ? b : a, a < b ? b : a
 *   compare, && ||     C's (ordered, but != is true with a NaN), giving int
 *                      0 or 1; in a condition (if, ?:) the bool itself
 *   exp tanh erf       kiln_exp/tanh/erf, the sequences of ir/kmath.h
 *   log sqrt sin cos log1p floor abs pow
 *                      logf sqrtf sinf cosf log1pf floorf fabsf powf (CUDA's:
 *                      sqrtf, floorf and fabsf exact; the others within
 *                      1-2 ulp of glibc's, which kir_eval calls)
 *   isnan              kiln_isnan (x != x); of an integer: 0
 *   f32 -> int         kiln_f2i/f2l: truncating, saturating, NaN 0
 *   idx -> i32         a plain cast where the range fits, else kiln_i32
 *   hash, hash64       kiln_hash/kiln_hash64 (SplitMix64)
 *   a ? b : c          C's ?:, which evaluates only the branch it takes
 *   constants          f32 as 9 significant digits (reads back exactly),
 *                      infinities and NaN by their bits; indices with LL
 *
 * Types: f32 is float, i32 int, index long long, so the prelude's
 * overloaded helpers always find one exact match.  Compound expressions
 * are fully parenthesized.
 */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

const char *cu_ctype(KType t) {
  switch (t) {
  case KT_F32: return "float";
  case KT_I32: return "int";
  case KT_IDX: return "long long";
  }
  unreachable();
}

/* --- ranges -------------------------------------------------------------------------- */

static const Rng unknown = {false, 0, 0};

static Rng point(int64_t v) { return (Rng){true, v, v}; }

static Rng span(int64_t a, int64_t b) { return (Rng){true, a < b ? a : b, a < b ? b : a}; }

/* Whether r is known and within type t. */
static bool fits(KType t, Rng r) {
  return r.known && (t != KT_I32 || (r.lo >= INT32_MIN && r.hi <= INT32_MAX));
}

static Rng in_type(KType t, Rng r) { return fits(t, r) ? r : unknown; }

static Rng r_add(Rng a, Rng b) {
  int64_t lo, hi;
  if (!a.known || !b.known || __builtin_add_overflow(a.lo, b.lo, &lo) ||
      __builtin_add_overflow(a.hi, b.hi, &hi))
    return unknown;
  return (Rng){true, lo, hi};
}

static Rng r_sub(Rng a, Rng b) {
  int64_t lo, hi;
  if (!a.known || !b.known || __builtin_sub_overflow(a.lo, b.hi, &lo) ||
      __builtin_sub_overflow(a.hi, b.lo, &hi))
    return unknown;
  return (Rng){true, lo, hi};
}

static Rng r_mul(Rng a, Rng b) {
  if (!a.known || !b.known)
    return unknown;
  int64_t p[4];
  if (__builtin_mul_overflow(a.lo, b.lo, &p[0]) || __builtin_mul_overflow(a.lo, b.hi, &p[1]) ||
      __builtin_mul_overflow(a.hi, b.lo, &p[2]) || __builtin_mul_overflow(a.hi, b.hi, &p[3]))
    return unknown;
  Rng r = {true, p[0], p[0]};
  for (int i = 1; i < 4; i++)
    r.lo = p[i] < r.lo ? p[i] : r.lo, r.hi = p[i] > r.hi ? p[i] : r.hi;
  return r;
}

static Rng r_union(Rng a, Rng b) {
  if (!a.known || !b.known)
    return unknown;
  return (Rng){true, a.lo < b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi};
}

/* An integer constant as kir_eval reads it (an i32 constant wraps). */
static int64_t iconst(const KExpr *e) {
  return e->type == KT_I32 ? (int64_t)(int32_t)(uint32_t)(uint64_t)e->i : e->i;
}

static bool is_const(const KExpr *e, int64_t *v) {
  if (e->kind != KE_ICONST)
    return false;
  *v = iconst(e);
  return true;
}

/* The range of e's value before it is wrapped to its type. */
static Rng raw_range(Em *m, const KExpr *e);

Rng cu_range(Em *m, const KExpr *e) {
  return e->type == KT_F32 ? unknown : in_type(e->type, raw_range(m, e));
}

/* floordiv and mod print as C's / and % (a constant divisor > 0, a
 * dividend known >= 0: rounding toward 0 is rounding toward -inf). */
static bool plain_floor(Em *m, const KExpr *e, int64_t *d) {
  Rng ra = cu_range(m, e->a);
  return is_const(e->b, d) && *d > 0 && ra.known && ra.lo >= 0;
}

/* int / prints as C's / (a constant divisor other than 0 and -1). */
static bool plain_div(const KExpr *e, int64_t *d) {
  return is_const(e->b, d) && *d != 0 && *d != -1;
}

static Rng binary_range(Em *m, const KExpr *e) {
  if ((e->op >= KO_EQ && e->op <= KO_OR))
    return span(0, 1);
  if (e->a->type == KT_F32)
    return unknown;
  Rng ra = cu_range(m, e->a), rb = cu_range(m, e->b);
  int64_t d;
  switch (e->op) {
  case KO_ADD: return r_add(ra, rb);
  case KO_SUB: return r_sub(ra, rb);
  case KO_MUL: return r_mul(ra, rb);
  case KO_DIV: return plain_div(e, &d) && ra.known ? span(ra.lo / d, ra.hi / d) : unknown;
  case KO_FLOORDIV: return plain_floor(m, e, &d) ? span(ra.lo / d, ra.hi / d) : unknown;
  case KO_MOD:
    if (plain_floor(m, e, &d) && ra.hi < d)
      return ra;
    return is_const(e->b, &d) && d > 0 ? span(0, d - 1) : unknown;
  case KO_MIN:
  case KO_MAX:
    if (!ra.known || !rb.known)
      return unknown;
    return e->op == KO_MIN ? span(ra.lo < rb.lo ? ra.lo : rb.lo, ra.hi < rb.hi ? ra.hi : rb.hi)
                           : span(ra.lo > rb.lo ? ra.lo : rb.lo, ra.hi > rb.hi ? ra.hi : rb.hi);
  case KO_HASH: return span(0, (INT64_C(1) << 53) - 1);
  default: return unknown;
  }
}

static Rng raw_range(Em *m, const KExpr *e) {
  switch (e->kind) {
  case KE_ICONST: return point(iconst(e));
  case KE_VAR: return m->rng[e->var];
  case KE_UNARY:
    if (e->op == KO_ISNAN)
      return e->a->type == KT_F32 ? span(0, 1) : point(0);
    return e->op == KO_NEG && e->a->type != KT_F32 ? r_sub(point(0), cu_range(m, e->a)) : unknown;
  case KE_BINARY: return binary_range(m, e);
  case KE_SELECT: return r_union(cu_range(m, e->b), cu_range(m, e->c));
  case KE_CAST: return e->a->type == KT_F32 ? unknown : cu_range(m, e->a);
  case KE_FCONST:
  case KE_LOAD:
  case KE_FMA: return unknown;
  }
  unreachable();
}

/* --- printing helpers ---------------------------------------------------------------- */

static void fconst(Sb *b, double d) {
  float v = (float)d;
  if (isnan(v) || isinf(v)) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    sb_printf(b, "__int_as_float((int)0x%08xu)", bits);
    return;
  }
  char t[64];
  snprintf(t, sizeof t, "%.9g", (double)v);
  bool dot = strpbrk(t, ".e") != NULL;
  sb_printf(b, signbit(v) ? "(%s%sf)" : "%s%sf", t, dot ? "" : ".0");
}

static void iconst_print(Sb *b, KType t, int64_t v) {
  if (t == KT_I32)
    sb_printf(b, v == INT32_MIN ? "(-2147483647 - 1)" : v < 0 ? "(%lld)" : "%lld", (long long)v);
  else
    sb_printf(b, v == INT64_MIN ? "KILN_I64_MIN" : v < 0 ? "(%lldLL)" : "%lldLL", (long long)v);
}

/* e without its outer parentheses (a function argument, an index). */
static void bare(Em *m, Sb *b, const KExpr *e) {
  Sb t = {0};
  cu_expr(m, &t, e);
  sb_puts(b, sb_unparen(&t));
  sb_free(&t);
}

/* name(a) or name(a, b) */
static void call(Em *m, Sb *b, const char *name, const KExpr *a, const KExpr *c) {
  sb_printf(b, "%s(", name);
  bare(m, b, a);
  if (c) {
    sb_puts(b, ", ");
    bare(m, b, c);
  }
  sb_puts(b, ")");
}

/* (a OP b) */
static void infix(Em *m, Sb *b, const char *op, const KExpr *a, const KExpr *c) {
  sb_puts(b, "(");
  cu_expr(m, b, a);
  sb_printf(b, " %s ", op);
  cu_expr(m, b, c);
  sb_puts(b, ")");
}

/* --- unary ------------------------------------------------------------------------- */

static const char *f32_fn(KOp op) {
  switch (op) {
  case KO_ABS: return "fabsf";
  case KO_EXP: return "kiln_exp";
  case KO_LOG: return "logf";
  case KO_SQRT: return "sqrtf";
  case KO_TANH: return "kiln_tanh";
  case KO_ERF: return "kiln_erf";
  case KO_SIN: return "sinf";
  case KO_COS: return "cosf";
  case KO_LOG1P: return "log1pf";
  case KO_FLOOR: return "floorf";
  case KO_ISNAN: return "kiln_isnan";
  default: return NULL;
  }
}

static void unary(Em *m, Sb *b, const KExpr *e) {
  const KExpr *a = e->a;
  if (a->type == KT_F32) {
    if (e->op == KO_NEG) {
      sb_puts(b, "(-");
      cu_expr(m, b, a);
      sb_puts(b, ")");
      return;
    }
    const char *fn = f32_fn(e->op);
    if (!fn)
      die("codegen/cuda: kernel %s: %s is not an f32 function", m->k->name, kop_name(e->op));
    call(m, b, fn, a, NULL);
    return;
  }
  if (e->op == KO_ISNAN) { /* kir_eval: an integer is never NaN (a is not evaluated) */
    sb_puts(b, "0");
    return;
  }
  if (e->op != KO_NEG && e->op != KO_ABS)
    die("codegen/cuda: kernel %s: %s is not an integer function", m->k->name, kop_name(e->op));
  if (e->op == KO_NEG && cu_range(m, e).known) {
    sb_puts(b, "(-");
    cu_expr(m, b, a);
    sb_puts(b, ")");
    return;
  }
  call(m, b, e->op == KO_NEG ? "kiln_neg" : "kiln_abs", a, NULL);
}

/* --- binary ------------------------------------------------------------------------- */

static bool is_compare(KOp op) { return op >= KO_EQ && op <= KO_GE; }

static const char *compare_op(KOp op) {
  static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
  return ops[op - KO_EQ];
}

/* An operand of && or || as a condition: an f32 is true when != 0. */
static void truth_of(Em *m, Sb *b, const KExpr *e) {
  if (e->type == KT_F32) {
    sb_puts(b, "(");
    cu_expr(m, b, e);
    sb_puts(b, " != 0.0f)");
  } else {
    cu_cond(m, b, e);
  }
}

static void f32_binary(Em *m, Sb *b, const KExpr *e) {
  switch (e->op) {
  case KO_ADD: infix(m, b, "+", e->a, e->b); return;
  case KO_SUB: infix(m, b, "-", e->a, e->b); return;
  case KO_MUL: infix(m, b, "*", e->a, e->b); return;
  case KO_DIV: infix(m, b, "/", e->a, e->b); return;
  case KO_MIN: call(m, b, "kiln_min", e->a, e->b); return;
  case KO_MAX: call(m, b, "kiln_max", e->a, e->b); return;
  case KO_POW: call(m, b, "powf", e->a, e->b); return;
  default: die("codegen/cuda: kernel %s: %s is not an f32 operation", m->k->name, kop_name(e->op));
  }
}

/* hash(a, b): the operands as 64-bit, the result wrapped to an i32 result. */
static void hash(Em *m, Sb *b, const KExpr *e) {
  bool narrow = e->type == KT_I32, wide_args = e->a->type == KT_IDX;
  if (narrow)
    sb_puts(b, "kiln_i32(");
  sb_printf(b, "%s(", e->op == KO_HASH ? "kiln_hash" : "kiln_hash64");
  const KExpr *args[] = {e->a, e->b};
  for (int i = 0; i < 2; i++) {
    sb_puts(b, i ? ", " : "");
    if (wide_args) {
      bare(m, b, args[i]);
    } else {
      sb_puts(b, "(long long)");
      cu_expr(m, b, args[i]);
    }
  }
  sb_puts(b, narrow ? "))" : ")");
}

static void int_binary(Em *m, Sb *b, const KExpr *e) {
  static const char *const ops[] = {[KO_ADD] = "+", [KO_SUB] = "-", [KO_MUL] = "*"};
  static const char *const fns[] = {[KO_ADD] = "kiln_add", [KO_SUB] = "kiln_sub",
                                    [KO_MUL] = "kiln_mul"};
  int64_t d;
  switch (e->op) {
  case KO_ADD:
  case KO_SUB:
  case KO_MUL: /* plain C where the result's range fits the type, else wrapping */
    if (cu_range(m, e).known)
      infix(m, b, ops[e->op], e->a, e->b);
    else
      call(m, b, fns[e->op], e->a, e->b);
    return;
  case KO_DIV:
    if (plain_div(e, &d))
      infix(m, b, "/", e->a, e->b);
    else
      call(m, b, "kiln_div", e->a, e->b);
    return;
  case KO_FLOORDIV:
  case KO_MOD:
    if (plain_floor(m, e, &d))
      infix(m, b, e->op == KO_MOD ? "%" : "/", e->a, e->b);
    else
      call(m, b, e->op == KO_MOD ? "kiln_mod" : "kiln_floordiv", e->a, e->b);
    return;
  case KO_MIN:
  case KO_MAX: call(m, b, e->op == KO_MIN ? "kiln_min" : "kiln_max", e->a, e->b); return;
  case KO_HASH:
  case KO_HASH64: hash(m, b, e); return;
  default:
    die("codegen/cuda: kernel %s: %s is not an integer operation", m->k->name, kop_name(e->op));
  }
}

static void binary(Em *m, Sb *b, const KExpr *e) {
  if (is_compare(e->op) || e->op == KO_AND || e->op == KO_OR) {
    sb_puts(b, "(int)");
    cu_cond(m, b, e);
  } else if (e->a->type == KT_F32) {
    f32_binary(m, b, e);
  } else {
    int_binary(m, b, e);
  }
}

/* --- casts --------------------------------------------------------------------------- */

static void cast(Em *m, Sb *b, const KExpr *e) {
  KType from = e->a->type, to = e->type;
  if (from == to) {
    cu_expr(m, b, e->a);
  } else if (from == KT_F32) {
    call(m, b, to == KT_I32 ? "kiln_f2i" : "kiln_f2l", e->a, NULL);
  } else if (to == KT_I32 && !fits(KT_I32, cu_range(m, e->a))) {
    call(m, b, "kiln_i32", e->a, NULL);
  } else {
    sb_printf(b, "((%s)", cu_ctype(to));
    cu_expr(m, b, e->a);
    sb_puts(b, ")");
  }
}

/* --- the dispatcher ------------------------------------------------------------------ */

void cu_expr(Em *m, Sb *b, const KExpr *e) {
  switch (e->kind) {
  case KE_FCONST: fconst(b, e->f); return;
  case KE_ICONST: iconst_print(b, e->type, iconst(e)); return;
  case KE_VAR: sb_puts(b, m->var[e->var]); return;
  case KE_LOAD:
    sb_printf(b, "%s[", m->buf[e->buf]);
    bare(m, b, e->a);
    sb_puts(b, "]");
    return;
  case KE_UNARY: unary(m, b, e); return;
  case KE_BINARY: binary(m, b, e); return;
  case KE_SELECT:
    sb_puts(b, "(");
    cu_cond(m, b, e->a);
    sb_puts(b, " ? ");
    cu_expr(m, b, e->b);
    sb_puts(b, " : ");
    cu_expr(m, b, e->c);
    sb_puts(b, ")");
    return;
  case KE_CAST: cast(m, b, e); return;
  case KE_FMA:
    sb_puts(b, "fmaf(");
    bare(m, b, e->a);
    sb_puts(b, ", ");
    bare(m, b, e->b);
    sb_puts(b, ", ");
    bare(m, b, e->c);
    sb_puts(b, ")");
    return;
  }
  unreachable();
}

void cu_cond(Em *m, Sb *b, const KExpr *e) {
  if (e->kind == KE_BINARY && is_compare(e->op)) {
    infix(m, b, compare_op(e->op), e->a, e->b);
    return;
  }
  if (e->kind == KE_BINARY && (e->op == KO_AND || e->op == KO_OR)) {
    sb_puts(b, "(");
    truth_of(m, b, e->a);
    sb_puts(b, e->op == KO_AND ? " && " : " || ");
    truth_of(m, b, e->b);
    sb_puts(b, ")");
    return;
  }
  sb_puts(b, "(");
  cu_expr(m, b, e);
  sb_puts(b, " != 0)");
}
