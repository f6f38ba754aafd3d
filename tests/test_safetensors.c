/*
 * test_safetensors.c: CMocka tests for runtime/safetensors.c.
 *
 * To add a case: a malformed header goes in the BAD table (header JSON,
 * data size, expected status, a substring of the message); a file written
 * by Python goes in tests/data/make_fixtures.py (rerun it with
 * /usr/bin/python3) and gets a check in test_fixture; anything else is a
 * new static test function listed in main().
 */
#include <math.h>

#include "file_helpers.h"

/* ---- helpers ---- */

/* A safetensors image: the u64 length, the header, then dlen bytes of data
 * (a counting pattern).  Returns a malloc'ed buffer of exactly *len bytes. */
static unsigned char *make_st(const char *header, size_t dlen, size_t *len) {
  size_t h = strlen(header);
  unsigned char *b = malloc(8 + h + dlen + 1);
  assert_non_null(b);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, header, h);
  for (size_t i = 0; i < dlen; i++) b[8 + h + i] = (unsigned char)i;
  *len = 8 + h + dlen;
  return b;
}

static void expect_fail_buf(const void *buf, size_t len, RtStatus code, const char *sub) {
  RtTensorFile f;
  char err[512] = "";
  RtStatus s = rt_safetensors_parse(buf, len, "m.st", &f, err, sizeof err);
  if (s != code || !strstr(err, sub) || strncmp(err, "m.st: ", 6) != 0) {
    print_error("got status %d \"%s\"; wanted %d with \"%s\"\n", s, err, code, sub);
    fail();
  }
  assert_int_equal(f.n, 0);
  assert_null(f.items);
  assert_null(f.meta_keys);
  if (s == RT_OK) rt_tensor_file_free(&f);
}

static void parse_ok(const void *buf, size_t len, RtTensorFile *f) {
  char err[512] = "";
  RtStatus s = rt_safetensors_parse(buf, len, "m.st", f, err, sizeof err);
  if (s != RT_OK) print_error("%s\n", err);
  assert_int_equal(s, RT_OK);
}

/* Each test that writes gets a fresh temporary directory as its state. */
static int make_dir(void **state) { return make_tmp_dir(state, "/tmp/kiln_test_st.XXXXXX"); }

/* ---- round trips ---- */

#define NT 9
static const char *const NAMES[NT] = {"scalar", "vec", "mat", "cube", "r4", "empty", "ints",
                                      "we\"ird\\name\n\x01", "\xc3\xa9t\xc3\xa9"};
static const int RANKS[NT] = {0, 1, 2, 3, 4, 2, 2, 1, 1};
static const int64_t DIMS[NT][4] = {{0}, {5}, {2, 3}, {2, 1, 3}, {1, 2, 2, 3}, {3, 0}, {2, 2}, {1}, {2}};

static void fill(RtNamedTensor *items) {
  for (int i = 0; i < NT; i++) {
    RtTensor *t = &items[i].t;
    int64_t n;
    items[i].name = (char *)NAMES[i];
    t->dtype = i == 6 ? RT_I32 : RT_F32;
    t->rank = RANKS[i];
    memcpy(t->dim, DIMS[i], sizeof DIMS[i]);
    n = rt_numel(t);
    t->data = n ? malloc(rt_nbytes(t)) : NULL;
    for (int64_t k = 0; k < n; k++) {
      if (t->dtype == RT_F32) ((float *)t->data)[k] = (float)(i * 100 + k) * 0.5f;
      else ((int32_t *)t->data)[k] = (int32_t)(k * -1000003);
    }
  }
}

