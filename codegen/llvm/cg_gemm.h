/*
 * cg_gemm.h: what the GEMM emitter (cg_gemm.c) and its op descriptions
 * (cg_gemm_ops.c) share; not a public header.
 *
 * Matmul and the three convolution kernels (conv2d, conv_transpose2d,
 * conv2d_back_w) are one computation, a batch of GEMMs
 *
 *   C[bt][m, n] = sum over kb in 0..KB, then ki in 0..KI, of
 *                 A[bt](m, kb, ki) * B[bt](kb, ki, n)
 *
 * accumulated with fma from 0 in exactly that order: the order of the
 * kernel's Kernel IR reduction loops (ir/lower_nn.c), so the scheduled code
 * writes the very bits kir_eval does.  A convolution is the "implicit
 * im2col" form of it: B's elements are input pixels (or 0 for taps in the
 * padding), gathered while packing, so no column matrix is ever stored.
 *
 * An op description (a Gemm) gives, for the driver in cg_gemm.c:
 *   - the sizes: batch, M, N, KB x KI;
 *   - A as a strided view: within one (bt, kb), A(m, ki) is
 *     bufs[a_buf][a_base + m * a_rs + ki * a_ks] (so A is read in place,
 *     never packed: rows are broadcast from where they are);
 *   - C as rows: C(m, n) is bufs[c_buf][c_base + m * ldc + n];
 *   - `pack`, Kernel IR statements that fill one panel of B: rows kk in
 *     0..kc (ki = pc + kk, of block kb), columns jj in 0..nb (n = n0 + jj)
 *     into the scratch buffer bp[kk * ldbp + jj], and zeros in columns
 *     nb..rnb (rnb = nb rounded up to the micro-tile width), so the
 *     micro-kernel's vectors never read garbage;
 *   - optionally `prep`, statements run once per (task, kb) before its
 *     panels (a zero-padded copy of an image into scratch xs, so packing
 *     needs no bounds tests), and `epilogue`, run at the end of a task
 *     when C is an intermediate in scratch cs (conv_transpose2d's per-tap
 *     sums, added up into the output: col2im);
 *   - optionally a per-task range of kb (kb_lo, kb_hi), C then being a
 *     task's partial sum in the kernel-wide scratch ps (allocated by the
 *     kernel function, shared by its tasks) and `finish`, run once after
 *     all tasks, adding the partials up into the output (conv2d_back_w's
 *     chunks of images: conv2d_back_w_chunk).
 * The expressions and statements are built in a private Kernel (pk) that
 * has the real kernel's buffers first, in order, then the scratch panel,
 * and variables of its own, which the driver sets (they are the v_* below)
 * before it emits them through cg_stmt/cg_expr.
 */
#ifndef KILN_CG_GEMM_H
#define KILN_CG_GEMM_H

#include "cg_internal.h"

/* The deepest K panel (cg_gemm.c); with sum_kb, a K block's whole depth,
 * which passes/batchsum.c keeps within it. */
enum { GEMM_KC_MAX = MATMUL_BSUM_K_MAX };

/* The schedule: fixed per kernel when it is compiled (cg_gemm.c). */
typedef struct GemmSched {
  int mr, nv, nr;           /* micro-tile: mr rows x nv vectors of 16 lanes (nr = 16 nv) */
  int64_t kc;               /* K panel depth (KI is cut into equal panels of at most kc) */
  int64_t mb, nb;           /* a task's block of C: mb rows x nb columns */
  int64_t m_blocks, n_blocks, tasks; /* tasks = batch x m_blocks x n_blocks */
  int64_t ldbp;             /* row stride of the packed panel, in floats */
} GemmSched;

