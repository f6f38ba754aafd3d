/*
 * cmd_inspect.c: `kiln check` and `kiln show`, the commands that build a
 * graph and describe it without running it (the kernels of `show --stage
 * fused` are printed by show_fused.c).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "passes.h"

static const char check_help[] =
    "usage: kiln check MODEL.kiln [-D NAME=VALUE]... [--model NAME] [--train]\n"
    "\n"
    "Parses and elaborates the model, infers the shape and dtype of every value,\n"
    "verifies the graph, and prints a summary: inputs, outputs, the shape of\n"
    "every named value, parameter count and FLOPs.\n"
    "\n"
    "  -D, --define NAME=VALUE  override a model constant (e.g. -D N=1)\n"
    "  --model NAME             which model of the file (default: the first)\n"
    "  --train                  build the training-mode graph (batch statistics, dropout)\n"
    "  -h, --help               this help\n";

static const char show_help[] =
    "usage: kiln show MODEL.kiln [--format text|dot|json|svg] [--stage graph|grad|plan|fused]\n"
    "                 [-o FILE] [--fuse=LIST] [--no-inplace] [--no-share]\n"
    "                 [--schedule=default|min-memory] [--no-prepack]\n"
    "                 [-D NAME=VALUE]... [--model NAME] [--train] [--target cpu|cuda]\n"
    "\n"
    "Prints the model's graph: every value's name, op, attributes, shape, dtype,\n"
    "FLOPs, bytes and source line, with totals.\n"
    "\n"
    "  --format text|dot|json   text (default), Graphviz DOT (kiln show m.kiln\n"
    "                           --format dot | dot -Tsvg > m.svg), or JSON\n"
    "  --stage graph|grad|plan|fused\n"
    "                           graph: the model after elaboration (default);\n"
    "                           grad: the whole training step (training-mode forward,\n"
    "                           backward nodes marked with the forward node they\n"
    "                           come from, the optimizer update); needs a train section;\n"
    "                           plan: the memory plan of the outputs (with --train: of\n"
    "                           the training step): naive, planned and lower-bound\n"
    "                           bytes, each value's offset, size, lifetime and who\n"
    "                           shares its bytes; --format svg draws the arena over time;\n"
    "                           fused: the kernels of that plan in the order they run,\n"
    "                           each with its nodes (op, name, shape, source line,\n"
    "                           internal: computed in the kernel without a buffer, or\n"
    "                           stored) and why fusion stopped at each stored value;\n"
    "                           dot draws each kernel as a cluster\n";

/* The rest of show's help (one literal would pass C's 4095 characters). */
static const char show_help_end[] =
    CLI_FUSE_HELP
    "                           (--stage plan and fused)\n"
    "  --target cpu|cuda        whose default --fuse the plan takes (cpu: all kinds)\n"
    "  --no-inplace, --no-share, --schedule=default|min-memory\n"
    "                           switch off in-place reuse or sharing, or choose the\n"
    "                           order that lowers peak memory\n"
    "  --no-prepack             plan: no weights prepacked for inference (by default\n"
    "                           transposed weights of matmuls, and values of weights\n"
    "                           and constants alone, are kept beside the parameters,\n"
    "                           counted as \"prepacked\")\n"
    "  -o, --out FILE           write to FILE instead of standard output\n"
    "  -D, --define NAME=VALUE  override a model constant\n"
    "  --model NAME             which model of the file (default: the first)\n"
    "  --train                  build the training-mode graph (plan, fused: the\n"
    "                           training step)\n"
    "  -h, --help               this help\n";

static void verify_or_die(Cli *c) {
  char err[512];
  if (!graph_verify(c->g, err, sizeof err))
    die("graph verification failed: %s", err);
}

static void check_fn(void *ud) {
  Cli *c = ud;
  cli_compile(c);
  verify_or_die(c);
}

static int check_run(Cli *c) {
  int rc = cli_protect(c, check_fn, c);
  if (rc == EXIT_OK)
    graph_print_summary(c->g, stdout);
  return rc;
}

const Command cmd_check = {"check", "Dmth", check_help, NULL, check_run, NULL};

/* Closes the memory stream f (which sets *buf and *len) and writes what
 * it holds to c->out, whole. */
