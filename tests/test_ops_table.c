/*
 * test_ops_table.c: consistency of the op table (ir/ops.def, ir/ops.c).
 *
 * Every row must be complete and coherent: a unique name the language can
 * look up (unless internal), shape/eval/flops functions, a scalar function
 * exactly for the elementwise ops that compute one (all but where, cast,
 * stop_gradient and add_n), attribute specs with unique names and defaults
 * that attrs_default really writes, a gradient rule exactly for the
 * differentiable ops, and the backward-only ops internal.  It also keeps the list of ops that
 * tests/test_eval.c, tests/test_eval_nn.c and tests/test_eval_back.c
 * evaluate.
 *
 * Adding an op: nothing to do here unless a check fails; then either fix
 * the row or, for a new eltwise op without a scalar function, extend
 * needs_scalar().  Add the op to covered_by_test_eval[] once a case
 * evaluates it: in test_eval_back.c for the ops only autodiff makes
 * (op_is_backward_only() in tests/ir_helpers.h) and stop_gradient, in
 * test_eval_nn.c for the other CL_COMPLEX and CL_OPAQUE ops, and in
 * test_eval.c for the rest (eval_test_file() in tests/eval_helpers.h gives
 * every op to exactly one of the three, and each file's last test checks
 * at run time that its ops were evaluated, so this list cannot claim
 * coverage that does not exist).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "ir.h"
#include "ir_helpers.h"

static void test_names(void **state) {
  for (int i = 0; i < OP_COUNT; i++) {
    const char *nm = op_info[i].name;
    assert_non_null(nm);
    assert_true(nm[0] != 0);
    assert_string_equal(op_name((Op)i), nm);
    for (int j = 0; j < i; j++)
      if (strcmp(op_info[j].name, nm) == 0)
        fail_msg("ops %d and %d are both named %s", j, i, nm);
    int found = op_lookup(nm);
    if (op_has((Op)i, F_INTERNAL))
      assert_int_equal(found, -1);
    else if (found != i)
      fail_msg("op_lookup(\"%s\") = %d, want %d", nm, found, i);
  }
  assert_int_equal(op_lookup("no_such_op"), -1);
  assert_string_equal(op_name((Op)OP_COUNT), "?");
}

/* Elementwise ops compute through a scalar function, except where (a
 * selection), cast (a conversion), stop_gradient (a copy) and add_n (a sum
 * of any number of inputs). */
static bool needs_scalar(Op op) {
  return op_info[op].cls == CL_ELTWISE && op != OP_WHERE && op != OP_CAST &&
         op != OP_STOP_GRADIENT && op != OP_ADD_N;
}

static void test_functions(void **state) {
  for (int i = 0; i < OP_COUNT; i++) {
    const OpInfo *oi = &op_info[i];
    if (!oi->shape || !oi->eval || !oi->flops || !oi->attrs)
      fail_msg("%s: shape, eval, flops and attrs must all be set", oi->name);
    if ((oi->scalar != NULL) != needs_scalar((Op)i))
      fail_msg("%s: scalar function %s", oi->name, oi->scalar ? "set but unused" : "missing");
    assert_true(op_class_name(oi->cls)[0] != 0);
  }
}

static void test_flags(void **state) {
  for (int i = 0; i < OP_COUNT; i++) {
    const OpInfo *oi = &op_info[i];
    if (oi->cls == CL_LEAF && oi->arity != 0)
      fail_msg("%s: leaves take no tensors", oi->name);
    if (oi->arity < -1 || oi->arity > 3)
      fail_msg("%s: arity %d", oi->name, oi->arity);
    if ((oi->flags & F_COMMUT) && oi->arity != 2 && oi->arity != -1)
      fail_msg("%s: only binary and n-ary ops commute", oi->name);
    if ((oi->flags & F_COMPARE) && (oi->arity != 2 || oi->shape != shape_compare))
      fail_msg("%s: comparisons are binary and use shape_compare", oi->name);
    if ((oi->flags & F_COMPARE) && !(oi->flags & F_NOGRAD))
      fail_msg("%s: comparisons have no gradient", oi->name);
    bool random = (oi->flags & F_RANDOM) != 0;
    if (random != (i == OP_DROPOUT || i == OP_RANDN))
      fail_msg("%s: only dropout and randn are random", oi->name);
  }
}

