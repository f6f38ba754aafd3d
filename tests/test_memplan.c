/*
 * test_memplan.c: the memory planner on graphs with known answers, the
 * verifier against deliberately broken plans, seeded random graphs, and
 * every model of models/ (inference and training step, at kt_small_consts'
 * sizes and batch 1 and 2) evaluated with and without its plan.
 *
 * Adding a case: build a graph (a model string with compile_text, or nodes
 * with graph_add_checked), plan it with plan_for(), and assert on the Plan
 * (arena, lower bound, offsets, alias) or evaluate it with run_planned().
 */
#include <math.h>

#include "kiln_test.h"

enum { S = 4096 }; /* bytes of an f32[1024] */

/* Plans node by node (fusion off) unless fused: the reference evaluator
 * runs these plans, one node at a time (test_fuse.c runs fused ones). */
static Plan plan_fused(Graph *g, Node *const *roots, int n, PlanOpts o, bool fused) {
  Plan p;
  if (!fused)
    o.fuse = FUSE_NONE;
  plan_build(g, roots, n, &o, &p);
  char err[512];
  if (!plan_verify(g, roots, n, &p, err, sizeof err))
    fail_msg("plan of %s does not verify: %s", g->name, err);
  return p;
}

static Plan plan_for(Graph *g, Node *const *roots, int n, PlanOpts o) {
  return plan_fused(g, roots, n, o, false);
}

static Node *out0(Graph *g) { return g->outputs[0].node; }

/* x -> exp -> sin -> neg -> tanh: two blocks, or one in place. */
static void chain(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[1024]\n"
                            "  output y = tanh(-sin(exp(x)))\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *y = out0(c.g);
  Plan shared = plan_for(c.g, &y, 1, (PlanOpts){.no_inplace = true});
  assert_int_equal(shared.arena, 2 * S); /* each step reads one block, writes the other */
  assert_int_equal(shared.lower, 2 * S);
  assert_int_equal(shared.naive, 5 * S);
  Plan inplace = plan_for(c.g, &y, 1, (PlanOpts){0});
  assert_int_equal(inplace.arena, 2 * S); /* x is the caller's: exp cannot overwrite it */
  int overwritten = 0;
  for (int i = 0; i < c.g->n_nodes; i++)
    overwritten += inplace.alias[i] >= 0;
  assert_int_equal(overwritten, 3); /* sin, neg and tanh each overwrite their input */
  Plan none = plan_for(c.g, &y, 1, (PlanOpts){.no_inplace = true, .no_share = true});
  assert_int_equal(none.arena, 5 * S);
  compiled_free(&c);
}

/* a feeds b and k, which meet in d. */
static const char *diamond_src = "model m() {\n"
                                 "  input x: f32[1024]\n"
                                 "  a = exp(x)\n"
                                 "  b = sin(a)\n"
                                 "  k = cos(a)\n"
                                 "  output d = b + k\n"
                                 "}\n";

/* Three blocks without in-place; with it, k overwrites a (its last
 * reader) and d overwrites b. */
static void diamond(void **state) {
  Compiled c = compile_text(diamond_src);
  MUST_COMPILE(c);
  Node *d = out0(c.g), *a = graph_find_value(c.g, "a"), *b = graph_find_value(c.g, "b");
  Node *k = graph_find_value(c.g, "k");
  Plan p = plan_for(c.g, &d, 1, (PlanOpts){.no_inplace = true});
  assert_int_equal(p.lower, 3 * S);
  assert_int_equal(p.arena, 3 * S);
  Plan q = plan_for(c.g, &d, 1, (PlanOpts){0});
  assert_int_equal(q.alias[k->id], a->id);
  assert_int_equal(q.alias[d->id], b->id);
  assert_int_equal(q.arena, 2 * S); /* x [0, 1], a/k [1, 4], b/d [2, 4]: two at a time */
  assert_int_equal(q.lower, 2 * S);
  assert_int_equal(q.offset[k->id], q.offset[a->id]);
  compiled_free(&c);
}

/* A forward value the backward pass reads lives until its last backward
 * reader; one it does not read dies in the forward pass. */
static void values_read_by_backward(void **state) {
  Compiled c = compile_opts("model m() {\n"
                            "  input x: f32[4, 8]\n"
                            "  param w: f32[8, 8] init=xavier\n"
                            "  h = relu(x @ w)\n"
                            "  e = exp(x)\n"
                            "  loss = mean(h * h) + mean(e)\n"
                            "  output y = h\n"
                            "}\n"
                            "train m { minimize loss }\n",
                            true, NULL, 0);
  MUST_COMPILE(c);
  TrainStep ts;
  build_train_step(c.g, &c.d, &ts);
  Plan p = plan_for(c.g, ts.roots, ts.n_roots, (PlanOpts){.no_inplace = true});
  Node *h = graph_find_value(c.g, "h");
  int last_reader = -1, last_forward = -1;
  for (int k = 0; k < p.n_order; k++)
    for (int j = 0; j < p.order[k]->n_in; j++)
      if (p.order[k]->in[j] == h) {
        last_reader = k;
        if (!p.order[k]->is_backward)
          last_forward = k;
      }
  assert_true(last_reader > last_forward); /* relu's rule reads h */
  assert_int_equal(p.last[h->id], last_reader);
  compiled_free(&c);
}

