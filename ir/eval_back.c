/*
 * eval_back.c: the reference evaluator's kernels for the ops autodiff makes
 * (ir/grad.c): gradient aggregation (add_n) and the backward kernels of
 * convolution weights, pooling, upsampling, slicing, embedding lookup and
 * the cross-entropy loss.
 *
 * Each backward kernel is the adjoint (transpose) of a forward kernel of
 * eval_nn.c / eval_elem.c: if the forward computes y = A x, the backward
 * computes dx = A^T dy.  The tests check exactly that, <A x, dy> ==
 * <x, A^T dy> on random data, besides hand-computed values.  Where the
 * forward's geometry has a rule of its own (pooling windows and padding,
 * the first-maximum tie rule, the average divisor, upsampling indices and
 * weights) both kernels take it from eval_internal.h, so they cannot drift.
 *
 * Like the forward kernels these are naive and accumulate in double,
 * rounding to f32 once per output element.  That is why the scatters of
 * the textbook formulas (dx[tap] += dy / k) are written as gathers here:
 * each output element walks the dy elements that reach it and sums them in
 * a double.  Kernels allocate nothing (eval.c owns all tensor memory).
 */
#include <math.h>
#include <string.h>

#include "eval_internal.h"

/* y = x0 + x1 + ... (same shapes).  out may alias input 0: element i of
 * every input is read before out[i] is written. */
void eval_add_n(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  int64_t cnt = rt_numel(out);
  float *y = out->data;
  for (int64_t i = 0; i < cnt; i++) {
    double acc = 0.0;
    for (int k = 0; k < n->n_in; k++)
      acc += ((const float *)in[k]->data)[i];
    y[i] = (float)acc;
  }
}

/* --- convolution weights ------------------------------------------------------ */

/* in[0] = x [N, C, H, W], in[1] = gy [N, O, Ho, Wo], out = dW [O, C/groups, kh, kw]:
 *   dW[o, c, i, j] = sum over b, oy, ox of
 *       x[b, g*Cg + c, oy*sy - py + i*dy, ox*sx - px + j*dx] * gy[b, o, oy, ox]
 * with g = o / (O / groups) and out-of-range taps skipped: conv2d's conv_at
 * differentiated with respect to w.  grad.c also calls it with the roles
 * exchanged (x = the output gradient, gy = the input) for the weight
 * gradient of conv_transpose2d; the formula is the same. */
void eval_conv2d_back_w(const Node *n, RtTensor *out, const RtTensor *const *in,
                        EvalCtx *cx) {
  Win g = win_of(n, in[0], in[1]);
  int64_t cg = g.c / g.groups, og = g.o / g.groups;
  const float *xs = in[0]->data, *gys = in[1]->data;
  float *dw = out->data;
  for (int64_t o = 0; o < g.o; o++)
    for (int64_t c = 0; c < cg; c++)
      for (int64_t i = 0; i < g.kh; i++)
        for (int64_t j = 0; j < g.kw; j++) {
          int64_t grp = o / og;
          double acc = 0.0;
          for (int64_t b = 0; b < g.n; b++) {
            const float *xc = xs + (b * g.c + grp * cg + c) * g.h * g.w;
            const float *gyo = gys + (b * g.o + o) * g.ho * g.wo;
            for (int64_t oy = 0; oy < g.ho; oy++) {
              int64_t iy = oy * g.sy - g.py + i * g.dy;
              if (iy < 0 || iy >= g.h)
                continue;
              for (int64_t ox = 0; ox < g.wo; ox++) {
                int64_t ix = ox * g.sx - g.px + j * g.dx;
                if (ix >= 0 && ix < g.w)
                  acc += (double)xc[iy * g.w + ix] * gyo[oy * g.wo + ox];
              }
            }
          }
          *dw++ = (float)acc;
        }
}

/* --- pooling ------------------------------------------------------------------------ */

/* in[0] = gy (the pooled gradient), in[1] = x (the forward input); out has
 * x's shape.  Each window's gradient goes to the tap the forward read,
 * maxpool_pick (first maximum; padding never wins); overlapping windows
 * add.  Gathered: out[iy, ix] sums gy over the windows (oy, ox) that cover
 * (iy, ix), through some tap (i, j), and pick it. */
