/*
 * cuda_prelude.c: the text every CUDA module starts with: the helpers the
 * printed kernels call for what plain C would do differently from Kernel IR
 * (ir/kir_eval.c), and kiln's own exp, tanh and erf.
 *
 *   kiln_add/sub/mul/neg/abs   integer arithmetic that wraps (computed in
 *                              unsigned: no undefined behaviour); used only
 *                              where the emitter cannot show that the plain
 *                              C operation stays in range (cuda_expr.c)
 *   kiln_div/floordiv/mod      x / 0 and MIN / -1 give 0; floordiv and mod
 *                              round toward -inf; i32 computed in 64 bits
 *                              and wrapped, as kir_eval does
 *   kiln_i32                   an index wrapped to i32
 *   kiln_isnan                 x != x
 *   kiln_min/max               b < a ? b : a and a < b ? b : a (NaN rules)
 *   kiln_f2i/f2l               f32 to integer: truncating, saturating, NaN 0
 *   kiln_hash/hash64           SplitMix64 as the runtime's rt_rng_hash:
 *                              mix(mix(a) + GOLDEN (b + 1)), >> 11 for hash
 *   kiln_exp/tanh/erf          ir/kmath.c's f32 sequences, printed here from
 *                              kmath.h's coefficients and constants (each
 *                              float as 9 significant digits, which reads
 *                              back as the same float), operation for
 *                              operation in kmath.c's order, so the bits are
 *                              kir_eval's; exp's last step, P(r) 2^k, as two
 *                              multiplies by powers of 2 where kmath.c adds k
 *                              to the exponent bits (kmath.h: the same value)
 *
 * Everything is __device__ __forceinline__ and named kiln_*, which the
 * emitter keeps out of buffer and variable names.  The text uses only the
 * constructs tests/cuda_emu.h defines for the host emulator: no headers
 * (NVRTC has the math functions built in), __int_as_float for the bits of
 * 2^k, and float, int, long long and their unsigned forms.
 */
#include <pthread.h>
#include <stdio.h>

#include "cuda_internal.h"
#include "kmath.h"

