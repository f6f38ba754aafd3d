/*
 * memplan.c: offsets in one arena, and the plan as a whole.
 *
 * Values written in place form one buffer with the value they overwrite;
 * a buffer lives from its first value's write to its last value's last
 * read.  Buffers whose lifetimes are disjoint may share bytes, and a shared
 * region is as large as the largest of its tenants (seed 002, section
 * 7.2.5: nothing is allocated while simulating; sizes are recorded and the
 * arena is laid out once).  Placement is best fit: buffers in decreasing
 * size, each at the lowest-waste gap among the buffers already placed that
 * are alive at the same time.  Several orders are tried (size, area,
 * start, lifetime length, then seeded noisy and random ones until one
 * reaches the bound: improve_by_search) and the smallest arena is kept;
 * each is checked against the lower bound, the most bytes alive at any one
 * step, which no placement can beat.
 *
 * Parameters, optimizer state and weight-derived values (passes/prepack.c)
 * are in a persistent region of their own (plan->persistent; the derived
 * ones also in plan->prepacked), never in the arena.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct Buf {
  int root;          /* node id of the buffer's first value */
  int first, last;   /* lifetime in schedule steps */
  int64_t size, offset;
} Buf;

static int root_of(const Plan *p, int id) {
  while (p->alias[id] >= 0)
    id = p->alias[id];
  return id;
}

/* One Buf per in-place chain, lifetimes merged. */
static Buf *make_bufs(const Graph *g, const Plan *p, int *n_bufs) {
  int *index = arena_alloc(g->arena, sizeof(int) * (size_t)g->n_nodes);
  Buf *b = arena_alloc(g->arena, sizeof(Buf) * (size_t)(g->n_nodes + 1));
  int n = 0;
  for (int k = 0; k < p->n_order; k++) {
    Node *v = p->order[k];
    if (!plan_in_arena(p, v))
      continue;
    int r = root_of(p, v->id);
    if (r == v->id) {
      index[r] = n;
      b[n++] = (Buf){r, p->first[r], p->last[r], p->size[r], -1};
    }
    Buf *rb = &b[index[r]];
    rb->last = p->last[v->id] > rb->last ? p->last[v->id] : rb->last;
    rb->size = p->size[v->id] > rb->size ? p->size[v->id] : rb->size;
  }
  *n_bufs = n;
  return b;
}

static bool overlap(const Buf *a, const Buf *b) { return a->first <= b->last && b->first <= a->last; }

typedef int (*BufCmp)(const void *, const void *);

static int by_size(const void *x, const void *y) {
  const Buf *a = *(Buf *const *)x, *b = *(Buf *const *)y;
  if (a->size != b->size)
    return a->size > b->size ? -1 : 1;
  return a->first - b->first;
}

static int by_start(const void *x, const void *y) {
  const Buf *a = *(Buf *const *)x, *b = *(Buf *const *)y;
  return a->first != b->first ? a->first - b->first : by_size(x, y);
}

static int by_span(const void *x, const void *y) {
  const Buf *a = *(Buf *const *)x, *b = *(Buf *const *)y;
  int la = a->last - a->first, lb = b->last - b->first;
  return la != lb ? lb - la : by_size(x, y);
}

/* Larger area (bytes x steps) first: the buffers hardest to fit go first. */
static int by_area(const void *x, const void *y) {
  const Buf *a = *(Buf *const *)x, *b = *(Buf *const *)y;
  double aa = (double)a->size * (a->last - a->first + 1);
  double bb = (double)b->size * (b->last - b->first + 1);
  return aa != bb ? (aa > bb ? -1 : 1) : by_size(x, y);
}

/* Best fit for b among the placed buffers alive with it; by_off holds the
 * m placed buffers in increasing offset. */
static int64_t best_fit(const Buf *b, Buf *const *by_off, int m) {
  int64_t at = 0, best = -1, best_waste = 0;
  for (int i = 0; i < m; i++) {
    const Buf *p = by_off[i];
    if (!overlap(b, p))
      continue;
    int64_t gap = p->offset - at;
    if (gap >= b->size && (best < 0 || gap - b->size < best_waste))
      best = at, best_waste = gap - b->size;
    if (p->offset + p->size > at)
      at = p->offset + p->size;
  }
  return best >= 0 ? best : at;
}

/* Places the buffers in the given order; returns the arena size.  by_off
 * (room for n) keeps the placed ones sorted by offset, each inserted after
 * those at or below its offset, so a best fit is one scan, not a sort
 * (ResNet-50's training step, 3000 buffers: planned in 0.2 s, not 1.6). */
static int64_t place(Buf **order, int n, Buf **by_off) {
  int64_t arena = 0;
  for (int i = 0; i < n; i++) {
    Buf *b = order[i];
    b->offset = best_fit(b, by_off, i);
    int lo = 0, hi = i;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (by_off[mid]->offset <= b->offset)
        lo = mid + 1;
      else
        hi = mid;
    }
    memmove(by_off + lo + 1, by_off + lo, sizeof *by_off * (size_t)(i - lo));
    by_off[lo] = b;
    if (b->offset + b->size > arena)
      arena = b->offset + b->size;
  }
  return arena;
}

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

typedef struct Keyed {
  Buf *b;
  double key;
} Keyed;

static int by_key(const void *x, const void *y) {
  const Keyed *a = x, *b = y;
  return a->key > b->key ? -1 : a->key < b->key;
}

