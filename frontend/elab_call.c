/*
 * elab_call.c: calls.
 *
 * A call `f(args)` resolves, in order, to: a block of the user's file, a
 * compile-time builtin (dim, shape, split, range, normal, ...), a block of
 * the prelude (dense, conv2d, batchnorm, ...), or an op of ir/ops.def.
 * `op.f(args)` always means the op.  Code in the prelude never sees the
 * user's blocks.
 *
 * For an op, the first arguments are its tensor inputs (numbers become
 * constants), and the rest fill its attributes: positional ones in the
 * order of its AttrSpec table, named ones by name.
 */
#include <math.h>
#include <string.h>

#include "elab.h"

typedef struct Args {
  Value *v;
  const char **names;
  Loc *locs;
  int n, n_pos;
} Args;

static Args eval_args(Elab *e, const Expr *x) {
  Args a = {0};
  a.n = x->n_args;
  a.v = arena_alloc(e->a, sizeof(Value) * (size_t)(a.n + 1));
  a.names = arena_alloc(e->a, sizeof(char *) * (size_t)(a.n + 1));
  a.locs = arena_alloc(e->a, sizeof(Loc) * (size_t)(a.n + 1));
  for (int i = 0; i < a.n; i++) {
    const Arg *g = &x->args[i];
    if (!g->name && i > a.n_pos)
      elab_error(e, g->loc, "positional argument after a named one");
    for (int j = 0; g->name && j < i; j++)
      if (a.names[j] && strcmp(a.names[j], g->name) == 0)
        elab_error(e, g->loc, "argument '%s' is given twice", g->name);
    a.v[i] = eval_expr(e, g->value);
    a.names[i] = g->name;
    a.locs[i] = g->value->loc;
    if (!g->name)
      a.n_pos++;
  }
  return a;
}

/* --- resolution -------------------------------------------------------------- */

typedef enum Callee { C_NONE, C_USER_BLOCK, C_BUILTIN, C_PRELUDE_BLOCK, C_OP } Callee;

static bool is_builtin(const char *name);

static Callee resolve(const Elab *e, const Expr *x, const Decl **blk, int *op) {
  bool in_prelude = e->fr && e->fr->in_prelude;
  *blk = NULL;
  *op = -1;
  if (!x->qualified) {
    if (!in_prelude && (*blk = find_block(e->user, x->str)))
      return C_USER_BLOCK;
    if (is_builtin(x->str))
      return C_BUILTIN;
    if ((*blk = find_block(e->prelude, x->str)))
      return C_PRELUDE_BLOCK;
  }
  *op = op_lookup(x->str);
  return *op >= 0 ? C_OP : C_NONE;
}

static int count_layer_calls(const Elab *e, const Expr *x) {
  if (!x)
    return 0;
  int n = count_layer_calls(e, x->a) + count_layer_calls(e, x->b);
  for (int i = 0; i < x->n_items; i++)
    n += count_layer_calls(e, x->items[i]);
  for (int i = 0; i < x->n_slices; i++)
    n += count_layer_calls(e, x->slices[i].lo) + count_layer_calls(e, x->slices[i].hi) +
         count_layer_calls(e, x->slices[i].step);
  for (int i = 0; i < x->n_args; i++)
    n += count_layer_calls(e, x->args[i].value);
  if (x->kind == E_CALL) {
    const Decl *b;
    int op;
    Callee c = resolve(e, x, &b, &op);
    if ((c == C_USER_BLOCK || c == C_PRELUDE_BLOCK) && b->creates_params)
      n++;
  }
  return n;
}

int call_layer_count(const Elab *e, const Expr *x) { return count_layer_calls(e, x); }

/* --- builtins ------------------------------------------------------------------ */

/* Matches args to the named parameters params[0..n); unset ones stay V_NONE. */
static void bind_builtin(Elab *e, const Expr *x, const Args *a, const char *const *params,
                         int n, int n_required, Value *out) {
  for (int i = 0; i < n; i++)
    out[i] = (Value){.kind = V_NONE};
  for (int i = 0; i < a->n; i++) {
    int k = i;
    if (a->names[i]) {
      for (k = 0; k < n && strcmp(params[k], a->names[i]) != 0; k++)
        ;
      if (k == n)
        elab_error(e, x->args[i].loc, "%s() has no argument '%s'", x->str, a->names[i]);
    } else if (i >= n) {
      elab_error(e, x->args[i].loc, "%s() takes at most %d argument%s", x->str, n,
                 n == 1 ? "" : "s");
    }
    out[k] = a->v[i]; /* keeps its origin: where the user wrote it */
  }
  for (int i = 0; i < n_required; i++)
    if (out[i].kind == V_NONE)
      elab_error(e, x->loc, "%s() needs argument '%s'", x->str, params[i]);
}

