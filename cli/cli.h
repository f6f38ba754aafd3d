/*
 * cli.h: the `kiln` driver's shared pieces.
 *
 * Exit codes: 0 success, 1 a user error (bad model, bad file, wrong shape),
 * 2 a usage error (unknown option, missing argument).  Every command has
 * --help.  User errors are raised with error_at / error_plain inside
 * diag_protect and printed once by main.
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "frontend.h"
#include "ir.h"
#include "passes.h"
#include "program.h"
#include "cuda_program.h"
#include "rt_pool.h"

enum { EXIT_OK = 0, EXIT_USER = 1, EXIT_USAGE = 2 };

/* NAME=PATH from --input, --output, --grad. */
typedef struct CliPair {
  const char *name, *path;
} CliPair;

typedef struct Cli {
  const char *cmd;       /* "check", "show", ... */
  const char *file;      /* the model file */
  CompileOpts co;        /* -D, --model, --train */
  Define defs[64];
  const char *format;    /* show: text, dot, json */
  const char *stage;     /* show: graph, grad, plan, fused */
  bool json;             /* bench: --json */
  const char *out;       /* -o */
  const char *weights;   /* run: --weights */
  const char *save_weights;
  CliPair inputs[64], outputs[64], grads[64];
  int n_inputs, n_outputs, n_grads; /* grads: run --grad PARAM=FILE.npy */
  bool random_inputs, reference;
  uint64_t seed;
  bool seed_given;
  int64_t step; /* run --step N: the step of the random draws (randn, dropout) */
  /* train */
  const char *data, *save, *resume;
  int64_t epochs, batch, limit, test_limit; /* 0: not given */
  double lr;                                /* 0: not given */
  /* memory planning */
  PlanOpts plan;         /* .fuse: --fuse (not given: all kinds; with --target cuda
                            all but row and reduce) */
  bool fuse_given;
  bool no_plan, verbose, verify_plan;
  bool no_prepack; /* --no-prepack: weights as the model has them (passes/prepack.c) */
  bool keep_denormals; /* --keep-denormals: CgOpts.keep_denormals */
  int64_t threads; /* --threads (0: one per core) */
  const char *emit; /* build: --emit LIST */
  int64_t repeat;  /* --repeat: timed runs */
  bool cuda;       /* --target cuda (else the CPU: --target cpu, the default) */
  const char *arch; /* build --target cuda: --arch LIST (cuda_nvrtc.h's targets) */
  const char *prefix; /* build: --prefix NAME, the object's symbols (NULL: kiln) */
  RtCuda *dev;      /* --target cuda: the device, opened once (cli_cuda_device) */
  Arena *arena;
  Diag diag;
  const Source *src; /* read once */
  Graph *g;
} Cli;

/* Parses argv after the command name; returns EXIT_OK or prints the
 * problem and returns EXIT_USAGE.  `allowed` lists the options the command
 * takes ("DmtfsoiwrSRh" letters, see cli.c); *help is set by -h/--help. */
int cli_parse(Cli *c, int argc, char **argv, const char *allowed, bool *help);
/* Reads c->file and builds the graph (raises user errors). */
void cli_compile(Cli *c);
/* Builds the graph of c->file with c's options, in training mode or not. */
Graph *cli_build(Cli *c, bool training);
/* Prints the usage error and the hint; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A command: its option letters (see cli.c), help text, usage checks after
 * parsing (NULL if none) and the work itself; both return exit codes. */
typedef struct Command {
  const char *name;
  const char *options;
  const char *help;
  int (*validate)(Cli *c);
  int (*run)(Cli *c);
  const char *help_end; /* printed after help, or NULL (C compilers need only take
                         * string literals of 4095 characters) */
} Command;

/* Parses argv, prints help or runs the command, frees; returns the exit code. */
int cli_main(const Command *cmd, int argc, char **argv);

extern const Command cmd_check, cmd_show, cmd_run, cmd_init, cmd_train, cmd_build, cmd_bench;

/* --keep-denormals in the help of the commands that compile CPU code
 * (codegen/llvm/cg_kernel.c, "Subnormals"). */
#define CLI_DENORMALS_HELP                                                              \
  "  --keep-denormals         compiled CPU code keeps subnormal numbers (< 1.2e-38)\n" \
  "                           as the reference evaluator does; by default it\n"       \
  "                           flushes them to zero (FTZ/DAZ), far faster on them\n"

/* --fuse in the help of every command that compiles or plans (passes.h,
 * fuse.c, says what each kind does). */
