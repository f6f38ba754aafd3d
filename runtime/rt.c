/*
 * rt.c: the small helpers every runtime user needs: names for statuses and
 * dtypes, element counts and byte sizes, the "f32[2, 3]" type string
 * that diagnostics print, and a tensor's one-look summary.
 *
 * They are pure functions of their arguments (no global state), so any
 * thread may call them.  rt_numel uses checked multiplication because shapes
 * come from files and a hostile shape must not wrap around to a small,
 * plausible-looking element count.
 */
#include "rt.h"

#include <math.h>
#include <stdio.h>

const char *rt_status_str(RtStatus s) {
  switch (s) {
  case RT_OK: return "ok";
  case RT_ERR_IO: return "I/O error";
  case RT_ERR_FORMAT: return "malformed file";
  case RT_ERR_DTYPE: return "unsupported dtype";
  case RT_ERR_SHAPE: return "unsupported shape";
  case RT_ERR_ALLOC: return "out of memory";
  case RT_ERR_NOTFOUND: return "not found";
  }
  return "unknown status";
}

const char *rt_dtype_name(RtDType t) {
  switch (t) {
  case RT_F32: return "f32";
  case RT_I32: return "i32";
  }
  return "?";
}

size_t rt_dtype_size(RtDType t) {
  switch (t) {
  case RT_F32: return 4;
  case RT_I32: return 4;
  }
  return 0;
}

/* Product of the dims; 1 for a scalar, 0 when any dim is 0 (even if the
 * others would overflow), and -1 for a bad rank, a negative dim or a
 * product that does not fit in int64_t. */
int64_t rt_numel(const RtTensor *t) {
  int64_t n = 1;
  if (!t || t->rank < 0 || t->rank > RT_MAX_RANK) return -1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dim[i] < 0) return -1;
    if (t->dim[i] == 0) n = 0;
  }
  if (n == 0) return 0;
  for (int i = 0; i < t->rank; i++) {
    if (n > INT64_MAX / t->dim[i]) return -1;
    n *= t->dim[i];
  }
  return n;
}

/* Bytes of data; 0 when rt_numel fails or the size does not fit in size_t
 * (callers that load untrusted shapes check rt_numel first). */
size_t rt_nbytes(const RtTensor *t) {
  int64_t n = rt_numel(t);
  size_t es;
  if (n <= 0) return 0;
  es = rt_dtype_size(t->dtype);
  if (es == 0 || (uint64_t)n > SIZE_MAX / es) return 0;
  return (size_t)n * es;
}

/* Appends s to buf[0..n), truncating, keeping buf NUL-terminated. */
static void put(char *buf, size_t n, size_t *used, const char *s) {
  while (*s && *used + 1 < n) buf[(*used)++] = *s++;
  buf[*used] = '\0';
}

char *rt_tensor_type_str(const RtTensor *t, char *buf, size_t n) {
  size_t used = 0;
  char num[32];
  if (!buf || n == 0) return buf;
  buf[0] = '\0';
  if (!t) {
    put(buf, n, &used, "(null)");
    return buf;
  }
  put(buf, n, &used, rt_dtype_name(t->dtype));
  put(buf, n, &used, "[");
  if (t->rank < 0 || t->rank > RT_MAX_RANK) {
    put(buf, n, &used, "?");
  } else {
    for (int i = 0; i < t->rank; i++) {
      snprintf(num, sizeof num, i ? ", %lld" : "%lld", (long long)t->dim[i]);
      put(buf, n, &used, num);
    }
  }
  put(buf, n, &used, "]");
  return buf;
}

void rt_tensor_summary(FILE *f, const char *name, const RtTensor *t) {
  char tb[160];
  int64_t count = rt_numel(t), nan = 0;
  double lo = INFINITY, hi = -INFINITY, sum = 0;
  for (int64_t i = 0; i < count; i++) {
    double v = t->dtype == RT_F32 ? ((const float *)t->data)[i] : ((const int32_t *)t->data)[i];
    if (isnan(v)) {
      nan++;
      continue;
    }
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    sum += v;
  }
  fprintf(f, "%s: %s", name, rt_tensor_type_str(t, tb, sizeof tb));
  if (count > nan) fprintf(f, "  min %.6g  max %.6g  mean %.6g", lo, hi, sum / (double)(count - nan));
  if (nan) fprintf(f, "  (%lld NaN)", (long long)nan);
  fprintf(f, "\n  [");
  for (int64_t i = 0; i < count && i < 8; i++)
    fprintf(f, "%s%.6g", i ? ", " : "",
            t->dtype == RT_F32 ? ((const float *)t->data)[i] : (double)((const int32_t *)t->data)[i]);
  fprintf(f, "%s]\n", count > 8 ? ", ..." : "");
}
