/*
 * train_step.c: assembles the training step: loss -> autodiff ->
 * optimizer, all in the graph the frontend built in training mode.
 *
 * The roots of the step are the loss (for reporting) and every update's
 * value (parameters, optimizer state, batchnorm running statistics); the
 * evaluator computes exactly what they need, then applies the updates.
 */
#include <string.h>

#include "passes.h"
#include "rt_data.h"

static Node *find_loss(Graph *g, Diag *d) {
  if (!g->has_train || !g->minimize)
    error_at(d, (Loc){0}, "model %s has no train section with `minimize LOSS`", g->name);
  Node *loss = graph_find_value(g, g->minimize);
  if (!loss)
    error_at(d, g->train_loc, "minimize: the model has no value named '%s'", g->minimize);
  return loss;
}

void build_train_step(Graph *g, Diag *d, TrainStep *ts) {
  memset(ts, 0, sizeof *ts);
  ts->loss = find_loss(g, d);
  int n0 = g->n_nodes, np = 0;
  ts->params = arena_alloc(g->arena, sizeof(Node *) * (size_t)(n0 + 1));
  for (int i = 0; i < n0; i++)
    if (g->nodes[i]->op == OP_PARAM && g->nodes[i]->trainable && g->nodes[i]->dtype == DT_F32)
      ts->params[np++] = g->nodes[i];
  if (np == 0)
    error_at(d, g->train_loc, "model %s has no trainable parameters", g->name);
  ts->n_params = np;
  ts->grads = arena_alloc(g->arena, sizeof(Node *) * (size_t)np);
  pass_autodiff(g, d, ts->loss, ts->params, np, ts->grads);
  pass_optimizer(g, &g->spec, ts->params, ts->grads, np, &ts->lr, &ts->step);
  ts->roots = arena_alloc(g->arena, sizeof(Node *) * (size_t)(g->n_updates + 1));
  ts->roots[ts->n_roots++] = ts->loss;
  for (int i = 0; i < g->n_updates; i++)
    ts->roots[ts->n_roots++] = g->updates[i].value;
}

/* The schedule itself lives in the runtime, shared with built programs. */
RtSchedule train_schedule(const TrainSpec *s) {
  static const RtSched kinds[] = {[SCHED_CONSTANT] = RT_SCHED_CONSTANT, [SCHED_STEP] = RT_SCHED_STEP,
                                  [SCHED_COSINE] = RT_SCHED_COSINE, [SCHED_LINEAR] = RT_SCHED_LINEAR};
  return (RtSchedule){kinds[s->sched], s->lr, s->sched_gamma, s->sched_every, s->sched_end,
                      s->sched_epochs, s->warmup};
}

double train_lr(const TrainSpec *s, int64_t t, int64_t per_epoch, int64_t total) {
  RtSchedule r = train_schedule(s);
  return rt_schedule_lr(&r, t, per_epoch, total);
}
