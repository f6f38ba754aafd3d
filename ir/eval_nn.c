/*
 * eval_nn.c: the reference evaluator's kernels for the networks' ops:
 * matmul, convolutions, pooling, upsampling, embedding lookup, the
 * cross-entropy loss and dropout.
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
#include <string.h>

#include "ir.h"

/* --- matmul ------------------------------------------------------------- */

/* Strides (in elements) of t's batch axes broadcast to the batch shape
 * bdim[0..br); t's last two axes form one matrix. */
static void batch_strides(const RtTensor *t, int br, const int64_t *bdim, int64_t *st) {
  int tr = t->rank - 2;
  int64_t s = t->dim[t->rank - 2] * t->dim[t->rank - 1];
  for (int d = br - 1; d >= 0; d--) {
    int k = tr - br + d;
    int64_t dk = k >= 0 ? t->dim[k] : 1;
    st[d] = dk == 1 ? 0 : s;
    s *= dk;
  }
}

/* One [M, N] product: a is [M, K] ([K, M] when ta), b is [K, N] ([N, K]
 * when tb). */
static void matmul_one(const float *a, const float *b, float *y, int64_t m, int64_t nn,
                       int64_t k, bool ta, bool tb) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < nn; j++) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; p++) {
        double av = ta ? a[p * m + i] : a[i * k + p];
        double bv = tb ? b[j * k + p] : b[p * nn + j];
        acc += av * bv;
      }
      y[i * nn + j] = (float)acc;
    }
}

