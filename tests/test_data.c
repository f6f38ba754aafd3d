/*
 * test_data.c: CMocka tests for runtime/inflate.c (gzip), runtime/data.c
 * (IDX files, datasets, batching) and runtime/progress.c.
 *
 * To add a case: a gzip file made by Python goes in
 * tests/data/make_idx_fixtures.py (as gzip/NAME.gz with NAME.out; rerun it
 * with /usr/bin/python3) and its NAME in GZ below, which puts it through
 * decoding, every truncation and byte flips; a hand-made deflate stream
 * that must fail is a program in BAD_STREAMS (the notation is explained
 * above it); a malformed IDX header goes in BAD_IDX; an IDX file of another
 * element type in IDX_TYPES; anything else is a new static test function
 * listed in main().
 */
#include <regex.h>

#include "file_helpers.h"
#include "rt_data.h"

#define IDX DATA "idx/"
#define FASHION "/usr/share/datasets/fashion-mnist"

static const char *const GZ[] = {"stored", "fields", "multi", "dynamic", "fixed", "empty", "skewed"};

static void *slurp(const char *path, size_t *len) {
  void *buf;
  char err[512];
  if (rt_read_file(path, &buf, len, err, sizeof err)) fail_msg("%s", err);
  return buf;
}

/* A call must have failed with code and a message "NAME: ...sub...". */
static void expect(RtStatus s, const char *err, RtStatus code, const char *name, const char *sub) {
  if (s != code || !strstr(err, sub) || strncmp(err, name, strlen(name)) != 0)
    fail_msg("got status %d \"%s\"; wanted %d with \"%s\"", s, err, code, sub);
}

/* Gunzipping buf must fail that way, leaving no output. */
static void gz_fail(const void *buf, size_t len, RtStatus code, const char *sub) {
  void *out = (void *)1;
  size_t n = 1;
  char err[512] = "";
  expect(rt_gunzip(buf, len, "x.gz", &out, &n, err, sizeof err), err, code, "x.gz: ", sub);
  assert_true(out == NULL && n == 0);
}

/* ---- gzip fixtures made by Python ---- */

static const unsigned char *g_want; /* GZ[i]'s expected output, for check_damaged */
static size_t g_want_len;

/* Returns fixture GZ[i] and loads its expected output into g_want. */
static unsigned char *load_gz(size_t i, size_t *len) {
  char path[512];
  snprintf(path, sizeof path, IDX "gzip/%s.out", GZ[i]);
  g_want = slurp(path, &g_want_len);
  snprintf(path, sizeof path, IDX "gzip/%s.gz", GZ[i]);
  return slurp(path, len);
}

/* A damaged file must fail cleanly, or give exactly (a prefix of) the data:
 * a flip may hit a name, a time or unused padding bits, and a prefix may
 * end where a member does. */
static void check_damaged(const void *buf, size_t len) {
  void *out;
  size_t n;
  char err[512] = "";
  RtStatus s = rt_gunzip(buf, len, "d.gz", &out, &n, err, sizeof err);
  if (s == RT_OK && (n > g_want_len || memcmp(out, g_want, n) != 0)) fail_msg("damage decoded to other data");
  if (s != RT_OK && (s != RT_ERR_FORMAT || out || strncmp(err, "d.gz: ", 6) != 0))
    fail_msg("bad failure: status %d, \"%s\"", s, err);
  free(out);
}

/* Each fixture decodes (also with zero padding after it), and fails
 * cleanly when truncated anywhere (in a buffer of exactly that size, so
 * ASan sees over-reads), with any byte flipped three ways, or with a bad
 * CRC-32 or ISIZE. */
