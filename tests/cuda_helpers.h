/*
 * cuda_helpers.h: the host emulator of kiln's CUDA kernels, and running a
 * step's launches on it or in the KIR interpreter, for the CUDA tests.
 *
 * emu_build compiles a module's source (codegen/cuda) as C++ with the
 * host compiler KILN_EMU_CXX (CMake finds g++ or clang++) and
 * tests/cuda_emu.h, adding for each __global__ function F a wrapper
 * kiln_emu_F(void *const *args) that calls it with its buffers (and the
 * count kiln_emu_nargs_F, for tests/fake_cuda.c), and loads the result
 * with dlopen.  emu_launch then runs a launch's grid on this
 * thread: for every block and every thread of it, set the coordinates and
 * call the function (stage 1 kernels share nothing between threads, so
 * one after another is a faithful schedule).  A function whose launch
 * wants blocks of a fixed size (CuLaunch.block: shared memory and
 * barriers) gets a wrapper that runs the whole block as fibers
 * (cuda_emu.h's kiln_emu_block) when called for thread 0 and does nothing
 * for the others, so the same thread-by-thread calls run it (as
 * tests/fake_cuda.c makes them).  Two schedules (EmuMode):
 *
 *   EMU_STRIDED   blocks of 32 threads, at most 3 blocks: each thread's
 *                 grid-stride loop takes many iterations, far apart
 *                 (fixed-size blocks: that size, at most 3 blocks)
 *   EMU_REVERSED  enough blocks of 64 threads, run from the last thread
 *                 to the first; one-thread parts get 2 blocks of 4
 *                 threads, which their guard must reduce to one
 *                 (fixed-size blocks: all of them, last first, and the
 *                 fibers of each scheduled from the last)
 *
 * A step (runtime/rt_cuda.h's launches) runs either way with emu_step, or
 * as the same kernel calls in kir_eval with kir_step; tests compare the
 * arenas bit for bit.
 */
#ifndef KILN_CUDA_HELPERS_H
#define KILN_CUDA_HELPERS_H

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_program.h"
#include "kiln_test.h"

typedef enum EmuMode { EMU_STRIDED, EMU_REVERSED } EmuMode;

typedef void (*EmuFn)(void *const *args);

typedef struct Emu {
  char dir[64];
  char lib_path[128]; /* the compiled module */
  void *lib;
  void (*set)(unsigned thread, unsigned block, unsigned block_dim, unsigned grid_dim);
  void (*order)(int reversed);
  double compile_ms;
  /* the functions whose launches want fixed-size blocks, and that size */
  const char **block_fn;
  int *block_of;
  int n_block;
} Emu;

static inline double emu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* The wrapper of function fn of kernel k: its arguments from an array.
 * With `block` (fixed-size blocks), thread 0's call runs the block. */
static inline void emu_wrapper(FILE *f, const Kernel *k, const char *fn, int block) {
  fprintf(f, "%s void kiln_emu_%s%s(void *const *a) {\n  %s(", block ? "static" : "extern \"C\"",
          block ? "body_" : "", fn, fn);
  for (int b = 0; b < k->n_bufs; b++) {
    const char *t = k->bufs[b].type == KT_F32 ? "float" : k->bufs[b].type == KT_I32 ? "int"
                                                                                      : "long long";
    fprintf(f, "%s(%s%s *)a[%d]", b ? ", " : "", k->bufs[b].role == KB_IN ? "const " : "", t, b);
  }
  fprintf(f, ");\n}\n");
  if (block)
    fprintf(f,
            "extern \"C\" void kiln_emu_%s(void *const *a) {\n"
            "  if (threadIdx.x == 0) /* the block's threads as fibers */\n"
            "    kiln_emu_block(kiln_emu_body_%s, a, blockIdx.x, blockDim.x, gridDim.x);\n}\n",
            fn, fn);
  fprintf(f, "extern \"C\" const int kiln_emu_nargs_%s = %d;\n", fn, k->n_bufs);
}

/* The block size launches of fn want (0: any). */
static inline int emu_block_of(const Emu *e, const char *fn) {
  for (int i = 0; i < e->n_block; i++)
    if (strcmp(e->block_fn[i], fn) == 0)
      return e->block_of[i];
  return 0;
}

