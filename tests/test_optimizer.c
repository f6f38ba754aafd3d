/*
 * test_optimizer.c: every optimizer's update, two steps, against values
 * worked out by hand, and the learning-rate schedules.
 *
 * The model is loss = sum(p * w) with w = [0.5, -1], so the gradient is
 * g = w at every step and p starts at [1, -2] (set directly).  Each case
 * gives the train section's optimizer line and the expected p after steps
 * 1 and 2, derived in the comment next to it.  Adding a case: one more row.
 */
#include <math.h>

#include "kiln_test.h"

typedef struct Case {
  const char *line; /* train section settings */
  double p1[2], p2[2];
} Case;

static const Case cases[] = {
    /* p <- p - 0.1 g */
    {"optimizer sgd(lr=0.1)", {0.95, -1.9}, {0.9, -1.8}},
    /* v1 = g, p1 = p0 - 0.1 v1; v2 = 0.9 v1 + g = 1.9 g, p2 = p1 - 0.19 g */
    {"optimizer sgd(lr=0.1, momentum=0.9)", {0.95, -1.9}, {0.855, -1.71}},
    /* u1 = g + 0.9 v1 = 1.9 g -> p1 = p0 - 0.19 g; v2 = 1.9 g, u2 = g + 1.71 g = 2.71 g */
    {"optimizer nesterov(lr=0.1, momentum=0.9)", {0.905, -1.81}, {0.7695, -1.539}},
    /* s1 = g^2: p1 = p0 - 0.1 sign(g); s2 = 2 g^2: p2 = p1 - 0.1 sign(g) / sqrt(2) */
    {"optimizer adagrad(lr=0.1)", {0.9, -1.9}, {0.8292893219, -1.8292893219}},
    /* r1 = 0.01 g^2: u1 = 10 sign(g); r2 = 0.0199 g^2: u2 = sign(g) / sqrt(0.0199) */
    {"optimizer rmsprop(lr=0.01)", {0.9, -1.9}, {0.8291119095, -1.8291118945}},
    /* bias correction makes m^ = g and v^ = g^2 at t = 1 and 2: p -= 0.1 sign(g) */
    {"optimizer adam(lr=0.1)", {0.9, -1.9}, {0.8, -1.8}},
    /* g' = g + 0.5 p: p1 = [1 - 0.1 (0.5 + 0.5), -2 - 0.1 (-1 - 1)];
     * p2 = [0.9 - 0.1 (0.5 + 0.45), -1.8 - 0.1 (-1 - 0.9)] */
    {"optimizer sgd(lr=0.1, weight_decay=0.5)", {0.9, -1.8}, {0.805, -1.61}},
    /* |g| = sqrt(1.25); g' = g 0.5 / |g|; lr 1: p1 = p0 - 0.4472136 g */
    {"optimizer sgd(lr=1)\n  clip_norm 0.5", {0.7763932, -1.5527864}, {0.5527864, -1.1055728}},
};

static const char *model = "model m() {\n"
                           "  param p: f32[2] init=zeros\n"
                           "  input w: f32[2]\n"
                           "  loss = sum(p * w)\n"
                           "  output y = p\n"
                           "}\n"
                           "train m {\n"
                           "  minimize loss\n"
                           "  %s\n"
                           "}\n";

/* Runs two training steps and returns p after each. */
static void two_steps(const char *line, double out[2][2]) {
  char src[1024];
  snprintf(src, sizeof src, model, line);
  Compiled c = compile_opts(src, true, NULL, 0);
  MUST_COMPILE(c);
  TrainStep ts;
  build_train_step(c.g, &c.d, &ts);
  Eval ev;
  eval_init(&ev, c.g);
  float bufs[64][2] = {{0}};
  int nb = 0;
  for (int i = 0; i < c.g->n_nodes; i++) {
    Node *n = c.g->nodes[i];
    if (n->op == OP_PARAM || n->op == OP_INPUT) {
      assert_true(nb < 64 && shape_numel(&n->shape) <= 2);
      eval_bind(&ev, n, bufs[nb++]);
    }
  }
  float *p = ev.vals[find_param(c.g, "p")->id].data, *w = ev.vals[graph_find(c.g, "w")->id].data;
  p[0] = 1, p[1] = -2, w[0] = 0.5f, w[1] = -1;
  bool *live = calloc((size_t)c.g->n_nodes, 1);
  graph_live(c.g, ts.roots, ts.n_roots, live);
  char err[256];
  for (int t = 0; t < 2; t++) {
    *(float *)ev.vals[ts.lr->id].data = (float)c.g->spec.lr;
    *(float *)ev.vals[ts.step->id].data = (float)(t + 1);
    assert_int_equal(eval_run(&ev, live, err, sizeof err), 0);
    assert_true(fabs(((float *)ev.vals[ts.loss->id].data)[0] - (0.5 * p[0] - p[1])) < 1e-6);
    eval_apply_updates(&ev);
    out[t][0] = p[0], out[t][1] = p[1];
  }
  free(live);
  eval_free(&ev);
  compiled_free(&c);
}

