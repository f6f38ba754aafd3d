/*
 * fuse.c: which nodes share a kernel (seed 002, section 7.3.3: folding
 * is legal only when the folded intermediates are needed nowhere else;
 * 7.3.6: fused kernels are where the time goes back).
 *
 * Nodes are visited from the last to the first.  Each either joins the
 * group of its consumers or starts a group of its own, as its anchor.  A
 * node joins when
 *   - every node that reads it is in one group G (so its value is needed
 *     nowhere else, the backward pass included, and no cycle can form:
 *     any path out of it runs through G);
 *   - it is elementwise (ir/lower_fuse.c: lower_fusable), computed by the
 *     same step function (both weight-derived or neither);
 *   - G takes it: an elementwise anchor when each of its readers in G has
 *     its shape or it has one element (then one loop computes the whole
 *     group; kind eltwise), or an anchor whose generic lowering can load a
 *     formula instead of a buffer (reductions, softmax, the loss, data
 *     movement; kind reduce), its readers' shapes matching the same way
 *     and none of its inputs broadcast (the anchor loads at an index of
 *     its own; a broadcast input's index would take a division there);
 *   - it is not a result of the step (an output, the loss, an update
 *     value), unless G is elementwise (kind multi: it becomes one more
 *     output of G's loop, as the optimizer's m, v and p of one parameter).
 * A slice may join an elementwise G too, as a strided view of its input
 * (which then cannot join: it is read at other places than its element).
 * A matmul or convolution of G's shape may join an elementwise G as its
 * head (kind epilogue), not a result, one per group; nothing it reads may
 * join after it (it reads its inputs from memory, in its own schedule).
 * A row group (kind row) is an elementwise G of shape S (no matmul head,
 * no slice) over rows P: S with some axes made 1, the innermost among them
 * (a row is the elements sharing the other, kept, axes: layer norm's rows
 * are S's last axis, P = [..., 1]; batch norm's are channels of NCHW, P =
 * [1, C, 1, 1], each row N strided runs of H*W), more than one row of more
 * than one element.  The first node that gives G rows fixes P; G takes
 *   - elementwise nodes of shape P (values per row) read by members,
 *     broadcast along the rows;
 *   - sums, means and maxima of a value of shape S over P's reduced axes,
 *     keepdims (shape P), and the elementwise nodes of shape S they read;
 *   - a value other kernels read too (the backward pass, a residual add),
 *     when G is the first of its readers' kernels to run: it joins G as a
 *     stored output, computed once per row where it was stored before.
 *     Every kernel reading it runs later (its anchor's id is higher), so no
 *     cycle forms; not with --schedule=min-memory, whose order of nodes
 *     could put one of those readers before G's anchor.  Kernels reading
 *     it that would run before G (batch norm's running statistics read
 *     the mean and variance) are moved to run right after G instead
 *     (FuseGroup.after) when nothing G needs comes from them and nothing
 *     between reads their values (deferrable).
 * Each reduction re-evaluates the elementwise members it reads, so over
 * strided rows a group chains two reductions at most (Fuser.depth): an
 * elementwise node reading values per row does not join when two
 * reductions already lie below it (two batch norms in a row make two row
 * kernels, cut at x - mean times rsqrt, not one recomputing the first
 * normalization in each pass of the second).
 * ir/lower_row.c computes each row's reductions, then its elementwise
 * values, in one pass of a parallel loop over the rows.
 * A scatter group (kind scatter) is an add_n whose inputs are slice_backs
 * (a split's or slices' gradients), each read by the add_n alone (once),
 * their regions pairwise disjoint, all f32: it is an anchor of its own
 * (it joins no reader's group) and takes
 *   - its slice_backs: the kernel stores each one's gradient into its
 *     region (and zeros where no region is), so none of them is
 *     materialized as a zero-filled tensor of the whole shape;
 *   - the elementwise nodes (and reshapes) computing a slice's gradient,
 *     read only in the group, their readers of their shape (or they of one
 *     element), their inputs not broadcast: formulas in that slice's loop.
 * ir/lower_scatter.c writes one loop nest per slice.
 * A derivative of gelu that passes/deriv.c took out of the backward pass
 * (kind deriv: gelu_back(1, x), placed just before gelu(x)) joins the
 * gelu's group as a stored output, ahead of any other rule, when that
 * group is an elementwise loop of its shape and runs before all its
 * readers: it reads only x, which the gelu reads too (deriv_target).
 * Since a group's founder is its highest id and every member reaches it
 * (a derivative beside gelu and a row group's stored values aside: they
 * read nothing made after the anchor, and their readers run later),
 * placing the group at its anchor's place in any topological order of the
 * nodes is again one (pass_schedule does so).
 *
 * Where a computed value ends its group, why[] says why, in words a user
 * can act on (kiln show --stage fused prints them).
 */
#include <string.h>

#include "kir.h"
#include "passes.h"

static const char *const kinds[] = {"eltwise", "reduce", "multi", "epilogue", "fold",    "row",
                                    "scatter", "deriv",  "view",  "batchsum", "const"};

static bool *kind_off(FuseOpts *o, int i) {
  bool *off[] = {&o->no_eltwise, &o->no_reduce, &o->no_multi,   &o->no_epilogue,
                 &o->no_fold,    &o->no_row,    &o->no_scatter, &o->no_deriv,
                 &o->no_view,    &o->no_batchsum, &o->no_const};
  return off[i];
}

