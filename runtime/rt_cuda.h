/*
 * rt_cuda.h: running kiln's CUDA kernels through the CUDA driver API.
 *
 * The driver (libcuda.so.1) is loaded with dlopen when a device is asked
 * for, never linked, so every kiln binary starts on machines without a GPU
 * or driver; rt_cuda_open then fails with "no CUDA device found (REASON)".
 * KILN_LIBCUDA, if set, names the library to load instead (tests use it).
 *
 *   RtCuda *d;
 *   if (rt_cuda_open(0, &d, err, n) != RT_OK) ... "no CUDA device found (...)"
 *   RtCuModule *m;
 *   rt_cuda_load(d, cubin_or_ptx, launches, n_launches, &m, err, n);
 *   RtCuPtr arena;
 *   rt_cuda_alloc(d, bytes, &arena, err, n);         // one arena, the plan's
 *   rt_cuda_upload(d, arena + off, host, bytes, err, n);
 *   rt_cuda_run(m, arena, ext, false, err, n);        // the launches, in order
 *   rt_cuda_download(d, host, arena + off, bytes, err, n);
 *   rt_cuda_unload(m); rt_cuda_free(d, arena); rt_cuda_close(d);
 *
 * A step is a list of launches (codegen/cuda makes it, cuda_program.h):
 * a __global__ function of the module, how many threads it wants, and
 * where each of its pointer arguments is (an offset into the arena, or a
 * slot of the caller's array of device pointers: parameters, the step
 * counter).  Every call is checked; an error names the kernel function.
 * Kernels run asynchronously on the device's stream, so a fault inside a
 * kernel surfaces at the step's synchronization: with `sync_each` (the
 * environment variable KILN_CUDA_SYNC=1 in the driver) each launch is
 * synchronized, which names the kernel that failed.
 *
 * Tested on a GPU by tests/gpu.sh (an NVIDIA H100 with driver 580: every
 * model run, gradients, training, a built program and bench), and without
 * one: loading the library, resolving its symbols, and the errors when
 * either fails or no device is present; the device paths against a fake
 * driver that runs the kernels on the host (tests/fake_cuda.c:
 * test_cuda_rt, and `kiln run|train --target cuda` in tests/cuda_run.sh).
 */
#ifndef KILN_RT_CUDA_H
#define KILN_RT_CUDA_H

#include <stdbool.h>

#include "rt.h"

/* Where one argument of a launch points. */
typedef enum RtCuBase {
  RT_CU_ARENA,  /* at = byte offset into the arena */
  RT_CU_EXTERN, /* at = index into the caller's array of device pointers */
} RtCuBase;

typedef struct RtCuArg {
  RtCuBase base;
  int64_t at;
} RtCuArg;

/* One launch of a step. */
typedef struct RtCuLaunch {
  const char *fn;  /* the extern "C" __global__ function */
  int64_t threads; /* iterations it wants (its loop is grid-stride): 0 skips it,
                    * -1 means any grid (the count is computed on the device) */
  int block;       /* 0: blocks of the runtime's size; else exactly this many threads per
                    * block (a kernel sharing tiles through __shared__ memory), and
                    * threads / block blocks */
  int n_args;
  const RtCuArg *args;
} RtCuLaunch;

/* The block and grid a launch gets: blocks of `block` threads (1 thread
 * for threads == 1), as many as cover `threads`, at most max_blocks (the
 * grid-stride loop does the rest); max_blocks for threads == -1.  (A
 * launch with its own RtCuLaunch.block gets that block and every block
 * its threads need, uncapped.) */
void rt_cuda_grid(int64_t threads, int block, int max_blocks, unsigned *grid, unsigned *blockdim);

typedef unsigned long long RtCuPtr; /* a device address (CUdeviceptr) */
typedef struct RtCuda RtCuda;
typedef struct RtCuModule RtCuModule;

