/*
 * rt_cuda.c: the CUDA driver API, loaded at run time (rt_cuda.h).
 *
 * Nothing here links against CUDA: the driver's functions are looked up in
 * libcuda.so.1 with dlsym, by their versioned ABI names (cuMemAlloc_v2 and
 * so on: what cuda.h's macros expand to), and declared here with the
 * driver's C types reduced to what kiln passes (handles are pointers,
 * CUdevice an int, CUdeviceptr an unsigned long long, CUresult an int).
 * So the runtime builds without the CUDA toolkit, and a program that never
 * asks for a device never touches the library.
 *
 * Tested without a GPU (tests/test_cuda_rt.c): the library missing, the
 * toolkit's stub library (whose cuInit fails), and the messages; on a GPU
 * (tests/gpu.sh, an NVIDIA H100 with driver 580): the rest.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "rt_cuda.h"

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

enum {
  CU_ATTR_SM_COUNT = 16, /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */
  CU_ATTR_CC_MAJOR = 75, /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
  CU_ATTR_CC_MINOR = 76,
  CU_ATTR_MEM_CLOCK_KHZ = 36, /* CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE (peak, kHz) */
  CU_ATTR_BUS_BITS = 37,      /* CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH */
  BLOCK = 256,            /* threads per block of every launch */
  BLOCKS_PER_SM = 32,     /* grid cap: enough blocks to fill each SM several times */
};

/* The driver's functions kiln calls, by ABI name. */
typedef struct Driver {
  void *lib;
  CUresult (*init)(unsigned);
  CUresult (*error_name)(CUresult, const char **);
  CUresult (*error_string)(CUresult, const char **);
  CUresult (*device_count)(int *);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*device_name)(char *, int, CUdevice);
  CUresult (*device_attr)(int *, int, CUdevice);
  CUresult (*ctx_retain)(CUcontext *, CUdevice);
  CUresult (*ctx_release)(CUdevice);
  CUresult (*ctx_set)(CUcontext);
  CUresult (*stream_create)(CUstream *, unsigned);
  CUresult (*stream_destroy)(CUstream);
  CUresult (*stream_sync)(CUstream);
  CUresult (*module_load)(CUmodule *, const void *);
  CUresult (*module_unload)(CUmodule);
  CUresult (*module_fn)(CUfunction *, CUmodule, const char *);
  CUresult (*mem_alloc)(RtCuPtr *, size_t);
  CUresult (*mem_free)(RtCuPtr);
  CUresult (*htod)(RtCuPtr, const void *, size_t, CUstream);
  CUresult (*dtoh)(void *, RtCuPtr, size_t, CUstream);
  CUresult (*dtod)(RtCuPtr, RtCuPtr, size_t, CUstream);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                     unsigned, CUstream, void **, void **);
  /* events (kiln bench) */
  CUresult (*event_create)(CUevent *, unsigned);
  CUresult (*event_destroy)(CUevent);
  CUresult (*event_record)(CUevent, CUstream);
  CUresult (*event_sync)(CUevent);
  CUresult (*event_elapsed)(float *, CUevent, CUevent);
} Driver;

struct RtCuda {
  Driver drv;
  CUdevice dev;
  CUcontext ctx;
  CUstream stream;
  char name[256];
  int arch, sms;
};

struct RtCuModule {
  RtCuda *d;
  CUmodule mod;
  const RtCuLaunch *launches;
  CUfunction *fns;
  int n;
};

/* --- errors -------------------------------------------------------------------------- */