bool fuse_opts_parse(const char *s, FuseOpts *o) {
  if (strcmp(s, "all") == 0) {
    *o = (FuseOpts){0};
    return true;
  }
  *o = FUSE_NONE;
  if (strcmp(s, "none") == 0)
    return true;
  while (*s) {
    size_t len = strcspn(s, ",");
    int i = 0;
    while (i < countof(kinds) && (strlen(kinds[i]) != len || strncmp(s, kinds[i], len) != 0))
      i++;
    if (i == countof(kinds))
      return false;
    *kind_off(o, i) = false;
    s += len;
    if (*s == ',' && *++s == '\0')
      return false;
  }
  return true;
}

/* (The text is valid until the next call.) */
const char *fuse_opts_text(const FuseOpts *o) {
  static char text[96];
  FuseOpts c = *o;
  size_t len = 0;
  int on = 0;
  text[0] = '\0';
  for (int i = 0; i < countof(kinds); i++)
    if (!*kind_off(&c, i))
      len += (size_t)snprintf(text + len, sizeof text - len, "%s%s", on++ ? "," : "", kinds[i]);
  return on == countof(kinds) ? "all" : on == 0 ? "none" : text;
}

typedef struct Fuser {
  const Graph *g;
  Plan *p;
  Users us;
  const bool *live, *result;
  int **members; /* per group: member ids, in the order they joined (decreasing) */
  int *n_members, *cap_members;
  int *head;     /* per group: its matmul or convolution's id, or -1 */
  bool *row;     /* per group: kind row (a member broadcast along its rows, or a reduction) */
  Shape *P;      /* per row group: its rows (the anchor's shape, reduced axes made 1) */
  int *defer;    /* per group: the group it runs right after (deferrable), or -1 */
  int *n_defer;  /* per group: how many groups run right after it */
  int *depth;    /* per node: the most reductions on a path from it to its group's anchor
                    (itself included); a strided row group chains two at most */
  bool *scatter; /* per group: kind scatter (an add_n of disjoint slice_backs) */
  const char **no_scatter; /* per group with an add_n anchor: why it is not a scatter group */
} Fuser;

/* Where group gi runs: at its anchor, or right after the group it follows. */
static int64_t run_pos(const Fuser *f, int gi) {
  int to = f->defer[gi];
  return to < 0 ? 2 * (int64_t)f->members[gi][0] : 2 * (int64_t)f->members[to][0] + 1;
}

static Node *anchor_of(const Fuser *f, int gi) { return f->g->nodes[f->members[gi][0]]; }

static void add_member(Fuser *f, int gi, int id) {
  Arena *a = f->g->arena;
  if (f->n_members[gi] == f->cap_members[gi]) {
    int cap = f->cap_members[gi] ? 2 * f->cap_members[gi] : 4;
    int *m = arena_alloc(a, sizeof(int) * (size_t)cap);
    if (f->n_members[gi])
      memcpy(m, f->members[gi], sizeof(int) * (size_t)f->n_members[gi]);
    f->members[gi] = m;
    f->cap_members[gi] = cap;
  }
  f->members[gi][f->n_members[gi]++] = id;
  f->p->group[id] = gi;
}

static const char *shape_text(Arena *a, const Shape *s) {
  char buf[160];
  shape_str(s, buf, sizeof buf);
  return arena_strndup(a, buf, strlen(buf));
}

/* The one group every live reader of n is in, or -1 (why says why); in
 * *first the group of its readers that runs first. */
static int readers_group(Fuser *f, const Node *n, const char **why, int *first) {
  Arena *a = f->g->arena;
  int gi = -1, n_groups = 0, n_readers = 0;
  bool backward = false;
  *first = -1;
  int *seen = arena_alloc(a, sizeof(int) * (size_t)(f->us.off[n->id + 1] - f->us.off[n->id] + 1));
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++) {
    const Node *u = f->us.list[k];
    if (!f->live[u->id])
      continue;
    n_readers++;
    backward |= u->is_backward && !n->is_backward;
    int ug = f->p->group[u->id];
    bool known = false;
    for (int s = 0; s < n_groups; s++)
      known |= seen[s] == ug;
    if (!known)
      seen[n_groups++] = ug;
    gi = ug;
    if (*first < 0 || run_pos(f, ug) < run_pos(f, *first))
      *first = ug;
  }
  if (n_readers == 0) {
    *why = f->result[n->id] ? "a result of the step" : NULL;
    return -1;
  }
  if (n_groups > 1) {
    *why = arena_fmt(a, "read by %d kernels%s", n_groups,
                     backward ? " (the backward pass needs it)" : "");
    return -1;
  }
  return gi;
}

/* --- kind row: reductions over rows and their consumers ------------------- */

static bool is_leaf(const Node *n) { return op_info[n->op].cls == CL_LEAF; }

static bool is_reduction(Op op) { return op == OP_SUM || op == OP_MEAN || op == OP_MAX; }

/* Kind const: whether constant c becomes a literal in the kernels reading
 * it.  One element (an f32 or i32 scalar, of any rank), not a result of the
 * step nor weight-derived (the prepare step stores those for the step to
 * read), and every reader elementwise: a kernel computes an elementwise
 * node from loads of its inputs (ir/lower*.c), and program.c turns the
 * loads of c into the literal.  (A matmul, convolution or pooling reads its
 * operands through pointers in codegen's own schedules, so a constant one
 * of them reads keeps its kernel and buffer.) */
