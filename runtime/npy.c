/*
 * npy.c: reading and writing NumPy .npy files (format versions 1.0 to 3.0).
 *
 * Layout: the magic "\x93NUMPY", major and minor version bytes, the header
 * length (u16 little-endian in 1.0, u32 in 2.0 and 3.0), the header, and
 * then the raw array data.  The header is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ending in '\n'.
 *
 * The header is parsed by a small tokenizer for exactly the Python literal
 * subset NumPy writes (quoted strings, True/False, integer tuples), keys in
 * any order, so garbage is rejected rather than half-read the way sscanf
 * patterns would.  Every size is checked against the buffer before anything
 * is allocated: the data must be present in the file, so a hostile file
 * cannot make the reader allocate more than 4 bytes per byte it contains.
 * Errors name the file and say what was found and what was expected.
 */
#include "rt_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* The on-disk element type and what it loads as. */
typedef struct Src {
  char kind; /* 'f', 'i', 'u', 'b' as in the descr */
  int size;  /* bytes per element */
  const char *label;
  RtDType to;
} Src;

static const Src SRCS[] = {
    {'f', 4, "f32", RT_F32}, {'f', 8, "f64", RT_F32}, {'i', 4, "i32", RT_I32},
    {'i', 8, "i64", RT_I32}, {'i', 2, "i16", RT_I32}, {'i', 1, "i8", RT_I32},
    {'u', 1, "u8", RT_I32},  {'b', 1, "bool", RT_I32},
};

typedef struct Header {
  char descr[32];
  int fortran;
  int rank; /* may exceed RT_MAX_RANK; only the first dims are kept */
  int64_t dim[RT_MAX_RANK];
  int seen_descr, seen_fortran, seen_shape;
} Header;

typedef struct Lex {
  const unsigned char *start, *p, *end;
  const RtCtx *c;
} Lex;

/* "(2, 3)", "(3,)" or "()" like Python's tuple repr (buf >= 256 bytes is
 * always enough for RT_MAX_RANK dims). */
static void shape_str(const int64_t *dim, int rank, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i <= rank && used < n; i++) {
    int k = i == rank ? snprintf(buf + used, n - used, "%s)", rank == 0 ? "(" : rank == 1 ? "," : "")
                      : snprintf(buf + used, n - used, "%s%lld", i ? ", " : "(", (long long)dim[i]);
    if (k < 0) return;
    used += (size_t)k;
  }
}

/* ---- header tokenizer ---- */

static void lex_ws(Lex *l) {
  while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
    l->p++;
}

static RtStatus lex_expect(Lex *l, char ch, const char *what) {
  char f[32];
  lex_ws(l);
  if (l->p < l->end && *l->p == (unsigned char)ch) {
    l->p++;
    return RT_OK;
  }
  return rt_fail(l->c, RT_ERR_FORMAT, "bad header: expected %s at offset %ld, found %s", what,
                 (long)(l->p - l->start), rt_found(l->p, l->end, f, sizeof f));
}

/* A quoted Python string of printable ASCII without escapes into out. */
static RtStatus lex_string(Lex *l, char *out, size_t cap, const char *what) {
  char f[32];
  size_t n = 0;
  unsigned char q;
  lex_ws(l);
  if (l->p >= l->end || (*l->p != '\'' && *l->p != '"'))
    return rt_fail(l->c, RT_ERR_FORMAT, "bad header: expected %s (a quoted string) at offset %ld, found %s",
                   what, (long)(l->p - l->start), rt_found(l->p, l->end, f, sizeof f));
  q = *l->p++;
  for (; l->p < l->end && *l->p != q; l->p++) {
    if (*l->p < 0x20 || *l->p >= 0x7f || *l->p == '\\')
      return rt_fail(l->c, RT_ERR_FORMAT, "bad header: unexpected %s inside %s at offset %ld",
                     rt_found(l->p, l->end, f, sizeof f), what, (long)(l->p - l->start));
    if (n + 1 >= cap)
      return rt_fail(l->c, RT_ERR_FORMAT, "bad header: %s is too long (over %zu characters)", what, cap - 1);
    out[n++] = (char)*l->p;
  }
  if (l->p >= l->end) return rt_fail(l->c, RT_ERR_FORMAT, "bad header: unterminated string in %s", what);
  l->p++;
  out[n] = '\0';
  return RT_OK;
}

