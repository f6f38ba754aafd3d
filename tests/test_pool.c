/*
 * test_pool.c: CMocka tests for runtime/pool.c, the pool behind
 * rt_parallel_for: every index covered once for many thread counts, n and
 * grains; chunk t on the same thread every call, so per-chunk float sums
 * are bit-identical; nested and concurrent calls run inline without
 * deadlock; resizing, shutdown, and fewer threads when workers cannot
 * start; a limit on the threads calls use (rt_use_threads), and the
 * tuning of a repeated step's count (runtime/tune.c) on a fake step whose
 * time depends on it; 10^5 back-to-back tiny calls, and calls spaced out so that the
 * waiters really sleep, for lost wakeups (which show as a hang that
 * ctest's timeout reports).  test_overhead prints the cost of an empty
 * 2-thread call; it asserts nothing about time.  Run it under TSan too (a
 * build dir with CMAKE_C_FLAGS and CMAKE_EXE_LINKER_FLAGS -fsanitize=thread).
 *
 * To add a case: a static test function that sets the thread count it needs
 * with rt_set_threads, listed in main() with cmocka_unit_test_teardown(...,
 * teardown) (which shuts the pool down).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "rt_data.h" /* rt_now */
#include "rt_pool.h"

static const int THREADS[] = {1, 2, 3, 8};
static const int64_t NS[] = {0, 1, 7, 1000, 1000000};
static const int64_t GRAINS[] = {-5, 0, 1, 3, 100, 1000000};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define MAXK 64

static int teardown(void **state) { (void)state; rt_pool_shutdown(); return 0; }

static void sleep_us(long us) { nanosleep(&(struct timespec){0, us * 1000}, NULL); }

/* A call's chunks, as rt_parallel_chunk gives them. */
typedef struct Chunks {
  int k;
  int64_t b[MAXK], e[MAXK];
} Chunks;

static Chunks chunks_of(int64_t n, int64_t grain, int threads) {
  Chunks c = {.k = rt_parallel_chunks(n, grain, threads)};
  for (int t = 0; t < c.k; t++) rt_parallel_chunk(n, grain, threads, t, &c.b[t], &c.e[t]);
  return c;
}

/* Which chunk [b, e) is: -1 if it is none of them. */
static int chunk_index(const Chunks *c, int64_t b, int64_t e) {
  for (int t = 0; t < c->k; t++)
    if (c->b[t] == b && c->e[t] == e) return t;
  return -1;
}

/* ---- the split itself ---- */

static void test_chunk_math(void **state) {
  (void)state;
  assert_int_equal(rt_parallel_chunks(0, 1, 4), 0);
  assert_int_equal(rt_parallel_chunks(-3, 1, 4), 0);
  assert_int_equal(rt_parallel_chunks(5, 10, 4), 1);
  assert_int_equal(rt_parallel_chunks(10, 0, 4), 4);  /* grain < 1 means 1 */
  assert_int_equal(rt_parallel_chunks(10, 3, 8), 3);  /* 10 / 3 */
  assert_int_equal(rt_parallel_chunks(10, 1, 0), 1);  /* threads < 1 means 1 */
  int64_t b = 7, e = 7, b2 = 7, e2 = 7;
  rt_parallel_chunk(10, 1, 4, 4, &b, &e);
  rt_parallel_chunk(10, 1, 4, -1, &b2, &e2);
  assert_true(b == 0 && e == 0 && b2 == 0 && e2 == 0);
  for (int ti = 0; ti < NELEM(THREADS); ti++)
    for (int64_t n = 1; n < 300; n += 7)
      for (int gi = 0; gi < NELEM(GRAINS); gi++) {
        int64_t g = GRAINS[gi] < 1 ? 1 : GRAINS[gi];
        Chunks c = chunks_of(n, GRAINS[gi], THREADS[ti]);
        assert_true(c.k >= 1 && c.k <= THREADS[ti]);
        for (int t = 0; t < c.k; t++) {
          int64_t len = c.e[t] - c.b[t], len0 = c.e[0] - c.b[0];
          assert_int_equal(c.b[t], t ? c.e[t - 1] : 0); /* contiguous, in order */
          assert_true(len == len0 || len == len0 - 1);  /* balanced */
          if (c.k > 1) assert_true(len >= g);
        }
        assert_int_equal(c.e[c.k - 1], n);
      }
}

/* ---- coverage ---- */

