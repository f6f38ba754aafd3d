/*
 * lower_elem.c: lowering of the elementwise ops (unary, binary with NumPy
 * broadcasting, comparisons, where, cast), copies, fills, add_n,
 * dropout and randn; and lw_scalar, the Kernel IR form of each scalar function of
 * eval_elem.c.
 *
 * The reference computes each element in double and rounds once; a kernel
 * computes in f32 (kir.h), so the formulas below are chosen to stay exact
 * where f32 can be exact and stable where it cannot:
 *  - bit-exact: neg, abs, relu, clamp, sqrt, + - * / (one IEEE operation
 *    each: rounding the double result to f32 is the f32 result), maximum,
 *    minimum, comparisons, where, cast, copies, fills, i32 arithmetic
 *    (wrapping in both), and dropout's mask (its kept values too when
 *    1 / (1 - p) is an f32, e.g. p = 0.5 or 0.2), and randn (the
 *    reference computes it in f32 too);
 *  - within a few f32 ulps: the transcendental functions (an f32 libm call
 *    against the rounded double one), and formulas with a real constant
 *    (leaky_relu and elu's alpha, gelu, softplus, rsqrt, pow, gelu_back).
 * NaN behaves as in the reference: relu, leaky_relu, elu, clamp and
 * softplus pass it through, maximum and minimum return it, where treats a
 * NaN condition as true.  relu is max(x, 0), which kir_eval (and so every
 * backend) computes as x < 0 ? 0 : x: a NaN or -0 in x comes through.
 */
#include <math.h>

#include "lower_internal.h"

#define SQRT1_2 0.7071067811865476  /* 1 / sqrt(2) */
#define SQRT_2_PI 0.7978845608028654 /* sqrt(2 / pi) */
#define INV_SQRT_2PI 0.3989422804014327 /* 1 / sqrt(2 pi) */

/* gelu_back: dy * gelu'(x), the two forms of sc_gelu_back. */
static KExpr *gelu_back(Kernel *k, KStmt *body, int mode, KExpr *dy, KExpr *x) {
  if (mode == 1) {
    KExpr *cube = MUL(MUL(MUL(FC(0.044715), x), x), x);
    KExpr *t = lw_let(k, body, "t", UN(KO_TANH, MUL(FC(SQRT_2_PI), ADD(x, cube))));
    KExpr *left = MUL(FC(0.5), ADD(FC(1), t));
    KExpr *right = MUL(MUL(MUL(MUL(FC(0.5), x), SUB(FC(1), MUL(t, t))), FC(SQRT_2_PI)),
                       ADD(FC(1), MUL(MUL(FC(3 * 0.044715), x), x)));
    return MUL(dy, ADD(left, right));
  }
  /* exp(-x^2 / 2) as exp(-(z * z)), z = x / sqrt(2): the exp inside
   * erf(z) (ir/kmath.h), which LLVM then computes once */
  KExpr *z = MUL(x, FC(SQRT1_2));
  KExpr *cdf = MUL(FC(0.5), ADD(FC(1), UN(KO_ERF, z)));
  KExpr *pdf = MUL(FC(INV_SQRT_2PI), UN(KO_EXP, UN(KO_NEG, MUL(z, z))));
  return MUL(dy, ADD(cdf, MUL(x, pdf)));
}

/* NaN if either operand is, else the reference's a > b ? a : b (or <):
 * sc_maximum / sc_minimum, ties resolved the same way (b wins). */
static KExpr *minmax(Kernel *k, bool is_max, KExpr *a, KExpr *b) {
  KExpr *pick = SEL(is_max ? GT(a, b) : LT(a, b), a, b);
  if (a->type != KT_F32)
    return pick;
  return SEL(OR(UN(KO_ISNAN, a), UN(KO_ISNAN, b)), FC(NAN), pick);
}