static int is_digit(unsigned char ch) { return ch >= '0' && ch <= '9'; }

static int is_word(unsigned char ch) {
  return is_digit(ch) || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || ch == '_';
}

/* Length of the token at p (for quoting it in a message), at most 40. */
static int token_len(const Lex *l, const unsigned char *p) {
  int n = 0;
  while (p + n < l->end && n < 40 && (is_word(p[n]) || p[n] == '.' || p[n] == '-' || p[n] == '+'))
    n++;
  return n;
}

static RtStatus lex_bool(Lex *l, int *v) {
  static const char *const words[2] = {"False", "True"};
  lex_ws(l);
  for (int i = 0; i < 2; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(l->end - l->p) >= n && memcmp(l->p, words[i], n) == 0 &&
        (l->p + n == l->end || !is_word(l->p[n]))) {
      l->p += n;
      *v = i;
      return RT_OK;
    }
  }
  return rt_fail(l->c, RT_ERR_FORMAT, "bad header: 'fortran_order' must be True or False, found '%.*s'",
                 token_len(l, l->p), (const char *)l->p);
}

/* One dimension of 'shape': a non-negative decimal integer (a Python 2
 * long suffix 'L' is tolerated). */
static RtStatus lex_dim(Lex *l, int64_t *v) {
  const unsigned char *s;
  char f[32];
  int neg = 0;
  int64_t x = 0;
  lex_ws(l);
  s = l->p;
  if (l->p < l->end && *l->p == '-') neg = 1, l->p++;
  if (l->p >= l->end || !is_digit(*l->p))
    return rt_fail(
        l->c, RT_ERR_FORMAT,
        "bad header: expected a dimension (a non-negative integer) in 'shape' at offset %ld, found %s",
        (long)(s - l->start), rt_found(l->p, l->end, f, sizeof f));
  for (; l->p < l->end && is_digit(*l->p); l->p++) {
    int d = *l->p - '0';
    if (x > (INT64_MAX - d) / 10)
      return rt_fail(l->c, RT_ERR_FORMAT, "bad header: dimension %.*s in 'shape' is too large",
                     token_len(l, s), (const char *)s);
    x = x * 10 + d;
  }
  if (l->p < l->end && *l->p == 'L') l->p++;
  if (l->p < l->end && (*l->p == '.' || is_word(*l->p)))
    return rt_fail(l->c, RT_ERR_FORMAT, "bad header: dimension '%.*s' in 'shape' is not an integer",
                   token_len(l, s), (const char *)s);
  if (neg)
    return rt_fail(l->c, RT_ERR_FORMAT, "bad header: negative dimension -%lld in 'shape'", (long long)x);
  *v = x;
  return RT_OK;
}

/* A Python tuple of dims: (), (3,), (2, 3) or (2, 3,).  (3) is an int,
 * not a tuple, and is rejected as NumPy rejects it. */
static RtStatus lex_shape(Lex *l, Header *h) {
  RtStatus s = lex_expect(l, '(', "'(' starting the 'shape' tuple");
  char f[32];
  if (s) return s;
  lex_ws(l);
  if (l->p < l->end && *l->p == ')') {
    l->p++;
    return RT_OK;
  }
  for (;;) {
    int64_t d = 0;
    if ((s = lex_dim(l, &d))) return s;
    if (h->rank < RT_MAX_RANK) h->dim[h->rank] = d;
    if (h->rank < INT_MAX) h->rank++;
    lex_ws(l);
    if (l->p < l->end && *l->p == ',') {
      l->p++;
      lex_ws(l);
      if (l->p < l->end && *l->p == ')') break;
      continue;
    }
    if (l->p < l->end && *l->p == ')') {
      if (h->rank == 1)
        return rt_fail(
            l->c, RT_ERR_FORMAT,
            "bad header: 'shape' (%lld) is not a tuple; a one-dimensional shape is written (%lld,)",
            (long long)h->dim[0], (long long)h->dim[0]);
      break;
    }
    return rt_fail(l->c, RT_ERR_FORMAT, "bad header: expected ',' or ')' in 'shape' at offset %ld, found %s",
                   (long)(l->p - l->start), rt_found(l->p, l->end, f, sizeof f));
  }
  l->p++;
  return RT_OK;
}

