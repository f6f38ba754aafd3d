/*
 * cmd_build.c: `kiln build`, the ahead-of-time compiler: a model in, a
 * standalone program (or an object file and a C header) out.
 *
 * The inference graph (roots: the model's outputs) and, with --train, the
 * training step become one LLVM module (codegen/aot.c) with the manifest
 * and the initial parameters inside; the object file is linked with the
 * runtime's main (libkiln_rt_main.a, runtime/rt_main.c) by the system C
 * compiler, run with posix_spawnp (no shell).  Every file is written under
 * a temporary name and renamed when complete, so a failed build leaves no
 * partial program, object or header behind.
 *
 * The runtime archive is found at the path compiled in from the build
 * tree (KILN_RT_MAIN_LIB), else next to the kiln executable
 * (runtime/libkiln_rt_main.a, ../lib/kiln/libkiln_rt_main.a).
 *
 * --target cuda -o PROG (--emit exe) is the same build up to the module:
 * the same graphs, plans, manifest and parameters (aot.c), but the
 * kernels become a CUDA module compiled by NVRTC (codegen/cuda/cuda_aot.c)
 * and the program is an assembly file of data (manifest, parameters,
 * images, launch lists) linked with libkiln_rt_cuda_main.a
 * (KILN_RT_CUDA_MAIN_LIB), whose main runs the steps on CUDA device 0
 * (runtime/rt_cuda_main.c).  The CPU module aot_compile makes for the
 * manifest is not optimized or written.  The other --target cuda builds
 * (--emit cuda,ptx,cubin) are cli/cuda.c's.  Such programs run
 * on an H100 in tests/gpu.sh and on tests/fake_cuda.c in tests/cuda_build.sh.
 */
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aot.h"
#include "cli.h"
#include "cuda_aot.h"
#include "rt_data.h"

extern char **environ;

static const char build_help[] =
    "usage: kiln build MODEL.kiln -o PROG [--train] [--emit LIST] [--weights FILE]\n"
    "                  [--seed N] [-D NAME=VALUE]... [--model NAME] [--no-prepack]\n"
    "                  [--fuse=LIST] [--threads N] [--keep-denormals] [-v]\n"
    "       kiln build MODEL.kiln -o BASE --emit obj,header [--prefix NAME] (and the above)\n"
    "       kiln build MODEL.kiln --target cuda -o PROG [--arch LIST] (and the above)\n"
    "       kiln build MODEL.kiln --target cuda --emit cuda,ptx,cubin [-o FILE]\n"
    "                  [--arch LIST] [--train] (and -D, --model, --fuse, -v)\n"
    "\n"
    "Compiles the model ahead of time for this machine's CPU into a standalone\n"
    "program PROG.  `PROG --input x=a.npy --output probs=b.npy` runs inference\n"
    "(PROG --help lists the inputs and outputs); a build with --train also has\n"
    "`PROG train --data DIR --epochs N --save FILE` (see PROG train --help): for\n"
    "models whose one or two inputs are their examples (f32, or i32 token ids)\n"
    "and labels (i32 classes or f32 targets; without: scored by the test loss);\n"
    "any model's training step compiles with --emit obj,header, for code of your\n"
    "own.\n"
    "--weights are built in; without them the program draws the seeded initial\n"
    "parameters when it starts (the values kiln init writes).\n"
    "\n"
    "  -o, --out PROG           the program (and the base name of --emit files)\n"
    "  --train                  also compile the training step (the train section)\n"
    "  --emit LIST              comma list of what to write: exe (the program, the\n"
    "                           default), obj (PROG.o), header (PROG.h, for linking\n"
    "                           PROG.o into a C program), llvm (PROG.ll, or the\n"
    "                           optimized LLVM IR on stdout without -o), asm (PROG.s,\n"
    "                           or stdout); with -o, llvm and asm write the parameters\n"
    "                           to PROG.params, which their text includes by that path\n"
    "                           (.incbin); on stdout the code draws them at start; kir\n"
    "                           (PROG.kir, or stdout: each kernel's Kernel IR, the\n"
    "                           loop nest codegen starts from, after the nodes it\n"
    "                           computes and their source lines)\n"
    "  --prefix NAME            with --emit obj,header (llvm, asm): the object's symbols\n"
    "                           are NAME_infer, NAME_prepare, NAME_train_step,\n"
    "                           NAME_params, NAME_manifest and the header's macros\n"
    "                           start with NAME in capitals, instead of kiln_ and\n"
    "                           KILN_: two models in one program (a GAN's generator\n"
    "                           and discriminator)\n"
    "  --weights FILE           initial parameters from a safetensors file (kiln init,\n"
    "                           kiln train --save)\n"
    "  --seed N                 initialization seed (default 0; with --train: the\n"
    "                           train section's, which also seeds shuffling)\n"
    "  -D, --define NAME=VALUE  override a model constant (e.g. the batch: -D N=32)\n"
    "  --model NAME             which model of the file (default: the first)\n";

