/*
 * rt_pool.h: the runtime's thread pool and the parallel-for that generated
 * kernels call for their outer loops.
 *
 * Why a pool of our own: programs kiln builds may link libc, libm and
 * pthreads only (no OpenMP), and a kernel's outer loop is short enough
 * (tens of microseconds) that starting threads per call would cost more
 * than the loop.  So a fixed set of workers sleeps on condition variables
 * between calls, and each call splits [0, n) into at most one contiguous
 * chunk per thread, the calling thread included.
 *
 * Determinism: the split is static.  For the same n, grain and thread
 * count, chunk t is always the same range; which thread runs it is not
 * fixed (the caller and the workers take chunks as they come, so a thread
 * the machine has descheduled delays no one).  A kernel that reduces per
 * chunk (into a slot of chunk t, never of a thread) and then combines the
 * partial results in chunk order therefore gets bit-identical
 * floating-point results on every run with the same thread count (but
 * not across thread counts, since the chunks differ).  The calls that cannot use the pool (nested calls, or a second
 * thread calling while the pool is busy) run the same chunks one after
 * another on their own thread, so their results are the same too.
 *
 * State: the pool is the runtime's one piece of global mutable state (a
 * pool of threads is process-wide by nature).  Until rt_set_threads is
 * called it has one thread, the caller, and creates none.  The child of a
 * fork() has none of the parent's workers: it must not use a pool that
 * was running when it forked.  Workers block all signals.
 */
#ifndef KILN_RT_POOL_H
#define KILN_RT_POOL_H

#include "rt.h"

#include <stdbool.h>

/* The most threads rt_set_threads will give (larger requests are capped). */
#define RT_POOL_MAX_THREADS 1024

/* A loop body: runs iterations [begin, end) of the caller's loop. */
typedef void (*RtRangeFn)(void *ctx, int64_t begin, int64_t end);

/* Runs fn over [0, n) split into rt_parallel_chunks(n, grain, rt_threads())
 * contiguous chunks, at most one per thread, the calling thread and the
 * workers taking them in turn (each chunk runs once, on one of them);
 * returns when every chunk is done, with the workers' writes visible to
 * the caller.  grain is the smallest chunk worth a thread (values < 1 mean
 * 1): when n <= grain, or the pool has one thread, fn runs once on the
 * caller over [0, n).  n <= 0 calls nothing.  A call from inside fn (a
 * nested loop), or from another thread while the pool is busy, runs its
 * chunks in order on the calling thread instead of waiting for the pool,
 * so it can never deadlock.  Not to be called concurrently with
 * rt_set_threads or rt_pool_shutdown. */
void rt_parallel_for(int64_t n, int64_t grain, RtRangeFn fn, void *ctx);

/* How many chunks rt_parallel_for makes with this many threads:
 * min(threads, n / grain), at least 1 (0 when n <= 0). */
int rt_parallel_chunks(int64_t n, int64_t grain, int threads);
/* Chunk t's range [*begin, *end): the first n % k chunks get one iteration
 * more than the rest (k = rt_parallel_chunks(...)); every chunk has at
 * least grain iterations.  For kernels that keep per-chunk partial results
 * and for tests; an empty range when t is outside 0..k-1. */
void rt_parallel_chunk(int64_t n, int64_t grain, int threads, int t, int64_t *begin, int64_t *end);

/* Sets the pool to n threads, the caller included (n <= 0: the number of
 * online CPUs), joining or starting workers as needed, and returns the
 * count now in effect.  When a worker cannot be started the pool keeps the
 * ones it has, so the result may be smaller than asked for (1 at worst).
 * May be called again to resize; not from inside fn, and not concurrently
 * with rt_parallel_for (called so, it changes nothing and returns the
 * current count). */
int rt_set_threads(int n);
/* The number of threads in effect (1 before rt_set_threads). */
int rt_threads(void);
/* Calls from now on split their loops over at most k of the pool's
 * threads (k clamped to 1 .. rt_threads()); the workers stay, idle when k
 * is 1.  rt_set_threads lifts the limit.  Returns the limit now in effect.
 * Not to be called concurrently with rt_parallel_for. */
