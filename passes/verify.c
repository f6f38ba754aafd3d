/*
 * verify.c: the graph verifier (QBE's ssacheck, Glow's verify-after-all).
 *
 * It re-derives everything it can rather than trusting the constructor:
 * each node's shape rule is run again on a copy and must agree with the
 * stored type.  Tests run it after every build of every model; later passes
 * run it after themselves under --verify-each.
 */
#include <stdarg.h>
#include <string.h>

#include "passes.h"

bool verify_fail(char *err, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, n, fmt, ap);
  va_end(ap);
  return false;
}


static bool verify_node(const Graph *g, const Node *n, int i, char *err, size_t len) {
  const OpInfo *oi = &op_info[n->op];
  if (n->id != i)
    return verify_fail(err, len, "node %s has id %d at position %d", n->name, n->id, i);
  if ((oi->arity >= 0 && n->n_in != oi->arity) || (oi->arity < 0 && n->n_in < 1))
    return verify_fail(err, len, "node %s (%s) has %d inputs", n->name, oi->name, n->n_in);
  for (int j = 0; j < n->n_in; j++) {
    const Node *in = n->in[j];
    if (!in || in->id < 0 || in->id >= i || g->nodes[in->id] != in)
      return verify_fail(err, len, "input %d of node %s is not an earlier node of the graph", j, n->name);
  }
  if (oi->cls == CL_LEAF)
    return true;
  Node copy = *n;
  ShapeErr se;
  if (!oi->shape(&copy, &se))
    return verify_fail(err, len, "node %s (%s) no longer passes its shape rule: %s", n->name, oi->name,
                se.msg);
  if (!shape_eq(&copy.shape, &n->shape) || copy.dtype != n->dtype) {
    char a[160], b[160];
    return verify_fail(err, len, "node %s (%s) is stored as %s but its rule gives %s", n->name, oi->name,
                node_type_str(n, a, sizeof a), node_type_str(&copy, b, sizeof b));
  }
  return true;
}

bool graph_verify(const Graph *g, char *err, size_t errlen) {
  for (int i = 0; i < g->n_nodes; i++) {
    if (!verify_node(g, g->nodes[i], i, err, errlen))
      return false;
    const Node *other = graph_find(g, g->nodes[i]->name);
    if (other != g->nodes[i])
      return verify_fail(err, errlen, "two nodes are named %s", g->nodes[i]->name);
  }
  for (int i = 0; i < g->n_outputs; i++) {
    const Node *o = g->outputs[i].node;
    if (o->id >= g->n_nodes || g->nodes[o->id] != o || !o->is_output)
      return verify_fail(err, errlen, "output %s is not a marked node of the graph", g->outputs[i].name);
  }
  return true;
}