typedef struct Cover {
  unsigned char *hits;
  Chunks c;
  int seen[MAXK], calls, bad;
  pthread_mutex_t mu;
} Cover;

static void cover_fn(void *ctx, int64_t b, int64_t e) {
  Cover *cv = ctx;
  for (int64_t i = b; i < e; i++) cv->hits[i]++;
  int t = chunk_index(&cv->c, b, e);
  pthread_mutex_lock(&cv->mu);
  cv->calls++;
  if (t < 0 || cv->seen[t]++) cv->bad++;
  pthread_mutex_unlock(&cv->mu);
}

/* One call with the current pool: each index once, each chunk once (on
 * whichever thread took it: the chunks are not bound to threads).
 * Returns the number of problems (it may run off the main thread, where
 * CMocka's assertions must not be used). */
static int cover_bad(int64_t n, int64_t grain) {
  Cover cv = {.hits = calloc((size_t)(n > 0 ? n : 1), 1), .c = chunks_of(n, grain, rt_threads())};
  if (!cv.hits) return 1;
  pthread_mutex_init(&cv.mu, NULL);
  rt_parallel_for(n, grain, cover_fn, &cv);
  for (int64_t i = 0; i < n; i++) cv.bad += cv.hits[i] != 1;
  cv.bad += cv.calls != cv.c.k;
  pthread_mutex_destroy(&cv.mu);
  free(cv.hits);
  return cv.bad;
}

static void check_cover(int64_t n, int64_t grain) {
  int bad = cover_bad(n, grain);
  if (bad)
    fail_msg("n %lld grain %lld threads %d: %d problems", (long long)n, (long long)grain, rt_threads(), bad);
}

static void test_coverage(void **state) {
  (void)state;
  for (int ti = 0; ti < NELEM(THREADS); ti++) {
    assert_int_equal(rt_set_threads(THREADS[ti]), THREADS[ti]);
    for (int ni = 0; ni < NELEM(NS); ni++)
      for (int gi = 0; gi < NELEM(GRAINS); gi++) check_cover(NS[ni], GRAINS[gi]);
  }
}

/* ---- determinism and reductions ---- */

typedef struct Reduce {
  Chunks c;
  float part[MAXK];
  int64_t ipart[MAXK];
} Reduce;

/* A float sum whose value depends on where the chunks start. */
static float harmonic(int64_t b, int64_t e) {
  float s = 0;
  for (int64_t i = b; i < e; i++) s += 1.0f / (float)(i + 1);
  return s;
}

static void reduce_fn(void *ctx, int64_t b, int64_t e) {
  Reduce *r = ctx;
  int t = chunk_index(&r->c, b, e);
  if (t < 0) return; /* not a chunk: the totals will be wrong */
  r->part[t] = harmonic(b, e);
  for (int64_t i = b; i < e; i++) r->ipart[t] += i;
}

static void test_determinism(void **state) {
  (void)state;
  const int64_t n = 1000000;
  for (int ti = 1; ti < NELEM(THREADS); ti++) {
    assert_int_equal(rt_set_threads(THREADS[ti]), THREADS[ti]);
    Reduce first = {.c = chunks_of(n, 1000, THREADS[ti])};
    float want = 0; /* the chunks' sums combined in chunk order, serially */
    for (int t = 0; t < first.c.k; t++) want += harmonic(first.c.b[t], first.c.e[t]);
    for (int call = 0; call < 50; call++) {
      Reduce r = {.c = first.c};
      rt_parallel_for(n, 1000, reduce_fn, &r);
      float total = 0;
      int64_t itotal = 0;
      for (int t = 0; t < r.c.k; t++) {
        total += r.part[t];
        itotal += r.ipart[t];
      }
      assert_int_equal(itotal, n * (n - 1) / 2);
      assert_memory_equal(&total, &want, sizeof total); /* bit-identical, whoever ran what */
    }
  }
}

/* ---- nesting and concurrent callers ---- */

typedef struct Nest {
  int hits[8][8][8];
  atomic_int not_inline; /* inner loops that ran off their caller's thread */
} Nest;

typedef struct NestArg {
  Nest *nest;
  int64_t at[3]; /* the loops' indices */
  int level;      /* 0 outermost, 2 innermost */
  pthread_t owner;
} NestArg;

