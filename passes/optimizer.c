/*
 * optimizer.c: the parameter update as graph nodes.
 *
 * After autodiff, each trainable parameter p has a gradient g.  This pass
 * appends the optimizer's arithmetic and records, for the end of the step,
 * p <- p' and state <- state' (graph_add_update), so the update is part of
 * the one graph that later passes fuse and plan.  The learning rate and the
 * step counter are inputs (train.lr, train.step): schedules change them per
 * step without rebuilding.  Equations follow PyTorch's (so fixtures match),
 * which avoid the seeds' slips listed in DIGEST.md section 7 (item 20):
 *
 *   weight decay     g <- g + wd p
 *   clipping         g <- g min(1, c / (||all g||_2 + 1e-6))
 *   sgd              v <- mu v + g;  p <- p - lr (nesterov ? g + mu v : v)
 *   adagrad          s <- s + g^2;   p <- p - lr g / (sqrt(s) + eps)
 *   rmsprop          r <- a r + (1 - a) g^2;  u = g / (sqrt(r) + eps);
 *                    with momentum: b <- mu b + u, p <- p - lr b; else p <- p - lr u
 *   adam             m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
 *                    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps),  t = 1, 2, ...
 *                    computed as PyTorch arranges it, two divisions an element:
 *                    p - (m / (sqrt(v) / sqrt(1 - b2^t) + eps)) (lr / (1 - b1^t))
 *
 * Optimizer state lives in parameters with trainable=false, named like
 * PyTorch's state: p.momentum_buffer, p.sum, p.square_avg, p.exp_avg,
 * p.exp_avg_sq.  They are saved and restored with the parameters.
 */
#include <string.h>

#include "passes.h"

typedef struct Opt {
  Graph *g;
  const TrainSpec *s;
  Node *lr, *step;
  const Node *param; /* provenance of the nodes being made */
} Opt;

static Node *mk(Opt *o, Op op, Node *a, Node *b) {
  Node *in[2] = {a, b};
  Node *n = graph_add_checked(o->g, op, in, op_info[op].arity, NULL, o->param->loc);
  n->is_backward = true;
  n->grad_of = o->param;
  return n;
}

static Node *k(Opt *o, double v) {
  Node *c = graph_const(o->g, DT_F32, v, o->param->loc);
  c->is_backward = true;
  c->grad_of = o->param;
  return c;
}

#define ADD(a, b) mk(o, OP_ADD, a, b)
#define SUB(a, b) mk(o, OP_SUB, a, b)
#define MUL(a, b) mk(o, OP_MUL, a, b)
#define DIV(a, b) mk(o, OP_DIV, a, b)

/* The suffixes of optimizer state names, as PyTorch calls the state. */
static const char *const state_names[] = {"momentum_buffer", "sum", "square_avg", "exp_avg",
                                          "exp_avg_sq"};
enum { ST_MOMENTUM, ST_SUM, ST_SQUARE_AVG, ST_EXP_AVG, ST_EXP_AVG_SQ };

bool optimizer_state_of(const Graph *g, const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot)
    return false;
  for (int i = 0; i < countof(state_names); i++)
    if (strcmp(dot + 1, state_names[i]) == 0) {
      char param[512];
      snprintf(param, sizeof param, "%.*s", (int)(dot - name), name);
      Node *p = graph_find(g, param);
      return p && p->op == OP_PARAM && p->trainable;
    }
  return false;
}

static Node *state(Opt *o, int which) {
  const char *suffix = state_names[which];
  const Node *p = o->param;
  Init zeros = {RT_INIT_ZEROS, 0, 0, 0, 0};
  return graph_param(o->g, arena_fmt(o->g->arena, "%s.%s", p->name, suffix), DT_F32, p->shape,
                     zeros, false, p->loc);
}

/* a x + b y for scalars a, b */
static Node *blend(Opt *o, double a, Node *x, double b, Node *y) {
  return ADD(MUL(x, k(o, a)), MUL(y, k(o, b)));
}

/* g / (sqrt(s) + eps) */
static Node *scaled(Opt *o, Node *g, Node *s) {
  return DIV(g, ADD(mk(o, OP_SQRT, s, NULL), k(o, o->s->eps)));
}

static Node *step_sgd(Opt *o, Node *p, Node *g) {
  if (o->s->momentum == 0)
    return SUB(p, MUL(g, o->lr));
  Node *v = state(o, ST_MOMENTUM);
  Node *v2 = ADD(MUL(v, k(o, o->s->momentum)), g);
  graph_add_update(o->g, v, v2);
  Node *u = o->s->nesterov ? ADD(g, MUL(v2, k(o, o->s->momentum))) : v2;
  return SUB(p, MUL(u, o->lr));
}

