/*
 * frontend.c: from a source file to a graph.
 *
 * Steps: parse the prelude and the user's file; work out which blocks
 * create parameters (it decides scope names); pick the model; bind its
 * compile-time constants (defaults, overridden by -D); run its body; check
 * the `train` section against the result; resolve parameter initializers.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "elab.h"

bool define_parse(Arena *a, const char *text, Define *out) {
  const char *eq = strchr(text, '=');
  if (!eq || eq == text)
    return false;
  out->name = arena_strndup(a, text, (size_t)(eq - text));
  out->value = arena_strdup(a, eq + 1);
  return true;
}

/* -D values: integers, numbers, true/false, or text (quotes optional). */
static Value define_value(Elab *e, const Define *d) {
  const char *s = d->value;
  char *end;
  errno = 0;
  long long i = strtoll(s, &end, 10);
  if (*s && !*end && !errno)
    return v_int(i);
  double f = strtod(s, &end);
  if (*s && !*end && isfinite(f))
    return v_float(f);
  if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
    return v_bool(s[0] == 't');
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '"' && s[n - 1] == '"')
    return v_str(arena_strndup(e->a, s + 1, n - 2));
  return v_str(s);
}

/* --- which blocks create parameters ---------------------------------------- */

static bool expr_calls_param_block(const Program *user, const Program *pre, bool in_pre,
                                   const Expr *x) {
  if (!x)
    return false;
  if (x->kind == E_CALL && !x->qualified) {
    const Decl *b = in_pre ? NULL : find_block(user, x->str);
    if (!b)
      b = find_block(pre, x->str);
    if (b && b->creates_params)
      return true;
  }
  if (expr_calls_param_block(user, pre, in_pre, x->a) ||
      expr_calls_param_block(user, pre, in_pre, x->b))
    return true;
  for (int i = 0; i < x->n_items; i++)
    if (expr_calls_param_block(user, pre, in_pre, x->items[i]))
      return true;
  for (int i = 0; i < x->n_args; i++)
    if (expr_calls_param_block(user, pre, in_pre, x->args[i].value))
      return true;
  return false;
}

static bool stmts_create_params(const Program *user, const Program *pre, bool in_pre,
                                const StmtList *l) {
  for (int i = 0; i < l->n_items; i++) {
    const Stmt *s = l->items[i];
    if (s->kind == S_PARAM)
      return true;
    if (expr_calls_param_block(user, pre, in_pre, s->value))
      return true;
    for (int k = 0; k < s->n_values; k++)
      if (expr_calls_param_block(user, pre, in_pre, s->values[k]))
        return true;
    if (stmts_create_params(user, pre, in_pre, &s->body) ||
        stmts_create_params(user, pre, in_pre, &s->else_body))
      return true;
  }
  return false;
}

/* A fixed point over both programs: calls can go both ways in the user's
 * blocks and recursion is possible (and later caught at run time). */
static void mark_param_blocks(const Program *user, const Program *pre) {
  for (bool changed = true; changed;) {
    changed = false;
    for (int p = 0; p < 2; p++) {
      const Program *prog = p ? user : pre;
      for (int i = 0; i < prog->n_decls; i++) {
        Decl *d = prog->decls[i];
        if (d->kind != D_BLOCK || d->creates_params)
          continue;
        if (stmts_create_params(user, pre, p == 0, &d->body)) {
          d->creates_params = true;
          changed = true;
        }
      }
    }
  }
}

/* --- checks of the whole file ---------------------------------------------- */

static void check_duplicates(Elab *e, const Program *p) {
  for (int i = 0; i < p->n_decls; i++)
    for (int j = 0; j < i; j++) {
      const Decl *a = p->decls[i], *b = p->decls[j];
      if (a->kind == b->kind && strcmp(a->name, b->name) == 0)
        elab_error(e, a->loc, "%s '%s' is declared twice", a->kind == D_MODEL ? "model"
                   : a->kind == D_BLOCK ? "block" : "train section", a->name);
    }
  for (int i = 0; i < p->n_decls; i++) {
    const Decl *d = p->decls[i];
    for (int k = 0; k < d->n_params; k++)
      for (int j = 0; j < k; j++)
        if (strcmp(d->params[k].name, d->params[j].name) == 0)
          elab_error(e, d->params[k].loc, "parameter '%s' of '%s' is declared twice",
                     d->params[k].name, d->name);
  }
}

static const Decl *pick_model(Elab *e, const Program *p, const char *name, const Source *src) {
  const Decl *first = NULL;
  for (int i = 0; i < p->n_decls; i++) {
    if (p->decls[i]->kind != D_MODEL)
      continue;
    if (!first)
      first = p->decls[i];
    if (name && strcmp(p->decls[i]->name, name) == 0)
      return p->decls[i];
  }
  Loc top = {src, 1, 1};
  if (name) {
    const char *list = "";
    for (int i = 0; i < p->n_decls; i++)
      if (p->decls[i]->kind == D_MODEL)
        list = arena_fmt(e->a, "%s%s%s", list, list[0] ? ", " : "", p->decls[i]->name);
    error_at(e->d, first ? first->loc : top, "there is no model named '%s' (models here: %s)",
             name, first ? list : "none");
  }
  if (!first)
    error_at(e->d, top, "the file declares no model (expected 'model NAME(...) { ... }')");
  return first;
}

