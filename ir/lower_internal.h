/*
 * lower_internal.h: what the lowering files (lower*.c) share: the kernel
 * skeleton every op starts from, loop nests over strided index spaces, and
 * short spellings of the Kernel IR builders.
 *
 * Why a header of its own: kir.h is the contract with the backends and
 * only declares lower_node and the per-op entry points; the helpers here
 * are how those entry points are written, and nothing outside ir/lower*.c
 * needs them.
 *
 * The expression macros assume a `Kernel *k` in scope, so a formula reads
 * like the reference's C: FADD(a, FMUL(b, c)).  Integer (KT_IDX) constants
 * fold through ke_binary, so index formulas can be written plainly.
 */
#ifndef KILN_LOWER_INTERNAL_H
#define KILN_LOWER_INTERNAL_H

#include "kir.h"

/* --- expressions ----------------------------------------------------------- */
#define IC(v) ke_idx(k, (int64_t)(v))
#define FC(v) ke_f32(k, (double)(v))
#define BIN(op, a, b) ke_binary(k, (op), (a), (b))
#define ADD(a, b) BIN(KO_ADD, a, b)
#define SUB(a, b) BIN(KO_SUB, a, b)
#define MUL(a, b) BIN(KO_MUL, a, b)
#define DIV(a, b) BIN(KO_DIV, a, b)
#define MIN(a, b) BIN(KO_MIN, a, b)
#define MAX(a, b) BIN(KO_MAX, a, b)
#define FDIV(a, b) BIN(KO_FLOORDIV, a, b)
#define MOD(a, b) BIN(KO_MOD, a, b)
#define EQ(a, b) BIN(KO_EQ, a, b)
#define NE(a, b) BIN(KO_NE, a, b)
#define LT(a, b) BIN(KO_LT, a, b)
#define LE(a, b) BIN(KO_LE, a, b)
#define GT(a, b) BIN(KO_GT, a, b)
#define GE(a, b) BIN(KO_GE, a, b)
#define AND(a, b) BIN(KO_AND, a, b)
#define OR(a, b) BIN(KO_OR, a, b)
#define UN(op, a) ke_unary(k, (op), (a))
#define SEL(c, a, b) ke_select(k, (c), (a), (b))
#define LOAD(buf, i) ke_load(k, (buf), (i))
#define VAR(v) ke_var(k, (v))
#define NOT(c) EQ((c), ke_int(k, KT_I32, 0))
/* lo <= i < hi for an index expression i (an i32 0/1). */
#define IN_RANGE(i, lo, hi) AND(GE((i), IC(lo)), LT((i), IC(hi)))

/* --- lower.c ---------------------------------------------------------------- */

KType lw_type(DType t);
/* The kernel of n: named "<op>_<node name>", with one KB_IN buffer per input
 * (in order) and the KB_OUT buffer, index n->n_in (lw_out). */
Kernel *lw_kernel(Arena *a, const Node *n);
static inline int lw_out(const Node *n) { return n->n_in; }
/* prefix + name with every character that cannot be in a C identifier
 * replaced by '_'. */
char *lw_ident(Arena *a, const char *prefix, const char *name);
/* A buffer for node nd's value (named after it, made unique in k);
 * returns its index. */
int lw_node_buf(Kernel *k, const Node *nd, KBufRole role);
/* Adds the step counter's buffer (KB_IN, KT_IDX[1], node KBUF_STEP). */
int lw_step_buf(Kernel *k);

/* Row-major strides of s, and the strides that read `in` broadcast to
 * `out`'s axes (NumPy: aligned at the right, 0 on broadcast axes). */
void lw_strides(const Shape *s, int64_t *st);
void lw_bcast_strides(const Shape *in, const Shape *out, int64_t *st);

/* A loop nest over an index space walked row-major, with up to LW_OPS
 * operands addressed by per-axis strides.  Extent-1 axes get no loop, and
 * adjacent axes that every operand walks contiguously merge into one loop;
 * loop i runs over dim[i] with variable var[i] and strides st[op][i]. */
enum { LW_OPS = 16 };
typedef struct Nest {
  int rank;
  int64_t dim[MAX_RANK];
  int var[MAX_RANK];
  int64_t st[LW_OPS][MAX_RANK];
  KStmt *body; /* where the innermost statements go */
} Nest;

/* How the loops of a nest run:
 *  NEST_MAP     the outermost loop KL_PARALLEL, the innermost KL_VECTOR when
 *               every operand's stride on it is 0 or 1 (a nest of one such
 *               loop is KL_VECTOR: independent, so a backend may split it
 *               across threads as well), the rest KL_SERIAL;
 *  NEST_ROWS    the outermost KL_PARALLEL, the rest KL_SERIAL (more loops,
 *               a reduction, go inside);
 *  NEST_INNER   like NEST_MAP without the parallel loop (inside another);
 *  NEST_REDUCE  every loop KL_REDUCE (an accumulator is declared before). */
typedef enum NestMode { NEST_MAP, NEST_ROWS, NEST_INNER, NEST_REDUCE } NestMode;
/* Appends the nest to parent. */
void lw_nest(Kernel *k, KStmt *parent, int rank, const int64_t *dim, int n_ops,
             int64_t st[][MAX_RANK], NestMode mode, Nest *ns);
