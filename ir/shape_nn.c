/*
 * shape_nn.c: shape rules for the networks' ops: matmul, convolutions,
 * pooling, upsampling, embedding lookup and the cross-entropy loss.
 *
 * Layouts follow PyTorch so checkpoints map without transposes: images are
 * NCHW, conv2d weights [C_out, C_in/groups, kh, kw], conv_transpose2d
 * weights [C_in, C_out/groups, kh, kw].  Output sizes use floor division:
 *   conv/pool:  out = (in + 2 pad - dilation (k - 1) - 1) / stride + 1
 *   transposed: out = (in - 1) stride - 2 pad + dilation (k - 1) + output_padding + 1
 */
#include <string.h>

#include "ir.h"

#define T(i) node_type_str(n->in[i], tb##i, sizeof tb##i)

static bool need(Node *n, int i, DType dt, ShapeErr *e) {
  char buf[160];
  if (n->in[i]->dtype == dt)
    return true;
  return shape_fail(e, i, "%s expects %s for input %d, got %s", op_name(n->op), dtype_name(dt),
                    i + 1, node_type_str(n->in[i], buf, sizeof buf));
}

static bool need_image(Node *n, int i, const char *what, ShapeErr *e) {
  char tb0[160];
  if (!need(n, i, DT_F32, e))
    return false;
  if (n->in[i]->shape.rank != 4) {
    node_type_str(n->in[i], tb0, sizeof tb0);
    return shape_fail(e, i, "%s expects a 4-D %s, got %s", op_name(n->op), what, tb0);
  }
  return true;
}

/* Whether perm[i] of matmul n is a permutation of 0..rank. */
static bool perm_ok(const Node *n, int i, int rank) {
  bool seen[MAX_RANK] = {0};
  for (int d = 0; d < rank; d++) {
    int a = n->at.perm[i][d];
    if (a < 0 || a >= rank || seen[a])
      return false;
    seen[a] = true;
  }
  return true;
}

Shape matmul_view_shape(const Node *n, int i, const Shape *x) {
  Shape v = *x;
  if (n->at.view & (1 << i))
    for (int d = 0; d < x->rank; d++)
      v.dim[d] = x->dim[n->at.perm[i][d]];
  return v;
}

/* Batch axis d of a product of rank r: the operands' dim there, aligned
 * at the right (1 where an operand broadcasts). */
static int64_t batch_dim(const Node *n, int d, int r) {
  int64_t dim = 1;
  for (int i = 0; i < 2; i++) {
    Shape v = matmul_view_shape(n, i, &n->in[i]->shape);
    int xd = d - (r - v.rank);
    if (xd >= 0 && v.dim[xd] != 1)
      dim = v.dim[xd];
  }
  return dim;
}

/* The product's shape, [.., M, N], before any view of the result or sum
 * over its batch axes. */
static Shape product_shape(const Node *n) {
  Shape p = n->shape;
  if (n->at.view & 4)
    for (int d = 0; d < p.rank; d++)
      p.dim[n->at.perm[2][d]] = n->shape.dim[d];
  for (int d = 0; d < p.rank - 2; d++)
    if (n->at.bsum & (1 << d))
      p.dim[d] = batch_dim(n, d, p.rank);
  return p;
}

static void contiguous(const Shape *s, int64_t *st) {
  int64_t acc = 1;
  for (int d = s->rank - 1; d >= 0; d--)
    st[d] = acc, acc *= s->dim[d];
}

