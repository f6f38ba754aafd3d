/*
 * kmath.c: the C form of kmath.h's exp, tanh and erf, which kir_eval runs.
 * Every operation is one f32 operation of the documented sequence (fmaf
 * where the sequence has a fused multiply-add; the project compiles with
 * -ffp-contract=off, so nothing else is fused), in the order the LLVM
 * emitter (codegen/llvm/cg_expr.c) builds them.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kmath.h"

static float horner(const float *c, int n, float x) {
  float p = c[n - 1];
  for (int i = n - 2; i >= 0; i--)
    p = fmaf(p, x, c[i]);
  return p;
}

float km_expf(float x) {
  float xn = x != x ? 0.0f : x;
  float xc = xn > KM_EXP_HI ? KM_EXP_HI : xn;
  xc = xc < KM_EXP_LO ? KM_EXP_LO : xc;
  float kf = floorf(fmaf(xc, KM_LOG2E, 0.5f));
  float r = fmaf(kf, -KM_LN2_HI, xc);
  r = fmaf(kf, -KM_LN2_LO, r);
  float p = horner(km_exp_c, KM_EXP_N, r);
  int32_t k = (int32_t)kf; /* in [-126, 128] */
  uint32_t bits;
  memcpy(&bits, &p, sizeof bits);
  bits += (uint32_t)k << 23; /* p 2^k, exact while the result is normal */
  float y;
  memcpy(&y, &bits, sizeof y);
  y = bits >= KM_INF_BITS ? INFINITY : y;
  y = x < KM_EXP_LO ? 0.0f : y;
  return x != x ? fabsf(x) : y; /* a NaN, its sign cleared (kmath.h) */
}

float km_tanhf(float x) {
  float a = fabsf(x);
  float small = x * horner(km_tanh_c, KM_TANH_N, x * x);
  float e = km_expf(a + a);
  float t = 1.0f - 2.0f / (e + 1.0f);
  t = x < 0.0f ? -t : t;
  return a < KM_TANH_SMALL ? small : t;
}

float km_erff(float x) {
  float a = fabsf(x);
  float x2 = x * x;
  float small = x * horner(km_erf_small_c, KM_ERF_SMALL_N, x2);
  float ac = a > KM_ERF_CLAMP ? KM_ERF_CLAMP : a;
  float g = horner(km_erf_large_c, KM_ERF_LARGE_N, ac + KM_ERF_CENTER);
  float t = 1.0f - km_expf(-x2) * g;
  t = x < 0.0f ? -t : t;
  return a < KM_ERF_SMALL ? small : t;
}