static RtStatus parse_value(Lex *l, const char *key, Header *h) {
  int *seen = !strcmp(key, "descr")           ? &h->seen_descr
              : !strcmp(key, "fortran_order") ? &h->seen_fortran
              : !strcmp(key, "shape")         ? &h->seen_shape
                                              : NULL;
  if (!seen)
    return rt_fail(l->c, RT_ERR_FORMAT,
                   "bad header: unexpected key '%s' (expected only 'descr', 'fortran_order' and 'shape')",
                   key);
  if ((*seen)++) return rt_fail(l->c, RT_ERR_FORMAT, "bad header: key '%s' appears twice", key);
  if (seen == &h->seen_fortran) return lex_bool(l, &h->fortran);
  if (seen == &h->seen_shape) return lex_shape(l, h);
  lex_ws(l);
  if (l->p < l->end && *l->p == '[')
    return rt_fail(l->c, RT_ERR_DTYPE,
                   "structured dtypes (a list 'descr') are not supported; save a plain numeric array");
  return lex_string(l, h->descr, sizeof h->descr, "the value of 'descr'");
}

/* The header dict: keys in any order, each exactly once, a trailing comma
 * allowed, then nothing but whitespace (NumPy pads with spaces and '\n'). */
static RtStatus parse_header(const RtCtx *c, const unsigned char *p, size_t n, Header *h) {
  Lex l = {p, p, p + n, c};
  char key[32], f[32];
  RtStatus s;
  memset(h, 0, sizeof *h);
  if ((s = lex_expect(&l, '{', "'{' starting the header dictionary"))) return s;
  for (;;) {
    lex_ws(&l);
    if (l.p < l.end && *l.p == '}') break;
    if ((s = lex_string(&l, key, sizeof key, "a dictionary key"))) return s;
    if ((s = lex_expect(&l, ':', "':' after a key"))) return s;
    if ((s = parse_value(&l, key, h))) return s;
    lex_ws(&l);
    if (l.p < l.end && *l.p == ',') {
      l.p++;
      continue;
    }
    if ((s = lex_expect(&l, '}', "',' or '}' after a value"))) return s;
    l.p--;
    break;
  }
  l.p++;
  lex_ws(&l);
  if (l.p != l.end)
    return rt_fail(c, RT_ERR_FORMAT, "bad header: unexpected %s after the closing '}' at offset %ld",
                   rt_found(l.p, l.end, f, sizeof f), (long)(l.p - l.start));
  if (!h->seen_descr || !h->seen_fortran || !h->seen_shape)
    return rt_fail(c, RT_ERR_FORMAT,
                   "bad header: no '%s' key (expected 'descr', 'fortran_order' and 'shape')",
                   !h->seen_descr ? "descr" : !h->seen_fortran ? "fortran_order" : "shape");
  return RT_OK;
}

/* Maps a descr such as '<f8' to its Src, rejecting big-endian data and
 * anything kiln cannot load. */
static RtStatus decode_descr(const RtCtx *c, const char *d, const Src **out) {
  if (strlen(d) == 3 && strchr("<>=|", d[0])) {
    for (size_t i = 0; i < sizeof SRCS / sizeof SRCS[0]; i++) {
      const Src *s = &SRCS[i];
      if (d[1] != s->kind || d[2] != '0' + s->size) continue;
      if (s->size > 1 && d[0] == '|')
        return rt_fail(c, RT_ERR_FORMAT, "dtype '%s': byte order '|' is only valid for one-byte types", d);
      if (s->size > 1 && (d[0] == '>' || (d[0] == '=' && !rt_host_is_le())))
        return rt_fail(
            c, RT_ERR_DTYPE,
            "dtype '%s' is big-endian; kiln reads little-endian data only (save with arr.astype('<%c%d'))", d,
            s->kind, s->size);
      *out = s;
      return RT_OK;
    }
  }
  return rt_fail(
      c, RT_ERR_DTYPE,
      "dtype '%s' is not supported (expected '<f4' or '<i4', or '<f8', '<i8', '<i2', '|i1', '|u1', "
      "'|b1', which are converted)",
      d);
}

