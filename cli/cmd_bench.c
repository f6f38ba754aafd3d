/*
 * cmd_bench.c: `kiln bench`, fused against unfused.  The model is compiled
 * twice, once with --fuse's kinds (default all) and once with none; each
 * build's step is timed whole (program_run, a burst of steps back to back
 * so each is timed warm) and kernel by kernel (codegen/kbench.c), the two
 * builds taking turns round after round so
 * that drift in the machine's speed (frequency, other load) hits both
 * alike.  Reported per kernel: median time, spread, bytes moved, GB/s and
 * GFLOP/s; end to end: each build's median step and the speedup.
 *
 * Both builds start from the same parameters (seeded initialization) and
 * the same seeded random inputs, and their results after one step must
 * agree within 1e-5 relative before anything is timed: a fast kernel that
 * computes something else is no speedup, so a disagreement is an error.
 * With --train the step is the training step (forward, backward, update),
 * its updates applied after every run, so both builds train along the
 * same path.
 *
 * On the CPU with more than one thread, each build's step is first timed
 * at the kernels' parallel grain and at RT_TUNE_COARSE times it
 * (runtime/tune.c, rt_tune_begin_at) and runs at the faster: the thread
 * count stays the one given, and each build gets the grain that suits it
 * (tune_grain).
 *
 * With --target cuda both builds are compiled for the device
 * (cli/cuda_bench.c) and run there the same way: the inputs copied in and
 * the updates applied outside the clock, the step and each kernel timed
 * with CUDA events on the device's timeline, the kernels' bytes and FLOPs
 * the CPU bench's (kbench_kernel_cost), and each kernel's GB/s also as a
 * fraction of the device memory's peak bandwidth when the driver reports
 * it.  Run on an H100 (tests/gpu.sh,
 * bench/gpu_lease.sh) and on tests/fake_cuda.c (tests/cuda_run.sh).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuda_bench.h"
#include "kbench.h"
#include "rt_data.h"
#include "rt_pool.h"

static const char bench_help[] =
    "usage: kiln bench MODEL.kiln [--train] [--batch N] [--repeat N] [--threads N]\n"
    "                  [--fuse=LIST] [--json] [--seed N] [-D NAME=VALUE]...\n"
    "                  [--model NAME] [--target cpu|cuda] [--keep-denormals]\n"
    "\n"
    "Compiles the model twice, fused (--fuse, default all) and unfused (--fuse=none),\n"
    "checks that both compute the same results (within 1e-5 relative, after one\n"
    "step from the same parameters and inputs; exit 1 if not), then runs them in\n"
    "turns and prints, for each build, every kernel's median time, spread (min ..\n"
    "max), bytes moved (the sizes of its buffers), GB/s and GFLOP/s (timed one\n"
    "kernel at a time), then each build's median step time end to end and the\n"
    "speedup (unfused / fused).  Inputs are seeded random values (f32 ~ N(0, 1),\n"
    "i32 labels and ids within their range), parameters freshly initialized.\n"
    "\n"
    "  --train                  benchmark the training step (training-mode forward,\n"
    "                           backward, optimizer update; updates applied after each\n"
    "                           step) instead of inference\n"
    "  --batch N                the batch size (the model constant that sizes the\n"
    "                           first axis of the first input; or -D NAME=N)\n"
    "  --repeat N               timed rounds (default 20, after 2 warm-up rounds); a\n"
    "                           round runs each build whole (a burst of steps back to\n"
    "                           back, about 2 ms, timed per step), then kernel by kernel\n"
    CLI_FUSE_HELP
    "                           (the fused build's; the other has none)\n"
    "  --threads N              worker threads of compiled code (default: one per core;\n"
    "                           no effect with --target cuda); on more than one, each\n"
    "                           build's step is first timed at the kernels' parallel\n"
    "                           grain and at 8 times it (only the larger loops split)\n"
    "                           and runs at the faster, which the report names\n";
/* The rest of the help (C compilers need only take string literals of 4095
 * characters). */
