/*
 * program.h: a graph compiled for this machine and ready to run.
 *
 * program_compile plans memory (passes/memplan.c), lowers every scheduled
 * node to a kernel (ir/lower*.c), compiles the kernels and a step function
 * that calls them in the plan's order (codegen/llvm), and JIT-compiles the
 * module.  Values live at their planned offsets in one arena; parameters
 * and optimizer state are the caller's buffers (bound by name, extern
 * slots 1..); extern slot 0 is the step counter dropout reads.
 * Weight-derived values (passes/prepack.c) live in a block of the
 * program's own (extern slots after the parameters'); a prepare step
 * computes them from the parameters, before the first run after any
 * program_bind_param, or when program_prepare is called.
 *
 *   Program p;
 *   program_compile(&p, g, roots, n, &plan_opts, &cg_opts, err, sizeof err);
 *   program_bind_param(&p, param, data);        // each parameter
 *   memcpy(program_value(&p, input), ...);      // each input
 *   program_run(&p, step);                      // prepares first if a param was bound
 *   ... change a parameter's values in place ...
 *   program_prepare(&p);                        // recompute what derives from them
 *   ... program_value(&p, output) ...
 *   program_apply_updates(&p);                  // training steps
 *   program_free(&p);
 */
#ifndef KILN_PROGRAM_H
#define KILN_PROGRAM_H

#include "cg.h"
#include "passes.h"

typedef struct Program {
  Graph *g;
  Plan plan;
  Node **params;  /* extern slot 1 + i */
  int n_params;
  Node **derived; /* weight-derived values: extern slot 1 + n_params + i */
  int n_derived;
  char *prepared; /* their block (persistent, like the parameters) */
  CgStepFn prepare; /* computes them; NULL when there are none */
  bool stale;     /* a parameter was bound since they were computed */
  bool keep_denormals; /* CgOpts.keep_denormals: the step keeps the caller's FP mode */
  int n_kernels;
  Cg *cg;
  CgJit *jit;
  CgStepFn step;
  char *arena;    /* plan.arena bytes, 64-byte aligned, zeroed */
  void **ext;     /* [0] = &step_counter, [1 + i] = params[i]'s buffer */
  int64_t step_counter;
  double compile_seconds;
  bool out_of_memory; /* program_compile failed allocating (the model's size: the
                       * user's to fix, not a compiler bug) */
} Program;

/* False, err saying why, on failure; p then holds nothing to free (but
 * out_of_memory). */
bool program_compile(Program *p, Graph *g, Node *const *roots, int n_roots, const PlanOpts *po,
                     const CgOpts *co, char *err, size_t errlen);
/* Binds a parameter's buffer; the next program_run prepares first. */
void program_bind_param(Program *p, const Node *param, void *data);
/* Computes the weight-derived values from the parameters' current values:
 * call after writing parameters in place (binding a buffer does it for
 * the next run by itself). */
void program_prepare(Program *p);
/* Where node n's value lives: in the arena (inputs, outputs, anything the
 * plan placed), the bound buffer of a parameter or a weight-derived
 * value's; NULL if none. */
void *program_value(Program *p, const Node *n);
void program_run(Program *p, int64_t step);
/* Copies each update's value into its parameter (after program_run). */
void program_apply_updates(Program *p);
void program_free(Program *p);

/* The parameters and weight-derived values plan schedules, in schedule
 * order, and per node id their ext slot (1.. the parameters, then the
 * derived values; 0 for others): the numbering program_calls and the CUDA
 * program (codegen/cuda/cuda_program.c) share. */
int *program_persistent_slots(Graph *g, const Plan *plan, Node ***params, int *n_params,
                              Node ***derived, int *n_derived);

/* The kernel calls that compute a planned graph, in the plan's order: what
 * program_compile compiles, and what codegen/aot.c compiles ahead of time.
 * slot[node id] is a parameter's extern slot (>= 1), 0 for other nodes;
 * calls needs room for plan->n_order entries.  Kernels are named
 * "<op>_<node id>" (unique within one graph).  False with a message when
 * a buffer has no place.  Weight-derived nodes are not among them:
 * program_prepare_calls gives theirs (every buffer an extern slot, so the
 * prepare step reads no arena), in the same way. */
bool program_calls(Graph *g, const Plan *plan, const int *slot, CgCall *calls, int *n_calls,
                   char *err, size_t errlen);
/* The kernel that runs at scheduled node v's step: a constant's store,
 * v's own kernel, its fused group's (passes/fuse.c) at the group's first
 * step, or NULL (a later stored value of a group, an input, a reshape
 * planned over its input's bytes: nothing to do). */
Kernel *program_kernel_at(Arena *a, const Plan *plan, const Node *v);
bool program_prepare_calls(Graph *g, const Plan *plan, const int *slot, CgCall *calls,
                           int *n_calls, char *err, size_t errlen);

#endif
