/*
 * diag.c: source files, locations, and user-facing error messages.
 *
 * A user error prints like a C compiler's:
 *
 *     models/bad.kiln:7:18: error: conv2d expects a 4-D input [N, C, H, W], got f32[64, 784]
 *       c1 = relu(conv2d(x, out=6, kernel=5))
 *                        ^
 *
 * error_at formats that text into Diag.msg and longjmps to the innermost
 * diag_protect, which returns 1 (Lua's luaD_throw / rawrunprotected).  The
 * driver prints the text and exits 1; tests compare it with golden strings.
 * Internal errors (broken invariants) are not user errors: die() aborts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

_Noreturn void die_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kiln: internal error at %s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

void diag_init(Diag *d) { memset(d, 0, sizeof *d); }

void diag_free(Diag *d) {
  free(d->msg);
  memset(d, 0, sizeof *d);
}

void diag_clear(Diag *d) {
  d->len = 0;
  if (d->msg)
    d->msg[0] = 0;
}

static void diag_vappend(Diag *d, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return;
  if (d->len + (size_t)n + 1 > d->cap) {
    size_t cap = (d->len + (size_t)n + 1) * 2;
    char *m = realloc(d->msg, cap);
    if (!m)
      die("out of memory");
    d->msg = m;
    d->cap = cap;
  }
  vsnprintf(d->msg + d->len, (size_t)n + 1, fmt, ap);
  d->len += (size_t)n;
}

static void diag_append(Diag *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vappend(d, fmt, ap);
  va_end(ap);
}

const char *source_line(const Source *src, int line, int *len) {
  const char *p = src->text, *end = src->text + src->len;
  for (int l = 1; l < line && p < end; p++)
    if (*p == '\n')
      l++;
  const char *q = p;
  while (q < end && *q != '\n' && *q != '\r')
    q++;
  *len = (int)(q - p);
  return p;
}

/* Appends the source line and a caret under byte column col.  Tabs are
 * copied so the caret lines up; UTF-8 continuation bytes take no column. */
static void append_caret(Diag *d, Loc loc) {
  int len;
  const char *s = source_line(loc.src, loc.line, &len);
  diag_append(d, "  %.*s\n  ", len, s);
  for (int i = 0; i < loc.col - 1 && i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c & 0xC0) == 0x80)
      continue;
    diag_append(d, "%c", c == '\t' ? '\t' : ' ');
  }
  diag_append(d, "^\n");
}

static void append_located(Diag *d, Loc loc, const char *kind, const char *fmt, va_list ap) {
  if (loc.src)
    diag_append(d, "%s:%d:%d: %s: ", loc.src->name, loc.line, loc.col, kind);
  else
    diag_append(d, "kiln: %s: ", kind);
  diag_vappend(d, fmt, ap);
  diag_append(d, "\n");
  if (loc.src && loc.line > 0)
    append_caret(d, loc);
}

_Noreturn void verror_at(Diag *d, Loc loc, const char *fmt, va_list ap) {
  diag_clear(d);
  append_located(d, loc, "error", fmt, ap);
  d->n_errors++;
  if (!d->jb) {
    fputs(d->msg, stderr);
    die("user error outside diag_protect");
  }
  longjmp(*d->jb, 1);
}

_Noreturn void error_at(Diag *d, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror_at(d, loc, fmt, ap);
}

_Noreturn void error_plain(Diag *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror_at(d, (Loc){0}, fmt, ap);
}

void note_at(Diag *d, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  append_located(d, loc, "note", fmt, ap);
  va_end(ap);
}

int diag_protect(Diag *d, void (*fn)(void *ud), void *ud) {
  jmp_buf jb;
  jmp_buf *volatile saved = d->jb;
  d->jb = &jb;
  if (setjmp(jb)) {
    d->jb = saved;
    return 1;
  }
  fn(ud);
  d->jb = saved;
  return 0;
}

Source *source_from_string(Arena *a, const char *name, const char *text, size_t len) {
  Source *s = arena_alloc(a, sizeof *s);
  s->name = arena_strdup(a, name);
  s->text = arena_strndup(a, text, len);
  s->len = len;
  return s;
}

Source *source_from_file(Arena *a, Diag *d, const char *path) {
  void *data;
  size_t len;
  char err[512];
  if (rt_read_file(path, &data, &len, err, sizeof err) != RT_OK)
    error_plain(d, "%s", err);
  Source *s = source_from_string(a, path, data, len);
  free(data);
  const char *nul = memchr(s->text, 0, len);
  if (nul) {
    int line = 1, col = 1;
    for (const char *p = s->text; p < nul; p++)
      *p == '\n' ? (line++, col = 1) : col++;
    s->len = (size_t)(nul - s->text); /* the caret line ends at the NUL */
    error_at(d, (Loc){s, line, col}, "not a text file: it contains a NUL byte");
  }
  return s;
}
