/*
 * test_fuse.c: operator fusion (passes/fuse.c groups nodes, ir/lower_fuse.c
 * makes their kernels, the planner sees only what they store).
 *
 *  - small models written here: what fuses, what does not, and the reason
 *    recorded at each boundary;
 *  - --fuse's words;
 *  - every model in models/, inference and training step: the fused
 *    program computes exactly the unfused one's bits (each member keeps
 *    its own kernel's formula), with fewer kernels and a plan that
 *    verifies; every fused kernel passes kir_verify.  (test_codegen runs
 *    the fused programs against the reference evaluator.)
 */
#include "kiln_test.h"
#include "program.h"
#include "rt_pool.h"


static Node *value(Graph *g, const char *name) {
  for (int i = 0; i < g->n_values; i++)
    if (strcmp(g->values[i].name, name) == 0)
      return g->values[i].node;
  fail_msg("no value %s", name);
  return NULL;
}

static Plan plan_of(Graph *g, Node *const *roots, int n, FuseOpts f) {
  Plan p;
  plan_build(g, roots, n, &(PlanOpts){.fuse = f}, &p);
  char err[512];
  if (!plan_verify(g, roots, n, &p, err, sizeof err))
    fail_msg("plan of %s does not verify: %s", g->name, err);
  return p;
}

static Node **outputs(Compiled *c, int *n) {
  *n = c->g->n_outputs;
  Node **r = arena_alloc(c->a, sizeof(Node *) * (size_t)(*n + 1));
  for (int i = 0; i < *n; i++)
    r[i] = c->g->outputs[i].node;
  return r;
}

/* relu(x * 2 + b): one kernel, and only y has a buffer. */
static void chain(void **state) {
  Compiled c = compile_text("model m() {\n  input x: f32[4, 8]\n  input b: f32[8]\n"
                            "  t = x * 2 + b\n  y = relu(t)\n  output y\n}\n");
  MUST_COMPILE(c);
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  Node *y = value(c.g, "y"), *t = value(c.g, "t");
  const FuseGroup *G = plan_group(&p, y);
  assert_non_null(G);
  assert_ptr_equal(G->anchor, y);
  assert_int_equal(G->n_members, 3);
  assert_true(G->eltwise);
  assert_true(p.internal[t->id]);
  assert_int_equal(p.offset[t->id], -1);
  assert_int_equal(p.time[t->id], -1);
  Kernel *k = program_kernel_at(c.a, &p, y);
  assert_string_equal(k->name, "mul_add_relu_y");
  assert_int_equal(k->n_members, 3);
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  /* inputs x and b (the constant 2 is a literal: kind const); then y */
  assert_int_equal(k->n_bufs, 3);
  assert_int_equal(k->bufs[2].node, y->id);
  assert_int_equal(k->bufs[2].role, KB_OUT);
  /* unfused: three kernels, t has a buffer */
  Plan q = plan_of(c.g, roots, n, FUSE_NONE);
  assert_false(q.internal[t->id]);
  assert_true(q.offset[t->id] >= 0);
  assert_int_equal(plan_group(&q, y)->n_members, 1);
  compiled_free(&c);
}

static void variants_agree(Graph *g, Node *const *roots, int n, const char *what,
                           const FuseOpts *variants, int n_variants, int *k0, int *k1);

/* The live constants of g: how many, and how many are literals in plan p. */
static int constants(const Graph *g, const Plan *p, int *literals) {
  int n = 0;
  *literals = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_CONST && (p->time[i] >= 0 || p->internal[i])) {
      n++;
      *literals += p->internal[i];
      assert_true(!p->internal[i] || (p->time[i] < 0 && p->offset[i] < 0));
    }
  return n;
}

/* Kind const: in a training step, the constants elementwise nodes read
 * (relu's scale, sgd's learning rate, the mean's 1/N...) are literals in
 * their readers' kernels: never scheduled, no buffer, no kernel input.  The
 * loss's seed, read by cross_entropy_back (not elementwise), keeps its
 * kernel and buffer.  Off, every constant is a kernel again.  The same
 * bits either way. */
static void constants_literal(void **state) {
  static const char text[] = "model m(N = 4) {\n"
                             "  input x: f32[N, 8]\n"
                             "  input y: i32[N]\n"
                             "  z = dense(relu(dense(x, out=8) * 2 + 0.5), out=3)\n"
                             "  output z\n"
                             "  loss = cross_entropy(z, y)\n"
                             "}\n"
                             "train m {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n";
  Compiled c = compile_opts(text, true, NULL, 0);
  MUST_COMPILE(c);
  TrainStep ts = {0};
  build_train_step(c.g, &c.d, &ts);
  Plan p = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){0});
  int lits, n = constants(c.g, &p, &lits);
  assert_true(lits >= 3 && lits == n - 1);
  const Node *seed = NULL;
  for (int i = 0; i < c.g->n_nodes; i++) {
    const Node *v = c.g->nodes[i];
    if (v->op == OP_CROSS_ENTROPY_BACK)
      for (int j = 0; j < v->n_in; j++)
        seed = v->in[j]->op == OP_CONST ? v->in[j] : seed;
  }
  assert_non_null(seed);
  assert_false(p.internal[seed->id]);
  assert_true(p.time[seed->id] >= 0 && p.offset[seed->id] >= 0);
  /* no kernel reads a literal's buffer; the seed's kernel is there */
  for (int s = 0; s < p.n_order; s++) {
    const Node *v = p.order[s];
    Kernel *k = program_kernel_at(c.a, &p, v);
    assert_true(v->op != OP_CONST || (k && strncmp(k->name, "const_", 6) == 0));
    for (int b = 0; k && b < k->n_bufs; b++)
      assert_true(k->bufs[b].node < 0 || !p.internal[k->bufs[b].node] ||
                  c.g->nodes[k->bufs[b].node]->op != OP_CONST);
  }
  /* plan_verify holds a literal to having no place */
  for (int i = 0; i < c.g->n_nodes; i++)
    if (c.g->nodes[i]->op == OP_CONST && p.internal[i]) {
      char err[256];
      p.offset[i] = 0;
      assert_false(plan_verify(c.g, ts.roots, ts.n_roots, &p, err, sizeof err));
      assert_non_null(strstr(err, "a literal in its readers, has a step or a place"));
      p.offset[i] = -1;
      break;
    }
  Plan q = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){.no_const = true});
  assert_int_equal(constants(c.g, &q, &lits), n);
  assert_int_equal(lits, 0);
  const FuseOpts on[] = {FUSE_NONE, {0}}, off[] = {FUSE_NONE, {.no_const = true}};
  int k0, with, without;
  variants_agree(c.g, ts.roots, ts.n_roots, "constants", on, 2, &k0, &with);
  variants_agree(c.g, ts.roots, ts.n_roots, "constants", off, 2, &k0, &without);
  assert_int_equal(without - with, n - 1); /* one kernel per constant made a literal */
  compiled_free(&c);
}

/* relu(dense(x) + r): the matmul leads the kernel (epilogue), its result
 * never stored on its own; the kernel's interpreter and compiled runs
 * (GEMM schedule plus epilogue) agree with the unfused program. */
