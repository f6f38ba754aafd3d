/*
 * data.c: training data for programs kiln builds: IDX files (the MNIST
 * format), datasets of examples and labels, and seeded mini-batching.
 *
 * IDX layout: two zero bytes, an element-type byte, a rank byte, the dims
 * as big-endian u32, then the elements, big-endian, in C order.  The
 * MNIST-style datasets ship as IDX files, usually gzip-compressed, so the
 * reader recognizes gzip by its magic bytes (not by the file name) and
 * decompresses in memory (inflate.c).  As in npy.c, every size is checked
 * against the data before anything is allocated.
 *
 * A dataset is examples x[n, ...] (f32, or i32 token ids) and labels
 * y[n, ...] (i32 classes, or f32 targets), either 4-byte.  Images stored
 * as u8 IDX are scaled to [0, 1] while they are converted, so the 47 MB of
 * Fashion-MNIST pixels become floats in one pass with no i32 copy between.
 *
 * Shuffling must give the same order on every machine for a given seed,
 * so it uses no libc random numbers: epoch e's order is a Fisher-Yates
 * shuffle of 0..n-1 (i from n-1 down to 1, swap i with j = r_i mod (i+1))
 * where r_i = mix(key + i * 0x9e3779b97f4a7c15) is the i-th output of a
 * SplitMix64 generator whose state starts at
 * key = mix(mix(seed) + e * 0x9e3779b97f4a7c15).  A counter-based hash
 * needs no state carried between epochs, so any epoch's order can be made
 * directly.  (The modulo's bias is below n / 2^64, far below noticeable.)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_data.h"
#include "rt_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GOLDEN 0x9e3779b97f4a7c15u

/* ---- IDX ---- */

typedef struct IdxType {
  int code, size;
  char kind; /* 'u', 'i' or 'f' */
  const char *label;
} IdxType;

static const IdxType TYPES[] = {
    {0x08, 1, 'u', "u8"},  {0x09, 1, 'i', "i8"},  {0x0B, 2, 'i', "i16"},
    {0x0C, 4, 'i', "i32"}, {0x0D, 4, 'f', "f32"}, {0x0E, 8, 'f', "f64"},
};

static uint64_t load_be(const unsigned char *p, int size) {
  uint64_t v = 0;
  for (int i = 0; i < size; i++) v = (v << 8) | p[i];
  return v;
}

/* The most elements a tensor may have: 8-byte elements must fit in size_t. */
static int64_t max_elems(void) {
  return SIZE_MAX / 8 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)(SIZE_MAX / 8);
}

/* Converts n big-endian elements of type t to i32, f32, or (unit) u8
 * scaled to f32 in [0, 1]. */
static RtStatus idx_convert(const RtCtx *c, const IdxType *t, const unsigned char *in, size_t n, int unit,
                            void *out) {
  float *f = out;
  int32_t *q = out;
  RtStatus st = RT_OK;
  if (t->kind == 'u') {
    for (size_t i = 0; i < n; i++)
      if (unit) f[i] = (float)in[i] / 255.0f;
      else q[i] = in[i];
    return RT_OK;
  }
  for (size_t i = 0; i < n && !st; i++) {
    uint64_t u = load_be(in + i * (size_t)t->size, t->size);
    if (t->kind == 'i') { /* sign-extend from size bytes */
      int64_t v = (int64_t)u;
      if (t->size < 8 && (u >> (8 * t->size - 1))) v -= (int64_t)1 << (8 * t->size);
      q[i] = (int32_t)v;
    } else if (t->size == 4) {
      uint32_t b = (uint32_t)u;
      memcpy(&f[i], &b, 4);
    } else {
      double d;
      memcpy(&d, &u, 8);
      st = rt_f64_to_f32(c, NULL, d, i, &f[i]);
    }
  }
  return st;
}

/* Parses an IDX image (gzip-compressed or not) into *out; *type gets the
 * element type.  With unit, u8 data becomes f32 / 255.  what is "file" or
 * "decompressed data", for messages. */
