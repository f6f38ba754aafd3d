/*
 * aot_header.c: the C header `kiln build --emit header` writes beside the
 * object file, for programs that embed a compiled model.
 *
 * Everything a caller needs is a #define: arena size and alignment, each
 * input's and output's arena offset and size, each parameter's ext slot,
 * size and offset into kiln_params, the prepared (weight-derived) values'
 * slots and offsets, and for training builds the training step's inputs,
 * loss and updates.  Value names become identifiers by
 * turning every character outside [A-Za-z0-9_] into '_' (c1.weight ->
 * KILN_PARAM_c1_weight_SLOT); a name that collides gets a _2, _3 suffix.
 * With kiln build --prefix P the macros start with P in capitals instead
 * of KILN and the object's symbols with P instead of kiln (P_infer, ...),
 * so two models' objects and headers go into one program.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aot.h"
#include "cg_internal.h"

typedef struct Ids {
  Arena *arena;
  const char **used;
  int n;
} Ids;

/* A unique C identifier piece for name. */
static const char *ident(Ids *ids, const char *name) {
  char *s = arena_strdup(ids->arena, name);
  for (char *p = s; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '_')
      *p = '_';
  const char *u = s;
  for (int k = 2;; k++) {
    bool taken = false;
    for (int i = 0; i < ids->n && !taken; i++)
      taken = strcmp(ids->used[i], u) == 0;
    if (!taken)
      break;
    u = arena_fmt(ids->arena, "%s_%d", s, k);
  }
  ids->used[ids->n++] = u;
  return u;
}

/* s as a C string literal. */
static void c_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++)
    if (*c == '"' || *c == '\\')
      fprintf(f, "\\%c", *c);
    else if (*c < 0x20 || *c >= 0x7f)
      fprintf(f, "\\%03o", *c);
    else
      fputc(*c, f);
  fputc('"', f);
}

static void type_comment(FILE *f, const Node *n) {
  char tb[160];
  fprintf(f, "/* %s %s */\n", n->name, node_type_str(n, tb, sizeof tb));
}

static void io_defines(FILE *f, Ids *ids, const char *kind, const AotIo *io) {
  const char *id = ident(ids, io->name);
  if (io->offset < 0) {
    fprintf(f, "/* input %s is not read by %s */\n", io->name,
            strncmp(kind, "TRAIN", 5) == 0 ? "kiln_train_step" : "kiln_infer");
    return;
  }
  type_comment(f, io->node);
  fprintf(f, "#define KILN_%s_%s_OFFSET %lld\n", kind, id, (long long)io->offset);
  fprintf(f, "#define KILN_%s_%s_BYTES %lld\n", kind, id, (long long)node_bytes(io->node));
}

static int64_t toff(const Aot *a, const Node *n) {
  return n && a->train.plan.time[n->id] >= 0 ? a->train.plan.offset[n->id] : -1;
}

static void train_defines(FILE *f, const Aot *a) {
  const Node *x = a->src.data, *y = a->src.labels;
  fprintf(f, "\n/* kiln_train_step: before each step fill its inputs (KILN_TRAIN_INPUT_*),\n"
          " * the learning rate (f32) and the step number (f32, from 1; -1: not read),\n"
          " * and set *ext[0] to the step number from 0.  After it, copy each update:\n"
          " * for each {value, slot, bytes} of KILN_UPDATES, memcpy(ext[slot], arena +\n"
          " * value, bytes).  The loss (f32) is at KILN_TRAIN_LOSS_OFFSET. */\n");
  fprintf(f, "#define KILN_TRAIN_ARENA_BYTES %lld\n", (long long)a->train.plan.arena);
  Ids ids = {a->arena,
             arena_alloc(a->arena, sizeof(char *) *
                                       (size_t)(a->train.n_inputs + a->train.n_outputs + 1)),
             0};
  for (int i = 0; i < a->train.n_inputs; i++)
    io_defines(f, &ids, "TRAIN_INPUT", &a->train.inputs[i]);
  if (a->train.n_outputs)
    fputs("/* the model's outputs as the step computed them (training mode), to read\n"
          " * after it */\n", f);
  for (int i = 0; i < a->train.n_outputs; i++)
    io_defines(f, &ids, "TRAIN_OUTPUT", &a->train.outputs[i]);
  if (x) { /* the examples (and a classifier's labels), under the names kiln's trainer uses */
    fprintf(f, "#define KILN_TRAIN_DATA_OFFSET %lld /* %s */\n", (long long)toff(a, x), x->name);
    fprintf(f, "#define KILN_TRAIN_DATA_BYTES %lld\n", (long long)node_bytes(x));
  }
  if (x && y) {
    fprintf(f, "#define KILN_TRAIN_LABELS_OFFSET %lld /* %s */\n", (long long)toff(a, y),
            y->name);
    fprintf(f, "#define KILN_TRAIN_LABELS_BYTES %lld\n", (long long)node_bytes(y));
  }
  fprintf(f, "#define KILN_TRAIN_LR_OFFSET %lld\n", (long long)toff(a, a->src.ts->lr));
  fprintf(f, "#define KILN_TRAIN_LR %.9g /* the train section's (its schedule's start) */\n",
          a->src.spec.lr);
  fprintf(f, "#define KILN_TRAIN_STEP_OFFSET %lld\n", (long long)toff(a, a->src.ts->step));
  fprintf(f, "#define KILN_TRAIN_LOSS_OFFSET %lld\n", (long long)toff(a, a->src.ts->loss));
  const Graph *g = a->train.g;
  fprintf(f, "#define KILN_UPDATE_COUNT %d\n#define KILN_UPDATES { \\\n", g->n_updates);
  for (int i = 0; i < g->n_updates; i++)
    fprintf(f, "    {%lld, %d, %lld}, /* %s */ \\\n", (long long)toff(a, g->updates[i].value),
            a->train.slot[g->updates[i].target->id], (long long)node_bytes(g->updates[i].target),
            g->updates[i].target->name);
  fprintf(f, "  }\n");
}

