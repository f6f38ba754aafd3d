/*
 * elab_expr.c: expressions.
 *
 * Operators work on compile-time values (folded here, Python-like: `/` gives
 * a number, `//` and `%` floor) and on tensors (they become nodes: `+` is
 * add, `@` matmul, `<` less, ...).  A number next to a tensor becomes a
 * scalar constant of the tensor's dtype, and broadcasting does the rest.
 * Indexing a tensor makes a slice node (plus a reshape that drops axes
 * indexed by a single integer); indexing a list picks elements.
 */
#include <math.h>
#include <string.h>

#include "elab.h"

Node *add_node(Elab *e, Op op, Node **in, const Loc *in_locs, int n_in, const Attrs *at,
               const Loc *attr_locs, Loc loc) {
  ShapeErr err;
  check_limits(e, loc);
  Node *n = graph_add(e->g, op, in, n_in, at, user_loc(e, loc), &err);
  if (n)
    return n;
  const AttrSpec *s = err.attr ? attr_find(op, err.attr) : NULL;
  if (s && attr_locs && attr_locs[s - op_info[op].attrs].src)
    loc = attr_locs[s - op_info[op].attrs];
  else if (err.arg >= 0 && in_locs)
    loc = in_locs[err.arg];
  elab_error(e, loc, "%s", err.msg);
}

static Value tensor_at(Node *n, Loc origin) {
  Value v = v_tensor(n);
  v.origin = origin;
  return v;
}

/* --- compile-time arithmetic ----------------------------------------------- */

static int64_t int_arith(Elab *e, int op, int64_t a, int64_t b, Loc loc) {
  int64_t r = 0;
  bool ovf = false;
  switch (op) {
  case BOP_ADD: ovf = __builtin_add_overflow(a, b, &r); break;
  case BOP_SUB: ovf = __builtin_sub_overflow(a, b, &r); break;
  case BOP_MUL: ovf = __builtin_mul_overflow(a, b, &r); break;
  case BOP_FLOORDIV:
  case BOP_MOD:
    if (b == 0)
      elab_error(e, loc, "division by zero");
    if (a == INT64_MIN && b == -1)
      elab_error(e, loc, "integer overflow");
    r = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
      r--; /* floor */
    if (op == BOP_MOD)
      r = a - r * b;
    break;
  case BOP_POW:
    r = 1;
    for (int64_t k = 0; k < b && !ovf; k++)
      ovf = __builtin_mul_overflow(r, a, &r);
    break;
  }
  if (ovf)
    elab_error(e, loc, "integer overflow in a compile-time expression");
  return r;
}

static Value fold_numbers(Elab *e, int op, const Value *a, const Value *b, Loc loc) {
  bool ints = a->kind != V_FLOAT && b->kind != V_FLOAT;
  double x = v_number(a), y = v_number(b);
  switch (op) {
  case BOP_EQ: return v_bool(x == y);
  case BOP_NE: return v_bool(x != y);
  case BOP_LT: return v_bool(x < y);
  case BOP_LE: return v_bool(x <= y);
  case BOP_GT: return v_bool(x > y);
  case BOP_GE: return v_bool(x >= y);
  case BOP_DIV:
    if (y == 0)
      elab_error(e, loc, "division by zero");
    return v_float(x / y);
  case BOP_POW:
    if (ints && b->i >= 0 && b->i < 64)
      return v_int(int_arith(e, op, a->i, b->i, loc));
    return v_float(pow(x, y));
  case BOP_ADD: case BOP_SUB: case BOP_MUL: case BOP_FLOORDIV: case BOP_MOD:
    if (ints)
      return v_int(int_arith(e, op, a->i, b->i, loc));
    if ((op == BOP_FLOORDIV || op == BOP_MOD) && y == 0)
      elab_error(e, loc, "division by zero");
    if (op == BOP_ADD) return v_float(x + y);
    if (op == BOP_SUB) return v_float(x - y);
    if (op == BOP_MUL) return v_float(x * y);
    if (op == BOP_FLOORDIV) return v_float(floor(x / y));
    return v_float(x - floor(x / y) * y);
  case BOP_MATMUL:
    elab_error(e, loc, "@ needs tensors, got two numbers");
  }
  elab_error(e, loc, "this operator does not apply to numbers");
}