static void nest_fn(void *ctx, int64_t b, int64_t e) {
  NestArg *a = ctx;
  if (a->level > 0 && !pthread_equal(a->owner, pthread_self())) atomic_fetch_add(&a->nest->not_inline, 1);
  for (int64_t i = b; i < e; i++) {
    NestArg in = {a->nest, {a->at[0], a->at[1], a->at[2]}, a->level + 1, pthread_self()};
    in.at[a->level] = i;
    if (a->level < 2) rt_parallel_for(8, 1, nest_fn, &in);
    else a->nest->hits[in.at[0]][in.at[1]][in.at[2]]++;
  }
}

static void test_nested(void **state) {
  (void)state;
  for (int ti = 0; ti < NELEM(THREADS); ti++) {
    rt_set_threads(THREADS[ti]);
    Nest *nest = calloc(1, sizeof *nest);
    NestArg a = {.nest = nest};
    rt_parallel_for(8, 1, nest_fn, &a);
    for (int i = 0; i < 8 * 8 * 8; i++) assert_int_equal((&nest->hits[0][0][0])[i], 1);
    assert_int_equal(atomic_load(&nest->not_inline), 0);
    free(nest);
  }
}

/* A thread calling while the main thread holds the pool runs inline. */
static void *other_caller(void *arg) {
  int *bad = arg;
  for (int i = 0; i < 200; i++) *bad += cover_bad(1000, 10);
  return NULL;
}

static void test_concurrent_callers(void **state) {
  (void)state;
  rt_set_threads(3);
  pthread_t th;
  int bad = 0, other_bad = 0;
  assert_int_equal(pthread_create(&th, NULL, other_caller, &other_bad), 0);
  for (int i = 0; i < 200; i++) bad += cover_bad(1000, 10);
  pthread_join(th, NULL);
  assert_int_equal(bad, 0);
  assert_int_equal(other_bad, 0);
}

/* ---- resizing ---- */

static void resize_fn(void *ctx, int64_t b, int64_t e) {
  int *r = ctx;
  if (b == 0) *r = rt_set_threads(8); /* not allowed from inside fn: changes nothing */
  (void)e;
}

static void test_resize(void **state) {
  (void)state;
  assert_int_equal(rt_threads(), 1); /* nothing started yet */
  check_cover(1000, 1);
  static const int seq[] = {2, 8, 3, 3, 1, 5, 2};
  for (int i = 0; i < NELEM(seq); i++) {
    assert_int_equal(rt_set_threads(seq[i]), seq[i]);
    assert_int_equal(rt_threads(), seq[i]);
    check_cover(1000, 1);
  }
  int inner = 0;
  rt_parallel_for(2, 1, resize_fn, &inner);
  assert_int_equal(inner, 2);
  assert_int_equal(rt_threads(), 2);
  rt_pool_shutdown();
  assert_int_equal(rt_threads(), 1);
  rt_pool_shutdown(); /* twice is fine */
  check_cover(1000, 1);
  int cpus = rt_set_threads(0);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  assert_int_equal(cpus, online < 1 ? 1 : online > RT_POOL_MAX_THREADS ? RT_POOL_MAX_THREADS : online);
  check_cover(1000, 1);
  assert_int_equal(rt_set_threads(-1), cpus);
}

/* ---- a limit on the threads a call uses (rt_use_threads) ---- */

typedef struct Calls {
  atomic_int n;   /* fn's calls */
  int64_t covered;
  int limit_seen; /* rt_use_threads from inside fn */
} Calls;

static void calls_fn(void *ctx, int64_t b, int64_t e) {
  Calls *c = ctx;
  atomic_fetch_add(&c->n, 1);
  __atomic_fetch_add(&c->covered, e - b, __ATOMIC_RELAXED);
  if (b == 0) c->limit_seen = rt_use_threads(1); /* not allowed from inside fn */
}

/* How many chunks a call over [0, 1000) makes now (covering all of it). */
static int chunks_now(int *limit_seen) {
  Calls c = {.covered = 0};
  rt_parallel_for(1000, 1, calls_fn, &c);
  assert_int_equal(c.covered, 1000);
  *limit_seen = c.limit_seen;
  return atomic_load(&c.n);
}

/* rt_use_grain: a call takes x times its grain, so fewer chunks; the
 * range is covered all the same; rt_set_threads sets it back. */
