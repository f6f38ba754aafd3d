/*
 * program.c: from a graph and its roots to a running step function.
 *
 * The plan's schedule is the program: each kernel of the plan (a fused
 * group, passes/fuse.c, or one node), in order, becomes one kernel call
 * (ir/lower_fuse.c or ir/lower*.c); constants become one-store kernels at their place in the
 * schedule (the arena may reuse their bytes before and after), or, with fuse kind const,
 * literals in the kernels that read them (kir_inline_input).  Each
 * kernel buffer is located for the step function as a byte offset into
 * the arena, or an extern slot (parameters; slot 0 for the step counter).
 * program_calls is that translation alone: codegen/aot.c compiles the
 * same calls into an object file.
 *
 * Weight-derived values (passes/prepack.c) are not computed by the step:
 * a second function, the prepare step (program_prepare_calls), computes
 * them from the parameters into persistent buffers of their own (extern
 * slots after the parameters').  It runs before the first step after a
 * parameter is bound, and whenever the caller says parameters changed
 * (program_prepare), so the step never reads a stale prepacked weight.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "program.h"

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* out[0] = value: a constant's kernel. */
static Kernel *const_kernel(Arena *a, const Node *n) {
  Kernel *k = kir_new(a, arena_fmt(a, "const_%d", n->id), n);
  KType t = n->dtype == DT_F32 ? KT_F32 : KT_I32;
  int out = kir_buf(k, arena_fmt(a, "t%d", n->id), t, 1, KB_OUT, n->id);
  KExpr *v = t == KT_F32 ? ke_f32(k, n->at.value) : ke_int(k, KT_I32, (int64_t)n->at.value);
  ks_add(k, k->body, ks_store(k, out, ke_idx(k, 0), v));
  return k;
}

static int param_slot(const Program *p, int node) {
  for (int i = 0; i < p->n_params; i++)
    if (p->params[i]->id == node)
      return 1 + i;
  for (int i = 0; i < p->n_derived; i++)
    if (p->derived[i]->id == node)
      return 1 + p->n_params + i;
  return -1;
}

/* Where the step function finds each buffer of k. */
static bool locate(const Plan *plan, const int *slot, const Kernel *k, CgRef *refs, char *err,
                   size_t n) {
  for (int i = 0; i < k->n_bufs; i++) {
    int node = k->bufs[i].node;
    if (node == KBUF_STEP) {
      refs[i] = (CgRef){CG_EXTERN, 0};
    } else if (node >= 0 && plan->offset[node] >= 0) {
      refs[i] = (CgRef){CG_ARENA, plan->offset[node]};
    } else if (node >= 0 && slot[node] > 0) {
      refs[i] = (CgRef){CG_EXTERN, slot[node]};
    } else {
      snprintf(err, n, "kernel %s: buffer %s has no place (scratch buffers are not planned)",
               k->name, k->bufs[i].name);
      return false;
    }
  }
  return true;
}

/* A reshape (or stop_gradient) the plan put over its input's bytes
 * (passes/inplace.c): its copy would write every element onto itself. */
static bool copies_onto_itself(const Plan *plan, const Node *v) {
  return op_info[v->op].lower == lower_copy && plan->offset[v->id] >= 0 &&
         plan->offset[v->id] == plan->offset[v->in[0]->id];
}

/* The constants of fuse kind const (passes/fuse.c) that k reads become
 * literals in it: no buffer, nothing written for them before the kernel. */
static Kernel *constants_inlined(const Plan *plan, Kernel *k) {
  for (int b = k ? k->n_bufs - 1 : -1; b >= 0; b--) {
    int node = k->bufs[b].node;
    const Node *c = node >= 0 ? plan->g->nodes[node] : NULL;
    if (c && plan_literal(plan, c) && k->bufs[b].role == KB_IN)
      ASSERT(kir_inline_input(k, b, c->at.value));
  }
  return k;
}

static Kernel *kernel_at(Arena *a, const Plan *plan, const Node *v) {
  const FuseGroup *G = plan_group(plan, v);
  if (!G)
    return v->op == OP_CONST ? const_kernel(a, v) : NULL;
  if (G->n_members == 1)
    return copies_onto_itself(plan, v) ? NULL : lower_node(a, v);
  if (plan->start[v->id] != plan->time[v->id])
    return NULL;
  bool *stored = arena_alloc(a, sizeof(bool) * (size_t)G->n_members);
  for (int m = 0; m < G->n_members; m++)
    stored[m] = !plan->internal[G->members[m]->id];
  return lower_fused(a, G->members, stored, G->n_members, G->eltwise);
}