static Value concat_lists(Elab *e, const Value *a, const Value *b) {
  Value r = {.kind = V_LIST, .n = a->n + b->n};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(r.n + 1));
  memcpy(r.items, a->items, sizeof(Value) * (size_t)a->n);
  memcpy(r.items + a->n, b->items, sizeof(Value) * (size_t)b->n);
  return r;
}

static Value repeat_list(Elab *e, const Value *l, int64_t k, Loc loc) {
  if (k < 0)
    k = 0;
  if (k > 0 && l->n * k > 100000)
    elab_error(e, loc, "list repetition makes more than 100000 items");
  Value r = {.kind = V_LIST, .n = (int)(l->n * k)};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(r.n + 1));
  for (int64_t i = 0; i < k; i++)
    memcpy(r.items + i * l->n, l->items, sizeof(Value) * (size_t)l->n);
  return r;
}

static Value fold_other(Elab *e, int op, const Value *a, const Value *b, Loc loc) {
  bool seqs = (a->kind == V_LIST || a->kind == V_TUPLE) && (b->kind == V_LIST || b->kind == V_TUPLE);
  if (a->kind == V_STR && b->kind == V_STR) {
    if (op == BOP_ADD)
      return v_str(arena_fmt(e->a, "%s%s", a->s, b->s));
    if (op == BOP_EQ || op == BOP_NE)
      return v_bool((strcmp(a->s, b->s) == 0) == (op == BOP_EQ));
  }
  if (seqs && op == BOP_ADD)
    return concat_lists(e, a, b);
  if (a->kind == V_LIST && op == BOP_MUL && b->kind == V_INT)
    return repeat_list(e, a, b->i, loc);
  if (op == BOP_EQ || op == BOP_NE) /* different kinds are simply unequal */
    return v_bool((op == BOP_NE) != (a->kind == b->kind && a->kind == V_DTYPE && a->dt == b->dt));
  elab_error(e, loc, "this operator cannot combine %s and %s", v_describe(e, a), v_describe(e, b));
}

/* --- tensor operators -------------------------------------------------------- */

static Op tensor_op(Elab *e, int op, Loc loc) {
  switch (op) {
  case BOP_ADD: return OP_ADD;
  case BOP_SUB: return OP_SUB;
  case BOP_MUL: return OP_MUL;
  case BOP_DIV: return OP_DIV;
  case BOP_POW: return OP_POW;
  case BOP_MATMUL: return OP_MATMUL;
  case BOP_EQ: return OP_EQUAL;
  case BOP_NE: return OP_NOT_EQUAL;
  case BOP_LT: return OP_LESS;
  case BOP_LE: return OP_LESS_EQUAL;
  case BOP_GT: return OP_GREATER;
  case BOP_GE: return OP_GREATER_EQUAL;
  }
  elab_error(e, loc, "this operator is not defined on tensors (// %% and or work on "
             "compile-time values)");
}

Value binary_values(Elab *e, int op, Value a, Value b, Loc loc) {
  if (a.kind != V_TENSOR && b.kind != V_TENSOR) {
    if (v_is_number(&a) && v_is_number(&b))
      return fold_numbers(e, op, &a, &b, loc);
    return fold_other(e, op, &a, &b, loc);
  }
  Op top = tensor_op(e, op, loc);
  DType dt = a.kind == V_TENSOR ? a.node->dtype : b.node->dtype;
  Node *in[2] = {v_to_tensor(e, &a, dt, a.origin, "the left operand"),
                 v_to_tensor(e, &b, dt, b.origin, "the right operand")};
  /* both operands take part in a shape error: blame the operator */
  return tensor_at(add_node(e, top, in, NULL, 2, NULL, NULL, loc), loc);
}

static Value unary_value(Elab *e, const Expr *x) {
  Value a = eval_expr(e, x->a);
  if (x->op == UOP_NOT)
    return v_bool(!v_to_bool(e, &a, x->a->loc, "the operand of not"));
  if (a.kind == V_INT) {
    if (a.i == INT64_MIN)
      elab_error(e, x->loc, "integer overflow");
    return v_int(-a.i);
  }
  if (a.kind == V_FLOAT)
    return v_float(-a.f);
  if (a.kind != V_TENSOR)
    elab_error(e, x->loc, "cannot negate %s", v_describe(e, &a));
  Loc l = user_loc(e, a.origin);
  return tensor_at(add_node(e, OP_NEG, &a.node, &l, 1, NULL, NULL, x->loc), x->loc);
}