static Node *want_tensor(Elab *e, const Value *v, const char *fn) {
  if (v->kind != V_TENSOR)
    elab_error(e, v->origin, "%s() needs a tensor, got %s", fn, v_describe(e, v));
  return v->node;
}

static Value make_list(Elab *e, int n) {
  Value r = {.kind = V_LIST, .n = n};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(n + 1));
  return r;
}

static Value bi_dim(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x", "axis"};
  Value v[2];
  bind_builtin(e, x, a, p, 2, 2, v);
  Node *n = want_tensor(e, &v[0], "dim");
  int64_t ax = v_to_int(e, &v[1], v[1].origin, "the axis of dim()");
  int axis = (int)ax;
  if (ax != axis || !axis_norm(&axis, n->shape.rank)) {
    char buf[160];
    elab_error(e, v[1].origin, "axis %lld is out of range for %s", (long long)ax,
               node_type_str(n, buf, sizeof buf));
  }
  return v_int(n->shape.dim[axis]);
}

static Value bi_shape_like(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x"};
  Value v[1];
  bind_builtin(e, x, a, p, 1, 1, v);
  Node *n = want_tensor(e, &v[0], x->str);
  if (strcmp(x->str, "rank") == 0)
    return v_int(n->shape.rank);
  if (strcmp(x->str, "numel") == 0)
    return v_int(shape_numel(&n->shape));
  if (strcmp(x->str, "channels") == 0) {
    char buf[160];
    if (n->shape.rank < 2)
      elab_error(e, v[0].origin, "channels() needs a tensor with at least 2 axes [N, C, ...], "
                 "got %s", node_type_str(n, buf, sizeof buf));
    return v_int(n->shape.dim[1]);
  }
  Value r = make_list(e, n->shape.rank);
  for (int i = 0; i < n->shape.rank; i++)
    r.items[i] = v_int(n->shape.dim[i]);
  return r;
}

static Value bi_len(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x"};
  Value v[1];
  bind_builtin(e, x, a, p, 1, 1, v);
  if (v[0].kind == V_LIST || v[0].kind == V_TUPLE)
    return v_int(v[0].n);
  if (v[0].kind == V_STR)
    return v_int((int64_t)strlen(v[0].s));
  if (v[0].kind == V_TENSOR)
    return v_int(v[0].node->shape.rank ? v[0].node->shape.dim[0] : 1);
  elab_error(e, v[0].origin, "len() needs a list, a string or a tensor, got %s",
             v_describe(e, &v[0]));
}

static Value bi_range(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"a", "b"};
  Value v[2];
  bind_builtin(e, x, a, p, 2, 1, v);
  int64_t lo = 0, hi = v_to_int(e, &v[0], v[0].origin, "the range end");
  if (v[1].kind != V_NONE) {
    lo = hi;
    hi = v_to_int(e, &v[1], v[1].origin, "the range end");
  }
  if (hi - lo > 100000)
    elab_error(e, x->loc, "range() would make more than 100000 items");
  Value r = make_list(e, hi > lo ? (int)(hi - lo) : 0);
  for (int i = 0; i < r.n; i++)
    r.items[i] = v_int(lo + i);
  return r;
}

static Value bi_pair(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x"};
  Value v[1];
  bind_builtin(e, x, a, p, 1, 1, v);
  if (v[0].kind == V_LIST) {
    if (v[0].n != 2)
      elab_error(e, v[0].origin, "expected one number or a list of two, got a list of %d",
                 v[0].n);
    return v[0];
  }
  Value r = make_list(e, 2);
  r.items[0] = r.items[1] = v[0];
  return r;
}

