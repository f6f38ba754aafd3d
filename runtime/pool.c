/*
 * pool.c: the thread pool behind rt_parallel_for (see rt_pool.h for the
 * contract).
 *
 * Design.  A call publishes its job (fn, ctx, n) and then a 64-bit ticket
 * that packs a generation number (the high 48 bits) with the chunk count k
 * (the low 16), so a worker learns from one atomic load both that there is
 * new work and whether it has a part in it; workers with no part never
 * touch the job fields, which the next call may already be rewriting.
 * Workers 1..k-1 and the caller then take chunks from a claim word (the
 * generation and the next chunk, taken by compare-and-swap), so a thread
 * the VM has descheduled holds up no one: the others run its chunks, and
 * the caller waits only for chunks already running.  A worker that comes
 * late finds the generation changed and takes nothing.  The split is a
 * pure function of (n, grain, threads), whoever runs each chunk, which is
 * what makes per-chunk floating-point reductions reproducible.
 *
 * Waiting.  Kernels issue parallel loops back to back, so a waiter (worker
 * or caller) first spins for up to RT_POOL_SPIN_US microseconds, then
 * sleeps on its own condition variable; an idle pool uses no CPU.  With
 * more threads than CPUs the spin yields (sched_yield) instead of pausing,
 * since the thread it waits for may need this CPU.  The sleep is
 * lost-wakeup free by a Dekker-style handshake on sequentially consistent
 * atomics: the sleeper sets its `sleeping` flag and then re-reads the
 * ticket (or counter) under its mutex; the publisher writes the ticket (or
 * counter) and then reads the flag, signalling under the mutex when it is
 * set.  One of the two always sees the other's write.  Only the workers
 * that have a chunk are signalled.
 *
 * Why spin: on a 2-vCPU VM an empty 2-thread call costs ~50 us when the
 * worker sleeps every time (waking an idle vCPU is slow) and ~0.2-0.7 us
 * with the spin; with 3 or 8 threads on those 2 vCPUs, ~55-75 us spinning
 * with pause and ~3-8 us spinning with sched_yield.
 *
 * A limit.  rt_use_threads caps how many threads a call splits its loop
 * over (`used`), the workers staying: runtime/tune.c times a repeated step
 * on fewer threads than the pool has without stopping or starting any.
 * rt_use_grain multiplies every call's grain (`grain_x`), so that only the
 * larger loops split: tune.c times that too (on the VM of
 * docs/benchmarks.md a small step's kernels, split, leave their data on
 * both cores and the serial kernels after them read it across).
 *
 * Exclusion.  `busy` is taken by rt_parallel_for, rt_set_threads,
 * rt_use_threads and rt_pool_shutdown.  A parallel_for that finds it
 * taken (a nested call from fn, or another thread's concurrent call) runs
 * its chunks in order inline, so nothing ever waits for the pool while
 * holding it.
 *
 * Floating-point mode.  Compiled step functions flush subnormal numbers
 * to zero (codegen/llvm/cg_kernel.c sets FTZ and DAZ in MXCSR for the
 * step, then restores the caller's), and the workers run each call's
 * chunks in the caller's mode (`fp`, set only when it differs): a worker
 * thread never sees the step's entry, and a chunk must compute as it
 * would in the caller's thread.
 *
 * Global state: P below is the pool; nothing else in the runtime is
 * mutable and global.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_pool.h"

#include "rt_data.h" /* rt_now */

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif

/* How long a waiter spins before it sleeps.  Overridable at build time
 * (-DRT_POOL_SPIN_US=0 gives pure condition-variable waits). */
#ifndef RT_POOL_SPIN_US
#define RT_POOL_SPIN_US 50
#endif

#define CHUNK_BITS 16 /* the ticket's low bits hold k <= RT_POOL_MAX_THREADS */
#define CHUNK_MASK ((UINT64_C(1) << CHUNK_BITS) - 1)

typedef struct Worker {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_int sleeping; /* set while it waits (or is about to) on cv */
  int id;              /* 1..threads-1: takes part in calls of more than id chunks */
  uint64_t seen;       /* the ticket when it was started */
} Worker;

