/*
 * ops.c: the op table built from ops.def, and the attribute specs its rows
 * name.
 *
 * An AttrSpec table lists an op's attributes in positional order: in the
 * language, arguments after the tensor inputs fill them in this order, and
 * named arguments fill them by name (frontend/elab_call.c).  Defaults live
 * here and nowhere else.
 */
#include <stddef.h>
#include <string.h>

#include "ir.h"
#include "kir.h"

#define A(field) offsetof(Attrs, field)
#define END {NULL, 0, 0, 0, false, NULL, NULL}

static const char *const upsample_modes[] = {"nearest", "bilinear", NULL};
static const char *const gelu_modes[] = {"none", "tanh", NULL};

static const AttrSpec at_none[] = {END};
static const AttrSpec at_const[] = {
    {"value", AK_FLOAT, A(value), 0, true, NULL, "the constant's value"}, END};
static const AttrSpec at_leaky[] = {
    {"alpha", AK_FLOAT, A(alpha), 0.01, false, NULL, "slope for x < 0"}, END};
static const AttrSpec at_elu[] = {
    {"alpha", AK_FLOAT, A(alpha), 1.0, false, NULL, "alpha * (exp(x) - 1) for x < 0"}, END};
static const AttrSpec at_gelu[] = {
    {"approximate", AK_ENUM, A(mode), 0, false, gelu_modes, "none (erf) or tanh"}, END};
static const AttrSpec at_softplus[] = {
    {"beta", AK_FLOAT, A(alpha), 1.0, false, NULL, "log(1 + exp(beta x)) / beta"},
    {"threshold", AK_FLOAT, A(beta), 20.0, false, NULL, "linear above beta x > threshold"},
    END};
static const AttrSpec at_clamp[] = {
    {"min", AK_FLOAT, A(alpha), 0, true, NULL, "lower bound"},
    {"max", AK_FLOAT, A(beta), 0, true, NULL, "upper bound"},
    END};
static const AttrSpec at_cast[] = {
    {"dtype", AK_DTYPE, A(to), 0, true, NULL, "f32 or i32"}, END};
static const AttrSpec at_reduce[] = {
    {"axis", AK_AXES, A(axes), -1, false, NULL, "an axis or a list of axes (default: all)"},
    {"keepdims", AK_BOOL, A(keepdims), 0, false, NULL, "keep reduced axes with size 1"},
    END};
static const AttrSpec at_argmax[] = {
    {"axis", AK_AXIS, A(axis), -1, false, NULL, "the axis to search"},
    {"keepdims", AK_BOOL, A(keepdims), 0, false, NULL, "keep the axis with size 1"},
    END};
static const AttrSpec at_softmax[] = {
    {"axis", AK_AXIS, A(axis), -1, false, NULL, "the normalized axis"}, END};
static const AttrSpec at_reshape[] = {
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "new shape; one -1 is inferred, 0 copies"}, END};
static const AttrSpec at_transpose[] = {
    {"perm", AK_AXES, A(axes), -1, false, NULL, "axis order (default: swap the last two)"}, END};
static const AttrSpec at_broadcast_to[] = {
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "target shape"}, END};
static const AttrSpec at_concat[] = {
    {"axis", AK_AXIS, A(axis), 0, false, NULL, "the joined axis"}, END};
static const AttrSpec at_full[] = {
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "shape"},
    {"value", AK_FLOAT, A(value), 0, false, NULL, "fill value"},
    {"dtype", AK_DTYPE, A(to), DT_F32, false, NULL, "f32 or i32"},
    END};
static const AttrSpec at_arange[] = {
    {"n", AK_SHAPE, A(shape), -1, true, NULL, "count: 0, 1, ..., n-1"},
    {"dtype", AK_DTYPE, A(to), DT_I32, false, NULL, "f32 or i32"},
    END};
static const AttrSpec at_matmul[] = {
    {"transpose_a", AK_BOOL, A(ta), 0, false, NULL, "use a's last two axes swapped"},
    {"transpose_b", AK_BOOL, A(tb), 0, false, NULL, "use b's last two axes swapped"},
    END};
static const AttrSpec at_conv2d[] = {
    {"stride", AK_INT2, A(stride), 1, false, NULL, "step between windows"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "zero padding on each side"},
    {"dilation", AK_INT2, A(dilation), 1, false, NULL, "spacing of kernel taps"},
    {"groups", AK_INT, A(groups), 1, false, NULL, "channel groups (C_in for depthwise)"},
    END};
static const AttrSpec at_conv_t[] = {
    {"stride", AK_INT2, A(stride), 1, false, NULL, "upsampling step"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "cropped from each side"},
    {"output_padding", AK_INT2, A(out_pad), 0, false, NULL, "added to one side of the output"},
    {"dilation", AK_INT2, A(dilation), 1, false, NULL, "spacing of kernel taps"},
    {"groups", AK_INT, A(groups), 1, false, NULL, "channel groups"},
    END};
static const AttrSpec at_pool[] = {
    {"kernel", AK_INT2, A(kernel), 0, true, NULL, "window size"},
    {"stride", AK_INT2, A(stride), 0, false, NULL, "step (default: the kernel size)"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "implicit padding on each side"},
    {"dilation", AK_INT2, A(dilation), 1, false, NULL, "spacing of window taps"},
    END};