static RtStatus idx_decode(const RtCtx *c, const unsigned char *b, size_t len, int unit, RtTensor *out,
                           const IdxType **type, const char *what) {
  const IdxType *t = NULL;
  size_t hdr, have, need;
  int64_t ne = 1;
  RtStatus st;
  memset(out, 0, sizeof *out);
  if (rt_is_gzip(b, len)) {
    void *plain;
    size_t plen;
    if ((st = rt_gunzip(b, len, c->name, &plain, &plen, c->err, c->errlen))) return st;
    if (rt_is_gzip(plain, plen))
      st = rt_fail(c, RT_ERR_FORMAT, "not an IDX file (gzip data inside gzip data)");
    else st = idx_decode(c, plain, plen, unit, out, type, "decompressed data");
    free(plain);
    return st;
  }
  if (len < 4)
    return rt_fail(c, RT_ERR_FORMAT, "%s is %zu bytes, too short for an IDX file (truncated?)", what, len);
  if (b[0] || b[1])
    return rt_fail(c, RT_ERR_FORMAT, "not an IDX file (it starts 0x%02x 0x%02x; expected two zero bytes)",
                   b[0], b[1]);
  for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
    if (TYPES[i].code == b[2]) t = &TYPES[i];
  if (!t)
    return rt_fail(
        c, RT_ERR_DTYPE,
        "unknown IDX element type 0x%02x (expected 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32 or "
        "0x0E f64)",
        b[2]);
  if (b[3] == 0 || b[3] > RT_MAX_RANK)
    return rt_fail(c, RT_ERR_SHAPE, "IDX file has %d dimensions (expected 1 to %d)", b[3], RT_MAX_RANK);
  out->rank = b[3];
  hdr = 4 + 4 * (size_t)out->rank;
  if (len < hdr) {
    out->rank = 0;
    return rt_fail(c, RT_ERR_FORMAT, "%s is %zu bytes and ends inside the dimensions (truncated?)", what,
                   len);
  }
  for (int i = 0; i < out->rank; i++) {
    out->dim[i] = (int64_t)load_be(b + 4 + 4 * i, 4);
    /* Each dim is below 2^32, so checking before each product suffices. */
    if (out->dim[i] && ne > max_elems() / out->dim[i]) {
      memset(out, 0, sizeof *out);
      return rt_fail(c, RT_ERR_FORMAT, "IDX dimensions have too many elements (the count overflows)");
    }
    ne *= out->dim[i];
  }
  have = len - hdr;
  need = (size_t)ne * (size_t)t->size;
  if (have != need) {
    char shp[32];
    snprintf(shp, sizeof shp, "%lld %s elements", (long long)ne, t->label);
    memset(out, 0, sizeof *out);
    return rt_fail(c, RT_ERR_FORMAT, "data is %zu bytes but %s need %zu (%s)", have, shp, need,
                   have > need ? "extra bytes at the end" : "truncated file?");
  }
  /* need <= len: at most 4 bytes allocated per byte of (decompressed) data. */
  out->dtype = t->kind == 'f' || (unit && t->kind == 'u') ? RT_F32 : RT_I32;
  if (!(out->data = malloc(ne ? (size_t)ne * 4 : 1))) {
    memset(out, 0, sizeof *out);
    return rt_fail(c, RT_ERR_ALLOC, "out of memory for %lld elements", (long long)ne);
  }
  if ((st = idx_convert(c, t, b + hdr, (size_t)ne, unit, out->data))) {
    free(out->data);
    memset(out, 0, sizeof *out);
    return st;
  }
  *type = t;
  return RT_OK;
}

RtStatus rt_idx_parse(const void *buf, size_t len, const char *name, RtTensor *out, char *err,
                      size_t errlen) {
  const RtCtx c = {name ? name : "(buffer)", err, errlen};
  const IdxType *t;
  if (err && errlen) err[0] = '\0';
  return idx_decode(&c, buf, buf ? len : 0, 0, out, &t, "file");
}