/* The rest of build's help (one literal would pass C's 4095 characters). */
static const char build_help_end[] =
    CLI_FUSE_HELP
    "                           (see kiln show --stage fused)\n"
    "  --no-inplace, --no-share, --schedule=default|min-memory, --verify-plan\n"
    "                           memory-planning switches (see kiln show --stage plan)\n"
    "  --no-prepack             no transposed copy of matmul weights for inference,\n"
    "                           nor values of weights and constants alone (a\n"
    "                           positional encoding) made ahead (by default\n"
    "                           kiln_prepare makes them once, when the program\n"
    "                           loads its weights; same results)\n"
    CLI_DENORMALS_HELP
    "  --threads N              compile on N threads (default: one per core); the\n"
    "                           program's code is then N object files linked together\n"
    "  -v, --verbose            print the plans and where the time went\n"
    "  --target cpu|cuda        cuda: PROG runs inference (and with --train its train\n"
    "                           command) on CUDA device 0 (--emit exe, the default\n"
    "                           with -o but not FILE.cu), with NVRTC's CUBINs and PTX\n"
    "                           built in (--arch, default sm_80,sm_90,compute_80)\n"
    "  --emit cuda,ptx,cubin    with cuda: the kernels as FILE.cu (or stdout), FILE.ptx,\n"
    "                           FILE.sm_XY.cubin\n"
    "  -h, --help               this help\n";

enum { EMIT_EXE = 1, EMIT_OBJ = 2, EMIT_HEADER = 4, EMIT_LLVM = 8, EMIT_ASM = 16, EMIT_KIR = 32 };
enum { EMIT_TEXT = EMIT_LLVM | EMIT_ASM | EMIT_KIR }; /* may go to stdout, one at a time */

typedef struct Build {
  Cli *c;
  unsigned emit;
  Graph *ge, *gt;
  TrainStep ts;
  Aot a;
  bool aot_ready;
  char *tmp_obj[AOT_MAX_PARTS]; /* object files removed at the end */
  int n_parts;                  /* > 0: the program's code in that many objects */
  char *tmp_params;             /* the parameters' file for the assembler, removed too */
  double t0, t_front, t_link, t_write;
  bool cuda;    /* --target cuda --emit exe: the device's program */
  CuAot cu;     /* its device part */
  bool cu_ready;
} Build;

static int parse_emit(const char *list, unsigned *bits) {
  static const char *const names[] = {"exe", "obj", "header", "llvm", "asm", "kir"};
  return cli_parse_emit(list, names, 6, "", bits);
}

/* A prefix whose entry points (P_infer, ...) could be a kernel's name. */
static bool reserved_prefix(const char *p) {
  static const char *const words[] = {"infer", "train", "prepare"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if (strncmp(p, words[i], n) == 0 && (p[n] == '\0' || p[n] == '_'))
      return true;
  }
  return false;
}

static int build_validate(Cli *c) {
  if (c->cuda && c->prefix)
    return cli_usage_error("build", "--prefix names a CPU object's symbols (--emit obj,header); "
                           "not with --target cuda");
  if (c->cuda)
    return cli_build_cuda_validate(c); /* cli/cuda.c */
  unsigned bits = EMIT_EXE;
  if (c->emit && parse_emit(c->emit, &bits) != EXIT_OK)
    return EXIT_USAGE;
  if (!c->out && (bits & ~(unsigned)EMIT_TEXT))
    return cli_usage_error("build",
                           "-o PROG is required (only --emit llvm, asm or kir print to stdout)");
  if (!c->out && (bits & EMIT_TEXT) & ((bits & EMIT_TEXT) - 1))
    return cli_usage_error("build", "--emit %s without -o would mix them on stdout", c->emit);
  if (c->prefix && (bits & EMIT_EXE))
    return cli_usage_error("build", "--prefix names the symbols of --emit obj,header (or llvm, "
                           "asm) for code of your own; a program's are kiln_*");
  if (c->prefix && reserved_prefix(c->prefix))
    return cli_usage_error("build", "--prefix %s would clash with the object's kernel names "
                           "(infer_*, train_*, prepare_*)", c->prefix);
  return EXIT_OK;
}