static const AttrSpec at_avgpool[] = {
    {"kernel", AK_INT2, A(kernel), 0, true, NULL, "window size"},
    {"stride", AK_INT2, A(stride), 0, false, NULL, "step (default: the kernel size)"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "zero padding on each side"},
    {"count_include_pad", AK_BOOL, A(count_include_pad), 1, false, NULL,
     "divide by the full window, padding included"},
    END};
static const AttrSpec at_upsample[] = {
    {"scale", AK_INT, A(scale), 2, false, NULL, "integer scale factor"},
    {"mode", AK_ENUM, A(mode), 0, false, upsample_modes, "nearest or bilinear"},
    {"align_corners", AK_BOOL, A(align_corners), 0, false, NULL, "bilinear corner alignment"},
    END};
static const AttrSpec at_dropout[] = {
    {"p", AK_FLOAT, A(p), 0.5, false, NULL, "probability of dropping an element"},
    {"seed", AK_SEED, A(seed), 0, false, NULL, "random stream"},
    END};
static const AttrSpec at_randn[] = {
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "shape"},
    {"seed", AK_SEED, A(seed), 0, false, NULL, "random stream"},
    END};

/* Backward-only ops: not callable from the language, listed for printing. */
static const AttrSpec at_conv_back_w[] = {
    {"stride", AK_INT2, A(stride), 1, false, NULL, "of the forward convolution"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "of the forward convolution"},
    {"dilation", AK_INT2, A(dilation), 1, false, NULL, "of the forward convolution"},
    {"groups", AK_INT, A(groups), 1, false, NULL, "of the forward convolution"},
    {"kernel", AK_INT2, A(kernel), 0, true, NULL, "the weight's kh, kw"},
    END};
static const AttrSpec at_avgpool_back[] = {
    {"kernel", AK_INT2, A(kernel), 0, true, NULL, "window size"},
    {"stride", AK_INT2, A(stride), 0, false, NULL, "step (default: the kernel size)"},
    {"pad", AK_INT2, A(pad), 0, false, NULL, "zero padding on each side"},
    {"count_include_pad", AK_BOOL, A(count_include_pad), 1, false, NULL, "as the forward"},
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "the forward input's shape"},
    END};
static const AttrSpec at_shape_only[] = {
    {"shape", AK_SHAPE, A(shape), -1, true, NULL, "the shape of the result"}, END};

const OpInfo op_info[OP_COUNT] = {
#define OP(ID, NAME, CLASS, ARITY, FLAGS, ATTRS, SHAPE, EVAL, SCALAR, FLOPS, GRAD, LOWER) \
  [OP_##ID] = {NAME, CLASS, ARITY, FLAGS, ATTRS, SHAPE, EVAL, SCALAR, FLOPS, GRAD, LOWER},
#include "ops.def"
#undef OP
};

_Static_assert(countof(op_info) == OP_COUNT, "op_info must have a row per op");

const char *op_name(Op op) { return op >= 0 && op < OP_COUNT ? op_info[op].name : "?"; }

const char *op_class_name(OpClass c) {
  switch (c) {
  case CL_LEAF: return "leaf";
  case CL_ELTWISE: return "elementwise";
  case CL_INJECTIVE: return "injective";
  case CL_REDUCE: return "reduction";
  case CL_COMPLEX: return "complex";
  case CL_OPAQUE: return "opaque";
  }
  unreachable();
}

int op_lookup(const char *name) {
  for (int i = 0; i < OP_COUNT; i++)
    if (!(op_info[i].flags & F_INTERNAL) && strcmp(op_info[i].name, name) == 0)
      return i;
  return -1;
}

const AttrSpec *attr_find(Op op, const char *name) {
  for (const AttrSpec *s = op_info[op].attrs; s->name; s++)
    if (strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

/* Writes the spec's default into the field it names. */
static void attr_set_default(const AttrSpec *s, Attrs *at) {
  char *f = (char *)at + s->offset;
  switch (s->kind) {
  case AK_INT: *(int *)f = (int)s->dflt; break;
  case AK_INT2: ((int *)f)[0] = ((int *)f)[1] = (int)s->dflt; break;
  case AK_FLOAT: *(double *)f = s->dflt; break;
  case AK_BOOL: *(bool *)f = s->dflt != 0; break;
  case AK_AXIS: *(int *)f = (int)s->dflt; break;
  case AK_AXES: at->n_axes = -1; break;
  case AK_SHAPE: at->n_shape = -1; break;
  case AK_ENUM: *(int *)f = (int)s->dflt; break;
  case AK_DTYPE: *(DType *)f = (DType)(int)s->dflt; break;
  case AK_SEED: *(uint64_t *)f = (uint64_t)s->dflt; break;
  }
}

void attrs_default(Op op, Attrs *at) {
  memset(at, 0, sizeof *at);
  at->n_axes = -1;
  at->n_shape = -1;
  for (const AttrSpec *s = op_info[op].attrs; s->name; s++)
    attr_set_default(s, at);
}