static void test_roundtrip(void **state) {
  RtNamedTensor items[NT];
  RtTensorFile f;
  const char *keys[3] = {"zeta", "alpha", "quote\"d\\"}, *vals[3] = {"last", "first", "v\n\t\xc3\xa9"};
  char path[512], err[512];
  void *raw;
  size_t len;
  uint64_t hlen = 0;
  fill(items);
  snprintf(path, sizeof path, "%s/m.safetensors", (char *)*state);
  assert_int_equal(rt_safetensors_write(path, items, NT, keys, vals, 3, err, sizeof err), RT_OK);
  assert_int_equal(rt_safetensors_read(path, &f, err, sizeof err), RT_OK);
  assert_int_equal(f.n, NT);
  for (int i = 1; i < f.n; i++) assert_true(strcmp(f.items[i - 1].name, f.items[i].name) < 0);
  for (int i = 0; i < NT; i++) {
    const RtNamedTensor *it = rt_tensor_file_find(&f, NAMES[i]);
    assert_non_null(it);
    assert_string_equal(it->name, NAMES[i]);
    assert_int_equal(it->t.dtype, items[i].t.dtype);
    assert_int_equal(it->t.rank, items[i].t.rank);
    assert_memory_equal(it->t.dim, items[i].t.dim, (size_t)it->t.rank * sizeof(int64_t));
    assert_non_null(it->t.data);
    if (rt_nbytes(&it->t)) assert_memory_equal(it->t.data, items[i].t.data, rt_nbytes(&it->t));
  }
  assert_int_equal(f.n_meta, 3);
  assert_string_equal(f.meta_keys[0], "alpha");
  assert_string_equal(f.meta_values[0], "first");
  assert_string_equal(f.meta_keys[1], "quote\"d\\");
  assert_string_equal(f.meta_values[1], "v\n\t\xc3\xa9");
  assert_string_equal(f.meta_values[2], "last");
  assert_null(rt_tensor_file_find(&f, "nope"));
  assert_null(rt_tensor_file_find(NULL, "vec"));
  rt_tensor_file_free(&f);
  assert_int_equal(f.n, 0);
  assert_null(f.items);
  assert_null(f.meta_values);
  /* Layout: header padded to 8 bytes, metadata first, data contiguous. */
  assert_int_equal(rt_read_file(path, &raw, &len, err, sizeof err), RT_OK);
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | ((unsigned char *)raw)[i];
  assert_int_equal(hlen % 8, 0);
  assert_int_equal(strncmp((char *)raw + 8, "{\"__metadata__\":{\"alpha\":\"first\",", 33), 0);
  assert_non_null(strstr((char *)raw + 8, "\"empty\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\""));
  assert_int_equal(len, 8 + hlen + 4 * (1 + 5 + 6 + 6 + 12 + 0 + 4 + 1 + 2));
  free(raw);
  for (int i = 0; i < NT; i++) free(items[i].t.data);
  assert_int_equal(count_entries(*state, ".tmp."), 0);
}

static void test_roundtrip_empty(void **state) {
  RtTensorFile f;
  char path[512], err[512];
  void *raw;
  size_t len;
  snprintf(path, sizeof path, "%s/e.safetensors", (char *)*state);
  assert_int_equal(rt_safetensors_write(path, NULL, 0, NULL, NULL, 0, err, sizeof err), RT_OK);
  assert_int_equal(rt_read_file(path, &raw, &len, err, sizeof err), RT_OK);
  assert_int_equal(len, 16);
  assert_memory_equal(raw, "\x08\0\0\0\0\0\0\0{}      ", 16);
  free(raw);
  assert_int_equal(rt_safetensors_read(path, &f, err, sizeof err), RT_OK);
  assert_int_equal(f.n, 0);
  assert_int_equal(f.n_meta, 0);
  rt_tensor_file_free(&f);
  rt_tensor_file_free(NULL);
  rt_tensor_file_free(&f);
}

/* ---- the Python-made fixture ---- */

static const RtNamedTensor *get(const RtTensorFile *f, const char *name, RtDType dt, int rank) {
  const RtNamedTensor *it = rt_tensor_file_find(f, name);
  assert_non_null(it);
  assert_int_equal(it->t.dtype, dt);
  assert_int_equal(it->t.rank, rank);
  return it;
}

