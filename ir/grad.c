/*
 * grad.c: the gradient rule of every differentiable op (the GRAD column of
 * ops.def), and the helpers the rules build with.
 *
 * A rule gets the forward node n and dy, the gradient of the loss with
 * respect to n's value, and adds each input's gradient with grad_acc.  It
 * builds the backward pass out of ordinary ops (mul, where, matmul,
 * conv_transpose2d, ...) and a few backward kernels (conv2d_back_w,
 * maxpool2d_back, ...), so fusion and memory planning see one graph.
 * grad_acc undoes broadcasting by summing, and skips inputs that need no
 * gradient; rules check grad_wanted first so they build nothing unneeded.
 * Where a rule can use the output y instead of the input x it does, so x
 * can be freed after the forward pass (relu, sigmoid, tanh, exp, ...).
 *
 * Conventions at ties and kinks: relu'(0) = 0; maximum/minimum send the
 * gradient to the first operand on ties; the max reduction shares it
 * equally among tied maxima; abs'(0) = 0; clamp passes it on [min, max].
 */
#include <string.h>

#include "ir.h"

/* --- helpers ---------------------------------------------------------------- */

Node *grad_node(GradCtx *cx, Op op, Node *const *in, int n_in, const Attrs *at) {
  Node *n = graph_add_checked(cx->g, op, in, n_in, at, cx->cur->loc);
  n->is_backward = true;
  n->grad_of = cx->cur;
  return n;
}

static bool wanted(const GradCtx *cx, const Node *x) { return cx->wants[x->id]; }

static Node *un(GradCtx *cx, Op op, Node *a) { return grad_node(cx, op, &a, 1, NULL); }

static Node *bin(GradCtx *cx, Op op, Node *a, Node *b) {
  Node *in[2] = {a, b};
  return grad_node(cx, op, in, 2, NULL);
}

static Node *k(GradCtx *cx, double v) {
  Node *c = graph_const(cx->g, DT_F32, v, cx->cur->loc);
  c->is_backward = true;
  c->grad_of = cx->cur;
  return c;
}

static Node *where(GradCtx *cx, Node *c, Node *a, Node *b) {
  Node *in[3] = {c, a, b};
  return grad_node(cx, OP_WHERE, in, 3, NULL);
}

/* x as shape s through op (reshape or broadcast_to); x itself if it is. */
static Node *to_shape(GradCtx *cx, Op op, Node *x, const Shape *s) {
  if (shape_eq(&x->shape, s))
    return x;
  Attrs at;
  attrs_default(op, &at);
  at.n_shape = s->rank;
  memcpy(at.shape, s->dim, sizeof at.shape);
  return grad_node(cx, op, &x, 1, &at);
}

static Node *reshape(GradCtx *cx, Node *x, const Shape *s) { return to_shape(cx, OP_RESHAPE, x, s); }

static Node *sum_axes(GradCtx *cx, Op op, Node *x, const int *axes, int n_axes, bool keep) {
  Attrs at;
  attrs_default(op, &at);
  at.n_axes = n_axes;
  memcpy(at.axes, axes, sizeof(int) * (size_t)n_axes);
  at.keepdims = keep;
  return grad_node(cx, op, &x, 1, &at);
}

Node *grad_reduce_to(GradCtx *cx, Node *x, const Shape *s) {
  if (shape_eq(&x->shape, s))
    return x;
  int axes[MAX_RANK], n = 0, lead = x->shape.rank - s->rank;
  ASSERT(lead >= 0);
  for (int i = 0; i < x->shape.rank; i++)
    if (i < lead || (s->dim[i - lead] == 1 && x->shape.dim[i] != 1))
      axes[n++] = i;
  Node *r = n ? sum_axes(cx, OP_SUM, x, axes, n, true) : x;
  return reshape(cx, r, s);
}

void grad_acc(GradCtx *cx, Node *x, Node *g) {
  if (!wanted(cx, x))
    return;
  g = grad_reduce_to(cx, g, &x->shape);
  int id = x->id;
  if (cx->n_contrib[id] == cx->cap_contrib[id]) {
    int cap = cx->cap_contrib[id] ? 2 * cx->cap_contrib[id] : 2;
    cx->contrib[id] = arena_realloc(cx->g->arena, cx->contrib[id],
                                    sizeof(Node *) * (size_t)cx->cap_contrib[id],
                                    sizeof(Node *) * (size_t)cap);
    cx->cap_contrib[id] = cap;
  }
  cx->contrib[id][cx->n_contrib[id]++] = g;
}

