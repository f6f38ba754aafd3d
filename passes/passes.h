/*
 * passes.h: graph passes.  One pass per file, one public entry point each.
 *
 * Analyses that compute side tables are fill_*; transformations are
 * pass_* verbs; checkers are *_verify.  For now there is the verifier; the
 * autodiff, fusion, scheduling and memory-planning issues add theirs here.
 */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir.h"

/* Checks the graph's invariants independently of how it was built: ids are
 * dense and in order, every input precedes its user (topological order),
 * arities match the op table, each node's shape and dtype are what its
 * shape rule computes, names are unique, outputs are nodes of the graph.
 * Returns true, or false with a message in err. */
bool graph_verify(const Graph *g, char *err, size_t errlen);

/* --- autodiff.c --- */
/* Appends the backward pass of the scalar `loss` with respect to
 * wrt[0..n_wrt) and returns their gradients in grads (a zero tensor where
 * the loss does not depend on one).  User errors (a non-scalar loss, an op
 * without a gradient on the way) raise through d. */
void pass_autodiff(Graph *g, Diag *d, Node *loss, Node *const *wrt, int n_wrt, Node **grads);

/* --- optimizer.c --- */
/* Appends the update of params[i] from grads[i] as nodes plus graph
 * updates; returns the learning-rate and step-counter inputs it made. */
void pass_optimizer(Graph *g, const TrainSpec *s, Node *const *params, Node *const *grads,
                    int n, Node **lr, Node **step);
/* Whether `name` is optimizer state ("p.exp_avg", ...) of a trainable
 * parameter p of g: what kiln train saves beside the parameters. */
bool optimizer_state_of(const Graph *g, const char *name);

/* --- train_step.c --- */
/* The whole training step in one graph: the training-mode forward graph,
 * its backward pass, the optimizer update. */
typedef struct TrainStep {
  Node *loss;
  Node *lr, *step;   /* inputs to feed every step (step counts from 1) */
  Node **params;     /* trainable parameters */
  Node **grads;
  int n_params;
  Node **roots;      /* what one step must compute: loss and update values */
  int n_roots;
} TrainStep;
void build_train_step(Graph *g, Diag *d, TrainStep *ts);

#endif
