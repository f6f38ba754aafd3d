/*
 * inplace.c: which values may overwrite an input (seed 002, section 7.2.3).
 *
 * Simulate the schedule with a count of pending reads per value.  When an
 * op flagged F_INPLACE in ops.def (elementwise ops, reshape) is about to
 * run and one of its inputs has exactly one pending read, this one, the op
 * may write its result over that input, provided the input
 *   - has the output's byte size and, but for reshape, its shape (so
 *     element i is read and written by the same step of the loop),
 *   - lives in the arena and is not an input of the step (the caller
 *     writes those) nor a root (an output, or a value an update writes
 *     back).
 * The op's kernel reads element i before it writes element i, so aliasing
 * is safe; every kernel is also correct without it (the hint may be
 * ignored, as MXNet's ForwardInplaceOption says).
 */
#include "passes.h"

static bool fits_in_place(const Node *n, const Node *u) {
  if (node_bytes(u) != node_bytes(n) || rt_dtype_size(u->dtype) != rt_dtype_size(n->dtype))
    return false;
  return n->op == OP_RESHAPE || shape_eq(&u->shape, &n->shape);
}

void pass_inplace(const Graph *g, Plan *p) {
  for (int i = 0; i < g->n_nodes; i++)
    p->alias[i] = -1;
  if (p->opts.no_inplace)
    return;
  int *pending = arena_alloc(g->arena, sizeof(int) * (size_t)g->n_nodes);
  for (int k = 0; k < p->n_order; k++)
    for (int j = 0; j < p->order[k]->n_in; j++)
      pending[p->order[k]->in[j]->id]++;
  for (int k = 0; k < p->n_order; k++) {
    Node *n = p->order[k];
    bool can = op_has(n->op, F_INPLACE) && plan_in_arena(p, n);
    for (int j = 0; can && j < n->n_in && p->alias[n->id] < 0; j++) {
      Node *u = n->in[j];
      if (plan_in_arena(p, u) && u->op != OP_INPUT && !p->root[u->id] && p->last[u->id] == k &&
          pending[u->id] == 1 && fits_in_place(n, u))
        p->alias[n->id] = u->id;
    }
    for (int j = 0; j < n->n_in; j++)
      pending[n->in[j]->id]--;
  }
}
