/*
 * cg_loop.c: Kernel IR statements, counted loops and parallel loops.
 *
 * Every loop is `for (v = lo; v < hi; v++)` with v in its alloca and the
 * extent evaluated once before the loop; LLVM's loop passes rotate,
 * promote and vectorize from there.  By kind:
 *
 *   KL_SERIAL, KL_REDUCE  plain loops.  A reduction keeps its order: no
 *                         vectorize hint, because the hint would license the
 *                         vectorizer to reassociate the f32 accumulator.
 *   KL_VECTOR             llvm.loop.vectorize.enable, and
 *                         llvm.loop.parallel_accesses naming an access group
 *                         that tags every load and store of the body: the
 *                         iterations are independent by definition, even
 *                         when a kernel runs in place (element i is read and
 *                         written by iteration i only), so the vectorizer
 *                         needs no run-time overlap checks; without the
 *                         group its checks saw the output overlap the input
 *                         of an in-place kernel and ran the scalar loop
 *                         (4x slower).
 *   KL_PARALLEL           outlined: the body becomes an internal function
 *                         `void K.parN(void *ctx, int64_t begin, int64_t end)`
 *                         running iterations [begin, end), and the loop
 *                         becomes rt_parallel_for(n, grain, K.parN, &ctx).
 *                         The context struct holds the buffer-pointer array
 *                         and the values of the variables the body reads
 *                         but does not define (outer loop variables and
 *                         locals), copied in; a body may not assign an outer
 *                         local (cg_check_parallel), since each thread has
 *                         its own copy.  grain = max(1, 65536 / work),
 *                         work being a static estimate of one iteration's
 *                         operations, so each task does ~64k operations; a
 *                         loop with a constant extent and under two grains
 *                         of work, or nested in a parallel body, runs
 *                         serially (with the vectorize hint).  An
 *                         outermost KL_VECTOR loop (a flat elementwise
 *                         kernel) is independent as well, and is split
 *                         across threads the same way.
 *
 * Why not smaller: splitting a loop costs the pool's fork and join, and each
 * thread then reads what the other core wrote last (the previous kernel's
 * other half) and writes over bytes the other core may hold.  On the
 * 2-vCPU VM of docs/benchmarks.md that traffic is slow: a serial sum over
 * a [512, 128] gradient took 2.0 us at 1 thread and 7.7 us at 2, its rows
 * written by both cores.  With 32k operations a task, the LSTM's fused
 * training step at batch 32 took 0.25-0.27 ms at 2 threads against 0.16
 * at 1; with 128k, 0.19-0.20 ms, the other models within their noise
 * (docs/benchmarks.md, "sixth session").  Since then the step's thread
 * count and grain are measured at run time (runtime/tune.c tries 8 times
 * the grain too), and on the Zen 4 host of the fifteenth session 64k let
 * the LSTM's cell kernels ([64, 32], five sigmoids and tanhs an element)
 * split: its inference at batch 64 and 2 threads took 0.136-0.140 ms a
 * step instead of 0.180-0.185, every other model's step within its noise
 * (bench/kprof.sh, 2 threads, 16 steps of 10 models).  KILN_PAR_WORK
 * overrides it when a kernel is compiled, to measure another.
 */
#include <stdlib.h>
#include <string.h>

#include <llvm-c/DebugInfo.h> /* temporary metadata nodes */

#include "cg_internal.h"

enum { PAR_GRAIN_WORK = 65536 }; /* operations per parallel task, roughly (see above) */

/* PAR_GRAIN_WORK, or KILN_PAR_WORK when set to a positive number. */
static double par_grain_work(void) {
  const char *e = getenv("KILN_PAR_WORK");
  double w = e ? atof(e) : 0;
  return w > 0 ? w : PAR_GRAIN_WORK;
}

/* --- analysis: work estimates and captured variables ------------------------ */

static double expr_work(const KExpr *e) {
  if (!e)
    return 0;
  double w = 1;
  if (e->kind == KE_UNARY && e->op >= KO_EXP && e->op <= KO_FLOOR)
    w = 10; /* a libm call or a polynomial */
  return w + expr_work(e->a) + expr_work(e->b) + expr_work(e->c);
}

