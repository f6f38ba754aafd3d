/*
 * print.c: the three views of a graph (text, Graphviz DOT, JSON) and the
 * shape summary of `kiln check`.
 *
 * Text is for people: one line per node with its inputs, attributes, type,
 * FLOPs, bytes and source line.  DOT colours inputs, parameters, outputs
 * and constants.  JSON carries the same facts for scripts; its field names
 * are stable (tests/cli.sh reads them).
 */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static const char *human(double v, char *buf, size_t n) {
  const char *unit[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    u++;
  }
  snprintf(buf, n, u ? "%.3g%s" : "%.0f%s", v, unit[u]);
  return buf;
}

static const char *loc_str(Loc l, char *buf, size_t n) {
  if (!l.src)
    snprintf(buf, n, "-");
  else
    snprintf(buf, n, "%s:%d:%d", l.src->name, l.line, l.col);
  return buf;
}

static void print_ints(FILE *f, const char *name, const int *v, int n) {
  fprintf(f, " %s=", name);
  if (n == 2 && v[0] == v[1]) {
    fprintf(f, "%d", v[0]);
    return;
  }
  for (int i = 0; i < n; i++)
    fprintf(f, "%s%d", i ? "x" : "", v[i]);
}

void attrs_print(const Node *n, FILE *f) {
  const Attrs *a = &n->at;
  int axes[MAX_RANK];
  for (const AttrSpec *s = op_info[n->op].attrs; s->name; s++) {
    const char *p = (const char *)a + s->offset;
    switch (s->kind) {
    case AK_INT: fprintf(f, " %s=%d", s->name, *(const int *)p); break;
    case AK_AXIS: fprintf(f, " %s=%d", s->name, *(const int *)p); break;
    case AK_INT2: print_ints(f, s->name, (const int *)p, 2); break;
    case AK_FLOAT: fprintf(f, " %s=%g", s->name, *(const double *)p); break;
    case AK_BOOL:
      if (*(const bool *)p)
        fprintf(f, " %s", s->name);
      break;
    case AK_AXES:
      for (int i = 0; i < a->n_axes; i++)
        axes[i] = a->axes[i];
      fprintf(f, " %s=[", s->name);
      for (int i = 0; i < a->n_axes; i++)
        fprintf(f, "%s%d", i ? ", " : "", axes[i]);
      fprintf(f, "]");
      break;
    case AK_SHAPE:
      fprintf(f, " %s=[", s->name);
      for (int i = 0; i < a->n_shape; i++)
        fprintf(f, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
      fprintf(f, "]");
      break;
    case AK_ENUM: fprintf(f, " %s=%s", s->name, s->choices[*(const int *)p]); break;
    case AK_DTYPE: fprintf(f, " %s=%s", s->name, dtype_name(*(const DType *)p)); break;
    case AK_SEED: fprintf(f, " %s=%llu", s->name, (unsigned long long)*(const uint64_t *)p); break;
    }
  }
  if (n->op == OP_SLICE || n->op == OP_SLICE_BACK)
    for (int i = 0; i < n->in[0]->shape.rank; i++)
      fprintf(f, " %d:%lld:%lld:%lld", i, (long long)a->begin[i], (long long)a->end[i],
              (long long)a->step[i]);
  if (n->op == OP_CONST)
    fprintf(f, " %g", a->value);
  static const char *const viewed[] = {"view_a", "view_b", "view_out"};
  for (int v = 0; v < 3 && n->op == OP_MATMUL; v++) /* passes/view.c */
    if (a->view & (1 << v)) {
      fprintf(f, " %s=[", viewed[v]);
      for (int i = 0; i < (v < 2 ? n->in[v] : n)->shape.rank; i++)
        fprintf(f, "%s%d", i ? ", " : "", a->perm[v][i]);
      fprintf(f, "]");
    }
  if (n->op == OP_MATMUL && a->bsum) { /* passes/batchsum.c */
    fprintf(f, " sum_batch=[");
    for (int d = 0, k = 0; d < MAX_RANK; d++)
      if (a->bsum & (1 << d))
        fprintf(f, "%s%d", k++ ? ", " : "", d);
    fprintf(f, "]");
  }
}

static const char *role(const Node *n) {
  if (n->op == OP_INPUT)
    return "input";
  if (n->op == OP_PARAM)
    return n->trainable ? "param" : "state";
  if (n->op == OP_CONST)
    return "const";
  return n->is_output ? "output" : "value";
}

static double total_flops(const Graph *g) {
  double t = 0;
  for (int i = 0; i < g->n_nodes; i++)
    t += node_flops(g->nodes[i]);
  return t;
}

static void print_header(const Graph *g, FILE *f) {
  char b1[32], b2[32];
  fprintf(f, "# model %s(", g->name);
  for (int i = 0; i < g->n_consts; i++)
    fprintf(f, "%s%s = %s", i ? ", " : "", g->const_names[i], g->const_values[i]);
  fprintf(f, ")%s\n", g->training ? "  [training]" : "");
  int64_t bytes = 0;
  for (int i = 0; i < g->n_nodes; i++)
    bytes += g->nodes[i]->op == OP_PARAM ? 0 : node_bytes(g->nodes[i]);
  fprintf(f, "# %d nodes, %lld parameters (%lld trainable), %s FLOPs, %s bytes of values\n",
          g->n_nodes, (long long)graph_param_count(g, false), (long long)graph_param_count(g, true),
          human(total_flops(g), b1, sizeof b1), human((double)bytes, b2, sizeof b2));
}

void graph_print_text(const Graph *g, FILE *f, bool with_summary) {
  char tb[160], lb[256], h1[32], h2[32];
  bool *saved = calloc((size_t)g->n_nodes + 1, sizeof(bool));
  graph_saved_for_backward(g, saved);
  if (with_summary)
    print_header(g, f);
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    fprintf(f, "%s%%%-4d %-22s = %s", n->is_backward ? "  " : "", n->id, n->name, op_name(n->op));
    if (n->op == OP_PARAM)
      fprintf(f, " %s%s", init_name(n->init.kind), n->trainable ? "" : " (state)");
    if (n->n_in) {
      fprintf(f, "(");
      for (int j = 0; j < n->n_in; j++)
        fprintf(f, "%s%%%d", j ? ", " : "", n->in[j]->id);
      fprintf(f, ")");
    }
    attrs_print(n, f);
    fprintf(f, " : %s", node_type_str(n, tb, sizeof tb));
    if (n->is_output)
      fprintf(f, " output");
    if (saved[i])
      fprintf(f, " saved-for-backward");
    fprintf(f, "   # %s flop, %s B, %s", human(node_flops(n), h1, sizeof h1),
            human((double)node_bytes(n), h2, sizeof h2), loc_str(n->loc, lb, sizeof lb));
    if (n->grad_of)
      fprintf(f, ", backward of %%%d %s", n->grad_of->id, n->grad_of->name);
    fputc('\n', f);
  }
  for (int i = 0; i < g->n_outputs; i++)
    fprintf(f, "output %s = %%%d\n", g->outputs[i].name, g->outputs[i].node->id);
  for (int i = 0; i < g->n_updates; i++)
    fprintf(f, "update %s <- %%%d\n", g->updates[i].target->name, g->updates[i].value->id);
  free(saved);
}

