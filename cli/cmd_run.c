/*
 * cmd_run.c: `kiln run` (evaluate a model on .npy inputs) and `kiln init`
 * (write initial parameters).
 *
 * Everything that can be wrong with the user's data is checked before any
 * computing starts: each input's dtype and shape against the model, each
 * parameter in a weights file.  Outputs are written only after every value
 * was computed, each through a temporary file and a rename, so a failed run
 * never leaves a partial output file.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kbench.h"
#include "rt_data.h"
#include "rt_pool.h"
#include "passes.h"

static const char run_help[] =
    "usage: kiln run MODEL.kiln [--input NAME=FILE.npy]... [--output NAME=FILE.npy]...\n"
    "                [--random-inputs] [--weights FILE.safetensors] [--seed N]\n"
    "                [--reference] [-D NAME=VALUE]... [--model NAME] [--train]\n"
    "                [--grad PARAM=FILE.npy]... [--fuse=LIST] [--target cpu|cuda]\n"
    "                [--keep-denormals] [--step N]\n"
    "\n"
    "Evaluates the model once.  Without --output, prints a summary of each of\n"
    "the model's outputs; with it, writes the named values (any output or\n"
    "named value of the model) as .npy files.  Only the inputs the requested\n"
    "values depend on are needed.  A model is compiled for the shapes it runs\n"
    "on: when an input file differs from the model only where the model uses\n"
    "a constant's value (say the batch size N), that constant is taken from\n"
    "the file, as if given with -D.\n"
    "\n"
    "With --grad, it builds the training-mode graph (batch statistics, dropout)\n"
    "and its backward pass for the loss the model's train section minimizes,\n"
    "runs forward and backward once (no parameter update) and writes the\n"
    "gradient of the loss with respect to each named parameter; --output values\n"
    "then come from the same training-mode graph.  Without --output it prints\n"
    "the loss.\n"
    "\n"
    "  --input NAME=FILE.npy    value of an input (f32 or i32, exactly the model's\n"
    "                           shape; float64 and int64 files are converted)\n"
    "  --output NAME=FILE.npy   write a value (written atomically)\n"
    "  --grad PARAM=FILE.npy    write d loss / d PARAM, a trainable parameter (as\n"
    "                           `kiln init` names it), written atomically\n"
    "  --random-inputs          fill inputs not given with seeded random values\n"
    "                           (f32 ~ N(0, 1); i32 labels/ids within their range)\n"
    "  --weights FILE           parameters from a safetensors file (see kiln init);\n"
    "                           without it parameters are freshly initialized\n"
    "  --seed N                 seed of initialization and random inputs (default 0)\n"
    "  --step N                 draw randn's samples (and, with --train or --grad,\n"
    "                           dropout's masks) as training step N does (default 0,\n"
    "                           the draw of kiln train's test scoring and of built\n"
    "                           programs' inference): a VAE's decoder sampled anew\n"
    "  --reference              use the reference evaluator instead of compiled code\n"
    "  --no-plan                with --reference: every value its own buffer instead\n"
    "                           of the planned arena (compiled code always plans)\n";

/* The rest of run's help (one literal would pass C's 4095 characters). */
static const char run_help_end[] =
    CLI_FUSE_HELP
    "                           (compiled code; see kiln show --stage fused)\n"
    "  --no-inplace, --no-share, --schedule=default|min-memory\n"
    "                           memory-planning switches (see kiln show --stage plan)\n"
    "  --no-prepack             compute with the weights as the model lays them out:\n"
    "                           by default a matmul reading a weight transposed (dense)\n"
    "                           reads a transposed copy made once, when the weights\n"
    "                           are set, as are values of weights and constants alone\n"
    "                           (compiled inference only; same results)\n"
    CLI_DENORMALS_HELP
    "  --threads N              worker threads of compiled code (default: one per core)\n"
    "  --repeat N               run N more times and print the step's latency;\n"
    "                           compiled CPU code first times the step on 1, 2, 4,\n"
    "                           ... of its threads and runs on the fastest count\n"
    "                           (the same results on any count)\n"
    "  -v, --verbose            print the memory plan's totals\n"
    "  --verify-plan            check the memory plan independently before running\n"
    "  -D, --define NAME=VALUE  override a model constant (e.g. -D N=1)\n"
    "  --model NAME             which model of the file (default: the first)\n"
    "  --train                  evaluate the training-mode graph\n" CLI_TARGET_HELP;