#define CLI_FUSE_HELP                                                                   \
  "  --fuse=LIST              operator fusion: all (default; with --target cuda\n"       \
  "                           all but row, reduce, view and batchsum), none, or a\n"     \
  "                           comma list of the kinds to do: eltwise (a chain of\n"      \
  "                           elementwise ops of one shape in one loop, with the\n"      \
  "                           slices and reshapes they read), reduce (elementwise\n"     \
  "                           producers recomputed inside the reduction, softmax,\n"     \
  "                           loss or data movement op that reads them), multi\n"        \
  "                           (results of the step, e.g. an optimizer's new\n"           \
  "                           values, as extra outputs of one elementwise kernel),\n"    \
  "                           epilogue (a matmul or convolution and the\n"               \
  "                           elementwise ops after it: bias, activation, residual\n"    \
  "                           add), fold (at inference, a batchnorm after a\n"           \
  "                           convolution folded into its weights; last bits\n"          \
  "                           differ), row (layer and batch norm's reductions,\n"        \
  "                           consumers), scatter (a split's gradient summed in\n"       \
  "                           one kernel), deriv (in training, gelu's derivative\n"      \
  "                           computed and stored by gelu's kernel), view (a\n"          \
  "                           transpose a matmul reads or writes folded into its\n"      \
  "                           strides: attention's heads; not with --target cuda\n"      \
  "                           by default), batchsum (a sum over a matmul's batch\n"      \
  "                           axes done by the matmul: weight gradients of dense\n"      \
  "                           layers on [N, T, D]; not with --target cuda by\n"          \
  "                           default), const (a scalar constant read by\n"              \
  "                           elementwise ops is a literal in their kernels, not\n"      \
  "                           a kernel and a buffer of its own); fused values get\n"     \
  "                           no buffer\n"

/* The rewrites an inference graph gets before planning (kiln run, build,
 * bench), unless --no-prepack: batchnorm folded into convolution weights
 * (--fuse kind fold, passes/fold.c), then weights prepacked and
 * parameter-only values hoisted into the prepare step (passes/prepack.c).
 * Transposes a matmul reads or writes are folded into it first (--fuse kind
 * view, passes/view.c), --no-prepack or not. */
void cli_inference_passes(Cli *c, Graph *g);
/* The rewrites a training step's graph gets before planning (kiln train,
 * build --train, bench --train, show --train): transposes a matmul reads
 * or writes folded into it (--fuse kind view, passes/view.c); weights read
 * transposed by a matmul transposed once per step (passes/step_transpose.c);
 * with --fuse kind deriv, gelu's derivative made a forward value
 * (passes/deriv.c).  None changes a bit of the results. */
void cli_train_passes(Cli *c, Graph *g);
/* The thread count and grain a repeated step settled on (runtime/tune.c),
 * in words: "2 of 2 threads at a coarse grain, the fastest of 1 (38.1 us),
 * 2 (66.0 us), 2 at a coarse grain (37.7 us)", or "2 threads" when
 * nothing was measured. */
const char *cli_tune_text(Cli *c, const RtTune *t);

/* What one step computes.  With `train`, the training step of g (g built
 * in training mode; *ts filled): the loss and the update values.  Else
 * g's outputs, after prepacking matmul weights unless --no-prepack (what
 * run and build compile).  Raises a user error when there is nothing. */
Node **cli_step_roots(Cli *c, Graph *g, bool train, TrainStep *ts, int *n);
/* --batch: adds the -D of the one model constant of g that sizes the
 * first axis of its input x, after (so over) any -D of it; a user error
 * if no single constant does. */
void cli_define_batch(Cli *c, const Graph *g, const Node *x);
/* What a trainer reads from a dataset (kiln train, programs built with
 * --train): a model's one or two inputs, the examples *x and the labels *y
 * (NULL: trained without labels).  Of an f32 and an i32 input, the f32 one
 * is the examples (the i32 one class labels); of two inputs of one type,
 * the first declared (i32: token ids; f32 labels: targets, such as masks).
 * False when g has no input or more than two: *bad is then the third. */
bool cli_data_inputs(const Graph *g, Node **x, Node **y, Node **bad);
/* NULL when the examples x and labels y (or NULL) have a batch axis first,
 * the same length in both and at least 1; else why not, for an error at
 * the input it names (*at). */
const char *cli_data_shapes(Cli *c, const Node *x, const Node *y, const Node **at);
/* The words for what cli_data_inputs accepts, for errors. */
#define CLI_DATA_INPUTS "one or two inputs: the examples (f32, or i32 ids) and, optionally, " \
  "labels (i32 classes or f32 targets; of two inputs of one type, the first declared is " \
  "the examples)"
/* Whether out (a model's first output) holds class scores for i32 labels
 * y: f32 [y's shape..., classes]. */
bool cli_scores_for(const Node *out, const Node *y);
/* The rows of the smallest embedding table that the ids x select from
 * (INT32_MAX when x indexes none). */
int64_t cli_ids_below(const Graph *g, const Node *x);
/* "file:line:col", or "-" without a location (arena-allocated). */
const char *cli_loc(Cli *c, Loc l);

/* Plans g for roots with the command line's switches, verifies the plan
 * under --verify-plan (an internal error if it fails), reports it with -v. */
void cli_plan(Cli *c, Graph *g, Node *const *roots, int n_roots, Plan *p);