static void test_use_grain(void **state) {
  (void)state;
  int seen;
  assert_int_equal(rt_set_threads(4), 4);
  assert_int_equal(rt_used_grain(), 1);
  assert_int_equal(chunks_now(&seen), 4); /* 1000 iterations, grain 1 */
  assert_int_equal(rt_use_grain(400), 400);
  assert_int_equal(chunks_now(&seen), 2); /* grain 400: 1000 / 400 = 2 chunks */
  assert_int_equal(rt_use_grain(5000), 5000);
  assert_int_equal(chunks_now(&seen), 1);
  rt_use_threads(4); /* a call of one chunk runs fn outside the pool: its probe set 1 */
  assert_int_equal(rt_use_grain(0), 1); /* clamped */
  assert_int_equal(chunks_now(&seen), 4);
  rt_use_grain(8);
  assert_int_equal(rt_set_threads(4), 4);
  assert_int_equal(rt_used_grain(), 1);
}

static void test_use_threads(void **state) {
  (void)state;
  int seen;
  assert_int_equal(rt_set_threads(4), 4);
  assert_int_equal(rt_used_threads(), 4);
  assert_int_equal(chunks_now(&seen), 4);
  assert_int_equal(seen, 4); /* the call held the pool: the limit stayed */
  assert_int_equal(rt_use_threads(2), 2);
  assert_int_equal(rt_threads(), 4); /* the workers stay */
  assert_int_equal(chunks_now(&seen), 2);
  assert_int_equal(rt_use_threads(0), 1); /* clamped */
  assert_int_equal(chunks_now(&seen), 1);
  assert_int_equal(rt_use_threads(99), 4);
  assert_int_equal(chunks_now(&seen), 4);
  rt_use_threads(1);
  assert_int_equal(rt_set_threads(4), 4); /* the same count: the limit is lifted */
  assert_int_equal(chunks_now(&seen), 4);
  rt_use_threads(3);
  assert_int_equal(rt_set_threads(2), 2);
  assert_int_equal(rt_used_threads(), 2);
  rt_pool_shutdown();
  assert_int_equal(rt_used_threads(), 1);
  assert_int_equal(rt_use_threads(5), 1);
}

/* ---- picking the count for a repeated step (rt_tune_threads) ---- */

/* A step whose time depends on the threads in use: us[k] microseconds
 * with k threads at the kernels' grain, coarse[k] at a coarse one (0: us[k]
 * + 800) (sleeping, so the pool's own speed does not matter). */
typedef struct Fake {
  long us[9], coarse[9];
  int calls;
} Fake;

static void fake_step(void *ctx) {
  Fake *f = ctx;
  int k = rt_used_threads();
  f->calls++;
  sleep_us(rt_used_grain() == 1 ? f->us[k] : f->coarse[k] ? f->coarse[k] : f->us[k] + 800);
}

static void test_tune(void **state) {
  (void)state;
  RtTune t;
  rt_set_threads(2); /* one thread faster: it is kept */
  Fake one = {.us = {0, 300, 1500}};
  assert_int_equal(rt_tune_threads(fake_step, &one, &t), 1);
  assert_true(t.tuned);
  assert_int_equal(t.all, 2);
  assert_int_equal(t.n, 3); /* 1; 2; 2 at a coarse grain */
  assert_int_equal(t.threads[0], 1);
  assert_int_equal(t.threads[1], 2);
  assert_int_equal(t.threads[2], 2);
  assert_int_equal(t.grain[0], 1);
  assert_int_equal(t.grain[1], 1);
  assert_int_equal(t.grain[2], RT_TUNE_COARSE);
  assert_int_equal(t.chosen, 0);
  assert_true(t.median[0] < t.median[1]);
  assert_int_equal(rt_used_threads(), 1);
  assert_int_equal(rt_used_grain(), 1);
  assert_int_equal(rt_threads(), 2);
  assert_true(one.calls > 2);
  Fake two = {.us = {0, 1500, 300}}; /* both faster: both kept */
  assert_int_equal(rt_tune_threads(fake_step, &two, &t), 2);
  assert_int_equal(t.chosen, 1);
  assert_int_equal(rt_used_threads(), 2);
  assert_int_equal(rt_used_grain(), 1);
  Fake coarse = {.us = {0, 1500, 1200}, .coarse = {0, 0, 300}}; /* both, coarse: kept */
  assert_int_equal(rt_tune_threads(fake_step, &coarse, &t), 2);
  assert_int_equal(t.chosen, 2);
  assert_int_equal(rt_used_grain(), RT_TUNE_COARSE);
  rt_tune_begin_at(&t, 2); /* the grain alone, at a count given */
  assert_int_equal(t.n, 2);
  assert_int_equal(t.threads[0] + t.threads[1], 4);
  assert_int_equal(rt_used_grain(), 1); /* back to the kernels' grain until the choice */
  rt_tune_begin_at(&t, 1);
  assert_true(rt_tune_done(&t)); /* one thread: no grain to choose */
  rt_set_threads(8); /* 1, 2, 4, 8 tried, each above 1 also coarse; 4 wins */
  Fake four = {.us = {0, 2000, 1500, 400, 0, 1000, 0, 0, 1300}};
  assert_int_equal(rt_tune_threads(fake_step, &four, &t), 4);
  assert_int_equal(t.n, 7);
  assert_int_equal(t.threads[3], 4);
  assert_int_equal(t.grain[3], 1);
  assert_int_equal(t.threads[5], 8);
  assert_int_equal(rt_used_threads(), 4);
  rt_set_threads(2); /* a long step is not tuned: one run, all threads */
  Fake slow = {.us = {0, 100, 30000}};
  assert_int_equal(rt_tune_threads(fake_step, &slow, &t), 2);
  assert_false(t.tuned);
  assert_int_equal(slow.calls, 1);
  rt_set_threads(1); /* one thread: nothing to try */
  Fake alone = {.us = {0, 100}};
  assert_int_equal(rt_tune_threads(fake_step, &alone, NULL), 1);
  assert_int_equal(alone.calls, 0);
}

