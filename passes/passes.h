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

#endif
