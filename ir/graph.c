/*
 * graph.c: building graphs.
 *
 * graph_add is the one constructor: it copies the inputs and attributes,
 * checks the arity and runs the op's shape rule, and only then appends the
 * node, so every node in a graph is well typed.  Nodes get dense ids in
 * creation order (a topological order) and unique names ("c1", "c1_2",
 * "t17") so dumps are readable.
 *
 * graph_resolve_init decides fan-in/fan-out and the "auto" initializer of
 * each parameter from how it is used, once the whole model is built.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

Graph *graph_new(Arena *a, const char *name) {
  Graph *g = arena_alloc(a, sizeof *g);
  g->arena = a;
  g->name = arena_strdup(a, name ? name : "model");
  return g;
}

bool shape_fail(ShapeErr *e, int arg, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  e->arg = arg;
  e->attr = NULL;
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return false;
}

bool attr_fail(ShapeErr *e, const char *attr, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  e->arg = -1;
  e->attr = attr;
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return false;
}

const char *node_type_str(const Node *n, char *buf, size_t len) {
  return type_str(n->dtype, &n->shape, buf, len);
}

static Node *node_alloc(Graph *g, Op op, Node *const *in, int n_in, const Attrs *at, Loc loc) {
  Node *n = arena_alloc(g->arena, sizeof *n);
  n->op = op;
  n->n_in = n_in;
  if (n_in) {
    n->in = arena_alloc(g->arena, sizeof(Node *) * (size_t)n_in);
    memcpy(n->in, in, sizeof(Node *) * (size_t)n_in);
  }
  if (at)
    n->at = *at;
  else
    attrs_default(op, &n->at);
  n->loc = loc;
  n->trainable = false;
  return n;
}

/* --- the name table: FNV-1a hashing, linear probing --------------------- */

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void name_tab_insert(Graph *g, Node *n) {
  if (2 * (g->name_tab_n + 1) > g->name_tab_cap) {
    int cap = g->name_tab_cap ? 2 * g->name_tab_cap : 256;
    Node **old = g->name_tab;
    int old_cap = g->name_tab_cap;
    g->name_tab = arena_alloc(g->arena, sizeof(Node *) * (size_t)cap);
    g->name_tab_cap = cap;
    g->name_tab_n = 0;
    for (int i = 0; i < old_cap; i++)
      if (old[i])
        name_tab_insert(g, old[i]);
  }
  size_t mask = (size_t)g->name_tab_cap - 1;
  size_t i = name_hash(n->name) & mask;
  while (g->name_tab[i])
    i = (i + 1) & mask;
  g->name_tab[i] = n;
  g->name_tab_n++;
}

Node *graph_find(const Graph *g, const char *name) {
  if (!g->name_tab_cap)
    return NULL;
  size_t mask = (size_t)g->name_tab_cap - 1;
  for (size_t i = name_hash(name) & mask; g->name_tab[i]; i = (i + 1) & mask)
    if (strcmp(g->name_tab[i]->name, name) == 0)
      return g->name_tab[i];
  return NULL;
}

static void node_append(Graph *g, Node *n) {
  n->id = g->n_nodes;
  VEC_PUSH(g->arena, g->nodes, g->n_nodes, g->cap_nodes, n);
  if (!n->name)
    graph_name(g, n, arena_fmt(g->arena, "t%d", n->id));
  name_tab_insert(g, n);
}

Node *graph_add(Graph *g, Op op, Node *const *in, int n_in, const Attrs *at, Loc loc,
                ShapeErr *err) {
  const OpInfo *oi = &op_info[op];
  err->arg = -1;
  err->attr = NULL;
  err->msg[0] = 0;
  if (oi->arity >= 0 && n_in != oi->arity) {
    shape_fail(err, -1, "%s takes %d tensor input%s, got %d", oi->name, oi->arity,
               oi->arity == 1 ? "" : "s", n_in);
    return NULL;
  }
  if (oi->arity < 0 && n_in < 1) {
    shape_fail(err, -1, "%s takes at least one tensor", oi->name);
    return NULL;
  }
  Node *n = node_alloc(g, op, in, n_in, at, loc);
  if (!oi->shape(n, err))
    return NULL;
  if (shape_numel(&n->shape) > MAX_NUMEL) {
    char buf[128];
    shape_fail(err, -1, "%s result %s has more than 2^40 elements", oi->name,
               node_type_str(n, buf, sizeof buf));
    return NULL;
  }
  node_append(g, n);
  return n;
}

