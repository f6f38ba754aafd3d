/*
 * batchsum.c: a matmul sums its products over batch axes itself, when a
 * sum over those axes is its only reader (fusion kind batchsum).
 *
 * The weight gradient of a dense layer on [N, T, D] is
 *
 *   sum(matmul(transpose(x), dy), axis=0, keepdims=true)    [N, D, O] -> [1, D, O]
 *
 * (autodiff's unbroadcast of the weight, ir/grad.c): N products stored,
 * then read back and added up.  At the transformer block of
 * docs/benchmarks.md (N = 32, D = 128, O = 512) the products are 8 MiB, and
 * the sum's kernel alone took 0.56 ms.  This pass rewrites the sum into one
 * matmul node with Attrs.bsum marking the summed batch axes: the GEMM
 * (codegen/llvm/cg_gemm.c, Gemm.sum_kb) keeps the output tile and adds each
 * batch element's product into it as it finishes, so the products never
 * reach memory.
 *
 * Same bits: each batch element's product is summed from 0 as the matmul
 * summed it, then the products are added from 0 in row-major order of the
 * summed axes, as the sum kernel adds them (ir/lower_reduce.c) and as
 * matmul_strides describes it to every evaluator (c[d] = 0).
 *
 * Only when the product's K fits in one GEMM panel (MATMUL_BSUM_K_MAX: a
 * batch element's sum must be complete before it is added), the sum keeps
 * its dims (keepdims, as autodiff writes it), and the matmul writes no
 * view of its result.  Run after pass_matmul_views (the transposes are
 * folded first, so the matmul reads x in place), when the kind is on.
 */
#include "passes.h"

/* The batch axes of m's product that sum s reduces, as bits; 0 if s reduces
 * anything else. */
static unsigned summed_axes(const Node *s, const Node *m) {
  int r = m->shape.rank;
  unsigned bits = 0;
  if (s->at.n_axes <= 0)
    return 0;
  for (int i = 0; i < s->at.n_axes; i++) {
    int d = s->at.axes[i] < 0 ? s->at.axes[i] + r : s->at.axes[i];
    if (d < 0 || d >= r - 2)
      return 0;
    bits |= 1u << d;
  }
  return bits;
}

/* Sum s of a matmul read by s alone: s becomes the matmul, summing. */
static bool fold_sum(const Graph *g, const Users *us, Node *s) {
  Node *m = s->in[0];
  if (m->op != OP_MATMUL || m->at.view & 4 || m->at.bsum || !s->at.keepdims ||
      s->dtype != DT_F32 || pass_is_step_result(g, m) || us->off[m->id + 1] - us->off[m->id] != 1)
    return false;
  unsigned bits = summed_axes(s, m);
  MatStrides ms;
  matmul_strides(m, &ms);
  if (!bits || ms.k > MATMUL_BSUM_K_MAX)
    return false;
  Attrs at = m->at;
  at.bsum = (uint8_t)bits;
  pass_become_matmul(g, s, m, &at);
  return true;
}

int pass_matmul_batch_sums(Graph *g) {
  Users us = graph_users(g);
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_SUM && g->nodes[i]->n_in == 1)
      n += fold_sum(g, &us, g->nodes[i]);
  return n;
}
