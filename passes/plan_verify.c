/*
 * plan_verify.c: checks a memory plan without trusting the planner.
 *
 * It recomputes what it needs from the graph and the schedule alone:
 *   - the schedule is a topological order holding everything the roots
 *     need, each node once;
 *   - each value's lifetime, by its own reading of the order;
 *   - every arena value is 64-byte aligned and inside the arena;
 *   - two values whose bytes overlap are never alive at the same step,
 *     except a legal in-place pair: an F_INPLACE op writing over an input of
 *     the same size (and, but for reshape, shape) that it is the last to
 *     read, which is not an input of the step, a root, or a parameter.
 * Tests run it on every plan; `kiln ... --verify-plan` runs it too.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"


static bool check_order(const Graph *g, Node *const *roots, int n_roots, const Plan *p, int *t,
                        char *err, size_t n) {
  for (int i = 0; i < g->n_nodes; i++)
    t[i] = -1;
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    if (t[v->id] >= 0)
      return verify_fail(err, n, "%s is scheduled twice", v->name);
    for (int j = 0; j < v->n_in; j++)
      if (t[v->in[j]->id] < 0)
        return verify_fail(err, n, "%s is scheduled before its input %s", v->name, v->in[j]->name);
    t[v->id] = k;
  }
  for (int r = 0; r < n_roots; r++)
    if (t[roots[r]->id] < 0)
      return verify_fail(err, n, "root %s is not scheduled", roots[r]->name);
  return true;
}

typedef struct Life {
  int first, last;
  bool root;
} Life;

static void lifetimes(const Graph *g, Node *const *roots, int n_roots, const Plan *p,
                      const int *t, Life *L) {
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    L[v->id].first = v->op == OP_INPUT ? 0 : k;
    if (L[v->id].last < k)
      L[v->id].last = k;
    for (int j = 0; j < v->n_in; j++)
      if (L[v->in[j]->id].last < k)
        L[v->in[j]->id].last = k;
  }
  for (int r = 0; r < n_roots; r++) {
    L[roots[r]->id].last = p->n_order - 1;
    L[roots[r]->id].root = true;
  }
}

/* v overwrites u in place, legally. */
static bool legal_inplace(const Node *u, const Node *v, const Life *L, const int *t) {
  bool reads = false;
  for (int j = 0; j < v->n_in; j++)
    reads = reads || v->in[j] == u;
  return reads && op_has(v->op, F_INPLACE) && u->op != OP_INPUT && !L[u->id].root &&
         L[u->id].last == t[v->id] && L[v->id].first == t[v->id] &&
         node_bytes(u) == node_bytes(v) && (v->op == OP_RESHAPE || shape_eq(&u->shape, &v->shape));
}

bool plan_verify(const Graph *g, Node *const *roots, int n_roots, const Plan *p, char *err,
                 size_t errlen) {
  int *t = calloc((size_t)g->n_nodes + 1, sizeof(int));
  Life *L = calloc((size_t)g->n_nodes + 1, sizeof(Life));
  const Node **in = calloc((size_t)p->n_order + 1, sizeof(Node *));
  bool ok = check_order(g, roots, n_roots, p, t, err, errlen);
  int m = 0;
  if (ok) {
    for (int i = 0; i < g->n_nodes; i++)
      L[i].first = L[i].last = -1;
    lifetimes(g, roots, n_roots, p, t, L);
    for (int k = 0; k < p->n_order && ok; k++) {
      const Node *v = p->order[k];
      int64_t off = p->offset[v->id], bytes = node_bytes(v);
      if (node_persistent(v))
        ok = off < 0 || verify_fail(err, errlen, "%s %s is placed in the arena",
                                    v->derived ? "weight-derived value" : "parameter", v->name);
      else if (off < 0 || off % PLAN_ALIGN || off + bytes > p->arena)
        ok = verify_fail(err, errlen, "%s at offset %lld (%lld bytes) is not an aligned place in the "
                  "%lld-byte arena", v->name, (long long)off, (long long)bytes, (long long)p->arena);
      else
        in[m++] = v;
    }
  }
  for (int a = 0; a < m && ok; a++)
    for (int b = a + 1; b < m && ok; b++) {
      const Node *u = in[a], *v = in[b];
      int64_t ua = p->offset[u->id], ub = ua + node_bytes(u);
      int64_t va = p->offset[v->id], vb = va + node_bytes(v);
      bool bytes = ua < vb && va < ub;
      bool time = L[u->id].first <= L[v->id].last && L[v->id].first <= L[u->id].last;
      if (bytes && time && !legal_inplace(u, v, L, t) && !legal_inplace(v, u, L, t))
        ok = verify_fail(err, errlen, "%s [%d, %d] and %s [%d, %d] share bytes while both are alive",
                  u->name, L[u->id].first, L[u->id].last, v->name, L[v->id].first,
                  L[v->id].last);
    }
  free(t);
  free(L);
  free(in);
  return ok;
}
