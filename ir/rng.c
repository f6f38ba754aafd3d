/*
 * rng.c: parameter initialization for the compiler (kiln init, run, train,
 * the tests): the runtime's rt_init_fill (runtime/rt_init.c, where the
 * random numbers and the formulas live), so built programs that fill
 * their parameters at start-up get the same bits.
 *
 * param_init_fill gives element i of parameter p the value drawn with
 * counter i from rng_seed_for(seed, p->name).
 */
#include "ir.h"

void param_init_fill(const Node *p, uint64_t seed, void *data) {
  char err[256];
  ASSERT(p->op == OP_PARAM);
  if (rt_init_fill(&p->init, seed, p->name, p->dtype, data,
                   shape_numel(&p->shape), err, sizeof err) != RT_OK)
    die("%s", err);
}
