/*
 * lower_fuse.c: one Kernel IR loop nest for a group of fused nodes
 * (passes/fuse.c decides the groups; this file only builds their kernels).
 *
 * Two shapes of group:
 *
 *  eltwise  the anchor is elementwise, and every member has the anchor's
 *           shape D or one element.  One-element members are computed once,
 *           before the loop (their inputs have one element too).  The loop
 *           walks D like an elementwise op's (lw_nest: broadcast inputs by
 *           strides, axes merged where every operand allows), loads every
 *           input of the element first, then computes the members in order
 *           as locals and stores the ones that have buffers.  Loading
 *           before storing is what lets an output overwrite an input of
 *           the same shape (passes/inplace.c).
 *           out[i] = relu(a[i] + b[i % C])  becomes
 *             parallel for i { vector for j { a_ = a[i*C + j]; b_ = b[j];
 *                                             t = a_ + b_; out[i*C + j] = max(t, 0) } }
 *
 *  other    the anchor (a reduction, softmax, the loss, a data movement op:
 *           lower_takes_producers) is lowered as usual, then every load of
 *           an internal member's buffer at index e becomes the member's
 *           formula at e: its inputs are loaded at e (same shape), at 0
 *           (one element) or at e's broadcast index (unravelled with
 *           division and remainder).  sum(x * x) reads x and never stores
 *           x * x.  A member loaded several times is recomputed each time:
 *           cheaper than a round trip through memory for the formulas
 *           fused here.
 *
 *           A slice member is a strided view: loaded from its input where
 *           the loop needs it (its own row of nest strides), never stored.
 *
 *  row      an eltwise group with members of another shape than the
 *           anchor's (values per row of its innermost axis, reductions
 *           over the rows): ir/lower_row.c builds it, row by row.
 *
 *  scatter  an add_n of slice_backs (not eltwise): ir/lower_scatter.c
 *           stores each slice's gradient into its region.
 *
 *  epilogue an eltwise group with a matmul or convolution among its members
 *           (lower_gemm_head): the kernel starts with that node's own
 *           nest, writing into the group's output buffer, and the loop
 *           above then reads it from there (codegen may run the first part
 *           as its GEMM schedule: Kernel.head, n_head).
 *
 * Each member's formula is its single-node kernel's (lw_elt_value), so a
 * fused kernel computes the same f32 operations in the same order as the
 * unfused kernels, and gives the same bits.
 */
#include <string.h>

#include "lower_internal.h"

bool lower_fusable(Op op) { return op_info[op].cls == CL_ELTWISE || op == OP_BROADCAST_TO; }

bool lower_view(Op op) { return op == OP_SLICE; }

bool lower_eltwise_only(Op op) { return lower_view(op) || op == OP_RESHAPE; }

/* Where slice v reads its input: base + sum over axes of c[d] st[d]. */
static int64_t view_strides(const Node *v, int64_t *st) {
  int64_t base = 0;
  lw_strides(&v->in[0]->shape, st);
  for (int d = 0; d < v->shape.rank; d++) {
    base += v->at.begin[d] * st[d];
    st[d] *= v->at.step[d];
  }
  return base;
}

/* Slice v's element at flat index i of its shape (unravelled). */
static KExpr *view_index(Kernel *k, KStmt *body, const Node *v, KExpr *i) {
  int64_t st[MAX_RANK], ost[MAX_RANK];
  int64_t base = view_strides(v, st);
  lw_strides(&v->shape, ost);
  i = lw_bind(k, body, "e", i);
  KExpr *idx = IC(base);
  for (int d = 0; d < v->shape.rank; d++)
    if (v->shape.dim[d] > 1)
      idx = ADD(idx, MUL(MOD(FDIV(i, IC(ost[d])), IC(v->shape.dim[d])), IC(st[d])));
  return idx;
}

/* A slice of shape s read in a kernel over D (a reshape between them, s
 * and D alike but for axes of extent 1): its strides st (over s) made
 * strides over D's axes, in place; false if s and D differ otherwise. */
static bool strides_onto(const Shape *s, const Shape *D, int64_t *st) {
  int64_t out[MAX_RANK];
  int j = 0;
  for (int d = 0; d < D->rank; d++) {
    out[d] = 0;
    if (D->dim[d] == 1)
      continue;
    while (j < s->rank && s->dim[j] == 1)
      j++;
    if (j == s->rank || s->dim[j] != D->dim[d])
      return false;
    out[d] = st[j++];
  }
  while (j < s->rank && s->dim[j] == 1)
    j++;
  if (j != s->rank)
    return false;
  memcpy(st, out, sizeof(int64_t) * (size_t)D->rank);
  return true;
}

