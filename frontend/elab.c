/*
 * elab.c: statements, frames and names (see elab.h for the naming rules).
 *
 * A Frame is one running model or block body: its variables, its parameter
 * name prefix, the loop indices used in names, and its return value.
 * Statements run in order; `for` and `if` run at compile time; `return`
 * stops the frame.  Work and depth limits turn runaway loops and recursion
 * in hostile input into errors instead of hangs or stack overflows.
 */
#include <string.h>

#include "elab.h"

/* --- errors ----------------------------------------------------------- */

/* Errors inside the prelude are shown at the user's call that led there. */
Loc user_loc(Elab *e, Loc loc) {
  if (!loc.src || !loc.src->is_prelude)
    return loc;
  for (Frame *f = e->fr; f; f = f->caller)
    if (f->call_loc.src && !f->call_loc.src->is_prelude)
      return f->call_loc;
  return loc;
}

Loc value_loc(Elab *e, const Value *v, Loc fallback) {
  if (v->origin.src && !v->origin.src->is_prelude)
    return v->origin;
  return user_loc(e, fallback);
}

_Noreturn void elab_error(Elab *e, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror_at(e->d, user_loc(e, loc), fmt, ap);
}

void check_limits(Elab *e, Loc loc) {
  if (++e->work > e->max_work)
    elab_error(e, loc, "elaboration did more than %lld steps (a runaway loop?)",
               (long long)e->max_work);
  if (e->g->n_nodes > e->max_nodes)
    elab_error(e, loc, "the graph has more than %lld nodes", (long long)e->max_nodes);
}

/* --- variables ---------------------------------------------------------- */

Value *frame_lookup(Frame *f, const char *name) {
  for (int i = f->n_vars - 1; i >= 0; i--)
    if (strcmp(f->vars[i].name, name) == 0)
      return &f->vars[i].v;
  return NULL;
}

void frame_bind(Elab *e, Frame *f, const char *name, Value v) {
  Value *old = frame_lookup(f, name);
  if (old) {
    *old = v;
    return;
  }
  Binding b = {name, v};
  VEC_PUSH(e->a, f->vars, f->n_vars, f->cap_vars, b);
}

/* --- names --------------------------------------------------------------- */

static const char *join(Elab *e, const char *path, const char *name) {
  return path[0] ? arena_fmt(e->a, "%s.%s", path, name) : name;
}

static const char *with_loops(Elab *e, const char *name) {
  for (int i = 0; i < e->fr->n_loops; i++)
    name = arena_fmt(e->a, "%s.%lld", name, (long long)e->fr->loop_idx[i]);
  return name;
}

/* A frame's scope names are a hash set: a model calling a block in a loop
 * ten thousand times checks each new name against the set, not against
 * every name before it (that scan was most of the time of a deep model's
 * compilation).  FNV-1a, linear probing. */
static size_t scope_slot(const Frame *f, const char *name) {
  uint64_t h = 14695981039346656037u;
  for (const unsigned char *c = (const unsigned char *)name; *c; c++)
    h = (h ^ *c) * 1099511628211u;
  size_t i = (size_t)h & (size_t)(f->cap_scopes - 1);
  while (f->scopes[i] && strcmp(f->scopes[i], name) != 0)
    i = (i + 1) & (size_t)(f->cap_scopes - 1);
  return i;
}

static bool scope_used(const Frame *f, const char *name) {
  return f->cap_scopes && f->scopes[scope_slot(f, name)];
}

static void scope_add(Elab *e, Frame *f, const char *name) {
  if (2 * (f->n_scopes + 1) > f->cap_scopes) { /* at most half full */
    const char **old = f->scopes;
    int old_cap = f->cap_scopes;
    f->cap_scopes = old_cap ? 2 * old_cap : 16;
    f->scopes = arena_alloc(e->a, (size_t)f->cap_scopes * sizeof *f->scopes);
    for (int i = 0; i < old_cap; i++)
      if (old[i])
        f->scopes[scope_slot(f, old[i])] = old[i];
  }
  f->scopes[scope_slot(f, name)] = name;
  f->n_scopes++;
}

