/*
 * test_npy.c: CMocka tests for runtime/npy.c, plus the shared helpers in
 * runtime/rt.c and runtime/file.c.
 *
 * To add a case: a malformed header goes in the BAD_HEADERS table (header
 * text, data size, expected status, a substring of the message); a new
 * NumPy-made fixture goes in tests/data/make_fixtures.py (rerun it with
 * /usr/bin/python3) and gets a check in test_fixtures; anything else is a
 * new static test function listed in main().
 */
#include <math.h>
#include <sys/stat.h>

#include "file_helpers.h"

/* ---- helpers ---- */

/* A version-1.0 .npy image of header text plus dlen bytes of data (a
 * counting pattern); returns its length. */
static size_t make_npy(unsigned char *buf, const char *header, size_t dlen) {
  size_t hlen = strlen(header);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  buf[8] = (unsigned char)(hlen & 0xff);
  buf[9] = (unsigned char)(hlen >> 8);
  memcpy(buf + 10, header, hlen);
  for (size_t i = 0; i < dlen; i++) buf[10 + hlen + i] = (unsigned char)i;
  return 10 + hlen + dlen;
}

/* Parsing buf must fail with code and a message "x.npy: ...sub...". */
static void expect_fail(const void *buf, size_t len, RtStatus code, const char *sub) {
  RtTensor t;
  char err[512] = "";
  RtStatus s = rt_npy_parse(buf, len, "x.npy", &t, err, sizeof err);
  if (s != code || !strstr(err, sub) || strncmp(err, "x.npy: ", 7) != 0) {
    print_error("got status %d \"%s\"; wanted %d with \"%s\"\n", s, err, code, sub);
    fail();
  }
  assert_null(t.data);
  if (s == RT_OK) free(t.data);
}

static void read_ok(const char *file, RtTensor *t) {
  char err[512] = "";
  RtStatus s = rt_npy_read(file, t, err, sizeof err);
  if (s != RT_OK) print_error("%s\n", err);
  assert_int_equal(s, RT_OK);
}

/* Each test that writes gets a fresh temporary directory as its state. */
static int make_dir(void **state) { return make_tmp_dir(state, "/tmp/kiln_test_npy.XXXXXX"); }

/* ---- rt.c ---- */

static void test_rt_helpers(void **state) {
  RtTensor t = {RT_F32, 2, {2, 3}, NULL};
  char buf[64];
  (void)state;
  assert_string_equal(rt_status_str(RT_OK), "ok");
  assert_string_equal(rt_status_str(RT_ERR_IO), "I/O error");
  assert_string_equal(rt_dtype_name(RT_F32), "f32");
  assert_string_equal(rt_dtype_name(RT_I32), "i32");
  assert_int_equal(rt_dtype_size(RT_I32), 4);
  assert_int_equal(rt_numel(&t), 6);
  assert_int_equal(rt_nbytes(&t), 24);
  assert_string_equal(rt_tensor_type_str(&t, buf, sizeof buf), "f32[2, 3]");
  assert_string_equal(rt_tensor_type_str(&t, buf, 5), "f32[");
  t.rank = 0;
  t.dtype = RT_I32;
  assert_int_equal(rt_numel(&t), 1);
  assert_string_equal(rt_tensor_type_str(&t, buf, sizeof buf), "i32[]");
  t.rank = 3;
  t.dim[0] = INT64_MAX, t.dim[1] = 2, t.dim[2] = 0;
  assert_int_equal(rt_numel(&t), 0); /* a zero dim wins over overflow */
  t.dim[2] = 2;
  assert_int_equal(rt_numel(&t), -1);
  assert_int_equal(rt_nbytes(&t), 0);
  t.dim[0] = -1;
  assert_int_equal(rt_numel(&t), -1);
  t.rank = RT_MAX_RANK + 1;
  assert_int_equal(rt_numel(&t), -1);
}

/* ---- round trips ---- */