static double trip_guess(const KExpr *extent) {
  if (extent->kind != KE_ICONST)
    return 64;
  return extent->i > 0 ? (double)extent->i : 0;
}

static double stmt_work(const KStmt *s) {
  double w = 1 + expr_work(s->index) + expr_work(s->value) + expr_work(s->cond);
  double body = 0;
  for (int i = 0; i < s->n_body; i++)
    body += stmt_work(s->body[i]);
  if (s->kind == KS_LOOP)
    return w + trip_guess(s->extent) * (body + 1);
  return w + body;
}

static void expr_uses(const KExpr *e, bool *used) {
  if (!e)
    return;
  if (e->kind == KE_VAR)
    used[e->var] = true;
  expr_uses(e->a, used);
  expr_uses(e->b, used);
  expr_uses(e->c, used);
}

/* Whether e reads a variable marked in vars. */
static bool expr_reads(const KExpr *e, const bool *vars) {
  if (!e)
    return false;
  if (e->kind == KE_VAR && vars[e->var])
    return true;
  return expr_reads(e->a, vars) || expr_reads(e->b, vars) || expr_reads(e->c, vars);
}

/* Marks the variables s reads (used), defines (loops, decls) and assigns. */
static void stmt_uses(const KStmt *s, bool *used, bool *defined, bool *assigned) {
  expr_uses(s->extent, used);
  expr_uses(s->index, used);
  expr_uses(s->value, used);
  expr_uses(s->cond, used);
  if (s->kind == KS_LOOP || s->kind == KS_DECL)
    defined[s->var] = true;
  if (s->kind == KS_SET)
    assigned[s->var] = true;
  for (int i = 0; i < s->n_body; i++)
    stmt_uses(s->body[i], used, defined, assigned);
}

/* The variables a parallel loop's body needs from outside: calloc'ed
 * flags; *bad is the first one it assigns, or -1. */
static bool *captures(const Kernel *k, const KStmt *loop, int *bad) {
  size_t nv = (size_t)k->n_vars + 1;
  bool *used = calloc(nv, 1), *defined = calloc(nv, 1), *assigned = calloc(nv, 1);
  ASSERT(used && defined && assigned);
  defined[loop->var] = true;
  for (int i = 0; i < loop->n_body; i++)
    stmt_uses(loop->body[i], used, defined, assigned);
  *bad = -1;
  for (int v = 0; v < k->n_vars; v++) {
    used[v] = (used[v] || assigned[v]) && !defined[v];
    if (assigned[v] && !defined[v] && *bad < 0)
      *bad = v;
  }
  free(defined);
  free(assigned);
  return used;
}

static bool check_stmt(const Kernel *k, const KStmt *s, char *err, size_t n) {
  if (s->kind == KS_LOOP && s->loop == KL_PARALLEL) {
    int bad;
    free(captures(k, s, &bad));
    if (bad >= 0) {
      cg_errf(err, n, "codegen: kernel %s: parallel loop %s assigns %s, a local declared "
              "outside it", k->name, k->vars[s->var].name, k->vars[bad].name);
      return false;
    }
  }
  for (int i = 0; i < s->n_body; i++)
    if (!check_stmt(k, s->body[i], err, n))
      return false;
  return true;
}

bool cg_check_parallel(const Kernel *k, char *err, size_t n) {
  return check_stmt(k, k->body, err, n);
}

/* --- loops ------------------------------------------------------------------------ */

/* Loop metadata on the latch branch: !{!self, !{!"<hint>"[, i1 true]}},
 * and for a vector loop (group given) also its parallel accesses and
 * unroll.disable: LLVM fully unrolls short loops (a 14-window row of
 * max pooling) before the vectorizer sees them, and the SLP vectorizer
 * then leaves strided code scalar; kept as loops they vectorize (max
 * pooling 2.5x, col2im 1.6x, every model's step 0-20% faster). */
