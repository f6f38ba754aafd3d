/*
 * cg.h: the LLVM backend, Kernel IR (ir/kir.h) to machine code through the
 * LLVM C API, for the host CPU.
 *
 * One Cg is one LLVM module being built for one target machine:
 *
 *   Cg *cg = cg_new("mlp", &(CgOpts){.opt_level = 3, .verify = true}, err, n);
 *   cg_kernel(cg, k1, err, n);                  // void k1(void *const *bufs)
 *   cg_kernel(cg, k2, err, n);
 *   cg_step(cg, "step", calls, 2, err, n);      // void step(char *arena, void *const *ext)
 *   cg_optimize(cg, err, n);                    // verify, then default<O3>
 *   CgJit *j = cg_jit(cg, err, n);              // the module moves into the JIT
 *   CgStepFn step = cg_jit_step(j, "step");
 *   step(arena, ext);
 *   cg_jit_free(j);
 *   cg_free(cg);
 *
 * Kernel functions take one argument, the array of their buffers' data
 * pointers in k->bufs order (f32 buffers hold float, i32 int32_t, and the
 * KT_IDX step counter int64_t).  A kernel may be called with the same
 * pointer for an input and its output (in-place planning): codegen never
 * marks buffer pointers noalias; vector loops are declared free of
 * cross-iteration dependences instead (see below), which in-place
 * elementwise kernels are.
 *
 * Semantics are the KIR interpreter's (ir/kir_eval.c), bit for bit:
 * f32 arithmetic in IEEE single precision without fast-math (no
 * reassociation, no contraction), so sums round exactly as there; min/max
 * as b < a ? b : a and a < b ? b : a; f32 -> integer casts truncate,
 * saturate, and give 0 for NaN; integer arithmetic wraps, and x / 0 is 0;
 * floordiv/mod round toward -inf; the transcendental functions are the
 * same libm calls (expf, tanhf, ...).  cg_expr.c has the table.  A select
 * evaluates only the branch it takes, so a guarded load never faults.
 *
 * KL_PARALLEL loops, and outermost KL_VECTOR loops, become calls to
 * rt_parallel_for (runtime/rt_pool.h) with the loop body outlined into a
 * function; a loop with too little work, or inside a parallel body, runs
 * serially.  Innermost KL_VECTOR and KL_PARALLEL loops carry
 * llvm.loop.vectorize.enable and llvm.loop.parallel_accesses (their
 * iterations are independent, in place too); KL_REDUCE loops keep their
 * order.
 *
 * Leaves have no kernels: the caller provides inputs and parameters, and
 * should lower constants with lower_full at their place in the schedule
 * (a planned arena may reuse their bytes before and after).
 *
 * Errors: functions returning bool or a pointer write one sentence into
 * err (n bytes, always terminated) on failure, including LLVM's own
 * message (a verifier or pass-pipeline report) where there is one.
 */
#ifndef KILN_CG_H
#define KILN_CG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kir.h"

/* The target is always the host's triple.  With "+avx512f" among the
 * features, functions prefer 512-bit vectors ("prefer-vector-width" and
 * "min-legal-vector-width" 512; LLVM's x86 tuning otherwise stays at 256). */
typedef struct CgOpts {
  int opt_level;        /* 0..3: the pass pipeline (default<On>) and codegen level */
  const char *cpu;      /* NULL: the host's (LLVMGetHostCPUName) */
  const char *features; /* NULL: the host's (LLVMGetHostCPUFeatures) */
  bool verify;          /* also verify the module after each cg_kernel/cg_step */
  bool no_schedule;     /* matmul and convolutions as their plain loop nests too,
                         * not cg_gemm.c's schedule (for comparisons) */
  bool keep_denormals;  /* step functions keep the caller's floating-point mode;
                         * by default they flush subnormals to zero (x86: FTZ
                         * and DAZ, cg_kernel.c) */
} CgOpts;

typedef struct Cg Cg;
typedef struct CgJit CgJit;

