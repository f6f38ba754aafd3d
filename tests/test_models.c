/*
 * test_models.c: every model in models/ builds (inference and training
 * graphs), verifies, and evaluates to sane, deterministic values with the
 * reference evaluator (at kt_small_consts' sizes); hand-checked parameter
 * counts for the classics (VGG-11's and ResNet-50's the published ones),
 * and VGG-11's and ResNet-50's FLOPs at batch 1 against a count written
 * out from their architectures.
 *
 * Adding a model: put it in models/; the loop below picks it up.  If it
 * has a known parameter count, add it to `known`.
 */
#include <math.h>

#include "kiln_test.h"



/* Evaluates every node with seeded parameters and inputs; returns the Eval. */
static Eval evaluate(Graph *g, uint64_t seed, void **bufs) {
  Eval ev;
  eval_init(&ev, g);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *n = g->nodes[i];
    if (n->op != OP_INPUT && n->op != OP_PARAM)
      continue;
    int64_t count = shape_numel(&n->shape);
    bufs[i] = calloc((size_t)count + 1, 4);
    if (n->op == OP_PARAM)
      param_init_fill(n, seed, bufs[i]);
    else if (n->dtype == DT_F32)
      for (int64_t k = 0; k < count; k++)
        ((float *)bufs[i])[k] = (float)rng_normal(seed + 7, (uint64_t)k);
    else
      for (int64_t k = 0; k < count; k++)
        ((int32_t *)bufs[i])[k] = (int32_t)(k % 5); /* valid labels and token ids */
    eval_bind(&ev, n, bufs[i]);
  }
  char err[256];
  if (eval_run(&ev, NULL, err, sizeof err))
    fail_msg("%s", err);
  return ev;
}

static void free_bufs(void **bufs, int n) {
  for (int i = 0; i < n; i++)
    free(bufs[i]);
  free(bufs);
}

static void check_finite(const Node *n, const RtTensor *t, const char *model) {
  if (n->dtype != DT_F32)
    return;
  int64_t count = shape_numel(&n->shape);
  for (int64_t k = 0; k < count; k++)
    if (!isfinite(((float *)t->data)[k]))
      fail_msg("%s: %s[%lld] is not finite", model, n->name, (long long)k);
}

static void check_model(const char *name, bool training) {
  char *text = read_model(name);
  Compiled c = compile_model_small(text, training);
  if (!c.g)
    fail_msg("%s does not compile:\n%s", name, c.msg);
  assert_true(c.g->n_outputs >= 1);
  void **bufs = calloc((size_t)c.g->n_nodes, sizeof(void *));
  Eval ev = evaluate(c.g, 1, bufs);
  for (int i = 0; i < c.g->n_nodes; i++)
    check_finite(c.g->nodes[i], &ev.vals[i], name);
  /* softmax outputs are distributions */
  for (int o = 0; o < c.g->n_outputs; o++) {
    Node *n = c.g->outputs[o].node;
    if (n->op != OP_SOFTMAX)
      continue;
    int64_t cls = n->shape.dim[n->shape.rank - 1], rows = shape_numel(&n->shape) / cls;
    for (int64_t r = 0; r < rows; r++) {
      double s = 0;
      for (int64_t k = 0; k < cls; k++)
        s += ((float *)ev.vals[n->id].data)[r * cls + k];
      assert_true(fabs(s - 1) < 1e-5);
    }
  }
  /* a second evaluation gives bit-identical results */
  void **bufs2 = calloc((size_t)c.g->n_nodes, sizeof(void *));
  Eval ev2 = evaluate(c.g, 1, bufs2);
  for (int i = 0; i < c.g->n_nodes; i++)
    assert_memory_equal(ev.vals[i].data, ev2.vals[i].data, (size_t)node_bytes(c.g->nodes[i]));
  eval_free(&ev);
  eval_free(&ev2);
  free_bufs(bufs, c.g->n_nodes);
  free_bufs(bufs2, c.g->n_nodes);
  compiled_free(&c);
  free(text);
}