bool lower_gemm_head(Op op) {
  return op == OP_MATMUL || op == OP_CONV2D || op == OP_CONV_TRANSPOSE2D;
}

bool lower_takes_producers(Op op) {
  switch (op) {
  case OP_SUM: case OP_MEAN: case OP_MAX: case OP_ARGMAX: case OP_SOFTMAX: case OP_LOG_SOFTMAX:
  case OP_CROSS_ENTROPY: case OP_CROSS_ENTROPY_BACK: case OP_TRANSPOSE: case OP_SLICE:
  case OP_SLICE_BACK: case OP_CONCAT: case OP_RESHAPE: case OP_MAXPOOL2D: case OP_AVGPOOL2D:
    return true;
  default:
    return false;
  }
}

typedef struct Fz {
  Kernel *k;
  Node *const *members;
  const bool *stored;
  int n;
  int *buf;        /* per member: its buffer, -1 if internal */
  KExpr **val;     /* eltwise: per member, its value in the current scope */
  int head;        /* eltwise: the member whose own nest writes the output first, or -1 */
  int out;         /* its buffer (the anchor's) */
} Fz;

int lw_member(Node *const *members, int n, const Node *x) {
  for (int m = 0; m < n; m++)
    if (members[m] == x)
      return m;
  return -1;
}

static int member_index(const Fz *z, const Node *x) { return lw_member(z->members, z->n, x); }

/* "<op>_<op>_..._<anchor name>", the ops in order, each once, at most 4. */
static const char *fused_name(Arena *a, Node *const *members, int n) {
  char ops[160] = "";
  size_t len = 0;
  int shown = 0;
  for (int m = 0; m < n; m++) {
    bool dup = false;
    for (int j = 0; j < m; j++)
      dup |= members[j]->op == members[m]->op;
    if (dup)
      continue;
    if (shown++ == 4) {
      len += (size_t)snprintf(ops + len, sizeof ops - len, "etc_");
      break;
    }
    len += (size_t)snprintf(ops + len, sizeof ops - len, "%s_", op_name(members[m]->op));
  }
  return lw_ident(a, ops, members[n - 1]->name);
}

Kernel *lw_fused_kernel(Arena *a, Node *const *members, int n) {
  Kernel *k = kir_new(a, fused_name(a, members, n), members[n - 1]);
  k->members = members;
  k->n_members = n;
  return k;
}

int lw_buf_of(Kernel *k, const Node *x, KBufRole role) {
  for (int b = 0; b < k->n_bufs; b++)
    if (k->bufs[b].node == x->id)
      return b;
  return lw_node_buf(k, x, role);
}

KExpr *lw_bcast_index(Kernel *k, KStmt *body, const Node *x, const Shape *s, KExpr *e) {
  if (shape_numel(&x->shape) == 1)
    return IC(0);
  if (shape_eq(&x->shape, s))
    return e;
  int64_t st[MAX_RANK], bst[MAX_RANK];
  lw_strides(s, st);
  lw_bcast_strides(&x->shape, s, bst);
  e = lw_bind(k, body, "e", e);
  KExpr *idx = IC(0);
  for (int d = 0; d < s->rank; d++)
    if (bst[d])
      idx = ADD(idx, MUL(MOD(FDIV(e, IC(st[d])), IC(s->dim[d])), IC(bst[d])));
  return idx;
}

/* --- eltwise groups ---------------------------------------------------------- */

static KExpr **operands(Kernel *k, const Node *v) {
  return arena_alloc(k->arena, sizeof(KExpr *) * (size_t)(v->n_in + 1));
}

/* Computes member m from the values of its operands (members' or loads). */
static void compute(Fz *z, KStmt *body, int m, KExpr **in_val) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  KExpr **ops = operands(k, v);
  for (int j = 0; j < v->n_in; j++) {
    int mi = member_index(z, v->in[j]);
    ops[j] = mi >= 0 ? z->val[mi] : in_val[j];
  }
  z->val[m] = lw_bind(k, body, "v", lw_elt_value(k, body, v, ops));
}