static void updates_match_hand_values(void **state) {
  for (int k = 0; k < countof(cases); k++) {
    double got[2][2];
    two_steps(cases[k].line, got);
    for (int i = 0; i < 2; i++)
      if (fabs(got[0][i] - cases[k].p1[i]) > 2e-6 || fabs(got[1][i] - cases[k].p2[i]) > 2e-6)
        fail_msg("%s: p%d after steps 1, 2 = %.8f, %.8f; want %.8f, %.8f", cases[k].line, i,
                 got[0][i], got[1][i], cases[k].p1[i], cases[k].p2[i]);
  }
}

static void state_is_named_like_pytorch(void **state) {
  char src[1024];
  snprintf(src, sizeof src, model, "optimizer adam(lr=0.1)");
  Compiled c = compile_opts(src, true, NULL, 0);
  MUST_COMPILE(c);
  TrainStep ts;
  build_train_step(c.g, &c.d, &ts);
  Node *m = find_param(c.g, "p.exp_avg"), *v = find_param(c.g, "p.exp_avg_sq");
  assert_non_null(m);
  assert_non_null(v);
  assert_false(m->trainable);
  assert_int_equal(c.g->n_updates, 3); /* p, exp_avg, exp_avg_sq */
  assert_non_null(graph_find(c.g, "train.lr"));
  assert_non_null(graph_find(c.g, "train.step"));
  compiled_free(&c);
}

/* Schedules as functions of the global step t; 10 steps per epoch, 40 in all. */
static void schedules(void **state) {
  TrainSpec s = {0};
  s.lr = 1.0;
  s.sched = SCHED_CONSTANT;
  assert_true(train_lr(&s, 37, 10, 40) == 1.0);
  s.sched = SCHED_STEP, s.sched_every = 2, s.sched_gamma = 0.1;
  assert_true(fabs(train_lr(&s, 19, 10, 40) - 1.0) < 1e-12);  /* epoch 1 */
  assert_true(fabs(train_lr(&s, 20, 10, 40) - 0.1) < 1e-12);  /* epoch 2 */
  s.sched = SCHED_COSINE, s.sched_end = 0;
  assert_true(fabs(train_lr(&s, 0, 10, 40) - 1.0) < 1e-12);
  assert_true(fabs(train_lr(&s, 20, 10, 40) - 0.5) < 1e-12);  /* half way: cos(pi/2) */
  assert_true(fabs(train_lr(&s, 40, 10, 40) - 0.0) < 1e-12);
  s.sched = SCHED_LINEAR, s.sched_end = 0.2, s.sched_epochs = 2; /* over 20 steps */
  assert_true(fabs(train_lr(&s, 10, 10, 40) - 0.6) < 1e-12);
  assert_true(fabs(train_lr(&s, 30, 10, 40) - 0.2) < 1e-12);  /* held at the end */
  s.sched = SCHED_CONSTANT, s.warmup = 4;
  assert_true(fabs(train_lr(&s, 0, 10, 40) - 0.25) < 1e-12);
  assert_true(fabs(train_lr(&s, 3, 10, 40) - 1.0) < 1e-12);
}

static void train_section_errors(void **state) {
  const char *bad[][2] = {
      {"optimizer adamw(lr=0.1)", "unknown optimizer 'adamw'"},
      {"optimizer sgd(rate=0.1)", "sgd() has no argument 'rate' (its arguments: lr, momentum"},
      {"optimizer sgd(lr=-1)", "the learning rate must be positive"},
      {"schedule cosine(warmup=-1)", "warmup and epochs must not be negative"},
      {"schedule exponential()", "unknown schedule 'exponential'"},
      {"epochs 0", "epochs must be in 1 .. 1000000, got 0"},
      {"batch 32", "unknown train setting 'batch'"},
      {"clip_norm -1", "clip_norm must be a positive number"},
  };
  for (int i = 0; i < countof(bad); i++) {
    char src[1024];
    snprintf(src, sizeof src, model, bad[i][0]);
    Compiled c = compile_opts(src, true, NULL, 0);
    MUST_FAIL(c, bad[i][1]);
    assert_non_null(strstr(c.msg, "t.kiln:9:"));
    compiled_free(&c);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(updates_match_hand_values),
      cmocka_unit_test(state_is_named_like_pytorch),
      cmocka_unit_test(schedules),
      cmocka_unit_test(train_section_errors),
  };
  return cmocka_run_group_tests_name("optimizer", tests, NULL, NULL);
}