/* The reduced value of a reduction, reshaped to keep its reduced axes. */
static Node *keepdims_of(GradCtx *cx, Node *n, Node *v) {
  Shape s = n->in[0]->shape;
  for (int i = 0; i < n->at.n_axes; i++)
    s.dim[n->at.axes[i]] = 1;
  return reshape(cx, v, &s);
}

/* --- elementwise ------------------------------------------------------------- */

void grad_neg(GradCtx *cx, Node *n, Node *dy) { grad_acc(cx, n->in[0], un(cx, OP_NEG, dy)); }

void grad_abs(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *z = k(cx, 0);
  Node *neg = where(cx, bin(cx, OP_LESS, x, z), un(cx, OP_NEG, dy), z);
  grad_acc(cx, x, where(cx, bin(cx, OP_GREATER, x, z), dy, neg));
}

void grad_exp(GradCtx *cx, Node *n, Node *dy) { grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, n)); }

void grad_log(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], bin(cx, OP_DIV, dy, n->in[0]));
}

/* d sqrt(x) = 0.5 / sqrt(x) */
void grad_sqrt(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], bin(cx, OP_DIV, bin(cx, OP_MUL, dy, k(cx, 0.5)), n));
}

/* y = x^-1/2: dy/dx = -0.5 y^3 */
void grad_rsqrt(GradCtx *cx, Node *n, Node *dy) {
  Node *y3 = bin(cx, OP_MUL, n, bin(cx, OP_MUL, n, n));
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, bin(cx, OP_MUL, y3, k(cx, -0.5))));
}

void grad_relu(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], where(cx, bin(cx, OP_GREATER, n, k(cx, 0)), dy, k(cx, 0)));
}

void grad_leaky_relu(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0];
  Node *pos = bin(cx, OP_GREATER, x, k(cx, 0));
  grad_acc(cx, x, where(cx, pos, dy, bin(cx, OP_MUL, dy, k(cx, n->at.alpha))));
}

/* y = alpha (e^x - 1) for x <= 0, so dy/dx = y + alpha there */
void grad_elu(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0];
  Node *neg = bin(cx, OP_MUL, dy, bin(cx, OP_ADD, n, k(cx, n->at.alpha)));
  grad_acc(cx, x, where(cx, bin(cx, OP_GREATER, x, k(cx, 0)), dy, neg));
}

void grad_sigmoid(GradCtx *cx, Node *n, Node *dy) {
  Node *d = bin(cx, OP_MUL, n, bin(cx, OP_SUB, k(cx, 1), n));
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, d));
}

void grad_tanh(GradCtx *cx, Node *n, Node *dy) {
  Node *d = bin(cx, OP_SUB, k(cx, 1), bin(cx, OP_MUL, n, n));
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, d));
}

void grad_gelu(GradCtx *cx, Node *n, Node *dy) {
  Node *in[2] = {dy, n->in[0]};
  Attrs at;
  attrs_default(OP_GELU_BACK, &at);
  at.mode = n->at.mode;
  grad_acc(cx, n->in[0], grad_node(cx, OP_GELU_BACK, in, 2, &at));
}

/* d/dx log(1 + e^(b x)) / b = sigmoid(b x); 1 where the forward is linear
 * (b x > threshold) */
void grad_softplus(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0];
  Node *bx = n->at.alpha == 1.0 ? x : bin(cx, OP_MUL, x, k(cx, n->at.alpha));
  Node *curved = bin(cx, OP_MUL, dy, un(cx, OP_SIGMOID, bx));
  grad_acc(cx, x, where(cx, bin(cx, OP_GREATER, bx, k(cx, n->at.beta)), dy, curved));
}

void grad_sin(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, un(cx, OP_COS, n->in[0])));
}

void grad_cos(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, un(cx, OP_NEG, un(cx, OP_SIN, n->in[0]))));
}

void grad_clamp(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *z = k(cx, 0);
  Node *inside = where(cx, bin(cx, OP_GREATER, x, k(cx, n->at.beta)), z, dy);
  grad_acc(cx, x, where(cx, bin(cx, OP_LESS, x, k(cx, n->at.alpha)), z, inside));
}

void grad_add(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], dy);
  grad_acc(cx, n->in[1], dy);
}

void grad_sub(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], dy);
  if (wanted(cx, n->in[1]))
    grad_acc(cx, n->in[1], un(cx, OP_NEG, dy));
}

