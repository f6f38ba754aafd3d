/*
 * test_corpus.c: the corpus of malformed models in tests/bad/.
 *
 * Adding a case: drop a small file tests/bad/NAME.kiln that makes ONE
 * mistake a user could make, and whose first line says where the error must
 * be reported and what it must say:
 *
 *     # expect: LINE:COL: SUBSTRING
 *
 * LINE:COL is where the caret must be (the offending token or argument;
 * lines count from 1 and include this comment line; columns count bytes
 * from 1, as ir/diag.c does) and SUBSTRING a distinctive part of the
 * message.  Write what a good compiler should report, not what kiln happens
 * to print.  No other registration is needed: every *.kiln file in the
 * folder is picked up.
 *
 * Each file is compiled the way `kiln check tests/bad/NAME.kiln` does it
 * from the repository root (source_from_file, then frontend_compile under
 * diag_protect), in a child process with a fresh arena and Diag, so a crash,
 * an abort or a hang in one file is reported by name instead of ending the
 * run.  The error must then read
 *
 *     tests/bad/NAME.kiln:LINE:COL: error: ...SUBSTRING...
 *       <source line LINE>
 *       <blanks, tabs copied>^        (the caret under byte column COL)
 *
 * Each test below checks one aspect over the whole corpus, collects every
 * file that gets it wrong, prints them all, and fails once at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "frontend.h"

#define BAD_DIR "tests/bad"
enum {
  MIN_FILES = 45,
  TIMEOUT_S = 60, /* per file; the compiler must stop runaway input long before */
};

typedef enum Outcome {
  OUT_USER_ERROR, /* what every file must give */
  OUT_COMPILED,   /* no error at all */
  OUT_CRASHED,    /* killed by a signal: abort ("internal error"), segfault, ... */
  OUT_TIMED_OUT,
  OUT_NO_RESULT,  /* the child exited without reporting */
} Outcome;

typedef struct Case {
  char name[256];   /* NAME.kiln */
  char path[300];   /* tests/bad/NAME.kiln, relative to the repository root */
  char *text;       /* the file's bytes */
  size_t len;
  bool expect_ok;   /* the first line is a well-formed expect line */
  int line, col;
  char *sub;        /* expected substring of the message */
  Outcome out;
  int signal;       /* for OUT_CRASHED */
  char *msg;        /* the error text (Diag.msg) */
} Case;

typedef struct Corpus {
  Case *cases;
  int n;
} Corpus;

/* --- failures, collected per test ----------------------------------------- */

typedef struct Failures {
  char *text;
  size_t len, cap;
  int n;
} Failures;

static void failure(Failures *f, const Case *c, const char *fmt, ...) {
  va_list ap;
  char buf[4096];
  int k = snprintf(buf, sizeof buf, "  %s: ", c->name);
  va_start(ap, fmt);
  vsnprintf(buf + k, sizeof buf - (size_t)k, fmt, ap);
  va_end(ap);
  size_t n = strlen(buf);
  if (f->len + n + 2 > f->cap) {
    f->cap = (f->len + n + 2) * 2;
    f->text = realloc(f->text, f->cap);
    assert_non_null(f->text);
  }
  memcpy(f->text + f->len, buf, n);
  f->len += n;
  f->text[f->len++] = '\n';
  f->text[f->len] = 0;
  f->n++;
}

/* Prints every collected failure, then fails the test once. */
static void report(Failures *f, const char *aspect, const Corpus *co) {
  if (f->n == 0) {
    free(f->text);
    return;
  }
  fprintf(stderr, "%d of %d corpus files fail: %s\n%s", f->n, co->n, aspect, f->text);
  free(f->text);
  fail_msg("%s: %d file(s) listed above", aspect, f->n);
}

/* --- reading the corpus ------------------------------------------------------ */

static int by_name(const void *a, const void *b) {
  return strcmp(((const Case *)a)->name, ((const Case *)b)->name);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n > k && strcmp(s + n - k, suffix) == 0;
}