static const char bench_help_end[] =
    "  --json                   print the report as JSON (for scripts)\n"
    "  --seed N                 seed of the parameters and inputs (default 0)\n"
    "  --no-inplace, --no-share, --schedule=default|min-memory, --no-prepack,\n"
    "  --keep-denormals         as for kiln run, in both builds\n"
    "  -D, --define NAME=VALUE  override a model constant (e.g. -D N=8)\n"
    "  --model NAME             which model of the file (default: the first)\n"
    CLI_TARGET_HELP_BENCH;

enum { FUSED, UNFUSED, WARMUP = 2, DEFAULT_ROUNDS = 20, MAX_BURST = 64 };
static const double BURST_SECONDS = 2e-3; /* of whole steps per build and round */
static const double TOLERANCE = 1e-5;
static const char TOLERANCE_TEXT[] = "1e-5";
static const char *const build_name[2] = {"fused", "unfused"};

/* What the report says of a build's kernels (KBench's or CuBench's). */
typedef struct Kernels {
  int n;
  const char **name;
  int *n_nodes;
  int64_t *bytes;
  double *flops;
} Kernels;

/* One build of the model. */
typedef struct Side {
  PlanOpts po;
  Graph *g;
  TrainStep ts;
  Node **roots;
  int n_roots;
  Program prog;   /* on the CPU */
  bool ready;
  KBench kb;
  CuBench cb;     /* --target cuda */
  Kernels k;
  double compile_s;
  void **inputs;  /* per node id: an input's values, copied in before each run */
  int64_t step;   /* steps run */
  double *step_t; /* per round: the whole step */
  RtTune grain;    /* CPU, more than one thread: its step at the kernels' grain and a
                    * coarse one (rt_tune_begin_at), the faster kept for its runs */
  double *kern_t; /* per round and kernel: [round * k.n + kernel] */
} Side;

typedef struct Bench {
  Cli *c;
  bool train, cuda;  /* cuda: --target cuda */
  double peak;       /* cuda: the device memory's peak bandwidth in bytes/s (0: unknown) */
  int rounds, threads;
  Side s[2];
  double rel;        /* the largest relative difference between the builds' results */
  const char *worst; /* the value where it is */
} Bench;

/* --- building ----------------------------------------------------------------- */

/* --batch N: the constant that sizes the first input's first axis. */
static void apply_batch(Bench *b) {
  Cli *c = b->c;
  Graph *g = cli_build(c, false);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT && g->nodes[i]->shape.rank > 0) {
      cli_define_batch(c, g, g->nodes[i]);
      return;
    }
  error_plain(&c->diag, "--batch: model %s has no input with a batch axis", g->name);
}

/* Parameters freshly initialized (the same in both builds), inputs seeded. */
static void bind_data(Bench *b, Side *s) {
  Cli *c = b->c;
  Graph *g = s->g;
  const Plan *plan = b->cuda ? &s->cb.cu.plan : &s->prog.plan;
  s->inputs = arena_alloc(c->arena, sizeof(void *) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    void *data = n->op == OP_PARAM || n->op == OP_INPUT
                     ? arena_alloc(c->arena, (size_t)node_bytes(n) + 1) : NULL;
    if (n->op == OP_PARAM) {
      param_init_fill(n, c->seed, data);
      if (b->cuda)
        cuda_bench_bind_param(&s->cb, n, data);
      else
        program_bind_param(&s->prog, n, data);
    } else if (n->op == OP_INPUT && plan->time[i] >= 0 && n != s->ts.lr &&
               n != s->ts.step) {
      kbench_random_fill(g, n, c->seed, data);
      s->inputs[i] = data;
    }
  }
}