static void loop_hint(Fn *f, LLVMValueRef latch, const char *hint, bool with_true,
                      LLVMMetadataRef group) {
  LLVMContextRef c = f->cg->ctx;
  LLVMMetadataRef on[] = {LLVMMDStringInContext2(c, hint, strlen(hint)),
                          LLVMValueAsMetadata(LLVMConstInt(f->cg->t_i1, 1, 0))};
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(c, NULL, 0);
  static const char pa[] = "llvm.loop.parallel_accesses";
  LLVMMetadataRef par[] = {LLVMMDStringInContext2(c, pa, sizeof pa - 1), group};
  static const char nu[] = "llvm.loop.unroll.disable";
  LLVMMetadataRef nun = LLVMMDStringInContext2(c, nu, sizeof nu - 1);
  LLVMMetadataRef ops[] = {tmp, LLVMMDNodeInContext2(c, on, with_true ? 2 : 1),
                           group ? LLVMMDNodeInContext2(c, par, 2) : NULL,
                           LLVMMDNodeInContext2(c, &nun, 1)};
  LLVMMetadataRef loop = LLVMMDNodeInContext2(c, ops, group ? 4 : 2);
  LLVMMetadataReplaceAllUsesWith(tmp, loop); /* makes loop refer to itself; frees tmp */
  LLVMSetMetadata(latch, f->cg->md_loop, LLVMMetadataAsValue(c, loop));
}

/* Whether s contains a loop.  Only innermost loops get the vectorize hint
 * (LLVM vectorizes innermost loops and warns about hinted outer ones);
 * outer loops get unroll.disable: fully unrolling a [16] loop around a
 * vectorized [1024] one made sixteen copies of the vector loop and its
 * overlap checks, and tripled the JIT's compile time, for no speed. */
static bool has_loop(const KStmt *s) {
  for (int i = 0; i < s->n_body; i++)
    if (s->body[i]->kind == KS_LOOP || has_loop(s->body[i]))
      return true;
  return false;
}

static void body(Fn *f, const KStmt *s) {
  for (int i = 0; i < s->n_body; i++) {
    f->tail = s->body + i + 1, f->n_tail = s->n_body - i - 1, f->consumed = 0;
    cg_stmt(f, s->body[i]);
    i += f->consumed;
    f->tail = NULL, f->n_tail = 0, f->consumed = 0;
  }
}

/* --- vector accumulators --------------------------------------------------------
 * A reduction loop that updates several f32 accumulators with one
 * operation, acc_j = acc_j op e_j, and reads and writes them nowhere else
 * in its body (ir/lower_reduce.c's lanes: a row's maximum or sum in 16
 * partials, element i into partial i mod 16), keeps them as the lanes of
 * one vector: they go in before the loop; each iteration computes the e_j
 * where their statements stand, then applies op to all lanes at once (at
 * the last update); after the loop the lanes go back.  Each lane does the
 * scalar operation, so the bits are the same.  Left as 16 scalar phis,
 * the accumulators were vectorized by LLVM's SLP pass in pairs only (2-lane
 * loads and maxima: a softmax's maximum and sum took most of its time);
 * from the vector they are built into, SLP makes 16-lane code of the e_j. */
enum { VACC_MIN = 4, VACC_MAX = 64 };

typedef struct VAcc {
  int n;
  KOp op;
  const KStmt *set[VACC_MAX]; /* the updates, in body order */
  LLVMValueRef val[VACC_MAX]; /* their e_j, as emitted */
  LLVMTypeRef vt;             /* <n x float> */
  LLVMValueRef slot;          /* its alloca */
} VAcc;

static bool is_update(const KStmt *s) {
  const KExpr *v = s->kind == KS_SET ? s->value : NULL;
  return v && v->kind == KE_BINARY && v->type == KT_F32 &&
         (v->op == KO_ADD || v->op == KO_MUL || v->op == KO_MIN || v->op == KO_MAX) &&
         v->a->kind == KE_VAR && v->a->var == s->var;
}

/* Whether s (of an update, its e_j only) neither reads nor assigns an
 * accumulator (marked in acc). */
