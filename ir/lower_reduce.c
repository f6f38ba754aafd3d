/*
 * lower_reduce.c: lowering of the reductions (sum, mean, max over any axes,
 * argmax), softmax and log_softmax, and the cross-entropy loss and its
 * gradient.
 *
 * Each output element (or row; softmax's contiguous rows in partials: a
 * block of them) is one iteration of a parallel nest; inside
 * it a local accumulator is declared and KL_REDUCE loops update it, walking
 * the reduced elements in the reference's order (row-major over the reduced
 * axes).  Accumulators are f32 where the reference's are double, so f32
 * sums, means, softmax and the loss agree within rounding, not bit for bit;
 * max, argmax and i32 sums (wrapping in both) are exact.
 *
 * NaN as in eval_elem.c / eval_nn.c: max returns NaN if any element is NaN;
 * argmax returns the index of the first NaN, else of the first maximum;
 * softmax's maximum skips NaN (the NaN still reaches the sum, so the row is
 * NaN); a label outside [0, C) makes the loss NaN and its gradient row NaN
 * (the label is clamped for the load, so no kernel reads out of bounds).
 */
#include <math.h>
#include <string.h>

#include "lower_internal.h"

/* Splits n's input around its reduced axes: out / x strides of the kept
 * axes (in order), x strides of the reduced ones. */
static void split_axes(const Node *n, int *nk, int64_t *kd, int64_t kst[][MAX_RANK], int *nr,
                       int64_t *rd, int64_t rst[][MAX_RANK]) {
  const Shape *xs = &n->in[0]->shape;
  bool red[MAX_RANK] = {0};
  int64_t st[MAX_RANK];
  for (int i = 0; i < n->at.n_axes; i++)
    red[n->at.axes[i]] = true;
  lw_strides(xs, st);
  *nk = *nr = 0;
  for (int d = 0; d < xs->rank; d++) {
    if (red[d]) {
      rd[*nr] = xs->dim[d];
      rst[0][(*nr)++] = st[d];
    } else {
      kd[*nk] = xs->dim[d];
      kst[1][(*nk)++] = st[d];
    }
  }
  int64_t m = 1; /* the output is dense over the kept axes (keepdims adds 1s) */
  for (int d = *nk - 1; d >= 0; d--) {
    kst[0][d] = m;
    m *= kd[d];
  }
}

/* An f32 sum or mean whose reduced elements come in contiguous runs of
 * at least 32 (the trailing reduced axes, merged): 16 partial sums,
 * element i of each run going to partial i mod 16, then added up as a
 * tree.  The straight-line partials become one vector accumulator
 * (codegen/llvm/cg_loop.c; the sequential sum is a chain of dependent
 * adds, ~15x slower: the bias gradients of a convolution sum 50,000
 * elements per channel), and the error grows with n / 16 instead of n.
 * Runs of 32 and more (a row kernel, lower_row.c, reducing rows of 32 in
 * one chain each was twice as slow as the unfused kernels it replaced, in
 * partials 1.4x faster).  A row of 16 to 31, the whole reduction one run,
 * takes 8 partials (lanes_for), as softmax and the loss do: attention's
 * softmax backward sums rows of 16, and its row kernel, 8 rows' chains
 * side by side read column by column, took 16 us for [32, 4, 16, 16]
 * against 5 in partials (the unfused sum about 6 against 2.7).  Shorter sums,
 * and runs of 16 to 31 repeated over outer reduced axes (a batchnorm's
 * statistics over N, H, W of a small image), keep their chain. */
enum { LANES = 16 };

/* The partials of a row of len (softmax's, the loss's, a sum's): 16, 8,
 * or 0 (one chain). */
static int lanes_for(int64_t len) { return len >= 2 * LANES ? LANES : len >= LANES ? LANES / 2 : 0; }

/* Element i of a run, its decls into body. */
typedef KExpr *(*LwElem)(void *ctx, KStmt *body, KExpr *i);

/* `lanes` partials, declared in body at the identity of op (KO_ADD: 0;
 * KO_MAX: -inf). */
static void lanes_init(Kernel *k, KStmt *body, KOp op, int *acc, int lanes) {
  for (int l = 0; l < lanes; l++) {
    acc[l] = kir_var(k, "acc", KT_F32);
    ks_add(k, body, ks_decl(k, acc[l], FC(op == KO_MAX ? -INFINITY : 0)));
  }
}

/* Combines a run of `run` elements into the partials with op (element i
 * to partial i mod lanes); elem gives element i's value, its decls into
 * the body given. */
static void lanes_run(Kernel *k, KStmt *body, KOp op, const int *acc, int lanes, int64_t run,
                      LwElem elem, void *ctx) {
  KExpr *c;
  KStmt *lc = lw_for(k, body, "c", run / lanes, KL_REDUCE, &c);
  KExpr *at = lw_bind(k, lc, "at", MUL(c, IC(lanes)));
  for (int l = 0; l < lanes; l++)
    ks_add(k, lc, ks_set(k, acc[l], BIN(op, VAR(acc[l]), elem(ctx, lc, ADD(at, IC(l))))));
  for (int64_t l = 0; l < run % lanes; l++)
    ks_add(k, body,
           ks_set(k, acc[l], BIN(op, VAR(acc[l]), elem(ctx, body, IC(run / lanes * lanes + l)))));
}

