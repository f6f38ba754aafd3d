/*
 * aot_batch.c: is the inference graph computed row by row along the batch?
 *
 * A program is compiled for one batch size B (a model constant, say N),
 * but a user with 8 images should not have to pad them to 64.  When each
 * row of every output depends only on the same row of the batch inputs,
 * the program can run any number of rows in chunks of B (zero-padding the
 * last) and get exactly what a build for that many rows computes.  This
 * pass proves that structurally and conservatively.  Each node is
 *   FREE   independent of the batch inputs (parameters, constants, ...),
 *   ROWS   first axis B*r, its memory B equal contiguous blocks, block i
 *          computed from row i of the batch inputs only (r > 1 after a
 *          reshape such as [B, T, D] -> [B*T, D]),
 *   MIXED  anything else: a reduction over the first axis, dropout (its
 *          random stream follows positions), an op this pass does not know.
 * One graph cannot tell a batch-sized axis from a literal that happens to
 * equal B (reshape(x, [64, -1])), so the caller also builds the graph with
 * the batch constant set to B + 1 (the twin): a ROWS node must there have
 * first axis (B+1)*r and otherwise the same shape, a FREE node the same
 * shape; anything else counts as MIXED.
 */
#include <string.h>

#include "aot.h"

enum { FREE, ROWS, MIXED };

static int norm_axis(int a, int rank) { return a < 0 ? a + rank : a; }

/* ROWS operands must be rank-aligned with the result, with its first
 * axis; aligned FREE ones must broadcast along it (size 1). */
static int eltwise(const Node *n, const int *st) {
  for (int i = 0; i < n->n_in; i++) {
    const Node *x = n->in[i];
    bool aligned = x->shape.rank == n->shape.rank;
    if (st[x->id] == ROWS && !(aligned && x->shape.dim[0] == n->shape.dim[0]))
      return MIXED;
    if (st[x->id] == FREE && aligned && x->shape.dim[0] != 1)
      return MIXED;
  }
  return ROWS;
}

/* Reductions, softmax, argmax: fine unless the first axis is reduced. */
static int reduction(const Node *n) {
  int rank = n->in[0]->shape.rank;
  if (n->op == OP_SUM || n->op == OP_MEAN || n->op == OP_MAX) {
    if (n->at.n_axes < 0)
      return MIXED;
    for (int i = 0; i < n->at.n_axes; i++)
      if (norm_axis(n->at.axes[i], rank) == 0)
        return MIXED;
    return ROWS;
  }
  return norm_axis(n->at.axis, rank) == 0 ? MIXED : ROWS;
}

static int matmul(const Node *n, const int *st) {
  const Node *a = n->in[0], *b = n->in[1];
  int r = n->shape.rank;
  if (n->at.bsum) /* a sum over batch axes (passes/batchsum.c): rows mix */
    return MIXED;
  for (int i = 0; i < 3; i++) /* a view (passes/view.c) must keep the first axis first */
    if ((n->at.view & (1 << i)) && n->at.perm[i][0] != 0)
      return MIXED;
  bool same = b->shape.rank == r && b->shape.dim[0] == n->shape.dim[0];
  if (st[a->id] == ROWS && a->shape.rank == 2) /* [B*r, k] @ FREE [k, n] */
    return !n->at.ta && st[b->id] == FREE ? ROWS : MIXED;
  if (st[a->id] == ROWS) /* batched: @ FREE [k, n] or ROWS [B*r, ..., k, n] */
    return (st[b->id] == FREE && b->shape.rank < r) || (st[b->id] == ROWS && same) ? ROWS : MIXED;
  return b->shape.rank > 2 && same && a->shape.rank < r ? ROWS : MIXED;
}

/* Only input 0 may depend on the batch (weights, tables are FREE). */
static int first_only(const Node *n, const int *st) {
  for (int i = 1; i < n->n_in; i++)
    if (st[n->in[i]->id] != FREE)
      return MIXED;
  return st[n->in[0]->id] == ROWS ? ROWS : MIXED;
}