static void epilogue(void **state) {
  Compiled c = compile_text("model m() {\n  input x: f32[8, 16]\n  input r: f32[8, 32]\n"
                            "  d = dense(x, out=32)\n  y = relu(d + r)\n  output y\n}\n");
  MUST_COMPILE(c);
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  Node *y = value(c.g, "y");
  const FuseGroup *G = plan_group(&p, y);
  assert_non_null(G->head);
  assert_int_equal(G->head->op, OP_MATMUL);
  assert_true(p.internal[G->head->id]);
  for (int m = 0; m < G->n_members; m++)
    assert_true(G->members[m] == y || p.internal[G->members[m]->id]);
  Kernel *k = program_kernel_at(c.a, &p, y);
  assert_ptr_equal(k->head, G->head);
  assert_true(k->n_head > 0 && k->n_head < k->body->n_body);
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  Plan q = plan_of(c.g, roots, n, (FuseOpts){.no_epilogue = true});
  assert_null(plan_group(&q, y)->head);
  assert_false(q.internal[G->head->id]);
  assert_string_equal(q.why[G->head->id], "epilogue fusion is off (--fuse)");
  compiled_free(&c);
}

/* sum(x * x) never stores x * x; a value read twice is stored, and why. */
static void reduce_and_boundaries(void **state) {
  Compiled c = compile_text("model m() {\n  input x: f32[16, 8]\n  sq = x * x\n"
                            "  s = sum(sq, axis=1, keepdims=true)\n  e = exp(x)\n  a = e + 1\n  b = e * s\n"
                            "  output a\n  output b\n}\n");
  MUST_COMPILE(c);
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){.no_row = true});
  Node *sq = value(c.g, "sq"), *s = value(c.g, "s"), *e = value(c.g, "e"), *b = value(c.g, "b");
  assert_true(p.internal[sq->id]);
  assert_int_equal(p.group[sq->id], p.group[s->id]);
  assert_false(p.internal[e->id]);
  assert_string_equal(p.why[e->id], "read by 2 kernels");
  assert_string_equal(p.why[s->id], "row fusion is off (--fuse)");
  /* the reduce kind alone off: x * x gets its buffer back */
  Plan q = plan_of(c.g, roots, n, (FuseOpts){.no_reduce = true, .no_row = true});
  assert_false(q.internal[sq->id]);
  assert_string_equal(q.why[sq->id], "reduce fusion is off (--fuse)");
  /* the row kind: s joins b's kernel, sq with it; e stays apart (a's
   * kernel reduces no row) */
  Plan r = plan_of(c.g, roots, n, (FuseOpts){0});
  const FuseGroup *B = plan_group(&r, b);
  assert_true(B->row && B->eltwise);
  assert_int_equal(r.group[s->id], r.group[b->id]);
  assert_int_equal(r.group[sq->id], r.group[b->id]);
  assert_true(r.internal[s->id] && r.internal[sq->id]);
  assert_string_equal(r.why[e->id], "read by 2 kernels");
  compiled_free(&c);
}

/* The update of parameter target's state or of the parameter itself: the
 * parameter whose name it extends ("fc1.w.exp_avg" of "fc1.w"). */
static const Node *owner(const TrainStep *ts, const Node *target) {
  for (int i = 0; i < ts->n_params; i++) {
    size_t len = strlen(ts->params[i]->name);
    if (target == ts->params[i] ||
        (strncmp(target->name, ts->params[i]->name, len) == 0 && target->name[len] == '.'))
      return ts->params[i];
  }
  return NULL;
}

/* The end of a test model: output z, its cross-entropy loss with labels y,
 * trained by SGD. */
#define CE_SGD_TAIL                                                                         \
  "  output z\n  loss = cross_entropy(z, y)\n}\n"                                            \
  "train m {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n"

/* c's training step (c compiled for training) in ts, and its plan with
 * every fusion kind on. */
static Plan train_plan(Compiled *c, TrainStep *ts) {
  MUST_COMPILE(*c);
  build_train_step(c->g, &c->d, ts);
  return plan_of(c->g, ts->roots, ts->n_roots, (FuseOpts){0});
}

/* A forward value the backward pass reads is stored, and says so; each
 * parameter's Adam update is one kernel writing p, m and v. */
static void training_step(void **state) {
  Compiled c = compile_opts("model m(N = 8) {\n  input x: f32[N, 6]\n  input y: i32[N]\n"
                            "  h = relu(dense(x, out=5))\n  z = dense(h, out=3)\n"
                            "  output z\n  loss = cross_entropy(z, y)\n}\n"
                            "train m {\n  minimize loss\n  optimizer adam(lr=0.01)\n}\n",
                            true, NULL, 0);
  TrainStep ts = {0};
  Plan p = train_plan(&c, &ts);
  Node *h = value(c.g, "h");
  assert_non_null(p.why[h->id]);
  assert_non_null(strstr(p.why[h->id], "the backward pass needs it"));
  int n_updates = 0;
  for (int u = 0; u < c.g->n_updates; u++) {
    const Node *param = owner(&ts, c.g->updates[u].target);
    assert_non_null(param);
    for (int w = 0; w < c.g->n_updates; w++)
      if (c.g->updates[w].target == param) /* the parameter's own update: the same kernel */
        assert_int_equal(p.group[c.g->updates[u].value->id], p.group[c.g->updates[w].value->id]);
    n_updates++;
  }
  assert_int_equal(n_updates, 3 * ts.n_params); /* p, m, v */
  Plan q = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){.no_multi = true});
  int g0 = q.group[c.g->updates[0].value->id], g1 = q.group[c.g->updates[1].value->id];
  assert_int_not_equal(g0, g1);
  compiled_free(&c);
}

/* Members of p's group of n that are sums or means. */
static int row_sums(const Plan *p, const Node *n) {
  const FuseGroup *G = plan_group(p, n);
  int k = 0;
  for (int m = 0; m < G->n_members; m++)
    k += G->members[m]->op == OP_SUM || G->members[m]->op == OP_MEAN;
  return k;
}

static void model_variants(Graph *g, Node *const *roots, int n, const char *what, bool kinds);

/* Layer norm: forward one row kernel (two means, no buffer between them);
 * in a training step the values the backward pass reads are stored by it,
 * and the backward's two row sums share a kernel too; --fuse without row
 * leaves them apart.  Fused, unfused and each kind off: the same bits. */
static void layernorm_rows(void **state) {
  Compiled c = compile_opts("model m(N = 6) {\n  input x: f32[N, 80]\n  input y: i32[N]\n"
                            "  h = layernorm(dense(x, out=80) * 2, name=\"ln\")\n"
                            "  z = dense(h, out=3)\n"
                            "  output z\n  loss = cross_entropy(z, y)\n}\n"
                            "train m {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n",
                            true, NULL, 0);
  MUST_COMPILE(c);
  Node *h = value(c.g, "h");
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  const FuseGroup *G = plan_group(&p, h);
  assert_true(G->row);
  assert_int_equal(row_sums(&p, h), 2);
  int first = h->id;
  for (int m = 0; m < G->n_members; m++)
    if (G->members[m]->op == OP_MEAN && G->members[m]->id < first)
      first = G->members[m]->id;
  for (int i = first; i < h->id; i++) /* the whole layer norm */
    if (p.group[i] >= 0)
      assert_int_equal(p.group[i], p.group[h->id]);
  for (int m = 0; m < G->n_members; m++)
    assert_true(G->members[m] == h || p.internal[G->members[m]->id]);
  Kernel *k = program_kernel_at(c.a, &p, h);
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  /* dense's matmul, its bias, the weight, the bias; h (2 and eps are literals: kind const) */
  assert_int_equal(k->n_bufs, 5);
  Plan q = plan_of(c.g, roots, n, (FuseOpts){.no_row = true});
  assert_false(plan_group(&q, h)->row);
  assert_int_equal(row_sums(&q, h), 0);
  TrainStep ts = {0};
  build_train_step(c.g, &c.d, &ts);
  Plan t = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){0});
  assert_true(plan_group(&t, h)->row);
  assert_int_equal(row_sums(&t, h), 2);
  int stored = 0, back = 0;
  for (int m = 0; m < plan_group(&t, h)->n_members; m++) {
    const Node *v = plan_group(&t, h)->members[m];
    if (v != h && !t.internal[v->id]) { /* needed by the backward pass: materialized */
      assert_non_null(strstr(t.why[v->id], "stored by its row kernel"));
      assert_true(t.offset[v->id] >= 0);
      stored++;
    }
  }
  assert_true(stored >= 2); /* x - mean and rsqrt(var + eps) */
  for (int gi = 0; gi < t.n_groups; gi++)
    if (t.groups[gi].row && t.groups[gi].anchor->is_backward)
      back = back > row_sums(&t, t.groups[gi].anchor) ? back : row_sums(&t, t.groups[gi].anchor);
  assert_int_equal(back, 2); /* sum(dy * w * xc) and the sum of the centred gradient */
  rt_set_threads(2);
  model_variants(c.g, ts.roots, ts.n_roots, "layernorm training step", true);
  rt_set_threads(1);
  compiled_free(&c);
}

