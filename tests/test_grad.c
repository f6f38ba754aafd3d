/*
 * test_grad.c: every gradient rule (the GRAD column of ir/ops.def) checked
 * against finite differences, one small model per case.
 *
 * Method.  A case is a few statements of a model that bind `y` (any shape)
 * or `loss` (a scalar).  For `y` the harness appends
 *
 *     input gc_r: f32[shape of y]      (fixed random values)
 *     loss = sum(y * gc_r)
 *
 * so the loss is a generic linear functional of the op's output and every
 * output element's gradient matters.  pass_autodiff differentiates it with
 * respect to the named inputs/parameters (`wrt`: any leaves), and the
 * reference evaluator computes the analytic gradient a (double inside the
 * kernels, f32 storage).  Each checked coordinate x_i is then moved on the
 * same graph, and a is compared with the five-point centred difference
 *
 *   n = (8 (L(x_i + h_i) - L(x_i - h_i)) - (L(x_i + 2 h_i) - L(x_i - 2 h_i))) / (12 h_i)
 *
 * with h_i = h max(1, |x_i|) and h = 2e-2.  For the functional, L is
 * summed in double from y's f32 values (the f32 rounding of the loss
 * itself stays out).  All coordinates of a tensor are checked when it has
 * at most 16, else 12 random ones.  Pass: |a - n| <= atol + rtol max(|a|, |n|).
 *
 * Tolerances: rtol = 1e-3, atol = 1e-4.  The errors of n: truncation,
 * h^4 f^(5) / 30, ~1e-7 relative for these ops (the plain centred
 * difference, error h^2 f^(3) / 6, was off by up to 8e-4 relative on
 * layernorm rows of small variance, hence five points); the f32 rounding
 * of the op's outputs at the moved points, ~1e-7 of each output touched,
 * i.e. ~1e-5 after the division by 12 h / 18; the f32 rounding of
 * x_i +- h_i, ~1e-5 relative.  The largest |a - n| / tolerance over all
 * cases is 0.05 at the default points and 0.18 over 100 other seeds
 * (KILN_GRAD_SEED), so the tolerances sit ~5x above the noise and far below
 * what a wrong rule gives (a missing factor, a wrong sign or index, a
 * dropped broadcast reduction are errors of order 1).  A case can set its
 * own h, rtol, atol.
 *
 * Inputs are uniform in [-1, 1) unless `fill` gives a range ("x=0.5:2";
 * i32 inputs need one: [lo, hi) integers).  Ops with kinks: `kinks` lists
 * the kink positions of a tensor's values ("x=-0.5,0.5"); values within 4h
 * of one are pushed away, so x +- 2h never crosses it.  `distinct` names
 * tensors whose elements are all drawn, jointly, from a shuffled grid over
 * [-1, 1] of spacing >= 8h (h shrinks where the grid is finer), so max,
 * maxpool, maximum and minimum have no ties, nor near-ties a step could
 * swap.  As a safety net every moved point must leave all piecewise ops'
 * decisions unchanged (gp_branch_hash); a case whose values let a step
 * cross a kink fails and says so.  GC_TRAIN builds the training-mode graph
 * (dropout, batch statistics; evaluated at a fixed step, so the mask is
 * the same in every run).  stop_gradient values are held at their values
 * for the differences (see grad_helpers.h), as the gradient they define is
 * that of the loss with them constant.
 *
 * Adding a case: one line in `cases` below, e.g.
 *
 *     CASE("relu", "input x: f32[3, 4]; y = relu(x)", "x", .kinks = "x=0"),
 *
 * (statements separated by ';').  `build` lets C code make what the
 * language cannot call (add_n) and return y.  The last test checks that
 * the cases' graphs, before autodiff and without the harness's sum/mul,
 * contain every op that has a gradient rule.  KILN_GRAD_VERBOSE=1 prints
 * each case's worst ratio, =2 every coordinate.
 */
#include "grad_helpers.h"

enum { GC_TRAIN = 1 };

typedef struct GradCase {
  const char *name;
  const char *body;     /* model statements; binds y (or a scalar loss) */
  const char *wrt;      /* space-separated input/parameter names */
  const char *fill;     /* "x=lo:hi ...": uniform ranges (i32: integers in [lo, hi)) */
  const char *kinks;    /* "x=k1,k2 ...": values kept 4h away from these */
  const char *distinct; /* "a b": these tensors' elements jointly >= 8h apart */
  unsigned flags;
  double h, rtol, atol; /* 0: the defaults below */
  Node *(*build)(Graph *g);
} GradCase;

#define DEF_H 2e-2
#define DEF_RTOL 1e-3
#define DEF_ATOL 1e-4
#define CASE(NAME, BODY, ...)                                                                      \
  { .name = NAME, .body = BODY, .wrt = __VA_ARGS__ }

/* add_n is internal (autodiff makes it): y = add_n(a, b, a), built in C. */
static Node *build_add_n(Graph *g) {
  Node *a = graph_find(g, "a"), *b = graph_find(g, "b");
  Node *in[3] = {a, b, a};
  Loc l0 = {0};
  return graph_add_checked(g, OP_ADD_N, in, 3, NULL, l0);
}

