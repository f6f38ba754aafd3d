/*
 * cuda_reduce.c: an f32 sum or mean node's own kernel, with its additions
 * in ir/lower_reduce.c's order (lower_sum_layout says which order) but many
 * threads per output element, in place of one thread per output element
 * walking all of its elements (a batchnorm's channel sums over [N, C, H, W]
 * were 16 threads for 16 channels: 1.7 ms a pass on an H100).
 *
 * Which kernels: a sum or mean node's own kernel (not fused) that
 * lower_reduce lowers as
 *   SUM_LANES, with at least 64 elements per output (so in 16 partials:
 *     the 8 of a row of 16 to 31 have fewer): each output's
 *     elements are runs of contiguous reduced axes (of at least 32), the
 *     runs in row-major order of the other reduced axes (none for a row's
 *     sum; N for a batchnorm's over axes 0, 2, 3); element i of each run
 *     goes to partial i mod 16, each partial summed in order from 0, then
 *     the 16 added as a tree (p[l] += p[l + 8] for l < 8, then 4, 2, 1);
 *   SUM_RUNS: a sum over leading axes whose kept axes are contiguous (a
 *     bias gradient, [rows, C] -> [C]), each output one chain of adds
 *     from 0, row-major over the reduced axes.
 *
 * Two schedules of SUM_LANES (blocks of 256 threads, CuLaunch.block):
 *
 *   exact (the default): a half-warp per output, thread l of it computing
 *     partial l exactly as the Kernel IR does (in each run, elements l,
 *     l + 16, ... in order, the runs in order, from 0; consecutive threads
 *     read consecutive elements), then the same tree by __shfl_down_sync
 *     with deltas 8, 4, 2, 1: lane l < d adds lane l + d's value, as p[l] +=
 *     p[l + d].  Same additions in the same order: kir_eval's bits.  16
 *     threads per output instead of 1.
 *
 *   reassociated (cu_reassociate(s, true), a row's sum of at least
 *     REASSOC_MIN elements, no outer axes): a block per row, thread t
 *     summing elements t, t + 256, ... in order, a shuffle tree within each
 *     warp (deltas 16 .. 1), the 8 warps' sums through __shared__ memory and
 *     a last shuffle tree in warp 0.  256-way parallel, but a different
 *     summation order: the result is within rounding of kir_eval's (the
 *     error bound of both is a small multiple of n eps sum |x|), not its
 *     bits.  Deterministic: the order depends only on the row length, never
 *     on the grid or the device, so a run repeats its bits.  Off by default,
 *     because the backend promises kir_eval's bits (codegen/README.md); a
 *     caller that wants speed over bit-equality with the CPU turns it on.
 *
 * SUM_RUNS: a thread per output, its chain in a register (the Kernel IR
 * adds into the output buffer, through memory, which the generic path kept:
 * a load and a store per element, 97 us for a [4096, 64] bias gradient);
 * consecutive threads read consecutive elements.  The same adds: the bits.
 *
 * Whole-tensor sums are one output: one half-warp; a multi-block two-pass
 * reduction would be the next step for huge ones.
 */
#include <string.h>

#include "cuda_internal.h"

enum { LANES = 16, RED_THREADS = CU_GEMM_THREADS, WARPS = RED_THREADS / 32, MIN_CNT = 64,
       REASSOC_MIN = 4096 };

bool cu_reduce_describe(const Kernel *k, CuRed *r) {
  const Node *n = k->node;
  memset(r, 0, sizeof *r);
  if (!n || k->head || k->n_members > 1 || k->n_bufs != 2 || k->bufs[0].type != KT_F32 ||
      k->bufs[1].type != KT_F32)
    return false;
  SumScheme s = lower_sum_layout(n, &r->l);
  r->rows = shape_numel(&n->shape);
  r->mean = n->op == OP_MEAN;
  return (s == SUM_RUNS || (s == SUM_LANES && r->l.cnt >= MIN_CNT)) && r->rows > 0 &&
         k->bufs[0].numel == shape_numel(&n->in[0]->shape) && k->bufs[1].numel == r->rows;
}