/* The GRAD column: a rule exactly for the ops autodiff may differentiate
 * through, none for leaves (their gradient is where autodiff stops) and
 * F_NOGRAD ops (differentiating through one is a located error). */
static void test_grad_column(void **state) {
  int rules = 0;
  for (int i = 0; i < OP_COUNT; i++) {
    const OpInfo *oi = &op_info[i];
    bool none = oi->cls == CL_LEAF || (oi->flags & F_NOGRAD);
    if ((oi->grad == NULL) != none)
      fail_msg("%s: gradient rule %s", oi->name,
               none ? "set on a leaf or F_NOGRAD op" : "missing");
    rules += oi->grad != NULL;
  }
  assert_true(rules >= 40);
  assert_null(op_info[OP_PARAM].grad);
  assert_non_null(op_info[OP_STOP_GRADIENT].grad); /* zero, but not an error */
}

/* The ops only autodiff makes (the *_back kernels and add_n) cannot be
 * called from the language; the *_back kernels have no gradient of their
 * own (no second derivatives). */
static void test_backward_only(void **state) {
  int n = 0;
  for (int i = 0; i < OP_COUNT; i++) {
    if (!op_is_backward_only((Op)i))
      continue;
    n++;
    if (!op_has((Op)i, F_INTERNAL))
      fail_msg("%s: a backward-only op must be F_INTERNAL", op_info[i].name);
    if (i != OP_ADD_N && !op_has((Op)i, F_NOGRAD))
      fail_msg("%s: a backward kernel must be F_NOGRAD", op_info[i].name);
  }
  assert_int_equal(n, 9); /* add_n and the 8 *_back kernels of ops.def */
  assert_true(op_is_backward_only(OP_CONV2D_BACK_W) && op_is_backward_only(OP_GELU_BACK));
  assert_false(op_is_backward_only(OP_STOP_GRADIENT) || op_is_backward_only(OP_CONV2D));
  assert_int_equal(op_lookup("stop_gradient"), OP_STOP_GRADIENT);
}

/* Reads the field a spec names after attrs_default and compares it with
 * the spec's default. */
static void check_default(Op op, const AttrSpec *s, const Attrs *at) {
  const char *f = (const char *)at + s->offset;
  bool ok = false;
  switch (s->kind) {
  case AK_INT: ok = *(const int *)f == (int)s->dflt; break;
  case AK_INT2:
    ok = ((const int *)f)[0] == (int)s->dflt && ((const int *)f)[1] == (int)s->dflt;
    break;
  case AK_FLOAT: ok = *(const double *)f == s->dflt; break;
  case AK_BOOL: ok = *(const bool *)f == (s->dflt != 0); break;
  case AK_AXIS: ok = *(const int *)f == (int)s->dflt; break;
  case AK_AXES: ok = at->n_axes == -1 && s->offset == offsetof(Attrs, axes); break;
  case AK_SHAPE: ok = at->n_shape == -1 && s->offset == offsetof(Attrs, shape); break;
  case AK_ENUM: {
    int n = 0;
    while (s->choices && s->choices[n])
      n++;
    ok = *(const int *)f == (int)s->dflt && s->dflt >= 0 && s->dflt < n;
    break;
  }
  case AK_DTYPE: ok = *(const DType *)f == (DType)(int)s->dflt; break;
  case AK_SEED: ok = *(const uint64_t *)f == (uint64_t)s->dflt; break;
  }
  if (!ok)
    fail_msg("%s: attribute %s does not default to %g", op_name(op), s->name, s->dflt);
}

