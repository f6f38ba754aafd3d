/*
 * lower_row.c: the kernel of a row group (passes/fuse.c, kind row):
 * reductions over the innermost axis of the anchor's shape S = [..., L]
 * and the elementwise ops around them, one pass of a parallel loop per
 * row.  Layer norm's mean, x - mean, square, mean, + eps, rsqrt, multiply,
 * * gamma + beta becomes
 *
 *   parallel for r {                      rb = r * L
 *     mu = reduce j: x[rb + j]            (lower_reduce's row: same order)
 *     var = reduce j: (x[rb+j] - mu) * (x[rb+j] - mu)
 *     t = rsqrt(var + eps)                (row values: once per row)
 *     vector for j { xc = x[rb+j] - mu; out[rb+j] = xc * t * g[j] + b[j] } }
 *
 * Members come in three shapes:
 *   S       elementwise over the row's elements: a formula evaluated where
 *           it is needed (inside each reduction that reads it, and in the
 *           last loop if it is stored or feeds a stored one), each member
 *           once per element;
 *   P       S with last axis 1: the reductions (keepdims) and elementwise
 *           ops of their results, computed once per row, in member order;
 *   scalar  one element: computed once, before the row loop.
 * An input of the group is loaded at element j of row r from its own
 * broadcast index of r * L (computed once per row), plus j where it walks
 * the innermost axis.  Each reduction is lw_rows_reduce, the f32 operations
 * of the reduction's own kernel in its order, and each member's formula is
 * its own kernel's (lw_elt_value): the fused kernel computes the unfused
 * kernels' bits.  Stored members (read outside the group, or results) are
 * written where they are computed: S ones in the last loop, P ones per row.
 * An output may overwrite an input of its shape (passes/inplace.c: the
 * group is elementwise to the planner): a row's values per row are loaded
 * when the row starts, and an element's inputs in the last loop before
 * any of its stores; rows read only their own elements.
 *
 * A reduction whose row is one chain of adds (rows under 32 elements:
 * lower_reduce's order) takes 4 cycles an element; so such kernels do a
 * block of up to LW_MAX_ROWS rows per parallel iteration, the rows' chains
 * side by side in one loop, each row still summed in its own order.
 */
#include <string.h>

#include "lower_internal.h"

enum { ELEM, ROW, SCALAR };

/* What the kernel knows of one row of the block being lowered. */
typedef struct RowAt {
  KExpr *r, *rb;  /* the row, and its first element in S */
  KExpr **val;    /* per member: ROW values in the row's scope, SCALAR ones in the kernel's */
  KExpr **ev;     /* per member: ELEM values at the current element (cleared per element) */
  KExpr **xbase;  /* per input ELEM members read: its index at the row's first element */
  KExpr **xv;     /* per such input: its value at the current element (or the row's) */
  KExpr **yv;     /* per input ROW members read: its value in the row */
} RowAt;

typedef struct Rz {
  Kernel *k;
  Node *const *members;
  int n;
  const Shape *S;
  Shape P;
  int64_t L, R;
  int *kind;       /* per member: ELEM, ROW or SCALAR */
  int *buf;        /* per member: its output buffer, -1 if internal */
  const Node **xs; /* the inputs ELEM members (and reductions) read */
  bool *xwalk;     /* per such input: whether it walks the row (else one value per row) */
  int n_x;
  const Node **ys; /* the inputs ROW members read */
  int n_y;
  int nb;          /* rows per iteration of the parallel loop */
  RowAt row[LW_MAX_ROWS];
  const Node *red_in; /* the input of the reduction being lowered */
} Rz;

static int member_of(const Rz *z, const Node *x) {
  for (int m = 0; m < z->n; m++)
    if (z->members[m] == x)
      return m;
  return -1;
}

static void new_element(Rz *z, RowAt *w) {
  for (int m = 0; m < z->n; m++)
    w->ev[m] = NULL;
  for (int i = 0; i < z->n_x; i++)
    if (z->xwalk[i])
      w->xv[i] = NULL;
}

/* Input x at element j of row w (loaded once per element). */
static KExpr *elem_load(Rz *z, RowAt *w, KStmt *body, const Node *x, KExpr *j) {
  Kernel *k = z->k;
  int i = 0;
  while (z->xs[i] != x)
    i++;
  if (!w->xv[i]) {
    KExpr *idx = z->xwalk[i] ? ADD(w->xbase[i], j) : w->xbase[i];
    w->xv[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, x, KB_IN), idx));
  }
  return w->xv[i];
}

/* ELEM member m at element j of row w. */
static KExpr *elem_value(Rz *z, RowAt *w, KStmt *body, int m, KExpr *j) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  if (w->ev[m])
    return w->ev[m];
  KExpr **ops = arena_alloc(k->arena, sizeof(KExpr *) * (size_t)(v->n_in + 1));
  for (int i = 0; i < v->n_in; i++) {
    int mi = member_of(z, v->in[i]);
    ops[i] = mi < 0                ? elem_load(z, w, body, v->in[i], j)
             : z->kind[mi] == ELEM ? elem_value(z, w, body, mi, j)
                                   : w->val[mi];
  }
  w->ev[m] = lw_bind(k, body, "v", lw_elt_value(k, body, v, ops));
  return w->ev[m];
}

