/*
 * test_diag.c: the exact text of user errors, and diag_protect itself.
 *
 * A user error reads
 *
 *     FILE:LINE:COL: error: MESSAGE
 *       <source line LINE>
 *       <a blank per column before COL, tabs copied>^
 *
 * Columns count bytes from 1; on the caret line a tab is copied (so the
 * caret lines up however tabs are shown) and a UTF-8 continuation byte takes
 * no room.  Errors at the end of the file are reported right after the last
 * token, not after trailing blank lines or comments, and errors in the
 * prelude's layers are reported at the user's call, under the argument the
 * user wrote.
 *
 * Adding a golden case: GOLDEN(name, "source", "full expected text"), with
 * the text written out literally (count the caret's blanks by hand), then a
 * cmocka_unit_test line in main().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"

/* --- compiling a source string ------------------------------------------------ */

typedef struct Job {
  Arena *a;
  Diag *d;
  const Source *src;
  CompileOpts o;
  Graph *g;
} Job;

static void compile_job(void *ud) {
  Job *j = ud;
  j->g = frontend_compile(j->a, j->d, j->src, &j->o);
}

/* Compiles text (len bytes) as file `name` in a fresh arena and Diag and
 * asserts that the error text is exactly `want`. */
static void golden_opts(const char *name, const char *text, size_t len, const CompileOpts *o,
                        const char *want) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  Job j = {a, &d, source_from_string(a, name, text, len), *o, NULL};
  int rc = diag_protect(&d, compile_job, &j);
  bool same = rc == 1 && d.msg && strcmp(d.msg, want) == 0;
  bool restored = d.jb == NULL; /* diag_protect put back the (empty) handler */
  if (!same)
    print_error("expected:\n%s---\ngot:\n%s---\n", want,
                rc == 0 ? "(compiled without an error)\n" : d.msg ? d.msg : "(no message)\n");
  /* Free before failing: a failed assertion does not return. */
  diag_free(&d);
  arena_free(a);
  if (!same)
    fail_msg("the error text differs");
  assert_true(restored);
}

static void golden(const char *name, const char *text, const char *want) {
  CompileOpts o = {0};
  golden_opts(name, text, strlen(text), &o, want);
}

#define GOLDEN(test, name, text, want) \
  static void test(void **state) { golden(name, text, want); }

/* --- golden messages -------------------------------------------------------------- */

GOLDEN(syntax_error_at_stray_operator, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = x + * 2\n"
       "}\n",
       "t.kiln:3:18: error: unexpected '*', expected an expression\n"
       "    output y = x + * 2\n"
       "                   ^\n")

GOLDEN(lexical_error_unterminated_string, "t.kiln",
       "model m(N = 12) {\n"
       "  input x: f32[N, 10]\n"
       "  assert N % 8 == 0, \"N must be a multiple of 8\n"
       "  output y = relu(x)\n"
       "}\n",
       "t.kiln:3:22: error: unterminated string\n"
       "    assert N % 8 == 0, \"N must be a multiple of 8\n"
       "                       ^\n")

GOLDEN(unknown_name, "models/bad.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  h = relu(x)\n"
       "  output y = dense(hh, out=3)\n"
       "}\n",
       "models/bad.kiln:4:20: error: unknown name 'hh'\n"
       "    output y = dense(hh, out=3)\n"
       "                     ^\n")

/* The design's example: the error is found inside the prelude's conv2d but
 * shown at the user's line, under the user's argument. */
GOLDEN(prelude_layer_error_points_at_user_argument, "models/bad.kiln",
       "# LeNet on flattened images: a mistake.\n"
       "model lenet(N = 64) {\n"
       "  input x: f32[N, 784]\n"
       "  input y: i32[N]\n"
       "\n"
       "  # the first convolution\n"
       "  c1 = relu(conv2d(x, out=6, kernel=5))\n"
       "  output probs = softmax(c1, axis=1)\n"
       "}\n",
       "models/bad.kiln:7:20: error: conv2d expects a 4-D input [N, C, H, W], got f32[64, 784]\n"
       "    c1 = relu(conv2d(x, out=6, kernel=5))\n"
       "                     ^\n")

GOLDEN(prelude_block_unknown_argument, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = dense(x, out=10, bais=false)\n"
       "}\n",
       "t.kiln:3:31: error: block 'dense' has no parameter 'bais'\n"
       "    output y = dense(x, out=10, bais=false)\n"
       "                                ^\n")