/* The partials combined as a tree (acc[l] = acc[l] op acc[l + w]); the
 * result. */
static KExpr *lanes_tree(Kernel *k, KStmt *body, KOp op, const int *acc, int lanes) {
  for (int w = lanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; l++)
      ks_add(k, body, ks_set(k, acc[l], BIN(op, VAR(acc[l]), VAR(acc[l + w]))));
  return VAR(acc[0]);
}

/* A load of buffer buf at base + i (the unfused kernels' element). */
typedef struct AtBase {
  Kernel *k;
  KExpr *base;
  int buf;
} AtBase;

static KExpr *load_at_base(void *ctx, KStmt *body, KExpr *i) {
  AtBase *b = ctx;
  Kernel *k = b->k;
  (void)body;
  return LOAD(b->buf, ADD(b->base, i));
}

/* Elements 0 .. len-1 (elem) combined with op in lanes_for(len) partials (decls
 * into body); the result. */
static KExpr *lanes_reduce(Kernel *k, KStmt *body, KOp op, int64_t len, LwElem elem, void *ctx) {
  int acc[LANES], lanes = lanes_for(len);
  lanes_init(k, body, op, acc, lanes);
  lanes_run(k, body, op, acc, lanes, len, elem, ctx);
  return lanes_tree(k, body, op, acc, lanes);
}

static Kernel *lanes_sum(Kernel *k, const Node *n, int nk, int64_t *kd, int64_t kst[][MAX_RANK],
                         int nr, int64_t *rd, int64_t rst[][MAX_RANK], int64_t run, int64_t cnt) {
  Nest no, ni;
  lw_nest(k, k->body, nk, kd, 2, kst, NEST_ROWS, &no);
  int acc[LANES], lanes = lanes_for(run);
  lanes_init(k, no.body, KO_ADD, acc, lanes);
  KStmt *body = no.body;
  KExpr *base = lw_at(k, &no, 1, 0);
  if (nr > 0) {
    lw_nest(k, no.body, nr, rd, 1, rst, NEST_REDUCE, &ni);
    body = ni.body;
    base = ADD(base, lw_at(k, &ni, 0, 0));
  }
  AtBase at = {k, lw_bind(k, body, "base", base), 0};
  lanes_run(k, body, KO_ADD, acc, lanes, run, load_at_base, &at);
  KExpr *res = lanes_tree(k, no.body, KO_ADD, acc, lanes);
  if (n->op == OP_MEAN)
    res = DIV(res, FC((double)cnt));
  ks_add(k, no.body, ks_store(k, lw_out(n), lw_at(k, &no, 0, 0), res));
  return k;
}

/* run_sum's f32 runs of at most RUN_REGS * RUN_CHUNKS elements keep their
 * sums in registers: per chunk of RUN_REGS elements of the run, one
 * accumulator per element, updated in straight-line code that
 * codegen/llvm/cg_loop.c makes one vector accumulator (VACC_MAX), the
 * reduced positions walked once per chunk.  Kept in the output row
 * instead, each reduced position loaded, added to and stored the row
 * again, and every add waited for the store before: [512, C] -> [C] took
 * 2.0, 2.0, 4 and 8 µs for C = 32, 128, 256, 512 that way and 0.4, 1.4,
 * 2.6 and 10 µs in registers (1 thread, bench/kprof.sh --infer): a
 * transformer's bias gradients are C = 32 and 128.  Wider runs walk the
 * rows in stripes that no longer stay in L2, and keep the old loop. */
enum { RUN_REGS = 64, RUN_CHUNKS = 4 };

static Kernel *run_sum_regs(Kernel *k, const Node *n, int64_t *kd, int64_t kst[][MAX_RANK],
                            int nr, int64_t *rd, int64_t rst[][MAX_RANK], int m, int64_t run,
                            int64_t cnt) {
  Nest no, ni;
  lw_nest(k, k->body, m, kd, 2, kst, NEST_ROWS, &no);
  KExpr *ob = lw_bind(k, no.body, "ob", lw_at(k, &no, 0, 0));
  KExpr *xb = lw_bind(k, no.body, "xb", lw_at(k, &no, 1, 0));
  for (int64_t c0 = 0; c0 < run; c0 += RUN_REGS) {
    int w = (int)(run - c0 < RUN_REGS ? run - c0 : RUN_REGS), acc[RUN_REGS];
    KStmt *chunk = ks_block(k);
    ks_add(k, no.body, chunk);
    lanes_init(k, chunk, KO_ADD, acc, w);
    lw_nest(k, chunk, nr, rd, 1, rst, NEST_REDUCE, &ni);
    KExpr *rb = lw_bind(k, ni.body, "rb", ADD(xb, ADD(lw_at(k, &ni, 0, 0), IC(c0))));
    for (int j = 0; j < w; j++)
      ks_add(k, ni.body, ks_set(k, acc[j], ADD(VAR(acc[j]), LOAD(0, ADD(rb, IC(j))))));
    for (int j = 0; j < w; j++) {
      KExpr *res = n->op == OP_MEAN ? DIV(VAR(acc[j]), FC((double)cnt)) : VAR(acc[j]);
      ks_add(k, chunk, ks_store(k, lw_out(n), ADD(ob, IC(c0 + j)), res));
    }
  }
  return k;
}

