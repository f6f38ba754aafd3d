/*
 * lower_move.c: lowering of data movement (transpose, broadcast_to, slice
 * and its gradient, concat) and of the embedding gather and its gradient.
 *
 * Movement kernels copy elements, so they are bit-exact (NaN payloads
 * included): each walks the output row-major and reads the input through
 * strides (permuted, 0 on broadcast axes, multiplied by the slice step,
 * offset by the slice's start).  The gradients write every output element:
 * slice_back fills zeros and then stores the gradient at the sliced
 * positions (distinct positions: a parallel scatter); embedding_back fills
 * zeros and adds each position's gradient row to its id's table row, the
 * positions in order (as the reference sums them, in f32 instead of
 * double), skipping ids outside [0, V).
 *
 * An embedding id outside [0, V) gives a row of NaN, as eval_embedding
 * does; the load uses row 0 instead, so no kernel reads out of bounds.
 */
#include <math.h>

#include "lower_internal.h"

/* out[idx] = in[base + sum idx[d] * ist[d]] over out's index space. */
static Kernel *gather(Arena *a, const Node *n, int64_t base, const int64_t *ist) {
  Kernel *k = lw_kernel(a, n);
  int64_t st[LW_OPS][MAX_RANK];
  Nest ns;
  if (shape_numel(&n->shape) == 0)
    return k;
  lw_strides(&n->shape, st[0]);
  for (int d = 0; d < n->shape.rank; d++)
    st[1][d] = ist[d];
  lw_nest(k, k->body, n->shape.rank, n->shape.dim, 2, st, NEST_MAP, &ns);
  ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 0, 0), LOAD(0, lw_at(k, &ns, 1, base))));
  return k;
}

/* out axis d is input axis perm[d]. */
Kernel *lower_transpose(Arena *a, const Node *n) {
  int64_t st[MAX_RANK], pst[MAX_RANK];
  lw_strides(&n->in[0]->shape, st);
  for (int d = 0; d < n->shape.rank; d++)
    pst[d] = st[n->at.axes[d]];
  return gather(a, n, 0, pst);
}

Kernel *lower_broadcast_to(Arena *a, const Node *n) {
  int64_t st[MAX_RANK];
  lw_bcast_strides(&n->in[0]->shape, &n->shape, st);
  return gather(a, n, 0, st);
}

/* out[i] = in[begin + i * step] on every axis (begin, step normalized). */
Kernel *lower_slice(Arena *a, const Node *n) {
  int64_t st[MAX_RANK], base = 0;
  lw_strides(&n->in[0]->shape, st);
  for (int d = 0; d < n->shape.rank; d++) {
    base += n->at.begin[d] * st[d];
    st[d] *= n->at.step[d];
  }
  return gather(a, n, base, st);
}

/* Fills the output of k (numel cnt, buffer out) with v, as a flat map. */
static void fill_out(Kernel *k, int out, int64_t cnt, KExpr *v) {
  Nest ns;
  if (cnt == 0)
    return;
  lw_flat(k, k->body, cnt, NEST_MAP, &ns);
  ks_add(k, ns.body, ks_store(k, out, lw_at(k, &ns, 0, 0), v));
}

/* slice's gradient: zeros, then gy[idx] at begin + idx * step on every axis
 * (both dtypes; zero is all-zero bits in both). */
int64_t lw_slice_region(const Node *n, int64_t st[][MAX_RANK]) {
  const Shape *gy = &n->in[0]->shape;
  int64_t ost[MAX_RANK], base = 0;
  lw_strides(gy, st[0]);
  lw_strides(&n->shape, ost);
  for (int d = 0; d < gy->rank; d++) {
    base += n->at.begin[d] * ost[d];
    st[1][d] = ost[d] * n->at.step[d];
  }
  return base;
}

Kernel *lower_slice_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  const Shape *gy = &n->in[0]->shape;
  int64_t st[LW_OPS][MAX_RANK];
  KExpr *zero = n->dtype == DT_F32 ? FC(0) : ke_int(k, KT_I32, 0);
  fill_out(k, lw_out(n), shape_numel(&n->shape), zero);
  if (shape_numel(gy) == 0)
    return k;
  int64_t base = lw_slice_region(n, st);
  Nest ns;
  lw_nest(k, k->body, gy->rank, gy->dim, 2, st, NEST_MAP, &ns);
  ks_add(k, ns.body, ks_store(k, lw_out(n), lw_at(k, &ns, 1, base), LOAD(0, lw_at(k, &ns, 0, 0))));
  return k;
}