int rt_use_threads(int k);
/* The limit rt_use_threads set (rt_threads() when none). */
int rt_used_threads(void);
/* Calls from now on take x times the grain they pass (x clamped to >= 1):
 * fewer loops split, and into fewer chunks.  The results do not change
 * (kiln's kernels compute each element the same way however a loop is
 * split).  rt_set_threads sets it back to 1.  Returns the factor now in
 * effect.  Not to be called concurrently with rt_parallel_for. */
int rt_use_grain(int x);
/* The factor rt_use_grain set (1 when none). */
int rt_used_grain(void);

/* tune.c: how many threads a step that runs many times uses, and at which
 * grain.  The counts tried are 1, 2, 4, ... and the pool's own, each
 * above 1 at the kernels' grain and at RT_TUNE_COARSE times it
 * (rt_use_grain), each over RT_TUNE_ROUNDS blocks of RT_TUNE_BLOCK steps;
 * the step must give the same results on any count and grain (kiln's
 * kernels do), as its steps are the caller's real ones. */
enum { RT_TUNE_MAX = 16, RT_TUNE_BLOCK = 4, RT_TUNE_ROUNDS = 2, RT_TUNE_COARSE = 8, RT_TUNE_RECHECK = 64 };
typedef struct RtTune {
  int all;                    /* the pool's threads */
  bool done;                  /* the count is chosen (rt_tune_next keeps it) */
  bool tuned;                 /* it was measured (not: one thread, or a step over 20 ms) */
  int n;                      /* the settings tried: threads[0..n) at grain[0..n) */
  int threads[RT_TUNE_MAX];
  int grain[RT_TUNE_MAX];     /* 1, or RT_TUNE_COARSE */
  double median[RT_TUNE_MAX]; /* seconds a step, at each count (when tuned) */
  int chosen;                 /* the index of the count in use */
  int steps;                  /* steps reported so far in this measuring */
  double measured;            /* seconds the last (or current) measuring's steps took */
  double since;               /* seconds of steps since the choice (re-checks) */
  int checks;                 /* re-checks started */
  int moves;                  /* re-checks that changed the choice */
  double t[RT_TUNE_MAX][RT_TUNE_ROUNDS * (RT_TUNE_BLOCK - 1)];
} RtTune;
/* Starts choosing, for the pool as rt_set_threads left it (every thread
 * in use, at the kernels' grain, until the choice). */
void rt_tune_begin(RtTune *t);
/* Starts choosing the grain only, on `threads` of the pool's threads (kiln
 * bench: its builds keep the count they are given). */
void rt_tune_begin_at(RtTune *t, int threads);
/* Before each step: sets the count and grain the step runs on
 * (rt_use_threads, rt_use_grain) and returns the count. */
int rt_tune_next(RtTune *t);
/* After each step: its time.  The choice is made after the first step (if
 * it took over 20 ms, or the pool has one thread: every thread) or after
 * 1 + RT_TUNE_ROUNDS x RT_TUNE_BLOCK steps per count (the fastest median).
 * Called on after the choice, it measures the settings again once the
 * steps since have taken RT_TUNE_RECHECK times the measuring's time (and
 * at least 0.25 s): rt_tune_done is false until that re-check chooses,
 * and the choice moves only to a setting more than 5% faster. */
void rt_tune_took(RtTune *t, double seconds);
bool rt_tune_done(const RtTune *t);
/* Runs step(ctx) until the choice is made (rt_tune_begin, _next, _took)
 * and leaves the pool on it; returns the count (what was measured in
 * *out, if not NULL). */
int rt_tune_threads(void (*step)(void *), void *ctx, RtTune *out);
/* The floating-point mode of compiled code (x86: MXCSR; elsewhere these
 * do nothing).  rt_fp_flush sets flush-to-zero and denormals-are-zero in
 * the calling thread, as a compiled step function does on entry (unless
 * built with keep_denormals), and returns the mode it replaced, for
 * rt_fp_restore.  Workers run a call's chunks in the calling thread's
 * mode. */
unsigned rt_fp_flush(void);
void rt_fp_restore(unsigned mode);
/* Joins the workers; the pool is back to one thread.  Safe to call more
 * than once; rt_set_threads may start workers again afterwards. */
void rt_pool_shutdown(void);

#endif