/* The full scope name for a block called from the current statement. */
const char *open_scope_name(Elab *e, const char *block_name, const char *explicit_name) {
  Frame *f = e->fr;
  const char *local;
  if (explicit_name)
    local = explicit_name; /* literal: the caller spells out any indices */
  else if (f->binding && f->n_layer_calls > 1)
    local = with_loops(e, arena_fmt(e->a, "%s.%s", f->binding, block_name));
  else
    local = with_loops(e, f->binding ? f->binding : block_name);
  const char *name = local;
  for (int k = 2; scope_used(f, name); k++)
    name = arena_fmt(e->a, "%s_%d", local, k);
  scope_add(e, f, name);
  return join(e, f->path, name);
}

/* Names a freshly computed node after the variable it is bound to.  The
 * prelude's own variables name nothing: its results take the user's names. */
static void name_value(Elab *e, const Value *v, const char *var) {
  if (v->kind == V_TENSOR && !v->node->named && !e->fr->in_prelude)
    graph_rename(e->g, v->node, join(e, e->fr->path, with_loops(e, var)));
}

/* --- statements ------------------------------------------------------------ */

static void run_stmts(Elab *e, const StmtList *l);

static Shape eval_type(Elab *e, const TypeExpr *t, const char *what) {
  Shape s = {0};
  if (t->n_dims > MAX_RANK)
    elab_error(e, t->loc, "%s has %d dimensions; at most %d are supported", what, t->n_dims,
               MAX_RANK);
  s.rank = t->n_dims;
  for (int i = 0; i < t->n_dims; i++) {
    Value v = eval_expr(e, t->dims[i]);
    const char *w = arena_fmt(e->a, "dimension %d of %s", i, what);
    Loc l = value_loc(e, &v, t->dims[i]->loc);
    int64_t d = v_to_int(e, &v, l, w);
    if (d < 1 || d > MAX_NUMEL)
      elab_error(e, l, "%s must be a positive integer, got %lld", w, (long long)d);
    s.dim[i] = d;
  }
  if (shape_numel(&s) > MAX_NUMEL)
    elab_error(e, t->loc, "%s has more than 2^40 elements", what);
  return s;
}

static void bind_targets(Elab *e, const Stmt *s, Value v) {
  if (s->n_targets == 1) {
    if (v.kind == V_NONE)
      elab_error(e, s->value->loc, "this expression gives no value to assign to '%s'",
                 s->targets[0].name);
    name_value(e, &v, s->targets[0].name);
    frame_bind(e, e->fr, s->targets[0].name, v);
    return;
  }
  if (v.kind != V_TUPLE && v.kind != V_LIST)
    elab_error(e, s->value->loc, "%d names on the left but the right side gives %s",
               s->n_targets, v_describe(e, &v));
  if (v.n != s->n_targets)
    elab_error(e, s->value->loc, "%d names on the left but the right side gives %d values",
               s->n_targets, v.n);
  for (int i = 0; i < v.n; i++) {
    name_value(e, &v.items[i], s->targets[i].name);
    frame_bind(e, e->fr, s->targets[i].name, v.items[i]);
  }
}

static void exec_assign(Elab *e, const Stmt *s) {
  e->fr->binding = s->targets[0].name;
  e->fr->n_layer_calls = call_layer_count(e, s->value);
  Value v = eval_expr(e, s->value);
  e->fr->binding = NULL;
  bind_targets(e, s, v);
}

static void need_model(Elab *e, const Stmt *s, const char *what) {
  if (e->fr->decl->kind != D_MODEL)
    elab_error(e, s->loc, "'%s' is only allowed in a model, not in block '%s'", what,
               e->fr->decl->name);
  if (e->fr->n_loops)
    elab_error(e, s->loc, "'%s' cannot be inside a for loop", what);
}