static bool literal_const(const Fuser *f, const Node *c) {
  if (c->op != OP_CONST || shape_numel(&c->shape) != 1 || f->result[c->id] || c->derived ||
      (c->dtype != DT_F32 && c->dtype != DT_I32))
    return false;
  for (int k = f->us.off[c->id]; k < f->us.off[c->id + 1]; k++) {
    const Node *r = f->us.list[k];
    if (f->live[r->id] && !lower_fusable(r->op))
      return false;
  }
  return true;
}

/* Whether P is a shape of rows of S: S with some axes made 1 (the reduced
 * ones), the innermost among them, more than one row. */
static bool row_shape(const Shape *S, const Shape *P) {
  if (P->rank != S->rank || S->rank == 0 || S->dim[S->rank - 1] < 2 ||
      P->dim[P->rank - 1] != 1 || shape_numel(P) < 2)
    return false;
  for (int d = 0; d < S->rank; d++)
    if (P->dim[d] != 1 && P->dim[d] != S->dim[d])
      return false;
  return true;
}

/* The rows n would make group gi's when it is not a row group yet: the
 * shape of n if it is a keepdims reduction of a value of shape S, or an
 * elementwise value of another shape, else of a computed value n reads;
 * false if none is a shape of rows. */
static bool row_candidate(const Node *n, const Shape *S, Shape *P) {
  if ((is_reduction(n->op) && n->n_in == 1 && shape_eq(&n->in[0]->shape, S)) ||
      (lower_fusable(n->op) && !shape_eq(&n->shape, S) && shape_numel(&n->shape) > 1)) {
    *P = n->shape;
    return row_shape(S, P);
  }
  for (int j = 0; j < n->n_in; j++)
    if (!is_leaf(n->in[j]) && row_shape(S, &n->in[j]->shape)) {
      *P = n->in[j]->shape;
      return true;
    }
  return false;
}

/* Whether group gi may be a row group: an elementwise anchor, no matmul
 * head, no slice or reshape. */
static bool row_capable(const Fuser *f, int gi) {
  const Node *anchor = anchor_of(f, gi);
  if (!lower_fusable(anchor->op) || f->head[gi] >= 0 || f->scatter[gi] ||
      anchor->shape.rank == 0)
    return false;
  for (int m = 0; m < f->n_members[gi]; m++) {
    const Node *v = f->g->nodes[f->members[gi][m]];
    if (lower_eltwise_only(v->op) || deriv_is_shared(v))
      return false; /* a derivative beside gelu is computed per element, not per row */
  }
  return true;
}

/* The rows of group gi (row_capable): its anchor's shape S and P, S with
 * the reduced axes made 1 (the group's, or those n would make it); false
 * if n gives it no rows. */
static bool row_shapes(const Fuser *f, int gi, const Node *n, Shape *S, Shape *P) {
  *S = *P = anchor_of(f, gi)->shape;
  if (f->row[gi]) {
    *P = f->P[gi];
    return true;
  }
  return row_candidate(n, S, P);
}

/* Whether P's rows are strided in S: a kept axis inside a reduced one. */
static bool strided_rows(const Shape *S, const Shape *P) {
  bool reduced = false;
  for (int d = 0; d < S->rank; d++) {
    if (P->dim[d] != S->dim[d])
      reduced = true;
    else if (S->dim[d] > 1 && reduced)
      return true;
  }
  return false;
}

/* Strided rows of fewer contiguous elements than this, whose runs are a
 * multiple of 4 KiB apart, are not fused (row_refuse). */
enum { STRIDED_RUN_MIN = 128 };

/* Whether S's strided rows P (strided_rows) are short runs at a spacing of
 * a multiple of 4 KiB: all of a row's runs then fall into the same few
 * cache sets, and the row kernel's second and third passes over them miss
 * L1 (a batchnorm over [32, 64, 8, 8]: 1.6x slower than the unfused
 * kernels, which stream; [32, 66, 8, 8], 1.13x faster; docs/fusion.md). */
static bool aliased_runs(const Shape *S, const Shape *P, int64_t elem, int64_t *run,
                         int64_t *gap) {
  int d = S->rank - 1;
  *run = 1;
  for (; d >= 0 && (P->dim[d] != S->dim[d] || S->dim[d] == 1); d--)
    *run *= S->dim[d];
  *gap = *run;
  for (; d >= 0 && P->dim[d] == S->dim[d]; d--)
    *gap *= S->dim[d];
  return *run < STRIDED_RUN_MIN && (*gap * elem) % 4096 == 0;
}

/* Whether n reads a computed value of shape P (per row). */
static bool reads_row_value(const Node *n, const Shape *P) {
  for (int j = 0; j < n->n_in; j++)
    if (!is_leaf(n->in[j]) && shape_eq(&n->in[j]->shape, P))
      return true;
  return false;
}

/* The depth n would have in group gi (Fuser.depth): one more than its
 * deepest reader's there if it is a reduction. */
static int depth_in(const Fuser *f, const Node *n, int gi) {
  int d = 0;
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++) {
    const Node *u = f->us.list[k];
    if (f->live[u->id] && f->p->group[u->id] == gi && f->depth[u->id] > d)
      d = f->depth[u->id];
  }
  return d + is_reduction(n->op);
}

/* A sum, mean or max of an input of shape S over the axes P makes 1, keepdims. */
static bool row_reduction(const Node *n, const Shape *S, const Shape *P) {
  return is_reduction(n->op) && n->n_in == 1 && shape_eq(&n->in[0]->shape, S) &&
         shape_eq(&n->shape, P);
}