static const char init_help[] =
    "usage: kiln init MODEL.kiln -o FILE.safetensors [--seed N] [-D NAME=VALUE]...\n"
    "                 [--model NAME]\n"
    "\n"
    "Initializes every parameter of the model (seeded, deterministic: each\n"
    "parameter's values depend only on the seed and its name) and writes them\n"
    "to a safetensors file that `kiln run --weights` reads.\n"
    "\n"
    "  -o, --out FILE           the safetensors file to write (atomically)\n"
    "  --seed N                 initialization seed (default 0)\n"
    "  -D, --define NAME=VALUE  override a model constant\n"
    "  --model NAME             which model of the file (default: the first)\n"
    "  -h, --help               this help\n";

typedef struct Run {
  Cli *c;
  Exec x;          /* compiled, or the reference evaluator */
  bool x_ready;
  void **pbuf;     /* per node id: a parameter's buffer */
  bool *given;     /* per node id: an input the user gave */
  RtTensor *files; /* the --input files, in order */
  int owned_files;
  Node **roots;
  const char **root_names, **root_paths; /* path NULL: print a summary */
  int n_roots;
  Node **grads; /* --grad: per c->grads entry, the gradient node */
  void **owned; /* buffers to free */
  int n_owned, cap_owned;
} Run;

static void *run_alloc(Run *r, size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p)
    error_plain(&r->c->diag, "out of memory allocating %zu bytes", n);
  if (r->n_owned == r->cap_owned) {
    r->cap_owned = r->cap_owned ? 2 * r->cap_owned : 64;
    void **o = realloc(r->owned, sizeof(void *) * (size_t)r->cap_owned);
    if (!o)
      die("out of memory");
    r->owned = o;
  }
  r->owned[r->n_owned++] = p;
  return p;
}

static void run_free(Run *r) {
  if (r->x_ready)
    exec_free(&r->x);
  for (int i = 0; i < r->owned_files; i++)
    free(r->files[i].data);
  for (int i = 0; i < r->n_owned; i++)
    free(r->owned[i]);
  free(r->owned);
}

/* --- parameters ----------------------------------------------------------------- */

/* Gives parameter n its buffer (bound to the engine when there is one). */
static void *param_buffer(Run *r, Node *n) {
  void *data = run_alloc(r, (size_t)node_bytes(n));
  r->pbuf[n->id] = data;
  if (r->x_ready)
    exec_bind_param(&r->x, n, data);
  return data;
}

static void init_params(Run *r) {
  Graph *g = r->c->g;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM)
      param_init_fill(g->nodes[i], r->c->seed, param_buffer(r, g->nodes[i]));
}

static bool same_type(const Node *n, const RtTensor *t) {
  if (t->dtype != n->dtype || t->rank != n->shape.rank)
    return false;
  for (int i = 0; i < t->rank; i++)
    if (t->dim[i] != n->shape.dim[i])
      return false;
  return true;
}