/* A matmul read by a slice never heads the slice's kernel: the head writes
 * its product into the kernel's output and the epilogue reads it at each
 * element's own index, but a slice reads other places (it would have no
 * buffer).  concat of one input: its gradient is a slice of the whole
 * gradient (same shape as the matmul dy W^T it reads, so the head's shape
 * test alone let it join), then relu's mask; found by
 * tests/fuzz/pipeline_fuzz.py ("buffer ... has no place").  The training
 * step compiles, every variant the same bits. */
static void sliced_matmul_is_no_head(void **state) {
  Compiled c = compile_opts("model m(N = 4) {\n  input x: f32[N, 8]\n  input y: i32[N]\n"
                            "  f = relu(dense(x, out=6))\n"
                            "  z = dense(concat(f), out=3)\n"
                            "  output z\n  loss = cross_entropy(z, y)\n}\n"
                            "train m {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n",
                            true, NULL, 0);
  MUST_COMPILE(c);
  TrainStep ts = {0};
  build_train_step(c.g, &c.d, &ts);
  Plan p = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){0});
  int sliced = 0;
  for (int i = 0; i < c.g->n_nodes; i++) {
    const Node *s = c.g->nodes[i];
    if (s->op != OP_SLICE || p.group[s->id] < 0 || s->in[0]->op != OP_MATMUL)
      continue;
    const Node *mm = s->in[0];
    assert_null(plan_group(&p, s)->head);
    assert_false(p.internal[mm->id]);
    assert_string_equal(p.why[mm->id], "slice reads it at other places than its own element");
    sliced++;
  }
  assert_int_equal(sliced, 1);
  model_variants(c.g, ts.roots, ts.n_roots, "a sliced matmul's training step", true);
  compiled_free(&c);
}

/* Short rows (each a chain of adds, several rows side by side) and a max:
 * layer norm then a softmax written out, all one row kernel. */
static void row_chains(void **state) {
  Compiled c = compile_text("model m() {\n  input x: f32[12, 6]\n  h = layernorm(x, name=\"ln\")\n"
                            "  e = exp(h - max(h, axis=-1, keepdims=true))\n"
                            "  y = e / sum(e, axis=-1, keepdims=true)\n  output y\n}\n");
  MUST_COMPILE(c);
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  Node *y = value(c.g, "y");
  const FuseGroup *G = plan_group(&p, y);
  assert_true(G->row);
  int reductions = 0;
  for (int m = 0; m < G->n_members; m++)
    reductions += G->members[m]->op == OP_MAX || G->members[m]->op == OP_SUM ||
                  G->members[m]->op == OP_MEAN;
  assert_int_equal(reductions, 4);
  assert_int_equal(p.n_groups, 1);
  model_variants(c.g, roots, n, "layer norm and softmax rows", true);
  compiled_free(&c);
}

/* The most partials one reduction loop of s updates (its KS_SET children). */
static int loop_partials(const KStmt *s) {
  int most = 0, here = 0;
  for (int i = 0; i < s->n_body; i++) {
    int in = loop_partials(s->body[i]);
    most = in > most ? in : most;
    here += s->body[i]->kind == KS_SET;
  }
  return s->kind == KS_LOOP && s->loop == KL_REDUCE && here > most ? here : most;
}

/* Rows in partial sums come in blocks (lower_row.c): a layer norm and a
 * sum of squares over rows of 32 (16 partials, 4 rows a block), 20 (8
 * partials, 8 rows), 37 (16, 5 left after the loop) and, with 6 rows, 16
 * (8 partials; 6 rows take blocks of 2).  The block's partials are one
 * loop's; fused, unfused and each kind off: the same bits. */
static void row_blocks(void **state) {
  static const int shapes[][3] = {{24, 32, 64}, {24, 20, 64}, {24, 37, 64}, {6, 16, 16}};
  for (int i = 0; i < countof(shapes); i++) {
    char text[512];
    snprintf(text, sizeof text,
             "model m() {\n  input x: f32[%d, %d]\n  h = layernorm(x, name=\"ln\")\n"
             "  output y = h * sum(h * h, axis=-1, keepdims=true)\n}\n",
             shapes[i][0], shapes[i][1]);
    Compiled c = compile_text(text);
    MUST_COMPILE(c);
    int n;
    Node **roots = outputs(&c, &n);
    Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
    Node *y = value(c.g, "y");
    assert_true(plan_group(&p, y)->row);
    Kernel *k = program_kernel_at(c.a, &p, y);
    if (loop_partials(k->body) != shapes[i][2])
      fail_msg("rows of %d: %d partials in one loop, want %d", shapes[i][1],
               loop_partials(k->body), shapes[i][2]);
    model_variants(c.g, roots, n, "row blocks", true);
    compiled_free(&c);
  }
}

/* Whether v is a sum or mean over batch norm's channels: [1, C, 1, 1]. */
static bool channel_sum(const Node *v) {
  return (v->op == OP_SUM || v->op == OP_MEAN) && v->shape.rank == 4 && v->shape.dim[0] == 1 &&
         v->shape.dim[1] > 1 && v->shape.dim[2] == 1 && v->shape.dim[3] == 1;
}

/* The per-channel sums and means of a plan's row groups, forward or
 * backward; in *groups how many row groups have some, in *alone how many
 * such sums are not in a row group. */
static int channel_row_sums(const Plan *p, bool backward, int *groups, int *alone) {
  int k = 0;
  *groups = *alone = 0;
  for (int gi = 0; gi < p->n_groups; gi++) {
    const FuseGroup *G = &p->groups[gi];
    int s = 0;
    for (int m = 0; m < G->n_members; m++)
      s += channel_sum(G->members[m]) && G->members[m]->is_backward == backward;
    if (G->row)
      k += s, *groups += s > 0;
    else
      *alone += s;
  }
  return k;
}

/* Batch norm in training: its statistics (means over N, H, W: rows of
 * strided runs, one per channel), x - mean, rsqrt and the scale, shift and
 * relu one row kernel, the running statistics' kernels moved after it;
 * the backward's two per-channel sums and dx one kernel.  8x8 images sum
 * runs of 64 in partial sums, 4x4 ones one chain per channel.  Fused,
 * unfused and each kind off: the same bits. */