/* out[row] = s (divided for a mean, by the f32 count as the IR's). */
static void store(Em *m, const CuRed *r, const char *indent) {
  if (r->mean)
    cu_line(m, "%s%s[kiln_row] = kiln_s / %.1ff;", indent, m->buf[1], (double)(float)r->l.cnt);
  else
    cu_line(m, "%s%s[kiln_row] = kiln_s;", indent, m->buf[1]);
}

/* kiln_xb: output kiln_row's first element in x (its kept axes' digits
 * times their strides). */
static void row_base(Em *m, const CuRed *r, const char *in) {
  const SumLayout *l = &r->l;
  if (l->nk == 0) {
    cu_line(m, "%sconst long long kiln_xb = 0;", in);
    return;
  }
  cu_line(m, "%slong long kiln_q = kiln_row, kiln_xb = 0;", in);
  for (int d = l->nk - 1; d > 0; d--) {
    cu_line(m, "%skiln_xb += kiln_q %% %lldLL * %lldLL;", in, (long long)l->kd[d],
            (long long)l->kx[d]);
    cu_line(m, "%skiln_q /= %lldLL;", in, (long long)l->kd[d]);
  }
  cu_line(m, "%skiln_xb += kiln_q * %lldLL;", in, (long long)l->kx[0]);
}

/* kiln_s += the row's elements that this thread adds, in the IR's order:
 * the outer reduced axes' positions row-major, and in each, the run's
 * elements kiln_first, kiln_first + step, ... (SUM_RUNS: the one element). */
static void row_adds(Em *m, const CuRed *r, const char *first, int step, const char *in) {
  const SumLayout *l = &r->l;
  char ind[64];
  snprintf(ind, sizeof ind, "%s", in);
  for (int d = 0; d < l->no; d++) {
    cu_line(m, "%sfor (long long kiln_o%d = 0; kiln_o%d < %lldLL; kiln_o%d++)", ind, d, d,
            (long long)l->od[d], d);
    strncat(ind, "  ", sizeof ind - strlen(ind) - 1);
  }
  char at[512] = "kiln_xb";
  for (int d = 0; d < l->no; d++) {
    size_t used = strlen(at);
    snprintf(at + used, sizeof at - used, " + kiln_o%d * %lldLL", d, (long long)l->ox[d]);
  }
  if (l->scheme == SUM_RUNS) {
    cu_line(m, "%skiln_s = kiln_s + %s[%s];", ind, m->buf[0], at);
    return;
  }
  cu_line(m, "%sfor (long long kiln_i = %s; kiln_i < %lldLL; kiln_i += %d)", ind, first,
          (long long)l->run, step);
  cu_line(m, "%s  kiln_s = kiln_s + %s[%s + kiln_i];", ind, m->buf[0], at);
}

static void exact(Em *m, const CuRed *r) {
  long long rows = r->rows;
  cu_line(m, "/* %lld outputs of %lld elements: a half-warp per output, the Kernel IR's 16 "
             "partial sums and tree, bit for bit (cuda_reduce.c) */", rows, (long long)r->l.cnt);
  cu_line(m, "const int kiln_lane = threadIdx.x %% %d, kiln_g = threadIdx.x / %d;", LANES, LANES);
  cu_line(m, "for (long long kiln_r0 = blockIdx.x * %dLL; kiln_r0 < %lldLL; kiln_r0 += "
             "(long long)gridDim.x * %d) {", RED_THREADS / LANES, rows, RED_THREADS / LANES);
  cu_line(m, "  const long long kiln_row = kiln_r0 + kiln_g;");
  cu_line(m, "  float kiln_s = 0.0f;");
  cu_line(m, "  if (kiln_row < %lldLL) {", rows);
  row_base(m, r, "    ");
  row_adds(m, r, "kiln_lane", LANES, "    ");
  cu_line(m, "  }");
  cu_line(m, "  /* p[l] += p[l + d]: every lane of the warp takes part (uniform loop) */");
  cu_line(m, "  for (int kiln_d = %d; kiln_d >= 1; kiln_d /= 2)", LANES / 2);
  cu_line(m, "    kiln_s = kiln_s + __shfl_down_sync(0xffffffffu, kiln_s, kiln_d);");
  cu_line(m, "  if (kiln_lane == 0 && kiln_row < %lldLL)", rows);
  store(m, r, "    ");
  cu_line(m, "}");
}

