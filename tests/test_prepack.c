/*
 * test_prepack.c: prepacked weights for inference (passes/prepack.c and
 * the prepare step of codegen/program.c), and weights transposed once per
 * training step (passes/step_transpose.c).
 *
 *  1. Bit for bit: models/mlp.kiln and models/lenet5.kiln at N=1 and N=3,
 *     compiled with and without the pass, on the same parameters and
 *     inputs, write the same output bytes; the pass rewrote every dense
 *     layer's matmul, the plan counts the prepacked bytes, and at N=1 the
 *     GEMM micro-kernels read B in place (NAME.gemm_direct in the IR).
 *  2. Stale weights: after a first run, new parameter values (written in
 *     place then program_prepare, or bound as new buffers) give what a
 *     program without prepacking computes on them.
 *  3. Constant generators (arange, full) and what is computed from them
 *     alone run in the prepare step: the transformer's positional encoding
 *     and the LSTM's product of its zero state leave the step, which
 *     writes the same output bytes with fewer kernels.
 *  4. Graphs with a training step are left alone.
 *  5. Batchnorm folded into convolution weights (passes/fold.c): resnet_small
 *     (every batchnorm follows a convolution), mobilenet_v2 (depthwise
 *     convolutions) and se_resnet (squeeze-and-excitation), with random batchnorm parameters and
 *     statistics, compiled with and without the fold on the same values:
 *     every batchnorm of resnet_small is folded, the step computes fewer
 *     multiplications of 4-D values, and the outputs agree within 1e-4 of their largest value
 *     (the fold changes the rounding, not the function).
 *  6. Training steps (passes/step_transpose.c): mlp, lstm and the
 *     transformer's dense weights transposed once per step where the GEMMs
 *     would gather them more than once, each step's loss and updates the
 *     plain step's bits.
 */
#include <math.h>
#include <string.h>

#include "kiln_test.h"
#include "program.h"
#include "rt_pool.h"

typedef struct Model {
  Compiled c;
  Program p;
  void **pbuf; /* per node id: a parameter's buffer */
  Node *out;
} Model;

static char *model_text(const char *name) { return read_model(name); }

/* Compiles `name` at batch n, prepacked or not, parameters from seed. */
static void model_open(Model *m, const char *name, int n, bool prepack, uint64_t seed) {
  char def[32], err[4096];
  snprintf(def, sizeof def, "N=%d", n);
  const char *defs[] = {def};
  char *text = model_text(name);
  m->c = compile_opts(text, false, defs, 1);
  free(text);
  MUST_COMPILE(m->c);
  Graph *g = m->c.g;
  if (prepack) {
    assert_true(pass_prepack(g) > 0);
    assert_true(graph_verify(g, err, sizeof err));
  }
  m->out = g->outputs[0].node;
  if (!program_compile(&m->p, g, &m->out, 1, &(PlanOpts){0},
                       &(CgOpts){.opt_level = 3, .verify = true}, err, sizeof err))
    fail_msg("%s: %s", name, err);
  m->pbuf = calloc((size_t)g->n_nodes, sizeof(void *));
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM) {
      m->pbuf[i] = malloc((size_t)node_bytes(g->nodes[i]));
      param_init_fill(g->nodes[i], seed, m->pbuf[i]);
      program_bind_param(&m->p, g->nodes[i], m->pbuf[i]);
    }
}

static void model_close(Model *m) {
  for (int i = 0; i < m->c.g->n_nodes; i++)
    free(m->pbuf[i]);
  free(m->pbuf);
  program_free(&m->p);
  compiled_free(&m->c);
}

/* Fills every input (seeded by name), runs, returns the output. */
static const void *model_run(Model *m) {
  Graph *g = m->c.g;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    float *x = n->op == OP_INPUT ? program_value(&m->p, n) : NULL;
    for (int64_t k = 0; x && n->dtype == DT_I32 && k < shape_numel(&n->shape); k++)
      ((int32_t *)x)[k] = (int32_t)(k % 3); /* token ids and labels */
    if (!x || n->dtype != DT_F32)
      continue;
    uint64_t s = rng_seed_for(7, n->name);
    for (int64_t k = 0; k < shape_numel(&n->shape); k++)
      x[k] = (float)rng_normal(s, (uint64_t)k);
  }
  program_run(&m->p, 0);
  return program_value(&m->p, m->out);
}