static void batchnorm_rows(void **state) {
  Compiled c = compile_opts(
      "model m(N = 4) {\n  input x: f32[N, 3, 8, 8]\n  input y: i32[N]\n"
      "  h = relu(batchnorm(conv2d(x, out=6, kernel=3, pad=1, bias=false), name=\"bn1\"))\n"
      "  g = relu(batchnorm(conv2d(h, out=5, kernel=3, stride=2, pad=1, bias=false), "
      "name=\"bn2\"))\n"
      "  z = dense(flatten(global_avgpool(g)), out=3)\n"
      CE_SGD_TAIL,
      true, NULL, 0);
  TrainStep ts = {0};
  Plan t = train_plan(&c, &ts);
  Node *h = value(c.g, "h");
  const FuseGroup *G = plan_group(&t, h);
  assert_true(G->row);
  assert_int_equal(row_sums(&t, h), 2); /* mean and variance */
  int stored = 0;
  for (int m = 0; m < G->n_members; m++) {
    const Node *v = G->members[m];
    if (v->op == OP_MEAN) /* read by the running statistics' kernels, after this one */
      assert_non_null(strstr(t.why[v->id], "moved after that one"));
    stored += v != h && !t.internal[v->id];
  }
  assert_true(stored >= 4); /* mean, variance, x - mean, rsqrt(var + eps), ... */
  int groups, alone;
  assert_int_equal(channel_row_sums(&t, false, &groups, &alone), 4);
  assert_int_equal(groups, 2);
  assert_int_equal(alone, 0);
  assert_int_equal(channel_row_sums(&t, true, &groups, &alone), 4);
  assert_int_equal(groups, 2); /* each sum(dy * w * xc) and sum(dxc) with dx */
  assert_int_equal(alone, 4);  /* the gradients of the scale and shift, read by no row kernel */
  Plan q = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){.no_row = true});
  assert_int_equal(channel_row_sums(&q, false, &groups, &alone), 0);
  assert_int_equal(alone, 4);
  rt_set_threads(2);
  model_variants(c.g, ts.roots, ts.n_roots, "batchnorm training step", true);
  rt_set_threads(1);
  compiled_free(&c);
}

/* How many of p's boundaries (Plan.why) give a reason containing text. */
static int count_why(const Compiled *c, const Plan *p, const char *text) {
  int n = 0;
  for (int i = 0; i < c->g->n_nodes; i++)
    n += p->why[i] && strstr(p->why[i], text) != NULL;
  return n;
}

/* Two batch norms in a row, no convolution between: a channel's second
 * statistics could take the first's normalization, but each reduction
 * re-evaluates the elementwise values it reads, so a strided row kernel
 * chains two reductions at most: the boundary falls at x - mean times
 * rsqrt and says why. */
static void batchnorm_chain(void **state) {
  Compiled c = compile_opts(
      "model m(N = 4) {\n  input x: f32[N, 6, 8, 8]\n  input y: i32[N]\n"
      "  h = relu(batchnorm(x, name=\"bn1\"))\n  g = relu(batchnorm(h, name=\"bn2\"))\n"
      "  z = dense(flatten(global_avgpool(g)), out=3)\n"
      CE_SGD_TAIL,
      true, NULL, 0);
  TrainStep ts = {0};
  Plan t = train_plan(&c, &ts);
  int groups, alone;
  assert_int_equal(channel_row_sums(&t, false, &groups, &alone), 4);
  assert_int_equal(groups, 2);
  assert_int_equal(row_sums(&t, value(c.g, "g")), 2);
  assert_int_equal(count_why(&c, &t, "a third in a chain"), 1);
  model_variants(c.g, ts.roots, ts.n_roots, "batchnorm chain training step", false);
  compiled_free(&c);
}

/* resnet_small's training step: each batch norm's statistics of its
 * first two stages in a forward row kernel (the two of relu(b + s) in
 * one), and its backward's two sums with dx in one; the last stage's (64
 * channels of 8x8: runs of 64 floats 16 KiB apart) refused, and so are
 * [32, 64, 8, 8]'s, not [32, 66, 8, 8]'s (passes/fuse.c, aliased_runs). */
/* A training batchnorm, ReLU and small head over [n, ch, hw, hw]: its
 * forward channel row sums (channel_row_sums), and in *why how many
 * boundaries give a reason containing text. */
static int bn_model_rows(int n, int ch, int hw, const char *text, int *why) {
  char src[512];
  snprintf(src, sizeof src,
           "model m() {\n  input x: f32[%d, %d, %d, %d]\n  input y: i32[%d]\n"
           "  h = relu(batchnorm(x, name=\"bn\"))\n  z = dense(flatten(global_avgpool(h)), out=3)\n"
           CE_SGD_TAIL, n, ch, hw, hw, n);
  Compiled c = compile_opts(src, true, NULL, 0);
  TrainStep ts = {0};
  Plan t = train_plan(&c, &ts);
  int groups, alone, sums = channel_row_sums(&t, false, &groups, &alone);
  *why = count_why(&c, &t, text);
  compiled_free(&c);
  return sums;
}

static void resnet_batchnorm_rows(void **state) {
  char *text = read_model("resnet_small.kiln");
  Compiled c = compile_opts(text, true, NULL, 0);
  free(text);
  TrainStep ts = {0};
  Plan t = train_plan(&c, &ts);
  int groups, alone, why;
  assert_int_equal(channel_row_sums(&t, false, &groups, &alone), 20);
  assert_int_equal(groups, 9); /* a block's two last batch norms (b + s) share one */
  assert_int_equal(alone, 10); /* the last stage's 5 */
  assert_int_equal(channel_row_sums(&t, true, &groups, &alone), 20);
  assert_int_equal(groups, 10);
  assert_true(count_why(&c, &t, "are runs of 64 elements 4096 apart") >= 5);
  compiled_free(&c);
  for (int ch = 64; ch <= 66; ch += 2)
    assert_int_equal(bn_model_rows(32, ch, 8, "", &why), ch == 64 ? 0 : 2);
  /* strided rows over more than 2 MiB are refused (STRIDED_ROWS_MAX_BYTES):
   * [8, 64, 32, 32] is 2 MiB and keeps its rows, [16, 64, 32, 32] not */
  for (int n = 8; n <= 16; n += 8) {
    assert_int_equal(bn_model_rows(n, 64, 32, "span 4096 KiB: over 2048 KiB", &why),
                     n == 8 ? 2 : 0);
    assert_true(n == 8 ? why == 0 : why > 0);
  }
}

