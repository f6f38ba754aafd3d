/*
 * kir_eval.c: a plain recursive interpreter of Kernel IR, the oracle that
 * tests check lowering with (against the graph's reference evaluator) and
 * that defines what each KIR operation computes, for the backends to match:
 *
 *  - KT_F32 arithmetic is done in float (C's float operations, the f32
 *    libm functions logf, sqrtf, sinf, ..., and kiln's own exp, tanh and
 *    erf of kmath.h, which vectorize), KT_I32 in int32_t and
 *    KT_IDX in int64_t, both wrapping around on overflow (two's complement;
 *    computed in unsigned, so there is no undefined behaviour);
 *  - KO_MIN / KO_MAX are b < a ? b : a and a < b ? b : a: on f32 the first
 *    operand comes back when the two are unordered or equal, so max(x, 0)
 *    keeps a NaN or a -0 in x (relu) and max(acc, v) keeps a NaN acc;
 *  - comparisons are C's: ordered (false with a NaN) except !=; KO_AND and
 *    KO_OR take nonzero as true and give 0 or 1;
 *  - KO_DIV on integers truncates (x / 0 is 0, as no kernel divides by a
 *    variable integer); KO_FLOORDIV and KO_MOD round toward -infinity;
 *  - KE_FMA is fmaf(a, b, c): the product and sum rounded once;
 *  - KE_CAST from f32 truncates toward zero, saturating, NaN giving 0;
 *    to i32 from an index wraps;
 *  - KO_HASH is rng_hash(a, b) >> 11 and KO_HASH64 all of rng_hash(a, b),
 *    a and b taken as unsigned 64-bit (ir/rng.c);
 *  - a select evaluates only the branch it takes (lowering does not rely
 *    on it: the loads in a select's branches are always in bounds, so a
 *    backend may evaluate both); loops of every kind run
 *    their iterations in order; locals and loop variables live in one array
 *    indexed by variable number.
 * Loads and stores are bounds-checked (an index outside the buffer dies
 * with the kernel's and the buffer's names): lowering bugs show up as
 * failures, not as memory corruption.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kir.h"
#include "kmath.h"

typedef union Val {
  float f;
  int32_t i;
  int64_t x;
} Val;

typedef struct Ev {
  const Kernel *k;
  void *const *bufs;
  Val *vars;
} Ev;

static int32_t wrap32(uint64_t u) {
  uint32_t v = (uint32_t)u;
  int32_t r;
  memcpy(&r, &v, sizeof r);
  return r;
}

static int64_t wrap64(uint64_t u) {
  int64_t r;
  memcpy(&r, &u, sizeof r);
  return r;
}

static int64_t floordiv(int64_t a, int64_t b) {
  if (b == 0)
    return 0;
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t floormod(int64_t a, int64_t b) {
  return b == 0 ? 0 : wrap64((uint64_t)a - (uint64_t)b * (uint64_t)floordiv(a, b));
}

static float f_bin(KOp op, float a, float b) {
  switch (op) {
  case KO_ADD: return a + b;
  case KO_SUB: return a - b;
  case KO_MUL: return a * b;
  case KO_DIV: return a / b;
  case KO_MIN: return b < a ? b : a;
  case KO_MAX: return a < b ? b : a;
  case KO_POW: return powf(a, b);
  default: die("kir_eval: %s is not an f32 operation", kop_name(op));
  }
}

/* Integer arithmetic of either width, in int64 with wrap-around. */
static int64_t i_bin(KOp op, int64_t a, int64_t b) {
  uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
  switch (op) {
  case KO_ADD: return wrap64(ua + ub);
  case KO_SUB: return wrap64(ua - ub);
  case KO_MUL: return wrap64(ua * ub);
  case KO_DIV: return b == 0 || (a == INT64_MIN && b == -1) ? 0 : a / b;
  case KO_MIN: return b < a ? b : a;
  case KO_MAX: return a < b ? b : a;
  case KO_FLOORDIV: return a == INT64_MIN && b == -1 ? 0 : floordiv(a, b);
  case KO_MOD: return a == INT64_MIN && b == -1 ? 0 : floormod(a, b);
  case KO_HASH: return wrap64(rng_hash(ua, ub) >> 11);
  case KO_HASH64: return wrap64(rng_hash(ua, ub));
  default: die("kir_eval: %s is not an integer operation", kop_name(op));
  }
}

