/*
 * tune.c: how many of the pool's threads a step that runs many times
 * should use (see rt_pool.h: rt_tune_begin and rt_tune_threads).
 *
 * Why measure: splitting a kernel's loop over threads pays only when each
 * thread's part outweighs the fork and join and, above all, the data the
 * other cores wrote.  On the 2-vCPU VM of docs/benchmarks.md the cores pass
 * data at about 20 GB/s, and a small step can be slower on two threads
 * than on one: the LSTM's inference at batch 64 took 134 us a step on one
 * and 190 us on two, while the transformer's at batch 64 took 579 and 400.
 * The kernels' own grains cannot see that (the cost is in the data the
 * next kernel reads), and it depends on the machine; the whole step, timed
 * at each count, can.  The results do not depend on the count: every
 * kernel computes each element the same way however its loop is split
 * (codegen/llvm/cg_gemm.c, cg_loop.c), so the choice changes only the time.
 *
 * How: the first step runs on every thread; if it took over
 * TUNE_SKIP_SECONDS the step is big enough to split, and tuning it would
 * take long, so that stays.  Otherwise counts 1, 2, 4, ... and the pool's
 * own take TUNE_ROUNDS turns of TUNE_BLOCK steps each, a block's first step
 * not counted (it wakes the workers, or finds the caches the other count
 * left), and the count with the lowest median wins, the pool's own on a
 * tie.  A loop calls rt_tune_next before a step and rt_tune_took after it
 * until rt_tune_done; rt_tune_threads does that for a step function.
 */
#include <stdlib.h>

#include "rt_data.h" /* rt_now */
#include "rt_pool.h"

static const double TUNE_SKIP_SECONDS = 0.02;

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void rt_tune_begin(RtTune *t) {
  *t = (RtTune){.all = rt_threads()};
  for (int k = 1; k < t->all && t->n < RT_TUNE_MAX - 1; k *= 2)
    t->threads[t->n++] = k;
  t->threads[t->n++] = t->all;
  t->chosen = t->n - 1;
  t->done = t->all <= 1;
  rt_use_threads(t->all);
}

/* Step k of the measuring (after the first): which count, and where its
 * time goes (-1: a block's first step, not counted). */
static int count_of(const RtTune *t, int k, int *slot) {
  int per_round = t->n * RT_TUNE_BLOCK, round = k / per_round, c = k % per_round / RT_TUNE_BLOCK;
  int i = k % RT_TUNE_BLOCK;
  *slot = i ? round * (RT_TUNE_BLOCK - 1) + i - 1 : -1;
  return c;
}

int rt_tune_next(RtTune *t) {
  int slot, use = t->threads[t->chosen];
  if (!t->done && t->steps > 0)
    use = t->threads[count_of(t, t->steps - 1, &slot)];
  return rt_use_threads(use);
}

void rt_tune_took(RtTune *t, double seconds) {
  if (t->done)
    return;
  int k = t->steps++;
  if (k == 0) { /* on every thread: too long a step is not tuned */
    t->done = seconds > TUNE_SKIP_SECONDS;
    return;
  }
  int slot, c = count_of(t, k - 1, &slot);
  if (slot >= 0)
    t->t[c][slot] = seconds;
  if (k < RT_TUNE_ROUNDS * t->n * RT_TUNE_BLOCK)
    return;
  int got = RT_TUNE_ROUNDS * (RT_TUNE_BLOCK - 1);
  for (int i = 0; i < t->n; i++) {
    qsort(t->t[i], (size_t)got, sizeof(double), by_value);
    t->median[i] = t->t[i][got / 2];
  }
  for (int i = 0; i < t->n; i++)
    if (t->median[i] < t->median[t->chosen])
      t->chosen = i;
  t->tuned = t->done = true;
  rt_use_threads(t->threads[t->chosen]);
}

bool rt_tune_done(const RtTune *t) { return t->done; }

int rt_tune_threads(void (*step)(void *), void *ctx, RtTune *out) {
  RtTune t;
  rt_tune_begin(&t);
  while (!t.done) {
    rt_tune_next(&t);
    double t0 = rt_now();
    step(ctx);
    rt_tune_took(&t, rt_now() - t0);
  }
  if (out)
    *out = t;
  return rt_tune_next(&t);
}
