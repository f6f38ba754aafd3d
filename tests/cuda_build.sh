#!/usr/bin/env bash
# cuda_build.sh: programs built by `kiln build --target cuda` (CUBINs, PTX
# and launch lists built in: codegen/cuda/cuda_aot.c, runtime/rt_cuda_main.c)
# run without a GPU, on the fake driver (tests/fake_cuda.c): under
# KILN_CUDA_IMAGE=source the program hands the driver its embedded CUDA
# source, which the fake compiles with tests/cuda_emu.h and runs a block at
# a time.  Everything the program does for a device runs for real: opening
# it, loading the image, the arena and parameter buffers, parameters
# uploaded and prepared once, inputs in, launches, outputs out.  What a real
# GPU does with the CUBIN is tests/gpu.sh's (on a machine with one).
#
# Checks: mlp and lenet5 programs write `kiln run`'s outputs bit for bit
# (the parameters drawn at start, built in with --weights, or read with the
# program's --weights), and a CPU program's for any number of rows; --help
# lists the inputs and the embedded images; the program holds the sm_80 and
# sm_90 CUBINs and the compute_80 PTX; without a driver it stops with "no
# CUDA device found" (exit 1); without KILN_CUDA_IMAGE=source the fake gets
# the sm_80 CUBIN, which it cannot load; a program without an image for
# the device says so; a failing launch is named; bad
# inputs and options fail as in CPU programs, leaving no output file; the
# build's usage errors (--emit exe mixed with files).  A --train program's
# `train` on the fake device writes a CPU program's --save file byte for
# byte and prints its test accuracies (a classifier) and test losses (a
# regression on f32 targets), also resumed from a --save file; its train
# --help names the device; without a device it stops before training.
#
# Needs NVRTC (the CUDA toolkit) to build the programs: without it the
# build says so and the script skips.
#
# Usage: tests/cuda_build.sh path/to/kiln path/to/libfake_cuda.so
set -uo pipefail
FAKE=$(realpath "$2")
source "$(dirname "$0")/sh_helpers.sh"

fake=(env KILN_LIBCUDA="$FAKE" KILN_CUDA_IMAGE=source)

