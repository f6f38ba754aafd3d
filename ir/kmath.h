/*
 * kmath.h: kiln's own f32 exp, tanh and erf, the definition of Kernel IR's
 * KO_EXP, KO_TANH and KO_ERF (kir.h).
 *
 * Why not libm's expf/tanhf/erff: a call per element cannot be vectorized,
 * and these three were most of the time of the LSTM (tanh) and of the
 * transformer (GELU's erf) steps.  Written as a fixed sequence of f32
 * operations (multiplies, adds, fused multiply-adds, comparisons and
 * selects, one floor and a power of two built from its bits), the same
 * formula runs in kir_eval (kmath.c, this C) and in every backend (the
 * LLVM emitter in codegen/llvm/cg_expr.c builds the same operations, which
 * the loop vectorizer turns into 16-lane code), so compiled kernels still
 * give kir_eval's bits exactly.  No branches: both sides of each select
 * are computed, as a vector unit does.
 *
 *   exp(x)   NaN -> that NaN with its sign cleared (erf passes it -x^2: a
 *            NaN of either sign then meets NaNs of the other in products and
 *            sums, whose result's sign x86 and C compilers choose by operand
 *            order, which differs between gcc and LLVM); 0 below -87.33,
 *            where the result would leave the normal range (the exact one
 *            is at most 1.19e-38 there:
 *            the flush costs no more than that, and an f32 operation with a
 *            subnormal result took a softmax over masked, -inf positions
 *            3.2x as long); x clamped to [-87.33, 89] (beyond 89, inf
 *            comes out by itself); k = floor(x log2(e) + 1/2); r = x - k ln2
 *            in two parts (ln2 = HI + LO, HI with 12 trailing zero bits so
 *            k HI is exact); e^r by a degree-6 polynomial P on
 *            [-ln2/2, ln2/2]; the result P(r) 2^k, by adding k to the
 *            exponent bits of P(r) (in [0.7, 1.42]): exact, as every
 *            result is normal (k = -126 only where r > 0, so P(r) >= 1),
 *            but for k = 128 and P(r) >= 1, where the sum reaches inf's
 *            bits (KM_INF_BITS) and the result is inf.  This is the value
 *            of P(r) 2^floor(k/2) 2^(k - floor(k/2)) as two multiplies (the
 *            CUDA prelude's form), in 5 operations instead of 10.
 *   tanh(x)  |x| < 0.625: x T(x^2), T of degree 5; else 1 - 2 / (exp(2|x|) + 1)
 *            with x's sign (|x| large: exp gives inf and the result 1).
 *   erf(x)   |x| < 0.9: x S(x^2), S of degree 6; else 1 - exp(-x^2) G(min(|x|, 4) - 2.45)
 *            with x's sign, G of degree 10 fitting erfc(x) exp(x^2) on [0.9, 4]
 *            (smooth: from 0.43 down to 0.14).  x^2 is the x * x of the small
 *            branch, and exp(-x^2) is the exp a GELU's derivative needs
 *            (ir/lower_elem.c writes its exp(-x^2 / 2) as exp(-(z * z)) with
 *            z = x / sqrt(2), erf's argument), so a kernel with both computes
 *            one exp: LLVM merges the two identical sequences.
 * The coefficients are least-squares fits on Chebyshev nodes, rounded to
 * f32 (tests/reference/kmath_fit.py makes them and simulates the f32
 * sequence).  Errors against the exact functions: exp 1.03 ulp, tanh 1.34
 * ulp, erf 2.39 ulp (largest near |x| = 0.9), over every f32 sampled;
 * test_codegen checks the bounds and the bit equality with compiled code.
 */
#ifndef KILN_KMATH_H
#define KILN_KMATH_H

enum { KM_EXP_N = 7, KM_TANH_N = 6, KM_ERF_SMALL_N = 7, KM_ERF_LARGE_N = 11 };

/* polynomial coefficients, constant term first */
static const float km_exp_c[KM_EXP_N] = {
    1.000000000e+00f, 1.000000000e+00f, 4.999999106e-01f, 1.666642129e-01f,
    4.166835919e-02f, 8.374771103e-03f, 1.382942079e-03f};
static const float km_tanh_c[KM_TANH_N] = {1.000000000e+00f,  -3.333327472e-01f,
                                           1.333136559e-01f,  -5.373585969e-02f,
                                           2.063029259e-02f,  -5.697509274e-03f};
static const float km_erf_small_c[KM_ERF_SMALL_N] = {
    1.128379226e+00f, -3.761263490e-01f, 1.128372550e-01f, -2.686097845e-02f,
    5.204870366e-03f, -8.185926126e-04f, 8.553011867e-05f};
static const float km_erf_large_c[KM_ERF_LARGE_N] = {
    2.145871073e-01f,  -7.690276206e-02f, 2.617584914e-02f,  -8.510840125e-03f,
    2.659274265e-03f,  -8.072949131e-04f, 2.328841947e-04f,  -5.884660277e-05f,
    1.712253470e-05f,  -7.475180155e-06f, 1.769629193e-06f};

#define KM_LOG2E 1.44269502162933349609375f /* f32(log2(e)) */
#define KM_LN2_HI 0.693145751953125f        /* ln 2, 12 trailing zero bits */
#define KM_LN2_LO 1.428606765330187e-06f    /* f32(ln 2 - KM_LN2_HI) */
#define KM_EXP_LO -87.33f /* exp is 0 below: its results stay normal */
#define KM_EXP_HI 89.0f
#define KM_INF_BITS 0x7f800000u /* the bits of +inf */
#define KM_TANH_SMALL 0.625f
#define KM_ERF_SMALL 0.9f
#define KM_ERF_CLAMP 4.0f
#define KM_ERF_CENTER -2.45f /* added to min(|x|, 4) */

float km_expf(float x);
float km_tanhf(float x);
float km_erff(float x);

#endif
