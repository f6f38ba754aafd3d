/*
 * kir.h: Kernel IR, the loop nests that code generation works from.
 *
 * A Kernel computes one graph node (later: one fused group) as a nest of
 * loops over index expressions, with loads, stores, scalar locals and
 * reductions.  Both backends read the same Kernel: codegen/llvm turns it
 * into LLVM IR, codegen/cuda will print it as CUDA C.  So the IR says what
 * each loop is, not how to run it on a particular machine:
 *
 *   KL_SERIAL    iterations in order
 *   KL_PARALLEL  iterations independent: split across threads (CPU) or
 *                blocks/threads (GPU)
 *   KL_REDUCE    iterations combine into a local accumulator (declared just
 *                before the loop with KS_DECL, updated with KS_SET inside)
 *   KL_VECTOR    innermost, independent, unit stride: vectorize
 * and a loop may be marked as the tile loop of another (tile > 0), so a
 * backend can keep a tile in registers or shared memory.
 *
 * Example: out[i, j] = sum_k a[i, k] b[k, j] for a [2, 3], b [3, 4]:
 *
 *   kernel matmul_t5(in a: f32[6], in b: f32[12], out t5: f32[8]) {
 *     parallel for i in 0..2 {
 *       for j in 0..4 {
 *         f32 acc = 0
 *         reduce for k in 0..3 { acc = fma(a[i*3 + k], b[k*4 + j], acc) }
 *         t5[i*4 + j] = acc
 *       }
 *     }
 *   }
 *
 * Semantics (ir/kir_eval.c is the oracle; both backends follow it bit for
 * bit): f32 arithmetic in IEEE single precision, no reassociation or
 * contraction (a fused multiply-add is explicit: KE_FMA, fmaf); loops run
 * in order, so a KL_REDUCE sum rounds in order and
 * "first maximum" means the first index; min(a, b) = b < a ? b : a and
 * max(a, b) = a < b ? b : a (so max(NaN, 0) is NaN, as the reference's
 * relu); comparisons are C's (ordered, except != which is true for NaN);
 * i32 and index arithmetic wraps; floordiv and mod round toward -inf; f32
 * to integer casts truncate, saturate, and give 0 for NaN.
 *
 * Buffers are flat arrays of their node's elements (row-major), indexed by
 * KT_IDX (int64) expressions; the kernel's first buffers are its node's
 * inputs in order, then its output, then any scratch it asks for.  A
 * buffer with node KBUF_STEP is the runtime's training-step counter (one
 * KT_IDX element; dropout mixes it into its random stream).
 * Everything is allocated in the compilation's arena.
 */
#ifndef KILN_KIR_H
#define KILN_KIR_H

#include "ir.h"

typedef enum KType { KT_F32, KT_I32, KT_IDX } KType;

typedef enum KOp {
  /* binary: f32, i32 and index arithmetic */
  KO_ADD, KO_SUB, KO_MUL, KO_DIV, KO_MIN, KO_MAX,
  KO_POW,      /* f32 only */
  KO_FLOORDIV, /* integers: floor(a / b), b > 0 */
  KO_MOD,      /* integers: a - b floor(a / b), b > 0 */
  /* comparisons and logic: result KT_I32 0 or 1 */
  KO_EQ, KO_NE, KO_LT, KO_LE, KO_GT, KO_GE, KO_AND, KO_OR,
  /* unary (f32 unless noted) */
  KO_NEG, KO_ABS,          /* f32 and i32 */
  KO_EXP, KO_LOG, KO_SQRT, KO_TANH, KO_ERF, KO_SIN, KO_COS, KO_LOG1P, KO_FLOOR,
  KO_ISNAN,                /* result KT_I32 */
  /* random bits: rng_hash(a, b) >> 11 for index a (seed) and b (counter),
   * an index in [0, 2^53); the same SplitMix64 as ir/rng.c, so compiled
   * dropout draws the reference's mask (keep iff bits >= ceil(p 2^53)) */
  KO_HASH,
  /* rng_hash(a, b) itself: all 64 bits as an index (two's complement, so it
   * may be negative).  Dropout's stream seed rng_hash(seed, step) depends on
   * the step counter at run time and KO_HASH keeps only 53 bits of it, so
   * the kernel computes it with this, then draws rng_bits(stream, i) */
  KO_HASH64,
  KO_COUNT
} KOp;

