/*
 * cmd_train.c: `kiln train`, the training loop over the one-graph training
 * step, with the reference evaluator.
 *
 * Two graphs are built from the model: the training step (training-mode
 * forward, backward, optimizer update; passes/train_step.c) and the
 * inference graph for test accuracy.  They share parameter buffers by name,
 * running statistics included; optimizer state exists only in the step.
 * Each step: gather a shuffled batch, set train.lr from the schedule and
 * train.step, evaluate the loss and the update values, write the updates
 * back.  After each epoch: test accuracy, and --save writes parameters and
 * optimizer state (atomically) with the epoch reached, which --resume reads.
 *
 * The model's one or two inputs are its examples (f32, or i32 token ids)
 * and labels (i32 classes, or f32 targets such as masks): cli_data_inputs
 * says which is which.  Its first output, when shaped [N, ..., classes]
 * over i32 labels [N, ...], gives the class scores for test accuracy (per
 * label: a language model's next tokens).  A model with no labels (an
 * autoencoder: its loss compares the examples with its reconstruction)
 * trains on the examples alone; it, and a model whose first output is not
 * such scores, is scored on the test set by the mean of the loss (the
 * train section's `minimize` value) over its full batches, computed by the
 * inference graph.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "passes.h"
#include "rt_data.h"

static const char train_help[] =
    "usage: kiln train MODEL.kiln --data DIR [--reference] [--epochs N] [--batch N]\n"
    "                  [--lr X] [--seed N] [--limit N] [--test-limit N]\n"
    "                  [--save FILE.safetensors] [--resume FILE.safetensors]\n"
    "                  [--fuse=LIST] [-D NAME=VALUE]... [--model NAME]\n"
    "                  [--target cpu|cuda] [--keep-denormals]\n"
    "\n"
    "Trains the model as its `train` section says (minimize, optimizer, schedule,\n"
    "epochs, ...), with a progress line on stderr, and reports test accuracy after\n"
    "each epoch.  Options given here override the train section.  The model's one\n"
    "or two inputs are its examples (f32, or i32 token ids) and labels (i32 classes,\n"
    "a class per example or a row of them such as a language model's next tokens,\n"
    "or f32 targets such as masks); of an f32 and an i32 input the f32 one is the\n"
    "examples, of two of one type the first declared.  A model without labels (an\n"
    "autoencoder) trains on the examples alone; it, and a model whose first output\n"
    "is not class scores for its labels, reports the test set's mean loss instead.\n"
    "\n"
    "  --data DIR               IDX files (train-images-idx3-ubyte[.gz], ... as in\n"
    "                           MNIST/Fashion-MNIST) or train_x.npy, train_y.npy,\n"
    "                           test_x.npy, test_y.npy (the labels' files only for\n"
    "                           a model with labels; integer examples for ids)\n"
    "  --reference              run the step with the reference evaluator instead of\n"
    "                           compiled code\n"
    "  --epochs N, --lr X       override the train section\n"
    "  --batch N                the batch size (the model constant that sizes the\n"
    "                           first axis of the data input)\n"
    "  --seed N                 initialization and shuffling seed (default: the\n"
    "                           train section's, else 0)\n"
    "  --limit N                train on the first N examples only\n"
    "  --test-limit N           measure accuracy on the first N test examples only\n"
    "  --save FILE              write parameters and optimizer state after each epoch\n"
    "  --resume FILE            start from a file written by --save\n"
    "  --no-plan                with --reference: one buffer per value instead of the\n"
    "                           planned arena (compiled code always plans)\n";

/* The rest of train's help (one literal would pass C's 4095 characters). */
static const char train_help_end[] =
    CLI_FUSE_HELP
    "                           (compiled code; see kiln show --stage fused --train)\n"
    "  --no-inplace, --no-share, --schedule=default|min-memory\n"
    "                           memory-planning switches (see kiln show --stage plan)\n"
    CLI_DENORMALS_HELP
    "  --threads N              worker threads of compiled code, at most (default: one\n"
    "                           per core): the first steps are timed on 1, 2, 4, ... of\n"
    "                           them, the rest run on the fastest count, timed again\n"
    "                           now and then (the same results on any count)\n"
    "  -v, --verbose            print the memory plans' totals, and that count (again\n"
    "                           after an epoch where a re-check changed it)\n"
    "  --verify-plan            check the memory plans independently first\n"
    "  -D, --define NAME=VALUE  override a model constant\n"
    "  --model NAME             which model of the file (default: the first)\n" CLI_TARGET_HELP;