static bool untouched(const KStmt *s, const bool *acc, bool update) {
  if (update)
    return !expr_reads(s->value->b, acc);
  if ((s->kind == KS_SET || s->kind == KS_DECL || s->kind == KS_LOOP) && acc[s->var])
    return false;
  if (expr_reads(s->extent, acc) || expr_reads(s->index, acc) || expr_reads(s->value, acc) ||
      expr_reads(s->cond, acc))
    return false;
  for (int i = 0; i < s->n_body; i++)
    if (!untouched(s->body[i], acc, false))
      return false;
  return true;
}

/* The accumulators of reduction loop s, when it has VACC_MIN or more. */
static bool vacc_find(const Kernel *k, const KStmt *s, VAcc *va) {
  va->n = 0;
  if (s->loop != KL_REDUCE)
    return false;
  for (int i = 0; i < s->n_body; i++) {
    const KStmt *c = s->body[i];
    if (!is_update(c))
      continue;
    if (va->n == VACC_MAX || (va->n > 0 && c->value->op != va->op))
      return false;
    va->op = c->value->op;
    va->set[va->n++] = c;
  }
  if (va->n < VACC_MIN)
    return false;
  bool *acc = calloc((size_t)k->n_vars + 1, 1);
  ASSERT(acc);
  bool ok = true;
  for (int j = 0; j < va->n && ok; j++) {
    ok = !acc[va->set[j]->var];
    acc[va->set[j]->var] = true;
  }
  for (int i = 0; ok && i < s->n_body; i++)
    ok = untouched(s->body[i], acc, is_update(s->body[i]));
  free(acc);
  return ok;
}

static LLVMValueRef lane(Cg *cg, int j) { return LLVMConstInt(cg->t_i32, (unsigned long long)j, 0); }

/* Before the loop: the accumulators into the vector. */
static void vacc_begin(Fn *f, VAcc *va) {
  Cg *cg = f->cg;
  va->vt = LLVMVectorType(cg->t_f32, (unsigned)va->n);
  va->slot = LLVMBuildAlloca(f->ab, va->vt, "vacc");
  LLVMValueRef v = LLVMGetUndef(va->vt);
  for (int j = 0; j < va->n; j++) {
    LLVMValueRef x = LLVMBuildLoad2(f->b, cg->t_f32, cg_slot(f, va->set[j]->var), "");
    v = LLVMBuildInsertElement(f->b, v, x, lane(cg, j), "");
  }
  LLVMBuildStore(f->b, v, va->slot);
}

/* The loop's body, the updates on the vector. */
static void vacc_body(Fn *f, const KStmt *s, VAcc *va) {
  Cg *cg = f->cg;
  int j = 0;
  for (int i = 0; i < s->n_body; i++) {
    const KStmt *c = s->body[i];
    if (j == va->n || c != va->set[j]) {
      cg_stmt(f, c);
      continue;
    }
    va->val[j++] = cg_expr(f, c->value->b);
    if (j < va->n)
      continue;
    LLVMValueRef e = LLVMGetUndef(va->vt);
    for (int l = 0; l < va->n; l++)
      e = LLVMBuildInsertElement(f->b, e, va->val[l], lane(cg, l), "");
    LLVMValueRef acc = LLVMBuildLoad2(f->b, va->vt, va->slot, "");
    LLVMBuildStore(f->b, cg_arith(f, va->op, true, acc, e), va->slot);
  }
}

/* After the loop: the lanes back into the accumulators. */
static void vacc_end(Fn *f, VAcc *va) {
  Cg *cg = f->cg;
  LLVMValueRef v = LLVMBuildLoad2(f->b, va->vt, va->slot, "");
  for (int j = 0; j < va->n; j++)
    LLVMBuildStore(f->b, LLVMBuildExtractElement(f->b, v, lane(cg, j), ""),
                   cg_slot(f, va->set[j]->var));
}

/* The lane of accumulator var in va, or -1. */
static int vacc_lane(const VAcc *va, int var) {
  for (int j = 0; j < va->n; j++)
    if (va->set[j]->var == var)
      return j;
  return -1;
}

