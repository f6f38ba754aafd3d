/*
 * cuda.c: the driver's CUDA target (--target cuda).
 *
 * `kiln build MODEL --target cuda -o PROG` makes a program that runs the
 * model's inference on a CUDA device, and with --train its `train` command
 * there too (--emit exe, the default with -o, but not with -o FILE.cu):
 * cmd_build.c builds it as a CPU program's manifest and
 * parameters, with codegen/cuda/cuda_aot.c's images and launch lists in
 * place of the CPU code (cli_build_cuda_exe says which build it is).
 * Otherwise it writes the model's kernels as CUDA C (codegen/cuda) and,
 * through NVRTC, as PTX or CUBINs:
 *
 *   --emit cuda   the source (the default without -o or with -o FILE.cu):
 *                 FILE.cu with -o FILE (or FILE itself when it ends in
 *                 .cu), else on stdout
 *   --emit ptx    FILE.ptx, for compute_XY of --arch (default compute_80)
 *   --emit cubin  FILE.sm_XY.cubin for each sm_XY of --arch (default sm_80,
 *                 sm_90)
 *
 * The module holds the inference step's kernels, the prepare step's (the
 * weight-derived values, computed once when weights are loaded), and with
 * --train the training step's (named train_*).  A comment at its end lists
 * each step's launches in order, with where each argument points: @OFFSET
 * in the step's arena (the memory plan's) or $SLOT in the array of extern
 * pointers ($0 the step counter, then the parameters, then the
 * weight-derived values), which is what a runtime needs to run it.
 *
 * `kiln run|train|bench --target cuda` look for a device first
 * (runtime/rt_cuda.h): without one they stop with "no CUDA device found
 * (REASON)" (exit 1).  With one, `run` and `train` compute on it through
 * cli/exec.c's Exec: cuda_exec_* below wrap a CuProgram
 * (codegen/cuda/cuda_program.h) with a host copy of the arena, where the
 * commands write inputs and read results; inputs are copied in before each
 * run, values copied out when read, parameters uploaded when bound and
 * copied back after training (exec_sync_params).  Device errors are the
 * user's (exit 1), naming the kernel.  `bench` compiles and times its two
 * builds on the device in cli/cuda_bench.c.
 *
 * Tested on an H100 (tests/gpu.sh) and on tests/fake_cuda.c
 * (tests/cuda_run.sh).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuda_nvrtc.h"
#include "cuda_program.h"
#include "rt_cuda.h"

/* --- run, train ------------------------------------------------------------------------ */