/* --- the verifier catches broken plans ------------------------------------- */

static void verifier_catches_broken_plans(void **state) {
  Compiled c = compile_text(diamond_src);
  MUST_COMPILE(c);
  Node *d = out0(c.g), *a = graph_find_value(c.g, "a"), *b = graph_find_value(c.g, "b");
  Node *x = graph_find(c.g, "x");
  char err[512];
  Plan p = plan_for(c.g, &d, 1, (PlanOpts){.no_inplace = true});
  int64_t keep = p.offset[b->id];
  p.offset[b->id] = p.offset[a->id]; /* b written while a is still read */
  assert_false(plan_verify(c.g, &d, 1, &p, err, sizeof err));
  assert_non_null(strstr(err, "share bytes while both are alive"));
  p.offset[b->id] = keep + 4; /* misaligned */
  assert_false(plan_verify(c.g, &d, 1, &p, err, sizeof err));
  p.offset[b->id] = p.arena; /* past the end */
  assert_false(plan_verify(c.g, &d, 1, &p, err, sizeof err));
  p.offset[b->id] = keep;
  assert_true(plan_verify(c.g, &d, 1, &p, err, sizeof err));
  p.offset[a->id] = p.offset[x->id]; /* exp over its input: x is the caller's */
  assert_false(plan_verify(c.g, &d, 1, &p, err, sizeof err));
  Plan q = plan_for(c.g, &d, 1, (PlanOpts){.no_inplace = true});
  Node *tmp = q.order[1];
  q.order[1] = q.order[2], q.order[2] = tmp; /* not a topological order */
  assert_false(plan_verify(c.g, &d, 1, &q, err, sizeof err));
  assert_non_null(strstr(err, "before its input"));
  compiled_free(&c);
}

/* --- evaluating with a plan --------------------------------------------------- */

static uint64_t rng_state;
static double next_uniform(void) { return rng_uniform(12345, rng_state++); }

/* Evaluates roots with fixed inputs and parameters, planned or not, and
 * returns a malloc'ed copy of all root values laid end to end. */
static float *run_planned(Graph *g, Node *const *roots, int n, const PlanOpts *o, size_t *bytes) {
  Eval ev;
  eval_init(&ev, g);
  Plan p;
  void *arena = NULL;
  if (o) {
    p = plan_for(g, roots, n, *o);
    arena = calloc(1, (size_t)p.arena + 64);
    eval_use_arena(&ev, arena, p.offset, p.order, p.n_order);
  }
  float **bufs = calloc((size_t)g->n_nodes, sizeof(float *));
  bool *live = calloc((size_t)g->n_nodes, 1);
  graph_live(g, roots, n, live);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *v = g->nodes[i];
    int64_t k = shape_numel(&v->shape);
    uint64_t s = rng_seed_for(7, v->name);
    if (v->op == OP_PARAM) {
      bufs[i] = calloc((size_t)k + 1, 4);
      for (int64_t j = 0; j < k; j++)
        bufs[i][j] = (float)(rng_normal(s, (uint64_t)j) * 0.3);
      eval_bind(&ev, v, bufs[i]);
    } else if (v->op == OP_INPUT && live[i]) {
      void *in = eval_input(&ev, v);
      for (int64_t j = 0; j < k; j++)
        if (v->dtype == DT_F32)
          ((float *)in)[j] = (float)rng_normal(s, (uint64_t)j);
        else
          ((int32_t *)in)[j] = (int32_t)(j % 3);
    }
  }
  char err[256];
  if (o)
    assert_int_equal(eval_run(&ev, NULL, err, sizeof err), 0);
  else
    assert_int_equal(eval_run(&ev, live, err, sizeof err), 0);
  *bytes = 0;
  for (int r = 0; r < n; r++)
    *bytes += (size_t)node_bytes(roots[r]);
  char *out = malloc(*bytes + 1), *at = out;
  for (int r = 0; r < n; r++) {
    memcpy(at, ev.vals[roots[r]->id].data, (size_t)node_bytes(roots[r]));
    at += node_bytes(roots[r]);
  }
  for (int i = 0; i < g->n_nodes; i++)
    free(bufs[i]);
  free(bufs);
  free(live);
  free(arena);
  eval_free(&ev);
  return (float *)out;
}