static bool cmp_f(KOp op, float a, float b) {
  switch (op) {
  case KO_EQ: return a == b;
  case KO_NE: return a != b;
  case KO_LT: return a < b;
  case KO_LE: return a <= b;
  case KO_GT: return a > b;
  case KO_GE: return a >= b;
  case KO_AND: return a != 0 && b != 0;
  case KO_OR: return a != 0 || b != 0;
  default: die("kir_eval: %s is not a comparison", kop_name(op));
  }
}

static bool cmp_i(KOp op, int64_t a, int64_t b) {
  switch (op) {
  case KO_EQ: return a == b;
  case KO_NE: return a != b;
  case KO_LT: return a < b;
  case KO_LE: return a <= b;
  case KO_GT: return a > b;
  case KO_GE: return a >= b;
  case KO_AND: return a != 0 && b != 0;
  case KO_OR: return a != 0 || b != 0;
  default: die("kir_eval: %s is not a comparison", kop_name(op));
  }
}

static float f_un(KOp op, float a) {
  switch (op) {
  case KO_NEG: return -a;
  case KO_ABS: return fabsf(a);
  case KO_EXP: return km_expf(a);
  case KO_LOG: return logf(a);
  case KO_SQRT: return sqrtf(a);
  case KO_TANH: return km_tanhf(a);
  case KO_ERF: return km_erff(a);
  case KO_SIN: return sinf(a);
  case KO_COS: return cosf(a);
  case KO_LOG1P: return log1pf(a);
  case KO_FLOOR: return floorf(a);
  default: die("kir_eval: %s is not an f32 function", kop_name(op));
  }
}

/* Real -> integer: truncation toward zero, saturating at [lo, hi] (as
 * doubles, lo and hi are exact powers of two or one off), NaN -> 0. */
static int64_t f_to_int(float f, double lo, double hi_excl, int64_t ilo, int64_t ihi) {
  if (isnan(f))
    return 0;
  if ((double)f >= hi_excl)
    return ihi;
  if ((double)f < lo)
    return ilo;
  return (int64_t)f;
}

static float fexpr(Ev *e, const KExpr *x);
static int64_t iexpr(Ev *e, const KExpr *x);

static int64_t checked(const Ev *e, int buf, int64_t i) {
  const KBuf *b = &e->k->bufs[buf];
  if (i < 0 || i >= b->numel)
    die("kir_eval: %s: index %lld out of the bounds of %s[%lld]", e->k->name, (long long)i,
        b->name, (long long)b->numel);
  return i;
}

/* Integers of either width travel as int64; an i32 result is wrapped. */
static int64_t fit(KType t, int64_t v) { return t == KT_I32 ? wrap32((uint64_t)v) : v; }

/* iexpr with its most frequent cases, variables and constants, inline: a
 * third of the interpreter's time goes to dispatching on them otherwise. */
static inline int64_t ival(Ev *e, const KExpr *x) {
  if (x->kind == KE_VAR && x->type == KT_IDX)
    return e->vars[x->var].x;
  if (x->kind == KE_ICONST && x->type == KT_IDX)
    return x->i;
  return iexpr(e, x);
}

static inline float fval(Ev *e, const KExpr *x) {
  return x->kind == KE_VAR ? e->vars[x->var].f : fexpr(e, x);
}

/* A condition (an i32 expression): nonzero is true. */
static bool truth(Ev *e, const KExpr *x) { return iexpr(e, x) != 0; }

static float fexpr(Ev *e, const KExpr *x) {
  switch (x->kind) {
  case KE_FCONST: return (float)x->f;
  case KE_VAR: return e->vars[x->var].f;
  case KE_LOAD: return ((const float *)e->bufs[x->buf])[checked(e, x->buf, ival(e, x->a))];
  case KE_UNARY: return f_un(x->op, fval(e, x->a));
  case KE_BINARY: return f_bin(x->op, fval(e, x->a), fval(e, x->b));
  case KE_SELECT: return truth(e, x->a) ? fexpr(e, x->b) : fexpr(e, x->c);
  case KE_CAST: return (float)iexpr(e, x->a);
  case KE_FMA: return fmaf(fval(e, x->a), fval(e, x->b), fval(e, x->c));
  case KE_ICONST: break;
  }
  die("kir_eval: %s: an f32 expression of an integer kind", e->k->name);
}