/* The prepared values: one block, a {slot, offset, bytes} each. */
static void prepared_defines(FILE *f, const Aot *a) {
  fprintf(f, "\n/* prepared values (computed by kiln_prepare): {ext slot, offset into a\n"
          " * block of KILN_PREPARED_BYTES, bytes} */\n");
  fprintf(f, "#define KILN_PREPARED_BYTES %lld\n#define KILN_PREPARED_COUNT %d\n",
          (long long)a->prepared_bytes, a->n_prepared);
  fprintf(f, "#define KILN_PREPARED { \\\n");
  for (int i = 0; i < a->n_prepared; i++) {
    const Node *n = a->prepared[i].node;
    fprintf(f, "    {%d, %lld, %lld}, /* %s = %s(", a->prepared[i].slot,
            (long long)a->prepared[i].offset, (long long)a->prepared[i].bytes, n->name,
            op_name(n->op));
    if (n->op == OP_CONST)
      fprintf(f, "%g", n->at.value);
    for (int j = 0; j < n->n_in; j++)
      fprintf(f, "%s%s", j ? ", " : "", n->in[j]->name);
    fprintf(f, ") */ \\\n");
  }
  fprintf(f, "  }\n");
}

static const char usage_comment[] =
    " * Calling it: allocate an arena of KILN_ARENA_BYTES aligned to\n"
    " * KILN_ARENA_ALIGN bytes and an array ext of KILN_EXT_SLOTS pointers:\n"
    " * ext[0] points at an int64_t step counter (0 for inference), ext[SLOT]\n"
    " * at each parameter's KILN_PARAM_<name>_BYTES bytes (initial values at\n"
    " * kiln_params + KILN_PARAM_<name>_OFFSET; inference never writes them, so\n"
    " * ext[SLOT] may point into kiln_params itself; KILN_PARAMS lists them all\n"
    " * as {slot, offset, bytes, name}).  Prepared weights: give\n"
    " * the object a block of KILN_PREPARED_BYTES aligned to KILN_ARENA_ALIGN\n"
    " * that lives as long as the parameters, and for each {slot, offset} of\n"
    " * KILN_PREPARED set ext[slot] = block + offset.  Then call\n"
    " * kiln_prepare(arena, ext): it computes the prepared values (weights laid\n"
    " * out for inference, e.g. transposed) from the parameters, reading no\n"
    " * arena (NULL is fine).  YOU MUST CALL kiln_prepare AGAIN WHENEVER YOU SET\n"
    " * OR CHANGE PARAMETERS (new buffers, loaded weights, after training steps),\n"
    " * before the next kiln_infer: otherwise kiln_infer computes with the old\n"
    " * weights.  Write the inputs at arena + KILN_INPUT_<name>_OFFSET (f32 or\n"
    " * i32, C order), call kiln_infer(arena, ext), read the outputs at\n"
    " * KILN_OUTPUT_<name>_OFFSET.\n"
    " * The arena holds every intermediate value (its bytes are reused within a\n"
    " * call), so one arena serves one call at a time.\n"
    " *\n"
    " * The object allocates nothing (no malloc) and keeps no state.  It needs\n"
    " * libm, memcpy/memset, and from kiln's runtime (libkiln_rt.a) one function:\n"
    " *   void rt_parallel_for(int64_t n, int64_t grain,\n"
    " *                        void (*fn)(void *ctx, int64_t begin, int64_t end),\n"
    " *                        void *ctx);\n"
    " * which runs fn over [0, n) split among threads (rt_set_threads); a serial\n"
    " * { fn(ctx, 0, n); } is a valid replacement.  It was compiled for the CPU\n"
    " * named below and needs its instruction set.\n";

static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* The header's text with a->sym in place of kiln: each identifier
 * starting with KILN_ gets a->sym in capitals instead, and the object's
 * symbols (kiln_infer, kiln_prepare, kiln_train_step, kiln_params,
 * kiln_manifest) a->sym itself.  Other words (libkiln_rt.a) stay. */
