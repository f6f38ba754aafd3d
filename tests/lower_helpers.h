/*
 * lower_helpers.h: checking Kernel IR against the reference evaluator, for
 * tests/test_lower.c: tolerances and the comparison, lowering a node with
 * its kernel verified, running a kernel with kir_eval on buffers indexed by
 * node id, and checking a whole model (each kernel on the reference's
 * inputs, then the whole graph through kir_eval alone).
 *
 * Everything is static (inline), so the including file gets private
 * helpers and nothing to link (as eval_helpers.h).
 */
#ifndef KILN_TESTS_LOWER_HELPERS_H
#define KILN_TESTS_LOWER_HELPERS_H

#include <math.h>

#include "kiln_test.h"
#include "kir.h"

/* --- tolerances and checks ------------------------------------------------------ */

/* |got - want| <= abs * unit + rel * |want|, where unit is 1 (T_ELT), the
 * node's largest finite |want| (T_SCALED), or the element's magnitude (T_MAG:
 * the same kernel run on the absolute values of the inputs, see mags()). */
typedef enum TolKind { T_ELT, T_SCALED, T_MAG } TolKind;
typedef struct Tol {
  double abs, rel; /* both 0: bit-exact */
  TolKind kind;
} Tol;

static const Tol EXACT = {0, 0, T_ELT}, ELEM = {1e-6, 1e-6, T_ELT}, RED = {1e-5, 1e-5, T_ELT};
static double worst[OP_COUNT]; /* the largest error seen, relative to the bound */

static inline Tol op_tol(const Node *n) {
  static const char kind[OP_COUNT] = {
      [OP_NEG] = 'x', [OP_ABS] = 'x', [OP_RELU] = 'x', [OP_CLAMP] = 'x', [OP_SQRT] = 'x',
      [OP_ADD] = 'x', [OP_SUB] = 'x', [OP_MUL] = 'x', [OP_DIV] = 'x', [OP_MAXIMUM] = 'x',
      [OP_MINIMUM] = 'x', [OP_EQUAL] = 'x', [OP_NOT_EQUAL] = 'x', [OP_LESS] = 'x',
      [OP_LESS_EQUAL] = 'x', [OP_GREATER] = 'x', [OP_GREATER_EQUAL] = 'x', [OP_WHERE] = 'x',
      [OP_CAST] = 'x', [OP_MAX] = 'x', [OP_ARGMAX] = 'x', [OP_RESHAPE] = 'x',
      [OP_TRANSPOSE] = 'x', [OP_BROADCAST_TO] = 'x', [OP_SLICE] = 'x', [OP_CONCAT] = 'x',
      [OP_FULL] = 'x', [OP_ARANGE] = 'x', [OP_MAXPOOL2D] = 'x', [OP_EMBEDDING] = 'x',
      [OP_STOP_GRADIENT] = 'x', [OP_SLICE_BACK] = 'x', [OP_DROPOUT] = 'x',
      [OP_EXP] = 'e', [OP_LOG] = 'e', [OP_RSQRT] = 'e', [OP_LEAKY_RELU] = 'e', [OP_ELU] = 'e',
      [OP_SIGMOID] = 'e', [OP_TANH] = 'e', [OP_GELU] = 'e', [OP_SOFTPLUS] = 'e', [OP_SIN] = 'e',
      [OP_COS] = 'e', [OP_POW] = 'e', [OP_GELU_BACK] = 'e', [OP_RANDN] = 'x'};
  if (kind[n->op] == 'x' || (n->op == OP_ADD_N && n->n_in <= 2) ||
      (n->op == OP_UPSAMPLE && n->at.mode == 0) || (n->op == OP_SUM && n->dtype == DT_I32))
    return EXACT;
  return kind[n->op] == 'e' ? ELEM : RED;
}

