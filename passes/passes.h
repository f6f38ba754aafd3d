/*
 * passes.h: graph passes.  One pass per file, one public entry point each.
 *
 * Analyses that compute side tables are fill_*; transformations are
 * pass_* verbs; checkers are *_verify.  For now there is the verifier; the
 * autodiff, fusion, scheduling and memory-planning issues add theirs here.
 */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir.h"

/* Checks the graph's invariants independently of how it was built: ids are
 * dense and in order, every input precedes its user (topological order),
 * arities match the op table, each node's shape and dtype are what its
 * shape rule computes, names are unique, outputs are nodes of the graph.
 * Returns true, or false with a message in err. */
bool graph_verify(const Graph *g, char *err, size_t errlen);
/* Formats a verifier's complaint into err; returns false. */
bool verify_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- autodiff.c --- */
/* Appends the backward pass of the scalar `loss` with respect to
 * wrt[0..n_wrt) and returns their gradients in grads (a zero tensor where
 * the loss does not depend on one).  User errors (a non-scalar loss, an op
 * without a gradient on the way) raise through d. */
void pass_autodiff(Graph *g, Diag *d, Node *loss, Node *const *wrt, int n_wrt, Node **grads);

/* --- optimizer.c --- */
/* Appends the update of params[i] from grads[i] as nodes plus graph
 * updates; returns the learning-rate and step-counter inputs it made. */
void pass_optimizer(Graph *g, const TrainSpec *s, Node *const *params, Node *const *grads,
                    int n, Node **lr, Node **step);
/* Whether `name` is optimizer state ("p.exp_avg", ...) of a trainable
 * parameter p of g: what kiln train saves beside the parameters. */
bool optimizer_state_of(const Graph *g, const char *name);

/* --- train_step.c --- */
/* The whole training step in one graph: the training-mode forward graph,
 * its backward pass, the optimizer update. */
typedef struct TrainStep {
  Node *loss;
  Node *lr, *step;   /* inputs to feed every step (step counts from 1) */
  Node **params;     /* trainable parameters */
  Node **grads;
  int n_params;
  Node **roots;      /* what one step must compute: loss and update values */
  int n_roots;
} TrainStep;
void build_train_step(Graph *g, Diag *d, TrainStep *ts);
/* The train section's schedule in the runtime's terms (rt_data.h). */
struct RtSchedule train_schedule(const TrainSpec *s);

/* --- prepack.c --- */
/* In an inference graph (not built for training, no updates), rewrites
 * each matmul(x, w, tb=true) of a parameter w into matmul(x, wt) with wt
 * = transpose(w) a weight-derived node (Node.derived: computed once per
 * change of the parameters by a prepare step, kept in the persistent
 * region); then marks derived every node computed from parameters and
 * constants only (a batchnorm's running statistics turned into a scale).
 * Returns the number of matmuls rewritten plus nodes marked. */
int pass_prepack(Graph *g);

/* --- fold.c --- */
/* In an inference graph, rewrites each chain of per-channel add, sub and
 * mul by parameter-derived values after a conv2d (a batchnorm, the conv's
 * bias) into conv2d(x, W * S) + T: the scale folded into the weights.
 * Run before pass_prepack (which makes W * S and T weight-derived).
 * Changes the results' last bits.  Returns the number of chains folded. */
int pass_fold_affine(Graph *g);

/* --- deriv.c --- */
/* In a training graph, rewrites each gelu_back(dy, x) whose x a gelu reads
 * into dy * d, d = gelu_back(1, x) = gelu'(x) placed just before the gelu,
 * so that fusion (kind deriv) computes d in gelu's kernel, sharing its
 * erf, and stores it for the backward pass.  Same bits; node ids move.
 * Run on a training step's graph when the kind is on (cli_train_passes),
 * not for an unfused build: there d would be a kernel and a buffer more.
 * Returns the number rewritten. */
