/*
 * cuda_stmt.c: Kernel IR statements printed as C inside a kernel's
 * function (cuda_emit.c decides which statements go to which function
 * and how its parallel loop is spread over threads), and the analyses of
 * loops that decision needs.
 *
 * Statements:
 *   store      buf[index] = value;
 *   decl       T v = value;  where every use of v follows it in the same C
 *              block, else v is declared at the top of the function (or is
 *              a __device__ variable, cuda_emit.c) and this is an
 *              assignment
 *   set        v = value;
 *   if         if (cond) { ... }
 *   loop       for (long long v = 0; v < extent; v++) { ... }, the extent
 *              evaluated once as kir_eval does; every kind runs its
 *              iterations in order, in the thread that reaches it, so a
 *              reduction rounds exactly as kir_eval's (warp-shuffle
 *              reductions are stage 2, see codegen/README.md)
 *   block      its statements, in the enclosing C block
 * Loop variables and locals keep their Kernel IR names (which kir_var
 * numbers), buffers theirs, where these are distinct C identifiers
 * (cuda_emit.c names them).
 *
 * Analyses: which locals a loop assigns that are declared outside it
 * (a parallel loop must not), and whether a loop's iterations touch
 * disjoint memory (every buffer written is read and written at one affine
 * index whose coefficient on the loop's variable exceeds what the loops
 * inside it can add): then a serial loop can join the parallel loop around
 * it in one grid-stride space (cu_collapsible), or a serial nest at the
 * top level can run one thread per iteration of its innermost independent
 * loop (cu_interchange).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* --- output ---------------------------------------------------------------------- */

void cu_line(Em *m, const char *fmt, ...) {
  for (int i = 0; i < m->indent; i++)
    sb_puts(m->out, "  ");
  va_list ap;
  va_start(ap, fmt);
  char small[512];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < (int)sizeof small) {
    sb_puts(m->out, small);
  } else {
    char *big = malloc((size_t)n + 1);
    ASSERT(big);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_puts(m->out, big);
    free(big);
  }
  sb_puts(m->out, "\n");
}

/* --- walking ---------------------------------------------------------------------- */

static void flatten_into(const KStmt *s, const KStmt ***items, int *n, int *cap) {
  for (int i = 0; i < s->n_body; i++) {
    const KStmt *c = s->body[i];
    if (c->kind == KS_BLOCK) {
      flatten_into(c, items, n, cap);
      continue;
    }
    if (*n == *cap) {
      *cap = *cap ? 2 * *cap : 16;
      *items = realloc(*items, sizeof **items * (size_t)*cap);
      ASSERT(*items);
    }
    (*items)[(*n)++] = c;
  }
}

int cu_flatten(const KStmt *s, const KStmt ***items) {
  int n = 0, cap = 0;
  *items = NULL;
  flatten_into(s, items, &n, &cap);
  return n;
}

void cu_expr_vars(const KExpr *e, bool *used) {
  if (!e)
    return;
  if (e->kind == KE_VAR)
    used[e->var] = true;
  cu_expr_vars(e->a, used);
  cu_expr_vars(e->b, used);
  cu_expr_vars(e->c, used);
}

void cu_stmt_vars(const KStmt *s, bool *used, bool *defined) {
  cu_expr_vars(s->extent, used);
  cu_expr_vars(s->index, used);
  cu_expr_vars(s->value, used);
  cu_expr_vars(s->cond, used);
  if (s->kind == KS_LOOP || s->kind == KS_DECL || s->kind == KS_SET)
    used[s->var] = true;
  if (defined && (s->kind == KS_LOOP || s->kind == KS_DECL))
    defined[s->var] = true;
  for (int i = 0; i < s->n_body; i++)
    cu_stmt_vars(s->body[i], used, defined);
}

static void expr_bufs(const KExpr *e, bool *loads) {
  if (!e)
    return;
  if (e->kind == KE_LOAD)
    loads[e->buf] = true;
  expr_bufs(e->a, loads);
  expr_bufs(e->b, loads);
  expr_bufs(e->c, loads);
}

