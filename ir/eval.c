/*
 * eval.c: the reference evaluator's driver.  It walks the graph in node
 * order (a topological order) and calls each op's kernel from ops.def.
 *
 * Ownership.  ev->vals[i] describes node i's value: dtype and shape are
 * filled from the node by eval_init, data starts NULL.
 *  - eval_bind stores a caller's pointer (inputs, parameters, or any node
 *    the caller wants to pin); the caller keeps ownership and must keep it
 *    alive until eval_free.  owned[i] stays false.
 *  - eval_run mallocs every other live node's buffer and sets owned[i]; it
 *    reuses that buffer on later runs, so a caller can rebind inputs and run
 *    again (every owned value is recomputed each run).
 *  - eval_free frees the owned buffers and the two arrays, never bound data.
 * The kernels never allocate tensor memory; a failed allocation here is
 * reported as an error (a large model may legitimately not fit), not a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

void eval_init(Eval *ev, const Graph *g) {
  memset(ev, 0, sizeof *ev);
  ev->g = g;
  ev->cx.step = 0;
  ev->cx.training = g->training;
  size_t n = g->n_nodes ? (size_t)g->n_nodes : 1;
  ev->vals = calloc(n, sizeof *ev->vals);
  ev->owned = calloc(n, sizeof *ev->owned);
  if (!ev->vals || !ev->owned)
    die("out of memory starting the evaluator");
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *nd = g->nodes[i];
    ev->vals[i].dtype = nd->dtype;
    ev->vals[i].rank = nd->shape.rank;
    memcpy(ev->vals[i].dim, nd->shape.dim, sizeof nd->shape.dim);
  }
}

void eval_bind(Eval *ev, const Node *n, void *data) {
  ASSERT(n->id >= 0 && n->id < ev->g->n_nodes && ev->g->nodes[n->id] == n);
  if (ev->owned[n->id])
    free(ev->vals[n->id].data);
  ev->owned[n->id] = false;
  ev->vals[n->id].data = data;
}

/* Gives node i an owned buffer (kept from an earlier run if there is one). */
static int alloc_value(Eval *ev, int i, char *err, size_t errlen) {
  if (ev->owned[i])
    return 0;
  size_t bytes = rt_nbytes(&ev->vals[i]);
  void *p = malloc(bytes ? bytes : 1); /* malloc(0) may return NULL */
  if (!p) {
    char ty[160];
    const Node *nd = ev->g->nodes[i];
    snprintf(err, errlen, "out of memory allocating %zu bytes for %s %s", bytes, nd->name,
             node_type_str(nd, ty, sizeof ty));
    return -1;
  }
  ev->vals[i].data = p;
  ev->owned[i] = true;
  return 0;
}

/* Checks that every input of node i has a value (a live mask that leaves
 * out a needed node would otherwise make a kernel read NULL). */
static int inputs_ready(const Eval *ev, const Node *nd, char *err, size_t errlen) {
  for (int k = 0; k < nd->n_in; k++)
    if (!ev->vals[nd->in[k]->id].data) {
      snprintf(err, errlen, "%s needs %s, which has no value", nd->name, nd->in[k]->name);
      return -1;
    }
  return 0;
}

static int eval_node(Eval *ev, const Node *nd, const RtTensor **ins, char *err, size_t errlen) {
  int i = nd->id;
  bool leaf = nd->op == OP_INPUT || nd->op == OP_PARAM;
  if (ev->vals[i].data && !ev->owned[i])
    return 0; /* bound by the caller */
  if (leaf) {
    snprintf(err, errlen, "%s %s has no value", op_name(nd->op), nd->name);
    return -1;
  }
  if (inputs_ready(ev, nd, err, errlen) || alloc_value(ev, i, err, errlen))
    return -1;
  for (int k = 0; k < nd->n_in; k++)
    ins[k] = &ev->vals[nd->in[k]->id];
  op_info[nd->op].eval(nd, &ev->vals[i], ins, &ev->cx);
  return 0;
}

int eval_run(Eval *ev, const bool *live, char *err, size_t errlen) {
  const Graph *g = ev->g;
  int max_in = 1;
  for (int i = 0; i < g->n_nodes; i++)
    max_in = g->nodes[i]->n_in > max_in ? g->nodes[i]->n_in : max_in;
  const RtTensor **ins = malloc(sizeof *ins * (size_t)max_in);
  if (!ins) {
    snprintf(err, errlen, "out of memory starting the evaluator");
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < g->n_nodes && rc == 0; i++)
    if (!live || live[i])
      rc = eval_node(ev, g->nodes[i], ins, err, errlen);
  free(ins);
  return rc;
}

void eval_free(Eval *ev) {
  if (ev->vals && ev->owned)
    for (int i = 0; i < ev->g->n_nodes; i++)
      if (ev->owned[i])
        free(ev->vals[i].data);
  free(ev->vals);
  free(ev->owned);
  memset(ev, 0, sizeof *ev);
}

/* The end of a training step: every update's value (computed by eval_run,
 * all of them, before this is called) is copied into its target's buffer.
 * The updates are simultaneous: each reads the value as computed, never a
 * target another update of the same step has already written.  That holds
 * by construction when the value is a computed node (its own buffer); when
 * a value's buffer is also a target's (an update whose value is itself a
 * parameter, e.g. assign(a, b) and assign(b, a), which swaps a and b), the
 * value is copied aside first (running out of memory for that copy dies,
 * as eval_init does: there is no error path, and it is a few tensors). */
void eval_apply_updates(Eval *ev) {
  const Graph *g = ev->g;
  if (g->n_updates == 0)
    return;
  void **aside = calloc((size_t)g->n_updates, sizeof *aside);
  if (!aside)
    die("out of memory applying the updates");
  for (int i = 0; i < g->n_updates; i++) {
    const RtTensor *v = &ev->vals[g->updates[i].value->id];
    ASSERT(v->data && ev->vals[g->updates[i].target->id].data);
    for (int j = 0; j < g->n_updates && !aside[i]; j++)
      if (ev->vals[g->updates[j].target->id].data == v->data) {
        aside[i] = malloc(rt_nbytes(v) ? rt_nbytes(v) : 1);
        if (!aside[i])
          die("out of memory applying the updates");
        memcpy(aside[i], v->data, rt_nbytes(v));
      }
  }
  for (int i = 0; i < g->n_updates; i++) {
    RtTensor *t = &ev->vals[g->updates[i].target->id];
    const RtTensor *v = &ev->vals[g->updates[i].value->id];
    ASSERT(rt_nbytes(t) == rt_nbytes(v));
    memcpy(t->data, aside[i] ? aside[i] : v->data, rt_nbytes(t));
  }
  for (int i = 0; i < g->n_updates; i++)
    free(aside[i]);
  free(aside);
}
