/*
 * cmd_inspect.c: `kiln check` and `kiln show`, the commands that build a
 * graph and describe it without running it.
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
    "usage: kiln show MODEL.kiln [--format text|dot|json] [--stage graph|grad] [-o FILE]\n"
    "                 [-D NAME=VALUE]... [--model NAME] [--train]\n"
    "\n"
    "Prints the model's graph: every value's name, op, attributes, shape, dtype,\n"
    "FLOPs, bytes and source line, with totals.\n"
    "\n"
    "  --format text|dot|json   text (default), Graphviz DOT (kiln show m.kiln\n"
    "                           --format dot | dot -Tsvg > m.svg), or JSON\n"
    "  --stage graph|grad       graph: the model after elaboration (default);\n"
    "                           grad: the whole training step (training-mode forward,\n"
    "                           backward nodes marked with the forward node they\n"
    "                           come from, the optimizer update); needs a train section\n"
    "  -o, --out FILE           write to FILE instead of standard output\n"
    "  -D, --define NAME=VALUE  override a model constant\n"
    "  --model NAME             which model of the file (default: the first)\n"
    "  --train                  build the training-mode graph\n"
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

const Command cmd_check = {"check", "Dmth", check_help, NULL, check_run};

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
  if (!c->out)
    return EXIT_OK;
  fclose(f);
  char err[512];
  const void *pieces[1] = {buf};
  int rc = rt_write_file_atomic(c->out, pieces, &len, 1, err, sizeof err) == RT_OK ? EXIT_OK
                                                                                     : EXIT_USER;
  if (rc != EXIT_OK)
    fprintf(stderr, "kiln: error: %s\n", err);
  free(buf);
  return rc;
}

static int show_validate(Cli *c) {
  if (c->format && strcmp(c->format, "text") && strcmp(c->format, "dot") &&
      strcmp(c->format, "json"))
    return cli_usage_error("show", "unknown format '%s' (expected text, dot or json)", c->format);
  if (c->stage && strcmp(c->stage, "graph") && strcmp(c->stage, "grad"))
    return cli_usage_error("show", "unknown stage '%s' (available: graph, grad)", c->stage);
  return EXIT_OK;
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
  bool grad = c->stage && strcmp(c->stage, "grad") == 0;
  int rc = cli_protect(c, grad ? grad_fn : check_fn, c);
  return rc == EXIT_OK ? show_graph(c) : rc;
}

const Command cmd_show = {"show", "Dmtfsoh", show_help, show_validate, show_run};