/* When no fixed order reached the lower bound: size orders with seeded
 * noise (a buffer may jump ahead of one up to ~2x its size), then, if the
 * arena is still above the bound, orders drawn uniformly at random,
 * keeping the best placement.  The random orders are for small graphs
 * that every near-size order packs badly: DenseNet's block, each layer's
 * output concatenated onto a growing tensor, where those orders leave a
 * gap of one layer's output (1.056 x the bound) and about one random order
 * in 15 reaches the bound.  Among hundreds of buffers a random order is
 * hopeless, so that phase gets a tenth of the budget.  Deterministic;
 * bounded to about 2e8 + 2e7 steps of work. */
static void improve_by_search(Buf *bufs, int n, Buf **ord, Buf **tmp, int64_t *best_off,
                              int64_t *arena, int64_t lower) {
  if (n == 0 || *arena <= lower)
    return;
  Keyed *k = calloc((size_t)n, sizeof *k);
  for (int phase = 0; phase < 2; phase++) {
    int64_t trials = (phase ? 20000000 : 200000000) / ((int64_t)n * n + 1);
    trials = trials > 200 ? 200 : trials;
    for (int64_t t = 0; t < trials && *arena > lower; t++) {
      for (int i = 0; i < n; i++) {
        uint64_t key = (uint64_t)t * 1000003u + (uint64_t)i;
        double u = (double)(mix(phase ? ~key : key) >> 11) * 0x1.0p-53;
        k[i] = (Keyed){&bufs[i], phase ? u : (double)bufs[i].size * (1 + u)};
      }
      qsort(k, (size_t)n, sizeof *k, by_key);
      for (int i = 0; i < n; i++)
        ord[i] = k[i].b;
      int64_t a = place(ord, n, tmp);
      if (a < *arena) {
        *arena = a;
        for (int i = 0; i < n; i++)
          best_off[i] = bufs[i].offset;
      }
    }
  }
  free(k);
}

static int64_t lower_bound(const Buf *b, int n, int steps) {
  int64_t best = 0;
  int64_t *delta = calloc((size_t)steps + 2, sizeof(int64_t));
  for (int i = 0; i < n; i++) {
    delta[b[i].first] += b[i].size;
    delta[b[i].last + 1] -= b[i].size;
  }
  int64_t live = 0;
  for (int t = 0; t <= steps; t++) {
    live += delta[t];
    best = live > best ? live : best;
  }
  free(delta);
  return best;
}

void pass_plan_offsets(Plan *p) {
  const Graph *g = p->g;
  int n;
  Buf *bufs = make_bufs(g, p, &n);
  Buf **ord = arena_alloc(g->arena, sizeof(Buf *) * (size_t)(n + 1));
  Buf **tmp = arena_alloc(g->arena, sizeof(Buf *) * (size_t)(n + 1));
  int64_t *best_off = arena_alloc(g->arena, sizeof(int64_t) * (size_t)(n + 1));
  p->lower = lower_bound(bufs, n, p->n_order);
  p->arena = -1;
  if (p->opts.no_share) {
    int64_t at = 0;
    for (int i = 0; i < n; i++)
      bufs[i].offset = at, at += bufs[i].size;
    p->arena = at;
  } else {
    static const BufCmp orders[] = {by_size, by_area, by_start, by_span};
    for (int o = 0; o < countof(orders) && p->arena != p->lower; o++) {
      for (int i = 0; i < n; i++)
        ord[i] = &bufs[i];
      qsort(ord, (size_t)n, sizeof *ord, orders[o]);
      int64_t a = place(ord, n, tmp);
      if (p->arena < 0 || a < p->arena) {
        p->arena = a;
        for (int i = 0; i < n; i++)
          best_off[i] = bufs[i].offset;
      }
    }
    improve_by_search(bufs, n, ord, tmp, best_off, &p->arena, p->lower);
    for (int i = 0; i < n; i++)
      bufs[i].offset = best_off[i];
  }
  for (int i = 0; i < g->n_nodes; i++)
    p->offset[i] = -1;
  int *index = arena_alloc(g->arena, sizeof(int) * (size_t)g->n_nodes);
  for (int i = 0; i < n; i++)
    index[bufs[i].root] = i;
  for (int k = 0; k < p->n_order; k++) {
    Node *v = p->order[k];
    if (plan_in_arena(p, v))
      p->offset[v->id] = bufs[index[root_of(p, v->id)]].offset;
  }
}

void plan_build(Graph *g, Node *const *roots, int n_roots, const PlanOpts *o, Plan *p) {
  memset(p, 0, sizeof *p);
  p->opts = *o;
  p->g = g;
  size_t n = (size_t)g->n_nodes;
  p->time = arena_alloc(g->arena, sizeof(int) * n);
  p->first = arena_alloc(g->arena, sizeof(int) * n);
  p->last = arena_alloc(g->arena, sizeof(int) * n);
  p->alias = arena_alloc(g->arena, sizeof(int) * n);
  p->root = arena_alloc(g->arena, sizeof(bool) * n);
  p->size = arena_alloc(g->arena, sizeof(int64_t) * n);
  p->offset = arena_alloc(g->arena, sizeof(int64_t) * n);
  p->start = arena_alloc(g->arena, sizeof(int) * n);
  pass_fuse(g, roots, n_roots, p);
  pass_schedule(g, roots, n_roots, p);
  fill_lifetimes(g, roots, n_roots, p);
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *v = g->nodes[i];
    p->size[i] = (node_bytes(v) + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
    if (node_persistent(v) && (v->op == OP_PARAM || p->time[i] >= 0))
      p->persistent += p->size[i];
    if (v->derived && p->time[i] >= 0)
      p->prepacked += p->size[i];
    if (node_persistent(v))
      continue;
    if (p->time[i] >= 0 || p->internal[i])
      p->naive += p->size[i]; /* fused values too: what one buffer per node takes */
  }
  pass_inplace(g, p);
  pass_plan_offsets(p);
}
