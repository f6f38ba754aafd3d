/*
 * cuda_program.h: a graph compiled for a CUDA device and ready to run, the
 * CUDA twin of codegen/program.h; and its building block, a program's
 * kernel calls (codegen/program.h's program_calls, the same list the CPU
 * step function is built from) as a CUDA module and the step's launches.
 *
 *   CuSrc *s = cu_new(g->name);
 *   RtCuLaunch *ls; int n;
 *   cu_step(s, calls, n_calls, arena, &ls, &n, err, sizeof err);
 *   ... cu_text(s) to NVRTC (cuda_nvrtc.h), then runtime/rt_cuda.h runs ls ...
 *
 * Each call's kernel is emitted once (a Kernel called twice is emitted
 * once; two different Kernels of one name are an error); its launches
 * follow one another in the list, each with
 * the call's buffers as its arguments: the arena offset or extern slot of
 * the CgRef that locates each buffer (slot 0 the step counter, as on the
 * CPU).
 *
 * CuProgram does what program_compile does, for a device: it plans memory
 * (the same plan as the CPU's, so the same offsets), emits the step's and
 * the prepare step's kernels into one module, compiles it with NVRTC to a
 * CUBIN for the device's architecture (rt_cuda_arch), loads it, and
 * allocates one device arena of the plan's size, a device buffer for each
 * parameter and weight-derived value, and one for the step counter.
 *
 *   RtCuda *d; rt_cuda_open(0, &d, err, n);
 *   CuProgram p;
 *   cu_program_compile(&p, d, g, roots, n, &plan_opts, err, sizeof err);
 *   cu_program_bind_param(&p, param, host);     // each parameter (host copy)
 *   cu_program_upload(&p, input, host, err, n);   // each input
 *   cu_program_run(&p, step, false, err, n);      // uploads bound params first
 *   cu_program_download(&p, output, host, err, n);
 *   cu_program_free(&p); rt_cuda_close(d);
 *
 * Parameters are uploaded once: at the first run after they were bound
 * (or after cu_program_params_changed), when the prepare step's kernels
 * then compute the weight-derived values on the device.  Updates of a
 * training step (cu_program_apply_updates) are device-to-device copies;
 * cu_program_download of a parameter reads its device copy.
 *
 * The module image: a CUBIN from NVRTC, or, when the environment has
 * KILN_CUDA_IMAGE=source, the CUDA source itself (NUL-terminated), which
 * no real driver loads: it is what the tests' fake driver
 * (tests/fake_cuda.c) compiles with the host emulator.
 *
 * Status: tested on an NVIDIA H100 (tests/gpu.sh: every model's outputs,
 * gradients and training against the CPU's), and without a GPU against the
 * fake driver (host memory, the emulator's kernels, one thread at a time).
 */
#ifndef KILN_CUDA_PROGRAM_H
#define KILN_CUDA_PROGRAM_H

#include "cg.h"
#include "cuda_emit.h"
#include "passes.h"
#include "rt_cuda.h"

/* The launches (allocated in arena a) that run calls[0..n) in order. */
bool cu_step(CuSrc *s, const CgCall *calls, int n, Arena *a, RtCuLaunch **out, int *n_out,
             char *err, size_t errlen);

typedef struct CuProgram {
  Graph *g;
  Plan plan;
  RtCuda *dev;      /* the caller's */
  Node **params;    /* extern slot 1 + i */
  int n_params;
  Node **derived;   /* weight-derived values: extern slot 1 + n_params + i */
  int n_derived;
  void **host;      /* [1 + i]: params[i]'s bound host copy */
  RtCuPtr *ext;     /* device pointers: [0] the step counter, then params, derived */
  RtCuPtr arena;    /* plan.arena bytes (at least one) */
  bool stale;       /* a parameter was bound since the last upload */
  CuSrc *src;
  RtCuLaunch *step, *prep;
  int n_step, n_prep; /* launches */
  int n_kernels;    /* kernel calls of the step */
  RtCuModule *m_step, *m_prep; /* m_prep NULL when there is nothing to prepare */
  double compile_seconds, nvrtc_seconds;
} CuProgram;

/* Plans, emits, compiles and loads g's step for roots on device d, and
 * allocates its device memory.  False with one sentence in err (NVRTC's
 * log, if any, goes to stderr); cu_program_free is then still needed. */
bool cu_program_compile(CuProgram *p, RtCuda *d, Graph *g, Node *const *roots, int n_roots,
                        const PlanOpts *po, char *err, size_t errlen);
/* Binds a parameter's host copy: uploaded at the next run (its values may be
 * written until then). */
void cu_program_bind_param(CuProgram *p, const Node *param, void *host);
/* Copies every parameter's device values into its bound host copy (after
 * training steps updated them on the device). */
RtStatus cu_program_download_params(CuProgram *p, char *err, size_t errlen);
/* The bound parameters changed in place: upload them again at the next run. */
void cu_program_params_changed(CuProgram *p);
/* Where node n lives on the device (the arena, a parameter's or a
 * weight-derived value's buffer); 0 if nowhere. */
RtCuPtr cu_program_place(const CuProgram *p, const Node *n);
RtStatus cu_program_upload(CuProgram *p, const Node *n, const void *host, char *err,
                           size_t errlen);
RtStatus cu_program_download(CuProgram *p, const Node *n, void *host, char *err, size_t errlen);
/* Uploads stale parameters and prepares, then runs the step's launches
 * (each synchronized when sync_each, which names a failing kernel). */
RtStatus cu_program_run(CuProgram *p, int64_t step, bool sync_each, char *err, size_t errlen);
/* Copies each update's value into its parameter on the device. */
RtStatus cu_program_apply_updates(CuProgram *p, char *err, size_t errlen);
void cu_program_free(CuProgram *p); /* not the device */

#endif
