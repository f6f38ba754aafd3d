/*
 * plan_verify.c: checks a memory plan without trusting the planner.
 *
 * It recomputes what it needs from the graph and the schedule alone:
 *   - the schedule is a topological order of kernels holding everything the
 *     roots need, each node once: a fused kernel's stored values together,
 *     its internal ones not at all, each input of its members computed
 *     before it starts (fuse.c), but for constants that are literals in
 *     their readers (kind const), which have no step and no place;
 *   - each value's lifetime, by its own reading of the order;
 *   - every arena value is 64-byte aligned and inside the arena;
 *   - two values whose bytes overlap are never alive at the same step,
 *     except a legal in-place pair: an F_INPLACE op writing over an input of
 *     the same size (and, but for reshape, shape) that it is the last to
 *     read, which is not an input of the step, a root, or a parameter, or
 *     an elementwise fused kernel's output over one of its inputs.
 * Tests run it on every plan; `kiln ... --verify-plan` runs it too.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"


/* The kernel of scheduled node v's group: its members, and where it
 * starts (the step of its first stored member) and reads (its anchor's). */
typedef struct Span {
  const FuseGroup *G;
  int start, read;
} Span;

static Span span_of(const Plan *p, const Node *v, const int *t) {
  Span s = {plan_group(p, v), t[v->id], t[v->id]};
  for (int m = 0; s.G && m < s.G->n_members; m++) {
    int tm = t[s.G->members[m]->id];
    if (tm >= 0 && tm < s.start)
      s.start = tm;
  }
  if (s.G)
    s.read = t[s.G->anchor->id];
  return s;
}

static bool member(const FuseGroup *G, const Node *u) {
  for (int m = 0; G && m < G->n_members; m++)
    if (G->members[m] == u)
      return true;
  return false;
}

/* Every input of a kernel's members is a member or computed before the
 * kernel starts; internal members have no step; stored ones are together,
 * the anchor last. */
static bool check_group(const Plan *p, const Node *v, const int *t, int k, char *err, size_t n) {
  Span s = span_of(p, v, t);
  const FuseGroup *G = s.G;
  if (!G)
    return true;
  if (s.read < 0)
    return verify_fail(err, n, "%s is scheduled but its kernel's anchor %s is not", v->name,
                       G->anchor->name);
  if (k < s.start || k > s.read || s.read - s.start >= G->n_members)
    return verify_fail(err, n, "%s is scheduled apart from its kernel (%s)", v->name,
                       G->anchor->name);
  for (int m = 0; m < G->n_members; m++) {
    const Node *w = G->members[m];
    if (p->internal[w->id] && (t[w->id] >= 0 || p->offset[w->id] >= 0))
      return verify_fail(err, n, "internal value %s of kernel %s has a step or a place", w->name,
                         G->anchor->name);
    for (int j = 0; j < w->n_in; j++)
      if (!member(G, w->in[j]) && !plan_literal(p, w->in[j]) &&
          (t[w->in[j]->id] < 0 || t[w->in[j]->id] >= s.start))
        return verify_fail(err, n, "kernel %s runs before its input %s", G->anchor->name,
                           w->in[j]->name);
  }
  return true;
}

static bool check_order(const Graph *g, Node *const *roots, int n_roots, const Plan *p, int *t,
                        char *err, size_t n) {
  for (int i = 0; i < g->n_nodes; i++)
    t[i] = -1;
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    if (t[v->id] >= 0)
      return verify_fail(err, n, "%s is scheduled twice", v->name);
    t[v->id] = k;
  }
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    if (!plan_group(p, v) && op_info[v->op].cls != CL_LEAF)
      return verify_fail(err, n, "%s is scheduled in no kernel", v->name);
    if (!check_group(p, v, t, k, err, n))
      return false;
  }
  for (int r = 0; r < n_roots; r++)
    if (t[roots[r]->id] < 0)
      return verify_fail(err, n, "root %s is not scheduled", roots[r]->name);
  for (int i = 0; i < g->n_nodes; i++)
    if (plan_literal(p, g->nodes[i]) && (t[i] >= 0 || p->offset[i] >= 0))
      return verify_fail(err, n, "constant %s, a literal in its readers, has a step or a place",
                         g->nodes[i]->name);
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
    Span s = span_of(p, v, t);
    L[v->id].first = v->op == OP_INPUT ? 0 : s.start;
    if (L[v->id].last < k)
      L[v->id].last = k;
    for (int m = 0; s.G && s.G->anchor == v && m < s.G->n_members; m++) {
      const Node *w = s.G->members[m];
      for (int j = 0; j < w->n_in; j++)
        if (!member(s.G, w->in[j]) && L[w->in[j]->id].last < k)
          L[w->in[j]->id].last = k;
    }
  }
  for (int r = 0; r < n_roots; r++) {
    L[roots[r]->id].last = p->n_order - 1;
    L[roots[r]->id].root = true;
  }
}

