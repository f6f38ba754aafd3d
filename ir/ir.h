/*
 * ir.h: kiln's Graph IR, the op table's C face, diagnostics and the arena.
 *
 * A model is a graph of Nodes.  Every node produces exactly one tensor of a
 * static shape and dtype; multi-result constructs of the language (split,
 * blocks returning several values) become several nodes.  Nodes live in a
 * dense array in creation order, which is a topological order because a node
 * can only be made from nodes that already exist, so passes are plain loops
 * over g->nodes[0 .. n_nodes).
 *
 * A worked example.  The model
 *
 *     model tiny(N = 2) {
 *       input x: f32[N, 3]
 *       output y = relu(dense(x, out=4))
 *     }
 *
 * elaborates (through the prelude's `dense` block) to
 *
 *     %0 x            input  f32[2, 3]
 *     %1 y.weight     param  f32[4, 3]     init=he (a relu follows)
 *     %2 y.bias       param  f32[4]        init=zeros
 *     %3 t3           matmul(%0, %1) tb    f32[2, 4]
 *     %4 t4           add(%3, %2)          f32[2, 4]
 *     %5 y            relu(%4)             f32[2, 4]   output
 *
 * and `kiln show` prints just that, with source lines, FLOPs and bytes.
 *
 * Everything about an op comes from one row of ir/ops.def: its name in the
 * language, class, arity, flags, attributes, shape rule, reference kernel,
 * scalar function and FLOP count.  Shape inference runs inside the node
 * constructor, so an ill-typed node never exists.
 *
 * Memory: all IR (nodes, names, AST) is allocated from an Arena owned by the
 * compilation and freed at once.  Tensor data is not IR: the reference
 * evaluator and the runtime own it.
 */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rt.h"

#define MAX_RANK RT_MAX_RANK
#define countof(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Internal errors (broken invariants, not user errors) abort with file:line. */
_Noreturn void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
#define ASSERT(x) ((x) ? (void)0 : die("assertion failed: %s", #x))
#define unreachable() die("unreachable")

/* --- arena.c --------------------------------------------------------- */

