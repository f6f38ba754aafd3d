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

bool shape_matmul(Node *n, ShapeErr *e) {
  char tb0[160], tb1[160];
  const Shape *a = &n->in[0]->shape, *b = &n->in[1]->shape;
  if (!need(n, 0, DT_F32, e) || !need(n, 1, DT_F32, e))
    return false;
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
                      T(1), n->at.ta || n->at.tb ? " (with transposes)" : "", (long long)ka,
                      (long long)kb);
  Shape ba = shape_make(a->rank - 2, a->dim), bb = shape_make(b->rank - 2, b->dim), batch;
  if (!shape_broadcast(&ba, &bb, &batch))
    return shape_fail(e, 1, "matmul: batch dimensions of %s and %s do not broadcast", T(0),
                      T(1));
  if (batch.rank + 2 > MAX_RANK)
    return shape_fail(e, -1, "matmul: result has more than %d axes", MAX_RANK);
  batch.dim[batch.rank++] = m;
  batch.dim[batch.rank++] = nn;
  n->shape = batch;
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