static void every_model_builds_and_evaluates(void **state) {
  char names[64][64];
  int n = list_models(names, 64);
  assert_true(n >= 4);
  for (int i = 0; i < n; i++) {
    check_model(names[i], false);
    check_model(names[i], true);
  }
}

/* Trainable parameters of torchvision's ResNets from the architecture:
 * convolutions without bias (C_in * k * k * C_out), batchnorm weight and
 * bias (2 C; the running statistics are not parameters), a projection
 * shortcut (1x1 convolution and batchnorm) where a block changes shape, a
 * dense classifier with bias.  Bottleneck blocks (ResNet-50) expand by 4;
 * the stem is 7x7 on ImageNet, 3x3 on CIFAR (models/resnet18.kiln). */
static int64_t resnet_params(bool bottleneck, int stem_k, const int blocks[4], int classes) {
  int64_t p = 3LL * stem_k * stem_k * 64 + 2 * 64;
  int64_t cin = 64;
  for (int stage = 0; stage < 4; stage++) {
    int64_t w = 64LL << stage, out = bottleneck ? 4 * w : w;
    for (int i = 0; i < blocks[stage]; i++) {
      if (bottleneck) /* 1x1 reduce, 3x3, 1x1 expand, each with its batchnorm */
        p += cin * w + 2 * w + 9 * w * w + 2 * w + w * out + 2 * out;
      else /* two 3x3 */
        p += 9 * cin * w + 2 * w + 9 * w * w + 2 * w;
      if (i == 0 && (stage > 0 || cin != out))
        p += cin * out + 2 * out;
      cin = out;
    }
  }
  return p + cin * classes + classes;
}

/* Parameter counts worked out by hand (and equal to PyTorch's). */
static void parameter_counts(void **state) {
  static const int r50[4] = {3, 4, 6, 3}, r18[4] = {2, 2, 2, 2};
  /* the published counts: torchvision's resnet50 (He et al., table 1: 25.6
   * million) and the usual CIFAR ResNet-18 */
  assert_int_equal(resnet_params(true, 7, r50, 1000), 25557032);
  assert_int_equal(resnet_params(false, 3, r18, 10), 11173962);
  static const struct {
    const char *file;
    int64_t params;
  } known[] = {
      /* 784*256+256 + 256*128+128 + 128*10+10 */
      {"mlp.kiln", 235146},
      /* (25+1)*6 + (150+1)*16 + (400+1)*120 + (120+1)*84 + (84+1)*10 */
      {"lenet5.kiln", 61706},
      /* VGG-11 (configuration A), 3x3 convolutions with bias, (9 C_in + 1) C_out:
       * 3->64 1,792; 64->128 73,856; 128->256 295,168; 256->256 590,080;
       * 256->512 1,180,160; 512->512 2,359,808 three times (9,220,480 in all);
       * dense (in + 1) out: 25088->4096 102,764,544; 4096->4096 16,781,312;
       * 4096->1000 4,097,000: 132,863,336 as published (torchvision's vgg11) */
      {"vgg11.kiln", 132863336},
      /* resnet_params above: stem 9,536, stages 215,808 + 1,219,584 +
       * 7,098,368 + 14,964,736, classifier 2,049,000 */
      {"resnet50.kiln", 25557032},
      {"resnet18.kiln", 11173962},
  };
  for (int i = 0; i < countof(known); i++) {
    char *text = read_model(known[i].file);
    Compiled c = compile_text(text);
    MUST_COMPILE(c);
    if (graph_param_count(c.g, true) != known[i].params)
      fail_msg("%s: %lld trainable parameters, counted by hand %lld", known[i].file,
               (long long)graph_param_count(c.g, true), (long long)known[i].params);
    compiled_free(&c);
    free(text);
  }
}