static void exec_input(Elab *e, const Stmt *s) {
  const Name *nm = &s->targets[0];
  need_model(e, s, "input");
  if (frame_lookup(e->fr, nm->name) || graph_find(e->g, nm->name))
    elab_error(e, nm->loc, "'%s' is already defined", nm->name);
  Shape sh = eval_type(e, &s->type, arena_fmt(e->a, "input %s", nm->name));
  Node *n = graph_input(e->g, nm->name, s->type.dtype, sh, nm->loc);
  frame_bind(e, e->fr, nm->name, v_tensor(n));
}

static void exec_output(Elab *e, const Stmt *s) {
  const Name *nm = &s->targets[0];
  need_model(e, s, "output");
  for (int i = 0; i < e->g->n_outputs; i++)
    if (strcmp(e->g->outputs[i].name, nm->name) == 0)
      elab_error(e, nm->loc, "output '%s' is declared twice", nm->name);
  Value v;
  if (s->value) {
    e->fr->binding = nm->name;
    e->fr->n_layer_calls = call_layer_count(e, s->value);
    v = eval_expr(e, s->value);
    e->fr->binding = NULL;
  } else {
    Value *p = frame_lookup(e->fr, nm->name);
    if (!p)
      elab_error(e, nm->loc, "unknown name '%s'", nm->name);
    v = *p;
  }
  if (v.kind != V_TENSOR)
    elab_error(e, s->value ? s->value->loc : nm->loc, "output '%s' must be a tensor, got %s",
               nm->name, v_describe(e, &v));
  name_value(e, &v, nm->name);
  graph_add_output(e->g, nm->name, v.node, nm->loc);
  frame_bind(e, e->fr, nm->name, v);
}

/* param NAME: TYPE [init=...] [trainable=...] */
static void exec_param(Elab *e, const Stmt *s) {
  const Name *nm = &s->targets[0];
  const char *full = join(e, e->fr->path, with_loops(e, nm->name));
  if (graph_find(e->g, full))
    elab_error(e, nm->loc, "parameter '%s' is declared twice", full);
  Init init = {RT_INIT_AUTO, 0, 0, 0, 0};
  bool trainable = true;
  for (int i = 0; i < s->n_opts; i++) {
    const Arg *o = &s->opts[i];
    Value v = eval_expr(e, o->value);
    if (strcmp(o->name, "init") == 0) {
      if (v.kind != V_INIT)
        elab_error(e, o->value->loc, "init must be an initializer (zeros, ones, xavier, he, "
                   "normal(std=...), uniform(a, b), constant(v), auto), got %s",
                   v_describe(e, &v));
      init = v.init;
    } else if (strcmp(o->name, "trainable") == 0) {
      trainable = v_to_bool(e, &v, o->value->loc, "trainable");
    } else {
      elab_error(e, o->loc, "unknown parameter option '%s' (expected init or trainable)",
                 o->name);
    }
  }
  Shape sh = eval_type(e, &s->type, arena_fmt(e->a, "parameter %s", full));
  if (s->type.dtype == DT_I32 && init.kind != RT_INIT_ZEROS && init.kind != RT_INIT_ONES &&
      init.kind != RT_INIT_CONSTANT)
    elab_error(e, s->loc, "i32 parameter '%s' needs init=zeros, ones or constant(v)", full);
  Node *n = graph_param(e->g, full, s->type.dtype, sh, init, trainable, user_loc(e, nm->loc));
  frame_bind(e, e->fr, nm->name, v_tensor(n));
}

static void run_loop_body(Elab *e, const Stmt *s, const char *var, Value v, int64_t idx) {
  Frame *f = e->fr;
  frame_bind(e, f, var, v);
  f->loop_idx[f->n_loops++] = idx;
  run_stmts(e, &s->body);
  f->n_loops--;
}

