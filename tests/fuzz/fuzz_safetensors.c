/*
 * fuzz_safetensors.c: libFuzzer entry point for the safetensors reader.
 * Any input must either parse or fail with a message, without crashing,
 * leaking or over-reading; a successful parse must give sorted names and
 * tensors whose data fits what the input could hold.
 * Build and run with the project (see scripts/test.sh):
 *   CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON && cmake --build build-fuzz --target fuzz_safetensors
 *   ./build-fuzz/fuzz_safetensors -max_total_time=60 -dict=tests/fuzz/fuzz_safetensors.dict SCRATCH_DIR tests/fuzz/safetensors_seeds
 * (libFuzzer adds new inputs to the first folder: never name the seeds first.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtTensorFile f;
  char err[256];
  RtStatus s = rt_safetensors_parse(data, size, "fuzz.st", &f, err, sizeof err);
  if (s == RT_OK) {
    size_t total = 0;
    for (int i = 0; i < f.n; i++) {
      if (i > 0 && strcmp(f.items[i - 1].name, f.items[i].name) >= 0) abort();
      if (rt_tensor_file_find(&f, f.items[i].name) != &f.items[i] || !f.items[i].t.data) abort();
      total += rt_nbytes(&f.items[i].t);
    }
    /* F16/BF16 double in size when converted; nothing grows more. */
    if (total > 2 * size) abort();
  } else if (f.items || f.n || strncmp(err, "fuzz.st: ", 9) != 0) {
    abort();
  }
  rt_tensor_file_free(&f);
  return 0;
}