typedef struct Arena Arena;
Arena *arena_new(void);
void arena_free(Arena *a); /* NULL is fine */
void *arena_alloc(Arena *a, size_t n); /* zeroed, 16-byte aligned */
void *arena_realloc(Arena *a, void *p, size_t old_n, size_t new_n);
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_fmt(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t arena_used(const Arena *a);

/* Growable arrays in an arena: VEC_PUSH(arena, items, n, cap, value). */
#define VEC_PUSH(A, ITEMS, N, CAP, V)                                                      \
  do {                                                                                     \
    if ((N) == (CAP)) {                                                                    \
      int nc_ = (CAP) ? 2 * (CAP) : 8;                                                     \
      (ITEMS) = arena_realloc((A), (ITEMS), sizeof(*(ITEMS)) * (size_t)(CAP),              \
                              sizeof(*(ITEMS)) * (size_t)nc_);                             \
      (CAP) = nc_;                                                                         \
    }                                                                                      \
    (ITEMS)[(N)++] = (V);                                                                  \
  } while (0)

/* --- diag.c: sources, locations and user errors ------------------------ */

typedef struct Source {
  const char *name; /* file name as given, or "<prelude>" */
  const char *text; /* NUL-terminated contents */
  size_t len;
  bool is_prelude;
} Source;

typedef struct Loc {
  const Source *src; /* NULL: no location */
  int line, col;     /* 1-based; col counts bytes */
} Loc;

/* User errors are recoverable: error_at formats the message (file:line:col,
 * the source line, a caret) into d->msg and longjmps to the innermost
 * diag_protect.  The driver prints d->msg and exits 1; tests compare it. */
typedef struct Diag {
  jmp_buf *jb;      /* target of error_at; set by diag_protect */
  char *msg;        /* malloc'ed text of the last error, with notes */
  size_t len, cap;
  int n_errors;
  int max_errors_unused;
} Diag;

void diag_init(Diag *d);
void diag_free(Diag *d);
void diag_clear(Diag *d);
_Noreturn void error_at(Diag *d, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void verror_at(Diag *d, Loc loc, const char *fmt, va_list ap);
/* An error with no source location ("kiln: error: ..."). */
_Noreturn void error_plain(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends "file:line:col: note: ..." plus source line and caret to d->msg;
 * call it before error_at's longjmp lands, i.e. from a diag_protect handler
 * or after error_at text was formatted (see elab.c's use). */
void note_at(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs fn(ud) and returns 0, or 1 if it raised a user error. Nests. */
int diag_protect(Diag *d, void (*fn)(void *ud), void *ud);
/* The text of line `line` of src (without newline) and its length. */
const char *source_line(const Source *src, int line, int *len);
Source *source_from_file(Arena *a, Diag *d, const char *path);
Source *source_from_string(Arena *a, const char *name, const char *text, size_t len);

/* --- shapes and dtypes -------------------------------------------------- */

typedef RtDType DType;
#define DT_F32 RT_F32
#define DT_I32 RT_I32

typedef struct Shape {
  int rank;
  int64_t dim[MAX_RANK];
} Shape;

/* Largest element count a tensor may have (2^40): keeps every size
 * computation far from int64 overflow. */
#define MAX_NUMEL ((int64_t)1 << 40)

int64_t shape_numel(const Shape *s);
bool shape_eq(const Shape *a, const Shape *b);
Shape shape_make(int rank, const int64_t *dim);
Shape shape_scalar(void);
/* "f32[2, 3]" */
char *type_str(DType t, const Shape *s, char *buf, size_t n);
char *shape_str(const Shape *s, char *buf, size_t n); /* "[2, 3]" */
const char *dtype_name(DType t);

/* --- ops.c: the op table --------------------------------------------- */

typedef enum OpClass {
  CL_LEAF,      /* input, param, constant: no computation */
  CL_ELTWISE,   /* out[i] = f(in0[i], in1[i], ...) after broadcasting */
  CL_INJECTIVE, /* each output element reads one input element: reshape, transpose, slice, concat */
  CL_REDUCE,    /* reduces axes: sum, mean, max, softmax's statistics */
  CL_COMPLEX,   /* matmul, convolution, pooling: reuse-heavy loop nests */
  CL_OPAQUE,    /* anything else (losses with their own gradient, gathers, RNG) */
} OpClass;

enum {
  F_COMMUT = 1 << 0,   /* binary op is commutative */
  F_INPLACE = 1 << 1,  /* output may overwrite input 0 (same shape and dtype) */
  F_NOGRAD = 1 << 2,   /* not differentiable (autodiff through it is an error) */
  F_INTERNAL = 1 << 3, /* not callable by name from the language */
  F_RANDOM = 1 << 4,   /* uses the random stream (dropout) */
  F_INT_OK = 1 << 5,   /* accepts i32 operands as well as f32 */
  F_COMPARE = 1 << 6,  /* produces i32 0/1 from two operands */
};

typedef enum Op {
#define OP(ID, NAME, CLASS, ARITY, FLAGS, ATTRS, SHAPE, EVAL, SCALAR, FLOPS, GRAD, LOWER) OP_##ID,
#include "ops.def"
#undef OP
  OP_COUNT
} Op;

/* Attribute values of a node.  One fat struct, not a union: each op uses the
 * fields its AttrSpec table names, and the rest stay zero. */
typedef struct Attrs {
  int axis;                  /* softmax, log_softmax, concat, argmax */
  int n_axes;                /* reductions (axes), transpose (perm); -1: default */
  int axes[MAX_RANK];
  bool keepdims;
  int kernel[2], stride[2], pad[2], dilation[2], out_pad[2]; /* conv, pool */
  int groups;
  bool count_include_pad; /* avgpool2d */
  int n_shape;            /* reshape, full, broadcast_to */
  int64_t shape[MAX_RANK];
  int64_t begin[MAX_RANK], end[MAX_RANK], step[MAX_RANK]; /* slice, per axis */
  double alpha, beta;     /* leaky_relu/elu alpha; clamp [alpha, beta]; softplus beta, threshold */
  double value;           /* const, full */
  int mode;               /* upsample: 0 nearest, 1 bilinear; gelu: 0 erf, 1 tanh */
  bool align_corners;     /* upsample bilinear */
  int scale;              /* upsample factor */
  bool ta, tb;            /* matmul: transpose the last two axes of a / b */
  /* matmul reading an operand, or writing its result, through a transpose
   * (passes/view.c; never from the language): bit i of `view` set, operand
   * i (0: a, 1: b) is transpose(in[i], perm[i]) (then ta / tb swap that
   * one's last two axes); bit 2 set, the node's value is
   * transpose(product, perm[2]).  See matmul_strides. */
  uint8_t view;
  int8_t perm[3][MAX_RANK];
  /* matmul summing its product over batch axes (passes/batchsum.c; never
   * from the language): bit d of `bsum` set, the product's batch axis d is
   * summed, as sum(product, axes, keepdims=true) would (its dim is 1 in the
   * node's shape); each batch element's product rounded to f32 first, then
   * added from 0 in row-major order of the summed axes.  Not with view
   * bit 2.  See matmul_strides. */
  uint8_t bsum;
  double p;               /* dropout drop probability */
  uint64_t seed;          /* dropout */
  DType to;               /* cast, full, arange: result dtype */
} Attrs;

typedef enum AttrKind {
  AK_INT,   /* int */
  AK_INT2,  /* int[2]; one int sets both */
  AK_FLOAT, /* double */
  AK_BOOL,
  AK_AXIS,  /* int axis, negative counts from the end */
  AK_AXES,  /* int or list of ints -> axes/n_axes */
  AK_SHAPE, /* list of ints -> shape/n_shape */
  AK_ENUM,  /* a name from `choices` -> int */
  AK_DTYPE, /* f32 or i32 -> DType */
  AK_SEED,  /* non-negative int -> uint64_t */
} AttrKind;

typedef struct AttrSpec {
  const char *name;
  AttrKind kind;
  size_t offset; /* offsetof(Attrs, field) */
  double dflt;   /* default for scalar kinds; for AK_AXES/AK_SHAPE: n = -1 */
  bool required;
  const char *const *choices; /* AK_ENUM: NULL-terminated */
  const char *doc;
} AttrSpec;

typedef struct Node Node;
typedef struct ShapeErr ShapeErr;
typedef struct EvalCtx EvalCtx;
typedef struct GradCtx GradCtx;

typedef bool (*ShapeFn)(Node *n, ShapeErr *e);
typedef void (*EvalFn)(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx);
typedef double (*ScalarFn)(double a, double b, const Attrs *at);
typedef double (*FlopsFn)(const Node *n);
/* Adds the gradients of n's inputs, given dy (the gradient of n), through
 * grad_acc; see grad.c. */
typedef void (*GradFn)(GradCtx *cx, Node *n, Node *dy);
/* Builds the Kernel IR loop nest computing n (kir.h, lower*.c). */
struct Kernel;
typedef struct Kernel *(*LowerFn)(Arena *a, const Node *n);

typedef struct OpInfo {
  const char *name;
  OpClass cls;
  int arity; /* tensor inputs; -1: one or more (concat) */
  unsigned flags;
  const AttrSpec *attrs; /* NULL-name terminated; positional after the tensors */
  ShapeFn shape;
  EvalFn eval;
  ScalarFn scalar; /* eltwise ops: the function on one element (double math) */
  FlopsFn flops;
  GradFn grad;     /* NULL exactly for leaves and F_NOGRAD ops */
  LowerFn lower;   /* NULL exactly for leaves */
} OpInfo;

extern const OpInfo op_info[OP_COUNT];
const char *op_name(Op op);
const char *op_class_name(OpClass c);
/* Looks up a language-callable op by name; returns -1 if none. */
int op_lookup(const char *name);
static inline bool op_is_eltwise(Op op) { return op_info[op].cls == CL_ELTWISE; }
static inline bool op_has(Op op, unsigned f) { return (op_info[op].flags & f) != 0; }
void attrs_default(Op op, Attrs *at);
const AttrSpec *attr_find(Op op, const char *name);

/* --- graph.c ------------------------------------------------------------ */

/* A parameter's initializer: the runtime's type (runtime/rt.h, RT_INIT_*),
 * so that built programs can fill their parameters with the same code. */
typedef RtInitKind InitKind;
typedef RtInit Init;

const char *init_name(InitKind k);

struct Node {
  int id; /* index in g->nodes */
  Op op;
  DType dtype;
  Shape shape;
  int n_in;
  Node **in;
  Attrs at;
  const char *name; /* unique in the graph: binding path or "t<id>" */
  bool named;       /* name given by the user (binding, input, param), not "t<id>" */
  Loc loc;          /* the source expression that made this node */
  bool is_output;
  /* OP_PARAM only */
  Init init;
  bool trainable; /* false for running statistics and other state */
  /* made by autodiff or the optimizer: part of the backward pass/update */
  bool is_backward;
  const Node *grad_of; /* the forward node whose gradient rule made it */
  /* weight-derived (passes/prepack.c): computed from parameters only, once
   * per change of the parameters by a prepare step, and kept beside them
   * in the persistent region, never in the arena */
  bool derived;
};

/* Whether n's value lives in the persistent region: a parameter or a
 * weight-derived value. */
static inline bool node_persistent(const Node *n) { return n->op == OP_PARAM || n->derived; }

/* The training step writes `value` into the persistent tensor `target` (a
 * parameter or optimizer state) once the whole step has been computed. */
typedef struct Update {
  Node *target;
  Node *value;
} Update;

typedef struct NamedNode {
  const char *name;
  Node *node;
  Loc loc;
} NamedNode;

/* The `train` section, kept as written (frontend/train_spec.c reads it). */
typedef struct TrainEntry {
  const char *key;
  struct Expr *value; /* may be NULL */
  Loc loc;
} TrainEntry;

typedef enum OptKind { OPT_SGD, OPT_ADAM, OPT_ADAGRAD, OPT_RMSPROP } OptKind;
typedef enum SchedKind { SCHED_CONSTANT, SCHED_STEP, SCHED_COSINE, SCHED_LINEAR } SchedKind;

/* What the train section (and the command line) say about training. */
typedef struct TrainSpec {
  const char *minimize; /* the loss value's name */
  OptKind opt;
  const char *opt_name;  /* as written: sgd, momentum, nesterov, adam, ... */
  double lr, momentum, beta1, beta2, eps, alpha, weight_decay;
  bool nesterov;
  double clip_norm;      /* 0: no clipping */
  SchedKind sched;
  double sched_gamma;    /* step: factor */
  int sched_every;       /* step: epochs between decays */
  double sched_end;      /* cosine/linear: the final learning rate */
  int sched_epochs;      /* cosine/linear: length in epochs (0: the whole run) */
  int64_t warmup;        /* steps of linear warm-up from 0 */
  int epochs;
  uint64_t seed;
  bool shuffle;
  const char *data;      /* default --data, or NULL */
} TrainSpec;

/* The learning rate for global step t (from 0) of a run of `total` steps
 * with `per_epoch` steps in an epoch. */
double train_lr(const TrainSpec *s, int64_t t, int64_t per_epoch, int64_t total);

typedef struct Graph {
  Arena *arena;
  const char *name; /* the model's name */
  bool training;    /* built for the training step (batch statistics, dropout) */
  Node **nodes;
  int n_nodes, cap_nodes;
  NamedNode *outputs; /* in declaration order */
  int n_outputs, cap_outputs;
  NamedNode *values; /* every model-level binding, last assignment wins */
  int n_values, cap_values;
  const char *const_names[64]; /* the model's compile-time constants ... */
  char const_values[64][48];   /* ... and their final values, as text */
  int n_consts;
  Node **name_tab; /* open-addressing hash of node names */
  int name_tab_cap, name_tab_n;
  Update *updates; /* in the order made */
  int n_updates, cap_updates;
  TrainEntry *train;
  int n_train, cap_train;
  Loc train_loc;
  bool has_train;
  const char *minimize; /* the train section's loss value, or NULL */
  TrainSpec spec;       /* valid when has_train */
} Graph;

struct ShapeErr {
  int arg;          /* offending input index, or -1 */
  const char *attr; /* offending attribute's name, or NULL */
  char msg[512];
};

Graph *graph_new(Arena *a, const char *name);
/* Makes a node, checking arity and running the op's shape rule.  On a
 * shape error returns NULL and fills *err (nothing is added). */
Node *graph_add(Graph *g, Op op, Node *const *in, int n_in, const Attrs *at, Loc loc,
                ShapeErr *err);
/* Like graph_add, for callers that have already validated (autodiff, tests):
 * a shape error here is a compiler bug, so it dies. */
Node *graph_add_checked(Graph *g, Op op, Node *const *in, int n_in, const Attrs *at, Loc loc);
Node *graph_input(Graph *g, const char *name, DType dt, Shape s, Loc loc);
Node *graph_param(Graph *g, const char *name, DType dt, Shape s, Init init, bool trainable,
                  Loc loc);
Node *graph_const(Graph *g, DType dt, double value, Loc loc);
/* Gives n (not yet in the graph) a unique name derived from `base`
 * (appending _2, _3, ...). */
void graph_name(Graph *g, Node *n, const char *base);
/* Renames a node already in the graph, uniquely, and marks it named. */
void graph_rename(Graph *g, Node *n, const char *base);
Node *graph_find(const Graph *g, const char *name); /* by node name */
Node *graph_find_value(const Graph *g, const char *name); /* output or model binding */
void graph_add_output(Graph *g, const char *name, Node *n, Loc loc);
/* Records target <- value for the end of the step (same type). */
void graph_add_update(Graph *g, Node *target, Node *value);
void graph_set_value(Graph *g, const char *name, Node *n, Loc loc);
/* Fills fan_in/fan_out of every param and turns RT_INIT_AUTO into he or xavier,
 * looking at how each parameter is used (see graph.c). */
void graph_resolve_init(Graph *g);
int64_t graph_param_count(const Graph *g, bool trainable_only);
/* Consumers of every node: users of node i are list[off[i] .. off[i+1]),
 * in graph order (one entry per input slot that reads it). */
typedef struct Users {
  int *off;
  Node **list;
} Users;
Users graph_users(const Graph *g); /* arena-allocated */
/* Moves the last node of g to position `at`, renumbering those after it:
 * for passes that make a node some existing node must read, keeping ids a
 * topological order. */
void graph_move_last_to(Graph *g, int at);
/* saved[i]: forward node i is read by some backward node, so it must live
 * until the backward pass has used it (its forward dependencies). */
void graph_saved_for_backward(const Graph *g, bool *saved);
/* Marks the nodes needed to compute `roots` (and only those). */
void graph_live(const Graph *g, Node *const *roots, int n_roots, bool *live);

/* Shape-rule helpers shared by shape.c and shape_nn.c. */
bool shape_fail(ShapeErr *e, int arg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A shape error caused by the value of attribute `attr`. */
bool attr_fail(ShapeErr *e, const char *attr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *node_type_str(const Node *n, char *buf, size_t len);

/* --- shape.c / shape_nn.c: shape rules named by ops.def ---------------- */
#define SHAPE_FN(name) bool name(Node *n, ShapeErr *e);
SHAPE_FN(shape_leaf)
SHAPE_FN(shape_unary)
SHAPE_FN(shape_binary)
SHAPE_FN(shape_compare)
SHAPE_FN(shape_where)
SHAPE_FN(shape_cast)
SHAPE_FN(shape_reduce)
SHAPE_FN(shape_argmax)
SHAPE_FN(shape_reshape)
SHAPE_FN(shape_transpose)
SHAPE_FN(shape_broadcast_to)
SHAPE_FN(shape_slice)
SHAPE_FN(shape_concat)
SHAPE_FN(shape_full)
SHAPE_FN(shape_arange)
SHAPE_FN(shape_softmax)
SHAPE_FN(shape_matmul)
SHAPE_FN(shape_conv2d)
SHAPE_FN(shape_conv_transpose2d)
SHAPE_FN(shape_pool2d)
SHAPE_FN(shape_upsample)
SHAPE_FN(shape_embedding)
SHAPE_FN(shape_cross_entropy)
SHAPE_FN(shape_dropout)
SHAPE_FN(shape_randn)
SHAPE_FN(shape_add_n)
SHAPE_FN(shape_conv2d_back_w)
SHAPE_FN(shape_maxpool2d_back)
SHAPE_FN(shape_avgpool2d_back)
SHAPE_FN(shape_upsample_back)
SHAPE_FN(shape_slice_back)
SHAPE_FN(shape_embedding_back)
SHAPE_FN(shape_cross_entropy_back)
#undef SHAPE_FN
/* NumPy broadcasting of a and b into *out; false if incompatible. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out);
/* Normalizes a possibly negative axis; false if out of range. */
bool axis_norm(int *axis, int rank);

/* Where a matmul's operands and product live, as element strides over the
 * product's axes (shape_nn.c): the product P[.., i, j] = sum over p of
 * A[.., i, p] B[.., p, j], batch axes 0..br of P (br = P's rank - 2),
 * with A(.., i, p) at in[0] offset sum_d idx[d] a[d] + i a[br] + p a[br+1],
 * B(.., p, j) at in[1] offset sum_d idx[d] b[d] + p b[br] + j b[br+1], and
 * P(.., i, j) at the node's offset sum_d idx[d] c[d] + i c[br] + j c[br+1].
 * Broadcast batch axes have stride 0; ta / tb and the views (Attrs.view)
 * are folded in, so every reader of a matmul computes through this one
 * description.  A batch axis summed (Attrs.bsum) has c[d] = 0: all its
 * products land on the same matrix, added up in order. */
typedef struct MatStrides {
  int br;
  int64_t dim[MAX_RANK]; /* P's dims: batch axes, then M, N */
  int64_t k;             /* the reduced length */
  int64_t a[MAX_RANK], b[MAX_RANK], c[MAX_RANK];
} MatStrides;
void matmul_strides(const Node *n, MatStrides *s);
/* The deepest K of a matmul summing batch axes (passes/batchsum.c): the
 * GEMM sums each batch element's product in one K panel of at most this
 * depth (codegen/llvm/cg_gemm.h GEMM_KC_MAX) before adding it. */
enum { MATMUL_BSUM_K_MAX = 256 };
/* The matmul operand or result seen through perm[i] when view bit i is set:
 * transpose(x, perm) of shape x. */
Shape matmul_view_shape(const Node *n, int i, const Shape *x);

/* --- eval.c / eval_*.c: the reference evaluator ------------------------- */

struct EvalCtx {
  uint64_t step;  /* training step, mixed into dropout's random stream */
  bool training;
};

/* Evaluates the nodes of g marked live (all when live is NULL), in order.
 * vals[i] receives node i's value; inputs and params must be bound by the
 * caller (vals[i].data != NULL) before the call.  Values the caller did not
 * bind are allocated with malloc; eval_free releases those.  eval_run
 * recomputes every live node the caller has not bound, reusing buffers from
 * an earlier run, so inputs can be rebound and the graph run again. */
typedef struct Eval {
  const Graph *g;
  RtTensor *vals;
  bool *owned;  /* malloc'ed here */
  bool *given;  /* provided by the caller: never computed */
  Node *const *order; /* a memory plan's schedule, or NULL: node order */
  int n_order;
  EvalCtx cx;
} Eval;

void eval_init(Eval *ev, const Graph *g);
/* Binds a parameter (or input) value in the caller's buffer (borrowed). */
void eval_bind(Eval *ev, const Node *n, void *data);
/* The buffer of input n, for the caller to fill before each run (in the
 * arena when a plan is used); NULL if out of memory. */
void *eval_input(Eval *ev, const Node *n);
/* Places every node with offset[id] >= 0 at arena + offset[id] and makes
 * eval_run follow `order` (a memory plan, passes/memplan.c). */
void eval_use_arena(Eval *ev, void *arena, const int64_t *offset, Node *const *order,
                    int n_order);
/* Returns 0, or -1 after writing a message (e.g. out of memory) to err. */
int eval_run(Eval *ev, const bool *live, char *err, size_t errlen);
void eval_free(Eval *ev);
/* Copies each update's value into its target's buffer (after eval_run;
 * every value was computed before any is written back). */
void eval_apply_updates(Eval *ev);
/* Fills data (numel floats or ints) with the parameter's initial values,
 * deterministically from (seed, the parameter's name). */
void param_init_fill(const Node *p, uint64_t seed, void *data);

#define EVAL_FN(name) void name(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx);
EVAL_FN(eval_none)
EVAL_FN(eval_const)
EVAL_FN(eval_unary)
EVAL_FN(eval_binary)
EVAL_FN(eval_where)
EVAL_FN(eval_cast)
EVAL_FN(eval_reduce)
EVAL_FN(eval_argmax)
EVAL_FN(eval_copy)
EVAL_FN(eval_transpose)
EVAL_FN(eval_broadcast_to)
EVAL_FN(eval_slice)
EVAL_FN(eval_concat)
EVAL_FN(eval_full)
EVAL_FN(eval_arange)
EVAL_FN(eval_softmax)
EVAL_FN(eval_log_softmax)
EVAL_FN(eval_matmul)
EVAL_FN(eval_conv2d)
EVAL_FN(eval_conv_transpose2d)
EVAL_FN(eval_maxpool2d)
EVAL_FN(eval_avgpool2d)
EVAL_FN(eval_upsample)
EVAL_FN(eval_embedding)
EVAL_FN(eval_cross_entropy)
EVAL_FN(eval_dropout)
EVAL_FN(eval_randn)
EVAL_FN(eval_add_n)
EVAL_FN(eval_conv2d_back_w)
EVAL_FN(eval_maxpool2d_back)
EVAL_FN(eval_avgpool2d_back)
EVAL_FN(eval_upsample_back)
EVAL_FN(eval_slice_back)
EVAL_FN(eval_embedding_back)
EVAL_FN(eval_cross_entropy_back)
#undef EVAL_FN

/* Scalar functions of elementwise ops (double math; b unused when unary). */
#define SC_FN(name) double name(double a, double b, const Attrs *at);
SC_FN(sc_neg) SC_FN(sc_abs) SC_FN(sc_exp) SC_FN(sc_log) SC_FN(sc_sqrt) SC_FN(sc_rsqrt)
SC_FN(sc_relu) SC_FN(sc_leaky_relu) SC_FN(sc_elu) SC_FN(sc_sigmoid) SC_FN(sc_tanh)
SC_FN(sc_gelu) SC_FN(sc_softplus) SC_FN(sc_sin) SC_FN(sc_cos) SC_FN(sc_clamp)
SC_FN(sc_add) SC_FN(sc_sub) SC_FN(sc_mul) SC_FN(sc_div) SC_FN(sc_pow)
SC_FN(sc_maximum) SC_FN(sc_minimum)
SC_FN(sc_eq) SC_FN(sc_ne) SC_FN(sc_lt) SC_FN(sc_le) SC_FN(sc_gt) SC_FN(sc_ge)
SC_FN(sc_gelu_back) /* a = dy, b = x: dy * gelu'(x) */
#undef SC_FN

/* Counter-based random numbers (SplitMix64 mixing), identical wherever they
 * are computed, so a compiled program can reproduce the reference: the
 * runtime's (runtime/rt_init.c), under the compiler's names. */
static inline uint64_t rng_hash(uint64_t seed, uint64_t counter) {
  return rt_rng_hash(seed, counter);
}
static inline double rng_uniform(uint64_t seed, uint64_t counter) { /* [0, 1) */
  return rt_rng_uniform(seed, counter);
}
/* randn's element i of the stream rng_hash(seed, step) (eval_nn.c), and the
 * f32 of 2 pi its Box-Muller angle is scaled by. */
#define RANDN_2PI 6.2831855f
float randn_value(uint64_t stream, uint64_t i);
static inline double rng_normal(uint64_t seed, uint64_t counter) { /* N(0, 1) */
  return rt_rng_normal(seed, counter);
}
static inline uint64_t rng_seed_for(uint64_t seed, const char *name) {
  return rt_rng_seed_for(seed, name);
}

/* --- grad.c: gradient rules and the helpers they build with ------------- */

/* State of one backward construction (passes/autodiff.c drives it). */
struct GradCtx {
  Graph *g;
  Node *cur;         /* the forward node whose rule is running */
  const bool *wants; /* wants[id]: that node needs a gradient */
  Node ***contrib;   /* contrib[id][0 .. n_contrib[id]): gradient contributions */
  int *n_contrib, *cap_contrib;
};

#define GRAD_FN(name) void name(GradCtx *cx, Node *n, Node *dy);
GRAD_FN(grad_neg) GRAD_FN(grad_abs) GRAD_FN(grad_exp) GRAD_FN(grad_log) GRAD_FN(grad_sqrt)
GRAD_FN(grad_rsqrt) GRAD_FN(grad_relu) GRAD_FN(grad_leaky_relu) GRAD_FN(grad_elu)
GRAD_FN(grad_sigmoid) GRAD_FN(grad_tanh) GRAD_FN(grad_gelu) GRAD_FN(grad_softplus)
GRAD_FN(grad_sin) GRAD_FN(grad_cos) GRAD_FN(grad_clamp)
GRAD_FN(grad_add) GRAD_FN(grad_sub) GRAD_FN(grad_mul) GRAD_FN(grad_div) GRAD_FN(grad_pow)
GRAD_FN(grad_minmax) GRAD_FN(grad_where) GRAD_FN(grad_cast)
GRAD_FN(grad_sum) GRAD_FN(grad_mean) GRAD_FN(grad_max) GRAD_FN(grad_softmax)
GRAD_FN(grad_log_softmax) GRAD_FN(grad_reshape) GRAD_FN(grad_transpose)
GRAD_FN(grad_broadcast_to) GRAD_FN(grad_slice) GRAD_FN(grad_concat)
GRAD_FN(grad_matmul) GRAD_FN(grad_conv2d) GRAD_FN(grad_conv_transpose2d)
GRAD_FN(grad_maxpool2d) GRAD_FN(grad_avgpool2d) GRAD_FN(grad_upsample)
GRAD_FN(grad_embedding) GRAD_FN(grad_cross_entropy) GRAD_FN(grad_dropout)
GRAD_FN(grad_stop) GRAD_FN(grad_add_n)
#undef GRAD_FN

/* Adds g to the gradient of x (if x wants one), first summing g down to
 * x's shape where x was broadcast. */
void grad_acc(GradCtx *cx, Node *x, Node *g);
/* A backward node: made like any node, marked is_backward, with the
 * current forward node as its provenance and source location. */
Node *grad_node(GradCtx *cx, Op op, Node *const *in, int n_in, const Attrs *at);
/* Sums x over axes so that it has `shape` (NumPy broadcasting undone). */
Node *grad_reduce_to(GradCtx *cx, Node *x, const Shape *shape);

/* --- stats.c: FLOPs and bytes ------------------------------------------- */
double flops_zero(const Node *n);
double flops_eltwise(const Node *n);   /* one per output element */
double flops_eltwise4(const Node *n);  /* transcendental: counted as 4 */
double flops_reduce(const Node *n);    /* one per input element */
double flops_softmax(const Node *n);
double flops_matmul(const Node *n);
double flops_conv2d(const Node *n);
double flops_conv_transpose2d(const Node *n);
double flops_pool2d(const Node *n);
double flops_upsample(const Node *n);
double flops_cross_entropy(const Node *n);
double flops_add_n(const Node *n);
double flops_conv2d_back_w(const Node *n);
double flops_pool2d_back(const Node *n);
double flops_embedding_back(const Node *n);
double node_flops(const Node *n);
int64_t node_bytes(const Node *n); /* bytes of the output */
/* Bytes read and written by the node (inputs + output). */
int64_t node_traffic(const Node *n);

/* --- print.c: text, DOT and JSON views of a graph ------------------------ */
void graph_print_text(const Graph *g, FILE *f, bool with_summary);
void graph_print_dot(const Graph *g, FILE *f);
void graph_print_json(const Graph *g, FILE *f);
/* s as a JSON string, quoted and escaped (every JSON kiln writes). */
void json_write_str(FILE *f, const char *s);
void graph_print_summary(const Graph *g, FILE *f); /* `kiln check` */
void attrs_print(const Node *n, FILE *f);          /* "stride=2 pad=1" */

#endif
