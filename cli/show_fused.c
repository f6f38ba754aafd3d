/*
 * show_fused.c: `kiln show --stage fused`, the kernels a plan makes
 * (passes/fuse.c): which nodes each kernel computes, which of them get a
 * buffer, and why fusion stopped where it did.
 *
 * Kernels are listed in schedule order (the order the step calls them).
 * Text is for people: one block per kernel, a line per member with its
 * source location, then the reason each stored value ends the kernel.
 * DOT draws each kernel as a cluster, the edges that leave one labelled
 * with the producer's reason.  JSON carries the same facts for scripts;
 * its field names are stable (tests/cli.sh reads them).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The plan's groups in the order their anchors run. */
static int *kernel_order(Cli *c, const Plan *p) {
  int *ord = arena_alloc(c->arena, sizeof(int) * (size_t)(p->n_groups + 1));
  for (int i = 0; i < p->n_groups; i++)
    ord[i] = i;
  for (int i = 1; i < p->n_groups; i++) /* insertion sort: usually in order already */
    for (int j = i; j > 0; j--) {
      int a = ord[j - 1], b = ord[j];
      if (p->time[p->groups[a].anchor->id] <= p->time[p->groups[b].anchor->id])
        break;
      ord[j - 1] = b, ord[j] = a;
    }
  return ord;
}

static int count_members(const Plan *p) {
  int n = 0;
  for (int i = 0; i < p->n_groups; i++)
    n += p->groups[i].n_members;
  return n;
}

static int count_internal(const Plan *p) {
  int n = 0;
  for (int i = 0; i < p->g->n_nodes; i++)
    n += p->group[i] >= 0 && p->internal[i];
  return n;
}

static int count_literals(const Plan *p) {
  int n = 0;
  for (int i = 0; i < p->g->n_nodes; i++)
    n += plan_literal(p, p->g->nodes[i]);
  return n;
}

static int count_stored(const Plan *p, const FuseGroup *G) {
  int n = 0;
  for (int m = 0; m < G->n_members; m++)
    n += !p->internal[G->members[m]->id];
  return n;
}

/* " (eltwise, 3 nodes, 2 outputs)", and whether the prepare step runs it
 * (weight-derived values, passes/prepack.c); "" for a node of the step. */
static const char *kernel_kind(Cli *c, const Plan *p, const FuseGroup *G) {
  const char *s = "";
  int outs = count_stored(p, G);
  if (G->n_members > 1)
    s = arena_fmt(c->arena, " (%s, %d nodes%s)",
                  G->row       ? "row"
                  : G->scatter ? "scatter"
                  : G->eltwise ? "eltwise"
                               : "fused into its anchor",
                  G->n_members, outs > 1 ? arena_fmt(c->arena, ", %d outputs", outs) : "");
  if (G->anchor->derived)
    s = arena_fmt(c->arena, "%s [weight-derived: run by the prepare step, not every step]", s);
  return s;
}

static const char *mode(const Plan *p) { return p->g->training ? "training step" : "inference"; }

/* --- text ----------------------------------------------------------------- */

/* The axes whose bits are set, as "0, 2". */
static void bit_list(FILE *f, unsigned bits) {
  for (int d = 0, k = 0; d < 32; d++)
    if (bits & (1u << d))
      fprintf(f, "%s%d", k++ ? ", " : "", d);
}

/* A matmul's folded transposes (passes/view.c), one line each, and its
 * folded sum (batchsum.c). */
static void text_views(const Node *n, FILE *f) {
  for (int v = 0; v < 3 && n->op == OP_MATMUL; v++) {
    if (!(n->at.view & (1 << v)))
      continue;
    const Node *x = v < 2 ? n->in[v] : n;
    fprintf(f, "  %s %s %s through transpose [", n->name, v < 2 ? "reads" : "writes",
            v < 2 ? x->name : "its result");
    for (int i = 0; i < x->shape.rank; i++)
      fprintf(f, "%s%d", i ? ", " : "", n->at.perm[v][i]);
    fprintf(f, "]: folded into its strides (kind view), no transpose kernel\n");
  }
  if (n->op == OP_MATMUL && n->at.bsum) {
    fprintf(f, "  %s sums its products over batch axes [", n->name);
    bit_list(f, n->at.bsum);
    fprintf(f, "] as it computes them (kind batchsum): the products are never stored\n");
  }
}