/* got (a kernel's output) against want (the reference's) for node n. */
static inline void compare(const char *what, const Node *n, const void *got, const void *want,
                           Tol t, const float *mag) {
  int64_t cnt = shape_numel(&n->shape);
  if (n->dtype == DT_I32) {
    for (int64_t i = 0; i < cnt; i++)
      if (((const int32_t *)got)[i] != ((const int32_t *)want)[i])
        fail_msg("%s: %s (%s)[%lld] = %d, want %d", what, n->name, op_name(n->op), (long long)i,
                 ((const int32_t *)got)[i], ((const int32_t *)want)[i]);
    return;
  }
  const float *a = got, *b = want;
  double scale = 0;
  for (int64_t i = 0; t.kind == T_SCALED && i < cnt; i++)
    scale = isfinite(b[i]) && fabs(b[i]) > scale ? fabs(b[i]) : scale;
  for (int64_t i = 0; i < cnt; i++) {
    bool ok;
    double unit = t.kind == T_SCALED ? scale : t.kind == T_MAG ? mag[i] : 1;
    double bound = t.abs * unit + t.rel * fabs(b[i]);
    if (isnan(a[i]) || isnan(b[i]))
      ok = isnan(a[i]) && isnan(b[i]);
    else if (t.abs == 0 && t.rel == 0)
      ok = memcmp(&a[i], &b[i], sizeof(float)) == 0;
    else if (isinf(a[i]) || isinf(b[i]))
      ok = a[i] == b[i];
    else {
      ok = fabs((double)a[i] - b[i]) <= bound;
      if (bound > 0 && fabs((double)a[i] - b[i]) / bound > worst[n->op])
        worst[n->op] = fabs((double)a[i] - b[i]) / bound;
    }
    if (!ok)
      fail_msg("%s: %s (%s)[%lld] = %.9g, want %.9g (bound %.3g)", what, n->name, op_name(n->op),
               (long long)i, a[i], b[i], bound);
  }
}

/* Whether every element of got is within t (T_ELT or T_SCALED) of want. */
static inline bool within(const Node *n, const float *got, const float *want, Tol t) {
  int64_t cnt = shape_numel(&n->shape);
  double scale = 0;
  for (int64_t i = 0; t.kind == T_SCALED && i < cnt; i++)
    scale = isfinite(want[i]) ? fmax(scale, fabs(want[i])) : scale;
  for (int64_t i = 0; i < cnt; i++)
    if (!(fabs((double)got[i] - want[i]) <=
          t.abs * (t.kind == T_SCALED ? scale : 1) + t.rel * fabs(want[i])))
      return false;
  return true;
}

/* The kernel of n, verified, with the buffer layout kir.h promises. */
static inline Kernel *lower_checked(Arena *a, const Node *n) {
  Kernel *k = lower_node(a, n);
  char err[512];
  assert_non_null(k);
  if (!kir_verify(k, err, sizeof err))
    fail_msg("%s: kir_verify: %s", n->name, err);
  assert_true(k->n_bufs >= n->n_in + 1);
  for (int i = 0; i < n->n_in; i++)
    assert_true(k->bufs[i].role == KB_IN && k->bufs[i].node == n->in[i]->id);
  assert_true(k->bufs[n->n_in].role == KB_OUT && k->bufs[n->n_in].node == n->id);
  assert_int_equal(k->bufs[n->n_in].numel, shape_numel(&n->shape));
  for (int i = n->n_in + 1; i < k->n_bufs; i++)
    assert_true(k->bufs[i].node == KBUF_STEP && k->bufs[i].type == KT_IDX);
  return k;
}

/* Runs k with input buffers vals[node id], the output in out (poisoned
 * first, so an element the kernel forgets cannot pass) and the step. */
static inline void exec(const Kernel *k, void *const *vals, void *out, int64_t step) {
  void **bufs = calloc((size_t)k->n_bufs, sizeof *bufs);
  memset(out, 0x5a, (size_t)k->bufs[k->node->n_in].numel * 4);
  for (int i = 0; i < k->n_bufs; i++)
    bufs[i] = k->bufs[i].role == KB_OUT      ? out
              : k->bufs[i].node == KBUF_STEP ? &step
                                             : vals[k->bufs[i].node];
  kir_eval(k, bufs);
  free(bufs);
}

