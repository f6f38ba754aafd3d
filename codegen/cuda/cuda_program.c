/*
 * cuda_program.c: a step's kernel calls as CUDA launches (cuda_program.h).
 */
#include <string.h>

#include "cuda_program.h"

static bool add_kernel(CuSrc *s, const Kernel *k, char *err, size_t errlen) {
  const CuKernel *ck = cu_find(s, k->name);
  if (!ck)
    return cu_kernel(s, k, err, errlen);
  if (ck->k == k)
    return true; /* a kernel called again */
  snprintf(err, errlen, "codegen/cuda: two different kernels are named %s", k->name);
  return false;
}

bool cu_step(CuSrc *s, const CgCall *calls, int n, Arena *a, RtCuLaunch **out, int *n_out,
             char *err, size_t errlen) {
  int total = 0;
  for (int i = 0; i < n; i++) {
    if (!add_kernel(s, calls[i].k, err, errlen))
      return false;
    total += cu_find(s, calls[i].k->name)->n_launches;
  }
  RtCuLaunch *ls = arena_alloc(a, sizeof *ls * (size_t)(total + 1));
  int m = 0;
  for (int i = 0; i < n; i++) {
    const Kernel *k = calls[i].k;
    const CuKernel *ck = cu_find(s, k->name);
    RtCuArg *args = arena_alloc(a, sizeof *args * (size_t)(k->n_bufs + 1));
    for (int b = 0; b < k->n_bufs; b++) {
      const CgRef *r = &calls[i].refs[b];
      args[b] = (RtCuArg){r->base == CG_ARENA ? RT_CU_ARENA : RT_CU_EXTERN, r->at};
    }
    for (int j = 0; j < ck->n_launches; j++)
      ls[m++] = (RtCuLaunch){ck->launches[j].fn, ck->launches[j].threads, k->n_bufs, args};
  }
  *out = ls;
  *n_out = m;
  return true;
}
