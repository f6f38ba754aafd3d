#!/usr/bin/env python3
"""kmath_fit.py: the coefficients of ir/kmath.h, and their errors.

Fits each polynomial by weighted least squares on Chebyshev nodes (close
to minimax for these smooth functions), rounds the coefficients to f32,
then simulates the f32 sequence of ir/kmath.c (every operation rounded to
f32, fma rounded once) on a dense sweep and prints the largest error in
ulps against the double-precision function.  Run with Debian's python3
(numpy):  /usr/bin/python3 tests/reference/kmath_fit.py
"""
import math

import numpy as np

f32, f64 = np.float32, np.float64


def fit(fn, lo, hi, deg, xform=lambda x: x, relative=True, n=4000):
    k = np.arange(n)
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n)
    y = fn(x)
    w = 1 / np.abs(y) if relative else np.ones_like(y)
    v = np.vander(xform(x), deg + 1, increasing=True)
    c, *_ = np.linalg.lstsq(v * w[:, None], y * w, rcond=None)
    return [f32(ci) for ci in c]


verf = np.vectorize(math.erf)
verfc = np.vectorize(math.erfc)
LN2 = math.log(2)
EXP = fit(np.exp, -LN2 / 2, LN2 / 2, 6)
TANH = fit(lambda x: np.tanh(x) / x, 1e-4, 0.625, 5, xform=lambda x: x * x)
ERF_SMALL = fit(lambda x: verf(x) / x, 1e-4, 0.9, 6, xform=lambda x: x * x)
ERF_LARGE = fit(lambda x: verfc(x) * np.exp(x * x), 0.9, 4.0, 10, xform=lambda x: x - 2.45)


def fma(a, b, c):
    return (f64(a) * f64(b) + f64(c)).astype(f32)


def horner(c, x):
    p = np.full_like(x, c[-1])
    for ci in reversed(c[:-1]):
        p = fma(p, x, ci)
    return p


def km_exp(x):
    xc = np.minimum(np.maximum(x, f32(-87.33)), f32(89))
    kf = np.floor(fma(xc, f32(1.4426950408889634), f32(0.5)))
    r = fma(kf, -f32(0.693145751953125), xc)
    r = fma(kf, -f32(1.428606765330187e-06), r)
    p = horner(EXP, r)
    bits = p.astype(f32).view(np.uint32) + (kf.astype(np.int32).astype(np.uint32) << 23)
    y = np.where(bits >= 0x7F800000, f32(np.inf), bits.view(f32))  # p 2^k
    return np.where(x < f32(-87.33), f32(0), y)  # results stay normal


def km_tanh(x):
    a = np.abs(x)
    small = (x * horner(TANH, (x * x).astype(f32))).astype(f32)
    e = km_exp((a + a).astype(f32))
    t = (f32(1) - (f32(2) / (e + f32(1)).astype(f32)).astype(f32)).astype(f32)
    return np.where(a < f32(0.625), small, np.where(x < 0, -t, t))


def km_erf(x):
    a = np.abs(x)
    x2 = (x * x).astype(f32)
    small = (x * horner(ERF_SMALL, x2)).astype(f32)
    g = horner(ERF_LARGE, (np.minimum(a, f32(4)) + f32(-2.45)).astype(f32))
    t = (f32(1) - (km_exp(-x2) * g).astype(f32)).astype(f32)
    return np.where(a < f32(0.9), small, np.where(x < 0, -t, t))


def worst_ulps(fn, ref, lo, hi, n):
    x = np.linspace(lo, hi, n).astype(f32)
    got, want = fn(x).astype(f64), ref(x.astype(f64))
    w32 = np.abs(want.astype(f32))
    ulp = (np.nextafter(w32, f32(np.inf)) - w32).astype(f64)
    return float(np.max(np.abs(got - want) / np.maximum(ulp, 1e-45)))


def main():
    with np.errstate(all="ignore"):
        for name, c in [("exp", EXP), ("tanh", TANH), ("erf_small", ERF_SMALL),
                        ("erf_large", ERF_LARGE)]:
            print(f"{name}: " + ", ".join(f"{float(ci):.9e}f" for ci in c))
        print(f"exp  max {worst_ulps(km_exp, np.exp, -87, 88.7, 2000001):.2f} ulp")
        print(f"tanh max {worst_ulps(km_tanh, np.tanh, -10, 10, 2000001):.2f} ulp")
        print(f"erf  max {worst_ulps(km_erf, verf, -5, 5, 400001):.2f} ulp")


if __name__ == "__main__":
    main()