/* Compiles s for the CPU or the device; what the report needs of its kernels. */
static void compile_side(Bench *b, Side *s, int which) {
  char err[1024];
  if (b->cuda) {
    cuda_bench_init(&s->cb, b->c, s->g, s->roots, s->n_roots, &s->po);
    s->k = (Kernels){s->cb.n, s->cb.name, s->cb.n_nodes, s->cb.bytes, s->cb.flops};
    s->compile_s = s->cb.cu.compile_seconds;
    return;
  }
  CgOpts co = {.opt_level = 3, .keep_denormals = b->c->keep_denormals};
  if (!program_compile(&s->prog, s->g, s->roots, s->n_roots, &s->po, &co, err, sizeof err)) {
    if (s->prog.out_of_memory) /* the model's size */
      error_plain(&b->c->diag, "%s (%s): %s", s->g->name, build_name[which], err);
    die("compiling %s (%s): %s", s->g->name, build_name[which], err); /* a compiler bug */
  }
  s->ready = true;
  if (!kbench_init(&s->kb, &s->prog, err, sizeof err))
    die("timing the kernels of %s (%s): %s", s->g->name, build_name[which], err);
  s->k = (Kernels){s->kb.n, s->kb.name, s->kb.n_nodes, s->kb.bytes, s->kb.flops};
  s->compile_s = s->prog.compile_seconds;
}

static void build(Bench *b, int which) {
  Cli *c = b->c;
  Side *s = &b->s[which];
  char err[1024];
  s->po = c->plan;
  if (which == UNFUSED)
    fuse_opts_parse("none", &s->po.fuse);
  s->g = cli_build(c, b->train);
  FuseOpts keep = c->plan.fuse; /* the unfused build's graph is not folded either */
  c->plan.fuse = s->po.fuse;
  s->roots = cli_step_roots(c, s->g, b->train, &s->ts, &s->n_roots);
  c->plan.fuse = keep;
  if (!graph_verify(s->g, err, sizeof err))
    die("graph verification failed: %s", err);
  compile_side(b, s, which);
  bind_data(b, s);
  s->step_t = arena_alloc(c->arena, sizeof(double) * (size_t)b->rounds);
  s->kern_t = arena_alloc(c->arena, sizeof(double) * (size_t)(b->rounds * s->k.n + 1));
}

/* --- running ------------------------------------------------------------------ */

/* n's value for the next step: in the program's memory, or copied to the
 * device (nothing when the step does not read n). */
static void put(Bench *b, Side *s, const Node *n, const void *data) {
  if (b->cuda) {
    cuda_bench_upload(&s->cb, n, data);
    return;
  }
  void *p = program_value(&s->prog, n);
  if (p)
    memcpy(p, data, (size_t)node_bytes(n));
}

static void set_scalar(Bench *b, Side *s, const Node *n, float v) {
  if (!n)
    return;
  ASSERT(node_bytes(n) == sizeof v);
  put(b, s, n, &v);
}

/* The inputs of the next step (a planned arena may have reused their bytes). */
static void feed(Bench *b, Side *s) {
  Graph *g = s->g;
  for (int i = 0; i < g->n_nodes; i++)
    if (s->inputs[i])
      put(b, s, g->nodes[i], s->inputs[i]);
  set_scalar(b, s, s->ts.lr, (float)g->spec.lr);
  set_scalar(b, s, s->ts.step, (float)(s->step + 1));
}

/* One step, untimed (on the device: parameters uploaded first if bound since). */
static void run_step(Bench *b, Side *s) {
  if (b->cuda)
    cuda_bench_run(&s->cb, s->step);
  else
    program_run(&s->prog, s->step);
}

/* One step: its seconds, on the host's clock or the device's events. */
static double timed_step(Bench *b, Side *s) {
  if (b->cuda)
    return cuda_bench_step(&s->cb, s->step);
  double t0 = rt_now();
  program_run(&s->prog, s->step);
  return rt_now() - t0;
}

/* One step kernel by kernel: seconds[i] is kernel i's. */
static void timed_kernels(Bench *b, Side *s, double *seconds) {
  if (b->cuda)
    cuda_bench_kernels(&s->cb, s->step, seconds);
  else
    kbench_run(&s->kb, s->step, seconds);
}

/* n's value after a step (copied out of the device). */
static const void *value(Bench *b, Side *s, const Node *n) {
  return b->cuda ? cuda_bench_value(&s->cb, n) : program_value(&s->prog, n);
}

static void step_done(Bench *b, Side *s) {
  if (b->train && b->cuda)
    cuda_bench_apply_updates(&s->cb);
  else if (b->train)
    program_apply_updates(&s->prog);
  s->step++;
}