/* The model's constants: defaults, then -D values. */
static void bind_constants(Elab *e, Frame *f, const Decl *m, const CompileOpts *o) {
  for (int i = 0; i < o->n_defines; i++) {
    bool known = false;
    for (int k = 0; k < m->n_params; k++)
      known = known || strcmp(m->params[k].name, o->defines[i].name) == 0;
    if (!known) {
      const char *list = "";
      for (int k = 0; k < m->n_params; k++)
        list = arena_fmt(e->a, "%s%s%s", list, k ? ", " : "", m->params[k].name);
      error_at(e->d, m->loc, "-D %s: model '%s' has no constant '%s' (its constants: %s)",
               o->defines[i].name, m->name, o->defines[i].name, m->n_params ? list : "none");
    }
  }
  for (int k = 0; k < m->n_params; k++) {
    const ParamDecl *pd = &m->params[k];
    Value v = {0};
    bool given = false;
    for (int i = o->n_defines - 1; i >= 0 && !given; i--)
      if (strcmp(o->defines[i].name, pd->name) == 0) {
        v = define_value(e, &o->defines[i]);
        given = true;
      }
    if (!given && !pd->dflt)
      elab_error(e, pd->loc, "model constant '%s' has no default; give it with -D %s=VALUE",
                 pd->name, pd->name);
    if (!given)
      v = eval_expr(e, pd->dflt);
    frame_bind(e, f, pd->name, v);
    if (e->g->n_consts < countof(e->g->const_names)) {
      e->g->const_names[e->g->n_consts] = pd->name;
      snprintf(e->g->const_values[e->g->n_consts], sizeof e->g->const_values[0], "%s",
               v_text(e, &v));
      e->g->n_consts++;
    }
  }
}

/* Keeps the train section of this model and checks what it minimizes. */
static void attach_train(Elab *e, const Program *p) {
  for (int i = 0; i < p->n_decls; i++) {
    const Decl *t = p->decls[i];
    if (t->kind != D_TRAIN)
      continue;
    bool model_exists = false;
    for (int k = 0; k < p->n_decls; k++)
      model_exists = model_exists || (p->decls[k]->kind == D_MODEL &&
                                       strcmp(p->decls[k]->name, t->name) == 0);
    if (!model_exists)
      elab_error(e, t->loc, "train section for '%s', but there is no model '%s'", t->name,
                 t->name);
    if (strcmp(t->name, e->g->name) != 0)
      continue;
    e->g->has_train = true;
    e->g->train_loc = t->loc;
    for (int k = 0; k < t->n_entries; k++)
      VEC_PUSH(e->a, e->g->train, e->g->n_train, e->g->cap_train, t->entries[k]);
  }
  for (int k = 0; k < e->g->n_train; k++) {
    const TrainEntry *en = &e->g->train[k];
    if (strcmp(en->key, "minimize") != 0)
      continue;
    if (!en->value || en->value->kind != E_NAME)
      elab_error(e, en->loc, "minimize needs the name of a scalar value of the model");
    Node *n = graph_find_value(e->g, en->value->str);
    char buf[160];
    if (!n)
      elab_error(e, en->value->loc, "minimize: the model has no value named '%s'",
                 en->value->str);
    if (n->shape.rank != 0 || n->dtype != DT_F32)
      elab_error(e, en->value->loc, "minimize needs a scalar f32 loss, but '%s' is %s",
                 en->value->str, node_type_str(n, buf, sizeof buf));
    e->g->minimize = en->value->str;
  }
}

static void parse_all(Elab *e, const Source *src, Program *user, Program *pre) {
  Source *ps = source_from_string(e->a, "<prelude>", kiln_prelude, strlen(kiln_prelude));
  ps->is_prelude = true;
  parse_source(e->a, e->d, ps, pre);
  parse_source(e->a, e->d, src, user);
  check_duplicates(e, user);
  mark_param_blocks(user, pre);
}

Graph *frontend_compile(Arena *a, Diag *d, const Source *src, const CompileOpts *o) {
  Program *user = arena_alloc(a, sizeof *user), *pre = arena_alloc(a, sizeof *pre);
  Elab e = {0};
  e.a = a;
  e.d = d;
  e.user = user;
  e.prelude = pre;
  e.max_work = o->max_work > 0 ? o->max_work : MAX_WORK;
  e.max_nodes = o->max_nodes > 0 ? o->max_nodes : MAX_NODES;
  parse_all(&e, src, user, pre);
  const Decl *m = pick_model(&e, user, o->model, src);
  e.g = graph_new(a, m->name);
  e.g->training = o->training;
  Frame *f = arena_alloc(a, sizeof *f);
  f->decl = m;
  f->path = "";
  e.fr = f;
  bind_constants(&e, f, m, o);
  run_frame(&e, f);
  for (int i = 0; i < f->n_vars; i++)
    if (f->vars[i].v.kind == V_TENSOR)
      graph_set_value(e.g, f->vars[i].name, f->vars[i].v.node, m->loc);
  attach_train(&e, user);
  if (e.g->has_train)
    read_train_spec(&e, &e.g->spec); /* in the model's frame: constants visible */
  e.fr = NULL;
  graph_resolve_init(e.g);
  return e.g;
}

int frontend_model_names(Arena *a, Diag *d, const Source *src, const char ***names) {
  Program p = {0};
  parse_source(a, d, src, &p);
  int n = 0;
  *names = arena_alloc(a, sizeof(char *) * (size_t)(p.n_decls + 1));
  for (int i = 0; i < p.n_decls; i++)
    if (p.decls[i]->kind == D_MODEL)
      (*names)[n++] = p.decls[i]->name;
  return n;
}