static int64_t ibinary(Ev *e, const KExpr *x) {
  KType t = x->a->type;
  if (t == KT_F32) /* a comparison of floats */
    return cmp_f(x->op, fval(e, x->a), fval(e, x->b));
  int64_t a = ival(e, x->a), b = ival(e, x->b);
  if (x->op >= KO_EQ && x->op <= KO_OR)
    return cmp_i(x->op, a, b);
  return fit(x->type, i_bin(x->op, a, b));
}

static int64_t iunary(Ev *e, const KExpr *x) {
  if (x->op == KO_ISNAN)
    return x->a->type == KT_F32 && isnan(fexpr(e, x->a));
  int64_t v = iexpr(e, x->a);
  if (x->op == KO_NEG || (x->op == KO_ABS && v < 0))
    return fit(x->type, wrap64(0 - (uint64_t)v));
  if (x->op == KO_ABS)
    return v;
  die("kir_eval: %s is not an integer function", kop_name(x->op));
}

static int64_t iexpr(Ev *e, const KExpr *x) {
  switch (x->kind) {
  case KE_ICONST: return fit(x->type, x->i);
  case KE_VAR: return x->type == KT_I32 ? e->vars[x->var].i : e->vars[x->var].x;
  case KE_LOAD: {
    int64_t i = checked(e, x->buf, ival(e, x->a));
    if (x->type == KT_I32)
      return ((const int32_t *)e->bufs[x->buf])[i];
    return ((const int64_t *)e->bufs[x->buf])[i];
  }
  case KE_UNARY: return iunary(e, x);
  case KE_BINARY: return ibinary(e, x);
  case KE_SELECT: return truth(e, x->a) ? iexpr(e, x->b) : iexpr(e, x->c);
  case KE_CAST:
    if (x->a->type != KT_F32)
      return fit(x->type, iexpr(e, x->a));
    if (x->type == KT_I32)
      return f_to_int(fexpr(e, x->a), -2147483648.0, 2147483648.0, INT32_MIN, INT32_MAX);
    return f_to_int(fexpr(e, x->a), -9223372036854775808.0, 9223372036854775808.0, INT64_MIN,
                    INT64_MAX);
  case KE_FCONST:
  case KE_FMA: break;
  }
  die("kir_eval: %s: an integer expression of kind f32", e->k->name);
}

static Val value(Ev *e, const KExpr *x) {
  Val v;
  if (x->type == KT_F32)
    v.f = fexpr(e, x);
  else if (x->type == KT_I32)
    v.i = (int32_t)iexpr(e, x);
  else
    v.x = iexpr(e, x);
  return v;
}

static void stmt(Ev *e, const KStmt *s) {
  switch (s->kind) {
  case KS_BLOCK:
    for (int i = 0; i < s->n_body; i++)
      stmt(e, s->body[i]);
    return;
  case KS_LOOP: {
    int64_t n = iexpr(e, s->extent);
    for (int64_t it = 0; it < n; it++) {
      e->vars[s->var].x = it;
      for (int i = 0; i < s->n_body; i++)
        stmt(e, s->body[i]);
    }
    return;
  }
  case KS_IF:
    if (truth(e, s->cond))
      for (int i = 0; i < s->n_body; i++)
        stmt(e, s->body[i]);
    return;
  case KS_STORE: {
    int64_t i = checked(e, s->buf, ival(e, s->index));
    Val v = value(e, s->value);
    void *p = e->bufs[s->buf];
    switch (e->k->bufs[s->buf].type) {
    case KT_F32: ((float *)p)[i] = v.f; break;
    case KT_I32: ((int32_t *)p)[i] = v.i; break;
    case KT_IDX: ((int64_t *)p)[i] = v.x; break;
    }
    return;
  }
  case KS_DECL:
  case KS_SET: e->vars[s->var] = value(e, s->value); return;
  }
  unreachable();
}

void kir_eval(const Kernel *k, void *const *bufs) {
  Ev e = {k, bufs, calloc((size_t)k->n_vars + 1, sizeof(Val))};
  if (!e.vars)
    die("out of memory running kernel %s", k->name);
  stmt(&e, k->body);
  free(e.vars);
}