typedef struct Gemm {
  const Kernel *k;          /* the kernel being compiled */
  Kernel *pk;               /* private: k's buffers, then the scratch; the driver's variables */
  int64_t batch, m, n, kb, ki; /* kb: a task's blocks (at most, with kb_lo / kb_hi) */
  int a_buf, c_buf;         /* c_buf may be cs_buf: C is then an intermediate */
  int bp_buf, xs_buf, cs_buf; /* scratch (stack, per task): the panel; optional (-1):
                             * what prep writes (an image's zero-padded copy, zeroed
                             * once per call of the task function), C when the
                             * epilogue finishes it */
  int ps_buf;               /* or -1: scratch (per kernel call) of the partial sums */
  KExpr *kb_lo, *kb_hi;     /* or NULL (0, KB): the task's blocks kb, of v_bt */
  /* The K blocks summed one after another instead of in one chain: each
   * block's sum from 0 (one panel: KI <= GEMM_KC_MAX), then added to C,
   * C = 0 + block 0 + block 1 + ... (a matmul summing batch axes,
   * Attrs.bsum: the unfused sum's order). */
  bool sum_kb;
  /* With sum_kb and B in place: the micro-kernel walks the K blocks itself
   * (the task loop runs its kb loop once), block kb's A and B at kb a_kbs
   * and kb b_kbs floats past block 0's, C loaded, added to and stored
   * after each block while the tile's rows stay in L1: the same adds in
   * the same order, without a call, a panel and a pass over the row
   * blocks per block (cg_gemm_ops.c, kb_inner). */
  bool kb_inner;
  int64_t a_kbs, b_kbs;
  KStmt *finish;            /* or NULL: runs once after the tasks (ps -> output) */
  int64_t a_rs, a_ks, ldc;
  KExpr *a_base;            /* of v_bt, v_kb */
  /* B read in place instead of packed (b_direct): B(ki, n) is
   * bufs[b_buf][b_base + ki * b_rs + n].  Worth it when a task has one
   * block of MR rows, so a packed panel would be used once (M = 1: a
   * dense layer at batch 1), or a few, its rows aligned
   * (cg_gemm_ops.c, few_row_blocks: a dense layer at batch 64); the
   * micro-kernel then masks its B loads. */
  bool b_direct;
  int b_buf;
  int64_t b_rs;
  KExpr *b_base;            /* of v_bt */
  /* Convolution with B read in place (conv_direct): stride 1 along x, so
   * an output row's pixels read one tap's inputs contiguously.  B(ki, n)
   * for output pixel n = (y, x) is bufs[b_buf][b_base + y * d_rs + x +
   * d_off[ki]], the image (or its zero-padded copy in xs) at a per-tap
   * offset; a micro-tile is up to NR pixels of one output row (d_wo of
   * them), so no panel is packed.  Worth it when K is small, as packing
   * then costs as much as the FMAs.  One K panel (kc = KI). */
  bool conv_direct;
  int64_t d_ho, d_wo, d_rs;
  int64_t *d_off;           /* KI offsets, in the arena */
  KExpr *c_base;            /* of v_bt, v_m0 */
  KStmt *prep;              /* or NULL: runs for each (task, kb) before its panels */
  KStmt *pack;              /* of v_bt, v_kb, v_pc, v_kc, v_n0, v_nb, v_rnb */
  KStmt *epilogue;          /* or NULL: runs at the end of each task */
  KExpr *done_lo, *done_n;  /* with epilogue: the flat range of the output it
                             * finishes, [done_lo, done_lo + done_n), of v_bt,
                             * v_m0, v_mc (a fused kernel's epilogue then runs
                             * over that range: cg_gemm.c, tile_epilogue) */
  /* constraints on the schedule: a task's rows a multiple of m_align (and
   * at most mb_max, 0: any), all N columns in each task when n_whole,
   * all M rows when m_whole; a task's columns a multiple of n_align */
  int64_t m_align, mb_max, n_align;
  bool n_whole, m_whole;
  bool regs32;              /* 32 vector registers (AVX-512): taller micro-tiles fit */
  int v_t, v_bt, v_kb, v_pc, v_kc, v_m0, v_mc, v_n0, v_nb, v_rnb, v_ir, v_jr, v_y;
  /* pk's first variables are the kernel's own, at their indices, so a fused
   * kernel's epilogue statements are pk's statements too */
  KStmt *tile_epi;          /* or NULL: a fused kernel's epilogue over flat runs
                             * of the output (cg_gemm.c, tile_epilogue) */
  int v_es, v_erows, v_eld, v_ecols; /* its runs: start, count, stride, length */
  GemmSched s;
} Gemm;

/* cg_gemm_ops.c: describes k as a Gemm (calling gemm_schedule once the
 * sizes are known); false when k is not one of the four kernels in the
 * standard layout of ir/lower_nn.c, or is empty.  regs32: the target has
 * 32 vector registers (AVX-512), which the schedule's tiles may use. */
bool gemm_describe(Gemm *g, Arena *a, const Kernel *k, bool regs32);
/* cg_gemm.c: picks g->s from the sizes. */
void gemm_schedule(Gemm *g);

#endif