/* A sum or mean over axes outside a contiguous run of kept ones (a bias
 * gradient: [rows, C] -> [C]): the output row is the accumulator, zeroed,
 * then each reduced position's run added to it with a vector loop, then
 * divided for a mean.  Each element adds the same values in the same order
 * as the one-accumulator loop (from 0, row-major over the reduced axes), so
 * the bits are the same; only the loop order changed, from a strided
 * chain of dependent adds to unit-stride vectors. */
static Kernel *run_sum(Kernel *k, const Node *n, int nk, int64_t *kd, int64_t kst[][MAX_RANK],
                       int nr, int64_t *rd, int64_t rst[][MAX_RANK], int m, int64_t run,
                       int64_t cnt) {
  KType t = lw_type(n->dtype);
  if (t == KT_F32 && run <= RUN_REGS * RUN_CHUNKS)
    return run_sum_regs(k, n, kd, kst, nr, rd, rst, m, run, cnt);
  Nest no, ni;
  lw_nest(k, k->body, m, kd, 2, kst, NEST_ROWS, &no);
  KExpr *ob = lw_bind(k, no.body, "ob", lw_at(k, &no, 0, 0));
  KExpr *xb = lw_bind(k, no.body, "xb", lw_at(k, &no, 1, 0));
  KExpr *j;
  KStmt *l0 = lw_for(k, no.body, "j", run, KL_VECTOR, &j);
  ks_add(k, l0, ks_store(k, lw_out(n), ADD(ob, j), t == KT_F32 ? FC(0) : ke_int(k, KT_I32, 0)));
  lw_nest(k, no.body, nr, rd, 1, rst, NEST_INNER, &ni);
  KExpr *rb = lw_bind(k, ni.body, "rb", ADD(xb, lw_at(k, &ni, 0, 0)));
  KStmt *l1 = lw_for(k, ni.body, "j", run, KL_VECTOR, &j);
  KExpr *o = ADD(ob, j);
  ks_add(k, l1, ks_store(k, lw_out(n), o, ADD(LOAD(lw_out(n), o), LOAD(0, ADD(rb, j)))));
  if (n->op == OP_MEAN) {
    KStmt *l2 = lw_for(k, no.body, "j", run, KL_VECTOR, &j);
    o = ADD(ob, j);
    ks_add(k, l2, ks_store(k, lw_out(n), o, DIV(LOAD(lw_out(n), o), FC((double)cnt))));
  }
  (void)nk;
  return k;
}

/* The one accumulator of n's reduction, declared in body at its identity. */
static int acc_init(Kernel *k, KStmt *body, const Node *n) {
  bool f32 = n->dtype == DT_F32;
  KExpr *init;
  if (n->op == OP_MAX)
    init = f32 ? FC(-INFINITY) : ke_int(k, KT_I32, INT32_MIN);
  else
    init = f32 ? FC(0) : ke_int(k, KT_I32, 0);
  int acc = kir_var(k, "acc", lw_type(n->dtype));
  ks_add(k, body, ks_decl(k, acc, init));
  return acc;
}

/* acc takes element v (appended to body). */
static void acc_step(Kernel *k, KStmt *body, const Node *n, int acc, KExpr *v) {
  KExpr *next;
  if (n->op != OP_MAX)
    next = ADD(VAR(acc), v);
  else if (n->dtype != DT_F32)
    next = MAX(VAR(acc), v);
  else { /* the first NaN sticks: max(NaN, v) is NaN, and a NaN v is taken */
    v = lw_let(k, body, "v", v);
    next = SEL(UN(KO_ISNAN, v), v, MAX(VAR(acc), v));
  }
  ks_add(k, body, ks_set(k, acc, next));
}

/* The contiguous run lanes_sum would add n's elements in: the trailing
 * reduced axes merged (rd[m..nr)), at least 32, or 16 with no outer
 * reduced axes (m == 0); 0 if n is not summed in lanes. */
static int64_t lanes_layout(const Node *n, int nr, const int64_t *rd, int64_t rst[][MAX_RANK],
                            int *m) {
  if (n->dtype != DT_F32 || n->op == OP_MAX || nr == 0 || rst[0][nr - 1] != 1)
    return 0;
  int64_t run = rd[nr - 1];
  *m = nr - 1; /* trailing reduced axes that continue the run */
  while (*m > 0 && rst[0][*m - 1] == run)
    run *= rd[--*m];
  return run >= 2 * LANES || (run >= LANES && *m == 0) ? run : 0;
}