/* The largest difference between x and y relative to y's largest value
 * (0 when equal; infinite when only one is NaN or infinite). */
static double rel_diff(const Node *n, const void *x, const void *y) {
  int64_t count = shape_numel(&n->shape);
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < count; i++) {
    double u = n->dtype == DT_F32 ? ((const float *)x)[i] : ((const int32_t *)x)[i];
    double v = n->dtype == DT_F32 ? ((const float *)y)[i] : ((const int32_t *)y)[i];
    if (isnan(u) && isnan(v))
      continue;
    if (u != v && (!isfinite(u) || !isfinite(v)))
      return INFINITY;
    diff = fmax(diff, fabs(u - v));
    scale = fmax(scale, fabs(v));
  }
  return diff == 0 ? 0 : scale > 0 ? diff / scale : INFINITY;
}

/* One step of each build from the same start; their results must agree. */
static void check_agree(Bench *b) {
  Side *f = &b->s[FUSED], *u = &b->s[UNFUSED];
  for (int k = 0; k < 2; k++) {
    feed(b, &b->s[k]);
    run_step(b, &b->s[k]);
  }
  b->worst = f->roots[0]->name;
  for (int i = 0; i < f->n_roots; i++) {
    double r = rel_diff(u->roots[i], value(b, f, f->roots[i]), value(b, u, u->roots[i]));
    if (r > b->rel || isnan(r))
      b->rel = r, b->worst = f->roots[i]->name;
  }
  if (!(b->rel <= TOLERANCE))
    error_plain(&b->c->diag, "the fused and unfused builds of %s disagree: %s differs by %.3g "
                "relative (largest difference / largest value), more than %s: fusion "
                "computes something else", f->g->name, b->worst, b->rel, TOLERANCE_TEXT);
  for (int k = 0; k < 2; k++)
    step_done(b, &b->s[k]);
}

/* The mean time of `burst` steps of s run back to back (inputs fed and
 * updates applied between them, outside the clock). */
static double burst_time(Bench *b, Side *s, int burst) {
  double t = 0;
  for (int j = 0; j < burst; j++) {
    feed(b, s);
    t += timed_step(b, s);
    step_done(b, s);
  }
  return t / burst;
}

/* Each build's grain at the given thread count (runtime/tune.c): its
 * step timed at the kernels' grain and at RT_TUNE_COARSE times it, the
 * faster kept.  Small steps split over the cores lose more to the data
 * they leave on both than the split gains (docs/benchmarks.md, eighth
 * session), and by how much depends on the build: each gets its own. */
static void tune_grain(Bench *b, Side *s) {
  rt_tune_begin_at(&s->grain, b->threads);
  while (!rt_tune_done(&s->grain)) {
    rt_tune_next(&s->grain);
    feed(b, s);
    double t = timed_step(b, s);
    step_done(b, s);
    rt_tune_took(&s->grain, t);
  }
}

/* The grain a build runs at (1 on one thread or the device). */
static int grain_of(const Side *s) {
  int x = s->grain.grain[s->grain.chosen];
  return x > 1 ? x : 1;
}

/* Round after round: each build whole (a burst of steps, so a step is
 * timed warm, after steps of its own build, not just after the other
 * build's), then kernel by kernel.  The burst is set in the first warm-up
 * round to about BURST_SECONDS of steps. */
static void measure(Bench *b) {
  double *scratch =
      arena_alloc(b->c->arena, sizeof(double) * (size_t)(b->s[0].k.n + b->s[1].k.n + 1));
  int burst = 1;
  for (int r = -WARMUP; r < b->rounds; r++)
    for (int k = 0; k < 2; k++) {
      Side *s = &b->s[k];
      if (!b->cuda)
        rt_use_grain(grain_of(s));
      double t = burst_time(b, s, burst);
      if (r == -WARMUP && k == 0)
        burst = t > 0 && BURST_SECONDS / t < MAX_BURST ? (int)(BURST_SECONDS / t) + 1 : MAX_BURST;
      if (r >= 0)
        s->step_t[r] = t;
      feed(b, s);
      timed_kernels(b, s, r >= 0 ? &s->kern_t[r * s->k.n] : scratch);
      step_done(b, s);
    }
}

