/*
 * cuda_bench.c: one build of `kiln bench --target cuda` on the device
 * (cuda_bench.h); cmd_bench.c compares two of them as it compares two CPU
 * Programs.
 *
 * The build is a CuProgram compiled as `kiln run --target cuda` compiles
 * one (cuda_exec_init in cli/cuda.c), with the bench's plan options (the
 * unfused build's --fuse=none).  Its step's launches come kernel call by
 * kernel call (codegen/cuda/cuda_program.c's cu_step: a call's launches
 * follow one another, as many as its emitted kernel has), so the calls of
 * program_calls, lowered again as codegen/kbench.c does on the CPU, give
 * each kernel's range of launches, its name, and its bytes and FLOPs
 * (kbench_kernel_cost: the CPU bench's numbers for the same kernels).
 *
 * Timing is on the device's timeline: an event before and after the
 * step's launches (queued without waiting, rt_cuda_launch), and for the
 * kernel by kernel run an event before and after each kernel's launches,
 * all queued at once and read after the last.  The step counter goes up
 * before the first event, outside the clock, as the inputs do.
 *
 * Run on an H100 (bench/gpu_lease.sh: docs/benchmarks.md has its numbers)
 * and on tests/fake_cuda.c, whose events read the host's clock around
 * launches that run on the host.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_bench.h"
#include "kbench.h"

/* A device call's error, raised as the user's (exit 1). */
static void device_error(CuBench *b, const char *err) {
  error_plain(&b->c->diag, "running %s on %s: %s", b->cu.g->name, rt_cuda_name(b->cu.dev), err);
}

/* Each kernel call of the step: its launches, name, bytes and FLOPs. */
static void find_kernels(CuBench *b) {
  CuProgram *p = &b->cu;
  Graph *g = p->g;
  Arena *a = b->c->arena;
  char err[1024];
  Node **params, **derived;
  int n_params, n_derived;
  int *slot = program_persistent_slots(g, &p->plan, &params, &n_params, &derived, &n_derived);
  size_t cap = (size_t)p->plan.n_order + 1;
  CgCall *calls = arena_alloc(a, sizeof(CgCall) * cap);
  if (!program_calls(g, &p->plan, slot, calls, &b->n, err, sizeof err))
    die("timing the kernels of %s: %s", g->name, err); /* compiled once already */
  b->name = arena_alloc(a, sizeof(char *) * cap);
  b->n_nodes = arena_alloc(a, sizeof(int) * cap);
  b->bytes = arena_alloc(a, sizeof(int64_t) * cap);
  b->flops = arena_alloc(a, sizeof(double) * cap);
  b->first = arena_alloc(a, sizeof(int) * cap);
  for (int i = 0; i < b->n; i++) {
    const CuKernel *ck = cu_find(p->src, calls[i].k->name);
    if (!ck)
      die("kernel %s of %s is not in its CUDA module", calls[i].k->name, g->name);
    b->name[i] = calls[i].k->name;
    kbench_kernel_cost(calls[i].k, &b->bytes[i], &b->flops[i], &b->n_nodes[i]);
    b->first[i + 1] = b->first[i] + ck->n_launches;
  }
  if (b->n != p->n_kernels || b->first[b->n] != p->n_step)
    die("%s: %d kernels with %d launches, but the CUDA program has %d with %d", g->name, b->n,
        b->first[b->n], p->n_kernels, p->n_step);
}

static void new_events(CuBench *b) {
  char err[512];
  int n = 2 * b->n + 2;
  b->ev = arena_alloc(b->c->arena, sizeof(RtCuEvent *) * (size_t)n);
  for (int i = 0; i < n; i++)
    if (rt_cuda_event_new(b->cu.dev, &b->ev[i], err, sizeof err) != RT_OK)
      device_error(b, err);
}