/* The run of kept axes run_sum adds vectors along (the trailing kept axes,
 * merged: kd[m..nk)), or 0 if n is not summed that way. */
static int64_t runs_layout(const Node *n, int nk, const int64_t *kd, int64_t kst[][MAX_RANK],
                           int nr, int64_t rst[][MAX_RANK], int *m) {
  if (n->op == OP_MAX || nr == 0 || nk == 0 || rst[0][nr - 1] == 1 || kst[1][nk - 1] != 1)
    return 0;
  int64_t run = kd[nk - 1];
  *m = nk - 1; /* leading kept axes; the rest continue the run */
  while (*m > 0 && kst[1][*m - 1] == run)
    run *= kd[--*m];
  return run >= 4 ? run : 0;
}

SumScheme lower_sum_layout(const Node *n, SumLayout *l) {
  int nk, nr, m;
  int64_t kst[LW_OPS][MAX_RANK], rst[LW_OPS][MAX_RANK];
  memset(l, 0, sizeof *l);
  if ((n->op != OP_SUM && n->op != OP_MEAN) || n->dtype != DT_F32 || n->n_in != 1)
    return SUM_CHAIN;
  split_axes(n, &nk, l->kd, kst, &nr, l->od, rst);
  l->nk = nk;
  l->cnt = 1;
  for (int d = 0; d < nk; d++)
    l->kx[d] = kst[1][d];
  for (int d = 0; d < nr; d++) {
    l->ox[d] = rst[0][d];
    l->cnt *= l->od[d];
  }
  if ((l->run = lanes_layout(n, nr, l->od, rst, &m)) > 0) {
    l->no = m;
    return l->scheme = SUM_LANES;
  }
  if (runs_layout(n, nk, l->kd, kst, nr, rst, &m) > 0) {
    l->no = nr;
    l->run = 1;
    return l->scheme = SUM_RUNS;
  }
  return SUM_CHAIN;
}

Kernel *lower_reduce(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int nk, nr, m;
  int64_t kd[MAX_RANK], rd[MAX_RANK], kst[LW_OPS][MAX_RANK], rst[LW_OPS][MAX_RANK], cnt = 1;
  if (shape_numel(&n->shape) == 0)
    return k;
  split_axes(n, &nk, kd, kst, &nr, rd, rst);
  for (int d = 0; d < nr; d++)
    cnt *= rd[d];
  int64_t run = lanes_layout(n, nr, rd, rst, &m);
  if (run)
    return lanes_sum(k, n, nk, kd, kst, m, rd, rst, run, cnt);
  if ((run = runs_layout(n, nk, kd, kst, nr, rst, &m)) > 0)
    return run_sum(k, n, nk, kd, kst, nr, rd, rst, m, run, cnt);
  Nest no, ni;
  lw_nest(k, k->body, nk, kd, 2, kst, NEST_ROWS, &no);
  int acc = acc_init(k, no.body, n);
  lw_nest(k, no.body, nr, rd, 1, rst, NEST_REDUCE, &ni);
  acc_step(k, ni.body, n, acc, LOAD(0, ADD(lw_at(k, &no, 1, 0), lw_at(k, &ni, 0, 0))));
  KExpr *res = n->op == OP_MEAN ? DIV(VAR(acc), FC((double)cnt)) : VAR(acc);
  ks_add(k, no.body, ks_store(k, lw_out(n), lw_at(k, &no, 0, 0), res));
  return k;
}

/* One row of nb (lw_rows_reduce) at base + i, as an LwElem for lanes_run. */
typedef struct OneRow {
  LwElemRow elem;
  void *ctx;
  int row;
  KExpr *base; /* the run's first element, NULL for 0 */
  Kernel *k;
} OneRow;

static KExpr *one_row_elem(void *ctx, KStmt *body, KExpr *i) {
  OneRow *o = ctx;
  Kernel *k = o->k;
  return o->elem(o->ctx, body, o->row, o->base ? ADD(o->base, i) : i);
}

int lw_rows_lanes(const Node *n) {
  int nk, nr, m;
  int64_t kd[MAX_RANK], rd[MAX_RANK], kst[LW_OPS][MAX_RANK], rst[LW_OPS][MAX_RANK];
  split_axes(n, &nk, kd, kst, &nr, rd, rst);
  int64_t run = lanes_layout(n, nr, rd, rst, &m);
  return run == 0 ? 0 : m > 0 ? -1 : lanes_for(run);
}

int lw_block_rows(int want, int64_t rows) {
  int nb = want > LW_MAX_ROWS ? LW_MAX_ROWS : want < 1 ? 1 : want;
  while (rows % nb)
    nb /= 2;
  return nb;
}