/* --- graphs and parameters ----------------------------------------------------------- */

/* The training graph's examples and labels (as kiln train finds them),
 * which the program's `train` command reads from a dataset; a model with
 * examples alone (an autoencoder) trains without labels.  A model with
 * other inputs gets its training step compiled for code of one's own
 * (--emit obj,header) but no program. */
static void find_data(Build *b, AotGraphs *gs) {
  Cli *c = b->c;
  Node *other;
  gs->accuracy = -1;
  gs->ids_below = 0;
  gs->test_loss = NULL;
  if (!cli_data_inputs(b->gt, &gs->data, &gs->labels, &other)) {
    gs->data = gs->labels = NULL;
    if (!(b->emit & EMIT_EXE))
      return;
    const char *why = "kiln build --train makes a program whose `train` command reads from a "
                      "dataset " CLI_DATA_INPUTS;
    const char *hint = "--emit obj,header compiles the training step for code of your own";
    if (other)
      error_at(&c->diag, other->loc, "%s; model %s has another %s input '%s' (%s)", why,
               b->gt->name, dtype_name(other->dtype), other->name, hint);
    error_plain(&c->diag, "%s; model %s has no input (%s)", why, b->gt->name, hint);
  }
  const Node *at;
  const char *shapes = cli_data_shapes(c, gs->data, gs->labels, &at);
  if (shapes && (b->emit & EMIT_EXE))
    error_at(&c->diag, at->loc, "kiln build --train: %s (--emit obj,header compiles the training "
             "step for code of your own)", shapes);
  if (shapes) {
    gs->data = gs->labels = NULL;
    return;
  }
  if (gs->data->dtype == DT_I32)
    gs->ids_below = cli_ids_below(b->gt, gs->data);
  const Node *out = b->ge->n_outputs ? b->ge->outputs[0].node : NULL;
  if (cli_scores_for(out, gs->labels))
    gs->accuracy = 0;
  if (gs->accuracy < 0) /* scored by the loss, which reads the examples and any labels */
    gs->test_loss = graph_find_value(b->ge, b->ge->spec.minimize);
}

typedef struct Twin {
  Build *b;
  CompileOpts o;
  Diag d;
  Graph *g;
} Twin;

static void twin_fn(void *ud) {
  Twin *t = ud;
  t->g = frontend_compile(t->b->c->arena, &t->d, t->b->c->src, &t->o);
}

/* The inference graph again with its batch constant (the one whose value
 * sizes the first input's first axis) one larger, for aot_batch_size. */
static void batch_twin(Build *b, AotGraphs *gs) {
  Cli *c = b->c;
  const Graph *g = b->ge;
  const Node *in = NULL;
  for (int i = 0; i < g->n_nodes && !in; i++)
    if (g->nodes[i]->op == OP_INPUT && g->nodes[i]->shape.rank >= 1)
      in = g->nodes[i];
  char want[32];
  snprintf(want, sizeof want, "%lld", in ? (long long)in->shape.dim[0] : -1LL);
  for (int k = 0; in && k < g->n_consts && !gs->twin; k++) {
    if (strcmp(g->const_values[k], want) != 0)
      continue;
    Twin t = {.b = b, .o = c->co};
    Define *defs = arena_alloc(c->arena, sizeof(Define) * (size_t)(c->co.n_defines + 1));
    t.o.defines = defs;
    t.o.n_defines = 0;
    t.o.training = false;
    for (int i = 0; i < c->co.n_defines; i++)
      if (strcmp(c->co.defines[i].name, g->const_names[k]) != 0)
        defs[t.o.n_defines++] = c->co.defines[i];
    defs[t.o.n_defines++] = (Define){g->const_names[k],
                                     arena_fmt(c->arena, "%lld", (long long)in->shape.dim[0] + 1)};
    diag_init(&t.d);
    if (diag_protect(&t.d, twin_fn, &t) == 0 && t.g->n_nodes == g->n_nodes) {
      cli_inference_passes(c, t.g); /* node for node what the inference graph becomes */
      gs->twin = t.g;
      gs->batch_name = g->const_names[k];
    }
    diag_free(&t.d);
  }
}

