/*
 * safetensors.c: reading and writing the safetensors format (parameters).
 *
 * Layout: a u64 little-endian header length N, N bytes of JSON
 *   {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...,
 *    "__metadata__": {"key": "value"}}
 * (possibly padded with spaces), then the data section; offsets are
 * relative to its start.
 *
 * The JSON is read by a small strict parser of our own (json.c; the runtime
 * may depend on libc alone), and this file checks the header's structure,
 * accepting only the shapes the format allows: unknown keys, duplicate
 * names, non-integer offsets, overlapping or out-of-range data and size
 * mismatches are all rejected with a message naming the file and the
 * tensor.  Every byte count is checked against the buffer before anything
 * is allocated, so a hostile file cannot make the reader allocate much
 * more than the file's own size.  F64, F16 and BF16 are converted to f32
 * and I64 to i32 (range-checked, as in npy.c: see rt_internal.h).
 */
#include "rt_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER 100000000u /* the format's own limit: 100 MB */

/* A safetensors dtype: element size and conversion ('F' f32, 'I' i32,
 * 'D' f64, 'H' f16, 'B' bf16, 'L' i64, 0 for dtypes kiln cannot load). */
typedef struct StType {
  const char *name;
  int size;
  char conv;
} StType;

static const StType TYPES[] = {
    {"F32", 4, 'F'},  {"I32", 4, 'I'},  {"F64", 8, 'D'},     {"F16", 2, 'H'},     {"BF16", 2, 'B'},
    {"I64", 8, 'L'},  {"BOOL", 1, 0},   {"U8", 1, 0},        {"I8", 1, 0},        {"I16", 2, 0},
    {"U16", 2, 0},    {"U32", 4, 0},    {"U64", 8, 0},       {"F8_E4M3", 1, 0},   {"F8_E5M2", 1, 0},
};

typedef struct Entry {
  char *name;
  const StType *type;
  int rank; /* may exceed RT_MAX_RANK while parsing; only dim[0..8) kept */
  int64_t dim[RT_MAX_RANK];
  int64_t begin, end;
} Entry;

typedef struct Pair {
  char *k, *v;
} Pair;

/* Everything a parse owns until it hands it to the RtTensorFile. */
typedef struct Parse {
  Entry *ents;
  int n_ents, cap_ents;
  Pair *meta;
  int n_meta, cap_meta, seen_meta;
} Parse;

/* "[2, 3]" for messages. */
static void shape_str(const int64_t *dim, int rank, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i <= rank && used < n; i++) {
    int k = i == rank ? snprintf(buf + used, n - used, "%s]", rank == 0 ? "[" : "")
                      : snprintf(buf + used, n - used, "%s%lld", i ? ", " : "[", (long long)dim[i]);
    if (k < 0) return;
    used += (size_t)k;
  }
}

/* ---- the header's structure ---- */

static RtStatus parse_dtype(RtJson *j, Entry *e) {
  char *s;
  RtStatus st = rt_json_string(j, &s, "a dtype string");
  if (st) return st;
  for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0] && !e->type; i++)
    if (!strcmp(s, TYPES[i].name)) e->type = &TYPES[i];
  if (!e->type)
    st = rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': unknown dtype \"%s\"", e->name, s);
  else if (!e->type->conv)
    st = rt_fail(
        j->c, RT_ERR_DTYPE,
        "tensor '%s' has dtype %s, which kiln cannot load (expected F32 or I32, or F64, F16, BF16 or I64, "
        "which are converted)",
        e->name, s);
  free(s);
  return st;
}

static RtStatus parse_shape(RtJson *j, Entry *e) {
  RtStatus s = rt_json_ints(j, e->dim, RT_MAX_RANK, &e->rank, e->name, "shape");
  if (s) return s;
  if (e->rank > RT_MAX_RANK)
    return rt_fail(j->c, RT_ERR_SHAPE, "tensor '%s': shape has %d dimensions; kiln supports at most %d",
                   e->name, e->rank, RT_MAX_RANK);
  for (int i = 0; i < e->rank; i++)
    if (e->dim[i] < 0)
      return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': negative dimension %lld in shape", e->name,
                     (long long)e->dim[i]);
  return RT_OK;
}

