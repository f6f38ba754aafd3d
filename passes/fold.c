/*
 * fold.c: per-channel affine ops after a convolution folded into its
 * weights, at inference (batchnorm folding; --fuse kind `fold`).
 *
 * At inference a batchnorm is per-channel arithmetic on the convolution's
 * output y = conv2d(x, W), with tensors made from parameters only:
 *
 *   ((y - reshape(mean)) * rsqrt(var + eps)) * reshape(weight) + reshape(bias)
 *
 * Every chain of add, sub and mul by such per-channel values (shape
 * [C, 1, 1], [1, C, 1, 1] or one element, C the output channels) is
 * y * S + T for a per-channel scale S and shift T, and conv2d is linear
 * in W, one output channel per row of W, so
 *
 *   y * S + T = conv2d(x, W * reshape(S, [C, 1, 1, 1])) + T
 *
 * The pass rewrites each such chain (ending anywhere: before a relu, a
 * residual add) into the right-hand side.  S, T and the scaled weights
 * are computed from parameters only, so pass_prepack, which runs next,
 * makes them weight-derived: the prepare step computes them once, and a
 * step is the convolution and one add (its epilogue) per batchnorm.
 * The convolution's own bias (conv2d(..., bias=true) adds it the same
 * way) joins T.
 *
 * Rounding: the folded convolution multiplies by S before summing, so its
 * results differ from the unfolded ones in the last bits (like every
 * framework's folded batchnorm); the tests compare them with the
 * reference evaluator within a tolerance (test_prepack.c), and --fuse
 * without `fold` keeps the graph's own arithmetic.  Only a chain with a
 * multiplication is rewritten (adds alone are an epilogue already), and
 * each value on it must have one reader and not be an output, as for any
 * fusion.  Never applied to a graph built for training.
 */
#include <string.h>

#include "passes.h"

/* fixed[i]: node i is computed from parameters and constants only (not
 * random), so the prepare step can compute it. */
static bool *fixed_nodes(const Graph *g) {
  bool *fixed = arena_alloc(g->arena, sizeof(bool) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    bool ok = n->op == OP_PARAM || n->op == OP_CONST ||
              (op_info[n->op].cls != CL_LEAF && n->n_in > 0 && !op_has(n->op, F_RANDOM));
    for (int j = 0; ok && j < n->n_in && n->op != OP_PARAM && n->op != OP_CONST; j++)
      ok = fixed[n->in[j]->id];
    fixed[i] = ok;
  }
  return fixed;
}

/* Whether t broadcasts against y [N, C, H, W] along the channel axis only. */
static bool per_channel(const Node *t, const Node *y) {
  if (t->dtype != DT_F32 || t->shape.rank > 4)
    return false;
  for (int i = 0; i < t->shape.rank; i++) {
    int axis = 4 - t->shape.rank + i;
    int64_t d = t->shape.dim[i];
    if (d != 1 && !(axis == 1 && d == y->shape.dim[1]))
      return false;
  }
  return true;
}

#define MAX_STEPS 16

typedef struct Chain {
  Node *conv, *end;
  Op op[MAX_STEPS];   /* OP_ADD, OP_SUB (y - t) or OP_MUL */
  Node *t[MAX_STEPS]; /* the per-channel operand */
  int n;
  bool scales;        /* some step multiplies */
} Chain;

/* The chain of per-channel add/sub/mul after conv (c->n == 0: none). */
static void follow(const Users *us, const bool *fixed, Node *conv, Chain *c) {
  *c = (Chain){.conv = conv, .end = conv};
  for (Node *y = conv; c->n < MAX_STEPS && !y->is_output;) {
    int n_readers = us->off[y->id + 1] - us->off[y->id];
    Node *r = n_readers == 1 ? us->list[us->off[y->id]] : NULL;
    if (!r || r->is_output || r->n_in != 2 || r->in[0] == r->in[1] ||
        !shape_eq(&r->shape, &conv->shape) ||
        !(r->op == OP_ADD || r->op == OP_MUL || (r->op == OP_SUB && r->in[0] == y)))
      break;
    Node *t = r->in[0] == y ? r->in[1] : r->in[0];
    if (!fixed[t->id] || !per_channel(t, conv))
      break;
    c->op[c->n] = r->op;
    c->t[c->n++] = t;
    c->scales |= r->op == OP_MUL;
    c->end = y = r;
  }
}

/* A node made by the pass, placed just before `before` so ids stay a
 * topological order. */
static Node *add_before(Graph *g, Node *before, Op op, Node *a, Node *b, const Attrs *at) {
  Node *in[2] = {a, b};
  Node *n = graph_add_checked(g, op, in, b ? 2 : 1, at, before->loc);
  graph_move_last_to(g, before->id);
  return n;
}

static Node *reshape_before(Graph *g, Node *before, Node *x, int rank, const int64_t *dim) {
  Attrs at;
  attrs_default(OP_RESHAPE, &at);
  at.n_shape = rank;
  memcpy(at.shape, dim, sizeof(int64_t) * (size_t)rank);
  return add_before(g, before, OP_RESHAPE, x, NULL, &at);
}

/* conv2d(x, W * S) + T in place of the chain's end. */
static void rewrite(Graph *g, const Chain *c) {
  Node *e = c->end, *S = NULL, *T = NULL;
  for (int i = 0; i < c->n; i++) {
    Node *t = c->t[i];
    if (c->op[i] == OP_MUL) {
      S = S ? add_before(g, e, OP_MUL, S, t, NULL) : t;
      T = T ? add_before(g, e, OP_MUL, T, t, NULL) : NULL;
    } else if (c->op[i] == OP_ADD) {
      T = T ? add_before(g, e, OP_ADD, T, t, NULL) : t;
    } else {
      T = T ? add_before(g, e, OP_SUB, T, t, NULL) : add_before(g, e, OP_NEG, t, NULL, NULL);
    }
  }
  int64_t dim[4] = {shape_numel(&S->shape), 1, 1, 1};
  Node *s4 = reshape_before(g, e, S, 4, dim);
  Node *w = add_before(g, e, OP_MUL, c->conv->in[1], s4, NULL);
  Node *conv = add_before(g, e, OP_CONV2D, c->conv->in[0], w, &c->conv->at);
  conv->loc = c->conv->loc;
  Node *out = T ? add_before(g, e, OP_ADD, conv, T, NULL) : conv;
  for (int i = e->id + 1; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i]->n_in; j++)
      if (g->nodes[i]->in[j] == e)
        g->nodes[i]->in[j] = out;
}

int pass_fold_affine(Graph *g) {
  if (g->training || g->n_updates > 0)
    return 0;
  const bool *fixed = fixed_nodes(g);
  Users us = graph_users(g);
  int n_conv = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n_conv += g->nodes[i]->op == OP_CONV2D;
  Chain *chains = arena_alloc(g->arena, sizeof(Chain) * (size_t)(n_conv + 1));
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_CONV2D && !fixed[i] && fixed[g->nodes[i]->in[1]->id]) {
      follow(&us, fixed, g->nodes[i], &chains[n]);
      n += chains[n].scales;
    }
  for (int i = 0; i < n; i++) /* after every chain is found: ids move from here on */
    rewrite(g, &chains[i]);
  return n;
}