static void test_fixture(void **state) {
  static const char *const order[8] = {"a.weight", "b",     "c_f64", "d_f16",
                                       "e_bf16",   "empty", "f_i64", "scalar"};
  RtTensorFile f;
  char err[512];
  const float *x;
  const int32_t *q;
  (void)state;
  assert_int_equal(rt_safetensors_read(DATA "fixture.safetensors", &f, err, sizeof err), RT_OK);
  assert_int_equal(f.n, 8);
  for (int i = 0; i < 8; i++) assert_string_equal(f.items[i].name, order[i]);
  x = get(&f, "a.weight", RT_F32, 2)->t.data;
  assert_true(x[0] == 1 && x[1] == -2 && x[2] == 3.5f && x[3] == 0);
  q = get(&f, "b", RT_I32, 1)->t.data;
  assert_true(q[0] == 7 && q[1] == -8 && q[2] == 9);
  x = get(&f, "c_f64", RT_F32, 1)->t.data;
  assert_float_equal(x[0], 0.1, 1e-8);
  assert_float_equal(x[1], -1e10, 1e3);
  x = get(&f, "d_f16", RT_F32, 1)->t.data;
  assert_true(x[0] == 1 && x[1] == -0.5f && x[2] == 65504.0f && x[3] == 0x1p-24f);
  x = get(&f, "e_bf16", RT_F32, 1)->t.data;
  assert_true(x[0] == 1 && x[1] == -2.5f && x[2] == 3.140625f);
  assert_int_equal(get(&f, "empty", RT_F32, 2)->t.dim[1], 4);
  q = get(&f, "f_i64", RT_I32, 1)->t.data;
  assert_true(q[0] == -3 && q[1] == INT32_MAX);
  x = get(&f, "scalar", RT_F32, 0)->t.data;
  assert_true(x[0] == -7.75f);
  assert_int_equal(f.n_meta, 2);
  assert_string_equal(f.meta_keys[0], "format");
  assert_string_equal(f.meta_values[0], "pt");
  assert_string_equal(f.meta_values[1], "h\xc3\xa9llo \"quoted\"");
  rt_tensor_file_free(&f);
}

static void test_half_values(void **state) {
  /* F16 bit patterns: subnormal max, -0, inf, nan, smallest normal. */
  static const uint16_t h[5] = {0x03ff, 0x8000, 0x7c00, 0x7e00, 0x0400};
  const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]}}";
  size_t len;
  unsigned char *b = make_st(hdr, 10, &len);
  RtTensorFile f;
  const float *x;
  (void)state;
  memcpy(b + len - 10, h, 10); /* the tests assume a little-endian host */
  parse_ok(b, len, &f);
  x = f.items[0].t.data;
  assert_true(x[0] == 0x3ffp-24f && x[1] == 0 && signbit(x[1]) && x[2] > 3e38f && x[3] != x[3] &&
              x[4] == 0x1p-14f);
  rt_tensor_file_free(&f);
  free(b);
}

/* ---- malformed files ---- */

static void truncated_fails(const void *buf, size_t len) {
  RtTensorFile f;
  char err[512];
  assert_int_equal(rt_safetensors_parse(buf, len, "m.st", &f, err, sizeof err), RT_ERR_FORMAT);
  assert_int_equal(strncmp(err, "m.st: ", 6), 0);
  assert_null(f.items);
}

static void test_truncated(void **state) {
  size_t len;
  void *buf = each_prefix(DATA "fixture.safetensors", &len, truncated_fails);
  (void)state;
  expect_fail_buf(NULL, 0, RT_ERR_FORMAT, "file is 0 bytes, too short for the 8-byte header length");
  free(buf);
}

static void test_header_length(void **state) {
  size_t len;
  unsigned char *b = make_st("{}", 0, &len);
  (void)state;
  memset(b, 0xff, 8);
  expect_fail_buf(b, len, RT_ERR_FORMAT, "header length 18446744073709551615 is over the 100 MB limit");
  memset(b, 0, 8);
  b[3] = 0x10; /* 256 MiB */
  expect_fail_buf(b, len, RT_ERR_FORMAT, "over the 100 MB limit");
  memset(b, 0, 8);
  b[0] = 3;
  expect_fail_buf(b, len, RT_ERR_FORMAT,
                  "header length 3 runs past the end of the file (only 2 bytes follow)");
  b[0] = 0;
  expect_fail_buf(b, len, RT_ERR_FORMAT,
                  "header is not a JSON object (expected '{', found the end of the header)");
  free(b);
}

typedef struct Bad {
  const char *header;
  size_t dlen;
  RtStatus code;
  const char *sub; /* NULL: must parse */
} Bad;

