/*
 * test_autodiff.c: the structure of the backward graph: aggregation of a
 * value used several times, reduction where broadcasting happened, zero
 * gradients, gradients of inputs on request, provenance of backward nodes,
 * forward values saved for backward, and the located error for an op
 * without a gradient.  (Numerical correctness of every rule is
 * test_grad.c's job.)
 *
 * Adding a case: compile a model with compile_text, run pass_autodiff on
 * its loss, and evaluate with eval_grads below.
 */
#include <math.h>

#include "kiln_test.h"

/* Evaluates the graph with inputs/params filled by fill(), returns the
 * value of node n as a malloc'ed float copy. */
static float *eval_node(Graph *g, Node *n, void (*fill)(Node *p, float *data)) {
  Eval ev;
  eval_init(&ev, g);
  float **bufs = calloc((size_t)g->n_nodes, sizeof(float *));
  for (int i = 0; i < g->n_nodes; i++) {
    Node *p = g->nodes[i];
    if (p->op == OP_PARAM || p->op == OP_INPUT) {
      bufs[i] = calloc((size_t)shape_numel(&p->shape) + 1, sizeof(float));
      fill(p, bufs[i]);
      eval_bind(&ev, p, bufs[i]);
    }
  }
  char err[256];
  bool *live = calloc((size_t)g->n_nodes, 1);
  graph_live(g, &n, 1, live);
  assert_int_equal(eval_run(&ev, live, err, sizeof err), 0);
  int64_t k = shape_numel(&n->shape);
  float *out = malloc(sizeof(float) * (size_t)(k + 1));
  memcpy(out, ev.vals[n->id].data, sizeof(float) * (size_t)k);
  for (int i = 0; i < g->n_nodes; i++)
    free(bufs[i]);
  free(bufs);
  free(live);
  eval_free(&ev);
  return out;
}

static void fill_ramp(Node *p, float *d) {
  for (int64_t i = 0; i < shape_numel(&p->shape); i++)
    d[i] = 0.25f * (float)(i + 1);
}

static Node *grad_of_param(Compiled *c, const char *loss, const char *param) {
  Node *l = graph_find_value(c->g, loss), *p = find_param(c->g, param), *g;
  assert_non_null(l);
  assert_non_null(p);
  pass_autodiff(c->g, &c->d, l, &p, 1, &g);
  return g;
}

/* x used three times: one add_n with three inputs, equal to their sum. */
static void uses_are_aggregated(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  param x: f32[3] init=zeros\n"
                            "  loss = sum(x * 3 + sin(x) + exp(x))\n"
                            "  output y = x\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *x = find_param(c.g, "x"), *g = grad_of_param(&c, "loss", "x");
  assert_int_equal(g->op, OP_ADD_N);
  assert_int_equal(g->n_in, 3);
  assert_ptr_equal(g->grad_of, x);
  int aggregations = 0;
  for (int i = 0; i < c.g->n_nodes; i++)
    aggregations += c.g->nodes[i]->op == OP_ADD_N;
  assert_int_equal(aggregations, 1);
  float *d = eval_node(c.g, g, fill_ramp);
  for (int i = 0; i < 3; i++) {
    double v = 0.25 * (i + 1);
    assert_true(fabs(d[i] - (3 + cos(v) + exp(v))) < 1e-5);
  }
  free(d);
  compiled_free(&c);
}

/* b [3] broadcast against [2, 3]: its gradient sums over the batch. */
static void broadcasting_is_reduced(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 3]\n"
                            "  param b: f32[3] init=zeros\n"
                            "  loss = sum((x + b) * 2)\n"
                            "  output y = x\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *g = grad_of_param(&c, "loss", "b");
  assert_int_equal(g->shape.rank, 1);
  assert_int_equal(g->shape.dim[0], 3);
  float *d = eval_node(c.g, g, fill_ramp);
  for (int i = 0; i < 3; i++)
    assert_true(fabs(d[i] - 4.0f) < 1e-6);
  free(d);
  compiled_free(&c);
}

static void unused_parameters_get_zero(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  param a: f32[2] init=ones\n"
                            "  param b: f32[2] init=ones\n"
                            "  loss = sum(a * a)\n"
                            "  output y = b\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *g = grad_of_param(&c, "loss", "b");
  assert_int_equal(g->op, OP_FULL);
  assert_string_equal(g->name, "grad(b)");
  float *d = eval_node(c.g, g, fill_ramp);
  assert_true(d[0] == 0 && d[1] == 0);
  free(d);
  compiled_free(&c);
}

