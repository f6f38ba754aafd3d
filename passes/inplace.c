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
 *
 * Pending reads are counted per kernel (fuse.c): a group reads each of its
 * inputs once, at its anchor's step.  An elementwise group's outputs may
 * each take one input this way: ir/lower_fuse.c loads every input of an
 * element before it stores any output of it.  Not the one-element values of a
 * group (the kernel computes them before its loop, one after another), nor
 * the outputs of an epilogue group (its matmul writes the output before
 * the loop reads the inputs; and codegen/llvm/cg_gemm.c runs the epilogue
 * per tile, writing the group's outputs while other tiles' GEMMs still
 * read theirs, so no output may share bytes with anything the kernel
 * reads), of a group with a slice (it reads its input at other elements
 * than the one being written), nor those of a scatter group (not eltwise:
 * each slice's loop reads its inputs after the loops before it stored).
 * x * x reads x once, so it may overwrite x too.
 */
#include "passes.h"

static bool fits_in_place(const Node *n, const Node *u) {
  if (node_bytes(u) != node_bytes(n) || rt_dtype_size(u->dtype) != rt_dtype_size(n->dtype))
    return false;
  return n->op == OP_RESHAPE || shape_eq(&u->shape, &n->shape);
}

/* Whether the kernel of group G may write its output n over an input. */
static bool may_overwrite(const FuseGroup *G, const Node *n) {
  return G->n_members == 1 ? op_has(n->op, F_INPLACE)
                           : G->eltwise && !G->head && !G->views && shape_numel(&n->shape) > 1;
}

/* At the step k of G's anchor, where G reads its inputs: each of its
 * outputs takes an input it reads last, each input at most once. */
static void place_group(const Plan *p, const FuseGroup *G, int k, const int *pending,
                        bool *taken) {
  for (int m = 0; m < G->n_members; m++) {
    const Node *n = G->members[m];
    if (p->internal[n->id] || !plan_in_arena(p, n) || !may_overwrite(G, n))
      continue;
    for (int j = 0; j < G->n_ins && p->alias[n->id] < 0; j++) {
      Node *u = G->ins[j];
      if (plan_in_arena(p, u) && u->op != OP_INPUT && !p->root[u->id] && p->last[u->id] == k &&
          pending[u->id] == 1 && !taken[u->id] && fits_in_place(n, u)) {
        p->alias[n->id] = u->id;
        taken[u->id] = true;
      }
    }
  }
}

void pass_inplace(const Graph *g, Plan *p) {
  for (int i = 0; i < g->n_nodes; i++)
    p->alias[i] = -1;
  if (p->opts.no_inplace)
    return;
  int *pending = arena_alloc(g->arena, sizeof(int) * (size_t)g->n_nodes);
  bool *taken = arena_alloc(g->arena, sizeof(bool) * (size_t)g->n_nodes);
  for (int k = 0; k < p->n_order; k++) {
    int cnt;
    Node *const *in = plan_reads(p, p->order[k], &cnt);
    for (int j = 0; j < cnt; j++)
      pending[in[j]->id]++;
  }
  for (int k = 0; k < p->n_order; k++) {
    int cnt;
    Node *const *in = plan_reads(p, p->order[k], &cnt);
    if (cnt)
      place_group(p, plan_group(p, p->order[k]), k, pending, taken);
    for (int j = 0; j < cnt; j++)
      pending[in[j]->id]--;
  }
}
