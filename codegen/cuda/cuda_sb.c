/*
 * cuda_sb.c: the growable string the CUDA emitter prints into (expressions
 * are printed into one, then placed in a statement; each function and the
 * module are one).  Out of memory is fatal, as for the arena.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static void reserve(Sb *b, size_t more) {
  if (b->len + more + 1 <= b->cap)
    return;
  size_t cap = b->cap ? 2 * b->cap : 256;
  while (cap < b->len + more + 1)
    cap *= 2;
  b->s = realloc(b->s, cap);
  if (!b->s)
    die("out of memory printing CUDA source");
  b->cap = cap;
}

void sb_puts(Sb *b, const char *s) {
  size_t n = strlen(s);
  reserve(b, n);
  memcpy(b->s + b->len, s, n + 1);
  b->len += n;
}

void sb_printf(Sb *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  ASSERT(n >= 0);
  reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void sb_free(Sb *b) {
  free(b->s);
  memset(b, 0, sizeof *b);
}

const char *sb_unparen(Sb *b) {
  if (!b->s)
    return "";
  if (b->len < 2 || b->s[0] != '(' || b->s[b->len - 1] != ')')
    return b->s;
  int depth = 0; /* the first '(' must close at the very end */
  for (size_t i = 0; i < b->len; i++) {
    depth += b->s[i] == '(' ? 1 : b->s[i] == ')' ? -1 : 0;
    if (depth == 0 && i != b->len - 1)
      return b->s;
  }
  b->s[b->len - 1] = '\0';
  return b->s + 1;
}
