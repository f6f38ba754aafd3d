/*
 * schedule.c: the order in which a step computes its nodes.
 *
 * Only the nodes the roots need are scheduled.  The default order is the
 * graph's own (creation order: forward, then backward, then update).  The
 * min-memory order is a greedy list schedule (seed 002, section 7.2.5,
 * simulates the schedule; here we choose it): among the nodes whose inputs
 * are all computed, run the one that adds the fewest live bytes: its
 * output's size minus the inputs it is the last reader of.  Ties go to the
 * earliest node, so the order stays close to the program's.
 *
 * Either order is of nodes; fusion (fuse.c) then turns it into an order of
 * kernels: each group runs where its anchor was, its stored values listed
 * together, its internal values not at all (they have no step and no
 * buffer).  A group's kernel runs at the step of its first stored value
 * (Plan.start), and reads its inputs by the step of its anchor.
 */
#include "passes.h"

static int64_t value_bytes(const Node *n) {
  if (node_persistent(n) || n->op == OP_INPUT)
    return 0; /* persistent, or alive from the start anyway */
  return (node_bytes(n) + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
}

/* Whether input slot j of n repeats an earlier slot (x * x). */
static bool repeated(const Node *n, int j) {
  for (int k = 0; k < j; k++)
    if (n->in[k] == n->in[j])
      return true;
  return false;
}

/* Bytes running n adds: its output, less the inputs it reads last
 * (readers[] counts the distinct nodes still to read each value). */
static int64_t growth(const Node *n, const int *readers, const bool *pinned) {
  int64_t d = value_bytes(n);
  for (int j = 0; j < n->n_in; j++) {
    const Node *u = n->in[j];
    if (!repeated(n, j) && !pinned[u->id] && readers[u->id] == 1)
      d -= value_bytes(u);
  }
  return d;
}

static void min_memory_order(const Graph *g, const bool *live, const bool *pinned, Plan *p) {
  int n = g->n_nodes;
  int *readers = arena_alloc(g->arena, sizeof(int) * (size_t)n);   /* unscheduled readers */
  int *waiting = arena_alloc(g->arena, sizeof(int) * (size_t)n);   /* inputs not yet run */
  Users us = graph_users(g);
  for (int i = 0; i < n; i++)
    for (int j = 0; live[i] && j < g->nodes[i]->n_in; j++) {
      waiting[i]++; /* one per input slot, as graph_users lists them */
      readers[g->nodes[i]->in[j]->id] += !repeated(g->nodes[i], j);
    }
  int *ready = arena_alloc(g->arena, sizeof(int) * (size_t)(p->n_order + 1)), n_ready = 0;
  for (int i = 0; i < n; i++)
    if (live[i] && !waiting[i])
      ready[n_ready++] = i;
  for (int step = 0; step < p->n_order; step++) {
    ASSERT(n_ready > 0);
    int pick = 0;
    int64_t best = growth(g->nodes[ready[0]], readers, pinned);
    for (int r = 1; r < n_ready; r++) {
      int64_t d = growth(g->nodes[ready[r]], readers, pinned);
      if (d < best || (d == best && ready[r] < ready[pick]))
        pick = r, best = d;
    }
    Node *b = g->nodes[ready[pick]];
    ready[pick] = ready[--n_ready];
    p->order[step] = b;
    for (int j = 0; j < b->n_in; j++)
      readers[b->in[j]->id] -= !repeated(b, j);
    for (int k = us.off[b->id]; k < us.off[b->id + 1]; k++) {
      Node *u = us.list[k];
      if (live[u->id] && --waiting[u->id] == 0)
        ready[n_ready++] = u->id;
    }
  }
}

/* Group gi's stored members, then those of the groups that run right
 * after it (FuseGroup.after; next[] links them in group order). */
static void emit_group(const Plan *p, int gi, const int *follow, const int *next, Node **order,
                       int *k) {
  const FuseGroup *G = &p->groups[gi];
  for (int m = 0; m < G->n_members; m++)
    if (!p->internal[G->members[m]->id])
      order[(*k)++] = G->members[m];
  for (int h = follow[gi]; h >= 0; h = next[h])
    emit_group(p, h, follow, next, order, k);
}

/* From an order of the nodes to one of the kernels (fuse.c): each group
 * where its anchor was (or right after the group it follows, after), its
 * stored members just before the anchor, its internal members nowhere. */
static void compact(const Graph *g, Plan *p) {
  Node **order = arena_alloc(g->arena, sizeof(Node *) * (size_t)(p->n_order + 1));
  int *follow = arena_alloc(g->arena, sizeof(int) * (size_t)(p->n_groups + 1));
  int *next = arena_alloc(g->arena, sizeof(int) * (size_t)(p->n_groups + 1));
  for (int gi = 0; gi < p->n_groups; gi++)
    follow[gi] = next[gi] = -1;
  for (int gi = p->n_groups - 1; gi >= 0; gi--) /* each list in group (anchor) order */
    if (p->groups[gi].after) {
      int to = p->group[p->groups[gi].after->id];
      next[gi] = follow[to];
      follow[to] = gi;
    }
  int k = 0;
  for (int s = 0; s < p->n_order; s++) {
    Node *v = p->order[s];
    const FuseGroup *G = plan_group(p, v);
    if (!G) {
      if (!plan_literal(p, v)) /* a constant of kind const has no step */
        order[k++] = v;
      continue;
    }
    if (G->anchor == v && !G->after)
      emit_group(p, (int)(G - p->groups), follow, next, order, &k);
  }
  p->order = order;
  p->n_order = k;
}

void pass_schedule(const Graph *g, Node *const *roots, int n_roots, Plan *p) {
  int n = g->n_nodes;
  bool *live = arena_alloc(g->arena, sizeof(bool) * (size_t)n);
  bool *pinned = arena_alloc(g->arena, sizeof(bool) * (size_t)n);
  graph_live(g, roots, n_roots, live);
  for (int k = 0; k < n_roots; k++)
    pinned[roots[k]->id] = true;
  p->n_order = 0;
  for (int i = 0; i < n; i++)
    p->n_order += live[i];
  p->order = arena_alloc(g->arena, sizeof(Node *) * (size_t)(p->n_order + 1));
  if (p->opts.min_memory) {
    min_memory_order(g, live, pinned, p);
  } else {
    int k = 0;
    for (int i = 0; i < n; i++)
      if (live[i])
        p->order[k++] = g->nodes[i];
  }
  compact(g, p);
  for (int i = 0; i < n; i++)
    p->time[i] = p->start[i] = -1;
  for (int k = 0; k < p->n_order; k++)
    p->time[p->order[k]->id] = k;
  for (int k = 0; k < p->n_order; k++) {
    const FuseGroup *G = plan_group(p, p->order[k]);
    int first = G ? p->time[G->anchor->id] : k;
    for (int m = 0; G && m < G->n_members; m++)
      if (p->time[G->members[m]->id] >= 0 && p->time[G->members[m]->id] < first)
        first = p->time[G->members[m]->id];
    p->start[p->order[k]->id] = first;
  }
}