static void bench_fn(void *ud) {
  Bench *b = ud;
  Cli *c = b->c;
  if (c->cuda) { /* the device first: without one, nothing else is done */
    b->cuda = true;
    b->peak = rt_cuda_peak_bandwidth(cli_cuda_device(c));
  }
  if (c->batch)
    apply_batch(b);
  if (!b->cuda)
    b->threads = rt_set_threads((int)c->threads); /* 0: one per core */
  for (int k = 0; k < 2; k++)
    build(b, k);
  check_agree(b);
  for (int k = 0; k < 2; k++)
    if (!b->cuda)
      tune_grain(b, &b->s[k]);
  measure(b);
}

/* --- the report --------------------------------------------------------------- */

typedef struct Stat {
  double min, q1, med, q3, max;
} Stat;

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The spread of v[0], v[stride], ... (n values). */
static Stat stat_of(Arena *a, const double *v, int n, int stride) {
  double *t = arena_alloc(a, sizeof(double) * (size_t)n);
  for (int i = 0; i < n; i++)
    t[i] = v[(size_t)i * (size_t)stride];
  qsort(t, (size_t)n, sizeof *t, by_value);
  return (Stat){t[0], t[n / 4], t[n / 2], t[(3 * n) / 4], t[n - 1]};
}

static const char *fmt_time(Arena *a, double s) {
  return s < 1e-6   ? arena_fmt(a, "%.0f ns", 1e9 * s)
         : s < 1e-3 ? arena_fmt(a, "%.1f us", 1e6 * s)
         : s < 1    ? arena_fmt(a, "%.3f ms", 1e3 * s)
                    : arena_fmt(a, "%.3f s", s);
}

static const char *fmt_bytes(Arena *a, double v) {
  return v < 1e3   ? arena_fmt(a, "%.0f B", v)
         : v < 1e6 ? arena_fmt(a, "%.1f KB", v / 1e3)
         : v < 1e9 ? arena_fmt(a, "%.2f MB", v / 1e6)
                   : arena_fmt(a, "%.2f GB", v / 1e9);
}

static const char *constants(Cli *c, const Graph *g) {
  const char *s = "";
  for (int i = 0; i < g->n_consts; i++)
    s = arena_fmt(c->arena, "%s%s%s = %s", s, i ? ", " : "", g->const_names[i],
                  g->const_values[i]);
  return s;
}

static double speedup(const Bench *b, Arena *a) {
  Stat f = stat_of(a, b->s[FUSED].step_t, b->rounds, 1);
  Stat u = stat_of(a, b->s[UNFUSED].step_t, b->rounds, 1);
  return f.med > 0 ? u.med / f.med : 0;
}

/* Which grain a build ran at, when both were timed (tune_grain: the
 * kernels' grain first, the coarse one second). */
static const char *grain_text(Bench *b, const Side *s) {
  const RtTune *t = &s->grain;
  if (!t->tuned)
    return "";
  bool coarse = grain_of(s) > 1;
  return arena_fmt(b->c->arena, "; at %s grain (step %.1f us; at the %s, %.1f us)",
                   coarse ? "a coarse" : "the kernels'", 1e6 * t->median[t->chosen],
                   coarse ? "kernels' grain" : "coarse one", 1e6 * t->median[1 - t->chosen]);
}