void matmul_strides(const Node *n, MatStrides *s) {
  Shape p = product_shape(n);
  int br = p.rank - 2;
  memset(s, 0, sizeof *s);
  s->br = br;
  for (int d = 0; d < p.rank; d++)
    s->dim[d] = p.dim[d];
  for (int i = 0; i < 2; i++) {
    const Shape *x = &n->in[i]->shape;
    Shape v = matmul_view_shape(n, i, x);
    int64_t cs[MAX_RANK], os[MAX_RANK], *dst = i == 0 ? s->a : s->b;
    int xr = x->rank, xb = xr - 2;
    contiguous(x, cs);
    for (int d = 0; d < xr; d++)
      os[d] = n->at.view & (1 << i) ? cs[n->at.perm[i][d]] : cs[d];
    bool t = i == 0 ? n->at.ta : n->at.tb;
    dst[br] = t ? os[xr - 1] : os[xr - 2]; /* a: along i; b: along p */
    dst[br + 1] = t ? os[xr - 2] : os[xr - 1]; /* a: along p; b: along j */
    if (i == 0)
      s->k = t ? v.dim[xr - 2] : v.dim[xr - 1];
    for (int d = br - 1; d >= 0; d--) { /* batch axes aligned at the right */
      int xd = d - (br - xb);
      dst[d] = xd >= 0 && v.dim[xd] != 1 ? os[xd] : 0;
    }
  }
  int64_t ocs[MAX_RANK];
  contiguous(&n->shape, ocs);
  for (int d = 0; d < p.rank; d++)
    s->c[n->at.view & 4 ? n->at.perm[2][d] : d] = ocs[d];
  for (int d = 0; d < br; d++) /* summed: every batch element adds into the same matrix */
    if (n->at.bsum & (1 << d))
      s->c[d] = 0;
}

bool shape_matmul(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need(n, 0, DT_F32, e) || !need(n, 1, DT_F32, e))
    return false;
  for (int i = 0; i < 2; i++)
    if ((n->at.view & (1 << i)) && !perm_ok(n, i, n->in[i]->shape.rank))
      return shape_fail(e, i, "matmul: the view of input %d is not a permutation of its axes",
                        i + 1);
  Shape av = matmul_view_shape(n, 0, &n->in[0]->shape);
  Shape bv = matmul_view_shape(n, 1, &n->in[1]->shape);
  const Shape *a = &av, *b = &bv;
  if (a->rank < 2)
    return shape_fail(e, 0, "matmul expects at least 2 axes [.., M, K] on the left, got %s",
                      T(0));
  if (b->rank < 2)
    return shape_fail(e, 1, "matmul expects at least 2 axes [.., K, N] on the right, got %s",
                      T(1));
  int64_t m = a->dim[a->rank - (n->at.ta ? 1 : 2)], ka = a->dim[a->rank - (n->at.ta ? 2 : 1)];
  int64_t kb = b->dim[b->rank - (n->at.tb ? 1 : 2)], nn = b->dim[b->rank - (n->at.tb ? 2 : 1)];
  if (ka != kb)
    return shape_fail(e, 1, "matmul: inner dimensions differ: %s @ %s%s (%lld vs %lld)", T(0),
                      T(1), n->at.ta || n->at.tb || n->at.view ? " (with transposes)" : "",
                      (long long)ka, (long long)kb);
  Shape ba = shape_make(a->rank - 2, a->dim), bb = shape_make(b->rank - 2, b->dim), batch;
  if (!shape_broadcast(&ba, &bb, &batch))
    return shape_fail(e, 1, "matmul: batch dimensions of %s and %s do not broadcast", T(0),
                      T(1));
  if (batch.rank + 2 > MAX_RANK)
    return shape_fail(e, -1, "matmul: result has more than %d axes", MAX_RANK);
  batch.dim[batch.rank++] = m;
  batch.dim[batch.rank++] = nn;
  if ((n->at.view & 4) && !perm_ok(n, 2, batch.rank))
    return shape_fail(e, -1, "matmul: the view of the result is not a permutation of its axes");
  if (n->at.bsum && ((n->at.view & 4) || n->at.bsum >> (batch.rank - 2)))
    return shape_fail(e, -1, "matmul: the summed axes are not batch axes of the product");
  for (int d = 0; d < batch.rank - 2; d++)
    if (n->at.bsum & (1 << d))
      batch.dim[d] = 1; /* passes/batchsum.c: kept, as keepdims */
  n->shape = matmul_view_shape(n, 2, &batch);
  n->dtype = DT_F32;
  return true;
}

