/*
 * fake_cuda.c: a stand-in for the CUDA driver (libcuda.so.1) that runs on
 * the host, so test_cuda_rt can drive runtime/rt_cuda.c's device paths
 * (context, module, memory, launches, errors) without a GPU.  Loaded by
 * rt_cuda_open through KILN_LIBCUDA.
 *
 * One device, "kiln fake device", compute capability 8.0, 2 SMs.  Device
 * memory is host memory (a CUdeviceptr is the address).  A "module image"
 * is the path of a host-emulator library (tests/cuda_helpers.h's emu_build
 * output): cuModuleGetFunction finds kiln_emu_NAME and its argument count
 * kiln_emu_nargs_NAME there, and cuLaunchKernel runs every thread of the
 * grid, one after another, with the arguments read from kernelParams as
 * the driver does.  Copies and launches run at once (the stream is a
 * formality).  FAKE_CUDA_FAIL=NAME makes cuLaunchKernel of that function
 * fail with CUDA_ERROR_LAUNCH_FAILED (719), for the error path.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;

typedef struct FakeFn {
  struct FakeModule *m;
  void (*fn)(void *const *);
  int nargs;
  char name[256];
  struct FakeFn *next; /* the module's functions, freed with it */
} FakeFn;

typedef struct FakeModule {
  void *lib;
  void (*set)(unsigned, unsigned, unsigned, unsigned);
  FakeFn *fns;
} FakeModule;

CUresult cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }

CUresult cuGetErrorName(CUresult r, const char **s) {
  *s = r == 719 ? "CUDA_ERROR_LAUNCH_FAILED" : r == 500 ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_X";
  return 0;
}

CUresult cuGetErrorString(CUresult r, const char **s) {
  *s = r == 719 ? "unspecified launch failure" : "fake error";
  return 0;
}

CUresult cuDeviceGetCount(int *n) { return *n = 1, 0; }
CUresult cuDeviceGet(int *d, int ordinal) { return *d = ordinal, ordinal == 0 ? 0 : 101; }

CUresult cuDeviceGetName(char *name, int n, int dev) {
  snprintf(name, (size_t)n, "kiln fake device");
  return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  *v = attr == 75 ? 8 : attr == 76 ? 0 : attr == 16 ? 2 : 0;
  return 0;
}

static int ctx_token;
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { return *ctx = &ctx_token, 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { return 0; }
CUresult cuCtxSetCurrent(void *ctx) { return ctx == &ctx_token ? 0 : 201; }

static int stream_token;
CUresult cuStreamCreate(void **s, unsigned flags) { return *s = &stream_token, 0; }
CUresult cuStreamDestroy_v2(void *s) { return 0; }
CUresult cuStreamSynchronize(void *s) { return s == &stream_token ? 0 : 400; }

CUresult cuModuleLoadData(FakeModule **out, const void *image) {
  FakeModule *m = calloc(1, sizeof *m);
  m->lib = dlopen((const char *)image, RTLD_NOW | RTLD_LOCAL);
  if (!m->lib) {
    free(m);
    return 200; /* CUDA_ERROR_INVALID_IMAGE */
  }
  *(void **)&m->set = dlsym(m->lib, "kiln_emu_set");
  *out = m;
  return 0;
}

CUresult cuModuleUnload(FakeModule *m) {
  for (FakeFn *f = m->fns, *next; f; f = next) {
    next = f->next;
    free(f);
  }
  dlclose(m->lib);
  free(m);
  return 0;
}

CUresult cuModuleGetFunction(FakeFn **out, FakeModule *m, const char *name) {
  char sym[300];
  FakeFn *f = calloc(1, sizeof *f);
  f->m = m;
  snprintf(f->name, sizeof f->name, "%s", name);
  snprintf(sym, sizeof sym, "kiln_emu_%s", name);
  *(void **)&f->fn = dlsym(m->lib, sym);
  snprintf(sym, sizeof sym, "kiln_emu_nargs_%s", name);
  const int *n = dlsym(m->lib, sym);
  if (!f->fn || !n) {
    free(f);
    return 500; /* CUDA_ERROR_NOT_FOUND */
  }
  f->nargs = *n;
  f->next = m->fns;
  m->fns = f;
  *out = f;
  return 0;
}

CUresult cuMemAlloc_v2(unsigned long long *p, size_t n) {
  void *m = malloc(n);
  *p = (unsigned long long)(uintptr_t)m;
  return m ? 0 : 2;
}

CUresult cuMemFree_v2(unsigned long long p) {
  free((void *)(uintptr_t)p);
  return 0;
}

CUresult cuMemcpyHtoDAsync_v2(unsigned long long d, const void *s, size_t n, void *st) {
  memcpy((void *)(uintptr_t)d, s, n);
  return 0;
}

CUresult cuMemcpyDtoHAsync_v2(void *d, unsigned long long s, size_t n, void *st) {
  memcpy(d, (const void *)(uintptr_t)s, n);
  return 0;
}

CUresult cuMemcpyDtoDAsync_v2(unsigned long long d, unsigned long long s, size_t n, void *st) {
  memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
  return 0;
}

CUresult cuLaunchKernel(FakeFn *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
  const char *fail = getenv("FAKE_CUDA_FAIL");
  if (fail && strcmp(fail, f->name) == 0)
    return 719;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || shared || extra || stream != &stream_token ||
      gx == 0 || bx == 0 || bx > 1024)
    return 1; /* CUDA_ERROR_INVALID_VALUE: kiln launches 1-D grids only */
  void *args[256];
  for (int i = 0; i < f->nargs && i < 256; i++)
    args[i] = (void *)(uintptr_t) * (unsigned long long *)params[i];
  for (unsigned b = 0; b < gx; b++)
    for (unsigned t = 0; t < bx; t++) {
      f->m->set(t, b, bx, gx);
      f->fn(args);
    }
  return 0;
}