/* Strided rows over an anchor of more bytes than this are not fused
 * (row_refuse).  A row kernel walks each row's runs (a channel's images)
 * once per pass; from a tensor this large its first pass streams from
 * beyond L2 a page-sized run at a time, and the unfused kernels' loops,
 * contiguous over the whole tensor, were faster: a training batchnorm
 * over [32, 64, 32, 32] (8 MiB) 1.2-1.5x, [16, 64, 32, 32] (4 MiB)
 * 1.0-1.3x, at 1 and 2 threads; at 2 MiB ([8, 64, 32, 32], [32, 64, 16,
 * 16]) the row kernel ties or wins (docs/fusion.md). */
enum { STRIDED_ROWS_MAX_BYTES = 2 << 20 };

/* Whether n may join group gi as a row group's member; NULL if so, else
 * why not (the group's rows, if it takes n, in *P).  *telling: whether the
 * reason is the row kind's own (the node would fit a row group), rather
 * than the node or group being of a kind rows never take. */
static const char *row_refuse(Fuser *f, const Node *n, int gi, bool *telling, Shape *P) {
  Arena *a = f->g->arena;
  const Node *anchor = anchor_of(f, gi);
  Shape S;
  *telling = false;
  if (!row_capable(f, gi) || (!is_reduction(n->op) && !lower_fusable(n->op)))
    return arena_fmt(a, "%s makes a kernel of its own", op_name(n->op));
  if (!row_shapes(f, gi, n, &S, P)) {
    if (!is_reduction(n->op))
      return "no reduction over rows reads it"; /* only rows' values make a row group */
    *telling = true;
    return arena_fmt(a, "%s does not reduce the innermost axis of %s's %s (keepdims), as row "
                        "fusion needs", op_name(n->op), anchor->name, shape_text(a, &S));
  }
  if (!f->row[gi] && strided_rows(&S, P)) { /* where a strided row kernel would be slower */
    int64_t run, gap, elem = (int64_t)rt_dtype_size(anchor->dtype);
    int64_t bytes = shape_numel(&S) * elem;
    const char *why = NULL;
    if (aliased_runs(&S, P, elem, &run, &gap))
      why = arena_fmt(a, "%s's rows %s are runs of %lld elements %lld apart: short runs at a "
                         "multiple of 4 KiB share cache sets, and a row kernel would be slower",
                      anchor->name, shape_text(a, P), (long long)run, (long long)gap);
    else if (bytes > STRIDED_ROWS_MAX_BYTES)
      why = arena_fmt(a, "%s's strided rows %s span %lld KiB: over %d KiB, a row kernel's "
                         "passes over their runs are slower than unfused kernels' contiguous "
                         "loops",
                      anchor->name, shape_text(a, P), (long long)(bytes >> 10),
                      STRIDED_ROWS_MAX_BYTES >> 10);
    if (why) {
      *telling = true;
      return why;
    }
  }
  if (strided_rows(&S, P) && depth_in(f, n, gi) >= 2 && reads_row_value(n, P)) {
    *telling = true; /* each reduction re-evaluates the elementwise values it reads */
    return arena_fmt(a, "it reads values per row and %d reductions over %s's strided rows %s "
                        "read it: a third in a chain would recompute the ones before it",
                     depth_in(f, n, gi), anchor->name, shape_text(a, P));
  }
  if (is_reduction(n->op) && !row_reduction(n, &S, P)) {
    *telling = true;
    return arena_fmt(a, "%s does not make %s's rows %s of %s (keepdims), as row fusion needs",
                     op_name(n->op), anchor->name, shape_text(a, P), shape_text(a, &S));
  }
  bool elem = lower_fusable(n->op) &&
              (shape_eq(&n->shape, &S) || shape_eq(&n->shape, P) || shape_numel(&n->shape) == 1);
  if (!elem && !row_reduction(n, &S, P))
    return arena_fmt(a, "%s makes a kernel of its own", op_name(n->op));
  *telling = true;
  if (n->derived != anchor->derived)
    return "weight-derived: computed once by the prepare step, not every step";
  if (f->result[n->id] && f->p->opts.fuse.no_multi)
    return "a result of the step (multi-output fusion is off, --fuse)";
  if (f->p->opts.fuse.no_row)
    return "row fusion is off (--fuse)";
  return NULL;
}

/* Whether n, read by other kernels too, may join group gi (the first of
 * them to run) as a stored output; NULL if so, else why not. */
static const char *row_refuse_shared(Fuser *f, const Node *n, int gi, bool *telling,
                                     Shape *P) {
  const char *why = row_refuse(f, n, gi, telling, P);
  if (why)
    return why;
  if (f->p->opts.min_memory) /* its readers could run before the group's anchor */
    return "read by other kernels, which --schedule=min-memory may run before its row kernel";
  return NULL;
}

/* Whether n may lead group gi's epilogue; NULL if so, else why not. */
static const char *refuse_head(Fuser *f, const Node *n, int gi) {
  const Node *anchor = anchor_of(f, gi);
  Arena *a = f->g->arena;
  if (!lower_fusable(anchor->op) || f->head[gi] >= 0 || n->dtype != DT_F32)
    return arena_fmt(a, "%s makes a kernel of its own", op_name(n->op));
  if (f->row[gi])
    return arena_fmt(a, "%s makes a kernel of its own (a row kernel reduces rows first)",
                     op_name(n->op));
  if (f->p->opts.fuse.no_epilogue)
    return "epilogue fusion is off (--fuse)";
  if (f->result[n->id])
    return arena_fmt(a, "a result of the step, and %s's epilogue writes one", op_name(n->op));
  if (!shape_eq(&n->shape, &anchor->shape))
    return arena_fmt(a, "its shape %s differs from its epilogue's %s",
                     shape_text(a, &n->shape), shape_text(a, &anchor->shape));
  return NULL;
}

