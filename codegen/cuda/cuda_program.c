/*
 * cuda_program.c: a step's kernel calls as CUDA launches (cu_step), and a
 * graph compiled, loaded and run on a CUDA device (CuProgram), the twin of
 * codegen/program.c: the same plan, the same calls (program_calls and
 * program_prepare_calls), the same extern slots (0 the step counter, then
 * the parameters, then the weight-derived values), with device memory in
 * place of host memory (cuda_program.h).
 *
 * Tested on an H100 (tests/gpu.sh) and on tests/fake_cuda.c.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_nvrtc.h"
#include "cuda_program.h"
#include "program.h"

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
      ls[m++] = (RtCuLaunch){ck->launches[j].fn, ck->launches[j].threads, ck->launches[j].block,
                             k->n_bufs, args};
  }
  *out = ls;
  *n_out = m;
  return true;
}

/* --- CuProgram ----------------------------------------------------------------------- */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The scheduled parameters and weight-derived values, and their slots (as
 * program.c numbers them). */
static int *persistent_slots(CuProgram *p, Graph *g) {
  return program_persistent_slots(g, &p->plan, &p->params, &p->n_params, &p->derived,
                                  &p->n_derived);
}

static int slot_of(const CuProgram *p, int node) {
  for (int i = 0; i < p->n_params; i++)
    if (p->params[i]->id == node)
      return 1 + i;
  for (int i = 0; i < p->n_derived; i++)
    if (p->derived[i]->id == node)
      return 1 + p->n_params + i;
  return -1;
}

/* The step's and the prepare step's launches, in one module. */
static bool emit_steps(CuProgram *p, const int *slot, char *err, size_t errlen) {
  Graph *g = p->g;
  CgCall *calls = arena_alloc(g->arena, sizeof(CgCall) * (size_t)(p->plan.n_order + 1));
  int nc;
  p->src = cu_new(g->name);
  if (!p->src) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  if (!program_prepare_calls(g, &p->plan, slot, calls, &nc, err, errlen) ||
      (nc && !cu_step(p->src, calls, nc, g->arena, &p->prep, &p->n_prep, err, errlen)))
    return false;
  if (!program_calls(g, &p->plan, slot, calls, &p->n_kernels, err, errlen))
    return false;
  return cu_step(p->src, calls, p->n_kernels, g->arena, &p->step, &p->n_step, err, errlen);
}

/* The module's source as the image (KILN_CUDA_IMAGE=source: the fake
 * driver's), else a CUBIN for the device's architecture.  Malloc'ed. */
static char *module_image(CuProgram *p, char *err, size_t errlen) {
  const char *text = cu_text(p->src);
  const char *mode = getenv("KILN_CUDA_IMAGE");
  if (mode && strcmp(mode, "source") == 0) {
    char *copy = strdup(text);
    if (!copy)
      snprintf(err, errlen, "out of memory");
    return copy;
  }
  /* a CUBIN for exactly the device's sm_XY */
  CuTargets t = {.archs = {rt_cuda_arch(p->dev)}, .n_archs = 1, .ptx_arch = 0};
  CuImages im;
  char *report = NULL;
  if (!cu_nvrtc_compile(text, p->g->name, &t, &im, err, errlen, &report)) {
    if (report)
      fputs(report, stderr);
    free(report);
    return NULL;
  }
  p->nvrtc_seconds = im.seconds;
  char *image = im.images[0].data;
  im.images[0].data = NULL;
  cu_images_free(&im);
  return image;
}

static RtStatus load_modules(CuProgram *p, char *err, size_t errlen) {
  char *image = module_image(p, err, errlen);
  if (!image)
    return RT_ERR_FORMAT;
  RtStatus s = rt_cuda_load(p->dev, image, p->step, p->n_step, &p->m_step, err, errlen);
  if (s == RT_OK && p->n_prep)
    s = rt_cuda_load(p->dev, image, p->prep, p->n_prep, &p->m_prep, err, errlen);
  free(image);
  return s;
}

/* The arena (zeroed, as the CPU's), the step counter, every parameter's
 * and weight-derived value's buffer. */
static RtStatus alloc_device(CuProgram *p, char *err, size_t errlen) {
  size_t bytes = p->plan.arena > 0 ? (size_t)p->plan.arena : 1;
  int n_ext = 1 + p->n_params + p->n_derived;
  p->ext = calloc((size_t)n_ext, sizeof(RtCuPtr));
  p->host = calloc((size_t)n_ext, sizeof(void *));
  void *zeros = calloc(1, bytes);
  if (!p->ext || !p->host || !zeros) {
    free(zeros);
    snprintf(err, errlen, "out of memory");
    return RT_ERR_ALLOC;
  }
  RtStatus s = rt_cuda_alloc(p->dev, bytes, &p->arena, err, errlen);
  if (s == RT_OK)
    s = rt_cuda_upload(p->dev, p->arena, zeros, bytes, err, errlen);
  free(zeros);
  for (int i = 0; i < n_ext && s == RT_OK; i++) {
    const Node *v = i == 0 ? NULL : i <= p->n_params ? p->params[i - 1]
                                                     : p->derived[i - 1 - p->n_params];
    s = rt_cuda_alloc(p->dev, v ? (size_t)p->plan.size[v->id] : sizeof(int64_t), &p->ext[i], err,
                      errlen);
  }
  return s;
}

