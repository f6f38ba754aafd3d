/*
 * kiln_test.h: helpers shared by the CMocka tests of the frontend.
 *
 * compile_text() builds a model from source text the way the driver does
 * (prelude included) and returns the graph, or NULL with the error text in
 * t->msg.  Each Compiled owns its arena; compiled_free releases it.
 */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"
#include "passes.h"

typedef struct Compiled {
  Arena *a;
  Diag d;
  const Source *src;
  CompileOpts o;
  Graph *g;
  const char *msg; /* error text, or NULL */
} Compiled;

static void compiled_run(void *ud) {
  Compiled *c = ud;
  c->g = frontend_compile(c->a, &c->d, c->src, &c->o);
}

/* Compiles text named "t.kiln"; defines are "NAME=VALUE" strings. */
static inline Compiled compile_opts(const char *text, bool training, const char **defs,
                                    int n_defs) {
  Compiled c = {0};
  c.a = arena_new();
  diag_init(&c.d);
  c.src = source_from_string(c.a, "t.kiln", text, strlen(text));
  Define *d = arena_alloc(c.a, sizeof(Define) * (size_t)(n_defs + 1));
  for (int i = 0; i < n_defs; i++)
    define_parse(c.a, defs[i], &d[i]);
  c.o.defines = d;
  c.o.n_defines = n_defs;
  c.o.training = training;
  if (diag_protect(&c.d, compiled_run, &c)) {
    c.g = NULL;
    c.msg = c.d.msg;
  } else {
    char err[512];
    if (!graph_verify(c.g, err, sizeof err))
      fail_msg("graph_verify: %s", err);
  }
  return c;
}

static inline Compiled compile_text(const char *text) { return compile_opts(text, false, NULL, 0); }

static inline void compiled_free(Compiled *c) {
  diag_free(&c->d);
  arena_free(c->a);
}

/* The whole-model tests (test_models.c, test_memplan.c, test_lower.c,
 * test_codegen.c, test_fuse.c, test_cuda_nvrtc.c) run models/ with these
 * constants overridden where a model declares them (model NULL:
 * any model that has the constant, else only the model of that name): an
 * image size H, a base width, a classifier width (fc_width), as large
 * ImageNet-sized networks have, so that each model evaluates in
 * milliseconds; and the sizes of the zoo's larger networks:
 *  - resnet50: H=64 and depth=14, one bottleneck per stage.  At H=32 its
 *    last stage is 1x1, so batchnorm has N values per channel (one at
 *    test_memplan's N=1: an error; two at test_lower's N=2); and the 16
 *    bottlenecks of depth 50 explode the gradient at initialization (at
 *    H=64, N=8 the stem's is 60x the classifier's), amplifying f32
 *    rounding with it: the stem's gradient is then 0.5% (compiled) and
 *    0.1% (reference evaluator) of its scale away from float64 PyTorch,
 *    where at depth 14 compiled and reference agree to 2e-6.  Depth 50's
 *    layers are counted in test_models.c (parameters, FLOPs); tests/zoo.sh
 *    checks the bottleneck against PyTorch at depth 14 too.
 *  - densenet: growth 4, 3 layers; unet: S=16, base 4 (the defaults take
 *    seconds per step in the reference evaluator, minutes in kir_eval);
 *    se_resnet: one block per stage (the first an identity shortcut, the
 *    others projections).  The tests that compile every step (test_codegen,
 *    test_fuse, test_cuda_nvrtc) take time by the kernel, not the element:
 *    fewer layers are what makes them faster.
 * Batch sizes stay as written unless a test says otherwise
 * (compile_model_small_with).  (test_model_grads.c has a table of its own.) */
static const struct {
  const char *model, *name, *value;
} kt_small_consts[] = {
    {NULL, "H", "32"},           {NULL, "width", "4"},          {NULL, "fc_width", "16"},
    {"resnet50", "H", "64"},     {"resnet50", "depth", "14"},   {"densenet", "growth", "4"},
    {"densenet", "layers", "3"}, {"unet", "S", "16"},           {"unet", "base", "4"},
    {"se_resnet", "blocks", "1"},
};

