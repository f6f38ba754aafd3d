/*
 * aot_split.c: a built module optimized and compiled on several threads.
 *
 * Most of `kiln build`'s time is LLVM's: O3 and instruction selection of
 * a few hundred kernels, one after another on one core.  The kernels are
 * independent functions (noinline; the step functions only call them), so
 * the module can be cut into parts, each optimized and compiled to its own
 * object file on its own thread, and the parts linked together: what
 * LLVM's LTO calls partitioning.
 *
 * How: the unoptimized module (kernels, steps, manifest, parameters;
 * identical kernels already merged) is written as bitcode once; each
 * thread reads it into a context of its own (LLVM contexts are not shared
 * across threads), keeps the bodies of its share of the functions and
 * turns the others into declarations, runs O3 with a target machine of its
 * own and writes its object.  A function and its helpers (K, K.ukr,
 * K.gemm, K.par0: one name before the first '.') stay together; groups go
 * to the part with the least code so far, in module order, so every thread
 * computes the same split.  Functions that were internal become hidden
 * globals so that a part can call into another; the entry points, the
 * manifest and parameter globals and the module's top-level assembly
 * (kiln_params from a file, aot.c) live in part 0.  The result is the same
 * code as the single module's, cut differently (inlining never crossed
 * kernels: they are noinline).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "aot.h"
#include "cg_internal.h"

typedef struct Part {
  const Aot *a;           /* for its entry points' names */
  Cg *cg;                 /* the whole module's: triple, cpu, features, O level */
  LLVMMemoryBufferRef bc; /* the module's bitcode, shared read-only */
  int index, parts;
  const char *path;
  bool ok;
  char err[1024];
} Part;

/* The group of a function: its name up to the first '.'. */
static size_t group_len(const char *name) { return strcspn(name, "."); }

static int64_t code_size(LLVMValueRef f) {
  int64_t n = 0;
  for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(f); b; b = LLVMGetNextBasicBlock(b))
    for (LLVMValueRef i = LLVMGetFirstInstruction(b); i; i = LLVMGetNextInstruction(i))
      n++;
  return n;
}

/* Which part each defined function goes to, in module order (parts[k] for
 * the k-th defined function). */
static int *assign(const Aot *a, LLVMModuleRef m, int parts, int *n_defined) {
  int cap = 64, n = 0;
  int *where = malloc(sizeof(int) * (size_t)cap);
  int64_t load[AOT_MAX_PARTS] = {0};
  const char *group = "";
  size_t glen = 0;
  int cur = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f))
      continue;
    size_t len;
    const char *name = LLVMGetValueName2(f, &len);
    if (!(group_len(name) == glen && strncmp(name, group, glen) == 0)) { /* a new group */
      group = name, glen = group_len(name);
      cur = 0;
      for (int p = 1; p < parts && !aot_is_entry(a, name); p++)
        cur = load[p] < load[cur] ? p : cur;
    }
    load[cur] += code_size(f);
    if (n == cap)
      where = realloc(where, sizeof(int) * (size_t)(cap *= 2));
    where[n++] = aot_is_entry(a, name) ? 0 : cur;
  }
  *n_defined = n;
  return where;
}

/* f becomes a declaration: a new function of its name and type takes its
 * uses, and f goes. */
static void drop_body(const Aot *a, LLVMModuleRef m, LLVMValueRef f) {
  size_t len;
  char *name = strdup(LLVMGetValueName2(f, &len));
  LLVMSetValueName2(f, "", 0);
  LLVMValueRef d = LLVMAddFunction(m, name, LLVMGlobalGetValueType(f));
  LLVMSetFunctionCallConv(d, LLVMGetFunctionCallConv(f));
  LLVMReplaceAllUsesWith(f, d);
  LLVMDeleteFunction(f);
  if (!aot_is_entry(a, name))
    LLVMSetVisibility(d, LLVMHiddenVisibility);
  free(name);
}

/* Keeps this part's functions (made visible to the other parts) and the
 * globals that belong to part 0 or are internal copies. */
