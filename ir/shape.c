/*
 * shape.c: shape and dtype rules for elementwise, reduction and data
 * movement ops (the networks' ops are in shape_nn.c).
 *
 * A rule reads n->op, n->in and n->at, validates them, normalizes the
 * attributes in place (negative axes become positive, defaults are made
 * explicit), and sets n->shape and n->dtype.  On failure it fills ShapeErr
 * with the offending input and a sentence naming the op and the shapes
 * involved; the frontend adds file:line:col and the caret.
 */
#include <string.h>

#include "ir.h"

const char *dtype_name(DType t) { return rt_dtype_name(t); }

int64_t shape_numel(const Shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    if (s->dim[i] == 0)
      return 0;
    if (n > MAX_NUMEL / s->dim[i])
      return MAX_NUMEL + 1; /* saturate: the caller rejects it */
    n *= s->dim[i];
  }
  return n;
}

bool shape_eq(const Shape *a, const Shape *b) {
  if (a->rank != b->rank)
    return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i])
      return false;
  return true;
}

Shape shape_make(int rank, const int64_t *dim) {
  Shape s = {0};
  s.rank = rank;
  for (int i = 0; i < rank; i++)
    s.dim[i] = dim[i];
  return s;
}

Shape shape_scalar(void) { return (Shape){0}; }

char *shape_str(const Shape *s, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < s->rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s->dim[i]);
  if (k < n)
    snprintf(buf + k, n - k, "]");
  return buf;
}

char *type_str(DType t, const Shape *s, char *buf, size_t n) {
  char sh[160];
  snprintf(buf, n, "%s%s", dtype_name(t), shape_str(s, sh, sizeof sh));
  return buf;
}

bool axis_norm(int *axis, int rank) {
  int a = *axis < 0 ? *axis + rank : *axis;
  if (a < 0 || a >= rank)
    return false;
  *axis = a;
  return true;
}

bool shape_broadcast(const Shape *a, const Shape *b, Shape *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  Shape s = {0};
  s.rank = r;
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return false;
    s.dim[i] = da == 1 ? db : da;
  }
  *out = s;
  return true;
}

/* Type strings of inputs i and j, for messages. */
#define T(i) node_type_str(n->in[i], tb##i, sizeof tb##i)

static bool need_f32(Node *n, int i, ShapeErr *e) {
  if (n->in[i]->dtype == DT_F32)
    return true;
  char buf[160];
  return shape_fail(e, i, "%s expects f32, got %s", op_name(n->op),
                    node_type_str(n->in[i], buf, sizeof buf));
}

/* Elementwise inputs: f32, or i32 where the op allows it. */
static bool elt_dtype_ok(Node *n, int i, ShapeErr *e) {
  if (op_has(n->op, F_INT_OK))
    return true;
  return need_f32(n, i, e);
}

bool shape_leaf(Node *n, ShapeErr *e) { return true; }

bool shape_unary(Node *n, ShapeErr *e) {
  if (!elt_dtype_ok(n, 0, e))
    return false;
  if (n->op == OP_CLAMP && n->at.alpha > n->at.beta)
    return attr_fail(e, "min", "clamp: min %g is greater than max %g", n->at.alpha, n->at.beta);
  if (n->op == OP_SOFTPLUS && n->at.alpha <= 0)
    return attr_fail(e, "beta", "softplus: beta must be positive, got %g", n->at.alpha);
  n->dtype = n->in[0]->dtype;
  n->shape = n->in[0]->shape;
  return true;
}

static bool broadcast_inputs(Node *n, int a, int b, Shape *out, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (shape_broadcast(&n->in[a]->shape, &n->in[b]->shape, out))
    return true;
  node_type_str(n->in[a], tb0, sizeof tb0);
  node_type_str(n->in[b], tb1, sizeof tb1);
  return shape_fail(e, b, "%s: cannot broadcast %s with %s", op_name(n->op), tb0, tb1);
}

static bool same_dtype(Node *n, int a, int b, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (n->in[a]->dtype == n->in[b]->dtype)
    return true;
  node_type_str(n->in[a], tb0, sizeof tb0);
  node_type_str(n->in[b], tb1, sizeof tb1);
  return shape_fail(e, b, "%s: operands have different dtypes, %s and %s (use cast)",
                    op_name(n->op), tb0, tb1);
}

bool shape_binary(Node *n, ShapeErr *e) {
  if (!same_dtype(n, 0, 1, e) || !elt_dtype_ok(n, 0, e))
    return false;
  n->dtype = n->in[0]->dtype;
  return broadcast_inputs(n, 0, 1, &n->shape, e);
}

