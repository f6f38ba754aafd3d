/*
 * eval_elem.c: the reference evaluator's kernels for elementwise ops,
 * reductions and data movement, and the scalar functions (SC_FN) that
 * ops.def names for elementwise ops.
 *
 * These kernels define what an op means: every backend is tested against
 * them, so they favour plain, obviously correct loops over speed.
 *
 *  - Scalar math is done in double and rounded to f32 once per element.
 *    For + - * / that is exactly f32 arithmetic (double has more than
 *    2*24+2 bits), and for the transcendental functions it is the correctly
 *    rounded result in nearly every case.
 *  - i32 add/sub/mul/neg/abs wrap around (two's complement) instead of
 *    overflowing, which in C would be undefined behaviour.
 *  - Reductions accumulate in double (f32) or int64 (i32 sum, wrapped to
 *    i32 at the end).
 *  - Broadcasting follows NumPy: shapes are aligned at the right, and an
 *    axis of size 1 (or a missing axis) is read with stride 0.
 *  - Both dtypes are 4 bytes wide, so data movement (transpose, slice,
 *    broadcast_to, concat, where) copies uint32_t words whatever the dtype.
 *  - Each output element is written after the input elements at the same
 *    position are read, so elementwise kernels stay correct when the output
 *    aliases input 0 (the F_INPLACE hint).
 *
 * Shape rules have already validated and normalized the attributes (axes
 * non-negative, slice bounds clamped), so kernels assume them.
 */
#include <math.h>
#include <string.h>

#include "ir.h"

/* --- scalar functions ---------------------------------------------------- */

double sc_neg(double a, double b, const Attrs *at) { return -a; }
double sc_abs(double a, double b, const Attrs *at) { return fabs(a); }
double sc_exp(double a, double b, const Attrs *at) { return exp(a); }
double sc_log(double a, double b, const Attrs *at) { return log(a); }
double sc_sqrt(double a, double b, const Attrs *at) { return sqrt(a); }
double sc_rsqrt(double a, double b, const Attrs *at) { return 1.0 / sqrt(a); }
double sc_sin(double a, double b, const Attrs *at) { return sin(a); }
double sc_cos(double a, double b, const Attrs *at) { return cos(a); }
double sc_tanh(double a, double b, const Attrs *at) { return tanh(a); }

/* Written so that NaN passes through, as in PyTorch. */
double sc_relu(double a, double b, const Attrs *at) { return a < 0 ? 0.0 : a; }
double sc_leaky_relu(double a, double b, const Attrs *at) { return a < 0 ? at->alpha * a : a; }
double sc_elu(double a, double b, const Attrs *at) { return a < 0 ? at->alpha * expm1(a) : a; }
double sc_clamp(double a, double b, const Attrs *at) {
  return a < at->alpha ? at->alpha : a > at->beta ? at->beta : a;
}

/* Never evaluates exp of a large positive number. */
double sc_sigmoid(double a, double b, const Attrs *at) {
  if (a >= 0)
    return 1.0 / (1.0 + exp(-a));
  double e = exp(a);
  return e / (1.0 + e);
}

/* mode 0: the exact form 0.5 x (1 + erf(x / sqrt 2)); mode 1: PyTorch's
 * approximate="tanh", 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
double sc_gelu(double a, double b, const Attrs *at) {
  if (at->mode == 1) {
    const double k = 0.7978845608028654; /* sqrt(2 / pi) */
    return 0.5 * a * (1.0 + tanh(k * (a + 0.044715 * a * a * a)));
  }
  return 0.5 * a * (1.0 + erf(a * 0.7071067811865476));
}

/* gelu_back: a = dy, b = x; dy * gelu'(x) in the form `at->mode` names.
 *   mode 0: gelu = x Phi(x), so gelu' = Phi(x) + x phi(x), with
 *           Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi);
 *   mode 1: gelu = x (1 + tanh u) / 2 with u = k (x + 0.044715 x^3), k = sqrt(2/pi),
 *           so gelu' = (1 + tanh u) / 2 + x (1 - tanh^2 u) k (1 + 3 * 0.044715 x^2) / 2. */