/* nb rows' partials of a row of one contiguous run, in one loop (element
 * i of row b into its partial i mod lanes, as lanes_run), then each row's
 * tree: the rows' chains and trees side by side.  op: KO_ADD or KO_MAX. */
static void rows_lanes(Kernel *k, KStmt *body, KOp op, int nb, int64_t run, LwElemRow elem,
                       void *ctx, KExpr **res) {
  int acc[LW_MAX_ROWS][LANES], lanes = lanes_for(run);
  ASSERT(nb <= LW_MAX_ROWS && nb * lanes <= LW_LANES_ROWS);
  for (int b = 0; b < nb; b++)
    lanes_init(k, body, op, acc[b], lanes);
  KExpr *c;
  KStmt *lc = lw_for(k, body, "c", run / lanes, KL_REDUCE, &c);
  KExpr *at = lw_bind(k, lc, "at", MUL(c, IC(lanes)));
  for (int b = 0; b < nb; b++)
    for (int l = 0; l < lanes; l++)
      ks_add(k, lc,
             ks_set(k, acc[b][l], BIN(op, VAR(acc[b][l]), elem(ctx, lc, b, ADD(at, IC(l))))));
  for (int b = 0; b < nb; b++)
    for (int64_t l = 0; l < run % lanes; l++)
      ks_add(k, body, ks_set(k, acc[b][l], BIN(op, VAR(acc[b][l]),
                                               elem(ctx, body, b, IC(run / lanes * lanes + l)))));
  for (int b = 0; b < nb; b++)
    res[b] = lanes_tree(k, body, op, acc[b], lanes);
}

/* nb rows, each reduced as lower_reduce reduces one output element of n
 * (the same f32 operations in the same order): an f32 sum or mean whose
 * trailing reduced axes make a run of at least 32 in 16 partial sums (a
 * row of 16 to 31 in 8), the runs in row-major order of the other reduced
 * axes, one row after the other (rows of one run each: the nb rows'
 * partials side by side in one loop, rows_lanes); else one accumulator per row, row-major over the
 * reduced axes, the rows' accumulators updated side by side in one nest
 * (independent chains of adds).  elem gets the element's offset from the
 * row's first element in n's input (its strides); res[b]: row b's result
 * (a mean divided). */
void lw_rows_reduce(Kernel *k, KStmt *body, const Node *n, int nb, LwElemRow elem, void *ctx,
                    KExpr **res) {
  int nk, nr, m;
  int64_t kd[MAX_RANK], rd[MAX_RANK], kst[LW_OPS][MAX_RANK], rst[LW_OPS][MAX_RANK], cnt = 1;
  split_axes(n, &nk, kd, kst, &nr, rd, rst);
  for (int d = 0; d < nr; d++)
    cnt *= rd[d];
  int64_t run = lanes_layout(n, nr, rd, rst, &m);
  Nest ni;
  if (run && m == 0) {
    rows_lanes(k, body, KO_ADD, nb, run, elem, ctx, res);
  } else if (run) { /* runs along outer axes: a row at a time (nb is 1) */
    for (int b = 0; b < nb; b++) {
      int acc[LANES], lanes = lanes_for(run);
      lanes_init(k, body, KO_ADD, acc, lanes);
      lw_nest(k, body, m, rd, 1, rst, NEST_REDUCE, &ni);
      OneRow o = {elem, ctx, b, lw_bind(k, ni.body, "base", lw_at(k, &ni, 0, 0)), k};
      lanes_run(k, ni.body, KO_ADD, acc, lanes, run, one_row_elem, &o);
      res[b] = lanes_tree(k, body, KO_ADD, acc, lanes);
    }
  } else {
    int acc[LW_MAX_ROWS];
    ASSERT(nb <= LW_MAX_ROWS);
    for (int b = 0; b < nb; b++)
      acc[b] = acc_init(k, body, n);
    lw_nest(k, body, nr, rd, 1, rst, NEST_REDUCE, &ni);
    KExpr *at = lw_bind(k, ni.body, "at", lw_at(k, &ni, 0, 0));
    for (int b = 0; b < nb; b++)
      acc_step(k, ni.body, n, acc[b], elem(ctx, ni.body, b, at));
    for (int b = 0; b < nb; b++)
      res[b] = VAR(acc[b]);
  }
  for (int b = 0; b < nb; b++)
    if (n->op == OP_MEAN)
      res[b] = DIV(res[b], FC((double)cnt));
}

/* The extents before, along and after `axis` of s. */
static void axis_split(const Shape *s, int axis, int64_t *outer, int64_t *len, int64_t *inner) {
  *outer = *inner = 1;
  for (int d = 0; d < axis; d++)
    *outer *= s->dim[d];
  *len = s->dim[axis];
  for (int d = axis + 1; d < s->rank; d++)
    *inner *= s->dim[d];
}

/* A parallel nest over the rows (outer, inner) of x along axis: operand 0
 * is x's first element of the row (softmax's output has the same layout),
 * operand 1 the row's position in x's layout without the axis (argmax's). */
