/*
 * cli.c: option parsing shared by the driver's commands, and compiling the
 * model named on the command line.
 *
 * One table lists every option once with a letter; each command passes the
 * letters it accepts, so `kiln check --output x` is a clear usage error
 * instead of being ignored.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct Opt {
  char key;
  const char *lng;
  const char *shrt;
  bool arg;
} Opt;

static const Opt opts[] = {
    {'D', "--define", "-D", true},  {'m', "--model", NULL, true},
    {'t', "--train", NULL, false},  {'f', "--format", NULL, true},
    {'s', "--stage", NULL, true},   {'o', "--out", "-o", true},
    {'i', "--input", NULL, true},   {'O', "--output", NULL, true},
    {'w', "--weights", NULL, true}, {'W', "--save-weights", NULL, true},
    {'r', "--random-inputs", NULL, false}, {'R', "--reference", NULL, false},
    {'S', "--seed", NULL, true},    {'h', "--help", "-h", false},
    {'d', "--data", NULL, true},    {'E', "--epochs", NULL, true},
    {'B', "--batch", NULL, true},   {'l', "--lr", NULL, true},
    {'L', "--limit", NULL, true},   {'T', "--test-limit", NULL, true},
    {'v', "--save", NULL, true},    {'u', "--resume", NULL, true},
    {'I', "--no-inplace", NULL, false}, {'H', "--no-share", NULL, false},
    {'C', "--schedule", NULL, true}, {'P', "--no-plan", NULL, false},
    {'V', "--verbose", "-v", false}, {'Y', "--verify-plan", NULL, false},
    {'j', "--threads", NULL, true}, {'k', "--repeat", NULL, true},
    {'e', "--emit", NULL, true},    {'K', "--no-prepack", NULL, false},
    {'z', "--keep-denormals", NULL, false},
    {'G', "--grad", NULL, true},    {'F', "--fuse", NULL, true},
    {'J', "--json", NULL, false},   {'X', "--target", NULL, true},
    {'A', "--arch", NULL, true},    {'N', "--step", NULL, true},
    {'p', "--prefix", NULL, true},
};

/* Whether s is a C identifier: [A-Za-z_][A-Za-z0-9_]*. */
static bool identifier(const char *s) {
  if (!*s || (!isalpha((unsigned char)*s) && *s != '_'))
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_')
      return false;
  return true;
}

/* A positive integer option value; returns false if malformed. */
static bool positive_int(const char *v, int64_t *out) {
  char *end;
  long long k = strtoll(v, &end, 10);
  if (!*v || *end || k < 1)
    return false;
  *out = k;
  return true;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kiln %s: error: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n(see kiln %s --help)\n", cmd);
  va_end(ap);
  return EXIT_USAGE;
}

/* NAME=PATH into the inputs, outputs or grads table (which: 'i', 'O', 'G'). */
static int add_pair(Cli *c, const char *text, char which) {
  const char *eq = strchr(text, '=');
  const char *what = which == 'i' ? "--input" : which == 'O' ? "--output" : "--grad";
  const char *form = which == 'G' ? "PARAM=FILE.npy" : "NAME=FILE.npy";
  int *n = which == 'i' ? &c->n_inputs : which == 'O' ? &c->n_outputs : &c->n_grads;
  CliPair *tab = which == 'i' ? c->inputs : which == 'O' ? c->outputs : c->grads;
  if (!eq || eq == text || !eq[1])
    return cli_usage_error(c->cmd, "%s needs %s, got '%s'", what, form, text);
  if (*n >= 64)
    return cli_usage_error(c->cmd, "too many %s options", what);
  char *name = arena_strndup(c->arena, text, (size_t)(eq - text));
  for (int i = 0; i < *n; i++)
    if (strcmp(tab[i].name, name) == 0)
      return cli_usage_error(c->cmd, "%s %s is given twice", what, name);
  tab[*n].name = name;
  tab[*n].path = eq + 1;
  (*n)++;
  return EXIT_OK;
}