static Node *step_adagrad(Opt *o, Node *p, Node *g) {
  Node *s = state(o, ST_SUM);
  Node *s2 = ADD(s, MUL(g, g));
  graph_add_update(o->g, s, s2);
  return SUB(p, MUL(scaled(o, g, s2), o->lr));
}

static Node *step_rmsprop(Opt *o, Node *p, Node *g) {
  Node *r = state(o, ST_SQUARE_AVG);
  Node *r2 = blend(o, o->s->alpha, r, 1 - o->s->alpha, MUL(g, g));
  graph_add_update(o->g, r, r2);
  Node *u = scaled(o, g, r2);
  if (o->s->momentum != 0) {
    Node *b = state(o, ST_MOMENTUM);
    Node *b2 = ADD(MUL(b, k(o, o->s->momentum)), u);
    graph_add_update(o->g, b, b2);
    u = b2;
  }
  return SUB(p, MUL(u, o->lr));
}

static Node *step_adam(Opt *o, Node *p, Node *g) {
  double b1 = o->s->beta1, b2 = o->s->beta2;
  Node *m = state(o, ST_EXP_AVG), *v = state(o, ST_EXP_AVG_SQ);
  Node *m2 = blend(o, b1, m, 1 - b1, g);
  Node *v2 = blend(o, b2, v, 1 - b2, MUL(g, g));
  graph_add_update(o->g, m, m2);
  graph_add_update(o->g, v, v2);
  Node *bc1 = SUB(k(o, 1), mk(o, OP_POW, k(o, b1), o->step));
  Node *bc2 = SUB(k(o, 1), mk(o, OP_POW, k(o, b2), o->step));
  /* PyTorch's arrangement: two divisions an element, not three */
  Node *denom = ADD(DIV(mk(o, OP_SQRT, v2, NULL), mk(o, OP_SQRT, bc2, NULL)), k(o, o->s->eps));
  return SUB(p, MUL(DIV(m2, denom), DIV(o->lr, bc1)));
}

/* The global norm of all gradients and the factor min(1, c / (norm + 1e-6)). */
static Node *clip_factor(Opt *o, Node *const *grads, int n) {
  Node **sq = arena_alloc(o->g->arena, sizeof(Node *) * (size_t)n);
  for (int i = 0; i < n; i++) {
    Attrs at;
    attrs_default(OP_SUM, &at); /* all axes */
    Node *gg = MUL(grads[i], grads[i]);
    sq[i] = graph_add_checked(o->g, OP_SUM, &gg, 1, &at, o->param->loc);
    sq[i]->is_backward = true;
    sq[i]->grad_of = o->param;
  }
  Node *total = n == 1 ? sq[0] : graph_add_checked(o->g, OP_ADD_N, sq, n, NULL, o->param->loc);
  total->is_backward = true;
  Node *norm = mk(o, OP_SQRT, total, NULL);
  graph_rename(o->g, norm, "grad_norm");
  Node *f = DIV(k(o, o->s->clip_norm), ADD(norm, k(o, 1e-6)));
  return mk(o, OP_MINIMUM, f, k(o, 1));
}

static Node *hyper_input(Graph *g, const char *name, Node *const *params) {
  Node *n = graph_input(g, name, DT_F32, shape_scalar(), params[0]->loc);
  n->is_backward = true;
  return n;
}

void pass_optimizer(Graph *g, const TrainSpec *s, Node *const *params, Node *const *grads,
                    int n, Node **lr, Node **step) {
  ASSERT(n > 0);
  Opt opt = {g, s, NULL, NULL, params[0]}, *o = &opt;
  *lr = o->lr = hyper_input(g, "train.lr", params);
  *step = o->step = hyper_input(g, "train.step", params);
  Node *factor = s->clip_norm > 0 ? clip_factor(o, grads, n) : NULL;
  for (int i = 0; i < n; i++) {
    Node *p = params[i], *gr = grads[i];
    o->param = p;
    if (s->weight_decay != 0)
      gr = ADD(gr, MUL(p, k(o, s->weight_decay)));
    if (factor)
      gr = MUL(gr, factor);
    Node *p2 = NULL;
    switch (s->opt) {
    case OPT_SGD: p2 = step_sgd(o, p, gr); break;
    case OPT_ADAGRAD: p2 = step_adagrad(o, p, gr); break;
    case OPT_RMSPROP: p2 = step_rmsprop(o, p, gr); break;
    case OPT_ADAM: p2 = step_adam(o, p, gr); break;
    }
    graph_rename(g, p2, arena_fmt(g->arena, "new(%s)", p->name));
    graph_add_update(g, p, p2);
  }
}