/* --- models ------------------------------------------------------------------- */

/* Per node of a model: exact and elementwise ops as in the cases.  The
 * reductions are long (matmul over 784 inputs, conv2d_back_w over N*H*W =
 * 2048 positions, batchnorm's means over as many) and their results may
 * cancel to almost nothing (a bias gradient), so for the sum-of-products
 * ops the bound is the classic one for a computed sum, proportional to the
 * sum of the terms' absolute values: |a - b| <= 1e-5 M with M the kernel
 * run on |inputs| (in f32 an n-term sum errs by at most about n 6e-8 M, and
 * typically sqrt(n) 6e-8 M: 3e-6 M at n = 2048).  As M costs another run of
 * the kernel, it is computed only for a node that is not already within
 * 1e-5 of its scale (a wrong kernel is off by far more than that anywhere
 * it is wrong).  Softmax and the loss (sums of positive terms) get 1e-5 of
 * the node's scale.  The whole graph
 * run through kir_eval alone compounds those errors over the layers, so
 * the roots (outputs, loss, updated values) get 1e-3 of their scale. */
static const Tol MODEL_RED = {1e-5, 1e-5, T_SCALED}, MODEL_LIN = {1e-5, 0, T_MAG};
static const Tol ROOT = {1e-3, 1e-3, T_SCALED};

/* The ops whose output is a sum of products of their inputs' elements
 * (with non-negative weights): MODEL_LIN applies.  Input `keep` (max
 * pooling's x, which only selects) is not made absolute; -1: none. */
static inline bool linear(const Node *n, int *keep_in) {
  Op ops[] = {OP_SUM, OP_MEAN, OP_MATMUL, OP_CONV2D, OP_CONV_TRANSPOSE2D, OP_CONV2D_BACK_W,
              OP_AVGPOOL2D, OP_AVGPOOL2D_BACK, OP_UPSAMPLE, OP_UPSAMPLE_BACK, OP_ADD_N,
              OP_EMBEDDING_BACK, OP_MAXPOOL2D_BACK};
  *keep_in = n->op == OP_MAXPOOL2D_BACK ? 1 : -1;
  for (int i = 0; i < countof(ops); i++)
    if (n->op == ops[i])
      return n->dtype == DT_F32 && op_tol(n).rel != 0;
  return false;
}

static inline Tol model_tol(const Node *n) {
  int keep_in;
  Tol t = op_tol(n);
  if (t.abs != RED.abs || t.rel != RED.rel)
    return t;
  return linear(n, &keep_in) ? MODEL_LIN : MODEL_RED;
}

/* Kernel k of node n run on the absolute values of its f32 inputs (vals by
 * node id): the magnitude M of each output element.  malloc'ed. */
static inline float *mags(const Kernel *k, const Node *n, void *const *vals) {
  int keep_in, nn = 0;
  linear(n, &keep_in);
  for (int i = 0; i < n->n_in; i++)
    nn = n->in[i]->id + 1 > nn ? n->in[i]->id + 1 : nn;
  void **abs_vals = calloc((size_t)nn, sizeof *abs_vals);
  for (int i = 0; i < n->n_in; i++) {
    const Node *in = n->in[i];
    int64_t cnt = shape_numel(&in->shape);
    if (abs_vals[in->id])
      continue;
    abs_vals[in->id] = malloc((size_t)cnt * 4 + 4);
    memcpy(abs_vals[in->id], vals[in->id], (size_t)cnt * 4);
    for (int64_t j = 0; in->dtype == DT_F32 && i != keep_in && j < cnt; j++)
      ((float *)abs_vals[in->id])[j] = fabsf(((float *)abs_vals[in->id])[j]);
  }
  float *m = malloc((size_t)shape_numel(&n->shape) * 4 + 4);
  exec(k, abs_vals, m, 0);
  for (int i = 0; i < nn; i++)
    free(abs_vals[i]);
  free(abs_vals);
  return m;
}

