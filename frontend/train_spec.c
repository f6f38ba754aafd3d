/*
 * train_spec.c: reads the model's `train` section into a TrainSpec.
 *
 *   train lenet5 {
 *     minimize  loss
 *     optimizer sgd(lr=0.01, momentum=0.9)   # sgd momentum nesterov adam adagrad rmsprop
 *     schedule  cosine(epochs=2, warmup=100) # constant step cosine linear
 *     epochs    2
 *     clip_norm 5.0
 *     seed      1
 *     shuffle   true
 *     data      "/usr/share/datasets/fashion-mnist"
 *   }
 *
 * Values are compile-time expressions evaluated among the model's
 * constants (`lr=0.1 * N / 256` works).  Every name and argument is checked
 * here, with its location, so a typo in the section fails at `kiln check`.
 * Defaults follow PyTorch's optimizers.
 */
#include <string.h>

#include "elab.h"

typedef struct Arg1 {
  const char *name;
  double dflt;
  double *out;
} Arg1;

static void take_args(Elab *e, const Expr *call, Arg1 *params, int n) {
  for (int i = 0; i < n; i++)
    *params[i].out = params[i].dflt;
  bool set[16] = {0};
  for (int i = 0; i < call->n_args; i++) {
    const Arg *a = &call->args[i];
    int k = i;
    if (a->name) {
      for (k = 0; k < n && strcmp(params[k].name, a->name) != 0; k++)
        ;
      if (k == n) {
        const char *list = "";
        for (int j = 0; j < n; j++)
          list = arena_fmt(e->a, "%s%s%s", list, j ? ", " : "", params[j].name);
        elab_error(e, a->loc, "%s() has no argument '%s' (its arguments: %s)", call->str,
                   a->name, list);
      }
    } else if (i >= n) {
      elab_error(e, a->loc, "%s() takes at most %d arguments", call->str, n);
    }
    if (set[k])
      elab_error(e, a->loc, "argument '%s' of %s() is given twice", params[k].name, call->str);
    set[k] = true;
    Value v = eval_expr(e, a->value);
    if (!v_is_number(&v))
      elab_error(e, a->value->loc, "%s of %s() must be a number, got %s", params[k].name,
                 call->str, v_describe(e, &v));
    *params[k].out = v_number(&v);
  }
}

static const Expr *want_call(Elab *e, const TrainEntry *en, const char *what) {
  const Expr *x = en->value;
  if (!x || (x->kind != E_CALL && x->kind != E_NAME))
    elab_error(e, x ? x->loc : en->loc, "%s needs a name like %s", en->key, what);
  return x;
}

static void read_optimizer(Elab *e, TrainSpec *s, const TrainEntry *en) {
  const Expr *x = want_call(e, en, "sgd(lr=0.01) or adam(lr=0.001)");
  const char *name = x->str;
  double nesterov = 0, lr = 0.01;
  s->opt_name = name;
  s->momentum = 0;
  Expr empty = {0};
  empty.str = name;
  const Expr *call = x->kind == E_CALL ? x : &empty;
  if (strcmp(name, "sgd") == 0 || strcmp(name, "momentum") == 0 || strcmp(name, "nesterov") == 0) {
    bool plain = name[0] == 's';
    Arg1 a[] = {{"lr", 0.01, &lr}, {"momentum", plain ? 0 : 0.9, &s->momentum},
                {"nesterov", name[0] == 'n', &nesterov}, {"weight_decay", 0, &s->weight_decay}};
    take_args(e, call, a, countof(a));
    s->opt = OPT_SGD;
    s->nesterov = nesterov != 0;
    if (s->nesterov && s->momentum <= 0)
      elab_error(e, x->loc, "nesterov needs momentum > 0");
  } else if (strcmp(name, "adam") == 0) {
    Arg1 a[] = {{"lr", 0.001, &lr}, {"beta1", 0.9, &s->beta1}, {"beta2", 0.999, &s->beta2},
                {"eps", 1e-8, &s->eps}, {"weight_decay", 0, &s->weight_decay}};
    take_args(e, call, a, countof(a));
    s->opt = OPT_ADAM;
  } else if (strcmp(name, "adagrad") == 0) {
    Arg1 a[] = {{"lr", 0.01, &lr}, {"eps", 1e-10, &s->eps}, {"weight_decay", 0, &s->weight_decay}};
    take_args(e, call, a, countof(a));
    s->opt = OPT_ADAGRAD;
  } else if (strcmp(name, "rmsprop") == 0) {
    Arg1 a[] = {{"lr", 0.01, &lr}, {"alpha", 0.99, &s->alpha}, {"eps", 1e-8, &s->eps},
                {"momentum", 0, &s->momentum}, {"weight_decay", 0, &s->weight_decay}};
    take_args(e, call, a, countof(a));
    s->opt = OPT_RMSPROP;
  } else {
    elab_error(e, x->loc, "unknown optimizer '%s' (expected sgd, momentum, nesterov, adam, "
               "adagrad or rmsprop)", name);
  }
  if (!(lr > 0))
    elab_error(e, x->loc, "the learning rate must be positive, got %g", lr);
  s->lr = lr;
}