/* "what: CUDA_ERROR_X: text" for a failed driver call. */
static void cu_err(const Driver *drv, CUresult r, const char *what, char *out, size_t n) {
  const char *name = NULL, *text = NULL;
  if (drv->error_name && drv->error_name(r, &name) != 0)
    name = NULL;
  if (drv->error_string && drv->error_string(r, &text) != 0)
    text = NULL;
  /* a stub or outdated driver may not name its own errors */
  static const struct {
    int code;
    const char *name, *text;
  } known[] = {
      {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
      {34, "CUDA_ERROR_STUB_LIBRARY", "the CUDA driver loaded is a stub library, not a driver"},
      {35, "CUDA_ERROR_INSUFFICIENT_DRIVER", "the driver is older than this CUDA"},
      {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
  };
  for (size_t i = 0; !name && i < sizeof known / sizeof known[0]; i++)
    if (known[i].code == r)
      name = known[i].name, text = known[i].text;
  if (name)
    snprintf(out, n, "%s: %s%s%s", what, name, text ? ": " : "", text ? text : "");
  else
    snprintf(out, n, "%s: CUDA error %d", what, r);
}

static RtStatus fail(const Driver *drv, CUresult r, const char *what, char *err, size_t n) {
  cu_err(drv, r, what, err, n);
  return r == 2 /* CUDA_ERROR_OUT_OF_MEMORY */ ? RT_ERR_ALLOC : RT_ERR_IO;
}

static RtStatus no_device(char *err, size_t n, const char *reason) {
  snprintf(err, n, "no CUDA device found (%s)", reason);
  return RT_ERR_NOTFOUND;
}

/* --- loading the driver ----------------------------------------------------------------- */

static bool sym(Driver *drv, void *fp, const char *name, char *why, size_t n) {
  void *p = dlsym(drv->lib, name);
  if (!p) {
    snprintf(why, n, "the CUDA driver has no %s", name);
    return false;
  }
  memcpy(fp, &p, sizeof p); /* object to function pointer, as POSIX allows */
  return true;
}

static bool load_driver(Driver *drv, char *why, size_t n) {
  const char *path = getenv("KILN_LIBCUDA");
  memset(drv, 0, sizeof *drv);
  drv->lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!drv->lib) {
    snprintf(why, n, "%s", dlerror());
    return false;
  }
  return sym(drv, &drv->init, "cuInit", why, n) &&
         sym(drv, &drv->error_name, "cuGetErrorName", why, n) &&
         sym(drv, &drv->error_string, "cuGetErrorString", why, n) &&
         sym(drv, &drv->device_count, "cuDeviceGetCount", why, n) &&
         sym(drv, &drv->device_get, "cuDeviceGet", why, n) &&
         sym(drv, &drv->device_name, "cuDeviceGetName", why, n) &&
         sym(drv, &drv->device_attr, "cuDeviceGetAttribute", why, n) &&
         sym(drv, &drv->ctx_retain, "cuDevicePrimaryCtxRetain", why, n) &&
         sym(drv, &drv->ctx_release, "cuDevicePrimaryCtxRelease_v2", why, n) &&
         sym(drv, &drv->ctx_set, "cuCtxSetCurrent", why, n) &&
         sym(drv, &drv->stream_create, "cuStreamCreate", why, n) &&
         sym(drv, &drv->stream_destroy, "cuStreamDestroy_v2", why, n) &&
         sym(drv, &drv->stream_sync, "cuStreamSynchronize", why, n) &&
         sym(drv, &drv->module_load, "cuModuleLoadData", why, n) &&
         sym(drv, &drv->module_unload, "cuModuleUnload", why, n) &&
         sym(drv, &drv->module_fn, "cuModuleGetFunction", why, n) &&
         sym(drv, &drv->mem_alloc, "cuMemAlloc_v2", why, n) &&
         sym(drv, &drv->mem_free, "cuMemFree_v2", why, n) &&
         sym(drv, &drv->htod, "cuMemcpyHtoDAsync_v2", why, n) &&
         sym(drv, &drv->dtoh, "cuMemcpyDtoHAsync_v2", why, n) &&
         sym(drv, &drv->dtod, "cuMemcpyDtoDAsync_v2", why, n) &&
         sym(drv, &drv->launch, "cuLaunchKernel", why, n) &&
         sym(drv, &drv->event_create, "cuEventCreate", why, n) &&
         sym(drv, &drv->event_destroy, "cuEventDestroy_v2", why, n) &&
         sym(drv, &drv->event_record, "cuEventRecord", why, n) &&
         sym(drv, &drv->event_sync, "cuEventSynchronize", why, n) &&
         /* cuda.h of CUDA 13 maps cuEventElapsedTime to _v2; older drivers lack _v2 */
         (sym(drv, &drv->event_elapsed, "cuEventElapsedTime_v2", why, n) ||
          sym(drv, &drv->event_elapsed, "cuEventElapsedTime", why, n));
}

/* --- the device ------------------------------------------------------------------------- */

/* Device `ordinal`'s properties; a reason when there is none. */
static bool find_device(RtCuda *d, int ordinal, char *why, size_t n) {
  Driver *drv = &d->drv;
  CUresult r = drv->init(0);
  if (r != 0) {
    cu_err(drv, r, "cuInit", why, n);
    return false;
  }
  int count = 0;
  if ((r = drv->device_count(&count)) != 0) {
    cu_err(drv, r, "cuDeviceGetCount", why, n);
    return false;
  }
  if (ordinal < 0 || ordinal >= count) {
    snprintf(why, n, "the driver reports %d device%s, device %d was asked for", count,
             count == 1 ? "" : "s", ordinal);
    return false;
  }
  int major = 0, minor = 0;
  if ((r = drv->device_get(&d->dev, ordinal)) != 0 ||
      (r = drv->device_name(d->name, (int)sizeof d->name, d->dev)) != 0 ||
      (r = drv->device_attr(&major, CU_ATTR_CC_MAJOR, d->dev)) != 0 ||
      (r = drv->device_attr(&minor, CU_ATTR_CC_MINOR, d->dev)) != 0 ||
      (r = drv->device_attr(&d->sms, CU_ATTR_SM_COUNT, d->dev)) != 0) {
    cu_err(drv, r, "querying the device", why, n);
    return false;
  }
  d->arch = 10 * major + minor;
  return true;
}

RtStatus rt_cuda_open(int ordinal, RtCuda **out, char *err, size_t errlen) {
  char why[512];
  *out = NULL;
  RtCuda *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "out of memory");
    return RT_ERR_ALLOC;
  }
  if (!load_driver(&d->drv, why, sizeof why) || !find_device(d, ordinal, why, sizeof why)) {
    rt_cuda_close(d);
    return no_device(err, errlen, why);
  }
  /* the primary context, current on this thread, and a
   * stream that every copy and launch goes through, in order */
  Driver *drv = &d->drv;
  CUresult r = drv->ctx_retain(&d->ctx, d->dev);
  if (r == 0 && (r = drv->ctx_set(d->ctx)) == 0)
    r = drv->stream_create(&d->stream, 0);
  if (r != 0) {
    RtStatus s = fail(drv, r, "creating a context and stream on the CUDA device", err, errlen);
    rt_cuda_close(d);
    return s;
  }
  *out = d;
  return RT_OK;
}