/* The scalar members, before the loop: their inputs have one element. */
static void scalars(Fz *z, bool all) {
  Kernel *k = z->k;
  for (int m = 0; m < z->n; m++) {
    const Node *v = z->members[m];
    if (!all && shape_numel(&v->shape) != 1)
      continue;
    if (m == z->head) {
      z->val[m] = lw_bind(k, k->body, "v", LOAD(z->out, IC(0)));
      continue;
    }
    if (lower_view(v->op)) {
      int64_t st[MAX_RANK];
      z->val[m] = lw_bind(k, k->body, "v",
                          LOAD(lw_buf_of(k, v->in[0], KB_IN), IC(view_strides(v, st))));
      continue;
    }
    KExpr **in_val = operands(k, v);
    for (int j = 0; j < v->n_in; j++)
      if (member_index(z, v->in[j]) < 0)
        in_val[j] = LOAD(lw_buf_of(k, v->in[j], KB_IN), IC(0));
    compute(z, k->body, m, in_val);
    if (z->buf[m] >= 0)
      ks_add(k, k->body, ks_store(k, z->buf[m], IC(0), z->val[m]));
  }
}

static Kernel *lower_eltwise_group(Fz *z) {
  Kernel *k = z->k;
  const Node *anchor = z->members[z->n - 1];
  const Shape *D = &anchor->shape;
  int64_t cnt = shape_numel(D);
  if (cnt == 0)
    return k;
  if (cnt == 1) {
    scalars(z, true);
    return k;
  }
  /* operand 0: D's own strides; then one per distinct broadcast input */
  const Node *bc[LW_OPS];
  int64_t st[LW_OPS][MAX_RANK];
  int n_ops = 1;
  lw_strides(D, st[0]);
  int view_op[64 + 1];
  int64_t view_base[64 + 1];
  for (int m = 0; m < z->n && m < 64; m++) { /* slices: their input's strides */
    view_op[m] = -1;
    if (!lower_view(z->members[m]->op) || shape_numel(&z->members[m]->shape) == 1 ||
        n_ops == LW_OPS)
      continue;
    view_base[m] = view_strides(z->members[m], st[n_ops]);
    if (!shape_eq(&z->members[m]->shape, D) && !strides_onto(&z->members[m]->shape, D, st[n_ops]))
      continue; /* a reshaped slice of other axes: view_index, from its own shape */
    bc[n_ops] = NULL;
    view_op[m] = n_ops++;
  }
  for (int m = 0; m < z->n; m++)
    for (int j = 0; m != z->head && !lower_view(z->members[m]->op) &&
                    z->members[m]->op != OP_RESHAPE && j < z->members[m]->n_in &&
                    shape_numel(&z->members[m]->shape) > 1; j++) {
      const Node *x = z->members[m]->in[j];
      if (member_index(z, x) >= 0 || shape_numel(&x->shape) == 1 || shape_eq(&x->shape, D))
        continue;
      bool seen = false;
      for (int o = 1; o < n_ops; o++)
        seen |= bc[o] == x;
      if (!seen && n_ops < LW_OPS) {
        bc[n_ops] = x;
        lw_bcast_strides(&x->shape, D, st[n_ops++]);
      }
    }
  scalars(z, false);
  Nest ns;
  lw_nest(k, k->body, D->rank, D->dim, n_ops, st, NEST_MAP, &ns);
  KExpr *i = lw_bind(k, ns.body, "i", lw_at(k, &ns, 0, 0));
  /* every input of the element first, each once */
  size_t cap = 1;
  for (int m = 0; m < z->n; m++)
    cap += (size_t)z->members[m]->n_in;
  KExpr **loaded = arena_alloc(k->arena, sizeof(KExpr *) * cap);
  int *loaded_node = arena_alloc(k->arena, sizeof(int) * cap);
  int n_loaded = 0;
  for (int m = 0; m < z->n; m++) { /* slices: loaded where they look */
    const Node *v = z->members[m];
    if (!lower_view(v->op) || shape_numel(&v->shape) == 1)
      continue;
    int o = m < 64 ? view_op[m] : -1;
    KExpr *idx = o > 0 ? lw_at(k, &ns, o, view_base[m]) : view_index(k, ns.body, v, i);
    z->val[m] = lw_bind(k, ns.body, "x", LOAD(lw_buf_of(k, v->in[0], KB_IN), idx));
  }
  for (int m = 0; m < z->n; m++) {
    const Node *v = z->members[m];
    if (shape_numel(&v->shape) == 1 || m == z->head || lower_view(v->op))
      continue;
    for (int j = 0; j < v->n_in; j++) {
      const Node *x = v->in[j];
      bool seen = member_index(z, x) >= 0;
      for (int l = 0; l < n_loaded && !seen; l++)
        seen = loaded_node[l] == x->id;
      if (seen)
        continue;
      int o = 0;
      for (int b = 1; b < n_ops; b++)
        if (bc[b] == x)
          o = b;
      /* a reshape's input: at the same flat index (a broadcast input of
       * D's numel is too, so the load can be shared) */
      KExpr *idx = v->op == OP_RESHAPE ? i
                   : o                   ? lw_at(k, &ns, o, 0)
                                         : lw_bcast_index(k, ns.body, x, D, i);
      loaded_node[n_loaded] = x->id;
      loaded[n_loaded++] = lw_bind(k, ns.body, "x", LOAD(lw_buf_of(k, x, KB_IN), idx));
    }
  }
  if (z->head >= 0) /* what the head's nest wrote: loaded before any store */
    z->val[z->head] = lw_bind(k, ns.body, "v", LOAD(z->out, i));
  for (int m = 0; m < z->n; m++) {
    const Node *v = z->members[m];
    if (shape_numel(&v->shape) == 1 || m == z->head || lower_view(v->op))
      continue;
    KExpr **in_val = operands(k, v);
    for (int j = 0; j < v->n_in; j++)
      for (int l = 0; l < n_loaded; l++)
        if (loaded_node[l] == v->in[j]->id)
          in_val[j] = loaded[l];
    compute(z, ns.body, m, in_val);
    if (z->buf[m] >= 0)
      ks_add(k, ns.body, ks_store(k, z->buf[m], i, z->val[m]));
  }
  return k;
}

