/*
 * kir.c: building, printing and checking Kernel IR (see kir.h).
 *
 * The builders fold constant index arithmetic (0 + i, 1 * i, 2 * 3), so
 * lowering code can write index formulas plainly and the printed kernels
 * stay readable.
 */
#include <stdlib.h>
#include <string.h>

#include "kir.h"

Kernel *kir_new(Arena *a, const char *name, const Node *n) {
  Kernel *k = arena_alloc(a, sizeof *k);
  k->arena = a;
  k->name = arena_strdup(a, name);
  k->node = n;
  k->body = ks_block(k);
  return k;
}

int kir_buf(Kernel *k, const char *name, KType t, int64_t numel, KBufRole role, int node) {
  KBuf b = {arena_strdup(k->arena, name), t, numel, role, node};
  VEC_PUSH(k->arena, k->bufs, k->n_bufs, k->cap_bufs, b);
  return k->n_bufs - 1;
}

int kir_var(Kernel *k, const char *name, KType t) {
  KVar v = {arena_fmt(k->arena, "%s%d", name, k->n_vars), t};
  VEC_PUSH(k->arena, k->vars, k->n_vars, k->cap_vars, v);
  return k->n_vars - 1;
}

static KExpr *expr(Kernel *k, KExprKind kind, KType t) {
  KExpr *e = arena_alloc(k->arena, sizeof *e);
  e->kind = kind;
  e->type = t;
  return e;
}

KExpr *ke_f32(Kernel *k, double v) {
  KExpr *e = expr(k, KE_FCONST, KT_F32);
  e->f = v;
  return e;
}

KExpr *ke_int(Kernel *k, KType t, int64_t v) {
  KExpr *e = expr(k, KE_ICONST, t);
  e->i = v;
  return e;
}

KExpr *ke_idx(Kernel *k, int64_t v) { return ke_int(k, KT_IDX, v); }

KExpr *ke_var(Kernel *k, int var) {
  KExpr *e = expr(k, KE_VAR, k->vars[var].type);
  e->var = var;
  return e;
}

KExpr *ke_load(Kernel *k, int buf, KExpr *index) {
  KExpr *e = expr(k, KE_LOAD, k->bufs[buf].type);
  e->buf = buf;
  e->a = index;
  return e;
}

static bool is_compare(KOp op) { return op >= KO_EQ && op <= KO_OR; }

KExpr *ke_unary(Kernel *k, KOp op, KExpr *a) {
  KExpr *e = expr(k, KE_UNARY, op == KO_ISNAN ? KT_I32 : a->type);
  e->op = op;
  e->a = a;
  return e;
}

/* Folds integer constants and the identities 0 + x, x * 1, x * 0. */
static KExpr *fold(Kernel *k, KOp op, KExpr *a, KExpr *b) {
  bool ca = a->kind == KE_ICONST, cb = b->kind == KE_ICONST;
  if (a->type == KT_F32 || is_compare(op))
    return NULL;
  if (ca && cb) {
    int64_t x = a->i, y = b->i;
    switch (op) {
    case KO_ADD: return ke_int(k, a->type, x + y);
    case KO_SUB: return ke_int(k, a->type, x - y);
    case KO_MUL: return ke_int(k, a->type, x * y);
    case KO_MIN: return ke_int(k, a->type, x < y ? x : y);
    case KO_MAX: return ke_int(k, a->type, x > y ? x : y);
    default: return NULL;
    }
  }
  if (op == KO_ADD && ca && a->i == 0)
    return b;
  if ((op == KO_ADD || op == KO_SUB) && cb && b->i == 0)
    return a;
  if (op == KO_MUL && ((ca && a->i == 0) || (cb && b->i == 0)))
    return ke_int(k, a->type, 0);
  if (op == KO_MUL && ca && a->i == 1)
    return b;
  if ((op == KO_MUL || op == KO_FLOORDIV) && cb && b->i == 1)
    return a;
  return NULL;
}

