/*
 * fake_cuda.c: a stand-in for the CUDA driver (libcuda.so.1) that runs on
 * the host, so test_cuda_rt can drive runtime/rt_cuda.c's device paths
 * (context, module, memory, launches, errors) without a GPU.  Loaded by
 * rt_cuda_open through KILN_LIBCUDA.
 *
 * One device, "kiln fake device", compute capability 8.0, 2 SMs.  Device
 * memory is host memory (a CUdeviceptr is the address).  A "module image"
 * is the path of a host-emulator library (tests/cuda_helpers.h's emu_build
 * output), or the CUDA source of a module itself (text that opens with a comment,
 * what codegen/cuda/cuda_program.c passes under KILN_CUDA_IMAGE=source, for
 * `kiln run --target cuda`): the fake compiles it as the emulator does, with
 * FAKE_CUDA_CXX and tests/cuda_emu.h, adding the wrappers below for each
 * `extern "C" __global__` function of the text (the same source loaded
 * again reuses the library).  cuModuleGetFunction finds kiln_emu_NAME and
 * its argument count kiln_emu_nargs_NAME there, and cuLaunchKernel runs every thread of the
 * grid, one after another (a module built from source: a block at a time,
 * its threads fibers of tests/cuda_emu.h's kiln_emu_block, so barriers and
 * shuffles work), with the arguments read from kernelParams as the driver
 * does.  Copies and launches run at once (the stream is a
 * formality).  FAKE_CUDA_FAIL=NAME makes cuLaunchKernel of that function
 * fail with CUDA_ERROR_LAUNCH_FAILED (719), for the error path;
 * FAKE_CUDA_SKIP=NAME makes it succeed without running the function (a
 * kernel that computes nothing, for kiln bench's disagreement check);
 * FAKE_CUDA_MEM=BYTES makes the device that small (an allocation past it
 * fails with CUDA_ERROR_OUT_OF_MEMORY, 2), for the out-of-memory path.
 *
 * For `kiln bench --target cuda`: events (cuEventRecord reads the host's
 * monotonic clock; the work before it has run already, so the time between
 * two events is the host's time for the launches between them), and the
 * memory attributes of an A100 40GB, invented for the fake device: a memory
 * clock of 1215 MHz (CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, 1215000 kHz) and
 * a 5120-bit bus (CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH), a peak of
 * 1555.2 GB/s.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;

typedef struct Built Built;

typedef struct FakeFn {
  struct FakeModule *m;
  void (*fn)(void *const *);
  int nargs;
  char name[256];
  struct FakeFn *next; /* the module's functions, freed with it */
} FakeFn;

typedef struct FakeModule {
  void *lib;
  struct Built *built; /* built from source: holds a reference to it */
  void (*set)(unsigned, unsigned, unsigned, unsigned);
  /* built from source: cuda_emu.h's runner of one block's threads as
   * fibers (barriers, shuffles), used for every launch */
  void (*block)(void (*)(void *const *), void *const *, unsigned, unsigned, unsigned);
  FakeFn *fns;
} FakeModule;

CUresult cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }

CUresult cuGetErrorName(CUresult r, const char **s) {
  *s = r == 719   ? "CUDA_ERROR_LAUNCH_FAILED"
       : r == 500 ? "CUDA_ERROR_NOT_FOUND"
       : r == 200 ? "CUDA_ERROR_INVALID_IMAGE"
       : r == 2   ? "CUDA_ERROR_OUT_OF_MEMORY"
                  : "CUDA_ERROR_X";
  return 0;
}

CUresult cuGetErrorString(CUresult r, const char **s) {
  *s = r == 719   ? "unspecified launch failure"
       : r == 200 ? "device kernel image is invalid"
       : r == 2   ? "out of memory"
                  : "fake error";
  return 0;
}