void cu_stmt_bufs(const KStmt *s, bool *loads, bool *stores) {
  expr_bufs(s->extent, loads);
  expr_bufs(s->index, loads);
  expr_bufs(s->value, loads);
  expr_bufs(s->cond, loads);
  if (s->kind == KS_STORE)
    stores[s->buf] = true;
  for (int i = 0; i < s->n_body; i++)
    cu_stmt_bufs(s->body[i], loads, stores);
}

static int expr_mentions(const KExpr *e, int v) {
  if (!e)
    return 0;
  return (e->kind == KE_VAR && e->var == v) + expr_mentions(e->a, v) + expr_mentions(e->b, v) +
         expr_mentions(e->c, v);
}

int cu_mentions(const KStmt *s, int v) {
  int n = expr_mentions(s->extent, v) + expr_mentions(s->index, v) +
          expr_mentions(s->value, v) + expr_mentions(s->cond, v);
  if ((s->kind == KS_LOOP || s->kind == KS_DECL || s->kind == KS_SET) && s->var == v)
    n++;
  for (int i = 0; i < s->n_body; i++)
    n += cu_mentions(s->body[i], v);
  return n;
}

/* Marks the variables s assigns with KS_SET. */
static void sets(const KStmt *s, bool *assigned) {
  if (s->kind == KS_SET)
    assigned[s->var] = true;
  for (int i = 0; i < s->n_body; i++)
    sets(s->body[i], assigned);
}

int cu_carried(const Kernel *k, const KStmt *loop) {
  size_t nv = (size_t)k->n_vars + 1;
  bool *defined = calloc(nv, 1), *assigned = calloc(nv, 1), *used = calloc(nv, 1);
  ASSERT(defined && assigned && used);
  defined[loop->var] = true;
  for (int i = 0; i < loop->n_body; i++) {
    cu_stmt_vars(loop->body[i], used, defined);
    sets(loop->body[i], assigned);
  }
  int bad = -1;
  for (int v = 0; v < k->n_vars && bad < 0; v++)
    if (assigned[v] && !defined[v])
      bad = v;
  free(defined), free(assigned), free(used);
  return bad;
}

/* --- independence of loop iterations ------------------------------------------------ */

enum { MAX_TERMS = 16 };

/* c + sum coef[t] var[t] (terms sorted by variable, coefficients nonzero) */
typedef struct Affine {
  int64_t c;
  int n;
  int var[MAX_TERMS];
  int64_t coef[MAX_TERMS];
} Affine;

/* r = x + s y; false on overflow or too many terms. */
static bool aff_axpy(Affine *r, const Affine *x, int64_t s, const Affine *y) {
  Affine t = {0};
  if (__builtin_mul_overflow(s, y->c, &t.c) || __builtin_add_overflow(t.c, x->c, &t.c))
    return false;
  int i = 0, j = 0;
  while (i < x->n || j < y->n) {
    int v = j >= y->n || (i < x->n && x->var[i] < y->var[j]) ? x->var[i] : y->var[j];
    int64_t cx = i < x->n && x->var[i] == v ? x->coef[i++] : 0;
    int64_t cy = j < y->n && y->var[j] == v ? y->coef[j++] : 0, c;
    if (__builtin_mul_overflow(s, cy, &cy) || __builtin_add_overflow(cx, cy, &c))
      return false;
    if (c == 0)
      continue;
    if (t.n == MAX_TERMS)
      return false;
    t.var[t.n] = v, t.coef[t.n++] = c;
  }
  *r = t;
  return true;
}

/* Which loop iterations are compared: those of `cand`, with the variables
 * `fixed` (outer loops, the same for both) and those that vary inside one
 * iteration (span[v]: the extent of loop v inside, else 0). */
typedef struct Space {
  const Em *m;
  int cand;
  const bool *fixed;
  const int64_t *span;
} Space;

/* e as an affine function of the space's variables (locals defined once
 * replaced by their definitions); false if it is not one. */