KExpr *ke_binary(Kernel *k, KOp op, KExpr *a, KExpr *b) {
  KExpr *f = fold(k, op, a, b);
  if (f)
    return f;
  KExpr *e = expr(k, KE_BINARY, is_compare(op) ? KT_I32 : a->type);
  e->op = op;
  e->a = a;
  e->b = b;
  return e;
}

KExpr *ke_select(Kernel *k, KExpr *c, KExpr *a, KExpr *b) {
  KExpr *e = expr(k, KE_SELECT, a->type);
  e->a = c;
  e->b = a;
  e->c = b;
  return e;
}

KExpr *ke_cast(Kernel *k, KType t, KExpr *a) {
  if (a->type == t)
    return a;
  if (a->kind == KE_ICONST && t != KT_F32)
    return ke_int(k, t, a->i);
  KExpr *e = expr(k, KE_CAST, t);
  e->a = a;
  return e;
}

KExpr *ke_fma(Kernel *k, KExpr *a, KExpr *b, KExpr *c) {
  KExpr *e = expr(k, KE_FMA, KT_F32);
  e->a = a;
  e->b = b;
  e->c = c;
  return e;
}

static KStmt *stmt(Kernel *k, KStmtKind kind) {
  KStmt *s = arena_alloc(k->arena, sizeof *s);
  s->kind = kind;
  return s;
}

KStmt *ks_block(Kernel *k) { return stmt(k, KS_BLOCK); }

KStmt *ks_loop(Kernel *k, int var, KExpr *extent, KLoopKind kind) {
  KStmt *s = stmt(k, KS_LOOP);
  s->var = var;
  s->extent = extent;
  s->loop = kind;
  return s;
}

KStmt *ks_store(Kernel *k, int buf, KExpr *index, KExpr *value) {
  KStmt *s = stmt(k, KS_STORE);
  s->buf = buf;
  s->index = index;
  s->value = value;
  return s;
}

KStmt *ks_decl(Kernel *k, int var, KExpr *init) {
  KStmt *s = stmt(k, KS_DECL);
  s->var = var;
  s->value = init;
  return s;
}

KStmt *ks_set(Kernel *k, int var, KExpr *value) {
  KStmt *s = stmt(k, KS_SET);
  s->var = var;
  s->value = value;
  return s;
}

KStmt *ks_if(Kernel *k, KExpr *cond) {
  KStmt *s = stmt(k, KS_IF);
  s->cond = cond;
  return s;
}

void ks_add(Kernel *k, KStmt *parent, KStmt *child) {
  ASSERT(parent->kind == KS_BLOCK || parent->kind == KS_LOOP || parent->kind == KS_IF);
  VEC_PUSH(k->arena, parent->body, parent->n_body, parent->cap_body, child);
}

/* --- a scalar input as a literal (kir_inline_input) ------------------------- */

enum { BUF_MARK = 1 << 28 }; /* added to a buffer index while it is being renumbered */

/* The walks over a kernel, in order: CHECK changes nothing (does the
 * kernel store into buf?), LITERAL turns the loads of buf into the value,
 * MARK and UNMARK move the later buffers' indices down one. */
enum { LITERAL, MARK, UNMARK, CHECK };

typedef struct Inline {
  int buf;
  double value;
  int phase;
} Inline;

/* One buffer index through a phase.  Expressions may be shared between
 * statements, so each phase is idempotent: a shared node is visited more
 * than once, and the mark says whether it was already moved. */
static void renumber(const Inline *in, int *b) {
  if (in->phase == MARK && *b > in->buf && *b < BUF_MARK)
    *b += BUF_MARK;
  else if (in->phase == UNMARK && *b >= BUF_MARK)
    *b -= BUF_MARK + 1;
}

static void inline_expr(const Inline *in, KExpr *e) {
  if (!e)
    return;
  if (e->kind == KE_LOAD) {
    if (in->phase == LITERAL && e->buf == in->buf) {
      e->kind = e->type == KT_F32 ? KE_FCONST : KE_ICONST;
      e->f = in->value;
      e->i = (int64_t)in->value;
      e->a = NULL;
      return;
    }
    renumber(in, &e->buf);
  }
  inline_expr(in, e->a);
  inline_expr(in, e->b);
  inline_expr(in, e->c);
}

