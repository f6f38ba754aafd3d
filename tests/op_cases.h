/*
 * op_cases.h: small graphs that together compute every op with a lowering,
 * forward and (through the harness's probe loss) backward: the cases that
 * test_codegen.c runs through LLVM and test_cuda.c through the CUDA host
 * emulator, each against its own oracle.  Adding an op: add a case here
 * (both tests fail while an op with a LOWER function has none).
 */
#ifndef KILN_OP_CASES_H
#define KILN_OP_CASES_H

/* One graph per case, statements separated by ';'; `fill` gives value
 * ranges "name=lo:hi" (default: f32 [-2, 2), i32 [0, 3)).  The harness
 * adds loss = sum(y * r) for an f32 `y` and differentiates it with respect
 * to every f32 input and parameter, so backward ops appear too. */
typedef struct OpCase {
  const char *body, *fill;
} OpCase;

static const OpCase op_cases[] = {
    {"input x: f32[3, 5]; y = neg(x) + abs(x) * exp(x) - sin(x) / (cos(x) + 2)", NULL},
    {"input x: f32[3, 5]; y = log(x) + sqrt(x) * rsqrt(x) + x ** 1.5", "x=0.2:3"},
    {"input x: f32[4, 6]; y = relu(x) + leaky_relu(x, 0.2) + elu(x) + sigmoid(x) + tanh(x)", NULL},
    {"input x: f32[4, 6]; y = gelu(x) + gelu(x, approximate=\"tanh\") + softplus(x) + "
     "softplus(x, 2, 1) + clamp(x, -0.5, 0.5)", "x=-4:4"},
    {"input a: f32[2, 3]; input b: f32[3]; y = a ** b + maximum(a, b) - minimum(a, b) / b",
     "a=0.5:2 b=-1.5:2"},
    {"input a: f32[2, 1, 3]; input b: f32[4, 3]; c = equal(a, b) + not_equal(a, b) + less(a, b) + "
     "less_equal(a, b) + greater(a, b) + greater_equal(a, b); y = where(c > 2, a, b)",
     "a=-2:2 b=-2:2"},
    {"input i: i32[2, 3]; input j: i32[3]; input x: f32[2, 3]; "
     "k = i * j - i + maximum(i, j) - minimum(i, -j) + abs(-i) + cast(x * 3, i32); "
     "y = cast(k, f32) * x + cast(sum(k, axis=0), f32) + cast(max(k), f32)",
     "i=-5:5 j=-3:3 x=-3:3"},
    {"input x: f32[2, 3, 4]; y = sum(x, axis=1) + mean(x, axis=1) + max(x, axis=1) + sum(x) + "
     "sum(mean(x, axis=[0, 2], keepdims=true))", NULL},
    {"input x: f32[3, 4]; y = cast(argmax(x, axis=1), f32) + "
     "cast(argmax(transpose(x), axis=0), f32)", NULL},
    {"input x: f32[2, 3, 4]; y = softmax(x, axis=1) + log_softmax(x)", NULL},
    /* rows of 37: maximum and sum in 16 partials, 5 elements after their loop */
    {"input x: f32[3, 2, 37]; y = softmax(x * 40) + log_softmax(x, axis=2)", "x=-3:3"},
    /* softmax rows of 21 and 16: in 8 partials; a layer norm over 24 (chains) */
    {"input x: f32[3, 2, 21]; input z: f32[4, 16]; input w: f32[5, 24]; "
     "y = softmax(x * 40) + log_softmax(x, axis=2) + sum(softmax(z * 30)) + sum(layernorm(w * 9))",
     "x=-3:3 z=-3:3"},
    {"input x: f32[3, 5]; input b: f32[2, 2]; t = transpose(x); "
     "y = concat(t[1:, ::2], b, axis=0) + broadcast_to(b[0], [6, 2]) + reshape(x, [15])[4] + "
     "t[-3:-1, 1][0]", NULL},
    {"input x: f32[2, 3]; y = x * full([2, 3], 1.5) + cast(arange(3), f32) + "
     "cast(full([3], 2, dtype=i32), f32) + arange(3, dtype=f32)", NULL},
    {"input a: f32[2, 3, 4]; input b: f32[4, 5]; input c: f32[6, 5]; "
     "y = (a @ b) @ matmul(c, c, transpose_a=true) + matmul(b, c, transpose_b=true)[1, 2]",
     NULL},
    {"input x: f32[2, 2, 5, 5]; input w: f32[3, 2, 3, 3]; "
     "y = op.conv2d(x, w, stride=2, pad=1) + op.conv2d(x, w, dilation=2)[0]", NULL},
    {"input x: f32[1, 4, 3, 3]; input w: f32[4, 2, 3, 2]; "
     "y = op.conv_transpose2d(x, w, stride=2, pad=1, output_padding=1, groups=2)", NULL},
    {"input x: f32[1, 2, 5, 5]; y = maxpool2d(x, kernel=3, stride=2, pad=1) + "
     "avgpool2d(x, kernel=3, stride=2, pad=1, count_include_pad=false) + avgpool2d(x, 3, 2, 1)",
     NULL},
    /* max pooling's disjoint-window backward: tiled with too many taps to
     * unroll (25), and not tiled (stride 3 > kernel 2) */
    {"input x: f32[1, 2, 10, 10]; y = maxpool2d(x, kernel=5, stride=5) + "
     "maxpool2d(x, kernel=2, stride=3)[:, :, :2, :2]", NULL},
    /* 2-wide stride-2 pooling as vector code (cg_pool.c): ties, NaN, -inf,
     * rows of 20 windows, a [3, 2] window */
    {"input x: f32[2, 3, 12, 40]; y = maxpool2d(relu(x), 2) + maxpool2d(log(x), 2) + "
     "maxpool2d(x, kernel=[3, 2], stride=[3, 2])[:, :, :1, :]", NULL},
    {"input x: f32[1, 2, 3, 3]; y = upsample(x) + upsample(x, mode=\"bilinear\") + "
     "upsample(x, mode=\"bilinear\", align_corners=true)", NULL},
    {"input ids: i32[2, 4]; input t: f32[5, 3]; y = op.embedding(ids, t)", "ids=0:5"},
    {"input z: f32[4, 5]; input t: i32[4]; y = cross_entropy(z, t) + "
     "cross_entropy(reshape(z, [2, 2, 5]), reshape(t, [2, 2]))", "t=0:5"},
    /* 40 classes: maximum and sum in 16 partials, 8 after their loop */
    {"input z: f32[6, 40]; input t: i32[6]; y = cross_entropy(z * 30, t)", "z=-3:3 t=0:40"},
    /* 19 classes: in 8 partials, 3 after their loop */
    {"input z: f32[6, 19]; input t: i32[6]; y = cross_entropy(z * 30, t)", "z=-3:3 t=0:19"},
    {"input x: f32[4, 6]; y = op.dropout(x, p=0.3) + dropout(x * x, p=0.5) + stop_gradient(x) * x",
     NULL},
    {"input x: f32[4, 6]; y = x * randn([4, 6]) + randn([6]) + dropout(randn([4, 1]), p=0.5)",
     NULL},
    {"input x: f32[2, 5]; y = layernorm(dense(x, out=4)) + x[0, 0]", NULL},
    {"input x: f32[3, 2, 4, 4]; y = batchnorm(x)", NULL},
    {"input x: f32[1, 3, 4]; y = attention(x, heads=2, causal=true)", NULL},
    /* big enough for parallel loops */
    {"input x: f32[64, 300]; input w: f32[300, 200]; y = softmax(relu(x @ w) - 1, axis=0)",
     "x=-0.2:0.2 w=-0.2:0.2"},
    {"input x: f32[8, 3, 32, 32]; input w: f32[8, 3, 3, 3]; y = maxpool2d(op.conv2d(x, w), 2)",
     NULL},
};

#endif