static const GradCase cases[] = {
    /* --- unary elementwise --- */
    CASE("neg", "input x: f32[2, 3]; y = -x", "x"),
    CASE("neg_op", "input x: f32[3]; y = neg(x)", "x"),
    CASE("abs", "input x: f32[3, 4]; y = abs(x)", "x", .kinks = "x=0"),
    CASE("exp", "input x: f32[2, 3]; y = exp(x)", "x", .fill = "x=-2:2"),
    CASE("log", "input x: f32[2, 3]; y = log(x)", "x", .fill = "x=0.2:3"),
    CASE("sqrt", "input x: f32[2, 3]; y = sqrt(x)", "x", .fill = "x=0.2:3"),
    CASE("rsqrt", "input x: f32[2, 3]; y = rsqrt(x)", "x", .fill = "x=0.3:3"),
    CASE("relu", "input x: f32[3, 4]; y = relu(x)", "x", .fill = "x=-2:2", .kinks = "x=0"),
    CASE("leaky_relu", "input x: f32[3, 4]; y = leaky_relu(x)", "x", .kinks = "x=0"),
    CASE("leaky_relu_alpha", "input x: f32[3, 4]; y = leaky_relu(x, 0.2)", "x", .kinks = "x=0"),
    CASE("elu", "input x: f32[3, 4]; y = elu(x)", "x", .fill = "x=-2:2", .kinks = "x=0"),
    CASE("elu_alpha", "input x: f32[3, 4]; y = elu(x, alpha=0.5)", "x", .fill = "x=-2:2",
         .kinks = "x=0"),
    CASE("sigmoid", "input x: f32[2, 3]; y = sigmoid(x)", "x", .fill = "x=-4:4"),
    CASE("tanh", "input x: f32[2, 3]; y = tanh(x)", "x", .fill = "x=-2:2"),
    CASE("gelu_erf", "input x: f32[3, 4]; y = gelu(x)", "x", .fill = "x=-3:3"),
    CASE("gelu_tanh", "input x: f32[3, 4]; y = gelu(x, approximate=\"tanh\")", "x",
         .fill = "x=-3:3"),
    CASE("softplus", "input x: f32[3, 4]; y = softplus(x)", "x", .fill = "x=-4:4"),
    /* beta 2, threshold 3: linear above x = 1.5 (a jump of 0.024 there) */
    CASE("softplus_beta_threshold", "input x: f32[3, 4]; y = softplus(x, beta=2, threshold=3)", "x",
         .fill = "x=-3:3", .kinks = "x=1.5"),
    CASE("softplus_above_threshold", "input x: f32[2, 3]; y = softplus(x)", "x", .fill = "x=21:25"),
    CASE("softplus_small_beta", "input x: f32[3, 4]; y = softplus(x, 0.5, 4)", "x",
         .fill = "x=4:12", .kinks = "x=8"),
    CASE("sin", "input x: f32[2, 3]; y = sin(x)", "x", .fill = "x=-3:3"),
    CASE("cos", "input x: f32[2, 3]; y = cos(x)", "x", .fill = "x=-3:3"),
    CASE("clamp", "input x: f32[3, 4]; y = clamp(x, -0.5, 0.5)", "x", .kinks = "x=-0.5,0.5"),
    CASE("clamp_named", "input x: f32[3, 4]; y = clamp(x, min=0, max=0.7)", "x",
         .kinks = "x=0,0.7"),
    CASE("stop_gradient_zero", "input x: f32[2, 3]; input w: f32[2, 3]; y = stop_gradient(x) * w",
         "x w"),
    CASE("stop_gradient_partial",
         "input x: f32[2, 3]; y = x * stop_gradient(x * x) + sin(stop_gradient(x)) + x", "x"),
    CASE("cast_f32", "input x: f32[2, 3]; y = cast(x, f32) * x", "x"),
    /* --- binary elementwise, broadcasting in both operands --- */
    CASE("add_bcast", "input a: f32[2, 1, 3]; input b: f32[4, 3]; y = a + b", "a b"),
    CASE("add_scalar", "input x: f32[2, 3]; input s: f32; y = x + s", "x s"),
    CASE("add_const", "input x: f32[2, 3]; y = 1.5 + x", "x"),
    CASE("sub_bcast", "input a: f32[4, 3]; input b: f32[2, 1, 3]; y = a - b", "a b"),
    CASE("sub_scalar_first", "input x: f32[2, 3]; input s: f32; y = s - x", "x s"),
    CASE("mul_bcast", "input a: f32[2, 1, 3]; input b: f32[4, 1]; y = a * b", "a b"),
    CASE("mul_const", "input x: f32[3, 2]; y = x * 2.5", "x"),
    CASE("div_bcast", "input a: f32[2, 3]; input b: f32[3]; y = a / b", "a b", .fill = "b=0.5:2"),
    CASE("div_both_bcast", "input a: f32[1, 3]; input b: f32[2, 1]; y = a / b", "a b",
         .fill = "b=-2:-0.5"),
    CASE("div_scalar_num", "input x: f32[2, 3]; input s: f32; y = s / x", "x s", .fill = "x=0.5:2"),
    CASE("pow_bcast", "input a: f32[2, 3]; input b: f32[3]; y = a ** b", "a b",
         .fill = "a=0.5:2 b=-1.5:2"),
    CASE("pow_const_exp", "input x: f32[2, 3]; y = pow(x, 3)", "x", .fill = "x=0.3:2"),
    CASE("pow_scalar_base", "input s: f32; input x: f32[4]; y = s ** x", "s x",
         .fill = "s=0.5:3 x=-2:2"),
    /* as PyTorch: no gradient to a where b = 0, none to b where a = 0 */
    CASE("pow_zero_exponent", "input a: f32[2, 3]; input b: f32[3]; y = a ** b", "a b",
         .fill = "a=0.5:2 b=0:0"),
    CASE("pow_zero_base", "input a: f32[2, 3]; input b: f32[2, 3]; y = a ** b", "b",
         .fill = "a=0:0 b=1:2"),
    CASE("maximum_bcast", "input a: f32[2, 3]; input b: f32[3]; y = maximum(a, b)", "a b",
         .distinct = "a b"),
    CASE("maximum_const", "input x: f32[3, 4]; y = maximum(x, 0.3)", "x", .kinks = "x=0.3"),
    CASE("minimum_bcast", "input a: f32[2, 1, 3]; input b: f32[4, 3]; y = minimum(a, b)", "a b",
         .distinct = "a b"),
    CASE("minimum_scalar", "input x: f32[2, 3]; input s: f32; y = minimum(s, x)", "x s",
         .distinct = "x s"),
    CASE("where_bcast",
         "input c: i32[2, 3]; input a: f32[3]; input b: f32[2, 1]; y = where(c, a, b)", "a b",
         .fill = "c=0:2"),
    CASE("where_compare", "input x: f32[3, 4]; y = where(x > 0, x * x, 0.1 * x)", "x",
         .kinks = "x=0"),
    CASE("where_scalar", "input c: i32[4]; input x: f32[4]; input s: f32; y = where(c, s, x)",
         "x s", .fill = "c=0:2"),
    CASE("where_scalar_cond",
         "input c: i32; input a: f32[2, 3]; input b: f32[3]; y = where(c, a, b)", "a b",
         .fill = "c=0:2"),
    /* a value used several times: its gradient is an add_n of the uses */
    CASE("used_many_times", "input x: f32[2, 3]; y = x * x + sin(x) * x - exp(x)", "x"),
    CASE("add_n", "input a: f32[2, 3]; input b: f32[2, 3]", "a b", .build = build_add_n),
    /* one node in several input slots of one op */
    CASE("same_node_concat", "input a: f32[2, 3]; y = concat(a, a, axis=1)", "a"),
    CASE("same_node_matmul", "input a: f32[3, 3]; y = matmul(a, a, transpose_a=true)", "a"),
    CASE("same_node_where", "input c: i32[2, 3]; input a: f32[2, 3]; y = where(c, a, a * a)", "a",
         .fill = "c=0:2"),
    CASE("same_node_div", "input a: f32[2, 3]; y = (a + 3) / (a + 3) + a / (a * a + 1)", "a"),
    /* --- reductions --- */
    CASE("sum_all", "input x: f32[2, 3, 4]; y = sum(x)", "x"),
    CASE("sum_axis", "input x: f32[2, 3, 4]; y = sum(x, axis=1)", "x"),
    CASE("sum_axes_keep", "input x: f32[2, 3, 4]; y = sum(x, axis=[0, 2], keepdims=true)", "x"),
    CASE("sum_axes_unsorted", "input x: f32[2, 3, 4]; y = sum(x, axis=[2, 0])", "x"),
    CASE("sum_neg_axis_keep", "input x: f32[3, 4]; y = sum(x, axis=-1, keepdims=true)", "x"),
    CASE("sum_scalar", "input s: f32; y = sum(s) * s", "s"),
    CASE("mean_all", "input x: f32[2, 3, 4]; y = mean(x)", "x"),
    CASE("mean_axes", "input x: f32[2, 3, 4]; y = mean(x, axis=[1, 2])", "x"),
    CASE("mean_axis_keep", "input x: f32[2, 3, 4]; y = mean(x, axis=0, keepdims=true)", "x"),
    CASE("mean_neg_axis_size1", "input x: f32[2, 1, 3]; y = mean(x, axis=-2) + mean(x, axis=-1)",
         "x"),
    CASE("max_all", "input x: f32[2, 3, 4]; y = max(x)", "x", .distinct = "x"),
    CASE("max_axis_keep", "input x: f32[2, 3, 4]; y = max(x, axis=1, keepdims=true)", "x",
         .distinct = "x"),
    CASE("max_axes", "input x: f32[2, 3, 4]; y = max(x, axis=[0, 2])", "x", .distinct = "x"),
    CASE("max_last", "input x: f32[3, 4]; y = max(x, axis=-1)", "x", .distinct = "x"),
    CASE("softmax_last", "input x: f32[3, 4]; y = softmax(x, axis=-1)", "x", .fill = "x=-2:2"),
    CASE("softmax_axis0", "input x: f32[3, 4]; y = softmax(x, axis=0)", "x", .fill = "x=-2:2"),
    CASE("softmax_mid", "input x: f32[2, 3, 4]; y = softmax(x, axis=1)", "x"),
    CASE("log_softmax_last", "input x: f32[3, 4]; y = log_softmax(x)", "x", .fill = "x=-2:2"),
    CASE("log_softmax_axis0", "input x: f32[3, 4]; y = log_softmax(x, axis=0)", "x",
         .fill = "x=-2:2"),
    CASE("log_softmax_mid", "input x: f32[2, 3, 4]; y = log_softmax(x, axis=1)", "x"),
    CASE("softmax_size1", "input x: f32[3, 1]; y = softmax(x) + log_softmax(x) * x", "x"),
    /* --- data movement --- */
    CASE("reshape", "input x: f32[2, 3, 2]; y = reshape(x, [4, -1])", "x"),
    CASE("reshape_rank", "input x: f32[6]; y = reshape(x, [1, 2, 3]) * reshape(x, [2, 1, 3])", "x"),
    CASE("transpose_default", "input x: f32[3, 4]; y = transpose(x)", "x"),
    CASE("transpose_default3", "input x: f32[2, 3, 4]; y = transpose(x)", "x"),
    CASE("transpose_perm3", "input x: f32[2, 3, 4]; y = transpose(x, [2, 0, 1])", "x"),
    CASE("transpose_perm4", "input x: f32[2, 3, 2, 2]; y = transpose(x, [0, 2, 3, 1])", "x"),
    CASE("broadcast_to", "input x: f32[3, 1]; y = broadcast_to(x, [2, 3, 4])", "x"),
    CASE("broadcast_to_scalar", "input s: f32; y = broadcast_to(s, [2, 3])", "s"),
    CASE("slice_steps", "input x: f32[3, 5]; y = x[1:, ::2]", "x"),
    CASE("slice_steps3", "input x: f32[2, 5, 7]; y = x[:, 1:4:2, ::3]", "x"),
    CASE("slice_index", "input x: f32[3, 4]; y = x[1]", "x"),
    CASE("slice_negative", "input x: f32[4, 6]; y = x[-3:-1, 4:1000:1]", "x"),
    CASE("slice_big_step", "input x: f32[3, 4]; y = x[::5, 1::7]", "x"),
    CASE("concat_inner", "input a: f32[2, 3, 4]; input b: f32[2, 2, 4]; y = concat(a, b, axis=1)",
         "a b"),
    CASE("concat_last3",
         "input a: f32[2, 3]; input b: f32[2, 1]; input c: f32[2, 4]; "
         "y = concat([a, b, c], axis=-1)",
         "a b c"),
    CASE("concat_self", "input a: f32[2, 3]; y = concat(a, a * 2, axis=0)", "a"),
    CASE("concat_partial", "input a: f32[2, 3]; input b: f32[1, 3]; y = concat(a, b)", "a"),
    /* --- matmul --- */
    CASE("matmul", "input a: f32[3, 4]; input b: f32[4, 5]; y = a @ b", "a b"),
    CASE("matmul_ta", "input a: f32[4, 3]; input b: f32[4, 5]; y = matmul(a, b, transpose_a=true)",
         "a b"),
    CASE("matmul_tb", "input a: f32[3, 4]; input b: f32[5, 4]; y = matmul(a, b, transpose_b=true)",
         "a b"),
    CASE("matmul_ta_tb",
         "input a: f32[4, 3]; input b: f32[5, 4]; "
         "y = matmul(a, b, transpose_a=true, transpose_b=true)",
         "a b"),
    CASE("matmul_batch_bcast", "input a: f32[2, 3, 4]; input b: f32[4, 5]; y = a @ b", "a b"),
    CASE("matmul_batch_bcast_b", "input a: f32[3, 4]; input b: f32[2, 4, 2]; y = a @ b", "a b"),
    CASE("matmul_batch_both", "input a: f32[2, 1, 3, 4]; input b: f32[3, 4, 2]; y = a @ b", "a b"),
    CASE("matmul_batch_tb",
         "input a: f32[2, 3, 4]; input b: f32[5, 4]; y = matmul(a, b, transpose_b=true)", "a b"),
    CASE("matmul_batch_ta",
         "input a: f32[2, 4, 3]; input b: f32[2, 4, 2]; y = matmul(a, b, transpose_a=true)", "a b"),
    CASE("matmul_batch1", "input a: f32[1, 3, 4]; input b: f32[1, 4, 2]; y = a @ b", "a b"),
    CASE("matmul_vector_like", "input a: f32[1, 4]; input b: f32[4, 1]; y = a @ b", "a b"),
    CASE("matmul_outer", "input a: f32[3, 1]; input b: f32[1, 4]; y = a @ b", "a b"),
    /* --- conv2d: x [N, C, H, W], w [O, C/g, kh, kw] --- */
    CASE("conv2d", "input x: f32[2, 2, 5, 5]; input w: f32[3, 2, 3, 3]; y = op.conv2d(x, w)",
         "x w"),
    CASE("conv2d_batch1", "input x: f32[1, 2, 4, 4]; input w: f32[2, 2, 2, 2]; y = op.conv2d(x, w)",
         "x w"),
    CASE("conv2d_stride2",
         "input x: f32[1, 2, 7, 7]; input w: f32[2, 2, 3, 3]; y = op.conv2d(x, w, stride=2)",
         "x w"),
    CASE("conv2d_stride2_rem",
         "input x: f32[1, 1, 6, 6]; input w: f32[2, 1, 3, 3]; y = op.conv2d(x, w, stride=2)",
         "x w"),
    CASE("conv2d_pad1",
         "input x: f32[2, 1, 4, 4]; input w: f32[2, 1, 3, 3]; y = op.conv2d(x, w, pad=1)", "x w"),
    CASE("conv2d_dilation2",
         "input x: f32[1, 2, 7, 6]; input w: f32[2, 2, 3, 2]; y = op.conv2d(x, w, dilation=2)",
         "x w"),
    CASE("conv2d_groups2",
         "input x: f32[1, 4, 5, 5]; input w: f32[6, 2, 3, 3]; y = op.conv2d(x, w, groups=2)",
         "x w"),
    CASE("conv2d_depthwise",
         "input x: f32[1, 3, 5, 5]; input w: f32[3, 1, 3, 3]; y = op.conv2d(x, w, pad=1, groups=3)",
         "x w"),
    CASE("conv2d_depthwise_mult",
         "input x: f32[2, 2, 4, 4]; input w: f32[4, 1, 3, 3]; y = op.conv2d(x, w, groups=2)",
         "x w"),
    CASE("conv2d_mixed",
         "input x: f32[1, 2, 7, 8]; input w: f32[2, 2, 3, 3]; "
         "y = op.conv2d(x, w, stride=[2, 1], pad=[1, 0], dilation=[1, 2])",
         "x w"),
    CASE("conv2d_stride3_dil2",
         "input x: f32[1, 1, 8, 8]; input w: f32[2, 1, 2, 2]; "
         "y = op.conv2d(x, w, stride=3, dilation=2)",
         "x w"),
    CASE("conv2d_all",
         "input x: f32[2, 4, 7, 6]; input w: f32[2, 2, 3, 2]; "
         "y = op.conv2d(x, w, stride=2, pad=1, dilation=2, groups=2)",
         "x w"),
    CASE("conv2d_1x1_stride2",
         "input x: f32[2, 3, 6, 6]; input w: f32[4, 3, 1, 1]; y = op.conv2d(x, w, stride=2)",
         "x w"),
    CASE("conv2d_layer", "input x: f32[2, 2, 4, 4]; y = conv2d(x, out=3, kernel=3, pad=1)",
         "x y.weight y.bias"),
    /* --- conv_transpose2d: w [C, O/g, kh, kw] --- */
    CASE("conv_t",
         "input x: f32[1, 2, 3, 3]; input w: f32[2, 3, 3, 3]; y = op.conv_transpose2d(x, w)",
         "x w"),
    CASE("conv_t_stride2_outpad",
         "input x: f32[2, 2, 3, 3]; input w: f32[2, 2, 3, 3]; "
         "y = op.conv_transpose2d(x, w, stride=2, output_padding=1)",
         "x w"),
    CASE("conv_t_stride2_pad1",
         "input x: f32[1, 2, 4, 4]; input w: f32[2, 1, 4, 4]; "
         "y = op.conv_transpose2d(x, w, stride=2, pad=1)",
         "x w"),
    CASE("conv_t_groups2",
         "input x: f32[1, 4, 3, 3]; input w: f32[4, 1, 3, 3]; "
         "y = op.conv_transpose2d(x, w, groups=2)",
         "x w"),
    CASE("conv_t_dilation2",
         "input x: f32[1, 1, 3, 3]; input w: f32[1, 2, 2, 2]; "
         "y = op.conv_transpose2d(x, w, stride=2, dilation=2, output_padding=1)",
         "x w"),
    /* output_padding >= stride (allowed as dilation is larger): the data
     * gradient is cropped */
    CASE("conv_t_outpad_ge_stride",
         "input x: f32[1, 1, 3, 3]; input w: f32[1, 1, 2, 2]; "
         "y = op.conv_transpose2d(x, w, stride=2, dilation=3, output_padding=2)",
         "x w"),
    CASE("conv_t_mixed",
         "input x: f32[1, 2, 3, 4]; input w: f32[2, 2, 3, 2]; "
         "y = op.conv_transpose2d(x, w, stride=[2, 1], pad=[1, 0], output_padding=[1, 0])",
         "x w"),
    CASE("conv_t_all",
         "input x: f32[1, 4, 3, 3]; input w: f32[4, 2, 3, 2]; "
         "y = op.conv_transpose2d(x, w, stride=2, pad=1, output_padding=1, dilation=2, groups=2)",
         "x w"),
    /* --- pooling (ties kept apart) --- */
    CASE("maxpool", "input x: f32[2, 2, 4, 4]; y = maxpool2d(x, 2)", "x", .distinct = "x"),
    CASE("maxpool_s2_pad1", "input x: f32[1, 2, 5, 5]; y = maxpool2d(x, kernel=3, stride=2, pad=1)",
         "x", .distinct = "x"),
    CASE("maxpool_overlap_dil",
         "input x: f32[1, 1, 6, 5]; y = maxpool2d(x, kernel=2, stride=1, dilation=2)", "x",
         .distinct = "x"),
    CASE("maxpool_rect",
         "input x: f32[1, 2, 5, 6]; y = maxpool2d(x, kernel=[3, 2], stride=[1, 2], pad=[1, 0])",
         "x", .distinct = "x"),
    CASE("maxpool_pad_dil",
         "input x: f32[1, 2, 5, 5]; y = maxpool2d(x, kernel=2, stride=2, pad=1, dilation=2)", "x",
         .distinct = "x"),
    CASE("avgpool", "input x: f32[2, 2, 4, 4]; y = avgpool2d(x, 2)", "x"),
    CASE("avgpool_pad_incl",
         "input x: f32[1, 2, 5, 5]; y = avgpool2d(x, kernel=3, stride=2, pad=1)", "x"),
    CASE("avgpool_pad_excl",
         "input x: f32[1, 2, 5, 5]; "
         "y = avgpool2d(x, kernel=3, stride=2, pad=1, count_include_pad=false)",
         "x"),
    CASE("avgpool_rect_excl",
         "input x: f32[1, 1, 4, 5]; "
         "y = avgpool2d(x, kernel=[2, 3], stride=[1, 2], pad=[1, 1], count_include_pad=false)",
         "x"),
    CASE("avgpool_overlap", "input x: f32[1, 1, 5, 5]; y = avgpool2d(x, kernel=3, stride=1)", "x"),
    /* --- upsampling --- */
    CASE("upsample_nearest", "input x: f32[1, 2, 3, 3]; y = upsample(x)", "x"),
    CASE("upsample_nearest3", "input x: f32[2, 1, 2, 3]; y = upsample(x, scale=3)", "x"),
    CASE("upsample_bilinear", "input x: f32[1, 2, 3, 3]; y = upsample(x, mode=\"bilinear\")", "x"),
    CASE("upsample_bilinear_ac",
         "input x: f32[1, 2, 3, 3]; y = upsample(x, mode=\"bilinear\", align_corners=true)", "x"),
    CASE("upsample_bilinear3", "input x: f32[1, 1, 3, 2]; y = upsample(x, 3, \"bilinear\")", "x"),
    CASE(
        "upsample_bilinear3_ac",
        "input x: f32[1, 1, 2, 3]; y = upsample(x, scale=3, mode=\"bilinear\", align_corners=true)",
        "x"),
    CASE("upsample_bilinear_1px", "input x: f32[1, 2, 1, 3]; y = upsample(x, mode=\"bilinear\")",
         "x"),
    CASE("upsample_bilinear_1px_ac",
         "input x: f32[1, 2, 1, 3]; y = upsample(x, mode=\"bilinear\", align_corners=true)", "x"),
    /* --- gathers, losses, randomness --- */
    CASE("embedding", "input ids: i32[2, 4]; input t: f32[5, 3]; y = op.embedding(ids, t)", "t",
         .fill = "ids=0:5"),
    CASE("embedding_layer", "input ids: i32[6]; y = embedding(ids, num=3, features=2)", "y.weight",
         .fill = "ids=0:3"),
    CASE("cross_entropy_2d", "input z: f32[4, 5]; input t: i32[4]; y = cross_entropy(z, t)", "z",
         .fill = "z=-2:2 t=0:5"),
    CASE("cross_entropy_3d", "input z: f32[2, 3, 4]; input t: i32[2, 3]; y = cross_entropy(z, t)",
         "z", .fill = "z=-2:2 t=0:4"),
    CASE("cross_entropy_batch1", "input z: f32[1, 3]; input t: i32[1]; loss = cross_entropy(z, t)",
         "z", .fill = "z=-2:2 t=0:3"),
    CASE("dropout", "input x: f32[4, 6]; y = op.dropout(x, p=0.3)", "x", .flags = GC_TRAIN),
    CASE("dropout_layer", "input x: f32[3, 5]; y = dropout(x * x, p=0.5)", "x", .flags = GC_TRAIN),
    CASE("dropout_p0", "input x: f32[2, 3]; y = op.dropout(x, p=0) * x", "x", .flags = GC_TRAIN),
    CASE("randn_reparam", "input x: f32[3, 4]; y = x + exp(0.5 * x) * randn([3, 4]) * randn([4])",
         "x", .flags = GC_TRAIN),
    /* --- prelude layers: the ops together --- */
    CASE("dense", "input x: f32[2, 3]; y = dense(x, out=4)", "x y.weight y.bias"),
    CASE("layernorm", "input x: f32[2, 5]; y = layernorm(x)", "x y.weight y.bias"),
    CASE("batchnorm_train", "input x: f32[3, 2, 2, 2]; y = batchnorm(x)", "x y.weight y.bias",
         .flags = GC_TRAIN),
    CASE("attention_block", "input x: f32[1, 3, 4]; y = attention(x, heads=2)",
         "x y.q.weight y.v.bias y.proj.weight"),
    CASE("mse", "input p: f32[2, 3]; input t: f32[2, 3]; loss = mse(p, t)", "p t"),
    CASE("bce_with_logits", "input z: f32[2, 3]; input t: f32[2, 3]; loss = bce_with_logits(z, t)",
         "z", .fill = "t=0:1"),
};

