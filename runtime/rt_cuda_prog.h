/*
 * rt_cuda_prog.h: the device side of a program built by `kiln build
 * --target cuda` (runtime/rt_cuda_main.c, in libkiln_rt_cuda_main.a only).
 *
 * Such a program runs rt_main.c's inference main, compiled with
 * KILN_RT_CUDA: the same options, manifest, input checks, parameters
 * (rt_prog.c, rt_init.c) and output files as a CPU program; only the step
 * runs on CUDA device 0 instead of kiln_infer.  Its object (written by
 * codegen/cuda/cuda_aot.c) defines, next to kiln_manifest and kiln_params:
 *   kiln_cuda       the device table (text: images, the prepare and
 *                   inference launch lists; cuda_aot.h has the format)
 *   kiln_cuda_blob  the images: a CUBIN per sm_XY, PTX, the CUDA source
 * kiln_prepare, which rt_prog.c calls whenever the parameters change, is
 * defined here: the parameters are uploaded and the prepare step launched
 * on the device before the next inference.
 *
 * Every function reports its error as "PROG: error: ..." (rt_prog_error)
 * and returns RP_USER; RP_OK otherwise.
 */
#ifndef KILN_RT_CUDA_PROG_H
#define KILN_RT_CUDA_PROG_H

#include "rt_prog.h"

extern const char kiln_cuda[];
extern const unsigned char kiln_cuda_blob[];

/* Opens device 0 ("no CUDA device found (REASON)" without one), loads the
 * image that fits it (a CUBIN of its sm_XY, else the PTX; the CUDA source
 * under KILN_CUDA_IMAGE=source, for the tests' fake driver) and allocates
 * the arena, the step counter, the parameters and the prepared values. */
int rt_cuda_prog_open(const RtProg *p);
/* One inference on the device: the parameters uploaded (and prepared) if
 * they changed since the last one, p's inputs copied in from their places
 * in the host arena, the launches, p's outputs copied back there. */
int rt_cuda_prog_infer(const RtProg *p, char *arena, void *const *ext);
void rt_cuda_prog_close(void);
/* The paragraph of --help about the device and the embedded images. */
void rt_cuda_prog_help(const RtProg *p);

#endif
