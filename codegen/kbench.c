/*
 * kbench.c: a compiled program's step, one kernel at a time, and random
 * inputs for benchmarks (kbench.h).
 *
 * The calls are program_calls' again (the same lowering, so the same
 * kernel names), their functions looked up in the program's JIT, where
 * the step function's module defined them.  Buffer pointers are resolved
 * at each run, as the step function does: parameters may be bound after
 * kbench_init.
 */
#include <string.h>

#include "kbench.h"
#include "rt_data.h"
#include "rt_pool.h"

/* The extern slot of each parameter and weight-derived value, as
 * program_compile numbered them. */
static int *program_slots(const Program *p) {
  Graph *g = p->g;
  int *slot = arena_alloc(g->arena, sizeof(int) * (size_t)(g->n_nodes + 1));
  for (int i = 0; i < p->n_params; i++)
    slot[p->params[i]->id] = 1 + i;
  for (int i = 0; i < p->n_derived; i++)
    slot[p->derived[i]->id] = 1 + p->n_params + i;
  return slot;
}

static int64_t buf_bytes(const KBuf *b) {
  return b->node == KBUF_STEP ? 0 : b->numel * (b->type == KT_IDX ? 8 : 4);
}

/* The FLOPs and the number of the nodes kernel k computes. */
static double kernel_flops(const Kernel *k, int *n_nodes) {
  if (!k->n_members) {
    *n_nodes = 1;
    return k->node ? node_flops(k->node) : 0;
  }
  double f = 0;
  for (int i = 0; i < k->n_members; i++)
    f += node_flops(k->members[i]);
  *n_nodes = k->n_members;
  return f;
}

void kbench_kernel_cost(const Kernel *k, int64_t *bytes, double *flops, int *n_nodes) {
  *bytes = 0;
  for (int j = 0; j < k->n_bufs; j++)
    *bytes += buf_bytes(&k->bufs[j]);
  *flops = kernel_flops(k, n_nodes);
}

bool kbench_init(KBench *b, Program *p, char *err, size_t errlen) {
  Graph *g = p->g;
  Arena *a = g->arena;
  size_t cap = (size_t)p->plan.n_order + 1;
  memset(b, 0, sizeof *b);
  b->p = p;
  b->calls = arena_alloc(a, sizeof(CgCall) * cap);
  if (!program_calls(g, &p->plan, program_slots(p), b->calls, &b->n, err, errlen))
    return false;
  b->fn = arena_alloc(a, sizeof(CgKernelFn) * cap);
  b->bufs = arena_alloc(a, sizeof(void **) * cap);
  b->name = arena_alloc(a, sizeof(char *) * cap);
  b->n_nodes = arena_alloc(a, sizeof(int) * cap);
  b->bytes = arena_alloc(a, sizeof(int64_t) * cap);
  b->flops = arena_alloc(a, sizeof(double) * cap);
  for (int i = 0; i < b->n; i++) {
    const Kernel *k = b->calls[i].k;
    b->name[i] = k->name;
    b->fn[i] = cg_jit_kernel(p->jit, k->name);
    if (!b->fn[i]) {
      snprintf(err, errlen, "kernel %s is not in the compiled program: %s", k->name,
               cg_jit_error(p->jit));
      return false;
    }
    b->bufs[i] = arena_alloc(a, sizeof(void *) * (size_t)(k->n_bufs + 1));
    kbench_kernel_cost(k, &b->bytes[i], &b->flops[i], &b->n_nodes[i]);
  }
  return true;
}

/* Where the step function would find each buffer of call i now. */
static void resolve(KBench *b, int i) {
  const CgCall *c = &b->calls[i];
  for (int j = 0; j < c->k->n_bufs; j++)
    b->bufs[i][j] = c->refs[j].base == CG_ARENA ? (void *)(b->p->arena + c->refs[j].at)
                                                : b->p->ext[c->refs[j].at];
}

void kbench_run(KBench *b, int64_t step, double *seconds) {
  Program *p = b->p;
  if (p->stale)
    program_prepare(p);
  p->step_counter = step;
  for (int i = 0; i < b->n; i++)
    resolve(b, i);
  unsigned mode = p->keep_denormals ? 0 : rt_fp_flush(); /* as the step function runs them */
  for (int i = 0; i < b->n; i++) {
    double t0 = rt_now();
    b->fn[i]((void *const *)b->bufs[i]);
    seconds[i] = rt_now() - t0;
  }
  if (!p->keep_denormals)
    rt_fp_restore(mode);
}

/* --- random inputs --------------------------------------------------------- */

/* Labels and ids must be valid indices: the bound comes from the reader. */
static int64_t int_bound(const Graph *g, const Node *in) {
  for (int i = in->id + 1; i < g->n_nodes; i++) {
    const Node *u = g->nodes[i];
    if (u->op == OP_CROSS_ENTROPY && u->in[1] == in)
      return u->in[0]->shape.dim[u->in[0]->shape.rank - 1];
    if (u->op == OP_EMBEDDING && u->in[0] == in)
      return u->in[1]->shape.dim[0];
  }
  return 2;
}

void kbench_random_fill(const Graph *g, const Node *in, uint64_t seed, void *data) {
  int64_t count = shape_numel(&in->shape);
  uint64_t s = rng_seed_for(seed, in->name);
  if (in->dtype == DT_F32) {
    for (int64_t i = 0; i < count; i++)
      ((float *)data)[i] = (float)rng_normal(s, (uint64_t)i);
    return;
  }
  int64_t bound = int_bound(g, in);
  for (int64_t i = 0; i < count; i++)
    ((int32_t *)data)[i] = (int32_t)(rng_uniform(s, (uint64_t)i) * (double)bound);
}