static char *read_all(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n, fp)) > 0;) {
    n += k;
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
  }
  fclose(fp);
  if (buf)
    buf[n] = 0;
  *len = n;
  return buf;
}

/* Parses "# expect: LINE:COL: SUBSTRING" (the line may end in \r\n). */
static void parse_expect(Case *c) {
  static const char tag[] = "# expect: ";
  if (c->len < sizeof tag - 1 || memcmp(c->text, tag, sizeof tag - 1) != 0)
    return;
  const char *p = c->text + sizeof tag - 1;
  const char *eol = p;
  while (eol < c->text + c->len && *eol != '\n' && *eol != '\r' && *eol != 0)
    eol++;
  int line, col, used = 0;
  char *head = strndup(p, (size_t)(eol - p));
  if (sscanf(head, "%d:%d: %n", &line, &col, &used) == 2 && used > 0 && line > 0 && col > 0 &&
      head[used] != 0) {
    c->line = line;
    c->col = col;
    c->sub = strdup(head + used);
    c->expect_ok = true;
  }
  free(head);
}

/* --- compiling one file in a child process ---------------------------------- */

typedef struct Job {
  Arena *a;
  Diag *d;
  const char *path;
} Job;

static void compile_file(void *ud) {
  Job *j = ud;
  const Source *src = source_from_file(j->a, j->d, j->path);
  CompileOpts o = {0};
  frontend_compile(j->a, j->d, src, &o);
}

static void write_all(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n > 0) {
    ssize_t k = write(fd, s, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      _exit(3);
    s += k;
    n -= (size_t)k;
  }
}

/* The child: compiles, writes one status byte ('E' user error, 'C' compiled)
 * and the error text to fd, and exits. */
static _Noreturn void child(const char *path, int fd) {
  /* cmocka catches these signals in the parent; here they must kill. */
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGALRM};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    signal(sigs[i], SIG_DFL);
  alarm(TIMEOUT_S);
  Arena *a = arena_new();
  Diag d;
  diag_init(&d);
  Job j = {a, &d, path};
  int rc = diag_protect(&d, compile_file, &j);
  write_all(fd, rc ? "E" : "C", 1);
  if (rc && d.msg)
    write_all(fd, d.msg, d.len);
  close(fd);
  diag_free(&d);
  arena_free(a);
  exit(0);
}

static void run_case(Case *c) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child(c->path, fds[1]);
  }
  close(fds[1]);
  size_t cap = 1024, n = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
      assert_non_null(buf);
    }
    ssize_t k = read(fds[0], buf + n, cap - n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    n += (size_t)k;
  }
  close(fds[0]);
  buf[n] = 0;
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (WIFSIGNALED(status)) {
    c->signal = WTERMSIG(status);
    c->out = c->signal == SIGALRM ? OUT_TIMED_OUT : OUT_CRASHED;
  } else if (n == 0 || WEXITSTATUS(status) != 0) {
    c->out = OUT_NO_RESULT;
  } else {
    c->out = buf[0] == 'E' ? OUT_USER_ERROR : OUT_COMPILED;
  }
  c->msg = strdup(n > 1 ? buf + 1 : "");
  free(buf);
}