/* Validates stride >= 1, pad >= 0, dilation >= 1 (both axes). */
static bool window_attrs(Node *n, ShapeErr *e) {
  const char *name = op_name(n->op);
  for (int i = 0; i < 2; i++) {
    if (n->at.stride[i] < 1)
      return attr_fail(e, "stride", "%s: stride must be at least 1, got %d", name, n->at.stride[i]);
    if (n->at.pad[i] < 0)
      return attr_fail(e, "pad", "%s: pad must be non-negative, got %d", name, n->at.pad[i]);
    if (n->at.dilation[i] < 1)
      return attr_fail(e, "dilation", "%s: dilation must be at least 1, got %d", name,
                        n->at.dilation[i]);
    if (n->at.pad[i] > 100000 || n->at.stride[i] > 100000 || n->at.dilation[i] > 100000)
      return attr_fail(e, "stride", "%s: stride, pad and dilation must be at most 100000", name);
  }
  return true;
}

/* Output extent of a window op along one axis, or < 1 if it does not fit. */
static int64_t window_out(int64_t in, int64_t k, int pad, int stride, int dil) {
  int64_t span = (int64_t)dil * (k - 1) + 1;
  if (in + 2 * (int64_t)pad < span)
    return 0;
  return (in + 2 * (int64_t)pad - span) / stride + 1;
}

static bool groups_ok(Node *n, int64_t cin, int64_t cout, ShapeErr *e) {
  int g = n->at.groups;
  if (g < 1)
    return attr_fail(e, "groups", "%s: groups must be at least 1, got %d", op_name(n->op), g);
  if (cin % g || cout % g)
    return attr_fail(e, "groups", "%s: groups=%d must divide both %lld input and %lld output channels",
                      op_name(n->op), g, (long long)cin, (long long)cout);
  return true;
}

bool shape_conv2d(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need_image(n, 0, "input [N, C, H, W]", e) ||
      !need_image(n, 1, "weight [C_out, C_in/groups, kh, kw]", e) || !window_attrs(n, e))
    return false;
  const Shape *x = &n->in[0]->shape, *w = &n->in[1]->shape;
  if (!groups_ok(n, x->dim[1], w->dim[0], e))
    return false;
  if (w->dim[1] * n->at.groups != x->dim[1])
    return shape_fail(e, 1, "conv2d: weight %s expects %lld input channels (groups=%d), "
                      "but the input %s has %lld", T(1), (long long)(w->dim[1] * n->at.groups),
                      n->at.groups, T(0), (long long)x->dim[1]);
  Shape s = {4, {x->dim[0], w->dim[0], 0, 0}};
  for (int i = 0; i < 2; i++) {
    s.dim[2 + i] = window_out(x->dim[2 + i], w->dim[2 + i], n->at.pad[i], n->at.stride[i],
                              n->at.dilation[i]);
    if (s.dim[2 + i] < 1)
      return shape_fail(e, 0, "conv2d: the %lldx%lld kernel (dilation %d, pad %d) does not fit "
                        "in the %s input", (long long)w->dim[2], (long long)w->dim[3],
                        n->at.dilation[i], n->at.pad[i], T(0));
  }
  n->at.kernel[0] = (int)w->dim[2];
  n->at.kernel[1] = (int)w->dim[3];
  n->shape = s;
  n->dtype = DT_F32;
  return true;
}