/* FLOPs of the ImageNet classics at batch 1, 3x224x224, 1000 classes,
 * counted from the architecture with ir/stats.c's conventions: a
 * multiply-add is 2 FLOPs; an elementwise op 1 per element (a bias add, a
 * ReLU, a residual add), a transcendental one 4 (rsqrt); max pooling k*k
 * per output; a reduction 1 per input (global average pooling's mean);
 * softmax 5 and cross-entropy 4 per logit; reshapes 0.  Inference-mode
 * batchnorm is the prelude's (x - running_mean) * rsqrt(running_var + eps)
 * * weight + bias: 4 per element, and 1 + 4 per channel for the add of eps
 * and the rsqrt.  Dropout is gone in inference.  *macs gets the
 * multiply-adds of the convolutions and dense layers, the figure papers
 * and torchvision quote. */
static double bn_flops(double numel, double channels) { return 4 * numel + 5 * channels; }

static double vgg11_flops(double *macs) {
  static const int blocks[5][2] = {{1, 64}, {1, 128}, {2, 256}, {2, 512}, {2, 512}};
  double m = 0, f = 0, c = 3, s = 224;
  for (int b = 0; b < 5; b++) {
    for (int i = 0; i < blocks[b][0]; i++) {
      double out = blocks[b][1] * s * s; /* 3x3, pad 1: the size stays */
      m += out * c * 9;
      f += 2 * out; /* bias, ReLU */
      c = blocks[b][1];
    }
    s /= 2;
    f += 4 * c * s * s; /* 2x2 max pooling */
  }
  const double dense[4] = {c * s * s, 4096, 4096, 1000}; /* 512 x 7 x 7 = 25088 in */
  for (int i = 0; i < 3; i++) {
    m += dense[i] * dense[i + 1];
    f += dense[i + 1] * (i < 2 ? 2 : 1); /* bias (and ReLU) */
  }
  *macs = m;
  return 2 * m + f + 5 * 1000 + 4 * 1000;
}

static double resnet50_flops(double *macs) {
  static const int blocks[4] = {3, 4, 6, 3};
  double s = 112, out = 64 * s * s, m = out * 3 * 49; /* 7x7 stride-2 stem */
  double f = bn_flops(out, 64) + out;                /* batchnorm, ReLU */
  s = 56;
  f += 9 * 64 * s * s; /* 3x3 stride-2 max pooling */
  double cin = 64;
  for (int stage = 0; stage < 4; stage++) {
    double w = 64 << stage;
    for (int i = 0; i < blocks[stage]; i++) {
      double so = stage > 0 && i == 0 ? s / 2 : s; /* the stride is on the 3x3 (v1.5) */
      double o1 = w * s * s, o2 = w * so * so, o3 = 4 * w * so * so;
      m += o1 * cin + o2 * w * 9 + o3 * w; /* 1x1 reduce, 3x3, 1x1 expand */
      f += bn_flops(o1, w) + o1 + bn_flops(o2, w) + o2 + bn_flops(o3, 4 * w);
      if (i == 0) { /* projection shortcut */
        m += o3 * cin;
        f += bn_flops(o3, 4 * w);
      }
      f += 2 * o3; /* residual add, ReLU */
      cin = 4 * w, s = so;
    }
  }
  f += cin * s * s;  /* global average pooling of 2048 x 7 x 7 */
  m += cin * 1000;   /* classifier */
  f += 1000;         /* its bias */
  *macs = m;
  return 2 * m + f + 5 * 1000 + 4 * 1000;
}

/* kiln's FLOP total (what `kiln check` and `kiln show` print, ir/print.c)
 * and its convolutions' and matmuls' part, of the inference graph of
 * `file` at batch 1, against the hand count. */
