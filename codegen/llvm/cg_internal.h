/*
 * cg_internal.h: what the LLVM backend's files share (not a public header).
 *
 * A Cg owns one LLVM context (inside an ORC ThreadSafeContext, so the
 * module can later move into an LLJIT without copying), one module and
 * one target machine.  Each LLVM function being emitted has an Fn: its
 * builder, the data pointer of every buffer (loaded once at entry, so no
 * store in a loop can make LLVM reload them), and an alloca per Kernel IR
 * variable (made on first use in the entry block; mem2reg turns them into
 * SSA values).  The entry block holds only allocas and buffer-pointer loads
 * and jumps to the code when the function is finished.
 *
 * Sections follow the files: cg_module.c (the Cg, target, passes, output),
 * cg_expr.c (expressions), cg_loop.c (statements, loops, parallel loops),
 * cg_kernel.c (kernel and step functions), cg_jit.c (ORC LLJIT).
 */
#ifndef KILN_CG_INTERNAL_H
#define KILN_CG_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>

#include "cg.h"

struct Cg {
  LLVMOrcThreadSafeContextRef tsc;
  LLVMContextRef ctx; /* tsc's context */
  LLVMModuleRef mod;  /* NULL once moved into a JIT */
  LLVMTargetMachineRef tm;
  char *triple, *cpu, *features; /* malloc'ed */
  int opt_level;
  bool verify;
  bool no_schedule;   /* CgOpts.no_schedule */
  bool avx512; /* the features include +avx512f: prefer 512-bit vectors */
  bool flush;  /* step functions flush subnormals (x86 and not keep_denormals) */
  LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_ptr;
  LLVMTypeRef t_kernel; /* void (ptr bufs) */
  LLVMTypeRef t_body;   /* void (ptr ctx, i64 begin, i64 end) */
  LLVMTypeRef t_step;   /* void (ptr arena, ptr ext) */
  LLVMTypeRef t_pfor;   /* void (i64 n, i64 grain, ptr fn, ptr ctx) */
  unsigned md_loop;     /* the "llvm.loop" metadata kind */
  unsigned md_group;    /* "llvm.access.group" */
  char diag[512];       /* LLVM's last error diagnostic, or "" */
};

/* One LLVM function being emitted from (part of) a kernel. */
typedef struct Fn {
  Cg *cg;
  const Kernel *k;
  LLVMValueRef fn;
  LLVMBuilderRef b;        /* the code */
  LLVMBuilderRef ab;       /* the end of the entry block: allocas */
  LLVMBasicBlockRef entry;
  LLVMValueRef bufs;       /* the pointer array the buffers came from */
  LLVMValueRef *buf;       /* per buffer: its data pointer */
  LLVMValueRef *slot;      /* per variable: its alloca, or NULL until used */
  bool in_parallel;        /* inside an outlined parallel body: loops run serially */
  LLVMMetadataRef group;   /* inside a vectorized loop: its access group, which
                            * every load and store is tagged with, or NULL */
  int depth;               /* loops around the statement being emitted */
  int *n_outlined;         /* parallel bodies made for this kernel so far */
  /* body(): the statements after the one being emitted, which a reduction
   * loop may fold into its vector accumulator (cg_loop.c, vacc_tree),
   * saying how many in `consumed` */
  KStmt *const *tail;
  int n_tail, consumed;
} Fn;

/* --- cg_module.c ---------------------------------------------------------- */
/* Copies LLVM's message (and disposes of it) or a plain text into err. */
void cg_errf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void cg_err_llvm(char *err, size_t n, const char *what, char *msg);
void cg_err_error(char *err, size_t n, const char *what, LLVMErrorRef e);
/* LLVMVerifyModule; false with the verifier's report in err. */
bool cg_verify(Cg *cg, char *err, size_t n);
/* False with a message when the module has moved into a JIT. */
bool cg_have_module(Cg *cg, char *err, size_t n);
/* A target machine for the Cg's triple, CPU and features. */
LLVMTargetMachineRef cg_target_machine(Cg *cg, char *err, size_t n);
/* Routes the context's diagnostics to cg->diag (errors; warnings and
 * remarks such as "loop not vectorized" are dropped), or, with cg NULL,
 * drops them all: for a context that outlives its Cg inside a JIT. */