void eval_maxpool2d_back(const Node *n, RtTensor *out, const RtTensor *const *in,
                         EvalCtx *cx) {
  Win g = win_of(n, in[1], in[0]);
  float *dx = out->data;
  for (int64_t bc = 0; bc < g.n * g.c; bc++) {
    const float *xc = (const float *)in[1]->data + bc * g.h * g.w;
    const float *gyc = (const float *)in[0]->data + bc * g.ho * g.wo;
    for (int64_t iy = 0; iy < g.h; iy++)
      for (int64_t ix = 0; ix < g.w; ix++) {
        double acc = 0.0;
        for (int64_t i = 0; i < g.kh; i++) {
          int64_t oy = win_covering(iy, i, g.sy, g.py, g.dy, g.ho);
          for (int64_t j = 0; oy >= 0 && j < g.kw; j++) {
            int64_t ox = win_covering(ix, j, g.sx, g.px, g.dx, g.wo);
            if (ox >= 0 && maxpool_pick(&g, xc, oy, ox) == iy * g.w + ix)
              acc += gyc[oy * g.wo + ox];
          }
        }
        *dx++ = (float)acc;
      }
  }
}

/* in[0] = gy; out has the forward input's shape (attribute `shape`).  Each
 * window's gradient is spread evenly, gy / divisor, over its in-bounds
 * taps, with the forward's avgpool_divisor (count_include_pad or not).
 * Average pooling has no dilation: its taps are adjacent. */
void eval_avgpool2d_back(const Node *n, RtTensor *out, const RtTensor *const *in,
                         EvalCtx *cx) {
  Win g = win_of(n, out, in[0]);
  bool incl = n->at.count_include_pad;
  float *dx = out->data;
  for (int64_t bc = 0; bc < g.n * g.c; bc++) {
    const float *gyc = (const float *)in[0]->data + bc * g.ho * g.wo;
    for (int64_t iy = 0; iy < g.h; iy++)
      for (int64_t ix = 0; ix < g.w; ix++) {
        double acc = 0.0;
        for (int64_t i = 0; i < g.kh; i++) {
          int64_t oy = win_covering(iy, i, g.sy, g.py, 1, g.ho);
          for (int64_t j = 0; oy >= 0 && j < g.kw; j++) {
            int64_t ox = win_covering(ix, j, g.sx, g.px, 1, g.wo);
            if (ox >= 0)
              acc += gyc[oy * g.wo + ox] / avgpool_divisor(&g, oy, ox, incl);
          }
        }
        *dx++ = (float)acc;
      }
  }
}

/* --- upsampling ------------------------------------------------------------------- */

/* Along one axis: the total weight with which output index dst reads input
 * index i (two bilinear taps may both land on i at the border), and
 * whether it reads i at all. */
static double up_weight(const Node *n, int64_t dst, int64_t i, int64_t len_in, int64_t len_out,
                        bool *reads) {
  UpTaps t = up_taps(dst, len_in, len_out, n->at.scale, n->at.mode, n->at.align_corners);
  double w = 0.0;
  *reads = false;
  for (int k = 0; k < t.n; k++)
    if (t.i[k] == i) {
      w += t.w[k];
      *reads = true;
    }
  return w;
}

/* The first and last output index that read input index i (lo > hi: none),
 * found by scanning the forward's taps. */
static void up_range(const Node *n, int64_t i, int64_t len_in, int64_t len_out, int64_t *lo,
                     int64_t *hi) {
  *lo = len_out;
  *hi = -1;
  for (int64_t dst = 0; dst < len_out; dst++) {
    bool reads;
    up_weight(n, dst, i, len_in, len_out, &reads);
    if (reads) {
      *lo = dst < *lo ? dst : *lo;
      *hi = dst;
    }
  }
}

/* in[0] = gy [N, C, H*s, W*s]; out [N, C, H, W].  The forward is separable,
 * out[oy][ox] = sum wy(oy, iy) wx(ox, ix) in[iy][ix] with the weights of
 * up_taps, so the adjoint is dx[iy][ix] = sum over (oy, ox) of
 * wy(oy, iy) wx(ox, ix) gy[oy][ox], over the outputs that read (iy, ix). */
void eval_upsample_back(const Node *n, RtTensor *out, const RtTensor *const *in,
                        EvalCtx *cx) {
  int64_t nc = out->dim[0] * out->dim[1], h = out->dim[2], w = out->dim[3];
  int64_t ho = in[0]->dim[2], wo = in[0]->dim[3];
  const float *gy = in[0]->data;
  float *dx = out->data;
  for (int64_t iy = 0; iy < h; iy++) {
    int64_t ylo, yhi;
    up_range(n, iy, h, ho, &ylo, &yhi);
    for (int64_t ix = 0; ix < w; ix++) {
      int64_t xlo, xhi;
      up_range(n, ix, w, wo, &xlo, &xhi);
      for (int64_t bc = 0; bc < nc; bc++) {
        const float *gyc = gy + bc * ho * wo;
        double acc = 0.0;
        for (int64_t oy = ylo; oy <= yhi; oy++) {
          bool ry, rx;
          double wy = up_weight(n, oy, iy, h, ho, &ry);
          for (int64_t ox = xlo; ry && ox <= xhi; ox++) {
            double wx = up_weight(n, ox, ix, w, wo, &rx);
            if (rx)
              acc += wy * wx * gyc[oy * wo + ox];
          }
        }
        dx[(bc * h + iy) * w + ix] = (float)acc;
      }
    }
  }
}