static bool affine(const Space *sp, const KExpr *e, Affine *a, int depth) {
  memset(a, 0, sizeof *a);
  if (depth > 64 || e->type != KT_IDX)
    return false;
  switch (e->kind) {
  case KE_ICONST: a->c = e->i; return true;
  case KE_VAR:
    if (e->var == sp->cand || sp->fixed[e->var] || sp->span[e->var] > 0) {
      a->n = 1, a->var[0] = e->var, a->coef[0] = 1;
      return true;
    }
    return sp->m->def[e->var] && affine(sp, sp->m->def[e->var], a, depth + 1);
  case KE_BINARY: {
    Affine x, y;
    if (!affine(sp, e->a, &x, depth + 1) || !affine(sp, e->b, &y, depth + 1))
      return false;
    switch (e->op) {
    case KO_ADD: return aff_axpy(a, &x, 1, &y);
    case KO_SUB: return aff_axpy(a, &x, -1, &y);
    case KO_MUL: {
      if (x.n && y.n)
        return false;
      Affine zero = {0};
      return aff_axpy(a, &zero, x.n ? y.c : x.c, x.n ? &x : &y);
    }
    default: return false;
    }
  }
  default: return false;
  }
}

typedef struct Access {
  const Space *sp;
  int buf;      /* the buffer whose accesses are checked */
  bool seen;    /* one access met */
  Affine first; /* its index */
  bool ok;
} Access;

static void access_at(Access *x, const KExpr *index) {
  Affine a;
  if (!x->ok)
    return;
  if (!affine(x->sp, index, &a, 0)) {
    x->ok = false;
  } else if (!x->seen) {
    x->first = a;
    x->seen = true;
  } else {
    x->ok = memcmp(&a, &x->first, sizeof a) == 0;
  }
}

static void access_expr(Access *x, const KExpr *e) {
  if (!e || !x->ok)
    return;
  if (e->kind == KE_LOAD && e->buf == x->buf)
    access_at(x, e->a);
  access_expr(x, e->a);
  access_expr(x, e->b);
  access_expr(x, e->c);
}

static void access_stmt(Access *x, const KStmt *s) {
  access_expr(x, s->extent);
  access_expr(x, s->index);
  access_expr(x, s->value);
  access_expr(x, s->cond);
  if (s->kind == KS_STORE && s->buf == x->buf)
    access_at(x, s->index);
  for (int i = 0; i < s->n_body && x->ok; i++)
    access_stmt(x, s->body[i]);
}

/* Whether the candidate's iterations touch disjoint memory: every buffer
 * stmts write is read and written at one index, affine, whose candidate
 * coefficient exceeds everything the varying terms can add (so distinct
 * candidate values give disjoint ranges of elements). */
static bool disjoint(const Space *sp, const KStmt *const *stmts, int n) {
  const Kernel *k = sp->m->k;
  bool *loads = calloc((size_t)k->n_bufs + 1, 1), *stores = calloc((size_t)k->n_bufs + 1, 1);
  ASSERT(loads && stores);
  for (int i = 0; i < n; i++)
    cu_stmt_bufs(stmts[i], loads, stores);
  bool ok = true;
  for (int b = 0; b < k->n_bufs && ok; b++) {
    if (!stores[b])
      continue;
    Access x = {sp, b, false, {0}, true};
    for (int i = 0; i < n && x.ok; i++)
      access_stmt(&x, stmts[i]);
    int64_t cand = 0, reach = 0;
    for (int t = 0; x.ok && t < x.first.n; t++) {
      int v = x.first.var[t];
      int64_t c = x.first.coef[t] < 0 ? -x.first.coef[t] : x.first.coef[t], r;
      if (v == sp->cand)
        cand = c;
      else if (!sp->fixed[v] && (__builtin_mul_overflow(c, sp->span[v] - 1, &r) ||
                                 __builtin_add_overflow(reach, r, &reach)))
        x.ok = false;
    }
    ok = x.ok && x.seen && cand > reach;
  }
  free(loads), free(stores);
  return ok;
}

