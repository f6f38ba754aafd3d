/*
 * eval_nn.c: the reference evaluator's kernels for the networks' ops:
 * matmul, convolutions, pooling, upsampling, embedding lookup, the
 * cross-entropy loss, dropout and randn.
 *
 * Semantics follow PyTorch (layouts NCHW, weights [C_out, C_in/g, kh, kw]
 * for conv2d and [C_in, C_out/g, kh, kw] for conv_transpose2d), so results
 * can be compared with it directly.  Loops are naive and accumulate in
 * double; the compiled backends are checked against these kernels, so they
 * must be easy to trust rather than fast.
 *
 * Bad data does not crash the reference: an embedding id or a label outside
 * its range yields NaN (a row of NaN, or a NaN loss), which makes the error
 * visible downstream instead of reading out of bounds or silently using 0.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

/* --- matmul ------------------------------------------------------------- */

/* The product P of matmul_strides, batch element by batch element: each
 * output a double sum over p ascending, rounded once. */
void eval_matmul(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const float *a = in[0]->data, *b = in[1]->data;
  float *y = out->data;
  MatStrides s;
  matmul_strides(n, &s);
  int br = s.br;
  int64_t m = s.dim[br], nn = s.dim[br + 1], nbatch = 1;
  for (int d = 0; d < br; d++)
    nbatch *= s.dim[d];
  /* summed batch axes (Attrs.bsum): each product rounded to f32, as the
   * matmul's value was, then added up in double from 0 in row-major order,
   * as eval_reduce sums it */
  double *tot = n->at.bsum ? calloc((size_t)rt_numel(out), sizeof *tot) : NULL;
  ASSERT(!n->at.bsum || tot || rt_numel(out) == 0);
  for (int64_t bi = 0; bi < nbatch; bi++) {
    int64_t rem = bi, oa = 0, ob = 0, oc = 0;
    for (int d = br - 1; d >= 0; d--) {
      int64_t idx = rem % s.dim[d];
      rem /= s.dim[d];
      oa += idx * s.a[d], ob += idx * s.b[d], oc += idx * s.c[d];
    }
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < nn; j++) {
        double acc = 0.0;
        for (int64_t p = 0; p < s.k; p++)
          acc += (double)a[oa + i * s.a[br] + p * s.a[br + 1]] *
                 b[ob + p * s.b[br] + j * s.b[br + 1]];
        int64_t at = oc + i * s.c[br] + j * s.c[br + 1];
        if (tot)
          tot[at] += (double)(float)acc;
        else
          y[at] = (float)acc;
      }
  }
  if (tot)
    for (int64_t i = 0; i < rt_numel(out); i++)
      y[i] = (float)tot[i];
  free(tot);
}

/* --- convolutions ----------------------------------------------------------- */

/* out[b, o, y, x] = sum over the group's channels c and taps (i, j) of
 * in[b, g*Cg + c, y*sy - py + i*dy, x*sx - px + j*dx] * w[o, c, i, j]. */
static double conv_at(const Win *g, const float *x, const float *w, int64_t b, int64_t o,
                      int64_t y, int64_t xo) {
  int64_t cg = g->c / g->groups, grp = o / (g->o / g->groups);
  double acc = 0.0;
  for (int64_t c = 0; c < cg; c++) {
    const float *xc = x + (b * g->c + grp * cg + c) * g->h * g->w;
    const float *wc = w + (o * cg + c) * g->kh * g->kw;
    for (int64_t i = 0; i < g->kh; i++) {
      int64_t iy = y * g->sy - g->py + i * g->dy;
      if (iy < 0 || iy >= g->h)
        continue;
      for (int64_t j = 0; j < g->kw; j++) {
        int64_t ix = xo * g->sx - g->px + j * g->dx;
        if (ix >= 0 && ix < g->w)
          acc += (double)xc[iy * g->w + ix] * wc[i * g->kw + j];
      }
    }
  }
  return acc;
}

typedef double (*WinAt)(const Win *g, const float *x, const float *w, int64_t b, int64_t o,
                        int64_t oy, int64_t ox);

/* Fills out[b, o, oy, ox] = at(...) for every output element, in order. */
static void win_fill(const Node *n, RtTensor *out, const RtTensor *const *in, WinAt at) {
  Win g = win_of(n, in[0], out);
  float *y = out->data;
  for (int64_t b = 0; b < g.n; b++)
    for (int64_t o = 0; o < g.o; o++)
      for (int64_t oy = 0; oy < g.ho; oy++)
        for (int64_t ox = 0; ox < g.wo; ox++)
          *y++ = (float)at(&g, in[0]->data, in[1]->data, b, o, oy, ox);
}

