/*
 * prepack.c: weights laid out for inference once, not on every call (what
 * onnxruntime calls prepacking).
 *
 * `dense` keeps PyTorch's weight layout [out, in] and multiplies with
 * matmul(x, w, tb=true).  The GEMM kernel (codegen/llvm/cg_gemm.c) then
 * packs B^T into its panel with strided gathers on every call, and at
 * batch 1, where each panel is used once, that packing is most of the
 * time.  In an inference graph the parameters do not change between
 * calls, so this pass rewrites each such matmul into
 *
 *   matmul(x, wt, tb=false)    wt = transpose(w), marked `derived`
 *
 * A derived (weight-derived) value is computed from parameters only; it
 * lives beside them in the persistent region, and a prepare step computes
 * it again whenever the parameters are set or changed (codegen/program.c
 * program_prepare, kiln_prepare in built programs), not the step itself.
 * With B no longer transposed the GEMM reads it in place at batch 1
 * (b_direct, no panel at all) and packs it with row copies instead of
 * gathers at larger batches.  The sum order of each output is the
 * matmul's Kernel IR order either way, so results are bit-identical.
 *
 * Then every other node computed from parameters, constants and constant
 * generators (arange, full) only is marked derived as well (hoist): at
 * inference it needs computing once, not on every call.
 *
 * Never applied to a graph with a training step (updates) or built for
 * training: there the parameters change every step.
 */
#include <string.h>

#include "passes.h"

/* Whether n is a parameter or computed from parameters only. */
static bool weight_like(const Node *n) { return node_persistent(n); }

/* Whether matmul n reads a constant weight as B^T. */
static bool transposed_weight(const Node *n) {
  return n->op == OP_MATMUL && n->at.tb && weight_like(n->in[1]) && n->in[1]->shape.rank == 2;
}

/* The derived transpose of w made earlier in this pass, or NULL. */
static Node *made_for(Node *const *made, int n_made, const Node *w) {
  for (int i = 0; i < n_made; i++)
    if (made[i]->in[0] == w)
      return made[i];
  return NULL;
}

/* transpose(w) of a matrix w, placed just before node `at`. */
static Node *derived_transpose(Graph *g, Node *w, int at, Loc loc) {
  Node *t = graph_add_checked(g, OP_TRANSPOSE, &w, 1, NULL, loc);
  t->derived = true;
  graph_move_last_to(g, at);
  return t;
}

/* A constant generator: arange or full, computed from its attributes
 * alone (randn, also without inputs, draws anew at each step). */
static bool generator(const Node *n) {
  return n->n_in == 0 && op_info[n->op].cls != CL_LEAF && !op_has(n->op, F_RANDOM) &&
         !n->is_output;
}

/* Marks weight-derived every node computed from parameters, constants and
 * constant generators only: a batchnorm's rsqrt(running_var + eps) and
 * its reshaped statistics, a bias reshaped to [C, 1, 1], a transformer's
 * sinusoidal positional encoding (the sines and cosines of arange's
 * positions: 14% of the transformer's batch-1 step when it was computed
 * on every call), an LSTM's first product of its zero state.  The
 * constants and generators such a node reads become derived too (computed
 * by the prepare step into the persistent region; step kernels may read
 * them there); a generator no derived node reads stays in the step, where
 * fusion computes it inside its reader's loop for nothing.  Not the
 * model's outputs, which callers read from the arena, nor random nodes.
 * Returns the number of nodes marked. */
static int hoist(Graph *g) {
  int marked = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    bool ok = op_info[n->op].cls != CL_LEAF && !n->derived && !n->is_output &&
              !op_has(n->op, F_RANDOM) && n->n_in > 0;
    for (int j = 0; ok && j < n->n_in; j++)
      ok = weight_like(n->in[j]) || n->in[j]->op == OP_CONST || generator(n->in[j]);
    if (!ok)
      continue;
    for (int j = 0; j < n->n_in; j++) {
      Node *in = n->in[j];
      marked += generator(in) && !in->derived;
      in->derived |= in->op == OP_CONST || generator(in);
    }
    n->derived = true;
    marked++;
  }
  return marked;
}

int pass_prepack(Graph *g) {
  if (g->training || g->n_updates > 0)
    return 0;
  Node **made = arena_alloc(g->arena, sizeof(Node *) * (size_t)(g->n_nodes + 1));
  int n_made = 0, rewritten = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (!transposed_weight(n))
      continue;
    Node *wt = made_for(made, n_made, n->in[1]);
    if (!wt) {
      wt = made[n_made++] = derived_transpose(g, n->in[1], i, n->loc);
      i++; /* n moved one place on */
    }
    n->in[1] = wt;
    n->at.tb = false;
    rewritten++;
  }
  return rewritten + hoist(g);
}