static struct {
  _Alignas(64) atomic_uint_fast64_t ticket; /* generation << 16 | k */
  _Alignas(64) atomic_int pending;          /* chunks not yet finished */
  _Alignas(64) atomic_uint_fast64_t claim;  /* generation << 16 | the next chunk to take */
  atomic_int caller_sleeping;
  _Alignas(64) atomic_int busy; /* the pool is taken (see above) */
  atomic_int stop;              /* workers should exit */
  atomic_int threads;           /* workers + 1 */
  atomic_int used;              /* at most this many take part in a call, <= threads */
  atomic_int grain_x;           /* every call's grain is multiplied by this (>= 1) */
  /* The job: written by the holder of busy before it publishes a ticket,
   * read by the workers with a chunk after they see it. */
  RtRangeFn fn;
  void *ctx;
  int64_t n;
  unsigned fp; /* the caller's floating-point mode (fp_mode) */
  /* Changed only by the holder of busy. */
  Worker *w;
  int nw;
  bool oversubscribed; /* more threads than CPUs: spin with sched_yield */
  pthread_mutex_t done_mu;
  pthread_cond_t done_cv; /* the caller sleeps here for pending == 0 */
} P = {.threads = 1, .used = 1, .grain_x = 1, .done_mu = PTHREAD_MUTEX_INITIALIZER, .done_cv = PTHREAD_COND_INITIALIZER};

/* ---- the floating-point mode: MXCSR's control bits on x86 ---- */

#if defined(__x86_64__) || defined(__SSE__)
enum { FP_STATUS = 0x3f, FP_FLUSH = 0x8040 }; /* the sticky exception flags; FTZ | DAZ */
static unsigned fp_mode(void) { return _mm_getcsr() & ~(unsigned)FP_STATUS; }
static void fp_use(unsigned mode) {
  unsigned now = _mm_getcsr();
  if ((now & ~(unsigned)FP_STATUS) != mode) _mm_setcsr((now & FP_STATUS) | mode);
}
unsigned rt_fp_flush(void) {
  unsigned old = fp_mode();
  fp_use(old | FP_FLUSH);
  return old;
}
#else
static unsigned fp_mode(void) { return 0; }
static void fp_use(unsigned mode) { (void)mode; }
unsigned rt_fp_flush(void) { return 0; }
#endif
void rt_fp_restore(unsigned mode) { fp_use(mode); }

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int rt_parallel_chunks(int64_t n, int64_t grain, int threads) {
  if (n <= 0) return 0;
  if (grain < 1) grain = 1;
  if (threads < 1) threads = 1;
  int64_t k = n / grain;
  if (k > threads) k = threads;
  return k < 1 ? 1 : (int)k;
}

/* Chunk t of k over [0, n): the first n % k chunks are one longer. */
static void chunk_range(int64_t n, int k, int t, int64_t *begin, int64_t *end) {
  int64_t base = n / k, rem = n % k;
  int64_t b = t * base + (t < rem ? t : rem);
  *begin = b;
  *end = b + base + (t < rem ? 1 : 0);
}

void rt_parallel_chunk(int64_t n, int64_t grain, int threads, int t, int64_t *begin, int64_t *end) {
  int k = rt_parallel_chunks(n, grain, threads);
  *begin = *end = 0;
  if (t >= 0 && t < k) chunk_range(n, k, t, begin, end);
}

static void run_inline(int64_t n, int k, RtRangeFn fn, void *ctx) {
  for (int t = 0; t < k; t++) {
    int64_t b, e;
    chunk_range(n, k, t, &b, &e);
    fn(ctx, b, e);
  }
}

/* ---- waiting ---- */

/* One step of a spin that started at *t0 (set when i == 0): false once
 * the spin is over (at once when RT_POOL_SPIN_US is 0, else after that
 * long; the clock is read every 64 steps). */
static bool spin(int i, double *t0) {
  if (RT_POOL_SPIN_US <= 0) return false;
  if ((i & 63) == 0) {
    double now = rt_now();
    if (i == 0) *t0 = now;
    else if (now - *t0 >= RT_POOL_SPIN_US * 1e-6) return false;
  }
  if (P.oversubscribed) sched_yield();
  else cpu_relax();
  return true;
}

/* Waits until the ticket differs from `seen` (returning it in *out) or the
 * pool stops (returning false). */