/* --- other groups: members substituted for the anchor's loads ---------------- */

/* Member m's value at its element e, as an expression (decls into body). */
static KExpr *value_at(Fz *z, KStmt *body, int m, KExpr *e) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  if (shape_numel(&v->shape) == 1)
    e = IC(0);
  else
    e = lw_bind(k, body, "e", e);
  KExpr **ops = operands(k, v);
  for (int j = 0; j < v->n_in; j++) {
    const Node *x = v->in[j];
    int mi = member_index(z, x);
    KExpr *idx = lw_bcast_index(k, body, x, &v->shape, e);
    ops[j] = mi >= 0 ? value_at(z, body, mi, idx)
                     : lw_bind(k, body, "x", LOAD(lw_buf_of(k, x, KB_IN), idx));
  }
  return lw_elt_value(k, body, v, ops);
}

/* e with every load of a member buffer replaced (decls into body). */
static KExpr *subst(Fz *z, KStmt *body, const int *member_of_buf, KExpr *e) {
  if (!e)
    return NULL;
  KExpr *a = subst(z, body, member_of_buf, e->a);
  KExpr *b = subst(z, body, member_of_buf, e->b);
  KExpr *c = subst(z, body, member_of_buf, e->c);
  if (e->kind == KE_LOAD && member_of_buf[e->buf] >= 0)
    return value_at(z, body, member_of_buf[e->buf], a);
  if (a == e->a && b == e->b && c == e->c)
    return e;
  KExpr *r = arena_alloc(z->k->arena, sizeof *r);
  *r = *e;
  r->a = a, r->b = b, r->c = c;
  return r;
}

/* Rewrites the statements of block s: the decls a statement's rewrite
 * needs go just before it, in the same block. */
static void subst_block(Fz *z, const int *member_of_buf, KStmt *s) {
  Kernel *k = z->k;
  KStmt **old = s->body;
  int n_old = s->n_body;
  s->body = NULL;
  s->n_body = s->cap_body = 0;
  for (int i = 0; i < n_old; i++) {
    KStmt *c = old[i];
    c->extent = subst(z, s, member_of_buf, c->extent);
    c->index = subst(z, s, member_of_buf, c->index);
    c->value = subst(z, s, member_of_buf, c->value);
    c->cond = subst(z, s, member_of_buf, c->cond);
    if (c->kind == KS_BLOCK || c->kind == KS_LOOP || c->kind == KS_IF)
      subst_block(z, member_of_buf, c);
    ks_add(k, s, c);
  }
}

/* Renumbers buffers: the group's inputs, then its outputs; member buffers go. */
static void renumber(Kernel *k, KExpr *e, const int *to) {
  if (!e)
    return;
  if (e->kind == KE_LOAD)
    e->buf = to[e->buf];
  renumber(k, e->a, to), renumber(k, e->b, to), renumber(k, e->c, to);
}

static void renumber_stmt(Kernel *k, KStmt *s, const int *to) {
  renumber(k, s->extent, to), renumber(k, s->index, to), renumber(k, s->value, to);
  renumber(k, s->cond, to);
  if (s->kind == KS_STORE)
    s->buf = to[s->buf];
  for (int i = 0; i < s->n_body; i++)
    renumber_stmt(k, s->body[i], to);
}