/* --- slicing, embedding, loss ------------------------------------------------------- */

/* in[0] = gy, the gradient of slice(x) with begin/end/step per axis (as
 * normalized by shape_slice); out has x's shape (attribute `shape`): zeros,
 * with gy[idx] at begin + idx * step on every axis.  Positions are
 * distinct (step >= 1), so this is a copy, not a sum.  Both dtypes are 4
 * bytes wide and zero is all-zero bits in both. */
void eval_slice_back(const Node *n, RtTensor *out, const RtTensor *const *in, EvalCtx *cx) {
  const RtTensor *gy = in[0];
  int64_t st[MAX_RANK], s = 1, cnt = rt_numel(gy);
  for (int d = out->rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= out->dim[d];
  }
  memset(out->data, 0, rt_nbytes(out));
  const uint32_t *src = gy->data;
  uint32_t *dst = out->data;
  for (int64_t i = 0; i < cnt; i++) {
    int64_t rem = i, off = 0;
    for (int d = gy->rank - 1; d >= 0; d--) {
      off += (n->at.begin[d] + (rem % gy->dim[d]) * n->at.step[d]) * st[d];
      rem /= gy->dim[d];
    }
    dst[off] = src[i];
  }
}

#define EMB_CHUNK 256 /* columns summed at once in embedding_back */

/* in[0] = ids i32[...], in[1] = gy f32[..., D]; out [V, D]: zeros, plus row
 * p of gy added to row ids[p] for every position p; ids outside [0, V) are
 * skipped (their forward row was NaN and reaches no table row).  Each
 * table row is summed in double: at the first position of each id, over
 * all positions with that id, EMB_CHUNK columns at a time (a stack buffer,
 * as kernels allocate nothing). */
void eval_embedding_back(const Node *n, RtTensor *out, const RtTensor *const *in,
                         EvalCtx *cx) {
  const int32_t *ids = in[0]->data;
  const float *gy = in[1]->data;
  int64_t v = out->dim[0], d = out->dim[1], cnt = rt_numel(in[0]);
  float *tab = out->data;
  memset(tab, 0, rt_nbytes(out));
  for (int64_t p = 0; p < cnt; p++) {
    int32_t id = ids[p];
    bool first = id >= 0 && id < v;
    for (int64_t q = 0; first && q < p; q++)
      first = ids[q] != id;
    if (!first)
      continue;
    for (int64_t k0 = 0; k0 < d; k0 += EMB_CHUNK) {
      int64_t len = d - k0 < EMB_CHUNK ? d - k0 : EMB_CHUNK;
      double acc[EMB_CHUNK] = {0};
      for (int64_t q = p; q < cnt; q++) {
        if (ids[q] != id)
          continue;
        for (int64_t k = 0; k < len; k++)
          acc[k] += gy[q * d + k0 + k];
      }
      for (int64_t k = 0; k < len; k++)
        tab[id * d + k0 + k] = (float)acc[k];
    }
  }
}

/* in[0] = logits f32[..., C], in[1] = labels i32[...], in[2] = dy f32[]:
 * the gradient of the mean over the M label positions of
 * logsumexp(row) - row[label], which is (softmax(row) - onehot(label)) *
 * dy / M per row.  softmax subtracts the row's maximum first, so no exp
 * overflows.  A label outside [0, C) gives a row of NaN (the forward's loss
 * is NaN then too). */
void eval_cross_entropy_back(const Node *n, RtTensor *out, const RtTensor *const *in,
                             EvalCtx *cx) {
  const float *lg = in[0]->data;
  const int32_t *lb = in[1]->data;
  int64_t c = in[0]->dim[in[0]->rank - 1], rows = rt_numel(in[1]);
  double scale = (double)*(const float *)in[2]->data / (double)rows;
  float *gx = out->data;
  for (int64_t r = 0; r < rows; r++) {
    const float *row = lg + r * c;
    float *g = gx + r * c;
    if (lb[r] < 0 || lb[r] >= c) {
      for (int64_t k = 0; k < c; k++)
        g[k] = NAN;
      continue;
    }
    double mx = -INFINITY, sum = 0.0;
    for (int64_t k = 0; k < c; k++)
      mx = row[k] > mx ? row[k] : mx;
    for (int64_t k = 0; k < c; k++)
      sum += exp(row[k] - mx);
    for (int64_t k = 0; k < c; k++)
      g[k] = (float)((exp(row[k] - mx) / sum - (k == lb[r] ? 1.0 : 0.0)) * scale);
  }
}