static Value bi_convert(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x"};
  Value v[1];
  bind_builtin(e, x, a, p, 1, 1, v);
  if (strcmp(x->str, "str") == 0)
    return v[0].kind == V_STR ? v[0] : v_str(v_text(e, &v[0]));
  if (!v_is_number(&v[0]))
    elab_error(e, v[0].origin, "%s() needs a number, got %s", x->str, v_describe(e, &v[0]));
  double d = v_number(&v[0]);
  if (strcmp(x->str, "float") == 0)
    return v_float(d);
  if (!(fabs(d) < 9e15))
    elab_error(e, v[0].origin, "int(): %g is out of range", d);
  return v_int((int64_t)trunc(d));
}

/* split(x, parts, axis=0): parts is a count (equal parts) or a list of sizes. */
static Value bi_split(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"x", "parts", "axis"};
  Value v[3];
  bind_builtin(e, x, a, p, 3, 2, v);
  Node *t = want_tensor(e, &v[0], "split");
  char buf[160];
  int axis = v[2].kind == V_NONE ? 0 : (int)v_to_int(e, &v[2], v[2].origin, "the axis");
  if (!axis_norm(&axis, t->shape.rank))
    elab_error(e, v[2].origin, "split: axis is out of range for %s", node_type_str(t, buf, sizeof buf));
  int64_t d = t->shape.dim[axis], sizes[1024];
  int k;
  if (v[1].kind == V_LIST) {
    k = v[1].n;
    int64_t sum = 0;
    for (int i = 0; i < k && i < 1024; i++)
      sum += sizes[i] = v_to_int(e, &v[1].items[i], v[1].origin, "a split size");
    if (k > 1024 || sum != d)
      elab_error(e, v[1].origin, "split: sizes add up to %lld but axis %d of %s is %lld",
                 (long long)sum, axis, node_type_str(t, buf, sizeof buf), (long long)d);
  } else {
    int64_t parts = v_to_int(e, &v[1], v[1].origin, "the number of parts");
    if (parts < 1 || parts > 1024 || d % parts)
      elab_error(e, v[1].origin, "split: axis %d of %s (size %lld) does not split into %lld "
                 "equal parts", axis, node_type_str(t, buf, sizeof buf), (long long)d,
                 (long long)parts);
    k = (int)parts;
    for (int i = 0; i < k; i++)
      sizes[i] = d / parts;
  }
  Value r = {.kind = V_TUPLE, .n = k};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(k + 1));
  int64_t off = 0;
  Loc l = user_loc(e, v[0].origin);
  for (int i = 0; i < k; i++) {
    Attrs at;
    attrs_default(OP_SLICE, &at);
    for (int j = 0; j < t->shape.rank; j++)
      at.begin[j] = 0, at.end[j] = t->shape.dim[j], at.step[j] = 1;
    at.begin[axis] = off;
    at.end[axis] = off += sizes[i];
    r.items[i] = v_tensor(add_node(e, OP_SLICE, &t, &l, 1, &at, NULL, x->loc));
  }
  return r;
}

static Value bi_init(Elab *e, const Expr *x, const Args *a) {
  static const char *const pn[] = {"mean", "std"}, *const pu[] = {"low", "high"},
                           *const pc[] = {"value"};
  Value v[2], r = {.kind = V_INIT};
  if (strcmp(x->str, "normal") == 0) {
    bind_builtin(e, x, a, pn, 2, 0, v);
    r.init = (Init){RT_INIT_NORMAL, v[0].kind ? v_number(&v[0]) : 0, v[1].kind ? v_number(&v[1]) : 1, 0, 0};
    if (!(r.init.b > 0))
      elab_error(e, x->loc, "normal(): std must be positive");
  } else if (strcmp(x->str, "uniform") == 0) {
    bind_builtin(e, x, a, pu, 2, 0, v);
    r.init = (Init){RT_INIT_UNIFORM, v[0].kind ? v_number(&v[0]) : -1, v[1].kind ? v_number(&v[1]) : 1, 0, 0};
    if (!(r.init.a < r.init.b))
      elab_error(e, x->loc, "uniform(): low must be less than high");
  } else {
    bind_builtin(e, x, a, pc, 1, 1, v);
    if (!v_is_number(&v[0]))
      elab_error(e, v[0].origin, "constant() needs a number, got %s", v_describe(e, &v[0]));
    r.init = (Init){RT_INIT_CONSTANT, v_number(&v[0]), 0, 0, 0};
  }
  return r;
}