static void text_kernels(Bench *b, int which) {
  Arena *a = b->c->arena;
  const Side *s = &b->s[which];
  const Kernels *k = &s->k;
  double sum = 0;
  printf("\n%s (--fuse=%s): %d kernels, compiled in %.2f s%s\n", build_name[which],
         fuse_opts_text(&s->po.fuse), k->n, s->compile_s, grain_text(b, s));
  printf("  %-4s %-36s %5s %11s %23s %10s %8s %8s%s\n", "#", "kernel", "nodes", "median",
         "min .. max", "bytes", "GB/s", "GFLOP/s", b->peak > 0 ? "  of peak" : "");
  for (int i = 0; i < k->n; i++) {
    Stat t = stat_of(a, &s->kern_t[i], b->rounds, k->n);
    sum += t.med;
    double sec = t.med > 0 ? t.med : 1e-12, bw = (double)k->bytes[i] / sec;
    printf("  %-4d %-36s %5d %11s %23s %10s %8.1f %8s", i, k->name[i], k->n_nodes[i],
           fmt_time(a, t.med), arena_fmt(a, "%s .. %s", fmt_time(a, t.min), fmt_time(a, t.max)),
           fmt_bytes(a, (double)k->bytes[i]), bw / 1e9,
           k->flops[i] > 0 ? arena_fmt(a, "%.1f", k->flops[i] / sec / 1e9) : "-");
    if (b->peak > 0)
      printf(" %8s", arena_fmt(a, "%.3g%%", 100 * bw / b->peak));
    printf("\n");
  }
  printf("  sum of the kernels' medians: %s\n", fmt_time(a, sum));
}

/* Where the builds ran: on how many threads, or on which device. */
static void text_where(Bench *b) {
  if (!b->cuda) {
    printf("%d threads", b->threads);
    return;
  }
  printf("on %s (sm_%d)", rt_cuda_name(b->c->dev), rt_cuda_arch(b->c->dev));
}

static void text_peak(Bench *b) {
  if (!b->cuda)
    return;
  if (b->peak > 0)
    printf("device memory: %.1f GB/s peak (memory clock x bus width x 2, from the driver); "
           "each kernel's GB/s also as a fraction of it\n", b->peak / 1e9);
  else
    printf("device memory: peak bandwidth unknown (the driver reports no memory clock or bus "
           "width)\n");
}

static void print_text(Bench *b) {
  Cli *c = b->c;
  Arena *a = c->arena;
  const Graph *g = b->s[FUSED].g;
  printf("kiln bench: %s(%s), %s, ", g->name, constants(c, g),
         b->train ? "training step" : "inference");
  text_where(b);
  printf(", %d round%s after %d warm-up\n", b->rounds, b->rounds == 1 ? "" : "s", WARMUP);
  text_peak(b);
  printf("results agree: %s within %s relative after one step (", b->train ?
         "the loss and the updates" : "every output", TOLERANCE_TEXT);
  if (b->rel > 0)
    printf("largest difference %.3g, in %s)\n", b->rel, b->worst);
  else
    printf("identical)\n");
  for (int k = 0; k < 2; k++)
    text_kernels(b, k);
  printf("\nstep, end to end (median, min .. max):\n");
  for (int k = 0; k < 2; k++) {
    Stat t = stat_of(a, b->s[k].step_t, b->rounds, 1);
    printf("  %-8s %10s   %s .. %s\n", build_name[k], fmt_time(a, t.med), fmt_time(a, t.min),
           fmt_time(a, t.max));
  }
  printf("speedup (unfused / fused): %.2fx\n", speedup(b, a));
}

/* A number, or null where JSON has none (NaN, infinities). */
static void json_num(FILE *f, double v) {
  if (isfinite(v))
    fprintf(f, "%.6g", v);
  else
    fprintf(f, "null");
}

static void json_stat(FILE *f, const char *key, Stat t) {
  fprintf(f, "\"%s\": {\"median_s\": %.6g, \"min_s\": %.6g, \"q1_s\": %.6g, \"q3_s\": %.6g, "
             "\"max_s\": %.6g}", key, t.med, t.min, t.q1, t.q3, t.max);
}

