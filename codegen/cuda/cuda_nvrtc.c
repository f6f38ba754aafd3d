/*
 * cuda_nvrtc.c: CUDA source to CUBIN and PTX through NVRTC (cuda_nvrtc.h).
 *
 * One NVRTC program per architecture: -arch=sm_XY gives a CUBIN
 * (nvrtcGetCUBIN) and the PTX it was made from (nvrtcGetPTX: `.target
 * sm_XY`, which is what -arch=compute_XY gives too), so PTX for an
 * architecture that also gets a CUBIN costs no compilation of its own; PTX
 * alone compiles with -arch=compute_XY.  The programs are independent, so
 * they compile on threads of their own (NVRTC allows concurrent programs):
 * the module's compile time is its slowest one's, not their sum.
 * Built without the toolkit (KILN_HAVE_NVRTC undefined) every compile
 * fails with a message saying so.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_nvrtc.h"

const CuTargets CU_NVRTC_DEFAULT = {{80, 90}, 2, 80};

void cu_images_free(CuImages *im) {
  for (int i = 0; i < im->n; i++)
    free(im->images[i].data);
  memset(im, 0, sizeof *im);
}

/* "sm_80", "compute_80" or "80" */
static bool arch_word(const char *w, size_t n, int *arch, bool *ptx) {
  char buf[32];
  if (n == 0 || n >= sizeof buf)
    return false;
  memcpy(buf, w, n);
  buf[n] = '\0';
  const char *digits = buf;
  *ptx = false;
  if (strncmp(buf, "sm_", 3) == 0)
    digits = buf + 3;
  else if (strncmp(buf, "compute_", 8) == 0)
    digits = buf + 8, *ptx = true;
  char *end;
  long v = strtol(digits, &end, 10);
  if (!*digits || *end || v < 50 || v > 999)
    return false;
  *arch = (int)v;
  return true;
}

bool cu_targets_parse(const char *s, CuTargets *t, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  for (const char *p = s; *p;) {
    size_t n = strcspn(p, ",");
    int arch;
    bool ptx;
    if (!arch_word(p, n, &arch, &ptx)) {
      snprintf(err, errlen, "'%.*s' is not an architecture (sm_80, compute_80 or 80)", (int)n, p);
      return false;
    }
    if (ptx) {
      t->ptx_arch = arch;
    } else if (t->n_archs < (int)(sizeof t->archs / sizeof t->archs[0])) {
      t->archs[t->n_archs++] = arch;
    } else {
      snprintf(err, errlen, "too many architectures in '%s'", s);
      return false;
    }
    p += n + (p[n] == ',');
  }
  if (!t->n_archs && !t->ptx_arch) {
    snprintf(err, errlen, "no architecture given");
    return false;
  }
  return true;
}

#ifdef KILN_HAVE_NVRTC

#include <nvrtc.h>

bool cu_nvrtc_available(void) { return true; }

/* One compilation: its target in, its image or log out. */
typedef struct Job {
  const char *source, *name;
  int arch;
  bool ptx;  /* -arch=compute_XY: PTX only */
  bool also_ptx; /* -arch=sm_XY, and its PTX too */
  CuImage image, ptx_image;
  nvrtcResult res;
  const char *step; /* the NVRTC call that failed */
  char *log;        /* NVRTC's log on failure */
  pthread_t thread;
} Job;

static bool check(Job *j, nvrtcResult r, const char *step) {
  if (r == NVRTC_SUCCESS)
    return true;
  j->res = r;
  j->step = step;
  return false;
}

static void fetch_log(Job *j, nvrtcProgram p) {
  size_t n = 0;
  if (nvrtcGetProgramLogSize(p, &n) != NVRTC_SUCCESS || !(j->log = malloc(n + 1)))
    return;
  if (nvrtcGetProgramLog(p, j->log) != NVRTC_SUCCESS)
    j->log[0] = '\0';
  j->log[n] = '\0';
}

/* The program's PTX or CUBIN into *im. */
static void fetch(Job *j, nvrtcProgram p, bool ptx, CuImage *im) {
  size_t n = 0;
  nvrtcResult r = ptx ? nvrtcGetPTXSize(p, &n) : nvrtcGetCUBINSize(p, &n);
  if (!check(j, r, ptx ? "nvrtcGetPTXSize" : "nvrtcGetCUBINSize"))
    return;
  *im = (CuImage){j->arch, ptx, malloc(n + 1), n};
  if (!im->data)
    j->res = NVRTC_ERROR_OUT_OF_MEMORY, j->step = "allocating the image";
  else
    check(j, ptx ? nvrtcGetPTX(p, im->data) : nvrtcGetCUBIN(p, im->data),
          ptx ? "nvrtcGetPTX" : "nvrtcGetCUBIN");
}