/* assign(state, value): at the end of the training step, state <- value
 * (batchnorm's running statistics).  Only state parameters, only while
 * training, at most once each. */
static Value bi_assign(Elab *e, const Expr *x, const Args *a) {
  static const char *const p[] = {"state", "value"};
  Value v[2];
  bind_builtin(e, x, a, p, 2, 2, v);
  char t1[160], t2[160];
  Node *s = v[0].kind == V_TENSOR ? v[0].node : NULL;
  if (!s || s->op != OP_PARAM || s->trainable)
    elab_error(e, v[0].origin, "assign() needs a state parameter (declared trainable=false), "
               "got %s", v_describe(e, &v[0]));
  if (!e->g->training)
    elab_error(e, x->loc, "assign() only applies to the training step; put it under `if "
               "training`");
  for (int i = 0; i < e->g->n_updates; i++)
    if (e->g->updates[i].target == s)
      elab_error(e, x->loc, "%s is assigned twice in one step", s->name);
  Node *val = v_to_tensor(e, &v[1], s->dtype, v[1].origin, "the value of assign()");
  if (val->dtype != s->dtype || !shape_eq(&val->shape, &s->shape))
    elab_error(e, v[1].origin, "assign(): %s is %s but the value is %s", s->name,
               node_type_str(s, t1, sizeof t1), node_type_str(val, t2, sizeof t2));
  graph_add_update(e->g, s, val);
  return (Value){.kind = V_NONE};
}

typedef Value (*BuiltinFn)(Elab *e, const Expr *x, const Args *a);
static const struct {
  const char *name;
  BuiltinFn fn;
} builtins[] = {
    {"dim", bi_dim},        {"rank", bi_shape_like},  {"shape", bi_shape_like},
    {"numel", bi_shape_like}, {"channels", bi_shape_like}, {"len", bi_len},
    {"range", bi_range},    {"pair", bi_pair},        {"int", bi_convert},
    {"float", bi_convert},  {"str", bi_convert},      {"split", bi_split},
    {"normal", bi_init},    {"uniform", bi_init},     {"constant", bi_init},
    {"assign", bi_assign},
};

static bool is_builtin(const char *name) {
  for (int i = 0; i < countof(builtins); i++)
    if (strcmp(builtins[i].name, name) == 0)
      return true;
  return false;
}

static Value call_builtin(Elab *e, const Expr *x, const Args *a) {
  for (int i = 0; i < countof(builtins); i++)
    if (strcmp(builtins[i].name, x->str) == 0)
      return builtins[i].fn(e, x, a);
  unreachable();
}

/* --- ops ------------------------------------------------------------------------- */

static const char *attr_list(Elab *e, Op op) {
  const char *s = "";
  for (const AttrSpec *sp = op_info[op].attrs; sp->name; sp++)
    s = arena_fmt(e->a, "%s%s%s", s, s[0] ? ", " : "", sp->name);
  return s[0] ? s : "none";
}

static int64_t attr_int(Elab *e, const Value *v, Loc loc, const char *what, int64_t lim) {
  int64_t k = v_to_int(e, v, loc, what);
  if (k < -lim || k > lim)
    elab_error(e, loc, "%s is out of range: %lld", what, (long long)k);
  return k;
}

/* Reads a list of ints (or one int) into out[0..n); returns n. */
static int attr_ints(Elab *e, const Value *v, Loc loc, const char *what, int64_t *out, int max,
                     int64_t lim) {
  if (v->kind != V_LIST && v->kind != V_TUPLE) {
    out[0] = attr_int(e, v, loc, what, lim);
    return 1;
  }
  if (v->n > max)
    elab_error(e, loc, "%s has %d entries; at most %d are allowed", what, v->n, max);
  for (int i = 0; i < v->n; i++)
    out[i] = attr_int(e, &v->items[i], loc, what, lim);
  return v->n;
}