static void load_weights(Run *r) {
  Cli *c = r->c;
  RtTensorFile tf = {0};
  char err[512], a[160], b[160];
  if (rt_safetensors_read(c->weights, &tf, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  for (int i = 0; i < c->g->n_nodes; i++) {
    Node *n = c->g->nodes[i];
    if (n->op != OP_PARAM)
      continue;
    const RtNamedTensor *t = rt_tensor_file_find(&tf, n->name);
    if (!t || !same_type(n, &t->t)) {
      if (t)
        rt_tensor_type_str(&t->t, b, sizeof b);
      snprintf(err, sizeof err, "%s: parameter %s: expected %s, %s%s", c->weights, n->name,
               node_type_str(n, a, sizeof a), t ? "got " : "the file does not have it",
               t ? b : "");
      rt_tensor_file_free(&tf);
      error_plain(&c->diag, "%s", err);
    }
    memcpy(param_buffer(r, n), t->t.data, (size_t)node_bytes(n));
  }
  for (int i = 0; i < tf.n; i++) {
    Node *n = graph_find(c->g, tf.items[i].name);
    if ((!n || n->op != OP_PARAM) && !optimizer_state_of(c->g, tf.items[i].name))
      fprintf(stderr, "kiln: warning: %s: tensor %s is not a parameter of model %s (ignored)\n",
              c->weights, tf.items[i].name, c->g->name);
  }
  rt_tensor_file_free(&tf);
}

/* --- inputs ------------------------------------------------------------------------ */

static Node *find_input(Graph *g, const char *name) {
  Node *n = graph_find(g, name);
  return n && n->op == OP_INPUT ? n : NULL;
}

static const char *input_list(Cli *c) {
  const char *s = "";
  for (int i = 0; i < c->g->n_nodes; i++)
    if (c->g->nodes[i]->op == OP_INPUT)
      s = arena_fmt(c->arena, "%s%s%s", s, s[0] ? ", " : "", c->g->nodes[i]->name);
  return s[0] ? s : "none";
}

static void load_input_files(Run *r) {
  Cli *c = r->c;
  char err[512];
  r->files = run_alloc(r, sizeof(RtTensor) * (size_t)(c->n_inputs + 1));
  for (int i = 0; i < c->n_inputs; i++) {
    if (rt_npy_read(c->inputs[i].path, &r->files[i], err, sizeof err) != RT_OK)
      error_plain(&c->diag, "%s", err);
    r->owned_files++;
  }
}

static bool defined(const Cli *c, const char *name) {
  for (int i = 0; i < c->co.n_defines; i++)
    if (strcmp(c->co.defines[i].name, name) == 0)
      return true;
  return false;
}

/* The model constant (not set with -D) whose value is `v`, if exactly one. */
static const char *constant_valued(const Cli *c, int64_t v) {
  const char *found = NULL;
  char text[32];
  snprintf(text, sizeof text, "%lld", (long long)v);
  for (int k = 0; k < c->g->n_consts; k++) {
    if (strcmp(c->g->const_values[k], text) != 0 || defined(c, c->g->const_names[k]))
      continue;
    if (found)
      return NULL; /* ambiguous */
    found = c->g->const_names[k];
  }
  return found;
}

/* A model is compiled for static shapes; when an input file's shape differs
 * only where the model's shape is a constant's value (the batch size N, a
 * sequence length T), compile it again with that constant taken from the
 * file, as if it had been given with -D.  Returns true if it recompiled. */
static bool specialize(Run *r) {
  Cli *c = r->c;
  int added = 0;
  for (int i = 0; i < c->n_inputs; i++) {
    Node *n = find_input(c->g, c->inputs[i].name);
    const RtTensor *t = &r->files[i];
    if (!n || n->dtype != t->dtype || n->shape.rank != t->rank)
      continue;
    for (int a = 0; a < t->rank; a++) {
      const char *k = n->shape.dim[a] != t->dim[a] ? constant_valued(c, n->shape.dim[a]) : NULL;
      if (!k || c->co.n_defines >= countof(c->defs))
        continue;
      Define *d = &c->defs[c->co.n_defines++];
      d->name = k;
      d->value = arena_fmt(c->arena, "%lld", (long long)t->dim[a]);
      fprintf(stderr, "kiln: note: %s=%s, from the shape of %s (a model is compiled for the "
              "shapes it runs on)\n", d->name, d->value, c->inputs[i].path);
      added++;
    }
  }
  if (added)
    cli_compile(c);
  return added > 0;
}

/* Where input n's value goes (in the arena when the run is planned). */
static void *input_buffer(Run *r, Node *n) {
  r->given[n->id] = true;
  return exec_input(&r->x, n);
}

static void check_input(Run *r, Node *n, const RtTensor *t, const char *path) {
  Cli *c = r->c;
  char a[160], b[160];
  if (!same_type(n, t)) {
    rt_tensor_type_str(t, b, sizeof b);
    error_plain(&c->diag, "%s: input %s must be %s, but the file holds %s", path, n->name,
                node_type_str(n, a, sizeof a), b);
  }
  memcpy(input_buffer(r, n), t->data, (size_t)node_bytes(n));
}

/* --random-inputs: seeded by the input's name (the same values as kiln bench's). */
static void random_input(Run *r, Node *n) {
  kbench_random_fill(r->c->g, n, r->c->seed, input_buffer(r, n));
}

static void bind_inputs(Run *r) {
  Cli *c = r->c;
  for (int i = 0; i < c->n_inputs; i++) {
    Node *n = find_input(c->g, c->inputs[i].name);
    if (!n)
      error_plain(&c->diag, "--input %s: model %s has no input '%s' (its inputs: %s)",
                  c->inputs[i].name, c->g->name, c->inputs[i].name, input_list(c));
    check_input(r, n, &r->files[i], c->inputs[i].path);
  }
  for (int i = 0; i < c->g->n_nodes; i++) {
    Node *n = c->g->nodes[i];
    if (n->op != OP_INPUT || !exec_needs(&r->x, n) || r->given[i])
      continue;
    if (!c->random_inputs)
      error_plain(&c->diag, "input '%s' (%s) is needed: give --input %s=FILE.npy or use "
                  "--random-inputs", n->name, node_type_str(n, (char[160]){0}, 160), n->name);
    random_input(r, n);
  }
}

/* --- outputs ------------------------------------------------------------------------ */

/* The values to compute: the --output values (else the model's outputs),
 * then the --grad gradients (and the loss, printed, when no --output). */
static void pick_roots(Run *r) {
  Cli *c = r->c;
  int n = c->n_outputs ? c->n_outputs : c->n_grads ? 0 : c->g->n_outputs;
  int extra = c->n_grads ? c->n_grads + (c->n_outputs == 0) : 0;
  if (!n && !extra)
    error_plain(&c->diag, "model %s declares no outputs; name the values to compute with "
                "--output NAME=FILE.npy", c->g->name);
  int total = n + extra;
  r->roots = arena_alloc(c->arena, sizeof(Node *) * (size_t)total);
  r->root_names = arena_alloc(c->arena, sizeof(char *) * (size_t)total);
  r->root_paths = arena_alloc(c->arena, sizeof(char *) * (size_t)total);
  for (int i = 0; i < n; i++) {
    const char *name = c->n_outputs ? c->outputs[i].name : c->g->outputs[i].name;
    Node *v = graph_find_value(c->g, name);
    if (!v)
      error_plain(&c->diag, "--output %s: model %s has no output or value named '%s'", name,
                  c->g->name, name);
    r->roots[i] = v;
    r->root_names[i] = name;
    r->root_paths[i] = c->n_outputs ? c->outputs[i].path : NULL;
  }
  for (int i = 0; i < c->n_grads; i++) {
    r->roots[n + i] = r->grads[i];
    r->root_names[n + i] = arena_fmt(c->arena, "grad(%s)", c->grads[i].name);
    r->root_paths[n + i] = c->grads[i].path;
  }
  if (c->n_grads && !c->n_outputs) {
    r->roots[total - 1] = graph_find_value(c->g, c->g->minimize);
    r->root_names[total - 1] = c->g->minimize;
    r->root_paths[total - 1] = NULL;
  }
  r->n_roots = total;
}

/* A list of the model's trainable parameters for an error message. */
static const char *trainable_list(Cli *c) {
  const char *s = "";
  int shown = 0, more = 0;
  for (int i = 0; i < c->g->n_nodes; i++) {
    const Node *n = c->g->nodes[i];
    if (n->op != OP_PARAM || !n->trainable || n->dtype != DT_F32)
      continue;
    if (shown < 8)
      s = arena_fmt(c->arena, "%s%s%s", s, shown++ ? ", " : "", n->name);
    else
      more++;
  }
  if (more)
    s = arena_fmt(c->arena, "%s and %d more; `kiln init` writes them all", s, more);
  return shown ? s : "none";
}

/* --grad: the backward pass of the train section's loss with respect to
 * the named parameters, appended to the training-mode graph. */
static void build_grads(Run *r) {
  Cli *c = r->c;
  Graph *g = c->g;
  if (!g->has_train || !g->minimize)
    error_plain(&c->diag, "--grad: model %s has no train section (train %s { minimize LOSS "
                "... }), so there is no loss to differentiate", g->name, g->name);
  Node *loss = graph_find_value(g, g->minimize);
  if (!loss)
    error_at(&c->diag, g->train_loc, "minimize: the model has no value named '%s'", g->minimize);
  Node **wrt = arena_alloc(c->arena, sizeof(Node *) * (size_t)c->n_grads);
  for (int i = 0; i < c->n_grads; i++) {
    Node *p = graph_find(g, c->grads[i].name);
    if (!p || p->op != OP_PARAM)
      error_plain(&c->diag, "--grad %s: model %s has no parameter '%s' (its trainable "
                  "parameters: %s)", c->grads[i].name, g->name, c->grads[i].name,
                  trainable_list(c));
    if (!p->trainable || p->dtype != DT_F32)
      error_plain(&c->diag, "--grad %s: parameter '%s' of model %s is not trained (%s), so it "
                  "has no gradient", c->grads[i].name, p->name, g->name,
                  p->dtype != DT_F32 ? "not f32" : "trainable=false");
    wrt[i] = p;
  }
  r->grads = arena_alloc(c->arena, sizeof(Node *) * (size_t)c->n_grads);
  pass_autodiff(g, &c->diag, loss, wrt, c->n_grads, r->grads);
}

static RtTensor as_tensor(const Node *n, void *data) {
  RtTensor t = {n->dtype, n->shape.rank, {0}, data};
  for (int i = 0; i < n->shape.rank; i++)
    t.dim[i] = n->shape.dim[i];
  return t;
}

static void write_outputs(Run *r) {
  Cli *c = r->c;
  char err[512];
  for (int i = 0; i < r->n_roots; i++) {
    const Node *n = r->roots[i];
    RtTensor t = as_tensor(n, exec_value(&r->x, n));
    const char *name = r->root_names[i];
    if (!r->root_paths[i]) {
      rt_tensor_summary(stdout, name, &t);
      continue;
    }
    if (rt_npy_write(r->root_paths[i], &t, err, sizeof err) != RT_OK) {
      for (int k = 0; k < i; k++)
        remove(r->root_paths[k]); /* all or nothing */
      error_plain(&c->diag, "%s", err);
    }
  }
  for (int i = 0; i < r->n_roots; i++)
    if (r->root_paths[i])
      fprintf(stderr, "wrote %s (%s) to %s\n", r->root_names[i],
              node_type_str(r->roots[i], (char[160]){0}, 160), r->root_paths[i]);
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* A copy of every input the graph reads, taken before the first run: a
 * planned arena may reuse their bytes. */
static void **save_inputs(Run *r) {
  Cli *c = r->c;
  void **saved = arena_alloc(c->arena, sizeof(void *) * (size_t)c->g->n_nodes);
  for (int i = 0; i < c->g->n_nodes; i++) {
    Node *n = c->g->nodes[i];
    if (n->op == OP_INPUT && exec_needs(&r->x, n)) {
      saved[i] = arena_alloc(c->arena, (size_t)node_bytes(n));
      memcpy(saved[i], exec_input(&r->x, n), (size_t)node_bytes(n));
    }
  }
  return saved;
}

/* One more run on the saved inputs. */
typedef struct Again {
  Run *r;
  void **saved;
} Again;

static void restore_inputs(Again *a) {
  Cli *c = a->r->c;
  for (int i = 0; i < c->g->n_nodes; i++)
    if (a->saved[i])
      memcpy(exec_input(&a->r->x, c->g->nodes[i]), a->saved[i], (size_t)node_bytes(c->g->nodes[i]));
}

static void run_again(void *ud) {
  Again *a = ud;
  restore_inputs(a);
  exec_run(&a->r->x, a->r->c->step);
}

/* --repeat N: the step's latency over N more runs, each on the saved
 * inputs; compiled CPU code first picks its thread count (rt_tune_threads:
 * a small step can be faster on fewer threads than it was given). */
static void time_runs(Run *r, void **saved) {
  Cli *c = r->c;
  Again a = {r, saved};
  const char *on = r->x.cuda ? "the CUDA device (each copying the inputs in)"
                   : "the reference evaluator";
  if (r->x.compiled) { /* on the CPU */
    RtTune t;
    rt_tune_threads(run_again, &a, &t);
    on = arena_fmt(c->arena, "compiled code on %s", cli_tune_text(c, &t));
  }
  double *t = arena_alloc(c->arena, sizeof(double) * (size_t)c->repeat);
  for (int64_t k = 0; k < c->repeat; k++) {
    restore_inputs(&a);
    double t0 = rt_now();
    exec_run(&r->x, r->c->step);
    t[k] = rt_now() - t0;
  }
  qsort(t, (size_t)c->repeat, sizeof(double), by_value);
  fprintf(stderr, "%s: %lld runs on %s: median %.1f us, min %.1f us, max %.1f us\n", c->g->name,
          (long long)c->repeat, on, 1e6 * t[c->repeat / 2], 1e6 * t[0], 1e6 * t[c->repeat - 1]);
}

static void run_fn(void *ud) {
  Run *r = ud;
  Cli *c = r->c;
  if (c->cuda && c->reference)
    error_plain(&c->diag, "--reference evaluates on the CPU; it does not combine with "
                "--target cuda");
  if (c->cuda)
    cli_cuda_device(c); /* no device: stop before reading anything */
  if (c->n_grads)
    c->co.training = true; /* gradients are of the training-mode graph */
  load_input_files(r);
  cli_compile(c);
  specialize(r);
  if (c->n_grads)
    build_grads(r);
  else if (!c->reference)
    cli_inference_passes(c, c->g); /* parameters do not change during a run */
  char err[512];
  if (!graph_verify(c->g, err, sizeof err))
    die("graph verification failed: %s", err);
  pick_roots(r);
  r->pbuf = arena_alloc(c->arena, sizeof(void *) * (size_t)c->g->n_nodes);
  r->given = arena_alloc(c->arena, sizeof(bool) * (size_t)c->g->n_nodes);
  exec_init(&r->x, c, c->g, r->roots, r->n_roots);
  r->x_ready = true;
  if (c->weights)
    load_weights(r);
  else
    init_params(r);
  bind_inputs(r);
  void **saved = c->repeat ? save_inputs(r) : NULL;
  exec_run(&r->x, r->c->step);
  if (saved)
    time_runs(r, saved);
  write_outputs(r);
}

/* Runs fn (run_fn or init_fn) on a fresh Run and frees what it held. */
static int with_run(Cli *c, void (*fn)(void *)) {
  Run r = {.c = c};
  int rc = cli_protect(c, fn, &r);
  run_free(&r);
  return rc;
}

static int run_run(Cli *c) { return with_run(c, run_fn); }

const Command cmd_run = {"run", "DmtiOGwrRShIHCPVYjkKFXzN", run_help, NULL, run_run,
                         run_help_end};

/* --- init --------------------------------------------------------------------------- */

static void init_fn(void *ud) {
  Run *r = ud;
  Cli *c = r->c;
  cli_compile(c);
  int n = 0;
  for (int i = 0; i < c->g->n_nodes; i++)
    n += c->g->nodes[i]->op == OP_PARAM;
  RtNamedTensor *items = run_alloc(r, sizeof(RtNamedTensor) * (size_t)(n + 1));
  r->pbuf = arena_alloc(c->arena, sizeof(void *) * (size_t)c->g->n_nodes);
  init_params(r);
  int k = 0;
  for (int i = 0; i < c->g->n_nodes; i++) {
    Node *p = c->g->nodes[i];
    if (p->op == OP_PARAM) {
      items[k].name = (char *)p->name;
      items[k++].t = as_tensor(p, r->pbuf[p->id]);
    }
  }
  const char *keys[] = {"format", "model", "seed"};
  const char *vals[] = {"kiln", c->g->name, arena_fmt(c->arena, "%llu", (unsigned long long)c->seed)};
  char err[512];
  if (rt_safetensors_write(c->out, items, n, keys, vals, 3, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  fprintf(stderr, "wrote %d parameters (%lld values) of model %s to %s\n", n,
          (long long)graph_param_count(c->g, false), c->g->name, c->out);
}

static int init_validate(Cli *c) {
  return c->out ? EXIT_OK : cli_usage_error("init", "-o FILE.safetensors is required");
}

static int init_run(Cli *c) { return with_run(c, init_fn); }

const Command cmd_init = {"init", "DmoSh", init_help, init_validate, init_run, NULL};