int pass_share_derivatives(Graph *g);
/* Whether d is such a derivative: gelu_back of the constant 1. */
bool deriv_is_shared(const Node *d);
/* The gelu of mode `mode` among x's readers (us: graph_users), or NULL. */
Node *deriv_gelu(const Users *us, const Node *x, int mode);

/* --- step_transpose.c --- */
/* In a training graph, rewrites each matmul(x, w, tb=true) of a
 * parameter matrix w that the GEMMs would pack more than once (192 rows
 * or more, or several matmuls) into matmul(x, transpose(w)), the
 * transpose a kernel of the step placed before the first (one per
 * weight): the GEMM then packs rows instead of gathering columns in every
 * block of rows.  Same bits; node ids move.  Returns the number of
 * matmuls rewritten. */
int pass_step_transposes(Graph *g);

/* --- view.c --- */
/* Rewrites matmul(transpose(x), ..) into a matmul reading x through the
 * transpose, and transpose(matmul(..)) (its only reader) into a matmul
 * writing through it (Attrs.view): no transpose kernel, the same bits.
 * Run after autodiff, before pass_step_transposes / pass_prepack, when
 * the kind is on.  Returns the number of transposes folded. */
int pass_matmul_views(Graph *g);
/* Whether n is a value the step hands out (an output, the loss, an update
 * value): a rewrite must leave its node as it is. */
bool pass_is_step_result(const Graph *g, const Node *n);
/* n becomes matmul m (its inputs) with attributes at: a node rewritten in
 * place keeps its id, name, shape and readers. */
void pass_become_matmul(const Graph *g, Node *n, const Node *m, const Attrs *at);

/* --- batchsum.c --- */
/* Rewrites sum(matmul(..), batch axes, keepdims) whose matmul it alone
 * reads into one matmul summing those axes (Attrs.bsum): the products are
 * never stored, the same bits.  Run after pass_matmul_views when the kind
 * is on.  Returns the number of sums folded. */
int pass_matmul_batch_sums(Graph *g);

/* --- memory planning: schedule.c, lifetime.c, inplace.c, memplan.c ---
 *
 * A Plan places every value the step computes (inputs, constants and node
 * results; not parameters or optimizer state, which live in a persistent
 * region of their own) at an offset in one arena:
 *   schedule   a topological order of the nodes the roots need
 *   lifetimes  first write and last read of each value in that order
 *              (inputs from the start; roots and update values to the end)
 *   in place   an elementwise op may write over an input it reads last
 *   offsets    buffers whose lifetimes are disjoint share bytes (best fit)
 */
enum { PLAN_ALIGN = 64 };

