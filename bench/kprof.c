/*
 * kprof.c: where a compiled model's step spends its time, kernel by kernel.
 *
 * perf cannot see inside JIT-compiled code here (no symbols for it, and
 * on the KVM guests of docs/benchmarks.md no hardware counters), so this
 * compiles the step the way `kiln run` does (codegen/program.c: plan,
 * fusion, one kernel per group, O3) and calls its kernels one at a time,
 * timing each (codegen/kbench.c): per kernel, the median over the steps of
 * its time, and those medians summed per op (a fused kernel's anchor's).
 * The whole step is also timed without the per-kernel clock reads, which
 * is what `kiln train` pays per batch (minus data loading and the progress
 * line).  `kiln bench` does the same for a fused and an unfused build side
 * by side; this one ranks one build's kernels.
 *
 *   kprof MODEL.kiln [-t THREADS] [-s STEPS] [--infer] [--no-prepack] [--naive]
 *         [--keep-denormals] [--fuse LIST] [-D NAME=VALUE]... [-k N]
 * (--infer applies passes/prepack.c as `kiln run` does, unless --no-prepack;
 * --fuse as kiln's, default all.)
 *
 * Inputs hold seeded random values (kbench_random_fill: as `kiln run
 * --random-inputs`), parameters their seeded initialization; the updates
 * are applied after each step, so the values stay those of a training run.
 * -k N prints the N slowest kernels (default 25).  The optimized LLVM IR:
 * `kiln build MODEL --emit llvm`.  Build: bench/kprof.sh.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend.h"
#include "kbench.h"
#include "rt_data.h"
#include "rt_pool.h"

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct Row {
  int k;      /* kernel index */
  double med; /* median seconds */
} Row;

static int by_med(const void *a, const void *b) {
  const Row *x = a, *y = b;
  return x->med < y->med ? 1 : x->med > y->med ? -1 : 0;
}

static int usage(void) {
  fprintf(stderr, "usage: kprof MODEL.kiln [-t THREADS] [-s STEPS] [--infer] [--no-prepack] "
                  "[--naive] [--keep-denormals] [--fuse LIST] [-D NAME=VALUE]... [-k N]\n");
  return 2;
}

/* Parameters initialized, inputs random (lr a small constant), then the
 * inputs' values saved: a planned arena may reuse their bytes. */
static void **fill(Program *p, const TrainStep *ts) {
  Graph *g = p->g;
  void **saved = calloc((size_t)g->n_nodes, sizeof *saved);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    size_t bytes = (size_t)node_bytes(n);
    if (n->op == OP_PARAM) {
      void *data = calloc(1, bytes + 1);
      param_init_fill(n, 0, data);
      program_bind_param(p, n, data);
    } else if (n->op == OP_INPUT && p->plan.time[i] >= 0 && n != ts->lr && n != ts->step) {
      saved[i] = malloc(bytes + 1);
      kbench_random_fill(g, n, 0, saved[i]);
    }
  }
  return saved;
}

