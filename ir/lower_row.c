/*
 * lower_row.c: the kernel of a row group (passes/fuse.c, kind row):
 * reductions over some axes of the anchor's shape S, the innermost one
 * among them, and the elementwise ops around them, one pass of a parallel
 * loop per row.  A row is the L elements of S sharing their kept axes (P:
 * S with the reduced axes made 1; the rows are P's elements).  Layer
 * norm's rows are S's innermost axis; its mean, x - mean, square, mean,
 * + eps, rsqrt, multiply, * gamma + beta becomes
 *
 *   parallel for r {                      rb = r * L
 *     mu = reduce j: x[rb + j]            (lower_reduce's row: same order)
 *     var = reduce j: (x[rb+j] - mu) * (x[rb+j] - mu)
 *     t = rsqrt(var + eps)                (row values: once per row)
 *     vector for j { xc = x[rb+j] - mu; out[rb+j] = xc * t * g[j] + b[j] } }
 *
 * Batch norm's rows are channels of NCHW (P = [1, C, 1, 1]): row c is
 * the N runs of H*W elements at c*H*W + n*C*H*W, so the element loop is a
 * serial loop over n around the vector loop over H*W (rb = c*H*W, the
 * element's offset in the row at = n*C*H*W + j).
 *
 * Members come in three shapes:
 *   S       elementwise over the row's elements: a formula evaluated where
 *           it is needed (inside each reduction that reads it, and in the
 *           last loop if it is stored or feeds a stored one), each member
 *           once per element;
 *   P       S with the reduced axes 1: the reductions (keepdims) and elementwise
 *           ops of their results, computed once per row, in member order;
 *   scalar  one element: computed once, before the row loop.
 * An input of the group is loaded at element `at` of row r from its own
 * broadcast index of the row's first element rb (computed once per row),
 * plus at where it walks the reduced axes as S does (x itself, layer
 * norm's gamma), or at nothing where it has one value per row; any other
 * broadcast input (a global pooling's gradient [N, C, 1, 1] in a channel's
 * row) plus its strides times the element's position on the reduced axes
 * it walks, from at by a division each.  Each reduction
 * is lw_rows_reduce, the f32 operations
 * of the reduction's own kernel in its order, and each member's formula is
 * its own kernel's (lw_elt_value): the fused kernel computes the unfused
 * kernels' bits.  Stored members (read outside the group, or results) are
 * written where they are computed: S ones in the last loop, P ones per row.
 * An output may overwrite an input of its shape (passes/inplace.c: the
 * group is elementwise to the planner): a row's values per row are loaded
 * when the row starts, and an element's inputs in the last loop before
 * any of its stores; rows read only their own elements of their outputs'
 * shapes (a row is the elements sharing the kept axes, strided or not).
 *
 * A reduction whose row is one chain of adds (rows under 16 elements, or
 * under 32 repeated over outer reduced axes: lower_reduce's order) takes
 * 4 cycles an element; so such kernels do a
 * block of up to LW_MAX_ROWS rows per parallel iteration, the rows' chains
 * side by side in one loop, each row still summed in its own order.  Rows
 * summed in partials (one contiguous run each) come in blocks too, of
 * LW_LANES_ROWS partials (4 rows of 32 or more, 8 of 16 to 31): a row's
 * maximum, tree of partials, rsqrt and so on form a chain of ~150 cycles
 * that a row at a time left mostly waiting (layer norm over 32: 47 cycles
 * a row), and the block's trees are done together on one vector
 * (codegen/llvm/cg_loop.c, vacc_tree).
 */
#include <string.h>

#include "lower_internal.h"

enum { ELEM, ROW, SCALAR };
/* How an input is read at element at of a row: at xbase + at, at xbase
 * (one value per row), or at xbase + its own offset from at (divisions). */
enum { X_WALK, X_ROW, X_OTHER };

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
  int *xmode;      /* per such input: X_WALK, X_ROW or X_OTHER */
  int n_x;
  int64_t sst[MAX_RANK]; /* S's strides */
  bool flat;       /* the reduced axes are S's last ones: row r starts at r * L */
  int n_outer;     /* the reduced axes outside the innermost contiguous run */
  int64_t odim[MAX_RANK], ost[MAX_RANK];
  int64_t run;     /* the innermost run of reduced axes, merged */
  const Node **ys; /* the inputs ROW members read */
  int n_y;
  int nb;          /* rows per iteration of the parallel loop */
  RowAt row[LW_MAX_ROWS];
  const Node *red_in; /* the input of the reduction being lowered */
} Rz;

