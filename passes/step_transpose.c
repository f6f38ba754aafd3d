/*
 * step_transpose.c: in a training step, a weight read transposed by a
 * matmul is transposed once per step, by a kernel of its own, instead of
 * in every GEMM task's panel.
 *
 * `dense` keeps PyTorch's weight layout [out, in] and multiplies with
 * matmul(x, w, tb=true).  The GEMM (codegen/llvm/cg_gemm.c) then packs B^T
 * into each task's panel with strided gathers, and a GEMM of 512 rows is 4
 * tasks at least: the transformer's forward matmuls took 1.6x as long as
 * the backward's of the same sizes, which read their weight untransposed
 * (fc2 at batch 32: 33 against 20 µs, 1 thread).  At inference
 * passes/prepack.c makes the transpose once, when the weights are set; in
 * a training step the weights change every step, so this pass rewrites
 *
 *   matmul(x, w, tb=true)   into   matmul(x, transpose(w))
 *
 * with the transpose placed just before the matmul (one per weight, shared
 * by all its matmuls), a kernel of the step.  The GEMM then packs rows of
 * the copy.  Only where the panels would be gathered more than once: the
 * GEMM splits a matmul into blocks of rows from 192 rows on (cg_gemm.c's
 * 2 * MB_MIN), each block packing B again, and a weight may feed several
 * matmuls (the LSTM's hidden weight, one per time step).  A weight packed
 * once is left alone: its transpose would be one more pass over it (the
 * MLP's 784 x 256 first layer at batch 32: 225 -> 288 µs a step).  The sum
 * order of every output is the matmul's own, so the results are the same
 * bits; the backward pass, made before this pass, still reads w.  Run on a
 * training step's graph (kiln's cli_train_passes), fused or not.
 */
#include "passes.h"

/* Whether matmul n reads a parameter matrix as B^T. */
static bool transposed_param(const Node *n) {
  return n->op == OP_MATMUL && n->at.tb && n->in[1]->op == OP_PARAM &&
         n->in[1]->shape.rank == 2;
}

/* Rows from which the GEMM packs B for each of several blocks of rows. */
enum { BLOCKED_ROWS = 192 };

/* How many times the GEMMs reading w transposed would pack it: per matmul,
 * its blocks of rows (at least one). */
static int64_t packs(const Graph *g, const Node *w) {
  int64_t n = 0;
  for (int i = w->id + 1; i < g->n_nodes; i++) {
    const Node *m = g->nodes[i];
    if (transposed_param(m) && m->in[1] == w) {
      int64_t cols = m->shape.dim[m->shape.rank - 1];
      int64_t rows = cols ? shape_numel(&m->shape) / cols : 0;
      n += rows >= BLOCKED_ROWS ? rows / (BLOCKED_ROWS / 2) : 1;
    }
  }
  return n;
}

int pass_step_transposes(Graph *g) {
  if (!g->training)
    return 0;
  Node **made = arena_alloc(g->arena, sizeof(Node *) * (size_t)(g->n_nodes + 1));
  int n_made = 0, rewritten = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (!transposed_param(n))
      continue;
    Node *wt = NULL;
    for (int m = 0; m < n_made && !wt; m++)
      wt = made[m]->in[0] == n->in[1] ? made[m] : NULL;
    if (!wt && packs(g, n->in[1]) < 2)
      continue;
    if (!wt) {
      wt = made[n_made++] = graph_add_checked(g, OP_TRANSPOSE, &n->in[1], 1, NULL, n->loc);
      graph_move_last_to(g, i);
      i++; /* n moved one place on */
    }
    n->in[1] = wt;
    n->at.tb = false;
    rewritten++;
  }
  return rewritten;
}