/* span[v] = the extent of each loop in s (nested too) with a constant one. */
static void spans(const KStmt *s, int64_t *span) {
  if (s->kind == KS_LOOP && s->extent->kind == KE_ICONST)
    span[s->var] = s->extent->i > 1 ? s->extent->i : 1;
  for (int i = 0; i < s->n_body; i++)
    spans(s->body[i], span);
}

static bool independent_kind(const Kernel *k, const KStmt *s) {
  return s->kind == KS_LOOP && (s->loop == KL_PARALLEL || s->loop == KL_VECTOR) &&
         cu_carried(k, s) < 0;
}

bool cu_collapsible(Em *m, const KStmt *const *chain, int n_chain, const KStmt *inner) {
  const Kernel *k = m->k;
  if (inner->kind != KS_LOOP || inner->loop == KL_REDUCE || inner->extent->kind != KE_ICONST ||
      cu_carried(k, inner) >= 0)
    return false;
  if (independent_kind(k, inner))
    return true; /* independent by definition */
  size_t nv = (size_t)k->n_vars + 1;
  bool *fixed = calloc(nv, 1);
  int64_t *span = calloc(nv, sizeof *span);
  ASSERT(fixed && span);
  for (int i = 0; i < n_chain; i++)
    fixed[chain[i]->var] = true;
  for (int i = 0; i < inner->n_body; i++)
    spans(inner->body[i], span);
  Space sp = {m, inner->var, fixed, span};
  bool ok = disjoint(&sp, (const KStmt *const *)inner->body, inner->n_body);
  free(fixed), free(span);
  return ok;
}

/* The independent loop at the end of serial loop s's nest (s's body:
 * cheap statements, then a serial loop of the same shape or that loop),
 * or NULL. */
static const KStmt *last_independent(const Kernel *k, const KStmt *s, int depth) {
  if (s->kind != KS_LOOP || s->extent->kind != KE_ICONST || depth > 8)
    return NULL;
  const KStmt **body;
  int n = cu_flatten(s, &body);
  const KStmt *last = n ? body[n - 1] : NULL, *v = NULL;
  bool cheap = true;
  for (int i = 0; i + 1 < n; i++)
    cheap &= body[i]->kind == KS_DECL || body[i]->kind == KS_SET;
  free(body);
  if (!cheap || !last || last->kind != KS_LOOP || last->extent->kind != KE_ICONST)
    return NULL;
  if (independent_kind(k, last))
    v = last;
  else if (last->loop != KL_PARALLEL && last->loop != KL_VECTOR)
    v = last_independent(k, last, depth + 1);
  return v;
}

const KStmt *cu_interchange(Em *m, const KStmt *s) {
  const Kernel *k = m->k;
  if (s->kind != KS_LOOP || s->loop == KL_PARALLEL || s->loop == KL_VECTOR ||
      cu_carried(k, s) >= 0)
    return NULL;
  const KStmt *v = last_independent(k, s, 0);
  if (!v)
    return NULL;
  size_t nv = (size_t)k->n_vars + 1;
  bool *fixed = calloc(nv, 1);
  int64_t *span = calloc(nv, sizeof *span);
  ASSERT(fixed && span);
  spans(s, span); /* the serial loops and the loops inside v vary */
  span[v->var] = 0;
  Space sp = {m, v->var, fixed, span};
  bool ok = disjoint(&sp, &s, 1);
  free(fixed), free(span);
  return ok ? v : NULL;
}

/* --- declarations ------------------------------------------------------------------ */

/* Whether the local declared by items[0] may be declared there: every use
 * of it is in items[0..n), and it is declared nowhere else. */
static bool declare_here(const Em *m, const KStmt *const *items, int n) {
  int v = items[0]->var, here = 0;
  if (m->global[v] || m->n_decls[v] != 1)
    return false;
  for (int i = 0; i < n; i++)
    here += cu_mentions(items[i], v);
  return here == m->n_mentions[v];
}

void cu_plan_decls(Em *m, const KStmt *const *items, int n, bool *hoist) {
  for (int i = 0; i < n; i++) {
    const KStmt *s = items[i];
    if (s->kind == KS_DECL && !m->global[s->var] && !declare_here(m, items + i, n - i))
      hoist[s->var] = true;
    if (s->n_body) {
      const KStmt **sub;
      int ns = cu_flatten(s, &sub);
      cu_plan_decls(m, sub, ns, hoist);
      free(sub);
    }
  }
}