void grad_mul(GradCtx *cx, Node *n, Node *dy) {
  if (wanted(cx, n->in[0]))
    grad_acc(cx, n->in[0], bin(cx, OP_MUL, dy, n->in[1]));
  if (wanted(cx, n->in[1]))
    grad_acc(cx, n->in[1], bin(cx, OP_MUL, dy, n->in[0]));
}

/* y = a / b: da = dy / b, db = -dy a / b^2 = -dy y / b */
void grad_div(GradCtx *cx, Node *n, Node *dy) {
  Node *b = n->in[1];
  if (wanted(cx, n->in[0]))
    grad_acc(cx, n->in[0], bin(cx, OP_DIV, dy, b));
  if (wanted(cx, b))
    grad_acc(cx, b, un(cx, OP_NEG, bin(cx, OP_MUL, dy, bin(cx, OP_DIV, n, b))));
}

/* y = a^b: da = dy b a^(b-1), db = dy y log(a).  As PyTorch, both are 0
 * where they would be 0 * inf: da where b = 0, db where a = 0. */
void grad_pow(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1], *z = k(cx, 0);
  if (wanted(cx, a)) {
    Node *d = bin(cx, OP_MUL, b, bin(cx, OP_POW, a, bin(cx, OP_SUB, b, k(cx, 1))));
    grad_acc(cx, a, where(cx, bin(cx, OP_EQUAL, b, z), z, bin(cx, OP_MUL, dy, d)));
  }
  if (wanted(cx, b)) {
    Node *d = bin(cx, OP_MUL, dy, bin(cx, OP_MUL, n, un(cx, OP_LOG, a)));
    grad_acc(cx, b, where(cx, bin(cx, OP_EQUAL, a, z), z, d));
  }
}

/* maximum: the first operand wins ties (minimum likewise) */
void grad_minmax(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1], *z = k(cx, 0);
  Node *first = bin(cx, n->op == OP_MAXIMUM ? OP_GREATER_EQUAL : OP_LESS_EQUAL, a, b);
  if (wanted(cx, a))
    grad_acc(cx, a, where(cx, first, dy, z));
  if (wanted(cx, b))
    grad_acc(cx, b, where(cx, first, z, dy));
}

void grad_where(GradCtx *cx, Node *n, Node *dy) {
  Node *c = n->in[0], *z = k(cx, 0);
  if (wanted(cx, n->in[1]))
    grad_acc(cx, n->in[1], where(cx, c, dy, z));
  if (wanted(cx, n->in[2]))
    grad_acc(cx, n->in[2], where(cx, c, z, dy));
}

/* Only f32 -> f32 carries a gradient; i32 values never want one. */
void grad_cast(GradCtx *cx, Node *n, Node *dy) {
  if (n->in[0]->dtype == DT_F32 && n->dtype == DT_F32)
    grad_acc(cx, n->in[0], dy);
}

void grad_stop(GradCtx *cx, Node *n, Node *dy) {}

void grad_add_n(GradCtx *cx, Node *n, Node *dy) {
  for (int i = 0; i < n->n_in; i++)
    grad_acc(cx, n->in[i], dy);
}

/* --- reductions ------------------------------------------------------------- */

static Node *broadcast(GradCtx *cx, Node *x, const Shape *s) {
  return to_shape(cx, OP_BROADCAST_TO, x, s);
}

void grad_sum(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], broadcast(cx, keepdims_of(cx, n, dy), &n->in[0]->shape));
}

void grad_mean(GradCtx *cx, Node *n, Node *dy) {
  int64_t count = 1;
  for (int i = 0; i < n->at.n_axes; i++)
    count *= n->in[0]->shape.dim[n->at.axes[i]];
  Node *g = bin(cx, OP_MUL, keepdims_of(cx, n, dy), k(cx, count ? 1.0 / (double)count : 0));
  grad_acc(cx, n->in[0], broadcast(cx, g, &n->in[0]->shape));
}

/* Shared equally among the elements equal to the maximum. */
void grad_max(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0];
  Attrs to_f32;
  attrs_default(OP_CAST, &to_f32);
  to_f32.to = DT_F32;
  Node *eq = bin(cx, OP_EQUAL, x, keepdims_of(cx, n, n));
  Node *mask = grad_node(cx, OP_CAST, &eq, 1, &to_f32);
  Node *count = sum_axes(cx, OP_SUM, mask, n->at.axes, n->at.n_axes, true);
  Node *share = bin(cx, OP_DIV, keepdims_of(cx, n, dy), count);
  grad_acc(cx, x, bin(cx, OP_MUL, mask, share));
}