static int load_corpus(void **state) {
  /* Paths in messages are relative to the repository root, as a user at the
   * root would type them. */
  if (chdir(KILN_SOURCE_DIR) != 0) {
    fprintf(stderr, "cannot enter %s: %s\n", KILN_SOURCE_DIR, strerror(errno));
    return -1;
  }
  DIR *dir = opendir(BAD_DIR);
  if (!dir) {
    fprintf(stderr, "cannot open %s/%s: %s\n", KILN_SOURCE_DIR, BAD_DIR, strerror(errno));
    return -1;
  }
  Corpus *co = calloc(1, sizeof *co);
  int cap = 0;
  for (struct dirent *e; (e = readdir(dir));) {
    if (!ends_with(e->d_name, ".kiln") || strlen(e->d_name) >= sizeof co->cases[0].name)
      continue;
    if (co->n == cap) {
      cap = cap ? 2 * cap : 64;
      co->cases = realloc(co->cases, sizeof(Case) * (size_t)cap);
    }
    Case *c = &co->cases[co->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", e->d_name);
  }
  closedir(dir);
  if (co->n)
    qsort(co->cases, (size_t)co->n, sizeof(Case), by_name);
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    snprintf(c->path, sizeof c->path, "%s/%s", BAD_DIR, c->name);
    c->text = read_all(c->path, &c->len);
    if (c->text)
      parse_expect(c);
    run_case(c);
  }
  *state = co;
  return 0;
}

static int free_corpus(void **state) {
  Corpus *co = *state;
  for (int i = 0; co && i < co->n; i++) {
    free(co->cases[i].text);
    free(co->cases[i].sub);
    free(co->cases[i].msg);
  }
  if (co)
    free(co->cases);
  free(co);
  return 0;
}

/* --- the message's lines ---------------------------------------------------------- */

/* Line k (from 0) of s, without its newline; false if s has fewer lines. */
static bool nth_line(const char *s, int k, const char **line, size_t *len) {
  for (int i = 0; i < k; i++) {
    s = strchr(s, '\n');
    if (!s)
      return false;
    s++;
  }
  const char *e = strchr(s, '\n');
  if (!e)
    return false; /* every line of a message ends with a newline */
  *line = s;
  *len = (size_t)(e - s);
  return true;
}

/* Line `line` (from 1) of the file as diag.c shows it: up to the newline,
 * a carriage return, or a NUL byte. */
static bool source_text(const Case *c, int line, const char **s, size_t *len) {
  const char *p = c->text, *end = c->text + c->len;
  for (int l = 1; l < line; p++) {
    if (p >= end)
      return false;
    if (*p == '\n')
      l++;
  }
  if (p > end)
    return false;
  const char *q = p;
  while (q < end && *q != '\n' && *q != '\r' && *q != 0)
    q++;
  *s = p;
  *len = (size_t)(q - p);
  return true;
}

static const char *outcome_text(const Case *c, char *buf, size_t n) {
  switch (c->out) {
  case OUT_USER_ERROR: return "a user error";
  case OUT_COMPILED: return "compiled without an error";
  case OUT_CRASHED:
    snprintf(buf, n, "crashed with signal %d (%s)", c->signal,
             c->signal == SIGABRT ? "abort: an internal error?" : "not a user error");
    return buf;
  case OUT_TIMED_OUT: snprintf(buf, n, "did not finish in %d s", TIMEOUT_S); return buf;
  case OUT_NO_RESULT: return "the compiling process gave no result";
  }
  return "?";
}

/* The length of the message's first line (its error line), without the
 * newline. */
static int first_line_len(const char *msg) {
  const char *nl = strchr(msg, '\n');
  return nl ? (int)(nl - msg) : (int)strlen(msg);
}

/* Cases that reached a user error with a well-formed expectation; the rest
 * are reported by every_file_fails_with_a_user_error. */
static bool checkable(const Case *c) { return c->expect_ok && c->out == OUT_USER_ERROR; }

/* --- the tests ------------------------------------------------------------------------ */

static void corpus_is_big_enough(void **state) {
  Corpus *co = *state;
  if (co->n < MIN_FILES)
    fail_msg("%s has %d .kiln files; the corpus must have at least %d", BAD_DIR, co->n,
             MIN_FILES);
}

static void every_file_has_an_expect_line(void **state) {
  Corpus *co = *state;
  Failures f = {0};
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    if (!c->text)
      failure(&f, c, "cannot read the file");
    else if (!c->expect_ok)
      failure(&f, c, "first line is not '# expect: LINE:COL: SUBSTRING'");
  }
  report(&f, "missing or malformed expect line", co);
}