static const char helpers[] =
    "/* ---- kiln's prelude (codegen/cuda/cuda_prelude.c): Kernel IR's semantics in C ---- */\n"
    "#define KILN_I64_MIN (-9223372036854775807LL - 1)\n"
    "#define KILN_DEV static __device__ __forceinline__\n"
    "\n"
    "/* integer + - * and negation, wrapping around (two's complement) */\n"
    "KILN_DEV int kiln_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }\n"
    "KILN_DEV int kiln_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }\n"
    "KILN_DEV int kiln_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }\n"
    "KILN_DEV int kiln_neg(int a) { return (int)(0u - (unsigned)a); }\n"
    "KILN_DEV long long kiln_add(long long a, long long b) {\n"
    "  return (long long)((unsigned long long)a + (unsigned long long)b);\n"
    "}\n"
    "KILN_DEV long long kiln_sub(long long a, long long b) {\n"
    "  return (long long)((unsigned long long)a - (unsigned long long)b);\n"
    "}\n"
    "KILN_DEV long long kiln_mul(long long a, long long b) {\n"
    "  return (long long)((unsigned long long)a * (unsigned long long)b);\n"
    "}\n"
    "KILN_DEV long long kiln_neg(long long a) {\n"
    "  return (long long)(0ull - (unsigned long long)a);\n"
    "}\n"
    "KILN_DEV int kiln_abs(int a) { return a < 0 ? kiln_neg(a) : a; }\n"
    "KILN_DEV long long kiln_abs(long long a) { return a < 0 ? kiln_neg(a) : a; }\n"
    "KILN_DEV int kiln_isnan(float x) { return x != x; }\n"
    "/* an index wrapped to i32 */\n"
    "KILN_DEV int kiln_i32(long long a) { return (int)(unsigned)(unsigned long long)a; }\n"
    "\n"
    "/* division: truncating; x / 0 and MIN / -1 give 0; floordiv and mod round\n"
    " * toward -inf; i32 operands are divided in 64 bits and wrapped */\n"
    "KILN_DEV long long kiln_div(long long a, long long b) {\n"
    "  return b == 0 || (a == KILN_I64_MIN && b == -1) ? 0 : a / b;\n"
    "}\n"
    "KILN_DEV long long kiln_floordiv(long long a, long long b) {\n"
    "  if (b == 0 || (a == KILN_I64_MIN && b == -1))\n"
    "    return 0;\n"
    "  long long q = a / b;\n"
    "  return a % b != 0 && ((a < 0) != (b < 0)) ? q - 1 : q;\n"
    "}\n"
    "KILN_DEV long long kiln_mod(long long a, long long b) {\n"
    "  if (b == 0 || (a == KILN_I64_MIN && b == -1))\n"
    "    return 0;\n"
    "  return kiln_sub(a, kiln_mul(b, kiln_floordiv(a, b)));\n"
    "}\n"
    "KILN_DEV int kiln_div(int a, int b) {\n"
    "  return kiln_i32(kiln_div((long long)a, (long long)b));\n"
    "}\n"
    "KILN_DEV int kiln_floordiv(int a, int b) {\n"
    "  return kiln_i32(kiln_floordiv((long long)a, (long long)b));\n"
    "}\n"
    "KILN_DEV int kiln_mod(int a, int b) {\n"
    "  return kiln_i32(kiln_mod((long long)a, (long long)b));\n"
    "}\n"
    "\n"
    "/* min(a, b) = b < a ? b : a, max(a, b) = a < b ? b : a: with a NaN or equal\n"
    " * operands the first comes back */\n"
    "KILN_DEV float kiln_min(float a, float b) { return b < a ? b : a; }\n"
    "KILN_DEV float kiln_max(float a, float b) { return a < b ? b : a; }\n"
    "KILN_DEV int kiln_min(int a, int b) { return b < a ? b : a; }\n"
    "KILN_DEV int kiln_max(int a, int b) { return a < b ? b : a; }\n"
    "KILN_DEV long long kiln_min(long long a, long long b) { return b < a ? b : a; }\n"
    "KILN_DEV long long kiln_max(long long a, long long b) { return a < b ? b : a; }\n"
    "\n"
    "/* f32 to integer: truncation toward zero, saturating, NaN giving 0 */\n"
    "KILN_DEV int kiln_f2i(float f) {\n"
    "  return f != f                 ? 0\n"
    "         : f >= 2147483648.0f  ? 2147483647\n"
    "         : f < -2147483648.0f  ? (-2147483647 - 1)\n"
    "                               : (int)f;\n"
    "}\n"
    "KILN_DEV long long kiln_f2l(float f) {\n"
    "  return f != f                        ? 0\n"
    "         : f >= 9223372036854775808.0f ? 9223372036854775807LL\n"
    "         : f < -9223372036854775808.0f ? KILN_I64_MIN\n"
    "                                       : (long long)f;\n"
    "}\n"
    "\n"
    "/* random bits: SplitMix64, as the runtime's rt_rng_hash(a, b) */\n"
    "KILN_DEV unsigned long long kiln_mix(unsigned long long z) {\n"
    "  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;\n"
    "  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;\n"
    "  return z ^ (z >> 31);\n"
    "}\n"
    "KILN_DEV long long kiln_hash64(long long a, long long b) {\n"
    "  unsigned long long c = (unsigned long long)b + 1ull;\n"
    "  return (long long)kiln_mix(kiln_mix((unsigned long long)a) + 0x9e3779b97f4a7c15ull * c);\n"
    "}\n"
    "KILN_DEV long long kiln_hash(long long a, long long b) {\n"
    "  return (long long)((unsigned long long)kiln_hash64(a, b) >> 11);\n"
    "}\n"
    "\n"
    "/* 2^k for k in [-126, 127], from its bits */\n"
    "KILN_DEV float kiln_exp2i(int k) { return __int_as_float((k + 127) << 23); }\n";

/* A float literal that reads back as v (9 significant digits). */
static void flit(Sb *b, float v) {
  char t[64];
  snprintf(t, sizeof t, "%.9g", (double)v);
  bool dot = false;
  for (const char *p = t; *p; p++)
    dot |= *p == '.' || *p == 'e';
  sb_printf(b, v < 0 ? "(%s%sf)" : "%s%sf", t, dot ? "" : ".0");
}

/* float p = c[n-1]; p = fmaf(p, x, c[i]) for i = n-2 .. 0: kmath.c's horner. */
static void horner(Sb *b, const char *p, const float *c, int n, const char *x) {
  sb_printf(b, "  float %s = ", p);
  flit(b, c[n - 1]);
  sb_puts(b, ";\n");
  for (int i = n - 2; i >= 0; i--) {
    sb_printf(b, "  %s = fmaf(%s, %s, ", p, p, x);
    flit(b, c[i]);
    sb_puts(b, ");\n");
  }
}

