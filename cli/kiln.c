/*
 * kiln.c: the driver's entry point: dispatches to a command.
 *
 *   kiln check FILE      parse, elaborate, infer shapes, print a summary
 *   kiln show FILE       print the graph, the memory plan or the kernels
 *   kiln run FILE        evaluate the model on .npy inputs
 *   kiln init FILE       write freshly initialized parameters
 *   kiln train FILE      train on a dataset
 *   kiln build FILE      compile to a standalone program (or an object file)
 *   kiln bench FILE      time the model fused against unfused
 */
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: kiln COMMAND MODEL.kiln [options]\n"
    "\n"
    "kiln compiles models written in the kiln language (see docs/language.md).\n"
    "\n"
    "commands:\n"
    "  check   parse and elaborate a model, infer every shape, print a summary\n"
    "  show    print the model's graph, memory plan or fused kernels (text, DOT, JSON)\n"
    "  run     evaluate the model on inputs from .npy files (compiled, or --reference)\n"
    "  init    write the model's initial parameters to a safetensors file\n"
    "  train   train the model on a dataset (the training step as one graph)\n"
    "  build   compile the model ahead of time into a standalone program (or an\n"
    "          object file and a C header)\n"
    "  bench   time the model compiled with operator fusion against without, per\n"
    "          kernel and end to end\n"
    "\n"
    "Run `kiln COMMAND --help` for a command's options.\n"
    "Exit status: 0 success, 1 an error in the model or the data, 2 bad usage.\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage, stdout);
    return EXIT_OK;
  }
  static const Command *const cmds[] = {&cmd_check, &cmd_show, &cmd_run, &cmd_init, &cmd_train,
                                          &cmd_build, &cmd_bench};
  for (int i = 0; i < countof(cmds); i++)
    if (strcmp(cmds[i]->name, cmd) == 0)
      return cli_main(cmds[i], argc - 2, argv + 2);
  fprintf(stderr, "kiln: error: unknown command '%s'\n\n%s", cmd, usage);
  return EXIT_USAGE;
}