static void feed(Program *p, const TrainStep *ts, void **saved, int64_t step) {
  for (int i = 0; i < p->g->n_nodes; i++)
    if (saved[i])
      memcpy(program_value(p, p->g->nodes[i]), saved[i], (size_t)node_bytes(p->g->nodes[i]));
  if (ts->lr && program_value(p, ts->lr))
    *(float *)program_value(p, ts->lr) = 0.01f;
  if (ts->step && program_value(p, ts->step))
    *(float *)program_value(p, ts->step) = (float)(step + 1);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int threads = 2, steps = 50, top = 25;
  bool infer = false, naive = false, prepack = true, keep = false;
  PlanOpts po = {0};
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
    else if (!strcmp(argv[i], "--fuse") && i + 1 < argc && fuse_opts_parse(argv[i + 1], &po.fuse))
      i++;
    else if (!strcmp(argv[i], "--infer"))
      infer = true;
    else if (!strcmp(argv[i], "--no-prepack"))
      prepack = false;
    else if (!strcmp(argv[i], "--naive"))
      naive = true;
    else if (!strcmp(argv[i], "--keep-denormals"))
      keep = true;
    else if (argv[i][0] != '-' && !path)
      path = argv[i];
    else
      return usage();
  }
  if (!path || steps < 1)
    return usage();
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
  if (!po.fuse.no_view) /* as kiln's cli_train_passes and cli_inference_passes */
    pass_matmul_views(g);
  if (!po.fuse.no_batchsum)
    pass_matmul_batch_sums(g);
  if (!infer) {
    pass_step_transposes(g);
    if (!po.fuse.no_deriv)
      pass_share_derivatives(g);
  }
  else if (prepack) { /* as kiln run does: weights folded and transposed once, not timed */
    pass_fold_affine(g);
    pass_prepack(g);
  }

  char err[4096];
  Program p;
  KBench kb;
  CgOpts co = {.opt_level = 3, .no_schedule = naive, .keep_denormals = keep};
  if (!program_compile(&p, g, ts.roots, ts.n_roots, &po, &co, err, sizeof err) ||
      !kbench_init(&kb, &p, err, sizeof err)) {
    fprintf(stderr, "kprof: %s\n", err);
    return 1;
  }
  void **saved = fill(&p, &ts);
  double *whole = calloc((size_t)steps, sizeof(double));
  double *t = calloc((size_t)steps * (size_t)kb.n + 1, sizeof(double));
  double *warm = calloc((size_t)kb.n + 1, sizeof(double));
  int64_t counter = 0;
  for (int rep = 0; rep < 2; rep++) {
    for (int s = -3; s < steps; s++) { /* 3 warm-up steps */
      feed(&p, &ts, saved, counter);
      double t0 = rt_now();
      if (rep)
        kbench_run(&kb, counter, s >= 0 ? &t[(size_t)s * (size_t)kb.n] : warm);
      else
        program_run(&p, counter);
      if (!rep && s >= 0)
        whole[s] = rt_now() - t0;
      program_apply_updates(&p);
      counter++;
    }
  }
  qsort(whole, (size_t)steps, sizeof *whole, cmp_d);
  Row *rows = calloc((size_t)kb.n + 1, sizeof *rows);
  double *col = calloc((size_t)steps, sizeof(double));
  double sum = 0, by_op[OP_COUNT + 1] = {0}, fl_op[OP_COUNT + 1] = {0};
  for (int k = 0; k < kb.n; k++) {
    for (int s = 0; s < steps; s++)
      col[s] = t[(size_t)s * (size_t)kb.n + (size_t)k];
    qsort(col, (size_t)steps, sizeof(double), cmp_d);
    rows[k] = (Row){k, col[steps / 2]};
    sum += rows[k].med;
    const Node *n = kb.calls[k].k->node;
    int op = n ? (int)n->op : OP_COUNT;
    by_op[op] += rows[k].med;
    fl_op[op] += kb.flops[k];
  }
  printf("%s (%s), %d threads, %d kernels (--fuse %s), compiled in %.2f s%s\n", path,
         infer ? "inference" : "training step", threads, kb.n, fuse_opts_text(&po.fuse),
         p.compile_seconds, naive ? ", plain loop nests" : "");
  printf("step: median %.3f ms (min %.3f); sum of per-kernel medians %.3f ms\n",
         1e3 * whole[steps / 2], 1e3 * whole[0], 1e3 * sum);
  printf("\nby op (a fused kernel's anchor) ms/step    share   GFLOP/s\n");
  for (int pass = 0; pass < OP_COUNT + 1; pass++) {
    int best = -1;
    for (int op = 0; op <= OP_COUNT; op++)
      if (by_op[op] > 0 && (best < 0 || by_op[op] > by_op[best]))
        best = op;
    if (best < 0)
      break;
    printf("  %-31s %9.3f %7.1f%% %9.1f\n", best < OP_COUNT ? op_name((Op)best) : "(other)",
           1e3 * by_op[best], 100 * by_op[best] / sum, fl_op[best] / by_op[best] / 1e9);
    by_op[best] = 0;
  }
  qsort(rows, (size_t)kb.n, sizeof *rows, by_med);
  printf("\nslowest kernels                      ms/step    share   GFLOP/s  shape\n");
  for (int r = 0; r < kb.n && r < top; r++) {
    int k = rows[r].k;
    const Node *n = kb.calls[k].k->node;
    char shape[128] = "";
    if (n) {
      int w = 0;
      for (int i = 0; i < n->shape.rank && w < 100; i++)
        w += snprintf(shape + w, sizeof shape - (size_t)w, "%s%lld", i ? "x" : "",
                      (long long)n->shape.dim[i]);
    }
    printf("  %-34s %9.3f %7.1f%% %9.1f  %s\n", kb.name[k], 1e3 * rows[r].med,
           100 * rows[r].med / sum, kb.flops[k] / rows[r].med / 1e9, shape);
  }
  program_free(&p);
  rt_pool_shutdown();
  return 0;
}