/* v overwrites u in place, legally: v's kernel reads u (u is not one of its
 * members) last, and either is the single F_INPLACE node v or an
 * elementwise group, which loads an element's inputs before it stores. */
static bool legal_inplace(const Plan *p, const Node *u, const Node *v, const Life *L,
                          const int *t) {
  Span s = span_of(p, v, t);
  bool reads = false;
  for (int m = 0; s.G && m < s.G->n_members; m++)
    for (int j = 0; j < s.G->members[m]->n_in; j++)
      reads = reads || s.G->members[m]->in[j] == u;
  bool kind = s.G && (s.G->n_members == 1 ? op_has(v->op, F_INPLACE)
                                            : s.G->eltwise && !s.G->head && !s.G->views &&
                                                  shape_numel(&v->shape) > 1);
  return reads && kind && !member(s.G, u) && u->op != OP_INPUT && !L[u->id].root &&
         L[u->id].last == s.read && L[v->id].first == s.start &&
         node_bytes(u) == node_bytes(v) && (v->op == OP_RESHAPE || shape_eq(&u->shape, &v->shape));
}

/* An arena value: its node, its steps alive and its bytes [lo, hi). */
typedef struct Item {
  const Node *v;
  int first, last;
  int64_t lo, hi;
} Item;

static int by_first(const void *a, const void *b) {
  const Item *x = a, *y = b;
  return (x->first > y->first) - (x->first < y->first);
}

/* No two of the m arena values share bytes while both are alive, but for
 * legal in-place pairs.  A sweep over the steps: sorted by first step, each
 * value meets only those still alive when it starts (the pairs alive at
 * once), not every other value, so a deep model's plan (tens of thousands
 * of values, a few alive at a time) checks in about its length times the
 * values alive at once, not its length squared. */
static bool no_overlaps(const Plan *p, Item *it, int m, const Life *L, const int *t, char *err,
                        size_t errlen) {
  qsort(it, (size_t)m, sizeof *it, by_first);
  int *act = malloc(((size_t)m + 1) * sizeof(int)), na = 0;
  bool ok = true;
  for (int b = 0; b < m && ok; b++) {
    const Item *y = &it[b];
    int keep = 0;
    for (int i = 0; i < na; i++) /* drop the values dead before y starts */
      if (it[act[i]].last >= y->first)
        act[keep++] = act[i];
    na = keep;
    for (int i = 0; i < na && ok; i++) {
      const Item *x = &it[act[i]];
      const Node *u = x->v, *v = y->v;
      if (x->lo < y->hi && y->lo < x->hi && !legal_inplace(p, u, v, L, t) &&
          !legal_inplace(p, v, u, L, t))
        ok = verify_fail(err, errlen, "%s [%d, %d] and %s [%d, %d] share bytes while both are alive",
                         u->name, x->first, x->last, v->name, y->first, y->last);
    }
    act[na++] = b;
  }
  free(act);
  return ok;
}

bool plan_verify(const Graph *g, Node *const *roots, int n_roots, const Plan *p, char *err,
                 size_t errlen) {
  int *t = calloc((size_t)g->n_nodes + 1, sizeof(int));
  Life *L = calloc((size_t)g->n_nodes + 1, sizeof(Life));
  Item *in = calloc((size_t)p->n_order + 1, sizeof(Item));
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
        in[m++] = (Item){v, L[v->id].first, L[v->id].last, off, off + bytes};
    }
  }
  ok = ok && no_overlaps(p, in, m, L, t, err, errlen);
  free(t);
  free(L);
  free(in);
  return ok;
}