static int set_opt(Cli *c, const Opt *o, const char *val) {
  switch (o->key) {
  case 'D':
    if (c->co.n_defines >= countof(c->defs))
      return cli_usage_error(c->cmd, "too many -D options");
    if (!define_parse(c->arena, val, &c->defs[c->co.n_defines]))
      return cli_usage_error(c->cmd, "-D needs NAME=VALUE, got '%s'", val);
    c->co.n_defines++;
    return EXIT_OK;
  case 'm': c->co.model = val; return EXIT_OK;
  case 't': c->co.training = true; return EXIT_OK;
  case 'f': c->format = val; return EXIT_OK;
  case 's': c->stage = val; return EXIT_OK;
  case 'o': c->out = val; return EXIT_OK;
  case 'i': case 'O': case 'G': return add_pair(c, val, o->key);
  case 'w': c->weights = val; return EXIT_OK;
  case 'W': c->save_weights = val; return EXIT_OK;
  case 'r': c->random_inputs = true; return EXIT_OK;
  case 'R': c->reference = true; return EXIT_OK;
  case 'S': {
    char *end;
    unsigned long long v = strtoull(val, &end, 10);
    if (!*val || *end || val[0] == '-')
      return cli_usage_error(c->cmd, "--seed needs a non-negative integer, got '%s'", val);
    c->seed = v;
    c->seed_given = true;
    return EXIT_OK;
  }
  case 'N': {
    char *end;
    long long v = strtoll(val, &end, 10);
    if (!*val || *end || v < 0)
      return cli_usage_error(c->cmd, "--step needs a non-negative integer, got '%s'", val);
    c->step = v;
    return EXIT_OK;
  }
  case 'I': c->plan.no_inplace = true; return EXIT_OK;
  case 'H': c->plan.no_share = true; return EXIT_OK;
  case 'P': c->no_plan = true; return EXIT_OK;
  case 'V': c->verbose = true; return EXIT_OK;
  case 'Y': c->verify_plan = true; return EXIT_OK;
  case 'K': c->no_prepack = true; return EXIT_OK;
  case 'z': c->keep_denormals = true; return EXIT_OK;
  case 'C':
    if (strcmp(val, "default") && strcmp(val, "min-memory"))
      return cli_usage_error(c->cmd, "--schedule must be default or min-memory, got '%s'", val);
    c->plan.min_memory = val[0] == 'm';
    return EXIT_OK;
  case 'F':
    if (!fuse_opts_parse(val, &c->plan.fuse))
      return cli_usage_error(c->cmd, "--fuse must be none, all or a comma list of eltwise, "
                             "reduce, row, multi, epilogue, fold, scatter, deriv, view, batchsum, const; "
                             "got '%s'",
                             val);
    c->fuse_given = true;
    return EXIT_OK;
  case 'J': c->json = true; return EXIT_OK;
  case 'X':
    if (strcmp(val, "cpu") && strcmp(val, "cuda"))
      return cli_usage_error(c->cmd, "--target must be cpu or cuda, got '%s'", val);
    c->cuda = val[1] == 'u';
    return EXIT_OK;
  case 'A': c->arch = val; return EXIT_OK;
  case 'p':
    if (!identifier(val))
      return cli_usage_error(c->cmd, "--prefix must be a C identifier ([A-Za-z_][A-Za-z0-9_]*), "
                             "got '%s'", val);
    c->prefix = val;
    return EXIT_OK;
  case 'd': c->data = val; return EXIT_OK;
  case 'e': c->emit = c->emit ? arena_fmt(c->arena, "%s,%s", c->emit, val) : val; return EXIT_OK;
  case 'v': c->save = val; return EXIT_OK;
  case 'u': c->resume = val; return EXIT_OK;
  case 'E': case 'B': case 'L': case 'T': case 'j': case 'k': {
    int64_t *dst = o->key == 'E' ? &c->epochs : o->key == 'B' ? &c->batch
                   : o->key == 'L' ? &c->limit : o->key == 'T' ? &c->test_limit
                   : o->key == 'j' ? &c->threads : &c->repeat;
    if (!positive_int(val, dst))
      return cli_usage_error(c->cmd, "%s needs a positive integer, got '%s'", o->lng, val);
    return EXIT_OK;
  }
  case 'l': {
    char *end;
    c->lr = strtod(val, &end);
    if (!*val || *end || !(c->lr > 0))
      return cli_usage_error(c->cmd, "--lr needs a positive number, got '%s'", val);
    return EXIT_OK;
  }
  }
  return EXIT_OK;
}

