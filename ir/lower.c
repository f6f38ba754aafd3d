/*
 * lower.c: lowering a graph node to a Kernel IR loop nest (kir.h), and the
 * helpers every lowering shares.
 *
 * lower_node dispatches through the LOWER column of ops.def (op_info[op].
 * lower); leaves have none and give NULL.  Each op's function lives with
 * its kind: lower_elem.c (elementwise), lower_reduce.c (reductions, softmax,
 * the loss), lower_move.c (data movement, gathers), lower_nn.c (matmul,
 * convolutions, pooling, upsampling).
 *
 * What every kernel has in common, and why:
 *  - its name is "<op>_<node name>" with each character that cannot appear
 *    in a C identifier replaced by '_' (layer1.0.a -> conv2d_layer1_0_a), so
 *    backends can print it as a function name;
 *  - its buffers are the node's inputs in order (KB_IN, node = the input's
 *    id), then its output (KB_OUT, node = n->id; index n->n_in), named after
 *    their nodes; no lowering needs scratch;
 *  - index arithmetic is KT_IDX over the node's constant shapes; tensors are
 *    dense row-major, broadcast operands are read with stride 0 (NumPy);
 *  - loop nests walk the output row-major, merging axes that every operand
 *    walks contiguously (a same-shape elementwise op becomes one flat loop,
 *    [2, 3, 4] + [4] becomes a [6] x [4] nest), with no loop for extent-1
 *    axes; the outermost loop is KL_PARALLEL and the innermost KL_VECTOR
 *    where its accesses are unit-stride or uniform.
 */
#include <math.h>
#include <string.h>

#include "lower_internal.h"

Kernel *lower_node(Arena *a, const Node *n) {
  LowerFn f = op_info[n->op].lower;
  return f ? f(a, n) : NULL;
}

KType lw_type(DType t) { return t == DT_I32 ? KT_I32 : KT_F32; }

char *lw_ident(Arena *a, const char *prefix, const char *name) {
  char *s = arena_fmt(a, "%s%s", prefix, name);
  for (char *p = s; *p; p++) {
    char c = *p;
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok)
      *p = '_';
  }
  return s;
}

/* name, with a suffix if an earlier buffer already has it (x * x, two node
 * names that differ only in '.', an input named like the step buffer). */
static const char *unique(Kernel *k, const char *name) {
  for (int i = 0; i < k->n_bufs; i++)
    if (strcmp(k->bufs[i].name, name) == 0)
      return arena_fmt(k->arena, "%s_%d", name, k->n_bufs);
  return name;
}

int lw_node_buf(Kernel *k, const Node *nd, KBufRole role) {
  const char *name = unique(k, lw_ident(k->arena, "", nd->name));
  return kir_buf(k, name, lw_type(nd->dtype), shape_numel(&nd->shape), role, nd->id);
}

int lw_step_buf(Kernel *k) { return kir_buf(k, unique(k, "step"), KT_IDX, 1, KB_IN, KBUF_STEP); }

Kernel *lw_kernel(Arena *a, const Node *n) {
  Kernel *k = kir_new(a, lw_ident(a, arena_fmt(a, "%s_", op_name(n->op)), n->name), n);
  for (int i = 0; i < n->n_in; i++)
    lw_node_buf(k, n->in[i], KB_IN);
  lw_node_buf(k, n, KB_OUT);
  return k;
}

void lw_strides(const Shape *s, int64_t *st) {
  int64_t m = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    st[d] = m;
    m *= s->dim[d];
  }
}

void lw_bcast_strides(const Shape *in, const Shape *out, int64_t *st) {
  int64_t m = 1;
  for (int d = out->rank - 1; d >= 0; d--) {
    int j = in->rank - out->rank + d;
    int64_t dj = j >= 0 ? in->dim[j] : 1;
    st[d] = dj == 1 ? 0 : m;
    m *= dj;
  }
}

int lw_ivar(Kernel *k, const char *base) { return kir_var(k, base, KT_IDX); }

KStmt *lw_loop(Kernel *k, KStmt *parent, int var, int64_t extent, KLoopKind kind) {
  KStmt *l = ks_loop(k, var, ke_idx(k, extent), kind);
  ks_add(k, parent, l);
  return l;
}