/* --- kind scatter: an add_n of slice_backs of disjoint regions ------------- */

/* Whether the positions b + i s (0 <= i < n) of two slices along one axis
 * meet (s >= 1: slice_back's attributes are normalized). */
static bool axis_meets(int64_t b1, int64_t s1, int64_t n1, int64_t b2, int64_t s2, int64_t n2) {
  if (n1 == 0 || n2 == 0 || b1 + (n1 - 1) * s1 < b2 || b2 + (n2 - 1) * s2 < b1)
    return false;
  for (int64_t i = 0; i < n1; i++) {
    int64_t d = b1 + i * s1 - b2;
    if (d >= 0 && d % s2 == 0 && d / s2 < n2)
      return true;
  }
  return false;
}

/* Whether the regions slice_backs x and y write their gradients to overlap. */
static bool regions_meet(const Node *x, const Node *y) {
  for (int d = 0; d < x->shape.rank; d++)
    if (!axis_meets(x->at.begin[d], x->at.step[d], x->in[0]->shape.dim[d], y->at.begin[d],
                    y->at.step[d], y->in[0]->shape.dim[d]))
      return false;
  return x->shape.rank > 0 || (shape_numel(&x->shape) > 0 && shape_numel(&y->shape) > 0);
}

/* The number of live reads of n (one per input slot of each reader). */
static int live_reads(const Fuser *f, const Node *n, const Node **only) {
  int reads = 0;
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++)
    if (f->live[f->us.list[k]->id]) {
      *only = f->us.list[k];
      reads++;
    }
  return reads;
}

/* Whether add_n v makes a scatter group; NULL if so, else why not. */
static const char *scatter_refuse(const Fuser *f, const Node *v) {
  Arena *a = f->g->arena;
  if (v->dtype != DT_F32)
    return arena_fmt(a, "%s is not f32", v->name);
  for (int j = 0; j < v->n_in; j++) {
    const Node *x = v->in[j], *only = NULL;
    if (x->op != OP_SLICE_BACK)
      return arena_fmt(a, "%s also adds a %s (scatter takes slice_backs only)", v->name,
                       op_name(x->op));
    if (x->dtype != DT_F32 || x->derived != v->derived)
      return arena_fmt(a, "%s is not an f32 value of %s's step function", x->name, v->name);
    if (live_reads(f, x, &only) != 1 || f->result[x->id])
      return arena_fmt(a, "%s is needed elsewhere than once in %s", x->name, v->name);
  }
  if (f->p->opts.fuse.no_scatter)
    return "scatter fusion is off (--fuse)";
  for (int i = 0; i < v->n_in; i++)
    for (int j = 0; j < i; j++)
      if (regions_meet(v->in[i], v->in[j]))
        return arena_fmt(a, "the regions of %s and %s overlap (scatter needs disjoint slices)",
                         v->in[j]->name, v->in[i]->name);
  return NULL;
}

/* Whether n may join scatter group gi; NULL if so, else why not. */
static const char *scatter_member_refuse(const Fuser *f, const Node *n, int gi) {
  Arena *a = f->g->arena;
  const Node *anchor = anchor_of(f, gi);
  if (n->op == OP_SLICE_BACK) {
    const Node *only = NULL;
    return live_reads(f, n, &only) == 1 && only == anchor
               ? NULL
               : "slice_back makes a kernel of its own (its reader scatters other slices)";
  }
  if (!lower_fusable(n->op) && n->op != OP_RESHAPE)
    return arena_fmt(a, "%s makes a kernel of its own", op_name(n->op));
  if (n->derived != anchor->derived)
    return "weight-derived: computed once by the prepare step, not every step";
  if (f->result[n->id])
    return arena_fmt(a, "a result of the step, and %s's scatter kernel stores only the sum",
                     anchor->name);
  int64_t one = shape_numel(&n->shape) == 1;
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++) {
    const Node *u = f->us.list[k];
    if (!f->live[u->id] || one || u->op == OP_SLICE_BACK || u->op == OP_RESHAPE ||
        shape_eq(&u->shape, &n->shape))
      continue; /* read at its own element, or its one */
    return arena_fmt(a, "its shape %s is broadcast into %s's %s", shape_text(a, &n->shape),
                     u->name, shape_text(a, &u->shape));
  }
  for (int j = 0; j < n->n_in && n->op != OP_RESHAPE; j++) {
    const Node *x = n->in[j]; /* its index would take a division per load */
    if (shape_numel(&x->shape) != 1 && !shape_eq(&x->shape, &n->shape))
      return arena_fmt(a, "it broadcasts %s %s, and %s's scatter loop would divide per load",
                       x->name, shape_text(a, &x->shape), anchor->name);
  }
  return NULL;
}