CUresult cuDeviceGetCount(int *n) { return *n = 1, 0; }
CUresult cuDeviceGet(int *d, int ordinal) { return *d = ordinal, ordinal == 0 ? 0 : 101; }

CUresult cuDeviceGetName(char *name, int n, int dev) {
  snprintf(name, (size_t)n, "kiln fake device");
  return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  /* 75, 76: compute capability 8.0; 16: SMs; 36: memory clock (kHz); 37: bus (bits) */
  *v = attr == 75 ? 8 : attr == 76 ? 0 : attr == 16 ? 2 : attr == 36 ? 1215000
     : attr == 37 ? 5120 : 0;
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

/* --- modules from CUDA source ------------------------------------------------------ */

/* Calls f with its pointer arguments from an array, whatever their types. */
static const char wrappers[] =
    "\n/* fake_cuda.c's wrappers */\n#include <utility>\n"
    "template <class... A, std::size_t... I>\n"
    "static void kiln_fake_call(void (*f)(A...), void *const *a, std::index_sequence<I...>) {\n"
    "  f(((A)a[I])...);\n}\n"
    "template <class... A> static void kiln_fake_call(void (*f)(A...), void *const *a) {\n"
    "  kiln_fake_call(f, a, std::index_sequence_for<A...>{});\n}\n"
    "template <class... A> static constexpr int kiln_fake_nargs(void (*)(A...)) {\n"
    "  return (int)sizeof...(A);\n}\n";

/* The sources compiled, each kept while a module uses its library. */
typedef struct Built {
  char *text; /* NULL: a free entry */
  char dir[64], lib[128];
  int refs;
} Built;
static Built builds[16];

static void remove_built(Built *b) {
  char path[128];
  const char *files[] = {"k.cu", "k.so", "log"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", b->dir, files[i]);
    remove(path);
  }
  rmdir(b->dir);
  free(b->text);
  memset(b, 0, sizeof *b);
}

static void release_built(Built *b) {
  if (b && --b->refs == 0)
    remove_built(b);
}

/* Writes text and a wrapper for each of its __global__ functions to f. */
static void write_module(FILE *f, const char *text) {
  fputs(text, f);
  fputs(wrappers, f);
  const char *key = "extern \"C\" __global__";
  for (const char *p = strstr(text, key); p; p = strstr(p, key)) {
    p = strstr(p + strlen(key), "void");
    if (!p)
      break;
    p += 4;
    int n = 0;
    do { /* the name, after any __launch_bounds__(...) */
      p += n;
      if (*p == '(')
        p = strchr(p, ')') + 1;
      p += strspn(p, " ");
      n = (int)strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
    } while (strncmp(p, "__", 2) == 0 && p[n] == '(');
    fprintf(f, "extern \"C\" void kiln_emu_%.*s(void *const *a) { kiln_fake_call(%.*s, a); }\n"
            "extern \"C\" const int kiln_emu_nargs_%.*s = kiln_fake_nargs(%.*s);\n", n, p, n,
            p, n, p, n, p);
  }
}

/* The library of a module's source: compiled, or the one built from the
 * same text; NULL (the compiler's messages on stderr) if it fails. */
static Built *library_of(const char *text) {
  Built *b = NULL;
  for (int i = 0; i < 16; i++)
    if (builds[i].text && strcmp(builds[i].text, text) == 0)
      return builds[i].refs++, &builds[i];
  for (int i = 0; i < 16 && !b; i++)
    b = builds[i].text ? NULL : &builds[i];
  if (!b)
    return NULL; /* kiln loads two modules a program, a few programs at most */
  char dir[64] = "/tmp/kiln_fake_cuda_XXXXXX", src[128], log[128], cmd[1024];
  if (!mkdtemp(dir))
    return NULL;
  memcpy(b->dir, dir, sizeof dir);
  snprintf(src, sizeof src, "%s/k.cu", dir);
  snprintf(b->lib, sizeof b->lib, "%s/k.so", dir);
  snprintf(log, sizeof log, "%s/log", dir);
  b->text = strdup(text);
  b->refs = 1;
  FILE *f = fopen(src, "w");
  if (!f) {
    remove_built(b);
    return NULL;
  }
  write_module(f, text);
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s -std=c++17 -O1 -ffp-contract=off -fPIC -shared -w -x c++ "
           "-include %s %s -o %s > %s 2>&1", FAKE_CUDA_CXX, FAKE_CUDA_EMU_H, src, b->lib, log);
  if (system(cmd) != 0) {
    snprintf(cmd, sizeof cmd, "head -c 4000 %s >&2", log);
    if (system(cmd)) {
    }
    remove_built(b);
    return NULL;
  }
  return b;
}