static void same_output(Model *a, Model *b, const char *what) {
  const void *x = model_run(a), *y = model_run(b);
  if (memcmp(x, y, (size_t)node_bytes(a->out)) != 0)
    fail_msg("%s: prepacked and plain outputs differ", what);
}

static int count_matmul_tb(const Graph *g) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += g->nodes[i]->op == OP_MATMUL && g->nodes[i]->at.tb;
  return n;
}

/* The number of GEMM micro-kernels reading B in place in g's module. */
static int direct_kernels(Model *m) {
  Graph *g = m->c.g;
  char err[4096];
  int *slot = calloc((size_t)g->n_nodes, sizeof(int));
  for (int i = 0, s = 1; i < g->n_nodes; i++)
    if (node_persistent(g->nodes[i]))
      slot[i] = s++;
  CgCall *calls = calloc((size_t)m->p.plan.n_order + 1, sizeof *calls);
  int nc = 0;
  Cg *cg = cg_new("t", &(CgOpts){.opt_level = 0}, err, sizeof err);
  if (!program_calls(g, &m->p.plan, slot, calls, &nc, err, sizeof err) ||
      !cg_step(cg, "step", calls, nc, err, sizeof err))
    fail_msg("%s", err);
  char *ir = cg_print_ir(cg);
  int n = 0;
  for (const char *p = ir; (p = strstr(p, "define internal void @")); p++) {
    const char *eol = strchr(p, '\n');
    const char *d = strstr(p, ".gemm_direct");
    n += d && eol && d < eol;
  }
  free(ir);
  cg_free(cg);
  free(calls);
  free(slot);
  return n;
}

static void bit_exact(void **state) {
  const char *models[] = {"mlp.kiln", "lenet5.kiln"};
  const int batches[] = {1, 3};
  rt_set_threads(2);
  for (int i = 0; i < 2; i++)
    for (int b = 0; b < 2; b++) {
      char what[64];
      snprintf(what, sizeof what, "%s N=%d", models[i], batches[b]);
      Model plain, packed;
      model_open(&plain, models[i], batches[b], false, 3);
      model_open(&packed, models[i], batches[b], true, 3);
      assert_int_equal(count_matmul_tb(packed.c.g), 0);
      assert_true(count_matmul_tb(plain.c.g) >= 3); /* the dense layers */
      /* the transposes, and what else depends on parameters only (bias reshapes) */
      assert_true(packed.p.n_derived >= count_matmul_tb(plain.c.g));
      assert_true(packed.p.plan.prepacked > 0);
      assert_int_equal(plain.p.plan.prepacked, 0);
      assert_true(packed.p.n_kernels <= plain.p.n_kernels); /* those run in prepare */
      if (strcmp(models[i], "lenet5.kiln") == 0) /* the conv biases' reshapes moved too */
        assert_true(packed.p.n_derived > count_matmul_tb(plain.c.g) &&
                    packed.p.n_kernels < plain.p.n_kernels);
      same_output(&plain, &packed, what);
      if (batches[b] == 1) /* every dense layer reads its transposed weight in place */
        assert_int_equal(direct_kernels(&packed), count_matmul_tb(plain.c.g));
      print_message("  %-18s %d weight-derived values (%lld bytes), identical output\n", what,
                    packed.p.n_derived, (long long)packed.p.plan.prepacked);
      model_close(&plain);
      model_close(&packed);
    }
  rt_set_threads(1);
}

/* New parameter values after a first run: in place, then program_prepare;
 * or new buffers bound (the next run prepares by itself). */
