/*
 * grad_helpers.h: finite-difference gradient checking, shared by
 * test_grad.c (one op at a time) and test_model_grads.c (whole models).
 *
 * A GradProblem holds a compiled graph, its scalar loss, the nodes to
 * differentiate with respect to (inputs and/or parameters: pass_autodiff
 * takes any leaves) and the gradient nodes pass_autodiff appended.  Every
 * input and parameter is bound to a buffer the test owns (gp->bufs), so a
 * check fills them, evaluates the analytic gradients once (gp_analytic),
 * then moves one coordinate at a time and re-runs the forward pass on the
 * same graph (gp_loss) to form the numerical gradient; each test file says
 * which difference formula and step it uses, and why.  The comparison is
 * |a - n| <= atol + rtol max(|a|, |n|); gc_ratio() gives the left side over
 * the right side (<= 1 passes), so a run can report how close it came.
 *
 * Kinks.  gp_branch_hash() hashes every decision the piecewise ops on the
 * way to the loss took (relu's side, maxpool's argmax, comparisons, ...);
 * a difference whose points all have the base point's hash spans no kink.
 *
 * stop_gradient: the gradient it defines is that of the loss with the
 * stop_gradient values held constant, so gp_analytic() pins each
 * stop_gradient node at its value (binds a copy); the later forward runs
 * then see it as a constant, and the numerical gradient is comparable.
 *
 * Random values come from a SplitMix64 stream seeded per check, so every
 * run checks the same coordinates at the same points; KILN_GRAD_SEED=n
 * picks other points (to probe a suspect rule harder), and
 * KILN_GRAD_VERBOSE=1 prints how close each check came to its tolerance
 * (=2: every coordinate).
 *
 * Everything is static (inline), so including this header gives the test
 * file private helpers and nothing to link.
 */
#ifndef KILN_TESTS_GRAD_HELPERS_H
#define KILN_TESTS_GRAD_HELPERS_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kiln_test.h"

/* --- random numbers ------------------------------------------------------- */

typedef struct GcRng {
  uint64_t s;
} GcRng;