/* Matches argv[*i] against the table; handles --opt=value, -Dvalue. */
static int parse_one(Cli *c, int argc, char **argv, int *i, const char *allowed, bool *help) {
  const char *a = argv[*i];
  for (int k = 0; k < countof(opts); k++) {
    const Opt *o = &opts[k];
    size_t ll = strlen(o->lng), sl = o->shrt ? strlen(o->shrt) : 0;
    const char *val = NULL;
    bool hit = false;
    if (strcmp(a, o->lng) == 0 || (o->shrt && strcmp(a, o->shrt) == 0)) {
      hit = true;
    } else if (o->arg && strncmp(a, o->lng, ll) == 0 && a[ll] == '=') {
      hit = true, val = a + ll + 1;
    } else if (o->arg && o->shrt && strncmp(a, o->shrt, sl) == 0 && a[sl] && o->key == 'D') {
      hit = true, val = a + sl;
    }
    if (!hit)
      continue;
    if (!strchr(allowed, o->key))
      return cli_usage_error(c->cmd, "option %s does not apply to this command", o->lng);
    if (o->key == 'h') {
      *help = true;
      return EXIT_OK;
    }
    if (o->arg && !val) {
      if (*i + 1 >= argc)
        return cli_usage_error(c->cmd, "option %s needs a value", o->lng);
      val = argv[++*i];
    }
    return set_opt(c, o, val);
  }
  return cli_usage_error(c->cmd, "unknown option '%s'", a);
}

int cli_parse(Cli *c, int argc, char **argv, const char *allowed, bool *help) {
  *help = false;
  c->arena = arena_new();
  diag_init(&c->diag);
  c->co.defines = c->defs;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] == '-' && a[1]) {
      int rc = parse_one(c, argc, argv, &i, allowed, help);
      if (rc != EXIT_OK || *help)
        return rc;
    } else if (!c->file) {
      c->file = a;
    } else {
      return cli_usage_error(c->cmd, "unexpected argument '%s' (one model file at a time)", a);
    }
  }
  if (!c->file)
    return cli_usage_error(c->cmd, "no model file given");
  if (c->cuda && !c->fuse_given) {
    /* The CUDA backend runs a row or reduce kernel one thread per row or
     * output element (codegen/cuda/cuda_emit.c); the unfused reductions'
     * own kernels take many threads each (cuda_reduce.c).  On an H100,
     * resnet_small's training step: 137 ms with both kinds, 29 ms without
     * (docs/benchmarks.md). */
    c->plan.fuse.no_row = true;
    c->plan.fuse.no_reduce = true;
    c->plan.fuse.no_view = true; /* cuda_gemm.c reads no views: they would take the loop nest */
    c->plan.fuse.no_batchsum = true; /* nor sums over batch axes */
  }
  return EXIT_OK;
}

Graph *cli_build(Cli *c, bool training) {
  if (!c->src)
    c->src = source_from_file(c->arena, &c->diag, c->file);
  CompileOpts o = c->co;
  o.training = training;
  return frontend_compile(c->arena, &c->diag, c->src, &o);
}

void cli_compile(Cli *c) { c->g = cli_build(c, c->co.training); }

Node **cli_step_roots(Cli *c, Graph *g, bool train, TrainStep *ts, int *n) {
  if (train) {
    build_train_step(g, &c->diag, ts);
    cli_train_passes(c, g);
    *n = ts->n_roots;
    return ts->roots;
  }
  *n = g->n_outputs;
  if (!*n)
    error_plain(&c->diag, "model %s has no outputs to compute", g->name);
  Node **roots = arena_alloc(c->arena, sizeof(Node *) * (size_t)*n);
  for (int i = 0; i < *n; i++)
    roots[i] = g->outputs[i].node;
  cli_inference_passes(c, g);
  return roots;
}

