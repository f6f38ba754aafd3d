/*
 * gemm.c: kiln's compiled matmul against OpenBLAS sgemm, side by side in
 * one process (docs/benchmarks.md, "CPU code generation").
 *
 * The matmul is a graph node lowered (ir/lower_nn.c) and compiled by
 * codegen/llvm exactly as `kiln run` compiles it (O3, host CPU; the GEMM
 * schedule of cg_gemm.c), JIT-compiled, and called through its kernel
 * entry point.  OpenBLAS is cblas_sgemm, row-major, beta = 0.
 *
 * Timing: B blocks; in each, the two engines take turns (the order
 * alternating between blocks), each doing 2 warm-up calls and R timed
 * calls, with a 100 ms pause between engines so neither's spinning
 * threads steal the other's cores.  Reported: for each engine the median
 * over all timed calls, and the median of the per-block medians; GFLOP/s
 * is 2 M N K / time.  Both use the same thread count: rt_set_threads and
 * openblas_set_num_threads.
 *
 * Build and run: bench/gemm.sh (compiles this file against build/).
 *   gemm [-t THREADS] [-n M N K] [-r R] [-b B] [--ta] [--tb] [--naive]
 * --naive compiles the plain loop nest instead (CgOpts.no_schedule).
 */
#define _DEFAULT_SOURCE
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cg.h"
#include "rt_pool.h"

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  int64_t m = 1024, n = 1024, kk = 1024;
  int threads = 1, reps = 11, blocks = 5;
  bool ta = false, tb = false, naive = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 3 < argc)
      m = atoll(argv[i + 1]), n = atoll(argv[i + 2]), kk = atoll(argv[i + 3]), i += 3;
    else if (!strcmp(argv[i], "-r") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-b") && i + 1 < argc)
      blocks = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ta"))
      ta = true;
    else if (!strcmp(argv[i], "--tb"))
      tb = true;
    else if (!strcmp(argv[i], "--naive"))
      naive = true;
    else {
      fprintf(stderr, "usage: gemm [-t THREADS] [-n M N K] [-r REPS] [-b BLOCKS] [--ta] [--tb] "
                      "[--naive]\n");
      return 2;
    }
  }
  threads = rt_set_threads(threads);
  openblas_set_num_threads(threads);

  Arena *ar = arena_new();
  Graph *g = graph_new(ar, "gemm");
  Loc loc = {0};
  Node *a = graph_input(g, "a", DT_F32, shape_make(2, ta ? (int64_t[]){kk, m} : (int64_t[]){m, kk}), loc);
  Node *b = graph_input(g, "b", DT_F32, shape_make(2, tb ? (int64_t[]){n, kk} : (int64_t[]){kk, n}), loc);
  Attrs at;
  attrs_default(OP_MATMUL, &at);
  at.ta = ta, at.tb = tb;
  Node *in[] = {a, b}, *c = graph_add_checked(g, OP_MATMUL, in, 2, &at, loc);
  Kernel *k = lower_node(ar, c);
  char err[2048];
  double t0 = now();
  Cg *cg = cg_new("gemm", &(CgOpts){.opt_level = 3, .verify = true, .no_schedule = naive}, err,
                  sizeof err);
  if (!cg || !cg_kernel(cg, k, err, sizeof err) || !cg_optimize(cg, err, sizeof err)) {
    fprintf(stderr, "compiling: %s\n", err);
    return 1;
  }
  CgJit *j = cg_jit(cg, err, sizeof err);
  CgKernelFn fn = j ? cg_jit_kernel(j, k->name) : NULL;
  if (!fn) {
    fprintf(stderr, "jit: %s\n", j ? cg_jit_error(j) : err);
    return 1;
  }
  double compile = now() - t0;

  float *A = aligned_alloc(64, (size_t)(m * kk) * 4 + 64), *B = aligned_alloc(64, (size_t)(kk * n) * 4 + 64);
  float *C = aligned_alloc(64, (size_t)(m * n) * 4 + 64), *R = aligned_alloc(64, (size_t)(m * n) * 4 + 64);
  for (int64_t i = 0; i < m * kk; i++)
    A[i] = (float)((i * 7) % 13) / 13.f - 0.5f;
  for (int64_t i = 0; i < kk * n; i++)
    B[i] = (float)((i * 5) % 11) / 11.f - 0.5f;
  void *bufs[] = {A, B, C};
#define BLAS()                                                                                 \
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,   \
              (int)m, (int)n, (int)kk, 1.f, A, ta ? (int)m : (int)kk, B, tb ? (int)kk : (int)n, \
              0.f, R, (int)n)
  fn(bufs);
  BLAS();
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < m * n; i++) {
    worst = fmax(worst, fabs((double)C[i] - R[i]));
    scale = fmax(scale, fabs((double)R[i]));
  }

  double *all[2], *blk[2];
  for (int e = 0; e < 2; e++) {
    all[e] = malloc(sizeof(double) * (size_t)(reps * blocks));
    blk[e] = malloc(sizeof(double) * (size_t)blocks);
  }
  double *tmp = malloc(sizeof(double) * (size_t)reps);
  for (int bl = 0; bl < blocks; bl++) {
    for (int turn = 0; turn < 2; turn++) {
      int e = (turn + bl) % 2; /* 0 kiln, 1 OpenBLAS; alternating who goes first */
      usleep(100000);
      for (int w = 0; w < 2; w++)
        e ? (void)BLAS() : fn(bufs);
      for (int r = 0; r < reps; r++) {
        double s = now();
        if (e)
          BLAS();
        else
          fn(bufs);
        tmp[r] = all[e][bl * reps + r] = now() - s;
      }
      blk[e][bl] = median(tmp, reps);
    }
  }
  double flop = 2.0 * (double)m * (double)n * (double)kk;
  double tk = median(all[0], reps * blocks), to = median(all[1], reps * blocks);
  double bk = median(blk[0], blocks), bo = median(blk[1], blocks);
  printf("matmul %lldx%lldx%lld%s%s threads=%d (OpenBLAS core %s) kiln%s compile %.0f ms, "
         "max |kiln - openblas| = %.3g (scale %.3g)\n",
         (long long)m, (long long)n, (long long)kk, ta ? " ta" : "", tb ? " tb" : "", threads,
         openblas_get_corename(), naive ? " (naive loops)" : "", 1e3 * compile, worst, scale);
  printf("  kiln     %8.1f GFLOP/s  (median of %d calls; of block medians %.1f; best %.1f)\n",
         flop / tk / 1e9, reps * blocks, flop / bk / 1e9, flop / all[0][0] / 1e9);
  printf("  openblas %8.1f GFLOP/s  (median of %d calls; of block medians %.1f; best %.1f)\n",
         flop / to / 1e9, reps * blocks, flop / bo / 1e9, flop / all[1][0] / 1e9);
  printf("  kiln / openblas = %.2f\n", to / tk);
  cg_jit_free(j);
  cg_free(cg);
  arena_free(ar);
  rt_pool_shutdown();
  return 0;
}
