/*
 * fuzz_npy.c: libFuzzer entry point for the .npy reader.  Any input must
 * either parse or fail with a message, without crashing, leaking or
 * over-reading; a successful parse must describe data of a consistent size.
 * Build and run with the project (see scripts/test.sh):
 *   CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON && cmake --build build-fuzz --target fuzz_npy
 *   ./build-fuzz/fuzz_npy -max_total_time=60 -dict=tests/fuzz/fuzz_npy.dict SCRATCH_DIR tests/fuzz/npy_seeds
 * (libFuzzer adds new inputs to the first folder: never name the seeds first.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtTensor t;
  char err[256];
  RtStatus s = rt_npy_parse(data, size, "fuzz.npy", &t, err, sizeof err);
  if (s == RT_OK) {
    /* 4-byte elements from at least 1 input byte each. */
    if (rt_numel(&t) < 0 || rt_nbytes(&t) > 4 * size || !t.data) abort();
  } else if (t.data || strncmp(err, "fuzz.npy: ", 10) != 0) {
    abort();
  }
  free(t.data);
  return 0;
}