/* --- the harness ------------------------------------------------------------------ */

/* The range given for `name` in spec "a=lo:hi b=lo:hi" (false if none). */
static bool spec_range(const char *spec, const char *name, double *lo, double *hi) {
  if (!spec)
    return false;
  size_t nl = strlen(name);
  for (const char *s = spec; *s;) {
    while (*s == ' ')
      s++;
    if (strncmp(s, name, nl) == 0 && s[nl] == '=')
      return sscanf(s + nl + 1, "%lf:%lf", lo, hi) == 2;
    while (*s && *s != ' ')
      s++;
  }
  return false;
}

/* The kink positions given for `name` in spec "a=k1,k2 b=k"; returns the count. */
static int spec_kinks(const char *spec, const char *name, double *k, int max) {
  if (!spec)
    return 0;
  size_t nl = strlen(name);
  for (const char *s = spec; *s;) {
    while (*s == ' ')
      s++;
    if (strncmp(s, name, nl) == 0 && s[nl] == '=') {
      int n = 0;
      const char *p = s + nl + 1;
      char *end;
      while (n < max) {
        k[n] = strtod(p, &end);
        if (end == p)
          break;
        n++;
        if (*end != ',')
          break;
        p = end + 1;
      }
      return n;
    }
    while (*s && *s != ' ')
      s++;
  }
  return 0;
}

