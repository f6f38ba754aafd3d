/*
 * cg_module.c: the Cg itself: context, module and target machine, the
 * pass pipeline, and textual/object output.
 *
 * The target is always the host's triple; the CPU and feature string are
 * the host's unless CgOpts names others, and they are written on every
 * function as "target-cpu"/"target-features" so the IR carries them into
 * whatever compiles it later (the JIT, an object file, llc).  With AVX-512
 * the functions also ask for 512-bit vectors ("prefer-vector-width"=512):
 * LLVM's x86 tuning otherwise stays at 256 bits on many AVX-512 CPUs.
 * And no gathers or scatters ("+prefer-no-gather,+prefer-no-scatter"):
 * LLVM takes them as cheap on every AVX-512 CPU, and vectorized max
 * pooling's stride-2 taps as four 16-lane gathers per row of windows; on
 * this project's machine (AMD EPYC, znver5) that kernel took 5.3 ms where
 * the wide loads and shuffles LLVM uses without gathers take 1.1 ms (VGG's
 * first pooling at batch 64).  No other kernel of the models measured
 * more than noise apart (bench/kprof.sh, docs/benchmarks.md).
 *
 * Every path out of the module (cg_optimize, cg_emit_file, cg_jit) runs
 * LLVMVerifyModule first and returns LLVM's report on failure (style rule
 * 11); CgOpts.verify adds a check after each function.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "cg_internal.h"

/* --- errors ------------------------------------------------------------------- */

void cg_errf(char *err, size_t n, const char *fmt, ...) {
  if (!err || !n)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, n, fmt, ap);
  va_end(ap);
}

void cg_err_llvm(char *err, size_t n, const char *what, char *msg) {
  cg_errf(err, n, "%s: %s", what, msg ? msg : "(no message)");
  if (msg)
    LLVMDisposeMessage(msg);
}

void cg_err_error(char *err, size_t n, const char *what, LLVMErrorRef e) {
  char *msg = LLVMGetErrorMessage(e);
  cg_errf(err, n, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
}

static void on_diagnostic(LLVMDiagnosticInfoRef d, void *ud) {
  Cg *cg = ud;
  if (!cg || LLVMGetDiagInfoSeverity(d) != LLVMDSError)
    return;
  char *s = LLVMGetDiagInfoDescription(d);
  snprintf(cg->diag, sizeof cg->diag, "%s", s);
  LLVMDisposeMessage(s);
}

void cg_diagnostics(LLVMContextRef ctx, Cg *cg) {
  LLVMContextSetDiagnosticHandler(ctx, on_diagnostic, cg);
}

bool cg_have_module(Cg *cg, char *err, size_t n) {
  if (cg->mod)
    return true;
  cg_errf(err, n, "codegen: the module has already moved into a JIT");
  return false;
}

bool cg_verify(Cg *cg, char *err, size_t n) {
  char *msg = NULL;
  if (!LLVMVerifyModule(cg->mod, LLVMReturnStatusAction, &msg)) {
    LLVMDisposeMessage(msg);
    return true;
  }
  cg_err_llvm(err, n, "LLVM verifier", msg);
  return false;
}

/* --- target ----------------------------------------------------------------- */

static char *dup_or(const char *s, char *(*host)(void)) {
  if (s)
    return strdup(s);
  char *h = host();
  char *r = strdup(h);
  LLVMDisposeMessage(h);
  return r;
}

LLVMTargetMachineRef cg_target_machine(Cg *cg, char *err, size_t n) {
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(cg->triple, &target, &msg)) {
    cg_err_llvm(err, n, "LLVM target", msg);
    return NULL;
  }
  static const LLVMCodeGenOptLevel levels[] = {LLVMCodeGenLevelNone, LLVMCodeGenLevelLess,
                                               LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive};
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, cg->triple, cg->cpu, cg->features,
                                                    levels[cg->opt_level], LLVMRelocPIC,
                                                    LLVMCodeModelDefault);
  if (!tm)
    cg_errf(err, n, "LLVM: no target machine for %s (cpu %s)", cg->triple, cg->cpu);
  return tm;
}