bool shape_conv_transpose2d(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need_image(n, 0, "input [N, C, H, W]", e) ||
      !need_image(n, 1, "weight [C_in, C_out/groups, kh, kw]", e) || !window_attrs(n, e))
    return false;
  const Shape *x = &n->in[0]->shape, *w = &n->in[1]->shape;
  if (w->dim[0] != x->dim[1])
    return shape_fail(e, 1, "conv_transpose2d: weight %s expects %lld input channels, but the "
                      "input %s has %lld", T(1), (long long)w->dim[0], T(0),
                      (long long)x->dim[1]);
  if (!groups_ok(n, x->dim[1], w->dim[1] * n->at.groups, e))
    return false;
  Shape s = {4, {x->dim[0], w->dim[1] * n->at.groups, 0, 0}};
  for (int i = 0; i < 2; i++) {
    int op = n->at.out_pad[i];
    if (op < 0 || (op >= n->at.stride[i] && op >= n->at.dilation[i]))
      return attr_fail(e, "output_padding", "conv_transpose2d: output_padding %d must be smaller than "
                        "stride %d or dilation %d", op, n->at.stride[i], n->at.dilation[i]);
    s.dim[2 + i] = (x->dim[2 + i] - 1) * n->at.stride[i] - 2 * (int64_t)n->at.pad[i] +
                   (int64_t)n->at.dilation[i] * (w->dim[2 + i] - 1) + op + 1;
    if (s.dim[2 + i] < 1)
      return attr_fail(e, "pad", "conv_transpose2d: padding %d leaves no output from %s",
                        n->at.pad[i], T(0));
  }
  n->at.kernel[0] = (int)w->dim[2];
  n->at.kernel[1] = (int)w->dim[3];
  n->shape = s;
  n->dtype = DT_F32;
  return true;
}

bool shape_pool2d(Node *n, ShapeErr *e) {
  char tb0[160];
  const char *name = op_name(n->op);
  if (!need_image(n, 0, "input [N, C, H, W]", e))
    return false;
  for (int i = 0; i < 2; i++) {
    if (n->at.kernel[i] < 1)
      return attr_fail(e, "kernel", "%s: kernel must be at least 1, got %d", name, n->at.kernel[i]);
    if (n->at.stride[i] == 0)
      n->at.stride[i] = n->at.kernel[i];
    if (n->at.dilation[i] == 0)
      n->at.dilation[i] = 1;
  }
  if (!window_attrs(n, e))
    return false;
  const Shape *x = &n->in[0]->shape;
  Shape s = {4, {x->dim[0], x->dim[1], 0, 0}};
  for (int i = 0; i < 2; i++) {
    if (2 * n->at.pad[i] > n->at.kernel[i])
      return attr_fail(e, "pad", "%s: pad %d must be at most half the kernel %d", name,
                        n->at.pad[i], n->at.kernel[i]);
    s.dim[2 + i] = window_out(x->dim[2 + i], n->at.kernel[i], n->at.pad[i], n->at.stride[i],
                              n->at.dilation[i]);
    if (s.dim[2 + i] < 1)
      return shape_fail(e, 0, "%s: the %dx%d window does not fit in the %s input", name,
                        n->at.kernel[0], n->at.kernel[1], T(0));
  }
  n->shape = s;
  n->dtype = DT_F32;
  return true;
}

bool shape_upsample(Node *n, ShapeErr *e) {
  if (!need_image(n, 0, "input [N, C, H, W]", e))
    return false;
  if (n->at.scale < 1 || n->at.scale > 1024)
    return attr_fail(e, "scale", "upsample: scale must be an integer in 1..1024, got %d",
                      n->at.scale);
  const Shape *x = &n->in[0]->shape;
  n->shape = (Shape){4, {x->dim[0], x->dim[1], x->dim[2] * n->at.scale,
                         x->dim[3] * n->at.scale}};
  n->dtype = DT_F32;
  return true;
}

bool shape_embedding(Node *n, ShapeErr *e) {
  char tb1[160];
  if (!need(n, 0, DT_I32, e) || !need(n, 1, DT_F32, e))
    return false;
  const Shape *ids = &n->in[0]->shape, *tab = &n->in[1]->shape;
  if (tab->rank != 2)
    return shape_fail(e, 1, "embedding expects a 2-D table [V, D], got %s", T(1));
  if (ids->rank + 1 > MAX_RANK)
    return shape_fail(e, 0, "embedding: result has more than %d axes", MAX_RANK);
  n->shape = *ids;
  n->shape.dim[n->shape.rank++] = tab->dim[1];
  n->dtype = DT_F32;
  return true;
}

