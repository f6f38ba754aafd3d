/*
 * elab.h: elaboration's internal interface (frontend only).
 *
 * Elaboration runs the model's statements at compile time.  Values are
 * either compile-time (numbers, booleans, strings, lists, initializers,
 * dtypes) or tensors (Graph IR nodes).  Blocks are instantiated at each
 * call with a Frame of their own; `for` and `if` run at compile time, so the
 * graph that comes out has no control flow.
 *
 * Parameter names: a block call opens a name scope.  Its name is the call's
 * `name=` argument, taken literally, if given.  Otherwise it is the name the
 * statement binds (`c1 = ...`), followed by the block's name when one
 * statement calls several blocks that create parameters
 * (`a = relu(batchnorm(conv2d(...)))` gives `a.conv2d` and `a.batchnorm`),
 * followed by the index of every enclosing `for` loop of the same frame
 * (`h.0`, `h.1`).  A name already used in the frame gets `_2`, `_3`.
 * Scopes nest: `layer1.0.a.conv2d.weight`.
 *
 * Errors in the prelude's code are reported at the user's call, and an
 * error about a block argument points at the argument the user wrote.
 */
#ifndef KILN_ELAB_H
#define KILN_ELAB_H

#include "ast.h"
#include "frontend.h"

typedef enum VKind {
  V_NONE,   /* a block that returns nothing */
  V_INT,
  V_FLOAT,
  V_BOOL,
  V_STR,
  V_LIST,   /* [a, b, ...] of compile-time values or tensors */
  V_TUPLE,  /* several results: split, blocks returning several values */
  V_TENSOR, /* a graph node */
  V_INIT,   /* an initializer: xavier, normal(std=0.02), ... */
  V_DTYPE,  /* f32, i32 */
} VKind;

typedef struct Value {
  VKind kind;
  int64_t i;   /* V_INT, V_BOOL */
  double f;    /* V_FLOAT */
  const char *s; /* V_STR */
  struct Value *items; /* V_LIST, V_TUPLE */
  int n;
  Node *node;  /* V_TENSOR */
  Init init;   /* V_INIT */
  DType dt;    /* V_DTYPE */
  Loc origin;  /* where the user wrote the expression this value came from */
} Value;

typedef struct Binding {
  const char *name;
  Value v;
} Binding;

typedef struct Frame {
  struct Frame *caller;
  const Decl *decl;
  bool in_prelude;
  Loc call_loc;          /* the call that made this frame (user-visible) */
  const char *path;      /* name prefix of parameters: "" or "layer1.0" */
  Binding *vars;
  int n_vars, cap_vars;
  const char **scopes;   /* scope names used by calls in this frame: an open-
                          * addressing hash set of cap_scopes slots (a power of
                          * two, or 0), n_scopes of them taken */
  int n_scopes, cap_scopes;
  int64_t loop_idx[MAX_NESTING];
  int n_loops;
  const char *binding;   /* name the current statement binds, or NULL */
  int n_layer_calls;     /* calls in the current statement that create params */
  bool returned;
  Value ret;
} Frame;

typedef struct Elab {
  Arena *a;
  Diag *d;
  Graph *g;
  const Program *user, *prelude;
  Frame *fr;
  int depth;       /* recursion depth of expressions and calls */
  int64_t work;    /* statements executed, to stop runaway loops */
  uint64_t n_random; /* random ops made, for their seeds */
  int64_t max_work, max_nodes;
} Elab;

enum {
  MAX_CALL_DEPTH = 64,
  MAX_DEPTH = 4 * MAX_NESTING,
  MAX_WORK = 2000000,  /* defaults of CompileOpts.max_work and max_nodes */
  MAX_NODES = 1000000,
  MAX_LOOP = 1000000,
};

/* value.c */
Value v_int(int64_t i);
Value v_float(double f);
Value v_bool(bool b);
Value v_str(const char *s);
Value v_tensor(Node *n);
const char *v_kind_name(VKind k);
/* "int 3", "f32[2, 3]", "list of 2", ... for messages. */
const char *v_describe(Elab *e, const Value *v);
bool v_is_number(const Value *v);
double v_number(const Value *v);
int64_t v_to_int(Elab *e, const Value *v, Loc loc, const char *what);
bool v_to_bool(Elab *e, const Value *v, Loc loc, const char *what);
Node *v_to_tensor(Elab *e, const Value *v, DType dt, Loc loc, const char *what);
/* The text of a compile-time value as -D would write it. */
const char *v_text(Elab *e, const Value *v);

/* elab.c */
Loc user_loc(Elab *e, Loc loc);
/* Where to blame a value: where the user wrote it, else user_loc(fallback). */
Loc value_loc(Elab *e, const Value *v, Loc fallback);
_Noreturn void elab_error(Elab *e, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void frame_bind(Elab *e, Frame *f, const char *name, Value v);
Value *frame_lookup(Frame *f, const char *name);
/* Runs a block body in a new frame; returns its result. */
Value call_block(Elab *e, const Decl *b, bool in_prelude, const Expr *call, Value *args,
                 const char **names, int n_args);
const Decl *find_block(const Program *p, const char *name);
void run_frame(Elab *e, Frame *f); /* runs f's declaration body in f */
const char *open_scope_name(Elab *e, const char *block_name, const char *explicit_name);
void check_limits(Elab *e, Loc loc);

/* elab_expr.c */
Value eval_expr(Elab *e, const Expr *x);
Value binary_values(Elab *e, int op, Value a, Value b, Loc loc);
/* Adds a node; a shape error is blamed on the offending input (in_locs),
 * the offending attribute (attr_locs, indexed like the op's AttrSpec table;
 * unset entries have no source), or else the call at loc. */
Node *add_node(Elab *e, Op op, Node **in, const Loc *in_locs, int n_in, const Attrs *at,
               const Loc *attr_locs, Loc loc);

/* train_spec.c: the train section of the model (needs the model's frame) */
void read_train_spec(Elab *e, TrainSpec *s);

/* elab_call.c */
Value eval_call(Elab *e, const Expr *x);
/* How many calls in x go to blocks that create parameters. */
int call_layer_count(const Elab *e, const Expr *x);

#endif