/* --- exec.c: running a graph on the compiled program, the reference
 * evaluator (--reference) or a CUDA device (--target cuda, cli/cuda.c),
 * the same way for every command --- */
typedef struct Exec {
  Cli *c;
  Graph *g;
  bool compiled; /* on the CPU */
  bool cuda;     /* on the device: cu, with a host copy of the arena */
  CuProgram cu;
  bool cu_ready;
  char *host;    /* the arena's host copy: inputs are written, results read there */
  void **hval;   /* per node id: the host copy of a value outside the arena */
  Program prog;  /* compiled */
  bool prog_ready;
  Eval ev;       /* reference */
  bool ev_ready;
  bool *live;
  Plan plan;
  void *arena;
  void **spare; /* per node id: where an unneeded input may be written */
} Exec;

/* Prepares g to compute roots (compiling it unless --reference). */
void exec_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n);
void exec_bind_param(Exec *x, const Node *p, void *data);
void *exec_input(Exec *x, const Node *in); /* the buffer to fill before exec_run */
bool exec_needs(const Exec *x, const Node *in);
void exec_run(Exec *x, int64_t step);       /* raises user errors (out of memory) */
void *exec_value(Exec *x, const Node *n);
void exec_apply_updates(Exec *x);
/* After training steps: the parameters' bound buffers hold their current
 * values (on the CPU they always do; a device's are copied back). */
void exec_sync_params(Exec *x);
/* The bound parameter buffers were changed by someone else (another Exec's
 * training): a device copies them in again before the next run.  On the
 * CPU, the engines read the buffers themselves: nothing to do. */
void exec_params_changed(Exec *x);
void exec_free(Exec *x);

/* --- show_fused.c: kiln show --stage fused, a plan's kernels in schedule
 * order with their members and why each kernel ends where it does --- */
void fused_print_text(Cli *c, const Plan *p, FILE *f);
void fused_print_dot(Cli *c, const Plan *p, FILE *f);
void fused_print_json(Cli *c, const Plan *p, FILE *f);

/* --- cuda.c: the CUDA target (--target cuda) --- */
/* The device of --target cuda, opened at the first call (closed by
 * cli_free); raises "no CUDA device found (...)" without one. */
RtCuda *cli_cuda_device(Cli *c);
/* Exec on the device (exec.c calls them when x->cuda). */
void cuda_exec_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n);
void *cuda_exec_input(Exec *x, const Node *in);
void cuda_exec_run(Exec *x, int64_t step);
void *cuda_exec_value(Exec *x, const Node *n);
void cuda_exec_bind_param(Exec *x, const Node *p, void *data);
void cuda_exec_apply_updates(Exec *x);
void cuda_exec_sync_params(Exec *x);
void cuda_exec_free(Exec *x);
/* kiln build --target cuda: its usage checks and the build (--emit cuda,
 * ptx, cubin; --arch). */
int cli_build_cuda_validate(Cli *c);
int cli_build_cuda(Cli *c);
/* Whether that build is a program (--emit exe: cmd_build.c makes it). */
bool cli_build_cuda_exe(const Cli *c);
/* The end of the help of run and train, and of bench: --target, then -h. */
#define CLI_TARGET_HELP                                                                     \
  "  --target cpu|cuda        where to compute: this machine's CPU (the default), or\n"   \
  "                           CUDA device 0: the same memory plan in device memory,\n"    \
  "                           parameters uploaded once, kernels compiled by NVRTC for\n"  \
  "                           the device (tested on an H100, tests/gpu.sh, and on a\n"    \
  "                           fake driver).  Without a device it stops with \"no CUDA\n"  \
  "                           device found\" (exit 1).  KILN_CUDA_SYNC=1 waits after\n"   \
  "                           each kernel, so a fault names its kernel\n"                  \
  "  -h, --help               this help\n"
#define CLI_TARGET_HELP_BENCH                                                               \
  "  --target cpu|cuda        cuda: both builds on CUDA device 0 (compiled as for kiln\n"  \
  "                           run --target cuda), the step and each kernel timed with\n"  \
  "                           CUDA events, each kernel's GB/s also as a fraction of the\n" \
  "                           device memory's peak (memory clock x bus width x 2, when\n"  \
  "                           the driver reports them); run on an H100 (records in\n"     \
  "                           docs/benchmarks.md).  Without a device it\n"                \
  "                           stops with \"no CUDA device found\" (exit 1)\n"           \
  "  -h, --help               this help\n"

/* Parses build's --emit LIST into bits (1 << index in names); a usage
 * error naming the kinds (and `target`, e.g. " for --target cuda") for a
 * word that is not one of them, or an empty list. */
int cli_parse_emit(const char *list, const char *const *names, int n_names, const char *target,
                   unsigned *bits);

/* Runs fn(c) under diag_protect; prints the error and returns 1 if it raised. */
int cli_protect(Cli *c, void (*fn)(void *), void *ud);
void cli_free(Cli *c);

#endif