/* --- fuse.c: operator fusion (seed 002, sections 7.3.3 and 7.3.6) ---
 *
 * Groups the nodes a step computes into kernels.  Every computing node is
 * in exactly one group; a group is lowered to one Kernel IR loop nest
 * (ir/lower_fuse.c) whose anchor, the group's last node, gives it its
 * iteration space.  A node joins the group of its consumers when all of
 * them are in that one group, it is elementwise, and the kind of fusion is
 * on:
 *   eltwise  into an elementwise anchor: every member has the anchor's
 *            shape (or one element), so one loop computes them all;
 *   reduce   into a reduction, softmax, the loss or a data movement op:
 *            its value is recomputed where the anchor loads it;
 *   multi    a result of the step (an update value, an output) joins an
 *            elementwise group as an extra output: one kernel per
 *            optimizer update instead of one per formula;
 *   epilogue a matmul or convolution leads an elementwise group of its
 *            shape: it writes into the group's output, and the group's
 *            loop (bias, activation, residual add, scaling) runs over it
 *            in the same kernel;
 *   row      into an elementwise anchor over rows [..., L]: sums, means
 *            and maxima over a row's L elements (keepdims) join with the
 *            elementwise ops before and after them (layer norm: mean,
 *            x - mean, square, mean, rsqrt, scale and shift), computed
 *            one row at a time (ir/lower_row.c); a value other kernels
 *            read too (the backward pass) joins as a stored output;
 *   scatter  an add_n whose inputs are slice_backs of disjoint regions
 *            (the gradient of a split or of slices), each read only by
 *            it: one kernel stores each slice's gradient into its region
 *            and zeros in its gaps (ir/lower_scatter.c), no zero-filled
 *            [whole shape] value per slice; the elementwise formulas of
 *            each slice's gradient join it, computed in that slice's loop;
 *   deriv    gelu's derivative, which pass_share_derivatives takes out of
 *            the backward pass (deriv.c), joins gelu's kernel as a stored
 *            output: the erf is computed once for both, and the
 *            backward's kernel reads gelu'(x) instead of recomputing it.
 *   view     a transpose read by a matmul, or of a matmul's result, is
 *            folded into the matmul's strides (view.c): no kernel.
 *   batchsum a sum over a matmul's batch axes, its only reader, is done by
 *            the matmul (batchsum.c): the products are never stored;
 *   const    a scalar constant read only by elementwise nodes (an Adam
 *            hyperparameter, a scale) is a literal in the kernels that
 *            read it (codegen/program.c): no kernel of its own writing it
 *            every step, no buffer (Plan.internal is set for it).
 * A member that is not a result (nor read by another kernel) is internal:
 * it never gets a buffer, and the memory plan does not see it.  Each value that ends a group records
 * why fusion stopped there (Plan.why). */
typedef struct FuseOpts {
  bool no_eltwise;  /* --fuse without eltwise */
  bool no_reduce;   /* --fuse without reduce */
  bool no_multi;    /* --fuse without multi */
  bool no_epilogue; /* --fuse without epilogue */
  bool no_fold;     /* --fuse without fold: batchnorm into conv weights (fold.c) */
  bool no_row;      /* --fuse without row: reductions over rows with their consumers */
  bool no_scatter;  /* --fuse without scatter: an add_n of slice_backs as one kernel */
  bool no_deriv;    /* --fuse without deriv: gelu' computed beside gelu (deriv.c) */
  bool no_view;     /* --fuse without view: transposes read or written by a matmul (view.c) */
  bool no_batchsum; /* --fuse without batchsum: a sum over a matmul's batch axes (batchsum.c) */
  bool no_const;    /* --fuse without const: scalar constants as kernels of their own */
} FuseOpts;
#define FUSE_NONE                                                                              \
  ((FuseOpts){true, true, true, true, true, true, true, true, true, true, true}) /* --fuse=none */

typedef struct FuseGroup {
  Node *anchor;    /* the last member: its kernel's name and iteration space */
  Node **members;  /* in topological (id) order, the anchor last */
  int n_members;
  Node **ins;      /* the values it reads from outside, each once, in order */
  int n_ins;
  bool eltwise;    /* an elementwise anchor: outputs may overwrite inputs */
  Node *head;      /* or NULL: the matmul or convolution an epilogue group starts with */
  bool views;      /* a slice among the members: it reads its input at other places */
  bool row;        /* kind row (eltwise too): values per row (the anchor's elements
                      sharing its kept axes) among the members, reductions over the
                      other axes, one pass per row */
  Node *after;     /* or NULL: the anchor of the group this one runs right after (its
                      row kernel stores a value this one reads; fuse.c) */
  bool scatter;    /* kind scatter: an add_n anchor of slice_back members, one loop per
                      slice (not eltwise: its output never overwrites an input) */
} FuseGroup;

/* Parses --fuse's value: none, all, or a comma list of eltwise, reduce,
 * multi, epilogue, fold, row, scatter, deriv (the kinds to do).  False on a word it does
 * not know. */
bool fuse_opts_parse(const char *s, FuseOpts *o);
/* The kinds on, as --fuse would spell them ("all", "none", "eltwise,multi"). */
const char *fuse_opts_text(const FuseOpts *o);