static void roundtrip_one(const char *dir, RtDType dt, int rank, const int64_t *dims) {
  RtTensor t = {dt, rank, {0}, NULL}, back;
  char path[512], err[512] = "";
  unsigned char *file;
  void *raw;
  size_t len, hl;
  int64_t n;
  memcpy(t.dim, dims, (size_t)rank * sizeof *dims);
  n = rt_numel(&t);
  t.data = malloc(rt_nbytes(&t) + 1);
  for (int64_t i = 0; i < n; i++) {
    if (dt == RT_F32) ((float *)t.data)[i] = (float)i * 0.25f - 3.0f;
    else ((int32_t *)t.data)[i] = (int32_t)(i * 7919 - 100000);
  }
  snprintf(path, sizeof path, "%s/t_%s_%d.npy", dir, rt_dtype_name(dt), rank);
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_OK);
  read_ok(path, &back);
  assert_int_equal(back.dtype, dt);
  assert_int_equal(back.rank, rank);
  assert_memory_equal(back.dim, t.dim, (size_t)rank * sizeof *dims);
  assert_non_null(back.data);
  if (n) assert_memory_equal(back.data, t.data, rt_nbytes(&t));
  /* The layout: version 1.0, data 64-aligned, header ends in '\n'. */
  assert_int_equal(rt_read_file(path, &raw, &len, err, sizeof err), RT_OK);
  file = raw;
  assert_memory_equal(file, "\x93NUMPY\x01\x00", 8);
  hl = 10 + (size_t)(file[8] | file[9] << 8);
  assert_int_equal(hl % 64, 0);
  assert_int_equal(file[hl - 1], '\n');
  assert_int_equal(len, hl + rt_nbytes(&t));
  if (rank == 0) assert_non_null(strstr((char *)file + 10, "'shape': ()"));
  if (rank == 1) assert_non_null(strstr((char *)file + 10, "'shape': (3,)"));
  free(raw);
  free(back.data);
  free(t.data);
}

static void test_roundtrip(void **state) {
  static const int64_t shapes[][4] = {{0}, {3}, {2, 3}, {2, 1, 3}, {1, 2, 3, 2}};
  static const int64_t empty[3] = {2, 0, 3};
  for (int dt = 0; dt < 2; dt++) {
    for (int r = 0; r <= 4; r++) roundtrip_one(*state, (RtDType)dt, r, shapes[r]);
    roundtrip_one(*state, (RtDType)dt, 3, empty);
  }
  assert_int_equal(count_entries(*state, ".tmp."), 0);
}

/* ---- NumPy-made fixtures ---- */

static void check_f32(const char *file, int rank, const int64_t *dims, const float *want, int n) {
  RtTensor t;
  read_ok(file, &t);
  assert_int_equal(t.dtype, RT_F32);
  assert_int_equal(t.rank, rank);
  for (int i = 0; i < rank; i++) assert_int_equal(t.dim[i], dims[i]);
  assert_int_equal(rt_numel(&t), n);
  for (int i = 0; i < n; i++) assert_float_equal(((float *)t.data)[i], want[i], 1e-7);
  free(t.data);
}

static void check_i32(const char *file, int64_t dim0, const int32_t *want, int n) {
  RtTensor t;
  read_ok(file, &t);
  assert_int_equal(t.dtype, RT_I32);
  assert_int_equal(t.dim[0], dim0);
  assert_int_equal(rt_numel(&t), n);
  for (int i = 0; i < n; i++) assert_int_equal(((int32_t *)t.data)[i], want[i]);
  free(t.data);
}