typedef enum KExprKind {
  KE_FCONST, /* f */
  KE_ICONST, /* i (KT_I32 or KT_IDX) */
  KE_VAR,    /* a loop variable or a scalar local */
  KE_LOAD,   /* bufs[buf][a] */
  KE_UNARY,  /* op a */
  KE_BINARY, /* a op b */
  KE_SELECT, /* a ? b : c (a is KT_I32, nonzero = true) */
  KE_CAST,   /* a converted to `type` (f32 -> integer truncates toward 0) */
  KE_FMA,    /* a * b + c, f32, rounded once (C's fmaf): the accumulation step
              * of matmul and convolution, which backends keep fused */
} KExprKind;

typedef struct KExpr {
  KExprKind kind;
  KType type;
  KOp op;
  double f;
  int64_t i;
  int var; /* KE_VAR */
  int buf; /* KE_LOAD */
  struct KExpr *a, *b, *c;
} KExpr;

typedef enum KLoopKind { KL_SERIAL, KL_PARALLEL, KL_REDUCE, KL_VECTOR } KLoopKind;

typedef enum KStmtKind {
  KS_BLOCK, /* body in order */
  KS_LOOP,  /* for var in 0 .. extent: body */
  KS_STORE, /* bufs[buf][index] = value */
  KS_DECL,  /* a scalar local, initialized: var = value */
  KS_SET,   /* var = value */
  KS_IF,    /* if cond: body */
} KStmtKind;

typedef struct KStmt {
  KStmtKind kind;
  struct KStmt **body; /* KS_BLOCK, KS_LOOP, KS_IF */
  int n_body, cap_body;
  int var;             /* KS_LOOP, KS_DECL, KS_SET */
  KExpr *extent;       /* KS_LOOP: KT_IDX, usually a constant */
  KLoopKind loop;
  int64_t tile;        /* KS_LOOP: > 0 when this loop steps through tiles of that size */
  int buf;             /* KS_STORE */
  KExpr *index, *value;
  KExpr *cond;         /* KS_IF */
} KStmt;

typedef enum KBufRole { KB_IN, KB_OUT, KB_SCRATCH } KBufRole;

typedef struct KBuf {
  const char *name;
  KType type;
  int64_t numel;
  KBufRole role;
  int node; /* graph node id; -1 for scratch; KBUF_STEP for the step counter */
} KBuf;

enum { KBUF_STEP = -2 };

typedef struct KVar {
  const char *name;
  KType type;
} KVar;

typedef struct Kernel {
  const char *name; /* a readable C identifier, unique in a program */
  const Node *node; /* what it computes (provenance); a fused kernel's anchor */
  Node *const *members; /* a fused kernel's nodes, the anchor last; NULL for one node */
  int n_members;
  /* A fused kernel led by a matmul or convolution (lower_gemm_head): its
   * first n_head statements of body are that node's own lowering, writing
   * into the kernel's output buffer, the rest the elementwise epilogue
   * over it; codegen may replace the first part by a schedule of its own. */
  const Node *head;
  int n_head;
  KBuf *bufs;
  int n_bufs, cap_bufs;
  KVar *vars;
  int n_vars, cap_vars;
  KStmt *body; /* a KS_BLOCK */
  Arena *arena;
} Kernel;