static Value logical(Elab *e, const Expr *x) {
  Value a = eval_expr(e, x->a);
  bool av = v_to_bool(e, &a, x->a->loc, x->op == BOP_AND ? "the left side of and" : "the left side of or");
  if (x->op == BOP_AND && !av)
    return v_bool(false);
  if (x->op == BOP_OR && av)
    return v_bool(true);
  Value b = eval_expr(e, x->b);
  return v_bool(v_to_bool(e, &b, x->b->loc, x->op == BOP_AND ? "the right side of and" : "the right side of or"));
}

/* --- indexing ------------------------------------------------------------------- */

static int64_t opt_int(Elab *e, const Expr *x, int64_t dflt, const char *what) {
  if (!x)
    return dflt;
  Value v = eval_expr(e, x);
  return v_to_int(e, &v, x->loc, what);
}

static Value index_seq(Elab *e, const Expr *x, const Value *seq) {
  if (x->n_slices != 1)
    elab_error(e, x->loc, "a list takes one index, got %d", x->n_slices);
  const SliceItem *s = &x->slices[0];
  int64_t n = seq->n;
  if (s->kind == SL_INDEX) {
    int64_t i = opt_int(e, s->lo, 0, "a list index");
    if (i < -n || i >= n)
      elab_error(e, s->loc, "index %lld is out of range for a list of %lld", (long long)i,
                 (long long)n);
    return seq->items[i < 0 ? i + n : i];
  }
  int64_t lo = opt_int(e, s->lo, 0, "the slice start"), hi = opt_int(e, s->hi, n, "the slice end");
  int64_t st = opt_int(e, s->step, 1, "the slice step");
  if (st <= 0)
    elab_error(e, s->loc, "the slice step must be positive, got %lld", (long long)st);
  lo = lo < 0 ? lo + n : lo;
  hi = hi < 0 ? hi + n : hi;
  lo = lo < 0 ? 0 : lo > n ? n : lo;
  hi = hi < lo ? lo : hi > n ? n : hi;
  Value r = {.kind = V_LIST};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(hi - lo + 1));
  for (int64_t i = lo; i < hi; i += st)
    r.items[r.n++] = seq->items[i];
  return r;
}

static Value index_tensor(Elab *e, const Expr *x, Value t) {
  Node *n = t.node;
  int rank = n->shape.rank;
  char tb[160];
  if (rank == 0)
    elab_error(e, x->slices[0].loc, "cannot index %s: it has no axes", node_type_str(n, tb, sizeof tb));
  if (x->n_slices > rank)
    elab_error(e, x->slices[rank].loc, "%d indices for %s, which has %d ax%s", x->n_slices,
               node_type_str(n, tb, sizeof tb), rank, rank == 1 ? "is" : "es");
  Attrs at;
  attrs_default(OP_SLICE, &at);
  Shape kept = {0};
  bool trivial = true;
  for (int i = 0; i < rank; i++) {
    int64_t d = n->shape.dim[i];
    at.begin[i] = 0, at.end[i] = d, at.step[i] = 1;
    const SliceItem *s = i < x->n_slices ? &x->slices[i] : NULL;
    if (s && s->kind == SL_INDEX) {
      int64_t k = opt_int(e, s->lo, 0, "an index");
      if (k < -d || k >= d)
        elab_error(e, s->loc, "index %lld is out of range for axis %d of size %lld",
                   (long long)k, i, (long long)d);
      k = k < 0 ? k + d : k;
      at.begin[i] = k, at.end[i] = k + 1;
      trivial = false;
      continue;
    }
    if (s) {
      at.begin[i] = opt_int(e, s->lo, 0, "the slice start");
      at.end[i] = opt_int(e, s->hi, d, "the slice end");
      at.step[i] = opt_int(e, s->step, 1, "the slice step");
      if (at.step[i] <= 0)
        elab_error(e, s->loc, "the slice step must be positive, got %lld", (long long)at.step[i]);
      trivial = trivial && at.begin[i] == 0 && at.end[i] >= d && at.step[i] == 1;
    }
    kept.dim[kept.rank++] = i;
  }
  if (trivial)
    return t;
  Loc l = user_loc(e, t.origin);
  Node *sl = add_node(e, OP_SLICE, &n, &l, 1, &at, NULL, x->loc);
  if (kept.rank == rank)
    return tensor_at(sl, x->loc);
  Attrs rs;
  attrs_default(OP_RESHAPE, &rs);
  rs.n_shape = kept.rank;
  for (int i = 0; i < kept.rank; i++)
    rs.shape[i] = sl->shape.dim[kept.dim[i]];
  return tensor_at(add_node(e, OP_RESHAPE, &sl, &l, 1, &rs, NULL, x->loc), x->loc);
}

