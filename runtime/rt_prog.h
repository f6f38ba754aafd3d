/*
 * rt_prog.h: what the main of a program built by `kiln build` shares
 * between its files (rt_main.c: inference and --help; rt_train.c: the
 * `train` command; rt_prog.c: the manifest, parameters, messages).  Not
 * part of the runtime's API: these files live only in libkiln_rt_main.a.
 *
 * The program's model is the object kiln linked in (codegen/aot.h): two
 * step functions, the JSON manifest describing them, the parameters'
 * initial values.  kiln_train_step is a weak reference, so the same main
 * links with inference-only objects (it is then NULL).
 */
#ifndef KILN_RT_PROG_H
#define KILN_RT_PROG_H

#include "rt_data.h"

extern const char kiln_manifest[];
extern const unsigned char kiln_params[];
void kiln_infer(char *arena, void *const *ext);
void kiln_prepare(char *arena, void *const *ext); /* the prepared values from the parameters */
__attribute__((weak)) void kiln_train_step(char *arena, void *const *ext);

enum { RP_OK = 0, RP_USER = 1, RP_USAGE = 2 };

/* One tensor of the manifest: an input or output (offset into its step's
 * arena, -1 when not read) or a parameter (offset into kiln_params). */
typedef struct RtProgTensor {
  const char *name;
  RtDType dtype;
  int rank;
  int64_t dim[RT_MAX_RANK];
  int64_t offset;
  int slot, trainable, infer; /* parameters */
  RtInit init;                /* parameters the program fills (kind RT_INIT_AUTO: none) */
  int batch;                  /* inputs and outputs: first axis is the batch */
} RtProgTensor;

typedef struct RtProgUpdate {
  int64_t value, bytes;
  int slot;
} RtProgUpdate;

typedef struct RtProgJson RtProgJson; /* the parsed manifest (rt_prog.c) */

typedef struct RtProg {
  RtProgJson *json; /* owns every string below */
  const char *name; /* the program, for messages (argv[0]'s last part) */
  const char *model;
  int ext_slots;
  int64_t params_bytes;
  int params_stored;  /* 1: kiln_params holds the initial values; 0: each param's init */
  uint64_t init_seed; /* ... with this seed (rt_init_fill) */
  RtProgTensor *params, *inputs, *outputs;
  int n_params, n_inputs, n_outputs;
  RtProgTensor *prepared; /* weight-derived values: slot, offset into their block */
  int n_prepared;
  int64_t prepared_bytes;
  int64_t infer_arena, batch;
  const char *batch_name;
  /* training builds */
  int has_train;
  int64_t train_arena, lr, step, loss;
  RtProgTensor data, labels; /* labels.offset -1 and has_labels 0: trained without labels */
  int has_labels;
  int infer_data, accuracy; /* accuracy: class scores per label, over data's labels */
  int64_t ids_below;        /* i32 data (token ids) must be below it; 0 for f32 data */
  int64_t test_loss;        /* a model without class scores: the loss in the inference arena, or -1 */
  int infer_labels;         /* the inference input of the labels it reads (which running
                             * the program does not need), or -1 */
  RtProgUpdate *updates;
  int n_updates;
  const char *optimizer;
  RtSchedule sched;
  int epochs, shuffle;
  uint64_t seed;
} RtProg;

/* Parses the manifest; RP_USER with a message if it is malformed. */
int rt_prog_read(RtProg *p, const char *name, const char *json, char *err, size_t n);
void rt_prog_free(RtProg *p);

/* "PROG: error: ..." on stderr; returns code.  rt_prog_usage adds the hint. */
int rt_prog_error(const RtProg *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int rt_prog_usage(const RtProg *p, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Matches argv[*i] against option `name` ("--input"): 0 no, 1 yes (with
 * *val set for options taking a value, from "--name=V" or the next
 * argument, which *i then skips), -1 the value is missing. */
int rt_prog_opt(int argc, char **argv, int *i, const char *name, int takes_value, const char **val);
/* A positive integer option value; 0 if malformed. */
int rt_prog_positive(const char *v, int64_t *out);

size_t rt_prog_bytes(const RtProgTensor *t);
RtTensor rt_prog_tensor(const RtProgTensor *t, void *data);
char *rt_prog_type(const RtProgTensor *t, char *buf, size_t n); /* "f32[64, 10]" */

/* The parameters: one 64-byte aligned block of params_bytes holding
 * kiln_params' copy (or the values each parameter's initializer draws,
 * when the program was built to fill them: params_stored 0), ext[0] = &counter, ext[slot] inside the block; the
 * prepared values in a block of their own, computed by kiln_prepare from
 * the parameters (rt_prog_prepare: after every change of the parameters;
 * rt_prog_params_init and rt_prog_params_load call it). */
typedef struct RtProgParams {
  unsigned char *block;
  unsigned char *prepared;
  void **ext;
  int64_t counter;
} RtProgParams;

int rt_prog_params_init(const RtProg *p, RtProgParams *s);
/* Recomputes the prepared values from the parameters' current values. */
void rt_prog_prepare(RtProgParams *s);
void rt_prog_params_free(RtProgParams *s);
/* Loads parameters from a safetensors file written by kiln init/train or
 * this program's train --save: every parameter the inference graph uses
 * (all = 0) or every one (all = 1: optimizer state too).  Sets *epoch and
 * *step from its metadata when not NULL.  RP_USER with a message. */
int rt_prog_params_load(const RtProg *p, RtProgParams *s, const char *path, int all, int *epoch,
                        int64_t *step);
/* Writes every parameter with kiln train's metadata, atomically. */
int rt_prog_params_save(const RtProg *p, const RtProgParams *s, const char *path, int epoch, int64_t step);

/* An arena for a step function: 64-byte aligned, zeroed; NULL if out of memory. */
char *rt_prog_arena(int64_t bytes);

int rt_prog_train_main(RtProg *p, int argc, char **argv);

#endif