/* The reduction's input at element j of row b of the block (LwElemRow). */
static KExpr *red_elem(void *ctx, KStmt *body, int b, KExpr *j) {
  Rz *z = ctx;
  RowAt *w = &z->row[b];
  new_element(z, w);
  int mi = member_of(z, z->red_in);
  return mi >= 0 ? elem_value(z, w, body, mi, j) : elem_load(z, w, body, z->red_in, j);
}

/* An elementwise ROW or SCALAR member's value in row w, from its inputs at
 * its own element (the row's loaded by row_start, or at 0). */
static KExpr *row_formula(Rz *z, RowAt *w, KStmt *body, int m) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  KExpr **ops = arena_alloc(k->arena, sizeof(KExpr *) * (size_t)(v->n_in + 1));
  for (int i = 0; i < v->n_in; i++) {
    const Node *x = v->in[i];
    int mi = member_of(z, x);
    if (mi >= 0) {
      ops[i] = w->val[mi];
    } else if (z->kind[m] == SCALAR) {
      ops[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, x, KB_IN), IC(0)));
    } else {
      int y = 0;
      while (z->ys[y] != x)
        y++;
      ops[i] = w->yv[y];
    }
  }
  return lw_elt_value(k, body, v, ops);
}

/* A ROW or SCALAR member in every row of the block (SCALAR: once, before
 * the row loop, nb 1); stored at its element if it has a buffer. */
static void row_values(Rz *z, KStmt *body, int m, int nb) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  KExpr *res[LW_MAX_ROWS];
  if (lower_fusable(v->op)) {
    for (int b = 0; b < nb; b++)
      res[b] = row_formula(z, &z->row[b], body, m);
  } else { /* a reduction over the rows */
    z->red_in = v->in[0];
    lw_rows_reduce(k, body, v, z->L, nb, red_elem, z, res);
  }
  for (int b = 0; b < nb; b++) {
    z->row[b].val[m] = lw_bind(k, body, "v", res[b]);
    if (z->buf[m] >= 0)
      ks_add(k, body, ks_store(k, z->buf[m], z->kind[m] == ROW ? z->row[b].r : IC(0),
                               z->row[b].val[m]));
  }
}

/* Which ELEM members the last loop computes: the stored ones and what they read. */
static bool *last_loop_members(Rz *z) {
  bool *need = arena_alloc(z->k->arena, sizeof(bool) * (size_t)(z->n + 1));
  for (int m = z->n - 1; m >= 0; m--) {
    need[m] |= z->kind[m] == ELEM && z->buf[m] >= 0;
    for (int i = 0; need[m] && i < z->members[m]->n_in; i++) {
      int mi = member_of(z, z->members[m]->in[i]);
      if (mi >= 0 && z->kind[mi] == ELEM)
        need[mi] = true;
    }
  }
  return need;
}

/* The inputs ELEM members and reductions read, and whether each walks the row. */
static void row_inputs(Rz *z) {
  Arena *a = z->k->arena;
  int cap = 1;
  for (int m = 0; m < z->n; m++)
    cap += z->members[m]->n_in;
  z->xs = arena_alloc(a, sizeof(Node *) * (size_t)cap);
  z->xwalk = arena_alloc(a, sizeof(bool) * (size_t)cap);
  for (int m = 0; m < z->n; m++) {
    const Node *v = z->members[m];
    bool reads_elems = z->kind[m] == ELEM || !lower_fusable(v->op);
    for (int i = 0; reads_elems && i < v->n_in; i++) {
      const Node *x = v->in[i];
      bool seen = member_of(z, x) >= 0;
      for (int s = 0; s < z->n_x && !seen; s++)
        seen = z->xs[s] == x;
      if (seen)
        continue;
      const Shape *xsh = &x->shape;
      z->xs[z->n_x] = x;
      z->xwalk[z->n_x++] = shape_numel(xsh) > 1 && xsh->rank > 0 && xsh->dim[xsh->rank - 1] == z->L;
    }
  }
  z->ys = arena_alloc(a, sizeof(Node *) * (size_t)cap);
  for (int m = 0; m < z->n; m++)
    for (int i = 0; z->kind[m] == ROW && lower_fusable(z->members[m]->op) &&
                    i < z->members[m]->n_in; i++) {
      const Node *x = z->members[m]->in[i];
      bool seen = member_of(z, x) >= 0;
      for (int s = 0; s < z->n_y && !seen; s++)
        seen = z->ys[s] == x;
      if (!seen)
        z->ys[z->n_y++] = x;
    }
}

/* Row b of the block starting at row r0: its index, first element, the
 * inputs' indices there, and the values of the inputs with one value per
 * row, loaded before the row stores anything (an output may overwrite an
 * input of its shape, passes/inplace.c). */