#define T(name, dtype, shape, offs)                                                                          \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"
static const Bad BAD[] = {
    {"{" T("a", "F32", "[2]", "[0,8]") "}", 8, RT_OK, NULL},
    {"  {\n \"a\" : { \"shape\" : [ ] , \"data_offsets\" : [ 0 , 4 ] , \"dtype\" : \"I32\" } }   ", 4, RT_OK,
     NULL},
    {"{" T("a", "F32", "[2]", "[0,8]") "}", 12, RT_OK, NULL}, /* unused trailing data is tolerated */
    {"{" T("a", "F32", "[2]", "[4,12]") "," T("z", "F32", "[0]", "[4,4]") "}", 12, RT_OK, NULL},
    {"{\"__metadata__\":{}," T("\\u00e9\\ud83d\\ude00\\n", "F32", "[1]", "[0,4]") "}", 4, RT_OK, NULL},
    {"[]", 0, RT_ERR_FORMAT, "header is not a JSON object (expected '{', found '[')"},
    {"{" T("a", "F32", "[2]", "[0,8]") "} x", 8, RT_ERR_FORMAT, "unexpected 'x' after the closing '}'"},
    {"{" T("a", "F32", "[2]", "[0,8]") ",}", 8, RT_ERR_FORMAT, "expected a key (a string), found '}'"},
    {"{" T("a", "F32", "[2]", "[0,8]") " " T("b", "F32", "[2]", "[0,8]") "}", 8, RT_ERR_FORMAT,
     "expected ',' or '}'"},
    {"{\"a\" {}}", 0, RT_ERR_FORMAT, "expected ':'"},
    {"{\"a\":5}", 0, RT_ERR_FORMAT, "tensor 'a' must be an object with dtype, shape and data_offsets"},
    {"{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, RT_ERR_FORMAT, "tensor 'a' has no \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, RT_ERR_FORMAT, "tensor 'a' has no \"shape\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4, RT_ERR_FORMAT, "tensor 'a' has no \"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"extra\":1}}", 4, RT_ERR_FORMAT,
     "tensor 'a': unexpected key \"extra\""},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, RT_ERR_FORMAT,
     "tensor 'a': key \"dtype\" appears twice"},
    {"{" T("a", "F32", "[1]", "[0,4]") "," T("a", "F32", "[1]", "[4,8]") "}", 8, RT_ERR_FORMAT,
     "tensor name 'a' appears twice"},
    {"{" T("a", "F32", "[1]", "[4,0]") "}", 4, RT_ERR_FORMAT,
     "data_offsets [4, 0] must satisfy 0 <= begin <= end"},
    {"{" T("a", "F32", "[1]", "[-4,0]") "}", 4, RT_ERR_FORMAT, "0 <= begin"},
    {"{" T("a", "F32", "[1]", "[0,4,8]") "}", 8, RT_ERR_FORMAT,
     "data_offsets must be [begin, end], found 3 values"},
    {"{" T("a", "F32", "[1]", "[4]") "}", 8, RT_ERR_FORMAT, "found 1 values"},
    {"{" T("a", "F32", "[1]", "[0,4.0]") "}", 4, RT_ERR_FORMAT, "data_offsets must hold integers, found 4.0"},
    {"{" T("a", "F32", "[1]", "[0,\"4\"]") "}", 4, RT_ERR_FORMAT,
     "data_offsets must hold integers, found '\"'"},
    {"{" T("a", "F32", "[1]", "[00,4]") "}", 4, RT_ERR_FORMAT, "must hold integers"},
    {"{" T("a", "F32", "[1]", "[0,99999999999999999999]") "}", 4, RT_ERR_FORMAT, "too large"},
    {"{" T("a", "F32", "[1]", "0") "}", 4, RT_ERR_FORMAT, "data_offsets must be an array of integers"},
    {"{" T("a", "F32", "[1]", "[0,4") "}", 4, RT_ERR_FORMAT, "expected ',' or ']'"},
    {"{" T("a", "F32", "[3]", "[0,12]") "}", 8, RT_ERR_FORMAT,
     "tensor 'a': data_offsets [0, 12] run past the end of the data (8 bytes)"},
    {"{" T("a", "F32", "[3]", "[0,8]") "}", 8, RT_ERR_FORMAT,
     "tensor 'a': data_offsets [0, 8] hold 8 bytes but shape [3] of F32 needs 12"},
    {"{" T("a", "F64", "[]", "[0,4]") "}", 8, RT_ERR_FORMAT, "hold 4 bytes but shape [] of F64 needs 8"},
    {"{" T("a", "F32", "[2.0]", "[0,8]") "}", 8, RT_ERR_FORMAT,
     "tensor 'a': shape must hold integers, found 2.0"},
    {"{" T("a", "F32", "[2e0]", "[0,8]") "}", 8, RT_ERR_FORMAT, "found 2e0"},
    {"{" T("a", "F32", "[-2]", "[0,8]") "}", 8, RT_ERR_FORMAT, "tensor 'a': negative dimension -2 in shape"},
    {"{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, RT_ERR_SHAPE,
     "tensor 'a': shape has 9 dimensions; kiln supports at most 8"},
    {"{" T("a", "F32", "[4294967296,4294967296,4294967296]", "[0,4]") "}", 4, RT_ERR_FORMAT,
     "too many elements"},
    {"{" T("a", "F32", "[0,4294967296,4294967296,4294967296]", "[0,0]") "}", 4, RT_OK, NULL},
    {"{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[4,12]") "}", 12, RT_ERR_FORMAT,
     "tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
    {"{" T("b", "F32", "[4]", "[0,16]") "," T("a", "F32", "[0]", "[8,8]") "}", 16, RT_ERR_FORMAT, "overlap"},
    {"{" T("b", "I32", "[1]", "[0,4]") "," T("a", "F32", "[1]", "[0,4]") "}", 4, RT_ERR_FORMAT,
     "tensors 'a' [0, 4] and 'b' [0, 4] overlap"},
    {"{" T("u", "U8", "[4]", "[0,4]") "}", 4, RT_ERR_DTYPE,
     "tensor 'u' has dtype U8, which kiln cannot load"},
    {"{" T("u", "BOOL", "[4]", "[0,4]") "}", 4, RT_ERR_DTYPE, "tensor 'u' has dtype BOOL"},
    {"{" T("u", "XYZ", "[4]", "[0,4]") "}", 4, RT_ERR_FORMAT, "tensor 'u': unknown dtype \"XYZ\""},
    {"{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", 4, RT_ERR_FORMAT,
     "expected a dtype string"},
    {"{\"__metadata__\":{\"k\":1}}", 0, RT_ERR_FORMAT,
     "\"__metadata__\" value for \"k\" is a number; metadata values must be strings"},
    {"{\"__metadata__\":{\"k\":true}}", 0, RT_ERR_FORMAT, "is a boolean"},
    {"{\"__metadata__\":{\"k\":null}}", 0, RT_ERR_FORMAT, "is null"},
    {"{\"__metadata__\":{\"k\":{}}}", 0, RT_ERR_FORMAT, "is an object"},
    {"{\"__metadata__\":[]}", 0, RT_ERR_FORMAT, "\"__metadata__\" must be an object of strings, found '['"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, RT_ERR_FORMAT, "\"__metadata__\" appears twice"},
    {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, RT_ERR_FORMAT,
     "\"__metadata__\" key \"k\" appears twice"},
    {"{\"__metadata__\":{\"k\":\"a\",}}", 0, RT_ERR_FORMAT, "expected a key"},
    {"{\"__metadata__\":{\"k\":\"a\\x\"}}", 0, RT_ERR_FORMAT, "bad escape sequence"},
    {"{\"__metadata__\":{\"k\":\"a\\u12\"}}", 0, RT_ERR_FORMAT, "bad escape sequence"},
    {"{\"__metadata__\":{\"k\":\"\\ud800\"}}", 0, RT_ERR_FORMAT, "unpaired UTF-16 surrogate"},
    {"{\"__metadata__\":{\"k\":\"\\ud800\\u0041\"}}", 0, RT_ERR_FORMAT, "unpaired UTF-16 surrogate"},
    {"{\"__metadata__\":{\"k\":\"\\udc00\"}}", 0, RT_ERR_FORMAT, "unpaired UTF-16 surrogate"},
    {"{\"__metadata__\":{\"k\":\"\\u0000\"}}", 0, RT_ERR_FORMAT, "\\u0000 (NUL) is not allowed"},
    {"{\"__metadata__\":{\"k\":\"a\nb\"}}", 0, RT_ERR_FORMAT, "control character 0x0a in a string"},
    {"{\"__metadata__\":{\"k\":\"\xff\"}}", 0, RT_ERR_FORMAT, "invalid UTF-8 in a string"},
    {"{\"__metadata__\":{\"k\":\"\xc0\x80\"}}", 0, RT_ERR_FORMAT, "invalid UTF-8"},
    {"{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, RT_ERR_FORMAT, "invalid UTF-8"},
    {"{\"__metadata__\":{\"k\":\"\xe2\x82\"}}", 0, RT_ERR_FORMAT, "invalid UTF-8"},
    {"{\"__metadata__\":{\"k\":\"abc}}", 0, RT_ERR_FORMAT, "unterminated string"},
    {"{\"__metadata__\":{\"k\":\"abc\\\"}}", 0, RT_ERR_FORMAT, "unterminated string"},
    {"{'a':1}", 0, RT_ERR_FORMAT, "expected a key (a string), found '''"},
};
#undef T