static void opts_words(void **state) {
  FuseOpts o;
  assert_true(fuse_opts_parse("none", &o));
  assert_true(o.no_eltwise && o.no_reduce && o.no_multi);
  assert_string_equal(fuse_opts_text(&o), "none");
  assert_true(fuse_opts_parse("all", &o));
  assert_string_equal(fuse_opts_text(&o), "all");
  assert_true(fuse_opts_parse("eltwise,multi", &o));
  assert_true(!o.no_eltwise && o.no_reduce && !o.no_multi && o.no_epilogue);
  assert_string_equal(fuse_opts_text(&o), "eltwise,multi");
  assert_true(fuse_opts_parse("epilogue,reduce", &o));
  assert_string_equal(fuse_opts_text(&o), "reduce,epilogue");
  assert_true(fuse_opts_parse("row,eltwise", &o));
  assert_true(!o.no_row && !o.no_eltwise && o.no_reduce && o.no_fold);
  assert_string_equal(fuse_opts_text(&o), "eltwise,row");
  assert_true(fuse_opts_parse("none", &o) && o.no_row && o.no_scatter);
  assert_true(fuse_opts_parse("scatter,row", &o) && !o.no_scatter && o.no_eltwise);
  assert_string_equal(fuse_opts_text(&o), "row,scatter");
  assert_true(fuse_opts_parse("reduce", &o));
  assert_string_equal(fuse_opts_text(&o), "reduce");
  assert_true(fuse_opts_parse("none", &o) && o.no_view && o.no_deriv);
  assert_true(fuse_opts_parse("view,deriv", &o) && !o.no_view && !o.no_deriv && o.no_row);
  assert_string_equal(fuse_opts_text(&o), "deriv,view");
  assert_true(fuse_opts_parse("none", &o) && o.no_batchsum);
  assert_true(fuse_opts_parse("batchsum,view", &o) && !o.no_batchsum && !o.no_view && o.no_deriv);
  assert_string_equal(fuse_opts_text(&o), "view,batchsum");
  assert_true(fuse_opts_parse("none", &o) && o.no_const);
  assert_true(fuse_opts_parse("const,eltwise", &o) && !o.no_const && !o.no_eltwise && o.no_view);
  assert_string_equal(fuse_opts_text(&o), "eltwise,const");
  assert_false(fuse_opts_parse("bogus", &o));
  assert_false(fuse_opts_parse("eltwise,", &o));
  assert_false(fuse_opts_parse("", &o) && !o.no_eltwise);
}

/* --- kind scatter: an add_n of slice_backs ---------------------------------------- */

typedef struct Scatter {
  Compiled c;
  Node *gx; /* x's gradient */
  Plan p;   /* of gx, all kinds on */
} Scatter;

/* The gradient of `loss` in model `body` (over an input x: f32[6, 8])
 * with respect to x, an add_n of slice_backs, and its fused plan. */
static Scatter scatter_case(const char *body) {
  Scatter s;
  char text[512];
  snprintf(text, sizeof text, "model m() {\n  input x: f32[6, 8]\n%s  output y = x\n}\n", body);
  s.c = compile_text(text);
  MUST_COMPILE(s.c);
  Node *x = graph_find(s.c.g, "x");
  pass_autodiff(s.c.g, &s.c.d, graph_find_value(s.c.g, "loss"), &x, 1, &s.gx);
  assert_int_equal(s.gx->op, OP_ADD_N);
  for (int j = 0; j < s.gx->n_in; j++)
    assert_int_equal(s.gx->in[j]->op, OP_SLICE_BACK);
  s.p = plan_of(s.c.g, &s.gx, 1, (FuseOpts){0});
  return s;
}

static int group_ops(const FuseGroup *G, Op op) {
  int k = 0;
  for (int m = 0; m < G->n_members; m++)
    k += G->members[m]->op == op;
  return k;
}

/* A split's gradient: the two slice_backs and the formulas of their
 * gradients are one kernel; a's gradient is -0 where a > 0 (relu(-a)
 * passes +0, neg makes it -0), which the unfused sum turns into +0. */
static void scatter_split(void **state) {
  Scatter s = scatter_case("  a, b = split(x, 2, axis=1)\n"
                           "  loss = sum(relu(-a) * 3) + sum(tanh(b))\n");
  const FuseGroup *G = plan_group(&s.p, s.gx);
  assert_true(G->scatter && !G->eltwise && !G->row);
  assert_int_equal(group_ops(G, OP_SLICE_BACK), 2);
  assert_true(group_ops(G, OP_NEG) >= 1); /* a's gradient formula joined */
  for (int m = 0; m < G->n_members - 1; m++)
    assert_true(s.p.internal[G->members[m]->id]);
  Kernel *k = program_kernel_at(s.c.a, &s.p, s.gx);
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  assert_int_equal(k->n_members, G->n_members);
  Plan q = plan_of(s.c.g, &s.gx, 1, (FuseOpts){.no_scatter = true});
  assert_false(plan_group(&q, s.gx)->scatter);
  assert_true(q.n_groups > s.p.n_groups);
  assert_non_null(strstr(q.why[s.gx->in[0]->id], "scatter fusion is off (--fuse)"));
  model_variants(s.c.g, &s.gx, 1, "split gradient (scatter)", true);
  compiled_free(&s.c);
}

/* Strided slices that leave gaps (zeros there) and slices that overlap or
 * an add_n that also adds a dense term (no scatter; the boundary says why). */
static void scatter_gaps_and_refusals(void **state) {
  Scatter s = scatter_case("  p = x[:, 0:8:2]\n  q = x[1:6, 1:8:4]\n"
                           "  loss = sum(p * p) + sum(exp(q))\n");
  assert_true(plan_group(&s.p, s.gx)->scatter);
  assert_int_equal(group_ops(plan_group(&s.p, s.gx), OP_SLICE_BACK), 2);
  Kernel *k = program_kernel_at(s.c.a, &s.p, s.gx);
  char err[256];
  assert_true(kir_verify(k, err, sizeof err));
  /* zeros in row 0's 4 odd columns and rows 1-5's columns 3 and 7, then 2 slices */
  assert_int_equal(k->body->n_body, 6 + 2);
  model_variants(s.c.g, &s.gx, 1, "strided slices with gaps (scatter)", true);
  compiled_free(&s.c);
  s = scatter_case("  p = x[::2, ::2]\n  q = x[1::2, 1::2]\n  loss = sum(p * p) + sum(exp(q))\n");
  k = program_kernel_at(s.c.a, &s.p, s.gx); /* 24 gaps: one fill of the whole */
  assert_int_equal(k->body->n_body, 1 + 2);
  model_variants(s.c.g, &s.gx, 1, "a checkerboard's two halves (scatter)", false);
  compiled_free(&s.c);
  s = scatter_case("  p = x[:, 0:5]\n  q = x[:, 3:8]\n  loss = sum(p * p) + sum(q * q)\n");
  assert_false(plan_group(&s.p, s.gx)->scatter);
  assert_int_not_equal(s.p.group[s.gx->in[0]->id], s.p.group[s.gx->id]);
  assert_non_null(strstr(s.p.why[s.gx->in[1]->id], "overlap"));
  model_variants(s.c.g, &s.gx, 1, "overlapping slices (no scatter)", true);
  compiled_free(&s.c);
  s = scatter_case("  p = x[2:4, 1:3]\n  q = x[3:6, 2:8:3]\n  loss = sum(p * p) + sum(q * q)\n");
  assert_false(plan_group(&s.p, s.gx)->scatter); /* they share x[3, 2] */
  assert_non_null(strstr(s.p.why[s.gx->in[0]->id], "overlap"));
  compiled_free(&s.c);
  Compiled c = compile_text("model m() {\n  input x: f32[6, 8]\n  a = x[:, 0:4]\n"
                            "  loss = sum(tanh(a)) + sum(x * x)\n  output y = x\n}\n");
  MUST_COMPILE(c);
  Node *x = graph_find(c.g, "x"), *gx;
  pass_autodiff(c.g, &c.d, graph_find_value(c.g, "loss"), &x, 1, &gx);
  Plan p = plan_of(c.g, &gx, 1, (FuseOpts){0});
  assert_false(plan_group(&p, gx)->scatter);
  for (int j = 0; j < gx->n_in; j++)
    if (gx->in[j]->op == OP_SLICE_BACK)
      assert_non_null(strstr(p.why[gx->in[j]->id], "scatter takes slice_backs only"));
  compiled_free(&c);
}