/* Code of one's own (--emit obj,header) may read the model's outputs
 * after a training step (a GAN's generated images): with a header to
 * give their places, they become roots of the step, kept until it ends.
 * A program's trainer reads none. */
static void keep_outputs(Build *b) {
  TrainStep *ts = &b->ts;
  Node **roots =
      arena_alloc(b->gt->arena, sizeof(Node *) * (size_t)(ts->n_roots + b->gt->n_outputs + 1));
  memcpy(roots, ts->roots, sizeof(Node *) * (size_t)ts->n_roots);
  int n = ts->n_roots;
  for (int i = 0; i < b->gt->n_outputs; i++) {
    Node *o = b->gt->outputs[i].node;
    bool have = false;
    for (int r = 0; r < n && !have; r++)
      have = roots[r] == o;
    if (!have)
      roots[n++] = o;
  }
  ts->roots = roots;
  ts->n_roots = n;
}

static void build_graphs(Build *b, AotGraphs *gs) {
  Cli *c = b->c;
  char err[512];
  b->ge = gs->infer = cli_build(c, false);
  if (!b->ge->n_outputs)
    error_plain(&c->diag, "model %s declares no outputs: a built program computes the outputs",
                b->ge->name);
  batch_twin(b, gs);
  cli_inference_passes(c, b->ge); /* weights are prepared when a program starts */
  if (c->co.training) {
    b->gt = gs->train = cli_build(c, true);
    if (!b->gt->has_train)
      error_plain(&c->diag, "model %s has no train section (train %s { minimize LOSS ... })",
                  b->gt->name, b->gt->name);
    build_train_step(b->gt, &c->diag, &b->ts);
    if (b->emit & EMIT_HEADER)
      keep_outputs(b);
    cli_train_passes(c, b->gt);
    gs->ts = &b->ts;
    find_data(b, gs);
    gs->spec = b->gt->spec;
    if (c->seed_given)
      gs->spec.seed = c->seed;
  }
  if (!graph_verify(b->ge, err, sizeof err) || (b->gt && !graph_verify(b->gt, err, sizeof err)))
    die("graph verification failed: %s", err);
}

static bool in_inference(const Build *b, const Node *p) {
  const Node *q = graph_find(b->ge, p->name);
  return q && q->op == OP_PARAM;
}

/* --weights: every parameter the inference graph has must be there; the
 * optimizer state of a training build is taken when the file has it. */