KExpr *lw_scalar(Kernel *k, KStmt *body, Op op, const Attrs *at, KExpr *a, KExpr *b) {
  KExpr *x;
  switch (op) {
  case OP_NEG: return UN(KO_NEG, a);
  case OP_ABS: return UN(KO_ABS, a);
  case OP_EXP: return UN(KO_EXP, a);
  case OP_LOG: return UN(KO_LOG, a);
  case OP_SQRT: return UN(KO_SQRT, a);
  case OP_RSQRT: return DIV(FC(1), UN(KO_SQRT, a));
  case OP_SIN: return UN(KO_SIN, a);
  case OP_COS: return UN(KO_COS, a);
  case OP_TANH: return UN(KO_TANH, a);
  case OP_RELU: return MAX(a, FC(0));
  case OP_LEAKY_RELU:
    x = lw_bind(k, body, "x", a);
    return SEL(LT(x, FC(0)), MUL(FC(at->alpha), x), x);
  case OP_ELU: {
    /* expm1(x) = 2 tanh(x/2) / (1 - tanh(x/2)): no cancellation near 0 */
    x = lw_bind(k, body, "x", a);
    KExpr *t = lw_let(k, body, "t", UN(KO_TANH, MUL(x, FC(0.5))));
    KExpr *em1 = DIV(MUL(FC(2), t), SUB(FC(1), t));
    return SEL(LT(x, FC(0)), MUL(FC(at->alpha), em1), x);
  }
  case OP_SIGMOID: {
    /* exp(-|x|) never overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below */
    x = lw_bind(k, body, "x", a);
    KExpr *e = lw_let(k, body, "e", UN(KO_EXP, UN(KO_NEG, UN(KO_ABS, x))));
    return SEL(GE(x, FC(0)), DIV(FC(1), ADD(FC(1), e)), DIV(e, ADD(FC(1), e)));
  }
  case OP_GELU:
    x = lw_bind(k, body, "x", a);
    if (at->mode == 1) {
      KExpr *u = MUL(FC(SQRT_2_PI), ADD(x, MUL(MUL(MUL(FC(0.044715), x), x), x)));
      return MUL(MUL(FC(0.5), x), ADD(FC(1), UN(KO_TANH, u)));
    }
    return MUL(MUL(FC(0.5), x), ADD(FC(1), UN(KO_ERF, MUL(x, FC(SQRT1_2)))));
  case OP_SOFTPLUS: {
    /* beta = alpha, threshold = beta; max(bx, 0) + log1p(exp(-|bx|)) is
     * bx + log1p(exp(-bx)) above 0 and log1p(exp(bx)) below, as sc_softplus */
    x = lw_bind(k, body, "x", a);
    KExpr *bx = at->alpha == 1 ? x : lw_let(k, body, "bx", MUL(FC(at->alpha), x));
    KExpr *s = ADD(MAX(bx, FC(0)), UN(KO_LOG1P, UN(KO_EXP, UN(KO_NEG, UN(KO_ABS, bx)))));
    if (at->alpha != 1)
      s = DIV(s, FC(at->alpha));
    return SEL(GT(bx, FC(at->beta)), x, s);
  }
  case OP_CLAMP:
    x = lw_bind(k, body, "x", a);
    return SEL(LT(x, FC(at->alpha)), FC(at->alpha), SEL(GT(x, FC(at->beta)), FC(at->beta), x));
  case OP_ADD: return ADD(a, b);
  case OP_SUB: return SUB(a, b);
  case OP_MUL: return MUL(a, b);
  case OP_DIV: return DIV(a, b);
  case OP_POW: return BIN(KO_POW, a, b);
  case OP_MAXIMUM:
  case OP_MINIMUM:
    a = lw_bind(k, body, "a", a);
    b = lw_bind(k, body, "b", b);
    return minmax(k, op == OP_MAXIMUM, a, b);
  case OP_EQUAL: return EQ(a, b);
  case OP_NOT_EQUAL: return NE(a, b);
  case OP_LESS: return LT(a, b);
  case OP_LESS_EQUAL: return LE(a, b);
  case OP_GREATER: return GT(a, b);
  case OP_GREATER_EQUAL: return GE(a, b);
  case OP_GELU_BACK:
    return gelu_back(k, body, at->mode, a, lw_bind(k, body, "x", b));
  case OP_STOP_GRADIENT:
  case OP_RESHAPE: return a;
  case OP_INPUT: case OP_PARAM: case OP_CONST: case OP_WHERE: case OP_CAST: case OP_SUM:
  case OP_MEAN: case OP_MAX: case OP_ARGMAX: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
  case OP_TRANSPOSE: case OP_BROADCAST_TO: case OP_SLICE: case OP_CONCAT: case OP_FULL:
  case OP_ARANGE: case OP_MATMUL: case OP_CONV2D: case OP_CONV_TRANSPOSE2D: case OP_MAXPOOL2D:
  case OP_AVGPOOL2D: case OP_UPSAMPLE: case OP_EMBEDDING: case OP_CROSS_ENTROPY:
  case OP_DROPOUT: case OP_RANDN: case OP_ADD_N: case OP_CONV2D_BACK_W: case OP_MAXPOOL2D_BACK:
  case OP_AVGPOOL2D_BACK: case OP_UPSAMPLE_BACK: case OP_SLICE_BACK: case OP_EMBEDDING_BACK:
  case OP_CROSS_ENTROPY_BACK: case OP_COUNT:
    break;
  }
  die("%s has no scalar formula", op_name(op));
}

/* out = f(in[0], in[1], ...) over out's index space, each input read with
 * its broadcast strides; f builds the value from the loads. */
typedef KExpr *(*EltFn)(Kernel *k, KStmt *body, const Node *n, KExpr **v);