double sc_gelu_back(double a, double b, const Attrs *at) {
  double x = b;
  if (at->mode == 1) {
    const double k = 0.7978845608028654; /* sqrt(2 / pi) */
    double t = tanh(k * (x + 0.044715 * x * x * x));
    return a * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x));
  }
  double cdf = 0.5 * (1.0 + erf(x * 0.7071067811865476));
  double pdf = 0.3989422804014327 * exp(-0.5 * x * x); /* 1 / sqrt(2 pi) */
  return a * (cdf + x * pdf);
}

/* PyTorch's softplus: beta = at->alpha, threshold = at->beta.  Linear above
 * the threshold; otherwise log(1 + exp(bx)) / beta, computed as
 * bx + log1p(exp(-bx)) for bx > 0 so exp never overflows. */
double sc_softplus(double a, double b, const Attrs *at) {
  double beta = at->alpha, bx = beta * a;
  if (bx > at->beta)
    return a;
  if (bx > 0)
    return (bx + log1p(exp(-bx))) / beta;
  return log1p(exp(bx)) / beta;
}

double sc_add(double a, double b, const Attrs *at) { return a + b; }
double sc_sub(double a, double b, const Attrs *at) { return a - b; }
double sc_mul(double a, double b, const Attrs *at) { return a * b; }
double sc_div(double a, double b, const Attrs *at) { return a / b; }
double sc_pow(double a, double b, const Attrs *at) { return pow(a, b); }
/* NaN in either operand gives NaN (torch.maximum / torch.minimum). */
double sc_maximum(double a, double b, const Attrs *at) {
  return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
}
double sc_minimum(double a, double b, const Attrs *at) {
  return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
}
double sc_eq(double a, double b, const Attrs *at) { return a == b ? 1.0 : 0.0; }
double sc_ne(double a, double b, const Attrs *at) { return a != b ? 1.0 : 0.0; }
double sc_lt(double a, double b, const Attrs *at) { return a < b ? 1.0 : 0.0; }
double sc_le(double a, double b, const Attrs *at) { return a <= b ? 1.0 : 0.0; }
double sc_gt(double a, double b, const Attrs *at) { return a > b ? 1.0 : 0.0; }
double sc_ge(double a, double b, const Attrs *at) { return a >= b ? 1.0 : 0.0; }

/* --- strided walks --------------------------------------------------------- */

/* An odometer over the index space `dim[0..rank)` that keeps, for up to
 * three operands, the element offset off[k] = sum idx[d] * st[k][d]. */
typedef struct Walk {
  int rank, n_ops;
  int64_t dim[MAX_RANK], idx[MAX_RANK];
  int64_t st[3][MAX_RANK];
  int64_t off[3];
} Walk;

static void walk_init(Walk *w, int rank, const int64_t *dim, int n_ops) {
  memset(w, 0, sizeof *w);
  w->rank = rank;
  w->n_ops = n_ops;
  for (int d = 0; d < rank; d++)
    w->dim[d] = dim[d];
}

static void walk_next(Walk *w) {
  for (int d = w->rank - 1; d >= 0; d--) {
    w->idx[d]++;
    for (int k = 0; k < w->n_ops; k++)
      w->off[k] += w->st[k][d];
    if (w->idx[d] < w->dim[d])
      return;
    for (int k = 0; k < w->n_ops; k++)
      w->off[k] -= w->st[k][d] * w->dim[d];
    w->idx[d] = 0;
  }
}

/* Strides that read t, broadcast NumPy-style, along the axes of out. */
static void bcast_strides(const RtTensor *t, const RtTensor *out, int64_t *st) {
  int64_t s = 1;
  for (int d = out->rank - 1; d >= 0; d--) {
    int k = t->rank - out->rank + d;
    int64_t dk = k >= 0 ? t->dim[k] : 1;
    st[d] = dk == 1 ? 0 : s;
    s *= dk;
  }
}

/* Row-major strides of t. */
static void dense_strides(const RtTensor *t, int64_t *st) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= t->dim[d];
  }
}

/* Copies out's elements from in->data + base, walking out's index space
 * with the given input strides (transpose, broadcast_to, slice). */
