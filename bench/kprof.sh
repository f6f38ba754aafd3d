#!/bin/bash
# kprof.sh: builds bench/kprof.c against a kiln build and runs it on a model:
# per-kernel times of the compiled training step (or inference, --infer).
#   bench/kprof.sh [BUILD_DIR] MODEL.kiln [kprof options...]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [ -d "${1:-}" ]; then build=$1; shift; fi
cmake --build "$build" --target kiln_codegen kiln_frontend >/dev/null
out="$build/bench_kprof"
gcc -O2 -std=c11 -o "$out" bench/kprof.c -Icodegen -Icodegen/llvm -Iir -Iruntime -Ipasses -Ifrontend \
  "$build/codegen/libkiln_codegen.a" "$build/frontend/libkiln_frontend.a" \
  "$build/passes/libkiln_passes.a" "$build/ir/libkiln_ir.a" "$build/runtime/libkiln_rt.a" \
  -L"$(llvm-config-19 --libdir)" -lLLVM-19 -lm -lpthread
exec "$out" "$@"