static int member_of(const Rz *z, const Node *x) { return lw_member(z->members, z->n, x); }

static void new_element(Rz *z, RowAt *w) {
  for (int m = 0; m < z->n; m++)
    w->ev[m] = NULL;
  for (int i = 0; i < z->n_x; i++)
    if (z->xmode[i] != X_ROW)
      w->xv[i] = NULL;
}

/* x's offset at element at of a row from its index at the row's first
 * element: its broadcast strides on the reduced axes times the element's
 * position on them (at / st % dim: at is made of reduced axes only). */
static KExpr *reduced_offset(Rz *z, const Node *x, KExpr *at) {
  Kernel *k = z->k;
  int64_t bst[MAX_RANK];
  lw_bcast_strides(&x->shape, z->S, bst);
  KExpr *off = IC(0);
  for (int d = 0; d < z->S->rank; d++)
    if (z->P.dim[d] != z->S->dim[d] && bst[d])
      off = ADD(off, MUL(MOD(FDIV(at, IC(z->sst[d])), IC(z->S->dim[d])), IC(bst[d])));
  return off;
}

/* Input x at element at of row w (loaded once per element). */
static KExpr *elem_load(Rz *z, RowAt *w, KStmt *body, const Node *x, KExpr *at) {
  Kernel *k = z->k;
  int i = 0;
  while (z->xs[i] != x)
    i++;
  if (!w->xv[i]) {
    KExpr *idx = z->xmode[i] == X_WALK ? ADD(w->xbase[i], at)
                 : z->xmode[i] == X_ROW ? w->xbase[i]
                                        : ADD(w->xbase[i], reduced_offset(z, x, at));
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

/* The reduction's input at element at of row b of the block (LwElemRow). */
static KExpr *red_elem(void *ctx, KStmt *body, int b, KExpr *at) {
  Rz *z = ctx;
  RowAt *w = &z->row[b];
  new_element(z, w);
  int mi = member_of(z, z->red_in);
  return mi >= 0 ? elem_value(z, w, body, mi, at) : elem_load(z, w, body, z->red_in, at);
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
    lw_rows_reduce(k, body, v, nb, red_elem, z, res);
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

/* How input x is read along a row (X_WALK, X_ROW, X_OTHER). */
static int input_mode(const Rz *z, const Node *x) {
  int64_t bst[MAX_RANK];
  bool walk = true, row = true;
  lw_bcast_strides(&x->shape, z->S, bst);
  for (int d = 0; d < z->S->rank; d++)
    if (z->P.dim[d] != z->S->dim[d]) { /* a reduced axis */
      walk &= bst[d] == z->sst[d];
      row &= bst[d] == 0;
    }
  return shape_numel(&x->shape) == 1 || row ? X_ROW : walk ? X_WALK : X_OTHER;
}

/* The inputs ELEM members and reductions read, and how each is read. */
static void row_inputs(Rz *z) {
  Arena *a = z->k->arena;
  int cap = 1;
  for (int m = 0; m < z->n; m++)
    cap += z->members[m]->n_in;
  z->xs = arena_alloc(a, sizeof(Node *) * (size_t)cap);
  z->xmode = arena_alloc(a, sizeof(int) * (size_t)cap);
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
      z->xs[z->n_x] = x;
      z->xmode[z->n_x++] = input_mode(z, x);
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

/* The first element of row r in S: r * L if the rows are S's last axes,
 * else from r's position along the kept axes. */
static KExpr *row_base(Rz *z, KExpr *r) {
  Kernel *k = z->k;
  if (z->flat)
    return MUL(r, IC(z->L));
  KExpr *rb = IC(0);
  int64_t inner = 1;
  for (int d = z->S->rank - 1; d >= 0; d--)
    if (z->P.dim[d] == z->S->dim[d] && z->S->dim[d] > 1) {
      rb = ADD(rb, MUL(MOD(FDIV(r, IC(inner)), IC(z->S->dim[d])), IC(z->sst[d])));
      inner *= z->S->dim[d];
    }
  return rb;
}

/* Row b of the block starting at row r0: its index, first element, the
 * inputs' indices there, and the values of the inputs with one value per
 * row, loaded before the row stores anything (an output may overwrite an
 * input of its shape, passes/inplace.c). */
static void row_start(Rz *z, KStmt *body, int b, KExpr *r0) {
  Kernel *k = z->k;
  RowAt *w = &z->row[b];
  w->r = lw_bind(k, body, "r", ADD(r0, IC(b)));
  w->rb = lw_bind(k, body, "rb", row_base(z, w->r));
  for (int i = 0; i < z->n_x; i++) {
    w->xbase[i] = lw_bind(k, body, "xb", lw_bcast_index(k, body, z->xs[i], z->S, w->rb));
    if (z->xmode[i] == X_ROW)
      w->xv[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, z->xs[i], KB_IN), w->xbase[i]));
  }
  for (int i = 0; i < z->n_y; i++)
    w->yv[i] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, z->ys[i], KB_IN),
                                          lw_bcast_index(k, body, z->ys[i], &z->P, w->r)));
}