/* After the loop, statements acc_x = acc_x op acc_y on its accumulators
 * (ir/lower_reduce.c's trees: p[l] = p[l] op p[l + w], w = 8, 4, 2, 1, for
 * each of a block of rows) are done on the vector: in waves, each the
 * statements whose operands are final by then, as one vector op on lanes
 * gathered by shuffles, its results shuffled back in.  Each lane still does
 * its scalar operations in order: the same bits.  Left to LLVM, each row's
 * tree was a chain of extracts and scalar adds, ~15 operations a row; the
 * waves do a block's rows together (4 rows of 16 partials: 4 ops of 32, 16,
 * 8 and 4 lanes).  Returns how many of the statements it did. */
static int vacc_tree(Fn *f, VAcc *va, KStmt *const *tail, int n_tail) {
  enum { WAVES = 16 };
  int n = 0, last_w[VACC_MAX] = {0}, last_r[VACC_MAX] = {0}, wave[VACC_MAX * 4];
  int lx[VACC_MAX * 4], ly[VACC_MAX * 4], waves = 0;
  for (; n < n_tail && n < VACC_MAX * 4; n++) {
    const KStmt *t = tail[n];
    const KExpr *v = t->kind == KS_SET ? t->value : NULL;
    if (!v || v->kind != KE_BINARY || v->op != va->op || v->type != KT_F32 ||
        v->a->kind != KE_VAR || v->a->var != t->var || v->b->kind != KE_VAR)
      break;
    int x = vacc_lane(va, t->var), y = vacc_lane(va, v->b->var);
    if (x < 0 || y < 0 || x == y)
      break;
    int w = (last_w[x] > last_w[y] ? last_w[x] : last_w[y]) + 1;
    w = w < last_r[x] ? last_r[x] : w; /* after the reads of x's old value */
    if (w > WAVES)
      break;
    lx[n] = x, ly[n] = y, wave[n] = w;
    last_w[x] = w;
    last_r[x] = last_r[x] > w ? last_r[x] : w;
    last_r[y] = last_r[y] > w ? last_r[y] : w;
    waves = waves > w ? waves : w;
  }
  if (n == 0)
    return 0;
  Cg *cg = f->cg;
  LLVMValueRef v = LLVMBuildLoad2(f->b, va->vt, va->slot, "");
  LLVMValueRef undef = LLVMGetUndef(va->vt);
  for (int w = 1; w <= waves; w++) {
    LLVMValueRef mx[VACC_MAX], my[VACC_MAX], back[VACC_MAX];
    int m = 0, at[VACC_MAX];
    bool wrote[VACC_MAX] = {0};
    for (int i = 0; i < n; i++)
      if (wave[i] == w) {
        wrote[lx[i]] = true, at[lx[i]] = m;
        mx[m] = lane(cg, lx[i]), my[m++] = lane(cg, ly[i]);
      }
    LLVMValueRef a = LLVMBuildShuffleVector(f->b, v, undef, LLVMConstVector(mx, (unsigned)m), "");
    LLVMValueRef b = LLVMBuildShuffleVector(f->b, v, undef, LLVMConstVector(my, (unsigned)m), "");
    LLVMValueRef r = cg_arith(f, va->op, true, a, b);
    /* r back into v: lane j from r where this wave wrote it; r is widened
     * to n lanes first (a shuffle's operands have one type) */
    LLVMValueRef wide[VACC_MAX];
    for (int j = 0; j < va->n; j++)
      wide[j] = j < m ? lane(cg, j) : LLVMGetUndef(cg->t_i32);
    LLVMValueRef rw = LLVMBuildShuffleVector(f->b, r, LLVMGetUndef(LLVMTypeOf(r)),
                                             LLVMConstVector(wide, (unsigned)va->n), "");
    for (int j = 0; j < va->n; j++)
      back[j] = lane(cg, wrote[j] ? va->n + at[j] : j);
    v = LLVMBuildShuffleVector(f->b, v, rw, LLVMConstVector(back, (unsigned)va->n), "");
  }
  LLVMBuildStore(f->b, v, va->slot);
  return n;
}