static RtStatus parse_offsets(RtJson *j, Entry *e) {
  int64_t v[2];
  int n;
  RtStatus s = rt_json_ints(j, v, 2, &n, e->name, "data_offsets");
  if (s) return s;
  if (n != 2)
    return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s': data_offsets must be [begin, end], found %d values",
                   e->name, n);
  if (v[0] < 0 || v[1] < 0 || v[0] > v[1])
    return rt_fail(j->c, RT_ERR_FORMAT,
                   "tensor '%s': data_offsets [%lld, %lld] must satisfy 0 <= begin <= end", e->name,
                   (long long)v[0], (long long)v[1]);
  e->begin = v[0];
  e->end = v[1];
  return RT_OK;
}

/* {"dtype": ..., "shape": ..., "data_offsets": ...}, each exactly once. */
static RtStatus parse_entry(RtJson *j, Entry *e) {
  static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
  int seen[3] = {0, 0, 0}, first = 1, more, which;
  char *key;
  RtStatus s;
  if (rt_json_peek(j) != '{')
    return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s' must be an object with dtype, shape and data_offsets",
                   e->name);
  j->p++;
  for (;;) {
    if ((s = rt_json_member(j, &first, &more, &key)) || !more) break;
    for (which = 0; which < 3 && strcmp(key, keys[which]); which++) {}
    if (which == 3 || seen[which]++)
      s = rt_fail(j->c, RT_ERR_FORMAT,
                  which == 3 ? "tensor '%s': unexpected key \"%s\" (expected dtype, shape and "
                            "data_offsets)"
                          : "tensor '%s': key \"%s\" appears twice",
                  e->name, key);
    free(key);
    if (s) return s;
    s = which == 0 ? parse_dtype(j, e) : which == 1 ? parse_shape(j, e) : parse_offsets(j, e);
    if (s) return s;
  }
  if (s) return s;
  for (which = 0; which < 3; which++)
    if (!seen[which]) return rt_fail(j->c, RT_ERR_FORMAT, "tensor '%s' has no \"%s\"", e->name, keys[which]);
  return RT_OK;
}


/* Makes room for element n of an array of *cap elements of sz bytes:
 * returns the (possibly moved) array, or NULL when out of memory. */
static void *grow(void *arr, int n, int *cap, size_t sz) {
  void *np;
  int nc;
  if (n < *cap) return arr;
  if (*cap > INT_MAX / 2 - 1) return NULL;
  nc = *cap ? *cap * 2 : 8;
  if (!(np = realloc(arr, (size_t)nc * sz))) return NULL;
  *cap = nc;
  return np;
}

/* "__metadata__": {"key": "value", ...}, values strings only. */
static RtStatus parse_meta(RtJson *j, Parse *ps) {
  int first = 1, more;
  char *key, *val, f[32];
  Pair *np;
  RtStatus s;
  if (ps->seen_meta++) return rt_fail(j->c, RT_ERR_FORMAT, "\"__metadata__\" appears twice");
  if (rt_json_peek(j) != '{')
    return rt_fail(j->c, RT_ERR_FORMAT, "\"__metadata__\" must be an object of strings, found %s",
                   rt_found(j->p, j->end, f, sizeof f));
  j->p++;
  for (;;) {
    if ((s = rt_json_member(j, &first, &more, &key)) || !more) return s;
    if (rt_json_peek(j) != '"')
      s = rt_fail(j->c, RT_ERR_FORMAT,
                  "\"__metadata__\" value for \"%s\" is %s; metadata values must be strings", key,
                  rt_json_kind(rt_json_peek(j)));
    else
      s = rt_json_string(j, &val, "a string");
    if (!s && !(np = grow(ps->meta, ps->n_meta, &ps->cap_meta, sizeof *np))) {
      free(val);
      s = rt_fail(j->c, RT_ERR_ALLOC, "out of memory");
    }
    if (s) {
      free(key);
      return s;
    }
    ps->meta = np;
    ps->meta[ps->n_meta].k = key;
    ps->meta[ps->n_meta++].v = val;
  }
}