/* Reads an IDX file; *type gets its element type. */
static RtStatus idx_load(const char *path, int unit, RtTensor *out, const IdxType **type, char *err,
                         size_t errlen) {
  const RtCtx c = {path, err, errlen};
  void *buf;
  size_t len;
  RtStatus st;
  memset(out, 0, sizeof *out);
  if (err && errlen) err[0] = '\0';
  if ((st = rt_read_file(path, &buf, &len, err, errlen))) return st;
  st = idx_decode(&c, buf, len, unit, out, type, "file");
  free(buf);
  return st;
}

RtStatus rt_idx_read(const char *path, RtTensor *out, char *err, size_t errlen) {
  const IdxType *t;
  return idx_load(path, 0, out, &t, err, errlen);
}

/* ---- datasets ---- */

/* dir/name into buf; false if it does not fit. */
static bool join(char *buf, size_t n, const char *dir, const char *name) {
  size_t k = strlen(dir);
  int w = snprintf(buf, n, "%s%s%s", dir, k && dir[k - 1] == '/' ? "" : "/", name);
  return w >= 0 && (size_t)w < n;
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && !S_ISDIR(st.st_mode);
}

/* Finds dir/base or dir/base.gz into path. */
static bool find_idx(char *path, size_t n, const char *dir, const char *base) {
  char name[64];
  snprintf(name, sizeof name, "%s", base);
  if (join(path, n, dir, name) && is_file(path)) return true;
  snprintf(name, sizeof name, "%s.gz", base);
  return join(path, n, dir, name) && is_file(path);
}

/* Checks the loaded examples (f32, or i32 token ids with RT_DATA_IDS) and
 * labels (unless ypath is NULL) and sets d->n; paths name the files in
 * messages. */
static RtStatus check_pair(RtDataset *d, unsigned want, const char *xpath, const char *ypath, char *err,
                           size_t errlen) {
  const RtCtx cx = {xpath, err, errlen}, cy = {ypath, err, errlen};
  char tb[64];
  if (!(want & RT_DATA_IDS) && d->x.dtype != RT_F32)
    return rt_fail(
        &cx, RT_ERR_DTYPE,
        "examples are integers (%s after loading); save them as floats, e.g. x.astype('float32') / 255",
        rt_tensor_type_str(&d->x, tb, sizeof tb));
  if ((want & RT_DATA_IDS) && d->x.dtype != RT_I32)
    return rt_fail(&cx, RT_ERR_DTYPE,
                   "examples are floats (%s); the model reads integer ids (tokens), e.g. "
                   "x.astype('int32')",
                   rt_tensor_type_str(&d->x, tb, sizeof tb));
  if (d->x.rank < 1)
    return rt_fail(&cx, RT_ERR_SHAPE,
                   "examples are a scalar; expected shape [n, ...] with one row per example");
  d->n = d->x.dim[0];
  if (!ypath) return RT_OK;
  if (!(want & RT_DATA_TARGETS) && d->y.dtype != RT_I32)
    return rt_fail(&cy, RT_ERR_DTYPE, "labels are not integers (%s); expected integer class indices",
                   rt_tensor_type_str(&d->y, tb, sizeof tb));
  if ((want & RT_DATA_TARGETS) && d->y.dtype != RT_F32)
    return rt_fail(&cy, RT_ERR_DTYPE, "labels are integers (%s); the model reads f32 targets, e.g. "
                   "y.astype('float32')", rt_tensor_type_str(&d->y, tb, sizeof tb));
  if (d->y.rank < 1)
    return rt_fail(&cy, RT_ERR_SHAPE, "labels are a scalar; expected shape [n] or [n, ...] (one row "
                   "of labels per example)");
  if (d->x.dim[0] != d->y.dim[0])
    return rt_fail(&cy, RT_ERR_SHAPE, "%lld labels, but %s has %lld examples (the counts must match)",
                   (long long)d->y.dim[0], xpath, (long long)d->x.dim[0]);
  d->n = d->x.dim[0];
  return RT_OK;
}

