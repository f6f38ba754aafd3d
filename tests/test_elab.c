/*
 * test_elab.c: elaboration semantics: names, blocks, loops, compile-time
 * values, constants and -D, slicing, split, op attributes, training mode,
 * initializer choice, the train section.
 *
 * Adding a case: write a small model as a string, compile it with
 * compile_text() (tests/kiln_test.h), and assert on the graph
 * (graph_find, find_param, count_op) or on the error (MUST_FAIL).
 */
#include "kiln_test.h"

static const Shape *shape_of(Graph *g, const char *name) {
  Node *n = graph_find_value(g, name);
  if (!n)
    fail_msg("no value named %s", name);
  return &n->shape;
}

static void assert_shape(Graph *g, const char *name, int rank, const int64_t *dims) {
  const Shape *s = shape_of(g, name);
  assert_int_equal(s->rank, rank);
  for (int i = 0; i < rank; i++)
    assert_int_equal(s->dim[i], dims[i]);
}
#define SHAPE(g, name, ...)                                                       \
  do {                                                                            \
    const int64_t d_[] = {__VA_ARGS__};                                           \
    assert_shape(g, name, countof(d_), d_);                                       \
  } while (0)

/* --- names ----------------------------------------------------------------- */

static void layer_params_take_the_binding_name(void **state) {
  Compiled c = compile_text("model m(N = 2) {\n"
                            "  input x: f32[N, 3]\n"
                            "  h = relu(dense(x, out=4))\n"
                            "  output y = dense(h, out=2, bias=false)\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "h.weight"));
  assert_non_null(find_param(c.g, "h.bias"));
  assert_non_null(find_param(c.g, "y.weight"));
  assert_null(find_param(c.g, "y.bias"));
  SHAPE(c.g, "h.weight", 4, 3); /* PyTorch layout [out, in] */
  compiled_free(&c);
}

static void several_layers_in_one_statement_add_the_layer_name(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 3, 8, 8]\n"
                            "  a = relu(batchnorm(conv2d(x, out=4, kernel=3)))\n"
                            "  output y = a\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "a.conv2d.weight"));
  assert_non_null(find_param(c.g, "a.batchnorm.weight"));
  assert_non_null(find_param(c.g, "a.batchnorm.running_var"));
  assert_false(find_param(c.g, "a.batchnorm.running_mean")->trainable);
  compiled_free(&c);
}

static void loops_index_names_and_reuse_dedupes(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 4]\n"
                            "  h = x\n"
                            "  for i in 0 .. 3 { h = dense(h, out=4) }\n"
                            "  g = dense(h, out=4)\n"
                            "  g = dense(g, out=4)\n"
                            "  output y = g\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "h.0.weight"));
  assert_non_null(find_param(c.g, "h.2.weight"));
  assert_non_null(find_param(c.g, "g.weight"));
  assert_non_null(find_param(c.g, "g_2.weight"));
  compiled_free(&c);
}

/* Forty calls binding the same name: g, g_2, ..., g_40, each once (the
 * frame's hash set of scope names grows past its first 16 slots twice and
 * must still find every name taken). */
static void many_reused_names_stay_unique(void **state) {
  char text[4096];
  int at = snprintf(text, sizeof text, "model m() {\n  input x: f32[2, 4]\n  g = x\n");
  for (int i = 0; i < 40; i++)
    at += snprintf(text + at, sizeof text - (size_t)at, "  g = dense(g, out=4)\n");
  snprintf(text + at, sizeof text - (size_t)at, "  output y = g\n}\n");
  Compiled c = compile_text(text);
  MUST_COMPILE(c);
  char name[32];
  assert_non_null(find_param(c.g, "g.weight"));
  for (int k = 2; k <= 40; k++) {
    snprintf(name, sizeof name, "g_%d.weight", k);
    assert_non_null(find_param(c.g, name));
  }
  assert_null(find_param(c.g, "g_41.weight"));
  compiled_free(&c);
}

