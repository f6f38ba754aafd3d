/*
 * rt_main.c: the main of every program `kiln build` makes (linked from
 * libkiln_rt_main.a with the model's object file): inference and --help
 * here, the `train` command in rt_train.c.
 *
 *   ./prog --input x=a.npy [--output probs=out.npy] [--weights w.safetensors] [--threads N]
 *
 * It behaves like `kiln run` on the compiled graph: every input file is
 * read and checked (dtype and shape, against the manifest) before anything
 * runs; without --output it prints a summary of each output; outputs are
 * written only after the whole computation, each atomically, and a failure
 * removes those already written, so no partial output is left behind.
 * Exit status: 0 success, 1 bad data or files, 2 bad usage.
 *
 * Batches: a program is compiled for one batch size B, but when the
 * manifest says the graph is row-separable (codegen/aot_batch.c) the batch
 * inputs may hold any number of rows: they run B at a time, the last chunk
 * zero-padded, and the outputs get exactly the rows given.
 *
 * CUDA programs (kiln build --target cuda): this file compiled with
 * KILN_RT_CUDA into libkiln_rt_cuda_main.a, the same main with the step on
 * CUDA device 0 (rt_cuda_main.c) instead of kiln_infer: inputs are checked
 * and parameters drawn or loaded on the host as above, then the device is
 * opened (exit 1 with "no CUDA device found (REASON)" without one), each
 * chunk's inputs go from the host arena to the device's and the outputs
 * come back to it.  A --train build's `train` command (rt_train.c) runs its
 * steps there too.
 */
#include "rt_pool.h"
#include "rt_prog.h"
#ifdef KILN_RT_CUDA
#include "rt_cuda_prog.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Pair {
  const char *name, *path;
  int index; /* into the manifest's inputs or outputs */
} Pair;

typedef struct Infer {
  RtProg *p;
  Pair in[64], out[64];
  int n_in, n_out;
  const char *weights;
  int64_t threads;
  int64_t step;       /* --step: the step of randn's draws */
  RtTensor files[64]; /* the --input files, in order */
  int64_t rows;       /* rows to compute (the batch, or the rows given) */
  RtProgParams params;
  char *arena;
  void *result[64]; /* per output index: rows of results */
} Infer;

#ifdef KILN_RT_CUDA
#define THREADS_HELP "  --threads N              no effect (the model runs on the device)\n"
#else
#define THREADS_HELP "  --threads N              worker threads (default: one per core)\n"
#endif

static void help(const RtProg *p) {
  char tb[160];
  printf("usage: %s [--input NAME=FILE.npy]... [--output NAME=FILE.npy]...\n"
         "       %*s [--weights FILE.safetensors] [--threads N] [--step N]\n",
         p->name, (int)strlen(p->name), "");
  if (p->has_train)
    printf("       %s train --data DIR [options]     (see %s train --help)\n", p->name, p->name);
#ifdef KILN_RT_CUDA
  printf("\nModel %s, compiled by kiln build --target cuda.  Runs the model once on\n"
         "CUDA device 0 on inputs from .npy files; without --output, prints a summary\n"
         "of each output.\n\ninputs:\n",
         p->model);
#else
  printf("\nModel %s, compiled by kiln build.  Runs the model once on inputs from .npy\n"
         "files; without --output, prints a summary of each output.\n\ninputs:\n",
         p->model);
#endif
  for (int i = 0; i < p->n_inputs; i++) {
    const RtProgTensor *t = &p->inputs[i];
    printf("  %-16s %-24s%s\n", t->name, rt_prog_type(t, tb, sizeof tb),
           t->offset < 0             ? " (not needed)"
           : i == p->infer_labels    ? " (not needed: only train's test loss reads it)"
           : t->batch                ? " (any number of rows)"
                                     : "");
  }
  printf("outputs:\n");
  for (int i = 0; i < p->n_outputs; i++)
    printf("  %-16s %s\n", p->outputs[i].name, rt_prog_type(&p->outputs[i], tb, sizeof tb));
  if (p->batch)
    printf("\nInputs marked \"any number of rows\" may hold any number of rows in their\n"
           "first axis (%s = %lld at build time): they run %lld at a time.\n",
           p->batch_name, (long long)p->batch, (long long)p->batch);
#ifdef KILN_RT_CUDA
  rt_cuda_prog_help(p);
#endif
  printf("\noptions:\n"
         "  --input NAME=FILE.npy    an input (f32 or i32; float64 and int64 files are\n"
         "                           converted)\n"
         "  --output NAME=FILE.npy   write an output (atomically)\n"
         "  --weights FILE           parameters from a safetensors file (kiln init, kiln\n"
         "                           train, %s train --save); default: the built-in ones\n"
         THREADS_HELP
         "  --step N                 draw randn's samples as training step N does\n"
         "                           (default 0, as kiln run's)\n"
         "  -h, --help               this help\n"
         "Exit status: 0 success, 1 an error in the data or files, 2 bad usage.\n",
         p->name);
}