static void test_fixtures(void **state) {
  static const int64_t d23[2] = {2, 3}, d3[1] = {3}, d03[2] = {0, 3}, d22[2] = {2, 2};
  static const float f4[6] = {-1, -0.5f, 0, 0.5f, 1, 1.5f}, f8[3] = {1.5f, -2.25f, 1e-3f};
  static const float v3[3] = {0, 1, 2}, sc[1] = {3.25f};
  static const int32_t i4[4] = {1, -2, 3, INT32_MAX}, i8[4] = {-5, 0, INT32_MAX, INT32_MIN};
  static const int32_t i2[2] = {-300, 300}, i1[2] = {-128, 127}, u1[3] = {0, 200, 255};
  static const int32_t b1[3] = {1, 0, 1}, v2[4] = {0, 1, 2, 3};
  RtTensor t;
  (void)state;
  check_f32(DATA "f4.npy", 2, d23, f4, 6);
  check_f32(DATA "f8.npy", 1, d3, f8, 3);
  check_f32(DATA "v3.npy", 1, d3, v3, 3);
  check_f32(DATA "scalar.npy", 0, NULL, sc, 1);
  check_f32(DATA "empty.npy", 2, d03, NULL, 0);
  check_i32(DATA "i4.npy", 2, i4, 4);
  read_ok(DATA "i4.npy", &t);
  assert_memory_equal(t.dim, d22, sizeof d22);
  free(t.data);
  check_i32(DATA "i8.npy", 4, i8, 4);
  check_i32(DATA "i2.npy", 2, i2, 2);
  check_i32(DATA "i1.npy", 2, i1, 2);
  check_i32(DATA "u1.npy", 3, u1, 3);
  check_i32(DATA "bool.npy", 3, b1, 3);
  check_i32(DATA "v2.npy", 4, v2, 4);
}

static void test_fixture_rejects(void **state) {
  RtTensor t;
  char err[512];
  (void)state;
  assert_int_equal(rt_npy_read(DATA "fortran.npy", &t, err, sizeof err), RT_ERR_FORMAT);
  assert_non_null(strstr(err, "fortran.npy: "));
  assert_non_null(strstr(err, "np.ascontiguousarray"));
  assert_null(t.data);
  assert_int_equal(rt_npy_read(DATA "bigendian.npy", &t, err, sizeof err), RT_ERR_DTYPE);
  assert_non_null(strstr(err, "dtype '>f4' is big-endian"));
  assert_null(t.data);
}

/* ---- malformed files ---- */

static void truncated_fails(const void *buf, size_t len) {
  RtTensor t;
  char err[512];
  assert_int_equal(rt_npy_parse(buf, len, "x.npy", &t, err, sizeof err), RT_ERR_FORMAT);
  assert_int_equal(strncmp(err, "x.npy: ", 7), 0);
  assert_null(t.data);
}

/* Every truncation of file fails; the whole file parses. */
static void truncate_all(const char *file) {
  size_t len;
  char err[512];
  RtTensor t;
  void *buf = each_prefix(file, &len, truncated_fails);
  assert_int_equal(rt_npy_parse(buf, len, "x.npy", &t, err, sizeof err), RT_OK);
  free(t.data);
  free(buf);
}

static void test_truncated(void **state) {
  unsigned char buf[64];
  (void)state;
  truncate_all(DATA "f4.npy");
  truncate_all(DATA "v2.npy");
  truncate_all(DATA "bool.npy");
  expect_fail(buf, 0, RT_ERR_FORMAT, "file is 0 bytes, too short");
  expect_fail("\x93NUM", 4, RT_ERR_FORMAT, "too short");
  expect_fail("\x93NUMPY\x01", 7, RT_ERR_FORMAT, "ends inside the version");
  expect_fail("\x93NUMPY\x02\x00\x10\x00", 10, RT_ERR_FORMAT, "ends inside the header length");
  expect_fail(NULL, 0, RT_ERR_FORMAT, "too short");
}

static void test_preamble(void **state) {
  unsigned char buf[256];
  size_t n = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
  (void)state;
  buf[0] = 'X';
  expect_fail(buf, n, RT_ERR_FORMAT, "not a .npy file (bad magic string");
  expect_fail("PK\x03\x04 zip", 8, RT_ERR_FORMAT, "bad magic");
  buf[0] = 0x93;
  buf[6] = 4;
  expect_fail(buf, n, RT_ERR_FORMAT, "unsupported .npy format version 4.0");
  buf[6] = 1, buf[7] = 1;
  expect_fail(buf, n, RT_ERR_FORMAT, "version 1.1");
  buf[7] = 0, buf[8] = 0xff;
  expect_fail(buf, n, RT_ERR_FORMAT, "header length 255 runs past the end of the file");
  buf[8] = 0xff, buf[9] = 0xff;
  expect_fail(buf, n, RT_ERR_FORMAT, "header length 65535 runs past");
}