static Kernel *eltwise(Arena *a, const Node *n, EltFn f) {
  Kernel *k = lw_kernel(a, n);
  int64_t st[LW_OPS][MAX_RANK];
  ASSERT(n->n_in + 1 <= LW_OPS);
  if (shape_numel(&n->shape) == 0)
    return k;
  lw_strides(&n->shape, st[0]);
  for (int i = 0; i < n->n_in; i++)
    lw_bcast_strides(&n->in[i]->shape, &n->shape, st[i + 1]);
  Nest ns;
  lw_nest(k, k->body, n->shape.rank, n->shape.dim, n->n_in + 1, st, NEST_MAP, &ns);
  KExpr *v[LW_OPS] = {0}; /* n_in >= 1 for every caller; gcc -O3 cannot see it */
  for (int i = 0; i < n->n_in; i++)
    v[i] = LOAD(i, lw_at(k, &ns, i + 1, 0));
  ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), f(k, ns.body, n, v)));
  return k;
}

static KExpr *elt_add_n(Kernel *k, KStmt *body, const Node *n, KExpr **v);

static KExpr *elt_scalar(Kernel *k, KStmt *body, const Node *n, KExpr **v) {
  return lw_scalar(k, body, n->op, &n->at, v[0], n->n_in > 1 ? v[1] : NULL);
}

Kernel *lower_unary(Arena *a, const Node *n) { return eltwise(a, n, elt_scalar); }
Kernel *lower_binary(Arena *a, const Node *n) { return eltwise(a, n, elt_scalar); }

/* where(c, a, b): a nonzero (or NaN) condition selects a.  Both operands
 * are loaded first (always in bounds), so the select has no loads in its
 * branches and backends need not branch around them: it vectorizes. */
static KExpr *elt_where(Kernel *k, KStmt *body, const Node *n, KExpr **v) {
  KExpr *zero = v[0]->type == KT_F32 ? FC(0) : ke_int(k, KT_I32, 0);
  return SEL(NE(v[0], zero), lw_bind(k, body, "a", v[1]), lw_bind(k, body, "b", v[2]));
}

Kernel *lower_where(Arena *a, const Node *n) { return eltwise(a, n, elt_where); }

/* f32 -> i32 as the reference's to_i32: truncation toward zero, NaN -> 0,
 * out of range saturated (2147483647.0 is 2^31 in f32, the first float at
 * or above INT32_MAX). */
static KExpr *elt_cast(Kernel *k, KStmt *body, const Node *n, KExpr **v) {
  KExpr *x = v[0];
  if (x->type == lw_type(n->dtype))
    return x;
  if (n->dtype == DT_F32)
    return ke_cast(k, KT_F32, x);
  x = lw_bind(k, body, "x", x);
  KExpr *i32 = SEL(LE(x, FC(-2147483648.0)), ke_int(k, KT_I32, INT32_MIN), ke_cast(k, KT_I32, x));
  i32 = SEL(GE(x, FC(2147483647.0)), ke_int(k, KT_I32, INT32_MAX), i32);
  return SEL(UN(KO_ISNAN, x), ke_int(k, KT_I32, 0), i32);
}

Kernel *lower_cast(Arena *a, const Node *n) { return eltwise(a, n, elt_cast); }

KExpr *lw_elt_value(Kernel *k, KStmt *body, const Node *n, KExpr **v) {
  switch (n->op) {
  case OP_WHERE: return elt_where(k, body, n, v);
  case OP_CAST: return elt_cast(k, body, n, v);
  case OP_ADD_N: return elt_add_n(k, body, n, v);
  case OP_STOP_GRADIENT: case OP_BROADCAST_TO: return v[0];
  default: return elt_scalar(k, body, n, v);
  }
}

/* A flat copy: reshape's output has another shape but the same elements. */
Kernel *lower_copy(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int64_t cnt = shape_numel(&n->shape);
  Nest ns;
  if (cnt == 0)
    return k;
  lw_flat(k, k->body, cnt, NEST_MAP, &ns);
  ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), LOAD(0, lw_at(k, &ns, 1, 0))));
  return k;
}

/* out = sum of the inputs, left to right (f32; the reference sums in double,
 * so two inputs are exact and more are within rounding). */
static KExpr *elt_add_n(Kernel *k, KStmt *body, const Node *n, KExpr **v) {
  KExpr *s = v[0];
  for (int i = 1; i < n->n_in; i++)
    s = ADD(s, v[i]);
  return s;
}

Kernel *lower_add_n(Arena *a, const Node *n) {
  if (n->n_in + 1 <= LW_OPS)
    return eltwise(a, n, elt_add_n);
  /* many inputs: same shapes, so one flat index serves all */
  Kernel *k = lw_kernel(a, n);
  int64_t cnt = shape_numel(&n->shape);
  Nest ns;
  if (cnt == 0)
    return k;
  lw_flat(k, k->body, cnt, NEST_MAP, &ns);
  KExpr *i = lw_at(k, &ns, 0, 0), *s = LOAD(0, i);
  for (int j = 1; j < n->n_in; j++)
    s = ADD(s, LOAD(j, i));
  ks_add(k, ns.body, ks_store(k, lw_out(n), i, s));
  return k;
}