RtCuda *cli_cuda_device(Cli *c) {
  char err[768];
  if (!c->dev && rt_cuda_open(0, &c->dev, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  return c->dev;
}

/* A device call's error, raised as the user's (exit 1). */
static void device_error(Exec *x, const char *err) {
  error_plain(&x->c->diag, "running %s on %s: %s", x->g->name, rt_cuda_name(x->c->dev), err);
}

void cuda_exec_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n) {
  char err[1024];
  RtCuda *d = cli_cuda_device(c);
  x->cu_ready = true; /* cu_program_free releases whatever compile got to */
  if (!cu_program_compile(&x->cu, d, g, roots, n, &c->plan, err, sizeof err))
    error_plain(&c->diag, "compiling %s for %s (sm_%d): %s", g->name, rt_cuda_name(d),
                rt_cuda_arch(d), err);
  if (c->verify_plan && !plan_verify(g, roots, n, &x->cu.plan, err, sizeof err))
    die("the memory plan of %s failed verification: %s", g->name, err);
  size_t bytes = ((size_t)x->cu.plan.arena + PLAN_ALIGN) / PLAN_ALIGN * PLAN_ALIGN;
  x->host = aligned_alloc(PLAN_ALIGN, bytes);
  x->hval = arena_alloc(c->arena, sizeof(void *) * (size_t)g->n_nodes);
  if (!x->host)
    error_plain(&c->diag, "out of memory: the arena's host copy needs %zu bytes", bytes);
  memset(x->host, 0, bytes);
  if (c->verbose) {
    fprintf(stderr, "%s: compiled %d kernels (%d launches) for %s (sm_%d) in %.3f s", g->name,
            x->cu.n_kernels, x->cu.n_step, rt_cuda_name(d), rt_cuda_arch(d),
            x->cu.compile_seconds);
    if (x->cu.nvrtc_seconds > 0)
      fprintf(stderr, " (NVRTC %.3f s)", x->cu.nvrtc_seconds);
    fputs("; ", stderr);
    plan_print_summary(&x->cu.plan, stderr);
  }
}

/* The host copy of n's value: in the arena's, or a buffer of its own. */
static void *host_copy(Exec *x, const Node *n) {
  if (x->cu.plan.offset[n->id] >= 0)
    return x->host + x->cu.plan.offset[n->id];
  if (!x->hval[n->id])
    x->hval[n->id] = arena_alloc(x->c->arena, (size_t)node_bytes(n) + 1);
  return x->hval[n->id];
}

void *cuda_exec_input(Exec *x, const Node *in) { return host_copy(x, in); }

void cuda_exec_bind_param(Exec *x, const Node *p, void *data) {
  cu_program_bind_param(&x->cu, p, data);
}

/* Copies the inputs in and runs the step (parameters go up first when
 * they were bound since the last run). */
void cuda_exec_run(Exec *x, int64_t step) {
  char err[1024];
  const char *sync = getenv("KILN_CUDA_SYNC");
  for (int i = 0; i < x->g->n_nodes; i++) {
    const Node *n = x->g->nodes[i];
    if (n->op == OP_INPUT && x->cu.plan.time[i] >= 0 &&
        cu_program_upload(&x->cu, n, host_copy(x, n), err, sizeof err) != RT_OK)
      device_error(x, err);
  }
  if (cu_program_run(&x->cu, step, sync && strcmp(sync, "1") == 0, err, sizeof err) != RT_OK)
    device_error(x, err);
}

/* Copies n's value out (after a run). */
void *cuda_exec_value(Exec *x, const Node *n) {
  char err[1024];
  void *h = host_copy(x, n);
  if (cu_program_download(&x->cu, n, h, err, sizeof err) != RT_OK)
    device_error(x, err);
  return h;
}

void cuda_exec_apply_updates(Exec *x) {
  char err[1024];
  if (cu_program_apply_updates(&x->cu, err, sizeof err) != RT_OK)
    device_error(x, err);
}

void cuda_exec_sync_params(Exec *x) {
  char err[1024];
  if (cu_program_download_params(&x->cu, err, sizeof err) != RT_OK)
    device_error(x, err);
}

void cuda_exec_free(Exec *x) {
  if (x->cu_ready)
    cu_program_free(&x->cu);
  free(x->host);
  x->host = NULL;
  x->cu_ready = false;
}

/* --- build ----------------------------------------------------------------------------- */

enum { EMIT_CUDA = 1, EMIT_PTX = 2, EMIT_CUBIN = 4, EMIT_EXE = 8 };

static int parse_emit(const char *list, unsigned *bits) {
  static const char *const names[] = {"cuda", "ptx", "cubin", "exe"};
  return cli_parse_emit(list, names, 4, " for --target cuda", bits);
}

/* Without --emit: the program with -o, else the source (also for -o
 * FILE.cu). */
static unsigned default_emit(const Cli *c) {
  size_t n = c->out ? strlen(c->out) : 0;
  bool cu = n > 3 && strcmp(c->out + n - 3, ".cu") == 0;
  return c->out && !cu ? EMIT_EXE : EMIT_CUDA;
}

bool cli_build_cuda_exe(const Cli *c) {
  unsigned bits = default_emit(c);
  if (c->emit)
    parse_emit(c->emit, &bits); /* validated */
  return bits & EMIT_EXE;
}

/* --emit exe: a program (cmd_build.c builds it, codegen/cuda/cuda_aot.c
 * its device part). */
static int validate_exe(Cli *c, unsigned bits) {
  CuTargets t;
  char err[256];
  if (bits != EMIT_EXE)
    return cli_usage_error("build", "--emit exe makes the program alone: its kernels' files "
                           "(--emit cuda,ptx,cubin) are a build of their own");
  if (!c->out)
    return cli_usage_error("build", "--emit exe needs -o PROG");
  if (c->arch && !cu_targets_parse(c->arch, &t, err, sizeof err))
    return cli_usage_error("build", "--arch: %s", err);
  return EXIT_OK;
}

int cli_build_cuda_validate(Cli *c) {
  unsigned bits = default_emit(c);
  CuTargets t;
  char err[256];
  if (c->emit && parse_emit(c->emit, &bits) != EXIT_OK)
    return EXIT_USAGE;
  if (bits & EMIT_EXE)
    return validate_exe(c, bits);
  if (!c->out && (bits & (EMIT_PTX | EMIT_CUBIN)))
    return cli_usage_error("build", "--emit ptx,cubin need -o FILE (only the CUDA source prints "
                           "to stdout)");
  if (c->arch && !cu_targets_parse(c->arch, &t, err, sizeof err))
    return cli_usage_error("build", "--arch: %s", err);
  if (c->weights)
    return cli_usage_error("build", "--weights does not apply to --emit cuda,ptx,cubin (the "
                           "kernels take the parameters as arguments; a program, --emit exe, "
                           "builds them in)");
  return EXIT_OK;
}

typedef struct CuBuild {
  Cli *c;
  unsigned emit;
  CuSrc *s;
  char *steps;  /* the launch tables' comment */
  size_t steps_len;
  FILE *sf;
} CuBuild;

/* Extern slots: parameters from 1, then weight-derived values. */
static int *slots(Cli *c, const Graph *g, const Plan *p) {
  int *slot = arena_alloc(c->arena, sizeof(int) * (size_t)(g->n_nodes + 1)), n = 1;
  for (int s = 0; s < p->n_order; s++)
    if (p->order[s]->op == OP_PARAM)
      slot[p->order[s]->id] = n++;
  for (int s = 0; s < p->n_order; s++)
    if (p->order[s]->derived && p->order[s]->op != OP_PARAM)
      slot[p->order[s]->id] = n++;
  return slot;
}

/* Adds calls' kernels (renamed with prefix) and their launch table. */
static void add_calls(CuBuild *b, CgCall *calls, int n, const char *prefix, const char *step,
                      int64_t arena) {
  Cli *c = b->c;
  char err[1024];
  for (int i = 0; i < n; i++)
    if (*prefix) {
      Kernel *k = (Kernel *)calls[i].k;
      k->name = arena_fmt(c->arena, "%s%s", prefix, k->name);
    }
  RtCuLaunch *ls;
  int nl;
  if (!cu_step(b->s, calls, n, c->arena, &ls, &nl, err, sizeof err))
    die("compiling %s for CUDA: %s", step, err); /* a compiler bug, not the user's */
  fprintf(b->sf, " *\n * %s: %d launches, arena %lld bytes\n", step, nl, (long long)arena);
  for (int i = 0; i < nl; i++) {
    fprintf(b->sf, " *   %s <<<%lld>>> (", ls[i].fn, (long long)ls[i].threads);
    for (int a = 0; a < ls[i].n_args; a++)
      fprintf(b->sf, "%s%c%lld", a ? ", " : "", ls[i].args[a].base == RT_CU_ARENA ? '@' : '$',
              (long long)ls[i].args[a].at);
    fprintf(b->sf, ")\n");
  }
}

/* Where a step's values are: each extern slot's parameter or weight-derived
 * value, the inputs and the roots in the arena. */
static void print_places(CuBuild *b, const Graph *g, const Plan *p, const int *slot,
                         Node *const *roots, int n_roots) {
  char sh[128];
  fprintf(b->sf, " *   extern $0: the step counter (int64)\n");
  for (int k = 1, found = 1; found; k++) {
    found = 0;
    for (int i = 0; i < g->n_nodes && !found; i++)
      if (slot[i] == k) {
        found = 1;
        fprintf(b->sf, " *   extern $%d: %s %s%s\n", k, g->nodes[i]->name,
                dtype_name(g->nodes[i]->dtype), shape_str(&g->nodes[i]->shape, sh, sizeof sh));
      }
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT && p->time[i] >= 0 && p->offset[i] >= 0)
      fprintf(b->sf, " *   input %s @%lld %s%s\n", g->nodes[i]->name, (long long)p->offset[i],
              dtype_name(g->nodes[i]->dtype), shape_str(&g->nodes[i]->shape, sh, sizeof sh));
  for (int r = 0; r < n_roots; r++)
    if (p->offset[roots[r]->id] >= 0)
      fprintf(b->sf, " *   result %s @%lld %s%s\n", roots[r]->name,
              (long long)p->offset[roots[r]->id], dtype_name(roots[r]->dtype),
              shape_str(&roots[r]->shape, sh, sizeof sh));
}

/* Plans one step of g and adds its kernels (and the prepare step's). */
static void add_step(CuBuild *b, Graph *g, bool train) {
  Cli *c = b->c;
  TrainStep ts = {0};
  int n, nc;
  Node **roots = cli_step_roots(c, g, train, &ts, &n);
  Plan p;
  cli_plan(c, g, roots, n, &p);
  int *slot = slots(c, g, &p);
  CgCall *calls = arena_alloc(c->arena, sizeof(CgCall) * (size_t)(p.n_order + 1));
  char err[1024];
  if (!train) {
    if (!program_prepare_calls(g, &p, slot, calls, &nc, err, sizeof err))
      die("compiling %s: %s", g->name, err);
    if (nc)
      add_calls(b, calls, nc, "", "kiln_prepare (the weight-derived values, once)", 0);
  }
  if (!program_calls(g, &p, slot, calls, &nc, err, sizeof err))
    die("compiling %s: %s", g->name, err);
  add_calls(b, calls, nc, train ? "train_" : "", train ? "kiln_train_step" : "kiln_infer",
            p.arena);
  print_places(b, g, &p, slot, roots, n);
}

/* FILE.cu (FILE itself when it ends in .cu), or base.EXT. */
static const char *out_path(Cli *c, const char *ext) {
  size_t n = strlen(c->out);
  bool cu = n > 3 && strcmp(c->out + n - 3, ".cu") == 0;
  if (strcmp(ext, ".cu") == 0)
    return cu ? c->out : arena_fmt(c->arena, "%s.cu", c->out);
  return arena_fmt(c->arena, "%.*s%s", (int)(cu ? n - 3 : n), c->out, ext);
}

static void write_file(Cli *c, const char *path, const void *data, size_t len) {
  char err[512];
  const void *pieces[] = {data};
  if (rt_write_file_atomic(path, pieces, &len, 1, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
}

static void compile_images(CuBuild *b, const char *text, const char *model) {
  Cli *c = b->c;
  CuTargets t = CU_NVRTC_DEFAULT;
  char err[1024], *report;
  if (c->arch)
    cu_targets_parse(c->arch, &t, err, sizeof err); /* validated */
  if (!(b->emit & EMIT_CUBIN))
    t.n_archs = 0;
  if (!(b->emit & EMIT_PTX))
    t.ptx_arch = 0;
  if (!t.n_archs && !t.ptx_arch)
    error_plain(&c->diag, "--arch %s names no %s", c->arch,
                b->emit & EMIT_PTX ? "compute_XY for --emit ptx" : "sm_XY for --emit cubin");
  CuImages im;
  if (!cu_nvrtc_compile(text, model, &t, &im, err, sizeof err, &report)) {
    if (report)
      fputs(report, stderr);
    free(report);
    error_plain(&c->diag, "%s", err);
  }
  for (int i = 0; i < im.n; i++) {
    const CuImage *g = &im.images[i];
    const char *ext = g->ptx ? ".ptx" : arena_fmt(c->arena, ".sm_%d.cubin", g->arch);
    write_file(c, out_path(c, ext), g->data, g->ptx ? g->size - 1 : g->size);
  }
  if (c->verbose)
    fprintf(stderr, "%s: NVRTC compiled %d image%s in %.2f s\n", model, im.n, im.n == 1 ? "" : "s",
            im.seconds);
  cu_images_free(&im);
}

static void build_fn(void *ud) {
  CuBuild *b = ud;
  Cli *c = b->c;
  Graph *ge = cli_build(c, false);
  if (!ge->n_outputs)
    error_plain(&c->diag, "model %s declares no outputs to compute", ge->name);
  Graph *gt = NULL;
  if (c->co.training) {
    gt = cli_build(c, true);
    if (!gt->has_train)
      error_plain(&c->diag, "model %s has no train section (train %s { minimize LOSS ... })",
                  gt->name, gt->name);
  }
  b->s = cu_new(ge->name);
  b->sf = open_memstream(&b->steps, &b->steps_len);
  if (!b->sf)
    die("out of memory");
  fprintf(b->sf, "\n/*\n * The steps' launches in order: FUNCTION <<<threads>>> (arguments: @ an "
          "offset into the\n * step's arena, $ an extern slot: $0 the step counter, then the "
          "parameters, then\n * the weight-derived values, in the order of the step's schedule)\n");
  add_step(b, ge, false);
  if (gt)
    add_step(b, gt, true);
  fprintf(b->sf, " */\n");
  fclose(b->sf);
  b->sf = NULL;
  const char *src = cu_text(b->s);
  char *text = arena_fmt(c->arena, "%s%s", src, b->steps);
  if (b->emit & EMIT_CUDA) {
    if (c->out)
      write_file(c, out_path(c, ".cu"), text, strlen(text));
    else
      fputs(text, stdout);
  }
  if (b->emit & (EMIT_PTX | EMIT_CUBIN))
    compile_images(b, text, ge->name);
}

int cli_build_cuda(Cli *c) {
  CuBuild b = {.c = c, .emit = default_emit(c)};
  if (c->emit)
    parse_emit(c->emit, &b.emit);
  int rc = cli_protect(c, build_fn, &b);
  if (b.sf)
    fclose(b.sf);
  free(b.steps);
  cu_free(b.s);
  return rc;
}