void cli_inference_passes(Cli *c, Graph *g) {
  if (!c->plan.fuse.no_view)
    pass_matmul_views(g);
  if (!c->plan.fuse.no_batchsum)
    pass_matmul_batch_sums(g);
  if (c->no_prepack)
    return; /* a folded weight would be computed on every call */
  if (!c->plan.fuse.no_fold)
    pass_fold_affine(g);
  pass_prepack(g);
}

const char *cli_tune_text(Cli *c, const RtTune *t) {
  if (!t->tuned)
    return arena_fmt(c->arena, "%d thread%s", t->all, t->all == 1 ? "" : "s");
  static const char coarse[] = " at a coarse grain";
  const char *text =
      arena_fmt(c->arena, "%d of %d threads%s, the fastest of", t->threads[t->chosen], t->all,
                t->grain[t->chosen] > 1 ? coarse : "");
  for (int i = 0; i < t->n; i++)
    text = arena_fmt(c->arena, "%s%s %d%s (%.1f us)", text, i ? "," : "", t->threads[i],
                     t->grain[i] > 1 ? coarse : "", 1e6 * t->median[i]);
  if (t->checks) /* runtime/tune.c: timed again during a long run */
    text = arena_fmt(c->arena, "%s, at re-check %d (%d moved the choice)", text, t->checks, t->moves);
  return text;
}

void cli_train_passes(Cli *c, Graph *g) {
  if (!c->plan.fuse.no_view)
    pass_matmul_views(g);
  if (!c->plan.fuse.no_batchsum)
    pass_matmul_batch_sums(g);
  pass_step_transposes(g);
  if (!c->plan.fuse.no_deriv)
    pass_share_derivatives(g);
}

/* A trial compile for --batch: does setting constant `name` one higher move
 * the first axis of input `input`?  Errors (an assert the new value breaks)
 * count as no. */
typedef struct BatchTrial {
  Cli *c;
  const char *input;
  int64_t dim0; /* the first axis after the trial; -1: the compile failed */
} BatchTrial;

static void batch_trial(void *ud) {
  BatchTrial *t = ud;
  Graph *g = cli_build(t->c, false);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT && strcmp(g->nodes[i]->name, t->input) == 0)
      t->dim0 = g->nodes[i]->shape.rank ? g->nodes[i]->shape.dim[0] : -1;
}

static bool sizes_first_axis(Cli *c, const Node *x, const char *name) {
  if (c->co.n_defines >= countof(c->defs))
    return false;
  const char *up = arena_fmt(c->arena, "%lld", (long long)x->shape.dim[0] + 1);
  c->defs[c->co.n_defines++] = (Define){name, up};
  BatchTrial t = {c, x->name, -1};
  int failed = diag_protect(&c->diag, batch_trial, &t);
  c->co.n_defines--;
  diag_clear(&c->diag);
  return !failed && t.dim0 == x->shape.dim[0] + 1;
}

/* --batch B sets the model constant that sizes x's first axis: of the
 * constants with that value (N = 4 and heads = 4), the one whose change
 * moves the axis. */
void cli_define_batch(Cli *c, const Graph *g, const Node *x) {
  char want[32];
  snprintf(want, sizeof want, "%lld", (long long)x->shape.dim[0]);
  const char *name = NULL;
  for (int k = 0; k < g->n_consts; k++)
    if (strcmp(g->const_values[k], want) == 0 && sizes_first_axis(c, x, g->const_names[k]))
      name = name ? "" : g->const_names[k];
  if (!name || !name[0])
    error_plain(&c->diag, "--batch: no single model constant sizes the first axis of input %s "
                "(set it with -D instead)", x->name);
  if (c->co.n_defines >= countof(c->defs))
    error_plain(&c->diag, "--batch: too many -D options");
  Define *d = &c->defs[c->co.n_defines++];
  d->name = name;
  d->value = arena_fmt(c->arena, "%lld", (long long)c->batch);
}