/* The magic, version and header length; sets where the header starts. */
static RtStatus parse_preamble(const RtCtx *c, const unsigned char *b, size_t len, size_t *hstart,
                               size_t *hlen) {
  size_t lsize;
  if (len < sizeof MAGIC || memcmp(b, MAGIC, sizeof MAGIC) != 0) {
    if (len < sizeof MAGIC && (len == 0 || memcmp(b, MAGIC, len) == 0))
      return rt_fail(c, RT_ERR_FORMAT, "file is %zu bytes, too short for a .npy file (truncated?)", len);
    return rt_fail(c, RT_ERR_FORMAT, "not a .npy file (bad magic string; expected \\x93NUMPY)");
  }
  if (len < 8)
    return rt_fail(c, RT_ERR_FORMAT, "file is %zu bytes and ends inside the version (truncated?)", len);
  if (b[6] < 1 || b[6] > 3 || b[7] != 0)
    return rt_fail(c, RT_ERR_FORMAT, "unsupported .npy format version %d.%d (expected 1.0, 2.0 or 3.0)", b[6],
                   b[7]);
  lsize = b[6] == 1 ? 2 : 4;
  if (len < 8 + lsize)
    return rt_fail(c, RT_ERR_FORMAT, "file is %zu bytes and ends inside the header length (truncated?)", len);
  *hstart = 8 + lsize;
  *hlen = (size_t)rt_load_le(b + 8, (int)lsize);
  if (*hlen > len - *hstart)
    return rt_fail(c, RT_ERR_FORMAT,
                   "header length %zu runs past the end of the file (only %zu bytes follow)", *hlen,
                   len - *hstart);
  return RT_OK;
}

static int64_t sign_extend(uint64_t u, int size) {
  int64_t v;
  if (size == 8) {
    memcpy(&v, &u, sizeof v);
    return v;
  }
  v = (int64_t)u;
  if (u >> (8 * size - 1)) v -= (int64_t)1 << (8 * size);
  return v;
}

/* Converts n elements of type s at in (little-endian) to f32 or i32. */
static RtStatus convert(const RtCtx *c, const Src *s, const unsigned char *in, size_t n, void *out) {
  float *f = out;
  int32_t *q = out;
  RtStatus st = RT_OK;
  if (s->size == 4 && rt_host_is_le()) {
    if (n) memcpy(out, in, n * 4);
    return RT_OK;
  }
  for (size_t i = 0; i < n && !st; i++) {
    uint64_t u = rt_load_le(in + i * (size_t)s->size, s->size);
    if (s->kind == 'f' && s->size == 4) {
      uint32_t b = (uint32_t)u;
      memcpy(&f[i], &b, 4);
    } else if (s->kind == 'f') {
      double d;
      memcpy(&d, &u, 8);
      st = rt_f64_to_f32(c, NULL, d, i, &f[i]);
    } else if (s->kind == 'i') {
      st = rt_i64_to_i32(c, NULL, sign_extend(u, s->size), i, &q[i]);
    } else {
      q[i] = s->kind == 'b' ? (u != 0) : (int32_t)u;
    }
  }
  return st;
}