absent() { # absent WHAT PATH: no such file, and no temporary file left in tmp
  if [ -e "$2" ] || ls "$tmp"/*.tmp.* >/dev/null 2>&1; then
    echo "FAIL: $1: $2 (or a temporary file) exists"
    fails=$((fails + 1))
  fi
}

# --- the build's usage --------------------------------------------------------
expect 2 "build --target cuda --emit exe,cuda" -- "$KILN" build models/mlp.kiln \
  --target cuda --emit exe,cuda -o "$tmp/x"
contains "$err" "--emit exe makes the program alone"
expect 2 "build --target cuda --emit cuda --weights" -- "$KILN" build models/mlp.kiln \
  --target cuda --emit cuda --weights "$tmp/w.safetensors" -o "$tmp/x"
expect 0 "build --target cuda --emit cuda -o still writes the source" -- "$KILN" build \
  models/mlp.kiln --target cuda --emit cuda -o "$tmp/src"
contains "$tmp/src.cu" 'extern "C" __global__ void'
absent "--emit cuda: no program" "$tmp/src"
expect 0 "build --target cuda -o FILE.cu writes the source" -- "$KILN" build models/mlp.kiln \
  --target cuda -o "$tmp/src2.cu"
contains "$tmp/src2.cu" 'extern "C" __global__ void'

# --- building ---------------------------------------------------------------------
"$KILN" build models/mlp.kiln --target cuda -o "$tmp/mlp" >"$out" 2>"$err"
rc=$?
if [ $rc -ne 0 ] && grep -q "built without the CUDA toolkit" "$err"; then
  echo "skipped: the programs (kiln was built without the CUDA toolkit: no NVRTC)"
  finish cuda_build
fi
if [ $rc -ne 0 ]; then
  echo "FAIL: build mlp --target cuda: exit $rc"
  sed 's/^/    /' "$err" | tail -n 12
  exit 1
fi
echo "ok: build mlp --target cuda -o (--emit exe by default)"
contains "$err" "inference on a CUDA device (sm_80, sm_90 CUBINs and compute_80 PTX;"
absent "the build's temporaries" "$tmp/mlp.cu"
expect 0 "build lenet5 --target cuda" -- "$KILN" build models/lenet5.kiln --target cuda \
  -o "$tmp/lenet5"

# what the programs hold
for m in mlp lenet5; do
  strings "$tmp/$m" >"$tmp/$m.strings"
  contains "$tmp/$m.strings" "image cubin 80 "
  contains "$tmp/$m.strings" "image cubin 90 "
  contains "$tmp/$m.strings" "image ptx 80 "
  contains "$tmp/$m.strings" ".target sm_80" # the PTX itself
  contains "$tmp/$m.strings" '"format": "kiln-program"' # the CPU programs' manifest
done
expect 0 "mlp --help" -- "$tmp/mlp" --help
contains "$out" "compiled by kiln build --target cuda"
contains "$out" "x                f32[64, 784]             (any number of rows)"
contains "$out" "probs            f32[64, 10]"
contains "$out" "Runs on CUDA device 0: it needs an NVIDIA GPU and its driver"
contains "$out" "Built in: sm_80, sm_90 CUBINs and compute_80 PTX"

# --- results: kiln run's, bit for bit -------------------------------------------------
expect 0 "an mlp input" -- "$KILN" run models/mlp.kiln --random-inputs --seed 2 \
  --output x="$tmp/mlp.x.npy"
expect 0 "a lenet5 input" -- "$KILN" run models/lenet5.kiln --random-inputs --seed 3 \
  --output x="$tmp/lenet5.x.npy"
for m in mlp lenet5; do # the CPU keeping subnormals, as CUDA code does
  expect 0 "run $m on the CPU" -- "$KILN" run models/$m.kiln --input x="$tmp/$m.x.npy" \
    --keep-denormals --output probs="$tmp/$m.cpu.npy"
  expect 0 "the $m program on the fake device" -- "${fake[@]}" "$tmp/$m" \
    --input x="$tmp/$m.x.npy" --output probs="$tmp/$m.dev.npy"
  contains "$err" "wrote probs (f32["
  same_bytes "the $m program (parameters drawn at start)" "$tmp/$m.cpu.npy" "$tmp/$m.dev.npy"
done

# the printed summary without --output is the CPU's too
expect 0 "the mlp program, printed" -- "${fake[@]}" "$tmp/mlp" --input x="$tmp/mlp.x.npy"
cp "$out" "$tmp/printed.dev"
expect 0 "run mlp, printed" -- "$KILN" run models/mlp.kiln --input x="$tmp/mlp.x.npy" \
  --keep-denormals
same_bytes "mlp's printed summary" "$tmp/printed.dev" "$out"

# weights: built in, and given to the program
expect 0 "init lenet5" -- "$KILN" init models/lenet5.kiln --seed 9 -o "$tmp/w.safetensors"
expect 0 "run lenet5 with weights" -- "$KILN" run models/lenet5.kiln --keep-denormals \
  --input x="$tmp/lenet5.x.npy" --weights "$tmp/w.safetensors" --output probs="$tmp/lw.cpu.npy"
expect 0 "build lenet5 --target cuda --weights" -- "$KILN" build models/lenet5.kiln \
  --target cuda --weights "$tmp/w.safetensors" -o "$tmp/lenet5w"
absent "the build's temporaries" "$tmp/lenet5w.params"
expect 0 "the lenet5 program with built-in weights" -- "${fake[@]}" "$tmp/lenet5w" \
  --input x="$tmp/lenet5.x.npy" --output probs="$tmp/lw.dev.npy"
same_bytes "built-in weights" "$tmp/lw.cpu.npy" "$tmp/lw.dev.npy"
expect 0 "the lenet5 program with --weights" -- "${fake[@]}" "$tmp/lenet5" \
  --input x="$tmp/lenet5.x.npy" --weights "$tmp/w.safetensors" --output probs="$tmp/lw2.dev.npy"
same_bytes "the program's --weights" "$tmp/lw.cpu.npy" "$tmp/lw2.dev.npy"

# any number of rows (100 = 64 + a zero-padded 36): a CPU program's outputs
expect 0 "100 rows" -- "$KILN" run models/mlp.kiln -D N=100 --random-inputs --seed 5 \
  --output x="$tmp/x100.npy"
expect 0 "build mlp for the CPU" -- "$KILN" build models/mlp.kiln --keep-denormals \
  -o "$tmp/mlp_cpu"
expect 0 "the CPU program, 100 rows" -- "$tmp/mlp_cpu" --input x="$tmp/x100.npy" \
  --output probs="$tmp/p100.cpu.npy"
expect 0 "the CUDA program, 100 rows" -- "${fake[@]}" "$tmp/mlp" --input x="$tmp/x100.npy" \
  --output probs="$tmp/p100.dev.npy"
contains "$err" "wrote probs (f32[100, 10])"
same_bytes "100 rows in two chunks" "$tmp/p100.cpu.npy" "$tmp/p100.dev.npy"

# --- no device ----------------------------------------------------------------------
expect 1 "no driver" -- env KILN_LIBCUDA=/nonexistent/libcuda.so.1 "$tmp/mlp" \
  --input x="$tmp/mlp.x.npy" --output probs="$tmp/nodev.npy"
contains "$err" "mlp: error: no CUDA device found (/nonexistent/libcuda.so.1: cannot open"
absent "no device: no output" "$tmp/nodev.npy"
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  echo "skipped: the program without KILN_LIBCUDA (this machine has libcuda.so.1)"
else
  expect 1 "no libcuda.so.1" -- env -u KILN_LIBCUDA "$tmp/mlp" --input x="$tmp/mlp.x.npy" \
    --output probs="$tmp/nodev.npy"
  contains "$err" "mlp: error: no CUDA device found (libcuda.so.1: cannot open"
  absent "no libcuda: no output" "$tmp/nodev.npy"
fi

# the CUBIN for the fake's sm_80 is what the driver gets without
# KILN_CUDA_IMAGE=source; the fake cannot load it
expect 1 "a CUBIN for the fake device" -- env KILN_LIBCUDA="$FAKE" "$tmp/mlp" \
  --input x="$tmp/mlp.x.npy" --output probs="$tmp/cubin.npy"
contains "$err" "mlp: error: running mlp on kiln fake device: loading the CUDA module: CUDA_ERROR_INVALID_IMAGE"
absent "an image the driver cannot load: no output" "$tmp/cubin.npy"

# no image for the device: a CUBIN runs on its architecture and later minor
# versions of it only (sm_86 not on the fake's sm_80), and there is no PTX
expect 0 "build mlp --arch sm_86,sm_90" -- "$KILN" build models/mlp.kiln --target cuda \
  --arch sm_86,sm_90 -o "$tmp/mlp86"
expect 1 "no image for the device" -- env KILN_LIBCUDA="$FAKE" "$tmp/mlp86" \
  --input x="$tmp/mlp.x.npy"
contains "$err" "mlp86: error: kiln fake device is sm_80, but the program has sm_86, sm_90 CUBINs only: rebuild it with kiln build --target cuda --arch sm_80"

# a failing launch is named (the last one of the inference step)
kernel=$(sed -n 's/^launch \([A-Za-z0-9_]*\) .*/\1/p' "$tmp/lenet5.strings" | tail -n 1)
expect 1 "a failing launch" -- env FAKE_CUDA_FAIL="$kernel" "${fake[@]}" "$tmp/lenet5" \
  --input x="$tmp/lenet5.x.npy" --output probs="$tmp/failed.npy"
contains "$err" "lenet5: error: running lenet5 on kiln fake device: kernel $kernel: CUDA_ERROR_LAUNCH_FAILED"
absent "a failing launch: no output" "$tmp/failed.npy"

# a device too small for the program
expect 1 "a device out of memory" -- env FAKE_CUDA_MEM=1000000 "${fake[@]}" "$tmp/lenet5" \
  --input x="$tmp/lenet5.x.npy" --output probs="$tmp/oom.npy"
contains "$err" "lenet5: error: running lenet5 on kiln fake device: allocating"
contains "$err" "bytes on the CUDA device: CUDA_ERROR_OUT_OF_MEMORY: out of memory"
absent "out of device memory: no output" "$tmp/oom.npy"

# --- bad inputs and options, as in CPU programs ----------------------------------------
expect 1 "an input of the wrong shape" -- "${fake[@]}" "$tmp/lenet5" \
  --input x="$tmp/mlp.x.npy" --output probs="$tmp/bad.npy"
contains "$err" "lenet5: error: $tmp/mlp.x.npy: input x must be f32[64, 1, 28, 28] with any number of rows"
absent "a bad input: no output" "$tmp/bad.npy"
expect 1 "a missing input file" -- "${fake[@]}" "$tmp/mlp" --input x="$tmp/none.npy" \
  --output probs="$tmp/bad.npy"
absent "a missing input: no output" "$tmp/bad.npy"
expect 1 "a missing input" -- "${fake[@]}" "$tmp/mlp" --output probs="$tmp/bad.npy"
contains "$err" "input 'x' (f32[64, 784]) is needed: give --input x=FILE.npy"
expect 1 "an unknown output" -- "${fake[@]}" "$tmp/mlp" --input x="$tmp/mlp.x.npy" \
  --output logits="$tmp/bad.npy"
contains "$err" "model mlp has no output named 'logits'"
expect 2 "an unknown option" -- "${fake[@]}" "$tmp/mlp" --frobnicate
expect 2 "train in an inference-only program" -- "${fake[@]}" "$tmp/mlp" train
contains "$err" "this program was built without training"
absent "bad options: no output" "$tmp/bad.npy"

# --- train on the device: a CPU program's results -----------------------------------
# tests/data/small.kiln (a classifier) and a regression on f32 targets, on
# toy data; the CPU programs keep subnormals, as CUDA code does.
d="$tmp/data"
mkdir -p "$d/reg"
"$PY" tests/data/make_toy.py "$d" --targets "$d/reg"
train_both() { # train_both NAME MODEL DATA METRIC [train options]: the device's = the CPU's
  local name=$1 model=$2 data=$3 metric=$4
  shift 4
  expect 0 "build $name --target cuda --train" -- "$KILN" build "$model" --target cuda --train \
    -o "$tmp/${name}_cu"
  contains "$err" "inference + training step on a CUDA device"
  expect 0 "build $name --train for the CPU" -- "$KILN" build "$model" --train --keep-denormals \
    -o "$tmp/${name}_cpu"
  expect 0 "the $name CPU program trains" -- "$tmp/${name}_cpu" train --data "$data" \
    --save "$tmp/$name.cpu.safetensors" "$@"
  grep -o "$metric [0-9.%]*" "$err" >"$tmp/$name.cpu.metric"
  expect 0 "the $name CUDA program trains on the fake device" -- "${fake[@]}" "$tmp/${name}_cu" \
    train --data "$data" --save "$tmp/$name.cu.safetensors" "$@"
  grep -o "$metric [0-9.%]*" "$err" >"$tmp/$name.cu.metric"
  same_bytes "$name: train --save on the device" "$tmp/$name.cpu.safetensors" \
    "$tmp/$name.cu.safetensors"
  if [ "$(wc -l <"$tmp/$name.cu.metric")" -ge 2 ]; then
    same_bytes "$name: the device's $metric per epoch" "$tmp/$name.cpu.metric" "$tmp/$name.cu.metric"
  else
    echo "FAIL: $name: the CUDA program printed no $metric per epoch"; fails=$((fails + 1))
  fi
}
train_both small tests/data/small.kiln "$d" "test accuracy"
train_both reg tests/data/reg.kiln "$d/reg" "test loss" --epochs 3
# resumed from the file of its first epoch: the same three epochs
expect 0 "one epoch on the device" -- "${fake[@]}" "$tmp/small_cu" train --data "$d" --epochs 1 \
  --save "$tmp/small1.safetensors"
expect 0 "two more, resumed on the device" -- "${fake[@]}" "$tmp/small_cu" train --data "$d" \
  --resume "$tmp/small1.safetensors" --save "$tmp/small3.safetensors"
same_bytes "small: resumed on the device" "$tmp/small.cpu.safetensors" "$tmp/small3.safetensors"
expect 0 "small_cu train --help" -- "${fake[@]}" "$tmp/small_cu" train --help
contains "$out" "Runs on CUDA device 0"
expect 1 "train without a device" -- env KILN_LIBCUDA=/nonexistent/libcuda.so.1 "$tmp/small_cu" \
  train --data "$d" --save "$tmp/nodev.safetensors"
contains "$err" "small_cu: error: no CUDA device found"
absent "train without a device: no --save file" "$tmp/nodev.safetensors"
# a failing launch of the training step is named, and nothing is saved
strings "$tmp/small_cu" >"$tmp/small_cu.strings"
kernel=$(sed -n 's/^launch \(train_[A-Za-z0-9_]*\) .*/\1/p' "$tmp/small_cu.strings" | tail -n 1)
expect 1 "a failing training launch" -- env FAKE_CUDA_FAIL="$kernel" "${fake[@]}" "$tmp/small_cu" \
  train --data "$d" --save "$tmp/failed.safetensors"
contains "$err" "small_cu: error: running small on kiln fake device: kernel $kernel: CUDA_ERROR_LAUNCH_FAILED"
absent "a failing training launch: no --save file" "$tmp/failed.safetensors"
kernel=$(sed -n 's/^launch \(infer_[A-Za-z0-9_]*\) .*/\1/p' "$tmp/small_cu.strings" | tail -n 1)
expect 1 "a failing launch scoring the test set" -- env FAKE_CUDA_FAIL="$kernel" "${fake[@]}" \
  "$tmp/small_cu" train --data "$d" --save "$tmp/failed.safetensors"
contains "$err" "small_cu: error: running small on kiln fake device: kernel $kernel: CUDA_ERROR_LAUNCH_FAILED"
absent "a failing launch scoring the test set: no --save file" "$tmp/failed.safetensors"

finish cuda_build