static void cut(const Aot *a, LLVMModuleRef m, const int *where, int index) {
  LLVMValueRef *mine, *other;
  int n_other = 0, k = 0, n_fns = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f))
    n_fns++;
  other = malloc(sizeof(LLVMValueRef) * (size_t)(n_fns + 1));
  mine = malloc(sizeof(LLVMValueRef) * (size_t)(n_fns + 1));
  int n_mine = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f))
      continue;
    if (where[k++] == index)
      mine[n_mine++] = f;
    else
      other[n_other++] = f;
  }
  for (int i = 0; i < n_mine; i++) {
    LLVMLinkage l = LLVMGetLinkage(mine[i]);
    if (l == LLVMInternalLinkage || l == LLVMPrivateLinkage) {
      LLVMSetLinkage(mine[i], LLVMExternalLinkage);
      LLVMSetVisibility(mine[i], LLVMHiddenVisibility);
    }
  }
  for (int i = 0; i < n_other; i++)
    drop_body(a, m, other[i]);
  free(mine);
  free(other);
  if (index == 0)
    return;
  LLVMSetModuleInlineAsm2(m, "", 0); /* kiln_params' (aot.c): part 0's */
  for (LLVMValueRef g = LLVMGetFirstGlobal(m), next; g; g = next) {
    next = LLVMGetNextGlobal(g);
    if (LLVMGetLinkage(g) != LLVMExternalLinkage || LLVMIsDeclaration(g))
      continue; /* internal constants: each part keeps its copy (O3 drops unused ones) */
    if (!LLVMGetFirstUse(g))
      LLVMDeleteGlobal(g);
    else
      LLVMSetInitializer(g, NULL); /* a declaration: part 0 defines it */
  }
}

static bool optimize_and_emit(Part *p, LLVMModuleRef m, LLVMTargetMachineRef tm) {
  char passes[32], *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    snprintf(p->err, sizeof p->err, "part %d of the module does not verify: %s", p->index, msg);
    LLVMDisposeMessage(msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  msg = NULL;
  snprintf(passes, sizeof passes, "default<O%d>", p->cg->opt_level);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  bool vec = p->cg->opt_level >= 2;
  LLVMPassBuilderOptionsSetLoopVectorization(po, vec);
  LLVMPassBuilderOptionsSetSLPVectorization(po, vec);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, vec);
  LLVMPassBuilderOptionsSetLoopInterleaving(po, vec);
  LLVMErrorRef e = LLVMRunPasses(m, passes, tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (e) {
    cg_err_error(p->err, sizeof p->err, "LLVM passes", e);
    return false;
  }
  char *path = strdup(p->path);
  bool bad = LLVMTargetMachineEmitToFile(tm, m, path, LLVMObjectFile, &msg);
  free(path);
  if (bad) {
    cg_err_llvm(p->err, sizeof p->err, p->path, msg);
    return false;
  }
  if (msg)
    LLVMDisposeMessage(msg);
  return true;
}

static void *part_main(void *arg) {
  Part *p = arg;
  LLVMContextRef ctx = LLVMContextCreate();
  cg_diagnostics(ctx, NULL);
  LLVMModuleRef m = NULL;
  LLVMMemoryBufferRef bc = LLVMCreateMemoryBufferWithMemoryRange(
      LLVMGetBufferStart(p->bc), LLVMGetBufferSize(p->bc), "kiln.bc", 0);
  if (LLVMParseBitcodeInContext2(ctx, bc, &m)) {
    snprintf(p->err, sizeof p->err, "part %d: cannot read the module's bitcode back", p->index);
  } else {
    int n_defined;
    int *where = assign(p->a, m, p->parts, &n_defined);
    cut(p->a, m, where, p->index);
    free(where);
    LLVMTargetMachineRef tm = cg_target_machine(p->cg, p->err, sizeof p->err);
    p->ok = tm && optimize_and_emit(p, m, tm);
    if (tm)
      LLVMDisposeTargetMachine(tm);
    LLVMDisposeModule(m);
  }
  LLVMDisposeMemoryBuffer(bc);
  LLVMContextDispose(ctx);
  return NULL;
}

bool aot_write_parts(Aot *a, int parts, char *const *paths, char *err, size_t n) {
  if (parts < 1 || parts > AOT_MAX_PARTS) {
    snprintf(err, n, "aot_write_parts: %d parts (1 to %d)", parts, AOT_MAX_PARTS);
    return false;
  }
  if (!cg_verify(a->cg, err, n))
    return false;
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(a->cg->mod);
  Part ps[AOT_MAX_PARTS];
  pthread_t th[AOT_MAX_PARTS];
  bool started[AOT_MAX_PARTS] = {0};
  for (int i = 0; i < parts; i++) {
    ps[i] = (Part){.a = a, .cg = a->cg, .bc = bc, .index = i, .parts = parts, .path = paths[i]};
    started[i] = i > 0 && pthread_create(&th[i], NULL, part_main, &ps[i]) == 0;
  }
  part_main(&ps[0]);
  for (int i = 1; i < parts; i++) {
    if (started[i])
      pthread_join(th[i], NULL);
    else
      part_main(&ps[i]); /* no thread to be had: in turn */
  }
  LLVMDisposeMemoryBuffer(bc);
  for (int i = 0; i < parts; i++)
    if (!ps[i].ok) {
      snprintf(err, n, "%s", ps[i].err);
      return false;
    }
  return true;
}
