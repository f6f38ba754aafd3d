/*
 * view.c: a matmul reads a transposed operand in place, and writes a
 * transposed result where its transpose would put it (fusion kind view).
 *
 * Multi-head attention splits heads with transpose(reshape(q, [N, T, H,
 * d]), [0, 2, 1, 3]) and joins them with the inverse transpose; its
 * gradient has the same four transposes backwards.  Each was a kernel of
 * its own copying the whole tensor, only for a batched matmul to read it:
 * 16 kernels in the transformer's training step.  But the GEMM reads A in
 * place at any strides, gathers B into its panel, and writes C's rows
 * wherever they go (codegen/llvm/cg_gemm.c), so a transpose that keeps a
 * matrix axis contiguous costs it nothing.  This pass rewrites
 *
 *   matmul(transpose(x, p), b)     into  matmul(x, b)  viewing a through p
 *   (and the same for b);
 *   transpose(matmul(a, b), p)     into  one matmul writing through p,
 *                                  when the transpose is its only reader
 *                                  and p keeps the last axis last;
 *
 * Attrs.view and Attrs.perm record it, and ir/shape_nn.c's matmul_strides
 * is the one description every evaluator reads.  A transpose that only
 * swaps the last two axes becomes ta / tb instead.  A transpose left with
 * no reader is no longer computed (nothing live reads it); one other
 * kernels read stays.  The sum order of every output is the matmul's own,
 * so the results are the same bits.
 *
 * An operand is viewed only when its source's last (contiguous) axis is
 * one of its last two, so the GEMM copies rows or gathers 16 columns at a
 * time instead of single elements.  Run on a graph after autodiff (the
 * gradient rules know nothing of views), before pass_step_transposes and
 * pass_prepack (which make transposes of weights for the GEMM: those are
 * not undone).  Not for the CUDA backend by default (cli.c): its GEMM
 * does not read views, which fall back to the loop nest.
 */
#include "passes.h"

/* The transpose's perm, normalized by its shape rule. */
static const int *perm_of(const Node *t) { return t->at.axes; }

/* Whether p only swaps the last two of r axes. */
static bool last_two_swap(const int *p, int r) {
  for (int d = 0; d < r - 2; d++)
    if (p[d] != d)
      return false;
  return p[r - 2] == r - 1 && p[r - 1] == r - 2;
}

/* Operand slot i of matmul n reads transpose t: view its input instead. */
static bool view_operand(Node *n, int i) {
  Node *t = n->in[i];
  int r = t->shape.rank;
  if (t->op != OP_TRANSPOSE || (n->at.view & (1 << i)) || r < 2)
    return false;
  const int *p = perm_of(t);
  bool *tr = i == 0 ? &n->at.ta : &n->at.tb;
  if (last_two_swap(p, r)) {
    *tr = !*tr;
  } else {
    if (p[r - 1] != r - 1 && p[r - 2] != r - 1)
      return false; /* the contiguous axis would be a batch axis */
    for (int d = 0; d < r; d++)
      n->at.perm[i][d] = (int8_t)p[d];
    n->at.view |= (uint8_t)(1 << i);
  }
  n->in[i] = t->in[0];
  return true;
}

bool pass_is_step_result(const Graph *g, const Node *n) {
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i].node == n)
      return true;
  for (int i = 0; i < g->n_updates; i++)
    if (g->updates[i].value == n)
      return true;
  return n->is_output || (g->minimize && graph_find_value(g, g->minimize) == n);
}

/* Transpose t whose only reader-to-be is matmul m: t becomes the matmul,
 * writing through t's perm; m is left unread. */
static bool view_result(const Graph *g, const Users *us, Node *t) {
  Node *m = t->in[0];
  int r = t->shape.rank;
  if (m->op != OP_MATMUL || (m->at.view & 4) || pass_is_step_result(g, m) ||
      us->off[m->id + 1] - us->off[m->id] != 1 || perm_of(t)[r - 1] != r - 1)
    return false;
  Attrs at = m->at;
  for (int d = 0; d < r; d++)
    at.perm[2][d] = (int8_t)perm_of(t)[d];
  at.view |= 4;
  pass_become_matmul(g, t, m, &at);
  return true;
}

void pass_become_matmul(const Graph *g, Node *n, const Node *m, const Attrs *at) {
  n->op = OP_MATMUL;
  n->n_in = 2;
  n->in = arena_alloc(g->arena, 2 * sizeof(Node *));
  n->in[0] = m->in[0];
  n->in[1] = m->in[1];
  n->at = *at;
}

int pass_matmul_views(Graph *g) {
  int n_views = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (n->op == OP_MATMUL)
      for (int s = 0; s < 2; s++)
        n_views += view_operand(n, s);
  }
  Users us = graph_users(g); /* after the operand views: a viewed transpose has no reader left */
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_TRANSPOSE && g->nodes[i]->n_in == 1)
      n_views += view_result(g, &us, g->nodes[i]);
  return n_views;
}