static bool inline_stmt(const Inline *in, KStmt *s) {
  if (s->kind == KS_STORE) {
    if (s->buf == in->buf)
      return false;
    renumber(in, &s->buf);
  }
  inline_expr(in, s->extent);
  inline_expr(in, s->index);
  inline_expr(in, s->value);
  inline_expr(in, s->cond);
  for (int i = 0; i < s->n_body; i++)
    if (!inline_stmt(in, s->body[i]))
      return false;
  return true;
}

bool kir_inline_input(Kernel *k, int b, double value) {
  if (b < 0 || b >= k->n_bufs || k->bufs[b].role != KB_IN || k->bufs[b].numel != 1 ||
      k->bufs[b].type == KT_IDX)
    return false;
  if (!inline_stmt(&(Inline){b, value, CHECK}, k->body))
    return false;
  for (int phase = LITERAL; phase <= UNMARK; phase++)
    inline_stmt(&(Inline){b, value, phase}, k->body);
  memmove(&k->bufs[b], &k->bufs[b + 1], sizeof(KBuf) * (size_t)(k->n_bufs - b - 1));
  k->n_bufs--;
  return true;
}

/* --- names and printing --------------------------------------------------- */

const char *kop_name(KOp op) {
  static const char *const names[KO_COUNT] = {
      [KO_ADD] = "+", [KO_SUB] = "-", [KO_MUL] = "*", [KO_DIV] = "/", [KO_MIN] = "min",
      [KO_MAX] = "max", [KO_POW] = "pow", [KO_FLOORDIV] = "floordiv", [KO_MOD] = "mod",
      [KO_EQ] = "==", [KO_NE] = "!=", [KO_LT] = "<", [KO_LE] = "<=", [KO_GT] = ">",
      [KO_GE] = ">=", [KO_AND] = "&&", [KO_OR] = "||", [KO_NEG] = "-", [KO_ABS] = "abs",
      [KO_EXP] = "exp", [KO_LOG] = "log", [KO_SQRT] = "sqrt", [KO_TANH] = "tanh",
      [KO_ERF] = "erf", [KO_SIN] = "sin", [KO_COS] = "cos", [KO_LOG1P] = "log1p",
      [KO_FLOOR] = "floor", [KO_ISNAN] = "isnan", [KO_HASH] = "rng_bits",
      [KO_HASH64] = "rng_hash64"};
  return op >= 0 && op < KO_COUNT && names[op] ? names[op] : "?";
}

const char *ktype_name(KType t) {
  switch (t) {
  case KT_F32: return "f32";
  case KT_I32: return "i32";
  case KT_IDX: return "idx";
  }
  unreachable();
}

static bool infix(KOp op) {
  return op == KO_ADD || op == KO_SUB || op == KO_MUL || op == KO_DIV || (op >= KO_EQ && op <= KO_OR);
}

static void print_expr(const Kernel *k, const KExpr *e, FILE *f) {
  switch (e->kind) {
  case KE_FCONST: fprintf(f, "%.9g", e->f); break;
  case KE_ICONST: fprintf(f, "%lld", (long long)e->i); break;
  case KE_VAR: fputs(k->vars[e->var].name, f); break;
  case KE_LOAD:
    fprintf(f, "%s[", k->bufs[e->buf].name);
    print_expr(k, e->a, f);
    fputc(']', f);
    break;
  case KE_UNARY:
    fprintf(f, "%s(", kop_name(e->op));
    print_expr(k, e->a, f);
    fputc(')', f);
    break;
  case KE_BINARY:
    if (infix(e->op)) {
      fputc('(', f);
      print_expr(k, e->a, f);
      fprintf(f, " %s ", kop_name(e->op));
      print_expr(k, e->b, f);
      fputc(')', f);
    } else {
      fprintf(f, "%s(", kop_name(e->op));
      print_expr(k, e->a, f);
      fputs(", ", f);
      print_expr(k, e->b, f);
      fputc(')', f);
    }
    break;
  case KE_SELECT:
    fputc('(', f);
    print_expr(k, e->a, f);
    fputs(" ? ", f);
    print_expr(k, e->b, f);
    fputs(" : ", f);
    print_expr(k, e->c, f);
    fputc(')', f);
    break;
  case KE_CAST:
    fprintf(f, "(%s)", ktype_name(e->type));
    print_expr(k, e->a, f);
    break;
  case KE_FMA:
    fputs("fma(", f);
    print_expr(k, e->a, f);
    fputs(", ", f);
    print_expr(k, e->b, f);
    fputs(", ", f);
    print_expr(k, e->c, f);
    fputc(')', f);
    break;
  }
}

