/*
 * aot.h: ahead-of-time compilation: a model's inference graph (and, for
 * training builds, its training step) as one LLVM module that `kiln build`
 * writes as an object file and links with the runtime's main
 * (runtime/rt_main.c) into a standalone program.
 *
 * The module defines
 *   void kiln_infer(char *arena, void *const *ext);       the inference graph
 *   void kiln_prepare(char *arena, void *const *ext);     its weight-derived values
 *   void kiln_train_step(char *arena, void *const *ext);  training builds
 *   const char kiln_manifest[];        JSON: what the program's main reads
 *   const unsigned char kiln_params[]; every parameter's initial value
 *                                      (one byte if the program fills them)
 * and nothing else (the kernels are internal).  Both step functions use one
 * ext array: ext[0] points at the int64 step counter, ext[slot] at a
 * parameter (slots 1.. in the training graph's node order, or the
 * inference graph's without training; the inference graph's parameters
 * take their training twins' slots, by name; the inference graph's
 * weight-derived values (passes/prepack.c) take the slots after all
 * parameters, and kiln_prepare computes them from the parameters: it reads
 * no arena, and must run after the parameters are set or changed, before
 * kiln_infer).  Each step function has its
 * own arena and plan (codegen/program.c's program_calls builds the calls,
 * as for the JIT).
 *
 *   Aot a;
 *   aot_init(&a, &graphs, &plan_opts, err, n);         // plans, parameter layout
 *   ... fill a.blob: a.params[i] at a.params[i].offset ...
 *       (or aot_params_at_start(&a, seed): the program fills them)
 *   aot_params_to_file(&a, "prog.params", err, n);    // optional, see there
 *   aot_compile(&a, &cg_opts, err, n);                 // the module
 *   aot_optimize(&a, err, n);                          // O3
 *   aot_write_object(&a, "prog.o", false, err, n);
 * (or, instead of the last two, aot_write_parts: on several threads)
 *   aot_header(&a, "prog");                            // the C header's text
 *   aot_free(&a);
 *
 * The manifest (version 1) is one JSON object:
 *   model, ext_slots, params_bytes, params_stored (1: kiln_params holds
 *             the initial values; 0: the program fills them), init_seed,
 *   params: [{name, dtype, shape, offset (into kiln_params, or the block the
 *             program fills), slot, trainable, infer (the inference graph
 *             has it), init (when not stored: {kind, a, b, fan_in,
 *             fan_out}, runtime/rt.h's RtInit with the kind's name)}]
 *   prepared_bytes, prepared: [{name, dtype, shape, offset (into a block of
 *             prepared_bytes the program allocates), slot}]: kiln_prepare's
 *   infer: {function, arena, batch, batch_name,
 *           inputs: [{name, dtype, shape, offset (-1: not read), batch}],
 *           outputs: [{name, dtype, shape, offset, batch}]}
 *   train (training builds): {function, arena, inputs: [IO] (every input
 *           of the training step), data: IO, labels: IO (the examples, f32
 *           or i32 ids, and the labels, i32 classes or f32 targets; only for
 *           models with just those; labels absent: trained on the examples
 *           alone),
 *           lr, step, loss (arena offsets; -1: not read), infer_data (index
 *           into infer.inputs), accuracy (index into infer.outputs, or -1:
 *           class scores over data's labels, per label), ids_below (i32
 *           data, token ids, must be below it; 0 for f32 data), test_loss
 *           (infer's arena offset of the loss, which a model without class
 *           scores computes with its outputs; -1: none), infer_labels (index
 *           into infer.inputs of the labels that loss reads, which running
 *           the program does not need; -1: none),
 *           updates: [{value (arena offset), slot, bytes}], optimizer (name),
 *           optimizer_kind, schedule: {kind, lr, gamma, every, end, epochs,
 *           warmup}, epochs, seed, shuffle}
 * "batch" is the size of the first axis along which the inference graph
 * is row-separable (aot_batch.c), 0 if it is not; inputs and outputs with
 * "batch": 1 have that axis first, so a program may run any number of rows
 * in chunks of that size.
 */
#ifndef KILN_AOT_H
#define KILN_AOT_H

#include <stdio.h>

#include "cg.h"
#include "passes.h"

typedef struct AotParam {
  Node *node;     /* in the graph that owns the slots */
  int slot;       /* ext slot, 1.. */
  int64_t offset; /* bytes into the blob (PLAN_ALIGN-aligned) */
  int64_t bytes;
} AotParam;

typedef struct AotIo {
  const char *name;
  Node *node;
  int64_t offset; /* in its step's arena; -1 when the step does not read it */
  bool batch;     /* its first axis is the batch axis */
} AotIo;

typedef struct AotStep {
  Graph *g;
  Plan plan;
  int *slot;      /* per node id: a parameter's ext slot, else 0 */
  CgCall *calls;
  int n_calls;
  AotIo *inputs, *outputs;
  int n_inputs, n_outputs;
} AotStep;

