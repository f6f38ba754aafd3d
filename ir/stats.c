/*
 * stats.c: FLOP and byte counts of nodes, for `kiln show`, the model
 * summary and the backends' cost models.  ops.def names one FLOP function
 * per op.
 *
 * Conventions (one place, so every report agrees):
 *  - a multiply-add counts as 2 FLOPs (so FLOPs = 2 * MACs);
 *  - elementwise ops: 1 per output element, transcendental ones 4;
 *  - reductions: 1 per input element; softmax / log_softmax ~5 per element
 *    (max, subtract, exp, sum, divide or log);
 *  - matmul: 2 * M * N * K * batch;
 *  - conv2d: 2 * N * O * Ho * Wo * (C / groups) * kh * kw, padding taps
 *    included (what a dense implementation executes);
 *  - conv_transpose2d: 2 * N * C_in * H * W * (C_out / groups) * kh * kw,
 *    one multiply-add per input element, kernel tap and output channel;
 *  - pooling: kh * kw per output element; upsample: 1 per output element
 *    (nearest) or 4 (bilinear); cross_entropy: ~4 per logit;
 *  - data movement, leaves and gathers: 0.
 * Backward kernels count what their forward counts, from the same sizes:
 *  - add_n: one add per element per input after the first;
 *  - conv2d_back_w: 2 * numel(dy) * (C / groups) * kh * kw, the forward
 *    conv2d's count (and, with the roles exchanged, conv_transpose2d's);
 *  - pooling backward: kh * kw per element of the pooled gradient;
 *  - upsample_back: 1 or 4 per element of the larger (upsampled) side;
 *  - cross_entropy_back: ~4 per logit, like the forward.
 * Bytes are the dense sizes of tensors: node_bytes the output, and
 * node_traffic the output plus every input (each read once).
 */
#include "ir.h"

static double numel_d(const Shape *s) { return (double)shape_numel(s); }

double flops_zero(const Node *n) { return 0.0; }
double flops_eltwise(const Node *n) { return numel_d(&n->shape); }
double flops_eltwise4(const Node *n) { return 4.0 * numel_d(&n->shape); }
double flops_reduce(const Node *n) { return numel_d(&n->in[0]->shape); }
double flops_softmax(const Node *n) { return 5.0 * numel_d(&n->shape); }

double flops_matmul(const Node *n) {
  MatStrides ms; /* views and summed batch axes included */
  matmul_strides(n, &ms);
  double p = 1.0;
  for (int d = 0; d < ms.br + 2; d++)
    p *= (double)ms.dim[d];
  return 2.0 * p * (double)ms.k; /* the product's batch * M * N, times K */
}

double flops_conv2d(const Node *n) {
  const Shape *w = &n->in[1]->shape; /* [O, C/g, kh, kw] */
  return 2.0 * numel_d(&n->shape) * (double)(w->dim[1] * w->dim[2] * w->dim[3]);
}

double flops_conv_transpose2d(const Node *n) {
  const Shape *w = &n->in[1]->shape; /* [C_in, C_out/g, kh, kw] */
  return 2.0 * numel_d(&n->in[0]->shape) * (double)(w->dim[1] * w->dim[2] * w->dim[3]);
}

double flops_pool2d(const Node *n) {
  return numel_d(&n->shape) * n->at.kernel[0] * n->at.kernel[1];
}

/* Per element of the upsampled side: the output of upsample, the input
 * (the gradient) of upsample_back. */
double flops_upsample(const Node *n) {
  const Shape *big = n->op == OP_UPSAMPLE_BACK ? &n->in[0]->shape : &n->shape;
  return (n->at.mode == 1 ? 4.0 : 1.0) * numel_d(big);
}

double flops_cross_entropy(const Node *n) { return 4.0 * numel_d(&n->in[0]->shape); }

double flops_add_n(const Node *n) { return (double)(n->n_in - 1) * numel_d(&n->shape); }

/* out = dW [O, C/g, kh, kw]; in[1] = dy [N, O, Ho, Wo]. */
double flops_conv2d_back_w(const Node *n) {
  const Shape *w = &n->shape;
  return 2.0 * numel_d(&n->in[1]->shape) * (double)(w->dim[1] * w->dim[2] * w->dim[3]);
}

/* in[0] is the pooled gradient for both maxpool2d_back and avgpool2d_back. */
double flops_pool2d_back(const Node *n) {
  return numel_d(&n->in[0]->shape) * n->at.kernel[0] * n->at.kernel[1];
}

double node_flops(const Node *n) { return op_info[n->op].flops(n); }

int64_t node_bytes(const Node *n) {
  return shape_numel(&n->shape) * (int64_t)rt_dtype_size(n->dtype);
}

int64_t node_traffic(const Node *n) {
  int64_t total = node_bytes(n);
  for (int i = 0; i < n->n_in; i++)
    total += node_bytes(n->in[i]);
  return total;
}

/* One add per gradient element scattered (dy's size, not the table's). */
double flops_embedding_back(const Node *n) { return numel_d(&n->in[1]->shape); }
