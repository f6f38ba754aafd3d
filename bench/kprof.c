/*
 * kprof.c: where a compiled model's step spends its time, kernel by kernel.
 *
 * perf cannot see inside JIT-compiled code here (no symbols for it, and
 * on the KVM guests of docs/benchmarks.md no hardware counters), so this
 * builds the step the way codegen/program.c does (plan, one kernel per
 * scheduled node, compiled at O3 by codegen/llvm) but calls the kernels
 * one at a time, timing each: per kernel, the median over the steps of its
 * time, and those medians summed per op.  The whole step is also timed
 * without the per-kernel clock reads, which is what `kiln train` pays per
 * batch (minus data loading and the progress line).
 *
 *   kprof MODEL.kiln [-t THREADS] [-s STEPS] [--infer] [--no-prepack] [--naive]
 *         [-D NAME=VALUE]... [-k N]
 * (--infer applies passes/prepack.c as `kiln run` does, unless --no-prepack.)
 *
 * Inputs are filled with uniform [0, 1) values (i32 inputs with i mod 10,
 * class labels), parameters with small uniform values; the updates are
 * applied after each step, so the values stay those of a training run.
 * -k N prints the N slowest kernels (default 25); KPROF_IR=FILE writes the
 * optimized LLVM IR there.  Build: bench/kprof.sh.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cg.h"
#include "frontend.h"
#include "passes.h"
#include "rt_pool.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct Call {
  Kernel *k;
  CgKernelFn fn;
  void **bufs;
  double *t; /* per step */
  double med;
} Call;

