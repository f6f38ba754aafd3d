/*
 * kbench.h: what benchmarks of compiled programs share (`kiln bench`,
 * bench/kprof.c): seeded random values for a graph's inputs, and a
 * compiled program's step run one kernel at a time with a clock read
 * around each call.
 *
 * perf cannot see inside JIT-compiled code, so a kernel's time is taken by
 * calling it alone: the same kernels, in the same order, on the same
 * buffers as the program's step function (program_calls), looked up in the
 * program's own JIT.  The step as a whole is timed with program_run.
 *
 *   Program p;
 *   program_compile(&p, g, roots, n, &po, &co, err, sizeof err);
 *   KBench b;
 *   kbench_init(&b, &p, err, sizeof err);
 *   ... bind parameters, fill inputs ...
 *   double *t = calloc(b.n, sizeof *t);
 *   kbench_run(&b, step, t);                 // t[i]: seconds of kernel i
 *   ... b.name[i], b.bytes[i], b.flops[i] ...
 */
#ifndef KILN_KBENCH_H
#define KILN_KBENCH_H

#include "program.h"

typedef struct KBench {
  Program *p;
  int n;             /* the step's kernels, in the order it calls them */
  CgCall *calls;     /* each kernel and where its buffers are */
  CgKernelFn *fn;
  void ***bufs;      /* per kernel: its buffers' data pointers */
  const char **name; /* per kernel: its function's name */
  int *n_nodes;      /* per kernel: the nodes it computes */
  int64_t *bytes;    /* per kernel: the sizes of its buffers, summed (bytes moved) */
  double *flops;     /* per kernel: the FLOPs of its nodes (ir/stats.c) */
} KBench;

/* Finds the compiled kernels of p's step; everything lives in the graph's
 * arena.  False with a message if one cannot be found. */
bool kbench_init(KBench *b, Program *p, char *err, size_t errlen);
/* One step, kernel by kernel (preparing weight-derived values first when
 * program_run would): seconds[i] is the time of kernel i. */
void kbench_run(KBench *b, int64_t step, double *seconds);
/* What kbench_init reports for kernel k: the sizes of its buffers, summed
 * (bytes moved), the FLOPs of its nodes and their number.  (kiln bench
 * --target cuda reports the same for the device's kernels.) */
void kbench_kernel_cost(const Kernel *k, int64_t *bytes, double *flops, int *n_nodes);

/* Fills input `in` of g with seeded values (the same for the same seed and
 * input name): f32 ~ N(0, 1); i32 uniform over the range its reader
 * accepts (class labels below the class count, ids below the vocabulary). */
void kbench_random_fill(const Graph *g, const Node *in, uint64_t seed, void *data);

#endif