/* --- statements -------------------------------------------------------------------- */

static const char *kind_note(KLoopKind k) {
  switch (k) {
  case KL_SERIAL: return "";
  case KL_PARALLEL: return " /* parallel, run by this thread */";
  case KL_REDUCE: return " /* reduce, in order */";
  case KL_VECTOR: return " /* vector */";
  }
  unreachable();
}

/* The text of e (bare, or as a condition), malloc'ed through an Sb. */
static char *text_of(Em *m, const KExpr *e, bool cond) {
  Sb b = {0};
  if (cond)
    cu_cond(m, &b, e);
  else
    cu_expr(m, &b, e);
  char *t = strdup(cond ? b.s : sb_unparen(&b));
  ASSERT(t);
  sb_free(&b);
  return t;
}

static void loop_stmt(Em *m, const KStmt *s) {
  const char *v = m->var[s->var];
  Rng ext = cu_range(m, s->extent);
  char *n = text_of(m, s->extent, false);
  if (s->extent->kind == KE_ICONST)
    cu_line(m, "for (long long %s = 0; %s < %s; %s++) {%s", v, v, n, v, kind_note(s->loop));
  else
    cu_line(m, "for (long long %s = 0, kiln_n%d = %s; %s < kiln_n%d; %s++) {%s", v, s->var, n, v,
            s->var, v, kind_note(s->loop));
  free(n);
  m->rng[s->var] = (Rng){true, 0, ext.known && ext.hi >= 1 ? ext.hi - 1 : INT64_MAX - 1};
  m->indent++;
  const KStmt **items;
  int ni = cu_flatten(s, &items);
  cu_stmts(m, items, ni);
  free(items);
  m->indent--;
  cu_line(m, "}");
}

static void if_stmt(Em *m, const KStmt *s) {
  char *c = text_of(m, s->cond, true);
  cu_line(m, "if %s {", c);
  free(c);
  m->indent++;
  const KStmt **items;
  int ni = cu_flatten(s, &items);
  cu_stmts(m, items, ni);
  free(items);
  m->indent--;
  cu_line(m, "}");
}

static void assign(Em *m, const KStmt *s) {
  int v = s->var;
  char *val = text_of(m, s->value, false);
  bool decl = s->kind == KS_DECL && !m->declared[v] && !m->global[v];
  if (decl) {
    cu_line(m, "%s %s = %s;", cu_ctype(m->k->vars[v].type), m->var[v], val);
    m->declared[v] = true;
  } else {
    cu_line(m, "%s = %s;", m->var[v], val);
  }
  free(val);
  /* what is known of an integer local defined once holds wherever it is used */
  if (m->def[v] == s->value && m->k->vars[v].type != KT_F32)
    m->rng[v] = cu_range(m, s->value);
}

void cu_stmt(Em *m, const KStmt *s) {
  switch (s->kind) {
  case KS_BLOCK: {
    const KStmt **items;
    int ni = cu_flatten(s, &items);
    cu_stmts(m, items, ni);
    free(items);
    return;
  }
  case KS_LOOP:
    if (s == m->inline_loop) { /* its variable is the thread's (cu_interchange) */
      const KStmt **items;
      int ni = cu_flatten(s, &items);
      cu_stmts(m, items, ni);
      free(items);
      return;
    }
    loop_stmt(m, s);
    return;
  case KS_IF: if_stmt(m, s); return;
  case KS_STORE: {
    char *i = text_of(m, s->index, false), *v = text_of(m, s->value, false);
    cu_line(m, "%s[%s] = %s;", m->buf[s->buf], i, v);
    free(i), free(v);
    return;
  }
  case KS_DECL:
  case KS_SET: assign(m, s); return;
  }
  unreachable();
}

void cu_stmts(Em *m, const KStmt *const *items, int n) {
  for (int i = 0; i < n; i++)
    cu_stmt(m, items[i]);
}