/* The LSTM's training step: per time step, the split of its gates; and its
 * input projection sliced at each step: T + 1 scatter kernels, the same
 * bits as without them, fewer kernels. */
static void scatter_lstm(void **state) {
  char *text = read_model("lstm.kiln");
  Compiled c = compile_model_small(text, true);
  MUST_COMPILE(c);
  int n;
  Node **roots = kt_step_roots(&c, true, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  int four = 0, wide = 0;
  for (int gi = 0; gi < p.n_groups; gi++) {
    const FuseGroup *G = &p.groups[gi];
    int sb = G->scatter ? group_ops(G, OP_SLICE_BACK) : 0;
    four += sb == 4;
    wide += sb == 16;
  }
  assert_int_equal(four, 16); /* T = 16 steps: i, f, g, o */
  assert_int_equal(wide, 1);  /* xw[:, t] for every t */
  const FuseOpts variants[] = {{0}, {.no_scatter = true}};
  int k_on, k_off;
  variants_agree(c.g, roots, n, "lstm training step (scatter)", variants, 2, &k_on, &k_off);
  print_message("  lstm training step: %d kernels with scatter, %d without\n", k_on, k_off);
  assert_true(k_on + 4 * 16 + 16 <= k_off); /* 5 kernels for 1 per step, 17 for 1 */
  compiled_free(&c);
  free(text);
}

/* A reshape of its anchor's shape joins an elementwise kernel, and so a
 * slice before it: each LSTM step's xw[:, t] (a slice [N, 1, 4H], then a
 * reshape to [N, 4H]) is read by the gates' matmul epilogue in place,
 * with no copy; the bits are the unfused ones, also for a slice reshaped
 * to other axes.  Refused: a reshape of another shape than its anchor's,
 * and an elementwise producer of one. */
static void reshaped_slices(void **state) {
  char *text = read_model("lstm.kiln");
  Compiled c = compile_model_small(text, false);
  MUST_COMPILE(c);
  int n;
  Node **roots = outputs(&c, &n);
  Plan p = plan_of(c.g, roots, n, (FuseOpts){0});
  int gates = 0;
  for (int gi = 0; gi < p.n_groups; gi++) {
    const FuseGroup *G = &p.groups[gi];
    assert_false(G->n_members == 1 && G->anchor->op == OP_RESHAPE);
    if (!G->head || group_ops(G, OP_SLICE) != 1 || group_ops(G, OP_RESHAPE) != 1)
      continue;
    gates++;
    /* the slice's index from the loop's strides (its [N, 1, 4H] onto the
     * loop's [N, 4H]), not unravelled with a division per element */
    bool stored[8];
    for (int m = 0; m < G->n_members && m < 8; m++)
      stored[m] = !p.internal[G->members[m]->id];
    char *ktext = NULL;
    size_t klen = 0;
    FILE *mem = open_memstream(&ktext, &klen);
    kir_print(lower_fused(c.a, G->members, stored, G->n_members, G->eltwise), mem);
    fclose(mem);
    if (strstr(ktext, "floordiv") || strstr(ktext, "mod"))
      fail_msg("%s divides per element:\n%s", G->anchor->name, ktext);
    free(ktext);
  }
  assert_int_equal(gates, 16); /* T = 16 steps */
  const FuseOpts variants[] = {FUSE_NONE, {0}, {.no_epilogue = true}};
  int k_off, k_on;
  variants_agree(c.g, roots, n, "lstm inference (reshaped slices)", variants, 3, &k_off, &k_on);
  print_message("  lstm inference: %d kernels fused, %d unfused\n", k_on, k_off);
  compiled_free(&c);
  free(text);
  c = compile_text("model m() {\n  input x: f32[4, 6]\n  input z: f32[4, 3, 6]\n"
                   "  r = reshape(x, [4, 1, 6])\n  e = exp(x)\n  q = reshape(e, [4, 2, 3])\n"
                   "  s = z[:, 1:2]\n  output a = r + z\n  output b = q * 2\n"
                   "  output c = reshape(s, [4, 2, 3]) * 3\n}\n");
  MUST_COMPILE(c);
  roots = outputs(&c, &n);
  p = plan_of(c.g, roots, n, (FuseOpts){0});
  Node *r = value(c.g, "r"), *e = value(c.g, "e"), *q = value(c.g, "q");
  assert_false(p.internal[r->id]);
  assert_string_equal(p.why[r->id], "reshape joins elementwise kernels of its own shape only");
  assert_true(p.internal[q->id]);
  assert_false(p.internal[e->id]);
  assert_non_null(strstr(p.why[e->id], "reads it in another shape"));
  assert_true(p.internal[value(c.g, "s")->id]); /* [4, 1, 6] in a [4, 2, 3] loop: unravelled */
  variants_agree(c.g, roots, n, "reshape boundaries", variants, 2, &k_off, &k_on);
  compiled_free(&c);
}

/* --- every model: fused == unfused, bit for bit ----------------------------------- */

/* Parameter values by node (node ids move when pass_share_derivatives
 * rewrites the graph between variants; the nodes stay). */
typedef struct Params {
  const Node **node;
  float **data;
  int n;
} Params;

static Params params_of(const Graph *g) {
  Params ps = {calloc((size_t)g->n_nodes + 1, sizeof(Node *)),
               calloc((size_t)g->n_nodes + 1, sizeof(float *)), 0};
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_PARAM) {
      int64_t k = shape_numel(&g->nodes[i]->shape);
      float *d = calloc((size_t)k + 1, 4);
      for (int64_t j = 0; j < k; j++)
        d[j] = (float)(0.2 * rng_normal(rng_seed_for(5, g->nodes[i]->name), (uint64_t)j));
      ps.node[ps.n] = g->nodes[i];
      ps.data[ps.n++] = d;
    }
  return ps;
}

static void params_free(Params *ps) {
  for (int i = 0; i < ps->n; i++)
    free(ps->data[i]);
  free(ps->node), free(ps->data);
}

static float *param_data(const Params *ps, const Node *v) {
  for (int i = 0; i < ps->n; i++)
    if (ps->node[i] == v)
      return ps->data[i];
  fail_msg("no values for parameter %s", v->name);
  return NULL;
}

static void fill(Program *p, const Graph *g, const Params *ps) {
  for (int i = 0; i < p->n_params; i++)
    program_bind_param(p, p->params[i], param_data(ps, p->params[i]));
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *v = g->nodes[i];
    void *at = v->op == OP_INPUT ? program_value(p, v) : NULL;
    int64_t k = shape_numel(&v->shape);
    for (int64_t j = 0; at && j < k; j++)
      if (v->dtype == DT_F32)
        ((float *)at)[j] = (float)rng_normal(rng_seed_for(3, v->name), (uint64_t)j);
      else
        ((int32_t *)at)[j] = (int32_t)(j % 3);
  }
}

/* One step with fusion f; the roots' bytes in out[].  With the kinds view,
 * batchsum and deriv on, the graph first gets their rewrites, as kiln's
 * cli_train_passes does (once: a rewritten graph has nothing left to
 * rewrite). */
