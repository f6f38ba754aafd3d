/*
 * rt_train.c: `./prog train`, the training loop of a program built with
 * `kiln build --train`: cli/cmd_train.c's loop on the compiled training
 * step, with the same data loading (rt_dataset_load), shuffled batches
 * (rt_batcher), learning-rate schedule (rt_schedule_lr), progress line,
 * test accuracy (or, without class scores, test loss) after each epoch, and
 * --save/--resume files (parameters,
 * optimizer state, metadata epoch and step) that kiln train reads and
 * writes too.
 *
 * Each step: gather a batch into the step's arena, write the learning rate
 * and the step number (from 1) into their inputs and the step counter
 * (from 0) into ext[0], run kiln_train_step, copy each update value over
 * its parameter.  Initial parameters are those built into the program
 * (kiln build --seed or --weights); --seed here seeds the shuffling.
 *
 * A CUDA program (kiln build --target cuda --train) compiles this file with
 * KILN_RT_CUDA: the same loop, with the steps on the device
 * (rt_cuda_main.c), where the parameters and optimizer state stay between
 * steps; they come back to the host after each epoch, before the test set
 * is scored and --save writes them.
 */
#include "rt_pool.h"
#include "rt_prog.h"
#ifdef KILN_RT_CUDA
#include "rt_cuda_prog.h"
#endif

#include <stdlib.h>
#include <string.h>

typedef struct Train {
  RtProg *p;
  const char *data, *save, *resume;
  int64_t epochs, limit, test_limit, threads, seed;
  int seed_given;
  double lr;
  RtProgParams params;
  char *arena, *infer_arena;
  RtDataset train, test;
  RtBatcher batcher;
  int have_train, have_test, have_batcher, first_epoch;
  int64_t global_step;
  int rc; /* a device's error while scoring the test set (CUDA programs) */
} Train;

static const char train_help[] =
    "usage: %s train --data DIR [--epochs N] [--lr X] [--seed N] [--limit N]\n"
    "              [--test-limit N] [--save FILE.safetensors] [--resume FILE.safetensors]\n"
    "              [--threads N]\n"
    "\n"
    "Trains model %s as its train section said when it was built (optimizer %s,\n"
    "%d epochs, batch %lld), with a progress line on stderr and test accuracy after\n"
    "each epoch, per label; a model whose first output is not class scores for\n"
    "its labels (one trained on its examples alone, or on f32 targets) reports\n"
    "the test set's mean loss instead.  Examples are floats, or integer ids\n"
    "(tokens) for a model that reads i32 ones.\n"
    "Starts from the parameters built into the program.\n"
    "\n"
    "  --data DIR               IDX files (train-images-idx3-ubyte[.gz], ... as in\n"
    "                           MNIST/Fashion-MNIST) or train_x.npy, train_y.npy,\n"
    "                           test_x.npy, test_y.npy (the labels' files only for\n"
    "                           a model with labels)\n"
    "  --epochs N, --lr X       override the train section\n"
    "  --seed N                 shuffling seed (default: the train section's)\n"
    "  --limit N                train on the first N examples only\n"
    "  --test-limit N           measure accuracy on the first N test examples only\n"
    "  --save FILE              write parameters and optimizer state after each epoch\n"
    "                           (the format kiln train --save writes)\n"
    "  --resume FILE            start from a file written by --save (here or by kiln train)\n"
#ifdef KILN_RT_CUDA
    "  --threads N              no effect (the steps run on the device)\n"
#else
    "  --threads N              worker threads, at most (default: one per core): the\n"
    "                           first steps are timed on 1, 2, 4, ... of them, the\n"
    "                           rest run on the fastest count, timed again now and\n"
    "                           then (the same results on any count)\n"
#endif
    "  -h, --help               this help\n";