/* for (var = lo; var < hi; var++) s's body */
static void counted_loop(Fn *f, const KStmt *s, LLVMValueRef lo, LLVMValueRef hi, bool vectorize) {
  Cg *cg = f->cg;
  VAcc va = {0};
  KStmt *const *tail = f->tail;
  int n_tail = f->n_tail, folded = 0;
  f->tail = NULL, f->n_tail = 0;
  bool vacc = !vectorize && vacc_find(f->k, s, &va);
  if (vacc)
    vacc_begin(f, &va);
  LLVMValueRef slot = cg_slot(f, s->var);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop");
  LLVMBasicBlockRef code = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "body");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "done");
  LLVMBuildStore(f->b, lo, slot);
  LLVMBuildBr(f->b, head);
  LLVMPositionBuilderAtEnd(f->b, head);
  LLVMValueRef i = LLVMBuildLoad2(f->b, cg->t_i64, slot, f->k->vars[s->var].name);
  LLVMBuildCondBr(f->b, LLVMBuildICmp(f->b, LLVMIntSLT, i, hi, ""), code, done);
  LLVMPositionBuilderAtEnd(f->b, code);
  bool inner = !has_loop(s);
  LLVMMetadataRef outer_group = f->group;
  f->group = inner && vectorize ? cg_access_group(cg) : NULL;
  f->depth++;
  if (vacc)
    vacc_body(f, s, &va);
  else
    body(f, s);
  f->depth--;
  i = LLVMBuildLoad2(f->b, cg->t_i64, slot, "");
  LLVMBuildStore(f->b, LLVMBuildNSWAdd(f->b, i, LLVMConstInt(cg->t_i64, 1, 0), ""), slot);
  LLVMValueRef latch = LLVMBuildBr(f->b, head);
  if (!inner)
    loop_hint(f, latch, "llvm.loop.unroll.disable", false, NULL);
  else if (vectorize)
    loop_hint(f, latch, "llvm.loop.vectorize.enable", true, f->group);
  f->group = outer_group;
  LLVMPositionBuilderAtEnd(f->b, done);
  if (vacc) {
    if (tail)
      folded = vacc_tree(f, &va, tail, n_tail);
    vacc_end(f, &va);
  }
  f->consumed = folded;
}

static LLVMValueRef parallel_for_decl(Cg *cg) {
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, "rt_parallel_for");
  if (!fn)
    fn = LLVMAddFunction(cg->mod, "rt_parallel_for", cg->t_pfor);
  return fn;
}

/* The context struct: the buffer array, then each captured variable. */
static LLVMTypeRef ctx_type(Fn *f, const bool *cap) {
  int nv = f->k->n_vars, nf = 1;
  LLVMTypeRef *fields = malloc(sizeof *fields * (size_t)(nv + 1));
  ASSERT(fields);
  fields[0] = f->cg->t_ptr;
  for (int v = 0; v < nv; v++)
    if (cap[v])
      fields[nf++] = cg_type(f->cg, f->k->vars[v].type);
  LLVMTypeRef st = LLVMStructTypeInContext(f->cg->ctx, fields, (unsigned)nf, 0);
  free(fields);
  return st;
}

/* Emits the body function; returns it. */
static LLVMValueRef outline_body(Fn *f, const KStmt *s, const bool *cap, LLVMTypeRef st) {
  Cg *cg = f->cg;
  char name[300];
  snprintf(name, sizeof name, "%s.par%d", f->k->name, (*f->n_outlined)++);
  Fn g;
  cg_fn_begin(&g, cg, f->k, name, cg->t_body, LLVMInternalLinkage);
  g.in_parallel = true;
  g.n_outlined = f->n_outlined;
  LLVMValueRef ctx = LLVMGetParam(g.fn, 0);
  LLVMValueRef bufs = LLVMBuildStructGEP2(g.ab, st, ctx, 0, "");
  cg_fn_load_bufs(&g, LLVMBuildLoad2(g.ab, cg->t_ptr, bufs, "bufs"));
  for (int v = 0, j = 1; v < f->k->n_vars; v++) {
    if (!cap[v])
      continue;
    LLVMTypeRef t = cg_type(cg, f->k->vars[v].type);
    LLVMValueRef p = LLVMBuildStructGEP2(g.ab, st, ctx, (unsigned)j++, "");
    LLVMValueRef slot = cg_slot(&g, v);
    LLVMBuildStore(g.ab, LLVMBuildLoad2(g.ab, t, p, f->k->vars[v].name), slot);
  }
  counted_loop(&g, s, LLVMGetParam(g.fn, 1), LLVMGetParam(g.fn, 2), true);
  cg_fn_end(&g);
  return g.fn;
}