static void *compile_job(void *ud) {
  Job *j = ud;
  char arch[48];
  snprintf(arch, sizeof arch, "--gpu-architecture=%s_%d", j->ptx ? "compute" : "sm", j->arch);
  const char *opts[] = {arch, "--std=c++17", "--fmad=false", "--ftz=false", "--prec-div=true",
                        "--prec-sqrt=true"};
  nvrtcProgram p;
  if (!check(j, nvrtcCreateProgram(&p, j->source, j->name, 0, NULL, NULL), "nvrtcCreateProgram"))
    return NULL;
  nvrtcResult r = nvrtcCompileProgram(p, (int)(sizeof opts / sizeof opts[0]), opts);
  if (!check(j, r, "nvrtcCompileProgram")) {
    fetch_log(j, p);
    nvrtcDestroyProgram(&p);
    return NULL;
  }
  fetch(j, p, j->ptx, &j->image);
  if (j->also_ptx && !j->step)
    fetch(j, p, true, &j->ptx_image);
  nvrtcDestroyProgram(&p);
  return NULL;
}

/* NVRTC's log, then the source with line numbers. */
static char *make_report(const Job *j, const char *source) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    return NULL;
  fprintf(f, "NVRTC's log (%s_%d):\n%s\n", j->ptx ? "compute" : "sm", j->arch,
          j->log && *j->log ? j->log : "(empty)\n");
  fprintf(f, "the source:\n");
  int line = 1;
  for (const char *p = source; *p; line++) {
    size_t n = strcspn(p, "\n");
    fprintf(f, "%5d  %.*s\n", line, (int)n, p);
    p += n + (p[n] == '\n');
  }
  fclose(f);
  return text;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool cu_nvrtc_compile(const char *source, const char *name, const CuTargets *t, CuImages *out,
                      char *err, size_t errlen, char **report) {
  memset(out, 0, sizeof *out);
  if (report)
    *report = NULL;
  Job jobs[9];
  int n = 0;
  for (int i = 0; i < t->n_archs && i < 8; i++)
    jobs[n++] = (Job){.source = source, .name = name, .arch = t->archs[i]};
  bool shared = false; /* the PTX from the CUBIN's compilation */
  for (int i = 0; i < n && t->ptx_arch; i++)
    if (jobs[i].arch == t->ptx_arch && !shared)
      jobs[i].also_ptx = shared = true;
  if (t->ptx_arch && !shared)
    jobs[n++] = (Job){.source = source, .name = name, .arch = t->ptx_arch, .ptx = true};
  double t0 = now_s();
  for (int i = 1; i < n; i++) /* the first on this thread */
    if (pthread_create(&jobs[i].thread, NULL, compile_job, &jobs[i]) != 0)
      compile_job(&jobs[i]), jobs[i].thread = 0;
  if (n)
    compile_job(&jobs[0]);
  for (int i = 1; i < n; i++)
    if (jobs[i].thread)
      pthread_join(jobs[i].thread, NULL);
  out->seconds = now_s() - t0;
  bool ok = true;
  for (int i = 0; i < n; i++) {
    Job *j = &jobs[i];
    if (ok && j->step) {
      snprintf(err, errlen, "NVRTC could not compile %s for %s_%d: %s: %s", name,
               j->ptx ? "compute" : "sm", j->arch, j->step, nvrtcGetErrorString(j->res));
      if (report && j->log)
        *report = make_report(j, source);
      ok = false;
    }
    if (j->step) {
      free(j->image.data);
      free(j->ptx_image.data);
    } else {
      out->images[out->n++] = j->image;
      if (j->also_ptx)
        out->images[out->n++] = j->ptx_image;
    }
    free(j->log);
  }
  if (!ok)
    cu_images_free(out);
  return ok;
}

#else /* built without the CUDA toolkit */

bool cu_nvrtc_available(void) { return false; }

bool cu_nvrtc_compile(const char *source, const char *name, const CuTargets *t, CuImages *out,
                      char *err, size_t errlen, char **report) {
  (void)source, (void)t;
  memset(out, 0, sizeof *out);
  if (report)
    *report = NULL;
  snprintf(err, errlen, "cannot compile %s to CUBIN or PTX: this kiln was built without the "
           "CUDA toolkit (NVRTC); the CUDA source itself is available (--emit cuda)", name);
  return false;
}

#endif