RtStatus rt_dataset_read(const char *dir, const char *split, unsigned want, RtDataset *out, char *err,
                         size_t errlen) {
  const RtCtx c = {dir, err, errlen};
  bool labels = want & (RT_DATA_LABELS | RT_DATA_TARGETS), ids = want & RT_DATA_IDS;
  char xpath[4096], ypath[4096], base[64];
  const char *prefix;
  const IdxType *t = NULL;
  bool idx;
  RtStatus st;
  memset(out, 0, sizeof *out);
  if (err && errlen) err[0] = '\0';
  if (!split || (strcmp(split, "train") && strcmp(split, "test")))
    return rt_fail(&c, RT_ERR_NOTFOUND, "unknown split '%s' (expected 'train' or 'test')",
                   split ? split : "");
  prefix = split[1] == 'r' ? "train" : "t10k";
  if (strlen(dir) > sizeof xpath - 64) return rt_fail(&c, RT_ERR_IO, "directory path is too long");
  snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
  if ((idx = find_idx(xpath, sizeof xpath, dir, base))) {
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if (labels && !find_idx(ypath, sizeof ypath, dir, base))
      return rt_fail(&c, RT_ERR_NOTFOUND, "found %s but not its labels (%s or %s.gz)", xpath, base, base);
    if ((st = idx_load(xpath, !ids, &out->x, &t, err, errlen))) return st;
    if (t->kind != 'u' && t->kind != 'f' && !ids) {
      rt_dataset_free(out);
      return rt_fail(&(RtCtx){xpath, err, errlen}, RT_ERR_DTYPE,
                     "images are %s; expected u8 (scaled to [0, 1]) or floats", t->label);
    }
  } else {
    char tried[160];
    if (labels)
      snprintf(tried, sizeof tried,
               "%s-images-idx3-ubyte[.gz] with %s-labels-idx1-ubyte[.gz], and %s_x.npy with %s_y.npy",
               prefix, prefix, split, split);
    else
      snprintf(tried, sizeof tried, "%s-images-idx3-ubyte[.gz] and %s_x.npy", prefix, split);
    snprintf(base, sizeof base, "%s_x.npy", split);
    join(xpath, sizeof xpath, dir, base);
    snprintf(base, sizeof base, "%s_y.npy", split);
    join(ypath, sizeof ypath, dir, base);
    if (!is_file(xpath)) return rt_fail(&c, RT_ERR_NOTFOUND, "no '%s' split found (tried %s)", split, tried);
    if (labels && !is_file(ypath))
      return rt_fail(&c, RT_ERR_NOTFOUND, "found %s but not its labels %s", xpath, ypath);
    if ((st = rt_npy_read(xpath, &out->x, err, errlen))) return st;
  }
  st = !labels ? RT_OK
       : idx   ? idx_load(ypath, 0, &out->y, &t, err, errlen)
               : rt_npy_read(ypath, &out->y, err, errlen);
  if (!st) st = check_pair(out, want, xpath, labels ? ypath : NULL, err, errlen);
  if (st) rt_dataset_free(out);
  return st;
}

RtStatus rt_dataset_load(const char *dir, const char *split, RtDataset *out, char *err, size_t errlen) {
  return rt_dataset_read(dir, split, RT_DATA_LABELS, out, err, errlen);
}

RtStatus rt_dataset_check_range(const RtDataset *d, bool ids, int64_t limit, const char *dir, char *err,
                                size_t errlen) {
  const RtTensor *v = ids ? &d->x : &d->y;
  int64_t n = rt_numel(v), per = d->n ? n / d->n : 1;
  for (int64_t i = 0; i < n; i++) {
    int32_t k = ((const int32_t *)v->data)[i];
    if (k < 0 || k >= limit)
      return rt_fail(&(RtCtx){dir, err, errlen}, RT_ERR_SHAPE, "%s %d of example %lld is outside 0 .. %lld",
                     ids ? "id" : "label", k, (long long)(i / per), (long long)limit - 1);
  }
  return RT_OK;
}

