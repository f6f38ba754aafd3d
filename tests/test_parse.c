/*
 * test_parse.c: the lexer and the parser, seen through the AST.
 *
 * Adding a case: parse a snippet with parse_ok() and walk the returned
 * Program (frontend/ast.h), or assert the error with parse_err().
 */
#include "kiln_test.h"

#include "ast.h"

typedef struct Parsed {
  Arena *a;
  Diag d;
  Program p;
  const Source *src;
} Parsed;

static void do_parse(void *ud) {
  Parsed *p = ud;
  parse_source(p->a, &p->d, p->src, &p->p);
}

static Parsed parse(const char *text) {
  Parsed p = {0};
  p.a = arena_new();
  diag_init(&p.d);
  p.src = source_from_string(p.a, "p.kiln", text, strlen(text));
  if (diag_protect(&p.d, do_parse, &p))
    p.p.n_decls = -1;
  return p;
}

static Parsed parse_ok(const char *text) {
  Parsed p = parse(text);
  if (p.p.n_decls < 0)
    fail_msg("unexpected parse error:\n%s", p.d.msg);
  return p;
}

static void parse_err(const char *text, const char *where, const char *sub) {
  Parsed p = parse(text);
  if (p.p.n_decls >= 0)
    fail_msg("parsed, expected an error containing '%s'", sub);
  if (strncmp(p.d.msg, where, strlen(where)) != 0 || !strstr(p.d.msg, sub))
    fail_msg("expected '%s' ... '%s', got:\n%s", where, sub, p.d.msg);
  diag_free(&p.d);
  arena_free(p.a);
}

static void parsed_free(Parsed *p) {
  diag_free(&p->d);
  arena_free(p->a);
}

/* The value expression of statement k of the first declaration. */
static const Expr *stmt_value(const Parsed *p, int k) {
  return p->p.decls[0]->body.items[k]->value;
}

static void declarations_and_statements(void **state) {
  Parsed p = parse_ok("# a comment\n"
                      "block b(x, k = 2) { return x, k }\n"
                      "model m(N = 64, M) {\n"
                      "  input x: f32[N, 3]\n"
                      "  param w: f32[3, 4] init=xavier trainable=false\n"
                      "  a, c = b(x)\n"
                      "  for i in 0 .. N { a = a }\n"
                      "  for v in [1, 2] { a = a }\n"
                      "  if N > 1 { a = a } else if N == 0 { a = a } else { a = a }\n"
                      "  assert N > 0, \"N must be positive\"\n"
                      "  output y = a\n"
                      "  output c\n"
                      "}\n"
                      "train m { minimize loss; optimizer sgd(lr=0.1)\n epochs 2 }\n");
  assert_int_equal(p.p.n_decls, 3);
  const Decl *b = p.p.decls[0], *m = p.p.decls[1], *t = p.p.decls[2];
  assert_int_equal(b->kind, D_BLOCK);
  assert_int_equal(b->n_params, 2);
  assert_non_null(b->params[1].dflt);
  assert_int_equal(b->body.items[0]->n_values, 2);
  assert_int_equal(m->kind, D_MODEL);
  assert_null(m->params[1].dflt);
  assert_int_equal(m->body.n_items, 9);
  const Stmt *param = m->body.items[1];
  assert_int_equal(param->kind, S_PARAM);
  assert_int_equal(param->n_opts, 2);
  assert_string_equal(param->opts[1].name, "trainable");
  assert_int_equal(m->body.items[2]->n_targets, 2);
  assert_non_null(m->body.items[3]->hi);
  assert_null(m->body.items[4]->hi);
  const Stmt *ifs = m->body.items[5];
  assert_int_equal(ifs->else_body.n_items, 1);
  assert_int_equal(ifs->else_body.items[0]->kind, S_IF);
  assert_int_equal(m->body.items[6]->kind, S_ASSERT);
  assert_null(m->body.items[8]->value);
  assert_int_equal(t->kind, D_TRAIN);
  assert_int_equal(t->n_entries, 3);
  assert_string_equal(t->entries[1].key, "optimizer");
  assert_int_equal(t->entries[1].value->kind, E_CALL);
  parsed_free(&p);
}

