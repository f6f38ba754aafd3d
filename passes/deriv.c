/*
 * deriv.c: gelu's derivative taken out of the backward pass, to be
 * computed beside gelu in the forward kernel (--fuse kind `deriv`).
 *
 * The backward of y = gelu(x) is gelu_back(dy, x) = dy * gelu'(x), with
 *   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2))
 *   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
 * (the tanh form likewise shares its tanh).  Computed in the backward
 * pass, gelu' evaluates the erf (or tanh) a second time: in a transformer's
 * training step the two GELUs' forward and backward formulas were a fifth
 * of the step (docs/benchmarks.md), most of it that math.  This pass
 * rewrites
 *
 *   gelu_back(dy, x)   into   dy * gelu_back(1, x)
 *
 * placing d = gelu_back(1, x) = gelu'(x) just before gelu(x) in the node
 * order.  passes/fuse.c then puts d into gelu's kernel as one more stored
 * output (kind deriv), where the compiler computes the erf once for both,
 * and the backward's kernel reads d where it read x: x itself, read by
 * gelu and d only, needs no buffer (it stays inside the matmul's epilogue
 * that makes it).
 *
 * Bits: the lowering of gelu_back computes dy * (cdf + x pdf) with the
 * multiplication last, so 1 * g = g and dy * d are the same f32 operations
 * as before; fused and unfused results stay bit for bit equal.  Only a
 * training graph has gelu_back; the pass runs when the kind is on (the
 * unfused build keeps gelu_back: alone, d would be a kernel and a buffer
 * more).
 */
#include "passes.h"

Node *deriv_gelu(const Users *us, const Node *x, int mode) {
  for (int k = us->off[x->id]; k < us->off[x->id + 1]; k++) {
    Node *u = us->list[k];
    if (u->op == OP_GELU && u->in[0] == x && u->at.mode == mode)
      return u;
  }
  return NULL;
}

bool deriv_is_shared(const Node *d) {
  return d->op == OP_GELU_BACK && d->in[0]->op == OP_CONST && d->in[0]->at.value == 1;
}

int pass_share_derivatives(Graph *g) {
  Users us = graph_users(g);
  int n_back = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n_back += g->nodes[i]->op == OP_GELU_BACK && !deriv_is_shared(g->nodes[i]);
  Node **back = arena_alloc(g->arena, sizeof(Node *) * (size_t)(n_back + 1));
  Node **gelu = arena_alloc(g->arena, sizeof(Node *) * (size_t)(n_back + 1));
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *b = g->nodes[i];
    if (b->op == OP_GELU_BACK && !deriv_is_shared(b) && b->dtype == DT_F32 &&
        shape_eq(&b->shape, &b->in[1]->shape) && (gelu[n] = deriv_gelu(&us, b->in[1], b->at.mode)))
      back[n++] = b;
  }
  for (int i = 0; i < n; i++) { /* after all are found: ids move from here on */
    Node *b = back[i], *y = gelu[i];
    Node *one = graph_const(g, DT_F32, 1, y->loc);
    graph_move_last_to(g, y->id);
    Node *in[2] = {one, b->in[1]};
    Node *d = graph_add_checked(g, OP_GELU_BACK, in, 2, &b->at, y->loc);
    graph_move_last_to(g, y->id);
    d->is_backward = true;
    d->grad_of = y;
    b->op = OP_MUL;
    attrs_default(OP_MUL, &b->at);
    b->in[1] = d;
  }
  return n;
}
