/*
 * frontend.h: model file in, Graph IR out.
 *
 * frontend_compile parses a .kiln source together with the prelude (the
 * layers written in the language: dense, conv2d, batchnorm, ...; see
 * frontend/prelude.kiln), elaborates the chosen model with its compile-time
 * constants (defaults overridden by -D), and returns the graph with every
 * shape inferred and every parameter's initializer resolved.  User errors
 * raise through the Diag (error_at); wrap the call in diag_protect.
 */
#ifndef KILN_FRONTEND_H
#define KILN_FRONTEND_H

#include "ir.h"

typedef struct Define {
  const char *name;
  const char *value; /* as written: 64, 0.5, true, "text" */
} Define;

typedef struct CompileOpts {
  const char *model;     /* NULL: the file's only (or first) model */
  const Define *defines; /* -D NAME=VALUE */
  int n_defines;
  bool training;         /* build the training-mode graph (batch statistics, dropout) */
  int64_t max_work;      /* elaboration steps allowed (0: the default, 2,000,000) */
  int64_t max_nodes;     /* graph nodes allowed (0: the default, 1,000,000) */
} CompileOpts;

Graph *frontend_compile(Arena *a, Diag *d, const Source *src, const CompileOpts *o);

/* The names of the models declared in src, for listings (arena strings). */
int frontend_model_names(Arena *a, Diag *d, const Source *src, const char ***names);

/* Parses "NAME=VALUE"; returns false if malformed. */
bool define_parse(Arena *a, const char *text, Define *out);

extern const char kiln_prelude[];

#endif