/* The top-level object: tensor entries and at most one "__metadata__". */
static RtStatus parse_json(RtJson *j, Parse *ps) {
  int first = 1, more;
  char *key, f[32];
  Entry *e;
  RtStatus s;
  if (rt_json_peek(j) != '{')
    return rt_fail(j->c, RT_ERR_FORMAT, "header is not a JSON object (expected '{', found %s)",
                   rt_found(j->p, j->end, f, sizeof f));
  j->p++;
  for (;;) {
    if ((s = rt_json_member(j, &first, &more, &key))) return s;
    if (!more) break;
    if (!strcmp(key, "__metadata__")) {
      free(key);
      s = parse_meta(j, ps);
    } else if (!(e = grow(ps->ents, ps->n_ents, &ps->cap_ents, sizeof *e))) {
      free(key);
      s = rt_fail(j->c, RT_ERR_ALLOC, "out of memory");
    } else {
      ps->ents = e;
      e = &ps->ents[ps->n_ents++];
      memset(e, 0, sizeof *e);
      e->name = key;
      s = parse_entry(j, e);
    }
    if (s) return s;
  }
  if (rt_json_peek(j) >= 0)
    return rt_fail(j->c, RT_ERR_FORMAT,
                   "invalid JSON header: unexpected %s after the closing '}' at byte %ld",
                   rt_found(j->p, j->end, f, sizeof f), rt_json_off(j));
  return RT_OK;
}

/* ---- validation and conversion ---- */

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const Entry *)a)->name, ((const Entry *)b)->name);
}