typedef struct BadHeader {
  const char *header;
  size_t dlen;
  RtStatus code;
  const char *sub; /* NULL: must parse */
} BadHeader;

#define H(shape) "{'descr': '<f4', 'fortran_order': False, 'shape': " shape ", }"
static const BadHeader BAD_HEADERS[] = {
    {H("(2,)"), 8, RT_OK, NULL},
    {" { 'shape' : ( 2 , 3 ) ,\n'fortran_order':False,\"descr\":\"<f4\"}\n", 24, RT_OK, NULL},
    {"{'descr': '=i4', 'fortran_order': False, 'shape': (3L,)}"
     "      \n",
     12, RT_OK, NULL},
    {H("(0, 9223372036854775807, 9223372036854775807)"), 0, RT_OK, NULL},
    {"", 0, RT_ERR_FORMAT, "expected '{' starting the header dictionary"},
    {"{'descr': '<f4', 'fortran_order': False}", 4, RT_ERR_FORMAT, "no 'shape' key"},
    {"{'descr': '<f4', 'shape': (1,)}", 4, RT_ERR_FORMAT, "no 'fortran_order' key"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4, RT_ERR_FORMAT,
     "unexpected key 'x'"},
    {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT,
     "key 'descr' appears twice"},
    {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "expected ',' or '}'"},
    {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "expected ':' after a key"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,),,}", 4, RT_ERR_FORMAT,
     "expected a dictionary key"},
    {"{descr: '<f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "expected a dictionary key"},
    {"{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "expected ':'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 4, RT_ERR_FORMAT,
     "found the end of the header"},
    {H("(1,)") " junk", 4, RT_ERR_FORMAT, "unexpected 'j' after the closing '}'"},
    {H("(1,)") "\x01", 4, RT_ERR_FORMAT, "unexpected byte 0x01 after the closing"},
    {"{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", 4, RT_ERR_FORMAT,
     "True or False, found 'false'"},
    {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,)}", 4, RT_ERR_FORMAT, "must be True or False"},
    {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", 4, RT_ERR_FORMAT, "must be True or False"},
    {H("(2)"), 8, RT_ERR_FORMAT, "'shape' (2) is not a tuple; a one-dimensional shape is written (2,)"},
    {H("[2]"), 8, RT_ERR_FORMAT, "expected '(' starting the 'shape' tuple"},
    {H("(-2,)"), 8, RT_ERR_FORMAT, "negative dimension -2"},
    {H("(2.0,)"), 8, RT_ERR_FORMAT, "dimension '2.0' in 'shape' is not an integer"},
    {H("(2e3,)"), 8, RT_ERR_FORMAT, "is not an integer"},
    {H("(0x10,)"), 8, RT_ERR_FORMAT, "is not an integer"},
    {H("('a',)"), 8, RT_ERR_FORMAT, "expected a dimension (a non-negative integer)"},
    {H("(,)"), 8, RT_ERR_FORMAT, "expected a dimension"},
    {H("(3,,)"), 8, RT_ERR_FORMAT, "expected a dimension"},
    {H("(2 3)"), 8, RT_ERR_FORMAT, "expected ',' or ')' in 'shape'"},
    {H("(99999999999999999999,)"), 8, RT_ERR_FORMAT,
     "dimension 99999999999999999999 in 'shape' is too large"},
    {H("(1, 1, 1, 1, 1, 1, 1, 1, 1)"), 4, RT_ERR_SHAPE, "shape has 9 dimensions; kiln supports at most 8"},
    {H("(4294967296, 4294967296, 4294967296)"), 4, RT_ERR_FORMAT, "has too many elements"},
    {H("(4611686018427387904,)"), 4, RT_ERR_FORMAT, "has too many elements"},
    {H("(2305843009213693952,)"), 4, RT_ERR_FORMAT,
     "data is 4 bytes but shape (2305843009213693952,) of f32 needs 9223372036854775808"},
    {H("(2,)"), 12, RT_ERR_FORMAT,
     "data is 12 bytes but shape (2,) of f32 needs 8 (4 extra bytes at the end)"},
    {H("(2,)"), 4, RT_ERR_FORMAT, "data is 4 bytes but shape (2,) of f32 needs 8"},
    {H("(2, 3, 5)"), 96, RT_ERR_FORMAT, "data is 96 bytes but shape (2, 3, 5) of f32 needs 120"},
    {H("()"), 0, RT_ERR_FORMAT, "data is 0 bytes but shape () of f32 needs 4"},
    {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", 8, RT_ERR_FORMAT,
     "shape (2,) of f64 needs 16"},
    {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", 8, RT_ERR_DTYPE,
     "dtype '<c8' is not supported"},
    {"{'descr': '<U3', 'fortran_order': False, 'shape': (1,)}", 12, RT_ERR_DTYPE,
     "dtype '<U3' is not supported"},
    {"{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", 8, RT_ERR_DTYPE, "is not supported"},
    {"{'descr': 'f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_DTYPE, "is not supported"},
    {"{'descr': '>i4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_DTYPE,
     "dtype '>i4' is big-endian; kiln reads little-endian data only (save with arr.astype('<i4'))"},
    {"{'descr': '>u1', 'fortran_order': False, 'shape': (1,)}", 1, RT_OK, NULL},
    {"{'descr': '|f4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT,
     "only valid for one-byte types"},
    {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_DTYPE,
     "structured dtypes"},
    {"{'descr': '<f\\4', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "unexpected '\\'"},
    {"{'descr': '<f4\n', 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, "unexpected byte 0x0a"},
    {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", 4, RT_ERR_FORMAT, ""},
    {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}", 24, RT_ERR_FORMAT,
     "Fortran (column-major) order; kiln reads C order only (save with np.ascontiguousarray(arr))"},
};
#undef H

static void test_bad_headers(void **state) {
  unsigned char *buf = malloc(1024);
  (void)state;
  for (size_t i = 0; i < sizeof BAD_HEADERS / sizeof BAD_HEADERS[0]; i++) {
    const BadHeader *b = &BAD_HEADERS[i];
    size_t n = make_npy(buf, b->header, b->dlen);
    if (b->code != RT_OK) {
      expect_fail(buf, n, b->code, b->sub);
    } else {
      RtTensor t;
      char err[512] = "";
      RtStatus s = rt_npy_parse(buf, n, "x.npy", &t, err, sizeof err);
      if (s != RT_OK) print_error("case %zu: %s\n", i, err);
      assert_int_equal(s, RT_OK);
      assert_non_null(t.data);
      free(t.data);
    }
  }
  free(buf);
}

static void test_conversion_range(void **state) {
  unsigned char buf[256];
  const char *h8 = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
  const char *f8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  int64_t big[2] = {1, (int64_t)1 << 40}, low[2] = {0, INT64_MIN};
  double huge[2] = {0.5, 1e300}, inf[2] = {-INFINITY, 1.0};
  size_t n = make_npy(buf, h8, 16), off = n - 16;
  (void)state;
  memcpy(buf + off, big, 16); /* the tests assume a little-endian host */
  expect_fail(buf, n, RT_ERR_DTYPE, "value 1099511627776 at index 1 is outside the i32 range");
  memcpy(buf + off, low, 16);
  expect_fail(buf, n, RT_ERR_DTYPE, "value -9223372036854775808 at index 1");
  n = make_npy(buf, f8, 16);
  memcpy(buf + off, huge, 16);
  expect_fail(buf, n, RT_ERR_DTYPE, "value 1e+300 at index 1 does not fit in f32");
  memcpy(buf + off, inf, 16);
  {
    RtTensor t;
    char err[256];
    assert_int_equal(rt_npy_parse(buf, n, "x.npy", &t, err, sizeof err), RT_OK);
    assert_true(((float *)t.data)[0] < -3e38f);
    free(t.data);
  }
}

/* ---- files and atomic writes ---- */

static void test_read_errors(void **state) {
  RtTensor t;
  char err[512], path[512];
  void *buf;
  size_t len;
  snprintf(path, sizeof path, "%s/missing.npy", (char *)*state);
  assert_int_equal(rt_npy_read(path, &t, err, sizeof err), RT_ERR_IO);
  assert_int_equal(strncmp(err, path, strlen(path)), 0);
  assert_non_null(strstr(err, ": cannot open: No such file or directory"));
  assert_int_equal(rt_read_file(*state, &buf, &len, err, sizeof err), RT_ERR_IO);
  assert_non_null(strstr(err, "Is a directory"));
  assert_null(buf);
}

static void test_write_errors(void **state) {
  float v[2] = {1, 2};
  RtTensor t = {RT_F32, 1, {2}, v};
  char err[512], path[512];
  snprintf(path, sizeof path, "%s/no/such/dir/a.npy", (char *)*state);
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_IO);
  assert_int_equal(strncmp(err, path, strlen(path)), 0);
  assert_non_null(strstr(err, "cannot create temporary file"));
  assert_int_equal(count_entries(*state, ""), 0);
  /* A directory in the way: the rename fails and the temp file goes. */
  snprintf(path, sizeof path, "%s/d.npy", (char *)*state);
  assert_int_equal(mkdir(path, 0755), 0);
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_IO);
  assert_non_null(strstr(err, "cannot rename"));
  assert_int_equal(count_entries(*state, ""), 1);
  snprintf(path, sizeof path, "%s/a.npy", (char *)*state);
  t.rank = RT_MAX_RANK + 1;
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_SHAPE);
  t.rank = 1, t.dim[0] = -2;
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_SHAPE);
  assert_non_null(strstr(err, "negative dimension -2"));
  t.dim[0] = 2, t.data = NULL;
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_FORMAT);
  t.data = v, t.dtype = (RtDType)7;
  assert_int_equal(rt_npy_write(path, &t, err, sizeof err), RT_ERR_DTYPE);
  assert_int_equal(count_entries(*state, ""), 1);
}