static void text_kernel(Cli *c, const Plan *p, int k, const FuseGroup *G, FILE *f) {
  char tb[160];
  fprintf(f, "kernel %d: %s %s%s\n", k, op_name(G->anchor->op), G->anchor->name,
          kernel_kind(c, p, G));
  for (int m = 0; m < G->n_members; m++) {
    const Node *n = G->members[m];
    fprintf(f, "  %%%-4d %-14s %-24s %-20s %-28s %s\n", n->id, op_name(n->op), n->name,
            node_type_str(n, tb, sizeof tb), cli_loc(c, n->loc),
            p->internal[n->id] ? "internal" : "stored");
  }
  for (int m = 0; m < G->n_members; m++)
    text_views(G->members[m], f);
  if (G->n_ins) {
    fprintf(f, "  reads:");
    for (int i = 0; i < G->n_ins; i++) {
      fprintf(f, "%s %s", i ? "," : "", G->ins[i]->name);
      if (plan_literal(p, G->ins[i]))
        fprintf(f, " (the constant %g, a literal in the kernel: kind const)", G->ins[i]->at.value);
    }
    fputc('\n', f);
  }
  for (int m = 0; m < G->n_members; m++) {
    const Node *n = G->members[m];
    if (!p->internal[n->id] && p->why[n->id])
      fprintf(f, "  ends at %s: %s\n", n->name, p->why[n->id]);
  }
}

void fused_print_text(Cli *c, const Plan *p, FILE *f) {
  int *ord = kernel_order(c, p);
  fprintf(f, "# %s (%s), --fuse=%s: kernels in schedule order\n", p->g->name, mode(p),
          fuse_opts_text(&p->opts.fuse));
  for (int k = 0; k < p->n_groups; k++)
    text_kernel(c, p, k, &p->groups[ord[k]], f);
  fprintf(f, "%d nodes in %d kernels, %d values internal (no buffer)", count_members(p),
          p->n_groups, count_internal(p));
  int lits = count_literals(p);
  if (lits)
    fprintf(f, ", %d constants literals in the kernels reading them (kind const)", lits);
  fputc('\n', f);
}

/* --- DOT ------------------------------------------------------------------ */

static void dot_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    fputc(*s, f);
  }
}

static void dot_str(FILE *f, const char *s) {
  fputc('"', f);
  dot_escape(f, s);
  fputc('"', f);
}

/* A reason short enough for an edge label. */
static const char *short_why(Cli *c, const char *why) {
  enum { MAX = 48 };
  return strlen(why) <= MAX ? why : arena_fmt(c->arena, "%.*s...", MAX - 3, why);
}

static void dot_node(const Plan *p, const Node *n, FILE *f) {
  char tb[160];
  bool leaf = p->group[n->id] < 0;
  const char *fill = !leaf               ? "white"
                     : n->op == OP_INPUT ? "#cfe8ff"
                     : n->op == OP_PARAM ? "#fff2b3"
                                         : "#eeeeee";
  fprintf(f, "    n%d [label=\"", n->id);
  dot_escape(f, n->name);
  fprintf(f, "\\n%s%s\\n%s\", fillcolor=\"%s\"%s];\n", op_name(n->op),
          n->op != OP_MATMUL ? ""
          : n->at.bsum       ? (n->at.view ? " (views, batch sum)" : " (batch sum)")
          : n->at.view       ? " (views)"
                             : "",
          node_type_str(n, tb, sizeof tb),
          fill,
          p->internal[n->id] ? ", style=\"rounded,filled,dashed\"" : "");
}

void fused_print_dot(Cli *c, const Plan *p, FILE *f) {
  const Graph *g = p->g;
  int *ord = kernel_order(c, p);
  fprintf(f, "digraph ");
  dot_str(f, arena_fmt(c->arena, "%s kernels", g->name));
  fprintf(f, " {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", "
             "fontname=\"Helvetica\", fontsize=10, fillcolor=white];\n"
             "  edge [fontname=\"Helvetica\", fontsize=8];\n");
  bool *drawn = arena_alloc(c->arena, sizeof(bool) * (size_t)(g->n_nodes + 1));
  for (int k = 0; k < p->n_groups; k++) {
    const FuseGroup *G = &p->groups[ord[k]];
    fprintf(f, "  subgraph cluster_%d {\n    label=", k);
    dot_str(f, arena_fmt(c->arena, "kernel %d: %s %s%s", k, op_name(G->anchor->op),
                         G->anchor->name, G->anchor->derived ? " (prepare step)" : ""));
    fprintf(f, ";\n    style=filled;\n    fillcolor=\"%s\";\n",
            G->n_members > 1 ? "#e3f0e3" : "#f2f2f2");
    for (int m = 0; m < G->n_members; m++) {
      dot_node(p, G->members[m], f);
      drawn[G->members[m]->id] = true;
    }
    fprintf(f, "  }\n");
  }
  for (int k = 0; k < p->n_groups; k++) /* the leaves kernels read */
    for (int i = 0; i < p->groups[k].n_ins; i++) {
      const Node *x = p->groups[k].ins[i];
      if (!drawn[x->id] && p->group[x->id] < 0) {
        dot_node(p, x, f);
        drawn[x->id] = true;
      }
    }
  for (int k = 0; k < p->n_groups; k++)
    for (int m = 0; m < p->groups[k].n_members; m++) {
      const Node *n = p->groups[k].members[m];
      for (int j = 0; j < n->n_in; j++) {
        const Node *x = n->in[j];
        if (!drawn[x->id])
          continue;
        fprintf(f, "  n%d -> n%d", x->id, n->id);
        bool crosses = p->group[x->id] >= 0 && p->group[x->id] != k;
        if (crosses && p->why[x->id]) {
          fprintf(f, " [label=");
          dot_str(f, short_why(c, p->why[x->id]));
          fprintf(f, "]");
        }
        fprintf(f, ";\n");
      }
    }
  fprintf(f, "}\n");
}