/* --- kir.c: building and printing ------------------------------------------ */
Kernel *kir_new(Arena *a, const char *name, const Node *n);
int kir_buf(Kernel *k, const char *name, KType t, int64_t numel, KBufRole role, int node);
int kir_var(Kernel *k, const char *name, KType t);
KExpr *ke_f32(Kernel *k, double v);
KExpr *ke_int(Kernel *k, KType t, int64_t v);
KExpr *ke_idx(Kernel *k, int64_t v); /* an index constant */
KExpr *ke_var(Kernel *k, int var);
KExpr *ke_load(Kernel *k, int buf, KExpr *index);
KExpr *ke_unary(Kernel *k, KOp op, KExpr *a);
KExpr *ke_binary(Kernel *k, KOp op, KExpr *a, KExpr *b); /* folds constant indices */
KExpr *ke_select(Kernel *k, KExpr *c, KExpr *a, KExpr *b);
KExpr *ke_cast(Kernel *k, KType t, KExpr *a);
KExpr *ke_fma(Kernel *k, KExpr *a, KExpr *b, KExpr *c); /* a * b + c, one rounding */
KStmt *ks_block(Kernel *k);
KStmt *ks_loop(Kernel *k, int var, KExpr *extent, KLoopKind kind);
KStmt *ks_store(Kernel *k, int buf, KExpr *index, KExpr *value);
KStmt *ks_decl(Kernel *k, int var, KExpr *init);
KStmt *ks_set(Kernel *k, int var, KExpr *value);
KStmt *ks_if(Kernel *k, KExpr *cond);
void ks_add(Kernel *k, KStmt *parent, KStmt *child); /* append to a block, loop or if */
const char *kop_name(KOp op);
const char *ktype_name(KType t);
/* Input buffer b of one element (f32 or i32) becomes the literal value
 * wherever k loads it, and leaves the kernel: the buffers after it move
 * down one index.  False, changing nothing, when k stores into b or b is
 * not such an input.  (A scalar constant of fuse kind const,
 * codegen/program.c.) */
bool kir_inline_input(Kernel *k, int b, double value);
/* C-like text, one statement per line (kiln build --emit kir). */
void kir_print(const Kernel *k, FILE *f);
/* Checks the structural invariants (types, buffer and variable indices,
 * loads in range where the index is constant); false with a message. */
bool kir_verify(const Kernel *k, char *err, size_t errlen);

/* --- lower*.c: one kernel per node, from the LOWER column of ops.def ------- */
/* The kernel computing n, or NULL for leaves (inputs, params, constants). */
Kernel *lower_node(Arena *a, const Node *n);
#define LOWER_FN(name) Kernel *name(Arena *a, const Node *n);
LOWER_FN(lower_unary) LOWER_FN(lower_binary) LOWER_FN(lower_where) LOWER_FN(lower_cast)
LOWER_FN(lower_reduce) LOWER_FN(lower_argmax) LOWER_FN(lower_softmax) LOWER_FN(lower_copy)
LOWER_FN(lower_transpose) LOWER_FN(lower_broadcast_to) LOWER_FN(lower_slice)
LOWER_FN(lower_concat) LOWER_FN(lower_full) LOWER_FN(lower_arange) LOWER_FN(lower_matmul)
LOWER_FN(lower_conv2d) LOWER_FN(lower_conv_transpose2d) LOWER_FN(lower_maxpool2d)
LOWER_FN(lower_avgpool2d) LOWER_FN(lower_upsample) LOWER_FN(lower_embedding)
LOWER_FN(lower_cross_entropy) LOWER_FN(lower_dropout) LOWER_FN(lower_randn) LOWER_FN(lower_add_n)
LOWER_FN(lower_conv2d_back_w) LOWER_FN(lower_maxpool2d_back) LOWER_FN(lower_avgpool2d_back)
LOWER_FN(lower_upsample_back) LOWER_FN(lower_slice_back) LOWER_FN(lower_embedding_back)
LOWER_FN(lower_cross_entropy_back)
#undef LOWER_FN