static void rows_nest(Kernel *k, const Shape *s, int axis, int64_t *len, int64_t *inner,
                      Nest *ns) {
  int64_t outer, dim[2], st[LW_OPS][MAX_RANK];
  axis_split(s, axis, &outer, len, inner);
  dim[0] = outer, dim[1] = *inner;
  st[0][0] = *len * *inner, st[0][1] = 1;
  st[1][0] = *inner, st[1][1] = 1;
  lw_nest(k, k->body, 2, dim, 2, st, NEST_ROWS, ns);
}

/* First index of the maximum along the axis; a NaN counts as the maximum
 * (the first NaN wins and ends the search), as eval_argmax. */
Kernel *lower_argmax(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int64_t len, inner;
  Nest ns;
  if (shape_numel(&n->shape) == 0)
    return k;
  const Shape *xs = &n->in[0]->shape;
  rows_nest(k, xs, n->at.axis, &len, &inner, &ns);
  KStmt *b = ns.body;
  KExpr *base = lw_bind(k, b, "base", lw_at(k, &ns, 0, 0));
  int bv = kir_var(k, "bv", lw_type(n->in[0]->dtype)), best = kir_var(k, "best", KT_IDX);
  ks_add(k, b, ks_decl(k, bv, LOAD(0, base)));
  ks_add(k, b, ks_decl(k, best, IC(0)));
  if (len > 1) {
    int r = lw_ivar(k, "r");
    KStmt *l = lw_loop(k, b, r, len - 1, KL_REDUCE);
    KExpr *pos = ADD(VAR(r), IC(1));
    KExpr *v = lw_let(k, l, "v", LOAD(0, ADD(base, MUL(pos, IC(inner)))));
    KExpr *take = GT(v, VAR(bv));
    if (v->type == KT_F32)
      take = AND(NOT(UN(KO_ISNAN, VAR(bv))), OR(UN(KO_ISNAN, v), take));
    take = lw_let(k, l, "take", take);
    ks_add(k, l, ks_set(k, best, SEL(take, pos, VAR(best))));
    ks_add(k, l, ks_set(k, bv, SEL(take, v, VAR(bv))));
  }
  ks_add(k, b, ks_store(k, lw_out(n), lw_at(k, &ns, 1, 0), ke_cast(k, KT_I32, VAR(best))));
  return k;
}

/* Element at of row b of a softmax block (buffer buf at base[b] + at). */
typedef struct SmBlock {
  Kernel *k;
  KExpr **base;
  int buf;
} SmBlock;

static KExpr *sm_elem(void *ctx, KStmt *body, int b, KExpr *at) {
  SmBlock *s = ctx;
  Kernel *k = s->k;
  (void)body;
  return LOAD(s->buf, ADD(s->base[b], at));
}

/* Row base + r inner, r < len, of softmax n: the exponentials exp(x - mx)
 * into the output (independent: they vectorize when inner is 1). */
static void sm_exps(Kernel *k, KStmt *b, const Node *n, KExpr *base, int64_t inner, int64_t len,
                    KExpr *mx) {
  KExpr *r;
  KStmt *l = lw_for(k, b, "r", len, inner == 1 ? KL_VECTOR : KL_SERIAL, &r);
  KExpr *i = ADD(base, MUL(r, IC(inner)));
  ks_add(k, l, ks_store(k, lw_out(n), i, UN(KO_EXP, SUB(LOAD(0, i), mx))));
}

/* Then the output from them and their sum: (x - mx) - log(sum) for
 * log_softmax, exp / sum for softmax. */
static void sm_output(Kernel *k, KStmt *b, const Node *n, KExpr *base, int64_t inner, int64_t len,
                      KExpr *mx, KExpr *sum) {
  KExpr *lse = n->op == OP_LOG_SOFTMAX ? lw_let(k, b, "lse", UN(KO_LOG, sum)) : NULL, *r;
  KStmt *l = lw_for(k, b, "r", len, inner == 1 ? KL_VECTOR : KL_SERIAL, &r);
  KExpr *i = ADD(base, MUL(r, IC(inner)));
  KExpr *y = lse ? SUB(SUB(LOAD(0, i), mx), lse) : DIV(LOAD(lw_out(n), i), sum);
  ks_add(k, l, ks_store(k, lw_out(n), i, y));
}

/* Softmax or log_softmax over contiguous rows in partials, nb rows per
 * iteration of the parallel loop: each reduction's partials for the nb
 * rows in one loop (rows_lanes), the exponentials (a vector loop a row:
 * computed inside the partials' loop they were not vectorized, 13x
 * slower) and the output row by row; each row's operations and their
 * order are lower_softmax's.  One row at a time, a row of 16 took ~35
 * cycles, its maximum, exponentials, sum and division a dependent chain
 * of ~120; in blocks of 8, ~28.  The CUDA backend runs a block in one
 * thread, as it ran a row: nb times fewer threads, each doing nb rows in
 * turn (not measured on a device yet; at the sizes measured there the
 * step was bound by its launches). */