bool cli_data_inputs(const Graph *g, Node **x, Node **y, Node **bad) {
  Node *in[2] = {NULL, NULL};
  int n = 0;
  *x = *y = *bad = NULL;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    if (v->op != OP_INPUT || v->is_backward)
      continue;
    if (n == 2) {
      *bad = v;
      return false;
    }
    in[n++] = v;
  }
  if (!n)
    return false;
  bool swap = n == 2 && in[0]->dtype == DT_I32 && in[1]->dtype == DT_F32;
  *x = in[swap];
  *y = n == 2 ? in[!swap] : NULL;
  return true;
}

const char *cli_data_shapes(Cli *c, const Node *x, const Node *y, const Node **at) {
  char a[160], b[160];
  *at = x;
  if (x->shape.rank < 1 || x->shape.dim[0] < 1)
    return arena_fmt(c->arena, "the examples %s (%s) need a first axis of at least one row, "
                     "one row per example", x->name, node_type_str(x, a, sizeof a));
  *at = y;
  if (y && (y->shape.rank < 1 || y->shape.dim[0] != x->shape.dim[0]))
    return arena_fmt(c->arena, "the labels %s (%s) need the examples' first axis (%s is %s)",
                     y->name, node_type_str(y, a, sizeof a), x->name,
                     node_type_str(x, b, sizeof b));
  return NULL;
}

bool cli_scores_for(const Node *out, const Node *y) {
  if (!out || !y || y->dtype != DT_I32 || out->dtype != DT_F32 ||
      out->shape.rank != y->shape.rank + 1)
    return false;
  for (int k = 0; k < y->shape.rank; k++)
    if (out->shape.dim[k] != y->shape.dim[k])
      return false;
  return true;
}

int64_t cli_ids_below(const Graph *g, const Node *x) {
  int64_t rows = INT32_MAX;
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_EMBEDDING && n->in[0] == x && n->in[1]->shape.dim[0] < rows)
      rows = n->in[1]->shape.dim[0];
  }
  return rows;
}

void cli_plan(Cli *c, Graph *g, Node *const *roots, int n_roots, Plan *p) {
  plan_build(g, roots, n_roots, &c->plan, p);
  char err[512];
  if (c->verify_plan && !plan_verify(g, roots, n_roots, p, err, sizeof err))
    die("the memory plan of %s failed verification: %s", g->name, err);
  if (c->verbose) {
    fprintf(stderr, "%s: ", g->name);
    plan_print_summary(p, stderr);
  }
}

const char *cli_loc(Cli *c, Loc l) {
  return l.src ? arena_fmt(c->arena, "%s:%d:%d", l.src->name, l.line, l.col) : "-";
}


int cli_protect(Cli *c, void (*fn)(void *), void *ud) {
  if (diag_protect(&c->diag, fn, ud) == 0)
    return EXIT_OK;
  fputs(c->diag.msg, stderr);
  return EXIT_USER;
}

void cli_free(Cli *c) {
  rt_cuda_close(c->dev);
  diag_free(&c->diag);
  arena_free(c->arena);
}

int cli_main(const Command *cmd, int argc, char **argv) {
  Cli c = {.cmd = cmd->name};
  bool help;
  int rc = cli_parse(&c, argc, argv, cmd->options, &help);
  if (help) {
    fputs(cmd->help, stdout);
    if (cmd->help_end)
      fputs(cmd->help_end, stdout);
  } else if (rc == EXIT_OK && cmd->validate) {
    rc = cmd->validate(&c);
  }
  if (rc == EXIT_OK && !help)
    rc = cmd->run(&c);
  cli_free(&c);
  return rc;
}

int cli_parse_emit(const char *list, const char *const *names, int n_names, const char *target,
                   unsigned *bits) {
  *bits = 0;
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    int k = 0;
    while (k < n_names && !(strlen(names[k]) == len && strncmp(names[k], p, len) == 0))
      k++;
    if (k == n_names) {
      char kinds[128] = "";
      for (int i = 0; i < n_names; i++)
        snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s", i ? ", " : "",
                 names[i]);
      return cli_usage_error("build", "--emit: unknown kind '%.*s'%s (kinds: %s)", (int)len, p,
                             target, kinds);
    }
    *bits |= 1u << k;
    p += len + (p[len] == ',');
  }
  return *bits ? EXIT_OK : cli_usage_error("build", "--emit needs a list of kinds");
}