/* Both operands are to blame: the caret goes under the operator. */
GOLDEN(broadcast_error_points_at_operator, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  param b: f32[N, 3]\n"
       "  h = relu(x)\n"
       "  output y = h + b\n"
       "}\n",
       "t.kiln:5:16: error: add: cannot broadcast f32[4, 10] with f32[4, 3]\n"
       "    output y = h + b\n"
       "                 ^\n")

/* A value defined on one line and misused on another: the caret goes where
 * it is used, not where it was computed. */
GOLDEN(operand_defined_earlier_points_at_use, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  input z: f32[N, 5, 2]\n"
       "  h = relu(x)\n"
       "  output y = concat(z, h, axis=1)\n"
       "}\n",
       "t.kiln:5:24: error: concat: f32[4, 10] does not match f32[4, 5, 2] except on axis 1\n"
       "    output y = concat(z, h, axis=1)\n"
       "                         ^\n")

GOLDEN(dtype_error_relu_on_i32, "t.kiln",
       "model m(N = 4) {\n"
       "  input ids: i32[N, 8]\n"
       "  output y = relu(ids)\n"
       "}\n",
       "t.kiln:3:19: error: relu expects f32, got i32[4, 8]\n"
       "    output y = relu(ids)\n"
       "                    ^\n")

GOLDEN(cross_entropy_label_shape, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  input t: i32[N, 10]\n"
       "  output loss = cross_entropy(x, t)\n"
       "}\n",
       "t.kiln:4:34: error: cross_entropy: labels must be i32[4] to match logits f32[4, 10], "
       "got i32[4, 10]\n"
       "    output loss = cross_entropy(x, t)\n"
       "                                   ^\n")

GOLDEN(compile_time_division_by_zero, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  half = N // (N - N)\n"
       "  output y = dense(x, out=half)\n"
       "}\n",
       "t.kiln:3:12: error: division by zero\n"
       "    half = N // (N - N)\n"
       "             ^\n")

/* An error inside the user's own block is shown inside the block. */
GOLDEN(error_inside_user_block, "t.kiln",
       "block proj(x) {\n"
       "  param w: f32[5, 3]\n"
       "  return x @ w\n"
       "}\n"
       "\n"
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = proj(x)\n"
       "}\n",
       "t.kiln:3:12: error: matmul: inner dimensions differ: f32[4, 10] @ f32[5, 3] (10 vs 5)\n"
       "    return x @ w\n"
       "             ^\n")

/* assert's message pieces; the caret goes to the first tensor piece. */
GOLDEN(failed_assert_with_tensor_piece, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  assert rank(x) == 4, \"expected an image [N, C, H, W], got \", x\n"
       "  output y = relu(x)\n"
       "}\n",
       "t.kiln:3:64: error: expected an image [N, C, H, W], got f32[4, 10]\n"
       "    assert rank(x) == 4, \"expected an image [N, C, H, W], got \", x\n"
       "                                                                 ^\n")

/* The caret line copies the tab so the caret stays under the token. */
GOLDEN(tab_indented_line_keeps_tab, "t.kiln",
       "model m(N = 4) {\n"
       "\tinput x: f32[N, 10]\n"
       "\toutput y = softmax(x, axsi=1)\n"
       "}\n",
       "t.kiln:3:24: error: softmax has no attribute 'axsi' (its attributes: axis)\n"
       "  \toutput y = softmax(x, axsi=1)\n"
       "  \t                      ^\n")

GOLDEN(tabs_inside_line, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y =\trelu(\tzz)\n"
       "}\n",
       "t.kiln:3:20: error: unknown name 'zz'\n"
       "    output y =\trelu(\tzz)\n"
       "              \t     \t^\n")

/* "Größe" is 7 bytes but 5 characters: the column counts bytes, the caret
 * line gives each character one blank. */
GOLDEN(utf8_string_before_error_column, "t.kiln",
       "model m(N = 12) {\n"
       "  input x: f32[N, 10]\n"
       "  assert N % 8 == 0, \"Gr\xc3\xb6\xc3\x9f" "e: \", NN\n"
       "  output y = relu(x)\n"
       "}\n",
       "t.kiln:3:35: error: unknown name 'NN'\n"
       "    assert N % 8 == 0, \"Gr\xc3\xb6\xc3\x9f" "e: \", NN\n"
       "                                  ^\n")