static int run_variant(Graph *g, Node *const *roots, int n, FuseOpts f, const Params *ps,
                       char **out, int *n_groups) {
  Program p;
  char err[2048];
  PlanOpts po = {.fuse = f};
  if (!f.no_view)
    pass_matmul_views(g);
  if (!f.no_batchsum)
    pass_matmul_batch_sums(g);
  if (!f.no_deriv)
    pass_share_derivatives(g);
  if (!program_compile(&p, g, roots, n, &po, &(CgOpts){.opt_level = 2}, err, sizeof err))
    fail_msg("%s: %s", g->name, err);
  if (!plan_verify(g, roots, n, &p.plan, err, sizeof err))
    fail_msg("%s (--fuse=%s): %s", g->name, fuse_opts_text(&f), err);
  for (int s = 0; s < p.plan.n_order; s++) {
    Kernel *k = program_kernel_at(g->arena, &p.plan, p.plan.order[s]);
    if (k && !kir_verify(k, err, sizeof err))
      fail_msg("%s: kernel %s: %s", g->name, k->name, err);
  }
  fill(&p, g, ps);
  program_run(&p, 1);
  for (int r = 0; r < n; r++) {
    out[r] = malloc((size_t)node_bytes(roots[r]) + 1);
    memcpy(out[r], program_value(&p, roots[r]), (size_t)node_bytes(roots[r]));
  }
  int kernels = p.n_kernels;
  *n_groups = p.plan.n_groups;
  program_free(&p);
  return kernels;
}

/* The variants' results are the first's, bit for bit; the first two's
 * kernel counts (*k0, *k1).  The first variant should be FUSE_NONE: it
 * runs on the graph as built, before any rewrite. */
static void variants_agree(Graph *g, Node *const *roots, int n, const char *what,
                           const FuseOpts *variants, int n_variants, int *k0, int *k1) {
  Params ps = params_of(g);
  char **base = calloc((size_t)n, sizeof(char *)), **got = calloc((size_t)n, sizeof(char *));
  int groups;
  *k0 = run_variant(g, roots, n, variants[0], &ps, base, &groups);
  for (int v = 1; v < n_variants; v++) {
    int kv = run_variant(g, roots, n, variants[v], &ps, got, &groups);
    if (v == 1)
      *k1 = kv;
    for (int r = 0; r < n; r++) {
      if (memcmp(base[r], got[r], (size_t)node_bytes(roots[r])) != 0)
        fail_msg("%s: %s differs with --fuse=%s", what, roots[r]->name,
                 fuse_opts_text(&variants[v]));
      free(got[r]);
    }
  }
  for (int r = 0; r < n; r++)
    free(base[r]);
  params_free(&ps);
  free(base), free(got);
}

/* The gelu_back nodes of g, and of them the derivatives deriv.c made. */
static int gelu_backs(const Graph *g, int *shared) {
  int n = 0;
  *shared = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->op == OP_GELU_BACK) {
      n++;
      *shared += deriv_is_shared(g->nodes[i]);
    }
  return n;
}

static Node *shared_derivative(const Graph *g) {
  for (int i = 0; i < g->n_nodes; i++)
    if (deriv_is_shared(g->nodes[i]))
      return g->nodes[i];
  fail_msg("no shared derivative in %s", g->name);
  return NULL;
}

/* A dense layer, an activation (%s) and a second dense layer, trained. */
static const char gelu_model[] =
    "model m(N = 6) {\n  input x: f32[N, 10]\n  input y: i32[N]\n"
    "  a = dense(x, out=40)\n  h = %s\n  z = dense(h, out=3)\n"
    "  output z\n  loss = cross_entropy(z, y)\n}\n"
    "train m {\n  minimize loss\n  optimizer adam(lr=0.01)\n}\n";

/* Kind deriv: gelu's derivative leaves the backward pass (deriv.c) and is
 * computed and stored by gelu's kernel, the pre-activation then needing no
 * buffer; the step's bits are the unrewritten graph's, unfused. */
static void gelu_derivative(void **state) {
  const char *acts[] = {"gelu(a)", "gelu(a, approximate=\"tanh\")"};
  for (int m = 0; m < 2; m++) {
    char text[1024];
    snprintf(text, sizeof text, gelu_model, acts[m]);
    Compiled c = compile_opts(text, true, NULL, 0);
    MUST_COMPILE(c);
    TrainStep ts = {0};
    build_train_step(c.g, &c.d, &ts);
    int shared;
    assert_int_equal(gelu_backs(c.g, &shared), 1);
    assert_int_equal(shared, 0);
    Params ps = params_of(c.g);
    char **plain = calloc((size_t)ts.n_roots, sizeof(char *));
    char **got = calloc((size_t)ts.n_roots, sizeof(char *));
    int groups;
    int k_plain = run_variant(c.g, ts.roots, ts.n_roots, FUSE_NONE, &ps, plain, &groups);
    /* the rewrite: dy * gelu_back(1, x), the derivative just before gelu */
    assert_int_equal(pass_share_derivatives(c.g), 1);
    assert_int_equal(pass_share_derivatives(c.g), 0); /* nothing left to rewrite */
    char err[512];
    assert_true(graph_verify(c.g, err, sizeof err));
    Node *d = shared_derivative(c.g), *h = value(c.g, "h"), *a = value(c.g, "a");
    assert_int_equal(d->id + 1, h->id);
    assert_int_equal(d->at.mode, h->at.mode);
    assert_ptr_equal(d->in[1], a);
    Plan p = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){0});
    assert_int_equal(p.group[d->id], p.group[h->id]);
    assert_false(p.internal[d->id]);
    assert_non_null(strstr(p.why[d->id], "gelu's derivative for the backward pass"));
    assert_true(p.internal[a->id]); /* read by gelu and d only: no buffer */
    assert_non_null(plan_group(&p, h)->head);  /* dense's matmul leads the kernel */
    int readers = 0;
    for (int i = d->id + 1; i < c.g->n_nodes; i++)
      for (int j = 0; j < c.g->nodes[i]->n_in; j++)
        if (c.g->nodes[i]->in[j] == d) {
          assert_int_equal(c.g->nodes[i]->op, OP_MUL); /* the backward reads it */
          assert_int_not_equal(p.group[i], p.group[d->id]);
          readers++;
        }
    assert_int_equal(readers, 1);
    Kernel *k = program_kernel_at(c.a, &p, plan_group(&p, h)->members[0]);
    assert_non_null(k);
    assert_true(kir_verify(k, err, sizeof err));
    assert_int_equal(k->n_members, 4); /* matmul, bias add, d, gelu */
    /* without the kind, the derivative is computed where the backward reads it */
    Plan q = plan_of(c.g, ts.roots, ts.n_roots, (FuseOpts){.no_deriv = true});
    assert_int_not_equal(q.group[d->id], q.group[h->id]);
    assert_false(q.internal[a->id]);
    /* the same bits as the unrewritten, unfused step; and fewer kernels */
    int k_fused = run_variant(c.g, ts.roots, ts.n_roots, (FuseOpts){0}, &ps, got, &groups);
    assert_true(k_fused < k_plain);
    for (int r = 0; r < ts.n_roots; r++) {
      if (memcmp(plain[r], got[r], (size_t)node_bytes(ts.roots[r])) != 0)
        fail_msg("%s: %s differs with gelu's derivative shared", acts[m], ts.roots[r]->name);
      free(plain[r]), free(got[r]);
    }
    free(plain), free(got);
    params_free(&ps);
    compiled_free(&c);
  }
}

/* Live transposes of the step (weights' included), and matmuls reading or
 * writing a view. */
