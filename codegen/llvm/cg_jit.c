/*
 * cg_jit.c: running a Cg's module in this process with ORC's LLJIT.
 *
 * The JIT gets its own target machine built like the Cg's (same triple,
 * CPU, features and codegen level), so JIT-compiled code is what
 * cg_emit_file would write.  Symbols the generated code calls are bound
 * in two ways:
 *
 *   absolute   rt_parallel_for and the libm/libc functions LLVM lowers
 *              intrinsics and idioms to (expf, tanhf, memset, ...) are
 *              defined at their addresses in this process: taking the
 *              address links them into the executable, so they exist
 *              even where libm would be dropped as unneeded, and a static
 *              runtime (not exported to the dynamic symbol table) works.
 *   process    anything else is looked up among the process's dynamic
 *              symbols (DynamicLibrarySearchGenerator), e.g. a libm
 *              function LLVM chose that the table lacks.
 *
 * The module is compiled as a whole at the first lookup.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/LLJIT.h>

#include "cg_internal.h"
#include "rt_pool.h"

struct CgJit {
  LLVMOrcLLJITRef jit;
  char err[1024];
};

typedef struct AbsSym {
  const char *name;
  uintptr_t addr;
} AbsSym;

/* The functions generated code may call, with their addresses here. */
static int runtime_symbols(AbsSym *s) {
  int n = 0;
#define SYM(f) s[n++] = (AbsSym){#f, (uintptr_t)f}
  SYM(rt_parallel_for);
  SYM(expf); SYM(exp2f); SYM(logf); SYM(log2f); SYM(log10f); SYM(powf); SYM(sqrtf);
  SYM(sinf); SYM(cosf); SYM(tanhf); SYM(erff); SYM(log1pf); SYM(expm1f); SYM(floorf);
  SYM(ceilf); SYM(fabsf); SYM(fmaf); SYM(ldexpf);
  SYM(memcpy); SYM(memmove); SYM(memset);
#undef SYM
  return n;
}

static bool define_runtime(CgJit *j, char *err, size_t n) {
  AbsSym syms[32];
  int ns = runtime_symbols(syms);
  LLVMOrcCSymbolMapPair pairs[32];
  LLVMJITSymbolFlags flags = {
      LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0};
  for (int i = 0; i < ns; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->jit, syms[i].name);
    pairs[i].Sym = (LLVMJITEvaluatedSymbol){syms[i].addr, flags};
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)ns);
  LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(j->jit), mu);
  if (e) {
    LLVMOrcDisposeMaterializationUnit(mu);
    cg_err_error(err, n, "LLVM JIT: defining runtime symbols", e);
    return false;
  }
  return true;
}

static bool add_process_symbols(CgJit *j, char *err, size_t n) {
  LLVMOrcDefinitionGeneratorRef gen;
  LLVMErrorRef e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (e) {
    cg_err_error(err, n, "LLVM JIT: process symbols", e);
    return false;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  return true;
}

static CgJit *new_jit(Cg *cg, char *err, size_t n) {
  LLVMTargetMachineRef tm = cg_target_machine(cg, err, n);
  if (!tm)
    return NULL;
  LLVMOrcLLJITBuilderRef b = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      b, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm)); /* takes tm */
  CgJit *j = calloc(1, sizeof *j);
  ASSERT(j);
  LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, b); /* takes b */
  if (e) {
    cg_err_error(err, n, "LLVM JIT", e);
    free(j);
    return NULL;
  }
  if (!define_runtime(j, err, n) || !add_process_symbols(j, err, n)) {
    cg_jit_free(j);
    return NULL;
  }
  return j;
}

CgJit *cg_jit(Cg *cg, char *err, size_t n) {
  if (!cg_have_module(cg, err, n) || !cg_verify(cg, err, n))
    return NULL;
  CgJit *j = new_jit(cg, err, n);
  if (!j)
    return NULL;
  cg_diagnostics(cg->ctx, NULL); /* the context may outlive cg in the JIT */
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(cg->mod, cg->tsc);
  cg->mod = NULL; /* the JIT owns it now, even if adding fails */
  LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
  if (e) {
    cg_err_error(err, n, "LLVM JIT: adding the module", e);
    cg_jit_free(j);
    return NULL;
  }
  return j;
}

void *cg_jit_lookup(CgJit *j, const char *name) {
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, name);
  if (e) {
    cg_err_error(j->err, sizeof j->err, name, e);
    return NULL;
  }
  j->err[0] = 0;
  return (void *)(uintptr_t)addr;
}

CgKernelFn cg_jit_kernel(CgJit *j, const char *name) {
  void *p = cg_jit_lookup(j, name);
  return p ? (CgKernelFn)(uintptr_t)p : NULL;
}

CgStepFn cg_jit_step(CgJit *j, const char *name) {
  void *p = cg_jit_lookup(j, name);
  return p ? (CgStepFn)(uintptr_t)p : NULL;
}

const char *cg_jit_error(const CgJit *j) { return j->err; }

void cg_jit_free(CgJit *j) {
  if (!j)
    return;
  LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
  if (e)
    LLVMConsumeError(e);
  free(j);
}