static void explicit_names_are_literal_and_nest(void **state) {
  Compiled c = compile_text("block unit(x) {\n"
                            "  a = relu(dense(x, out=4))\n"
                            "  return dense(a, out=4, name=\"proj\")\n"
                            "}\n"
                            "model m() {\n"
                            "  input x: f32[2, 4]\n"
                            "  h = x\n"
                            "  for i in 0 .. 2 { h = unit(h, name=\"layer1.\" + str(i)) }\n"
                            "  output y = h\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "layer1.0.a.weight"));
  assert_non_null(find_param(c.g, "layer1.1.proj.weight"));
  compiled_free(&c);
}

static void user_blocks_shadow_the_prelude_but_not_inside_it(void **state) {
  /* a user block named `mean` must not change the prelude's layernorm */
  Compiled c = compile_text("block mean(x, axis = 0, keepdims = false) { return x }\n"
                            "model m() {\n"
                            "  input x: f32[2, 4]\n"
                            "  output y = layernorm(x)\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_MEAN), 2);
  compiled_free(&c);
}

/* --- blocks and compile-time values ---------------------------------------------- */

static void blocks_defaults_and_several_results(void **state) {
  Compiled c = compile_text("block two(x, k = 2, j = k * 3) {\n"
                            "  return x * k, x + j\n"
                            "}\n"
                            "model m() {\n"
                            "  input x: f32[3]\n"
                            "  a, b = two(x)\n"
                            "  output p = a\n"
                            "  output q = b\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_MUL), 1);
  assert_int_equal(count_op(c.g, OP_ADD), 1);
  Node *b = graph_find_value(c.g, "q");
  assert_int_equal(b->op, OP_ADD);
  assert_int_equal(b->in[1]->op, OP_CONST);
  assert_true(b->in[1]->at.value == 6.0);
  compiled_free(&c);
}

static void compile_time_arithmetic_is_python_like(void **state) {
  MUST_COMPILE_TEXT("model m() {\n"
                    "  assert 7 // 2 == 3 and -7 // 2 == -4 and -7 % 3 == 2\n"
                    "  assert 7 / 2 == 3.5 and 2 ** 10 == 1024\n"
                    "  assert [1, 2] + [3] == [1, 2, 3] or len([1, 2] + [3]) == 3\n"
                    "  assert len([0] * 4) == 4 and range(2, 5)[1] == 3\n"
                    "  assert \"a\" + str(3) == \"a3\" and int(2.9) == 2\n"
                    "  assert pair(3)[1] == 3 and pair([1, 2])[0] == 1\n"
                    "  assert not (1 > 2) and sqrt(16) == 4\n"
                    "  input x: f32[2]\n"
                    "  output y = x\n"
                    "}\n");
}

static void and_or_short_circuit(void **state) {
  MUST_COMPILE_TEXT("model m() {\n"
                    "  assert false or true\n"
                    "  assert not (false and 1 // 0 == 0)\n"
                    "  input x: f32[2]\n"
                    "  output y = x\n"
                    "}\n");
}

static void if_and_for_run_at_compile_time(void **state) {
  Compiled c = compile_text("model m(L = 3, act = \"tanh\") {\n"
                            "  input x: f32[2, 2]\n"
                            "  h = x\n"
                            "  for k in [1, 2, 3] { h = h * k }\n"
                            "  for i in 0 .. L {\n"
                            "    if act == \"relu\" { h = relu(h) } else if act == \"tanh\" { h = tanh(h) } else { h = h }\n"
                            "  }\n"
                            "  output y = h\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_MUL), 3);
  assert_int_equal(count_op(c.g, OP_TANH), 3);
  assert_int_equal(count_op(c.g, OP_RELU), 0);
  compiled_free(&c);
}

static void defines_override_constants(void **state) {
  const char *src = "model m(N = 64, act = \"relu\", scale = 1.5) {\n"
                    "  input x: f32[N, 3]\n"
                    "  output y = x * scale\n"
                    "}\n";
  const char *defs[] = {"N=1", "scale=2"};
  Compiled c = compile_opts(src, false, defs, 2);
  MUST_COMPILE(c);
  SHAPE(c.g, "x", 1, 3);
  assert_string_equal(c.g->const_values[0], "1");
  compiled_free(&c);
  const char *bad[] = {"M=1"};
  c = compile_opts(src, false, bad, 1);
  MUST_FAIL(c, "model 'm' has no constant 'M' (its constants: N, act, scale)");
  compiled_free(&c);
  MUST_FAIL_TEXT("model m(N) {\n  input x: f32[N]\n  output y = x\n}\n",
                 "model constant 'N' has no default; give it with -D N=VALUE");
}

/* --- tensors: slicing, split, attributes ------------------------------------------------- */

static void slicing_and_indexing(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[4, 5, 6]\n"
                            "  a = x[:, 1]\n"
                            "  b = x[1:3, :, ::2]\n"
                            "  d = x[-1, -2:]\n"
                            "  e = x[:]\n"
                            "  output y = a\n"
                            "}\n");
  MUST_COMPILE(c);
  SHAPE(c.g, "a", 4, 6);
  SHAPE(c.g, "b", 2, 5, 3);
  SHAPE(c.g, "d", 2, 6);
  assert_ptr_equal(graph_find_value(c.g, "e"), graph_find_value(c.g, "x"));
  compiled_free(&c);
}

static void split_makes_slices(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input z: f32[2, 8]\n"
                            "  i, f, o, g = split(z, 4, axis=1)\n"
                            "  p, q = split(z, [3, 5], axis=-1)\n"
                            "  output y = i + g\n"
                            "}\n");
  MUST_COMPILE(c);
  SHAPE(c.g, "i", 2, 2);
  SHAPE(c.g, "q", 2, 5);
  assert_int_equal(count_op(c.g, OP_SLICE), 6);
  compiled_free(&c);
}

static void op_attributes_positional_and_named(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 3, 4]\n"
                            "  a = transpose(x, [2, 0, 1])\n"
                            "  b = reshape(x, [6, -1])\n"
                            "  s = sum(x, axis=[0, 2], keepdims=true)\n"
                            "  k = concat(x, x, axis=1)\n"
                            "  l = concat([x, x, x], axis=-1)\n"
                            "  t = transpose(x)\n"
                            "  p = permute(x, [1, 2, 0])\n"
                            "  output y = a\n"
                            "}\n");
  MUST_COMPILE(c);
  SHAPE(c.g, "a", 4, 2, 3);
  SHAPE(c.g, "b", 6, 4);
  SHAPE(c.g, "s", 1, 3, 1);
  SHAPE(c.g, "k", 2, 6, 4);
  SHAPE(c.g, "l", 2, 3, 12);
  SHAPE(c.g, "t", 2, 4, 3);
  SHAPE(c.g, "p", 3, 4, 2);
  compiled_free(&c);
}