/* Compiles and loads s; fails the test with the compiler's messages. */
static inline void emu_build(Emu *e, CuSrc *s) {
  memset(e, 0, sizeof *e);
  snprintf(e->dir, sizeof e->dir, "/tmp/kiln_emu_XXXXXX");
  if (!mkdtemp(e->dir))
    fail_msg("mkdtemp failed");
  char src[128], lib[128], log[128], cmd[1024];
  snprintf(src, sizeof src, "%s/k.cu", e->dir);
  snprintf(lib, sizeof lib, "%s/k.so", e->dir);
  snprintf(log, sizeof log, "%s/log", e->dir);
  FILE *f = fopen(src, "w");
  assert_non_null(f);
  fputs(cu_text(s), f);
  fputs("\n/* the emulator's wrappers */\n", f);
  for (int i = 0; i < cu_n_kernels(s); i++) {
    const CuKernel *ck = cu_kernel_at(s, i);
    bool twin = false; /* a kernel with an earlier one's code runs its functions */
    for (int h = 0; h < i && !twin; h++)
      twin = cu_kernel_at(s, h)->launches[0].fn == ck->launches[0].fn;
    for (int j = 0; j < ck->n_launches && !twin; j++) {
      int block = ck->launches[j].block;
      emu_wrapper(f, ck->k, ck->launches[j].fn, block);
      if (!block)
        continue;
      e->block_fn = realloc(e->block_fn, sizeof *e->block_fn * (size_t)(e->n_block + 1));
      e->block_of = realloc(e->block_of, sizeof *e->block_of * (size_t)(e->n_block + 1));
      assert_true(e->block_fn && e->block_of);
      e->block_fn[e->n_block] = strdup(ck->launches[j].fn);
      e->block_of[e->n_block++] = block;
    }
  }
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "%s -std=c++17 -O1 -ffp-contract=off -fPIC -shared -w -x c++ -include "
           "%s/tests/cuda_emu.h %s -o %s > %s 2>&1",
           KILN_EMU_CXX, KILN_SOURCE_DIR, src, lib, log);
  double t0 = emu_now_ms();
  if (system(cmd) != 0) {
    snprintf(cmd, sizeof cmd, "head -c 4000 %s; grep -n '' %s | head -c 3000", log, src);
    if (system(cmd)) {
    }
    fail_msg("the host compiler rejected the generated CUDA source (kept in %s)", e->dir);
  }
  e->compile_ms = emu_now_ms() - t0;
  snprintf(e->lib_path, sizeof e->lib_path, "%s", lib);
  e->lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!e->lib)
    fail_msg("dlopen: %s", dlerror());
  *(void **)&e->set = dlsym(e->lib, "kiln_emu_set");
  *(void **)&e->order = dlsym(e->lib, "kiln_emu_order");
  assert_non_null(e->set);
  assert_non_null(e->order);
}

static inline void emu_free(Emu *e) {
  char path[128];
  if (e->lib)
    dlclose(e->lib);
  const char *files[] = {"k.cu", "k.so", "log"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", e->dir, files[i]);
    remove(path);
  }
  rmdir(e->dir);
  for (int i = 0; i < e->n_block; i++)
    free((void *)e->block_fn[i]);
  free(e->block_fn);
  free(e->block_of);
}

static inline EmuFn emu_fn(Emu *e, const char *fn) {
  char name[512];
  snprintf(name, sizeof name, "kiln_emu_%s", fn);
  EmuFn f;
  *(void **)&f = dlsym(e->lib, name);
  if (!f)
    fail_msg("the emulated module has no function %s", fn);
  return f;
}

/* Runs one launch of `threads` (rt_cuda.h's convention) on args. */
static inline void emu_launch(Emu *e, const char *fn, int64_t threads, void *const *args,
                              EmuMode mode) {
  EmuFn f = emu_fn(e, fn);
  if (threads == 0)
    return;
  unsigned grid, block;
  int fixed = emu_block_of(e, fn);
  if (fixed) { /* thread 0 of each block runs the block (emu_wrapper) */
    rt_cuda_grid(threads, fixed, mode == EMU_STRIDED ? 3 : 1 << 20, &grid, &block);
    e->order(mode == EMU_REVERSED);
    for (unsigned i = 0; i < grid; i++) {
      e->set(0, mode == EMU_REVERSED ? grid - 1 - i : i, block, grid);
      f(args);
    }
    return;
  }
  if (mode == EMU_STRIDED)
    rt_cuda_grid(threads, 32, 3, &grid, &block);
  else
    rt_cuda_grid(threads, 64, threads < 0 ? 5 : 1 << 20, &grid, &block);
  if (mode == EMU_REVERSED && threads == 1)
    grid = 2, block = 4;
  for (unsigned i = 0; i < grid * block; i++) {
    unsigned t = mode == EMU_REVERSED ? grid * block - 1 - i : i;
    e->set(t % block, t / block, block, grid);
    f(args);
  }
}

/* The data pointer of one launch argument. */
static inline void *emu_arg(const RtCuArg *a, char *arena, void *const *ext) {
  return a->base == RT_CU_ARENA ? arena + a->at : ext[a->at];
}

/* A step's launches on the emulator. */
static inline void emu_step(Emu *e, const RtCuLaunch *ls, int n, char *arena, void *const *ext,
                            EmuMode mode) {
  for (int i = 0; i < n; i++) {
    void *args[256];
    assert_true(ls[i].n_args <= 256);
    for (int a = 0; a < ls[i].n_args; a++)
      args[a] = emu_arg(&ls[i].args[a], arena, ext);
    emu_launch(e, ls[i].fn, ls[i].threads, args, mode);
  }
}

/* The same calls in the KIR interpreter. */
static inline void kir_step(const CgCall *calls, int n, char *arena, void *const *ext) {
  for (int i = 0; i < n; i++) {
    const Kernel *k = calls[i].k;
    void *bufs[256];
    assert_true(k->n_bufs <= 256);
    for (int b = 0; b < k->n_bufs; b++)
      bufs[b] = calls[i].refs[b].base == CG_ARENA ? arena + calls[i].refs[b].at
                                                  : ext[calls[i].refs[b].at];
    kir_eval(k, bufs);
  }
}

#endif