/* Along the axis, input i's block of dim_i * inner elements goes after the
 * blocks of the inputs before it, for each of the outer indices. */
Kernel *lower_concat(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int ax = n->at.axis;
  int64_t outer = 1, inner = 1, pos = 0;
  for (int d = 0; d < ax; d++)
    outer *= n->shape.dim[d];
  for (int d = ax + 1; d < n->shape.rank; d++)
    inner *= n->shape.dim[d];
  int64_t row = n->shape.dim[ax] * inner;
  for (int i = 0; i < n->n_in; i++) {
    int64_t chunk = n->in[i]->shape.dim[ax] * inner, dim[2] = {outer, chunk};
    int64_t st[LW_OPS][MAX_RANK] = {{row, 1}, {chunk, 1}};
    if (outer > 0 && chunk > 0) {
      Nest ns;
      lw_nest(k, k->body, 2, dim, 2, st, NEST_MAP, &ns);
      ks_add(k, ns.body,
             ks_store(k, lw_out(n), lw_at(k, &ns, 0, pos), LOAD(i, lw_at(k, &ns, 1, 0))));
    }
    pos += chunk;
  }
  return k;
}

/* out[p, :] = table[ids[p], :], or NaN for an id outside [0, V). */
Kernel *lower_embedding(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int64_t cnt = shape_numel(&n->in[0]->shape), v = n->in[1]->shape.dim[0];
  int64_t d = n->in[1]->shape.dim[1];
  if (cnt == 0 || d == 0)
    return k;
  if (v == 0) { /* every id is out of range */
    fill_out(k, lw_out(n), cnt * d, FC(NAN));
    return k;
  }
  Nest np, nd;
  lw_flat(k, k->body, cnt, NEST_ROWS, &np);
  KExpr *p = lw_at(k, &np, 0, 0);
  KExpr *id = lw_let(k, np.body, "id", LOAD(0, p));
  KExpr *ok =
      lw_let(k, np.body, "ok", AND(GE(id, ke_int(k, KT_I32, 0)), LT(id, ke_int(k, KT_I32, v))));
  KExpr *src = lw_let(k, np.body, "src", MUL(SEL(ok, ke_cast(k, KT_IDX, id), IC(0)), IC(d)));
  KExpr *dst = lw_bind(k, np.body, "dst", MUL(p, IC(d)));
  lw_flat(k, np.body, d, np.rank ? NEST_INNER : NEST_MAP, &nd);
  KExpr *j = lw_at(k, &nd, 0, 0);
  ks_add(k, nd.body, ks_store(k, lw_out(n), ADD(dst, j), SEL(ok, LOAD(1, ADD(src, j)), FC(NAN))));
  return k;
}

/* table[ids[p], :] += gy[p, :] for the positions p in order, from zeros. */
Kernel *lower_embedding_back(Arena *a, const Node *n) {
  Kernel *k = lw_kernel(a, n);
  int64_t cnt = shape_numel(&n->in[0]->shape), v = n->shape.dim[0], d = n->shape.dim[1];
  fill_out(k, lw_out(n), v * d, FC(0));
  if (cnt == 0 || v == 0 || d == 0)
    return k;
  int p = lw_ivar(k, "p"), j = lw_ivar(k, "j");
  KStmt *lp = lw_loop(k, k->body, p, cnt, KL_SERIAL); /* positions may share an id */
  KExpr *id = lw_let(k, lp, "id", LOAD(0, VAR(p)));
  KStmt *in = ks_if(k, AND(GE(id, ke_int(k, KT_I32, 0)), LT(id, ke_int(k, KT_I32, v))));
  ks_add(k, lp, in);
  KExpr *row = lw_let(k, in, "row", MUL(ke_cast(k, KT_IDX, id), IC(d)));
  KStmt *lj = lw_loop(k, in, j, d, KL_VECTOR);
  KExpr *at = ADD(row, VAR(j));
  ks_add(k, lj,
         ks_store(k, lw_out(n), at,
                  ADD(LOAD(lw_out(n), at), LOAD(1, ADD(MUL(VAR(p), IC(d)), VAR(j))))));
  return k;
}