/* `  float name = cond ? a : b;` with a float constant in it: helper for
 * the clamps, with the constant printed exactly. */
static void clamp(Sb *b, const char *lhs, const char *v, const char *op, float lim) {
  sb_printf(b, "  %s = %s %s ", lhs, v, op);
  flit(b, lim);
  sb_puts(b, " ? ");
  flit(b, lim);
  sb_printf(b, " : %s;\n", v);
}

static void exp_fn(Sb *b) {
  sb_puts(b, "\n/* kiln's exp (ir/kmath.h): NaN stays NaN; 0 below -87.33; x clamped to\n"
             " * [-87.33, 89]; k = floor(x log2(e) + 1/2); r = x - k ln2 in two parts; a\n"
             " * degree-6 polynomial on r; scaled by 2^floor(k/2) 2^(k - floor(k/2)) */\n"
             "KILN_DEV float kiln_exp(float x) {\n"
             "  float xn = x != x ? 0.0f : x;\n");
  clamp(b, "float xc", "xn", ">", KM_EXP_HI);
  clamp(b, "xc", "xc", "<", KM_EXP_LO);
  sb_puts(b, "  float kf = floorf(fmaf(xc, ");
  flit(b, KM_LOG2E);
  sb_puts(b, ", 0.5f));\n  float r = fmaf(kf, ");
  flit(b, -KM_LN2_HI);
  sb_puts(b, ", xc);\n  r = fmaf(kf, ");
  flit(b, -KM_LN2_LO);
  sb_puts(b, ", r);\n");
  horner(b, "p", km_exp_c, KM_EXP_N, "r");
  sb_puts(b, "  int k = (int)kf;\n"
             "  int k1 = k < 0 ? -((1 - k) / 2) : k / 2;\n"
             "  float y = p * kiln_exp2i(k1) * kiln_exp2i(k - k1);\n");
  sb_puts(b, "  y = x < ");
  flit(b, KM_EXP_LO);
  sb_puts(b, " ? 0.0f : y;\n"
             "  return x != x ? fabsf(x) : y;\n"
             "}\n");
}

static void tanh_fn(Sb *b) {
  sb_puts(b, "\n/* kiln's tanh: |x| < 0.625: x T(x^2); else 1 - 2 / (exp(2|x|) + 1) with x's\n"
             " * sign */\n"
             "KILN_DEV float kiln_tanh(float x) {\n"
             "  float a = fabsf(x);\n"
             "  float x2 = x * x;\n");
  horner(b, "p", km_tanh_c, KM_TANH_N, "x2");
  sb_puts(b, "  float small = x * p;\n"
             "  float e = kiln_exp(a + a);\n"
             "  float t = 1.0f - 2.0f / (e + 1.0f);\n"
             "  t = x < 0.0f ? -t : t;\n"
             "  return a < ");
  flit(b, KM_TANH_SMALL);
  sb_puts(b, " ? small : t;\n}\n");
}

static void erf_fn(Sb *b) {
  sb_puts(b, "\n/* kiln's erf: |x| < 0.9: x S(x^2); else 1 - exp(-x^2) G(min(|x|, 4) - 2.45) with\n"
             " * x's sign */\n"
             "KILN_DEV float kiln_erf(float x) {\n"
             "  float a = fabsf(x);\n"
             "  float x2 = x * x;\n");
  horner(b, "s", km_erf_small_c, KM_ERF_SMALL_N, "x2");
  sb_puts(b, "  float small = x * s;\n");
  clamp(b, "float ac", "a", ">", KM_ERF_CLAMP);
  sb_puts(b, "  float u = ac + ");
  flit(b, KM_ERF_CENTER);
  sb_puts(b, ";\n");
  horner(b, "g", km_erf_large_c, KM_ERF_LARGE_N, "u");
  sb_puts(b, "  float t = 1.0f - kiln_exp(-x2) * g;\n"
             "  t = x < 0.0f ? -t : t;\n"
             "  return a < ");
  flit(b, KM_ERF_SMALL);
  sb_puts(b, " ? small : t;\n}\n");
}

static Sb prelude;
static pthread_once_t prelude_once = PTHREAD_ONCE_INIT;

static void make_prelude(void) {
  sb_puts(&prelude, helpers);
  exp_fn(&prelude);
  tanh_fn(&prelude);
  erf_fn(&prelude);
  sb_puts(&prelude, "/* ---- end of the prelude ---- */\n");
}

const char *cu_prelude(void) {
  pthread_once(&prelude_once, make_prelude);
  return prelude.s;
}