static void read_schedule(Elab *e, TrainSpec *s, const TrainEntry *en) {
  const Expr *x = want_call(e, en, "cosine() or step(every=1, gamma=0.1)");
  double every = 1, epochs = 0, warmup = 0;
  Expr empty = {0};
  empty.str = x->str;
  const Expr *call = x->kind == E_CALL ? x : &empty;
  if (strcmp(x->str, "constant") == 0) {
    Arg1 a[] = {{"warmup", 0, &warmup}};
    take_args(e, call, a, countof(a));
    s->sched = SCHED_CONSTANT;
  } else if (strcmp(x->str, "step") == 0) {
    Arg1 a[] = {{"every", 1, &every}, {"gamma", 0.1, &s->sched_gamma}, {"warmup", 0, &warmup}};
    take_args(e, call, a, countof(a));
    s->sched = SCHED_STEP;
    if (every < 1)
      elab_error(e, x->loc, "step(): every must be at least 1 epoch");
  } else if (strcmp(x->str, "cosine") == 0 || strcmp(x->str, "linear") == 0) {
    Arg1 a[] = {{"epochs", 0, &epochs}, {"end", 0, &s->sched_end}, {"warmup", 0, &warmup}};
    take_args(e, call, a, countof(a));
    s->sched = x->str[0] == 'c' ? SCHED_COSINE : SCHED_LINEAR;
  } else {
    elab_error(e, x->loc, "unknown schedule '%s' (expected constant, step, cosine or linear)",
               x->str);
  }
  if (warmup < 0 || epochs < 0)
    elab_error(e, x->loc, "warmup and epochs must not be negative");
  s->sched_every = (int)every;
  s->sched_epochs = (int)epochs;
  s->warmup = (int64_t)warmup;
}

static int64_t entry_int(Elab *e, const TrainEntry *en, int64_t lo, int64_t hi) {
  if (!en->value)
    elab_error(e, en->loc, "%s needs a value", en->key);
  Value v = eval_expr(e, en->value);
  int64_t k = v_to_int(e, &v, en->value->loc, en->key);
  if (k < lo || k > hi)
    elab_error(e, en->value->loc, "%s must be in %lld .. %lld, got %lld", en->key,
               (long long)lo, (long long)hi, (long long)k);
  return k;
}

static void read_entry(Elab *e, TrainSpec *s, const TrainEntry *en) {
  const char *k = en->key;
  if (strcmp(k, "minimize") == 0) {
    /* checked by attach_train in frontend.c */
  } else if (strcmp(k, "optimizer") == 0) {
    read_optimizer(e, s, en);
  } else if (strcmp(k, "schedule") == 0) {
    read_schedule(e, s, en);
  } else if (strcmp(k, "epochs") == 0) {
    s->epochs = (int)entry_int(e, en, 1, 1000000);
  } else if (strcmp(k, "seed") == 0) {
    s->seed = (uint64_t)entry_int(e, en, 0, INT64_MAX);
  } else if (strcmp(k, "shuffle") == 0 || strcmp(k, "clip_norm") == 0 || strcmp(k, "data") == 0) {
    Value v = en->value ? eval_expr(e, en->value) : v_bool(true);
    Loc l = en->value ? en->value->loc : en->loc;
    if (k[0] == 's')
      s->shuffle = v_to_bool(e, &v, l, "shuffle");
    else if (k[0] == 'c' && (!v_is_number(&v) || v_number(&v) <= 0))
      elab_error(e, l, "clip_norm must be a positive number, got %s", v_describe(e, &v));
    else if (k[0] == 'c')
      s->clip_norm = v_number(&v);
    else if (v.kind != V_STR)
      elab_error(e, l, "data must be a string naming a folder, got %s", v_describe(e, &v));
    else
      s->data = v.s;
  } else {
    elab_error(e, en->loc, "unknown train setting '%s' (expected minimize, optimizer, schedule, "
               "epochs, seed, shuffle, clip_norm or data)", k);
  }
}

void read_train_spec(Elab *e, TrainSpec *s) {
  memset(s, 0, sizeof *s);
  s->opt = OPT_SGD;
  s->opt_name = "sgd";
  s->lr = 0.01;
  s->beta1 = 0.9;
  s->beta2 = 0.999;
  s->eps = 1e-8;
  s->alpha = 0.99;
  s->sched = SCHED_CONSTANT;
  s->sched_gamma = 0.1;
  s->sched_every = 1;
  s->epochs = 1;
  s->shuffle = true;
  s->minimize = e->g->minimize;
  for (int i = 0; i < e->g->n_train; i++)
    read_entry(e, s, &e->g->train[i]);
}