void eval_conv2d(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  win_fill(n, out, in, conv_at);
}

/* Gathers the scatter form
 *   out[b, g*Cog + oc, ih*s - p + kh*d, ...] += x[b, ic, ih, iw] * w[ic, oc, kh, kw]
 * for one output element, over the group's input channels ic: the input
 * position whose tap t lands on output position o is win_covering(o, t, ...)
 * (a convolution's window walk read backwards).  The rows
 * that output_padding adds receive whatever the uncropped output has
 * there, as in PyTorch (zero when output_padding > pad). */
static double tconv_at(const Win *g, const float *x, const float *w, int64_t b, int64_t oc,
                       int64_t y, int64_t xo) {
  int64_t cog = g->o / g->groups, cig = g->c / g->groups, grp = oc / cog;
  double acc = 0.0;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = win_covering(y, i, g->sy, g->py, g->dy, g->h);
    for (int64_t j = 0; iy >= 0 && j < g->kw; j++) {
      int64_t ix = win_covering(xo, j, g->sx, g->px, g->dx, g->w);
      if (ix < 0)
        continue;
      for (int64_t c = 0; c < cig; c++) {
        int64_t ic = grp * cig + c;
        double xv = x[((b * g->c + ic) * g->h + iy) * g->w + ix];
        acc += xv * w[((ic * cog + oc % cog) * g->kh + i) * g->kw + j];
      }
    }
  }
  return acc;
}

void eval_conv_transpose2d(const Node *n, RtTensor *out, const RtTensor *const *in,
                           EvalCtx *cx) {
  win_fill(n, out, in, tconv_at);
}

/* --- pooling ---------------------------------------------------------------- */

/* Max over the in-bounds taps of one window: the tap maxpool_pick selects
 * (padding acts as -inf; a NaN tap makes the result NaN, as in PyTorch). */
static double maxpool_at(const Win *g, const float *xc, int64_t y, int64_t xo) {
  int64_t k = maxpool_pick(g, xc, y, xo);
  return k < 0 ? -INFINITY : xc[k];
}

/* Mean of one window with zero padding, divided by avgpool_divisor. */
static double avgpool_at(const Win *g, const float *xc, int64_t y, int64_t xo, bool incl) {
  double sum = 0.0;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = y * g->sy - g->py + i;
    for (int64_t j = 0; iy >= 0 && iy < g->h && j < g->kw; j++) {
      int64_t ix = xo * g->sx - g->px + j;
      if (ix >= 0 && ix < g->w)
        sum += xc[iy * g->w + ix];
    }
  }
  return sum / avgpool_divisor(g, y, xo, incl);
}

static void pool(const Node *n, RtTensor *out, const RtTensor *x, bool is_max) {
  Win g = win_of(n, x, out);
  float *y = out->data;
  for (int64_t bc = 0; bc < g.n * g.c; bc++) {
    const float *xc = (const float *)x->data + bc * g.h * g.w;
    for (int64_t oy = 0; oy < g.ho; oy++)
      for (int64_t ox = 0; ox < g.wo; ox++)
        *y++ = (float)(is_max ? maxpool_at(&g, xc, oy, ox)
                              : avgpool_at(&g, xc, oy, ox, n->at.count_include_pad));
  }
}

void eval_maxpool2d(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  pool(n, out, in[0], true);
}

/* avgpool2d has no dilation attribute; its taps are adjacent. */
void eval_avgpool2d(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  pool(n, out, in[0], false);
}

/* --- upsampling ------------------------------------------------------------- */

/* One output pixel: the taps of up_taps along each axis, weighted.  For
 * nearest this is exactly the input value (1 * 1 * v); for bilinear it is
 * (1 - ly) ((1 - lx) v00 + lx v01) + ly ((1 - lx) v10 + lx v11). */
static double up_at(const float *xc, int64_t w, const UpTaps *ty, const UpTaps *tx) {
  double acc = 0.0;
  for (int a = 0; a < ty->n; a++) {
    const float *row = xc + ty->i[a] * w;
    double r = tx->w[0] * row[tx->i[0]];
    for (int b = 1; b < tx->n; b++)
      r += tx->w[b] * row[tx->i[b]];
    acc = a ? acc + ty->w[a] * r : ty->w[a] * r;
  }
  return acc;
}

/* mode 0 nearest: out[y][x] = in[y / s][x / s]; mode 1 bilinear.  The
 * source indices and weights come from up_taps (eval_internal.h), which
 * eval_upsample_back uses too. */
