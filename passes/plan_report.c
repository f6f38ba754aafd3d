/*
 * plan_report.c: what a memory plan did, for people and for scripts.
 *
 *   naive      every value its own buffer (the sum of their sizes)
 *   planned    the arena the plan lays out
 *   lower      the most bytes alive at one step under the schedule: no
 *              placement of these buffers can use less
 *   persistent parameters, optimizer state, weight-derived values (these
 *              also as "prepacked": passes/prepack.c)
 * plus, per value, its offset, size, lifetime and the values it shares
 * bytes with, and an SVG with time across and addresses up.
 */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static double mib(int64_t b) { return (double)b / (1024.0 * 1024.0); }

/* Scheduled weight-derived values: computed by the prepare step, not the step. */
static int n_prepacked(const Plan *p) {
  int n = 0;
  for (int k = 0; k < p->n_order; k++)
    n += p->order[k]->derived;
  return n;
}

void plan_print_summary(const Plan *p, FILE *f) {
  int prepacked = n_prepacked(p);
  fprintf(f, "memplan: %d values, naive %.3f MiB -> planned %.3f MiB (lower bound %.3f MiB; "
             "planned/lower %.3f, planned/naive %.3f); persistent %.3f MiB",
          p->n_order - prepacked, mib(p->naive), mib(p->arena), mib(p->lower),
          p->lower ? (double)p->arena / (double)p->lower : 1.0,
          p->naive ? (double)p->arena / (double)p->naive : 1.0, mib(p->persistent));
  if (prepacked)
    fprintf(f, " (%d prepacked, %.1f KiB)", prepacked, (double)p->prepacked / 1024.0);
  fputc('\n', f);
}

/* Names of the other values at the same offset, "-" if none. */
static void print_sharers(const Plan *p, const Node *v, FILE *f) {
  int k = 0;
  for (int i = 0; i < p->n_order; i++) {
    const Node *u = p->order[i];
    if (u == v || p->offset[u->id] < 0)
      continue;
    int64_t a = p->offset[u->id], b = a + p->size[u->id];
    int64_t c = p->offset[v->id], d = c + p->size[v->id];
    if (a < d && c < b)
      fprintf(f, "%s%s", k++ ? "," : " ", u->name);
  }
  if (!k)
    fprintf(f, " -");
}

void plan_print_text(const Plan *p, FILE *f) {
  fprintf(f, "# ");
  plan_print_summary(p, f);
  fprintf(f, "# schedule: %s; in place: %s; sharing: %s\n",
          p->opts.min_memory ? "min-memory" : "default", p->opts.no_inplace ? "off" : "on",
          p->opts.no_share ? "off" : "on");
  fprintf(f, "# %-5s %-28s %12s %12s %13s  %-8s shares bytes with\n", "step", "value", "offset",
          "bytes", "alive", "in place");
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    if (p->offset[v->id] < 0)
      continue;
    char alive[32], ip[64] = "-";
    snprintf(alive, sizeof alive, "[%d, %d]", p->first[v->id], p->last[v->id]);
    if (p->alias[v->id] >= 0)
      snprintf(ip, sizeof ip, "%%%d", p->alias[v->id]);
    fprintf(f, "  %-5d %-28s %12lld %12lld %13s  %-8s", k, v->name,
            (long long)p->offset[v->id], (long long)p->size[v->id], alive, ip);
    print_sharers(p, v, f);
    fputc('\n', f);
  }
}

void plan_print_json(const Plan *p, FILE *f) {
  fprintf(f, "{\n  \"naive\": %lld, \"planned\": %lld, \"lower_bound\": %lld, \"persistent\": %lld,\n"
             "  \"prepacked\": %lld, \"schedule\": \"%s\", \"inplace\": %s, \"share\": %s,\n  \"values\": [\n",
          (long long)p->naive, (long long)p->arena, (long long)p->lower, (long long)p->persistent,
          (long long)p->prepacked, p->opts.min_memory ? "min-memory" : "default", p->opts.no_inplace ? "false" : "true",
          p->opts.no_share ? "false" : "true");
  int k = 0;
  for (int i = 0; i < p->n_order; i++) {
    const Node *v = p->order[i];
    if (p->offset[v->id] < 0)
      continue;
    fprintf(f, "%s    {\"id\": %d, \"name\": \"%s\", \"offset\": %lld, \"bytes\": %lld, "
               "\"first\": %d, \"last\": %d, \"inplace_of\": %d}",
            k++ ? ",\n" : "", v->id, v->name, (long long)p->offset[v->id],
            (long long)p->size[v->id], p->first[v->id], p->last[v->id], p->alias[v->id]);
  }
  fprintf(f, "\n  ]\n}\n");
}

/* One rectangle per value: x = its lifetime, y = its bytes (address up). */
void plan_print_svg(const Plan *p, FILE *f) {
  const double W = 1000, H = 600, L = 70, B = 40;
  double xs = (W - L - 10) / (p->n_order ? p->n_order : 1);
  double ys = (H - B - 30) / (double)(p->arena ? p->arena : 1);
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
             "font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
  fprintf(f, "<text x=\"%.0f\" y=\"16\">arena %.3f MiB (lower bound %.3f MiB, naive %.3f MiB); "
             "time across, address up</text>\n", L, mib(p->arena), mib(p->lower), mib(p->naive));
  fprintf(f, "<rect x=\"%.0f\" y=\"24\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
             "stroke=\"#888\"/>\n", L, W - L - 10, H - B - 30);
  for (int k = 0; k < p->n_order; k++) {
    const Node *v = p->order[k];
    if (p->offset[v->id] < 0 || p->size[v->id] == 0)
      continue;
    double x = L + p->first[v->id] * xs, w = (p->last[v->id] - p->first[v->id] + 1) * xs;
    double y = H - B - (double)(p->offset[v->id] + p->size[v->id]) * ys;
    double h = (double)p->size[v->id] * ys;
    unsigned hue = (unsigned)(v->id * 47) % 360;
    fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"hsl(%u,60%%,"
               "%d%%)\" stroke=\"#333\" stroke-width=\"0.3\"><title>%s: %lld bytes at %lld, "
               "steps %d-%d</title></rect>\n", x, y, w, h > 0.5 ? h : 0.5, hue,
            v->is_backward ? 78 : 62, v->name, (long long)p->size[v->id],
            (long long)p->offset[v->id], p->first[v->id], p->last[v->id]);
  }
  fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">schedule step 0 .. %d</text>\n", L, H - 15,
          p->n_order - 1);
  fprintf(f, "<text x=\"4\" y=\"30\">%.2f MiB</text><text x=\"4\" y=\"%.0f\">0</text>\n",
          mib(p->arena), H - B);
  fprintf(f, "</svg>\n");
}