static int parse(Train *t, int argc, char **argv, int *want_help) {
  const RtProg *p = t->p;
  static const char *const opts[] = {"--epochs", "--limit", "--test-limit", "--threads", "--seed",
                                     "--data",   "--save",  "--resume",     "--lr"};
  for (int i = 0; i < argc; i++) {
    int64_t *ints[] = {&t->epochs, &t->limit, &t->test_limit, &t->threads};
    const char **strs[] = {&t->data, &t->save, &t->resume};
    const char *v = NULL, *a = argv[i];
    int r = 0, k;
    for (k = 0; k < 9 && !(r = rt_prog_opt(argc, argv, &i, opts[k], 1, &v)); k++) {}
    if (r < 0) return rt_prog_usage(p, "train", "option %s needs a value", a);
    if (k < 4 && !rt_prog_positive(v, ints[k]))
      return rt_prog_usage(p, "train", "%s needs a positive integer, got '%s'", opts[k], v);
    if (k == 4 && (!*v || strspn(v, "0123456789") != strlen(v)))
      return rt_prog_usage(p, "train", "--seed needs a non-negative integer, got '%s'", v);
    if (k == 4) t->seed = (int64_t)strtoull(v, NULL, 10), t->seed_given = 1;
    if (k >= 5 && k < 8) *strs[k - 5] = v;
    if (k == 8) {
      char *end;
      t->lr = strtod(v, &end);
      if (!*v || *end || !(t->lr > 0))
        return rt_prog_usage(p, "train", "--lr needs a positive number, got '%s'", v);
    }
    if (k < 9) continue;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) return *want_help = 1, RP_OK;
    return rt_prog_usage(p, "train", "%s '%s'", a[0] == '-' ? "unknown option" : "unexpected argument", a);
  }
  return t->data ? RP_OK : rt_prog_usage(p, "train", "--data DIR is required");
}

/* Every value of d's labels (or, ids, examples) in 0 .. limit - 1. */
static int check_range(Train *t, const RtDataset *d, int ids, int64_t limit) {
  char err[512];
  if (rt_dataset_check_range(d, ids, limit, t->data, err, sizeof err) != RT_OK)
    return rt_prog_error(t->p, RP_USER, "%s", err);
  return RP_OK;
}

/* Examples and labels must fit the model: sizes per example, the ids'
 * range (its embedding tables' rows), the labels' (its class scores). */
static int check_data(Train *t, const RtDataset *d) {
  const RtProg *p = t->p;
  char tb[160];
  int64_t per = (int64_t)(rt_prog_bytes(&p->data) / 4) / p->data.dim[0];
  int64_t per_y = p->has_labels ? (int64_t)(rt_prog_bytes(&p->labels) / 4) / p->labels.dim[0] : 0;
  const RtProgTensor *out = p->accuracy >= 0 ? &p->outputs[p->accuracy] : NULL;
  int64_t classes = out ? out->dim[out->rank - 1] : INT32_MAX;
  int rc;
  if (rt_dataset_example_size(d) != per)
    return rt_prog_error(p, RP_USER,
                         "%s: an example has %lld values, but input %s (%s) needs %lld per example", t->data,
                         (long long)rt_dataset_example_size(d), p->data.name,
                         rt_prog_type(&p->data, tb, sizeof tb), (long long)per);
  if (per_y && rt_dataset_label_size(d) != per_y)
    return rt_prog_error(p, RP_USER,
                         "%s: an example has %lld label%s, but input %s (%s) needs %lld per example", t->data,
                         (long long)rt_dataset_label_size(d), rt_dataset_label_size(d) == 1 ? "" : "s",
                         p->labels.name, rt_prog_type(&p->labels, tb, sizeof tb), (long long)per_y);
  if (p->ids_below > 0 && (rc = check_range(t, d, 1, p->ids_below))) return rc;
  if (p->has_labels && p->labels.dtype == RT_I32 && (rc = check_range(t, d, 0, classes))) return rc;
  return RP_OK;
}

static int setup(Train *t) {
  RtProg *p = t->p;
  char err[512];
  int rc;
  if ((rc = rt_prog_params_init(p, &t->params))) return rc;
  if (t->resume && (rc = rt_prog_params_load(p, &t->params, t->resume, 1, &t->first_epoch, &t->global_step)))
    return rc;
  unsigned want = (!p->has_labels ? 0 : p->labels.dtype == RT_F32 ? RT_DATA_TARGETS : RT_DATA_LABELS) |
                  (p->data.dtype == RT_I32 ? RT_DATA_IDS : 0);
  if (rt_dataset_read(t->data, "train", want, &t->train, err, sizeof err) != RT_OK)
    return rt_prog_error(p, RP_USER, "%s", err);
  t->have_train = 1;
  if (rt_dataset_read(t->data, "test", want, &t->test, err, sizeof err) != RT_OK)
    return rt_prog_error(p, RP_USER, "%s", err);
  t->have_test = 1;
  if ((rc = check_data(t, &t->train)) || (rc = check_data(t, &t->test))) return rc;
  t->arena = rt_prog_arena(p->train_arena);
  t->infer_arena = rt_prog_arena(p->infer_arena);
  if (!t->arena || !t->infer_arena) return rt_prog_error(p, RP_USER, "out of memory for the arenas");
  uint64_t seed = t->seed_given ? (uint64_t)t->seed : p->seed;
  if (rt_batcher_init(&t->batcher, t->train.n, p->data.dim[0], seed, p->shuffle, t->limit) != RT_OK)
    return rt_prog_error(p, RP_USER, "out of memory shuffling %lld examples", (long long)t->train.n);
  t->have_batcher = 1;
  return RP_OK;
}