static void print_stmt(const Kernel *k, const KStmt *s, int depth, FILE *f) {
  static const char *const kinds[] = {"for", "parallel for", "reduce for", "vector for"};
  fprintf(f, "%*s", 2 * depth, "");
  switch (s->kind) {
  case KS_BLOCK:
    fputs("{\n", f);
    for (int i = 0; i < s->n_body; i++)
      print_stmt(k, s->body[i], depth + 1, f);
    fprintf(f, "%*s}\n", 2 * depth, "");
    return;
  case KS_LOOP:
  case KS_IF:
    if (s->kind == KS_LOOP) {
      fprintf(f, "%s %s in 0..", kinds[s->loop], k->vars[s->var].name);
      print_expr(k, s->extent, f);
      if (s->tile)
        fprintf(f, " (tiles of %lld)", (long long)s->tile);
    } else {
      fputs("if ", f);
      print_expr(k, s->cond, f);
    }
    fputs(" {\n", f);
    for (int i = 0; i < s->n_body; i++)
      print_stmt(k, s->body[i], depth + 1, f);
    fprintf(f, "%*s}\n", 2 * depth, "");
    return;
  case KS_STORE:
    fprintf(f, "%s[", k->bufs[s->buf].name);
    print_expr(k, s->index, f);
    fputs("] = ", f);
    break;
  case KS_DECL: fprintf(f, "%s %s = ", ktype_name(k->vars[s->var].type), k->vars[s->var].name); break;
  case KS_SET: fprintf(f, "%s = ", k->vars[s->var].name); break;
  }
  print_expr(k, s->value, f);
  fputc('\n', f);
}

void kir_print(const Kernel *k, FILE *f) {
  static const char *const roles[] = {"in", "out", "scratch"};
  fprintf(f, "kernel %s(", k->name);
  for (int i = 0; i < k->n_bufs; i++)
    fprintf(f, "%s%s %s: %s[%lld]", i ? ", " : "", roles[k->bufs[i].role], k->bufs[i].name,
            ktype_name(k->bufs[i].type), (long long)k->bufs[i].numel);
  fputs(") ", f);
  print_stmt(k, k->body, 0, f);
}

/* --- checking ----------------------------------------------------------------- */

typedef struct Check {
  const Kernel *k;
  bool *in_scope; /* per variable: defined by an enclosing loop or a decl */
  char *err;
  size_t len;
} Check;

static bool bad(Check *c, const char *fmt, const char *what) {
  snprintf(c->err, c->len, fmt, c->k->name, what);
  return false;
}