static void test_bad_headers(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    size_t len;
    unsigned char *b = make_st(BAD[i].header, BAD[i].dlen, &len);
    if (BAD[i].code != RT_OK) {
      expect_fail_buf(b, len, BAD[i].code, BAD[i].sub);
    } else {
      RtTensorFile f;
      parse_ok(b, len, &f);
      rt_tensor_file_free(&f);
    }
    free(b);
  }
}

static void test_unicode_names(void **state) {
  const char *hdr =
      "{\"\\u00e9\\ud83d\\ude00\\n\\\"\\/\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
  size_t len;
  unsigned char *b = make_st(hdr, 4, &len);
  RtTensorFile f;
  (void)state;
  parse_ok(b, len, &f);
  assert_int_equal(f.n, 1);
  assert_string_equal(f.items[0].name, "\xc3\xa9\xf0\x9f\x98\x80\n\"/");
  assert_non_null(rt_tensor_file_find(&f, "\xc3\xa9\xf0\x9f\x98\x80\n\"/"));
  rt_tensor_file_free(&f);
  free(b);
}

static void test_conversion_range(void **state) {
  const char *hi = "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}";
  const char *hd = "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}";
  int64_t big[2] = {5, -((int64_t)1 << 31) - 1};
  double huge[2] = {1, -1e39};
  size_t len;
  unsigned char *b = make_st(hi, 16, &len);
  (void)state;
  memcpy(b + len - 16, big, 16);
  expect_fail_buf(b, len, RT_ERR_DTYPE, "tensor 'a': value -2147483649 at index 1 is outside the i32 range");
  free(b);
  b = make_st(hd, 16, &len);
  memcpy(b + len - 16, huge, 16);
  expect_fail_buf(b, len, RT_ERR_DTYPE, "tensor 'a': value -1e+39 at index 1 does not fit in f32");
  free(b);
}