static void stale_weights(void **state) {
  Model plain, packed;
  model_open(&plain, "mlp.kiln", 1, false, 5);
  model_open(&packed, "mlp.kiln", 1, true, 3);
  const void *first = model_run(&packed);
  char *old = malloc((size_t)node_bytes(packed.out));
  memcpy(old, first, (size_t)node_bytes(packed.out));
  Graph *g = packed.c.g;
  for (int i = 0; i < g->n_nodes; i++) /* seed 5 in place */
    if (g->nodes[i]->op == OP_PARAM)
      param_init_fill(g->nodes[i], 5, packed.pbuf[i]);
  program_prepare(&packed.p);
  same_output(&plain, &packed, "mlp: weights changed in place");
  assert_true(memcmp(old, program_value(&packed.p, packed.out), (size_t)node_bytes(packed.out)));
  Model plain9;
  model_open(&plain9, "mlp.kiln", 1, false, 9);
  for (int i = 0; i < g->n_nodes; i++) /* seed 9 in new buffers */
    if (g->nodes[i]->op == OP_PARAM) {
      free(packed.pbuf[i]);
      packed.pbuf[i] = malloc((size_t)node_bytes(g->nodes[i]));
      param_init_fill(g->nodes[i], 9, packed.pbuf[i]);
      program_bind_param(&packed.p, g->nodes[i], packed.pbuf[i]);
    }
  same_output(&plain9, &packed, "mlp: new weight buffers bound");
  free(old);
  model_close(&plain9);
  model_close(&plain);
  model_close(&packed);
}

/* The number of g's nodes of op `op` that the step computes (not derived). */
static int step_nodes(const Graph *g, Op op) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += g->nodes[i]->op == op && !g->nodes[i]->derived;
  return n;
}

/* Constant generators: the transformer's positional encoding (sines and
 * cosines of arange's positions) and the LSTM's first product of its zero
 * hidden state (full) are computed by the prepare step, not on every call; the
 * outputs keep their bits. */
static void generators_hoisted(void **state) {
  const char *models[] = {"transformer.kiln", "lstm.kiln"};
  for (int i = 0; i < 2; i++) {
    Model plain, packed;
    model_open(&plain, models[i], 2, false, 3);
    model_open(&packed, models[i], 2, true, 3);
    const Graph *gp = plain.c.g, *gk = packed.c.g;
    if (i == 0) {
      assert_true(step_nodes(gp, OP_SIN) == 1 && step_nodes(gp, OP_COS) == 1);
      assert_true(step_nodes(gp, OP_ARANGE) == 2);
      assert_int_equal(step_nodes(gk, OP_SIN) + step_nodes(gk, OP_COS), 0);
      assert_int_equal(step_nodes(gk, OP_ARANGE), 0);
    } else {
      /* h's zeros go with their product by the hidden weight; c's zeros,
       * read by f * c with f computed in the step, stay in that kernel */
      assert_true(step_nodes(gp, OP_FULL) == 2 && step_nodes(gk, OP_FULL) == 1);
      assert_true(step_nodes(gk, OP_MATMUL) < step_nodes(gp, OP_MATMUL));
    }
    assert_true(packed.p.n_kernels < plain.p.n_kernels);
    same_output(&plain, &packed, models[i]);
    print_message("  %-18s %d kernels in the step, %d unhoisted; identical output\n", models[i],
                  packed.p.n_kernels, plain.p.n_kernels);
    model_close(&plain);
    model_close(&packed);
  }
}

static void training_untouched(void **state) {
  char *text = model_text("mlp.kiln");
  Compiled c = compile_opts(text, true, NULL, 0);
  MUST_COMPILE(c);
  int before = c.g->n_nodes;
  assert_int_equal(pass_prepack(c.g), 0); /* built for training */
  assert_int_equal(c.g->n_nodes, before);
  compiled_free(&c);
  c = compile_opts(text, false, NULL, 0);
  TrainStep ts;
  if (c.g->has_train) {
    compiled_free(&c);
    c = compile_opts(text, true, NULL, 0);
    build_train_step(c.g, &c.d, &ts);
    assert_int_equal(pass_prepack(c.g), 0); /* updates: parameters change */
  }
  compiled_free(&c);
  free(text);
}

/* One training step of c (every parameter from seed 3, f32 inputs seeded by
 * name, i32 inputs 1, 2, 1, ..., lr 0.01, step 1): the roots' bytes. */