static void softmax_blocks(Kernel *k, const Node *n, int64_t rows, int64_t len, int nb) {
  KExpr *rb, *base[LW_MAX_ROWS], *mx[LW_MAX_ROWS], *sum[LW_MAX_ROWS];
  KStmt *b = lw_for(k, k->body, "r", rows / nb, KL_PARALLEL, &rb);
  for (int i = 0; i < nb; i++)
    base[i] = lw_bind(k, b, "base", MUL(ADD(MUL(rb, IC(nb)), IC(i)), IC(len)));
  SmBlock in = {k, base, 0}, out = {k, base, lw_out(n)};
  rows_lanes(k, b, KO_MAX, nb, len, sm_elem, &in, mx);
  for (int i = 0; i < nb; i++) {
    mx[i] = lw_let(k, b, "mx", mx[i]);
    sm_exps(k, b, n, base[i], 1, len, mx[i]);
  }
  rows_lanes(k, b, KO_ADD, nb, len, sm_elem, &out, sum);
  for (int i = 0; i < nb; i++)
    sm_output(k, b, n, base[i], 1, len, mx[i], lw_let(k, b, "sum", sum[i]));
}

/* softmax: exp(x - max) / sum; log_softmax: (x - max) - log(sum).  The
 * exponentials go through the output (stored, then summed, then the output
 * made from them).  A contiguous row (inner == 1, the last axis) of 16
 * or more takes its maximum and its sum in lanes_for partials, as lanes_sum:
 * the one chain of dependent max, then add, operations per row was most of
 * the time of attention's softmax over 128 positions (1.1 ns an element,
 * the exponentials vectorized).  The maximum is the same in any order (each
 * partial skips NaN as the chain did; only which of -0 and +0 a row of
 * zeros returns can change, and exp(x - max) does not see that); the sum
 * rounds as the partials add.  Shorter or strided rows keep the chains.
 * Rows in partials come several to a parallel iteration when the rows
 * divide (softmax_blocks). */
Kernel *lower_softmax(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int64_t len, inner;
  Nest ns;
  if (shape_numel(&n->shape) == 0)
    return k;
  int64_t outer;
  axis_split(&n->shape, n->at.axis, &outer, &len, &inner);
  if (inner == 1 && lanes_for(len)) {
    int nb = lw_block_rows(LW_LANES_ROWS / lanes_for(len), outer);
    if (nb > 1) {
      softmax_blocks(k, n, outer, len, nb);
      return k;
    }
  }
  rows_nest(k, &n->shape, n->at.axis, &len, &inner, &ns);
  KStmt *b = ns.body;
  KExpr *base = lw_bind(k, b, "base", lw_at(k, &ns, 0, 0));
  int mx = kir_var(k, "mx", KT_F32), sum = kir_var(k, "sum", KT_F32);
  int r1 = lw_ivar(k, "r");
#define X(r) LOAD(0, ADD(base, MUL(VAR(r), IC(inner))))
#define Y(r) ADD(base, MUL(VAR(r), IC(inner)))
  bool lanes = inner == 1 && lanes_for(len);
  AtBase in = {k, base, 0}, out = {k, base, lw_out(n)};
  if (lanes) {
    ks_add(k, b, ks_decl(k, mx, lanes_reduce(k, b, KO_MAX, len, load_at_base, &in)));
  } else {
    ks_add(k, b, ks_decl(k, mx, FC(-INFINITY)));
    KStmt *l1 = lw_loop(k, b, r1, len, KL_REDUCE);
    ks_add(k, l1, ks_set(k, mx, MAX(VAR(mx), X(r1)))); /* mx < v ? v : mx, NaN skipped */
  }
  /* the exponentials into the output first (independent: they vectorize),
   * then their sum, then the output from them */
  int r4 = lw_ivar(k, "r");
  sm_exps(k, b, n, base, inner, len, VAR(mx));
  if (lanes) {
    ks_add(k, b, ks_decl(k, sum, lanes_reduce(k, b, KO_ADD, len, load_at_base, &out)));
  } else {
    ks_add(k, b, ks_decl(k, sum, FC(0)));
    KStmt *l4 = lw_loop(k, b, r4, len, KL_REDUCE);
    ks_add(k, l4, ks_set(k, sum, ADD(VAR(sum), LOAD(lw_out(n), Y(r4)))));
  }
  sm_output(k, b, n, base, inner, len, VAR(mx), VAR(sum));
#undef X
#undef Y
  return k;
}

/* One cross-entropy row r of logits [rows, c] (buffer 0) with labels
 * (buffer 1): declares lb, ok (label in range), mx and the sum of exp(x -
 * mx) in body and returns the row's first index.  Rows of 16 or more
 * take the maximum and the sum in lanes_for partials, as softmax does (one
 * chain of dependent operations per row, an exponential in each step of
 * the sum's, was 4 ns an element: 17% of the lm's training step). */
