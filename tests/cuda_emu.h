/*
 * cuda_emu.h: the host emulator's CUDA, for compiling kiln's generated CUDA
 * source (codegen/cuda) as C++ on the CPU: `c++ -include cuda_emu.h`.
 *
 * It defines exactly the subset the emitter uses (codegen/cuda/cuda_emit.c
 * lists it): __global__, __device__, __forceinline__, __shared__ and
 * __launch_bounds__; threadIdx, blockIdx, blockDim and gridDim (x only);
 * __int_as_float; __syncthreads, __shfl_down_sync and __trap; and the f32
 * math functions, which come from the host's libm, the same glibc calls
 * the KIR interpreter (ir/kir_eval.c) makes.
 *
 * Two ways to run a launch:
 *
 *  - kernels that share nothing between threads (stage 1: no __shared__,
 *    no barrier, no shuffle) run thread by thread: the caller sets the
 *    thread's coordinates with kiln_emu_set and calls the kernel, for every
 *    thread of every block, in any order;
 *  - kernels that do (the tiled GEMM, block reductions: CuLaunch.block >
 *    0) run a block at a time through kiln_emu_block: each CUDA thread of
 *    the block is a fiber (ucontext) with a stack of its own, all on the
 *    calling host thread.  A fiber runs until it reaches __syncthreads or a
 *    shuffle, or returns; the scheduler then runs the next one (in
 *    thread order, or reversed: kiln_emu_order).  __syncthreads releases
 *    the block once every thread that has not returned waits there; a
 *    shuffle releases a warp once every live thread of the warp waits at
 *    one, each getting its source lane's value.  A thread that waits
 *    forever (a barrier in divergent code) aborts with a message.
 *    __shared__ variables are static locals of the kernel function: one
 *    copy, used by one block at a time, as on a GPU.
 *    The test's wrappers (tests/cuda_helpers.h) call kiln_emu_block when
 *    they are called for thread 0 of a block and do nothing for the other
 *    threads, so the thread-by-thread protocol above runs these kernels
 *    too (tests/fake_cuda.c keeps working unchanged).
 */
#ifndef KILN_CUDA_EMU_H
#define KILN_CUDA_EMU_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)

struct kiln_emu_dim3 {
  unsigned x, y, z;
};

static kiln_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

extern "C" void kiln_emu_set(unsigned thread, unsigned block, unsigned block_dim,
                             unsigned grid_dim) {
  threadIdx = {thread, 0, 0};
  blockIdx = {block, 0, 0};
  blockDim = {block_dim, 1, 1};
  gridDim = {grid_dim, 1, 1};
}

static inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}

static inline void __trap(void) {
  fprintf(stderr, "cuda_emu: __trap() in thread %u of block %u\n", threadIdx.x, blockIdx.x);
  abort();
}

/* --- fibers: one block's threads ------------------------------------------------ */

enum { KILN_EMU_MAX_BLOCK = 1024, KILN_EMU_STACK = 64 * 1024 };
enum KilnEmuState { KILN_EMU_RUN, KILN_EMU_BARRIER, KILN_EMU_SHFL, KILN_EMU_DONE };

struct KilnEmuFiber {
  ucontext_t ctx;
  char *stack;
  KilnEmuState state;
  double val;   /* a shuffle's operand, then its result */
  int src_lane; /* the lane it reads */
};

static struct KilnEmuBlock {
  ucontext_t main;
  KilnEmuFiber f[KILN_EMU_MAX_BLOCK];
  unsigned n, cur;
  bool active, reversed;
  void (*body)(void *const *);
  void *const *args;
} kiln_emu_b;

/* The fibers' stacks go with the module (dlclose runs this). */
__attribute__((destructor)) static void kiln_emu_free_stacks(void) {
  for (unsigned t = 0; t < KILN_EMU_MAX_BLOCK; t++) {
    free(kiln_emu_b.f[t].stack);
    kiln_emu_b.f[t].stack = NULL;
  }
}

/* Thread order of the scheduler: 0 in thread order, 1 from the last. */
extern "C" void kiln_emu_order(int reversed) { kiln_emu_b.reversed = reversed != 0; }

static void kiln_emu_entry(void) {
  kiln_emu_b.body(kiln_emu_b.args);
  kiln_emu_b.f[kiln_emu_b.cur].state = KILN_EMU_DONE;
  swapcontext(&kiln_emu_b.f[kiln_emu_b.cur].ctx, &kiln_emu_b.main);
}