void cuda_bench_init(CuBench *b, Cli *c, Graph *g, Node *const *roots, int n,
                     const PlanOpts *po) {
  char err[1024];
  RtCuda *d = cli_cuda_device(c);
  memset(b, 0, sizeof *b);
  b->c = c;
  b->ready = true; /* cu_program_free releases whatever compile got to */
  if (!cu_program_compile(&b->cu, d, g, roots, n, po, err, sizeof err))
    error_plain(&c->diag, "compiling %s for %s (sm_%d): %s", g->name, rt_cuda_name(d),
                rt_cuda_arch(d), err);
  if (c->verify_plan && !plan_verify(g, roots, n, &b->cu.plan, err, sizeof err))
    die("the memory plan of %s failed verification: %s", g->name, err);
  find_kernels(b);
  new_events(b);
}

void cuda_bench_bind_param(CuBench *b, const Node *param, void *host) {
  cu_program_bind_param(&b->cu, param, host);
}

void cuda_bench_upload(CuBench *b, const Node *n, const void *host) {
  char err[1024];
  if (cu_program_place(&b->cu, n) &&
      cu_program_upload(&b->cu, n, host, err, sizeof err) != RT_OK)
    device_error(b, err);
}

void cuda_bench_run(CuBench *b, int64_t step) {
  char err[1024];
  const char *sync = getenv("KILN_CUDA_SYNC"); /* as kiln run's: names a failing kernel */
  if (cu_program_run(&b->cu, step, sync && strcmp(sync, "1") == 0, err, sizeof err) != RT_OK)
    device_error(b, err);
}

/* The step counter up, outside the clock (cu_program_run's first copy). */
static void set_step(CuBench *b, int64_t step) {
  char err[1024];
  if (b->cu.stale)
    die("%s: timed before its parameters were uploaded", b->cu.g->name);
  if (rt_cuda_upload(b->cu.dev, b->cu.ext[0], &step, sizeof step, err, sizeof err) != RT_OK)
    device_error(b, err);
}

/* Launches [from, to) of the step between events ev[e] and ev[e + 1]. */
static void timed_launches(CuBench *b, int from, int to, int e) {
  char err[1024];
  CuProgram *p = &b->cu;
  if (rt_cuda_event_record(b->ev[e], err, sizeof err) != RT_OK ||
      rt_cuda_launch(p->m_step, from, to, p->arena, p->ext, err, sizeof err) != RT_OK ||
      rt_cuda_event_record(b->ev[e + 1], err, sizeof err) != RT_OK)
    device_error(b, err);
}

static double elapsed(CuBench *b, int e) {
  char err[512];
  double s;
  if (rt_cuda_event_seconds(b->ev[e], b->ev[e + 1], &s, err, sizeof err) != RT_OK)
    device_error(b, err);
  return s;
}

static void wait_for(CuBench *b, int e) {
  char err[1024];
  if (rt_cuda_event_wait(b->ev[e], err, sizeof err) != RT_OK)
    device_error(b, err);
}

double cuda_bench_step(CuBench *b, int64_t step) {
  set_step(b, step);
  timed_launches(b, 0, b->cu.n_step, 2 * b->n);
  wait_for(b, 2 * b->n + 1);
  return elapsed(b, 2 * b->n);
}

void cuda_bench_kernels(CuBench *b, int64_t step, double *seconds) {
  set_step(b, step);
  for (int i = 0; i < b->n; i++)
    timed_launches(b, b->first[i], b->first[i + 1], 2 * i);
  if (b->n)
    wait_for(b, 2 * b->n - 1);
  for (int i = 0; i < b->n; i++)
    seconds[i] = elapsed(b, 2 * i);
}

void *cuda_bench_value(CuBench *b, const Node *n) {
  char err[1024];
  void *h = arena_alloc(b->c->arena, (size_t)node_bytes(n) + 1);
  if (cu_program_download(&b->cu, n, h, err, sizeof err) != RT_OK)
    device_error(b, err);
  return h;
}

void cuda_bench_apply_updates(CuBench *b) {
  char err[1024];
  if (cu_program_apply_updates(&b->cu, err, sizeof err) != RT_OK)
    device_error(b, err);
}

void cuda_bench_free(CuBench *b) {
  for (int i = 0; b->ev && i < 2 * b->n + 2; i++)
    rt_cuda_event_free(b->ev[i]);
  if (b->ready)
    cu_program_free(&b->cu);
  memset(b, 0, sizeof *b);
}