/* y = softmax(x): dx = y (dy - sum(dy y)) */
void grad_softmax(GradCtx *cx, Node *n, Node *dy) {
  int ax = n->at.axis;
  Node *s = sum_axes(cx, OP_SUM, bin(cx, OP_MUL, dy, n), &ax, 1, true);
  grad_acc(cx, n->in[0], bin(cx, OP_MUL, n, bin(cx, OP_SUB, dy, s)));
}

/* y = log_softmax(x): dx = dy - exp(y) sum(dy) */
void grad_log_softmax(GradCtx *cx, Node *n, Node *dy) {
  int ax = n->at.axis;
  Node *s = sum_axes(cx, OP_SUM, dy, &ax, 1, true);
  grad_acc(cx, n->in[0], bin(cx, OP_SUB, dy, bin(cx, OP_MUL, un(cx, OP_EXP, n), s)));
}

/* --- data movement --------------------------------------------------------------- */

void grad_reshape(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], reshape(cx, dy, &n->in[0]->shape));
}

void grad_transpose(GradCtx *cx, Node *n, Node *dy) {
  Attrs at;
  attrs_default(OP_TRANSPOSE, &at);
  at.n_axes = n->at.n_axes;
  for (int i = 0; i < n->at.n_axes; i++)
    at.axes[n->at.axes[i]] = i; /* the inverse permutation */
  grad_acc(cx, n->in[0], grad_node(cx, OP_TRANSPOSE, &dy, 1, &at));
}

void grad_broadcast_to(GradCtx *cx, Node *n, Node *dy) { grad_acc(cx, n->in[0], dy); }

void grad_slice(GradCtx *cx, Node *n, Node *dy) {
  Attrs at = n->at;
  const Shape *s = &n->in[0]->shape;
  at.n_shape = s->rank;
  memcpy(at.shape, s->dim, sizeof at.shape);
  grad_acc(cx, n->in[0], grad_node(cx, OP_SLICE_BACK, &dy, 1, &at));
}

void grad_concat(GradCtx *cx, Node *n, Node *dy) {
  int64_t off = 0;
  for (int i = 0; i < n->n_in; i++) {
    Node *x = n->in[i];
    int64_t len = x->shape.dim[n->at.axis];
    if (wanted(cx, x)) {
      Attrs at;
      attrs_default(OP_SLICE, &at);
      for (int d = 0; d < dy->shape.rank; d++)
        at.begin[d] = 0, at.end[d] = dy->shape.dim[d], at.step[d] = 1;
      at.begin[n->at.axis] = off;
      at.end[n->at.axis] = off + len;
      grad_acc(cx, x, grad_node(cx, OP_SLICE, &dy, 1, &at));
    }
    off += len;
  }
}

/* --- matmul and convolution ------------------------------------------------------ */

static Node *mm(GradCtx *cx, Node *a, Node *b, bool ta, bool tb) {
  Attrs at;
  attrs_default(OP_MATMUL, &at);
  at.ta = ta;
  at.tb = tb;
  Node *in[2] = {a, b};
  return grad_node(cx, OP_MATMUL, in, 2, &at);
}

/* y = op(a) op(b), op = optional transpose of the last two axes:
 *   plain:   da = dy b^T        db = a^T dy
 *   b^T:     da = dy b          db = dy^T a
 *   a^T:     da = b dy^T        db = a dy
 *   both:    da = b^T dy^T      db = dy^T a^T
 * Broadcast batch axes are summed away by grad_acc. */
void grad_matmul(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1];
  bool ta = n->at.ta, tb = n->at.tb;
  if (wanted(cx, a))
    grad_acc(cx, a, ta ? mm(cx, b, dy, tb, true) : mm(cx, dy, b, false, !tb));
  if (wanted(cx, b))
    grad_acc(cx, b, tb ? mm(cx, dy, a, true, ta) : mm(cx, a, dy, !ta, false));
}

static Attrs window_attrs(Op op, const Node *n) {
  Attrs at;
  attrs_default(op, &at);
  memcpy(at.stride, n->at.stride, sizeof at.stride);
  memcpy(at.pad, n->at.pad, sizeof at.pad);
  memcpy(at.dilation, n->at.dilation, sizeof at.dilation);
  memcpy(at.kernel, n->at.kernel, sizeof at.kernel);
  at.groups = n->at.groups;
  return at;
}