/* Whether `name` is one of the space-separated words of list. */
static bool in_list(const char *list, const char *name) {
  if (!list)
    return false;
  size_t nl = strlen(name);
  for (const char *s = list; *s;) {
    while (*s == ' ')
      s++;
    size_t w = strcspn(s, " ");
    if (w == nl && strncmp(s, name, nl) == 0)
      return true;
    s += w;
  }
  return false;
}

static double case_h(const GradCase *t) { return t->h > 0 ? t->h : DEF_H; }

/* The step at value v (relative for large values, absolute near 0). */
static double step_at(double h, double v) { return h * (fabs(v) > 1 ? fabs(v) : 1); }

/* Fills every input and parameter of the problem as the case says;
 * returns the step h to use (smaller than the case's where a distinct
 * grid is finer than 8h). */
static double fill_case(GradProblem *gp, const GradCase *t, GcRng *rng) {
  Graph *g = gp->g;
  double h = case_h(t);
  for (int i = 0; i < g->n_nodes; i++) {
    Node *p = g->nodes[i];
    if (!gp->bufs[i] || (p->op != OP_INPUT && p->op != OP_PARAM))
      continue;
    int64_t cnt = shape_numel(&p->shape);
    double lo = -1, hi = 1;
    bool ranged = spec_range(t->fill, p->name, &lo, &hi);
    if (p->dtype == DT_I32) {
      if (!ranged)
        fail_msg("case %s: i32 input %s needs a range in .fill", t->name, p->name);
      int32_t *v = gp->bufs[i];
      for (int64_t j = 0; j < cnt; j++)
        v[j] = (int32_t)floor(gc_range(rng, lo, hi));
      continue;
    }
    float *v = gp->bufs[i];
    for (int64_t j = 0; j < cnt; j++)
      v[j] = (float)gc_range(rng, lo, hi);
    double k[8];
    int nk = spec_kinks(t->kinks, p->name, k, 8);
    for (int64_t j = 0; j < cnt; j++)
      for (int q = 0; q < nk; q++) {
        double d = v[j] - k[q], margin = 4 * step_at(h, k[q]);
        if (fabs(d) < margin)
          v[j] = (float)(k[q] + (d >= 0 ? 1 : -1) * (margin + fabs(d)));
      }
  }
  /* distinct: one shuffled grid over all the named tensors' elements */
  if (!t->distinct)
    return h;
  int64_t total = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (gp->bufs[i] && in_list(t->distinct, g->nodes[i]->name))
      total += shape_numel(&g->nodes[i]->shape);
  assert_true(total > 0);
  int64_t *perm = malloc(sizeof(int64_t) * (size_t)total);
  for (int64_t j = 0; j < total; j++)
    perm[j] = j;
  for (int64_t j = total - 1; j > 0; j--) {
    int64_t r = (int64_t)(gc_uniform(rng) * (double)(j + 1)), tmp = perm[j];
    perm[j] = perm[r];
    perm[r] = tmp;
  }
  /* the grid spans [-1, 1]; where that makes it finer than 8h, h shrinks */
  double spacing = 2.0 / (double)total;
  if (spacing < 8 * h)
    h = spacing / 8;
  double off = gc_range(rng, 0, spacing / 4);
  int64_t at = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (gp->bufs[i] && in_list(t->distinct, g->nodes[i]->name)) {
      float *v = gp->bufs[i];
      for (int64_t j = 0; j < shape_numel(&g->nodes[i]->shape); j++, at++)
        v[j] = (float)(((double)perm[at] - (double)(total - 1) / 2) * spacing + off);
    }
  free(perm);
  return h;
}

