/*
 * eval_internal.h: window and sampling geometry shared by the reference
 * kernels of eval_nn.c (forward) and eval_back.c (backward).
 *
 * A backward kernel is the adjoint of its forward kernel only if both walk
 * exactly the same taps with exactly the same weights: the same window
 * positions and padding rule for pooling, the same first-maximum tie rule,
 * the same average-pool divisor, the same upsampling source indices and
 * bilinear weights.  So each of those is computed here, once, and both
 * files call it; they cannot drift apart.  Internal to ir/: nothing outside
 * the evaluator includes this header.
 */
#ifndef KILN_EVAL_INTERNAL_H
#define KILN_EVAL_INTERNAL_H

#include <math.h>

#include "ir.h"

/* Geometry of a 2-D window op: input [N, C, H, W], output [N, O, Ho, Wo],
 * window kh x kw with stride, padding and dilation per axis. */
typedef struct Win {
  int64_t n, c, h, w;
  int64_t o, ho, wo;
  int64_t kh, kw;
  int64_t sy, sx, py, px, dy, dx;
  int64_t groups;
} Win;

/* The geometry of node n reading x (the "input" side) and producing out
 * (the "output" side).  Backward kernels pass the forward's input and
 * output roles, whichever tensors hold them. */
static inline Win win_of(const Node *n, const RtTensor *x, const RtTensor *out) {
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

/* Along one axis: the window (output index in [0, n_out)) whose tap t
 * lands on input position pos, or -1.  Window o's tap t reads
 * o*s - p + t*d, so o = (pos + p - t*d) / s when that divides. */
static inline int64_t win_covering(int64_t pos, int64_t t, int64_t s, int64_t p, int64_t d,
                                   int64_t n_out) {
  int64_t v = pos + p - t * d;
  if (v < 0 || v % s)
    return -1;
  return v / s < n_out ? v / s : -1;
}

/* Max pooling: the offset (iy * w + ix) in the channel xc [h, w] of the
 * tap window (y, xo) selects, or -1 if no tap is in bounds.  Padding acts
 * as -inf (out-of-bounds taps are skipped); the FIRST maximum in row-major
 * tap order wins ties; a NaN tap is selected at once (the window's value is
 * NaN, as in PyTorch); a window of -inf values selects its first in-bounds
 * tap.  The forward reads xc at this offset, the backward routes dy to it. */
static inline int64_t maxpool_pick(const Win *g, const float *xc, int64_t y, int64_t xo) {
  int64_t pick = -1;
  double best = -INFINITY;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = y * g->sy - g->py + i * g->dy;
    for (int64_t j = 0; iy >= 0 && iy < g->h && j < g->kw; j++) {
      int64_t ix = xo * g->sx - g->px + j * g->dx;
      if (ix < 0 || ix >= g->w)
        continue;
      double v = xc[iy * g->w + ix];
      if (isnan(v))
        return iy * g->w + ix;
      if (pick < 0 || v > best) {
        best = v;
        pick = iy * g->w + ix;
      }
    }
  }
  return pick;
}

/* Average pooling (adjacent taps, no dilation attribute): the divisor of
 * window (y, xo), kh*kw when count_include_pad, else the number of its
 * in-bounds taps (PyTorch; without ceil_mode, which kiln lacks, a window
 * never reaches past the padding, so kh*kw is PyTorch's clipped size). */
static inline double avgpool_divisor(const Win *g, int64_t y, int64_t xo, bool incl) {
  if (incl)
    return (double)(g->kh * g->kw);
  int64_t cnt = 0;
  for (int64_t i = 0; i < g->kh; i++) {
    int64_t iy = y * g->sy - g->py + i;
    for (int64_t j = 0; iy >= 0 && iy < g->h && j < g->kw; j++) {
      int64_t ix = xo * g->sx - g->px + j;
      cnt += ix >= 0 && ix < g->w;
    }
  }
  return (double)cnt;
}

/* Upsampling along one axis, len_in -> len_out = len_in * scale: output
 * index dst reads input indices i[0 .. n) with weights w[0 .. n).
 *  - nearest (mode 0): the one index dst / scale, weight 1;
 *  - bilinear (mode 1): PyTorch's source coordinate
 *        align_corners:  src = dst * (len_in - 1) / (len_out - 1)  (0 if len_out == 1)
 *        otherwise:      src = (dst + 0.5) / scale - 0.5, clamped at 0,
 *    then indices floor(src) and floor(src) + 1 (clamped to the last
 *    index, so both may be the same) with weights 1 - frac and frac.
 * A 2-D upsample is separable: out[oy][ox] = sum_a sum_b wy[a] wx[b]
 * in[iy[a]][ix[b]]. */
typedef struct UpTaps {
  int n;
  int64_t i[2];
  double w[2];
} UpTaps;

static inline UpTaps up_taps(int64_t dst, int64_t len_in, int64_t len_out, int scale, int mode,
                             bool align) {
  UpTaps t = {1, {dst / scale, 0}, {1.0, 0.0}};
  if (mode == 0)
    return t;
  double src;
  if (align)
    src = len_out > 1 ? (double)dst * (double)(len_in - 1) / (double)(len_out - 1) : 0.0;
  else {
    src = ((double)dst + 0.5) / scale - 0.5;
    src = src < 0 ? 0.0 : src;
  }
  int64_t i0 = (int64_t)src;
  double frac = src - (double)i0;
  t.n = 2;
  t.i[0] = i0;
  t.i[1] = i0 < len_in - 1 ? i0 + 1 : i0;
  t.w[0] = 1.0 - frac;
  t.w[1] = frac;
  return t;
}

#endif