static void numbers_next_to_tensors_become_constants(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[3]\n"
                            "  input k: i32[3]\n"
                            "  a = 2 * x + 1\n"
                            "  b = k + 1\n"
                            "  c = where(k > 0, x, -1.5)\n"
                            "  output y = a\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *b = graph_find_value(c.g, "b");
  assert_int_equal(b->dtype, DT_I32);
  assert_int_equal(b->in[1]->dtype, DT_I32);
  Node *w = graph_find_value(c.g, "c");
  assert_int_equal(w->in[0]->dtype, DT_I32);
  assert_int_equal(w->in[2]->dtype, DT_F32);
  compiled_free(&c);
  MUST_FAIL_TEXT("model m() {\n  input k: i32[3]\n  output y = k * 0.5\n}\n",
                 "0.5 is not an i32 value");
}

/* --- training mode ------------------------------------------------------------------------- */

static const char *bn_model = "model m() {\n"
                              "  input x: f32[4, 3, 5, 5]\n"
                              "  h = dropout(batchnorm(x), p=0.25)\n"
                              "  output y = h\n"
                              "}\n";

static void batchnorm_and_dropout_depend_on_mode(void **state) {
  Compiled inf = compile_opts(bn_model, false, NULL, 0);
  MUST_COMPILE(inf);
  assert_int_equal(count_op(inf.g, OP_MEAN), 0); /* running statistics */
  assert_int_equal(count_op(inf.g, OP_DROPOUT), 0);
  Compiled tr = compile_opts(bn_model, true, NULL, 0);
  MUST_COMPILE(tr);
  assert_int_equal(count_op(tr.g, OP_MEAN), 2); /* batch mean and variance */
  assert_int_equal(count_op(tr.g, OP_DROPOUT), 1);
  for (int i = 0; i < tr.g->n_nodes; i++)
    if (tr.g->nodes[i]->op == OP_MEAN)
      assert_int_equal(tr.g->nodes[i]->at.n_axes, 3); /* axes 0, 2, 3 */
  compiled_free(&inf);
  compiled_free(&tr);
}