typedef struct CeRow {
  KExpr *row, *ok, *lb, *mx, *sum;
} CeRow;

/* exp(x[row + i] - mx), an LwElem for the sum's partials. */
typedef struct CeExp {
  Kernel *k;
  KExpr *row, *mx;
} CeExp;

static KExpr *ce_exp(void *ctx, KStmt *body, KExpr *i) {
  CeExp *e = ctx;
  Kernel *k = e->k;
  (void)body;
  return UN(KO_EXP, SUB(LOAD(0, ADD(e->row, i)), e->mx));
}

static CeRow ce_row(Kernel *k, KStmt *body, KExpr *r, int64_t c) {
  CeRow ce;
  ce.row = lw_bind(k, body, "row", MUL(r, IC(c)));
  ce.lb = lw_let(k, body, "lb", LOAD(1, r));
  ce.ok =
      lw_let(k, body, "ok", AND(GE(ce.lb, ke_int(k, KT_I32, 0)), LT(ce.lb, ke_int(k, KT_I32, c))));
  int mx = kir_var(k, "mx", KT_F32), sum = kir_var(k, "sum", KT_F32);
  AtBase in = {k, ce.row, 0};
  CeExp ex = {k, ce.row, VAR(mx)};
  if (lanes_for(c)) {
    ks_add(k, body, ks_decl(k, mx, lanes_reduce(k, body, KO_MAX, c, load_at_base, &in)));
    ks_add(k, body, ks_decl(k, sum, lanes_reduce(k, body, KO_ADD, c, ce_exp, &ex)));
  } else {
    int c1 = lw_ivar(k, "c"), c2 = lw_ivar(k, "c");
    ks_add(k, body, ks_decl(k, mx, FC(-INFINITY)));
    KStmt *l1 = lw_loop(k, body, c1, c, KL_REDUCE);
    ks_add(k, l1, ks_set(k, mx, MAX(VAR(mx), load_at_base(&in, l1, VAR(c1)))));
    ks_add(k, body, ks_decl(k, sum, FC(0)));
    KStmt *l2 = lw_loop(k, body, c2, c, KL_REDUCE);
    ks_add(k, l2, ks_set(k, sum, ADD(VAR(sum), ce_exp(&ex, l2, VAR(c2)))));
  }
  ce.mx = VAR(mx);
  ce.sum = VAR(sum);
  return ce;
}

/* The mean over the label positions of logsumexp(row) - row[label]:
 * (mx + log(sum)) - row[label] per row, as ce_row in eval_nn.c. */
Kernel *lower_cross_entropy(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  const Shape *lg = &n->in[0]->shape;
  int64_t c = lg->dim[lg->rank - 1], rows = shape_numel(&n->in[1]->shape);
  int total = kir_var(k, "total", KT_F32), r = lw_ivar(k, "r");
  ks_add(k, k->body, ks_decl(k, total, FC(0)));
  KStmt *l = lw_loop(k, k->body, r, rows, KL_REDUCE);
  CeRow ce = ce_row(k, l, VAR(r), c);
  KExpr *lbi = ADD(ce.row, SEL(ce.ok, ke_cast(k, KT_IDX, ce.lb), IC(0)));
  KExpr *loss = SUB(ADD(ce.mx, UN(KO_LOG, ce.sum)), LOAD(0, lbi));
  ks_add(k, l, ks_set(k, total, ADD(VAR(total), SEL(ce.ok, loss, FC(NAN)))));
  ks_add(k, k->body, ks_store(k, lw_out(n), IC(0), DIV(VAR(total), FC((double)rows))));
  return k;
}

/* (softmax(row) - onehot(label)) * dy / rows per row; a NaN row for a label
 * out of range. */
Kernel *lower_cross_entropy_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  const Shape *lg = &n->in[0]->shape;
  int64_t c = lg->dim[lg->rank - 1], rows = shape_numel(&n->in[1]->shape);
  KExpr *scale = lw_let(k, k->body, "scale", DIV(LOAD(2, IC(0)), FC((double)rows)));
  int r = lw_ivar(k, "r"), j = lw_ivar(k, "c");
  KStmt *l = lw_loop(k, k->body, r, rows, KL_PARALLEL);
  CeRow ce = ce_row(k, l, VAR(r), c);
  KExpr *lbi = lw_let(k, l, "label", SEL(ce.ok, ke_cast(k, KT_IDX, ce.lb), IC(-1)));
  KStmt *lc = lw_loop(k, l, j, c, KL_VECTOR);
  KExpr *p = DIV(UN(KO_EXP, SUB(LOAD(0, ADD(ce.row, VAR(j))), ce.mx)), ce.sum);
  KExpr *g = MUL(SUB(p, SEL(EQ(VAR(j), lbi), FC(1), FC(0))), scale);
  ks_add(k, lc, ks_store(k, lw_out(n), ADD(ce.row, VAR(j)), SEL(ce.ok, g, FC(NAN))));
  return k;
}