/* ---- writing ---- */

static void test_write_errors(void **state) {
  float v[2] = {1, 2};
  RtNamedTensor it[2] = {{"a", {RT_F32, 1, {2}, v}}, {"a", {RT_F32, 1, {2}, v}}};
  const char *keys[2] = {"k", "k"}, *vals[2] = {"1", "2"};
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/no/dir/m.safetensors", (char *)*state);
  assert_int_equal(rt_safetensors_write(path, it, 1, NULL, NULL, 0, err, sizeof err), RT_ERR_IO);
  assert_int_equal(strncmp(err, path, strlen(path)), 0);
  assert_non_null(strstr(err, "cannot create temporary file"));
  assert_int_equal(count_entries(*state, ""), 0);
  snprintf(path, sizeof path, "%s/m.safetensors", (char *)*state);
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_FORMAT);
  assert_non_null(strstr(err, "tensor name 'a' appears twice"));
  assert_int_equal(rt_safetensors_write(path, it, 1, keys, vals, 2, err, sizeof err), RT_ERR_FORMAT);
  assert_non_null(strstr(err, "metadata key \"k\" appears twice"));
  it[1].name = "__metadata__";
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_FORMAT);
  it[1].name = "\xff";
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_FORMAT);
  assert_non_null(strstr(err, "not valid UTF-8"));
  it[1].name = "b";
  it[1].t.dim[0] = -1;
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_SHAPE);
  it[1].t.dim[0] = 2, it[1].t.data = NULL;
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_FORMAT);
  it[1].t.data = v, it[1].t.dtype = (RtDType)9;
  assert_int_equal(rt_safetensors_write(path, it, 2, NULL, NULL, 0, err, sizeof err), RT_ERR_DTYPE);
  assert_int_equal(rt_safetensors_write(path, it, -1, NULL, NULL, 0, err, sizeof err), RT_ERR_FORMAT);
  assert_int_equal(count_entries(*state, ""), 0);
  it[1].t.dtype = RT_I32;
  assert_int_equal(rt_safetensors_write(path, it, 2, keys, vals, 1, err, sizeof err), RT_OK);
  assert_int_equal(count_entries(*state, ""), 1);
  assert_int_equal(count_entries(*state, ".tmp."), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_roundtrip, make_dir, remove_tmp_dir),
      cmocka_unit_test_setup_teardown(test_roundtrip_empty, make_dir, remove_tmp_dir),
      cmocka_unit_test(test_fixture),
      cmocka_unit_test(test_half_values),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_header_length),
      cmocka_unit_test(test_bad_headers),
      cmocka_unit_test(test_unicode_names),
      cmocka_unit_test(test_conversion_range),
      cmocka_unit_test_setup_teardown(test_write_errors, make_dir, remove_tmp_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