/* A fill with no inputs: full's value (f32 rounded, i32 converted as the
 * reference's fill_value) or arange's index. */
static Kernel *fill(Arena *a, const Node *n, bool iota) {
  Kernel *k = lw_kernel(a, n);
  int64_t cnt = shape_numel(&n->shape);
  Nest ns;
  if (cnt == 0)
    return k;
  lw_flat(k, k->body, cnt, NEST_MAP, &ns);
  KExpr *i = lw_at(k, &ns, 0, 0), *v;
  if (iota)
    v = ke_cast(k, lw_type(n->dtype), i);
  else
    v = n->dtype == DT_F32 ? FC(n->at.value) : ke_int(k, KT_I32, lw_to_i32(n->at.value));
  ks_add(k, ns.body, ks_store(k, lw_out(n), i, v));
  return k;
}

Kernel *lower_full(Arena *a, const Node *n) { return fill(a, n, false); }
Kernel *lower_arange(Arena *a, const Node *n) { return fill(a, n, true); }

/* Inverted dropout, the training form (the frontend makes dropout nodes only
 * in training graphs; p = 0 is the identity).  The reference keeps element
 * i iff rng_uniform(rng_hash(seed, step), i) >= p, i.e. iff the top 53 bits
 * rng_hash(stream, i) >> 11 are >= p 2^53, an exact product, i.e. >=
 * ceil(p 2^53); a kept element is x / (1 - p), multiplied by the f32 of
 * 1 / (1 - p).  The step comes from a KBUF_STEP buffer (after the output). */
/* A random op's kernel: its stream rng_hash(seed, step), the step from a
 * KBUF_STEP buffer (after the output), and a flat loop over its elements
 * (*ns, element index *i; NULL, and no loop, when it has no elements). */
static Kernel *random_nest(Arena *a, const Node *n, Nest *ns, KExpr **stream, KExpr **i) {
  Kernel *k = lw_kernel(a, n);
  int step = lw_step_buf(k);
  int64_t cnt = shape_numel(&n->shape);
  *stream = *i = NULL;
  if (cnt == 0)
    return k;
  *stream = lw_let(k, k->body, "stream", BIN(KO_HASH64, IC((int64_t)n->at.seed), LOAD(step, IC(0))));
  lw_flat(k, k->body, cnt, NEST_MAP, ns);
  *i = lw_at(k, ns, 0, 0);
  return k;
}

Kernel *lower_dropout(Arena *a, const Node *n) {
  if (n->at.p == 0)
    return lower_copy(a, n);
  Nest ns;
  KExpr *stream, *i;
  Kernel *k = random_nest(a, n, &ns, &stream, &i);
  if (!i)
    return k;
  int64_t thresh = (int64_t)ceil(n->at.p * 0x1p53);
  KExpr *keep = GE(BIN(KO_HASH, stream, i), IC(thresh));
  KExpr *v = SEL(keep, MUL(LOAD(0, i), FC(1.0 / (1.0 - n->at.p))), FC(0));
  ks_add(k, ns.body, ks_store(k, lw_out(n), i, v));
  return k;
}

/* Standard normal samples: eval_randn's formula (ir/eval_nn.c) in index and
 * f32 operations.  KO_HASH is rng_hash(stream, i) >> 11, so h >> 40 is its
 * quotient by 2^29 and (h >> 16) mod 2^24 that of its quotient by 2^5; both
 * are below 2^24 + 1, so their f32 casts are exact. */
Kernel *lower_randn(Arena *a, const Node *n) {
  Nest ns;
  KExpr *stream, *i;
  Kernel *k = random_nest(a, n, &ns, &stream, &i);
  if (!i)
    return k;
  KExpr *h = lw_let(k, ns.body, "h", BIN(KO_HASH, stream, i));
  KExpr *hi = ADD(FDIV(h, IC(1LL << 29)), IC(1));
  KExpr *mid = MOD(FDIV(h, IC(32)), IC(1LL << 24));
  KExpr *u1 = MUL(ke_cast(k, KT_F32, hi), FC(0x1p-24));
  KExpr *u2 = MUL(ke_cast(k, KT_F32, mid), FC(0x1p-24));
  KExpr *r = UN(KO_SQRT, MUL(FC(-2), UN(KO_LOG, u1)));
  KExpr *v = MUL(r, UN(KO_COS, MUL(FC(RANDN_2PI), u2)));
  ks_add(k, ns.body, ks_store(k, lw_out(n), i, v));
  return k;
}