CUresult cuModuleLoadData(FakeModule **out, const void *image) {
  FakeModule *m = calloc(1, sizeof *m);
  bool source = strncmp((const char *)image, "/*", 2) == 0;
  m->built = source ? library_of((const char *)image) : NULL;
  const char *path = source ? (m->built ? m->built->lib : NULL) : (const char *)image;
  m->lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
  if (!m->lib) {
    release_built(m->built);
    free(m);
    return 200; /* CUDA_ERROR_INVALID_IMAGE */
  }
  *(void **)&m->set = dlsym(m->lib, "kiln_emu_set");
  if (m->built)
    *(void **)&m->block = dlsym(m->lib, "kiln_emu_block");
  *out = m;
  return 0;
}

CUresult cuModuleUnload(FakeModule *m) {
  for (FakeFn *f = m->fns, *next; f; f = next) {
    next = f->next;
    free(f);
  }
  dlclose(m->lib);
  release_built(m->built);
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
  static size_t used;
  const char *cap = getenv("FAKE_CUDA_MEM");
  if (cap && used + n > (size_t)strtoull(cap, NULL, 10))
    return 2;
  used += n;
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
  const char *skip = getenv("FAKE_CUDA_SKIP");
  if (skip && strcmp(skip, f->name) == 0)
    return 0;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || shared || extra || stream != &stream_token ||
      gx == 0 || bx == 0 || bx > 1024)
    return 1; /* CUDA_ERROR_INVALID_VALUE: kiln launches 1-D grids only */
  void *args[256];
  for (int i = 0; i < f->nargs && i < 256; i++)
    args[i] = (void *)(uintptr_t) * (unsigned long long *)params[i];
  if (f->m->block) {
    for (unsigned b = 0; b < gx; b++)
      f->m->block(f->fn, args, b, bx, gx);
    return 0;
  }
  for (unsigned b = 0; b < gx; b++)
    for (unsigned t = 0; t < bx; t++) {
      f->m->set(t, b, bx, gx);
      f->fn(args);
    }
  return 0;
}

/* --- events: the host's clock when recorded (everything before has run) --- */

typedef struct FakeEvent {
  double t; /* seconds; < 0 until recorded */
} FakeEvent;

static double host_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

CUresult cuEventCreate(FakeEvent **e, unsigned flags) {
  if (flags != 0)
    return 1; /* kiln times with default events */
  *e = malloc(sizeof **e);
  if (!*e)
    return 2;
  (*e)->t = -1;
  return 0;
}

CUresult cuEventDestroy_v2(FakeEvent *e) {
  free(e);
  return 0;
}

CUresult cuEventRecord(FakeEvent *e, void *stream) {
  if (stream != &stream_token)
    return 400; /* CUDA_ERROR_INVALID_HANDLE */
  e->t = host_seconds();
  return 0;
}

CUresult cuEventSynchronize(FakeEvent *e) { return e->t < 0 ? 400 : 0; }

CUresult cuEventElapsedTime_v2(float *ms, FakeEvent *start, FakeEvent *end) {
  if (start->t < 0 || end->t < 0)
    return 400;
  *ms = (float)(1e3 * (end->t - start->t));
  return 0;
}