/* Cuts v down to `want` spatially where a strided shape rounding leaves it
 * larger (output_padding >= stride, allowed when dilation is larger). */
static Node *crop_to(GradCtx *cx, Node *v, const Shape *want) {
  if (shape_eq(&v->shape, want))
    return v;
  Attrs at;
  attrs_default(OP_SLICE, &at);
  for (int d = 0; d < v->shape.rank; d++)
    at.begin[d] = 0, at.end[d] = want->dim[d], at.step[d] = 1;
  return grad_node(cx, OP_SLICE, &v, 1, &at);
}

/* The data gradient of a convolution is the transposed convolution with
 * the same weight; output_padding restores the rows the floor division of
 * the forward shape dropped.  The weight gradient is conv2d_back_w. */
void grad_conv2d(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *w = n->in[1];
  if (wanted(cx, x)) {
    Attrs at = window_attrs(OP_CONV_TRANSPOSE2D, n);
    for (int i = 0; i < 2; i++) {
      int64_t span = (int64_t)n->at.dilation[i] * (n->at.kernel[i] - 1) + 1;
      at.out_pad[i] = (int)((x->shape.dim[2 + i] + 2 * n->at.pad[i] - span) % n->at.stride[i]);
    }
    Node *in[2] = {dy, w};
    grad_acc(cx, x, grad_node(cx, OP_CONV_TRANSPOSE2D, in, 2, &at));
  }
  if (wanted(cx, w)) {
    Attrs at = window_attrs(OP_CONV2D_BACK_W, n);
    Node *in[2] = {x, dy};
    grad_acc(cx, w, grad_node(cx, OP_CONV2D_BACK_W, in, 2, &at));
  }
}

/* Transposed convolution: the data gradient is the convolution with the
 * same weight; the weight gradient is conv2d_back_w with the roles of the
 * input and the output gradient exchanged. */
void grad_conv_transpose2d(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *w = n->in[1];
  if (wanted(cx, x)) {
    Attrs at = window_attrs(OP_CONV2D, n);
    Node *in[2] = {dy, w};
    grad_acc(cx, x, crop_to(cx, grad_node(cx, OP_CONV2D, in, 2, &at), &x->shape));
  }
  if (wanted(cx, w)) {
    Attrs at = window_attrs(OP_CONV2D_BACK_W, n);
    Node *in[2] = {dy, x};
    grad_acc(cx, w, grad_node(cx, OP_CONV2D_BACK_W, in, 2, &at));
  }
}

void grad_maxpool2d(GradCtx *cx, Node *n, Node *dy) {
  Node *in[2] = {dy, n->in[0]};
  grad_acc(cx, n->in[0], grad_node(cx, OP_MAXPOOL2D_BACK, in, 2, &n->at));
}

void grad_avgpool2d(GradCtx *cx, Node *n, Node *dy) {
  Attrs at = n->at;
  at.n_shape = 4;
  memcpy(at.shape, n->in[0]->shape.dim, sizeof at.shape);
  grad_acc(cx, n->in[0], grad_node(cx, OP_AVGPOOL2D_BACK, &dy, 1, &at));
}

void grad_upsample(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], grad_node(cx, OP_UPSAMPLE_BACK, &dy, 1, &n->at));
}

/* --- gathers, losses, randomness -------------------------------------------------- */

void grad_embedding(GradCtx *cx, Node *n, Node *dy) {
  Node *table = n->in[1];
  Attrs at;
  attrs_default(OP_EMBEDDING_BACK, &at);
  at.n_shape = 2;
  at.shape[0] = table->shape.dim[0];
  at.shape[1] = table->shape.dim[1];
  Node *in[2] = {n->in[0], dy};
  grad_acc(cx, table, grad_node(cx, OP_EMBEDDING_BACK, in, 2, &at));
}

/* (softmax(logits) - onehot(labels)) dy / count, one fused kernel */
void grad_cross_entropy(GradCtx *cx, Node *n, Node *dy) {
  Node *in[3] = {n->in[0], n->in[1], dy};
  grad_acc(cx, n->in[0], grad_node(cx, OP_CROSS_ENTROPY_BACK, in, 3, NULL));
}

/* The same seed and step give the same mask, so dropout of dy is exact. */
void grad_dropout(GradCtx *cx, Node *n, Node *dy) {
  grad_acc(cx, n->in[0], grad_node(cx, OP_DROPOUT, &dy, 1, &n->at));
}
