/*
 * program.h: a graph compiled for this machine and ready to run.
 *
 * program_compile plans memory (passes/memplan.c), lowers every scheduled
 * node to a kernel (ir/lower*.c), compiles the kernels and a step function
 * that calls them in the plan's order (codegen/llvm), and JIT-compiles the
 * module.  Values live at their planned offsets in one arena; parameters
 * and optimizer state are the caller's buffers (bound by name, extern
 * slots 1..); extern slot 0 is the step counter dropout reads.
 *
 *   Program p;
 *   program_compile(&p, g, roots, n, &plan_opts, &cg_opts, err, sizeof err);
 *   program_bind_param(&p, param, data);        // each parameter
 *   memcpy(program_value(&p, input), ...);      // each input
 *   program_run(&p, step);
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
  int n_kernels;
  Cg *cg;
  CgJit *jit;
  CgStepFn step;
  char *arena;    /* plan.arena bytes, 64-byte aligned, zeroed */
  void **ext;     /* [0] = &step_counter, [1 + i] = params[i]'s buffer */
  int64_t step_counter;
  double compile_seconds;
} Program;

bool program_compile(Program *p, Graph *g, Node *const *roots, int n_roots, const PlanOpts *po,
                     const CgOpts *co, char *err, size_t errlen);
void program_bind_param(Program *p, const Node *param, void *data);
/* Where node n's value lives: in the arena (inputs, outputs, anything the
 * plan placed) or the bound buffer of a parameter; NULL if neither. */
void *program_value(Program *p, const Node *n);
void program_run(Program *p, int64_t step);
/* Copies each update's value into its parameter (after program_run). */
void program_apply_updates(Program *p);
void program_free(Program *p);

#endif