/* --- DOT -------------------------------------------------------------------- */

static void dot_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    fputc(*s, f);
  }
}

void graph_print_dot(const Graph *g, FILE *f) {
  char tb[160];
  fprintf(f, "digraph \"");
  dot_escape(f, g->name);
  fprintf(f, "\" {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", "
             "fontname=\"Helvetica\", fontsize=10, fillcolor=white];\n");
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *n = g->nodes[i];
    const char *r = role(n);
    const char *color = n->is_backward ? "#e6dcf5"
                        : strcmp(r, "input") == 0 ? "#cfe8ff" : strcmp(r, "param") == 0 ? "#fff2b3"
                        : strcmp(r, "state") == 0 ? "#ffe0b3" : strcmp(r, "const") == 0 ? "#eeeeee"
                        : strcmp(r, "output") == 0 ? "#c8f0c8" : "white";
    fprintf(f, "  n%d [label=\"", n->id);
    dot_escape(f, n->name);
    fprintf(f, "\\n%s\\n%s", op_name(n->op), node_type_str(n, tb, sizeof tb));
    if (n->loc.src)
      fprintf(f, "\\nline %d", n->loc.line);
    fprintf(f, "\", fillcolor=\"%s\"];\n", color);
  }
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i]->n_in; j++)
      fprintf(f, "  n%d -> n%d;\n", g->nodes[i]->in[j]->id, g->nodes[i]->id);
  for (int i = 0; i < g->n_updates; i++) /* the value written back at the end of the step */
    fprintf(f, "  n%d -> n%d [style=dashed, constraint=false];\n", g->updates[i].value->id,
            g->updates[i].target->id);
  fprintf(f, "}\n");
}

/* --- JSON ------------------------------------------------------------------- */

