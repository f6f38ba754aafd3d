#!/bin/bash
# gemm.sh: builds bench/gemm.c against a kiln build and runs it: kiln's
# compiled matmul against OpenBLAS sgemm, 1 and 2 threads, side by side.
#   bench/gemm.sh [BUILD_DIR] [gemm options...]     (default build)
# Needs libopenblas-dev.  Extra options go to every run (e.g. -n 512 512 512).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
cmake --build "$build" --target kiln_codegen kiln_frontend >/dev/null
out="$build/bench_gemm"
gcc -O2 -std=c11 -o "$out" bench/gemm.c -Icodegen/llvm -Iir -Iruntime -Ipasses \
  "$build/codegen/libkiln_codegen.a" "$build/passes/libkiln_passes.a" \
  "$build/ir/libkiln_ir.a" "$build/runtime/libkiln_rt.a" \
  -L"$(llvm-config-19 --libdir)" -lLLVM-19 -lopenblas -lm -lpthread
for t in 1 2; do
  OPENBLAS_NUM_THREADS=$t OMP_WAIT_POLICY=PASSIVE "$out" -t "$t" "$@"
done