void rt_cuda_close(RtCuda *d) {
  if (!d)
    return;
  if (d->stream)
    d->drv.stream_destroy(d->stream);
  if (d->ctx)
    d->drv.ctx_release(d->dev);
  if (d->drv.lib)
    dlclose(d->drv.lib);
  free(d);
}

const char *rt_cuda_name(const RtCuda *d) { return d->name; }

int rt_cuda_arch(const RtCuda *d) { return d->arch; }

/* --- modules --------------------------------------------------------------------------- */

RtStatus rt_cuda_load(RtCuda *d, const void *image, const RtCuLaunch *launches, int n,
                      RtCuModule **out, char *err, size_t errlen) {
  *out = NULL;
  RtCuModule *m = calloc(1, sizeof *m);
  CUfunction *fns = calloc((size_t)n + 1, sizeof *fns);
  if (!m || !fns) {
    free(m), free(fns);
    snprintf(err, errlen, "out of memory");
    return RT_ERR_ALLOC;
  }
  *m = (RtCuModule){d, NULL, launches, fns, n};
  CUresult r = d->drv.module_load(&m->mod, image);
  if (r != 0) {
    RtStatus s = fail(&d->drv, r, "loading the CUDA module", err, errlen);
    rt_cuda_unload(m);
    return s;
  }
  for (int i = 0; i < n; i++) {
    if ((r = d->drv.module_fn(&fns[i], m->mod, launches[i].fn)) != 0) {
      char what[300];
      snprintf(what, sizeof what, "kernel %s", launches[i].fn);
      RtStatus s = fail(&d->drv, r, what, err, errlen);
      rt_cuda_unload(m);
      return s;
    }
  }
  *out = m;
  return RT_OK;
}