/* Loads the driver, initializes it and makes device `ordinal` current
 * (its primary context, one stream).  RT_ERR_NOTFOUND with
 * "no CUDA device found (...)" when the library, a symbol or a device is
 * missing. */
RtStatus rt_cuda_open(int ordinal, RtCuda **out, char *err, size_t errlen);
void rt_cuda_close(RtCuda *d); /* NULL is fine */
const char *rt_cuda_name(const RtCuda *d);
/* Compute capability as 10 * major + minor (80 for sm_80). */
int rt_cuda_arch(const RtCuda *d);

/* Loads a module from a CUBIN or NUL-terminated PTX image and resolves the
 * function of each launch (the launches are kept by pointer: they must
 * outlive the module). */
RtStatus rt_cuda_load(RtCuda *d, const void *image, const RtCuLaunch *launches, int n,
                      RtCuModule **out, char *err, size_t errlen);
void rt_cuda_unload(RtCuModule *m); /* NULL is fine */

RtStatus rt_cuda_alloc(RtCuda *d, size_t bytes, RtCuPtr *out, char *err, size_t errlen);
void rt_cuda_free(RtCuda *d, RtCuPtr p);
RtStatus rt_cuda_upload(RtCuda *d, RtCuPtr dst, const void *src, size_t bytes, char *err,
                        size_t errlen);
RtStatus rt_cuda_download(RtCuda *d, void *dst, RtCuPtr src, size_t bytes, char *err,
                          size_t errlen);
RtStatus rt_cuda_copy(RtCuda *d, RtCuPtr dst, RtCuPtr src, size_t bytes, char *err,
                      size_t errlen);

/* Runs the module's launches in order on the device's stream, then waits
 * for them: each argument the arena plus its offset or ext[slot]. */
RtStatus rt_cuda_run(RtCuModule *m, RtCuPtr arena, const RtCuPtr *ext, bool sync_each, char *err,
                     size_t errlen);

/* --- events (kiln bench) ---
 * Timing on the device's stream: an event records when the stream reaches
 * it; two events give the device time between them.  rt_cuda_launch queues
 * a range of a module's launches without waiting, so events recorded
 * between ranges time each alone (one stream: nothing overlaps them).
 *
 *   RtCuEvent *a, *b;
 *   rt_cuda_event_new(d, &a, err, n); rt_cuda_event_new(d, &b, err, n);
 *   rt_cuda_event_record(a, err, n);
 *   rt_cuda_launch(m, 0, 3, arena, ext, err, n);   // launches 0, 1, 2
 *   rt_cuda_event_record(b, err, n);
 *   rt_cuda_event_wait(b, err, n);                  // kernel faults surface here
 *   double s; rt_cuda_event_seconds(a, b, &s, err, n);
 *
 * Timed kiln bench's kernels on an H100 (bench/gpu_lease.sh). */
typedef struct RtCuEvent RtCuEvent;
RtStatus rt_cuda_event_new(RtCuda *d, RtCuEvent **out, char *err, size_t errlen);
void rt_cuda_event_free(RtCuEvent *e); /* NULL is fine */
RtStatus rt_cuda_event_record(RtCuEvent *e, char *err, size_t errlen);
/* Waits until the stream has passed e. */
RtStatus rt_cuda_event_wait(RtCuEvent *e, char *err, size_t errlen);
/* The device time from start to end, both recorded and passed. */
RtStatus rt_cuda_event_seconds(const RtCuEvent *start, const RtCuEvent *end, double *seconds,
                               char *err, size_t errlen);
/* Queues launches [from, to) of m as rt_cuda_run does, without waiting. */
RtStatus rt_cuda_launch(RtCuModule *m, int from, int to, RtCuPtr arena, const RtCuPtr *ext,
                        char *err, size_t errlen);
/* The device memory's peak bandwidth in bytes per second: the memory clock
 * x the bus width x 2 (double data rate), from cuDeviceGetAttribute; 0 when
 * the driver does not report them. */
double rt_cuda_peak_bandwidth(const RtCuda *d);

#endif