static int cmp_span(const void *a, const void *b) {
  const Entry *x = *(const Entry *const *)a, *y = *(const Entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

static int cmp_pair(const void *a, const void *b) {
  return strcmp(((const Pair *)a)->k, ((const Pair *)b)->k);
}

/* Each tensor's bytes lie in the data section and match its shape. */
static RtStatus check_sizes(const RtCtx *c, const Entry *e, size_t dlen) {
  RtTensor t;
  int64_t ne;
  char shp[256];
  memset(&t, 0, sizeof t);
  t.rank = e->rank;
  memcpy(t.dim, e->dim, sizeof t.dim);
  ne = rt_numel(&t);
  shape_str(e->dim, e->rank, shp, sizeof shp);
  if ((uint64_t)e->end > dlen)
    return rt_fail(c, RT_ERR_FORMAT,
                   "tensor '%s': data_offsets [%lld, %lld] run past the end of the data (%zu bytes)", e->name,
                   (long long)e->begin, (long long)e->end, dlen);
  if (ne < 0 || ne > INT64_MAX / e->type->size)
    return rt_fail(c, RT_ERR_FORMAT, "tensor '%s': shape %s has too many elements", e->name, shp);
  if (ne * e->type->size != e->end - e->begin)
    return rt_fail(c, RT_ERR_FORMAT,
                   "tensor '%s': data_offsets [%lld, %lld] hold %lld bytes but shape %s of %s needs %lld",
                   e->name, (long long)e->begin, (long long)e->end, (long long)(e->end - e->begin), shp,
                   e->type->name, (long long)(ne * e->type->size));
  return RT_OK;
}

/* Sorts entries by name and metadata by key; rejects duplicates, bad
 * sizes and overlapping data. */
static RtStatus check_all(const RtCtx *c, Parse *ps, size_t dlen) {
  const Entry **order;
  RtStatus s = RT_OK;
  if (ps->n_ents > 1) qsort(ps->ents, (size_t)ps->n_ents, sizeof *ps->ents, cmp_name);
  if (ps->n_meta > 1) qsort(ps->meta, (size_t)ps->n_meta, sizeof *ps->meta, cmp_pair);
  for (int i = 1; i < ps->n_meta; i++)
    if (!strcmp(ps->meta[i].k, ps->meta[i - 1].k))
      return rt_fail(c, RT_ERR_FORMAT, "\"__metadata__\" key \"%s\" appears twice", ps->meta[i].k);
  for (int i = 0; i < ps->n_ents; i++) {
    if (i > 0 && !strcmp(ps->ents[i].name, ps->ents[i - 1].name))
      return rt_fail(c, RT_ERR_FORMAT, "tensor name '%s' appears twice", ps->ents[i].name);
    if ((s = check_sizes(c, &ps->ents[i], dlen))) return s;
  }
  if (ps->n_ents < 2) return RT_OK;
  if (!(order = malloc((size_t)ps->n_ents * sizeof *order))) return rt_fail(c, RT_ERR_ALLOC, "out of memory");
  for (int i = 0; i < ps->n_ents; i++) order[i] = &ps->ents[i];
  qsort(order, (size_t)ps->n_ents, sizeof *order, cmp_span);
  for (int i = 1; i < ps->n_ents && !s; i++)
    if (order[i]->begin < order[i - 1]->end)
      s = rt_fail(c, RT_ERR_FORMAT, "tensors '%s' [%lld, %lld] and '%s' [%lld, %lld] overlap",
                  order[i - 1]->name, (long long)order[i - 1]->begin, (long long)order[i - 1]->end,
                  order[i]->name, (long long)order[i]->begin, (long long)order[i]->end);
  free(order);
  return s;
}

static float half_to_float(uint32_t h) {
  uint32_t sign = (h & 0x8000u) << 16, ex = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  float f;
  if (ex == 0 && man == 0) {
    bits = sign;
  } else if (ex == 0) { /* subnormal: normalise */
    ex = 113;
    while (!(man & 0x400u)) man <<= 1, ex--;
    bits = sign | ex << 23 | (man & 0x3ffu) << 13;
  } else if (ex == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (ex + 112) << 23 | man << 13;
  }
  memcpy(&f, &bits, 4);
  return f;
}

/* Converts n little-endian elements of the given type at in to f32 or i32. */
static RtStatus convert(const RtCtx *c, const StType *type, const char *name, const unsigned char *in,
                        size_t n, void *out) {
  float *f = out;
  int32_t *q = out;
  int size = type->size;
  RtStatus s = RT_OK;
  if (size == 4 && rt_host_is_le()) {
    if (n) memcpy(out, in, n * 4);
    return RT_OK;
  }
  for (size_t i = 0; i < n && !s; i++) {
    uint64_t u = rt_load_le(in + i * (size_t)size, size);
    uint32_t b = (uint32_t)u;
    double d;
    int64_t v;
    switch (type->conv) {
    case 'F': memcpy(&f[i], &b, 4); break;
    case 'I': memcpy(&q[i], &b, 4); break;
    case 'H': f[i] = half_to_float(b); break;
    case 'B': b <<= 16, memcpy(&f[i], &b, 4); break;
    case 'D': memcpy(&d, &u, 8), s = rt_f64_to_f32(c, name, d, i, &f[i]); break;
    default: memcpy(&v, &u, 8), s = rt_i64_to_i32(c, name, v, i, &q[i]);
    }
  }
  return s;
}

/* Moves the checked entries and metadata into out, converting the data. */
static RtStatus build(const RtCtx *c, Parse *ps, const unsigned char *data, RtTensorFile *out) {
  RtStatus s;
  if (!(out->items = calloc((size_t)ps->n_ents + 1, sizeof *out->items)) ||
      !(out->meta_keys = calloc((size_t)ps->n_meta + 1, sizeof *out->meta_keys)) ||
      !(out->meta_values = calloc((size_t)ps->n_meta + 1, sizeof *out->meta_values)))
    return rt_fail(c, RT_ERR_ALLOC, "out of memory");
  for (; out->n_meta < ps->n_meta; out->n_meta++) {
    out->meta_keys[out->n_meta] = ps->meta[out->n_meta].k;
    out->meta_values[out->n_meta] = ps->meta[out->n_meta].v;
    ps->meta[out->n_meta].k = ps->meta[out->n_meta].v = NULL;
  }
  for (int i = 0; i < ps->n_ents; i++) {
    Entry *e = &ps->ents[i];
    RtNamedTensor *it = &out->items[out->n++]; /* counted now, so a failure frees it */
    size_t ne = (size_t)(e->end - e->begin) / (size_t)e->type->size; /* checked: the data is in the buffer */
    it->name = e->name;
    e->name = NULL;
    it->t.dtype = e->type->conv == 'I' || e->type->conv == 'L' ? RT_I32 : RT_F32;
    it->t.rank = e->rank;
    memcpy(it->t.dim, e->dim, sizeof e->dim);
    if (!(it->t.data = malloc(ne ? ne * 4 : 1)))
      return rt_fail(c, RT_ERR_ALLOC, "out of memory for tensor '%s'", it->name);
    if ((s = convert(c, e->type, it->name, data + e->begin, ne, it->t.data))) return s;
  }
  return RT_OK;
}

static void parse_free(Parse *ps) {
  for (int i = 0; i < ps->n_ents; i++) free(ps->ents[i].name);
  for (int i = 0; i < ps->n_meta; i++) free(ps->meta[i].k), free(ps->meta[i].v);
  free(ps->ents);
  free(ps->meta);
}

RtStatus rt_safetensors_parse(const void *buf, size_t len, const char *name, RtTensorFile *out, char *err,
                              size_t errlen) {
  const RtCtx c = {name ? name : "(buffer)", err, errlen};
  const unsigned char *b = buf;
  Parse ps;
  RtJson j;
  uint64_t hlen;
  RtStatus s;
  if (err && errlen) err[0] = '\0';
  memset(out, 0, sizeof *out);
  memset(&ps, 0, sizeof ps);
  if (!b) len = 0;
  if (len < 8)
    return rt_fail(&c, RT_ERR_FORMAT,
                   "file is %zu bytes, too short for the 8-byte header length (truncated?)", len);
  hlen = rt_load_le(b, 8);
  if (hlen > MAX_HEADER)
    return rt_fail(&c, RT_ERR_FORMAT, "header length %llu is over the 100 MB limit (not a safetensors file?)",
                   (unsigned long long)hlen);
  if (hlen > len - 8)
    return rt_fail(&c, RT_ERR_FORMAT,
                   "header length %llu runs past the end of the file (only %zu bytes follow)",
                   (unsigned long long)hlen, len - 8);
  j.start = j.p = b + 8;
  j.end = b + 8 + hlen;
  j.c = &c;
  if (!(s = parse_json(&j, &ps)) && !(s = check_all(&c, &ps, len - 8 - (size_t)hlen)))
    s = build(&c, &ps, j.end, out);
  parse_free(&ps);
  if (s) rt_tensor_file_free(out);
  return s;
}

RtStatus rt_safetensors_read(const char *path, RtTensorFile *out, char *err, size_t errlen) {
  void *buf;
  size_t len;
  RtStatus s;
  memset(out, 0, sizeof *out);
  if ((s = rt_read_file(path, &buf, &len, err, errlen))) return s;
  s = rt_safetensors_parse(buf, len, path, out, err, errlen);
  free(buf);
  return s;
}

const RtNamedTensor *rt_tensor_file_find(const RtTensorFile *f, const char *name) {
  int lo = 0, hi = f && name ? f->n : 0;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2, r = strcmp(name, f->items[mid].name);
    if (r == 0) return &f->items[mid];
    if (r < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

void rt_tensor_file_free(RtTensorFile *f) {
  if (!f) return;
  for (int i = 0; f->items && i < f->n; i++) free(f->items[i].name), free(f->items[i].t.data);
  for (int i = 0; f->meta_keys && i < f->n_meta; i++) free(f->meta_keys[i]);
  for (int i = 0; f->meta_values && i < f->n_meta; i++) free(f->meta_values[i]);
  free(f->items);
  free(f->meta_keys);
  free(f->meta_values);
  memset(f, 0, sizeof *f);
}

/* ---- writing ---- */

typedef struct Buf {
  char *p;
  size_t n, cap;
  int oom;
} Buf;

static void b_put(Buf *b, const void *s, size_t n) {
  size_t cap = b->cap ? b->cap : 256;
  char *np;
  if (b->oom) return;
  while (cap - b->n <= n) {
    if (cap > SIZE_MAX / 2) b->oom = 1;
    cap *= 2;
  }
  if (!b->oom && cap != b->cap) {
    if (!(np = realloc(b->p, cap))) b->oom = 1;
    else b->p = np, b->cap = cap;
  }
  if (!b->oom) memcpy(b->p + b->n, s, n), b->n += n;
}

static void b_str(Buf *b, const char *s) { b_put(b, s, strlen(s)); }

static void b_u64(Buf *b, unsigned long long v) {
  char t[24];
  b_put(b, t, (size_t)snprintf(t, sizeof t, "%llu", v));
}

/* A quoted JSON string; s is valid UTF-8, so only '"', '\\' and control
 * characters need escaping. */
static void b_json(Buf *b, const char *s) {
  char esc[8];
  b_put(b, "\"", 1);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') esc[0] = '\\', esc[1] = *s, b_put(b, esc, 2);
    else if ((unsigned char)*s < 0x20)
      b_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*s));
    else b_put(b, s, 1);
  }
  b_put(b, "\"", 1);
}

static int cmp_item(const void *a, const void *b) {
  return strcmp((*(const RtNamedTensor *const *)a)->name, (*(const RtNamedTensor *const *)b)->name);
}

static int cmp_keyp(const void *a, const void *b) {
  return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

static RtStatus check_item(const RtCtx *c, const RtNamedTensor *it) {
  size_t nbytes;
  if (!it->name || !rt_utf8_valid(it->name))
    return rt_fail(c, RT_ERR_FORMAT, "a tensor name is missing or not valid UTF-8");
  if (!strcmp(it->name, "__metadata__"))
    return rt_fail(c, RT_ERR_FORMAT, "\"__metadata__\" cannot name a tensor");
  return rt_check_writable(c, it->name, &it->t, &nbytes);
}

/* Validates the items, sorts pointers to them by name into order and
 * their sizes into nb. */
static RtStatus check_items(const RtCtx *c, const RtNamedTensor *items, int n, const RtNamedTensor **order,
                            size_t *nb) {
  size_t total = 0;
  RtStatus s;
  for (int i = 0; i < n; i++) {
    if ((s = check_item(c, &items[i]))) return s;
    order[i] = &items[i];
  }
  qsort(order, (size_t)n, sizeof *order, cmp_item);
  for (int i = 0; i < n; i++) {
    if (i && !strcmp(order[i]->name, order[i - 1]->name))
      return rt_fail(c, RT_ERR_FORMAT, "tensor name '%s' appears twice", order[i]->name);
    nb[i] = rt_nbytes(&order[i]->t);
    if (nb[i] > SIZE_MAX - total) return rt_fail(c, RT_ERR_SHAPE, "tensors are too large in total");
    total += nb[i];
  }
  return RT_OK;
}

/* Validates the metadata and sorts pointers to its keys into mk. */
static RtStatus check_meta(const RtCtx *c, const char *const *keys, const char *const *vals, int n,
                           const char *const **mk) {
  for (int i = 0; i < n; i++) {
    if (!keys[i] || !vals[i] || !rt_utf8_valid(keys[i]) || !rt_utf8_valid(vals[i]))
      return rt_fail(c, RT_ERR_FORMAT, "metadata entry %d is missing or not valid UTF-8", i);
    mk[i] = &keys[i];
  }
  qsort(mk, (size_t)n, sizeof *mk, cmp_keyp);
  for (int i = 1; i < n; i++)
    if (!strcmp(*mk[i], *mk[i - 1]))
      return rt_fail(c, RT_ERR_FORMAT, "metadata key \"%s\" appears twice", *mk[i]);
  return RT_OK;
}

/* Compact JSON, "__metadata__" first, then the tensors by name with
 * contiguous offsets; padded with spaces to a multiple of 8 bytes. */
static void build_header(Buf *h, const RtNamedTensor *const *order, const size_t *nb, int n,
                         const char *const *const *mk, const char *const *keys, const char *const *vals,
                         int n_meta) {
  unsigned long long off = 0;
  b_str(h, "{");
  if (n_meta > 0) {
    b_str(h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) b_str(h, ",");
      b_json(h, *mk[i]);
      b_str(h, ":");
      b_json(h, vals[mk[i] - keys]);
    }
    b_str(h, "}");
  }
  for (int i = 0; i < n; i++) {
    const RtTensor *t = &order[i]->t;
    if (i || n_meta > 0) b_str(h, ",");
    b_json(h, order[i]->name);
    b_str(h, t->dtype == RT_F32 ? ":{\"dtype\":\"F32\",\"shape\":[" : ":{\"dtype\":\"I32\",\"shape\":[");
    for (int d = 0; d < t->rank; d++) {
      if (d) b_str(h, ",");
      b_u64(h, (unsigned long long)t->dim[d]);
    }
    b_str(h, "],\"data_offsets\":[");
    b_u64(h, off);
    b_str(h, ",");
    b_u64(h, off += nb[i]);
    b_str(h, "]}");
  }
  b_str(h, "}");
  while (!h->oom && h->n % 8) b_str(h, " ");
}

/* On a big-endian host, one little-endian copy of all the data. */
static RtStatus swap_data(const RtCtx *c, const void **pieces, size_t *sizes, int n, unsigned char **copy) {
  size_t total = 0, at = 0;
  for (int i = 0; i < n; i++) total += sizes[i];
  if (!(*copy = malloc(total ? total : 1))) return rt_fail(c, RT_ERR_ALLOC, "out of memory");
  for (int i = 0; i < n; i++)
    for (size_t k = 0; k < sizes[i]; k++, at++) (*copy)[at] = ((const unsigned char *)pieces[i])[k ^ 3];
  pieces[0] = *copy;
  sizes[0] = total;
  return RT_OK;
}

RtStatus rt_safetensors_write(const char *path, const RtNamedTensor *items, int n,
                              const char *const *meta_keys, const char *const *meta_values, int n_meta,
                              char *err, size_t errlen) {
  const RtCtx c = {path, err, errlen};
  const RtNamedTensor **order = NULL;
  const char *const **mk = NULL;
  const void **pieces = NULL;
  size_t *sizes = NULL;
  unsigned char prefix[8], *swapped = NULL;
  Buf h = {NULL, 0, 0, 0};
  int np = n + 2;
  RtStatus s = RT_OK;
  if (err && errlen) err[0] = '\0';
  if (n < 0 || n > INT_MAX - 2 || n_meta < 0 || (n > 0 && !items) ||
      (n_meta > 0 && (!meta_keys || !meta_values)))
    return rt_fail(&c, RT_ERR_FORMAT, "invalid arguments (a negative count or a missing array)");
  order = malloc((size_t)np * sizeof *order);
  mk = malloc(((size_t)n_meta + 1) * sizeof *mk);
  pieces = malloc(((size_t)np + 1) * sizeof *pieces); /* + 1: swap_data may use pieces[2] */
  sizes = malloc(((size_t)np + 1) * sizeof *sizes);
  if (!order || !mk || !pieces || !sizes) s = rt_fail(&c, RT_ERR_ALLOC, "out of memory");
  if (!s) s = check_items(&c, items, n, order, sizes + 2);
  if (!s) s = check_meta(&c, meta_keys, meta_values, n_meta, mk);
  if (!s) build_header(&h, order, sizes + 2, n, mk, meta_keys, meta_values, n_meta);
  if (!s && h.oom) s = rt_fail(&c, RT_ERR_ALLOC, "out of memory");
  if (!s) {
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    pieces[0] = prefix, sizes[0] = 8;
    pieces[1] = h.p, sizes[1] = h.n;
    for (int i = 0; i < n; i++) pieces[i + 2] = order[i]->t.data;
    if (!rt_host_is_le()) {
      s = swap_data(&c, pieces + 2, sizes + 2, n, &swapped);
      np = 3;
    }
  }
  if (!s) s = rt_write_file_atomic(path, pieces, sizes, np, err, errlen);
  free(order), free(mk), free(pieces), free(sizes), free(h.p), free(swapped);
  return s;
}