static void check_flops(const char *file, double want, double want_macs) {
  char *text = read_model(file);
  const char *defs[] = {"N=1"};
  Compiled c = compile_opts(text, false, defs, 1);
  MUST_COMPILE(c);
  double total = 0, mac_part = 0;
  for (int i = 0; i < c.g->n_nodes; i++) {
    const Node *n = c.g->nodes[i];
    total += node_flops(n);
    if (n->op == OP_CONV2D || n->op == OP_MATMUL)
      mac_part += node_flops(n);
  }
  if (mac_part != 2 * want_macs || total != want)
    fail_msg("%s: kiln counts %.0f FLOPs (%.0f in convolutions and matmuls), by hand %.0f "
             "(%.0f = 2 x %.0f multiply-adds)",
             file, total, mac_part, want, 2 * want_macs, want_macs);
  compiled_free(&c);
  free(text);
}

static void flop_counts(void **state) {
  double macs;
  /* VGG-11: convolutions 86,704,128 + 924,844,032 + (924,844,032 +
   * 1,849,688,064) + (924,844,032 + 1,849,688,064) + 2 x 462,422,016 =
   * 7,485,456,384 multiply-adds, dense 102,760,448 + 16,777,216 + 4,096,000
   * = 123,633,664: 7,609,090,048, the 7.61 G torchvision lists for vgg11
   * (its "GFLOPS" are multiply-adds).  kiln: 2 x that = 15,218,180,096, plus
   * bias adds 7,435,240, ReLUs 7,434,240, max pooling 6,121,472, softmax
   * 5,000 and cross-entropy 4,000: 15,239,180,048 ("15.2G FLOPs per run"). */
  double vgg = vgg11_flops(&macs);
  assert_true(macs == 7609090048.0 && vgg == 15239180048.0);
  check_flops("vgg11.kiln", vgg, macs);
  /* ResNet-50: stem 118,013,952, stages 667,942,912 + 1,027,604,480 +
   * 1,464,336,384 + 809,238,528, classifier 2,048,000: 4,089,184,256
   * multiply-adds, torchvision's 4.09 G for resnet50 (the stride on the 3x3;
   * with it on the first 1x1, as He et al. had it, 3.86 G: table 1's
   * "3.8 x 10^9").  kiln: 2 x that = 8,178,368,512, plus 53 batchnorms
   * 44,588,736, ReLUs 9,608,704, residual adds 5,519,360, max pooling
   * 1,806,336, global average pooling 100,352, the classifier's bias 1,000,
   * softmax and cross-entropy 9,000: 8,240,002,000 ("8.24G"). */
  double r50 = resnet50_flops(&macs);
  assert_true(macs == 4089184256.0 && r50 == 8240002000.0);
  check_flops("resnet50.kiln", r50, macs);
}

/* The ResNet's blocks come from a loop, and the attention model's causal
 * flag changes the graph; both as the language promises. */
static void block_loops_and_attention(void **state) {
  char *text = read_model("resnet_small.kiln");
  Compiled c = compile_text(text);
  MUST_COMPILE(c);
  assert_non_null(find_param(c.g, "layer1.0.a.conv2d.weight"));
  assert_non_null(find_param(c.g, "layer3.1.b.batchnorm.weight"));
  assert_non_null(find_param(c.g, "layer2.0.s.conv2d.weight")); /* projection shortcut */
  assert_null(find_param(c.g, "layer1.0.s.conv2d.weight"));     /* identity shortcut */
  assert_int_equal(count_op(c.g, OP_CONV2D), 1 + 3 * 2 * 2 + 2);
  compiled_free(&c);
  const char *defs[] = {"blocks=3"};
  c = compile_opts(text, false, defs, 1);
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_CONV2D), 1 + 3 * 3 * 2 + 2);
  compiled_free(&c);
  free(text);
  text = read_model("attention.kiln");
  c = compile_text(text);
  MUST_COMPILE(c);
  assert_int_equal(count_op(c.g, OP_SOFTMAX), 2 + 1); /* one per layer, one output */
  assert_int_equal(count_op(c.g, OP_WHERE), 0);
  compiled_free(&c);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_model_builds_and_evaluates),
      cmocka_unit_test(parameter_counts),
      cmocka_unit_test(flop_counts),
      cmocka_unit_test(block_loops_and_attention),
  };
  return cmocka_run_group_tests_name("models", tests, NULL, NULL);
}