void eval_matmul(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const RtTensor *a = in[0], *b = in[1];
  int br = out->rank - 2;
  int64_t m = out->dim[br], nn = out->dim[br + 1];
  int64_t k = n->at.ta ? a->dim[a->rank - 2] : a->dim[a->rank - 1];
  int64_t sa[MAX_RANK], sb[MAX_RANK], nbatch = 1;
  batch_strides(a, br, out->dim, sa);
  batch_strides(b, br, out->dim, sb);
  for (int d = 0; d < br; d++)
    nbatch *= out->dim[d];
  for (int64_t bi = 0; bi < nbatch; bi++) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (int d = br - 1; d >= 0; d--) {
      int64_t idx = rem % out->dim[d];
      rem /= out->dim[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    matmul_one((const float *)a->data + oa, (const float *)b->data + ob,
               (float *)out->data + bi * m * nn, m, nn, k, n->at.ta, n->at.tb);
  }
}

/* --- convolutions ----------------------------------------------------------- */

/* Geometry of a 2-D window op: input [N, C, H, W], output [N, O, Ho, Wo],
 * window kh x kw with stride, padding and dilation per axis. */
typedef struct Win {
  int64_t n, c, h, w;
  int64_t o, ho, wo;
  int64_t kh, kw;
  int64_t sy, sx, py, px, dy, dx;
  int64_t groups;
} Win;

static Win win_of(const Node *n, const RtTensor *x, const RtTensor *out) {
  Win g = {
      .n = x->dim[0], .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
      .o = out->dim[1], .ho = out->dim[2], .wo = out->dim[3],
      .kh = n->at.kernel[0], .kw = n->at.kernel[1],
      .sy = n->at.stride[0], .sx = n->at.stride[1],
      .py = n->at.pad[0], .px = n->at.pad[1],
      .dy = n->at.dilation[0] ? n->at.dilation[0] : 1,
      .dx = n->at.dilation[1] ? n->at.dilation[1] : 1,
      .groups = n->at.groups ? n->at.groups : 1,
  };
  return g;
}

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

/* The input position that kernel tap t sends to output position o along one
 * axis, or -1: the transposed convolution scatters in[i] to
 * out[i*s - p + t*d], so i = (o + p - t*d) / s when that divides. */
static int64_t tconv_src(int64_t o, int64_t t, int64_t s, int64_t p, int64_t d, int64_t len) {
  int64_t v = o + p - t * d;
  if (v < 0 || v % s)
    return -1;
  return v / s < len ? v / s : -1;
}

/* Gathers the scatter form
 *   out[b, g*Cog + oc, ih*s - p + kh*d, ...] += x[b, ic, ih, iw] * w[ic, oc, kh, kw]
 * for one output element, over the group's input channels ic.  The rows
 * that output_padding adds receive whatever the uncropped output has
 * there, as in PyTorch (zero when output_padding > pad). */
static double tconv_at(const Win *g, const float *x, const float *w, int64_t b, int64_t oc,
                       int64_t y, int64_t xo) {
  int64_t cog = g->o / g->groups, cig = g->c / g->groups, grp = oc / cog;
  double acc = 0.0;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = tconv_src(y, i, g->sy, g->py, g->dy, g->h);
    for (int64_t j = 0; iy >= 0 && j < g->kw; j++) {
      int64_t ix = tconv_src(xo, j, g->sx, g->px, g->dx, g->w);
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

/* Max over the in-bounds taps of one window (padding acts as -inf); a NaN
 * tap makes the result NaN, as in PyTorch. */
static double maxpool_at(const Win *g, const float *xc, int64_t y, int64_t xo) {
  double best = -INFINITY;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = y * g->sy - g->py + i * g->dy;
    for (int64_t j = 0; iy >= 0 && iy < g->h && j < g->kw; j++) {
      int64_t ix = xo * g->sx - g->px + j * g->dx;
      if (ix < 0 || ix >= g->w)
        continue;
      double v = xc[iy * g->w + ix];
      if (isnan(v))
        return v;
      best = v > best ? v : best;
    }
  }
  return best;
}

/* Mean of one window with zero padding.  The divisor is kh*kw when
 * count_include_pad, else the number of in-bounds taps (PyTorch; windows
 * never reach past the padding without ceil_mode, which kiln lacks). */
static double avgpool_at(const Win *g, const float *xc, int64_t y, int64_t xo, bool incl) {
  double sum = 0.0;
  int64_t cnt = 0;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = y * g->sy - g->py + i;
    for (int64_t j = 0; iy >= 0 && iy < g->h && j < g->kw; j++) {
      int64_t ix = xo * g->sx - g->px + j;
      if (ix >= 0 && ix < g->w) {
        sum += xc[iy * g->w + ix];
        cnt++;
      }
    }
  }
  return sum / (double)(incl ? g->kh * g->kw : cnt);
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

/* PyTorch's source coordinate for output index dst along an axis of
 * `len_in` -> `len_out` (= len_in * scale):
 *   align_corners:  dst * (len_in - 1) / (len_out - 1)   (0 when len_out == 1)
 *   otherwise:      (dst + 0.5) / scale - 0.5, clamped at 0. */
static double up_src(int64_t dst, int64_t len_in, int64_t len_out, int scale, bool align) {
  if (align)
    return len_out > 1 ? (double)dst * (double)(len_in - 1) / (double)(len_out - 1) : 0.0;
  double s = ((double)dst + 0.5) / scale - 0.5;
  return s < 0 ? 0.0 : s;
}

/* Bilinear sample of one channel xc [h, w] at (sy, sx): corners (y0, x0),
 * (y0 + 1, x0 + 1) clamped to the image, weights from the fractions. */
static double bilinear(const float *xc, int64_t h, int64_t w, double sy, double sx) {
  int64_t y0 = (int64_t)sy, x0 = (int64_t)sx;
  int64_t y1 = y0 < h - 1 ? y0 + 1 : y0, x1 = x0 < w - 1 ? x0 + 1 : x0;
  double ly = sy - (double)y0, lx = sx - (double)x0;
  return (1 - ly) * ((1 - lx) * xc[y0 * w + x0] + lx * xc[y0 * w + x1]) +
         ly * ((1 - lx) * xc[y1 * w + x0] + lx * xc[y1 * w + x1]);
}

/* mode 0 nearest: out[y][x] = in[y / s][x / s]; mode 1 bilinear. */
void eval_upsample(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const RtTensor *x = in[0];
  int64_t h = x->dim[2], w = x->dim[3], ho = out->dim[2], wo = out->dim[3];
  int s = n->at.scale;
  bool al = n->at.align_corners;
  float *y = out->data;
  for (int64_t bc = 0; bc < x->dim[0] * x->dim[1]; bc++) {
    const float *xc = (const float *)x->data + bc * h * w;
    for (int64_t oy = 0; oy < ho; oy++)
      for (int64_t ox = 0; ox < wo; ox++) {
        if (n->at.mode == 0)
          *y++ = xc[(oy / s) * w + ox / s];
        else
          *y++ = (float)bilinear(xc, h, w, up_src(oy, h, ho, s, al), up_src(ox, w, wo, s, al));
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