static void gather_words(RtTensor *out, const RtTensor *in, int64_t base, const int64_t *st) {
  int64_t n = rt_numel(out);
  const uint32_t *x = (const uint32_t *)in->data + base;
  uint32_t *y = out->data;
  Walk w;
  walk_init(&w, out->rank, out->dim, 1);
  memcpy(w.st[0], st, sizeof(int64_t) * (size_t)out->rank);
  for (int64_t i = 0; i < n; i++, walk_next(&w))
    y[i] = x[w.off[0]];
}

/* Element i of t as a double (exact for both dtypes). */
static double get_d(const RtTensor *t, int64_t i) {
  return t->dtype == DT_F32 ? (double)((const float *)t->data)[i]
                            : (double)((const int32_t *)t->data)[i];
}

/* Wraps an integer to i32 (two's complement), with no undefined behaviour. */
static int32_t wrap_i32(uint64_t v) {
  uint32_t u = (uint32_t)v;
  int32_t r;
  memcpy(&r, &u, sizeof r);
  return r;
}

/* Real -> i32 truncates toward zero like C.  C leaves NaN and out-of-range
 * conversions undefined; here NaN gives 0 and the rest saturate. */
static int32_t to_i32(double v) {
  if (isnan(v))
    return 0;
  if (v >= 2147483647.0)
    return INT32_MAX;
  if (v <= -2147483648.0)
    return INT32_MIN;
  return (int32_t)v;
}

/* --- leaves, elementwise ---------------------------------------------------- */
static void fill_value(RtTensor *out, double v) {
  int64_t cnt = rt_numel(out);
  for (int64_t i = 0; i < cnt; i++) {
    if (out->dtype == DT_F32)
      ((float *)out->data)[i] = (float)v;
    else
      ((int32_t *)out->data)[i] = to_i32(v);
  }
}