typedef struct Trainer {
  Cli *c;
  Graph *g, *ge;  /* the training step and the inference graph */
  TrainStep ts;
  TrainSpec spec; /* the train section with the command line applied */
  Node *x, *y;    /* the step's data and label inputs (y NULL: no labels) */
  Node *ex, *ey, *eout; /* the inference graph's data and label inputs, and */
  bool scores;          /* eout: class scores (true) or the loss */
  Exec step, eval; /* the training step and the inference graph's engines */
  bool step_ready, eval_ready;
  RtDataset train, test;
  RtBatcher batcher;
  bool have_train, have_test, have_batcher;
  void **buf;     /* per training-graph node: parameter buffers we own */
  int first_epoch;
  int64_t global_step;
} Trainer;

/* --- setting up ------------------------------------------------------------ */

/* A parameter's buffer: ours, shared with the inference graph. */
static void *alloc_buf(Trainer *t, Node *n) {
  void *p = calloc(1, (size_t)node_bytes(n) + 1);
  if (!p)
    error_plain(&t->c->diag, "out of memory for %s", n->name);
  t->buf[n->id] = p;
  exec_bind_param(&t->step, n, p);
  return p;
}

/* The examples and the labels (*y NULL: trained without labels); the
 * trainer's own inputs are excluded. */
static void find_inputs(Trainer *t, Graph *g, Node **x, Node **y) {
  Node *bad;
  const Node *at;
  if (cli_data_inputs(g, x, y, &bad)) {
    const char *why = cli_data_shapes(t->c, *x, *y, &at);
    if (why)
      error_at(&t->c->diag, at->loc, "kiln train: %s", why);
    return;
  }
  if (bad)
    error_at(&t->c->diag, bad->loc, "kiln train needs " CLI_DATA_INPUTS "; model %s has "
             "another %s input '%s'", g->name, dtype_name(bad->dtype), bad->name);
  /* at the train section, which asks for what this trainer cannot do */
  error_at(&t->c->diag, g->has_train ? g->train_loc : (Loc){0}, "kiln train needs "
           CLI_DATA_INPUTS "; model %s has no input", g->name);
}

/* --batch B: set the constant that sizes the examples' first axis. */
static void apply_batch(Trainer *t) {
  Graph *g = cli_build(t->c, false);
  Node *x, *y;
  find_inputs(t, g, &x, &y);
  cli_define_batch(t->c, g, x);
}

static void apply_overrides(Trainer *t) {
  Cli *c = t->c;
  t->spec = t->g->spec;
  if (c->epochs)
    t->spec.epochs = (int)c->epochs;
  if (c->lr > 0)
    t->spec.lr = c->lr;
  if (c->seed_given)
    t->spec.seed = c->seed;
  if (!c->data)
    c->data = t->spec.data;
  if (!c->data)
    error_plain(&c->diag, "no data: give --data DIR (or `data \"DIR\"` in the train section)");
}

static void build_graphs(Trainer *t) {
  Cli *c = t->c;
  if (c->batch)
    apply_batch(t);
  t->g = cli_build(c, true);
  if (!t->g->has_train)
    error_plain(&c->diag, "model %s has no train section (train %s { minimize LOSS ... })",
                t->g->name, t->g->name);
  build_train_step(t->g, &c->diag, &t->ts);
  cli_train_passes(c, t->g);
  t->ge = cli_build(c, false);
  find_inputs(t, t->g, &t->x, &t->y);
  find_inputs(t, t->ge, &t->ex, &t->ey);
  t->eout = t->ge->n_outputs ? t->ge->outputs[0].node : NULL;
  t->scores = cli_scores_for(t->eout, t->ey);
  if (!t->scores) /* no labels, or no class scores for them: the test set's loss */
    t->eout = graph_find_value(t->ge, t->ge->spec.minimize);
  char err[512];
  if (!graph_verify(t->g, err, sizeof err) || !graph_verify(t->ge, err, sizeof err))
    die("graph verification failed: %s", err);
  apply_overrides(t);
}

/* Parameters: fresh (seeded by name) or from --resume; the inference
 * graph's parameters point at the same buffers. */
