/*
 * tune.c: how many of the pool's threads a step that runs many times
 * should use, and whether at a coarser grain (see rt_pool.h:
 * rt_tune_begin and rt_tune_threads).
 *
 * Why measure: splitting a kernel's loop over threads pays only when each
 * thread's part outweighs the fork and join and, above all, the data the
 * other cores wrote.  On the 2-vCPU VM of docs/benchmarks.md the cores pass
 * data at about 20 GB/s, and a small step can be slower on two threads
 * than on one: the LSTM's inference at batch 64 took 134 us a step on one
 * and 190 us on two, while the transformer's at batch 64 took 579 and 400.
 * The kernels' own grains cannot see that (the cost is in the data the
 * next kernel reads), and it depends on the machine; the whole step, timed
 * at each count, can.  A coarser grain (rt_use_grain) is the middle way:
 * the large kernels still split, the small ones no longer scatter their
 * data over the cores.  The transformer's inference at batch 4 took 37.7
 * us on one thread and 67.6 us on two at the kernels' grain, 37.6 us on
 * two at 8 times it (docs/benchmarks.md, eighth session).  The results do
 * not depend on the count or the grain: every kernel computes each
 * element the same way however its loop is split (codegen/llvm/cg_gemm.c,
 * cg_loop.c), so the choice changes only the time.
 *
 * How: the first step runs on every thread; if it took over
 * TUNE_SKIP_SECONDS the step is big enough to split, and tuning it would
 * take long, so that stays.  Otherwise counts 1, 2, 4, ... and the pool's
 * own, above 1 each at the kernels' grain and at RT_TUNE_COARSE times it,
 * take TUNE_ROUNDS turns of TUNE_BLOCK steps each, a block's first step
 * not counted (it wakes the workers, or finds the caches the other count
 * left), and the setting with the lowest median wins, the pool's own count
 * at the kernels' grain on a tie.  A loop calls rt_tune_next before a step
 * and rt_tune_took after it until rt_tune_done; rt_tune_threads does that
 * for a step function.
 *
 * Checked again: the ~25 steps of the measuring take a few milliseconds,
 * and a busy spell of this shared VM there can pick the wrong count for
 * the whole run (docs/benchmarks.md, ninth session: the LSTM's inference
 * chose 2 threads at 198 us a step in one run of five, 1 thread at 130
 * in the others).  A loop that keeps calling rt_tune_next and
 * rt_tune_took after the choice (kiln train, built programs' train)
 * measures the settings again once the steps since have taken
 * RT_TUNE_RECHECK times as long as the last measuring (and at least
 * TUNE_RECHECK_SECONDS): the same rounds, without the first step's test.
 * The fastest replaces the choice only if its median is below the
 * choice's by more than TUNE_MARGIN, so that noise does not flip between
 * near-equal settings.  The settings other than the choice run for at
 * most a measuring's steps every RT_TUNE_RECHECK measurings' time: under
 * 1/RT_TUNE_RECHECK of the run's steps, and a wrong choice lasts until
 * the next check.
 */
#include <stdlib.h>

#include "rt_data.h" /* rt_now */
#include "rt_pool.h"

static const double TUNE_SKIP_SECONDS = 0.02;
static const double TUNE_RECHECK_SECONDS = 0.25; /* the least time between checks */
static const double TUNE_MARGIN = 0.05; /* a re-check moves only for 5% faster */

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Count k at the kernels' grain, then (k > 1) at the coarse one. */
static void add_count(RtTune *t, int k) {
  t->threads[t->n] = k, t->grain[t->n++] = 1;
  if (k > 1)
    t->threads[t->n] = k, t->grain[t->n++] = RT_TUNE_COARSE;
}

/* The last count added at the kernels' grain (add_count put it just
 * before its coarse twin, if any), until the choice. */
static void start(RtTune *t) {
  t->chosen = t->grain[t->n - 1] == 1 ? t->n - 1 : t->n - 2;
  t->done = t->n < 2;
  rt_use_threads(t->threads[t->chosen]);
  rt_use_grain(1);
}

void rt_tune_begin(RtTune *t) {
  *t = (RtTune){.all = rt_threads()};
  for (int k = 1; k < t->all && t->n < RT_TUNE_MAX - 3; k *= 2)
    add_count(t, k);
  add_count(t, t->all);
  start(t);
}

void rt_tune_begin_at(RtTune *t, int threads) {
  *t = (RtTune){.all = rt_threads()};
  add_count(t, threads < 1 ? 1 : threads > t->all ? t->all : threads);
  start(t);
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
  int slot, c = t->chosen;
  if (!t->done && t->steps > 0)
    c = count_of(t, t->steps - 1, &slot);
  rt_use_grain(t->grain[c]);
  return rt_use_threads(t->threads[c]);
}

/* After the choice: the steps' time until the next re-check. */
static void count_since(RtTune *t, double seconds) {
  t->since += seconds;
  if (t->since < RT_TUNE_RECHECK * t->measured || t->since < TUNE_RECHECK_SECONDS)
    return;
  t->done = false;
  t->steps = 1; /* measuring again, from the first block (no first-step test) */
  t->since = t->measured = 0;
  t->checks++;
}

/* The setting with the lowest median: any faster one the first time, at
 * a re-check only one faster by more than TUNE_MARGIN. */
static void choose(RtTune *t) {
  int best = t->chosen;
  for (int i = 0; i < t->n; i++)
    if (t->median[i] < t->median[best])
      best = i;
  if (t->checks == 0 || t->median[best] < (1 - TUNE_MARGIN) * t->median[t->chosen]) {
    t->moves += t->checks > 0 && best != t->chosen;
    t->chosen = best;
  }
}

void rt_tune_took(RtTune *t, double seconds) {
  if (t->done) {
    if (t->tuned)
      count_since(t, seconds);
    return;
  }
  int k = t->steps++;
  if (k == 0) { /* on every thread: too long a step is not tuned */
    t->done = seconds > TUNE_SKIP_SECONDS;
    return;
  }
  t->measured += seconds;
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
  choose(t);
  t->tuned = t->done = true;
  rt_use_threads(t->threads[t->chosen]);
  rt_use_grain(t->grain[t->chosen]);
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