/* Compiles the case's model (wrapped as `model m() { ... }`) and applies
 * its build hook; *y and *loss: the values it binds to y and loss (NULL
 * where none). */
static Compiled compile_case(const GradCase *t, Node **y, Node **loss) {
  size_t len = strlen(t->body) + 64;
  char *src = malloc(len);
  snprintf(src, len, "model m() {\n%s\n}\n", t->body);
  Compiled c = compile_opts(src, (t->flags & GC_TRAIN) != 0, NULL, 0);
  free(src);
  if (!c.g)
    fail_msg("case %s does not compile:\n%s", t->name, c.msg);
  *y = t->build ? t->build(c.g) : graph_find_value(c.g, "y");
  *loss = graph_find_value(c.g, "loss");
  if (!*y && !*loss)
    fail_msg("case %s binds neither y nor loss", t->name);
  return c;
}

/* loss = sum(y * r), r a fresh input of y's shape. */
static Node *linear_functional(Graph *g, Node *y) {
  Loc l0 = {0};
  Node *r = graph_input(g, "gc_r", DT_F32, y->shape, l0);
  Node *in[2] = {y, r};
  Node *m = graph_add_checked(g, OP_MUL, in, 2, NULL, l0);
  Attrs at;
  attrs_default(OP_SUM, &at);
  return graph_add_checked(g, OP_SUM, &m, 1, &at, l0);
}