/* How lower_reduce orders the additions of an f32 sum or mean node, for a
 * backend that schedules the same additions its own way and keeps the
 * bits (codegen/cuda/cuda_reduce.c).  Every output element e (row-major
 * over the kept axes, x offset sum of e's digits times kx) adds, from 0:
 *   SUM_LANES: for each position of the outer reduced axes (od/ox,
 *     row-major), the contiguous run x[off + i], i < run, element i into
 *     partial i mod lanes (16 for runs of 32 and more; 8 for a run of 16
 *     to 31, which has no outer axes), in order; then the partials as a
 *     tree (p[l] += p[l + w], w = lanes / 2, ..., 2, 1);
 *   SUM_RUNS: x at each position of the reduced axes (od/ox, all of them,
 *     row-major), one chain (run is 1);
 * then a mean divides by the f32 cnt.  SUM_CHAIN: another order (one
 * chain too, but not walked this way; e.g. a max, an i32 sum). */
typedef enum { SUM_CHAIN, SUM_LANES, SUM_RUNS } SumScheme;
typedef struct SumLayout {
  SumScheme scheme;
  int nk, no;                         /* kept axes; reduced axes walked outside the run */
  int64_t kd[MAX_RANK], kx[MAX_RANK]; /* kept axes' extents and x strides */
  int64_t od[MAX_RANK], ox[MAX_RANK]; /* outer reduced axes' extents and x strides */
  int64_t run, cnt;                   /* the contiguous run (1 for SUM_RUNS); elements per output */
} SumLayout;
SumScheme lower_sum_layout(const Node *n, SumLayout *l);

/* --- lower_fuse.c: one kernel for a fused group (passes/fuse.c) ------------ */
/* members[0..n) in topological order, the anchor last; stored[i] when
 * member i gets a buffer (the anchor always does).  eltwise: every member
 * is elementwise over the anchor's shape or has one element, and the
 * stored ones are the kernel's outputs, computed in one loop (after the
 * own nest of a member that is a lower_gemm_head op, if any); otherwise
 * the anchor's own kernel with every load of a member replaced by the
 * member's formula at that index.  An eltwise group with members of
 * another shape (values per row of the anchor's innermost axis, reductions
 * over it: passes/fuse.c's kind row) is lowered one row at a time
 * (ir/lower_row.c).  A group that is not eltwise, of an add_n anchor and
 * slice_back members (kind scatter), stores each slice's gradient into its
 * region, one loop per slice (ir/lower_scatter.c).  Buffers: the group's
 * inputs (in order of first use), then its outputs; named
 * "<ops>_<anchor name>". */
Kernel *lower_fused(Arena *a, Node *const *members, const bool *stored, int n, bool eltwise);
/* Whether op may be a member of a fused group other than its anchor (its
 * value is a formula of its inputs' values at the same element). */
bool lower_fusable(Op op);
/* Whether op may be a member of an elementwise group as a strided view of
 * its input (slice), read where the group's loop needs it. */
bool lower_view(Op op);
/* Whether op joins elementwise groups only, as a non-elementwise member: a
 * view (lower_view), or a reshape (read at the same flat index). */
bool lower_eltwise_only(Op op);
/* Whether op may lead an elementwise group as its epilogue's source (a
 * matmul or convolution that codegen/llvm/cg_gemm.c schedules). */
bool lower_gemm_head(Op op);
/* Whether a group anchored at op may take members (its lowering is the
 * generic one: code generation has no schedule of its own for it). */
bool lower_takes_producers(Op op);

/* lower_nn.c: conv2d_back_w (node n) sums over the images in chunks of
 * this many, each chunk's sum a partial sum from 0 of its own, the
 * partials added to the total in order (N itself: one chunk, a plain sum).
 * A function of the shapes only, never of the thread count, so the GEMM
 * schedule (codegen/llvm/cg_gemm_ops.c) can run the chunks on different
 * threads and still write the lowering's bits. */
int64_t conv2d_back_w_chunk(const Node *n);

/* --- kir_eval.c: a straightforward interpreter of Kernel IR --------------- */
/* Runs k with bufs[i] pointing at each buffer's data; the test oracle that
 * checks lowering against the graph's reference evaluator. */
void kir_eval(const Kernel *k, void *const *bufs);

#endif
