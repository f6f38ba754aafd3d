/*
 * rt_internal.h: helpers private to the runtime's tensor-file code (npy.c,
 * safetensors.c and the JSON reader in json.c).  Not part of rt.h's API and
 * not for use outside runtime/.
 *
 * The two format readers need the same small pieces: the "NAME: message"
 * error convention of rt.h, little-endian loads, the checks that a tensor
 * can be written, and the range-checked f64 -> f32 and i64 -> i32
 * conversions.  They live here once so the formats cannot drift apart (a
 * fix to one reader's checks is a fix to both).  The helpers are static
 * inline so the library exports no symbols beyond rt.h's; the JSON reader,
 * which is larger, is declared here and defined in json.c under the rt_
 * prefix that every exported runtime symbol carries.
 */
#ifndef KILN_RT_INTERNAL_H
#define KILN_RT_INTERNAL_H

#include "rt.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
#define RT_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define RT_PRINTF_LIKE(f, a)
#endif

/* Where a parse or write reports errors: the file name that starts each
 * message and the caller's buffer (err may be NULL or errlen 0). */
typedef struct RtCtx {
  const char *name;
  char *err;
  size_t errlen;
} RtCtx;

/* Writes "NAME: <message>" into the caller's buffer; returns s. */
RT_PRINTF_LIKE(3, 4) static inline RtStatus rt_fail(const RtCtx *c, RtStatus s, const char *fmt, ...) {
  va_list ap;
  int k;
  if (!c->err || c->errlen == 0) return s;
  k = snprintf(c->err, c->errlen, "%s: ", c->name);
  if (k >= 0 && (size_t)k < c->errlen) {
    va_start(ap, fmt);
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return s;
}

/* For messages that may name a tensor: RT_WHO(name) expands to three "%s"
 * arguments giving "tensor 'NAME': ", or nothing when name is NULL (a .npy
 * file holds one unnamed tensor). */
#define RT_WHO(name) (name) ? "tensor '" : "", (name) ? (name) : "", (name) ? "': " : ""

static inline int rt_host_is_le(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 1;
}

/* The size-byte (1 to 8) little-endian unsigned integer at p. */
static inline uint64_t rt_load_le(const unsigned char *p, int size) {
  uint64_t v = 0;
  for (int i = size - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Describes the byte at p for messages ('x', byte 0x93), or "the end of the
 * header" when p has reached end. */
static inline const char *rt_found(const unsigned char *p, const unsigned char *end, char *buf, size_t n) {
  if (p >= end) snprintf(buf, n, "the end of the header");
  else if (*p >= 0x20 && *p < 0x7f) snprintf(buf, n, "'%c'", *p);
  else snprintf(buf, n, "byte 0x%02x", *p);
  return buf;
}

/* Element i of a tensor read as f64, stored as f32: infinities and NaN
 * carry over, a finite value beyond the f32 range is an error. */
static inline RtStatus rt_f64_to_f32(const RtCtx *c, const char *tensor, double d, size_t i, float *out) {
  if (isfinite(d) && fabs(d) > FLT_MAX)
    return rt_fail(c, RT_ERR_DTYPE, "%s%s%svalue %g at index %zu does not fit in f32", RT_WHO(tensor), d, i);
  *out = (float)d;
  return RT_OK;
}

/* Element i of a tensor read as a wider integer, stored as i32: a value
 * outside the i32 range is an error, never silently wrapped. */
static inline RtStatus rt_i64_to_i32(const RtCtx *c, const char *tensor, int64_t v, size_t i, int32_t *out) {
  if (v < INT32_MIN || v > INT32_MAX)
    return rt_fail(c, RT_ERR_DTYPE, "%s%s%svalue %lld at index %zu is outside the i32 range", RT_WHO(tensor),
                   (long long)v, i);
  *out = (int32_t)v;
  return RT_OK;
}

/* Checks that t can be written: dtype f32 or i32, rank 0 to RT_MAX_RANK,
 * no negative dimension, an element count and byte size that fit, and
 * data when it has elements.  Sets *nbytes to the data size.  Messages
 * start with "tensor 'NAME': " when tensor is not NULL (safetensors). */
static inline RtStatus rt_check_writable(const RtCtx *c, const char *tensor, const RtTensor *t,
                                         size_t *nbytes) {
  int64_t ne;
  if (t->dtype != RT_F32 && t->dtype != RT_I32)
    return rt_fail(c, RT_ERR_DTYPE, "%s%s%scannot write dtype %d (expected f32 or i32)", RT_WHO(tensor),
                   (int)t->dtype);
  if (t->rank < 0 || t->rank > RT_MAX_RANK)
    return rt_fail(c, RT_ERR_SHAPE, "%s%s%scannot write rank %d (expected 0 to %d)", RT_WHO(tensor), t->rank,
                   RT_MAX_RANK);
  ne = rt_numel(t); /* -1 for a negative dimension or an overflowing count */
  *nbytes = rt_nbytes(t);
  if (ne < 0 || (ne > 0 && *nbytes == 0)) {
    if (tensor)
      return rt_fail(c, RT_ERR_SHAPE, "tensor '%s': negative dimension or element count overflow", tensor);
    for (int i = 0; i < t->rank; i++)
      if (t->dim[i] < 0)
        return rt_fail(c, RT_ERR_SHAPE, "cannot write negative dimension %lld (dim %d)", (long long)t->dim[i],
                       i);
    return rt_fail(c, RT_ERR_SHAPE, "element count overflows");
  }
  if (*nbytes > 0 && !t->data)
    return rt_fail(c, RT_ERR_FORMAT, "tensor%s%s%s has no data", tensor ? " '" : "", tensor ? tensor : "",
                   tensor ? "'" : "");
  return RT_OK;
}

/* ---- json.c: the strict JSON reader behind safetensors headers ----
 * A cursor over [start, end); errors go through c and give byte offsets
 * from start.  Whitespace is skipped before every token.  Strings are
 * decoded to NUL-terminated UTF-8 (escapes and surrogate pairs resolved,
 * invalid UTF-8, control characters and \u0000 rejected); integers must be
 * plain decimal and fit in int64_t. */
typedef struct RtJson {
  const unsigned char *start, *p, *end;
  const RtCtx *c;
} RtJson;

/* Skips whitespace; returns the next byte, or -1 at the end. */
int rt_json_peek(RtJson *j);
/* The cursor's offset from start, for messages. */
long rt_json_off(const RtJson *j);
/* A string into a new malloc'ed buffer (*out is NULL on failure). */
RtStatus rt_json_string(RtJson *j, char **out, const char *what);
/* [a, b, ...] of integers: keeps the first cap in vals, counts all in *n.
 * Messages name the tensor and field ("tensor 'w': shape must ..."). */
RtStatus rt_json_ints(RtJson *j, int64_t *vals, int cap, int *n, const char *tensor, const char *field);
/* Steps to the next object member: *more is 0 at the closing '}' (which
 * it consumes), else 1 with *key read (malloc'ed) and the ':' consumed.
 * *first is 1 before the first member and is cleared. */
RtStatus rt_json_member(RtJson *j, int *first, int *more, char **key);
/* "an object", "an array", ... for the value starting with byte ch. */
const char *rt_json_kind(int ch);
/* Whether the NUL-terminated s is valid UTF-8 (for names being written). */
int rt_utf8_valid(const char *s);

#endif