bool shape_compare(Node *n, ShapeErr *e) {
  if (!same_dtype(n, 0, 1, e))
    return false;
  n->dtype = DT_I32;
  return broadcast_inputs(n, 0, 1, &n->shape, e);
}

bool shape_where(Node *n, ShapeErr *e) {
  Shape s;
  if (!same_dtype(n, 1, 2, e) || !broadcast_inputs(n, 1, 2, &s, e))
    return false;
  char tb0[160];
  if (!shape_broadcast(&n->in[0]->shape, &s, &n->shape))
    return shape_fail(e, 0, "where: condition %s does not broadcast with the values' shape",
                      T(0));
  n->dtype = n->in[1]->dtype;
  return true;
}

bool shape_cast(Node *n, ShapeErr *e) {
  if (n->at.to != DT_F32 && n->at.to != DT_I32)
    return shape_fail(e, -1, "cast: unknown dtype %d", (int)n->at.to);
  n->dtype = n->at.to;
  n->shape = n->in[0]->shape;
  return true;
}

/* Normalizes n->at.axes (default all) and marks them in `red`. */
static bool reduce_axes(Node *n, int rank, bool *red, ShapeErr *e) {
  memset(red, 0, sizeof(bool) * MAX_RANK);
  if (n->at.n_axes > MAX_RANK)
    return attr_fail(e, "axis", "%s: more than %d axes", op_name(n->op), MAX_RANK);
  if (n->at.n_axes < 0) {
    n->at.n_axes = rank;
    for (int i = 0; i < rank; i++)
      n->at.axes[i] = i;
  }
  for (int i = 0; i < n->at.n_axes; i++) {
    int a = n->at.axes[i];
    char tb0[160];
    if (!axis_norm(&a, rank))
      return attr_fail(e, "axis", "%s: axis %d is out of range for %s", op_name(n->op),
                       n->at.axes[i], T(0));
    if (red[a])
      return attr_fail(e, "axis", "%s: axis %d is listed twice", op_name(n->op), n->at.axes[i]);
    red[a] = true;
    n->at.axes[i] = a;
  }
  return true;
}