static int write_whole(Cli *c, FILE *f, char **buf, size_t *len) {
  fclose(f);
  char err[512];
  const void *pieces[1] = {*buf};
  int rc = rt_write_file_atomic(c->out, pieces, len, 1, err, sizeof err) == RT_OK ? EXIT_OK
                                                                                    : EXIT_USER;
  if (rc != EXIT_OK)
    fprintf(stderr, "kiln: error: %s\n", err);
  free(*buf);
  return rc;
}

static int show_graph(Cli *c) {
  FILE *f = stdout;
  char *buf = NULL;
  size_t len = 0;
  if (c->out)
    f = open_memstream(&buf, &len); /* written whole, never partially */
  if (!c->format || strcmp(c->format, "text") == 0)
    graph_print_text(c->g, f, true);
  else if (strcmp(c->format, "dot") == 0)
    graph_print_dot(c->g, f);
  else
    graph_print_json(c->g, f);
  return c->out ? write_whole(c, f, &buf, &len) : EXIT_OK;
}

static bool is_stage(const Cli *c, const char *s) { return c->stage && strcmp(c->stage, s) == 0; }

static int show_validate(Cli *c) {
  const char *f = c->format ? c->format : "text";
  bool planned = is_stage(c, "plan") || is_stage(c, "fused");
  if (c->stage && !is_stage(c, "graph") && !is_stage(c, "grad") && !planned)
    return cli_usage_error("show", "unknown stage '%s' (available: graph, grad, plan, fused)",
                           c->stage);
  if (is_stage(c, "plan") && strcmp(f, "text") && strcmp(f, "json") && strcmp(f, "svg"))
    return cli_usage_error("show", "--stage plan shows as text, json or svg, not '%s'", f);
  if (!is_stage(c, "plan") && strcmp(f, "text") && strcmp(f, "dot") && strcmp(f, "json"))
    return cli_usage_error("show", "unknown format '%s' (expected text, dot or json)", f);
  if (c->fuse_given && !planned)
    return cli_usage_error("show", "--fuse applies to --stage plan and --stage fused");
  return EXIT_OK;
}

typedef struct ShowPlan {
  Cli *c;
  Plan p;
} ShowPlan;

/* The plan of the inference graph (roots: the outputs), or with --train
 * of the whole training step (roots: loss and updates). */
static void plan_fn(void *ud) {
  ShowPlan *sp = ud;
  Cli *c = sp->c;
  c->g = cli_build(c, c->co.training);
  TrainStep ts;
  int n;
  Node **roots = cli_step_roots(c, c->g, c->co.training, &ts, &n);
  c->verify_plan = true;
  cli_plan(c, c->g, roots, n, &sp->p);
}

static int show_plan(Cli *c) {
  ShowPlan sp = {.c = c};
  int rc = cli_protect(c, plan_fn, &sp);
  if (rc != EXIT_OK)
    return rc;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = c->out ? open_memstream(&buf, &len) : stdout;
  const char *fmt = c->format ? c->format : "text";
  if (is_stage(c, "fused") && strcmp(fmt, "json") == 0)
    fused_print_json(c, &sp.p, f);
  else if (is_stage(c, "fused") && strcmp(fmt, "dot") == 0)
    fused_print_dot(c, &sp.p, f);
  else if (is_stage(c, "fused"))
    fused_print_text(c, &sp.p, f);
  else if (strcmp(fmt, "json") == 0)
    plan_print_json(&sp.p, f);
  else if (strcmp(fmt, "svg") == 0)
    plan_print_svg(&sp.p, f);
  else
    plan_print_text(&sp.p, f);
  return c->out ? write_whole(c, f, &buf, &len) : EXIT_OK;
}

/* The training step: forward in training mode, backward, update. */
static void grad_fn(void *ud) {
  Cli *c = ud;
  c->g = cli_build(c, true);
  TrainStep ts;
  build_train_step(c->g, &c->diag, &ts);
  verify_or_die(c);
}

static int show_run(Cli *c) {
  if (is_stage(c, "plan") || is_stage(c, "fused"))
    return show_plan(c);
  bool grad = is_stage(c, "grad");
  int rc = cli_protect(c, grad ? grad_fn : check_fn, c);
  return rc == EXIT_OK ? show_graph(c) : rc;
}

const Command cmd_show = {"show", "DmtfsohIHCKFX", show_help, show_validate, show_run,
                         show_help_end};