static void load_weights(Build *b) {
  Cli *c = b->c;
  Aot *a = &b->a;
  RtTensorFile tf = {0};
  char err[512], ta[160], tb[160];
  if (rt_safetensors_read(c->weights, &tf, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  for (int i = 0; i < a->n_params; i++) {
    const Node *n = a->params[i].node;
    const RtNamedTensor *t = rt_tensor_file_find(&tf, n->name);
    bool ok = t && t->t.dtype == n->dtype && t->t.rank == n->shape.rank;
    for (int k = 0; ok && k < n->shape.rank; k++)
      ok = t->t.dim[k] == n->shape.dim[k];
    if (ok) {
      memcpy(a->blob + a->params[i].offset, t->t.data, (size_t)a->params[i].bytes);
    } else if (t || in_inference(b, n)) {
      if (t)
        rt_tensor_type_str(&t->t, tb, sizeof tb);
      snprintf(err, sizeof err, "%s: parameter %s: expected %s, %s%s", c->weights, n->name,
               node_type_str(n, ta, sizeof ta), t ? "got " : "the file does not have it",
               t ? tb : "");
      rt_tensor_file_free(&tf);
      error_plain(&c->diag, "%s", err);
    }
  }
  Graph *g = b->gt ? b->gt : b->ge;
  for (int i = 0; i < tf.n; i++) {
    Node *n = graph_find(g, tf.items[i].name);
    if ((!n || n->op != OP_PARAM) && !optimizer_state_of(g, tf.items[i].name))
      fprintf(stderr, "kiln: warning: %s: tensor %s is not a parameter of model %s (ignored)\n",
              c->weights, tf.items[i].name, g->name);
  }
  rt_tensor_file_free(&tf);
}

static const char *with_ext(Build *b, const char *ext) {
  return arena_fmt(b->c->arena, "%s%s", b->c->out, ext);
}

static void fill_params(Build *b) {
  Aot *a = &b->a;
  uint64_t seed = b->gt ? a->src.spec.seed : b->c->seed;
  /* nothing to carry: the program draws them (so does the code printed on
   * stdout, which has no file to include them from; --emit kir alone writes
   * no code) */
  if (!b->c->weights && (b->emit == EMIT_EXE || b->emit == EMIT_KIR || !b->c->out)) {
    aot_params_at_start(a, seed);
    return;
  }
  for (int i = 0; i < a->n_params; i++)
    param_init_fill(a->params[i].node, seed, a->blob + a->params[i].offset);
  if (b->c->weights)
    load_weights(b);
  if (!b->c->out)
    return; /* --weights on stdout: the constant, in the text */
  char err[512];
  const char *path;
  if (b->emit & (EMIT_LLVM | EMIT_ASM)) { /* their text includes PROG.params by name */
    path = with_ext(b, ".params");
  } else {
    path = b->tmp_params =
        arena_fmt(b->c->arena, "%s.tmp.%ld.params", b->c->out, (long)getpid());
  }
  if (!aot_params_to_file(a, path, err, sizeof err))
    error_plain(&b->c->diag, "%s", err);
}

/* --- files ------------------------------------------------------------------------------ */

static void write_text(Build *b, const char *path, const char *text) {
  char err[512];
  size_t len = strlen(text);
  if (!path) {
    fwrite(text, 1, len, stdout);
    return;
  }
  const void *pieces[] = {text};
  if (rt_write_file_atomic(path, pieces, &len, 1, err, sizeof err) != RT_OK)
    error_plain(&b->c->diag, "%s", err);
}

static void write_object(Build *b, const char *path, bool assembly) {
  char err[1024];
  if (!aot_write_object(&b->a, path, assembly, err, sizeof err))
    error_plain(&b->c->diag, "%s", err);
}

/* Assembly on stdout: through a temporary file. */
static void print_asm(Build *b) {
  char path[] = "/tmp/kiln-asm-XXXXXX", err[512];
  int fd = mkstemp(path);
  if (fd < 0)
    error_plain(&b->c->diag, "cannot create a temporary file in /tmp");
  close(fd);
  write_object(b, path, true);
  void *data;
  size_t len;
  RtStatus s = rt_read_file(path, &data, &len, err, sizeof err);
  remove(path);
  if (s != RT_OK)
    error_plain(&b->c->diag, "%s", err);
  fwrite(data, 1, len, stdout);
  free(data);
}

/* --- linking ----------------------------------------------------------------------------- */

static const char *runtime_archive(Build *b) {
  const char *lib = b->cuda ? "libkiln_rt_cuda_main.a" : "libkiln_rt_main.a";
#if defined(KILN_RT_MAIN_LIB) && defined(KILN_RT_CUDA_MAIN_LIB)
  const char *built = b->cuda ? KILN_RT_CUDA_MAIN_LIB : KILN_RT_MAIN_LIB;
  if (access(built, R_OK) == 0)
    return built;
#endif
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    const char *tries[] = {"runtime", "../lib/kiln"};
    for (int i = 0; i < 2; i++) {
      const char *p = arena_fmt(b->c->arena, "%s/%s/%s", exe, tries[i], lib);
      if (access(p, R_OK) == 0)
        return p;
    }
  }
  error_plain(&b->c->diag, "cannot find the runtime library %s (looked in the build tree and "
              "next to the kiln executable)", lib);
}

/* Runs argv, collecting its stdout and stderr; returns its exit status
 * (-1 with *out set to the reason if it could not run). */
static int run_capture(Build *b, char *const *argv, char **out) {
  int fds[2];
  if (pipe(fds) != 0) {
    *out = arena_fmt(b->c->arena, "pipe: %s", strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  pid_t pid;
  int e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  size_t len = 0, cap = 4096;
  char *buf = arena_alloc(b->c->arena, cap + 1);
  for (ssize_t k; e == 0 && (k = read(fds[0], buf + len, cap - len)) != 0;) {
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      break;
    len += (size_t)k;
    if (len == cap) {
      buf = arena_realloc(b->c->arena, buf, cap + 1, 2 * cap + 1);
      cap *= 2;
    }
  }
  close(fds[0]);
  buf[len] = '\0';
  *out = buf;
  if (e != 0) {
    *out = arena_fmt(b->c->arena, "cannot run %s: %s", argv[0], strerror(e));
    return -1;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Links objs into dest: the program (with the runtime's main), or with
 * `relocatable` one object file of them all (cc -r: --emit obj of a
 * module compiled in parts). */
static void link_objects(Build *b, char *const *objs, int n_objs, const char *dest,
                         bool relocatable) {
  Cli *c = b->c;
  const char *tmp = arena_fmt(c->arena, "%s.tmp.%ld", dest, (long)getpid());
  char *argv[32 + AOT_MAX_PARTS];
  int n = 0;
  argv[n++] = "cc";
  char *flags = arena_strdup(c->arena, relocatable ? "-r -nostdlib" : KILN_RT_LINK_FLAGS);
  for (char *f = strtok(flags, " "); f && n < 24; f = strtok(NULL, " "))
    argv[n++] = f;
  argv[n++] = "-o";
  argv[n++] = (char *)tmp;
  for (int i = 0; i < n_objs; i++)
    argv[n++] = objs[i];
  char *rest[] = {(char *)runtime_archive(b), "-lm", "-lpthread", NULL};
  if (relocatable)
    argv[n] = NULL;
  else
    memcpy(argv + n, rest, sizeof rest);
  char *out;
  double t = rt_now();
  int rc = run_capture(b, argv, &out);
  b->t_link += rt_now() - t;
  if (rc != 0) {
    remove(tmp);
    error_plain(&c->diag, "linking %s failed%s%s:\n%s", dest, rc > 0 ? " (cc exited with " : "",
                rc > 0 ? arena_fmt(c->arena, "status %d)", rc) : "", out);
  }
  if (c->verbose && out[0])
    fputs(out, stderr);
  /* the parts call each other through hidden symbols: local in the
   * result, so the object exports the kiln_* entry points only */
  char *localize[] = {"objcopy", "--localize-hidden", (char *)tmp, NULL};
  if (relocatable && (rc = run_capture(b, localize, &out)) != 0) {
    remove(tmp);
    error_plain(&c->diag, "objcopy --localize-hidden on %s failed:\n%s", dest, out);
  }
  if (rename(tmp, dest) != 0) {
    remove(tmp);
    error_plain(&c->diag, "%s: cannot rename the linked %s over it: %s", dest,
                relocatable ? "object" : "program", strerror(errno));
  }
}

/* --- the command ------------------------------------------------------------------------ */

static void report(Build *b, double total) {
  Aot *a = &b->a;
  int kernels = a->infer.n_calls + a->train.n_calls;
  char what[256] = "";
  if (b->cuda) {
    char images[160];
    cu_aot_describe(&b->cu, images, sizeof images);
    snprintf(what, sizeof what, " on a CUDA device (%s; %d launches)", images,
             b->cu.n_infer + b->cu.n_train);
  }
  fprintf(stderr, "built %s: model %s, %s%s, %d kernels, %d parameters (%.1f KiB), arena %.2f MiB",
          b->c->out ? b->c->out : "(stdout)", a->model,
          a->has_train ? "inference + training step" : "inference", what, kernels, a->n_params,
          (double)a->params_bytes / 1024, (double)a->infer.plan.arena / 1048576);
  if (a->has_train)
    fprintf(stderr, " + %.2f MiB", (double)a->train.plan.arena / 1048576);
  fprintf(stderr, ", in %.2f s\n", total);
  if (!b->c->verbose)
    return;
  fprintf(stderr, "  front end %.3f s, plan %.3f s, lower %.3f s, LLVM IR %.3f s, ", b->t_front,
          a->times.plan, a->times.lower, a->times.emit_ir);
  if (b->cuda)
    fprintf(stderr, "CUDA and NVRTC %.3f s (NVRTC %.3f s)", b->t_write, b->cu.nvrtc_seconds);
  else if (b->n_parts > 0)
    fprintf(stderr, "O3 and objects on %d thread%s %.3f s", b->n_parts, b->n_parts > 1 ? "s" : "",
            b->t_write);
  else
    fprintf(stderr, "O3 %.3f s, write %.3f s", a->times.optimize, b->t_write);
  fprintf(stderr, ", link %.3f s\n", b->t_link);
  fprintf(stderr, "  inference: ");
  plan_print_summary(&a->infer.plan, stderr);
  if (a->has_train) {
    fprintf(stderr, "  training step: ");
    plan_print_summary(&a->train.plan, stderr);
  }
}

static void verify_plans(Build *b) {
  char err[512];
  Aot *a = &b->a;
  Node **outs = arena_alloc(b->c->arena, sizeof(Node *) * (size_t)(b->ge->n_outputs + 1));
  for (int i = 0; i < b->ge->n_outputs; i++)
    outs[i] = b->ge->outputs[i].node;
  if (!plan_verify(b->ge, outs, b->ge->n_outputs, &a->infer.plan, err, sizeof err) ||
      (b->gt && !plan_verify(b->gt, b->ts.roots, b->ts.n_roots, &a->train.plan, err, sizeof err)))
    die("the memory plan of %s failed verification: %s", a->model, err);
}

/* The folder of -o must exist and be writable before minutes are spent. */
static void check_out_dir(Build *b) {
  const char *out = b->c->out, *slash = out ? strrchr(out, '/') : NULL;
  if (!out)
    return;
  const char *dir = slash ? arena_strndup(b->c->arena, out, (size_t)(slash - out)) : ".";
  if (access(dir[0] ? dir : "/", W_OK) != 0)
    error_plain(&b->c->diag, "%s: cannot write in folder %s: %s", out, dir[0] ? dir : "/",
                strerror(errno));
}

/* One step's kernels for --emit kir, each after a comment naming the nodes
 * it computes (a fused kernel's members, the anchor last) and where. */
static void kir_step(Build *b, FILE *f, const char *what, const CgCall *calls, int n) {
  fprintf(f, "// %s: %d kernels, in the order the step calls them\n\n", what, n);
  for (int i = 0; i < n; i++) {
    const Kernel *k = calls[i].k;
    int nm = k->n_members ? k->n_members : k->node ? 1 : 0;
    fprintf(f, "// %s:", k->name);
    for (int m = 0; m < nm; m++) {
      const Node *v = k->n_members ? k->members[m] : k->node;
      fprintf(f, "\n//   %s %s  %s", op_name(v->op), v->name, cli_loc(b->c, v->loc));
    }
    fputc('\n', f);
    kir_print(k, f);
    fputc('\n', f);
  }
}

/* --emit kir: the Kernel IR of the prepare step, inference and the
 * training step, under the names the LLVM functions have (--emit llvm). */
static void write_kir(Build *b) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    error_plain(&b->c->diag, "out of memory");
  fprintf(f, "// kiln build --emit kir: model %s, --fuse=%s\n", b->a.model,
          fuse_opts_text(&b->c->plan.fuse));
  kir_step(b, f, "kiln_prepare (weight-derived values)", b->a.prep_calls, b->a.n_prep_calls);
  kir_step(b, f, "kiln_infer (inference)", b->a.infer.calls, b->a.infer.n_calls);
  if (b->a.has_train)
    kir_step(b, f, "kiln_train_step (training step)", b->a.train.calls, b->a.train.n_calls);
  fclose(f);
  write_text(b, b->c->out ? with_ext(b, ".kir") : NULL, arena_strdup(b->c->arena, text));
  free(text);
}

static void write_header(Build *b) {
  const char *out = b->c->out, *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
  char *h = aot_header(&b->a, base), *text = arena_strdup(b->c->arena, h);
  free(h);
  write_text(b, with_ext(b, ".h"), text);
}

/* The program's code as one object per thread (--threads, default one per
 * core, up to AOT_MAX_PARTS), each optimized and compiled on its own
 * thread (codegen/aot_split.c). */
static void write_parts(Build *b) {
  char err[1024];
  long want = b->c->threads > 0 ? (long)b->c->threads : sysconf(_SC_NPROCESSORS_ONLN);
  b->n_parts = want < 1 ? 1 : want > AOT_MAX_PARTS ? AOT_MAX_PARTS : (int)want;
  for (int i = 0; i < b->n_parts; i++)
    b->tmp_obj[i] = arena_fmt(b->c->arena, "%s.tmp.%ld.%d.o", b->c->out, (long)getpid(), i);
  double t = rt_now();
  if (!aot_write_parts(&b->a, b->n_parts, b->tmp_obj, err, sizeof err))
    error_plain(&b->c->diag, "%s", err);
  b->t_write = rt_now() - t;
}

/* --target cuda: the device's module and images in place of the CPU
 * code, written with the manifest and parameters as an assembly file and
 * linked with the CUDA runtime's main. */
static void build_cuda_program(Build *b) {
  Cli *c = b->c;
  CuTargets t = CU_NVRTC_DEFAULT;
  char err[1024], *report = NULL;
  double t0 = rt_now();
  if (c->arch)
    cu_targets_parse(c->arch, &t, err, sizeof err); /* validated */
  b->cu_ready = true; /* cu_aot_free releases whatever compile got to */
  if (!cu_aot_compile(&b->cu, &b->a, &t, err, sizeof err, &report)) {
    if (report)
      fputs(report, stderr);
    free(report);
    error_plain(&c->diag, "compiling %s for CUDA: %s", b->a.model, err);
  }
  const char *base = arena_fmt(c->arena, "%s.tmp.%ld", c->out, (long)getpid());
  if (!cu_aot_write_asm(&b->cu, &b->a, base, err, sizeof err))
    error_plain(&c->diag, "%s", err);
  b->t_write = rt_now() - t0;
  link_objects(b, &b->cu.asm_path, 1, c->out, false);
}

static void build_fn(void *ud) {
  Build *b = ud;
  Cli *c = b->c;
  AotGraphs gs = {0};
  char err[1024];
  check_out_dir(b);
  build_graphs(b, &gs);
  b->t_front = rt_now() - b->t0;
  b->aot_ready = true; /* aot_free undoes a partial aot_init too */
  if (!aot_init(&b->a, &gs, &c->plan, err, sizeof err))
    error_plain(&c->diag, "%s: %s", gs.infer->name, err);
  if (c->prefix)
    b->a.sym = c->prefix;
  if (c->verify_plan)
    verify_plans(b);
  fill_params(b);
  CgOpts co = {.opt_level = 3, .keep_denormals = c->keep_denormals};
  if (!aot_compile(&b->a, &co, err, sizeof err))
    die("compiling %s: %s", b->a.model, err); /* a compiler bug, not the user's */
  unsigned e = b->emit;
  if (b->cuda) {
    build_cuda_program(b);
    report(b, rt_now() - b->t0);
    return;
  }
  if (e & EMIT_KIR)
    write_kir(b);
  if (e == EMIT_KIR) {
    report(b, rt_now() - b->t0);
    return;
  }
  if (!(e & (EMIT_LLVM | EMIT_ASM))) { /* no text of the module wanted: compile it in parts */
    write_parts(b);
    if (e & EMIT_HEADER)
      write_header(b);
    if (e & EMIT_OBJ)
      link_objects(b, b->tmp_obj, b->n_parts, with_ext(b, ".o"), true);
    if (e & EMIT_EXE)
      link_objects(b, b->tmp_obj, b->n_parts, c->out, false);
    report(b, rt_now() - b->t0);
    return;
  }
  if (!aot_optimize(&b->a, err, sizeof err))
    die("compiling %s: %s", b->a.model, err);
  double t = rt_now();
  if (e & EMIT_LLVM) {
    char *ir = cg_print_ir(b->a.cg), *text = arena_strdup(c->arena, ir);
    free(ir);
    write_text(b, c->out ? with_ext(b, ".ll") : NULL, text);
  }
  if ((e & EMIT_ASM) && c->out)
    write_object(b, with_ext(b, ".s"), true);
  else if (e & EMIT_ASM)
    print_asm(b);
  if (e & EMIT_HEADER)
    write_header(b);
  char *obj = (char *)with_ext(b, ".o");
  if (!(e & EMIT_OBJ) && (e & EMIT_EXE))
    obj = b->tmp_obj[0] = arena_fmt(c->arena, "%s.tmp.%ld.o", c->out, (long)getpid());
  if (e & (EMIT_OBJ | EMIT_EXE))
    write_object(b, obj, false);
  b->t_write = rt_now() - t;
  if (e & EMIT_EXE)
    link_objects(b, &obj, 1, c->out, false);
  report(b, rt_now() - b->t0);
}

static int build_run(Cli *c) {
  if (c->cuda && !cli_build_cuda_exe(c))
    return cli_build_cuda(c); /* cli/cuda.c: --emit cuda,ptx,cubin */
  Build b = {.c = c, .emit = EMIT_EXE, .t0 = rt_now(), .cuda = c->cuda};
  if (c->emit && !c->cuda)
    parse_emit(c->emit, &b.emit);
  int rc = cli_protect(c, build_fn, &b);
  for (int i = 0; i < AOT_MAX_PARTS; i++)
    if (b.tmp_obj[i])
      remove(b.tmp_obj[i]);
  if (b.tmp_params)
    remove(b.tmp_params);
  if (b.cu_ready)
    cu_aot_free(&b.cu);
  if (b.aot_ready)
    aot_free(&b.a);
  return rc;
}

const Command cmd_build = {"build", "DmtowSeIHCVYhKjFXAzp", build_help, build_validate,
                          build_run, build_help_end};
