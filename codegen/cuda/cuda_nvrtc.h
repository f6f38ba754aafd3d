/*
 * cuda_nvrtc.h: CUDA source (cuda_emit.h's modules) compiled by NVRTC into
 * what the driver loads: a CUBIN per real architecture, and PTX for one
 * virtual architecture, which the driver compiles for GPUs newer than any
 * CUBIN (forward compatibility).
 *
 *   CuImages im;
 *   if (!cu_nvrtc_compile(cu_text(s), "mlp", &CU_NVRTC_DEFAULT, &im, err, n, &report)) {
 *     fputs(report, stderr);       // NVRTC's log, then the source with line numbers
 *     ...
 *   }
 *   ... im.images[i].arch, .ptx, .data, .size ...
 *   cu_images_free(&im);
 *
 * Every compilation uses the flags under which the kernels compute
 * kir_eval's bits: --fmad=false (no contraction of a * b + c), --ftz=false,
 * --prec-div=true, --prec-sqrt=true.
 *
 * NVRTC comes from the CUDA toolkit, found by CMake (find_package
 * CUDAToolkit); a kiln built without it has cu_nvrtc_available() false,
 * and cu_nvrtc_compile fails saying so.
 */
#ifndef KILN_CUDA_NVRTC_H
#define KILN_CUDA_NVRTC_H

#include <stdbool.h>
#include <stddef.h>

/* What to compile for: CUBINs for sm_XY of each arch (10 X + Y), PTX for
 * compute_XY of ptx_arch (0: none). */
typedef struct CuTargets {
  int archs[8];
  int n_archs;
  int ptx_arch;
} CuTargets;

/* sm_80 and sm_90 CUBINs, compute_80 PTX. */
extern const CuTargets CU_NVRTC_DEFAULT;

typedef struct CuImage {
  int arch;    /* 10 X + Y */
  bool ptx;    /* PTX text for compute_XY, NUL-terminated (size counts the NUL); else
                * a CUBIN for sm_XY */
  char *data;  /* malloc'ed */
  size_t size;
} CuImage;

typedef struct CuImages {
  CuImage images[9];
  int n;
  double seconds; /* wall time of the compilations */
} CuImages;

bool cu_nvrtc_available(void);

/* Parses a comma list of architectures ("sm_80,sm_90", "80,90", with
 * "compute_80" for the PTX) into t; false with a message on a bad word. */
bool cu_targets_parse(const char *s, CuTargets *t, char *err, size_t errlen);

/* Compiles source (named `name` in messages) for every target.  On
 * failure: false, one sentence in err, and in *report (when report is not
 * NULL; malloc'ed, the caller frees it) NVRTC's log followed by the source
 * with line numbers. */
bool cu_nvrtc_compile(const char *source, const char *name, const CuTargets *t, CuImages *out,
                      char *err, size_t errlen, char **report);
void cu_images_free(CuImages *im);

#endif