static int by_med(const void *a, const void *b) {
  const Call *x = a, *y = b;
  return x->med < y->med ? 1 : x->med > y->med ? -1 : 0;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int threads = 2, steps = 50, top = 25;
  bool infer = false, naive = false, prepack = true;
  Define defs[16];
  int n_defs = 0;
  Arena *a = arena_new();
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-s") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-k") && i + 1 < argc)
      top = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-D") && i + 1 < argc && n_defs < 16)
      define_parse(a, argv[++i], &defs[n_defs++]);
    else if (!strcmp(argv[i], "--infer"))
      infer = true;
    else if (!strcmp(argv[i], "--no-prepack"))
      prepack = false;
    else if (!strcmp(argv[i], "--naive"))
      naive = true;
    else if (argv[i][0] != '-' && !path)
      path = argv[i];
    else {
      fprintf(stderr, "usage: kprof MODEL.kiln [-t THREADS] [-s STEPS] [--infer] [--no-prepack] "
                      "[--naive] [-D NAME=VALUE]... [-k N]\n");
      return 2;
    }
  }
  if (!path) {
    fprintf(stderr, "kprof: no model file\n");
    return 2;
  }
  threads = rt_set_threads(threads);
  Diag d;
  diag_init(&d);
  Source *src = source_from_file(a, &d, path);
  CompileOpts o = {.defines = defs, .n_defines = n_defs, .training = !infer};
  Graph *g = src ? frontend_compile(a, &d, src, &o) : NULL;
  if (!g) {
    fprintf(stderr, "kprof: %s\n", d.msg ? d.msg : "cannot compile");
    return 1;
  }
  TrainStep ts = {.n_roots = g->n_outputs};
  ts.roots = arena_alloc(a, sizeof(Node *) * (size_t)(ts.n_roots + 1));
  for (int i = 0; i < ts.n_roots; i++)
    ts.roots[i] = g->outputs[i].node;
  if (!infer)
    build_train_step(g, &d, &ts);
  else if (prepack)
    pass_prepack(g); /* as kiln run does: transposed weights made once, not timed */
  Plan p;
  plan_build(g, ts.roots, ts.n_roots, &(PlanOpts){0}, &p);

  char err[4096];
  double t0 = now();
  Cg *cg = cg_new(g->name, &(CgOpts){.opt_level = 3, .no_schedule = naive}, err, sizeof err);
  Call *calls = calloc((size_t)p.n_order, sizeof *calls);
  int nc = 0;
  for (int s = 0; s < p.n_order; s++) {
    Node *n = p.order[s];
    if (n->derived) /* made once by the prepare step, not per call */
      continue;
    Kernel *k = n->op == OP_CONST ? lower_full(a, n) : lower_node(a, n);
    if (!k)
      continue;
    k->name = arena_fmt(a, "%s_%d", k->name, n->id);
    if (!cg_kernel(cg, k, err, sizeof err)) {
      fprintf(stderr, "kprof: %s\n", err);
      return 1;
    }
    calls[nc++].k = k;
  }
  if (!cg_optimize(cg, err, sizeof err)) {
    fprintf(stderr, "kprof: %s\n", err);
    return 1;
  }
  if (getenv("KPROF_IR")) { /* the optimized module, for reading */
    char *ir = cg_print_ir(cg);
    FILE *f = fopen(getenv("KPROF_IR"), "w");
    if (f)
      fputs(ir, f), fclose(f);
    free(ir);
  }
  CgJit *j = cg_jit(cg, err, sizeof err);
  if (!j) {
    fprintf(stderr, "kprof: %s\n", err);
    return 1;
  }

  /* memory: the planned arena, parameter buffers, the step counter */
  char *arena = aligned_alloc(64, (size_t)p.arena + 64);
  memset(arena, 0, (size_t)p.arena + 64);
  void **own = calloc((size_t)g->n_nodes, sizeof *own);
  int64_t counter = 1;
  uint64_t rng = 12345;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    bool in_arena = p.time[i] >= 0 && plan_in_arena(&p, n);
    void *at = in_arena ? arena + p.offset[i] : NULL;
    if (node_persistent(n)) { /* weight-derived values stay zeros: no kernel timed makes them */
      at = own[i] = aligned_alloc(64, (size_t)node_bytes(n) + 64);
      memset(at, 0, (size_t)node_bytes(n));
    }
    if (!at || (n->op != OP_PARAM && n->op != OP_INPUT))
      continue;
    int64_t cnt = shape_numel(&n->shape);
    for (int64_t e = 0; e < cnt; e++) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      float u = (float)(rng >> 40) * 0x1.0p-24f;
      if (n->dtype == DT_I32)
        ((int32_t *)at)[e] = (int32_t)(e % 10);
      else
        ((float *)at)[e] = n->op == OP_PARAM ? 0.1f * (u - 0.5f) : u;
    }
  }
  if (ts.lr)
    *(float *)(arena + p.offset[ts.lr->id]) = 0.01f;
  for (int c = 0; c < nc; c++) {
    Kernel *k = calls[c].k;
    calls[c].fn = cg_jit_kernel(j, k->name);
    if (!calls[c].fn) {
      fprintf(stderr, "kprof: %s\n", cg_jit_error(j));
      return 1;
    }
    calls[c].bufs = calloc((size_t)k->n_bufs, sizeof(void *));
    for (int b = 0; b < k->n_bufs; b++) {
      int id = k->bufs[b].node;
      calls[c].bufs[b] = id == KBUF_STEP ? (void *)&counter
                         : plan_in_arena(&p, g->nodes[id]) ? (void *)(arena + p.offset[id])
                                                           : own[id];
    }
    calls[c].t = calloc((size_t)steps, sizeof(double));
  }
  double compile = now() - t0;

  double *whole = calloc((size_t)steps, sizeof(double));
  for (int rep = 0; rep < 2; rep++) {
    for (int s = -3; s < steps; s++) { /* 3 warm-up steps */
      double ts0 = now();
      for (int c = 0; c < nc; c++) {
        double c0 = rep ? now() : 0;
        calls[c].fn(calls[c].bufs);
        if (rep && s >= 0)
          calls[c].t[s] = now() - c0;
      }
      if (!rep && s >= 0)
        whole[s] = now() - ts0;
      for (int u = 0; u < g->n_updates; u++) {
        const Node *tg = g->updates[u].target, *v = g->updates[u].value;
        memcpy(own[tg->id], arena + p.offset[v->id], (size_t)node_bytes(tg));
      }
      counter++;
    }
  }
  qsort(whole, (size_t)steps, sizeof *whole, cmp_d);
  double sum = 0, by_op[OP_COUNT + 1] = {0}, fl_op[OP_COUNT + 1] = {0};
  for (int c = 0; c < nc; c++) {
    qsort(calls[c].t, (size_t)steps, sizeof(double), cmp_d);
    calls[c].med = calls[c].t[steps / 2];
    sum += calls[c].med;
    int op = calls[c].k->node ? (int)calls[c].k->node->op : OP_COUNT;
    by_op[op] += calls[c].med;
    fl_op[op] += calls[c].k->node ? node_flops(calls[c].k->node) : 0;
  }
  printf("%s (%s), %d threads, %d kernels, compiled in %.2f s%s\n", path,
         infer ? "inference" : "training step", threads, nc, compile,
         naive ? ", plain loop nests" : "");
  printf("step: median %.3f ms (min %.3f); sum of per-kernel medians %.3f ms\n",
         1e3 * whole[steps / 2], 1e3 * whole[0], 1e3 * sum);
  printf("\nby op                     ms/step    share   GFLOP/s\n");
  for (int pass = 0; pass < OP_COUNT + 1; pass++) {
    int best = -1;
    for (int op = 0; op <= OP_COUNT; op++)
      if (by_op[op] > 0 && (best < 0 || by_op[op] > by_op[best]))
        best = op;
    if (best < 0)
      break;
    printf("  %-22s %9.3f %7.1f%% %9.1f\n", best < OP_COUNT ? op_name((Op)best) : "(other)",
           1e3 * by_op[best], 100 * by_op[best] / sum, fl_op[best] / by_op[best] / 1e9);
    by_op[best] = 0;
  }
  qsort(calls, (size_t)nc, sizeof *calls, by_med);
  printf("\nslowest kernels                      ms/step    share   GFLOP/s  shape\n");
  for (int c = 0; c < nc && c < top; c++) {
    const Node *n = calls[c].k->node;
    char shape[128] = "";
    if (n) {
      int w = 0;
      for (int r = 0; r < n->shape.rank && w < 100; r++)
        w += snprintf(shape + w, sizeof shape - (size_t)w, "%s%lld", r ? "x" : "",
                      (long long)n->shape.dim[r]);
    }
    printf("  %-34s %9.3f %7.1f%% %9.1f  %s\n", calls[c].k->name, 1e3 * calls[c].med,
           100 * calls[c].med / sum, n ? node_flops(n) / calls[c].med / 1e9 : 0.0, shape);
  }
  cg_jit_free(j);
  cg_free(cg);
  rt_pool_shutdown();
  return 0;
}