/* What to compile. */
typedef struct AotGraphs {
  Graph *infer;           /* the inference graph; roots: its outputs */
  const Graph *twin;      /* infer built with its batch constant one larger, or NULL */
  const char *batch_name; /* that constant's name */
  Graph *train;           /* the training graph, or NULL for inference only */
  const TrainStep *ts;    /* train's step */
  TrainSpec spec;         /* the train section, command line applied */
  Node *data, *labels;    /* train's f32 examples and i32 labels, or NULL (other inputs) */
  int accuracy;           /* index of the inference output giving class scores, or -1 */
  int64_t ids_below;      /* i32 examples (token ids): they index rows 0 .. ids_below - 1 */
  Node *test_loss;        /* a model trained without class scores for its labels (an
                           * autoencoder, a regression on f32 targets): infer's loss
                           * (the train section's minimize), computed with the
                           * outputs to score the test set; NULL otherwise */
} AotGraphs;

typedef struct AotTimes {
  double plan, lower, emit_ir, optimize;
} AotTimes;

typedef struct Aot {
  const char *model;
  const char *sym; /* the symbols' prefix: "kiln" (kiln_infer, kiln_params, ...) unless
                    * set after aot_init (kiln build --prefix) */
  Arena *arena;
  AotParam *params;
  int n_params;
  int64_t params_bytes;
  AotParam *prepared;     /* weight-derived values of the inference graph: slots */
  int n_prepared;         /* n_params + 1.., offsets into a block of */
  int64_t prepared_bytes; /* prepared_bytes the caller allocates */
  unsigned char *blob; /* params_bytes (at least 1), zeroed, for the caller to fill */
  const char *params_file; /* the blob's file (aot_params_to_file), or NULL */
  bool params_stored;      /* false: the program fills them (aot_params_at_start) */
  uint64_t init_seed;      /* then with this seed */
  AotStep infer, train;
  CgCall *prep_calls;     /* kiln_prepare's */
  int n_prep_calls;
  bool has_train;
  AotGraphs src;
  int infer_data;   /* index of the inference graph's data input */
  int infer_labels; /* ... and of its labels input, where the test loss reads them; or -1 */
  int64_t batch;  /* see the manifest; 0: not row-separable */
  char *manifest; /* malloc'ed JSON */
  Cg *cg;
  AotTimes times;
} Aot;

/* Plans the inference graph and the training step, if any, and lays out
 * the parameters.  User errors were the caller's to raise, but for one:
 * false, err saying how many bytes, when the parameters' blob cannot be
 * allocated (a model too large for this machine; aot_free still frees
 * what was made).  Other failures here are internal (die). */
bool aot_init(Aot *a, const AotGraphs *gs, const PlanOpts *po, char *err, size_t errlen);
/* Instead of filling the blob: the program fills the parameters when it
 * starts, from each one's initializer in the manifest and this seed
 * (rt_init_fill, the formulas param_init_fill uses, so the same bits);
 * kiln_params is then one byte.  For programs linked with the runtime's
 * main: an object for other code (--emit obj) must carry the values. */
void aot_params_at_start(Aot *a, uint64_t seed);
/* Writes the filled blob to path and frees it: the module then includes
 * the file when its object is written (the assembler's .incbin) instead
 * of holding the bytes as a constant, which is much faster for large
 * models.  The file must exist until the last object is written; the
 * module's LLVM IR and assembly then name it, so keep the constant for
 * those.  False with a message if the file cannot be written. */
bool aot_params_to_file(Aot *a, const char *path, char *err, size_t n);
/* Builds the module: kernels, step functions, manifest and blob globals
 * (not yet optimized).  False with a message (an internal error). */
bool aot_compile(Aot *a, const CgOpts *co, char *err, size_t n);
/* Verifies and optimizes the module (O3), for aot_write_object or for
 * printing it (a->cg). */
bool aot_optimize(Aot *a, char *err, size_t n);
/* Writes the optimized module's object file (assembly when `assembly`) to
 * path, atomically. */
bool aot_write_object(Aot *a, const char *path, bool assembly, char *err, size_t n);

/* Whether `name` is one of the module's entry points (kiln_infer,
 * kiln_prepare, kiln_train_step, or a->sym's in place of kiln): the
 * functions that stay exported. */
bool aot_is_entry(const Aot *a, const char *name);
/* s inside an assembler string literal (an .incbin path): quotes,
 * backslashes and bytes outside printable ASCII as octal escapes. */
void aot_asm_string(FILE *f, const char *s);

/* aot_split.c: the module, not optimized, cut into `parts` object files
 * (paths[i]), each optimized and compiled on a thread of its own; linked
 * together they are the program's code.  The module is left as it was. */
enum { AOT_MAX_PARTS = 8 };
bool aot_write_parts(Aot *a, int parts, char *const *paths, char *err, size_t n);
/* The C header for embedding the object (malloc'ed text); guard from `base`. */
char *aot_header(const Aot *a, const char *base);
void aot_free(Aot *a);

/* --- aot_batch.c --- */
/* The first-axis size B (the first input's) along which g computes outs
 * row by row (each row of every output depends only on the same row of
 * the batch inputs, for any number of rows), or 0.  twin is g built with
 * B + 1 instead (NULL: 0).  batched[node id] marks the inputs and outputs
 * with that axis first. */
int64_t aot_batch_size(const Graph *g, const Graph *twin, const Plan *p, Node *const *outs,
                       int n_outs, bool *batched);

#endif