/* compile_opts(text, training) with kt_small_consts for the constants the
 * model declares (read from a first compilation with the defaults), and
 * then `extra` ("NAME=VALUE", e.g. a batch size "N=1"), each applied only
 * where the model declares NAME, and over kt_small_consts' value. */
static inline Compiled compile_model_small_with(const char *text, bool training,
                                                const char *const *extra, int n_extra) {
  Compiled c0 = compile_opts(text, training, NULL, 0);
  if (!c0.g)
    return c0;
  enum { MAX_DEFS = 32 };
  const char *defs[MAX_DEFS];
  char def_text[MAX_DEFS][64];
  int n = 0;
  for (int i = 0; i < c0.g->n_consts; i++) {
    const char *name = c0.g->const_names[i], *value = NULL;
    for (size_t j = 0; j < sizeof kt_small_consts / sizeof kt_small_consts[0]; j++)
      if (strcmp(name, kt_small_consts[j].name) == 0 &&
          (!kt_small_consts[j].model || strcmp(c0.g->name, kt_small_consts[j].model) == 0))
        value = kt_small_consts[j].value; /* a model's own entry comes after the general one */
    size_t len = strlen(name);
    for (int j = 0; j < n_extra; j++)
      if (strncmp(extra[j], name, len) == 0 && extra[j][len] == '=')
        value = extra[j] + len + 1;
    if (value && n < MAX_DEFS) {
      snprintf(def_text[n], sizeof def_text[n], "%s=%s", name, value);
      defs[n] = def_text[n];
      n++;
    }
  }
  compiled_free(&c0);
  return compile_opts(text, training, defs, n);
}

static inline Compiled compile_model_small(const char *text, bool training) {
  return compile_model_small_with(text, training, NULL, 0);
}

/* What a step of c computes: its outputs, or with `train` the whole
 * training step (built into c's graph): the roots, n_roots in *n. */
static inline Node **kt_step_roots(Compiled *c, bool train, int *n) {
  TrainStep ts = {.n_roots = c->g->n_outputs};
  ts.roots = arena_alloc(c->a, sizeof(Node *) * (size_t)(ts.n_roots + 1));
  for (int i = 0; i < ts.n_roots; i++)
    ts.roots[i] = c->g->outputs[i].node;
  if (train)
    build_train_step(c->g, &c->d, &ts);
  *n = ts.n_roots;
  return ts.roots;
}

/* Appends loss = sum(y * r) to g, r a new f32 input shaped like the value
 * `y`: a scalar whose gradient reaches every input of y (through random
 * weights r), for tests that differentiate a case's graph.  *r_out gets r. */
static inline Node *probe_loss(Graph *g, Node **r_out) {
  Node *y = graph_find_value(g, "y");
  Node *r = graph_input(g, "r", DT_F32, y->shape, y->loc);
  Node *yr[] = {y, r}, *m = graph_add_checked(g, OP_MUL, yr, 2, NULL, y->loc);
  Attrs at;
  attrs_default(OP_SUM, &at);
  *r_out = r;
  return graph_add_checked(g, OP_SUM, &m, 1, &at, y->loc);
}

/* Asserts that text compiles. */
#define MUST_COMPILE(c)                                                                 \
  do {                                                                                  \
    if (!(c).g)                                                                         \
      fail_msg("unexpected error:\n%s", (c).msg);                                       \
  } while (0)

/* Asserts that text fails with an error containing `sub`. */
#define MUST_FAIL(c, sub)                                                               \
  do {                                                                                  \
    if ((c).g)                                                                          \
      fail_msg("compiled, but expected an error containing '%s'", sub);                \
    if (!strstr((c).msg, sub))                                                          \
      fail_msg("error does not contain '%s':\n%s", sub, (c).msg);                      \
  } while (0)

/* Asserts that text compiles, and frees the result: for a model whose
 * checks are its own asserts. */
#define MUST_COMPILE_TEXT(text)                                                         \
  do {                                                                                  \
    Compiled c_ = compile_text(text);                                                   \
    MUST_COMPILE(c_);                                                                   \
    compiled_free(&c_);                                                                 \
  } while (0)

/* Asserts that text fails with an error containing `sub`, and frees it. */
#define MUST_FAIL_TEXT(text, sub)                                                       \
  do {                                                                                  \
    Compiled c_ = compile_text(text);                                                   \
    MUST_FAIL(c_, sub);                                                                 \
    compiled_free(&c_);                                                                 \
  } while (0)