/* Whether n may join group gi; NULL if so, else why not. */
static const char *refuse(Fuser *f, const Node *n, int gi) {
  const Plan *p = f->p;
  const FuseOpts *o = &p->opts.fuse;
  Arena *a = f->g->arena;
  const Node *anchor = anchor_of(f, gi);
  bool eltwise = lower_fusable(anchor->op), telling;
  Shape P;
  if (n->op == OP_SLICE_BACK && f->no_scatter[gi]) /* the add_n anchor that reads it */
    return arena_fmt(a, "slice_back makes a kernel of its own; %s", f->no_scatter[gi]);
  if (f->row[gi] && !lower_gemm_head(n->op))
    return row_refuse(f, n, gi, &telling, &P);
  if (n->derived != anchor->derived)
    return "weight-derived: computed once by the prepare step, not every step";
  if (f->head[gi] >= 0)
    for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++)
      if (f->us.list[k]->id == f->head[gi])
        return arena_fmt(a, "%s reads its inputs in a schedule of its own",
                         op_name(f->us.list[k]->op));
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++) /* a head too: it would */
    if (f->live[f->us.list[k]->id] && f->us.list[k]->op == OP_SLICE) /* have no buffer */
      return "slice reads it at other places than its own element";
  if (lower_gemm_head(n->op))
    return refuse_head(f, n, gi);
  if (lower_eltwise_only(n->op) && !eltwise)
    return arena_fmt(a, "%s joins elementwise kernels only", op_name(n->op));
  if (n->op == OP_RESHAPE && !shape_eq(&n->shape, &anchor->shape))
    return "reshape joins elementwise kernels of its own shape only";
  if (!lower_fusable(n->op) && !lower_eltwise_only(n->op))
    return arena_fmt(a, "%s makes a kernel of its own", op_name(n->op));
  if (!eltwise && !lower_takes_producers(anchor->op))
    return arena_fmt(a, "%s reads its inputs in a schedule of its own", op_name(anchor->op));
  if (eltwise ? o->no_eltwise : o->no_reduce)
    return eltwise ? "elementwise fusion is off (--fuse)" : "reduce fusion is off (--fuse)";
  if (f->result[n->id] && !eltwise)
    return arena_fmt(a, "a result of the step, and %s makes one output", op_name(anchor->op));
  for (int j = 0; j < n->n_in && !eltwise; j++) {
    const Node *x = n->in[j]; /* its index from the anchor's would take a division per load */
    if (shape_numel(&x->shape) != 1 && !shape_eq(&x->shape, &n->shape))
      return arena_fmt(a, "it broadcasts %s %s, and %s would recompute it at every load",
                       x->name, shape_text(a, &x->shape), op_name(anchor->op));
  }
  if (f->result[n->id] && o->no_multi)
    return "a result of the step (multi-output fusion is off, --fuse)";
  int64_t one = shape_numel(&n->shape) == 1;
  for (int k = f->us.off[n->id]; k < f->us.off[n->id + 1]; k++) {
    const Node *u = f->us.list[k];
    if (!f->live[u->id] || one || (u == anchor && !eltwise) || shape_eq(&u->shape, &n->shape))
      continue;
    if (u->op == OP_RESHAPE && f->p->group[u->id] == gi) {
      if (lower_view(n->op))
        continue; /* a slice reshaped: read at its own element, its index from its shape */
      return arena_fmt(a, "reshape %s reads it in another shape (a slice may join it, "
                          "%s not)", u->name, op_name(n->op));
    }
    return arena_fmt(a, "its shape %s is broadcast into %s's %s", shape_text(a, &n->shape),
                     u->name, shape_text(a, &u->shape));
  }
  return NULL;
}

enum { MAX_DEFER = 16 };

/* Adds group h to set[0..*n) if it is not there; false if the set is full. */
static bool set_add(int *set, int *n, int h) {
  for (int i = 0; i < *n; i++)
    if (set[i] == h)
      return true;
  if (*n == MAX_DEFER)
    return false;
  set[(*n)++] = h;
  return true;
}

/* Whether the kernels reading v that run before group gi can run right
 * after it instead (v, stored by gi, must be computed before they read
 * it): every group reading v or their values before gi runs, none of them
 * gi itself, all their members made after v (so nothing gi takes later
 * reads them), none following another group or followed already.  The
 * groups that will run right after gi in set[0..*n). */
static bool deferrable(const Fuser *f, const Node *v, int gi, int *set, int *n) {
  *n = 0;
  if (f->defer[gi] >= 0)
    return false;
  for (int k = f->us.off[v->id]; k < f->us.off[v->id + 1]; k++) {
    const Node *u = f->us.list[k];
    int ug = f->p->group[u->id];
    if (f->live[u->id] && ug != gi && run_pos(f, ug) < run_pos(f, gi) && !set_add(set, n, ug))
      return false;
  }
  for (int i = 0; i < *n; i++) {
    int h = set[i];
    if (f->defer[h] >= 0 || f->n_defer[h] > 0)
      return false;
    for (int m = 0; m < f->n_members[h]; m++) {
      int id = f->members[h][m];
      if (id <= v->id)
        return false;
      for (int k = f->us.off[id]; k < f->us.off[id + 1]; k++) {
        const Node *u = f->us.list[k];
        int ug = f->p->group[u->id];
        if (!f->live[u->id] || ug == h || run_pos(f, ug) > run_pos(f, gi))
          continue;
        if (ug == gi || !set_add(set, n, ug))
          return false;
      }
    }
  }
  return *n > 0;
}

/* A group v can join as a stored output: the first of its readers' kernels
 * to run (first), or a later one the kernels before it can follow. *P:
 * the group's rows; *n_set, set: the groups that must follow it. */
