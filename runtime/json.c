/*
 * json.c: the strict JSON reader behind safetensors headers (declared in
 * rt_internal.h).
 *
 * The runtime may depend on libc alone, so it carries its own reader, and a
 * small one: it reads exactly what a safetensors header can hold (objects,
 * strings, arrays of integers) and leaves the header's structure to
 * safetensors.c.  It is kept apart from the format code so that each file
 * does one job and stays within the project's size budget.
 *
 * Strictness is the point: strings must be valid UTF-8 with no raw control
 * characters, escapes must be well formed (surrogates paired, no \u0000),
 * integers must be plain decimals that fit in int64_t.  Every error names
 * the file and the byte offset in the header.  A decoded string is never
 * longer than its quoted form, so allocations are bounded by the header.
 */
#include "rt_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Length (1-4) of the valid UTF-8 sequence at p, or 0 if it is invalid
 * (overlong, a surrogate, past U+10FFFF or cut off by end). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned cp, min;
  size_t n;
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) n = 2, cp = p[0] & 0x1fu, min = 0x80;
  else if (p[0] >= 0xe0 && p[0] <= 0xef) n = 3, cp = p[0] & 0x0fu, min = 0x800;
  else if (p[0] >= 0xf0 && p[0] <= 0xf4) n = 4, cp = p[0] & 0x07u, min = 0x10000;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

int rt_utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
  for (size_t k; p < end; p += k)
    if (!(k = utf8_len(p, end))) return 0;
  return 1;
}

static size_t put_utf8(unsigned cp, char *o) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  if (cp < 0x800) return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
  if (cp < 0x10000)
    return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3f)),
           o[2] = (char)(0x80 | (cp & 0x3f)), 3;
  o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

int rt_json_peek(RtJson *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
  return j->p < j->end ? *j->p : -1;
}

long rt_json_off(const RtJson *j) { return (long)(j->p - j->start); }

static RtStatus json_fail_at(RtJson *j, const char *what) {
  char f[32];
  rt_json_peek(j);
  return rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: expected %s, found %s",
                 rt_json_off(j), what, rt_found(j->p, j->end, f, sizeof f));
}

static RtStatus json_expect(RtJson *j, char ch, const char *what) {
  if (rt_json_peek(j) != (unsigned char)ch) return json_fail_at(j, what);
  j->p++;
  return RT_OK;
}

static int hex4(const unsigned char *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    int ch = p[i] | 0x20; /* lower case; digits are unchanged */
    if (ch >= '0' && ch <= '9') *v = *v << 4 | (unsigned)(ch - '0');
    else if (ch >= 'a' && ch <= 'f') *v = *v << 4 | (unsigned)(ch - 'a' + 10);
    else return 0;
  }
  return 1;
}

/* One escape at j->p (a backslash, followed by at least one byte before
 * q, the closing quote); appends its UTF-8 to s. */
static RtStatus json_escape(RtJson *j, const unsigned char *q, char *s, size_t *n) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  const char *hit = j->p[1] ? strchr(from, j->p[1]) : NULL;
  unsigned cp, lo;
  if (hit) {
    s[(*n)++] = to[hit - from];
    j->p += 2;
    return RT_OK;
  }
  if (j->p[1] != 'u' || q - j->p < 6 || !hex4(j->p + 2, &cp))
    return rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: bad escape sequence in a string",
                   rt_json_off(j));
  if (cp >= 0xd800 && cp <= 0xdbff) {
    if (q - j->p < 12 || j->p[6] != '\\' || j->p[7] != 'u' || !hex4(j->p + 8, &lo) || lo < 0xdc00 ||
        lo > 0xdfff)
      return rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: unpaired UTF-16 surrogate",
                     rt_json_off(j));
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    j->p += 6;
  } else if (cp >= 0xdc00 && cp <= 0xdfff) {
    return rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: unpaired UTF-16 surrogate",
                   rt_json_off(j));
  } else if (cp == 0) {
    return rt_fail(j->c, RT_ERR_FORMAT,
                   "invalid JSON header at byte %ld: \\u0000 (NUL) is not allowed in a string",
                   rt_json_off(j));
  }
  *n += put_utf8(cp, s + *n);
  j->p += 6;
  return RT_OK;
}

/* A JSON string, decoded into a new NUL-terminated UTF-8 string.  The
 * decoded form is never longer than the quoted one, which bounds the
 * allocation by the header's size. */
