/*
 * lower_scatter.c: the kernel of a scatter group (passes/fuse.c, kind
 * scatter): an add_n of slice_backs whose regions are disjoint, the
 * gradient of a split or of slices taken at several places.  Unfused, each
 * slice_back is a kernel that zero-fills a tensor of the whole shape and
 * stores its gradient into its region, and the add_n reads them all back;
 * the LSTM's gates split into four, at every time step, and its input
 * projection sliced at each of T steps, made that most of the backward
 * pass's memory traffic.  Here one kernel writes the sum once:
 *
 *   (zeros where no slice is: a loop nest per box of the output that no
 *    slice covers, found axis by axis; all of it if there are many)
 *   for each slice_back s, in the add_n's order:
 *     parallel for e over s's gradient: out[region(e)] = g(e) + 0
 *
 * where g(e) is the gradient's element: loaded, or computed from the
 * group's elementwise members (the formulas that made it, each its own
 * kernel's: lw_elt_value) at the same flat index, each member at most once
 * per element.
 *
 * Bits: the unfused add_n sums its inputs left to right in f32; at an
 * element of slice j the others are +0, and x + (+0) is x except that -0
 * becomes +0, so with two or more inputs the element is g + 0 (KO_ADD by
 * the constant 0, never folded: no fast-math), and with one input g
 * itself; +0 where no slice is.  The regions are disjoint (fuse.c checks),
 * so the loops may run in any order and in parallel.  The output is no
 * input's buffer (the group is not eltwise to passes/inplace.c): a later
 * slice's loop still reads inputs after earlier ones stored.
 */
#include <string.h>

#include "lower_internal.h"

typedef struct Sz {
  Kernel *k;
  Node *const *members;
  int n;
  KExpr **val; /* per member: its value at the current slice's element, or NULL */
  const Node **in;  /* the inputs loaded at the current slice's element, */
  KExpr **in_val;   /* their values (one load each) */
  int n_in;
} Sz;

static int member_of(const Sz *z, const Node *x) { return lw_member(z->members, z->n, x); }

/* Input x's value at the current slice's element: at e, or at 0 when it has
 * one element (members read their inputs at their own element or at their
 * one: fuse.c), loaded once per element. */
static KExpr *input_at(Sz *z, KStmt *body, const Node *x, KExpr *e) {
  Kernel *k = z->k;
  for (int i = 0; i < z->n_in; i++)
    if (z->in[i] == x)
      return z->in_val[i];
  KExpr *idx = shape_numel(&x->shape) == 1 ? IC(0) : e;
  z->in[z->n_in] = x;
  return z->in_val[z->n_in++] = lw_bind(k, body, "x", LOAD(lw_buf_of(k, x, KB_IN), idx));
}

/* Member m's value at flat index e of its shape (0 for one element); each
 * member computed once per element (decls into body). */
static KExpr *value_at(Sz *z, KStmt *body, int m, KExpr *e) {
  Kernel *k = z->k;
  const Node *v = z->members[m];
  if (z->val[m])
    return z->val[m];
  if (shape_numel(&v->shape) == 1)
    e = IC(0);
  KExpr **ops = arena_alloc(k->arena, sizeof(KExpr *) * (size_t)(v->n_in + 1));
  for (int j = 0; j < v->n_in; j++) {
    const Node *x = v->in[j];
    int mi = member_of(z, x);
    /* a reshape reads its input at its own flat index; the others have
     * their inputs' shape or read one element (fuse.c) */
    KExpr *idx = v->op == OP_RESHAPE ? e : lw_bcast_index(k, body, x, &v->shape, e);
    ops[j] = mi >= 0 ? value_at(z, body, mi, idx) : input_at(z, body, x, idx);
  }
  KExpr *r = v->op == OP_RESHAPE ? ops[0] : lw_elt_value(k, body, v, ops);
  return z->val[m] = lw_bind(k, body, "v", r);
}

/* Slice_back s's gradient into its region of out, as lower_slice_back's
 * second loop, the value plus 0 when the add_n has other inputs. */
static void scatter_slice(Sz *z, const Node *s, int out, bool plus_zero) {
  Kernel *k = z->k;
  const Shape *gy = &s->in[0]->shape;
  int64_t st[LW_OPS][MAX_RANK];
  if (shape_numel(gy) == 0)
    return;
  int64_t base = lw_slice_region(s, st);
  Nest ns;
  lw_nest(k, k->body, gy->rank, gy->dim, 2, st, NEST_MAP, &ns);
  KExpr *e = lw_bind(k, ns.body, "e", lw_at(k, &ns, 0, 0));
  memset(z->val, 0, sizeof(KExpr *) * (size_t)z->n);
  z->n_in = 0;
  int mi = member_of(z, s->in[0]);
  KExpr *g = mi >= 0 ? value_at(z, ns.body, mi, e) : input_at(z, ns.body, s->in[0], e);
  if (plus_zero)
    g = ADD(g, FC(0));
  ks_add(k, ns.body, ks_store(k, out, lw_at(k, &ns, 1, base), g));
}

/* --- zeros where no slice is ----------------------------------------------- */

enum { MAX_GAP_FILLS = 16 }; /* more gaps than this: one fill of the whole output */

/* A box of the output: [lo, hi) on each axis. */
typedef struct Box {
  int64_t lo[MAX_RANK], hi[MAX_RANK];
} Box;