static int rule(const Node *n, const int *st, int64_t B) {
  if (op_info[n->op].flags & F_RANDOM) /* its stream follows positions */
    return MIXED;
  bool any_rows = false;
  for (int i = 0; i < n->n_in; i++) {
    if (st[n->in[i]->id] == MIXED)
      return MIXED;
    any_rows |= st[n->in[i]->id] == ROWS;
  }
  if (!any_rows)
    return FREE;
  if (n->shape.rank < 1 || n->shape.dim[0] % B != 0)
    return MIXED;
  if (op_info[n->op].cls == CL_ELTWISE)
    return eltwise(n, st);
  const Node *x = n->in[0];
  switch (n->op) {
  case OP_SUM: case OP_MEAN: case OP_MAX: case OP_ARGMAX: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
    return reduction(n);
  case OP_RESHAPE: /* memory is unchanged: the blocks stay where they were */
    return ROWS;
  case OP_SLICE:   /* the whole first axis (slices have positive steps) */
    return x->shape.dim[0] == n->shape.dim[0] ? ROWS : MIXED;
  case OP_TRANSPOSE:
    return n->at.n_axes > 0 && norm_axis(n->at.axes[0], x->shape.rank) == 0 ? ROWS : MIXED;
  case OP_BROADCAST_TO:
    return x->shape.rank == n->shape.rank && x->shape.dim[0] == n->shape.dim[0] ? ROWS : MIXED;
  case OP_CONCAT:
    if (norm_axis(n->at.axis, n->shape.rank) == 0)
      return MIXED;
    for (int i = 0; i < n->n_in; i++)
      if (st[n->in[i]->id] != ROWS)
        return MIXED;
    return ROWS;
  case OP_MATMUL:
    return matmul(n, st);
  case OP_CONV2D: case OP_CONV_TRANSPOSE2D: case OP_MAXPOOL2D: case OP_AVGPOOL2D:
  case OP_UPSAMPLE: case OP_EMBEDDING:
    return first_only(n, st);
  default:
    return MIXED;
  }
}

/* Whether node n's twin t has the shape state s promises. */
static bool twin_agrees(const Node *n, const Node *t, int s, int64_t B) {
  if (t->op != n->op || t->dtype != n->dtype || t->shape.rank != n->shape.rank)
    return false;
  for (int k = 0; k < n->shape.rank; k++) {
    int64_t want = k == 0 && s == ROWS ? n->shape.dim[0] / B * (B + 1) : n->shape.dim[k];
    if (t->shape.dim[k] != want)
      return false;
  }
  return true;
}

int64_t aot_batch_size(const Graph *g, const Graph *twin, const Plan *p, Node *const *outs,
                       int n_outs, bool *batched) {
  memset(batched, 0, sizeof(bool) * (size_t)g->n_nodes);
  int64_t B = 0;
  for (int i = 0; i < g->n_nodes && !B; i++)
    if (g->nodes[i]->op == OP_INPUT && g->nodes[i]->shape.rank >= 1)
      B = g->nodes[i]->shape.dim[0];
  if (!twin || twin->n_nodes != g->n_nodes || B < 1 || n_outs == 0)
    return 0;
  int *st = arena_alloc(g->arena, sizeof(int) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_INPUT)
      st[i] = n->shape.rank >= 1 && n->shape.dim[0] == B ? ROWS : FREE;
    else if (n->op == OP_PARAM || n->op == OP_CONST)
      st[i] = FREE;
    else
      st[i] = rule(n, st, B);
    if (st[i] != MIXED && !twin_agrees(n, twin->nodes[i], st[i], B))
      st[i] = MIXED;
  }
  for (int i = 0; i < n_outs; i++)
    if (st[outs[i]->id] != ROWS || outs[i]->shape.dim[0] != B)
      return 0;
  bool any = false;
  for (int i = 0; i < g->n_nodes; i++) {
    batched[i] = g->nodes[i]->op == OP_INPUT && st[i] == ROWS;
    any |= batched[i] && p->time[i] >= 0;
  }
  for (int i = 0; i < n_outs; i++)
    batched[outs[i]->id] = true;
  return any ? B : 0;
}