static void test_gzip_fixtures(void **state) {
  static const unsigned char masks[] = {0xff, 0x01, 0x80};
  (void)state;
  for (size_t i = 0; i < sizeof GZ / sizeof GZ[0]; i++) {
    char err[512];
    size_t len, n;
    void *out;
    unsigned char *gz = load_gz(i, &len), *copy;
    assert_true(rt_is_gzip(gz, len));
    if (rt_gunzip(gz, len, GZ[i], &out, &n, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(n, g_want_len);
    assert_memory_equal(out, g_want, n);
    free(out);
    for (size_t k = 0; k < len; k++) {
      memcpy(copy = malloc(k + 1), gz, k);
      check_damaged(copy, k);
      free(copy);
    }
    for (size_t k = 0; k < len * sizeof masks; k++) {
      memcpy(copy = malloc(len), gz, len);
      copy[k / sizeof masks] ^= masks[k % sizeof masks];
      check_damaged(copy, len);
      free(copy);
    }
    gz[len - 8] ^= 1; /* the CRC-32 */
    gz_fail(gz, len, RT_ERR_FORMAT, "CRC-32 mismatch");
    gz[len - 8] ^= 1;
    gz[len - 4] ^= 1; /* ISIZE */
    gz_fail(gz, len, RT_ERR_FORMAT, "size mismatch");
    gz[len - 4] ^= 1;
    gz = realloc(gz, len + 3); /* zero padding after the last member */
    memset(gz + len, 0, 3);
    assert_true(rt_gunzip(gz, len + 3, GZ[i], &out, &n, err, sizeof err) == RT_OK && n == g_want_len);
    free(out);
    free(gz);
    free((void *)g_want);
  }
  assert_false(rt_is_gzip("\x1f", 1));
  assert_false(rt_is_gzip(NULL, 0));
}

static void test_gzip_headers(void **state) {
  size_t len;
  unsigned char *gz = slurp(IDX "gzip/fields.gz", &len);
  (void)state;
  gz_fail("", 0, RT_ERR_FORMAT, "too short for a gzip file");
  gz_fail("PK\x03\x04", 4, RT_ERR_FORMAT, "not a gzip file");
  gz_fail(gz, 9, RT_ERR_FORMAT, "truncated gzip data");
  gz[2] = 7;
  gz_fail(gz, len, RT_ERR_FORMAT, "unsupported compression method 7");
  gz[2] = 8, gz[3] |= 0x20;
  gz_fail(gz, len, RT_ERR_FORMAT, "reserved header flags 0x20");
  gz[3] &= 0x1f;
  gz[len - 40] ^= 1; /* inside the compressed data: a bad CRC or a bad stream */
  check_damaged(gz, len);
  gz[len - 40] ^= 1;
  gz[20] ^= 1; /* the file name: FHCRC catches it */
  gz_fail(gz, len, RT_ERR_FORMAT, "header CRC mismatch");
  gz[20] ^= 1;
  gz = realloc(gz, len + 4);
  memcpy(gz + len, "junk", 4);
  gz_fail(gz, len + 4, RT_ERR_FORMAT, "unexpected data at byte 96 after a gzip member");
  free(gz);
}

static void test_gunzip_limit(void **state) {
  size_t len, n;
  void *gz = slurp(IDX "gzip/dynamic.gz", &len), *out;
  char err[512];
  (void)state;
  assert_int_equal(rt_gunzip_limit(gz, len, "d.gz", 1000, &out, &n, err, sizeof err), RT_ERR_SHAPE);
  assert_non_null(strstr(err, "d.gz: decompressed data exceeds the 1000-byte limit"));
  assert_null(out);
  assert_true(rt_gunzip_limit(gz, len, "d.gz", 20961, &out, &n, err, sizeof err) == RT_OK && n == 20961);
  free(out);
  assert_int_equal(rt_gunzip_limit(gz, len, "d.gz", 20960, &out, &n, err, sizeof err), RT_ERR_SHAPE);
  assert_int_equal(RT_GUNZIP_MAX, (size_t)2 << 30);
  free(gz);
}

/* ---- hand-made deflate streams ----
 * A stream is a program of ints: HDR(t) starts a final block of type t,
 * BITS(v, n) writes n bits of v (LSB first), FIX(sym) a fixed-code symbol,
 * CODE(c, n) an n-bit Huffman code (MSB first), and DYN(hlit, hdist) a
 * dynamic block header whose code-length code gives 1 and 18 two bits and
 * 0, 2, 16 and 17 three, followed by the code lengths as code-length
 * symbols (16, 17 and 18 each followed by its extra-bits value). */
enum { END = -1, OP_HDR = -2, OP_BITS = -3, OP_FIX = -4, OP_CODE = -5, OP_DYN = -6 };
#define HDR(t) OP_HDR, t
#define BITS(v, n) OP_BITS, v, n
#define FIX(sym) OP_FIX, sym
#define CODE(c, n) OP_CODE, c, n
#define DYN(hlit, hdist) OP_DYN, hlit, hdist
#define Z138 18, 127 /* 138 zero lengths */
#define P(...) ((const int[]){__VA_ARGS__, END})

typedef struct Bw {
  unsigned char b[512];
  size_t n;
  int bit;
} Bw;

static void put(Bw *w, int v, int nbits) {
  for (int i = 0; i < nbits; i++) {
    if (w->bit == 0) w->b[w->n++] = 0;
    w->b[w->n - 1] |= (unsigned char)(((unsigned)v >> i & 1u) << w->bit);
    w->bit = (w->bit + 1) & 7;
  }
}

static void put_code(Bw *w, int code, int len) {
  for (int i = len - 1; i >= 0; i--) put(w, code >> i & 1, 1);
}

static void put_fixed(Bw *w, int sym) { /* RFC 1951 section 3.2.6 */
  static const int first[] = {0, 144, 256, 280}, base[] = {0x30, 0x190, 0, 0xc0}, len[] = {8, 9, 7, 8};
  int r = sym < 144 ? 0 : sym < 256 ? 1 : sym < 280 ? 2 : 3;
  put_code(w, base[r] + sym - first[r], len[r]);
}

static void emit(Bw *w, const int *p) {
  static const int order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  static const int code[19] = {[1] = 0, [18] = 1, [0] = 4, [2] = 5, [16] = 6, [17] = 7};
  static const int clen[19] = {[1] = 2, [18] = 2, [0] = 3, [2] = 3, [16] = 3, [17] = 3};
  memset(w, 0, sizeof *w);
  while (*p != END) {
    switch (*p++) {
    case OP_HDR: put(w, 1, 1), put(w, *p++, 2); break;
    case OP_BITS: put(w, p[0], p[1]), p += 2; break;
    case OP_FIX: put_fixed(w, *p++); break;
    case OP_CODE: put_code(w, p[0], p[1]), p += 2; break;
    default: /* OP_DYN */
      put(w, 1, 1), put(w, 2, 2), put(w, p[0] - 257, 5), put(w, p[1] - 1, 5), put(w, 14, 4);
      for (int i = 0; i < 18; i++) put(w, clen[order[i]], 3);
      for (p += 2; *p >= 0; p++) {
        put_code(w, code[*p], clen[*p]);
        if (*p >= 16) put(w, p[1], *p == 16 ? 2 : *p == 17 ? 3 : 7), p++;
      }
    }
  }
}

/* Writes a gzip member holding program p's stream, with a trailer for the
 * k bytes of want (its CRC-32 computed a bit at a time, unlike inflate.c's
 * table); returns its size. */
static size_t wrap(const int *p, const char *want, size_t k, unsigned char *out) {
  Bw w;
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < 8 * k; i++)
    crc = crc >> 1 ^ (0xedb88320u & (0u - ((crc ^ (unsigned)((unsigned char)want[i / 8] >> i % 8)) & 1u)));
  emit(&w, p);
  memcpy(out, "\x1f\x8b\x08\0\0\0\0\0\0\x03", 10);
  memcpy(out + 10, w.b, w.n);
  for (size_t i = 0; i < 4; i++)
    out[10 + w.n + i] = (unsigned char)(~crc >> (8 * i)), out[14 + w.n + i] = (unsigned char)(k >> (8 * i));
  return w.n + 18;
}

/* 19 code-length code lengths of 1 (3 bits each) */
#define ONES19 BITS(01111111, 24), BITS(01111111, 24), BITS(0111, 9)
/* Dynamic code lengths: 0 x 97, then symbol 97 ('a'), zeros, symbol 256
 * (end-of-block), then the distance code lengths. */
static const struct {
  const char *sub;
  const int *prog;
} BAD_STREAMS[] = {
    {"invalid deflate block type 3", P(HDR(3))},
    {"length 5 does not match its complement", P(HDR(0), BITS(0, 5), BITS(5, 16), BITS(5, 16))},
    {"distance 2 too far back at byte 12 (only 1 byte written)", P(HDR(1), FIX('a'), FIX(257), CODE(1, 5))},
    {"invalid length symbol 286", P(HDR(1), FIX(286))},
    {"invalid distance symbol 30", P(HDR(1), FIX('a'), FIX(257), CODE(30, 5))},
    /* no end-of-block: the trailer's zero bits decode as one, leaving 6 bytes */
    {"truncated gzip data: the input ends before the gzip trailer", P(HDR(1), FIX('a'), FIX('b'))},
    {"287 literal/length and 1 distance codes (at most 286 and 30)", P(HDR(2), BITS(30, 5), BITS(0, 9))},
    {"the code-length code is over-subscribed", P(HDR(2), BITS(0, 10), BITS(15, 4), ONES19)},
    {"the code-length code is incomplete", P(HDR(2), BITS(0, 14), BITS(1, 3), BITS(0, 9))},
    {"a repeat code with no previous length", P(DYN(257, 1), 16, 0)},
    {"repeats run past the declared codes", P(DYN(257, 1), Z138, Z138)},
    {"no code for end-of-block", P(DYN(257, 1), 18, 86, 1, 1, Z138, 18, 8, 0, 1)},
    {"the literal/length code is over-subscribed", P(DYN(257, 1), 18, 86, 1, 1, Z138, 18, 8, 1, 1)},
    {"the literal/length code is incomplete", P(DYN(257, 1), 18, 86, 2, Z138, 18, 9, 2, 1)},
    {"the distance code is incomplete", P(DYN(257, 2), 18, 86, 1, Z138, 18, 9, 1, 2, 2)},
};

static void test_deflate_crafted(void **state) {
  /* Valid: fixed codes with overlapping copies (lengths 3 and 258 at
   * distance 1); a dynamic block with 'a' and end-of-block at 1 bit and a
   * single distance code (incomplete, allowed when it is the only one). */
  const int *fixed = P(HDR(1), FIX('a'), FIX(257), CODE(0, 5), FIX(285), CODE(0, 5), FIX(256));
  const int *dyn = P(DYN(257, 1), 18, 86, 1, Z138, 18, 9, 1, 1, CODE(0, 1), CODE(0, 1), CODE(1, 1));
  unsigned char gz[600];
  char err[512], a262[262];
  size_t n, n1;
  void *out;
  (void)state;
  for (size_t i = 0; i < sizeof BAD_STREAMS / sizeof BAD_STREAMS[0]; i++)
    gz_fail(gz, wrap(BAD_STREAMS[i].prog, "", 0, gz), RT_ERR_FORMAT, BAD_STREAMS[i].sub);
  memset(a262, 'a', 262);
  n = wrap(fixed, a262, 262, gz);
  assert_int_equal(rt_gunzip(gz, n, "x.gz", &out, &n1, err, sizeof err), RT_OK);
  assert_int_equal(n1, 262);
  assert_memory_equal(out, a262, 262);
  free(out);
  n = wrap(dyn, "aa", 2, gz);
  assert_int_equal(rt_gunzip(gz, n, "x.gz", &out, &n1, err, sizeof err), RT_OK);
  assert_int_equal(n1, 2);
  assert_memory_equal(out, "aa", 2);
  free(out);
  /* A second member cannot copy from the first one's output. */
  n1 = wrap(P(HDR(1), FIX(257), CODE(0, 5)), "", 0, gz + n);
  gz_fail(gz, n + n1, RT_ERR_FORMAT, "distance 1 too far back");
}

/* ---- IDX ---- */

static void idx_fail(const void *buf, size_t len, RtStatus code, const char *sub) {
  RtTensor t;
  char err[512] = "";
  expect(rt_idx_parse(buf, len, "x.idx", &t, err, sizeof err), err, code, "x.idx: ", sub);
  assert_null(t.data);
}

typedef struct BadIdx {
  const char *bytes;
  size_t len;
  RtStatus code;
  const char *sub;
} BadIdx;

#define B(s) s, sizeof s - 1
static const BadIdx BAD_IDX[] = {
    {B("\0\0\x08"), RT_ERR_FORMAT, "3 bytes, too short for an IDX file"},
    {B("\x01\0\x08\x01\0\0\0\0"), RT_ERR_FORMAT, "not an IDX file (it starts 0x01 0x00"},
    {B("\0\0\x0a\x01\0\0\0\0"), RT_ERR_DTYPE, "unknown IDX element type 0x0a"},
    {B("\0\0\x08\0"), RT_ERR_SHAPE, "has 0 dimensions"},
    {B("\0\0\x08\x09"), RT_ERR_SHAPE, "has 9 dimensions"},
    {B("\0\0\x08\x02\0\0\0\x01\0\0"), RT_ERR_FORMAT, "ends inside the dimensions"},
    {B("\0\0\x08\x01\0\0\0\x03\x01\x02"), RT_ERR_FORMAT,
     "data is 2 bytes but 3 u8 elements need 3 (truncated"},
    {B("\0\0\x0B\x01\0\0\0\x01\x01\x02\x03"), RT_ERR_FORMAT, "need 2 (extra bytes at the end)"},
    {B("\0\0\x0E\x04\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), RT_ERR_FORMAT,
     "too many elements"},
    {B("\0\0\x0E\x01\0\0\0\x01\x7f\xe0\0\0\0\0\0\0"), RT_ERR_DTYPE, "does not fit in f32"},
    {B("\x1f\x8b\x08\0\0\0\0\0\0\x03\x03\0\0\0\0\0\0\0\0\0"), RT_ERR_FORMAT,
     "decompressed data is 0 bytes, too short for an IDX file"},
};

static void read_idx(const char *path, RtTensor *t) {
  char err[512];
  if (rt_idx_read(path, t, err, sizeof err)) fail_msg("%s", err);
}

static void check_idx_prefix(const void *buf, size_t len) {
  RtTensor t;
  char err[512] = "";
  assert_int_not_equal(rt_idx_parse(buf, len, "p.idx", &t, err, sizeof err), RT_OK);
  assert_null(t.data);
  assert_int_equal(strncmp(err, "p.idx: ", 7), 0);
}

/* IDX files of each element type and the values they hold. */
static const struct {
  const char *file;
  RtDType dtype;
  int n;
  double v[4];
} IDX_TYPES[] = {
    {"i1.idx", RT_I32, 3, {-128, 127, -1}},
    {"i2.idx", RT_I32, 4, {-300, 300, -32768, 32767}}, /* shape [2, 2] */
    {"i4.idx", RT_I32, 3, {INT32_MIN, INT32_MAX, 5}},
    {"f4.idx", RT_F32, 2, {1.5, -0.25}},
    {"f8.idx.gz", RT_F32, 3, {(float)1e-3, -2.5, 3}}, /* shape [1, 3] */
};

static void test_idx(void **state) {
  RtTensor a, b;
  char path[512];
  size_t len;
  (void)state;
  read_idx(IDX "plain/train-images-idx3-ubyte", &a);
  read_idx(IDX "gz/train-images-idx3-ubyte.gz", &b);
  assert_true(a.dtype == RT_I32 && a.rank == 3 && a.dim[0] == 5 && a.dim[1] == 3 && a.dim[2] == 2);
  assert_memory_equal(a.data, b.data, 30 * 4);
  assert_true(((int32_t *)a.data)[29] == 255 && ((int32_t *)a.data)[1] == 37);
  free(a.data), free(b.data);
  for (size_t i = 0; i < sizeof IDX_TYPES / sizeof IDX_TYPES[0]; i++) {
    snprintf(path, sizeof path, IDX "types/%s", IDX_TYPES[i].file);
    read_idx(path, &a);
    assert_int_equal(a.dtype, IDX_TYPES[i].dtype);
    assert_int_equal(rt_numel(&a), IDX_TYPES[i].n);
    for (int k = 0; k < IDX_TYPES[i].n; k++)
      assert_true(a.dtype == RT_F32 ? ((float *)a.data)[k] == IDX_TYPES[i].v[k]
                                    : ((int32_t *)a.data)[k] == IDX_TYPES[i].v[k]);
    free(a.data);
  }
  for (size_t i = 0; i < sizeof BAD_IDX / sizeof BAD_IDX[0]; i++)
    idx_fail(BAD_IDX[i].bytes, BAD_IDX[i].len, BAD_IDX[i].code, BAD_IDX[i].sub);
  free(each_prefix(IDX "plain/train-images-idx3-ubyte", &len, check_idx_prefix));
  free(each_prefix(IDX "gz/train-images-idx3-ubyte.gz", &len, check_idx_prefix));
}

/* ---- datasets ---- */

static void load_ok(const char *dir, const char *split, RtDataset *d) {
  char err[512];
  if (rt_dataset_load(dir, split, d, err, sizeof err)) fail_msg("%s", err);
}

static void load_fail(const char *dir, const char *split, RtStatus code, const char *sub) {
  RtDataset d;
  char err[1024] = "";
  expect(rt_dataset_load(dir, split, &d, err, sizeof err), err, code, "", sub);
  assert_true(d.x.data == NULL && d.y.data == NULL);
}

static void test_dataset(void **state) {
  static const char *const dirs[] = {IDX "plain", IDX "gz", IDX "npy"};
  static const int32_t labels[] = {9, 0, 3, 7, 1};
  RtTensor raw;
  (void)state;
  read_idx(IDX "plain/train-images-idx3-ubyte", &raw);
  for (int k = 0; k < 3; k++) {
    RtDataset d;
    load_ok(dirs[k], "train", &d);
    assert_int_equal(d.n, 5);
    assert_true(d.x.dtype == RT_F32 && d.y.dtype == RT_I32 && d.y.rank == 1);
    assert_int_equal(rt_dataset_example_size(&d), 6);
    for (int i = 0; i < 30; i++)
      assert_float_equal(((float *)d.x.data)[i], ((int32_t *)raw.data)[i] / 255.0f, 1e-7);
    assert_memory_equal(d.y.data, labels, sizeof labels);
    rt_dataset_free(&d);
    if (k == 0) continue;
    load_ok(dirs[k], "test", &d); /* t10k-*.gz, or test_*.npy with y [3, 1] */
    assert_int_equal(d.n, k == 1 ? 2 : 3);
    assert_memory_equal(d.y.data, labels, (size_t)d.n * 4);
    rt_dataset_free(&d);
  }
  free(raw.data);
  load_fail(
      IDX "plain", "test", RT_ERR_NOTFOUND,
      "plain: no 'test' split found (tried t10k-images-idx3-ubyte[.gz] with t10k-labels-idx1-ubyte[.gz], "
      "and test_x.npy with test_y.npy)");
  load_fail(IDX "plain", "valid", RT_ERR_NOTFOUND, "unknown split 'valid'");
  load_fail(IDX "mismatch", "train", RT_ERR_SHAPE, "labels-idx1-ubyte: 4 labels, but");
  load_fail(IDX "floatlabels", "train", RT_ERR_DTYPE, "labels are not integers (f32[5])");
  load_fail(IDX "types", "train", RT_ERR_NOTFOUND, "no 'train' split");
  load_fail(
      IDX "nolabels", "train", RT_ERR_NOTFOUND,
      "train-images-idx3-ubyte but not its labels (train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz)");
  load_fail(IDX "intx", "train", RT_ERR_NOTFOUND, "train_x.npy but not its labels");
  load_fail(IDX "intx", "test", RT_ERR_DTYPE, "test_x.npy: examples are integers (i32[2, 2] after loading)");
  /* the examples alone (a model without labels): the labels' files are
   * neither needed nor read, the examples' checks stay */
  static const char *const alone[] = {IDX "plain", IDX "nolabels", IDX "intx"};
  for (int k = 0; k < 3; k++) {
    RtDataset d;
    char err[512];
    if (rt_dataset_read(alone[k], "train", false, &d, err, sizeof err)) fail_msg("%s", err);
    assert_true(d.n == d.x.dim[0] && d.n > 0 && d.x.dtype == RT_F32 && d.y.data == NULL);
    rt_dataset_free(&d);
  }
  RtDataset d;
  char err[512] = "";
  expect(rt_dataset_read(IDX "intx", "test", false, &d, err, sizeof err), err, RT_ERR_DTYPE, "",
         "test_x.npy: examples are integers");
  expect(rt_dataset_read(IDX "plain", "test", false, &d, err, sizeof err), err, RT_ERR_NOTFOUND,
         "", "no 'test' split found (tried t10k-images-idx3-ubyte[.gz] and test_x.npy)");
}

static int ids_dir(void **state) { return make_tmp_dir(state, "/tmp/kiln_ids.XXXXXX"); }

/* x and y of a split as .npy files in dir. */
static void save_split(const char *dir, const char *split, const RtTensor *x, const RtTensor *y) {
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/%s_x.npy", dir, split);
  if (rt_npy_write(path, x, err, sizeof err)) fail_msg("%s", err);
  snprintf(path, sizeof path, "%s/%s_y.npy", dir, split);
  if (rt_npy_write(path, y, err, sizeof err)) fail_msg("%s", err);
}

/* Token ids (RT_DATA_IDS): integer examples load as i32, IDX images
 * unscaled, floats are refused; a row of labels per example ([n, 3]) is
 * gathered row by row, as the batcher orders the examples. */
static void test_dataset_ids(void **state) {
  const char *dir = *state;
  int32_t xs[4 * 2], ys[4 * 3], x[2 * 2], y[2 * 3];
  for (int i = 0; i < 8; i++) xs[i] = 100 + i;
  for (int i = 0; i < 12; i++) ys[i] = i;
  RtTensor tx = {RT_I32, 2, {4, 2}, xs}, ty = {RT_I32, 2, {4, 3}, ys};
  save_split(dir, "train", &tx, &ty);
  RtDataset d;
  char err[512] = "";
  if (rt_dataset_read(dir, "train", RT_DATA_LABELS | RT_DATA_IDS, &d, err, sizeof err))
    fail_msg("%s", err);
  assert_true(d.n == 4 && d.x.dtype == RT_I32 && rt_dataset_example_size(&d) == 2);
  assert_int_equal(rt_dataset_label_size(&d), 3);
  RtBatcher b;
  assert_int_equal(rt_batcher_init(&b, d.n, 2, 5, true, 0), RT_OK);
  for (int64_t s = 0; s < 2; s++) {
    rt_batcher_gather(&b, &d, s, x, y);
    for (int k = 0; k < 2; k++) {
      int64_t i = rt_batcher_index(&b, s * 2 + k);
      assert_memory_equal(x + 2 * k, xs + 2 * i, 2 * sizeof(int32_t));
      assert_memory_equal(y + 3 * k, ys + 3 * i, 3 * sizeof(int32_t));
    }
  }
  rt_batcher_free(&b);
  rt_dataset_gather(&d, 2, 2, x, y);
  assert_memory_equal(x, xs + 4, sizeof x);
  assert_memory_equal(y, ys + 6, sizeof y);
  rt_dataset_free(&d);
  RtTensor raw; /* IDX u8 images as ids: their values, not scaled */
  read_idx(IDX "plain/train-images-idx3-ubyte", &raw);
  if (rt_dataset_read(IDX "plain", "train", RT_DATA_IDS, &d, err, sizeof err)) fail_msg("%s", err);
  assert_true(d.x.dtype == RT_I32 && d.n == 5);
  assert_memory_equal(d.x.data, raw.data, 30 * sizeof(int32_t));
  free(raw.data);
  rt_dataset_free(&d);
  expect(rt_dataset_read(IDX "npy", "train", RT_DATA_IDS, &d, err, sizeof err), err, RT_ERR_DTYPE,
         "", "train_x.npy: examples are floats (f32[5, 6]); the model reads integer ids");
  float fs[4 * 3]; /* f32 targets (RT_DATA_TARGETS), not integer labels */
  for (int i = 0; i < 12; i++) fs[i] = 0.5f * (float)i;
  RtTensor tf = {RT_F32, 2, {4, 3}, fs};
  save_split(dir, "test", &tx, &tf);
  if (rt_dataset_read(dir, "test", RT_DATA_TARGETS | RT_DATA_IDS, &d, err, sizeof err))
    fail_msg("%s", err);
  assert_true(d.y.dtype == RT_F32 && rt_dataset_label_size(&d) == 3);
  float got[2 * 3];
  rt_dataset_gather(&d, 1, 2, x, got);
  assert_memory_equal(got, fs + 3, sizeof got);
  rt_dataset_free(&d);
  expect(rt_dataset_read(dir, "test", RT_DATA_LABELS | RT_DATA_IDS, &d, err, sizeof err), err,
         RT_ERR_DTYPE, "", "test_y.npy: labels are not integers (f32[4, 3])");
  expect(rt_dataset_read(dir, "train", RT_DATA_TARGETS | RT_DATA_IDS, &d, err, sizeof err), err,
         RT_ERR_DTYPE, "", "train_y.npy: labels are integers (i32[4, 3]); the model reads f32");
  RtTensor scalar = {RT_I32, 0, {0}, ys}; /* labels must have an example axis */
  save_split(dir, "test", &tx, &scalar);
  expect(rt_dataset_read(dir, "test", RT_DATA_LABELS | RT_DATA_IDS, &d, err, sizeof err), err,
         RT_ERR_SHAPE, "", "test_y.npy: labels are a scalar");
}

static void test_fashion_mnist(void **state) {
  RtDataset d;
  double t0;
  (void)state;
  if (access(FASHION, R_OK) != 0) {
    print_message("[  SKIPPED ] %s is absent; the Fashion-MNIST check did not run\n", FASHION);
    skip();
  }
  t0 = rt_now();
  load_ok(FASHION, "train", &d);
  print_message("[   INFO   ] loaded Fashion-MNIST train (60000 x 28 x 28) in %.2f s\n", rt_now() - t0);
  assert_true(d.n == 60000 && d.x.rank == 3 && d.x.dim[1] == 28 && d.x.dim[2] == 28);
  assert_int_equal(((int32_t *)d.y.data)[0], 9);
  for (int64_t i = 0; i < d.n; i++) assert_in_range(((int32_t *)d.y.data)[i], 0, 9);
  for (int64_t i = 0; i < d.n * 784; i += 97)
    assert_true(((float *)d.x.data)[i] >= 0 && ((float *)d.x.data)[i] <= 1);
  rt_dataset_free(&d);
  load_ok(FASHION, "test", &d);
  assert_true(d.n == 10000 && d.x.dim[1] == 28);
  rt_dataset_free(&d);
}

/* ---- batching ---- */

static void test_batcher(void **state) {
  static const int64_t golden0[10] = {9, 6, 2, 7, 1, 4, 5, 8, 0, 3},
                       golden1[10] = {4, 1, 2, 3, 9, 7, 8, 5, 0, 6};
  RtBatcher a, b;
  RtDataset d;
  int64_t prev[1000];
  float x[12], all[30];
  int32_t y[2];
  (void)state;
  assert_true(rt_mix64(0x9e3779b97f4a7c15u) == 0xe220a8397b1dcdafu); /* SplitMix64(0)'s first output */
  /* The order is fixed by the documented formula (checked against Python). */
  assert_int_equal(rt_batcher_init(&a, 10, 3, 42, true, 0), RT_OK);
  for (int i = 0; i < 10; i++) assert_int_equal(rt_batcher_index(&a, i), golden0[i]);
  rt_batcher_epoch(&a, 1);
  for (int i = 0; i < 10; i++) assert_int_equal(rt_batcher_index(&a, i), golden1[i]);
  assert_int_equal(rt_batcher_steps(&a), 3);
  rt_batcher_free(&a);
  /* Every example once per epoch; epochs differ; the same seed repeats. */
  assert_int_equal(rt_batcher_init(&a, 1000, 64, 7, true, 0), RT_OK);
  assert_int_equal(rt_batcher_init(&b, 1000, 64, 7, true, 0), RT_OK);
  for (int e = 0; e < 4; e++) {
    char seen[1000] = {0};
    int same = 0;
    rt_batcher_epoch(&a, e), rt_batcher_epoch(&b, e);
    for (int i = 0; i < 1000; i++) {
      int64_t k = rt_batcher_index(&a, i);
      assert_true(k >= 0 && k < 1000 && !seen[k] && k == rt_batcher_index(&b, i));
      seen[k] = 1;
      if (e) same += prev[i] == k;
      prev[i] = k;
    }
    assert_true(same < 50);
  }
  rt_batcher_free(&b);
  assert_int_equal(rt_batcher_init(&b, 1000, 64, 8, true, 0), RT_OK); /* another seed */
  assert_true(memcmp(a.order, b.order, 1000 * sizeof *a.order) != 0);
  rt_batcher_free(&a), rt_batcher_free(&b);
  /* limit, steps, no shuffling */
  assert_int_equal(rt_batcher_init(&a, 1000, 64, 7, false, 100), RT_OK);
  assert_true(a.n == 100 && rt_batcher_steps(&a) == 1 && rt_batcher_index(&a, 99) == 99);
  rt_batcher_free(&a);
  assert_int_equal(rt_batcher_init(&a, 1000, 64, 7, true, 100), RT_OK);
  for (int i = 0; i < 100; i++) assert_in_range(rt_batcher_index(&a, i), 0, 99);
  rt_batcher_free(&a);
  assert_true(rt_batcher_init(&a, 10, 0, 7, true, 0) == RT_OK && rt_batcher_steps(&a) == 0);
  rt_batcher_free(&a);
  /* Gathering: 5 examples in batches of 2 (one left over), then in order. */
  load_ok(IDX "gz", "train", &d);
  rt_dataset_gather(&d, 0, 5, all, NULL);
  assert_int_equal(rt_batcher_init(&b, d.n, 2, 3, true, 0), RT_OK);
  assert_int_equal(rt_batcher_steps(&b), 2); /* 5 / 2: the last example is dropped */
  for (int64_t s = 0; s < 2; s++) {
    rt_batcher_gather(&b, &d, s, x, y);
    for (int k = 0; k < 2; k++) {
      int64_t i = rt_batcher_index(&b, s * 2 + k);
      assert_int_equal(y[k], ((int32_t *)d.y.data)[i]);
      assert_memory_equal(x + 6 * k, all + 6 * i, 6 * sizeof(float));
    }
  }
  y[0] = -1;
  rt_batcher_gather(&b, &d, 2, x, y); /* out of range: nothing copied */
  rt_dataset_gather(&d, 4, 2, x, y);
  assert_int_equal(y[0], -1);
  rt_dataset_gather(&d, 3, 2, x, y);
  assert_true(y[0] == 7 && y[1] == 1 && x[6] == all[24]);
  rt_batcher_free(&b);
  rt_dataset_free(&d);
}

/* ---- progress ---- */

static double fake_clock(void *ctx) { return *(double *)ctx; }

static char *run_progress(RtProgressMode mode, double dt, const char *extra) {
  char *text = NULL;
  size_t size = 0;
  double now = 100.0;
  RtProgress p;
  FILE *f = open_memstream(&text, &size);
  rt_progress_init_mode(&p, f, 1, 3, 20, 32, mode);
  rt_progress_set_clock(&p, fake_clock, &now);
  for (int s = 0; s < 20; s++) {
    now += dt;
    rt_progress_step(&p, s, s + 1.0); /* the mean after step s is (s + 2) / 2 */
  }
  now += 7; /* after the last step (a test pass): not part of the epoch's time */
  rt_progress_end(&p, extra);
  fclose(f);
  return text;
}

static void test_progress(void **state) {
  regex_t re;
  char *text = run_progress(RT_PROGRESS_PLAIN, 0.5, "test accuracy 84.12%"), *line, *save = NULL;
  int n = 0, r = 0;
  double t1, t2;
  (void)state;
  assert_int_equal(regcomp(&re, "^epoch 1/3 step [0-9]+/20 loss [0-9]+\\.[0-9]{4} [0-9]+ ex/s eta [0-9]+s$",
                           REG_EXTENDED | REG_NOSUB),
                   0);
  assert_non_null(strstr(text, "epoch 1/3 step 2/20 loss 1.5000 64 ex/s eta 9s\n"));
  assert_non_null(strstr(text, "epoch 1/3 step 20/20 loss 10.5000 64 ex/s eta 0s\n"));
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++)
    if (n < 10 && regexec(&re, line, 0, NULL, 0) != 0) fail_msg("line %d does not match: '%s'", n, line);
    else if (n == 10)
      assert_string_equal(line, "epoch 1/3 loss 10.5000 | 64 ex/s | 10.0s | test accuracy 84.12%");
  assert_int_equal(n, 11); /* ten progress lines (every 2 steps) and the summary */
  regfree(&re);
  free(text);
  /* Terminal: redrawn at most every 0.1 s (steps 0.03 s apart), the last
   * step always, then the summary over it. */
  text = run_progress(RT_PROGRESS_TERMINAL, 0.03, NULL);
  for (char *c = text; *c; c++) r += *c == '\r';
  assert_in_range(r, 6, 8);
  assert_non_null(strstr(text, "\repoch 1/3 [=>                  ] 1/20 loss 1.0000 | 1067 ex/s | ETA 0:01"));
  assert_non_null(strstr(text, "[====================] 20/20 loss 10.5000 | 1067 ex/s | ETA 0:00"));
  assert_non_null(strstr(text, "\repoch 1/3 loss 10.5000 | 1067 ex/s | 0.6s"));
  assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1); /* one newline, at the end */
  free(text);
  /* AUTO on a memory stream (no terminal) prints plain lines. */
  text = run_progress(RT_PROGRESS_AUTO, 100, NULL);
  assert_non_null(strstr(text, "epoch 1/3 step 2/20 loss 1.5000 0 ex/s eta 30m00s\n"));
  assert_null(strchr(text, '\r'));
  free(text);
  t1 = rt_now(), t2 = rt_now();
  assert_true(t1 > 0 && t2 >= t1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gzip_fixtures),
      cmocka_unit_test(test_gzip_headers),
      cmocka_unit_test(test_gunzip_limit),
      cmocka_unit_test(test_deflate_crafted),
      cmocka_unit_test(test_idx),
      cmocka_unit_test(test_dataset),
      cmocka_unit_test_setup_teardown(test_dataset_ids, ids_dir, remove_tmp_dir),
      cmocka_unit_test(test_fashion_mnist),
      cmocka_unit_test(test_batcher),
      cmocka_unit_test(test_progress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