static inline double max_abs(const Node *n, void *const *vals) {
  double m = 0;
  for (int64_t i = 0; i < shape_numel(&n->shape); i++)
    m = fmax(m, fabs(((const float *)vals[n->id])[i]));
  return m;
}

/* Whether `target` is a parameter whose gradient is rounding noise (its
 * exact value 0: attention's key bias, a constant shift of each softmax
 * row; or nearly 0: mobilenet's stem batchnorm scale, 7e-6 of the largest
 * gradient, since the depthwise convolution's batchnorm after it undoes a
 * per-channel scale but for relu6's clip), or the optimizer state of one.
 * An f32 gradient that cancels errs by about n eps times the size of its
 * terms (~1e-6 of the largest gradient through a deep network), so below
 * 1e-5 of it no digit is trusted, and Adam turns such a gradient into an
 * O(lr) step of arbitrary sign: the reference's update and any f32
 * kernel's disagree there by construction.  Instead of the update, check
 * that both gradients are that small (below 1e-5 and 1e-4 of the largest
 * gradient). */
static inline bool noise_update(const Graph *g, const TrainStep *ts, void *const *ref,
                         void *const *mine, const Node *target) {
  double gmax = 0;
  for (int i = 0; i < ts->n_params; i++)
    gmax = fmax(gmax, max_abs(ts->grads[i], ref));
  for (int i = 0; i < ts->n_params; i++) {
    const char *p = ts->params[i]->name;
    size_t len = strlen(p);
    bool of =
        target == ts->params[i] || (strncmp(target->name, p, len) == 0 && target->name[len] == '.');
    if (!of || max_abs(ts->grads[i], ref) > 1e-5 * gmax)
      continue;
    if (max_abs(ts->grads[i], mine) > 1e-4 * gmax)
      fail_msg("%s: the gradient of %s is %g here, noise (< %g) in the reference", g->name, p,
               max_abs(ts->grads[i], mine), 1e-5 * gmax);
    return true;
  }
  return false;
}

/* The same for single entries: where the reference gradient of `target`'s
 * parameter is below 1e-4 of that gradient's largest entry (a sum that
 * cancelled down to rounding noise, as in a deep generator's first layer
 * at initialization), Adam's first step is lr times an arbitrary fraction,
 * so the update of that entry is not compared: a copy of `got` with the
 * reference's value there, or NULL when nothing is masked. */
static inline float *mask_noise_entries(const TrainStep *ts, void *const *ref, const Node *root,
                                        const void *got, const void *want, const Node *target) {
  int64_t cnt = shape_numel(&root->shape);
  for (int i = 0; i < ts->n_params; i++) {
    const char *p = ts->params[i]->name;
    size_t len = strlen(p);
    bool of =
        target == ts->params[i] || (strncmp(target->name, p, len) == 0 && target->name[len] == '.');
    const Node *gn = ts->grads[i];
    if (!of || root->dtype != DT_F32 || shape_numel(&gn->shape) != cnt)
      continue;
    const float *gr = ref[gn->id];
    double gmax = max_abs(gn, ref);
    float *copy = NULL;
    for (int64_t j = 0; j < cnt; j++)
      if (fabs(gr[j]) <= 1e-4 * gmax) {
        if (!copy) {
          copy = malloc(sizeof(float) * (size_t)cnt);
          memcpy(copy, got, sizeof(float) * (size_t)cnt);
        }
        copy[j] = ((const float *)want)[j];
      }
    return copy;
  }
  return NULL;
}