static void fn_attr(Cg *cg, LLVMValueRef fn, const char *k, const char *v) {
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(cg->ctx, k, (unsigned)strlen(k), v,
                                                    (unsigned)strlen(v)));
}

void cg_set_fn_attrs(Cg *cg, LLVMValueRef fn) {
  fn_attr(cg, fn, "target-cpu", cg->cpu);
  fn_attr(cg, fn, "target-features", cg->features);
  if (cg->avx512) {
    fn_attr(cg, fn, "prefer-vector-width", "512");
    fn_attr(cg, fn, "min-legal-vector-width", "512");
  }
  cg_fn_attr(cg, fn, "nounwind");
}

/* The C API makes uniqued metadata nodes only, and an access group must be
 * distinct: so a two-line module that has one is parsed into the context,
 * and its node kept (nodes belong to the context; the module is thrown
 * away). */
LLVMMetadataRef cg_access_group(Cg *cg) {
  static const char ir[] = "define void @g() {\n  ret void, !kiln.group !0\n}\n"
                           "!0 = distinct !{}\n";
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(ir, sizeof ir - 1, "group");
  LLVMModuleRef m;
  char *msg = NULL;
  if (LLVMParseIRInContext(cg->ctx, mb, &m, &msg)) /* takes mb */
    die("codegen: parsing an access group: %s", msg ? msg : "?");
  LLVMValueRef ret = LLVMGetFirstInstruction(LLVMGetFirstBasicBlock(LLVMGetNamedFunction(m, "g")));
  LLVMValueRef md = LLVMGetMetadata(ret, LLVMGetMDKindIDInContext(cg->ctx, "kiln.group", 10));
  LLVMMetadataRef node = LLVMValueAsMetadata(md);
  LLVMDisposeModule(m);
  return node;
}

void cg_tag_access(Fn *f, LLVMValueRef inst) {
  if (f->group)
    LLVMSetMetadata(inst, f->cg->md_group, LLVMMetadataAsValue(f->cg->ctx, f->group));
}

void cg_fn_attr(Cg *cg, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  ASSERT(kind != 0);
  LLVMAttributeRef a = LLVMCreateEnumAttribute(cg->ctx, kind, 0);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a);
}

static void init_types(Cg *cg) {
  LLVMContextRef c = cg->ctx;
  cg->t_void = LLVMVoidTypeInContext(c);
  cg->t_i1 = LLVMInt1TypeInContext(c);
  cg->t_i8 = LLVMInt8TypeInContext(c);
  cg->t_i32 = LLVMInt32TypeInContext(c);
  cg->t_i64 = LLVMInt64TypeInContext(c);
  cg->t_f32 = LLVMFloatTypeInContext(c);
  cg->t_ptr = LLVMPointerTypeInContext(c, 0);
  LLVMTypeRef body[] = {cg->t_ptr, cg->t_i64, cg->t_i64};
  LLVMTypeRef step[] = {cg->t_ptr, cg->t_ptr};
  LLVMTypeRef pfor[] = {cg->t_i64, cg->t_i64, cg->t_ptr, cg->t_ptr};
  cg->t_kernel = LLVMFunctionType(cg->t_void, &cg->t_ptr, 1, 0);
  cg->t_body = LLVMFunctionType(cg->t_void, body, 3, 0);
  cg->t_step = LLVMFunctionType(cg->t_void, step, 2, 0);
  cg->t_pfor = LLVMFunctionType(cg->t_void, pfor, 4, 0);
  cg->md_loop = LLVMGetMDKindIDInContext(c, "llvm.loop", 9);
  cg->md_group = LLVMGetMDKindIDInContext(c, "llvm.access.group", 17);
}

/* --- the Cg --------------------------------------------------------------- */