static void operator_precedence(void **state) {
  Parsed p = parse_ok("model m() {\n"
                      "  a = 1 + 2 * 3\n"
                      "  b = -x ** 2\n"
                      "  c = a @ b + c\n"
                      "  d = not a == b and c or d\n"
                      "  e = 2 ** 3 ** 2\n"
                      "  f = x[1:2, :, ::2][0]\n"
                      "}\n");
  const Expr *a = stmt_value(&p, 0);
  assert_int_equal(a->op, BOP_ADD);
  assert_int_equal(a->b->op, BOP_MUL);
  const Expr *b = stmt_value(&p, 1); /* -(x ** 2) */
  assert_int_equal(b->kind, E_UNARY);
  assert_int_equal(b->a->op, BOP_POW);
  const Expr *c = stmt_value(&p, 2);
  assert_int_equal(c->op, BOP_ADD);
  assert_int_equal(c->a->op, BOP_MATMUL);
  const Expr *d = stmt_value(&p, 3); /* ((not (a == b)) and c) or d */
  assert_int_equal(d->op, BOP_OR);
  assert_int_equal(d->a->op, BOP_AND);
  assert_int_equal(d->a->a->kind, E_UNARY);
  assert_int_equal(d->a->a->a->op, BOP_EQ);
  const Expr *e = stmt_value(&p, 4); /* 2 ** (3 ** 2) */
  assert_int_equal(e->b->op, BOP_POW);
  const Expr *f = stmt_value(&p, 5);
  assert_int_equal(f->kind, E_INDEX);
  assert_int_equal(f->n_slices, 1);
  assert_int_equal(f->a->kind, E_INDEX);
  assert_int_equal(f->a->n_slices, 3);
  assert_int_equal(f->a->slices[1].kind, SL_RANGE);
  assert_null(f->a->slices[1].lo);
  assert_non_null(f->a->slices[2].step);
  parsed_free(&p);
}

static void literals_and_tokens(void **state) {
  Parsed p = parse_ok("model m() {\n"
                      "  a = 1e-5 + 2.5 + 3E2\n"
                      "}\n");
  const Expr *a = stmt_value(&p, 0);
  assert_true(a->b->fval == 300.0);
  assert_true(a->a->a->fval == 1e-5);
  parsed_free(&p);
  parse_err("model m() {\n  b = [0 .. 3]\n}\n", "p.kiln:2:10:", "unexpected '..'");
  p = parse_ok("model m() {\n"
               "  s = \"tab\\there \\\"q\\\" \\\\\"\n"
               "  t = op.relu(x)\n"
               "  u = f(x, k=1,)\n"
               "  v = [1, 2,]\n"
               "}\n");
  assert_string_equal(stmt_value(&p, 0)->str, "tab\there \"q\" \\");
  assert_true(stmt_value(&p, 1)->qualified);
  assert_int_equal(stmt_value(&p, 2)->n_args, 2);
  assert_string_equal(stmt_value(&p, 2)->args[1].name, "k");
  assert_int_equal(stmt_value(&p, 3)->n_items, 2);
  parsed_free(&p);
}

static void newlines_end_statements_except_inside_brackets(void **state) {
  Parsed p = parse_ok("model m()\n"
                      "{\n"
                      "  a = f(x,\n"
                      "        y)\n"
                      "  b = [1,\n"
                      "       2]\n"
                      "  c = a +\n"
                      "      b\n"
                      "\n\n"
                      "  d = c; e = d\n"
                      "}\n");
  assert_int_equal(p.p.decls[0]->body.n_items, 5);
  assert_int_equal(stmt_value(&p, 2)->op, BOP_ADD);
  parsed_free(&p);
  /* an operator at the start of the next line does not continue the line */
  parse_err("model m() {\n  c = a\n    + b\n}\n", "p.kiln:3:5:",
            "'+' cannot be at the start of a statement; to continue the previous line, end that "
            "line with the operator");
  /* `else` belongs on the line of `}` */
  parse_err("model m() {\n  if a { b = 1 }\n  else { b = 2 }\n}\n", "p.kiln:3:3:",
            "'else' must be on the same line as the '}' that closes the if");
}