/* --- initializers ----------------------------------------------------------------------------- */

static void auto_init_is_he_before_relu_else_xavier(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 8]\n"
                            "  h = relu(dense(x, out=16))\n"
                            "  output y = dense(h, out=4)\n"
                            "  param w: f32[8, 5] init=xavier\n"
                            "  z = x @ w\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *h = find_param(c.g, "h.weight"), *y = find_param(c.g, "y.weight"), *w = find_param(c.g, "w");
  assert_int_equal(h->init.kind, RT_INIT_HE);
  assert_int_equal(h->init.fan_in, 8);
  assert_int_equal(y->init.kind, RT_INIT_XAVIER);
  assert_int_equal(find_param(c.g, "h.bias")->init.kind, RT_INIT_ZEROS);
  /* x @ w with w [8, 5]: 8 inputs, 5 outputs */
  assert_int_equal(w->init.fan_in, 8);
  assert_int_equal(w->init.fan_out, 5);
  compiled_free(&c);
}

static void conv_fans_count_the_kernel(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[1, 6, 9, 9]\n"
                            "  output y = relu(conv2d(x, out=8, kernel=3, groups=2))\n"
                            "}\n");
  MUST_COMPILE(c);
  Node *w = find_param(c.g, "y.weight");
  SHAPE(c.g, "y.weight", 8, 3, 3, 3);
  assert_int_equal(w->init.fan_in, 27);
  assert_int_equal(w->init.fan_out, 72);
  compiled_free(&c);
}

/* --- the train section ------------------------------------------------------------------------- */

static void train_section_is_kept_and_checked(void **state) {
  Compiled c = compile_text("model m() {\n"
                            "  input x: f32[2, 3]\n"
                            "  loss = mean(x)\n"
                            "  output y = x\n"
                            "}\n"
                            "train m {\n"
                            "  minimize loss\n"
                            "  optimizer adam(lr=0.001)\n"
                            "  epochs 3\n"
                            "}\n");
  MUST_COMPILE(c);
  assert_true(c.g->has_train);
  assert_int_equal(c.g->n_train, 3);
  assert_string_equal(c.g->minimize, "loss");
  assert_string_equal(c.g->train[1].key, "optimizer");
  compiled_free(&c);
  MUST_FAIL_TEXT("model m() {\n  input x: f32[2, 3]\n  output y = x\n}\n"
                 "train m {\n  minimize y\n}\n",
                 "minimize needs a scalar f32 loss, but 'y' is f32[2, 3]");
}

static void every_statement_of_a_model_may_be_separated_by_semicolons(void **state) {
  MUST_COMPILE_TEXT("model m() { input x: f32[2]; h = x + 1; output y = h }\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(layer_params_take_the_binding_name),
      cmocka_unit_test(several_layers_in_one_statement_add_the_layer_name),
      cmocka_unit_test(loops_index_names_and_reuse_dedupes),
      cmocka_unit_test(many_reused_names_stay_unique),
      cmocka_unit_test(explicit_names_are_literal_and_nest),
      cmocka_unit_test(user_blocks_shadow_the_prelude_but_not_inside_it),
      cmocka_unit_test(blocks_defaults_and_several_results),
      cmocka_unit_test(compile_time_arithmetic_is_python_like),
      cmocka_unit_test(and_or_short_circuit),
      cmocka_unit_test(if_and_for_run_at_compile_time),
      cmocka_unit_test(defines_override_constants),
      cmocka_unit_test(slicing_and_indexing),
      cmocka_unit_test(split_makes_slices),
      cmocka_unit_test(op_attributes_positional_and_named),
      cmocka_unit_test(numbers_next_to_tensors_become_constants),
      cmocka_unit_test(batchnorm_and_dropout_depend_on_mode),
      cmocka_unit_test(auto_init_is_he_before_relu_else_xavier),
      cmocka_unit_test(conv_fans_count_the_kernel),
      cmocka_unit_test(train_section_is_kept_and_checked),
      cmocka_unit_test(every_statement_of_a_model_may_be_separated_by_semicolons),
  };
  return cmocka_run_group_tests_name("elab", tests, NULL, NULL);
}
