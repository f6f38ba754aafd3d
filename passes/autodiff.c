/*
 * autodiff.c: reverse-mode differentiation as a graph transformation.
 *
 * From a scalar loss, build the backward pass as ordinary nodes appended to
 * the same graph (seed 002, section 7.2.1: an explicit backward path, not
 * a mirror walked at run time), so that later passes see forward, backward
 * and update as one graph.
 *
 *   1. wants[v]: v lies on a path from a value we differentiate with
 *      respect to (trainable parameters, inputs on request) to the loss,
 *      and is f32.  Nothing else gets a gradient node.
 *   2. Walk the forward nodes from the loss back to the start.  A node's
 *      gradient is the sum of the contributions its consumers' rules made
 *      (one add_n node when there are several: gradient aggregation, no
 *      split node in the forward graph); its own rule (ops.def GRAD column,
 *      ir/grad.c) then contributes to its inputs.
 *   3. Reaching an op without a gradient on such a path is a located error.
 *
 * Backward nodes are marked is_backward with grad_of pointing at the
 * forward node whose rule made them; the forward values they read are their
 * forward dependencies (graph_saved_for_backward lists them), so anything
 * else can be freed once the forward pass is done.
 */
#include <string.h>

#include "passes.h"

/* wants[i] for the forward nodes [0, n0): on a path from wrt to the loss. */
static bool *find_wanted(Graph *g, Node *loss, Node *const *wrt, int n_wrt, int n0) {
  bool *from = arena_alloc(g->arena, sizeof(bool) * (size_t)n0);
  bool *to = arena_alloc(g->arena, sizeof(bool) * (size_t)n0);
  for (int k = 0; k < n_wrt; k++)
    from[wrt[k]->id] = true;
  for (int i = 0; i < n0; i++) {
    Node *n = g->nodes[i];
    for (int j = 0; j < n->n_in && !from[i]; j++)
      from[i] = from[n->in[j]->id] && n->dtype == DT_F32;
  }
  to[loss->id] = true;
  for (int i = loss->id; i >= 0; i--)
    if (to[i])
      for (int j = 0; j < g->nodes[i]->n_in; j++)
        to[g->nodes[i]->in[j]->id] = true;
  for (int i = 0; i < n0; i++)
    from[i] = from[i] && to[i];
  return from;
}

/* The gradient of n: its one contribution, or the sum of several. */
static Node *gather(GradCtx *cx, Node *n) {
  int id = n->id, k = cx->n_contrib[id];
  if (k == 1)
    return cx->contrib[id][0];
  cx->cur = n;
  return grad_node(cx, OP_ADD_N, cx->contrib[id], k, NULL);
}

static void check_loss(Diag *d, Node *loss) {
  char buf[160];
  if (loss->dtype != DT_F32 || loss->shape.rank != 0)
    error_at(d, loss->loc, "the loss must be a scalar f32 value, but %s is %s", loss->name,
             node_type_str(loss, buf, sizeof buf));
}

/* Names a parameter's gradient "grad(p)" if it is a fresh backward node. */
static void name_grad(Graph *g, Node *gr, const Node *p) {
  if (gr->is_backward && !gr->named && gr->op != OP_CONST)
    graph_rename(g, gr, arena_fmt(g->arena, "grad(%s)", p->name));
}

void pass_autodiff(Graph *g, Diag *d, Node *loss, Node *const *wrt, int n_wrt, Node **grads) {
  check_loss(d, loss);
  int n0 = g->n_nodes;
  GradCtx cx = {0};
  cx.g = g;
  cx.wants = find_wanted(g, loss, wrt, n_wrt, n0);
  cx.contrib = arena_alloc(g->arena, sizeof(Node **) * (size_t)n0);
  cx.n_contrib = arena_alloc(g->arena, sizeof(int) * (size_t)n0);
  cx.cap_contrib = arena_alloc(g->arena, sizeof(int) * (size_t)n0);
  cx.cur = loss;
  if (cx.wants[loss->id]) {
    Node *one = graph_const(g, DT_F32, 1.0, loss->loc);
    one->is_backward = true;
    one->grad_of = loss;
    grad_acc(&cx, loss, one);
  }
  Node **total = arena_alloc(g->arena, sizeof(Node *) * (size_t)n0);
  for (int i = loss->id; i >= 0; i--) {
    Node *n = g->nodes[i];
    if (!cx.wants[i] || cx.n_contrib[i] == 0)
      continue;
    total[i] = gather(&cx, n);
    if (op_info[n->op].cls == CL_LEAF)
      continue;
    if (!op_info[n->op].grad)
      error_at(d, n->loc, "cannot differentiate through %s: the op has no gradient (wrap the "
               "value in stop_gradient() if none should flow)", op_name(n->op));
    cx.cur = n;
    op_info[n->op].grad(&cx, n, total[i]);
  }
  for (int k = 0; k < n_wrt; k++) {
    Node *p = wrt[k];
    if (total[p->id]) {
      grads[k] = total[p->id];
      name_grad(g, grads[k], p);
      continue;
    }
    /* the loss does not depend on p: its gradient is zero */
    Attrs at;
    attrs_default(OP_FULL, &at);
    at.n_shape = p->shape.rank;
    memcpy(at.shape, p->shape.dim, sizeof at.shape);
    at.to = DT_F32;
    grads[k] = graph_add_checked(g, OP_FULL, NULL, 0, &at, p->loc);
    grads[k]->is_backward = true;
    grads[k]->grad_of = p;
    name_grad(g, grads[k], p);
  }
}