static void exec_for(Elab *e, const Stmt *s) {
  const char *var = s->targets[0].name;
  if (e->fr->n_loops >= MAX_NESTING)
    elab_error(e, s->loc, "for loops are nested too deeply");
  Value lo = eval_expr(e, s->value);
  if (!s->hi) {
    if (lo.kind != V_LIST && lo.kind != V_TUPLE)
      elab_error(e, s->value->loc, "for ... in needs a range a .. b or a list, got %s",
                 v_describe(e, &lo));
    for (int i = 0; i < lo.n && !e->fr->returned; i++)
      run_loop_body(e, s, var, lo.items[i], i);
    return;
  }
  Value hi = eval_expr(e, s->hi);
  int64_t a = v_to_int(e, &lo, s->value->loc, "the start of the range");
  int64_t b = v_to_int(e, &hi, s->hi->loc, "the end of the range");
  if (b - a > MAX_LOOP)
    elab_error(e, s->loc, "the range %lld .. %lld has more than %d iterations", (long long)a,
               (long long)b, MAX_LOOP);
  for (int64_t i = a; i < b && !e->fr->returned; i++)
    run_loop_body(e, s, var, v_int(i), i);
}

static void exec_if(Elab *e, const Stmt *s) {
  Value c = eval_expr(e, s->value);
  if (v_to_bool(e, &c, s->value->loc, "the condition of if"))
    run_stmts(e, &s->body);
  else
    run_stmts(e, &s->else_body);
}

static void exec_return(Elab *e, const Stmt *s) {
  Frame *f = e->fr;
  if (f->decl->kind != D_BLOCK)
    elab_error(e, s->loc, "return is only allowed in a block");
  if (s->n_values == 0) {
    f->ret = (Value){.kind = V_NONE};
  } else if (s->n_values == 1) {
    f->ret = eval_expr(e, s->values[0]);
  } else {
    Value t = {.kind = V_TUPLE, .n = s->n_values};
    t.items = arena_alloc(e->a, sizeof(Value) * (size_t)s->n_values);
    for (int i = 0; i < s->n_values; i++)
      t.items[i] = eval_expr(e, s->values[i]);
    f->ret = t;
  }
  f->returned = true;
}

/* assert COND, pieces...: the pieces make the message; a tensor piece is
 * shown as its type, and the caret goes to the first tensor's origin. */
static void exec_assert(Elab *e, const Stmt *s) {
  Value c = eval_expr(e, s->values[0]);
  if (v_to_bool(e, &c, s->values[0]->loc, "the condition of assert"))
    return;
  Loc where = s->loc;
  bool have_where = false;
  const char *msg = s->n_values > 1 ? "" : "assertion failed";
  char buf[160];
  for (int i = 1; i < s->n_values; i++) {
    Value v = eval_expr(e, s->values[i]);
    if (v.kind == V_STR)
      msg = arena_fmt(e->a, "%s%s", msg, v.s);
    else if (v.kind == V_TENSOR)
      msg = arena_fmt(e->a, "%s%s", msg, node_type_str(v.node, buf, sizeof buf));
    else
      msg = arena_fmt(e->a, "%s%s", msg, v_text(e, &v));
    if (v.kind == V_TENSOR && !have_where && v.origin.src) {
      where = v.origin;
      have_where = true;
    }
  }
  elab_error(e, where, "%s", msg);
}

/* A call for its effect; a value nobody uses is almost always a mistake. */
static void exec_expr(Elab *e, const Stmt *s) {
  Value v = eval_expr(e, s->value);
  if (v.kind != V_NONE)
    elab_error(e, s->value->loc, "the result of this call (%s) is not used; bind it with "
               "NAME = ...", v_describe(e, &v));
}

static void exec_stmt(Elab *e, const Stmt *s) {
  check_limits(e, s->loc);
  switch (s->kind) {
  case S_ASSIGN: exec_assign(e, s); break;
  case S_INPUT: exec_input(e, s); break;
  case S_OUTPUT: exec_output(e, s); break;
  case S_PARAM: exec_param(e, s); break;
  case S_FOR: exec_for(e, s); break;
  case S_IF: exec_if(e, s); break;
  case S_RETURN: exec_return(e, s); break;
  case S_ASSERT: exec_assert(e, s); break;
  case S_EXPR: exec_expr(e, s); break;
  }
}