void eval_upsample(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const RtTensor *x = in[0];
  int64_t h = x->dim[2], w = x->dim[3], ho = out->dim[2], wo = out->dim[3];
  int s = n->at.scale, mode = n->at.mode;
  bool al = n->at.align_corners;
  float *y = out->data;
  for (int64_t bc = 0; bc < x->dim[0] * x->dim[1]; bc++) {
    const float *xc = (const float *)x->data + bc * h * w;
    for (int64_t oy = 0; oy < ho; oy++) {
      UpTaps ty = up_taps(oy, h, ho, s, mode, al);
      for (int64_t ox = 0; ox < wo; ox++) {
        UpTaps tx = up_taps(ox, w, wo, s, mode, al);
        *y++ = (float)up_at(xc, w, &ty, &tx);
      }
    }
  }
}

/* --- embedding, loss, dropout ---------------------------------------------- */

/* out[..., :] = table[ids[...], :].  An id outside [0, V) is a data error
 * the reference must not hide: its row becomes NaN (no crash, no zeros
 * that would look like a valid embedding). */
void eval_embedding(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const int32_t *ids = in[0]->data;
  const float *tab = in[1]->data;
  int64_t v = in[1]->dim[0], d = in[1]->dim[1], cnt = rt_numel(in[0]);
  float *y = out->data;
  for (int64_t i = 0; i < cnt; i++, y += d) {
    if (ids[i] >= 0 && ids[i] < v)
      memcpy(y, tab + ids[i] * d, sizeof(float) * (size_t)d);
    else
      for (int64_t k = 0; k < d; k++)
        y[k] = NAN;
  }
}

/* -log_softmax(row)[label] = logsumexp(row) - row[label], max subtracted. */
static double ce_row(const float *row, int64_t c, int32_t label) {
  if (label < 0 || label >= c)
    return NAN;
  double mx = -INFINITY, sum = 0.0;
  for (int64_t k = 0; k < c; k++)
    mx = row[k] > mx ? row[k] : mx;
  for (int64_t k = 0; k < c; k++)
    sum += exp(row[k] - mx);
  return mx + log(sum) - row[label];
}

/* The mean over all label positions; an out-of-range label makes it NaN. */
void eval_cross_entropy(const Node *n, RtTensor *out, const RtTensor *const *in,
                        EvalCtx *cx) {
  const float *lg = in[0]->data;
  const int32_t *lb = in[1]->data;
  int64_t c = in[0]->dim[in[0]->rank - 1], rows = rt_numel(in[1]);
  double total = 0.0;
  for (int64_t r = 0; r < rows; r++)
    total += ce_row(lg + r * c, c, lb[r]);
  *(float *)out->data = (float)(total / (double)rows);
}

/* Inverted dropout: in training, element i is kept when
 * rng_uniform(rng_hash(seed, step), i) >= p and scaled by 1 / (1 - p), else
 * zeroed, so the expectation is unchanged; at inference it is the identity.
 * The mask depends only on (seed, step, i), so any backend can reproduce it. */
void eval_dropout(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  const float *x = in[0]->data;
  float *y = out->data;
  if (!cx->training || n->at.p == 0) {
    if (y != x)
      memmove(y, x, rt_nbytes(out));
    return;
  }
  uint64_t s = rng_hash(n->at.seed, cx->step);
  double p = n->at.p, scale = 1.0 / (1.0 - p);
  for (int64_t i = 0; i < cnt; i++)
    y[i] = rng_uniform(s, (uint64_t)i) >= p ? (float)(x[i] * scale) : 0.0f;
}

/* Standard normal samples, drawn afresh each step (in training and at
 * inference alike): element i takes h = rng_hash(rng_hash(seed, step), i),
 * u1 = ((h >> 40) + 1) 2^-24 in (0, 1] (so the log is finite) and
 * u2 = ((h >> 16) mod 2^24) 2^-24 in [0, 1), and is Box-Muller's
 * sqrt(-2 ln u1) cos(2 pi u2), every step in f32 as lower_randn's kernel
 * computes it. */
float randn_value(uint64_t stream, uint64_t i) {
  uint64_t h = rng_hash(stream, i);
  float u1 = (float)((h >> 40) + 1) * 0x1p-24f;
  float u2 = (float)((h >> 16) & 0xffffff) * 0x1p-24f;
  return sqrtf(-2.0f * logf(u1)) * cosf(RANDN_2PI * u2);
}

void eval_randn(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  float *y = out->data;
  uint64_t s = rng_hash(n->at.seed, cx->step);
  for (int64_t i = 0; i < cnt; i++)
    y[i] = randn_value(s, (uint64_t)i);
}