/* UTF-8 comments elsewhere on the line or above it change nothing. */
GOLDEN(utf8_comments_around_error, "t.kiln",
       "# Gr\xc3\xb6\xc3\x9f" "e N \xe2\x80\x94 Stapel\n"
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = relu(z)   # \xc2\xabz\xc2\xbb ist unbekannt\n"
       "}\n",
       "t.kiln:4:19: error: unknown name 'z'\n"
       "    output y = relu(z)   # \xc2\xabz\xc2\xbb ist unbekannt\n"
       "                    ^\n")

/* A non-ASCII byte outside a comment: the caret is under the character. */
GOLDEN(non_ascii_byte, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = x \xc3\x97 2\n"
       "}\n",
       "t.kiln:3:16: error: unexpected byte 0xc3 (only ASCII is allowed outside comments and "
       "strings)\n"
       "    output y = x \xc3\x97 2\n"
       "                 ^\n")

GOLDEN(error_on_last_line_without_newline, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = relu(z) }",
       "t.kiln:3:19: error: unknown name 'z'\n"
       "    output y = relu(z) }\n"
       "                    ^\n")

/* End of file: right after the last token... */
GOLDEN(end_of_file_without_newline, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = relu(",
       "t.kiln:3:19: error: unexpected end of file, expected an expression or ')'\n"
       "    output y = relu(\n"
       "                    ^\n")

/* ... not after the blank lines and comments that follow it. */
GOLDEN(end_of_file_after_blank_lines_and_comment, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  output y = relu(\n"
       "\n"
       "# the end\n"
       "\n",
       "t.kiln:3:19: error: unexpected end of file, expected an expression or ')'\n"
       "    output y = relu(\n"
       "                    ^\n")

/* Windows line endings: the carriage return is not part of the shown line. */
GOLDEN(crlf_line_endings, "t.kiln",
       "model m(N = 4) {\r\n"
       "  input x: f32[N, 10]\r\n"
       "  output y = relu(z)\r\n"
       "}\r\n",
       "t.kiln:3:19: error: unknown name 'z'\n"
       "    output y = relu(z)\n"
       "                    ^\n")

/* A whole-file error is shown at 1:1. */
GOLDEN(no_model_in_file, "t.kiln",
       "block res(x) {\n"
       "  return x + relu(x)\n"
       "}\n",
       "t.kiln:1:1: error: the file declares no model (expected 'model NAME(...) { ... }')\n"
       "  block res(x) {\n"
       "  ^\n")

/* Only the first error is reported. */
GOLDEN(first_error_wins, "t.kiln",
       "model m(N = 4) {\n"
       "  input x: f32[N, 10]\n"
       "  y = relu(qq)\n"
       "  output z = relu(rr)\n"
       "}\n",
       "t.kiln:3:12: error: unknown name 'qq'\n"
       "    y = relu(qq)\n"
       "             ^\n")

/* -D of a constant the model does not have: shown at the model's name. */
static void define_of_unknown_constant(void **state) {
  const Define defs[] = {{"K", "3"}};
  CompileOpts o = {0};
  o.defines = defs;
  o.n_defines = 1;
  const char *text = "model m(N = 4) {\n"
                     "  input x: f32[N, 10]\n"
                     "  output y = relu(x)\n"
                     "}\n";
  golden_opts("t.kiln", text, strlen(text), &o,
              "t.kiln:1:7: error: -D K: model 'm' has no constant 'K' (its constants: N)\n"
              "  model m(N = 4) {\n"
              "        ^\n");
}

/* An error with no location: "kiln: error: ..." and nothing else. */
typedef struct FileJob {
  Arena *a;
  Diag *d;
  const char *path;
} FileJob;

static void read_missing_file(void *ud) {
  FileJob *j = ud;
  source_from_file(j->a, j->d, j->path);
}

static void error_without_location(void **state) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  FileJob j = {a, &d, "no/such/dir/model.kiln"};
  assert_int_equal(diag_protect(&d, read_missing_file, &j), 1);
  const char *prefix = "kiln: error: ";
  assert_true(strncmp(d.msg, prefix, strlen(prefix)) == 0);
  assert_non_null(strstr(d.msg, "no/such/dir/model.kiln"));
  /* one line: no source line, no caret */
  assert_non_null(strchr(d.msg, '\n'));
  assert_string_equal(strchr(d.msg, '\n'), "\n");
  diag_free(&d);
  arena_free(a);
}

/* --- error_at / note_at formatting, directly -------------------------------------- */

typedef struct RaiseJob {
  Diag *d;
  Loc loc;
  const char *text;
} RaiseJob;

static void raise_error(void *ud) {
  RaiseJob *r = ud;
  error_at(r->d, r->loc, "bad %s", r->text);
}

static void error_at_formats_location_line_and_caret(void **state) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  const char *text = "first line\n\tsecond\xc3\xa9 line x\nthird";
  Source *src = source_from_string(a, "dir/f.kiln", text, strlen(text));
  RaiseJob r = {&d, {src, 2, 16}, "thing"}; /* the 'x' on line 2 */
  assert_int_equal(diag_protect(&d, raise_error, &r), 1);
  assert_string_equal(d.msg, "dir/f.kiln:2:16: error: bad thing\n"
                             "  \tsecond\xc3\xa9 line x\n"
                             "  \t             ^\n");
  assert_int_equal(d.n_errors, 1);
  /* A note appended after the error lands below it, in the same format. */
  note_at(&d, (Loc){src, 3, 1}, "see %s", "here");
  assert_string_equal(d.msg, "dir/f.kiln:2:16: error: bad thing\n"
                             "  \tsecond\xc3\xa9 line x\n"
                             "  \t             ^\n"
                             "dir/f.kiln:3:1: note: see here\n"
                             "  third\n"
                             "  ^\n");
  /* The next error replaces the text, it does not append to it. */
  r.loc = (Loc){src, 1, 7};
  r.text = "again";
  assert_int_equal(diag_protect(&d, raise_error, &r), 1);
  assert_string_equal(d.msg, "dir/f.kiln:1:7: error: bad again\n"
                             "  first line\n"
                             "        ^\n");
  assert_int_equal(d.n_errors, 2);
  diag_free(&d);
  arena_free(a);
}