RtStatus rt_npy_parse(const void *buf, size_t len, const char *name, RtTensor *out, char *err,
                      size_t errlen) {
  const RtCtx c = {name ? name : "(buffer)", err, errlen};
  const unsigned char *b = buf;
  size_t hstart = 0, hlen = 0, have, need;
  const Src *src = NULL;
  char shp[256];
  int64_t ne;
  Header h;
  RtStatus s;
  if (err && errlen) err[0] = '\0';
  memset(out, 0, sizeof *out);
  if (!b) len = 0;
  if ((s = parse_preamble(&c, b, len, &hstart, &hlen))) return s;
  if ((s = parse_header(&c, b + hstart, hlen, &h))) return s;
  if ((s = decode_descr(&c, h.descr, &src))) return s;
  if (h.fortran)
    return rt_fail(&c, RT_ERR_FORMAT, "array is in Fortran (column-major) order; kiln reads C order only "
                                      "(save with np.ascontiguousarray(arr))");
  if (h.rank > RT_MAX_RANK)
    return rt_fail(&c, RT_ERR_SHAPE, "shape has %d dimensions; kiln supports at most %d", h.rank,
                   RT_MAX_RANK);
  out->rank = h.rank;
  memcpy(out->dim, h.dim, sizeof h.dim);
  shape_str(h.dim, h.rank, shp, sizeof shp);
  ne = rt_numel(out);
  if (ne < 0 || (uint64_t)ne > SIZE_MAX / 4) {
    memset(out, 0, sizeof *out);
    return rt_fail(&c, RT_ERR_FORMAT, "shape %s has too many elements (the count overflows)", shp);
  }
  have = len - hstart - hlen;
  need = (size_t)ne * (size_t)src->size;
  if (have != need) {
    memset(out, 0, sizeof *out);
    if (have > need)
      return rt_fail(&c, RT_ERR_FORMAT,
                     "data is %zu bytes but shape %s of %s needs %zu (%zu extra bytes at the end)", have, shp,
                     src->label, need, have - need);
    return rt_fail(&c, RT_ERR_FORMAT, "data is %zu bytes but shape %s of %s needs %zu (truncated file?)",
                   have, shp, src->label, need);
  }
  /* need <= len, so this allocates at most 4 bytes per input byte. */
  out->dtype = src->to;
  out->data = malloc(ne ? (size_t)ne * 4 : 1);
  if (!out->data) {
    memset(out, 0, sizeof *out);
    return rt_fail(&c, RT_ERR_ALLOC, "out of memory for %lld elements", (long long)ne);
  }
  if ((s = convert(&c, src, b + hstart + hlen, (size_t)ne, out->data))) {
    free(out->data);
    memset(out, 0, sizeof *out);
  }
  return s;
}

RtStatus rt_npy_read(const char *path, RtTensor *out, char *err, size_t errlen) {
  void *buf;
  size_t len;
  RtStatus s;
  memset(out, 0, sizeof *out);
  if ((s = rt_read_file(path, &buf, &len, err, errlen))) return s;
  s = rt_npy_parse(buf, len, path, out, err, errlen);
  free(buf);
  return s;
}

/* Version 1.0 preamble and header, padded with spaces and ending in '\n'
 * so the data starts at a multiple of 64 bytes; returns its size. */
static size_t build_header(const RtTensor *t, unsigned char *hdr) {
  char dict[400], shp[256];
  size_t dlen, total;
  shape_str(t->dim, t->rank, shp, sizeof shp);
  dlen = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                          t->dtype == RT_F32 ? "<f4" : "<i4", shp);
  total = (10 + dlen + 1 + 63) / 64 * 64;
  memcpy(hdr, MAGIC, sizeof MAGIC);
  hdr[6] = 1;
  hdr[7] = 0;
  hdr[8] = (unsigned char)((total - 10) & 0xff);
  hdr[9] = (unsigned char)((total - 10) >> 8);
  memcpy(hdr + 10, dict, dlen);
  memset(hdr + 10 + dlen, ' ', total - 11 - dlen);
  hdr[total - 1] = '\n';
  return total;
}

RtStatus rt_npy_write(const char *path, const RtTensor *t, char *err, size_t errlen) {
  const RtCtx c = {path, err, errlen};
  unsigned char hdr[512];
  unsigned char *swapped = NULL;
  const void *pieces[2];
  size_t sizes[2], nbytes = 0;
  RtStatus s;
  if (err && errlen) err[0] = '\0';
  if (!t) return rt_fail(&c, RT_ERR_FORMAT, "no tensor to write");
  if ((s = rt_check_writable(&c, NULL, t, &nbytes))) return s;
  sizes[0] = build_header(t, hdr);
  pieces[0] = hdr;
  pieces[1] = t->data;
  sizes[1] = nbytes;
  if (!rt_host_is_le() && nbytes) { /* the file is little-endian */
    const unsigned char *d = t->data;
    if (!(swapped = malloc(nbytes))) return rt_fail(&c, RT_ERR_ALLOC, "out of memory");
    for (size_t i = 0; i < nbytes; i++) swapped[i] = d[i ^ 3];
    pieces[1] = swapped;
  }
  s = rt_write_file_atomic(path, pieces, sizes, 2, err, errlen);
  free(swapped);
  return s;
}