static void every_file_fails_with_a_user_error(void **state) {
  Corpus *co = *state;
  Failures f = {0};
  char buf[128];
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    if (c->out != OUT_USER_ERROR)
      failure(&f, c, "%s", outcome_text(c, buf, sizeof buf));
    else if (!c->msg[0])
      failure(&f, c, "user error with an empty message");
  }
  report(&f, "not rejected with a user error", co);
}

static void error_is_at_the_expected_location(void **state) {
  Corpus *co = *state;
  Failures f = {0};
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    if (!checkable(c))
      continue;
    char want[400];
    snprintf(want, sizeof want, "%s:%d:%d: error: ", c->path, c->line, c->col);
    if (strncmp(c->msg, want, strlen(want)) != 0)
      failure(&f, c, "expected '%s...', got '%.*s'", want, first_line_len(c->msg), c->msg);
  }
  report(&f, "error not at the expected LINE:COL", co);
}

static void message_says_what_is_expected(void **state) {
  Corpus *co = *state;
  Failures f = {0};
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    if (!checkable(c))
      continue;
    /* Only the first line: the source line below it could contain anything. */
    char *first = strndup(c->msg, (size_t)first_line_len(c->msg));
    if (!strstr(first, c->sub))
      failure(&f, c, "message does not contain '%s': '%s'", c->sub, first);
    free(first);
  }
  report(&f, "message lacks the expected text", co);
}

static void source_line_and_caret(void **state) {
  Corpus *co = *state;
  Failures f = {0};
  for (int i = 0; i < co->n; i++) {
    Case *c = &co->cases[i];
    if (!checkable(c))
      continue;
    const char *src, *l2, *l3;
    size_t n, n2, n3;
    if (!source_text(c, c->line, &src, &n)) {
      failure(&f, c, "the file has no line %d", c->line);
      continue;
    }
    if ((size_t)c->col > n + 1) {
      failure(&f, c, "column %d is beyond the end of line %d (%zu bytes)", c->col, c->line, n);
      continue;
    }
    if (!nth_line(c->msg, 1, &l2, &n2) || !nth_line(c->msg, 2, &l3, &n3)) {
      failure(&f, c, "the message has no source line and caret:\n%s", c->msg);
      continue;
    }
    /* Line 2: two blanks and the source line. */
    if (n2 != n + 2 || memcmp(l2, "  ", 2) != 0 || memcmp(l2 + 2, src, n) != 0) {
      failure(&f, c, "second line is not source line %d:\n    got  '%.*s'\n    want '  %.*s'",
              c->line, (int)n2, l2, (int)n, src);
      continue;
    }
    /* Line 3: two blanks, a blank (or the tab) per column before COL, then
     * '^'.  UTF-8 continuation bytes take no column on screen. */
    char want[4200];
    size_t k = 0;
    want[k++] = ' ';
    want[k++] = ' ';
    for (int b = 0; b < c->col - 1 && k < sizeof want - 2; b++) {
      unsigned char ch = (unsigned char)src[b];
      if ((ch & 0xC0) == 0x80)
        continue;
      want[k++] = ch == '\t' ? '\t' : ' ';
    }
    want[k++] = '^';
    if (n3 != k || memcmp(l3, want, k) != 0)
      failure(&f, c, "caret not under column %d:\n    got  '%.*s'\n    want '%.*s'", c->col,
              (int)n3, l3, (int)k, want);
  }
  report(&f, "source line or caret wrong", co);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(corpus_is_big_enough),
      cmocka_unit_test(every_file_has_an_expect_line),
      cmocka_unit_test(every_file_fails_with_a_user_error),
      cmocka_unit_test(error_is_at_the_expected_location),
      cmocka_unit_test(message_says_what_is_expected),
      cmocka_unit_test(source_line_and_caret),
  };
  return cmocka_run_group_tests(tests, load_corpus, free_corpus);
}
