/*
 * eval.c: the reference evaluator's driver.  It walks the graph in node
 * order (a topological order), or in a memory plan's schedule, and calls
 * each op's kernel from ops.def.
 *
 * Where values live.  ev->vals[i] describes node i's value: dtype and shape
 * are filled from the node by eval_init, data starts NULL.
 *  - eval_bind: the caller's buffer (parameters, or an input it owns); the
 *    caller keeps ownership.  The node counts as given: never computed.
 *  - eval_input: the buffer for an input the caller fills before each run
 *    (in the arena when planned, else allocated); also given.
 *  - eval_use_arena: every node with offset[i] >= 0 lives at arena +
 *    offset[i], and eval_run follows the plan's order.  A wrong plan then
 *    gives wrong numbers, which is how the memory planner is tested.
 *  - any other live node gets its own malloc'ed buffer on the first run,
 *    reused by later runs (owned[i]).
 * Every node that is not given is recomputed by each eval_run.  The kernels
 * never allocate; a failed allocation here is reported, not a crash.
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
  ev->given = calloc(n, sizeof *ev->given);
  if (!ev->vals || !ev->owned || !ev->given)
    die("out of memory starting the evaluator");
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *nd = g->nodes[i];
    ev->vals[i].dtype = nd->dtype;
    ev->vals[i].rank = nd->shape.rank;
    memcpy(ev->vals[i].dim, nd->shape.dim, sizeof nd->shape.dim);
  }
}

static void release(Eval *ev, int i) {
  if (ev->owned[i])
    free(ev->vals[i].data);
  ev->owned[i] = false;
  ev->vals[i].data = NULL;
}

void eval_bind(Eval *ev, const Node *n, void *data) {
  ASSERT(n->id >= 0 && n->id < ev->g->n_nodes && ev->g->nodes[n->id] == n);
  release(ev, n->id);
  ev->vals[n->id].data = data;
  ev->given[n->id] = true;
}

void eval_use_arena(Eval *ev, void *arena, const int64_t *offset, Node *const *order,
                    int n_order) {
  for (int i = 0; i < ev->g->n_nodes; i++)
    if (offset[i] >= 0 && !ev->given[i]) {
      release(ev, i);
      ev->vals[i].data = (char *)arena + offset[i];
    }
  ev->order = order;
  ev->n_order = n_order;
}

/* Gives node i a buffer of its own unless it already has one. */
static int alloc_value(Eval *ev, int i, char *err, size_t errlen) {
  if (ev->vals[i].data)
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

void *eval_input(Eval *ev, const Node *n) {
  char err[256];
  if (alloc_value(ev, n->id, err, sizeof err))
    return NULL;
  ev->given[n->id] = true;
  return ev->vals[n->id].data;
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
  if (ev->given[i])
    return 0;
  if (nd->op == OP_INPUT || nd->op == OP_PARAM) {
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
  if (ev->order) /* a memory plan's schedule */
    for (int k = 0; k < ev->n_order && rc == 0; k++)
      rc = eval_node(ev, ev->order[k], ins, err, errlen);
  else
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
  free(ev->given);
  memset(ev, 0, sizeof *ev);
}

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