static bool wait_ticket(Worker *w, uint64_t seen, uint64_t *out) {
  double t0 = 0;
  for (int i = 0;; i++) {
    uint64_t t = atomic_load(&P.ticket);
    if (t != seen) {
      *out = t;
      return true;
    }
    if (atomic_load(&P.stop) || !spin(i, &t0)) break;
  }
  pthread_mutex_lock(&w->mu);
  atomic_store(&w->sleeping, 1);
  uint64_t t;
  while ((t = atomic_load(&P.ticket)) == seen && !atomic_load(&P.stop))
    pthread_cond_wait(&w->cv, &w->mu);
  atomic_store(&w->sleeping, 0);
  pthread_mutex_unlock(&w->mu);
  *out = t;
  return t != seen;
}

/* The caller's wait for the workers' chunks. */
static void wait_done(void) {
  double t0 = 0;
  for (int i = 0; atomic_load(&P.pending) != 0; i++)
    if (!spin(i, &t0)) break;
  pthread_mutex_lock(&P.done_mu);
  atomic_store(&P.caller_sleeping, 1);
  while (atomic_load(&P.pending) != 0)
    pthread_cond_wait(&P.done_cv, &P.done_mu);
  atomic_store(&P.caller_sleeping, 0);
  pthread_mutex_unlock(&P.done_mu);
}

/* Takes the next chunk of the call with ticket t, or returns -1 when they
 * are all taken or the call is over (its generation left the claim word).
 * Until a chunk of it is taken its call cannot end, so the job's fields
 * are read only after. */
static int take_chunk(uint64_t t) {
  uint64_t gen = t >> CHUNK_BITS, k = t & CHUNK_MASK;
  uint64_t c = atomic_load(&P.claim);
  while ((c >> CHUNK_BITS) == gen && (c & CHUNK_MASK) < k)
    if (atomic_compare_exchange_weak(&P.claim, &c, c + 1)) return (int)(c & CHUNK_MASK);
  return -1;
}

/* Runs chunks of the call with ticket t until none is left. */
static void run_chunks(uint64_t t) {
  int k = (int)(t & CHUNK_MASK), c;
  while ((c = take_chunk(t)) >= 0) { /* the job's fields are this call's until it ends */
    int64_t b, e;
    chunk_range(P.n, k, c, &b, &e);
    fp_use(P.fp); /* the caller's mode (it has it already) */
    P.fn(P.ctx, b, e);
    if (atomic_fetch_sub(&P.pending, 1) == 1 && atomic_load(&P.caller_sleeping)) {
      pthread_mutex_lock(&P.done_mu);
      pthread_cond_signal(&P.done_cv);
      pthread_mutex_unlock(&P.done_mu);
    }
  }
}

static void *worker_main(void *arg) {
  Worker *w = arg;
  uint64_t seen = w->seen, t;
  while (wait_ticket(w, seen, &t)) {
    seen = t;
    if (w->id >= (int)(t & CHUNK_MASK)) continue; /* no part in this call: read nothing else */
    run_chunks(t);
  }
  return NULL;
}

/* ---- the parallel for ---- */

void rt_parallel_for(int64_t n, int64_t grain, RtRangeFn fn, void *ctx) {
  if (n <= 0) return;
  int64_t gx = atomic_load_explicit(&P.grain_x, memory_order_relaxed);
  if (gx > 1 && grain > 0) grain = grain > INT64_MAX / gx ? INT64_MAX : grain * gx;
  int k = rt_parallel_chunks(n, grain, atomic_load_explicit(&P.used, memory_order_relaxed));
  if (k == 1) {
    fn(ctx, 0, n);
    return;
  }
  if (atomic_exchange(&P.busy, 1)) { /* nested, or another thread has the pool */
    run_inline(n, k, fn, ctx);
    return;
  }
  k = rt_parallel_chunks(n, grain, atomic_load(&P.used)); /* stable now: we hold busy */
  if (k == 1) {
    fn(ctx, 0, n);
  } else {
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.fp = fp_mode();
    atomic_store(&P.pending, k);
    uint64_t gen = (atomic_load(&P.ticket) >> CHUNK_BITS) + 1;
    uint64_t t = gen << CHUNK_BITS | (uint64_t)k;
    atomic_store(&P.claim, gen << CHUNK_BITS);
    atomic_store(&P.ticket, t);
    for (int i = 0; i < k - 1; i++) {
      Worker *w = &P.w[i];
      if (atomic_load(&w->sleeping)) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
      }
    }
    run_chunks(t);
    wait_done();
  }
  atomic_store(&P.busy, 0);
}

