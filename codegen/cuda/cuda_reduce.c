/*
 * cuda_reduce.c: f32 sums and means over trailing axes (a whole tensor's
 * sum, a row's sum or mean) as warp-shuffle reductions, in place of one
 * thread per output element walking the whole row.
 *
 * Which kernels: a sum or mean node's own kernel (not fused) whose reduced
 * axes are the trailing ones, with rows of at least 64 elements: what
 * ir/lower_reduce.c lowers with lanes_sum (which it also uses for rows of
 * 32 to 63; those keep the generic path here), 16 partial sums, element i of
 * the row going to partial i mod 16, each summed in order from 0, then
 * added as a tree (p[l] += p[l + 8] for l < 8, then 4, 2, 1).
 *
 * Two schedules (blocks of 256 threads, CuLaunch.block):
 *
 *   exact (the default): a half-warp per row, thread l of it computing
 *     partial l exactly as the Kernel IR does (elements l, l + 16, ...
 *     in order, from 0; consecutive threads read consecutive elements),
 *     then the same tree by __shfl_down_sync with deltas 8, 4, 2, 1: lane
 *     l < d adds lane l + d's value, as p[l] += p[l + d].  Same additions
 *     in the same order: kir_eval's bits.  16 threads per row instead of 1.
 *
 *   reassociated (cu_reassociate(s, true), rows of at least REASSOC_MIN
 *     elements): a block per row, thread t summing elements t, t + 256,
 *     ... in order, a shuffle tree within each warp (deltas 16 .. 1), the
 *     8 warps' sums through __shared__ memory and a last shuffle tree in
 *     warp 0.  256-way parallel, but a different summation order: the
 *     result is within rounding of kir_eval's (the error bound of both is
 *     a small multiple of n eps sum |x|), not its bits.  Deterministic: the
 *     order depends only on the row length, never on the grid or the
 *     device, so a run repeats its bits.  Off by default, because the
 *     backend promises kir_eval's bits (codegen/README.md); a caller that
 *     wants speed over bit-equality with the CPU turns it on.
 *
 * Whole-tensor sums are one row: one block, so at most 256 threads; a
 * multi-block two-pass reduction would be the next step for huge ones.
 */
#include <string.h>

#include "cuda_internal.h"

enum { LANES = 16, RED_THREADS = CU_GEMM_THREADS, WARPS = RED_THREADS / 32, MIN_RUN = 64,
       REASSOC_MIN = 4096 };

bool cu_reduce_describe(const Kernel *k, CuRed *r) {
  const Node *n = k->node;
  if (!n || (n->op != OP_SUM && n->op != OP_MEAN) || n->dtype != DT_F32 || k->head ||
      k->n_members > 1 || k->n_bufs != 2 || k->bufs[0].type != KT_F32 ||
      k->bufs[1].type != KT_F32 || n->n_in != 1)
    return false;
  const Shape *xs = &n->in[0]->shape;
  bool red[MAX_RANK] = {0};
  for (int i = 0; i < n->at.n_axes; i++)
    red[n->at.axes[i]] = true;
  int first = xs->rank; /* the reduced axes must be xs's last ones */
  while (first > 0 && red[first - 1])
    first--;
  for (int d = 0; d < first; d++)
    if (red[d])
      return false;
  int64_t cnt = 1, rows = 1;
  for (int d = 0; d < xs->rank; d++)
    *(d < first ? &rows : &cnt) *= xs->dim[d];
  if (first == xs->rank || cnt < MIN_RUN || rows != shape_numel(&n->shape) || rows == 0 ||
      k->bufs[0].numel != rows * cnt || k->bufs[1].numel != rows)
    return false;
  memset(r, 0, sizeof *r);
  r->rows = rows;
  r->cnt = cnt;
  r->mean = n->op == OP_MEAN;
  return true;
}

/* out[row] = s (divided for a mean, by the f32 count as the IR's). */
static void store(Em *m, const CuRed *r, const char *indent) {
  if (r->mean)
    cu_line(m, "%s%s[kiln_row] = kiln_s / %.1ff;", indent, m->buf[1], (double)(float)r->cnt);
  else
    cu_line(m, "%s%s[kiln_row] = kiln_s;", indent, m->buf[1]);
}

static void exact(Em *m, const CuRed *r) {
  long long rows = r->rows, cnt = r->cnt;
  cu_line(m, "/* %lld rows of %lld: a half-warp per row, the Kernel IR's 16 partial sums and "
             "tree, bit for bit (cuda_reduce.c) */", rows, cnt);
  cu_line(m, "const int kiln_lane = threadIdx.x %% %d, kiln_g = threadIdx.x / %d;", LANES, LANES);
  cu_line(m, "for (long long kiln_r0 = blockIdx.x * %dLL; kiln_r0 < %lldLL; kiln_r0 += "
             "(long long)gridDim.x * %d) {", RED_THREADS / LANES, rows, RED_THREADS / LANES);
  cu_line(m, "  const long long kiln_row = kiln_r0 + kiln_g;");
  cu_line(m, "  float kiln_s = 0.0f;");
  cu_line(m, "  if (kiln_row < %lldLL)", rows);
  cu_line(m, "    for (long long kiln_i = kiln_lane; kiln_i < %lldLL; kiln_i += %d)", cnt, LANES);
  cu_line(m, "      kiln_s = kiln_s + %s[kiln_row * %lldLL + kiln_i];", m->buf[0], cnt);
  cu_line(m, "  /* p[l] += p[l + d]: every lane of the warp takes part (uniform loop) */");
  cu_line(m, "  for (int kiln_d = %d; kiln_d >= 1; kiln_d /= 2)", LANES / 2);
  cu_line(m, "    kiln_s = kiln_s + __shfl_down_sync(0xffffffffu, kiln_s, kiln_d);");
  cu_line(m, "  if (kiln_lane == 0 && kiln_row < %lldLL)", rows);
  store(m, r, "    ");
  cu_line(m, "}");
}

static void reassociated(Em *m, const CuRed *r) {
  long long rows = r->rows, cnt = r->cnt;
  cu_line(m, "/* %lld rows of %lld: a block per row, warp shuffles, then the warps' sums: "
             "reassociated (cuda_reduce.c) */", rows, cnt);
  cu_line(m, "__shared__ float kiln_ws[%d];", WARPS);
  cu_line(m, "for (long long kiln_row = blockIdx.x; kiln_row < %lldLL; kiln_row += gridDim.x) {",
          rows);
  cu_line(m, "  float kiln_s = 0.0f;");
  cu_line(m, "  for (long long kiln_i = threadIdx.x; kiln_i < %lldLL; kiln_i += %d)", cnt,
          RED_THREADS);
  cu_line(m, "    kiln_s = kiln_s + %s[kiln_row * %lldLL + kiln_i];", m->buf[0], cnt);
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

void cu_reduce_body(Em *m, const CuRed *r, bool reassociate, CuLaunch *l) {
  cu_line(m, "if (blockDim.x != %du)", RED_THREADS);
  cu_line(m, "  __trap(); /* the rows' threads assume exactly this many per block */");
  bool re = reassociate && r->cnt >= REASSOC_MIN;
  if (re)
    reassociated(m, r);
  else
    exact(m, r);
  int per = re ? 1 : RED_THREADS / LANES; /* rows per block */
  l->threads = (r->rows + per - 1) / per * RED_THREADS;
  l->block = RED_THREADS;
}