static void reassociated(Em *m, const CuRed *r) {
  long long rows = r->rows;
  cu_line(m, "/* %lld rows of %lld: a block per row, warp shuffles, then the warps' sums: "
             "reassociated (cuda_reduce.c) */", rows, (long long)r->l.cnt);
  cu_line(m, "__shared__ float kiln_ws[%d];", WARPS);
  cu_line(m, "for (long long kiln_row = blockIdx.x; kiln_row < %lldLL; kiln_row += gridDim.x) {",
          rows);
  cu_line(m, "  float kiln_s = 0.0f;");
  row_base(m, r, "  ");
  row_adds(m, r, "threadIdx.x", RED_THREADS, "  ");
  cu_line(m, "  for (int kiln_d = 16; kiln_d >= 1; kiln_d /= 2)");
  cu_line(m, "    kiln_s = kiln_s + __shfl_down_sync(0xffffffffu, kiln_s, kiln_d);");
  cu_line(m, "  if (threadIdx.x %% 32 == 0)");
  cu_line(m, "    kiln_ws[threadIdx.x / 32] = kiln_s;");
  cu_line(m, "  __syncthreads();");
  cu_line(m, "  if (threadIdx.x < 32) {");
  cu_line(m, "    kiln_s = threadIdx.x < %d ? kiln_ws[threadIdx.x] : 0.0f;", WARPS);
  cu_line(m, "    for (int kiln_d = %d; kiln_d >= 1; kiln_d /= 2)", WARPS / 2);
  cu_line(m, "      kiln_s = kiln_s + __shfl_down_sync(0xffffffffu, kiln_s, kiln_d);");
  cu_line(m, "    if (threadIdx.x == 0)");
  store(m, r, "      ");
  cu_line(m, "  }");
  cu_line(m, "  __syncthreads(); /* kiln_ws is the next row's */");
  cu_line(m, "}");
}

/* SUM_RUNS: a thread per output, its chain in a register. */
static void runs(Em *m, const CuRed *r) {
  cu_line(m, "/* %lld outputs of %lld elements: a thread per output, its adds in the Kernel "
             "IR's order, in a register (cuda_reduce.c) */", (long long)r->rows,
          (long long)r->l.cnt);
  cu_line(m, "for (long long kiln_row = blockIdx.x * %dLL + threadIdx.x; kiln_row < %lldLL; "
             "kiln_row += (long long)gridDim.x * %d) {", RED_THREADS, (long long)r->rows,
          RED_THREADS);
  cu_line(m, "  float kiln_s = 0.0f;");
  row_base(m, r, "  ");
  row_adds(m, r, NULL, 1, "  ");
  store(m, r, "  ");
  cu_line(m, "}");
}

void cu_reduce_body(Em *m, const CuRed *r, bool reassociate, CuLaunch *l) {
  cu_line(m, "if (blockDim.x != %du)", RED_THREADS);
  cu_line(m, "  __trap(); /* the rows' threads assume exactly this many per block */");
  bool re = reassociate && r->l.scheme == SUM_LANES && r->l.no == 0 && r->l.cnt >= REASSOC_MIN;
  int per = RED_THREADS / LANES; /* outputs per block */
  if (r->l.scheme == SUM_RUNS) {
    runs(m, r);
    per = RED_THREADS;
  } else if (re) {
    reassociated(m, r);
    per = 1;
  } else {
    exact(m, r);
  }
  l->threads = (r->rows + per - 1) / per * RED_THREADS;
  l->block = RED_THREADS;
}