static int shared_target(Fuser *f, const Node *v, int first, const char **why, bool *telling,
                         Shape *P, int *set, int *n_set) {
  *n_set = 0;
  const char *no = row_refuse_shared(f, v, first, telling, P);
  if (!no)
    return first;
  for (int k = f->us.off[v->id]; k < f->us.off[v->id + 1]; k++) {
    const Node *u = f->us.list[k];
    int ug = f->p->group[u->id];
    bool t;
    if (!f->live[u->id] || ug == first || row_refuse_shared(f, v, ug, &t, P))
      continue;
    if (deferrable(f, v, ug, set, n_set))
      return ug;
  }
  *why = no;
  return -1;
}

/* --- kind deriv: gelu's derivative in gelu's kernel ---------------------- */

/* The group of the gelu whose derivative v is (passes/deriv.c), when v
 * may join it as a stored output: an elementwise group of v's shape, not
 * a row group, running before every kernel that reads v (v reads only x,
 * which that gelu reads too, so it can be computed there).  Else -1, and
 * *why says why (left alone when v is no such derivative). */
static int deriv_target(Fuser *f, const Node *v, const char **why) {
  if (!deriv_is_shared(v))
    return -1;
  const Node *y = deriv_gelu(&f->us, v->in[1], v->at.mode);
  if (!y || !f->live[y->id] || y->id < v->id)
    return -1;
  int gi = f->p->group[y->id];
  const Node *anchor = anchor_of(f, gi);
  if (f->p->opts.fuse.no_deriv) {
    *why = "computing gelu's derivative beside gelu is off (--fuse without deriv)";
    return -1;
  }
  if (!lower_fusable(anchor->op) || f->row[gi] || f->scatter[gi] || v->derived != anchor->derived ||
      !shape_eq(&v->shape, &anchor->shape)) {
    *why = arena_fmt(f->g->arena, "gelu %s's kernel (%s %s) is not an elementwise loop of its "
                                  "shape, so its derivative is computed where it is read",
                     y->name, anchor->name, shape_text(f->g->arena, &anchor->shape));
    return -1;
  }
  for (int k = f->us.off[v->id]; k < f->us.off[v->id + 1]; k++) {
    const Node *u = f->us.list[k];
    if (f->live[u->id] && run_pos(f, f->p->group[u->id]) <= run_pos(f, gi)) {
      *why = arena_fmt(f->g->arena, "%s reads it before gelu %s's kernel runs", u->name, y->name);
      return -1;
    }
  }
  return gi;
}

/* The group v joins, or -1 (*why says why); *shared when other kernels
 * read v too (it joins a row group as a stored output, or gelu's kernel:
 * kind deriv).  `scatters`: v is an add_n that leads a scatter group
 * (scatter_refuse). */
static int join(Fuser *f, const Node *v, bool scatters, const char **why, bool *shared) {
  int first, gi = readers_group(f, v, why, &first);
  bool telling;
  Shape P;
  *shared = false;
  int to = deriv_target(f, v, why);
  if (to >= 0) {
    *shared = true;
    *why = "gelu's derivative for the backward pass: computed in gelu's kernel, sharing its "
           "erf, and stored";
    return to;
  }
  if (scatters) {
    if (gi >= 0)
      *why = "an add_n of slices' gradients: it scatters them in a kernel of its own";
    return -1;
  }
  if (gi >= 0 && f->scatter[gi]) {
    *why = scatter_member_refuse(f, v, gi);
    return *why ? -1 : gi;
  }
  if (gi >= 0) {
    const char *no = refuse(f, v, gi);
    if (!no)
      return gi;
    const char *row_no =
        f->row[gi] || lower_gemm_head(v->op) ? no : row_refuse(f, v, gi, &telling, &P);
    if (!row_no) {
      f->row[gi] = true;
      f->P[gi] = P;
      return gi;
    }
    *why = row_no != no && telling ? row_no : no;
    return -1;
  }
  if (first < 0 || lower_gemm_head(v->op))
    return -1;
  int set[MAX_DEFER], n_set;
  const char *row_no = NULL;
  to = shared_target(f, v, first, &row_no, &telling, &P, set, &n_set);
  if (to >= 0) {
    f->row[to] = true;
    f->P[to] = P;
    *shared = true;
    for (int i = 0; i < n_set; i++)
      f->defer[set[i]] = to;
    f->n_defer[to] += n_set;
    *why = n_set ? arena_fmt(f->g->arena, "%s: stored by its row kernel, %d kernel%s reading it "
                                          "moved after that one", *why, n_set, n_set > 1 ? "s" : "")
                 : arena_fmt(f->g->arena, "%s: stored by its row kernel", *why);
    return to;
  }
  if (telling)
    *why = arena_fmt(f->g->arena, "%s; %s", *why, row_no);
  return -1;
}

/* The group's members in id order and the values it reads from outside. */
static void finish_group(Fuser *f, int gi) {
  Arena *a = f->g->arena;
  FuseGroup *G = &f->p->groups[gi];
  int n = f->n_members[gi];
  G->anchor = anchor_of(f, gi);
  G->row = f->row[gi];
  G->scatter = f->scatter[gi];
  G->eltwise = lower_fusable(G->anchor->op) && !G->scatter;
  G->head = f->head[gi] >= 0 ? f->g->nodes[f->head[gi]] : NULL;
  G->after = f->defer[gi] >= 0 ? anchor_of(f, f->defer[gi]) : NULL;
  G->n_members = n;
  G->members = arena_alloc(a, sizeof(Node *) * (size_t)n);
  for (int i = 0; i < n; i++) /* joined in decreasing id order */
    G->members[i] = f->g->nodes[f->members[gi][n - 1 - i]];
  for (int i = 0; i < n - 1; i++)
    G->views |= lower_view(G->members[i]->op);
  int cap = 0;
  for (int i = 0; i < n; i++)
    cap += G->members[i]->n_in;
  G->ins = arena_alloc(a, sizeof(Node *) * (size_t)(cap + 1));
  for (int i = 0; i < n; i++)
    for (int j = 0; j < G->members[i]->n_in; j++) {
      Node *x = G->members[i]->in[j];
      bool seen = f->p->group[x->id] == gi;
      for (int s = 0; s < G->n_ins && !seen; s++)
        seen = G->ins[s] == x;
      if (!seen)
        G->ins[G->n_ins++] = x;
    }
}