bool shape_cross_entropy(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need(n, 0, DT_F32, e) || !need(n, 1, DT_I32, e))
    return false;
  const Shape *lg = &n->in[0]->shape, *lb = &n->in[1]->shape;
  if (lg->rank < 1 || lg->dim[lg->rank - 1] < 1)
    return shape_fail(e, 0, "cross_entropy expects logits [..., C] with C >= 1, got %s", T(0));
  Shape want = shape_make(lg->rank - 1, lg->dim);
  if (!shape_eq(&want, lb)) {
    char w[160];
    return shape_fail(e, 1, "cross_entropy: labels must be i32%s to match logits %s, got %s",
                      shape_str(&want, w, sizeof w), T(0), T(1));
  }
  if (shape_numel(lb) == 0)
    return shape_fail(e, 1, "cross_entropy: the batch is empty");
  n->shape = shape_scalar();
  n->dtype = DT_F32;
  return true;
}

/* --- backward-only ops (made by autodiff, ir/grad.c) ------------------------ */

/* conv2d_back_w(x [N, C, H, W], dy [N, O, Ho, Wo]) -> dW [O, C/groups, kh, kw]
 * with the forward convolution's stride, pad, dilation, groups and kernel.
 * The forward's window count from H must be at least Ho (W likewise): it
 * is exactly Ho for conv2d's own weight gradient, and can exceed it when
 * grad.c exchanges the roles for conv_transpose2d (x = the output
 * gradient, dy = the input), whose output_padding may add a row. */
bool shape_conv2d_back_w(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need_image(n, 0, "input [N, C, H, W]", e) ||
      !need_image(n, 1, "output gradient [N, O, Ho, Wo]", e) || !window_attrs(n, e))
    return false;
  const Shape *x = &n->in[0]->shape, *dy = &n->in[1]->shape;
  for (int i = 0; i < 2; i++)
    if (n->at.kernel[i] < 1 || n->at.kernel[i] > 100000)
      return attr_fail(e, "kernel", "conv2d_back_w: kernel must be in 1..100000, got %d",
                       n->at.kernel[i]);
  if (!groups_ok(n, x->dim[1], dy->dim[1], e))
    return false;
  if (x->dim[0] != dy->dim[0])
    return shape_fail(e, 1, "conv2d_back_w: the gradient %s and the input %s differ in batch",
                      T(1), T(0));
  for (int i = 0; i < 2; i++) {
    int64_t cnt = window_out(x->dim[2 + i], n->at.kernel[i], n->at.pad[i], n->at.stride[i],
                             n->at.dilation[i]);
    if (dy->dim[2 + i] < 1 || cnt < dy->dim[2 + i])
      return shape_fail(e, 1, "conv2d_back_w: the gradient %s does not fit the %dx%d windows "
                        "of the input %s (%lld along axis %d)", T(1), n->at.kernel[0],
                        n->at.kernel[1], T(0), (long long)cnt, 2 + i);
  }
  n->shape = (Shape){4, {dy->dim[1], x->dim[1] / n->at.groups, n->at.kernel[0],
                         n->at.kernel[1]}};
  n->dtype = DT_F32;
  return true;
}

/* Runs shape_pool2d as if n pooled a tensor of type (DT_F32, *x): the
 * forward's own checks and output size, and its normalization of n->at
 * (stride 0 -> the kernel size, dilation 0 -> 1).  *out gets the pooled
 * shape; an error about the pooled tensor is reported against x_arg. */
static bool pool_of(Node *n, const Shape *x, int x_arg, Shape *out, ShapeErr *e) {
  Node fx = {0}, *fin = &fx, tmp = *n;
  fx.dtype = DT_F32;
  fx.shape = *x;
  tmp.in = &fin;
  tmp.n_in = 1;
  if (!shape_pool2d(&tmp, e)) {
    if (e->arg == 0)
      e->arg = x_arg;
    return false;
  }
  n->at = tmp.at;
  *out = tmp.shape;
  return true;
}