Node *graph_add_checked(Graph *g, Op op, Node *const *in, int n_in, const Attrs *at, Loc loc) {
  ShapeErr e;
  Node *n = graph_add(g, op, in, n_in, at, loc, &e);
  if (!n)
    die("ill-typed %s node: %s", op_name(op), e.msg);
  return n;
}

static Node *leaf(Graph *g, Op op, const char *name, DType dt, Shape s, Loc loc) {
  ASSERT(s.rank >= 0 && s.rank <= MAX_RANK && shape_numel(&s) <= MAX_NUMEL);
  for (int i = 0; i < s.rank; i++)
    ASSERT(s.dim[i] >= 0);
  Node *n = node_alloc(g, op, NULL, 0, NULL, loc);
  n->dtype = dt;
  n->shape = s;
  if (name) {
    graph_name(g, n, name);
    n->named = true;
  }
  node_append(g, n);
  return n;
}

Node *graph_input(Graph *g, const char *name, DType dt, Shape s, Loc loc) {
  return leaf(g, OP_INPUT, name, dt, s, loc);
}

Node *graph_param(Graph *g, const char *name, DType dt, Shape s, Init init, bool trainable,
                  Loc loc) {
  Node *n = leaf(g, OP_PARAM, name, dt, s, loc);
  n->init = init;
  n->trainable = trainable;
  return n;
}

Node *graph_const(Graph *g, DType dt, double value, Loc loc) {
  Node *n = leaf(g, OP_CONST, NULL, dt, shape_scalar(), loc);
  n->at.value = dt == DT_I32 ? trunc(value) : value;
  return n;
}

Node *graph_find_value(const Graph *g, const char *name) {
  for (int i = 0; i < g->n_outputs; i++)
    if (strcmp(g->outputs[i].name, name) == 0)
      return g->outputs[i].node;
  for (int i = 0; i < g->n_values; i++)
    if (strcmp(g->values[i].name, name) == 0)
      return g->values[i].node;
  return graph_find(g, name);
}

/* Picks a free name for n (not yet appended); node_append records it. */
void graph_name(Graph *g, Node *n, const char *base) {
  if (!graph_find(g, base)) {
    n->name = arena_strdup(g->arena, base);
    return;
  }
  for (int k = 2;; k++) {
    char *cand = arena_fmt(g->arena, "%s_%d", base, k);
    if (!graph_find(g, cand)) {
      n->name = cand;
      return;
    }
  }
}

void graph_rename(Graph *g, Node *n, const char *base) {
  /* The old name's slot stays in the table; lookups compare the node's
   * current name, so it simply stops matching. */
  graph_name(g, n, base);
  n->named = true;
  name_tab_insert(g, n);
}

void graph_add_update(Graph *g, Node *target, Node *value) {
  ASSERT(target->op == OP_PARAM && target->dtype == value->dtype &&
         shape_eq(&target->shape, &value->shape));
  Update u = {target, value};
  VEC_PUSH(g->arena, g->updates, g->n_updates, g->cap_updates, u);
}

void graph_add_output(Graph *g, const char *name, Node *n, Loc loc) {
  NamedNode o = {arena_strdup(g->arena, name), n, loc};
  VEC_PUSH(g->arena, g->outputs, g->n_outputs, g->cap_outputs, o);
  n->is_output = true;
}

void graph_set_value(Graph *g, const char *name, Node *n, Loc loc) {
  for (int i = 0; i < g->n_values; i++)
    if (strcmp(g->values[i].name, name) == 0) {
      g->values[i].node = n;
      g->values[i].loc = loc;
      return;
    }
  NamedNode v = {arena_strdup(g->arena, name), n, loc};
  VEC_PUSH(g->arena, g->values, g->n_values, g->cap_values, v);
}

int64_t graph_param_count(const Graph *g, bool trainable_only) {
  int64_t total = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_PARAM && (!trainable_only || n->trainable))
      total += shape_numel(&n->shape);
  }
  return total;
}

void graph_move_last_to(Graph *g, int at) {
  Node *t = g->nodes[g->n_nodes - 1];
  memmove(&g->nodes[at + 1], &g->nodes[at], sizeof(Node *) * (size_t)(g->n_nodes - 1 - at));
  g->nodes[at] = t;
  for (int i = at; i < g->n_nodes; i++)
    g->nodes[i]->id = i;
}