static void set_attr(Elab *e, Op op, const AttrSpec *s, const Value *v, Loc loc, Attrs *at) {
  char *f = (char *)at + s->offset;
  const char *what = arena_fmt(e->a, "%s of %s", s->name, op_name(op));
  int64_t buf[MAX_RANK];
  int n;
  switch (s->kind) {
  case AK_INT: *(int *)f = (int)attr_int(e, v, loc, what, 1 << 30); break;
  case AK_AXIS: *(int *)f = (int)attr_int(e, v, loc, what, 64); break;
  case AK_SEED: *(uint64_t *)f = (uint64_t)attr_int(e, v, loc, what, INT64_MAX); break;
  case AK_FLOAT:
    if (!v_is_number(v))
      elab_error(e, loc, "%s must be a number, got %s", what, v_describe(e, v));
    *(double *)f = v_number(v);
    break;
  case AK_BOOL: *(bool *)f = v_to_bool(e, v, loc, what); break;
  case AK_INT2:
    n = attr_ints(e, v, loc, what, buf, 2, 1 << 30);
    if (n != 1 && n != 2)
      elab_error(e, loc, "%s must be a number or a list of 2", what);
    ((int *)f)[0] = (int)buf[0];
    ((int *)f)[1] = (int)buf[n - 1];
    break;
  case AK_AXES:
    at->n_axes = attr_ints(e, v, loc, what, buf, MAX_RANK, 64);
    for (int i = 0; i < at->n_axes; i++)
      at->axes[i] = (int)buf[i];
    break;
  case AK_SHAPE:
    at->n_shape = attr_ints(e, v, loc, what, at->shape, MAX_RANK, MAX_NUMEL);
    break;
  case AK_DTYPE:
    if (v->kind != V_DTYPE)
      elab_error(e, loc, "%s must be f32 or i32, got %s", what, v_describe(e, v));
    *(DType *)f = v->dt;
    break;
  case AK_ENUM:
    if (v->kind == V_STR)
      for (int i = 0; s->choices[i]; i++)
        if (strcmp(s->choices[i], v->s) == 0) {
          *(int *)f = i;
          return;
        }
    {
      const char *c = "";
      for (int i = 0; s->choices[i]; i++)
        c = arena_fmt(e->a, "%s%s\"%s\"", c, i ? " or " : "", s->choices[i]);
      elab_error(e, loc, "%s must be %s, got %s", what, c, v_describe(e, v));
    }
  }
}

/* Folds an elementwise op on compile-time numbers through its scalar function. */
static bool fold_op(Elab *e, Op op, const Args *a, int n_tensors, Value *out) {
  if (!op_info[op].scalar || a->n != n_tensors || n_tensors > 2)
    return false;
  for (int i = 0; i < n_tensors; i++)
    if (!v_is_number(&a->v[i]))
      return false;
  Attrs at;
  attrs_default(op, &at);
  double x = v_number(&a->v[0]), y = n_tensors > 1 ? v_number(&a->v[1]) : 0;
  bool ints = op_has(op, F_INT_OK) && a->v[0].kind == V_INT && (n_tensors < 2 || a->v[1].kind == V_INT);
  double r = op_info[op].scalar(x, y, &at);
  *out = ints && fabs(r) < 9e15 ? v_int((int64_t)r) : v_float(r);
  return true;
}

/* The dtype a number takes next to the op's tensor inputs. */
static DType const_dtype(Op op, const Args *a, int n_tensors, int slot) {
  int from = op == OP_WHERE ? 1 : 0;
  if (op == OP_WHERE && slot == 0)
    return DT_I32;
  for (int i = from; i < n_tensors; i++)
    if (a->v[i].kind == V_TENSOR)
      return a->v[i].node->dtype;
  return DT_F32;
}