typedef struct PlanOpts {
  bool no_inplace;  /* --no-inplace */
  bool no_share;    /* --no-share: every buffer its own bytes */
  bool min_memory;  /* --schedule=min-memory */
  FuseOpts fuse;    /* --fuse (all kinds on when zero) */
} PlanOpts;

typedef struct Plan {
  PlanOpts opts;
  const Graph *g;
  Node **order;      /* the schedule */
  int n_order;
  int *time;         /* per node id: position in the order, -1 if not run */
  int *first, *last; /* per node id: lifetime in schedule steps (inclusive) */
  int *alias;        /* per node id: the value whose bytes it overwrites, or -1 */
  bool *root;        /* per node id: a root (alive to the end, never overwritten) */
  int64_t *size;     /* per node id: bytes, rounded up to PLAN_ALIGN */
  int64_t *offset;   /* per node id: offset in the arena, -1 if not in it */
  int64_t arena;     /* planned arena bytes */
  int64_t naive;     /* sum of all values' sizes, fused ones included: one buffer each */
  int64_t lower;     /* the most bytes alive at one time under the schedule */
  int64_t persistent; /* parameters, optimizer state and weight-derived values */
  int64_t prepacked;  /* of which weight-derived values (passes/prepack.c) */
  /* fusion (fuse.c): the kernels and who is in which */
  FuseGroup *groups;
  int n_groups;
  int *group;        /* per node id: its group, -1 for leaves and unscheduled nodes */
  bool *internal;    /* per node id: computed inside its group's kernel, no buffer (and for
                        a constant of kind const: a literal in its readers' kernels) */
  const char **why;  /* per node id: why a computed value ends its group (NULL: nothing reads it) */
  int *start;        /* per node id: the step at which its group's kernel runs */
} Plan;

/* The whole plan for computing roots; raises nothing (plans always exist). */
void plan_build(Graph *g, Node *const *roots, int n_roots, const PlanOpts *o, Plan *p);
/* Fills groups, group, internal and why (before the schedule). */
void pass_fuse(const Graph *g, Node *const *roots, int n_roots, Plan *p);
/* The values the kernel computing n reads, attributed to n's step: its
 * group's inputs for the group's anchor, nothing for its other members.
 * Leaves read nothing. */
Node *const *plan_reads(const Plan *p, const Node *n, int *count);
/* Whether n is written by a kernel of the plan (scheduled, not a leaf). */
static inline const FuseGroup *plan_group(const Plan *p, const Node *n) {
  return p->group[n->id] >= 0 ? &p->groups[p->group[n->id]] : NULL;
}
/* Whether n is a constant of fuse kind const: a literal in the kernels that
 * read it, with no kernel, no step and no place of its own. */
static inline bool plan_literal(const Plan *p, const Node *n) {
  return n->op == OP_CONST && p->internal[n->id];
}
void pass_schedule(const Graph *g, Node *const *roots, int n_roots, Plan *p);
void fill_lifetimes(const Graph *g, Node *const *roots, int n_roots, Plan *p);
void pass_inplace(const Graph *g, Plan *p);
void pass_plan_offsets(Plan *p);
/* Whether node n's value lives in the arena (scheduled and not persistent:
 * a parameter or a weight-derived value). */
bool plan_in_arena(const Plan *p, const Node *n);
/* Checks a plan independently of how it was made (plan_verify.c). */
bool plan_verify(const Graph *g, Node *const *roots, int n_roots, const Plan *p, char *err,
                 size_t errlen);
/* The report: totals, per value rows, and an SVG of the arena over time. */
void plan_print_text(const Plan *p, FILE *f);
void plan_print_json(const Plan *p, FILE *f);
void plan_print_svg(const Plan *p, FILE *f);
void plan_print_summary(const Plan *p, FILE *f); /* one line, for -v */

#endif