/* The current fiber waits in state s; back here once released. */
static inline void kiln_emu_wait(KilnEmuState s) {
  if (!kiln_emu_b.active) {
    fprintf(stderr, "cuda_emu: a barrier or shuffle outside kiln_emu_block\n");
    abort();
  }
  KilnEmuFiber *me = &kiln_emu_b.f[kiln_emu_b.cur];
  me->state = s;
  swapcontext(&me->ctx, &kiln_emu_b.main);
}

static inline void __syncthreads(void) { kiln_emu_wait(KILN_EMU_BARRIER); }

static inline double kiln_emu_shfl(double v, int src_lane) {
  KilnEmuFiber *me = &kiln_emu_b.f[kiln_emu_b.cur];
  me->val = v;
  me->src_lane = src_lane;
  kiln_emu_wait(KILN_EMU_SHFL);
  return kiln_emu_b.f[kiln_emu_b.cur].val;
}

/* All 32 lanes take part (mask 0xffffffff; kiln's blocks are whole warps);
 * a source lane past the warp gives the thread its own value, as CUDA. */
static inline float __shfl_down_sync(unsigned mask, float v, unsigned delta) {
  return (float)kiln_emu_shfl(v, (int)(threadIdx.x % 32 + delta));
}
static inline int __shfl_down_sync(unsigned mask, int v, unsigned delta) {
  return (int)kiln_emu_shfl(v, (int)(threadIdx.x % 32 + delta));
}

/* Releases waiters when they can go on; false when nothing could. */
static bool kiln_emu_release(void) {
  KilnEmuBlock *b = &kiln_emu_b;
  unsigned live = 0, at_bar = 0;
  for (unsigned t = 0; t < b->n; t++) {
    live += b->f[t].state != KILN_EMU_DONE;
    at_bar += b->f[t].state == KILN_EMU_BARRIER;
  }
  if (live && at_bar == live) {
    for (unsigned t = 0; t < b->n; t++)
      if (b->f[t].state == KILN_EMU_BARRIER)
        b->f[t].state = KILN_EMU_RUN;
    return true;
  }
  bool any = false;
  for (unsigned w = 0; w * 32 < b->n; w++) {
    unsigned lo = w * 32, hi = lo + 32 < b->n ? lo + 32 : b->n, waiting = 0, wl = 0;
    for (unsigned t = lo; t < hi; t++) {
      wl += b->f[t].state != KILN_EMU_DONE;
      waiting += b->f[t].state == KILN_EMU_SHFL;
    }
    if (!waiting || waiting != wl)
      continue;
    double got[32];
    for (unsigned t = lo; t < hi; t++) {
      unsigned s = lo + (unsigned)b->f[t].src_lane;
      got[t - lo] = s < hi && b->f[s].state == KILN_EMU_SHFL ? b->f[s].val : b->f[t].val;
    }
    for (unsigned t = lo; t < hi; t++) {
      b->f[t].val = got[t - lo];
      b->f[t].state = KILN_EMU_RUN;
    }
    any = true;
  }
  return any;
}

/* Runs block `block` of a launch of body (block_dim threads, grid_dim
 * blocks) on args, every thread a fiber. */
extern "C" void kiln_emu_block(void (*body)(void *const *), void *const *args, unsigned block,
                               unsigned block_dim, unsigned grid_dim) {
  KilnEmuBlock *b = &kiln_emu_b;
  if (block_dim > KILN_EMU_MAX_BLOCK || b->active) {
    fprintf(stderr, "cuda_emu: bad block of %u threads\n", block_dim);
    abort();
  }
  b->n = block_dim, b->body = body, b->args = args, b->active = true;
  for (unsigned t = 0; t < block_dim; t++) {
    KilnEmuFiber *f = &b->f[t];
    if (!f->stack && !(f->stack = (char *)malloc(KILN_EMU_STACK)))
      abort();
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = KILN_EMU_STACK;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, kiln_emu_entry, 0);
    f->state = KILN_EMU_RUN;
  }
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < block_dim; i++) {
      unsigned t = b->reversed ? block_dim - 1 - i : i;
      if (b->f[t].state != KILN_EMU_RUN)
        continue;
      kiln_emu_set(t, block, block_dim, grid_dim);
      b->cur = t;
      swapcontext(&b->main, &b->f[t].ctx);
      ran = true;
    }
    bool done = true;
    for (unsigned t = 0; t < block_dim && done; t++)
      done = b->f[t].state == KILN_EMU_DONE;
    if (done)
      break;
    if (!kiln_emu_release() && !ran) {
      fprintf(stderr, "cuda_emu: block %u deadlocked (a barrier not every thread reaches)\n",
              block);
      abort();
    }
  }
  b->active = false;
}

#endif