void rt_cuda_unload(RtCuModule *m) {
  if (!m)
    return;
  if (m->mod)
    m->d->drv.module_unload(m->mod);
  free(m->fns);
  free(m);
}

/* --- memory ---------------------------------------------------------------------------- */

RtStatus rt_cuda_alloc(RtCuda *d, size_t bytes, RtCuPtr *out, char *err, size_t errlen) {
  CUresult r = d->drv.mem_alloc(out, bytes ? bytes : 1);
  if (r != 0) {
    char what[128];
    snprintf(what, sizeof what, "allocating %zu bytes on the CUDA device", bytes);
    return fail(&d->drv, r, what, err, errlen);
  }
  return RT_OK;
}

void rt_cuda_free(RtCuda *d, RtCuPtr p) {
  if (p)
    d->drv.mem_free(p);
}

/* A copy on the stream, then a wait for it (copies are rare: inputs,
 * outputs, parameters once). */
static RtStatus copied(RtCuda *d, CUresult r, const char *what, char *err, size_t errlen) {
  if (r == 0)
    r = d->drv.stream_sync(d->stream);
  return r == 0 ? RT_OK : fail(&d->drv, r, what, err, errlen);
}

RtStatus rt_cuda_upload(RtCuda *d, RtCuPtr dst, const void *src, size_t bytes, char *err,
                        size_t errlen) {
  return copied(d, d->drv.htod(dst, src, bytes, d->stream), "copying to the CUDA device", err,
                errlen);
}

RtStatus rt_cuda_download(RtCuda *d, void *dst, RtCuPtr src, size_t bytes, char *err,
                          size_t errlen) {
  return copied(d, d->drv.dtoh(dst, src, bytes, d->stream), "copying from the CUDA device", err,
                errlen);
}

RtStatus rt_cuda_copy(RtCuda *d, RtCuPtr dst, RtCuPtr src, size_t bytes, char *err,
                      size_t errlen) {
  return copied(d, d->drv.dtod(dst, src, bytes, d->stream), "copying on the CUDA device", err,
                errlen);
}

/* --- launches ---------------------------------------------------------------------------- */

void rt_cuda_grid(int64_t threads, int block, int max_blocks, unsigned *grid, unsigned *blockdim) {
  if (threads == 1) {
    *grid = *blockdim = 1;
    return;
  }
  int64_t blocks = threads < 0 ? max_blocks : (threads + block - 1) / block;
  *grid = (unsigned)(blocks < 1 ? 1 : blocks > max_blocks ? max_blocks : blocks);
  *blockdim = (unsigned)block;
}

/* Launches [from, to) of m, queued on the stream (each
 * waited for when sync_each). */
static RtStatus launch_range(RtCuModule *m, int from, int to, RtCuPtr arena, const RtCuPtr *ext,
                             bool sync_each, char *err, size_t errlen) {
  RtCuda *d = m->d;
  RtCuPtr ptrs[64];
  void *params[64];
  int max_blocks = d->sms > 0 ? d->sms * BLOCKS_PER_SM : 1024;
  for (int i = from; i < to; i++) {
    const RtCuLaunch *l = &m->launches[i];
    if (l->threads == 0)
      continue;
    if (l->n_args > 64) {
      snprintf(err, errlen, "kernel %s: %d arguments, at most 64 are supported", l->fn, l->n_args);
      return RT_ERR_FORMAT;
    }
    for (int a = 0; a < l->n_args; a++) {
      const RtCuArg *arg = &l->args[a];
      ptrs[a] = arg->base == RT_CU_ARENA ? arena + (RtCuPtr)arg->at : ext[arg->at];
      params[a] = &ptrs[a];
    }
    unsigned grid, block;
    if (l->block > 0) { /* tiles shared by exactly l->block threads: a block per tile */
      int64_t blocks = l->threads < 0 ? max_blocks : (l->threads + l->block - 1) / l->block;
      grid = (unsigned)(blocks < 1 ? 1 : blocks);
      block = (unsigned)l->block;
    } else {
      rt_cuda_grid(l->threads, BLOCK, max_blocks, &grid, &block);
    }
    CUresult r = d->drv.launch(m->fns[i], grid, 1, 1, block, 1, 1, 0, d->stream, params, NULL);
    if (r == 0 && sync_each)
      r = d->drv.stream_sync(d->stream);
    if (r != 0) {
      char what[300];
      snprintf(what, sizeof what, "kernel %s", l->fn);
      return fail(&d->drv, r, what, err, errlen);
    }
  }
  return RT_OK;
}