/* --- diag_protect ------------------------------------------------------------------ */

typedef struct Nest {
  Diag *d;
  const Source *src;
  int inner_rc;
  bool after_inner;   /* the outer function went on after the inner error */
  bool outer_raises;
  bool after_outer;   /* must stay false: error_at does not return */
} Nest;

static void inner_fn(void *ud) {
  Nest *n = ud;
  error_at(n->d, (Loc){n->src, 1, 1}, "inner");
}

static void outer_fn(void *ud) {
  Nest *n = ud;
  n->inner_rc = diag_protect(n->d, inner_fn, n);
  n->after_inner = true;
  if (n->outer_raises)
    error_at(n->d, (Loc){n->src, 1, 3}, "outer");
  n->after_outer = true;
}

static void nested_protect_catches_inner_error(void **state) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  Source *src = source_from_string(a, "n.kiln", "x = 1\n", 6);
  Nest n = {&d, src, -1, false, false, false};
  assert_int_equal(diag_protect(&d, outer_fn, &n), 0);
  assert_int_equal(n.inner_rc, 1);
  assert_true(n.after_inner);
  assert_true(n.after_outer);
  assert_string_equal(d.msg, "n.kiln:1:1: error: inner\n  x = 1\n  ^\n");
  assert_null(d.jb);
  diag_free(&d);
  arena_free(a);
}

static void nested_protect_outer_catches_later_error(void **state) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  Source *src = source_from_string(a, "n.kiln", "x = 1\n", 6);
  Nest n = {&d, src, -1, false, true, false};
  /* After the inner protect returned, an error must reach the outer one. */
  assert_int_equal(diag_protect(&d, outer_fn, &n), 1);
  assert_int_equal(n.inner_rc, 1);
  assert_true(n.after_inner);
  assert_false(n.after_outer);
  assert_string_equal(d.msg, "n.kiln:1:3: error: outer\n  x = 1\n    ^\n");
  assert_int_equal(d.n_errors, 2);
  assert_null(d.jb);
  diag_free(&d);
  arena_free(a);
}

static void nothing(void *ud) { *(int *)ud += 1; }

static void protect_returns_zero_without_error(void **state) {
  Diag d;
  diag_init(&d);
  int calls = 0;
  assert_int_equal(diag_protect(&d, nothing, &calls), 0);
  assert_int_equal(diag_protect(&d, nothing, &calls), 0);
  assert_int_equal(calls, 2);
  assert_int_equal(d.n_errors, 0);
  assert_null(d.jb);
  diag_free(&d);
}

