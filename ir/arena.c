/*
 * arena.c: a bump allocator over chained blocks.
 *
 * Every IR object of a compilation (AST, nodes, names) comes from one arena
 * and is released by arena_free at once; nothing is freed one at a time.
 * Allocations are zeroed and 16-byte aligned.  Out of memory is fatal: the
 * compiler cannot continue without its IR.
 */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

typedef struct Block {
  struct Block *next;
  size_t size, used;
  _Alignas(16) unsigned char data[];
} Block;

struct Arena {
  Block *head;
  size_t total;
};

enum { BLOCK_MIN = 64 * 1024 };

Arena *arena_new(void) {
  Arena *a = calloc(1, sizeof *a);
  if (!a)
    die("out of memory");
  return a;
}

void arena_free(Arena *a) {
  if (!a)
    return;
  for (Block *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(a);
}

void *arena_alloc(Arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  Block *b = a->head;
  if (!b || b->size - b->used < n) {
    size_t size = n > BLOCK_MIN ? n : BLOCK_MIN;
    b = malloc(sizeof(Block) + size);
    if (!b)
      die("out of memory (arena block of %zu bytes)", size);
    b->size = size;
    b->used = 0;
    b->next = a->head;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  a->total += n;
  memset(p, 0, n);
  return p;
}

void *arena_realloc(Arena *a, void *p, size_t old_n, size_t new_n) {
  if (new_n <= old_n)
    return p;
  void *q = arena_alloc(a, new_n);
  if (p && old_n)
    memcpy(q, p, old_n);
  return q;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
  char *d = arena_alloc(a, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_fmt(Arena *a, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = arena_alloc(a, (size_t)n + 1);
  vsnprintf(s, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

size_t arena_used(const Arena *a) { return a->total; }