void pass_fuse(const Graph *g, Node *const *roots, int n_roots, Plan *p) {
  Arena *a = g->arena;
  int n = g->n_nodes;
  bool *live = arena_alloc(a, sizeof(bool) * (size_t)n);
  bool *result = arena_alloc(a, sizeof(bool) * (size_t)n);
  graph_live(g, roots, n_roots, live);
  for (int r = 0; r < n_roots; r++)
    result[roots[r]->id] = true;
  Fuser f = {.g = g, .p = p, .us = graph_users(g), .live = live, .result = result};
  f.head = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  f.row = arena_alloc(a, sizeof(bool) * (size_t)(n + 1));
  f.P = arena_alloc(a, sizeof(Shape) * (size_t)(n + 1));
  f.defer = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  f.n_defer = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  f.depth = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  for (int i = 0; i <= n; i++)
    f.defer[i] = -1;
  f.scatter = arena_alloc(a, sizeof(bool) * (size_t)(n + 1));
  f.no_scatter = arena_alloc(a, sizeof(char *) * (size_t)(n + 1));
  f.members = arena_alloc(a, sizeof(int *) * (size_t)(n + 1));
  f.n_members = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  f.cap_members = arena_alloc(a, sizeof(int) * (size_t)(n + 1));
  p->group = arena_alloc(a, sizeof(int) * (size_t)n);
  p->internal = arena_alloc(a, sizeof(bool) * (size_t)n);
  p->why = arena_alloc(a, sizeof(char *) * (size_t)n);
  for (int i = 0; i < n; i++)
    p->group[i] = -1;
  int n_groups = 0;
  for (int i = n - 1; i >= 0; i--) {
    Node *v = g->nodes[i];
    if (!live[i] || is_leaf(v))
      continue;
    const char *why = NULL, *no_scatter = v->op == OP_ADD_N ? scatter_refuse(&f, v) : NULL;
    bool shared, scatters = v->op == OP_ADD_N && !no_scatter;
    int gi = join(&f, v, scatters, &why, &shared);
    if (gi < 0) {
      gi = n_groups++;
      f.head[gi] = -1;
      p->why[i] = why;
      f.scatter[gi] = scatters;
      f.no_scatter[gi] = no_scatter;
    } else {
      p->internal[i] = !result[i] && !shared;
      p->why[i] = shared ? why : NULL;
      if (lower_gemm_head(v->op))
        f.head[gi] = i;
    }
    f.depth[i] = depth_in(&f, v, gi);
    add_member(&f, gi, i);
  }
  p->n_groups = n_groups;
  p->groups = arena_alloc(a, sizeof(FuseGroup) * (size_t)(n_groups + 1));
  /* number groups by their anchors' order (ids increasing), as scheduled */
  int *renum = arena_alloc(a, sizeof(int) * (size_t)(n_groups + 1));
  for (int gi = 0; gi < n_groups; gi++)
    renum[gi] = n_groups - 1 - gi;
  int **members = arena_alloc(a, sizeof(int *) * (size_t)(n_groups + 1));
  int *counts = arena_alloc(a, sizeof(int) * (size_t)(n_groups + 1));
  int *heads = arena_alloc(a, sizeof(int) * (size_t)(n_groups + 1));
  bool *rows = arena_alloc(a, sizeof(bool) * (size_t)(n_groups + 1));
  int *defer = arena_alloc(a, sizeof(int) * (size_t)(n_groups + 1));
  bool *scatters = arena_alloc(a, sizeof(bool) * (size_t)(n_groups + 1));
  for (int gi = 0; gi < n_groups; gi++) {
    members[renum[gi]] = f.members[gi];
    counts[renum[gi]] = f.n_members[gi];
    heads[renum[gi]] = f.head[gi];
    rows[renum[gi]] = f.row[gi];
    defer[renum[gi]] = f.defer[gi] >= 0 ? renum[f.defer[gi]] : -1;
    scatters[renum[gi]] = f.scatter[gi];
  }
  f.members = members;
  f.n_members = counts;
  f.head = heads;
  f.row = rows;
  f.defer = defer;
  f.scatter = scatters;
  for (int i = 0; i < n; i++)
    if (p->group[i] >= 0)
      p->group[i] = renum[p->group[i]];
  for (int gi = 0; gi < n_groups; gi++)
    finish_group(&f, gi);
  if (!p->opts.fuse.no_const)
    for (int i = 0; i < n; i++)
      p->internal[i] |= live[i] && literal_const(&f, g->nodes[i]);
}

Node *const *plan_reads(const Plan *p, const Node *n, int *count) {
  const FuseGroup *G = plan_group(p, n);
  if (!G || G->anchor != n) {
    *count = 0;
    return NULL;
  }
  *count = G->n_ins;
  return G->ins;
}
