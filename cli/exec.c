/*
 * exec.c: one way for the driver to run a graph, whichever engine does it:
 * the compiled program (codegen/program.c, the default), the reference
 * evaluator (--reference), with or without a memory plan, or a CUDA device
 * (--target cuda: codegen/cuda/cuda_program.h, driven by cli/cuda.c).
 *
 * The commands speak to an Exec only: bind parameters, fill inputs, run,
 * read values, apply updates.  So `kiln run` and `kiln train` behave the
 * same on both engines, and the tests can compare the two.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rt_pool.h"

static void ref_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n) {
  eval_init(&x->ev, g);
  x->ev_ready = true;
  x->live = arena_alloc(c->arena, sizeof(bool) * (size_t)g->n_nodes);
  graph_live(g, roots, n, x->live);
  if (c->no_plan)
    return;
  c->plan.fuse = FUSE_NONE; /* it computes node by node: each its buffer */
  cli_plan(c, g, roots, n, &x->plan);
  size_t bytes = ((size_t)x->plan.arena + PLAN_ALIGN) / PLAN_ALIGN * PLAN_ALIGN;
  x->arena = aligned_alloc(PLAN_ALIGN, bytes);
  if (!x->arena)
    error_plain(&c->diag, "out of memory: the arena needs %lld bytes", (long long)x->plan.arena);
  memset(x->arena, 0, bytes);
  eval_use_arena(&x->ev, x->arena, x->plan.offset, x->plan.order, x->plan.n_order);
}

static void compiled_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n) {
  char err[1024];
  rt_set_threads((int)c->threads); /* 0: one per core */
  CgOpts co = {.opt_level = 3, .verify = true, .keep_denormals = c->keep_denormals};
  if (!program_compile(&x->prog, g, roots, n, &c->plan, &co, err, sizeof err)) {
    if (x->prog.out_of_memory) /* the model's size */
      error_plain(&c->diag, "%s: %s", g->name, err);
    die("compiling %s: %s", g->name, err); /* a compiler bug, not the user's */
  }
  x->prog_ready = true;
  if (c->verify_plan && !plan_verify(g, roots, n, &x->prog.plan, err, sizeof err))
    die("the memory plan of %s failed verification: %s", g->name, err);
  if (c->verbose) {
    fprintf(stderr, "%s: compiled %d kernels in %.3f s; ", g->name, x->prog.n_kernels,
            x->prog.compile_seconds);
    plan_print_summary(&x->prog.plan, stderr);
  }
}

void exec_init(Exec *x, Cli *c, Graph *g, Node *const *roots, int n) {
  memset(x, 0, sizeof *x);
  x->c = c;
  x->g = g;
  x->cuda = c->cuda && !c->reference;
  x->compiled = !c->reference && !x->cuda;
  if (x->cuda)
    cuda_exec_init(x, c, g, roots, n);
  else if (x->compiled)
    compiled_init(x, c, g, roots, n);
  else
    ref_init(x, c, g, roots, n);
}

void exec_bind_param(Exec *x, const Node *p, void *data) {
  if (x->cuda)
    cuda_exec_bind_param(x, p, data);
  else if (x->compiled)
    program_bind_param(&x->prog, p, data);
  else
    eval_bind(&x->ev, p, data);
}

void *exec_input(Exec *x, const Node *in) {
  if (!exec_needs(x, in)) { /* nothing reads it: a place to write that is never read */
    if (!x->spare)
      x->spare = arena_alloc(x->c->arena, sizeof(void *) * (size_t)x->g->n_nodes);
    if (!x->spare[in->id])
      x->spare[in->id] = arena_alloc(x->c->arena, (size_t)node_bytes(in) + 1);
    return x->spare[in->id];
  }
  void *p = x->cuda       ? cuda_exec_input(x, in)
            : x->compiled ? program_value(&x->prog, in)
                          : eval_input(&x->ev, in);
  if (!p)
    error_plain(&x->c->diag, "out of memory for input %s", in->name);
  return p;
}

/* Whether the graph reads input n (an input nothing needs has no place). */
bool exec_needs(const Exec *x, const Node *n) {
  if (x->cuda)
    return x->cu.plan.time[n->id] >= 0;
  return x->compiled ? x->prog.plan.time[n->id] >= 0 : x->live[n->id];
}

void exec_run(Exec *x, int64_t step) {
  if (x->cuda) {
    cuda_exec_run(x, step);
    return;
  }
  if (x->compiled) {
    program_run(&x->prog, step);
    return;
  }
  char err[512];
  x->ev.cx.step = (uint64_t)step;
  if (eval_run(&x->ev, x->live, err, sizeof err))
    error_plain(&x->c->diag, "%s", err);
}

void *exec_value(Exec *x, const Node *n) {
  if (x->cuda)
    return cuda_exec_value(x, n);
  return x->compiled ? program_value(&x->prog, n) : x->ev.vals[n->id].data;
}

void exec_apply_updates(Exec *x) {
  if (x->cuda)
    cuda_exec_apply_updates(x);
  else if (x->compiled)
    program_apply_updates(&x->prog);
  else
    eval_apply_updates(&x->ev);
}

void exec_sync_params(Exec *x) {
  if (x->cuda)
    cuda_exec_sync_params(x);
}

void exec_params_changed(Exec *x) {
  if (x->cuda)
    cu_program_params_changed(&x->cu);
}

void exec_free(Exec *x) {
  if (x->cuda)
    cuda_exec_free(x);
  if (x->prog_ready)
    program_free(&x->prog);
  if (x->ev_ready)
    eval_free(&x->ev);
  free(x->arena);
  memset(x, 0, sizeof *x);
}
