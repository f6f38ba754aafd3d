#!/usr/bin/env bash
# test.sh: from a fresh checkout, install what is missing, build with
# warnings as errors, run every test (ctest: CMocka units, the malformed-model
# corpus, the command line), then fuzz the parser and the tensor-file readers
# under AddressSanitizer and UndefinedBehaviorSanitizer, and the gzip/IDX reader,
# and, beside them, mutated models through the whole compiler
# (tests/fuzz/pipeline_fuzz.py) on the sanitized kiln.
#   FUZZ_SECONDS=60 (per parser run; the file readers get a third of it each,
#   the pipeline as long as the parser)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

jobs=$(nproc)
cmake -S . -B build -DKILN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
# -V shows each CMocka summary ("[  PASSED  ] N test(s).") in the log
(cd build && ctest -V -j "$jobs")

# The same tests once more under the sanitizers, at -O1 (asserts on): the
# interpreters (the reference evaluator, kir_eval) ran 4x as long at -O0
# (test_lower: 386 -> 97 s), and ASan finds the same errors at -O1.
cmake -S . -B build-asan -DKILN_WERROR=ON -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-g -O1" >/dev/null
cmake --build build-asan -j "$jobs"
(cd build-asan && ctest --output-on-failure -j "$jobs")

# Fuzzing: each target starts from its seeds; any finding fails the run.
secs=${FUZZ_SECONDS:-60}
CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$jobs" --target fuzz_parser fuzz_npy fuzz_safetensors fuzz_gzip
fuzz() { # target seconds seeds...
  local t=$1 s=$2
  shift 2
  local work
  work=$(mktemp -d)
  echo "fuzzing $t for ${s}s"
  ./build-fuzz/"$t" -max_total_time="$s" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict=tests/fuzz/"$t".dict "$work" "$@" 2>&1 | tail -n 12
  rm -rf "$work"
}
# Autodiff, fusion, the schedule, the memory plan and the lowering, which
# fuzz_parser never reaches, on mutants of models/ under ASan/UBSan.  A fixed
# seed: the same mutants every run (while models/ stays), so a finding is the
# change's to mend, not luck's; other seeds and --differential by hand.  It
# shares the two cores with the parser and the file readers below (three
# processes for FUZZ_SECONDS, not twice that: CI's time on a slower host).
echo "fuzzing the pipeline for ${secs}s"
python3 tests/fuzz/pipeline_fuzz.py --kiln build-asan/kiln --seconds "$secs" --seed 1 \
  --out "$(mktemp -d)" &
pipeline=$!
# the parser on one core while the three file readers take turns on the other
fuzz fuzz_parser "$secs" tests/fuzz/parser_seeds &
parser=$!
fuzz fuzz_npy $((secs / 3)) tests/fuzz/npy_seeds
fuzz fuzz_safetensors $((secs / 3)) tests/fuzz/safetensors_seeds
fuzz fuzz_gzip $((secs / 3)) tests/fuzz/gzip_seeds
wait "$parser"   # a finding fails the run here (set -e)
wait "$pipeline" # and here
echo "all tests passed"