static void row_start(Rz *z, KStmt *body, int b, KExpr *r0) {
  Kernel *k = z->k;
  RowAt *w = &z->row[b];
  w->r = lw_bind(k, body, "r", ADD(r0, IC(b)));
  w->rb = lw_bind(k, body, "rb", MUL(w->r, IC(z->L)));
  for (int i = 0; i < z->n_x; i++) {
    w->xbase[i] = lw_bind(k, body, "xb", lw_bcast_index(k, body, z->xs[i], z->S, w->rb));
    if (!z->xwalk[i])
      w->xv[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, z->xs[i], KB_IN), w->xbase[i]));
  }
  for (int i = 0; i < z->n_y; i++)
    w->yv[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, z->ys[i], KB_IN),
                                          lw_bcast_index(k, body, z->ys[i], &z->P, w->r)));
}

static void classify(Rz *z) {
  for (int m = 0; m < z->n; m++) {
    const Shape *s = &z->members[m]->shape;
    z->kind[m] = shape_eq(s, z->S) ? ELEM : shape_eq(s, &z->P) ? ROW : SCALAR;
    ASSERT(z->kind[m] != SCALAR || shape_numel(s) == 1);
    ASSERT(z->kind[m] == ROW || lower_fusable(z->members[m]->op));
  }
}

/* Rows per iteration: several when a reduction adds a row in one chain
 * (the rows' chains then run side by side), dividing the rows. */
static int block_rows(const Rz *z) {
  bool chain = false;
  for (int m = 0; m < z->n; m++)
    chain |= !lower_fusable(z->members[m]->op) && !lw_rows_in_lanes(z->members[m], z->L);
  int nb = chain ? LW_MAX_ROWS : 1;
  while (z->R % nb)
    nb /= 2;
  return nb;
}

Kernel *lower_row_group(Arena *a, Node *const *members, const bool *stored, int n) {
  Kernel *k = lw_fused_kernel(a, members, n);
  Rz z = {.k = k, .members = members, .n = n, .S = &members[n - 1]->shape};
  z.P = *z.S;
  z.L = z.S->dim[z.S->rank - 1];
  z.P.dim[z.P.rank - 1] = 1;
  z.R = shape_numel(&z.P);
  z.kind = arena_alloc(a, sizeof(int) * (size_t)n);
  z.buf = arena_alloc(a, sizeof(int) * (size_t)n);
  classify(&z);
  for (int m = 0; m < n; m++) /* inputs first (in order of first use), then the outputs */
    for (int j = 0; j < members[m]->n_in; j++)
      if (member_of(&z, members[m]->in[j]) < 0)
        lw_buf_of(k, members[m]->in[j], KB_IN);
  for (int m = 0; m < n; m++)
    z.buf[m] = stored[m] || m == n - 1 ? lw_buf_of(k, members[m], KB_OUT) : -1;
  if (z.R * z.L == 0)
    return k;
  row_inputs(&z);
  z.nb = block_rows(&z);
  for (int b = 0; b < z.nb; b++) {
    RowAt *w = &z.row[b];
    w->val = arena_alloc(a, sizeof(KExpr *) * (size_t)n);
    w->ev = arena_alloc(a, sizeof(KExpr *) * (size_t)n);
    w->xbase = arena_alloc(a, sizeof(KExpr *) * (size_t)(z.n_x + 1));
    w->xv = arena_alloc(a, sizeof(KExpr *) * (size_t)(z.n_x + 1));
    w->yv = arena_alloc(a, sizeof(KExpr *) * (size_t)(z.n_y + 1));
  }
  for (int m = 0; m < n; m++)
    if (z.kind[m] == SCALAR) {
      row_values(&z, k->body, m, 1);
      for (int b = 1; b < z.nb; b++)
        z.row[b].val[m] = z.row[0].val[m];
    }
  int rv = lw_ivar(k, "r");
  KStmt *rows = lw_loop(k, k->body, rv, z.R / z.nb, KL_PARALLEL);
  KExpr *r0 = lw_bind(k, rows, "r", MUL(VAR(rv), IC(z.nb)));
  for (int b = 0; b < z.nb; b++)
    row_start(&z, rows, b, r0);
  for (int m = 0; m < n; m++)
    if (z.kind[m] == ROW)
      row_values(&z, rows, m, z.nb);
  bool *need = last_loop_members(&z);
  KExpr *j;
  KStmt *body = lw_for(k, rows, "j", z.L, KL_VECTOR, &j);
  for (int b = 0; b < z.nb; b++) { /* an element's inputs all loaded before its stores */
    new_element(&z, &z.row[b]);
    for (int m = 0; m < n; m++)
      for (int i = 0; need[m] && i < members[m]->n_in; i++)
        if (member_of(&z, members[m]->in[i]) < 0)
          elem_load(&z, &z.row[b], body, members[m]->in[i], j);
    for (int m = 0; m < n; m++)
      if (need[m]) {
        KExpr *v = elem_value(&z, &z.row[b], body, m, j);
        if (z.buf[m] >= 0)
          ks_add(k, body, ks_store(k, z.buf[m], ADD(z.row[b].rb, j), v));
      }
  }
  return k;
}
