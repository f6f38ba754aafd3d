/*
 * test_models.c: every model in models/ builds (inference and training
 * graphs), verifies, and evaluates to sane, deterministic values with the
 * reference evaluator; hand-checked parameter counts for the classics.
 *
 * Adding a model: put it in models/; the loop below picks it up.  If it
 * has a known parameter count, add it to `known`.
 */
#include <math.h>

#include "kiln_test.h"



/* Evaluates every node with seeded parameters and inputs; returns the Eval. */
static Eval evaluate(Graph *g, uint64_t seed, void **bufs) {
  Eval ev;
  eval_init(&ev, g);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (n->op != OP_INPUT && n->op != OP_PARAM)
      continue;
    int64_t count = shape_numel(&n->shape);
    bufs[i] = calloc((size_t)count + 1, 4);
    if (n->op == OP_PARAM)
      param_init_fill(n, seed, bufs[i]);
    else if (n->dtype == DT_F32)
      for (int64_t k = 0; k < count; k++)
        ((float *)bufs[i])[k] = (float)rng_normal(seed + 7, (uint64_t)k);
    else
      for (int64_t k = 0; k < count; k++)
        ((int32_t *)bufs[i])[k] = (int32_t)(k % 5); /* valid labels and token ids */
    eval_bind(&ev, n, bufs[i]);
  }
  char err[256];
  if (eval_run(&ev, NULL, err, sizeof err))
    fail_msg("%s", err);
  return ev;
}

static void free_bufs(void **bufs, int n) {
  for (int i = 0; i < n; i++)
    free(bufs[i]);
  free(bufs);
}

static void check_finite(const Node *n, const RtTensor *t, const char *model) {
  if (n->dtype != DT_F32)
    return;
  int64_t count = shape_numel(&n->shape);
  for (int64_t k = 0; k < count; k++)
    if (!isfinite(((float *)t->data)[k]))
      fail_msg("%s: %s[%lld] is not finite", model, n->name, (long long)k);
}

static void check_model(const char *name, bool training) {
  char *text = read_model(name);
  Compiled c = compile_model_small(text, training);
  if (!c.g)
    fail_msg("%s does not compile:\n%s", name, c.msg);
  assert_true(c.g->n_outputs >= 1);
  void **bufs = calloc((size_t)c.g->n_nodes, sizeof(void *));
  Eval ev = evaluate(c.g, 1, bufs);
  for (int i = 0; i < c.g->n_nodes; i++)
    check_finite(c.g->nodes[i], &ev.vals[i], name);
  /* softmax outputs are distributions */
  for (int o = 0; o < c.g->n_outputs; o++) {
    Node *n = c.g->outputs[o].node;
    if (n->op != OP_SOFTMAX)
      continue;
    int64_t cls = n->shape.dim[n->shape.rank - 1], rows = shape_numel(&n->shape) / cls;
    for (int64_t r = 0; r < rows; r++) {
      double s = 0;
      for (int64_t k = 0; k < cls; k++)
        s += ((float *)ev.vals[n->id].data)[r * cls + k];
      assert_true(fabs(s - 1) < 1e-5);
    }
  }
  /* a second evaluation gives bit-identical results */
  void **bufs2 = calloc((size_t)c.g->n_nodes, sizeof(void *));
  Eval ev2 = evaluate(c.g, 1, bufs2);
  for (int i = 0; i < c.g->n_nodes; i++)
    assert_memory_equal(ev.vals[i].data, ev2.vals[i].data, (size_t)node_bytes(c.g->nodes[i]));
  eval_free(&ev);
  eval_free(&ev2);
  free_bufs(bufs, c.g->n_nodes);
  free_bufs(bufs2, c.g->n_nodes);
  compiled_free(&c);
  free(text);
}

static void every_model_builds_and_evaluates(void **state) {
  char names[64][64];
  int n = list_models(names, 64);
  assert_true(n >= 4);
  for (int i = 0; i < n; i++) {
    check_model(names[i], false);
    check_model(names[i], true);
  }
}

/* Parameter counts worked out by hand (and equal to PyTorch's). */
static void parameter_counts(void **state) {
  static const struct {
    const char *file;
    int64_t params;
  } known[] = {
      /* 784*256+256 + 256*128+128 + 128*10+10 */
      {"mlp.kiln", 235146},
      /* (25+1)*6 + (150+1)*16 + (400+1)*120 + (120+1)*84 + (84+1)*10 */
      {"lenet5.kiln", 61706},
  };
  for (int i = 0; i < countof(known); i++) {
    char *text = read_model(known[i].file);
    Compiled c = compile_text(text);
    MUST_COMPILE(c);
    assert_int_equal(graph_param_count(c.g, true), known[i].params);
    compiled_free(&c);
    free(text);
  }
}

/* The ResNet's blocks come from a loop, and the attention model's causal
 * flag changes the graph; both as the language promises. */
static void block_loops_and_attention(void **state) {
  char *text = read_model("resnet_small.kiln");
  Compiled c = compile_text(text);
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "layer1.0.a.conv2d.weight"));
  assert_non_null(find_param(c.g, "layer3.1.b.batchnorm.weight"));
  assert_non_null(find_param(c.g, "layer2.0.s.conv2d.weight")); /* projection shortcut */
  assert_null(find_param(c.g, "layer1.0.s.conv2d.weight"));     /* identity shortcut */
  assert_int_equal(count_op(c.g, OP_CONV2D), 1 + 3 * 2 * 2 + 2);
  compiled_free(&c);
  const char *defs[] = {"blocks=3"};
  c = compile_opts(text, false, defs, 1);
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_CONV2D), 1 + 3 * 3 * 2 + 2);
  compiled_free(&c);
  free(text);
  text = read_model("attention.kiln");
  c = compile_text(text);
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_SOFTMAX), 2 + 1); /* one per layer, one output */
  assert_int_equal(count_op(c.g, OP_WHERE), 0);
  compiled_free(&c);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_model_builds_and_evaluates),
      cmocka_unit_test(parameter_counts),
      cmocka_unit_test(block_loops_and_attention),
  };
  return cmocka_run_group_tests_name("models", tests, NULL, NULL);
}