/* The inference step on the test batch in t->infer_arena. */
static int infer(Train *t) {
#ifdef KILN_RT_CUDA
  return rt_cuda_prog_infer(t->p, t->infer_arena, (void *const *)t->params.ext);
#else
  kiln_infer(t->infer_arena, (void *const *)t->params.ext);
  return RP_OK;
#endif
}

/* Fraction of the test set's labels (each example's row of them) that
 * its class scores rank highest; -1 if none. */
static double test_accuracy(Train *t) {
  const RtProg *p = t->p;
  if (p->accuracy < 0 || p->infer_data < 0 || p->inputs[p->infer_data].offset < 0) return -1;
  const RtProgTensor *in = &p->inputs[p->infer_data], *out = &p->outputs[p->accuracy];
  int64_t batch = in->dim[0], classes = out->dim[out->rank - 1], right = 0;
  int64_t per_y = rt_dataset_label_size(&t->test);
  int64_t n = t->test_limit && t->test_limit < t->test.n ? t->test_limit : t->test.n;
  void *x = t->infer_arena + in->offset;
  int32_t *labels = malloc(sizeof(int32_t) * (size_t)(batch * per_y));
  if (!labels) return -1;
  rt_prog_prepare(&t->params); /* the inference graph's prepared weights, from the trained ones */
  t->params.counter = 0;        /* inference runs at step 0 (randn's draw), as kiln train's */
  for (int64_t first = 0; first < n; first += batch) {
    int64_t count = n - first < batch ? n - first : batch;
    memset(x, 0, rt_prog_bytes(in)); /* a partial batch: zeros (valid ids) after it */
    rt_dataset_gather(&t->test, first, count, x, labels);
    if ((t->rc = infer(t))) break;
    const float *s = (const float *)(t->infer_arena + out->offset);
    for (int64_t r = 0; r < count * per_y; r++) {
      int64_t best = 0;
      for (int64_t k = 1; k < classes; k++) best = s[r * classes + k] > s[r * classes + best] ? k : best;
      right += best == labels[r];
    }
  }
  free(labels);
  return n && !t->rc ? (double)right / (double)(n * per_y) : -1;
}

/* A model without class scores (trained on its examples alone, or on f32
 * targets): the mean of its loss over the test set's full batches (as
 * kiln train's), computed by the inference step with the labels it reads;
 * -1 if none. */
static double test_loss(Train *t) {
  const RtProg *p = t->p;
  if (p->test_loss < 0 || p->infer_data < 0 || p->inputs[p->infer_data].offset < 0) return -1;
  const RtProgTensor *in = &p->inputs[p->infer_data];
  int64_t batch = in->dim[0], batches = 0;
  int64_t n = t->test_limit && t->test_limit < t->test.n ? t->test_limit : t->test.n;
  char *y = p->infer_labels >= 0 ? t->infer_arena + p->inputs[p->infer_labels].offset : NULL;
  double sum = 0;
  rt_prog_prepare(&t->params);
  t->params.counter = 0; /* step 0, as kiln train's inference */
  for (int64_t first = 0; first + batch <= n; first += batch, batches++) {
    rt_dataset_gather(&t->test, first, batch, t->infer_arena + in->offset, y);
    if ((t->rc = infer(t))) return -1;
    sum += *(const float *)(t->infer_arena + p->test_loss);
  }
  return batches ? sum / (double)batches : -1;
}

static int run_step(Train *t, int64_t per_epoch, int64_t total, double *loss) {
  const RtProg *p = t->p;
  if (p->lr >= 0)
    *(float *)(t->arena + p->lr) = (float)rt_schedule_lr(&p->sched, t->global_step, per_epoch, total);
  if (p->step >= 0) *(float *)(t->arena + p->step) = (float)(t->global_step + 1);
  t->params.counter = t->global_step;
#ifdef KILN_RT_CUDA
  int rc = rt_cuda_prog_train_step(p, t->arena, (void *const *)t->params.ext);
  if (rc) return rc;
#else
  kiln_train_step(t->arena, (void *const *)t->params.ext);
  for (int i = 0; i < p->n_updates; i++)
    memcpy(t->params.ext[p->updates[i].slot], t->arena + p->updates[i].value, (size_t)p->updates[i].bytes);
#endif
  t->global_step++;
  *loss = p->loss >= 0 ? *(float *)(t->arena + p->loss) : 0;
  return RP_OK;
}