static void locations_are_line_and_byte_column(void **state) {
  Parsed p = parse_ok("model m() {\n\tx = a  +  b\n}\n");
  const Expr *x = stmt_value(&p, 0);
  assert_int_equal(x->loc.line, 2);
  assert_int_equal(x->loc.col, 9); /* the '+' */
  assert_int_equal(x->a->loc.col, 6);
  assert_int_equal(x->b->loc.col, 12);
  parsed_free(&p);
}

static void syntax_errors_say_what_was_expected(void **state) {
  parse_err("model m( {\n}\n", "p.kiln:1:10:", "unexpected '{', expected name or ')'");
  parse_err("model m() {\n  x = \n}\n", "p.kiln:2:6:", "expected an expression");
  parse_err("model m() {\n  x = 3 $ 4\n}\n", "p.kiln:2:9:", "unexpected character '$'");
  parse_err("model m() {\n  x = \"abc\n}\n", "p.kiln:2:7:", "unterminated string");
  parse_err("model m() {\n  x = 12abc\n}\n", "p.kiln:2:7:", "malformed number");
  parse_err("model m() {\n  x = 1 < 2 < 3\n}\n", "p.kiln:2:13:", "unexpected '<'");
  parse_err("model m() {\n  x = f(1\n  # trailing comment\n", "p.kiln:2:10:", "unexpected end of file");
  parse_err("model m() {\n  x = foo.bar(1)\n}\n", "p.kiln:2:7:", "only op.NAME(...) may be qualified");
  parse_err("model m() {\n  x = 99999999999999999999\n}\n", "p.kiln:2:7:", "integer literal is too large");
  parse_err("model m() {\n  x = \xc3\xa9\n}\n", "p.kiln:2:7:", "unexpected byte 0xc3");
}

static void nesting_is_bounded(void **state) {
  /* 10000 nested parentheses: a located error, not a stack overflow */
  size_t n = 10000;
  char *s = malloc(3 * n + 64);
  strcpy(s, "model m() {\n  x = ");
  size_t k = strlen(s);
  for (size_t i = 0; i < n; i++)
    s[k++] = '(';
  s[k++] = '1';
  for (size_t i = 0; i < n; i++)
    s[k++] = ')';
  strcpy(s + k, "\n}\n");
  Parsed p = parse(s);
  assert_int_equal(p.p.n_decls, -1);
  assert_non_null(strstr(p.d.msg, "p.kiln:2:"));
  assert_non_null(strstr(p.d.msg, "nested too deeply"));
  parsed_free(&p);
  /* a long flat sum nests in the AST as deeply as it is long */
  k = (size_t)sprintf(s, "model m() {\n  x = 1");
  for (size_t i = 0; i < 2000; i++)
    k += (size_t)sprintf(s + k, "+1");
  strcpy(s + k, "\n}\n");
  p = parse(s);
  assert_int_equal(p.p.n_decls, -1);
  assert_non_null(strstr(p.d.msg, "nested too deeply"));
  parsed_free(&p);
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(declarations_and_statements),
      cmocka_unit_test(operator_precedence),
      cmocka_unit_test(literals_and_tokens),
      cmocka_unit_test(newlines_end_statements_except_inside_brackets),
      cmocka_unit_test(locations_are_line_and_byte_column),
      cmocka_unit_test(syntax_errors_say_what_was_expected),
      cmocka_unit_test(nesting_is_bounded),
  };
  return cmocka_run_group_tests_name("parse", tests, NULL, NULL);
}