static char **train_step_bits(Compiled *c, TrainStep *ts) {
  Graph *g = c->g;
  Program p;
  char err[4096];
  if (!program_compile(&p, g, ts->roots, ts->n_roots, &(PlanOpts){0},
                       &(CgOpts){.opt_level = 2, .verify = true}, err, sizeof err))
    fail_msg("%s: %s", g->name, err);
  void **pbuf = calloc((size_t)g->n_nodes, sizeof(void *));
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (n->op == OP_PARAM) {
      pbuf[i] = malloc((size_t)node_bytes(n) + 1);
      param_init_fill(n, 3, pbuf[i]);
      program_bind_param(&p, n, pbuf[i]);
    }
    void *at = n->op == OP_INPUT ? program_value(&p, n) : NULL;
    for (int64_t k = 0; at && k < shape_numel(&n->shape); k++)
      if (n->dtype == DT_F32)
        ((float *)at)[k] = n == ts->lr ? 0.01f : (float)rng_normal(rng_seed_for(7, n->name), (uint64_t)k);
      else
        ((int32_t *)at)[k] = (int32_t)(k % 2 + 1);
  }
  program_run(&p, 1);
  char **out = calloc((size_t)ts->n_roots, sizeof(char *));
  for (int r = 0; r < ts->n_roots; r++) {
    out[r] = malloc((size_t)node_bytes(ts->roots[r]) + 1);
    memcpy(out[r], program_value(&p, ts->roots[r]), (size_t)node_bytes(ts->roots[r]));
  }
  for (int i = 0; i < g->n_nodes; i++)
    free(pbuf[i]);
  free(pbuf);
  program_free(&p);
  return out;
}

/* A training step (passes/step_transpose.c): a dense layer's matmul reads
 * a transpose of its weight made in the step, one per weight, where the
 * GEMMs would pack the weight more than once (192 rows or more, or several
 * matmuls: the LSTM's hidden weight in each of its 16 steps), and the loss
 * and every update are the plain step's bits. */
static void step_transposes(void **state) {
  const struct {
    const char *name, *def;
    int weights;
  } cases[] = {{"mlp.kiln", "N=3", 0},          /* 3 rows: packed once each */
               {"mlp.kiln", "N=200", 3},        /* 200 rows: in blocks */
               {"lstm.kiln", "N=3", 1},         /* the hidden weight: 16 matmuls */
               {"transformer.kiln", "N=12", 12}}; /* 192 rows but the head's */
  for (int m = 0; m < countof(cases); m++) {
    char *text = model_text(cases[m].name), err[512];
    const char *defs[] = {cases[m].def};
    Compiled a = compile_opts(text, true, defs, 1), b = compile_opts(text, true, defs, 1);
    free(text);
    MUST_COMPILE(a);
    MUST_COMPILE(b);
    TrainStep ta, tb;
    build_train_step(a.g, &a.d, &ta);
    build_train_step(b.g, &b.d, &tb);
    int before = count_matmul_tb(b.g), n = pass_step_transposes(b.g), made = 0;
    assert_true(graph_verify(b.g, err, sizeof err));
    assert_true(n >= cases[m].weights);
    assert_int_equal(count_matmul_tb(b.g), before - n);
    for (int i = 0; i < b.g->n_nodes; i++) {
      const Node *t = b.g->nodes[i];
      made += t->op == OP_TRANSPOSE && t->in[0]->op == OP_PARAM;
    }
    if (made != cases[m].weights)
      fail_msg("%s (%s): %d weights transposed, expected %d", cases[m].name, cases[m].def, made,
               cases[m].weights);
    assert_int_equal(pass_step_transposes(b.g), 0); /* nothing left */
    char **x = train_step_bits(&a, &ta), **y = train_step_bits(&b, &tb);
    for (int r = 0; r < ta.n_roots; r++) {
      if (memcmp(x[r], y[r], (size_t)node_bytes(ta.roots[r])) != 0)
        fail_msg("%s: %s differs with the weights transposed in the step", cases[m].name,
                 ta.roots[r]->name);
      free(x[r]), free(y[r]);
    }
    free(x), free(y);
    compiled_free(&a);
    compiled_free(&b);
  }
  Compiled c = compile_opts("model m() {\n  input x: f32[2, 3]\n  output y = dense(x, out=4)\n}\n",
                            false, NULL, 0);
  MUST_COMPILE(c);
  assert_int_equal(pass_step_transposes(c.g), 0); /* an inference graph: prepack's */
  compiled_free(&c);
}

/* Parameters for the fold test: he/xavier weights as initialized, and
 * every vector (biases, batchnorm weight, bias and statistics) random
 * around its initial value, running variances positive. */