static inline Node *find_param(Graph *g, const char *name) {
  Node *n = graph_find(g, name);
  return n && n->op == OP_PARAM ? n : NULL;
}

static inline int count_op(const Graph *g, Op op) {
  int k = 0;
  for (int i = 0; i < g->n_nodes; i++)
    k += g->nodes[i]->op == op;
  return k;
}

/* CI runs every test twice: built normally, then with ASan and UBSan.  A
 * sanitizer build's whole-model tests leave these models out: every op and
 * layer they have is in the others (resnet18: resnet_small's and
 * se_resnet's basic blocks; resnet50: the same convolutions, batchnorms,
 * ReLUs and residual adds as bottlenecks, a padded max pooling as in
 * test_lower's cases; vgg11: 3x3 convolutions, ReLU, max pooling, dense
 * layers and dropout, as in unet, lenet5 and lm; vgg_small: vgg11's with
 * resnet_small's batchnorm), and they would make that run ~2 minutes
 * longer, the sanitizers adding nothing to how those ops are computed,
 * which the normal build checks for every model.  KILN_TEST_ALL_MODELS=1
 * takes them anyway; tests/zoo.sh leaves out the same fixtures when kiln
 * is linked with ASan. */
#if defined(__SANITIZE_ADDRESS__)
#define KT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_SANITIZED 1
#endif
#endif
#ifndef KT_SANITIZED
#define KT_SANITIZED 0
#endif
static const char *const kt_sanitizer_skip[] = {"resnet18.kiln", "resnet50.kiln", "vgg11.kiln",
                                                "vgg_small.kiln"};

/* Whether the whole-model tests take models/`file` in this build. */
static inline bool kt_model_wanted(const char *file) {
  const char *all = getenv("KILN_TEST_ALL_MODELS");
  if (!KT_SANITIZED || (all && strcmp(all, "0") != 0))
    return true;
  for (size_t i = 0; i < sizeof kt_sanitizer_skip / sizeof kt_sanitizer_skip[0]; i++)
    if (strcmp(file, kt_sanitizer_skip[i]) == 0)
      return false;
  return true;
}

/* The models/ files the whole-model tests take (kt_model_wanted), sorted,
 * and their text (malloc'ed). */
#include <dirent.h>
static inline int list_models(char names[][64], int max) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/models", KILN_SOURCE_DIR);
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < max;) {
    size_t l = strlen(e->d_name);
    if (l > 5 && l < 64 && strcmp(e->d_name + l - 5, ".kiln") == 0 && kt_model_wanted(e->d_name))
      memcpy(names[n++], e->d_name, l + 1);
  }
  closedir(d);
  qsort(names, (size_t)n, 64, (int (*)(const void *, const void *))strcmp);
  return n;
}

static inline char *read_model(const char *name) {
  char path[4096], err[256];
  snprintf(path, sizeof path, "%s/models/%s", KILN_SOURCE_DIR, name);
  void *data;
  size_t len;
  if (rt_read_file(path, &data, &len, err, sizeof err) != RT_OK)
    fail_msg("%s", err);
  char *s = realloc(data, len + 1);
  s[len] = 0;
  return s;
}

/* Calls fn for every model of models/ at kt_small_consts' sizes, its
 * inference step and then its training step: the graph, the step's roots,
 * the file's name and "NAME (inference)" or "NAME (training step)". */
typedef void (*KtStepFn)(Graph *g, Node **roots, int n, const char *file, bool train,
                         const char *what);
static inline void kt_every_model_step(KtStepFn fn) {
  char names[32][64], what[128];
  int nm = list_models(names, 32);
  assert_true(nm >= 4);
  for (int m = 0; m < nm; m++) {
    char *text = read_model(names[m]);
    for (int train = 0; train < 2; train++) {
      Compiled c = compile_model_small(text, train);
      MUST_COMPILE(c);
      int n;
      Node **roots = kt_step_roots(&c, train, &n);
      snprintf(what, sizeof what, "%.63s (%s)", names[m], train ? "training step" : "inference");
      fn(c.g, roots, n, names[m], train, what);
      compiled_free(&c);
    }
    free(text);
  }
}

#endif