bool cu_program_compile(CuProgram *p, RtCuda *d, Graph *g, Node *const *roots, int n_roots,
                        const PlanOpts *po, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  double t0 = now_seconds();
  p->g = g;
  p->dev = d;
  plan_build(g, roots, n_roots, po, &p->plan);
  int *slot = persistent_slots(p, g);
  if (!emit_steps(p, slot, err, errlen) || load_modules(p, err, errlen) != RT_OK ||
      alloc_device(p, err, errlen) != RT_OK)
    return false;
  p->stale = true;
  p->compile_seconds = now_seconds() - t0;
  return true;
}

void cu_program_bind_param(CuProgram *p, const Node *param, void *host) {
  int slot = slot_of(p, param->id);
  if (slot > 0 && slot <= p->n_params) {
    p->host[slot] = host;
    p->stale = true;
  }
}

void cu_program_params_changed(CuProgram *p) { p->stale = true; }

RtStatus cu_program_download_params(CuProgram *p, char *err, size_t errlen) {
  for (int i = 0; i < p->n_params; i++) {
    ASSERT(p->host[1 + i]);
    RtStatus s = rt_cuda_download(p->dev, p->host[1 + i], p->ext[1 + i],
                                  (size_t)node_bytes(p->params[i]), err, errlen);
    if (s != RT_OK)
      return s;
  }
  return RT_OK;
}

RtCuPtr cu_program_place(const CuProgram *p, const Node *n) {
  if (p->plan.offset[n->id] >= 0)
    return p->arena + (RtCuPtr)p->plan.offset[n->id];
  int slot = slot_of(p, n->id);
  return slot > 0 ? p->ext[slot] : 0;
}

static RtStatus no_place(const Node *n, char *err, size_t errlen) {
  snprintf(err, errlen, "%s has no place on the CUDA device (the step does not compute it)",
           n->name);
  return RT_ERR_NOTFOUND;
}

RtStatus cu_program_upload(CuProgram *p, const Node *n, const void *host, char *err,
                           size_t errlen) {
  RtCuPtr at = cu_program_place(p, n);
  return at ? rt_cuda_upload(p->dev, at, host, (size_t)node_bytes(n), err, errlen)
            : no_place(n, err, errlen);
}

RtStatus cu_program_download(CuProgram *p, const Node *n, void *host, char *err, size_t errlen) {
  RtCuPtr at = cu_program_place(p, n);
  return at ? rt_cuda_download(p->dev, host, at, (size_t)node_bytes(n), err, errlen)
            : no_place(n, err, errlen);
}

/* Every bound parameter to the device, then the prepare step. */
static RtStatus upload_params(CuProgram *p, bool sync_each, char *err, size_t errlen) {
  for (int i = 0; i < p->n_params; i++) {
    ASSERT(p->host[1 + i]);
    RtStatus s = rt_cuda_upload(p->dev, p->ext[1 + i], p->host[1 + i],
                                (size_t)node_bytes(p->params[i]), err, errlen);
    if (s != RT_OK)
      return s;
  }
  p->stale = false;
  return p->m_prep ? rt_cuda_run(p->m_prep, p->arena, p->ext, sync_each, err, errlen) : RT_OK;
}

RtStatus cu_program_run(CuProgram *p, int64_t step, bool sync_each, char *err, size_t errlen) {
  RtStatus s = p->stale ? upload_params(p, sync_each, err, errlen) : RT_OK;
  if (s == RT_OK)
    s = rt_cuda_upload(p->dev, p->ext[0], &step, sizeof step, err, errlen);
  return s == RT_OK ? rt_cuda_run(p->m_step, p->arena, p->ext, sync_each, err, errlen) : s;
}

RtStatus cu_program_apply_updates(CuProgram *p, char *err, size_t errlen) {
  const Graph *g = p->g;
  for (int i = 0; i < g->n_updates; i++) {
    RtCuPtr dst = cu_program_place(p, g->updates[i].target);
    RtCuPtr src = cu_program_place(p, g->updates[i].value);
    ASSERT(dst && src && dst != src);
    RtStatus s = rt_cuda_copy(p->dev, dst, src, (size_t)node_bytes(g->updates[i].target), err,
                              errlen);
    if (s != RT_OK)
      return s;
  }
  return RT_OK;
}

void cu_program_free(CuProgram *p) {
  rt_cuda_unload(p->m_step);
  rt_cuda_unload(p->m_prep);
  if (p->ext) {
    for (int i = 0; i < 1 + p->n_params + p->n_derived; i++)
      if (p->ext[i])
        rt_cuda_free(p->dev, p->ext[i]);
  }
  if (p->arena)
    rt_cuda_free(p->dev, p->arena);
  cu_free(p->src);
  free(p->ext);
  free(p->host);
  memset(p, 0, sizeof *p);
}