static void fold_params(const Node *p, void *data) {
  param_init_fill(p, 4, data);
  if (p->shape.rank != 1 || p->dtype != DT_F32)
    return;
  float *x = data;
  uint64_t s = rng_seed_for(11, p->name);
  size_t len = strlen(p->name);
  bool var = len > 11 && strcmp(p->name + len - 11, "running_var") == 0;
  for (int64_t k = 0; k < shape_numel(&p->shape); k++) {
    double r = rng_normal(s, (uint64_t)k);
    x[k] = var ? (float)(0.5 + fabs(r)) : x[k] + (float)(0.3 * r);
  }
}

/* Compiles model `name` (small sizes, inference) with or without the
 * fold and runs it; *folded gets the number of chains folded. */
static const float *fold_run(Model *m, const char *name, bool fold, int *folded) {
  char err[4096], *text = read_model(name);
  m->c = compile_model_small(text, false);
  free(text);
  MUST_COMPILE(m->c);
  Graph *g = m->c.g;
  *folded = fold ? pass_fold_affine(g) : 0;
  pass_prepack(g);
  assert_true(graph_verify(g, err, sizeof err));
  m->out = g->outputs[0].node;
  if (!program_compile(&m->p, g, &m->out, 1, &(PlanOpts){0}, &(CgOpts){.opt_level = 1}, err,
                       sizeof err))
    fail_msg("%s: %s", name, err);
  m->pbuf = calloc((size_t)g->n_nodes, sizeof(void *));
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM) {
      m->pbuf[i] = malloc((size_t)node_bytes(g->nodes[i]));
      fold_params(g->nodes[i], m->pbuf[i]);
      program_bind_param(&m->p, g->nodes[i], m->pbuf[i]);
    }
  return model_run(m);
}

/* Multiplications of 4-D values a step computes (the prepare step's aside). */
static int step_muls(Model *m) {
  Graph *g = m->c.g;
  bool *live = calloc((size_t)g->n_nodes, sizeof(bool));
  graph_live(g, &m->out, 1, live);
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += live[i] && !g->nodes[i]->derived && g->nodes[i]->op == OP_MUL &&
         g->nodes[i]->shape.rank == 4;
  free(live);
  return n;
}

static void folded_batchnorm(void **state) {
  const char *cases[] = {"resnet_small.kiln", "mobilenet_v2.kiln", "se_resnet.kiln"};
  for (int i = 0; i < 3; i++) {
    Model plain, folded;
    int n0, n1;
    const float *a = fold_run(&plain, cases[i], false, &n0);
    const float *b = fold_run(&folded, cases[i], true, &n1);
    assert_true(n1 > 0);
    assert_true(step_muls(&folded) < step_muls(&plain));
    int bn = 0;
    for (int k = 0; k < plain.c.g->n_nodes; k++)
      bn += strstr(plain.c.g->nodes[k]->name, "running_var") != NULL;
    if (i == 0)
      assert_int_equal(n1, bn); /* every batchnorm of resnet_small */
    int64_t n = shape_numel(&plain.out->shape), worst = 0;
    double big = 0, diff = 0;
    for (int64_t k = 0; k < n; k++) {
      big = fmax(big, fabs(a[k]));
      if (fabs(a[k] - b[k]) > diff)
        diff = fabs(a[k] - b[k]), worst = k;
    }
    if (!(diff <= 1e-4 * big + 1e-6))
      fail_msg("%s: folded output differs by %g at %lld (%g vs %g), largest value %g",
               cases[i], diff, (long long)worst, (double)b[worst], (double)a[worst], big);
    print_message("  %-18s %d of %d batchnorms folded, %d -> %d multiplications per step, "
                  "max diff %.3g (of %.3g)\n", cases[i], n1, bn, step_muls(&plain),
                  step_muls(&folded), diff, big);
    model_close(&plain);
    model_close(&folded);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(bit_exact), cmocka_unit_test(stale_weights),
                                     cmocka_unit_test(generators_hoisted),
                                     cmocka_unit_test(training_untouched),
                                     cmocka_unit_test(step_transposes),
                                     cmocka_unit_test(folded_batchnorm)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