static void outline(Fn *f, const KStmt *s, LLVMValueRef n, double work) {
  Cg *cg = f->cg;
  int bad;
  bool *cap = captures(f->k, s, &bad);
  ASSERT(bad < 0); /* cg_check_parallel ran */
  LLVMTypeRef st = ctx_type(f, cap);
  LLVMValueRef body_fn = outline_body(f, s, cap, st);
  LLVMValueRef ctx = LLVMBuildAlloca(f->ab, st, "par.ctx");
  LLVMBuildStore(f->b, f->bufs, LLVMBuildStructGEP2(f->b, st, ctx, 0, ""));
  for (int v = 0, j = 1; v < f->k->n_vars; v++) {
    if (!cap[v])
      continue;
    LLVMValueRef val = LLVMBuildLoad2(f->b, cg_type(cg, f->k->vars[v].type), cg_slot(f, v), "");
    LLVMBuildStore(f->b, val, LLVMBuildStructGEP2(f->b, st, ctx, (unsigned)j++, ""));
  }
  double g = par_grain_work() / (work > 1 ? work : 1);
  LLVMValueRef grain = LLVMConstInt(cg->t_i64, g > 1 ? (unsigned long long)g : 1, 0);
  LLVMValueRef args[] = {n, grain, body_fn, ctx};
  LLVMBuildCall2(f->b, cg->t_pfor, parallel_for_decl(cg), args, 4, "");
  free(cap);
}

/* Whether loop s, independent, runs on rt_parallel_for: a parallel loop,
 * or an outermost vector loop, with two iterations and two grains of work
 * at least, and not inside a parallel body. */
static bool goes_parallel(Fn *f, const KStmt *s, double work) {
  if (f->in_parallel || (s->loop == KL_VECTOR && f->depth > 0))
    return false;
  const KExpr *e = s->extent;
  return e->kind != KE_ICONST || (e->i >= 2 && (double)e->i * work >= 2.0 * par_grain_work());
}

static void loop(Fn *f, const KStmt *s) {
  LLVMValueRef zero = LLVMConstInt(f->cg->t_i64, 0, 0);
  LLVMValueRef n = cg_expr(f, s->extent);
  double work = 1;
  for (int i = 0; i < s->n_body; i++)
    work += stmt_work(s->body[i]);
  /* a vector loop that updates an outer local (a reduction in disguise)
   * gets neither threads nor the hint, which would reorder its f32 sum */
  int carried;
  free(captures(f->k, s, &carried));
  bool independent = (s->loop == KL_PARALLEL || s->loop == KL_VECTOR) && carried < 0;
  if (independent && goes_parallel(f, s, work))
    outline(f, s, n, work);
  else
    counted_loop(f, s, zero, n, independent);
}

/* --- statements ------------------------------------------------------------------ */

static void if_stmt(Fn *f, const KStmt *s) {
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(f->cg->ctx, f->fn, "then");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(f->cg->ctx, f->fn, "endif");
  LLVMBuildCondBr(f->b, cg_truth(f, cg_expr(f, s->cond)), then, done);
  LLVMPositionBuilderAtEnd(f->b, then);
  body(f, s);
  LLVMBuildBr(f->b, done);
  LLVMPositionBuilderAtEnd(f->b, done);
}

void cg_stmt(Fn *f, const KStmt *s) {
  switch (s->kind) {
  case KS_BLOCK: body(f, s); return;
  case KS_LOOP: loop(f, s); return;
  case KS_IF: if_stmt(f, s); return;
  case KS_STORE: {
    LLVMValueRef v = cg_expr(f, s->value);
    cg_tag_access(f, LLVMBuildStore(f->b, v, cg_elem_ptr(f, s->buf, cg_expr(f, s->index))));
    return;
  }
  case KS_DECL:
  case KS_SET: LLVMBuildStore(f->b, cg_expr(f, s->value), cg_slot(f, s->var)); return;
  }
  unreachable();
}