/* P (a member of another shape than S, not one element) and the layout
 * of a row: whether rows are S's last axes, the innermost run of reduced
 * axes (contiguous in S) and the reduced axes outside it. */
static void row_layout(Rz *z) {
  const Shape *S = z->S;
  z->P = *S;
  for (int m = 0; m < z->n; m++) {
    const Shape *s = &z->members[m]->shape;
    if (!shape_eq(s, S) && shape_numel(s) != 1) {
      z->P = *s;
      break;
    }
  }
  ASSERT(z->P.rank == S->rank);
  z->R = shape_numel(&z->P);
  z->L = z->R ? shape_numel(S) / z->R : 0;
  lw_strides(S, z->sst);
  int d = S->rank - 1;
  z->run = 1;
  for (; d >= 0 && (S->dim[d] == 1 || z->P.dim[d] == 1); d--)
    z->run *= S->dim[d];
  z->flat = true;
  z->n_outer = 0;
  for (int e = 0; e <= d; e++)
    if (S->dim[e] > 1 && z->P.dim[e] == 1) {
      z->flat = false;
      z->odim[z->n_outer] = S->dim[e];
      z->ost[z->n_outer++] = z->sst[e];
    }
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
 * (the rows' chains then run side by side), or each row in partial sums
 * over one run (the rows' partials side by side: LW_LANES_ROWS of them);
 * one when a row's partials walk outer axes; dividing the rows. */
static int block_rows(const Rz *z) {
  int nb = 0;
  for (int m = 0; m < z->n; m++) {
    if (lower_fusable(z->members[m]->op))
      continue;
    int lanes = lw_rows_lanes(z->members[m]);
    int want = lanes < 0 ? 1 : lanes > 0 ? LW_LANES_ROWS / lanes : LW_MAX_ROWS;
    nb = nb == 0 || want < nb ? want : nb;
  }
  return lw_block_rows(nb, z->R);
}

/* The row's elements: serial loops over the reduced axes outside the
 * innermost run, a vector loop over the run; each element's inputs all
 * loaded before its stores, then the stored ELEM members. */
static void last_loop(Rz *z, KStmt *rows) {
  Kernel *k = z->k;
  bool *need = last_loop_members(z);
  KStmt *body = rows;
  KExpr *off = IC(0), *j, *ov[MAX_RANK];
  const char *names[MAX_RANK];
  if (z->n_outer > 0) {
    for (int o = 0; o < z->n_outer; o++)
      names[o] = "o";
    body = lw_fors(k, rows, z->n_outer, z->odim, names, ov, KL_SERIAL, KL_SERIAL);
    for (int o = 0; o < z->n_outer; o++)
      off = ADD(off, MUL(ov[o], IC(z->ost[o])));
    off = lw_bind(k, body, "off", off);
  }
  body = lw_for(k, body, "j", z->run, KL_VECTOR, &j);
  KExpr *at = z->n_outer > 0 ? lw_bind(k, body, "at", ADD(off, j)) : j;
  for (int b = 0; b < z->nb; b++) {
    new_element(z, &z->row[b]);
    for (int m = 0; m < z->n; m++)
      for (int i = 0; need[m] && i < z->members[m]->n_in; i++)
        if (member_of(z, z->members[m]->in[i]) < 0)
          elem_load(z, &z->row[b], body, z->members[m]->in[i], at);
    for (int m = 0; m < z->n; m++)
      if (need[m]) {
        KExpr *v = elem_value(z, &z->row[b], body, m, at);
        if (z->buf[m] >= 0)
          ks_add(k, body, ks_store(k, z->buf[m], ADD(z->row[b].rb, at), v));
      }
  }
}

Kernel *lower_row_group(Arena *a, Node *const *members, const bool *stored, int n) {
  Kernel *k = lw_fused_kernel(a, members, n);
  Rz z = {.k = k, .members = members, .n = n, .S = &members[n - 1]->shape};
  row_layout(&z);
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
  last_loop(&z, rows);
  return k;
}