/* The five-point centred difference of the loss in coordinate i of leaf x:
 *   (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h,
 * exact to O(h^4).  *same: no piecewise op changed its decision at any of
 * the four points (see gp_branch_hash). */
static double five_point(GradProblem *gp, const Node *x, int64_t i, double h, uint64_t base,
                         bool *same) {
  float *v = gp_f32(gp, x), v0 = v[i];
  const double at[4] = {-2 * h, -h, h, 2 * h};
  double f[4];
  *same = true;
  for (int k = 0; k < 4; k++) {
    v[i] = (float)((double)v0 + at[k]);
    f[k] = gp_loss(gp);
    *same = *same && gp_branch_hash(gp) == base;
  }
  v[i] = v0;
  return (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * h);
}

static double worst_ratio; /* over all cases, for KILN_GRAD_VERBOSE */
static const char *worst_case;

static void run_case(void **state) {
  const GradCase *t = *state;
  Node *y, *loss;
  Compiled c = compile_case(t, &y, &loss);
  bool functional = !loss;
  if (functional)
    loss = linear_functional(c.g, y);
  /* the nodes to differentiate with respect to */
  Node *wrt[16];
  int n = 0;
  for (const char *s = t->wrt; *s;) {
    while (*s == ' ')
      s++;
    size_t w = strcspn(s, " ");
    if (!w)
      break;
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)w, s);
    Node *x = graph_find(c.g, name);
    if (!x || (x->op != OP_INPUT && x->op != OP_PARAM) || x->dtype != DT_F32)
      fail_msg("case %s: %s is not an f32 input or parameter", t->name, name);
    assert_true(n < countof(wrt));
    wrt[n++] = x;
    s += w;
  }
  GradProblem gp;
  gp_init(&gp, &c, loss, wrt, n, 7);
  if (functional)
    gp.fy = y, gp.fr = graph_find(c.g, "gc_r");
  GcRng rng = {gc_hash(t->name) ^ gc_seed()};
  double h = fill_case(&gp, t, &rng);
  gp_analytic(&gp);
  uint64_t base = gp_branch_hash(&gp);
  double rtol = t->rtol > 0 ? t->rtol : DEF_RTOL;
  double atol = t->atol > 0 ? t->atol : DEF_ATOL, worst = 0;
  GcLog log = {0};
  int checked = 0;
  for (int k = 0; k < n; k++) {
    int64_t idx[16], cnt = shape_numel(&wrt[k]->shape);
    int m = gc_pick(&rng, cnt, cnt <= 16 ? 16 : 12, idx);
    const float *x = gp_f32(&gp, wrt[k]);
    for (int j = 0; j < m; j++) {
      int64_t i = idx[j];
      bool same;
      double a = gp.grad_val[k][i], num = five_point(&gp, wrt[k], i, step_at(h, x[i]), base, &same);
      double r = gc_ratio(a, num, rtol, atol);
      if (!same) /* the case's values are not kept away from the kinks */
        gc_logf(&log, "  %s[%lld] (at %.6g) +- 2h crosses a kink: add .kinks or .distinct\n",
                wrt[k]->name, (long long)i, (double)x[i]);
      worst = r > worst ? r : worst;
      checked++;
      if (gc_verbose() >= 2)
        print_message("  %s[%lld] at %.6g: analytic %.9g numerical %.9g, |a-n|/tol %.3g\n",
                      wrt[k]->name, (long long)i, (double)x[i], a, num, r);
      if (r > 1)
        gc_logf(&log, "  d loss / d %s[%lld] (at %.6g): analytic %.7g, numerical %.7g\n",
                wrt[k]->name, (long long)i, (double)x[i], a, num);
    }
  }
  if (gc_verbose())
    print_message("%-28s %3d coordinates, worst |a-n|/tol %.3g\n", t->name, checked, worst);
  if (worst > worst_ratio)
    worst_ratio = worst, worst_case = t->name;
  gp_free(&gp);
  compiled_free(&c);
  if (log.n) {
    char *msg = log.text;
    fail_msg("case %s: %d of %d coordinates differ (rtol %g, atol %g, h %g):\n%s", t->name, log.n,
             checked, rtol, atol, h, msg);
  }
}