static Value index_value(Elab *e, const Expr *x) {
  Value base = eval_expr(e, x->a);
  if (base.kind == V_LIST || base.kind == V_TUPLE)
    return index_seq(e, x, &base);
  if (base.kind == V_TENSOR)
    return index_tensor(e, x, base);
  elab_error(e, x->loc, "cannot index %s", v_describe(e, &base));
}

/* --- names ------------------------------------------------------------------------ */

static bool builtin_init(const char *name, Init *out) {
  static const struct { const char *name; InitKind k; } tab[] = {
      {"auto", RT_INIT_AUTO}, {"zeros", RT_INIT_ZEROS}, {"ones", RT_INIT_ONES},
      {"xavier", RT_INIT_XAVIER}, {"xavier_normal", RT_INIT_XAVIER_NORMAL}, {"he", RT_INIT_HE},
      {"he_uniform", RT_INIT_HE_UNIFORM},
  };
  for (int i = 0; i < countof(tab); i++)
    if (strcmp(tab[i].name, name) == 0) {
      *out = (Init){tab[i].k, 0, 0, 0, 0};
      return true;
    }
  return false;
}

static Value name_value_of(Elab *e, const Expr *x) {
  Value *v = frame_lookup(e->fr, x->str);
  if (v) {
    /* blame the use, except for a layer's argument: blame what the user passed */
    Value r = *v;
    if (!e->fr->in_prelude || !r.origin.src || r.origin.src->is_prelude)
      r.origin = x->loc;
    return r;
  }
  Value r = {0};
  r.origin = x->loc;
  if (builtin_init(x->str, &r.init)) {
    r.kind = V_INIT;
    return r;
  }
  if (strcmp(x->str, "training") == 0)
    return v_bool(e->g->training);
  if (strcmp(x->str, "f32") == 0 || strcmp(x->str, "i32") == 0) {
    r.kind = V_DTYPE;
    r.dt = x->str[0] == 'f' ? DT_F32 : DT_I32;
    return r;
  }
  if (strcmp(x->str, "pi") == 0)
    return v_float(3.14159265358979323846);
  if (find_block(e->user, x->str) || find_block(e->prelude, x->str) || op_lookup(x->str) >= 0)
    elab_error(e, x->loc, "'%s' is a function; call it with ( )", x->str);
  elab_error(e, x->loc, "unknown name '%s'", x->str);
}

static Value list_value(Elab *e, const Expr *x) {
  Value r = {.kind = V_LIST, .n = x->n_items};
  r.items = arena_alloc(e->a, sizeof(Value) * (size_t)(x->n_items + 1));
  for (int i = 0; i < x->n_items; i++)
    r.items[i] = eval_expr(e, x->items[i]);
  return r;
}

Value eval_expr(Elab *e, const Expr *x) {
  if (++e->depth > MAX_DEPTH)
    elab_error(e, x->loc, "expressions and calls are nested too deeply");
  Value v = {0};
  switch (x->kind) {
  case E_INT: v = v_int(x->ival); break;
  case E_FLOAT: v = v_float(x->fval); break;
  case E_STR: v = v_str(x->str); break;
  case E_BOOL: v = v_bool(x->ival != 0); break;
  case E_NAME: v = name_value_of(e, x); break;
  case E_LIST: v = list_value(e, x); break;
  case E_UNARY: v = unary_value(e, x); break;
  case E_BINARY:
    if (x->op == BOP_AND || x->op == BOP_OR) {
      v = logical(e, x);
    } else {
      Value a = eval_expr(e, x->a);
      Value b = eval_expr(e, x->b);
      v = binary_values(e, x->op, a, b, x->loc);
    }
    break;
  case E_CALL: v = eval_call(e, x); break;
  case E_INDEX: v = index_value(e, x); break;
  }
  if (!v.origin.src)
    v.origin = x->loc;
  e->depth--;
  return v;
}