static void bind_params(Trainer *t) {
  Cli *c = t->c;
  RtTensorFile tf = {0};
  char err[512], a[160], b[160];
  if (c->resume && rt_safetensors_read(c->resume, &tf, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  for (int i = 0; i < t->g->n_nodes; i++) {
    Node *p = t->g->nodes[i];
    if (p->op != OP_PARAM)
      continue;
    void *data = alloc_buf(t, p);
    if (!c->resume) {
      param_init_fill(p, t->spec.seed, data);
      continue;
    }
    const RtNamedTensor *s = rt_tensor_file_find(&tf, p->name);
    bool ok = s && s->t.dtype == p->dtype && s->t.rank == p->shape.rank &&
              rt_numel(&s->t) == shape_numel(&p->shape);
    for (int k = 0; ok && k < p->shape.rank; k++)
      ok = s->t.dim[k] == p->shape.dim[k];
    if (!ok) {
      if (s)
        rt_tensor_type_str(&s->t, b, sizeof b);
      snprintf(err, sizeof err, "%s: %s: expected %s, %s%s", c->resume, p->name,
               node_type_str(p, a, sizeof a), s ? "got " : "missing (saved by another model "
               "or optimizer?)", s ? b : "");
      rt_tensor_file_free(&tf);
      error_plain(&c->diag, "%s", err);
    }
    memcpy(data, s->t.data, (size_t)node_bytes(p));
  }
  for (int i = 0; i < tf.n_meta; i++)
    if (strcmp(tf.meta_keys[i], "epoch") == 0)
      t->first_epoch = atoi(tf.meta_values[i]);
    else if (strcmp(tf.meta_keys[i], "step") == 0)
      t->global_step = atoll(tf.meta_values[i]);
  rt_tensor_file_free(&tf);
  for (int i = 0; t->eval_ready && i < t->ge->n_nodes; i++) {
    Node *p = t->ge->nodes[i], *q = p->op == OP_PARAM ? graph_find(t->g, p->name) : NULL;
    if (q && q->op == OP_PARAM)
      exec_bind_param(&t->eval, p, t->buf[q->id]);
    else if (p->op == OP_PARAM)
      die("inference parameter %s has no training twin", p->name);
  }
}

static void load_data(Trainer *t) {
  Cli *c = t->c;
  char err[512];
  unsigned want = (!t->y ? 0 : t->y->dtype == DT_F32 ? RT_DATA_TARGETS : RT_DATA_LABELS) |
                  (t->x->dtype == DT_I32 ? RT_DATA_IDS : 0);
  if (rt_dataset_read(c->data, "train", want, &t->train, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  t->have_train = true;
  if (rt_dataset_read(c->data, "test", want, &t->test, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
  t->have_test = true;
  int64_t per = shape_numel(&t->x->shape) / t->x->shape.dim[0];
  int64_t have = t->train.n ? rt_numel(&t->train.x) / t->train.n : 0;
  char tb[160];
  if (per != have)
    error_plain(&c->diag, "%s: an example has %lld values, but input %s (%s) needs %lld per "
                "example", c->data, (long long)have, t->x->name,
                node_type_str(t->x, tb, sizeof tb), (long long)per);
  int64_t per_y = t->y ? shape_numel(&t->y->shape) / t->y->shape.dim[0] : 0;
  for (int k = 0; k < 2 && per_y; k++) {
    const RtDataset *d = k ? &t->test : &t->train;
    if (rt_dataset_label_size(d) != per_y)
      error_plain(&c->diag, "%s: an example has %lld label%s (%s split), but input %s (%s) "
                  "needs %lld per example", c->data, (long long)rt_dataset_label_size(d),
                  rt_dataset_label_size(d) == 1 ? "" : "s", k ? "test" : "train", t->y->name,
                  node_type_str(t->y, tb, sizeof tb),
                  (long long)per_y);
  }
}

/* --- the loop ------------------------------------------------------------- */

static double run_step(Trainer *t, int64_t steps_per_epoch, int64_t total) {
  float *lr = exec_input(&t->step, t->ts.lr), *st = exec_input(&t->step, t->ts.step);
  *lr = (float)train_lr(&t->spec, t->global_step, steps_per_epoch, total);
  *st = (float)(t->global_step + 1);
  exec_run(&t->step, t->global_step);
  exec_apply_updates(&t->step);
  t->global_step++;
  return ((float *)exec_value(&t->step, t->ts.loss))[0];
}

/* The mean of the loss over the test set's full batches (a partial one,
 * padded, would change the mean); -1 when there is none. */
static double test_loss(Trainer *t) {
  if (!t->eout || shape_numel(&t->eout->shape) != 1)
    return -1;
  int64_t batch = t->ex->shape.dim[0];
  int64_t n = t->c->test_limit && t->c->test_limit < t->test.n ? t->c->test_limit : t->test.n;
  void *x = exec_input(&t->eval, t->ex);
  int32_t *y = t->ey ? exec_input(&t->eval, t->ey) : NULL; /* NULL: the loss reads no labels */
  double sum = 0;
  int64_t batches = 0;
  for (int64_t first = 0; first + batch <= n; first += batch, batches++) {
    rt_dataset_gather(&t->test, first, batch, x, y);
    exec_run(&t->eval, 0);
    sum += ((const float *)exec_value(&t->eval, t->eout))[0];
  }
  return batches ? sum / (double)batches : -1;
}

/* Fraction of the test set's labels (each example's row of them) that its
 * class scores rank highest. */
static double test_accuracy(Trainer *t) {
  int64_t batch = t->ex->shape.dim[0], per = shape_numel(&t->ex->shape) / batch;
  int64_t per_y = shape_numel(&t->ey->shape) / batch;
  int64_t n = t->c->test_limit && t->c->test_limit < t->test.n ? t->c->test_limit : t->test.n;
  int64_t classes = t->eout->shape.dim[t->eout->shape.rank - 1], right = 0;
  void *x = exec_input(&t->eval, t->ex);
  int32_t *labels = malloc(sizeof(int32_t) * (size_t)(batch * per_y));
  if (!labels)
    error_plain(&t->c->diag, "out of memory for %lld labels", (long long)(batch * per_y));
  for (int64_t first = 0; first < n; first += batch) {
    int64_t count = n - first < batch ? n - first : batch;
    memset(x, 0, 4 * (size_t)(batch * per)); /* a partial batch: zeros (valid ids) after it */
    rt_dataset_gather(&t->test, first, count, x, labels);
    exec_run(&t->eval, 0);
    const float *s = exec_value(&t->eval, t->eout);
    for (int64_t r = 0; r < count * per_y; r++) {
      int64_t best = 0;
      for (int64_t k = 1; k < classes; k++)
        best = s[r * classes + k] > s[r * classes + best] ? k : best;
      right += best == labels[r];
    }
  }
  free(labels);
  return n ? (double)right / (double)(n * per_y) : -1;
}

static void save(Trainer *t, int epoch) {
  Cli *c = t->c;
  int n = 0;
  RtNamedTensor *items = arena_alloc(c->arena, sizeof(RtNamedTensor) * (size_t)t->g->n_nodes);
  for (int i = 0; i < t->g->n_nodes; i++) {
    Node *p = t->g->nodes[i];
    if (p->op != OP_PARAM)
      continue;
    RtTensor tt = {p->dtype, p->shape.rank, {0}, t->buf[p->id]};
    memcpy(tt.dim, p->shape.dim, sizeof tt.dim);
    items[n].name = (char *)p->name;
    items[n++].t = tt;
  }
  const char *keys[] = {"format", "model", "optimizer", "epoch", "step"};
  const char *vals[] = {"kiln", t->g->name, t->spec.opt_name, arena_fmt(c->arena, "%d", epoch),
                        arena_fmt(c->arena, "%lld", (long long)t->global_step)};
  char err[512];
  if (rt_safetensors_write(c->save, items, n, keys, vals, 5, err, sizeof err) != RT_OK)
    error_plain(&c->diag, "%s", err);
}

/* Every value of d's labels (or, ids, examples) in 0 .. limit - 1. */
static void check_range(Trainer *t, const RtDataset *d, bool ids, int64_t limit) {
  char err[512];
  if (rt_dataset_check_range(d, ids, limit, t->c->data, err, sizeof err) != RT_OK)
    error_plain(&t->c->diag, "%s", err);
}

/* The examples' ids must index every embedding table they select rows of;
 * the labels the class scores (without scores, anything non-negative). */
static void check_data(Trainer *t) {
  int64_t vocab = cli_ids_below(t->g, t->x);
  int64_t classes = t->scores ? t->eout->shape.dim[t->eout->shape.rank - 1] : INT32_MAX;
  for (int k = 0; k < 2; k++) {
    const RtDataset *d = k ? &t->test : &t->train;
    if (t->x->dtype == DT_I32)
      check_range(t, d, true, vocab);
    if (t->y && t->y->dtype == DT_I32)
      check_range(t, d, false, classes);
  }
}

static void train_loop(Trainer *t) {
  int64_t batch = t->x->shape.dim[0];
  RtBatcher *b = &t->batcher;
  if (rt_batcher_init(b, t->train.n, batch, t->spec.seed, t->spec.shuffle, t->c->limit) != RT_OK)
    error_plain(&t->c->diag, "out of memory shuffling %lld examples", (long long)t->train.n);
  t->have_batcher = true;
  int64_t steps = rt_batcher_steps(b), total = steps * t->spec.epochs;
  if (steps == 0)
    error_plain(&t->c->diag, "%s: fewer training examples than one batch of %lld", t->c->data,
                (long long)batch);
  void *x = exec_input(&t->step, t->x);
  int32_t *y = t->y ? exec_input(&t->step, t->y) : NULL;
  RtTune tune; /* the steps pick the thread count (runtime/tune.c) */
  rt_tune_begin(&tune);
  bool tunes = t->step.compiled; /* the reference evaluator has one thread */
  int said = -1; /* the setting -v printed last (after the epoch that chose it) */
  for (int epoch = t->first_epoch; epoch < t->spec.epochs; epoch++) {
    RtProgress pr;
    rt_progress_init(&pr, stderr, epoch + 1, t->spec.epochs, steps, batch);
    rt_batcher_epoch(b, epoch);
    for (int64_t s = 0; s < steps; s++) {
      rt_batcher_gather(b, &t->train, s, x, y);
      if (tunes) /* after the choice, re-checked now and then */
        rt_tune_next(&tune);
      double t0 = rt_now(), loss = run_step(t, steps, total);
      if (tunes)
        rt_tune_took(&tune, rt_now() - t0);
      rt_progress_step(&pr, s, loss);
    }
    exec_sync_params(&t->step); /* a device's parameters, back in t->buf */
    if (t->eval_ready)
      exec_params_changed(&t->eval);
    double score = t->scores ? test_accuracy(t) : test_loss(t);
    char extra[64] = "";
    if (score >= 0 && t->scores)
      snprintf(extra, sizeof extra, "test accuracy %.2f%%", 100 * score);
    else if (score >= 0)
      snprintf(extra, sizeof extra, "test loss %.4f", score);
    rt_progress_end(&pr, score >= 0 ? extra : NULL);
    if (tunes && rt_tune_done(&tune) && said != tune.chosen) {
      if (t->c->verbose)
        fprintf(stderr, "%s: training steps on %s\n", t->g->name, cli_tune_text(t->c, &tune));
      said = tune.chosen;
    }
    if (t->c->save)
      save(t, epoch + 1);
  }
}

static void train_fn(void *ud) {
  Trainer *t = ud;
  if (t->c->cuda && t->c->reference)
    error_plain(&t->c->diag, "--reference evaluates on the CPU; it does not combine with "
                "--target cuda");
  if (t->c->cuda)
    cli_cuda_device(t->c); /* no device: stop before reading anything */
  build_graphs(t);
  t->buf = arena_alloc(t->c->arena, sizeof(void *) * (size_t)t->g->n_nodes);
  exec_init(&t->step, t->c, t->g, t->ts.roots, t->ts.n_roots);
  t->step_ready = true;
  if (t->eout) {
    exec_init(&t->eval, t->c, t->ge, &t->eout, 1);
    t->eval_ready = true;
  }
  bind_params(t);
  load_data(t);
  check_data(t);
  if (t->first_epoch >= t->spec.epochs)
    fprintf(stderr, "kiln: %s already holds %d epochs; nothing to do\n", t->c->resume,
            t->first_epoch);
  train_loop(t);
}

static void trainer_free(Trainer *t) {
  if (t->buf)
    for (int i = 0; i < t->g->n_nodes; i++)
      free(t->buf[i]);
  if (t->step_ready)
    exec_free(&t->step);
  if (t->eval_ready)
    exec_free(&t->eval);
  if (t->have_train)
    rt_dataset_free(&t->train);
  if (t->have_test)
    rt_dataset_free(&t->test);
  if (t->have_batcher)
    rt_batcher_free(&t->batcher);
}

static int train_run(Cli *c) {
  Trainer t = {.c = c};
  int rc = cli_protect(c, train_fn, &t);
  trainer_free(&t);
  return rc;
}

const Command cmd_train = {"train", "DmdRESBlLTvuhIHCPVYjFXz", train_help, NULL, train_run,
                           train_help_end};