static Value call_op(Elab *e, const Expr *x, Op op, Args *a) {
  const OpInfo *oi = &op_info[op];
  /* concat(a, b, c) or concat([a, b, c]) */
  if (oi->arity < 0 && a->n_pos == 1 && a->v[0].kind == V_LIST) {
    Value l = a->v[0];
    Args b = {0};
    b.n = b.n_pos = l.n;
    b.v = l.items;
    b.names = arena_alloc(e->a, sizeof(char *) * (size_t)(l.n + a->n));
    b.locs = arena_alloc(e->a, sizeof(Loc) * (size_t)(l.n + a->n));
    for (int i = 0; i < l.n; i++)
      b.locs[i] = l.items[i].origin.src ? l.items[i].origin : a->locs[0];
    for (int i = 1; i < a->n; i++) {
      b.v = arena_realloc(e->a, b.v, sizeof(Value) * (size_t)(b.n), sizeof(Value) * (size_t)(b.n + 1));
      b.v[b.n] = a->v[i], b.names[b.n] = a->names[i], b.locs[b.n++] = a->locs[i];
    }
    *a = b;
  }
  int n_t = oi->arity >= 0 ? oi->arity : a->n_pos;
  if (oi->arity < 0 && n_t == 0)
    elab_error(e, x->loc, "%s needs at least 1 tensor argument, got 0", oi->name);
  if (a->n_pos < n_t)
    elab_error(e, x->loc, "%s needs %d tensor argument%s, got %d", oi->name, n_t,
               n_t == 1 ? "" : "s", a->n_pos);
  Value folded;
  if (fold_op(e, op, a, n_t, &folded))
    return folded;
  Node *in[256];
  Loc locs[256];
  if (n_t > 256)
    elab_error(e, x->loc, "%s takes at most 256 tensors", oi->name);
  for (int i = 0; i < n_t; i++) {
    locs[i] = user_loc(e, a->v[i].origin.src ? a->v[i].origin : a->locs[i]);
    in[i] = v_to_tensor(e, &a->v[i], const_dtype(op, a, n_t, i), a->locs[i],
                        arena_fmt(e->a, "argument %d of %s", i + 1, oi->name));
  }
  Attrs at;
  attrs_default(op, &at);
  bool set[32] = {0};
  Loc attr_locs[32] = {{0}};
  const AttrSpec *specs = oi->attrs;
  int n_specs = 0;
  while (specs[n_specs].name)
    n_specs++;
  for (int i = n_t; i < a->n; i++) {
    int k = i - n_t;
    if (a->names[i]) {
      const AttrSpec *s = attr_find(op, a->names[i]);
      if (!s)
        elab_error(e, x->args[i].loc, "%s has no attribute '%s' (its attributes: %s)", oi->name,
                   a->names[i], attr_list(e, op));
      k = (int)(s - specs);
    } else if (k >= n_specs) {
      elab_error(e, a->locs[i], "%s takes %d tensor%s and %d attribute%s; this is one too many",
                 oi->name, n_t, n_t == 1 ? "" : "s", n_specs, n_specs == 1 ? "" : "s");
    }
    if (set[k])
      elab_error(e, x->args[i].loc, "attribute '%s' of %s is given twice", specs[k].name, oi->name);
    set[k] = true;
    attr_locs[k] = value_loc(e, &a->v[i], a->locs[i]);
    set_attr(e, op, &specs[k], &a->v[i], attr_locs[k], &at);
  }
  for (int k = 0; k < n_specs; k++)
    if (specs[k].required && !set[k])
      elab_error(e, x->loc, "%s needs the attribute '%s' (%s)", oi->name, specs[k].name,
                 specs[k].doc);
  const AttrSpec *seed = attr_find(op, "seed");
  if (op_has(op, F_RANDOM) && seed && !set[seed - specs])
    at.seed = rng_seed_for(e->n_random++, e->fr->path);
  Node *n = add_node(e, op, in, locs, n_t, &at, attr_locs, x->loc);
  Value r = v_tensor(n);
  r.origin = x->loc;
  return r;
}

Value eval_call(Elab *e, const Expr *x) {
  const Decl *b;
  int op;
  Callee c = resolve(e, x, &b, &op);
  if (c == C_NONE) {
    Value *v = frame_lookup(e->fr, x->str);
    if (x->qualified)
      elab_error(e, x->loc, "there is no op named '%s'", x->str);
    if (v)
      elab_error(e, x->loc, "'%s' is %s, not a function", x->str, v_describe(e, v));
    elab_error(e, x->loc, "unknown function '%s'", x->str);
  }
  Args a = eval_args(e, x);
  switch (c) {
  case C_USER_BLOCK:
  case C_PRELUDE_BLOCK: return call_block(e, b, c == C_PRELUDE_BLOCK, x, a.v, a.names, a.n);
  case C_BUILTIN: return call_builtin(e, x, &a);
  case C_OP: return call_op(e, x, (Op)op, &a);
  case C_NONE: break;
  }
  unreachable();
}