static Kernel *lower_other_group(Arena *a, Fz *z) {
  const Node *anchor = z->members[z->n - 1];
  Kernel *k = lower_node(a, anchor);
  k->name = fused_name(a, z->members, z->n);
  k->members = z->members;
  k->n_members = z->n;
  z->k = k;
  int n_old = k->n_bufs;
  int *member_of_buf = arena_alloc(a, sizeof(int) * (size_t)(n_old + 1));
  for (int b = 0; b < n_old; b++) {
    int mi = -1;
    for (int m = 0; m < z->n - 1; m++)
      if (k->bufs[b].node == z->members[m]->id)
        mi = m;
    member_of_buf[b] = mi;
  }
  subst_block(z, member_of_buf, k->body);
  /* new order: kept inputs and the inputs members added, then the rest */
  int *to = arena_alloc(a, sizeof(int) * (size_t)(k->n_bufs + 1));
  KBuf *bufs = arena_alloc(a, sizeof(KBuf) * (size_t)(k->n_bufs + 1));
  int n = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int b = 0; b < k->n_bufs; b++) {
      if (b < n_old && member_of_buf[b] >= 0) {
        to[b] = -1;
        continue;
      }
      if ((k->bufs[b].role == KB_IN) == (pass == 0)) {
        to[b] = n;
        bufs[n++] = k->bufs[b];
      }
    }
  renumber_stmt(k, k->body, to);
  k->bufs = bufs;
  k->n_bufs = k->cap_bufs = n;
  return k;
}

/* The head's own kernel, its output made the group's (the anchor's), as
 * the start of the group's kernel. */
static Kernel *head_kernel(Arena *a, Fz *z) {
  const Node *head = z->members[z->head], *anchor = z->members[z->n - 1];
  Kernel *k = lower_node(a, head);
  k->name = fused_name(a, z->members, z->n);
  k->members = z->members;
  k->n_members = z->n;
  k->node = anchor;
  k->head = head;
  k->n_head = k->body->n_body;
  KBuf *out = &k->bufs[head->n_in];
  ASSERT(out->role == KB_OUT && out->node == head->id && out->numel == shape_numel(&anchor->shape));
  out->node = anchor->id;
  out->name = "out";
  for (int b = 0; b < head->n_in; b++) /* a unique name that buf_of will not give an input */
    if (strcmp(k->bufs[b].name, "out") == 0)
      k->bufs[b].name = "out_in";
  z->out = head->n_in;
  return k;
}

/* Whether an elementwise group is a row group (passes/fuse.c, kind row):
 * a member, not one element, of another shape than the anchor's (a value
 * per row, or a reduction over rows). */
static bool row_group(Node *const *members, int n) {
  for (int m = 0; m < n - 1; m++)
    if (!lower_view(members[m]->op) && !lower_gemm_head(members[m]->op) &&
        shape_numel(&members[m]->shape) != 1 &&
        !shape_eq(&members[m]->shape, &members[n - 1]->shape))
      return true;
  return false;
}

Kernel *lower_fused(Arena *a, Node *const *members, const bool *stored, int n, bool eltwise) {
  if (!eltwise && lower_scatter_members(members, n))
    return lower_scatter_group(a, members, stored, n);
  if (eltwise && row_group(members, n))
    return lower_row_group(a, members, stored, n);
  Fz z = {NULL, members, stored, n, NULL, NULL, -1, -1};
  z.buf = arena_alloc(a, sizeof(int) * (size_t)n);
  z.val = arena_alloc(a, sizeof(KExpr *) * (size_t)n);
  for (int m = 0; m < n - 1; m++) {
    if (lower_gemm_head(members[m]->op) && eltwise && z.head < 0)
      z.head = m;
    else
      ASSERT(lower_fusable(members[m]->op) || (eltwise && lower_eltwise_only(members[m]->op)));
  }
  if (!eltwise)
    return lower_other_group(a, &z);
  z.k = z.head >= 0 ? head_kernel(a, &z) : lw_fused_kernel(a, members, n);
  /* inputs first (in order of first use), then the outputs */
  for (int m = 0; m < n; m++)
    for (int j = 0; j < members[m]->n_in; j++)
      if (member_index(&z, members[m]->in[j]) < 0)
        lw_buf_of(z.k, members[m]->in[j], KB_IN);
  for (int m = 0; m < n; m++)
    z.buf[m] = m == z.head ? -1 : stored[m] || m == n - 1 ? lw_buf_of(z.k, members[m], KB_OUT) : -1;
  return lower_eltwise_group(&z);
}