void cg_diagnostics(LLVMContextRef ctx, Cg *cg);
/* A new access group (a distinct metadata node without operands) for the
 * loads and stores of one loop whose iterations are independent. */
LLVMMetadataRef cg_access_group(Cg *cg);
/* Tags a load or store with f's access group, if it has one. */
void cg_tag_access(Fn *f, LLVMValueRef inst);
/* Target CPU and features, vector width preference, nounwind. */
void cg_set_fn_attrs(Cg *cg, LLVMValueRef fn);
/* Adds the function attribute `name` (an enum attribute, value 0). */
void cg_fn_attr(Cg *cg, LLVMValueRef fn, const char *name);

/* --- cg_expr.c ---------------------------------------------------------------- */
LLVMTypeRef cg_type(Cg *cg, KType t);
LLVMValueRef cg_expr(Fn *f, const KExpr *e);
/* Binary arithmetic (add .. pow) on scalars, or on vectors for add, sub,
 * mul, div, min and max (f32 when flt), with Kernel IR's semantics. */
LLVMValueRef cg_arith(Fn *f, KOp op, bool flt, LLVMValueRef a, LLVMValueRef b);
/* Whether e loads: a select with such a branch evaluates only the branch
 * it takes (real branches), as a guarded load may be out of bounds. */
bool cg_expr_unsafe(const KExpr *e);
/* An i1 that is true when the KT_I32 value v is nonzero. */
LLVMValueRef cg_truth(Fn *f, LLVMValueRef v);
/* The alloca of variable v in f's function, made on first use. */
LLVMValueRef cg_slot(Fn *f, int v);
/* The element address bufs[buf][index]. */
LLVMValueRef cg_elem_ptr(Fn *f, int buf, LLVMValueRef index);

/* --- cg_loop.c ---------------------------------------------------------------- */
void cg_stmt(Fn *f, const KStmt *s);
/* Checks what the loop code relies on beyond kir_verify: no parallel loop
 * assigns a local declared outside it (each thread gets a copy; locals
 * declared inside a parallel loop are likewise private to each iteration
 * range and not seen after the loop).  False with a message. */
bool cg_check_parallel(const Kernel *k, char *err, size_t n);

/* A call of LLVM intrinsic `name` (llvm.fma, llvm.masked.load, ...)
 * overloaded on tys, at b's position (cg_expr.c). */
/* cg_math.c: exp, tanh and erf as the f32 sequences of ir/kmath.h. */
LLVMValueRef cg_km_exp(Fn *f, LLVMValueRef x);
LLVMValueRef cg_km_tanh(Fn *f, LLVMValueRef x);
LLVMValueRef cg_km_erf(Fn *f, LLVMValueRef x);
LLVMValueRef cg_intrinsic(Cg *cg, LLVMBuilderRef b, const char *name, LLVMTypeRef *tys,
                          int n_tys, LLVMValueRef *args, int n_args);

/* --- cg_gemm.c -------------------------------------------------------------- */
/* Emits k with the GEMM schedule when it is a matmul or convolution kernel
 * cg_gemm_ops.c can describe (and the Cg allows it); false, having emitted
 * nothing, otherwise. */
bool cg_gemm(Cg *cg, const Kernel *k);

/* --- cg_pool.c -------------------------------------------------------------- */
/* Emits k as explicit vector code when it is the gradient of a 2-wide
 * stride-2 max pooling (see cg_pool.c), unless the Cg says no_schedule;
 * false, having emitted nothing, otherwise. */
bool cg_pool(Cg *cg, const Kernel *k);

/* --- cg_kernel.c ---------------------------------------------------------- */
/* Starts a function of type ty named name: entry block, builders, slots. */
void cg_fn_begin(Fn *f, Cg *cg, const Kernel *k, const char *name, LLVMTypeRef ty,
                 LLVMLinkage linkage);
/* Loads every buffer's data pointer from the array at bufs (entry block). */
void cg_fn_load_bufs(Fn *f, LLVMValueRef bufs);
/* Returns from the current block, links entry to the code, frees builders. */
void cg_fn_end(Fn *f);

#endif