RtStatus rt_json_string(RtJson *j, char **out, const char *what) {
  const unsigned char *q;
  char *s;
  size_t n = 0, k;
  RtStatus st = RT_OK;
  *out = NULL;
  if (rt_json_peek(j) != '"') return json_fail_at(j, what);
  q = ++j->p;
  while (q < j->end && *q != '"') q += (*q == '\\' && q + 1 < j->end) ? 2 : 1;
  if (q >= j->end)
    return rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: unterminated string",
                   rt_json_off(j) - 1);
  if (!(s = malloc((size_t)(q - j->p) + 1))) return rt_fail(j->c, RT_ERR_ALLOC, "out of memory");
  while (j->p < q && !st) {
    if (*j->p == '\\') {
      st = json_escape(j, q, s, &n);
    } else if (*j->p < 0x20) {
      st = rt_fail(j->c, RT_ERR_FORMAT,
                   "invalid JSON header at byte %ld: control character 0x%02x in a string", rt_json_off(j),
                   *j->p);
    } else if (!(k = utf8_len(j->p, q))) {
      st = rt_fail(j->c, RT_ERR_FORMAT, "invalid JSON header at byte %ld: invalid UTF-8 in a string",
                   rt_json_off(j));
    } else {
      memcpy(s + n, j->p, k);
      n += k;
      j->p += k;
    }
  }
  if (st) {
    free(s);
    return st;
  }
  j->p++;
  s[n] = '\0';
  *out = s;
  return RT_OK;
}

/* A JSON integer (no fraction or exponent) that fits in int64_t. */
static RtStatus json_int(RtJson *j, int64_t *v, const char *tensor, const char *field) {
  const unsigned char *s;
  int neg = 0, len;
  int64_t x = 0;
  char f[32];
  rt_json_peek(j);
  s = j->p;
  if (j->p < j->end && *j->p == '-') neg = 1, j->p++;
  if (j->p >= j->end || *j->p < '0' || *j->p > '9' ||
      (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')) {
    j->p = s;
    return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': %s must hold integers, found %s at header byte %ld",
                   tensor, field, rt_found(j->p, j->end, f, sizeof f), rt_json_off(j));
  }
  for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++) {
    if (x > (INT64_MAX - (*j->p - '0')) / 10)
      return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': a value in %s is too large", tensor, field);
    x = x * 10 + (*j->p - '0');
  }
  if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) {
    for (len = 0; s + len < j->end && len < 40 && strchr("0123456789+-.eE", s[len]) && s[len]; len++) {}
    return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': %s must hold integers, found %.*s", tensor, field, len,
                   (const char *)s);
  }
  *v = neg ? -x : x;
  return RT_OK;
}

/* [a, b, ...] of integers; keeps the first cap, counts them all in *n. */
RtStatus rt_json_ints(RtJson *j, int64_t *vals, int cap, int *n, const char *tensor, const char *field) {
  RtStatus s;
  *n = 0;
  if (rt_json_peek(j) != '[')
    return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': %s must be an array of integers", tensor, field);
  j->p++;
  if (rt_json_peek(j) == ']') return j->p++, RT_OK;
  for (;;) {
    int64_t v = 0;
    int ch;
    if ((s = json_int(j, &v, tensor, field))) return s;
    if (*n < cap) vals[*n] = v;
    if (*n < INT_MAX) (*n)++;
    if ((ch = rt_json_peek(j)) == ']') return j->p++, RT_OK;
    if (ch != ',') return json_fail_at(j, "',' or ']'");
    j->p++;
  }
}

/* Steps to the next object member: *more is 0 at the closing '}' (which it
 * consumes), else 1 with *key read and the ':' consumed. */
RtStatus rt_json_member(RtJson *j, int *first, int *more, char **key) {
  int ch = rt_json_peek(j);
  RtStatus s;
  *more = 0;
  *key = NULL;
  if (ch == '}') return j->p++, RT_OK;
  if (!*first) {
    if (ch != ',') return json_fail_at(j, "',' or '}'");
    j->p++;
  }
  *first = 0;
  if ((s = rt_json_string(j, key, "a key (a string)"))) return s;
  if ((s = json_expect(j, ':', "':'"))) {
    free(*key);
    *key = NULL;
    return s;
  }
  *more = 1;
  return RT_OK;
}

/* What a JSON value starting with ch is, for messages. */
const char *rt_json_kind(int ch) {
  return ch == '{' ? "an object" : ch == '[' ? "an array" : ch == 't' || ch == 'f' ? "a boolean"
         : ch == 'n' ? "null" : ch == '-' || (ch >= '0' && ch <= '9') ? "a number" : "not valid JSON";
}
