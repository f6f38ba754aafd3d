/*
 * program.c: from a graph and its roots to a running step function.
 *
 * The plan's schedule is the program: each node, in order, becomes one
 * kernel call; constants become one-store kernels at their place in the
 * schedule (the arena may reuse their bytes before and after).  Each
 * kernel buffer is located for the step function as a byte offset into
 * the arena, or an extern slot (parameters; slot 0 for the step counter).
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
  return -1;
}

/* Where the step function finds each buffer of k. */
static bool locate(Program *p, const Kernel *k, CgRef *refs, char *err, size_t n) {
  for (int i = 0; i < k->n_bufs; i++) {
    int node = k->bufs[i].node;
    if (node == KBUF_STEP) {
      refs[i] = (CgRef){CG_EXTERN, 0};
    } else if (node >= 0 && p->plan.offset[node] >= 0) {
      refs[i] = (CgRef){CG_ARENA, p->plan.offset[node]};
    } else if (node >= 0 && param_slot(p, node) > 0) {
      refs[i] = (CgRef){CG_EXTERN, param_slot(p, node)};
    } else {
      snprintf(err, n, "kernel %s: buffer %s has no place (scratch buffers are not planned)",
               k->name, k->bufs[i].name);
      return false;
    }
  }
  return true;
}

static bool build_calls(Program *p, CgCall *calls, int *n_calls, char *err, size_t n) {
  Arena *a = p->g->arena;
  *n_calls = 0;
  for (int s = 0; s < p->plan.n_order; s++) {
    const Node *v = p->plan.order[s];
    if (v->op == OP_INPUT || v->op == OP_PARAM)
      continue;
    Kernel *k = v->op == OP_CONST ? const_kernel(a, v) : lower_node(a, v);
    k->name = arena_fmt(a, "%s_%d", k->name, v->id); /* unique in the module */
    CgRef *refs = arena_alloc(a, sizeof(CgRef) * (size_t)(k->n_bufs + 1));
    if (!locate(p, k, refs, err, n))
      return false;
    calls[(*n_calls)++] = (CgCall){k, refs};
  }
  return true;
}

bool program_compile(Program *p, Graph *g, Node *const *roots, int n_roots, const PlanOpts *po,
                     const CgOpts *co, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  double t0 = now_seconds();
  p->g = g;
  plan_build(g, roots, n_roots, po, &p->plan);
  p->params = arena_alloc(g->arena, sizeof(Node *) * (size_t)(g->n_nodes + 1));
  for (int s = 0; s < p->plan.n_order; s++)
    if (p->plan.order[s]->op == OP_PARAM)
      p->params[p->n_params++] = p->plan.order[s];
  CgCall *calls = arena_alloc(g->arena, sizeof(CgCall) * (size_t)(p->plan.n_order + 1));
  if (!build_calls(p, calls, &p->n_kernels, err, errlen))
    return false;
  p->cg = cg_new(g->name, co, err, errlen);
  if (!p->cg || !cg_step(p->cg, "kiln_step", calls, p->n_kernels, err, errlen) ||
      !cg_optimize(p->cg, err, errlen) || !(p->jit = cg_jit(p->cg, err, errlen)))
    return false;
  p->step = cg_jit_step(p->jit, "kiln_step");
  if (!p->step) {
    snprintf(err, errlen, "%s", cg_jit_error(p->jit));
    return false;
  }
  size_t bytes = ((size_t)p->plan.arena + PLAN_ALIGN) / PLAN_ALIGN * PLAN_ALIGN;
  p->arena = aligned_alloc(PLAN_ALIGN, bytes);
  p->ext = calloc((size_t)p->n_params + 1, sizeof(void *));
  if (!p->arena || !p->ext) {
    snprintf(err, errlen, "out of memory: the arena needs %zu bytes", bytes);
    return false;
  }
  memset(p->arena, 0, bytes);
  p->ext[0] = &p->step_counter;
  p->compile_seconds = now_seconds() - t0;
  return true;
}

void program_bind_param(Program *p, const Node *param, void *data) {
  int slot = param_slot(p, param->id);
  if (slot > 0)
    p->ext[slot] = data;
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
  free(p->ext);
  memset(p, 0, sizeof *p);
}