static void json_build(Bench *b, int which, FILE *f) {
  Arena *a = b->c->arena;
  const Side *s = &b->s[which];
  const Kernels *k = &s->k;
  fprintf(f, "    {\"build\": \"%s\", \"fuse\": \"%s\", \"n_kernels\": %d, "
             "\"compile_s\": %.6g, \"grain\": %d,\n     ", build_name[which],
          fuse_opts_text(&s->po.fuse), k->n, s->compile_s, grain_of(s));
  json_stat(f, "step", stat_of(a, s->step_t, b->rounds, 1));
  fprintf(f, ",\n     \"kernels\": [\n");
  for (int i = 0; i < k->n; i++) {
    Stat t = stat_of(a, &s->kern_t[i], b->rounds, k->n);
    fprintf(f, "       {\"name\": ");
    json_write_str(f, k->name[i]);
    fprintf(f, ", \"nodes\": %d, \"bytes\": %lld, \"flops\": %.0f, ", k->n_nodes[i],
            (long long)k->bytes[i], k->flops[i]);
    json_stat(f, "time", t);
    fprintf(f, ", \"gb_per_s\": ");
    json_num(f, (double)k->bytes[i] / t.med / 1e9);
    fprintf(f, ", \"gflop_per_s\": ");
    json_num(f, k->flops[i] > 0 ? k->flops[i] / t.med / 1e9 : NAN);
    if (b->cuda) { /* null when the driver reports no peak */
      fprintf(f, ", \"peak_fraction\": ");
      json_num(f, b->peak > 0 ? (double)k->bytes[i] / t.med / b->peak : NAN);
    }
    fprintf(f, "}%s\n", i + 1 < k->n ? "," : "");
  }
  fprintf(f, "     ]}");
}

static void print_json(Bench *b) {
  Cli *c = b->c;
  const Graph *g = b->s[FUSED].g;
  FILE *f = stdout;
  fprintf(f, "{\n  \"model\": ");
  json_write_str(f, g->name);
  fprintf(f, ",\n  \"constants\": {");
  for (int i = 0; i < g->n_consts; i++) {
    fprintf(f, "%s", i ? ", " : "");
    json_write_str(f, g->const_names[i]);
    fprintf(f, ": ");
    json_write_str(f, g->const_values[i]);
  }
  fprintf(f, "},\n  \"mode\": \"%s\",\n  \"target\": \"%s\",\n",
          b->train ? "training" : "inference", b->cuda ? "cuda" : "cpu");
  if (b->cuda) {
    fprintf(f, "  \"device\": {\"name\": ");
    json_write_str(f, rt_cuda_name(c->dev));
    fprintf(f, ", \"arch\": \"sm_%d\", \"peak_gb_per_s\": ", rt_cuda_arch(c->dev));
    json_num(f, b->peak > 0 ? b->peak / 1e9 : NAN);
    fprintf(f, "},\n  \"threads\": null,\n"); /* host threads play no part */
  } else {
    fprintf(f, "  \"threads\": %d,\n", b->threads);
  }
  fprintf(f, "  \"rounds\": %d,\n  \"warmup\": %d,\n  \"agree\": true,\n"
             "  \"tolerance\": %g,\n  \"max_rel_diff\": %.6g,\n  \"builds\": [\n",
          b->rounds, WARMUP, TOLERANCE, b->rel);
  for (int k = 0; k < 2; k++) {
    json_build(b, k, f);
    fprintf(f, "%s\n", k ? "" : ",");
  }
  fprintf(f, "  ],\n  \"speedup\": ");
  json_num(f, speedup(b, c->arena));
  fprintf(f, "\n}\n");
}

static int bench_validate(Cli *c) {
  if (c->repeat > 100000)
    return cli_usage_error("bench", "--repeat %lld: at most 100000 rounds",
                           (long long)c->repeat);
  return EXIT_OK;
}

static int bench_run(Cli *c) {
  Bench b = {.c = c, .train = c->co.training};
  b.rounds = c->repeat ? (int)c->repeat : DEFAULT_ROUNDS;
  int rc = cli_protect(c, bench_fn, &b);
  if (rc == EXIT_OK && c->json)
    print_json(&b);
  else if (rc == EXIT_OK)
    print_text(&b);
  for (int k = 0; k < 2; k++) {
    if (b.s[k].ready)
      program_free(&b.s[k].prog);
    cuda_bench_free(&b.s[k].cb);
  }
  return rc;
}

const Command cmd_bench = {"bench", "DmtBkjSJFIHCKhXz", bench_help, bench_validate, bench_run,
                           bench_help_end};