static inline uint64_t gc_next(GcRng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* [0, 1) */
static inline double gc_uniform(GcRng *r) { return (double)(gc_next(r) >> 11) * 0x1.0p-53; }

/* [lo, hi) */
static inline double gc_range(GcRng *r, double lo, double hi) {
  return lo + (hi - lo) * gc_uniform(r);
}

/* FNV-1a, to derive per-name seeds. */
static inline uint64_t gc_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* k distinct indices in [0, n) (all of them, in order, when n <= k). */
static inline int gc_pick(GcRng *r, int64_t n, int k, int64_t *out) {
  if (n <= k) {
    for (int64_t i = 0; i < n; i++)
      out[i] = i;
    return (int)n;
  }
  int m = 0;
  while (m < k) {
    int64_t c = (int64_t)(gc_uniform(r) * (double)n);
    bool dup = false;
    for (int j = 0; j < m && !dup; j++)
      dup = out[j] == c;
    if (!dup)
      out[m++] = c;
  }
  return m;
}

/* --- the problem ------------------------------------------------------------ */

typedef struct GradProblem {
  Compiled *c;
  Graph *g;
  Node *loss;
  Node **wrt, **grads;
  int n_wrt;
  Eval ev;
  void **bufs;      /* per node id: the buffer bound to an input or parameter */
  bool *live_loss;  /* what the forward pass to the loss needs */
  bool *live_all;   /* the loss and every gradient */
  float **grad_val; /* grad_val[k]: the analytic gradient of wrt[k], after gp_analytic */
  double loss0;     /* the loss at the unperturbed point */
  /* When set, the loss is sum(fy * fr) (test_grad.c's linear functional)
   * and gp_loss computes that sum in double from fy's f32 values, so the
   * f32 rounding of the loss itself does not enter the differences. */
  Node *fy, *fr;
  int n_forward; /* forward runs made by gp_loss */
} GradProblem;

static inline void gc_autodiff_run(void *ud) {
  GradProblem *gp = ud;
  pass_autodiff(gp->g, &gp->c->d, gp->loss, gp->wrt, gp->n_wrt, gp->grads);
}

/* Differentiates c's graph (loss w.r.t. wrt[0..n)), verifies the result,
 * and binds a zeroed buffer to every input and parameter.  Fails the test
 * on a user error from autodiff. */
static inline void gp_init(GradProblem *gp, Compiled *c, Node *loss, Node *const *wrt, int n,
                           uint64_t step) {
  memset(gp, 0, sizeof *gp);
  gp->c = c;
  gp->g = c->g;
  gp->loss = loss;
  gp->n_wrt = n;
  gp->wrt = calloc((size_t)n + 1, sizeof(Node *));
  gp->grads = calloc((size_t)n + 1, sizeof(Node *));
  gp->grad_val = calloc((size_t)n + 1, sizeof(float *));
  memcpy(gp->wrt, wrt, sizeof(Node *) * (size_t)n);
  if (diag_protect(&c->d, gc_autodiff_run, gp))
    fail_msg("pass_autodiff failed:\n%s", c->d.msg);
  char err[512];
  if (!graph_verify(gp->g, err, sizeof err))
    fail_msg("graph_verify after autodiff: %s", err);
  Graph *g = gp->g;
  for (int k = 0; k < n; k++) {
    assert_non_null(gp->grads[k]);
    assert_true(shape_eq(&gp->grads[k]->shape, &wrt[k]->shape));
    assert_int_equal(gp->grads[k]->dtype, DT_F32);
  }
  gp->bufs = calloc((size_t)g->n_nodes, sizeof(void *));
  gp->live_loss = calloc((size_t)g->n_nodes, sizeof(bool));
  gp->live_all = calloc((size_t)g->n_nodes, sizeof(bool));
  eval_init(&gp->ev, g);
  gp->ev.cx.step = step;
  for (int i = 0; i < g->n_nodes; i++) {
    Node *p = g->nodes[i];
    if (p->op == OP_PARAM || p->op == OP_INPUT) {
      gp->bufs[i] = calloc((size_t)shape_numel(&p->shape) + 1, 4);
      eval_bind(&gp->ev, p, gp->bufs[i]);
    }
  }
  graph_live(g, &gp->loss, 1, gp->live_loss);
  Node **roots = calloc((size_t)n + 1, sizeof(Node *));
  roots[0] = gp->loss;
  memcpy(roots + 1, gp->grads, sizeof(Node *) * (size_t)n);
  graph_live(g, roots, n + 1, gp->live_all);
  free(roots);
}

static inline void gp_free(GradProblem *gp) {
  eval_free(&gp->ev);
  if (gp->bufs)
    for (int i = 0; i < gp->g->n_nodes; i++)
      free(gp->bufs[i]);
  for (int k = 0; k < gp->n_wrt; k++)
    free(gp->grad_val[k]);
  free(gp->bufs);
  free(gp->live_loss);
  free(gp->live_all);
  free(gp->wrt);
  free(gp->grads);
  free(gp->grad_val);
  memset(gp, 0, sizeof *gp);
}

static inline float *gp_f32(GradProblem *gp, const Node *n) { return gp->bufs[n->id]; }

static inline double gp_value(GradProblem *gp, const Node *n) {
  return *(const float *)gp->ev.vals[n->id].data;
}

/* One forward pass; returns the loss. */
static inline double gp_loss(GradProblem *gp) {
  char err[256];
  if (eval_run(&gp->ev, gp->live_loss, err, sizeof err))
    fail_msg("eval_run: %s", err);
  gp->n_forward++;
  if (!gp->fy)
    return gp_value(gp, gp->loss);
  const float *y = gp->ev.vals[gp->fy->id].data, *r = gp->bufs[gp->fr->id];
  double s = 0;
  for (int64_t i = 0; i < shape_numel(&gp->fy->shape); i++)
    s += (double)y[i] * (double)r[i];
  return s;
}

/* Evaluates the loss and every analytic gradient at the bound values,
 * copies the gradients into gp->grad_val, and pins stop_gradient nodes. */
static inline void gp_analytic(GradProblem *gp) {
  char err[256];
  if (eval_run(&gp->ev, gp->live_all, err, sizeof err))
    fail_msg("eval_run: %s", err);
  gp->loss0 = gp_value(gp, gp->loss);
  for (int k = 0; k < gp->n_wrt; k++) {
    int64_t cnt = shape_numel(&gp->wrt[k]->shape);
    free(gp->grad_val[k]);
    gp->grad_val[k] = malloc(sizeof(float) * (size_t)(cnt + 1));
    memcpy(gp->grad_val[k], gp->ev.vals[gp->grads[k]->id].data, sizeof(float) * (size_t)cnt);
  }
  for (int i = 0; i < gp->g->n_nodes; i++) {
    Node *s = gp->g->nodes[i];
    if (s->op != OP_STOP_GRADIENT || !gp->live_loss[i] || gp->bufs[i])
      continue;
    size_t bytes = (size_t)shape_numel(&s->shape) * 4;
    gp->bufs[i] = malloc(bytes + 4);
    memcpy(gp->bufs[i], gp->ev.vals[i].data, bytes);
    eval_bind(&gp->ev, s, gp->bufs[i]);
  }
}

/* --- branches: where a piecewise op decides --------------------------------- */

/* The index in x (shape xs, broadcast to os) of flat output index i. */
static inline int64_t gc_bcast_index(const Shape *os, const Shape *xs, int64_t i) {
  int64_t xi = 0, stride = 1;
  for (int d = os->rank - 1, e = xs->rank - 1; d >= 0; d--, e--) {
    int64_t c = i % os->dim[d];
    i /= os->dim[d];
    if (e < 0)
      continue;
    if (xs->dim[e] != 1)
      xi += c * stride;
    stride *= xs->dim[e];
  }
  return xi;
}

/* The flat output index of a reduction for flat input index i. */
static inline int64_t gc_reduce_index(const Node *n, int64_t i) {
  const Shape *xs = &n->in[0]->shape;
  bool red[MAX_RANK] = {0};
  for (int k = 0; k < n->at.n_axes; k++)
    red[n->at.axes[k]] = true;
  int64_t o = 0, stride = 1;
  for (int d = xs->rank - 1; d >= 0; d--) {
    int64_t c = i % xs->dim[d];
    i /= xs->dim[d];
    if (!red[d]) {
      o += c * stride;
      stride *= xs->dim[d];
    }
  }
  return o;
}

static inline uint64_t gc_mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

/* A hash of every decision the piecewise ops on the way to the loss took
 * in the last run: the side of each kink (relu, leaky_relu, elu, abs,
 * clamp, softplus's threshold), which operand maximum/minimum chose, which
 * elements max and maxpool2d selected, and every i32 value computed from
 * data (comparisons, argmax, casts).  Where it is the same at x - h, x and
 * x + h, no kink lies between them and the loss is smooth there. */
static inline uint64_t gp_branch_hash(GradProblem *gp) {
  uint64_t hash = 0xcbf29ce484222325ull;
  const RtTensor *v = gp->ev.vals;
  for (int id = 0; id < gp->g->n_nodes; id++) {
    const Node *n = gp->g->nodes[id];
    if (!gp->live_loss[id] || n->n_in == 0)
      continue;
    int64_t cnt = shape_numel(&n->shape);
    if (n->dtype == DT_I32) {
      const int32_t *q = v[id].data;
      for (int64_t i = 0; i < cnt; i++)
        hash = gc_mix(hash, (uint32_t)q[i]);
      continue;
    }
    const float *x = n->in[0]->dtype == DT_F32 ? v[n->in[0]->id].data : NULL;
    const float *y = n->dtype == DT_F32 ? v[id].data : NULL;
    switch (n->op) {
    case OP_RELU:
    case OP_LEAKY_RELU:
    case OP_ELU:
    case OP_ABS:
      for (int64_t i = 0; i < cnt; i++)
        hash = gc_mix(hash, (uint64_t)((x[i] > 0) + 2 * (x[i] < 0)));
      break;
    case OP_CLAMP:
      for (int64_t i = 0; i < cnt; i++)
        hash = gc_mix(hash, (uint64_t)((x[i] < n->at.alpha) + 2 * (x[i] > n->at.beta)));
      break;
    case OP_SOFTPLUS:
      for (int64_t i = 0; i < cnt; i++)
        hash = gc_mix(hash, (uint64_t)(n->at.alpha * x[i] > n->at.beta));
      break;
    case OP_MAXIMUM:
    case OP_MINIMUM: {
      const float *a = v[n->in[0]->id].data, *b = v[n->in[1]->id].data;
      for (int64_t i = 0; i < cnt; i++) {
        float ai = a[gc_bcast_index(&n->shape, &n->in[0]->shape, i)];
        float bi = b[gc_bcast_index(&n->shape, &n->in[1]->shape, i)];
        hash = gc_mix(hash, (uint64_t)((ai > bi) + 2 * (ai < bi)));
      }
      break;
    }
    case OP_MAX:
      for (int64_t i = 0; i < shape_numel(&n->in[0]->shape); i++)
        hash = gc_mix(hash, (uint64_t)(x[i] == y[gc_reduce_index(n, i)]));
      break;
    case OP_MAXPOOL2D: {
      const Shape *xs = &n->in[0]->shape;
      int64_t hh = xs->dim[2], ww = xs->dim[3], ho = n->shape.dim[2], wo = n->shape.dim[3];
      for (int64_t bc = 0; bc < xs->dim[0] * xs->dim[1]; bc++)
        for (int64_t oy = 0; oy < ho; oy++)
          for (int64_t ox = 0; ox < wo; ox++) {
            int64_t arg = -1;
            float best = 0;
            for (int ky = 0; ky < n->at.kernel[0]; ky++)
              for (int kx = 0; kx < n->at.kernel[1]; kx++) {
                int64_t iy = oy * n->at.stride[0] - n->at.pad[0] + (int64_t)ky * n->at.dilation[0];
                int64_t ix = ox * n->at.stride[1] - n->at.pad[1] + (int64_t)kx * n->at.dilation[1];
                if (iy < 0 || iy >= hh || ix < 0 || ix >= ww)
                  continue;
                float xv = x[(bc * hh + iy) * ww + ix];
                if (arg < 0 || xv > best)
                  arg = iy * ww + ix, best = xv;
              }
            hash = gc_mix(hash, (uint64_t)arg);
          }
      break;
    }
    default:
      break;
    }
  }
  return hash;
}

/* The loss at x_i + h and x_i - h (coordinate i of leaf x), with the
 * steps actually stored in f32: x_i + hp and x_i - hm. */
typedef struct GcProbe {
  double fp, fm, hp, hm;
} GcProbe;

/* Evaluates the loss at x_i +- h; *same tells whether every decision at
 * both points is the one taken at x_i (base: gp_branch_hash there). */
static inline GcProbe gp_probe(GradProblem *gp, const Node *x, int64_t i, double h, uint64_t base,
                               bool *same) {
  float *v = gp_f32(gp, x), v0 = v[i];
  float xp = (float)((double)v0 + h), xm = (float)((double)v0 - h);
  GcProbe p;
  p.hp = (double)xp - (double)v0;
  p.hm = (double)v0 - (double)xm;
  v[i] = xp;
  p.fp = gp_loss(gp);
  *same = gp_branch_hash(gp) == base;
  v[i] = xm;
  p.fm = gp_loss(gp);
  *same = *same && gp_branch_hash(gp) == base;
  v[i] = v0;
  return p;
}

/* |a - n| / (atol + rtol max(|a|, |n|)): at most 1 passes. */
static inline double gc_ratio(double a, double n, double rtol, double atol) {
  double m = fabs(a) > fabs(n) ? fabs(a) : fabs(n);
  double r = fabs(a - n) / (atol + rtol * m);
  return isnan(r) ? INFINITY : r;
}

/* Growable failure text: the checks collect all mismatches of a case and
 * fail once, listing them. */
typedef struct GcLog {
  char *text;
  size_t len, cap;
  int n;
} GcLog;

static inline void gc_logf(GcLog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void gc_logf(GcLog *l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char line[512];
  int k = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (k < 0)
    return;
  size_t add = strlen(line);
  if (l->len + add + 1 > l->cap) {
    l->cap = (l->len + add + 1) * 2;
    l->text = realloc(l->text, l->cap);
    assert_non_null(l->text);
  }
  memcpy(l->text + l->len, line, add + 1);
  l->len += add;
  l->n++;
}

/* Reading and scanning source text for the tests. */
static inline char *gc_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, len = 0;
  char *s = malloc(cap);
  size_t k;
  while (s && (k = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += k;
    if (len + 1 == cap)
      s = realloc(s, cap *= 2);
  }
  fclose(f);
  if (s)
    s[len] = 0;
  return s;
}

/* KILN_GRAD_SEED=n moves every check to other random points (default 0). */
static inline uint64_t gc_seed(void) {
  const char *v = getenv("KILN_GRAD_SEED");
  return v ? strtoull(v, NULL, 10) : 0;
}

/* KILN_GRAD_VERBOSE: 1 prints a line per check, 2 every coordinate. */
static inline int gc_verbose(void) {
  const char *v = getenv("KILN_GRAD_VERBOSE");
  return v ? atoi(v) : 0;
}

#endif
