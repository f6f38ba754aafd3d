/*
 * cuda_bench.h: one build of `kiln bench --target cuda` (cli/cuda_bench.c),
 * the device's twin of what cmd_bench.c does on the CPU with a Program and
 * codegen/kbench.h: a graph compiled for the device (a CuProgram, as
 * `kiln run --target cuda` compiles it), its step run whole or kernel by
 * kernel and timed with CUDA events (runtime/rt_cuda.h), and what each
 * kernel moves and computes (kbench_kernel_cost, the CPU bench's numbers).
 *
 *   CuBench b;
 *   cuda_bench_init(&b, c, g, roots, n, &po);   // device errors: the user's (exit 1)
 *   cuda_bench_bind_param(&b, param, host);     // each parameter
 *   cuda_bench_upload(&b, input, host);         // each input, before each step
 *   cuda_bench_run(&b, step);                   // once: uploads parameters, prepares
 *   ... cuda_bench_value(&b, root) ...
 *   double s = cuda_bench_step(&b, step);       // the whole step, device time
 *   cuda_bench_kernels(&b, step, seconds);      // seconds[i]: kernel i alone
 *   cuda_bench_free(&b);
 *
 * Run on an H100 (tests/gpu.sh, bench/gpu_lease.sh) and on tests/fake_cuda.c
 * (tests/cuda_run.sh).
 */
#ifndef KILN_CUDA_BENCH_H
#define KILN_CUDA_BENCH_H

#include "cli.h"

typedef struct CuBench {
  Cli *c;
  CuProgram cu;
  bool ready;        /* cu needs cu_program_free */
  int n;             /* the step's kernels (kernel calls), in order */
  const char **name; /* per kernel, as KBench's: its function's name */
  int *n_nodes;      /* the nodes it computes */
  int64_t *bytes;    /* the sizes of its buffers, summed (bytes moved) */
  double *flops;     /* the FLOPs of its nodes */
  int *first;        /* its first launch in cu.step; first[n] = cu.n_step */
  RtCuEvent **ev;    /* [2 i], [2 i + 1] around kernel i; [2 n], [2 n + 1] around the step */
} CuBench;

/* Compiles g's step for roots on --target cuda's device with po's plan. */
void cuda_bench_init(CuBench *b, Cli *c, Graph *g, Node *const *roots, int n,
                     const PlanOpts *po);
void cuda_bench_bind_param(CuBench *b, const Node *param, void *host);
/* Copies n's value in now (nothing when the step does not read n). */
void cuda_bench_upload(CuBench *b, const Node *n, const void *host);
/* One step as `kiln run --target cuda` runs it (parameters uploaded and the
 * weight-derived values prepared first when they were bound since). */
void cuda_bench_run(CuBench *b, int64_t step);
/* The step's launches between two events: its device time in seconds.
 * The parameters must be on the device (a cuda_bench_run first). */
double cuda_bench_step(CuBench *b, int64_t step);
/* The step kernel by kernel, each between two events: seconds[i]. */
void cuda_bench_kernels(CuBench *b, int64_t step, double *seconds);
/* n's value after a step, copied out (arena-allocated). */
void *cuda_bench_value(CuBench *b, const Node *n);
void cuda_bench_apply_updates(CuBench *b);
void cuda_bench_free(CuBench *b); /* not the device */

#endif