/* A module named `module` for the host triple and the given CPU; NULL with
 * a message when LLVM has no target for the host or rejects the CPU.  A Cg
 * belongs to one thread at a time; Cgs are independent (one LLVM context
 * each), but make the first one before using several threads (it
 * registers LLVM's native target). */
Cg *cg_new(const char *module, const CgOpts *o, char *err, size_t n);
void cg_free(Cg *cg); /* NULL is fine; a JIT made from it stays valid */

/* Emits `void NAME(void *const *bufs)` for k (NAME = k->name; noinline, so
 * step functions stay small), plus internal functions NAME.par0, ... for
 * outlined parallel loops.  The kernel of a matmul, conv2d,
 * conv_transpose2d or conv2d_back_w node, in the layout its lowering
 * (ir/lower_nn.c) gives it, is compiled from the node instead, with a GEMM
 * schedule (cg_gemm.c: NAME.gemm, NAME.ukr; NAME.gemm_direct instead of
 * NAME.gemm when B is read in place, without a packed panel) that writes
 * the same bits as
 * its Kernel IR; a kernel that only names such a node as its provenance
 * (a fused kernel, say) must have another buffer layout, or it would be
 * taken for the node's own.  False if k does not pass kir_verify, a name is
 * taken, a parallel loop assigns a local declared outside it, or the
 * module has already moved into a JIT. */
bool cg_kernel(Cg *cg, const Kernel *k, char *err, size_t n);

/* Where a step function finds one buffer of a kernel call. */
typedef enum CgBase {
  CG_ARENA,  /* at = byte offset into the arena */
  CG_EXTERN, /* at = index into the ext pointer array */
} CgBase;

typedef struct CgRef {
  CgBase base;
  int64_t at;
} CgRef;

typedef struct CgCall {
  const Kernel *k;
  const CgRef *refs; /* refs[i] locates k->bufs[i] (the step counter too) */
} CgCall;

/* Emits `void NAME(char *arena, void *const *ext)` calling calls[0..n_calls)
 * in order, each with its buffers' pointers.  Kernels not yet in the module
 * are emitted first (cg_kernel); a kernel may be called several times. */
bool cg_step(Cg *cg, const char *name, const CgCall *calls, int n_calls, char *err, size_t n);

/* LLVMVerifyModule (its report on failure), then LLVMRunPasses with
 * "default<O0>".."default<O3>" per opt_level and the target machine. */
bool cg_optimize(Cg *cg, char *err, size_t n);

/* The module as textual LLVM IR, malloc'ed (the caller frees it); NULL
 * once the module has moved into a JIT. */
char *cg_print_ir(Cg *cg);

/* Writes an object file (assembly when `assembly`) for the target machine;
 * the module is verified first and stays usable. */
bool cg_emit_file(Cg *cg, const char *path, bool assembly, char *err, size_t n);

/* An LLJIT for the target machine, holding the module (verified first).
 * The module moves in: afterwards cg_kernel, cg_step, cg_optimize and
 * cg_emit_file on cg fail, and only cg_free is useful.  The runtime and
 * libm functions generated code calls are bound to this process's copies;
 * anything else resolves through the process's dynamic symbols.  Code is
 * compiled at the first lookup. */
CgJit *cg_jit(Cg *cg, char *err, size_t n);
/* A function's address, compiling the module on first use; NULL if absent
 * (the reason is then cg_jit_error's text). */
void *cg_jit_lookup(CgJit *j, const char *name);
/* The same, typed as a kernel or a step function. */
typedef void (*CgKernelFn)(void *const *bufs);
typedef void (*CgStepFn)(char *arena, void *const *ext);
CgKernelFn cg_jit_kernel(CgJit *j, const char *name);
CgStepFn cg_jit_step(CgJit *j, const char *name);
const char *cg_jit_error(const CgJit *j); /* the last lookup failure, or "" */
void cg_jit_free(CgJit *j); /* NULL is fine */

#endif