KStmt *lw_for(Kernel *k, KStmt *parent, const char *name, int64_t extent, KLoopKind kind,
              KExpr **v) {
  if (extent == 1) {
    *v = ke_idx(k, 0);
    return parent;
  }
  int var = lw_ivar(k, name);
  *v = ke_var(k, var);
  return lw_loop(k, parent, var, extent, kind);
}

KStmt *lw_fors(Kernel *k, KStmt *parent, int n, const int64_t *dim, const char *const *names,
               KExpr **v, KLoopKind first, KLoopKind rest) {
  KStmt *at = parent;
  for (int i = 0; i < n; i++) {
    KStmt *next = lw_for(k, at, names[i], dim[i], at == parent ? first : rest, &v[i]);
    at = next;
  }
  return at;
}

KStmt *lw_if(Kernel *k, KStmt *parent, KExpr *cond) {
  if (!cond)
    return parent;
  KStmt *s = ks_if(k, cond);
  ks_add(k, parent, s);
  return s;
}

KExpr *lw_let(Kernel *k, KStmt *body, const char *name, KExpr *e) {
  int v = kir_var(k, name, e->type);
  ks_add(k, body, ks_decl(k, v, e));
  return ke_var(k, v);
}

KExpr *lw_bind(Kernel *k, KStmt *body, const char *name, KExpr *e) {
  if (e->kind == KE_FCONST || e->kind == KE_ICONST || e->kind == KE_VAR)
    return e;
  return lw_let(k, body, name, e);
}

void lw_nest(Kernel *k, KStmt *parent, int rank, const int64_t *dim, int n_ops,
             int64_t st[][MAX_RANK], NestMode mode, Nest *ns) {
  static const char *const names[] = {"i", "j", "k", "l", "m", "n", "p", "q"};
  ASSERT(n_ops <= LW_OPS && rank <= MAX_RANK);
  memset(ns, 0, sizeof *ns);
  /* drop extent-1 axes, then merge an axis into the one before it when
   * every operand's stride there is the inner stride times the inner extent */
  for (int d = 0; d < rank; d++) {
    if (dim[d] == 1)
      continue;
    int r = ns->rank;
    bool merge = r > 0;
    for (int o = 0; merge && o < n_ops; o++)
      merge = ns->st[o][r - 1] == st[o][d] * dim[d];
    if (merge) {
      ns->dim[r - 1] *= dim[d];
      for (int o = 0; o < n_ops; o++)
        ns->st[o][r - 1] = st[o][d];
      continue;
    }
    ns->dim[r] = dim[d];
    for (int o = 0; o < n_ops; o++)
      ns->st[o][r] = st[o][d];
    ns->rank++;
  }
  bool unit = ns->rank > 0;
  for (int o = 0; unit && o < n_ops; o++)
    unit = ns->st[o][ns->rank - 1] == 0 || ns->st[o][ns->rank - 1] == 1;
  KStmt *at = parent;
  for (int d = 0; d < ns->rank; d++) {
    KLoopKind kind = mode == NEST_REDUCE ? KL_REDUCE
                     : d == 0 && mode != NEST_INNER ? KL_PARALLEL : KL_SERIAL;
    if (d == ns->rank - 1 && (mode == NEST_MAP || mode == NEST_INNER) && unit)
      kind = KL_VECTOR;
    ns->var[d] = lw_ivar(k, names[d]);
    at = lw_loop(k, at, ns->var[d], ns->dim[d], kind);
  }
  ns->body = at;
}

void lw_flat(Kernel *k, KStmt *parent, int64_t cnt, NestMode mode, Nest *ns) {
  int64_t st[LW_OPS][MAX_RANK];
  for (int o = 0; o < LW_OPS; o++)
    st[o][0] = 1;
  lw_nest(k, parent, 1, &cnt, LW_OPS, st, mode, ns);
}

KExpr *lw_at(Kernel *k, const Nest *ns, int op, int64_t base) {
  KExpr *e = ke_idx(k, base);
  for (int d = 0; d < ns->rank; d++)
    e = ke_binary(k, KO_ADD, e,
                  ke_binary(k, KO_MUL, ke_var(k, ns->var[d]), ke_idx(k, ns->st[op][d])));
  return e;
}

int32_t lw_to_i32(double v) {
  if (isnan(v))
    return 0;
  if (v >= 2147483647.0)
    return INT32_MAX;
  if (v <= -2147483648.0)
    return INT32_MIN;
  return (int32_t)v;
}
