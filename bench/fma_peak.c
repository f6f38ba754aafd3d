/*
 * fma_peak.c: the core's 512-bit FMA peak, for reading GEMM GFLOP/s
 * (docs/benchmarks.md).  Twelve independent chains of vfmadd on zmm
 * registers, no memory traffic: 12 chains cover the FMA latency (4 cycles)
 * times the two FMA ports with room, so the loop runs at the ports' rate.
 *
 *   cc -O2 -mavx512f -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
 *   (taskset -c 0 /tmp/fma_peak & taskset -c 1 /tmp/fma_peak & wait)   # both cores
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define F(x) x = _mm512_fmadd_ps(x, b, c)

int main(void) {
  /* twelve different starting values: equal ones made twelve equal
   * chains, which the compiler merged into one (an earlier version of this
   * file measured one chain and multiplied by twelve) */
  __m512 a0 = _mm512_set1_ps(0.10f), a1 = _mm512_set1_ps(0.11f), a2 = _mm512_set1_ps(0.12f),
         a3 = _mm512_set1_ps(0.13f), a4 = _mm512_set1_ps(0.14f), a5 = _mm512_set1_ps(0.15f),
         a6 = _mm512_set1_ps(0.16f), a7 = _mm512_set1_ps(0.17f), a8 = _mm512_set1_ps(0.18f),
         a9 = _mm512_set1_ps(0.19f), a10 = _mm512_set1_ps(0.20f), a11 = _mm512_set1_ps(0.21f);
  __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
  long n = 400000000 / 12;
  double t0 = now();
  for (long i = 0; i < n; i++) {
    F(a0), F(a1), F(a2), F(a3), F(a4), F(a5), F(a6), F(a7), F(a8), F(a9), F(a10), F(a11);
  }
  double t = now() - t0;
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                           _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  float out[16];
  _mm512_storeu_ps(out, s);
  printf("%.2f G vector FMAs/s = %.1f GFLOP/s (f32; checksum %g)\n", (double)n * 12 / t / 1e9,
         (double)n * 12 * 32 / t / 1e9, (double)out[0]);
  return 0;
}