/* --- JSON ----------------------------------------------------------------- */

static void json_member(Cli *c, const Plan *p, const Node *n, FILE *f) {
  fprintf(f, "        {\"id\": %d, \"name\": ", n->id);
  json_write_str(f, n->name);
  fprintf(f, ", \"op\": \"%s\", \"dtype\": \"%s\", \"shape\": [", op_name(n->op),
          dtype_name(n->dtype));
  for (int i = 0; i < n->shape.rank; i++)
    fprintf(f, "%s%lld", i ? ", " : "", (long long)n->shape.dim[i]);
  fprintf(f, "], \"loc\": ");
  if (n->loc.src)
    json_write_str(f, cli_loc(c, n->loc));
  else
    fprintf(f, "null");
  fprintf(f, ", \"internal\": %s, \"backward\": %s", p->internal[n->id] ? "true" : "false",
          n->is_backward ? "true" : "false");
  if (n->op == OP_MATMUL && n->at.view) { /* passes/view.c: "a", "b", "out" -> perm */
    static const char *const slot[] = {"a", "b", "out"};
    fprintf(f, ", \"views\": {");
    for (int v = 0, k = 0; v < 3; v++) {
      if (!(n->at.view & (1 << v)))
        continue;
      fprintf(f, "%s\"%s\": [", k++ ? ", " : "", slot[v]);
      for (int i = 0; i < (v < 2 ? n->in[v] : n)->shape.rank; i++)
        fprintf(f, "%s%d", i ? ", " : "", n->at.perm[v][i]);
      fprintf(f, "]");
    }
    fprintf(f, "}");
  }
  if (n->op == OP_MATMUL && n->at.bsum) { /* passes/batchsum.c: the summed batch axes */
    fprintf(f, ", \"batch_sum\": [");
    bit_list(f, n->at.bsum);
    fprintf(f, "]");
  }
  fprintf(f, "}");
}

static void json_kernel(Cli *c, const Plan *p, int k, const FuseGroup *G, FILE *f) {
  fprintf(f, "    {\"index\": %d, \"anchor\": ", k);
  json_write_str(f, G->anchor->name);
  fprintf(f, ", \"op\": \"%s\", \"eltwise\": %s, \"row\": %s, \"scatter\": %s, "
             "\"derived\": %s,\n      \"members\": [\n",
          op_name(G->anchor->op), G->eltwise ? "true" : "false", G->row ? "true" : "false",
          G->scatter ? "true" : "false", G->anchor->derived ? "true" : "false");
  for (int m = 0; m < G->n_members; m++) {
    json_member(c, p, G->members[m], f);
    fprintf(f, "%s\n", m + 1 < G->n_members ? "," : "");
  }
  fprintf(f, "      ],\n      \"inputs\": [");
  for (int i = 0; i < G->n_ins; i++) {
    fprintf(f, "%s", i ? ", " : "");
    json_write_str(f, G->ins[i]->name);
  }
  fprintf(f, "],\n      \"literals\": [");
  for (int i = 0, nl = 0; i < G->n_ins; i++)
    if (plan_literal(p, G->ins[i])) {
      fprintf(f, "%s{\"name\": ", nl++ ? ", " : "");
      json_write_str(f, G->ins[i]->name);
      fprintf(f, ", \"value\": %.17g}", G->ins[i]->at.value);
    }
  fprintf(f, "],\n      \"boundaries\": [");
  int nb = 0;
  for (int m = 0; m < G->n_members; m++) {
    const Node *n = G->members[m];
    if (p->internal[n->id] || !p->why[n->id])
      continue;
    fprintf(f, "%s{\"name\": ", nb++ ? ", " : "");
    json_write_str(f, n->name);
    fprintf(f, ", \"why\": ");
    json_write_str(f, p->why[n->id]);
    fprintf(f, "}");
  }
  fprintf(f, "]}");
}

void fused_print_json(Cli *c, const Plan *p, FILE *f) {
  int *ord = kernel_order(c, p);
  fprintf(f, "{\n  \"model\": ");
  json_write_str(f, p->g->name);
  fprintf(f, ",\n  \"training\": %s,\n  \"fuse\": \"%s\",\n  \"n_nodes\": %d,\n"
             "  \"n_kernels\": %d,\n  \"n_internal\": %d,\n  \"n_literals\": %d,\n"
             "  \"kernels\": [\n",
          p->g->training ? "true" : "false", fuse_opts_text(&p->opts.fuse), count_members(p),
          p->n_groups, count_internal(p), count_literals(p));
  for (int k = 0; k < p->n_groups; k++) {
    json_kernel(c, p, k, &p->groups[ord[k]], f);
    fprintf(f, "%s\n", k + 1 < p->n_groups ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
}