/* A nest of one loop over cnt elements, every operand at stride 1. */
void lw_flat(Kernel *k, KStmt *parent, int64_t cnt, NestMode mode, Nest *ns);
/* base + sum over the nest's loops of var * st[op]. */
KExpr *lw_at(Kernel *k, const Nest *ns, int op, int64_t base);
/* A new index variable named base<n> (a loop's). */
int lw_ivar(Kernel *k, const char *base);
/* A loop appended to parent; returns it (statements go in with ks_add). */
KStmt *lw_loop(Kernel *k, KStmt *parent, int var, int64_t extent, KLoopKind kind);
/* A loop over extent appended to parent, with its variable's use in *v;
 * for extent 1 no loop: *v is 0 and parent is returned. */
KStmt *lw_for(Kernel *k, KStmt *parent, const char *name, int64_t extent, KLoopKind kind,
              KExpr **v);
/* lw_for over dim[0..n) (outermost first): the first loop made is of kind
 * `first`, the others `rest`.  Returns the innermost body. */
KStmt *lw_fors(Kernel *k, KStmt *parent, int n, const int64_t *dim, const char *const *names,
               KExpr **v, KLoopKind first, KLoopKind rest);
/* An if appended to parent (returned), or parent itself when cond is NULL. */
KStmt *lw_if(Kernel *k, KStmt *parent, KExpr *cond);
/* Declares a local named `name` initialized to e in body; returns its use. */
KExpr *lw_let(Kernel *k, KStmt *body, const char *name, KExpr *e);
/* e itself if it is a constant or a variable, else lw_let (for operands a
 * formula uses more than once). */
KExpr *lw_bind(Kernel *k, KStmt *body, const char *name, KExpr *e);
/* The reference's real -> i32 conversion (truncate, NaN -> 0, saturate). */
int32_t lw_to_i32(double v);

/* --- lower_elem.c -------------------------------------------------------- */
/* The f32 (or i32) expression of elementwise op `op` on a (and b), the
 * formula of its scalar function in eval_elem.c; temporaries it needs are
 * declared in body. */
KExpr *lw_scalar(Kernel *k, KStmt *body, Op op, const Attrs *at, KExpr *a, KExpr *b);
/* The value of elementwise node n (lower_fusable) given its operands'
 * values v[0..n_in) at one element: lw_scalar, where, cast, add_n, and
 * the identities stop_gradient and broadcast_to. */
KExpr *lw_elt_value(Kernel *k, KStmt *body, const Node *n, KExpr **v);

/* --- lower_reduce.c ------------------------------------------------------ */
/* Element `at` (an index expression: its offset from the row's first
 * element) of row `row` of a block of rows, its decls into body. */
typedef KExpr *(*LwElemRow)(void *ctx, KStmt *body, int row, KExpr *at);
enum { LW_MAX_ROWS = 8 };
/* Reduction n (sum, mean or max over some axes of its input, the last
 * one among them) of nb <= LW_MAX_ROWS rows, a row being the elements of
 * one output element, appended to body: each row with the f32 operations,
 * in the order, of n's own kernel (lower_reduce); the rows' results in
 * res[0..nb). */
void lw_rows_reduce(Kernel *k, KStmt *body, const Node *n, int nb, LwElemRow elem, void *ctx,
                    KExpr **res);
/* How those rows are summed: in that many partial sums, each row one
 * contiguous run (16 or 8: lw_rows_reduce then updates nb rows' partials
 * in one loop, nb * partials <= LW_LANES_ROWS); -1 in partial sums over
 * runs repeated along outer reduced axes (a row at a time); 0 in one chain
 * of adds each. */
int lw_rows_lanes(const Node *n);
enum { LW_LANES_ROWS = 64 };
/* Rows a block takes: want (a row kernel's or softmax's), at most
 * LW_MAX_ROWS, halved until it divides rows. */
int lw_block_rows(int want, int64_t rows);

/* --- lower_fuse.c, lower_row.c: fused groups ------------------------------- */
/* A kernel named "<ops>_<anchor name>" for members[0..n), the anchor last. */
Kernel *lw_fused_kernel(Arena *a, Node *const *members, int n);
/* A slice_back n's region in its output: operand 0 its gradient's strides,
 * operand 1 the output's strides times the slice's steps; returns the
 * region's first element (ir/lower_move.c). */
int64_t lw_slice_region(const Node *n, int64_t st[][MAX_RANK]);
/* x's index among members[0..n), or -1. */
int lw_member(Node *const *members, int n, const Node *x);
/* The buffer of node x in k, added (as role) if it has none. */
int lw_buf_of(Kernel *k, const Node *x, KBufRole role);
/* The index of x's element that broadcasting reads for element e of a
 * value of shape s (x's shape broadcasts to s); decls into body. */
KExpr *lw_bcast_index(Kernel *k, KStmt *body, const Node *x, const Shape *s, KExpr *e);
/* A row group (passes/fuse.c, kind row): per row (an element of its
 * members of shape P, the anchor's shape with the reduced axes made 1),
 * its reductions, then its elementwise members. */
Kernel *lower_row_group(Arena *a, Node *const *members, const bool *stored, int n);
/* A scatter group (passes/fuse.c, kind scatter): an add_n anchor with
 * slice_back members, one loop per slice storing its gradient into its
 * region (ir/lower_scatter.c); lower_scatter_members tells one by its members. */
bool lower_scatter_members(Node *const *members, int n);
Kernel *lower_scatter_group(Arena *a, Node *const *members, const bool *stored, int n);

#endif