/* A run's steps with their times handed to the tuner, not slept: us[k]
 * microseconds on k threads at the kernels' grain, 800 more at a coarse
 * one.  Returns how many of the steps ran on a setting other than the one
 * chosen before them (the re-checks' cost). */
static int simulate(RtTune *t, const long *us, int steps) {
  int off = 0;
  for (int i = 0; i < steps; i++) {
    int was = t->chosen;
    bool measuring = !rt_tune_done(t);
    rt_tune_next(t);
    int k = rt_used_threads();
    off += measuring && (k != t->threads[was] || rt_used_grain() != t->grain[was]);
    rt_tune_took(t, 1e-6 * (double)(us[k] + (rt_used_grain() > 1 ? 800 : 0)));
  }
  return off;
}

/* A choice made in a busy spell (2 threads looked faster) is measured
 * again once the steps since took RT_TUNE_RECHECK times the measuring's
 * time, and moves; a setting faster by less than 5% does not move it. */
static void test_tune_recheck(void **state) {
  (void)state;
  rt_set_threads(2);
  RtTune t;
  rt_tune_begin(&t);
  const long busy[] = {0, 300, 200}, calm[] = {0, 100, 200}, close[] = {0, 100, 97},
             faster[] = {0, 100, 80};
  simulate(&t, busy, 1 + RT_TUNE_ROUNDS * 3 * RT_TUNE_BLOCK);
  assert_true(rt_tune_done(&t) && t.tuned);
  assert_int_equal(rt_used_threads(), 2);
  assert_int_equal(t.checks, 0);
  double measured = t.measured; /* 8 steps at each of 300, 200 and 1000 us */
  assert_true(measured > 0.0119 && measured < 0.0121);
  /* 64 x 12 ms of steps at 200 us: 3840 steps before the re-check */
  simulate(&t, calm, 3800);
  assert_int_equal(t.checks, 0);
  assert_int_equal(rt_used_threads(), 2);
  simulate(&t, calm, 100);
  assert_int_equal(t.checks, 1);
  simulate(&t, calm, 3 * RT_TUNE_ROUNDS * RT_TUNE_BLOCK);
  assert_true(rt_tune_done(&t));
  assert_int_equal(t.chosen, 0);
  assert_int_equal(t.moves, 1);
  assert_int_equal(rt_used_threads(), 1);
  assert_int_equal(rt_used_grain(), 1);
  /* settled: few steps off the choice (each check: 16 of 24 steps, every
   * max(64 measurings, 0.25 s)) */
  int off = simulate(&t, calm, 40000);
  assert_true(t.checks >= 3);
  assert_true(off > 0 && off < 40000 / 50);
  assert_int_equal(rt_used_threads(), 1);
  int checks = t.checks;
  simulate(&t, close, 10000); /* 3% faster: stays */
  assert_true(t.checks > checks);
  assert_int_equal(t.chosen, 0);
  assert_int_equal(t.moves, 1);
  simulate(&t, faster, 10000); /* 20% faster: moves */
  assert_int_equal(t.chosen, 1);
  assert_int_equal(t.moves, 2);
  assert_int_equal(rt_used_threads(), 2);
  /* a step too long to tune is never re-checked */
  rt_tune_begin(&t);
  const long slow[] = {0, 100000, 30000};
  simulate(&t, slow, 100);
  assert_false(t.tuned);
  assert_int_equal(t.checks, 0);
  assert_int_equal(rt_used_threads(), 2);
}