void eval_none(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {}


void eval_const(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  fill_value(out, n->at.value);
}

static int32_t unary_i32(Op op, int32_t a) {
  uint64_t u = (uint64_t)(int64_t)a;
  if (op == OP_NEG)
    return wrap_i32(0 - u);
  if (op == OP_ABS)
    return a < 0 ? wrap_i32(0 - u) : a;
  die("%s has no i32 kernel", op_name(op));
}

void eval_unary(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  if (in[0]->dtype == DT_I32) {
    const int32_t *x = in[0]->data;
    int32_t *y = out->data;
    for (int64_t i = 0; i < cnt; i++)
      y[i] = unary_i32(n->op, x[i]);
    return;
  }
  ScalarFn f = op_info[n->op].scalar;
  const float *x = in[0]->data;
  float *y = out->data;
  for (int64_t i = 0; i < cnt; i++)
    y[i] = (float)f(x[i], 0.0, &n->at);
}

static int32_t binary_i32(Op op, int32_t a, int32_t b) {
  uint64_t ua = (uint64_t)(int64_t)a, ub = (uint64_t)(int64_t)b;
  if (op == OP_ADD)
    return wrap_i32(ua + ub);
  if (op == OP_SUB)
    return wrap_i32(ua - ub);
  if (op == OP_MUL)
    return wrap_i32(ua * ub);
  if (op == OP_MAXIMUM)
    return a > b ? a : b;
  if (op == OP_MINIMUM)
    return a < b ? a : b;
  die("%s has no i32 kernel", op_name(op));
}

void eval_binary(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  ScalarFn f = op_info[n->op].scalar;
  bool cmp = op_has(n->op, F_COMPARE), ints = in[0]->dtype == DT_I32;
  Walk w;
  walk_init(&w, out->rank, out->dim, 2);
  bcast_strides(in[0], out, w.st[0]);
  bcast_strides(in[1], out, w.st[1]);
  for (int64_t i = 0; i < cnt; i++, walk_next(&w)) {
    if (cmp) {
      /* i32 operands convert to double exactly, so this compares ints. */
      double r = f(get_d(in[0], w.off[0]), get_d(in[1], w.off[1]), &n->at);
      ((int32_t *)out->data)[i] = r != 0;
    } else if (ints) {
      const int32_t *a = in[0]->data, *b = in[1]->data;
      ((int32_t *)out->data)[i] = binary_i32(n->op, a[w.off[0]], b[w.off[1]]);
    } else {
      const float *a = in[0]->data, *b = in[1]->data;
      ((float *)out->data)[i] = (float)f(a[w.off[0]], b[w.off[1]], &n->at);
    }
  }
}

/* where(cond, a, b): cond of either dtype, nonzero (or NaN) selects a. */
void eval_where(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  const uint32_t *a = in[1]->data, *b = in[2]->data;
  uint32_t *y = out->data;
  Walk w;
  walk_init(&w, out->rank, out->dim, 3);
  for (int k = 0; k < 3; k++)
    bcast_strides(in[k], out, w.st[k]);
  for (int64_t i = 0; i < cnt; i++, walk_next(&w))
    y[i] = get_d(in[0], w.off[0]) != 0 ? a[w.off[1]] : b[w.off[2]];
}


void eval_cast(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  for (int64_t i = 0; i < cnt; i++) {
    if (in[0]->dtype == out->dtype)
      ((uint32_t *)out->data)[i] = ((const uint32_t *)in[0]->data)[i];
    else if (out->dtype == DT_I32)
      ((int32_t *)out->data)[i] = to_i32(((const float *)in[0]->data)[i]);
    else
      ((float *)out->data)[i] = (float)((const int32_t *)in[0]->data)[i];
  }
}

/* --- reductions ---------------------------------------------------------------- */

/* Splits x's axes into kept ones (walked by `outer`) and reduced ones
 * (walked by `inner`), each with x's strides. */
static void reduce_split(const Node *n, const RtTensor *x, Walk *outer, Walk *inner) {
  bool red[MAX_RANK] = {0};
  int64_t st[MAX_RANK], kd[MAX_RANK], rd[MAX_RANK], ks[MAX_RANK], rs[MAX_RANK];
  int nk = 0, nr = 0;
  for (int i = 0; i < n->at.n_axes; i++)
    red[n->at.axes[i]] = true;
  dense_strides(x, st);
  for (int d = 0; d < x->rank; d++) {
    if (red[d]) {
      rd[nr] = x->dim[d];
      rs[nr++] = st[d];
    } else {
      kd[nk] = x->dim[d];
      ks[nk++] = st[d];
    }
  }
  walk_init(outer, nk, kd, 1);
  memcpy(outer->st[0], ks, sizeof(int64_t) * (size_t)nk);
  walk_init(inner, nr, rd, 1);
  memcpy(inner->st[0], rs, sizeof(int64_t) * (size_t)nr);
}

static int64_t walk_count(const Walk *w) {
  int64_t c = 1;
  for (int d = 0; d < w->rank; d++)
    c *= w->dim[d];
  return c;
}

/* One output element: the reduction of x over inner's index space, from
 * element `base`.  SUM of i32 accumulates in int64 and wraps. */
static double reduce_one(Op op, const RtTensor *x, int64_t base, Walk *inner, int64_t cnt) {
  double acc = op == OP_MAX ? -INFINITY : 0.0;
  int64_t iacc = 0;
  inner->off[0] = 0;
  memset(inner->idx, 0, sizeof inner->idx);
  for (int64_t j = 0; j < cnt; j++, walk_next(inner)) {
    int64_t k = base + inner->off[0];
    if (op == OP_SUM && x->dtype == DT_I32)
      iacc += ((const int32_t *)x->data)[k];
    else if (op == OP_MAX) {
      double v = get_d(x, k);
      if (isnan(v))
        return v; /* NaN propagates, as in PyTorch */
      acc = v > acc ? v : acc;
    } else
      acc += get_d(x, k);
  }
  if (op == OP_SUM && x->dtype == DT_I32)
    return (double)wrap_i32((uint64_t)iacc);
  return op == OP_MEAN ? acc / (double)cnt : acc; /* mean of nothing: NaN */
}

void eval_reduce(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  Walk outer, inner;
  reduce_split(n, in[0], &outer, &inner);
  int64_t n_out = rt_numel(out), cnt = walk_count(&inner);
  for (int64_t i = 0; i < n_out; i++, walk_next(&outer)) {
    double v = reduce_one(n->op, in[0], outer.off[0], &inner, cnt);
    if (out->dtype == DT_F32)
      ((float *)out->data)[i] = (float)v;
    else
      ((int32_t *)out->data)[i] = (int32_t)v;
  }
}

/* The extents before, along and after `axis` of t. */
static void axis_split(const RtTensor *t, int axis, int64_t *outer, int64_t *len,
                       int64_t *inner) {
  *outer = *inner = 1;
  for (int d = 0; d < axis; d++)
    *outer *= t->dim[d];
  *len = t->dim[axis];
  for (int d = axis + 1; d < t->rank; d++)
    *inner *= t->dim[d];
}

/* First index of the maximum; a NaN counts as the maximum (as in NumPy). */
void eval_argmax(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t outer, len, inner;
  axis_split(in[0], n->at.axis, &outer, &len, &inner);
  int32_t *y = out->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t best = 0, base = o * len * inner + i;
      double bv = get_d(in[0], base);
      for (int64_t k = 1; k < len && !isnan(bv); k++) {
        double v = get_d(in[0], base + k * inner);
        if (isnan(v) || v > bv) {
          bv = v;
          best = k;
        }
      }
      y[o * inner + i] = (int32_t)best;
    }
}

