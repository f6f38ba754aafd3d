/*
 * cuda_program.h: a program's kernel calls (codegen/program.h's
 * program_calls, the same list the CPU step function is built from) as a
 * CUDA module and the step's launches.
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
 */
#ifndef KILN_CUDA_PROGRAM_H
#define KILN_CUDA_PROGRAM_H

#include "cg.h"
#include "cuda_emit.h"
#include "rt_cuda.h"

/* The launches (allocated in arena a) that run calls[0..n) in order. */
bool cu_step(CuSrc *s, const CgCall *calls, int n, Arena *a, RtCuLaunch **out, int *n_out,
             char *err, size_t errlen);

#endif