Kernel *program_kernel_at(Arena *a, const Plan *plan, const Node *v) {
  return constants_inlined(plan, kernel_at(a, plan, v));
}

/* The calls of the scheduled nodes that are weight-derived (prepare) or
 * are not (the step). */
static bool calls_of(Graph *g, const Plan *plan, const int *slot, bool prepare, CgCall *calls,
                     int *n_calls, char *err, size_t n) {
  Arena *a = g->arena;
  *n_calls = 0;
  for (int s = 0; s < plan->n_order; s++) {
    const Node *v = plan->order[s];
    if (v->op == OP_INPUT || v->op == OP_PARAM || v->derived != prepare)
      continue;
    Kernel *k = program_kernel_at(a, plan, v);
    if (!k)
      continue;
    k->name = arena_fmt(a, "%s_%d", k->name, v->id); /* unique in the module */
    CgRef *refs = arena_alloc(a, sizeof(CgRef) * (size_t)(k->n_bufs + 1));
    if (!locate(plan, slot, k, refs, err, n))
      return false;
    calls[(*n_calls)++] = (CgCall){k, refs};
  }
  return true;
}

bool program_calls(Graph *g, const Plan *plan, const int *slot, CgCall *calls, int *n_calls,
                   char *err, size_t n) {
  return calls_of(g, plan, slot, false, calls, n_calls, err, n);
}

bool program_prepare_calls(Graph *g, const Plan *plan, const int *slot, CgCall *calls,
                           int *n_calls, char *err, size_t n) {
  return calls_of(g, plan, slot, true, calls, n_calls, err, n);
}

int *program_persistent_slots(Graph *g, const Plan *plan, Node ***params, int *n_params,
                              Node ***derived, int *n_derived) {
  size_t n = (size_t)(g->n_nodes + 1);
  *params = arena_alloc(g->arena, sizeof(Node *) * n);
  *derived = arena_alloc(g->arena, sizeof(Node *) * n);
  *n_params = *n_derived = 0;
  for (int s = 0; s < plan->n_order; s++) {
    Node *v = plan->order[s];
    if (v->op == OP_PARAM)
      (*params)[(*n_params)++] = v;
    else if (v->derived)
      (*derived)[(*n_derived)++] = v;
  }
  int *slot = arena_alloc(g->arena, sizeof(int) * n);
  for (int i = 0; i < *n_params; i++)
    slot[(*params)[i]->id] = 1 + i;
  for (int i = 0; i < *n_derived; i++)
    slot[(*derived)[i]->id] = 1 + *n_params + i;
  return slot;
}

/* The scheduled parameters and weight-derived values, and their slots. */
static int *persistent_slots(Program *p, Graph *g) {
  return program_persistent_slots(g, &p->plan, &p->params, &p->n_params, &p->derived,
                                  &p->n_derived);
}

/* The weight-derived values' persistent block, and their ext slots in it. */
static bool alloc_prepared(Program *p, char *err, size_t errlen) {
  size_t bytes = 0;
  for (int i = 0; i < p->n_derived; i++)
    bytes += (size_t)p->plan.size[p->derived[i]->id];
  if (!p->n_derived)
    return true;
  p->prepared = aligned_alloc(PLAN_ALIGN, bytes);
  if (!p->prepared) {
    snprintf(err, errlen, "out of memory: prepacked weights need %zu bytes", bytes);
    p->out_of_memory = true;
    return false;
  }
  memset(p->prepared, 0, bytes);
  size_t off = 0;
  for (int i = 0; i < p->n_derived; i++) {
    p->ext[1 + p->n_params + i] = p->prepared + off;
    off += (size_t)p->plan.size[p->derived[i]->id];
  }
  p->stale = true;
  return true;
}