/* ---- starting and stopping workers (the caller holds busy) ---- */

static void stop_workers(void) {
  atomic_store(&P.stop, 1);
  for (int i = 0; i < P.nw; i++) {
    Worker *w = &P.w[i];
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
  for (int i = 0; i < P.nw; i++) {
    pthread_join(P.w[i].th, NULL);
    pthread_cond_destroy(&P.w[i].cv);
    pthread_mutex_destroy(&P.w[i].mu);
  }
  free(P.w);
  P.w = NULL;
  P.nw = 0;
  atomic_store(&P.stop, 0);
  atomic_store(&P.threads, 1);
  atomic_store(&P.used, 1);
}

/* Starts up to m workers; fewer when memory or threads run out. */
static void start_workers(int m) {
  if (m <= 0 || !(P.w = calloc((size_t)m, sizeof *P.w))) return;
  /* Workers block every signal, so signals go to the program's own
   * threads (they inherit the mask in effect at pthread_create). */
  sigset_t all, old;
  sigfillset(&all);
  bool masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
  uint64_t ticket = atomic_load(&P.ticket);
  int made = 0;
  while (made < m) {
    Worker *w = &P.w[made];
    w->id = made + 1;
    w->seen = ticket;
    atomic_init(&w->sleeping, 0);
    if (pthread_mutex_init(&w->mu, NULL) != 0) break;
    if (pthread_cond_init(&w->cv, NULL) != 0) {
      pthread_mutex_destroy(&w->mu);
      break;
    }
    if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
      pthread_cond_destroy(&w->cv);
      pthread_mutex_destroy(&w->mu);
      break;
    }
    made++;
  }
  if (masked) pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (made == 0) {
    free(P.w);
    P.w = NULL;
  }
  P.nw = made;
  atomic_store(&P.threads, made + 1);
  atomic_store(&P.used, made + 1);
}

int rt_set_threads(int n) {
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  int cpus = c < 1 ? 1 : c > RT_POOL_MAX_THREADS ? RT_POOL_MAX_THREADS : (int)c;
  if (n <= 0) n = cpus;
  if (n > RT_POOL_MAX_THREADS) n = RT_POOL_MAX_THREADS;
  if (atomic_exchange(&P.busy, 1)) return rt_threads(); /* misuse: change nothing */
  if (n != P.nw + 1) {
    stop_workers();
    /* With more threads than CPUs a spinner would hold the CPU that the
     * thread it waits for needs, so it yields instead of pausing. */
    P.oversubscribed = n > cpus;
    start_workers(n - 1);
  }
  atomic_store(&P.used, P.nw + 1); /* no limit (rt_use_threads) */
  atomic_store(&P.grain_x, 1);     /* nor a coarser grain (rt_use_grain) */
  atomic_store(&P.busy, 0);
  return rt_threads();
}

int rt_threads(void) { return atomic_load(&P.threads); }

int rt_use_threads(int k) {
  if (atomic_exchange(&P.busy, 1)) return rt_used_threads(); /* misuse: change nothing */
  int all = P.nw + 1;
  atomic_store(&P.used, k < 1 ? 1 : k > all ? all : k);
  atomic_store(&P.busy, 0);
  return rt_used_threads();
}

int rt_used_threads(void) { return atomic_load(&P.used); }

int rt_use_grain(int x) {
  if (atomic_exchange(&P.busy, 1)) return rt_used_grain(); /* misuse: change nothing */
  atomic_store(&P.grain_x, x < 1 ? 1 : x);
  atomic_store(&P.busy, 0);
  return rt_used_grain();
}

int rt_used_grain(void) { return atomic_load(&P.grain_x); }

void rt_pool_shutdown(void) {
  if (atomic_exchange(&P.busy, 1)) return; /* misuse: inside fn or concurrent */
  stop_workers();
  atomic_store(&P.busy, 0);
}
