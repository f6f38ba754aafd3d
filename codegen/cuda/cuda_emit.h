/*
 * cuda_emit.h: the CUDA backend's first half, Kernel IR (ir/kir.h) printed
 * as CUDA C source that NVRTC compiles (cuda_nvrtc.h) and the driver API
 * runs (runtime/rt_cuda.h).
 *
 *   CuSrc *s = cu_new("mlp");
 *   cu_kernel(s, k1, err, n);                  // extern "C" __global__ void k1(...)
 *   cu_kernel(s, k2, err, n);
 *   const CuKernel *ck = cu_find(s, "k2");     // how to launch it
 *   fputs(cu_text(s), f);                      // the prelude, then every kernel
 *   cu_free(s);
 *
 * Each Kernel becomes one or more `extern "C" __global__` functions, its
 * launches, run in order on one stream.  Every launch takes the kernel's
 * buffers as its parameters, in k->bufs order (f32 buffers as float *, i32
 * as int *, the KT_IDX step counter as long long *), and says how many
 * threads it wants:
 *
 *   - a kernel whose top level is one parallel loop (KL_PARALLEL, or a
 *     KL_VECTOR loop that carries no local: a flat elementwise kernel) is
 *     one launch named like the kernel, its loop a grid-stride loop over
 *     the loop's iteration space, flattened with the perfectly nested
 *     independent loops inside it (consecutive threads take consecutive
 *     innermost indices: coalesced accesses for row-major tensors);
 *   - a kernel without a parallel loop at its top level is one launch of
 *     one thread (named like the kernel), unless it is a serial nest ending
 *     in an independent loop whose iterations write disjoint elements (a
 *     bias gradient's `for row { for c { out[c] += x[row, c] } }`): then one
 *     thread per iteration of that loop runs the serial loops, in order;
 *   - any other kernel (statements before or after its parallel loop,
 *     several parallel loops: a GEMM head and its epilogue) is cut at its
 *     top level into parts, NAME_part0, NAME_part1, ..., each a parallel
 *     loop or a run of other statements (one thread); a local that one
 *     part sets and a later part reads lives in a __device__ variable of
 *     the module between the launches.  Cheap statements that only define
 *     locals for the parallel loop right after them (a fused kernel's
 *     one-element values) are computed by every thread of that loop's
 *     launch instead of a launch of their own.
 *   - a matmul or conv2d kernel (or a fused kernel led by one: its head)
 *     is a GEMM tiled through shared memory with register blocking
 *     (cuda_gemm.c), and an f32 sum or mean over trailing axes with long
 *     rows a warp-shuffle reduction (cuda_reduce.c): one function each,
 *     whose launch wants blocks of exactly CuLaunch.block threads (256);
 *     a fused kernel's epilogue runs in the GEMM's function, at each
 *     element as its tile is stored, or else as parts launched after it.
 *
 * A kernel whose code is an earlier kernel's but for names (the repeated
 * blocks of a network) gets no functions of its own: its launches name the
 * earlier kernel's functions (a comment in the source says so), which
 * keeps NVRTC's time, per function, down.
 *
 * Semantics are kir_eval's (ir/kir_eval.c), bit for bit, when NVRTC
 * compiles with cuda_nvrtc.h's flags (--fmad=false, IEEE division and
 * square root, no flush to zero): see cuda_expr.c for the table, and
 * cuda_prelude.c for kiln's exp/tanh/erf and the SplitMix64 hash printed
 * from the same constants as ir/kmath.h and the runtime's rt_rng_hash.
 * Exception: log, sin, cos, log1p and pow call CUDA's logf, sinf, ...,
 * which are within 1-2 ulp of glibc's but not its bits (the host emulator,
 * tests/cuda_emu.h, calls glibc's; see codegen/README.md); and sums
 * after cu_reassociate(s, true), which are within rounding of kir_eval's.
 *
 * Errors: cu_kernel returns false with one sentence in err when the kernel
 * fails kir_verify, its name is taken, or a parallel loop assigns a local
 * declared outside it (as codegen/llvm refuses it too).
 */
#ifndef KILN_CUDA_EMIT_H
#define KILN_CUDA_EMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kir.h"

/* One __global__ function of a kernel and the threads it wants. */
typedef struct CuLaunch {
  const char *fn;  /* its name in the module */
  int64_t threads; /* iterations of its grid-stride loop (any grid covers them; 0: nothing
                    * to do, skip the launch), 1 for a one-thread part, -1 when the count
                    * is only known on the device (a parallel loop with a computed extent:
                    * launch any grid) */
  int block;       /* 0: any block size; else blocks of exactly this many threads (the
                    * function shares tiles through __shared__ memory across them: the
                    * tiled GEMM, cuda_gemm.c); threads is then a multiple of it */
} CuLaunch;

/* A kernel as emitted: its launches, in order. */
typedef struct CuKernel {
  const Kernel *k;
  CuLaunch *launches;
  int n_launches;
} CuKernel;

typedef struct CuSrc CuSrc;

/* An empty module named `module` (the name goes in its header comment). */
CuSrc *cu_new(const char *module);
void cu_free(CuSrc *s); /* NULL is fine */

/* Whether sums over long rows may be summed in a faster order than
 * kir_eval's (cuda_reduce.c: a block per row; within rounding of kir_eval,
 * not its bits; deterministic).  Off by default; applies to kernels added
 * after the call. */
void cu_reassociate(CuSrc *s, bool on);

/* Appends k's functions (and __device__ variables); see above. */
bool cu_kernel(CuSrc *s, const Kernel *k, char *err, size_t n);

/* The launches of the kernel named `name` (NULL if it was not added). */
const CuKernel *cu_find(const CuSrc *s, const char *name);
/* The kernels added so far, in order: i in [0, cu_n_kernels). */
int cu_n_kernels(const CuSrc *s);
const CuKernel *cu_kernel_at(const CuSrc *s, int i);

/* The module's source: a header comment, the prelude (types, helpers,
 * kiln's math), then the kernels in the order they were added.  Valid
 * until the next cu_kernel or cu_free. */
const char *cu_text(CuSrc *s);

/* The prelude alone (what cu_text starts with after its comment). */
const char *cu_prelude(void);

#endif
