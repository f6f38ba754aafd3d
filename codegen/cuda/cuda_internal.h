/*
 * cuda_internal.h: what the CUDA emitter's files share (not a public header).
 *
 * Sb is a growable string (expressions are printed into one, then placed).
 * Em is the state of one kernel being printed: the C names of its buffers
 * and variables, what is known of each integer variable's range (so index
 * arithmetic that cannot overflow prints as plain C, and the rest through
 * the prelude's wrapping helpers), and which variables live in __device__
 * variables between launches.
 *
 * Files: cuda_gemm.c (tiled matmul and conv2d), cuda_reduce.c (warp-shuffle
 * sums), cuda_prelude.c (the prelude text), cuda_expr.c (expressions and
 * ranges), cuda_stmt.c (statements and the analyses of loops: independence,
 * affine indices), cuda_emit.c (parts, launches, functions, the module),
 * cuda_sb.c (Sb).
 */
#ifndef KILN_CUDA_INTERNAL_H
#define KILN_CUDA_INTERNAL_H

#include "cuda_emit.h"

/* --- a growable string ------------------------------------------------------ */
typedef struct Sb {
  char *s;
  size_t len, cap;
} Sb;

void sb_printf(Sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_puts(Sb *b, const char *s);
void sb_free(Sb *b);
/* s without one pair of parentheses around all of it, if it has them. */
const char *sb_unparen(Sb *b);

/* --- ranges of integer values -------------------------------------------------- */
/* [lo, hi] when known; unknown means any value of the type. */
typedef struct Rng {
  bool known;
  int64_t lo, hi;
} Rng;

/* --- one kernel being printed -------------------------------------------------- */
typedef struct Em {
  const Kernel *k;
  Sb *out;          /* the function being printed */
  int indent;
  const char **buf; /* C name per buffer */
  const char **var; /* C name per variable */
  Rng *rng;         /* per variable, as far as known where it is used */
  bool *global;     /* per variable: a __device__ variable (crosses launches) */
  bool *declared;   /* per variable: declared in the function being printed */
  int *n_decls;     /* per variable: its KS_DECL statements */
  int *n_mentions;  /* per variable: statements and expressions naming it */
  const KStmt *inline_loop; /* a loop printed as its body alone (its variable is
                             * the thread's: cu_interchange) */
  const KExpr **def; /* per variable: its one KS_DECL's value when that is its only
                     * definition (no KS_SET), else NULL: what is known of the
                     * value holds wherever it is used */
} Em;

/* cuda_expr.c */
/* e printed into b (fully parenthesized where compound). */
void cu_expr(Em *m, Sb *b, const KExpr *e);
/* e, an i32 condition, printed as a C condition (a comparison stays bool). */
void cu_cond(Em *m, Sb *b, const KExpr *e);
const char *cu_ctype(KType t); /* float, int, long long */
/* What is known of integer e's value where it is printed (unknown for f32;
 * unknown where it may wrap around, so plain C is used only where it
 * computes the same). */
Rng cu_range(Em *m, const KExpr *e);

/* cuda_stmt.c */
void cu_line(Em *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s's statements, flattened through nested blocks, into *items (malloc'ed). */
int cu_flatten(const KStmt *s, const KStmt ***items);
void cu_stmts(Em *m, const KStmt *const *items, int n);
void cu_stmt(Em *m, const KStmt *s);
/* Marks in hoist[v] the locals declared in items (a C block: the statements
 * of one function's top level or of one loop or if) that cannot be
 * declared where their KS_DECL is (a use outside the block, two decls):
 * the function declares them at its top. */
void cu_plan_decls(Em *m, const KStmt *const *items, int n, bool *hoist);
/* The number of times s (with its body) names variable v. */
int cu_mentions(const KStmt *s, int v);
/* The local variables loop s assigns that are declared outside it: the
 * first such variable, or -1. */
int cu_carried(const Kernel *k, const KStmt *s);
/* Whether loop `inner`, the only statement of the body of the loops in
 * `chain` (outermost first, all of whose iterations are independent), may
 * join them in one flat iteration space: its iterations independent too. */
bool cu_collapsible(Em *m, const KStmt *const *chain, int n_chain, const KStmt *inner);
/* For a serial loop s at a kernel's top level: the independent loop
 * (KL_PARALLEL or KL_VECTOR) at the end of its nest when the nest can run
 * with that loop outermost, one thread per iteration of it doing all of
 * the serial loops' iterations in order (the bias gradient's
 * `for row { for c (vector) { out[c] += x[row, c] } }`): what each thread
 * computes is then what kir_eval computes for its elements, in the same
 * order.  NULL when it cannot. */
const KStmt *cu_interchange(Em *m, const KStmt *s);
/* Marks in used[v] every variable s (or e) reads or assigns, with defined[v]
 * for the ones it declares or loops over. */
void cu_stmt_vars(const KStmt *s, bool *used, bool *defined);
void cu_expr_vars(const KExpr *e, bool *used);
/* Marks the buffers s loads from (loads) and stores to (stores). */
void cu_stmt_bufs(const KStmt *s, bool *loads, bool *stores);

/* cuda_gemm.c: a matmul or conv2d kernel (or a fused kernel led by one)
 * as a batch of GEMMs over shared-memory tiles */
enum { CU_GEMM_THREADS = 256 }; /* the tiled function's block size */
/* The nests cuda_gemm.c tiles: matmul, and the convolutions as implicit
 * GEMMs (conv2d, conv_transpose2d, conv2d_back_w). */
typedef enum { CU_GEMM_MATMUL, CU_GEMM_CONV, CU_GEMM_TCONV, CU_GEMM_BACKW } CuGemmKind;

typedef struct CuGemm {
  int64_t batch, m, n, k, tiles;
  int tm;                                        /* rows per thread: the tile is 16 tm x 64 */
  bool ta, tb;
  CuGemmKind kind;                               /* which nest (cuda_gemm.c) */
  int64_t seg;                                   /* K in segments of seg terms, each summed
                                                    from 0 and then added (0: one sum) */
  int64_t nimg, o;                               /* images; all output channels */
  int64_t groups, c, h, w, cg, og, ho, wo, kh, kw, sy, sx, py, px, dy, dx; /* its geometry */
  int br;                                        /* batch dimensions of C */
  int64_t bdim[MAX_RANK], sa[MAX_RANK], sb[MAX_RANK]; /* their sizes, A's and B's strides */
  int n_head;                                    /* k's statements the GEMM replaces */
} CuGemm;
/* Whether k's first statements (g->n_head) are a matmul or convolution
 * nest the tiled function can compute; g describes it. */
bool cu_gemm_describe(const Kernel *k, CuGemm *g);
/* A fused kernel's epilogue applied to each element of C as its tile is
 * stored (cuda_emit.c prints it): `top` once at the function's top (the
 * cheap definitions before its loop), `element` with kiln_c, the element's
 * flat index in C, declared (the loop's body at that element). */
typedef struct CuEpi {
  void (*top)(Em *m, const void *ctx);
  void (*element)(Em *m, const void *ctx);
  const void *ctx;
} CuEpi;
/* The tiled function's body (after begin_fn), with epi's epilogue per
 * element (NULL: none); sets l's threads and block. */
void cu_gemm_body(Em *m, const CuGemm *g, CuLaunch *l, const CuEpi *epi);

/* cuda_reduce.c: an f32 sum or mean node's own kernel, its additions in
 * lower_reduce's order (lower_sum_layout) with many threads per output */
typedef struct CuRed {
  SumLayout l;  /* SUM_LANES or SUM_RUNS */
  int64_t rows; /* output elements */
  bool mean;
} CuRed;
bool cu_reduce_describe(const Kernel *k, CuRed *r);
/* The function's body; reassociate: the faster order (not kir_eval's bits). */
void cu_reduce_body(Em *m, const CuRed *r, bool reassociate, CuLaunch *l);

#endif