/* Compiles the step (and the prepare step when there are derived values). */
static bool compile_steps(Program *p, Graph *g, const int *slot, const CgOpts *co, char *err,
                          size_t errlen) {
  CgCall *calls = arena_alloc(g->arena, sizeof(CgCall) * (size_t)(p->plan.n_order + 1));
  CgCall *prep = arena_alloc(g->arena, sizeof(CgCall) * (size_t)(p->plan.n_order + 1));
  int n_prep = 0;
  if (!program_calls(g, &p->plan, slot, calls, &p->n_kernels, err, errlen) ||
      !program_prepare_calls(g, &p->plan, slot, prep, &n_prep, err, errlen))
    return false;
  p->cg = cg_new(g->name, co, err, errlen);
  if (!p->cg || !cg_step(p->cg, "kiln_step", calls, p->n_kernels, err, errlen) ||
      (n_prep && !cg_step(p->cg, "kiln_prepare", prep, n_prep, err, errlen)) ||
      !cg_optimize(p->cg, err, errlen) || !(p->jit = cg_jit(p->cg, err, errlen)))
    return false;
  p->step = cg_jit_step(p->jit, "kiln_step");
  p->prepare = n_prep ? cg_jit_step(p->jit, "kiln_prepare") : NULL;
  if (!p->step || (n_prep && !p->prepare)) {
    snprintf(err, errlen, "%s", cg_jit_error(p->jit));
    return false;
  }
  return true;
}

static bool compile_all(Program *p, Graph *g, Node *const *roots, int n_roots, const PlanOpts *po,
                        const CgOpts *co, char *err, size_t errlen) {
  double t0 = now_seconds();
  p->g = g;
  plan_build(g, roots, n_roots, po, &p->plan);
  int *slot = persistent_slots(p, g);
  if (!compile_steps(p, g, slot, co, err, errlen))
    return false;
  size_t bytes = ((size_t)p->plan.arena + PLAN_ALIGN) / PLAN_ALIGN * PLAN_ALIGN;
  p->arena = aligned_alloc(PLAN_ALIGN, bytes);
  p->ext = calloc((size_t)(p->n_params + p->n_derived) + 1, sizeof(void *));
  if (!p->arena || !p->ext) {
    snprintf(err, errlen, "out of memory: the arena needs %zu bytes", bytes);
    p->out_of_memory = true;
    return false;
  }
  memset(p->arena, 0, bytes);
  p->ext[0] = &p->step_counter;
  if (!alloc_prepared(p, err, errlen))
    return false;
  p->compile_seconds = now_seconds() - t0;
  return true;
}

bool program_compile(Program *p, Graph *g, Node *const *roots, int n_roots, const PlanOpts *po,
                     const CgOpts *co, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->keep_denormals = co->keep_denormals;
  if (compile_all(p, g, roots, n_roots, po, co, err, errlen))
    return true;
  bool oom = p->out_of_memory;
  program_free(p); /* what it made before failing */
  p->out_of_memory = oom;
  return false;
}

void program_bind_param(Program *p, const Node *param, void *data) {
  int slot = param_slot(p, param->id);
  if (slot > 0 && slot <= p->n_params) {
    p->ext[slot] = data;
    p->stale = true; /* its values are written after binding, before the next run */
  }
}

void program_prepare(Program *p) {
  for (int i = 0; i < p->n_params; i++)
    ASSERT(p->ext[1 + i]);
  if (p->prepare)
    p->prepare(p->arena, (void *const *)p->ext);
  p->stale = false;
}

void *program_value(Program *p, const Node *n) {
  if (p->plan.offset[n->id] >= 0)
    return p->arena + p->plan.offset[n->id];
  int slot = param_slot(p, n->id);
  return slot > 0 ? p->ext[slot] : NULL;
}

void program_run(Program *p, int64_t step) {
  for (int i = 0; i < p->n_params; i++)
    ASSERT(p->ext[1 + i]);
  if (p->stale)
    program_prepare(p);
  p->step_counter = step;
  p->step(p->arena, (void *const *)p->ext);
}

void program_apply_updates(Program *p) {
  const Graph *g = p->g;
  for (int i = 0; i < g->n_updates; i++) {
    void *dst = program_value(p, g->updates[i].target);
    const void *src = program_value(p, g->updates[i].value);
    ASSERT(dst && src && dst != src);
    memcpy(dst, src, (size_t)node_bytes(g->updates[i].target));
  }
}

void program_free(Program *p) {
  cg_jit_free(p->jit);
  cg_free(p->cg);
  free(p->arena);
  free(p->prepared);
  free(p->ext);
  memset(p, 0, sizeof *p);
}