/* A failed compile leaves nothing behind: the same Diag compiles the next
 * model, good or bad, as if it were the first. */
static void recovery_after_error(void **state) {
  Diag d;
  diag_init(&d);
  const char *bad = "model m(N = 4) {\n  input x: f32[N, 10]\n  output y = relu(z)\n}\n";
  const char *good = "model m(N = 4) {\n  input x: f32[N, 10]\n  output y = relu(x)\n}\n";
  const char *want = "r.kiln:3:19: error: unknown name 'z'\n"
                     "    output y = relu(z)\n"
                     "                    ^\n";
  for (int round = 0; round < 3; round++) {
    Arena *a = arena_new();
    Job j = {a, &d, source_from_string(a, "r.kiln", bad, strlen(bad)), {0}, NULL};
    assert_int_equal(diag_protect(&d, compile_job, &j), 1);
    assert_string_equal(d.msg, want);
    assert_null(d.jb);
    arena_free(a);

    a = arena_new();
    Job k = {a, &d, source_from_string(a, "r.kiln", good, strlen(good)), {0}, NULL};
    assert_int_equal(diag_protect(&d, compile_job, &k), 0);
    assert_non_null(k.g);
    assert_non_null(graph_find(k.g, "y"));
    assert_int_equal(k.g->n_outputs, 1);
    assert_null(d.jb);
    arena_free(a);
  }
  assert_int_equal(d.n_errors, 3);
  diag_free(&d);
}

/* An error deep inside elaboration (a block recursing without end) unwinds
 * cleanly, and the next compile in the same arena works. */
static void recovery_after_deep_error_same_arena(void **state) {
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  const char *bad = "block again(x) {\n  return again(relu(x))\n}\n\n"
                    "model m(N = 4) {\n  input x: f32[N, 10]\n  output y = again(x)\n}\n";
  const char *good = "model m(N = 4) {\n  input x: f32[N, 10]\n  output y = relu(x)\n}\n";
  Job j = {a, &d, source_from_string(a, "d.kiln", bad, strlen(bad)), {0}, NULL};
  assert_int_equal(diag_protect(&d, compile_job, &j), 1);
  assert_non_null(strstr(d.msg, "d.kiln:2:10: error: "));
  Job k = {a, &d, source_from_string(a, "d.kiln", good, strlen(good)), {0}, NULL};
  assert_int_equal(diag_protect(&d, compile_job, &k), 0);
  assert_non_null(k.g);
  diag_free(&d);
  arena_free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(syntax_error_at_stray_operator),
      cmocka_unit_test(lexical_error_unterminated_string),
      cmocka_unit_test(unknown_name),
      cmocka_unit_test(prelude_layer_error_points_at_user_argument),
      cmocka_unit_test(prelude_block_unknown_argument),
      cmocka_unit_test(broadcast_error_points_at_operator),
      cmocka_unit_test(operand_defined_earlier_points_at_use),
      cmocka_unit_test(dtype_error_relu_on_i32),
      cmocka_unit_test(cross_entropy_label_shape),
      cmocka_unit_test(compile_time_division_by_zero),
      cmocka_unit_test(error_inside_user_block),
      cmocka_unit_test(failed_assert_with_tensor_piece),
      cmocka_unit_test(tab_indented_line_keeps_tab),
      cmocka_unit_test(tabs_inside_line),
      cmocka_unit_test(utf8_string_before_error_column),
      cmocka_unit_test(utf8_comments_around_error),
      cmocka_unit_test(non_ascii_byte),
      cmocka_unit_test(error_on_last_line_without_newline),
      cmocka_unit_test(end_of_file_without_newline),
      cmocka_unit_test(end_of_file_after_blank_lines_and_comment),
      cmocka_unit_test(crlf_line_endings),
      cmocka_unit_test(no_model_in_file),
      cmocka_unit_test(first_error_wins),
      cmocka_unit_test(define_of_unknown_constant),
      cmocka_unit_test(error_without_location),
      cmocka_unit_test(error_at_formats_location_line_and_caret),
      cmocka_unit_test(nested_protect_catches_inner_error),
      cmocka_unit_test(nested_protect_outer_catches_later_error),
      cmocka_unit_test(protect_returns_zero_without_error),
      cmocka_unit_test(recovery_after_error),
      cmocka_unit_test(recovery_after_deep_error_same_arena),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