/* maxpool2d_back(dy, x) -> x's shape; dy must be the pool of x. */
bool shape_maxpool2d_back(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  Shape pooled;
  if (!need_image(n, 0, "gradient [N, C, Ho, Wo]", e) ||
      !pool_of(n, &n->in[1]->shape, 1, &pooled, e))
    return false;
  if (!shape_eq(&pooled, &n->in[0]->shape))
    return shape_fail(e, 0, "maxpool2d_back: the gradient %s is not the shape of pooling %s",
                      T(0), T(1));
  n->shape = n->in[1]->shape;
  n->dtype = DT_F32;
  return true;
}

/* avgpool2d_back(dy) -> the forward input's shape (attribute `shape`); dy
 * must be the pool of that shape. */
bool shape_avgpool2d_back(Node *n, ShapeErr *e) {
  char tb0[160], want[160];
  if (!need_image(n, 0, "gradient [N, C, Ho, Wo]", e))
    return false;
  Shape x = shape_make(n->at.n_shape == 4 ? 4 : 0, n->at.shape), pooled;
  if (n->at.n_shape != 4 || x.dim[0] < 0 || x.dim[1] < 0 || x.dim[2] < 1 || x.dim[3] < 1)
    return attr_fail(e, "shape", "avgpool2d_back: shape must be the forward input's "
                     "[N, C, H, W]");
  if (!pool_of(n, &x, -1, &pooled, e)) {
    if (e->arg == -1 && !e->attr)
      e->attr = "shape";
    return false;
  }
  if (!shape_eq(&pooled, &n->in[0]->shape))
    return shape_fail(e, 0, "avgpool2d_back: the gradient %s is not the shape of pooling %s",
                      T(0), shape_str(&x, want, sizeof want));
  n->shape = x;
  n->dtype = DT_F32;
  return true;
}

/* upsample_back(dy [N, C, H*s, W*s]) -> [N, C, H, W]. */
bool shape_upsample_back(Node *n, ShapeErr *e) {
  char tb0[160];
  if (!need_image(n, 0, "gradient [N, C, H*scale, W*scale]", e))
    return false;
  int s = n->at.scale;
  if (s < 1 || s > 1024)
    return attr_fail(e, "scale", "upsample_back: scale must be an integer in 1..1024, got %d", s);
  const Shape *dy = &n->in[0]->shape;
  if (dy->dim[2] % s || dy->dim[3] % s)
    return shape_fail(e, 0, "upsample_back: the gradient %s is not %d times an image", T(0), s);
  n->shape = (Shape){4, {dy->dim[0], dy->dim[1], dy->dim[2] / s, dy->dim[3] / s}};
  n->dtype = DT_F32;
  return true;
}

/* embedding_back(ids i32[...], dy f32[..., D]) -> the table's shape [V, D]
 * (attribute `shape`). */
bool shape_embedding_back(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  if (!need(n, 0, DT_I32, e) || !need(n, 1, DT_F32, e))
    return false;
  if (n->at.n_shape != 2 || n->at.shape[0] < 0 || n->at.shape[1] < 0)
    return attr_fail(e, "shape", "embedding_back: shape must be the table's [V, D]");
  const Shape *ids = &n->in[0]->shape, *dy = &n->in[1]->shape;
  Shape want = *ids;
  if (want.rank < MAX_RANK)
    want.dim[want.rank++] = n->at.shape[1];
  if (!shape_eq(&want, dy))
    return shape_fail(e, 1, "embedding_back: the gradient %s does not match ids %s and "
                      "D = %lld", T(1), T(0), (long long)n->at.shape[1]);
  n->shape = shape_make(2, n->at.shape);
  n->dtype = DT_F32;
  return true;
}

/* cross_entropy_back(logits, labels, dy f32[]) -> the logits' shape; logits
 * and labels as for cross_entropy. */
bool shape_cross_entropy_back(Node *n, ShapeErr *e) {
  char tb2[160];
  if (!shape_cross_entropy(n, e))
    return false;
  if (n->in[2]->dtype != DT_F32 || n->in[2]->shape.rank != 0)
    return shape_fail(e, 2, "cross_entropy_back: the loss gradient must be f32[], got %s",
                      T(2));
  n->shape = n->in[0]->shape;
  n->dtype = DT_F32;
  return true;
}