/* The live nodes of op `op` in the step; in *viewing the live matmuls
 * reading or writing a view, in *summing (if asked) those summing batch
 * axes. */
static int live_ops(const Graph *g, const TrainStep *ts, Op op, int *viewing, int *summing) {
  bool *live = calloc((size_t)g->n_nodes + 1, 1);
  graph_live(g, ts->roots, ts->n_roots, live);
  int n = 0, s = 0;
  *viewing = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const Node *x = g->nodes[i];
    n += live[i] && x->op == op;
    *viewing += live[i] && x->op == OP_MATMUL && x->at.view;
    s += live[i] && x->op == OP_MATMUL && x->at.bsum;
  }
  if (summing)
    *summing = s;
  free(live);
  return n;
}

static int live_transposes(const Graph *g, const TrainStep *ts, int *viewing) {
  return live_ops(g, ts, OP_TRANSPOSE, viewing, NULL);
}

/* The training step (SGD) of a model m(N = 3) whose `body` makes h
 * [N, T, 12] from its inputs, classified by a dense layer on its mean over
 * T into 4 classes of labels y. */
static Compiled sgd_step(const char *body, TrainStep *ts) {
  char text[1024];
  snprintf(text, sizeof text,
           "model m(N = 3) {\n  input y: i32[N]\n%s  z = dense(mean(h, axis=1), out=4)\n"
           "  loss = cross_entropy(z, y)\n}\n"
           "train m {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n",
           body);
  Compiled c = compile_opts(text, true, NULL, 0);
  MUST_COMPILE(c);
  build_train_step(c.g, &c.d, ts);
  return c;
}

/* c's step unfused, then with only the fusion kinds given (whose rewrites
 * then stay in the graph): the same bytes in every root, a graph that
 * verifies.  Returns how many kernels the kinds saved. */
static int step_rewritten(Compiled *c, const TrainStep *ts, const char *kinds, const char *how) {
  Params ps = params_of(c->g);
  char **plain = calloc((size_t)ts->n_roots, sizeof(char *));
  char **got = calloc((size_t)ts->n_roots, sizeof(char *));
  int groups, k_plain = run_variant(c->g, ts->roots, ts->n_roots, FUSE_NONE, &ps, plain, &groups);
  FuseOpts only;
  assert_true(fuse_opts_parse(kinds, &only));
  int k_only = run_variant(c->g, ts->roots, ts->n_roots, only, &ps, got, &groups);
  char err[512];
  if (!graph_verify(c->g, err, sizeof err))
    fail_msg("--fuse=%s: %s", kinds, err);
  for (int r = 0; r < ts->n_roots; r++) {
    if (memcmp(plain[r], got[r], (size_t)node_bytes(ts->roots[r])) != 0)
      fail_msg("%s differs %s", ts->roots[r]->name, how);
    free(plain[r]), free(got[r]);
  }
  free(plain), free(got);
  params_free(&ps);
  return k_plain - k_only;
}

/* Kind view: attention's head transposes, forward and backward, are
 * folded into the batched matmuls (passes/view.c); the step keeps its bits
 * and loses those kernels. */
static void attention_views(void **state) {
  TrainStep ts = {0};
  Compiled c = sgd_step("  input x: f32[N, 5, 12]\n  h = attention(x, heads=3)\n", &ts);
  int viewing, before = live_transposes(c.g, &ts, &viewing);
  assert_int_equal(viewing, 0);
  assert_int_equal(before, 8); /* q, k, v split, o joined; and their gradients' */
  int dropped = step_rewritten(&c, &ts, "view", "with the transposes folded");
  assert_int_equal(live_transposes(c.g, &ts, &viewing), 0);
  assert_int_equal(viewing, 6); /* Q K^T, P V; dP, dV, dQ, dK */
  assert_int_equal(dropped, 8);
  assert_int_equal(pass_matmul_views(c.g), 0); /* nothing left to fold */
  compiled_free(&c);
}

/* Kind batchsum: the weight gradients of dense layers on [N, T, D] (the
 * sum over N of x^T dy, and the same through attention's projections) are
 * summed by their matmuls (passes/batchsum.c); the step keeps its bits and
 * loses the sums' kernels. */
static void dense_batch_sums(void **state) {
  TrainStep ts = {0};
  Compiled c = sgd_step("  input x: f32[N, 7, 12]\n  h = attention(dense(x, out=12), heads=3)\n", &ts);
  int viewing, summing, sums = live_ops(c.g, &ts, OP_SUM, &viewing, &summing);
  assert_int_equal(summing, 0);
  int dropped = step_rewritten(&c, &ts, "view,batchsum", "with the sums folded");
  int left = live_ops(c.g, &ts, OP_SUM, &viewing, &summing);
  assert_int_equal(summing, 5); /* the dense layer's weight, attention's q, k, v, proj */
  assert_int_equal(sums - left, 5);
  assert_int_equal(dropped, 5 + 8); /* the sums, and the head transposes (view) */
  assert_int_equal(pass_matmul_batch_sums(c.g), 0); /* nothing left to fold */
  compiled_free(&c);
}

/* Fusion off, then on; every kind alone off too when `kinds` (the
 * results must not depend on which kinds are on). */
static void model_variants(Graph *g, Node *const *roots, int n, const char *what, bool kinds) {
  const FuseOpts variants[] = {FUSE_NONE,           {0},
                               {.no_multi = true},  {.no_reduce = true},
                               {.no_eltwise = true}, {.no_epilogue = true},
                               {.no_row = true},    {.no_scatter = true},
                               {.no_deriv = true},  {.no_view = true},
                               {.no_batchsum = true}, {.no_const = true}};
  int k0, k1;
  variants_agree(g, roots, n, what, variants, kinds ? countof(variants) : 2, &k0, &k1);
  print_message("  %-34s %4d kernels unfused, %4d fused\n", what, k0, k1);
  assert_true(k1 < k0);
}

/* Each kind alone off on two training steps; not in a sanitizer build
 * (KT_SANITIZED): there it took 140 of test_fuse's 430 s, and a step with
 * one kind off mixes the paths that the fused and the unfused steps, both
 * still run there, take. */
static void fused_step(Graph *g, Node **roots, int n, const char *file, bool train,
                       const char *what) {
  bool kinds = train && !KT_SANITIZED &&
               (strcmp(file, "lenet5.kiln") == 0 || strcmp(file, "transformer.kiln") == 0);
  model_variants(g, roots, n, what, kinds);
}

static void every_model(void **state) {
  rt_set_threads(2);
  kt_every_model_step(fused_step);
  rt_set_threads(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(chain),         cmocka_unit_test(constants_literal),
      cmocka_unit_test(epilogue),
      cmocka_unit_test(reduce_and_boundaries),
      cmocka_unit_test(training_step), cmocka_unit_test(gelu_derivative),
      cmocka_unit_test(attention_views), cmocka_unit_test(dense_batch_sums),
      cmocka_unit_test(sliced_matmul_is_no_head),
      cmocka_unit_test(opts_words),
      cmocka_unit_test(layernorm_rows), cmocka_unit_test(row_chains), cmocka_unit_test(row_blocks),
      cmocka_unit_test(batchnorm_rows), cmocka_unit_test(batchnorm_chain),
      cmocka_unit_test(resnet_batchnorm_rows),
      cmocka_unit_test(scatter_split), cmocka_unit_test(scatter_gaps_and_refusals),
      cmocka_unit_test(scatter_lstm),
      cmocka_unit_test(reshaped_slices),
      cmocka_unit_test(every_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
