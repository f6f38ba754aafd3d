/*
 * value.c: compile-time values of elaboration and their conversions.
 *
 * Conversions are where most "expected X, got Y" errors come from, so each
 * takes the location to blame and a phrase naming what was being converted
 * ("the kernel size", "dimension 2 of input x").
 */
#include <math.h>
#include <string.h>

#include "elab.h"

Value v_int(int64_t i) { return (Value){.kind = V_INT, .i = i}; }
Value v_float(double f) { return (Value){.kind = V_FLOAT, .f = f}; }
Value v_bool(bool b) { return (Value){.kind = V_BOOL, .i = b}; }
Value v_str(const char *s) { return (Value){.kind = V_STR, .s = s}; }
Value v_tensor(Node *n) { return (Value){.kind = V_TENSOR, .node = n}; }

const char *v_kind_name(VKind k) {
  switch (k) {
  case V_NONE: return "nothing";
  case V_INT: return "an integer";
  case V_FLOAT: return "a number";
  case V_BOOL: return "a boolean";
  case V_STR: return "a string";
  case V_LIST: return "a list";
  case V_TUPLE: return "several values";
  case V_TENSOR: return "a tensor";
  case V_INIT: return "an initializer";
  case V_DTYPE: return "a dtype";
  }
  unreachable();
}

const char *v_describe(Elab *e, const Value *v) {
  char buf[160];
  switch (v->kind) {
  case V_INT: return arena_fmt(e->a, "the integer %lld", (long long)v->i);
  case V_FLOAT: return arena_fmt(e->a, "the number %g", v->f);
  case V_BOOL: return v->i ? "true" : "false";
  case V_STR: return arena_fmt(e->a, "the string \"%s\"", v->s);
  case V_LIST: return arena_fmt(e->a, "a list of %d", v->n);
  case V_TUPLE: return arena_fmt(e->a, "%d values", v->n);
  case V_TENSOR: return arena_fmt(e->a, "a tensor %s", node_type_str(v->node, buf, sizeof buf));
  case V_NONE: case V_INIT: case V_DTYPE: return v_kind_name(v->kind);
  }
  unreachable();
}

bool v_is_number(const Value *v) {
  return v->kind == V_INT || v->kind == V_FLOAT || v->kind == V_BOOL;
}

double v_number(const Value *v) { return v->kind == V_FLOAT ? v->f : (double)v->i; }

int64_t v_to_int(Elab *e, const Value *v, Loc loc, const char *what) {
  if (v->kind == V_INT)
    return v->i;
  if (v->kind == V_FLOAT && v->f == floor(v->f) && fabs(v->f) < 1e15)
    return (int64_t)v->f;
  elab_error(e, loc, "%s must be an integer, got %s", what, v_describe(e, v));
}

bool v_to_bool(Elab *e, const Value *v, Loc loc, const char *what) {
  if (v->kind == V_BOOL || v->kind == V_INT)
    return v->i != 0;
  if (v->kind == V_TENSOR)
    elab_error(e, loc, "%s must be known at compile time, got %s (use where() to choose "
               "between tensors)", what, v_describe(e, v));
  elab_error(e, loc, "%s must be true or false, got %s", what, v_describe(e, v));
}

/* A compile-time number becomes a scalar constant node of dtype dt. */
Node *v_to_tensor(Elab *e, const Value *v, DType dt, Loc loc, const char *what) {
  if (v->kind == V_TENSOR)
    return v->node;
  if (!v_is_number(v))
    elab_error(e, loc, "%s must be a tensor or a number, got %s", what, v_describe(e, v));
  double x = v_number(v);
  if (dt == DT_I32 && (x != floor(x) || fabs(x) > 2147483647.0))
    elab_error(e, loc, "%s: %g is not an i32 value (use cast(x, f32) to compute in f32)", what,
               x);
  return graph_const(e->g, dt, x, user_loc(e, loc));
}

const char *v_text(Elab *e, const Value *v) {
  switch (v->kind) {
  case V_INT: return arena_fmt(e->a, "%lld", (long long)v->i);
  case V_FLOAT: return arena_fmt(e->a, "%g", v->f);
  case V_BOOL: return v->i ? "true" : "false";
  case V_STR: return arena_fmt(e->a, "\"%s\"", v->s);
  case V_NONE: case V_LIST: case V_TUPLE: case V_TENSOR: case V_INIT: case V_DTYPE:
    return v_describe(e, v);
  }
  unreachable();
}