static int loop(Train *t) {
  RtProg *p = t->p;
  int64_t batch = p->data.dim[0], steps = rt_batcher_steps(&t->batcher), total = steps * p->epochs;
  if (steps == 0)
    return rt_prog_error(p, RP_USER, "%s: fewer training examples than one batch of %lld", t->data,
                         (long long)batch);
  if (t->first_epoch >= p->epochs)
    fprintf(stderr, "%s: %s already holds %d epochs; nothing to do\n", p->name, t->resume, t->first_epoch);
  void *x = t->arena + p->data.offset;
  int32_t *y = p->has_labels ? (int32_t *)(t->arena + p->labels.offset) : NULL;
  RtTune tune; /* the steps pick the thread count (tune.c) */
  rt_tune_begin(&tune);
  for (int epoch = t->first_epoch; epoch < p->epochs; epoch++) {
    RtProgress pr;
    rt_progress_init(&pr, stderr, epoch + 1, p->epochs, steps, batch);
    rt_batcher_epoch(&t->batcher, epoch);
    for (int64_t s = 0; s < steps; s++) {
      rt_batcher_gather(&t->batcher, &t->train, s, x, y);
      rt_tune_next(&tune); /* after the choice, re-checked now and then */
      double t0 = rt_now(), loss;
      int rc = run_step(t, steps, total, &loss);
      if (rc) return rc;
      rt_tune_took(&tune, rt_now() - t0);
      rt_progress_step(&pr, s, loss);
    }
#ifdef KILN_RT_CUDA
    int rc = rt_cuda_prog_download_params(p, (void *const *)t->params.ext);
    if (rc) return rc;
#endif
    double acc = test_accuracy(t), loss = acc < 0 && !t->rc ? test_loss(t) : -1;
    if (t->rc) return t->rc;
    char extra[64] = "";
    if (acc >= 0) snprintf(extra, sizeof extra, "test accuracy %.2f%%", 100 * acc);
    if (loss >= 0) snprintf(extra, sizeof extra, "test loss %.4f", loss);
    rt_progress_end(&pr, acc >= 0 || loss >= 0 ? extra : NULL);
    int saved = t->save ? rt_prog_params_save(p, &t->params, t->save, epoch + 1, t->global_step) : RP_OK;
    if (saved) return saved;
  }
  return RP_OK;
}

int rt_prog_train_main(RtProg *p, int argc, char **argv) {
  Train t = {.p = p};
  int want_help = 0, rc;
#ifdef KILN_RT_CUDA
  int built = p->has_train;
#else
  int built = p->has_train && kiln_train_step;
#endif
  if (!built)
    return rt_prog_usage(p, NULL,
                         "this program was built without training (kiln build --train makes one with a "
                         "train command)");
  rc = parse(&t, argc, argv, &want_help);
  if (want_help) {
    printf(train_help, p->name, p->model, p->optimizer, p->epochs, (long long)p->data.dim[0]);
#ifdef KILN_RT_CUDA
    rt_cuda_prog_help(p);
#endif
    return RP_OK;
  }
  if (rc) return rc;
  if (t.epochs) p->epochs = (int)t.epochs;
  if (t.lr > 0) p->sched.lr = t.lr;
  if (p->data.offset < 0 || (p->has_labels && p->labels.offset < 0))
    return rt_prog_error(p, RP_USER, "the training step does not read its examples or labels");
  rt_set_threads((int)t.threads);
  rc = setup(&t);
#ifdef KILN_RT_CUDA
  if (rc == RP_OK) rc = rt_cuda_prog_open(p);
  if (rc == RP_OK && !rt_cuda_prog_can_train())
    rc = rt_prog_error(p, RP_USER, "internal error: the program's CUDA table has no training step");
#endif
  if (rc == RP_OK) rc = loop(&t);
#ifdef KILN_RT_CUDA
  rt_cuda_prog_close();
#endif
  rt_prog_params_free(&t.params);
  free(t.arena);
  free(t.infer_arena);
  if (t.have_train) rt_dataset_free(&t.train);
  if (t.have_test) rt_dataset_free(&t.test);
  if (t.have_batcher) rt_batcher_free(&t.batcher);
  return rc;
}