static void run_stmts(Elab *e, const StmtList *l) {
  for (int i = 0; i < l->n_items && !e->fr->returned; i++)
    exec_stmt(e, l->items[i]);
}

/* --- blocks and models ------------------------------------------------------ */

const Decl *find_block(const Program *p, const char *name) {
  for (int i = 0; p && i < p->n_decls; i++)
    if (p->decls[i]->kind == D_BLOCK && strcmp(p->decls[i]->name, name) == 0)
      return p->decls[i];
  return NULL;
}

static int param_index(const Decl *b, const char *name) {
  for (int i = 0; i < b->n_params; i++)
    if (strcmp(b->params[i].name, name) == 0)
      return i;
  return -1;
}

/* Binds call arguments to the block's parameters, defaults last (they may
 * refer to earlier parameters). `name=` names the scope unless the block
 * has a parameter called `name`. */
static const char *bind_args(Elab *e, Frame *f, const Decl *b, const Expr *call, Value *args,
                             const char **names, int n_args) {
  bool *set = arena_alloc(e->a, sizeof(bool) * (size_t)(b->n_params + 1));
  const char *scope = NULL;
  int pos = 0;
  for (int i = 0; i < n_args; i++) {
    const Arg *a = &call->args[i];
    int k;
    if (!names[i]) {
      if (pos >= b->n_params)
        elab_error(e, a->loc, "block '%s' takes %d argument%s, got more", b->name, b->n_params,
                   b->n_params == 1 ? "" : "s");
      k = pos++;
    } else if ((k = param_index(b, names[i])) < 0) {
      if (strcmp(names[i], "name") == 0) {
        if (args[i].kind != V_STR)
          elab_error(e, a->value->loc, "name= must be a string, got %s", v_describe(e, &args[i]));
        scope = args[i].s;
        continue;
      }
      elab_error(e, a->loc, "block '%s' has no parameter '%s'", b->name, names[i]);
    }
    if (set[k])
      elab_error(e, a->loc, "argument '%s' of block '%s' is given twice", b->params[k].name,
                 b->name);
    set[k] = true;
    Value v = args[i];
    v.origin = user_loc(e, v.origin.src ? v.origin : a->value->loc);
    frame_bind(e, f, b->params[k].name, v);
  }
  for (int k = 0; k < b->n_params; k++)
    if (!set[k] && !b->params[k].dflt)
      elab_error(e, call->loc, "block '%s' needs argument '%s'", b->name, b->params[k].name);
  return scope;
}

Value call_block(Elab *e, const Decl *b, bool in_prelude, const Expr *call, Value *args,
                 const char **names, int n_args) {
  int depth = 0;
  for (Frame *f = e->fr; f; f = f->caller)
    depth++;
  if (depth > MAX_CALL_DEPTH)
    elab_error(e, call->loc, "blocks call each other more than %d deep (endless recursion?)",
               MAX_CALL_DEPTH);
  Frame *f = arena_alloc(e->a, sizeof *f);
  f->caller = e->fr;
  f->decl = b;
  f->in_prelude = in_prelude;
  f->call_loc = user_loc(e, call->loc);
  Frame *caller = e->fr;
  e->fr = f; /* bind in the callee; argument values were computed by the caller */
  const char *explicit = bind_args(e, f, b, call, args, names, n_args);
  e->fr = caller;
  f->path = b->creates_params ? open_scope_name(e, b->name, explicit) : caller->path;
  e->fr = f;
  for (int k = 0; k < b->n_params; k++)
    if (b->params[k].dflt && !frame_lookup(f, b->params[k].name)) {
      Value v = eval_expr(e, b->params[k].dflt);
      frame_bind(e, f, b->params[k].name, v);
    }
  run_stmts(e, &b->body);
  e->fr = caller;
  return f->returned ? f->ret : (Value){.kind = V_NONE};
}

void run_frame(Elab *e, Frame *f) {
  Frame *saved = e->fr;
  e->fr = f;
  run_stmts(e, &f->decl->body);
  e->fr = saved;
}
