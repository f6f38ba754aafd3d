/*
 * stream.c: the machine's memory bandwidth, as STREAM's triad measures it
 * (a[i] = b[i] + s * c[i] over arrays much larger than the caches), on T
 * threads that each take a contiguous 1/T of the
 * arrays.  Bytes counted as STREAM does: three arrays of 4-byte floats per
 * pass (the write-allocate read of a is not counted).  Prints the best
 * GB/s over the passes.  bench/stream.sh runs it beside kiln's fused
 * elementwise kernels.
 *
 *   stream [THREADS] [MILLIONS_OF_ELEMENTS] [PASSES]
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static float *A, *B, *C;
static long N;
static int T;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *triad(void *arg) {
  long t = (long)arg, lo = N * t / T, hi = N * (t + 1) / T;
  for (long i = lo; i < hi; i++)
    A[i] = B[i] + 3.0f * C[i];
  return NULL;
}

static void *init(void *arg) {
  long t = (long)arg, lo = N * t / T, hi = N * (t + 1) / T;
  for (long i = lo; i < hi; i++)
    A[i] = 0, B[i] = 1, C[i] = 2; /* first touch by the thread that will use it */
  return NULL;
}

static void run(void *(*fn)(void *)) {
  pthread_t th[64];
  for (long t = 1; t < T; t++)
    pthread_create(&th[t], NULL, fn, (void *)t);
  fn((void *)0);
  for (long t = 1; t < T; t++)
    pthread_join(th[t], NULL);
}

int main(int argc, char **argv) {
  T = argc > 1 ? atoi(argv[1]) : 2;
  N = (argc > 2 ? atol(argv[2]) : 16) * 1000000L;
  int passes = argc > 3 ? atoi(argv[3]) : 10;
  if (T < 1 || T > 64 || N < 1 || passes < 1) {
    fprintf(stderr, "usage: stream [THREADS 1..64] [MILLIONS] [PASSES]\n");
    return 2;
  }
  A = aligned_alloc(64, (size_t)N * 4), B = aligned_alloc(64, (size_t)N * 4);
  C = aligned_alloc(64, (size_t)N * 4);
  if (!A || !B || !C) {
    fprintf(stderr, "stream: out of memory\n");
    return 1;
  }
  run(init);
  double best = 1e30;
  for (int p = 0; p < passes; p++) {
    double t0 = now();
    run(triad);
    double dt = now() - t0;
    best = dt < best ? dt : best;
  }
  if (A[N / 2] != 7.0f) {
    fprintf(stderr, "stream: wrong result %g\n", (double)A[N / 2]);
    return 1;
  }
  printf("%.2f\n", 3.0 * 4.0 * (double)N / best / 1e9);
  return 0;
}
