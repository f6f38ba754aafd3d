/*
 * rng.c: counter-based random numbers and parameter initialization.
 *
 * Every random value is a pure function of (seed, counter): there is no
 * generator state to carry around, values can be computed in any order or
 * in parallel, and a compiled program reproduces the reference exactly by
 * evaluating the same formulas.
 *
 *   mix(z)            SplitMix64's output function (Steele, Lea, Flood 2014):
 *                     z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *                     z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31
 *   rng_hash(s, c)    mix(mix(s) + GOLDEN * (c + 1)), GOLDEN = 0x9e3779b97f4a7c15:
 *                     the c-th output of a SplitMix64 generator whose state
 *                     starts at mix(s), so nearby seeds give unrelated streams
 *   rng_uniform(s, c) the top 53 bits of rng_hash(s, c) times 2^-53: [0, 1)
 *   rng_normal(s, c)  Box-Muller from u1 = 1 - rng_uniform(s, 2c) (in (0, 1],
 *                     so log is finite) and u2 = rng_uniform(s, 2c + 1):
 *                     sqrt(-2 ln u1) cos(2 pi u2)
 *   rng_seed_for(s, name)  rng_hash(s, FNV-1a-64(name)): a parameter's stream
 *                     depends on its name, not on when it was created
 *
 * param_init_fill gives element i of parameter p the value drawn with
 * counter i from rng_seed_for(seed, p->name).
 */
#include <math.h>
#include <string.h>

#include "ir.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rng_hash(uint64_t seed, uint64_t counter) {
  return mix(mix(seed) + GOLDEN * (counter + 1));
}

double rng_uniform(uint64_t seed, uint64_t counter) {
  return (double)(rng_hash(seed, counter) >> 11) * 0x1.0p-53;
}

double rng_normal(uint64_t seed, uint64_t counter) {
  double u1 = 1.0 - rng_uniform(seed, 2 * counter);
  double u2 = rng_uniform(seed, 2 * counter + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t rng_seed_for(uint64_t seed, const char *name) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a offset basis */
  for (const char *s = name; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return rng_hash(seed, h);
}

/* The value of element i of an f32 parameter (fans already clamped >= 1). */
static double init_value(const Init *in, uint64_t s, uint64_t i, double fi, double fo) {
  switch (in->kind) {
  case INIT_ZEROS: return 0.0;
  case INIT_ONES: return 1.0;
  case INIT_CONSTANT: return in->a;
  case INIT_XAVIER: return sqrt(6.0 / (fi + fo)) * (2.0 * rng_uniform(s, i) - 1.0);
  case INIT_XAVIER_NORMAL: return sqrt(2.0 / (fi + fo)) * rng_normal(s, i);
  case INIT_HE: return sqrt(2.0 / fi) * rng_normal(s, i);
  case INIT_HE_UNIFORM: return sqrt(6.0 / fi) * (2.0 * rng_uniform(s, i) - 1.0);
  case INIT_NORMAL: return in->a + in->b * rng_normal(s, i);
  case INIT_UNIFORM: return in->a + (in->b - in->a) * rng_uniform(s, i);
  case INIT_AUTO: break;
  }
  die("parameter initializer %s was not resolved (graph_resolve_init)", init_name(in->kind));
}

/* i32 parameters (counters, lookup tables) take only constant fills. */
static void fill_i32(const Node *p, int32_t *y, int64_t cnt) {
  const Init *in = &p->init;
  double v = in->kind == INIT_ZEROS ? 0 : in->kind == INIT_ONES ? 1 : in->a;
  if (in->kind != INIT_ZEROS && in->kind != INIT_ONES && in->kind != INIT_CONSTANT)
    die("i32 parameter %s cannot use the %s initializer", p->name, init_name(in->kind));
  if (!(v >= INT32_MIN && v <= INT32_MAX))
    die("i32 parameter %s: constant %g is out of range", p->name, v);
  for (int64_t i = 0; i < cnt; i++)
    y[i] = (int32_t)v;
}

void param_init_fill(const Node *p, uint64_t seed, void *data) {
  int64_t cnt = shape_numel(&p->shape);
  ASSERT(p->op == OP_PARAM);
  if (p->init.kind == INIT_AUTO)
    die("parameter %s: initializer auto was not resolved (graph_resolve_init)", p->name);
  if (p->dtype == DT_I32) {
    fill_i32(p, data, cnt);
    return;
  }
  uint64_t s = rng_seed_for(seed, p->name);
  double fi = p->init.fan_in < 1 ? 1.0 : (double)p->init.fan_in;
  double fo = p->init.fan_out < 1 ? 1.0 : (double)p->init.fan_out;
  float *y = data;
  for (int64_t i = 0; i < cnt; i++)
    y[i] = (float)init_value(&p->init, s, (uint64_t)i, fi, fo);
}