/* The dropout gradient is the forward's mask scaled by 1 / (1 - p):
 * d sum(dropout(x) r) / dx_i is r_i / (1 - p) where y_i != 0, else 0, at
 * the same seed and step; another step gives another mask. */
static void dropout_gradient_is_the_mask(void **state) {
  Compiled c = compile_opts("model m() {\n  input x: f32[8, 16]\n  y = op.dropout(x, p=0.25)\n}\n",
                            true, NULL, 0);
  MUST_COMPILE(c);
  Node *y = graph_find_value(c.g, "y"), *x = graph_find(c.g, "x");
  Node *loss = linear_functional(c.g, y);
  int64_t cnt = shape_numel(&x->shape);
  int kept_at[2] = {0, 0}, differ = 0;
  bool *mask0 = calloc((size_t)cnt, 1);
  for (int run = 0; run < 2; run++) {
    GradProblem gp;
    gp_init(&gp, &c, loss, &x, 1, 3 + (uint64_t)run);
    GcRng rng = {99};
    float *xv = gp_f32(&gp, x), *r = gp_f32(&gp, graph_find(c.g, "gc_r"));
    for (int64_t i = 0; i < cnt; i++)
      xv[i] = (float)gc_range(&rng, 0.5, 1.5), r[i] = (float)gc_range(&rng, -1, 1);
    gp_analytic(&gp);
    const float *yv = gp.ev.vals[y->id].data, *gv = gp.grad_val[0];
    for (int64_t i = 0; i < cnt; i++) {
      bool kept = yv[i] != 0;
      if (kept)
        assert_float_equal(yv[i], xv[i] / 0.75f, 1e-6);
      double want = kept ? r[i] / 0.75 : 0.0;
      if (fabs(gv[i] - want) > 1e-6)
        fail_msg("step %d: grad[%lld] = %g, the mask says %g", 3 + run, (long long)i, gv[i], want);
      kept_at[run] += kept;
      if (run == 0)
        mask0[i] = kept;
      else
        differ += mask0[i] != kept;
    }
    gp_free(&gp);
  }
  free(mask0);
  /* p = 0.25 of 128: some dropped, most kept, and the step changes the mask */
  for (int run = 0; run < 2; run++)
    assert_true(kept_at[run] > 64 && kept_at[run] < 128);
  assert_true(differ > 0);
  compiled_free(&c);
}