/* softmax (log == false) or log_softmax along n->at.axis, max subtracted. */
static void softmax_kernel(const Node *n, RtTensor *out, const RtTensor *x, bool log_form) {
  int64_t outer, len, inner;
  axis_split(x, n->at.axis, &outer, &len, &inner);
  const float *xs = x->data;
  float *y = out->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t base = o * len * inner + i;
      double mx = -INFINITY, sum = 0.0;
      for (int64_t k = 0; k < len; k++)
        mx = xs[base + k * inner] > mx ? xs[base + k * inner] : mx;
      for (int64_t k = 0; k < len; k++)
        sum += exp(xs[base + k * inner] - mx);
      double lse = log(sum);
      for (int64_t k = 0; k < len; k++) {
        double z = xs[base + k * inner] - mx;
        y[base + k * inner] = (float)(log_form ? z - lse : exp(z) / sum);
      }
    }
}

void eval_softmax(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  softmax_kernel(n, out, in[0], false);
}

void eval_log_softmax(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  softmax_kernel(n, out, in[0], true);
}

/* --- data movement -------------------------------------------------------------- */

/* reshape: the bytes do not change. */
void eval_copy(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  if (out->data != in[0]->data)
    memmove(out->data, in[0]->data, rt_nbytes(out));
}

/* out axis d is input axis perm[d] (n->at.axes). */
void eval_transpose(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t st[MAX_RANK], pst[MAX_RANK];
  dense_strides(in[0], st);
  for (int d = 0; d < out->rank; d++)
    pst[d] = st[n->at.axes[d]];
  gather_words(out, in[0], 0, pst);
}

void eval_broadcast_to(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t st[MAX_RANK];
  bcast_strides(in[0], out, st);
  gather_words(out, in[0], 0, st);
}

/* out[i] = in[begin + i * step] on every axis. */
void eval_slice(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t st[MAX_RANK], base = 0;
  dense_strides(in[0], st);
  for (int d = 0; d < out->rank; d++) {
    base += n->at.begin[d] * st[d];
    st[d] *= n->at.step[d];
  }
  if (rt_numel(out) > 0)
    gather_words(out, in[0], base, st);
}

void eval_concat(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t outer, len, inner, pos = 0;
  axis_split(out, n->at.axis, &outer, &len, &inner);
  uint32_t *y = out->data;
  for (int64_t o = 0; o < outer; o++)
    for (int k = 0; k < n->n_in; k++) {
      int64_t chunk = in[k]->dim[n->at.axis] * inner;
      if (chunk > 0)
        memcpy(y + pos, (const uint32_t *)in[k]->data + o * chunk,
               sizeof(uint32_t) * (size_t)chunk);
      pos += chunk;
    }
}

void eval_full(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  fill_value(out, n->at.value);
}

void eval_arange(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  for (int64_t i = 0; i < cnt; i++) {
    if (out->dtype == DT_F32)
      ((float *)out->data)[i] = (float)i;
    else
      ((int32_t *)out->data)[i] = (int32_t)i;
  }
}