static inline void check_model(const char *file, bool training) {
  char *text = read_model(file);
  /* kt_small_consts' sizes, and N=2, blocks=1 where the model has them */
  static const char *const shrink[] = {"N=2", "blocks=1"};
  Compiled c = compile_model_small_with(text, training, shrink, countof(shrink));
  MUST_COMPILE(c);
  Graph *g = c.g;
  TrainStep ts = {0};
  Node **roots = arena_alloc(c.a, sizeof(Node *) * (size_t)(g->n_outputs + 1));
  int n_roots = 0;
  if (training) {
    build_train_step(g, &c.d, &ts);
    roots = ts.roots, n_roots = ts.n_roots;
  } else
    for (int o = 0; o < g->n_outputs; o++)
      roots[n_roots++] = g->outputs[o].node;
  int nn = g->n_nodes;
  void **bufs = calloc((size_t)nn, sizeof *bufs), **ref = calloc((size_t)nn, sizeof *ref);
  void **mine = calloc((size_t)nn, sizeof *mine);
  Eval ev;
  eval_init(&ev, g);
  for (int i = 0; i < nn; i++) {
    Node *n = g->nodes[i];
    int64_t cnt = shape_numel(&n->shape);
    if (n->op != OP_INPUT && n->op != OP_PARAM)
      continue;
    bufs[i] = calloc((size_t)cnt + 1, 4);
    if (n->op == OP_PARAM)
      param_init_fill(n, 1, bufs[i]);
    else if (n == ts.lr || n == ts.step)
      *(float *)bufs[i] = n == ts.lr ? 0.01f : 1.0f;
    for (int64_t k = 0; n->op == OP_INPUT && n != ts.lr && n != ts.step && k < cnt; k++) {
      if (n->dtype == DT_F32)
        ((float *)bufs[i])[k] = (float)rng_normal(8, (uint64_t)k);
      else
        ((int32_t *)bufs[i])[k] = (int32_t)(k % 5); /* labels and token ids */
    }
    eval_bind(&ev, n, bufs[i]);
  }
  char err[256];
  if (eval_run(&ev, NULL, err, sizeof err))
    fail_msg("%s: %s", file, err);
  for (int i = 0; i < nn; i++)
    ref[i] = ev.vals[i].data;
  for (int i = 0; i < nn; i++) {
    Node *n = g->nodes[i];
    size_t bytes = (size_t)shape_numel(&n->shape) * 4 + 4;
    if (!op_info[n->op].lower) {
      assert_null(lower_node(c.a, n));
      mine[i] = ref[i];
      continue;
    }
    Kernel *k = lower_checked(c.a, n);
    void *out = malloc(bytes);
    exec(k, ref, out, 0); /* this node alone, on the reference's inputs */
    Tol t = model_tol(n);
    if (t.kind != T_MAG || !within(n, out, ref[i], MODEL_RED)) {
      float *m = t.kind == T_MAG ? mags(k, n, ref) : NULL; /* only when needed: slow */
      compare(file, n, out, ref[i], t, m);
      free(m);
    }
    exec(k, mine, out, 0); /* the whole graph, node by node */
    mine[i] = out;
  }
  for (int r = 0; r < n_roots; r++) {
    const Node *root = roots[r], *target = training && r > 0 ? g->updates[r - 1].target : NULL;
    if (target && noise_update(g, &ts, ref, mine, target))
      continue;
    if (target && !target->trainable && max_abs(root, ref) < 1e-6) {
      /* running statistics that are zero up to rounding (the batch mean of
       * a linear map of already normalized channels): both must be tiny */
      if (max_abs(root, mine) >= 1e-6)
        fail_msg("%s: %s is %g here, zero up to rounding in the reference", file, root->name,
                 max_abs(root, mine));
      continue;
    }
    float *masked =
        target ? mask_noise_entries(&ts, ref, root, mine[root->id], ref[root->id], target) : NULL;
    compare(file, root, masked ? masked : mine[root->id], ref[root->id], ROOT, NULL);
    free(masked);
  }
  for (int i = 0; i < nn; i++)
    if (op_info[g->nodes[i]->op].lower)
      free(mine[i]);
  for (int i = 0; i < nn; i++)
    free(bufs[i]);
  free(bufs), free(ref), free(mine);
  eval_free(&ev);
  compiled_free(&c);
  free(text);
}

#endif