static char *with_prefix(const Aot *a, char *text) {
  static const char *const syms[] = {"kiln_infer", "kiln_prepare", "kiln_train_step",
                                     "kiln_params", "kiln_manifest"};
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (!f)
    die("out of memory");
  for (const char *p = text; *p;) {
    if (!ident_char(*p)) {
      fputc(*p++, f);
      continue;
    }
    size_t n = 1;
    while (ident_char(p[n]))
      n++;
    bool is_sym = false;
    for (int i = 0; i < 5 && !is_sym; i++)
      is_sym = strlen(syms[i]) == n && strncmp(p, syms[i], n) == 0;
    if (n > 5 && strncmp(p, "KILN_", 5) == 0) {
      for (const char *c = a->sym; *c; c++)
        fputc(toupper((unsigned char)*c), f);
      fwrite(p + 4, 1, n - 4, f);
    } else if (is_sym) {
      fprintf(f, "%s%.*s", a->sym, (int)(n - 4), p + 4);
    } else {
      fwrite(p, 1, n, f);
    }
    p += n;
  }
  if (fclose(f) != 0)
    die("out of memory");
  free(text);
  return out;
}

char *aot_header(const Aot *a, const char *base) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    die("out of memory");
  Ids ids = {a->arena, arena_alloc(a->arena, sizeof(char *) * (size_t)(a->n_params +
                                                                          a->infer.n_inputs +
                                                                          a->infer.n_outputs + 1)),
             0};
  char *guard = arena_fmt(a->arena, "KILN_%s_H", base);
  for (char *p = guard; *p; p++)
    *p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
  fprintf(f, "/*\n * %s.h: model %s compiled by `kiln build` (%s, cpu %s).\n *\n%s */\n",
          base, a->model, a->cg->triple, a->cg->cpu, usage_comment);
  fprintf(f, "#ifndef %s\n#define %s\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", guard,
          guard);
  int64_t arena = a->infer.plan.arena > a->train.plan.arena ? a->infer.plan.arena
                                                            : a->train.plan.arena;
  fprintf(f, "#define KILN_MODEL \"%s\"\n#define KILN_ARENA_ALIGN %d\n", a->model, PLAN_ALIGN);
  fprintf(f, "#define KILN_ARENA_BYTES %lld /* the larger of the step functions' */\n",
          (long long)arena);
  fprintf(f, "#define KILN_INFER_ARENA_BYTES %lld\n", (long long)a->infer.plan.arena);
  fprintf(f, "#define KILN_EXT_SLOTS %d\n#define KILN_PARAM_COUNT %d\n",
          a->n_params + a->n_prepared + 1, a->n_params);
  fprintf(f, "#define KILN_PARAMS_BYTES %lld\n", (long long)a->params_bytes);
  fprintf(f, "#define KILN_BATCH %lld /* rows per call; 0: not row by row */\n",
          (long long)a->batch);
  fputs("\n/* kiln_infer's inputs and outputs: byte offsets into the arena */\n", f);
  for (int i = 0; i < a->infer.n_inputs; i++)
    io_defines(f, &ids, "INPUT", &a->infer.inputs[i]);
  for (int i = 0; i < a->infer.n_outputs; i++)
    io_defines(f, &ids, "OUTPUT", &a->infer.outputs[i]);
  fputs("\n/* parameters: ext slot, size, offset of the initial values in kiln_params */\n", f);
  for (int i = 0; i < a->n_params; i++) {
    const AotParam *p = &a->params[i];
    const char *id = ident(&ids, p->node->name);
    type_comment(f, p->node);
    fprintf(f, "#define KILN_PARAM_%s_SLOT %d\n#define KILN_PARAM_%s_BYTES %lld\n", id, p->slot,
            id, (long long)p->bytes);
    fprintf(f, "#define KILN_PARAM_%s_OFFSET %lld\n", id, (long long)p->offset);
  }
  fputs("/* all of them, for a loop: {ext slot, offset in kiln_params, bytes, name} */\n"
        "#define KILN_PARAMS { \\\n", f);
  for (int i = 0; i < a->n_params; i++) {
    fprintf(f, "    {%d, %lld, %lld, ", a->params[i].slot, (long long)a->params[i].offset,
            (long long)a->params[i].bytes);
    c_string(f, a->params[i].node->name);
    fputs("}, \\\n", f);
  }
  fputs("  }\n", f);
  prepared_defines(f, a);
  if (a->has_train)
    train_defines(f, a);
  fputs("\nextern const char kiln_manifest[];       /* JSON: everything above */\n"
        "extern const unsigned char kiln_params[]; /* KILN_PARAMS_BYTES */\n"
        "void kiln_infer(char *arena, void *const *ext);\n"
        "/* Call after setting or changing parameters, before kiln_infer. */\n"
        "void kiln_prepare(char *arena, void *const *ext);\n", f);
  if (a->has_train)
    fputs("void kiln_train_step(char *arena, void *const *ext);\n", f);
  fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif /* %s */\n", guard);
  if (fclose(f) != 0)
    die("out of memory");
  return strcmp(a->sym, "kiln") != 0 ? with_prefix(a, text) : text;
}