/* Only what the gradient needs is built: nothing for a value that does not
 * reach the loss, nothing behind an input nobody asked about. */
static void only_needed_gradients_are_built(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[4]\n"
                            "  param w: f32[4] init=ones\n"
                            "  side = exp(x) * 7\n"
                            "  loss = sum(relu(x) * w)\n"
                            "  output y = side\n"
                            "}\n");
  MUST_COMPILE(c);
  int n0 = c.g->n_nodes;
  Node *g = grad_of_param(&c, "loss", "w");
  for (int i = n0; i < c.g->n_nodes; i++) {
    const Node *b = c.g->nodes[i];
    assert_true(b->is_backward);
    assert_non_null(b->grad_of);
    /* no rule ran for relu (x needs no gradient) nor for the side branch */
    assert_true(b->grad_of->op != OP_RELU && b->grad_of->op != OP_EXP);
  }
  /* w's gradient is relu(x), read from the forward pass */
  bool *saved = calloc((size_t)c.g->n_nodes, 1);
  graph_saved_for_backward(c.g, saved);
  assert_true(saved[graph_find_value(c.g, "loss")->in[0]->in[0]->id]); /* relu(x) */
  float *d = eval_node(c.g, g, fill_ramp);
  for (int i = 0; i < 4; i++)
    assert_true(fabs(d[i] - 0.25f * (i + 1)) < 1e-6);
  free(d);
  free(saved);
  compiled_free(&c);
}

static void input_gradients_on_request(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 2]\n"
                            "  loss = sum(x * x)\n"
                            "  output y = x\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *x = graph_find(c.g, "x"), *g;
  pass_autodiff(c.g, &c.d, graph_find_value(c.g, "loss"), &x, 1, &g);
  float *d = eval_node(c.g, g, fill_ramp);
  for (int i = 0; i < 4; i++)
    assert_true(fabs(d[i] - 0.5f * (i + 1)) < 1e-6); /* 2 x */
  free(d);
  compiled_free(&c);
}

typedef struct Job {
  Compiled *c;
  Node *loss, *p, *g;
} Job;

static void run_autodiff(void *ud) {
  Job *j = ud;
  pass_autodiff(j->c->g, &j->c->d, j->loss, &j->p, 1, &j->g);
}

/* Differentiating through an op without a gradient is a located error. */
static void ops_without_gradient_are_located_errors(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  param p: f32[3] init=ones\n"
                            "  output y = p\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *p = find_param(c.g, "p");
  Loc at = {c.src, 3, 14};
  Node *in[2] = {p, p};
  Node *gb = graph_add_checked(c.g, OP_GELU_BACK, in, 2, NULL, at);
  Node *loss = graph_add_checked(c.g, OP_SUM, &gb, 1, NULL, at);
  Job j = {&c, loss, p, NULL};
  assert_int_equal(diag_protect(&c.d, run_autodiff, &j), 1);
  assert_non_null(strstr(c.d.msg, "t.kiln:3:14: error: cannot differentiate through gelu_back"));
  /* a non-scalar loss too */
  j.loss = gb;
  assert_int_equal(diag_protect(&c.d, run_autodiff, &j), 1);
  assert_non_null(strstr(c.d.msg, "the loss must be a scalar f32 value"));
  compiled_free(&c);
}

/* stop_gradient blocks the flow without an error. */
static void stop_gradient_blocks(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  param p: f32[2] init=ones\n"
                            "  loss = sum(p * stop_gradient(p * 5))\n"
                            "  output y = p\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *g = grad_of_param(&c, "loss", "p");
  float *d = eval_node(c.g, g, fill_ramp);
  assert_true(fabs(d[0] - 1.25f) < 1e-6 && fabs(d[1] - 2.5f) < 1e-6); /* 5 p, not 10 p */
  free(d);
  compiled_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(uses_are_aggregated),
      cmocka_unit_test(broadcasting_is_reduced),
      cmocka_unit_test(unused_parameters_get_zero),
      cmocka_unit_test(only_needed_gradients_are_built),
      cmocka_unit_test(input_gradients_on_request),
      cmocka_unit_test(ops_without_gradient_are_located_errors),
      cmocka_unit_test(stop_gradient_blocks),
  };
  return cmocka_run_group_tests_name("autodiff", tests, NULL, NULL);
}