static void test_attrs(void **state) {
  for (int i = 0; i < OP_COUNT; i++) {
    Attrs at;
    attrs_default((Op)i, &at);
    for (const AttrSpec *s = op_info[i].attrs; s->name; s++) {
      if (s->offset >= sizeof(Attrs) || !s->doc || !s->doc[0])
        fail_msg("%s: attribute %s has a bad offset or no doc", op_info[i].name, s->name);
      if (attr_find((Op)i, s->name) != s)
        fail_msg("%s: attribute %s is listed twice", op_info[i].name, s->name);
      if ((s->kind == AK_ENUM) != (s->choices != NULL))
        fail_msg("%s: attribute %s: choices go with AK_ENUM", op_info[i].name, s->name);
      check_default((Op)i, s, &at);
    }
    assert_null(attr_find((Op)i, "no_such_attribute"));
  }
}

/* Ops evaluated by tests/test_eval.c, tests/test_eval_nn.c and
 * tests/test_eval_back.c against hand-computed values.  INPUT and PARAM
 * are leaves bound by the caller; every other op must be here. */
static const Op covered_by_test_eval[] = {
    OP_CONST,     OP_NEG,          OP_ABS,        OP_EXP,        OP_LOG,
    OP_SQRT,      OP_RSQRT,        OP_RELU,       OP_LEAKY_RELU, OP_ELU,
    OP_SIGMOID,   OP_TANH,         OP_GELU,       OP_SOFTPLUS,   OP_SIN,
    OP_COS,       OP_CLAMP,        OP_ADD,        OP_SUB,        OP_MUL,
    OP_DIV,       OP_POW,          OP_MAXIMUM,    OP_MINIMUM,    OP_EQUAL,
    OP_NOT_EQUAL, OP_LESS,         OP_LESS_EQUAL, OP_GREATER,    OP_GREATER_EQUAL,
    OP_WHERE,     OP_CAST,         OP_SUM,        OP_MEAN,       OP_MAX,
    OP_ARGMAX,    OP_SOFTMAX,      OP_LOG_SOFTMAX, OP_RESHAPE,   OP_TRANSPOSE,
    OP_BROADCAST_TO, OP_SLICE,     OP_CONCAT,     OP_FULL,       OP_ARANGE,
    OP_MATMUL,    OP_CONV2D,       OP_CONV_TRANSPOSE2D, OP_MAXPOOL2D, OP_AVGPOOL2D,
    OP_UPSAMPLE,  OP_EMBEDDING,    OP_CROSS_ENTROPY, OP_DROPOUT,  OP_RANDN,
    OP_STOP_GRADIENT, OP_ADD_N,    OP_GELU_BACK,  OP_CONV2D_BACK_W, OP_MAXPOOL2D_BACK,
    OP_AVGPOOL2D_BACK, OP_UPSAMPLE_BACK, OP_SLICE_BACK, OP_EMBEDDING_BACK,
    OP_CROSS_ENTROPY_BACK,
};

static void test_eval_coverage_list(void **state) {
  int seen[OP_COUNT] = {0};
  for (int i = 0; i < countof(covered_by_test_eval); i++)
    seen[covered_by_test_eval[i]]++;
  for (int i = 0; i < OP_COUNT; i++) {
    int want = i == OP_INPUT || i == OP_PARAM ? 0 : 1;
    if (seen[i] != want)
      fail_msg("%s is listed %d times in covered_by_test_eval, want %d", op_info[i].name,
               seen[i], want);
  }
  assert_int_equal(countof(covered_by_test_eval), OP_COUNT - 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names), cmocka_unit_test(test_functions),
      cmocka_unit_test(test_flags), cmocka_unit_test(test_attrs),
      cmocka_unit_test(test_grad_column), cmocka_unit_test(test_backward_only),
      cmocka_unit_test(test_eval_coverage_list),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