void json_write_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void json_node(const Node *n, FILE *f) {
  fprintf(f, "    {\"id\": %d, \"name\": ", n->id);
  json_write_str(f, n->name);
  fprintf(f, ", \"op\": \"%s\", \"class\": \"%s\", \"role\": \"%s\", \"dtype\": \"%s\", \"shape\": [",
          op_name(n->op), op_class_name(op_info[n->op].cls), role(n), dtype_name(n->dtype));
  for (int i = 0; i < n->shape.rank; i++)
    fprintf(f, "%s%lld", i ? ", " : "", (long long)n->shape.dim[i]);
  fprintf(f, "], \"inputs\": [");
  for (int i = 0; i < n->n_in; i++)
    fprintf(f, "%s%d", i ? ", " : "", n->in[i]->id);
  fprintf(f, "], \"attrs\": ");
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  attrs_print(n, m);
  fclose(m);
  json_write_str(f, buf[0] == ' ' ? buf + 1 : buf);
  free(buf);
  fprintf(f, ", \"flops\": %.0f, \"bytes\": %lld", node_flops(n), (long long)node_bytes(n));
  if (n->op == OP_PARAM)
    fprintf(f, ", \"init\": \"%s\", \"trainable\": %s", init_name(n->init.kind),
            n->trainable ? "true" : "false");
  fprintf(f, ", \"backward\": %s", n->is_backward ? "true" : "false");
  if (n->grad_of)
    fprintf(f, ", \"grad_of\": %d", n->grad_of->id);
  fprintf(f, ", \"source\": ");
  if (n->loc.src) {
    fprintf(f, "{\"file\": ");
    json_write_str(f, n->loc.src->name);
    fprintf(f, ", \"line\": %d, \"col\": %d}", n->loc.line, n->loc.col);
  } else {
    fprintf(f, "null");
  }
  fprintf(f, "}");
}

void graph_print_json(const Graph *g, FILE *f) {
  fprintf(f, "{\n  \"model\": ");
  json_write_str(f, g->name);
  fprintf(f, ",\n  \"training\": %s,\n  \"constants\": {", g->training ? "true" : "false");
  for (int i = 0; i < g->n_consts; i++) {
    fprintf(f, "%s", i ? ", " : "");
    json_write_str(f, g->const_names[i]);
    fprintf(f, ": ");
    json_write_str(f, g->const_values[i]);
  }
  fprintf(f, "},\n  \"parameters\": %lld,\n  \"trainable_parameters\": %lld,\n",
          (long long)graph_param_count(g, false), (long long)graph_param_count(g, true));
  fprintf(f, "  \"flops\": %.0f,\n  \"nodes\": [\n", total_flops(g));
  for (int i = 0; i < g->n_nodes; i++) {
    json_node(g->nodes[i], f);
    fprintf(f, "%s\n", i + 1 < g->n_nodes ? "," : "");
  }
  fprintf(f, "  ],\n  \"outputs\": [");
  for (int i = 0; i < g->n_outputs; i++) {
    fprintf(f, "%s{\"name\": ", i ? ", " : "");
    json_write_str(f, g->outputs[i].name);
    fprintf(f, ", \"node\": %d}", g->outputs[i].node->id);
  }
  fprintf(f, "],\n  \"updates\": [");
  for (int i = 0; i < g->n_updates; i++)
    fprintf(f, "%s{\"target\": %d, \"value\": %d}", i ? ", " : "", g->updates[i].target->id,
            g->updates[i].value->id);
  fprintf(f, "]\n}\n");
}

/* --- the check summary ------------------------------------------------------- */

void graph_print_summary(const Graph *g, FILE *f) {
  char tb[160], h1[32], h2[32];
  fprintf(f, "model %s(", g->name);
  for (int i = 0; i < g->n_consts; i++)
    fprintf(f, "%s%s = %s", i ? ", " : "", g->const_names[i], g->const_values[i]);
  fprintf(f, "): ok\n");
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_INPUT)
      fprintf(f, "  input   %-16s %s\n", g->nodes[i]->name, node_type_str(g->nodes[i], tb, sizeof tb));
  for (int i = 0; i < g->n_outputs; i++)
    fprintf(f, "  output  %-16s %s\n", g->outputs[i].name,
            node_type_str(g->outputs[i].node, tb, sizeof tb));
  fprintf(f, "  values:\n");
  for (int i = 0; i < g->n_values; i++) {
    const Node *n = g->values[i].node;
    if (n->op != OP_INPUT && n->op != OP_PARAM)
      fprintf(f, "    %-20s %-24s %s\n", g->values[i].name, node_type_str(n, tb, sizeof tb),
              op_name(n->op));
  }
  int n_params = 0;
  int64_t pbytes = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM) {
      n_params++;
      pbytes += node_bytes(g->nodes[i]);
    }
  fprintf(f, "  parameters: %lld in %d tensors (%lld trainable), %s bytes\n",
          (long long)graph_param_count(g, false), n_params, (long long)graph_param_count(g, true),
          human((double)pbytes, h1, sizeof h1));
  fprintf(f, "  graph: %d nodes, %s FLOPs per run\n", g->n_nodes, human(total_flops(g), h2, sizeof h2));
  if (g->minimize)
    fprintf(f, "  train: minimize %s\n", g->minimize);
}