Users graph_users(const Graph *g) {
  Users u;
  u.off = arena_alloc(g->arena, sizeof(int) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i]->n_in; j++)
      u.off[g->nodes[i]->in[j]->id + 1]++;
  for (int i = 0; i < g->n_nodes; i++)
    u.off[i + 1] += u.off[i];
  int *fill = arena_alloc(g->arena, sizeof(int) * (size_t)(g->n_nodes + 1));
  u.list = arena_alloc(g->arena, sizeof(Node *) * (size_t)(u.off[g->n_nodes] + 1));
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i]->n_in; j++) {
      int k = g->nodes[i]->in[j]->id;
      u.list[u.off[k] + fill[k]++] = g->nodes[i];
    }
  return u;
}

void graph_saved_for_backward(const Graph *g, bool *saved) {
  memset(saved, 0, sizeof(bool) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    for (int j = 0; n->is_backward && j < n->n_in; j++)
      if (!n->in[j]->is_backward)
        saved[n->in[j]->id] = true;
  }
}

void graph_live(const Graph *g, Node *const *roots, int n_roots, bool *live) {
  memset(live, 0, sizeof(bool) * (size_t)g->n_nodes);
  for (int i = 0; i < n_roots; i++)
    live[roots[i]->id] = true;
  for (int i = g->n_nodes - 1; i >= 0; i--)
    if (live[i])
      for (int j = 0; j < g->nodes[i]->n_in; j++)
        live[g->nodes[i]->in[j]->id] = true;
}

/* --- initializer resolution ---------------------------------------------- */

const char *init_name(InitKind k) { return rt_init_name(k); }

/* Fan-in and fan-out as the use defines them: a matmul's right operand
 * [K, M] (or [M, K] transposed) maps K inputs to M outputs; a conv weight
 * [O, I/g, kh, kw] maps I/g*kh*kw inputs per output.  Otherwise PyTorch's
 * convention for [out, in, ...] tensors. */
static void fans(const Users *us, Node *p) {
  const Shape *s = &p->shape;
  Node *u = us->off[p->id] < us->off[p->id + 1] ? us->list[us->off[p->id]] : NULL;
  int slot = 0;
  while (u && slot < u->n_in && u->in[slot] != p)
    slot++;
  int64_t rf = 1;
  for (int i = 2; i < s->rank; i++)
    rf *= s->dim[i];
  if (s->rank == 0) {
    p->init.fan_in = p->init.fan_out = 1;
  } else if (s->rank == 1) {
    p->init.fan_in = p->init.fan_out = s->dim[0];
  } else if (u && u->op == OP_MATMUL && slot == 1 && s->rank == 2 && !u->at.tb) {
    p->init.fan_in = s->dim[0];
    p->init.fan_out = s->dim[1];
  } else {
    /* [out, in, k...]; conv_transpose2d's [in, out/g, k...] too, as PyTorch */
    p->init.fan_in = s->dim[1] * rf;
    p->init.fan_out = s->dim[0] * rf;
  }
}

static bool is_relu_family(Op op) {
  return op == OP_RELU || op == OP_LEAKY_RELU || op == OP_ELU || op == OP_GELU ||
         op == OP_CLAMP;
}

/* Ops an activation's input passes through on its way from a layer: bias
 * adds, normalization arithmetic, pooling, reshapes. */
static bool is_transparent(Op op) {
  switch (op) {
  case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_MATMUL: case OP_CONV2D:
  case OP_CONV_TRANSPOSE2D: case OP_MAXPOOL2D: case OP_AVGPOOL2D: case OP_RESHAPE:
  case OP_TRANSPOSE: case OP_CONCAT: case OP_SLICE: case OP_BROADCAST_TO:
  case OP_UPSAMPLE: case OP_DROPOUT:
    return true;
  default:
    return false;
  }
}

/* Does a value flow from node `from` into a ReLU-family activation before
 * any other nonlinearity?  A bounded forward search. */
static bool feeds_relu(const Users *us, const Node *from, int depth) {
  if (depth > 8)
    return false;
  for (int k = us->off[from->id]; k < us->off[from->id + 1]; k++) {
    const Node *u = us->list[k];
    if (is_relu_family(u->op))
      return true;
    if (is_transparent(u->op) && feeds_relu(us, u, depth + 1))
      return true;
  }
  return false;
}

void graph_resolve_init(Graph *g) {
  Users us = graph_users(g);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *p = g->nodes[i];
    if (p->op != OP_PARAM)
      continue;
    fans(&us, p);
    if (p->init.kind == RT_INIT_AUTO)
      p->init.kind = feeds_relu(&us, p, 0) ? RT_INIT_HE : RT_INIT_XAVIER;
  }
}
