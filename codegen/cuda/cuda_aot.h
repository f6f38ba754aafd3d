/*
 * cuda_aot.h: the device part of a program built by `kiln build --target
 * cuda` (--emit exe).
 *
 * A CUDA program is a CPU program's main (runtime/rt_main.c, compiled for
 * the device into libkiln_rt_cuda_main.a with runtime/rt_cuda_main.c) and
 * the data it runs: the manifest a CPU program reads (codegen/aot.c's, the
 * same plan, parameter slots and initializers), the parameters (or one byte
 * when the program draws them), and, in place of the CPU's step functions,
 * the kernels as device images with the launch lists of the inference step,
 * the prepare step and, in a --train build, the training step.  aot.c's
 * calls (a->prep_calls, a->infer.calls, a->train.calls, the manifest's
 * slots and offsets) become one CUDA module (cuda_program.h's
 * cu_step), compiled by NVRTC into a CUBIN per sm_XY of the targets and
 * PTX for the virtual architecture; the module's source is embedded as
 * well, for KILN_CUDA_IMAGE=source (tests/fake_cuda.c, which cannot load a
 * CUBIN).
 *
 * The program's symbols (an assembly file whose .incbin pulls in files
 * written next to it; the system C compiler assembles and links it):
 *   kiln_manifest    the JSON manifest, NUL-terminated (aot.h)
 *   kiln_params      the initial parameters (one byte if drawn at start)
 *   kiln_cuda        the device table, text, NUL-terminated:
 *                      kiln-cuda 1
 *                      image KIND ARCH OFFSET SIZE   (KIND cubin|ptx|source; a
 *                                                    range of kiln_cuda_blob)
 *                      step prepare|infer|train N    (then N launches:)
 *                      launch FN THREADS BLOCK NARGS [aOFFSET|eSLOT]...
 *                      end
 *   kiln_cuda_blob   the images, each 64-byte aligned (PTX and source
 *                    NUL-terminated)
 *
 *   CuAot ca;
 *   if (!cu_aot_compile(&ca, &aot, &targets, err, n, &report)) ...
 *   cu_aot_write_asm(&ca, &aot, "prog.tmp.123", err, n);  // prog.tmp.123.s and its files
 *   ... cc prog.tmp.123.s libkiln_rt_cuda_main.a ...
 *   cu_aot_free(&ca);                                    // removes the files
 */
#ifndef KILN_CUDA_AOT_H
#define KILN_CUDA_AOT_H

#include "aot.h"
#include "cuda_emit.h"
#include "cuda_nvrtc.h"
#include "rt_cuda.h"

typedef struct CuAot {
  CuSrc *src;
  RtCuLaunch *prep, *infer, *train;
  int n_prep, n_infer, n_train; /* launches (train: a --train build's) */
  CuImages im;         /* NVRTC's */
  double nvrtc_seconds;
  char *asm_path;      /* cu_aot_write_asm's, malloc'ed */
  char *files[4];      /* the files it wrote (removed by cu_aot_free) */
  int n_files;
} CuAot;

/* a's prepare, inference and training calls (aot_compile made them; the
 * training step's when a->has_train) as one CUDA
 * module, compiled for t.  False with one sentence in err; *report (when
 * not NULL, malloc'ed) then holds NVRTC's log and the numbered source. */
bool cu_aot_compile(CuAot *ca, Aot *a, const CuTargets *t, char *err, size_t errlen,
                    char **report);
/* Writes base.s defining the program's symbols (above) and the files its
 * .incbin lines name (base.manifest, base.params, base.cuda, base.blob;
 * a->params_file instead of base.params when aot_params_to_file wrote
 * one).  ca->asm_path is base.s.  False with a message. */
bool cu_aot_write_asm(CuAot *ca, const Aot *a, const char *base, char *err, size_t errlen);
/* "sm_80, sm_90 CUBINs and compute_80 PTX": what the program embeds. */
void cu_aot_describe(const CuAot *ca, char *buf, size_t n);
/* Frees ca and removes the files cu_aot_write_asm wrote. */
void cu_aot_free(CuAot *ca);

#endif