static const PlanOpts variants[] = {
    {0}, {.no_inplace = true}, {.no_share = true}, {.min_memory = true},
    {.min_memory = true, .no_inplace = true},
};

/* Same bits with every planning variant as without a plan. */
static void check_same_results(Graph *g, Node *const *roots, int n, const char *what) {
  size_t nb, pb;
  float *base = run_planned(g, roots, n, NULL, &nb);
  for (int v = 0; v < countof(variants); v++) {
    float *got = run_planned(g, roots, n, &variants[v], &pb);
    assert_int_equal(nb, pb);
    if (memcmp(base, got, nb) != 0)
      fail_msg("%s: results differ with plan variant %d", what, v);
    free(got);
  }
  free(base);
}

/* A seeded random DAG of elementwise, broadcast, reduction and matmul ops
 * over [8, 8] values, with fan-out, then planned and checked. */
static void random_graphs(void **state) {
  static const char *const unary[] = {"relu", "tanh", "exp", "sin", "neg", "sigmoid"};
  static const char *const binary[] = {"+", "-", "*", "@"};
  for (int trial = 0; trial < 40; trial++) {
    rng_state = (uint64_t)trial * 1000;
    char src[8192];
    int k = snprintf(src, sizeof src, "model r() {\n  input v0: f32[8, 8]\n  input v1: f32[8, 8]\n");
    int n = 2 + 6 + (int)(next_uniform() * 20);
    for (int i = 2; i < n; i++) {
      int a = (int)(next_uniform() * i), b = (int)(next_uniform() * i);
      double pick = next_uniform();
      if (pick < 0.4)
        k += snprintf(src + k, sizeof src - (size_t)k, "  v%d = %s(v%d)\n", i,
                      unary[(int)(next_uniform() * countof(unary))], a);
      else if (pick < 0.9)
        k += snprintf(src + k, sizeof src - (size_t)k, "  v%d = v%d %s v%d * 0.5\n", i, a,
                      binary[(int)(next_uniform() * countof(binary))], b);
      else
        k += snprintf(src + k, sizeof src - (size_t)k,
                      "  v%d = v%d - mean(v%d, axis=1, keepdims=true)\n", i, a, b);
    }
    snprintf(src + k, sizeof src - (size_t)k, "  output y = v%d\n  output z = v%d\n}\n", n - 1,
             n / 2);
    Compiled c = compile_text(src);
    MUST_COMPILE(c);
    Node *roots[2] = {c.g->outputs[0].node, c.g->outputs[1].node};
    check_same_results(c.g, roots, 2, "random graph");
    compiled_free(&c);
  }
}

/* --- every model ------------------------------------------------------------------ */



/* Inference and the training step of every model (kt_small_consts' sizes:
 * the reference evaluator runs each twice), batch 1 and 2: the plan
 * verifies, stays within 5% of the lower bound (the training step under
 * half the naive total), and gives bit-identical results. */
static void every_model(void **state) {
  char names[32][64];
  int nm = list_models(names, 32);
  assert_true(nm >= 4);
  for (int m = 0; m < nm; m++) {
    char *text = read_model(names[m]);
    for (int train = 0; train < 2; train++)
      for (int batch = 1; batch <= 2; batch++) {
        char def[32];
        snprintf(def, sizeof def, "N=%d", batch);
        const char *defs[] = {def};
        Compiled c = compile_model_small_with(text, train, defs, 1);
        MUST_COMPILE(c);
        Node **roots;
        int n;
        TrainStep ts;
        if (train) {
          build_train_step(c.g, &c.d, &ts);
          roots = ts.roots, n = ts.n_roots;
        } else {
          n = c.g->n_outputs;
          roots = arena_alloc(c.a, sizeof(Node *) * (size_t)n);
          for (int i = 0; i < n; i++)
            roots[i] = c.g->outputs[i].node;
        }
        for (int fused = 0; fused < 2; fused++) {
          Plan p = plan_fused(c.g, roots, n, (PlanOpts){0}, fused);
          if (p.arena > p.lower * 105 / 100)
            fail_msg("%s: planned %lld > 1.05 x lower bound %lld", names[m],
                     (long long)p.arena, (long long)p.lower);
          if (train && p.arena * 2 > p.naive)
            fail_msg("%s: training step planned %lld > half the naive %lld", names[m],
                     (long long)p.arena, (long long)p.naive);
        }
        check_same_results(c.g, roots, n, names[m]);
        compiled_free(&c);
      }
    free(text);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(chain),
      cmocka_unit_test(diamond),
      cmocka_unit_test(values_read_by_backward),
      cmocka_unit_test(verifier_catches_broken_plans),
      cmocka_unit_test(random_graphs),
      cmocka_unit_test(every_model),
  };
  return cmocka_run_group_tests_name("memplan", tests, NULL, NULL);
}