/* ---- many calls: lost wakeups ---- */

typedef struct Count {
  int64_t slot[MAXK];
  long slow_us; /* workers' chunks sleep this long */
} Count;

static void count_fn(void *ctx, int64_t b, int64_t e) {
  Count *c = ctx;
  if (c->slow_us && b > 0) sleep_us(c->slow_us);
  for (int64_t i = b; i < e; i++) c->slot[i]++;
}

static void many_calls(int threads, int calls, long gap_us, long slow_us) {
  assert_int_equal(rt_set_threads(threads), threads);
  Count c = {.slow_us = slow_us};
  for (int i = 0; i < calls; i++) {
    rt_parallel_for(threads, 1, count_fn, &c);
    if (gap_us) sleep_us(gap_us);
  }
  for (int t = 0; t < threads; t++) assert_int_equal(c.slot[t], calls);
}

static void test_many_calls(void **state) {
  (void)state;
  many_calls(2, 100000, 0, 0);
  many_calls(3, 100000, 0, 0);
  many_calls(8, 20000, 0, 0);
  many_calls(2, 500, 300, 0); /* idle gaps longer than the spin: workers sleep */
  many_calls(3, 300, 0, 300); /* slow workers: the caller sleeps */
}

/* ---- degrading when workers cannot start ---- */

/* In a child whose address space has room for only a few more thread
 * stacks, rt_set_threads(64) must give fewer threads that still work.
 * Skipped under sanitizers, which need a large address space. */
static void test_degrade(void **state) {
  (void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  skip();
#else
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    long pages = 0;
    size_t stack = 0;
    pthread_attr_t attr;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1 || pthread_attr_init(&attr) ||
        pthread_attr_getstacksize(&attr, &stack))
      _exit(2);
    fclose(f);
    rlim_t as = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + 4 * stack;
    struct rlimit lim = {as, as};
    if (setrlimit(RLIMIT_AS, &lim)) _exit(3);
    int got = rt_set_threads(64);
    _exit(got < 1 || got >= 64 || got != rt_threads() ? 4 : cover_bad(100000, 1) ? 5 : 0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

/* ---- overhead ---- */

static void empty_fn(void *ctx, int64_t b, int64_t e) { (void)ctx, (void)b, (void)e; }

static void test_overhead(void **state) {
  (void)state;
  rt_set_threads(2);
  const int calls = 100000;
  for (int i = 0; i < 1000; i++) rt_parallel_for(2, 1, empty_fn, NULL);
  double t0 = rt_now();
  for (int i = 0; i < calls; i++) rt_parallel_for(2, 1, empty_fn, NULL);
  double hot = (rt_now() - t0) / calls;
  const int cold_calls = 200; /* after an idle gap, with the worker asleep */
  double cold = 0;
  for (int i = 0; i < cold_calls; i++) {
    sleep_us(1000);
    double t1 = rt_now();
    rt_parallel_for(2, 1, empty_fn, NULL);
    cold += rt_now() - t1;
  }
  print_message("empty rt_parallel_for, 2 threads: %.3f us back to back, %.3f us after 1 ms idle\n",
                hot * 1e6, cold / cold_calls * 1e6);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_chunk_math, teardown),
      cmocka_unit_test_teardown(test_resize, teardown),
      cmocka_unit_test_teardown(test_use_threads, teardown),
      cmocka_unit_test_teardown(test_use_grain, teardown),
      cmocka_unit_test_teardown(test_tune, teardown),
      cmocka_unit_test_teardown(test_tune_recheck, teardown),
      cmocka_unit_test_teardown(test_coverage, teardown),
      cmocka_unit_test_teardown(test_determinism, teardown),
      cmocka_unit_test_teardown(test_nested, teardown),
      cmocka_unit_test_teardown(test_concurrent_callers, teardown),
      cmocka_unit_test_teardown(test_many_calls, teardown),
      cmocka_unit_test_teardown(test_degrade, teardown),
      cmocka_unit_test_teardown(test_overhead, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