void rt_dataset_free(RtDataset *d) {
  if (!d) return;
  free(d->x.data);
  free(d->y.data);
  memset(d, 0, sizeof *d);
}

int64_t rt_dataset_example_size(const RtDataset *d) {
  int64_t k = 1;
  if (!d || d->x.rank < 1) return 0;
  for (int i = 1; i < d->x.rank; i++) k *= d->x.dim[i];
  return k;
}

int64_t rt_dataset_label_size(const RtDataset *d) {
  int64_t k = 1;
  if (!d || d->y.rank < 1) return 0;
  for (int i = 1; i < d->y.rank; i++) k *= d->y.dim[i];
  return k;
}

/* Examples and labels are 4-byte elements (f32 or i32). */
void rt_dataset_gather(const RtDataset *d, int64_t first, int64_t count, void *x, void *y) {
  int64_t per = rt_dataset_example_size(d), per_y = rt_dataset_label_size(d);
  if (first < 0 || count <= 0 || first > d->n || count > d->n - first) return;
  if (x) memcpy(x, (const char *)d->x.data + first * per * 4, (size_t)(count * per) * 4);
  if (y) memcpy(y, (const char *)d->y.data + first * per_y * 4, (size_t)(count * per_y) * 4);
}

/* ---- batching ---- */

uint64_t rt_mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9u;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebu;
  z ^= z >> 31;
  return z;
}

RtStatus rt_batcher_init(RtBatcher *b, int64_t n, int64_t batch, uint64_t seed, bool shuffle, int64_t limit) {
  memset(b, 0, sizeof *b);
  if (n < 0) n = 0;
  if (limit > 0 && limit < n) n = limit;
  b->n = n;
  b->batch = batch > 0 ? batch : 0;
  b->seed = seed;
  b->shuffle = shuffle;
  if (shuffle && n > 0) {
    if ((uint64_t)n > SIZE_MAX / sizeof *b->order || !(b->order = malloc((size_t)n * sizeof *b->order))) {
      b->n = 0;
      return RT_ERR_ALLOC;
    }
    rt_batcher_epoch(b, 0);
  }
  return RT_OK;
}

void rt_batcher_free(RtBatcher *b) {
  if (!b) return;
  free(b->order);
  memset(b, 0, sizeof *b);
}

int64_t rt_batcher_steps(const RtBatcher *b) { return b->batch > 0 ? b->n / b->batch : 0; }

void rt_batcher_epoch(RtBatcher *b, int epoch) {
  uint64_t key;
  if (!b->order) return;
  for (int64_t i = 0; i < b->n; i++) b->order[i] = i;
  key = rt_mix64(rt_mix64(b->seed) + (uint64_t)(int64_t)epoch * GOLDEN);
  for (int64_t i = b->n - 1; i > 0; i--) {
    uint64_t r = rt_mix64(key + (uint64_t)i * GOLDEN);
    int64_t j = (int64_t)(r % (uint64_t)(i + 1)), tmp = b->order[i];
    b->order[i] = b->order[j];
    b->order[j] = tmp;
  }
}

int64_t rt_batcher_index(const RtBatcher *b, int64_t i) { return b->order ? b->order[i] : i; }

void rt_batcher_gather(const RtBatcher *b, const RtDataset *d, int64_t step, void *x, void *y) {
  int64_t per = rt_dataset_example_size(d), per_y = rt_dataset_label_size(d);
  const char *xs = d->x.data, *ys = d->y.data;
  if (step < 0 || step >= rt_batcher_steps(b) || b->n > d->n) return;
  for (int64_t k = 0; k < b->batch; k++) {
    int64_t i = rt_batcher_index(b, step * b->batch + k);
    if (x) memcpy((char *)x + k * per * 4, xs + i * per * 4, (size_t)per * 4);
    if (y) memcpy((char *)y + k * per_y * 4, ys + i * per_y * 4, (size_t)per_y * 4);
  }
}