static bool check_expr(Check *c, const KExpr *e) {
  const Kernel *k = c->k;
  switch (e->kind) {
  case KE_FCONST: return e->type == KT_F32 || bad(c, "%s: a float constant typed %s", ktype_name(e->type));
  case KE_ICONST: return e->type != KT_F32 || bad(c, "%s: an integer constant typed %s", "f32");
  case KE_VAR:
    if (e->var < 0 || e->var >= k->n_vars)
      return bad(c, "%s: variable %s out of range", "?");
    return c->in_scope[e->var] || bad(c, "%s: %s used outside its scope", k->vars[e->var].name);
  case KE_LOAD:
    if (e->buf < 0 || e->buf >= k->n_bufs)
      return bad(c, "%s: load from buffer %s out of range", "?");
    if (e->a->type != KT_IDX)
      return bad(c, "%s: index into %s is not an index expression", k->bufs[e->buf].name);
    if (e->a->kind == KE_ICONST && (e->a->i < 0 || e->a->i >= k->bufs[e->buf].numel))
      return bad(c, "%s: constant index out of the bounds of %s", k->bufs[e->buf].name);
    return check_expr(c, e->a);
  case KE_UNARY: return check_expr(c, e->a);
  case KE_BINARY:
    if (e->a->type != e->b->type)
      return bad(c, "%s: operands of %s have different types", kop_name(e->op));
    return check_expr(c, e->a) && check_expr(c, e->b);
  case KE_SELECT:
    if (e->a->type != KT_I32 || e->b->type != e->c->type)
      return bad(c, "%s: a select needs an i32 condition and like branches%s", "");
    return check_expr(c, e->a) && check_expr(c, e->b) && check_expr(c, e->c);
  case KE_CAST: return check_expr(c, e->a);
  case KE_FMA:
    if (e->a->type != KT_F32 || e->b->type != KT_F32 || e->c->type != KT_F32)
      return bad(c, "%s: fma needs f32 operands%s", "");
    return check_expr(c, e->a) && check_expr(c, e->b) && check_expr(c, e->c);
  }
  unreachable();
}

static bool check_stmt(Check *c, const KStmt *s) {
  const Kernel *k = c->k;
  bool ok = true;
  switch (s->kind) {
  case KS_BLOCK:
  case KS_IF:
    if (s->kind == KS_IF && (!check_expr(c, s->cond) || s->cond->type != KT_I32))
      return bad(c, "%s: an if needs an i32 condition%s", "");
    for (int i = 0; i < s->n_body && ok; i++)
      ok = check_stmt(c, s->body[i]);
    return ok;
  case KS_LOOP:
    if (s->var < 0 || s->var >= k->n_vars || k->vars[s->var].type != KT_IDX)
      return bad(c, "%s: a loop needs an index variable%s", "");
    if (c->in_scope[s->var])
      return bad(c, "%s: loop variable %s is already in scope", k->vars[s->var].name);
    if (s->extent->type != KT_IDX || !check_expr(c, s->extent))
      return bad(c, "%s: bad extent for loop %s", k->vars[s->var].name);
    c->in_scope[s->var] = true;
    for (int i = 0; i < s->n_body && ok; i++)
      ok = check_stmt(c, s->body[i]);
    c->in_scope[s->var] = false;
    return ok;
  case KS_STORE:
    if (s->buf < 0 || s->buf >= k->n_bufs || k->bufs[s->buf].role == KB_IN)
      return bad(c, "%s: a store to %s, which is not an output or scratch", s->buf >= 0 && s->buf < k->n_bufs ? k->bufs[s->buf].name : "?");
    if (s->index->type != KT_IDX || s->value->type != k->bufs[s->buf].type)
      return bad(c, "%s: a store to %s with the wrong index or value type", k->bufs[s->buf].name);
    return check_expr(c, s->index) && check_expr(c, s->value);
  case KS_DECL:
  case KS_SET:
    if (s->var < 0 || s->var >= k->n_vars || s->value->type != k->vars[s->var].type)
      return bad(c, "%s: an assignment of the wrong type%s", "");
    if (!check_expr(c, s->value))
      return false;
    if (s->kind == KS_DECL)
      c->in_scope[s->var] = true; /* until the end of the kernel: locals are not reused */
    return c->in_scope[s->var] || bad(c, "%s: %s set before it is declared", k->vars[s->var].name);
  }
  unreachable();
}

bool kir_verify(const Kernel *k, char *err, size_t errlen) {
  Check c = {k, calloc((size_t)k->n_vars + 1, sizeof(bool)), err, errlen};
  bool ok = check_stmt(&c, k->body);
  free(c.in_scope);
  return ok;
}