bool shape_reduce(Node *n, ShapeErr *e) {
  const Shape *in = &n->in[0]->shape;
  bool red[MAX_RANK];
  if (n->op == OP_MEAN && !need_f32(n, 0, e))
    return false;
  if (!reduce_axes(n, in->rank, red, e))
    return false;
  Shape s = {0};
  for (int i = 0; i < in->rank; i++) {
    if (red[i] && in->dim[i] == 0 && n->op == OP_MAX)
      return shape_fail(e, 0, "max over an empty axis %d", i);
    if (!red[i])
      s.dim[s.rank++] = in->dim[i];
    else if (n->at.keepdims)
      s.dim[s.rank++] = 1;
  }
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

bool shape_argmax(Node *n, ShapeErr *e) {
  const Shape *in = &n->in[0]->shape;
  char tb0[160];
  if (!axis_norm(&n->at.axis, in->rank))
    return attr_fail(e, "axis", "argmax: axis %d is out of range for %s", n->at.axis, T(0));
  if (in->dim[n->at.axis] == 0)
    return shape_fail(e, 0, "argmax over an empty axis");
  Shape s = {0};
  for (int i = 0; i < in->rank; i++) {
    if (i != n->at.axis)
      s.dim[s.rank++] = in->dim[i];
    else if (n->at.keepdims)
      s.dim[s.rank++] = 1;
  }
  n->shape = s;
  n->dtype = DT_I32;
  return true;
}

bool shape_softmax(Node *n, ShapeErr *e) {
  char tb0[160];
  if (!need_f32(n, 0, e))
    return false;
  if (!axis_norm(&n->at.axis, n->in[0]->shape.rank))
    return attr_fail(e, "axis", "%s: axis %d is out of range for %s", op_name(n->op), n->at.axis,
                      T(0));
  n->shape = n->in[0]->shape;
  n->dtype = DT_F32;
  return true;
}

bool shape_dropout(Node *n, ShapeErr *e) {
  if (!need_f32(n, 0, e))
    return false;
  if (!(n->at.p >= 0 && n->at.p < 1))
    return attr_fail(e, "p", "dropout: p must be in [0, 1), got %g", n->at.p);
  n->shape = n->in[0]->shape;
  n->dtype = DT_F32;
  return true;
}

/* The shape attribute must be present (an internal caller may omit it). */
static bool need_shape_attr(Node *n, ShapeErr *e) {
  if (n->at.n_shape >= 0 && n->at.n_shape <= MAX_RANK)
    return true;
  return attr_fail(e, "shape", "%s: the shape attribute is required (at most %d axes)",
                    op_name(n->op), MAX_RANK);
}

/* reshape: one -1 is inferred, 0 copies the input's dim at that position. */
bool shape_reshape(Node *n, ShapeErr *e) {
  const Shape *in = &n->in[0]->shape;
  char tb0[160], want[160];
  Shape s = {0}, known = {0};
  if (!need_shape_attr(n, e))
    return false;
  s.rank = n->at.n_shape;
  int infer = -1;
  for (int i = 0; i < s.rank; i++) {
    int64_t d = n->at.shape[i];
    if (d == 0 && i < in->rank)
      d = in->dim[i];
    if (d == -1 && infer >= 0)
      return attr_fail(e, "shape", "reshape: more than one -1 in the new shape");
    if (d == -1) {
      infer = i;
      continue;
    }
    if (d < 0)
      return attr_fail(e, "shape", "reshape: dimension %lld is negative", (long long)d);
    s.dim[i] = known.dim[known.rank++] = d;
  }
  int64_t total = shape_numel(in), k = shape_numel(&known);
  if (k > MAX_NUMEL)
    return attr_fail(e, "shape", "reshape: the new shape is too large");
  if (infer >= 0) {
    if (k == 0 || total % k)
      return attr_fail(e, "shape", "reshape: cannot infer the -1 dimension: %lld elements of %s "
                        "are not a multiple of %lld", (long long)total, T(0), (long long)k);
    s.dim[infer] = total / k;
  }
  if (shape_numel(&s) != total) {
    shape_str(&s, want, sizeof want);
    return attr_fail(e, "shape", "reshape: cannot reshape %s (%lld elements) to %s (%lld elements)",
                      T(0), (long long)total, want, (long long)shape_numel(&s));
  }
  for (int i = 0; i < s.rank; i++)
    n->at.shape[i] = s.dim[i];
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

bool shape_transpose(Node *n, ShapeErr *e) {
  const Shape *in = &n->in[0]->shape;
  char tb0[160];
  if (n->at.n_axes < 0) {
    if (in->rank < 2)
      return shape_fail(e, 0, "transpose: needs at least 2 axes to swap, got %s", T(0));
    n->at.n_axes = in->rank;
    for (int i = 0; i < in->rank; i++)
      n->at.axes[i] = i;
    n->at.axes[in->rank - 2] = in->rank - 1;
    n->at.axes[in->rank - 1] = in->rank - 2;
  }
  if (n->at.n_axes != in->rank || n->at.n_axes > MAX_RANK)
    return attr_fail(e, "perm", "transpose: perm has %d axes but the input is %s", n->at.n_axes,
                      T(0));
  bool seen[MAX_RANK] = {0};
  Shape s = {0};
  s.rank = in->rank;
  for (int i = 0; i < in->rank; i++) {
    int a = n->at.axes[i];
    if (!axis_norm(&a, in->rank) || seen[a])
      return attr_fail(e, "perm", "transpose: perm is not a permutation of 0..%d", in->rank - 1);
    seen[a] = true;
    n->at.axes[i] = a;
    s.dim[i] = in->dim[a];
  }
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

bool shape_broadcast_to(Node *n, ShapeErr *e) {
  char tb0[160], want[160];
  if (!need_shape_attr(n, e))
    return false;
  Shape s = shape_make(n->at.n_shape, n->at.shape), out;
  for (int i = 0; i < s.rank; i++)
    if (s.dim[i] < 0)
      return attr_fail(e, "shape", "broadcast_to: negative dimension in %s",
                        shape_str(&s, want, sizeof want));
  if (!shape_broadcast(&n->in[0]->shape, &s, &out) || !shape_eq(&out, &s))
    return shape_fail(e, 0, "broadcast_to: cannot broadcast %s to %s", T(0),
                      shape_str(&s, want, sizeof want));
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

/* slice: begin/end/step per axis were set by the frontend; clamp them the
 * way Python does for a positive step. */
bool shape_slice(Node *n, ShapeErr *e) {
  const Shape *in = &n->in[0]->shape;
  Shape s = {0};
  s.rank = in->rank;
  for (int i = 0; i < in->rank; i++) {
    int64_t d = in->dim[i], b = n->at.begin[i], en = n->at.end[i], st = n->at.step[i];
    if (st <= 0)
      return shape_fail(e, -1, "slice: step must be positive, got %lld", (long long)st);
    if (b < 0)
      b += d;
    if (en < 0)
      en += d;
    b = b < 0 ? 0 : b > d ? d : b;
    en = en < 0 ? 0 : en > d ? d : en;
    if (en < b)
      en = b;
    n->at.begin[i] = b;
    n->at.end[i] = en;
    s.dim[i] = (en - b + st - 1) / st;
  }
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

bool shape_concat(Node *n, ShapeErr *e) {
  const Shape *s0 = &n->in[0]->shape;
  char tb0[160], tbi[160];
  if (!axis_norm(&n->at.axis, s0->rank))
    return attr_fail(e, "axis", "concat: axis %d is out of range for %s", n->at.axis, T(0));
  Shape s = *s0;
  for (int i = 1; i < n->n_in; i++) {
    const Shape *si = &n->in[i]->shape;
    bool ok = si->rank == s0->rank && n->in[i]->dtype == n->in[0]->dtype;
    for (int k = 0; ok && k < s0->rank; k++)
      ok = k == n->at.axis || si->dim[k] == s0->dim[k];
    if (!ok)
      return shape_fail(e, i, "concat: %s does not match %s except on axis %d",
                        node_type_str(n->in[i], tbi, sizeof tbi), T(0), n->at.axis);
    s.dim[n->at.axis] += si->dim[n->at.axis];
  }
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}

/* A generator's shape (full, randn): the shape attribute, no negative dim. */
static bool shape_of_attr(Node *n, ShapeErr *e) {
  if (!need_shape_attr(n, e))
    return false;
  Shape s = shape_make(n->at.n_shape, n->at.shape);
  char buf[160];
  for (int i = 0; i < s.rank; i++)
    if (s.dim[i] < 0)
      return attr_fail(e, "shape", "%s: negative dimension in %s", op_name(n->op),
                       shape_str(&s, buf, sizeof buf));
  n->shape = s;
  return true;
}

bool shape_full(Node *n, ShapeErr *e) {
  if (!shape_of_attr(n, e))
    return false;
  n->dtype = n->at.to;
  return true;
}

bool shape_randn(Node *n, ShapeErr *e) {
  if (!shape_of_attr(n, e))
    return false;
  n->dtype = DT_F32;
  return true;
}

bool shape_arange(Node *n, ShapeErr *e) {
  if (n->at.n_shape != 1 || n->at.shape[0] < 0)
    return attr_fail(e, "n", "arange: n must be one non-negative integer");
  n->shape = shape_make(1, n->at.shape);
  n->dtype = n->at.to;
  return true;
}

/* --- backward-only ops (made by autodiff, ir/grad.c) ------------------------ */

/* add_n: gradient aggregation; every input f32 of one shape. */
bool shape_add_n(Node *n, ShapeErr *e) {
  char tb0[160], tbi[160];
  for (int i = 0; i < n->n_in; i++) {
    if (!need_f32(n, i, e))
      return false;
    if (!shape_eq(&n->in[i]->shape, &n->in[0]->shape))
      return shape_fail(e, i, "add_n: %s does not have the shape of %s",
                        node_type_str(n->in[i], tbi, sizeof tbi), T(0));
  }
  n->shape = n->in[0]->shape;
  n->dtype = DT_F32;
  return true;
}

/* slice_back: dy, the gradient of slice(x), goes back to x's shape (the
 * attribute `shape`).  begin/end/step are the forward's, as shape_slice
 * normalized them (0 <= begin <= end <= dim, step >= 1), and slicing that
 * shape with them must give dy's shape. */
bool shape_slice_back(Node *n, ShapeErr *e) {
  const Shape *dy = &n->in[0]->shape;
  char tb0[160], want[160];
  if (!need_shape_attr(n, e))
    return false;
  Shape s = shape_make(n->at.n_shape, n->at.shape);
  if (s.rank != dy->rank)
    return attr_fail(e, "shape", "slice_back: shape %s has %d axes but the gradient is %s",
                     shape_str(&s, want, sizeof want), s.rank, T(0));
  for (int i = 0; i < s.rank; i++) {
    int64_t d = s.dim[i], b = n->at.begin[i], en = n->at.end[i], st = n->at.step[i];
    if (d < 0)
      return attr_fail(e, "shape", "slice_back: negative dimension in %s",
                       shape_str(&s, want, sizeof want));
    if (st < 1 || b < 0 || en < b || en > d)
      return shape_fail(e, -1, "slice_back: axis %d: %lld:%lld:%lld is not a normalized slice "
                        "of %lld", i, (long long)b, (long long)en, (long long)st, (long long)d);
    if ((en - b + st - 1) / st != dy->dim[i])
      return shape_fail(e, 0, "slice_back: the gradient %s does not match slicing %s (axis %d)",
                        T(0), shape_str(&s, want, sizeof want), i);
  }
  n->shape = s;
  n->dtype = n->in[0]->dtype;
  return true;
}