static void test_atomic_write(void **state) {
  char path[512], err[512];
  const void *pieces[3] = {"ab", NULL, "cde"};
  size_t sizes[3] = {2, 0, 3}, len;
  void *buf;
  snprintf(path, sizeof path, "%s/f.bin", (char *)*state);
  assert_int_equal(rt_write_file_atomic(path, pieces, sizes, 3, err, sizeof err), RT_OK);
  assert_int_equal(rt_read_file(path, &buf, &len, err, sizeof err), RT_OK);
  assert_int_equal(len, 5);
  assert_memory_equal(buf, "abcde", 5);
  free(buf);
  /* Overwriting replaces the file; an empty write makes an empty file. */
  assert_int_equal(rt_write_file_atomic(path, pieces, sizes, 0, err, sizeof err), RT_OK);
  assert_int_equal(rt_read_file(path, &buf, &len, err, sizeof err), RT_OK);
  assert_int_equal(len, 0);
  free(buf);
  assert_int_equal(count_entries(*state, ".tmp."), 0);
  assert_int_equal(count_entries(*state, ""), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rt_helpers),
      cmocka_unit_test_setup_teardown(test_roundtrip, make_dir, remove_tmp_dir),
      cmocka_unit_test(test_fixtures),
      cmocka_unit_test(test_fixture_rejects),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_preamble),
      cmocka_unit_test(test_bad_headers),
      cmocka_unit_test(test_conversion_range),
      cmocka_unit_test_setup_teardown(test_read_errors, make_dir, remove_tmp_dir),
      cmocka_unit_test_setup_teardown(test_write_errors, make_dir, remove_tmp_dir),
      cmocka_unit_test_setup_teardown(test_atomic_write, make_dir, remove_tmp_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