/* Whether slice_back s stores at position x of axis d. */
static bool covers(const Node *s, int d, int64_t x) {
  int64_t b = s->at.begin[d], st = s->at.step[d];
  return x >= b && (x - b) % st == 0 && (x - b) / st < s->in[0]->shape.dim[d];
}

/* Appends to out the boxes of *box that none of the slices sum->in[set[i]]
 * covers, box's axes before d fixed, the others whole: axis d is cut into
 * runs of positions covered by the same slices, and each run's gaps are
 * found on the next axes.  False when there would be over MAX_GAP_FILLS. */
static bool gaps(Arena *a, const Node *sum, const int *set, int n_set, int d, Box *box, Box *out,
                 int *n_out) {
  if (n_set == 0) {
    if (*n_out == MAX_GAP_FILLS)
      return false;
    out[(*n_out)++] = *box;
    return true;
  }
  if (d == sum->shape.rank)
    return true; /* every axis of the point is some slice's */
  int64_t len = sum->shape.dim[d], start = 0;
  int *run = arena_alloc(a, sizeof(int) * (size_t)n_set), n_run = 0;
  int *at = arena_alloc(a, sizeof(int) * (size_t)n_set), n_at = 0;
  for (int64_t x = 0; x <= len; x++) {
    n_at = 0;
    for (int i = 0; i < n_set && x < len; i++)
      if (covers(sum->in[set[i]], d, x))
        at[n_at++] = set[i];
    bool same = x > 0 && x < len && n_at == n_run && memcmp(at, run, sizeof(int) * (size_t)n_at) == 0;
    if (x > 0 && !same) {
      box->lo[d] = start, box->hi[d] = x;
      if (!gaps(a, sum, run, n_run, d + 1, box, out, n_out))
        return false;
    }
    if (!same) {
      memcpy(run, at, sizeof(int) * (size_t)n_at);
      n_run = n_at, start = x;
    }
  }
  box->lo[d] = 0, box->hi[d] = len;
  return true;
}

/* Stores 0 over box b of out (sum's shape). */
static void fill_box(Kernel *k, const Node *sum, int out, const Box *b) {
  int64_t st[LW_OPS][MAX_RANK], dim[MAX_RANK], base = 0;
  lw_strides(&sum->shape, st[0]);
  for (int d = 0; d < sum->shape.rank; d++) {
    dim[d] = b->hi[d] - b->lo[d];
    base += b->lo[d] * st[0][d];
  }
  Nest ns;
  lw_nest(k, k->body, sum->shape.rank, dim, 1, st, NEST_MAP, &ns);
  ks_add(k, ns.body, ks_store(k, out, lw_at(k, &ns, 0, base), FC(0)));
}

/* Zeros where no slice stores: nothing when the slices cover the output
 * (they are disjoint, so when their sizes add up to it), else each gap's
 * box, or all of the output when there are many gaps. */
static void fill_uncovered(Kernel *k, const Node *sum, int out) {
  int64_t covered = 0, cnt = shape_numel(&sum->shape);
  for (int j = 0; j < sum->n_in; j++)
    covered += shape_numel(&sum->in[j]->in[0]->shape);
  if (covered == cnt || cnt == 0)
    return;
  int *all = arena_alloc(k->arena, sizeof(int) * (size_t)sum->n_in), n_out = 0;
  for (int j = 0; j < sum->n_in; j++)
    all[j] = j;
  Box box, out_boxes[MAX_GAP_FILLS];
  for (int d = 0; d < sum->shape.rank; d++)
    box.lo[d] = 0, box.hi[d] = sum->shape.dim[d];
  if (!gaps(k->arena, sum, all, sum->n_in, 0, &box, out_boxes, &n_out)) {
    n_out = 1;
    for (int d = 0; d < sum->shape.rank; d++)
      out_boxes[0].lo[d] = 0, out_boxes[0].hi[d] = sum->shape.dim[d];
  }
  for (int b = 0; b < n_out; b++)
    fill_box(k, sum, out, &out_boxes[b]);
}

bool lower_scatter_members(Node *const *members, int n) {
  for (int m = 0; m < n - 1; m++)
    if (members[m]->op == OP_SLICE_BACK)
      return members[n - 1]->op == OP_ADD_N;
  return false;
}

Kernel *lower_scatter_group(Arena *a, Node *const *members, const bool *stored, int n) {
  const Node *sum = members[n - 1];
  Sz z = {lw_fused_kernel(a, members, n), members, n, NULL, NULL, NULL, 0};
  Kernel *k = z.k;
  int cap = 1;
  for (int m = 0; m < n; m++)
    cap += members[m]->n_in;
  z.val = arena_alloc(a, sizeof(KExpr *) * (size_t)n);
  z.in = arena_alloc(a, sizeof(Node *) * (size_t)cap);
  z.in_val = arena_alloc(a, sizeof(KExpr *) * (size_t)cap);
  for (int m = 0; m < n - 1; m++) { /* inputs in order of first use, then the output */
    ASSERT(!stored[m]);
    for (int j = 0; j < members[m]->n_in; j++)
      if (member_of(&z, members[m]->in[j]) < 0)
        lw_buf_of(k, members[m]->in[j], KB_IN);
  }
  int out = lw_buf_of(k, sum, KB_OUT);
  fill_uncovered(k, sum, out);
  for (int j = 0; j < sum->n_in; j++) {
    ASSERT(sum->in[j]->op == OP_SLICE_BACK && member_of(&z, sum->in[j]) >= 0);
    scatter_slice(&z, sum->in[j], out, sum->n_in > 1);
  }
  return k;
}
