/*
 * rt_cuda_prog.h: the device side of a program built by `kiln build
 * --target cuda` (runtime/rt_cuda_main.c, in libkiln_rt_cuda_main.a only).
 *
 * Such a program runs rt_main.c's inference main and rt_train.c's `train`
 * command, compiled with KILN_RT_CUDA: the same options, manifest, input
 * checks, parameters (rt_prog.c, rt_init.c), data, output and --save files
 * as a CPU program; only the steps run on CUDA device 0 instead of
 * kiln_infer and kiln_train_step.  Its object (written by
 * codegen/cuda/cuda_aot.c) defines, next to kiln_manifest and kiln_params:
 *   kiln_cuda       the device table (text: images, the prepare, inference
 *                   and (--train) training launch lists; cuda_aot.h has
 *                   the format)
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
 * the host changed them since the last one, p's inputs copied in from
 * their places in the host arena, the launches, p's outputs (and train's
 * test loss) copied back there. */
int rt_cuda_prog_infer(const RtProg *p, char *arena, void *const *ext);
/* 1 when the program has a training step (kiln build --target cuda --train). */
int rt_cuda_prog_can_train(void);
/* One training step on the device, arena the host's copy of the step's
 * arena: the parameters and optimizer state uploaded first if the host
 * changed them, then the batch, the learning rate and step number (from
 * their places in arena) and the step counter ext[0]; the launches; each
 * update copied over its parameter on the device; the loss back into
 * arena.  The host's copies of the parameters are then out of date until
 * rt_cuda_prog_download_params. */
int rt_cuda_prog_train_step(const RtProg *p, char *arena, void *const *ext);
/* The device's parameters and optimizer state into the host's (ext's
 * slots): before the host reads them (--save), and before inference, which
 * after training steps needs kiln_prepare (rt_prog_prepare) too: it
 * uploads the host's copies again and recomputes the prepared values. */
int rt_cuda_prog_download_params(const RtProg *p, void *const *ext);
void rt_cuda_prog_close(void);
/* The paragraph of --help about the device and the embedded images. */
void rt_cuda_prog_help(const RtProg *p);

#endif
