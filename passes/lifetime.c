/*
 * lifetime.c: when each value of a planned step is alive.
 *
 * A value is alive from the schedule step that writes it to the last step
 * that reads it, both inclusive.  Inputs are written by the caller before
 * the step, so they live from step 0.  The roots (outputs, the loss, the
 * values an update writes back after the step) live to the end.  A value
 * nothing reads lives only at the step that makes it.  Parameters are not
 * in the arena and have no lifetime here.
 *
 * Backward nodes read forward values directly, so a forward value the
 * backward pass needs lives exactly until its last backward reader, and one
 * it does not need dies with its last forward reader.  Weight-derived
 * values (passes/prepack.c) live with the parameters, outside the arena.
 *
 * A fused kernel (fuse.c) writes all its stored values at its first step
 * (Plan.start) and reads its inputs at its anchor's, so its outputs and
 * inputs are alive together over its whole span: none can share bytes
 * with another but through a legal in-place pair (inplace.c).
 */
#include "passes.h"

bool plan_in_arena(const Plan *p, const Node *n) {
  return p->time[n->id] >= 0 && !node_persistent(n);
}

void fill_lifetimes(const Graph *g, Node *const *roots, int n_roots, Plan *p) {
  int end = p->n_order - 1;
  for (int i = 0; i < g->n_nodes; i++)
    p->first[i] = p->last[i] = -1;
  for (int k = 0; k < p->n_order; k++) {
    Node *n = p->order[k];
    if (!plan_in_arena(p, n))
      continue;
    p->first[n->id] = n->op == OP_INPUT ? 0 : p->start[n->id];
    if (p->last[n->id] < k)
      p->last[n->id] = k;
  }
  for (int k = 0; k < p->n_order; k++) {
    int cnt;
    Node *const *in = plan_reads(p, p->order[k], &cnt);
    for (int j = 0; j < cnt; j++)
      if (plan_in_arena(p, in[j]) && p->last[in[j]->id] < k)
        p->last[in[j]->id] = k;
  }
  for (int r = 0; r < n_roots; r++) {
    p->root[roots[r]->id] = true;
    if (plan_in_arena(p, roots[r]))
      p->last[roots[r]->id] = end;
  }
}