RtStatus rt_cuda_run(RtCuModule *m, RtCuPtr arena, const RtCuPtr *ext, bool sync_each, char *err,
                     size_t errlen) {
  RtStatus s = launch_range(m, 0, m->n, arena, ext, sync_each, err, errlen);
  if (s != RT_OK)
    return s;
  CUresult r = m->d->drv.stream_sync(m->d->stream);
  if (r != 0)
    return fail(&m->d->drv, r, "a kernel of the step (set KILN_CUDA_SYNC=1 to name it)", err,
                errlen);
  return RT_OK;
}

/* --- events (kiln bench) --------------------------------------------------------------- */
/* Events, launch ranges and the memory attributes: run on an H100 by
 * tests/gpu.sh and bench/gpu_lease.sh, and on tests/fake_cuda.c (its
 * events read the host's clock). */

struct RtCuEvent {
  RtCuda *d;
  CUevent ev;
};

RtStatus rt_cuda_event_new(RtCuda *d, RtCuEvent **out, char *err, size_t errlen) {
  *out = NULL;
  RtCuEvent *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "out of memory");
    return RT_ERR_ALLOC;
  }
  e->d = d;
  CUresult r = d->drv.event_create(&e->ev, 0 /* CU_EVENT_DEFAULT: timed */);
  if (r != 0) {
    free(e);
    return fail(&d->drv, r, "creating a CUDA event", err, errlen);
  }
  *out = e;
  return RT_OK;
}

void rt_cuda_event_free(RtCuEvent *e) {
  if (!e)
    return;
  e->d->drv.event_destroy(e->ev);
  free(e);
}

RtStatus rt_cuda_event_record(RtCuEvent *e, char *err, size_t errlen) {
  CUresult r = e->d->drv.event_record(e->ev, e->d->stream);
  return r == 0 ? RT_OK : fail(&e->d->drv, r, "recording a CUDA event", err, errlen);
}

RtStatus rt_cuda_event_wait(RtCuEvent *e, char *err, size_t errlen) {
  CUresult r = e->d->drv.event_sync(e->ev);
  return r == 0 ? RT_OK
                : fail(&e->d->drv, r, "a kernel of the step (set KILN_CUDA_SYNC=1 to name it)",
                       err, errlen);
}

RtStatus rt_cuda_event_seconds(const RtCuEvent *start, const RtCuEvent *end, double *seconds,
                               char *err, size_t errlen) {
  float ms = 0;
  CUresult r = end->d->drv.event_elapsed(&ms, start->ev, end->ev);
  *seconds = 1e-3 * (double)ms;
  return r == 0 ? RT_OK : fail(&end->d->drv, r, "timing with CUDA events", err, errlen);
}

RtStatus rt_cuda_launch(RtCuModule *m, int from, int to, RtCuPtr arena, const RtCuPtr *ext,
                        char *err, size_t errlen) {
  if (from < 0 || to > m->n || from > to) {
    snprintf(err, errlen, "launches %d to %d of a module of %d", from, to, m->n);
    return RT_ERR_FORMAT;
  }
  return launch_range(m, from, to, arena, ext, false, err, errlen);
}

double rt_cuda_peak_bandwidth(const RtCuda *d) {
  int khz = 0, bits = 0;
  if (d->drv.device_attr(&khz, CU_ATTR_MEM_CLOCK_KHZ, d->dev) != 0 ||
      d->drv.device_attr(&bits, CU_ATTR_BUS_BITS, d->dev) != 0 || khz <= 0 || bits <= 0)
    return 0;
  return 2.0 * 1e3 * (double)khz * (double)bits / 8; /* double data rate */
}
