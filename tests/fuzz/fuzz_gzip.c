/*
 * fuzz_gzip.c: libFuzzer entry point for the gzip decoder (inflate.c) and
 * the IDX reader (data.c), the two parsers of dataset files.  Any input
 * must decode or fail with a message, without crashing, leaking, hanging
 * or over-reading; a failure must leave no output behind.  The input goes
 * to rt_gunzip and to rt_idx_parse (which gunzips what starts with the
 * gzip magic itself), and what decompresses is parsed as IDX as well.
 * Build and run by hand (libFuzzer adds new inputs to the first folder:
 * never name the seeds first):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime runtime/rt.c runtime/file.c \
 *     runtime/npy.c runtime/inflate.c runtime/data.c tests/fuzz/fuzz_gzip.c -lm -o /tmp/fuzz_gzip
 *   mkdir -p /tmp/gz_corpus && /tmp/fuzz_gzip -max_total_time=60 /tmp/gz_corpus tests/fuzz/gzip_seeds
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* IDX parsing of buf must succeed with consistent data or fail cleanly. */
static void check_idx(const void *buf, size_t len) {
  RtTensor t;
  char err[256];
  RtStatus s = rt_idx_parse(buf, len, "fuzz.idx", &t, err, sizeof err);
  if (s == RT_OK) {
    if (rt_numel(&t) < 0 || !t.data) abort();
  } else if (t.data || strncmp(err, "fuzz.idx: ", 10) != 0) {
    abort();
  }
  free(t.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  void *out = (void *)1;
  size_t n = 1;
  char err[256];
  /* 64 MiB keeps the fuzzer's memory in bounds; deflate expands at most
   * about 1032:1, so small inputs stay far below it anyway. */
  RtStatus s = rt_gunzip_limit(data, size, "fuzz.gz", (size_t)64 << 20, &out, &n, err, sizeof err);
  if (s == RT_OK) {
    if (!out) abort();
    check_idx(out, n);
  } else if (out || n || strncmp(err, "fuzz.gz: ", 9) != 0) {
    abort();
  }
  free(out);
  check_idx(data, size);
  return 0;
}