Cg *cg_new(const char *module, const CgOpts *o, char *err, size_t n) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter() ||
      LLVMInitializeNativeAsmParser()) {
    cg_errf(err, n, "LLVM: the host target is not available in this LLVM");
    return NULL;
  }
  Cg *cg = calloc(1, sizeof *cg);
  if (!cg) {
    cg_errf(err, n, "codegen: out of memory");
    return NULL;
  }
  cg->opt_level = o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
  cg->verify = o->verify;
  cg->no_schedule = o->no_schedule;
  char *t = LLVMGetDefaultTargetTriple();
  cg->triple = strdup(t);
  LLVMDisposeMessage(t);
  cg->cpu = dup_or(o->cpu, LLVMGetHostCPUName);
  cg->features = dup_or(o->features, LLVMGetHostCPUFeatures);
  cg->avx512 = strstr(cg->features, "+avx512f") != NULL;
  cg->flush = !o->keep_denormals && !strncmp(cg->triple, "x86_64", 6);
  if (cg->avx512) { /* no gathers: see the header */
    static const char nog[] = ",+prefer-no-gather,+prefer-no-scatter";
    size_t len = strlen(cg->features);
    char *f = malloc(len + sizeof nog);
    if (!f) {
      cg_errf(err, n, "codegen: out of memory");
      cg_free(cg);
      return NULL;
    }
    memcpy(f, cg->features, len);
    memcpy(f + len, nog, sizeof nog);
    free(cg->features);
    cg->features = f;
  }
  cg->tsc = LLVMOrcCreateNewThreadSafeContext();
  cg->ctx = LLVMOrcThreadSafeContextGetContext(cg->tsc);
  cg_diagnostics(cg->ctx, cg);
  cg->mod = LLVMModuleCreateWithNameInContext(module, cg->ctx);
  init_types(cg);
  cg->tm = cg_target_machine(cg, err, n);
  if (!cg->tm) {
    cg_free(cg);
    return NULL;
  }
  LLVMSetTarget(cg->mod, cg->triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(cg->tm);
  LLVMSetModuleDataLayout(cg->mod, td);
  LLVMDisposeTargetData(td);
  return cg;
}

void cg_free(Cg *cg) {
  if (!cg)
    return;
  if (cg->mod)
    LLVMDisposeModule(cg->mod);
  if (cg->tm)
    LLVMDisposeTargetMachine(cg->tm);
  if (cg->tsc)
    LLVMOrcDisposeThreadSafeContext(cg->tsc);
  free(cg->triple);
  free(cg->cpu);
  free(cg->features);
  free(cg);
}

/* --- passes and output ------------------------------------------------------ */

bool cg_optimize(Cg *cg, char *err, size_t n) {
  if (!cg_have_module(cg, err, n) || !cg_verify(cg, err, n))
    return false;
  char passes[32];
  snprintf(passes, sizeof passes, "default<O%d>", cg->opt_level);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, cg->opt_level >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(po, cg->opt_level >= 2);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, cg->opt_level >= 2);
  LLVMPassBuilderOptionsSetLoopInterleaving(po, cg->opt_level >= 2);
  LLVMErrorRef e = LLVMRunPasses(cg->mod, passes, cg->tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (e) {
    cg_err_error(err, n, "LLVM passes", e);
    return false;
  }
  return true;
}

char *cg_print_ir(Cg *cg) {
  if (!cg->mod)
    return NULL;
  char *s = LLVMPrintModuleToString(cg->mod);
  char *r = strdup(s);
  LLVMDisposeMessage(s);
  return r;
}

bool cg_emit_file(Cg *cg, const char *path, bool assembly, char *err, size_t n) {
  if (!cg_have_module(cg, err, n) || !cg_verify(cg, err, n))
    return false;
  char *p = strdup(path), *msg = NULL;
  LLVMBool bad = LLVMTargetMachineEmitToFile(cg->tm, cg->mod, p,
                                             assembly ? LLVMAssemblyFile : LLVMObjectFile, &msg);
  free(p);
  if (bad) {
    char what[800];
    snprintf(what, sizeof what, "%s%s%s", path, cg->diag[0] ? ": " : "", cg->diag);
    cg_err_llvm(err, n, what, msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  return true;
}
