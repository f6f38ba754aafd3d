/*
 * rt_init.c: counter-based random numbers and parameter initialization,
 * shared by the compiler (kiln init, run, train: ir/rng.c) and the
 * programs that kiln build makes, which fill their parameters at start-up
 * from the manifest's initializers instead of carrying the values (a
 * VGG-11 training program would otherwise hold 1 GB of them).  One copy of
 * the formulas, so both give the same bits.
 *
 * Every random value is a pure function of (seed, counter): there is no
 * generator state to carry around, values can be computed in any order or
 * in parallel, and a compiled program reproduces the reference exactly by
 * evaluating the same formulas.
 *
 *   mix(z)            SplitMix64's output function (Steele, Lea, Flood 2014):
 *                     z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *                     z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31
 *   rt_rng_hash(s, c) mix(mix(s) + GOLDEN * (c + 1)), GOLDEN = 0x9e3779b97f4a7c15:
 *                     the c-th output of a SplitMix64 generator whose state
 *                     starts at mix(s), so nearby seeds give unrelated streams
 *   rt_rng_uniform    the top 53 bits of rt_rng_hash(s, c) times 2^-53: [0, 1)
 *   rt_rng_normal     Box-Muller from u1 = 1 - rt_rng_uniform(s, 2c) (in (0, 1],
 *                     so log is finite) and u2 = rt_rng_uniform(s, 2c + 1):
 *                     sqrt(-2 ln u1) cos(2 pi u2)
 *   rt_rng_seed_for(s, name)  rt_rng_hash(s, FNV-1a-64(name)) (see below): a parameter's
 *                     stream depends on its name, not on when it was created
 *
 * rt_init_fill gives element i of a parameter the value drawn with counter
 * i from rt_rng_seed_for(seed, name), in parallel chunks (the values do not
 * depend on the split).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt.h"
#include "rt_pool.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rt_rng_hash(uint64_t seed, uint64_t counter) {
  return mix(mix(seed) + GOLDEN * (counter + 1));
}

double rt_rng_uniform(uint64_t seed, uint64_t counter) {
  return (double)(rt_rng_hash(seed, counter) >> 11) * 0x1.0p-53;
}

double rt_rng_normal(uint64_t seed, uint64_t counter) {
  double u1 = 1.0 - rt_rng_uniform(seed, 2 * counter);
  double u2 = rt_rng_uniform(seed, 2 * counter + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t rt_rng_seed_for(uint64_t seed, const char *name) {
  /* FNV-1a, but from 1469598103934665603: FNV's offset basis is
   * 14695981039346656037, a digit longer.  Kept: every seeded parameter
   * (and randn's seeds) comes from it, and any start mixes as well. */
  uint64_t h = 1469598103934665603ull;
  for (const char *s = name; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return rt_rng_hash(seed, h);
}

static const char *const init_names[] = {
    [RT_INIT_AUTO] = "auto",       [RT_INIT_ZEROS] = "zeros",
    [RT_INIT_ONES] = "ones",       [RT_INIT_CONSTANT] = "constant",
    [RT_INIT_XAVIER] = "xavier",   [RT_INIT_XAVIER_NORMAL] = "xavier_normal",
    [RT_INIT_HE] = "he",           [RT_INIT_HE_UNIFORM] = "he_uniform",
    [RT_INIT_NORMAL] = "normal",   [RT_INIT_UNIFORM] = "uniform",
};

const char *rt_init_name(RtInitKind k) {
  return (unsigned)k < sizeof init_names / sizeof init_names[0] ? init_names[k] : "?";
}

int rt_init_lookup(const char *name) {
  for (int k = 0; k < (int)(sizeof init_names / sizeof init_names[0]); k++)
    if (strcmp(init_names[k], name) == 0)
      return k;
  return -1;
}

/* The value of element i of an f32 parameter (fans already clamped >= 1). */
static double init_value(const RtInit *in, uint64_t s, uint64_t i, double fi, double fo) {
  switch (in->kind) {
  case RT_INIT_ZEROS: return 0.0;
  case RT_INIT_ONES: return 1.0;
  case RT_INIT_CONSTANT: return in->a;
  case RT_INIT_XAVIER: return sqrt(6.0 / (fi + fo)) * (2.0 * rt_rng_uniform(s, i) - 1.0);
  case RT_INIT_XAVIER_NORMAL: return sqrt(2.0 / (fi + fo)) * rt_rng_normal(s, i);
  case RT_INIT_HE: return sqrt(2.0 / fi) * rt_rng_normal(s, i);
  case RT_INIT_HE_UNIFORM: return sqrt(6.0 / fi) * (2.0 * rt_rng_uniform(s, i) - 1.0);
  case RT_INIT_NORMAL: return in->a + in->b * rt_rng_normal(s, i);
  case RT_INIT_UNIFORM: return in->a + (in->b - in->a) * rt_rng_uniform(s, i);
  case RT_INIT_AUTO: break;
  }
  return NAN; /* rt_init_fill rejects these first */
}

typedef struct Fill {
  const RtInit *in;
  uint64_t s;
  double fi, fo;
  float *y;
} Fill;

static void fill_range(void *ctx, int64_t begin, int64_t end) {
  const Fill *f = ctx;
  for (int64_t i = begin; i < end; i++)
    f->y[i] = (float)init_value(f->in, f->s, (uint64_t)i, f->fi, f->fo);
}

RtStatus rt_init_fill(const RtInit *in, uint64_t seed, const char *name, RtDType dt, void *data,
                      int64_t cnt, char *err, size_t n) {
  if (in->kind <= RT_INIT_AUTO || in->kind > RT_INIT_UNIFORM) {
    snprintf(err, n, "parameter %s: initializer %s was not resolved", name,
             rt_init_name(in->kind));
    return RT_ERR_FORMAT;
  }
  if (dt == RT_I32) { /* counters, lookup tables: constant fills only */
    double v = in->kind == RT_INIT_ZEROS ? 0 : in->kind == RT_INIT_ONES ? 1 : in->a;
    if (in->kind != RT_INIT_ZEROS && in->kind != RT_INIT_ONES && in->kind != RT_INIT_CONSTANT) {
      snprintf(err, n, "i32 parameter %s cannot use the %s initializer", name,
               rt_init_name(in->kind));
      return RT_ERR_DTYPE;
    }
    if (!(v >= INT32_MIN && v <= INT32_MAX)) {
      snprintf(err, n, "i32 parameter %s: constant %g is out of range", name, v);
      return RT_ERR_FORMAT;
    }
    int32_t *y = data;
    for (int64_t i = 0; i < cnt; i++)
      y[i] = (int32_t)v;
    return RT_OK;
  }
  Fill f = {in, rt_rng_seed_for(seed, name), in->fan_in < 1 ? 1.0 : (double)in->fan_in,
            in->fan_out < 1 ? 1.0 : (double)in->fan_out, data};
  rt_parallel_for(cnt, 1 << 14, fill_range, &f);
  return RT_OK;
}