/* Every op with a gradient rule appears in some case's graph (before
 * autodiff, not counting the harness's own sum and mul). */
static void every_differentiable_op_is_covered(void **state) {
  bool covered[OP_COUNT] = {0};
  for (int i = 0; i < countof(cases); i++) {
    Node *y, *loss;
    Compiled c = compile_case(&cases[i], &y, &loss);
    for (int j = 0; j < c.g->n_nodes; j++)
      covered[c.g->nodes[j]->op] = true;
    compiled_free(&c);
  }
  char missing[1024] = "";
  int n_missing = 0, n_ops = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    if (!op_info[op].grad)
      continue;
    n_ops++;
    if (!covered[op]) {
      n_missing++;
      strncat(missing, " ", sizeof missing - strlen(missing) - 1);
      strncat(missing, op_name((Op)op), sizeof missing - strlen(missing) - 1);
    }
  }
  if (gc_verbose())
    print_message("%d differentiable ops, %d cases; worst |a-n|/tol %.3g (%s)\n", n_ops,
                  countof(cases), worst_ratio, worst_case ? worst_case : "-");
  if (n_missing)
    fail_msg("%d differentiable op(s) used by no case:%s", n_missing, missing);
}

int main(void) {
  int n = countof(cases);
  struct CMUnitTest *tests = calloc((size_t)n + 2, sizeof *tests);
  char **names = calloc((size_t)n, sizeof(char *));
  for (int i = 0; i < n; i++) {
    names[i] = malloc(strlen(cases[i].name) + 6);
    sprintf(names[i], "grad_%s", cases[i].name);
    tests[i].name = names[i];
    tests[i].test_func = run_case;
    tests[i].initial_state = (void *)&cases[i];
  }
  tests[n].name = "dropout_gradient_is_the_mask";
  tests[n].test_func = dropout_gradient_is_the_mask;
  tests[n + 1].name = "every_differentiable_op_is_covered";
  tests[n + 1].test_func = every_differentiable_op_is_covered;
  int rc = _cmocka_run_group_tests("grad", tests, (size_t)n + 2, NULL, NULL);
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
  free(tests);
  return rc;
}