/* NAME=PATH into pairs[], checked against the manifest's tensors. */
static int add_pair(Infer *x, const char *text, int input) {
  const RtProg *p = x->p;
  const char *eq = strchr(text, '='), *what = input ? "--input" : "--output";
  Pair *pairs = input ? x->in : x->out;
  int *n = input ? &x->n_in : &x->n_out;
  if (!eq || eq == text || !eq[1])
    return rt_prog_usage(p, NULL, "%s needs NAME=FILE.npy, got '%s'", what, text);
  if (*n >= 64) return rt_prog_usage(p, NULL, "too many %s options", what);
  Pair *q = &pairs[(*n)++];
  q->name = text;
  q->path = eq + 1;
  for (int i = 0; i < *n - 1; i++)
    if (strncmp(pairs[i].name, text, (size_t)(eq - text) + 1) == 0)
      return rt_prog_usage(p, NULL, "%s %.*s is given twice", what, (int)(eq - text), text);
  const RtProgTensor *ts = input ? p->inputs : p->outputs;
  int nt = input ? p->n_inputs : p->n_outputs;
  for (q->index = 0; q->index < nt; q->index++)
    if (strlen(ts[q->index].name) == (size_t)(eq - text) &&
        !strncmp(ts[q->index].name, text, (size_t)(eq - text)))
      return RP_OK;
  char list[512] = "";
  for (int i = 0; i < nt; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", ts[i].name);
  return rt_prog_error(p, RP_USER, "%s %.*s: model %s has no %s named '%.*s' (its %ss: %s)", what,
                       (int)(eq - text), text, p->model, input ? "input" : "output", (int)(eq - text), text,
                       input ? "input" : "output", nt ? list : "none");
}

static int parse(Infer *x, int argc, char **argv, int *want_help) {
  const RtProg *p = x->p;
  for (int i = 0; i < argc; i++) {
    const char *v = NULL;
    int r, rc = RP_OK;
    if ((r = rt_prog_opt(argc, argv, &i, "--input", 1, &v)) > 0)
      rc = add_pair(x, v, 1);
    else if (!r && (r = rt_prog_opt(argc, argv, &i, "--output", 1, &v)) > 0)
      rc = add_pair(x, v, 0);
    else if (!r && (r = rt_prog_opt(argc, argv, &i, "--weights", 1, &v)) > 0)
      x->weights = v;
    else if (!r && (r = rt_prog_opt(argc, argv, &i, "--threads", 1, &v)) > 0) {
      if (!rt_prog_positive(v, &x->threads))
        return rt_prog_usage(p, NULL, "--threads needs a positive integer, got '%s'", v);
    } else if (!r && (r = rt_prog_opt(argc, argv, &i, "--step", 1, &v)) > 0) {
      char *end;
      long long s = strtoll(v, &end, 10);
      if (!*v || *end || s < 0)
        return rt_prog_usage(p, NULL, "--step needs a non-negative integer, got '%s'", v);
      x->step = s;
    } else if (!r && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
      *want_help = 1;
      return RP_OK;
    } else if (r < 0) {
      return rt_prog_usage(p, NULL, "option %s needs a value", argv[i]);
    } else if (argv[i][0] == '-') {
      return rt_prog_usage(p, NULL, "unknown option '%s'", argv[i]);
    } else {
      return rt_prog_usage(p, NULL, "unexpected argument '%s'%s", argv[i],
                           p->has_train ? " (commands: train)" : "");
    }
    if (rc) return rc;
  }
  return RP_OK;
}

/* Reads and checks every --input file; sets x->rows. */
static int load_inputs(Infer *x) {
  const RtProg *p = x->p;
  char err[512], a[160], b[160];
  const char *rows_from = NULL;
  x->rows = p->batch;
  for (int i = 0; i < x->n_in; i++) {
    const RtProgTensor *t = &p->inputs[x->in[i].index];
    RtTensor *f = &x->files[i];
    if (rt_npy_read(x->in[i].path, f, err, sizeof err) != RT_OK) return rt_prog_error(p, RP_USER, "%s", err);
    int ok =
        f->dtype == t->dtype && f->rank == t->rank && (t->rank == 0 || t->batch || f->dim[0] == t->dim[0]);
    for (int k = 1; ok && k < t->rank; k++) ok = f->dim[k] == t->dim[k];
    if (!ok && t->batch)
      return rt_prog_error(p, RP_USER,
                           "%s: input %s must be %s with any number of rows (the first axis), but the "
                           "file holds %s",
                           x->in[i].path, t->name, rt_prog_type(t, a, sizeof a),
                           rt_tensor_type_str(f, b, sizeof b));
    if (!ok)
      return rt_prog_error(p, RP_USER, "%s: input %s must be %s, but the file holds %s", x->in[i].path,
                           t->name, rt_prog_type(t, a, sizeof a), rt_tensor_type_str(f, b, sizeof b));
    if (t->batch && rows_from && f->dim[0] != x->rows)
      return rt_prog_error(p, RP_USER, "%s: input %s has %lld rows, but %s has %lld", x->in[i].path, t->name,
                           (long long)f->dim[0], rows_from, (long long)x->rows);
    if (t->batch) x->rows = f->dim[0], rows_from = x->in[i].path;
  }
  for (int i = 0; i < p->n_inputs; i++) {
    int given = 0;
    for (int k = 0; k < x->n_in; k++) given |= x->in[k].index == i;
    if (!given && p->inputs[i].offset >= 0 && i != p->infer_labels) /* the test loss's: zeros */
      return rt_prog_error(p, RP_USER, "input '%s' (%s) is needed: give --input %s=FILE.npy",
                           p->inputs[i].name, rt_prog_type(&p->inputs[i], a, sizeof a), p->inputs[i].name);
  }
  return RP_OK;
}

/* Runs the graph over all rows, chunk by chunk, into x->result. */
static int compute(Infer *x) {
  const RtProg *p = x->p;
  int64_t chunk = p->batch ? p->batch : 1, n_chunks = p->batch ? (x->rows + chunk - 1) / chunk : 1;
  if (!(x->arena = rt_prog_arena(p->infer_arena)))
    return rt_prog_error(p, RP_USER, "out of memory for the arena");
  for (int o = 0; o < p->n_outputs; o++) {
    size_t row = rt_prog_bytes(&p->outputs[o]) / (size_t)chunk;
    if (!(x->result[o] = malloc(p->batch ? row * (size_t)x->rows + 1 : rt_prog_bytes(&p->outputs[o]) + 1)))
      return rt_prog_error(p, RP_USER, "out of memory for output %s", p->outputs[o].name);
  }
  for (int64_t c = 0; c < n_chunks; c++) {
    int64_t first = c * chunk, count = x->rows - first < chunk ? x->rows - first : chunk;
    if (p->infer_labels >= 0) /* not given: zeros (valid class ids) for the unreported test loss */
      memset(x->arena + p->inputs[p->infer_labels].offset, 0, rt_prog_bytes(&p->inputs[p->infer_labels]));
    for (int i = 0; i < x->n_in; i++) {
      const RtProgTensor *t = &p->inputs[x->in[i].index];
      char *dst = x->arena + t->offset;
      size_t all = rt_prog_bytes(t), row = t->batch ? all / (size_t)chunk : 0;
      if (t->offset < 0) continue;
      if (!p->batch || !t->batch) {
        memcpy(dst, x->files[i].data, all);
        continue;
      }
      memcpy(dst, (char *)x->files[i].data + row * (size_t)first, row * (size_t)count);
      memset(dst + row * (size_t)count, 0, row * (size_t)(chunk - count));
    }
#ifdef KILN_RT_CUDA
    int rc = rt_cuda_prog_infer(p, x->arena, (void *const *)x->params.ext);
    if (rc != RP_OK) return rc;
#else
    kiln_infer(x->arena, (void *const *)x->params.ext);
#endif
    for (int o = 0; o < p->n_outputs; o++) {
      size_t all = rt_prog_bytes(&p->outputs[o]), row = p->batch ? all / (size_t)chunk : 0;
      if (p->batch)
        memcpy((char *)x->result[o] + row * (size_t)first, x->arena + p->outputs[o].offset,
               row * (size_t)count);
      else
        memcpy(x->result[o], x->arena + p->outputs[o].offset, all);
    }
  }
  return RP_OK;
}

static RtTensor result(const Infer *x, int o) {
  RtTensor t = rt_prog_tensor(&x->p->outputs[o], x->result[o]);
  if (x->p->batch) t.dim[0] = x->rows;
  return t;
}

static int write_outputs(Infer *x) {
  const RtProg *p = x->p;
  char err[512], tb[160];
  for (int o = 0; !x->n_out && o < p->n_outputs; o++) {
    RtTensor t = result(x, o);
    rt_tensor_summary(stdout, p->outputs[o].name, &t);
  }
  for (int i = 0; i < x->n_out; i++) {
    RtTensor t = result(x, x->out[i].index);
    if (rt_npy_write(x->out[i].path, &t, err, sizeof err) != RT_OK) {
      for (int k = 0; k < i; k++) remove(x->out[k].path); /* all or nothing */
      return rt_prog_error(p, RP_USER, "%s", err);
    }
  }
  for (int i = 0; i < x->n_out; i++) {
    RtTensor t = result(x, x->out[i].index);
    fprintf(stderr, "wrote %s (%s) to %s\n", p->outputs[x->out[i].index].name,
            rt_tensor_type_str(&t, tb, sizeof tb), x->out[i].path);
  }
  return RP_OK;
}

static int infer_main(RtProg *p, int argc, char **argv) {
  Infer *x = calloc(1, sizeof *x);
  int want_help = 0, rc;
  if (!x) return rt_prog_error(p, RP_USER, "out of memory");
  x->p = p;
  rc = p->n_outputs > 64 ? rt_prog_error(p, RP_USER, "more than 64 outputs")
                         : parse(x, argc, argv, &want_help);
  if (rc == RP_OK && want_help) help(p);
  if (rc == RP_OK && !want_help) {
    rt_set_threads((int)x->threads);
    rc = load_inputs(x);
    if (rc == RP_OK) rc = rt_prog_params_init(p, &x->params);
    if (rc == RP_OK && x->weights) rc = rt_prog_params_load(p, &x->params, x->weights, 0, NULL, NULL);
    x->params.counter = x->step;
#ifdef KILN_RT_CUDA
    if (rc == RP_OK) rc = rt_cuda_prog_open(p);
#endif
    if (rc == RP_OK) rc = compute(x);
    if (rc == RP_OK) rc = write_outputs(x);
  }
  for (int i = 0; i < x->n_in; i++) free(x->files[i].data);
  for (int o = 0; o < 64; o++) free(x->result[o]);
  free(x->arena);
  rt_prog_params_free(&x->params);
  free(x);
#ifdef KILN_RT_CUDA
  rt_cuda_prog_close();
#endif
  return rc;
}

int main(int argc, char **argv) {
  RtProg p;
  char err[512];
  const char *name = argc > 0 && argv[0][0] ? argv[0] : "program", *slash = strrchr(name, '/');
  int rc;
  if (slash && slash[1]) name = slash + 1;
  if (rt_prog_read(&p, name, kiln_manifest, err, sizeof err) != RP_OK) {
    fprintf(stderr, "%s: internal error: %s\n", name, err);
    rt_prog_free(&p);
    return RP_USER;
  }
  if (argc > 1 && strcmp(argv[1], "train") == 0)
    rc = rt_prog_train_main(&p, argc - 2, argv + 2);
  else
    rc = infer_main(&p, argc - 1, argv + 1);
  rt_prog_free(&p);
  rt_pool_shutdown();
  return rc;
}
