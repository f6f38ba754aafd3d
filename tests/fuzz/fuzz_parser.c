/*
 * fuzz_parser.c: libFuzzer target for the frontend (lexer, parser,
 * elaboration, shape inference).
 *
 * Any input must either compile to a graph that passes graph_verify, or
 * fail with a located error: "fuzz.kiln:LINE:COL: error: ..." followed by
 * the source line and a caret.  Crashes, hangs, sanitizer reports, leaks,
 * unlocated errors and internal errors (abort) are all findings.
 * Limits on elaboration work are lowered so each input runs quickly.
 *
 * Build (see the fuzz target in tests/CMakeLists.txt) and run:
 *   build-fuzz/fuzz_parser -max_total_time=60 tests/fuzz/parser_seeds
 */
#include <stdlib.h>
#include <string.h>

#include "frontend.h"
#include "passes.h"

typedef struct Job {
  Arena *a;
  Diag d;
  const Source *src;
  Graph *g;
} Job;

static void compile(void *ud) {
  Job *j = ud;
  CompileOpts o = {0};
  o.max_work = 20000;
  o.max_nodes = 20000;
  j->g = frontend_compile(j->a, &j->d, j->src, &o);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len) {
  if (len > 64 * 1024)
    return 0;
  Job j = {0};
  j.a = arena_new();
  diag_init(&j.d);
  j.src = source_from_string(j.a, "fuzz.kiln", (const char *)data, len);
  if (diag_protect(&j.d, compile, &j) == 0) {
    char err[512];
    if (!graph_verify(j.g, err, sizeof err)) {
      fprintf(stderr, "graph_verify failed: %s\n", err);
      abort();
    }
    FILE *null = fopen("/dev/null", "w");
    graph_print_text(j.g, null, true);
    graph_print_json(j.g, null);
    fclose(null);
  } else if (strncmp(j.d.msg, "fuzz.kiln:", 10) != 0 || !strstr(j.d.msg, ": error: ") ||
             !strchr(j.d.msg, '^')) {
    fprintf(stderr, "unlocated error:\n%s\n", j.d.msg);
    abort();
  }
  diag_free(&j.d);
  arena_free(j.a);
  return 0;
}
