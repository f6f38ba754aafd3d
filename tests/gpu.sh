#!/usr/bin/env bash
# gpu.sh: the CUDA backend on a real GPU, when the machine has one.
#
# Everything else that tests the CUDA backend runs without a GPU (the host
# emulator, NVRTC, the fake driver: test_cuda*, cuda_run.sh); this script
# is what runs on a machine with an NVIDIA GPU and its driver, through the
# real libcuda.so.1 and the CUBINs NVRTC made (no KILN_CUDA_IMAGE):
#   - every model of models/ (both of dcgan.kiln; the ImageNet-sized two at
#     batch 1): `kiln run --target cuda` writes every output, compared with
#     the CPU's on the same seeded inputs and parameters: equal within
#     1e-5 relative (bit for bit is expected except where CUDA's logf,
#     sinf, ... differ from glibc's in the last bits: the count of
#     bit-equal outputs is printed);
#   - every op: tests/op_cases.h's cases (the emulator's and LLVM's op
#     tests) as models, forward on their inputs and backward (their f32
#     inputs as parameters, d sum(y * y) / d each), the same way;
#   - gradients (`--grad`) of mlp, lenet5 and resnet_small, the same way;
#   - `kiln train --target cuda` two epochs of a small model: the same loss
#     and accuracy line as the CPU;
#   - a lenet5 program built with --target cuda, against kiln run on the CPU;
#     a small model's --train program, two epochs: the CPU program's loss and
#     accuracy line;
#   - `kiln bench --target cuda` on mlp and lenet5 (the two builds agree).
# Without a device it prints why and exits 77, which ctest reports as a
# skipped test (SKIP_RETURN_CODE), so a run without a GPU says so.
#
# Usage: tests/gpu.sh path/to/kiln
set -uo pipefail
source "$(dirname "$0")/sh_helpers.sh"

# --- is there a device? ---------------------------------------------------------
if ! "$KILN" run models/mlp.kiln --random-inputs --target cuda >"$out" 2>"$err"; then
  why=$(grep -m 1 -oE "no CUDA device found.*|.*NVRTC.*" "$err")
  if [ -n "$why" ]; then
    echo "SKIPPED: no GPU to run on: $why"
    exit 77
  fi
  echo "FAIL: kiln run --target cuda:"
  sed 's/^/    /' "$err" | tail -n 8
  exit 1
fi
echo "ok: a device: $(grep -m 1 -o 'for .*(sm_[0-9]*)' "$err" || echo '(see kiln run -v)')"

# close A.npy B.npy WHAT: same shape and dtype, within 1e-5 relative; says
# whether bit for bit
close() {
  local how
  if how=$("$PY" - "$1" "$2" <<'PY'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
if a.tobytes() == b.tobytes():
    print("bit for bit")
else:
    d = float(np.max(np.abs(a.astype(np.float64) - b)))
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True), d
    print("within 1e-5 (max difference %.3g)" % d)
PY
  ); then
    echo "ok: $3: $how"
  else
    echo "FAIL: $3 differs from the CPU's: $how"
    fails=$((fails + 1))
  fi
}

# run_both WHAT ARGS...: kiln run on the CPU and on the device, every output
# named in the CPU's printed summary written and compared
run_both() {
  local what=$1
  shift
  expect 0 "$what on the CPU" -- "$KILN" run "$@" || return
  local outs=() names
  names=$(sed -n 's/^\([A-Za-z_][A-Za-z0-9_.]*\): [fi]32\[.*/\1/p' "$out")
  for n in $names; do
    outs+=(--output "$n=$tmp/$what.$n.cpu.npy")
  done
  expect 0 "$what, outputs on the CPU" -- "$KILN" run "$@" "${outs[@]}" || return
  expect 0 "$what --target cuda" -- "$KILN" run "$@" --target cuda "${outs[@]//.cpu./.gpu.}" ||
    return
  for n in $names; do
    close "$tmp/$what.$n.cpu.npy" "$tmp/$what.$n.gpu.npy" "$what: $n"
  done
}

# --- every model -----------------------------------------------------------------
for f in models/*.kiln; do
  m=$(basename "$f" .kiln)
  case $m in
  dcgan)
    run_both dcgan_g "$f" --model dcgan_g --random-inputs --seed 3
    run_both dcgan_d "$f" --model dcgan_d --random-inputs --seed 3
    ;;
  vgg11 | resnet50) run_both "$m" "$f" -D N=1 --random-inputs --seed 3 ;;
  *) run_both "$m" "$f" --random-inputs --seed 3 ;;
  esac
done

# --- every op: tests/op_cases.h's cases as models (tests/op_models.py) ---------------
# forward, on the case's input files; backward, its f32 inputs as parameters
# and d sum(y * y) / d each of them
mkdir -p "$tmp/ops"
if ! ops=$("$PY" tests/op_models.py "$tmp/ops") || [ -z "$ops" ]; then
  echo "FAIL: tests/op_models.py made no models of tests/op_cases.h"
  fails=$((fails + 1))
fi
for k in $ops; do
  m=$tmp/ops/op$k
  ins=()
  for f in "$m".*.npy; do
    n=${f#"$m".}
    ins+=(--input "${n%.npy}=$f")
  done
  run_both "op$k" "$m.kiln" "${ins[@]}"
  "$PY" -c "import numpy, sys; sys.exit(numpy.load(sys.argv[1]).dtype != numpy.float32)" \
    "$tmp/op$k.y.cpu.npy" || continue # an i32 y has no gradient
  ps=$(sed -n 's/^  param \([a-z_0-9]*\):.*/\1/p' "$m.back.kiln")
  grads=()
  for p in $ps; do
    grads+=(--grad "$p=$tmp/op$k.$p.grad.cpu.npy")
  done
  [ -n "$ps" ] || continue
  expect 0 "op$k backward" -- "$KILN" run "$m.back.kiln" --random-inputs --seed 5 "${grads[@]}" ||
    continue
  expect 0 "op$k backward --target cuda" -- "$KILN" run "$m.back.kiln" --random-inputs --seed 5 \
    "${grads[@]//.cpu./.gpu.}" --target cuda || continue
  for p in $ps; do
    close "$tmp/op$k.$p.grad.cpu.npy" "$tmp/op$k.$p.grad.gpu.npy" "op$k: d loss / d $p"
  done
done

# --- gradients: the training-mode graph and its backward pass ------------------------
for m in mlp lenet5 resnet_small; do
  expect 0 "$m: its first parameter" -- "$KILN" init models/$m.kiln -o "$tmp/$m.safetensors"
  p=$("$PY" -c "import json, struct, sys; f = open(sys.argv[1], 'rb'); \
n = struct.unpack('<Q', f.read(8))[0]; print(sorted(k for k in json.loads(f.read(n)) \
if k != '__metadata__')[0])" "$tmp/$m.safetensors")
  expect 0 "$m --grad $p" -- "$KILN" run models/$m.kiln --random-inputs --seed 5 \
    --grad "$p=$tmp/$m.grad.cpu.npy"
  expect 0 "$m --grad $p --target cuda" -- "$KILN" run models/$m.kiln --random-inputs --seed 5 \
    --grad "$p=$tmp/$m.grad.gpu.npy" --target cuda
  close "$tmp/$m.grad.cpu.npy" "$tmp/$m.grad.gpu.npy" "$m: d loss / d $p"
done

# --- training ------------------------------------------------------------------------
same_line() { # same_line WHAT CPU.txt DEVICE.txt: a run's last line, the same on both
  if cmp -s "$2" "$3"; then
    echo "ok: $1"
  else
    echo "FAIL: $1: $(cat "$3") against the CPU's $(cat "$2")"
    fails=$((fails + 1))
  fi
}
mkdir -p "$tmp/npy"
"$PY" tests/data/make_toy.py "$tmp/npy"
for t in cpu cuda; do
  expect 0 "train 2 epochs, --target $t" -- "$KILN" train tests/data/small.kiln \
    --data "$tmp/npy" --epochs 2 --target $t --keep-denormals --save "$tmp/trained.$t.safetensors"
  tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/trained.$t.txt"
done
same_line "train --target cuda: the CPU's loss and accuracy" "$tmp/trained.cpu.txt" \
  "$tmp/trained.cuda.txt"

# --- a program built with --target cuda: its CUBIN, loaded by the driver -------------
expect 0 "build lenet5 --target cuda" -- "$KILN" build models/lenet5.kiln --target cuda \
  -o "$tmp/lenet5_gpu"
expect 0 "an input" -- "$KILN" run models/lenet5.kiln --random-inputs --seed 6 \
  --output x="$tmp/x.npy"
expect 0 "lenet5 on the CPU, that input" -- "$KILN" run models/lenet5.kiln --input x="$tmp/x.npy" \
  --output probs="$tmp/prog.cpu.npy"
expect 0 "the program on the device" -- "$tmp/lenet5_gpu" --input x="$tmp/x.npy" \
  --output probs="$tmp/prog.gpu.npy"
close "$tmp/prog.cpu.npy" "$tmp/prog.gpu.npy" "lenet5 program (--target cuda)"
# its train command: two epochs of the small model, the CPU program's loss
# and accuracy line
expect 0 "build small --target cuda --train" -- "$KILN" build tests/data/small.kiln --target cuda \
  --train -o "$tmp/small_gpu"
expect 0 "build small --train for the CPU" -- "$KILN" build tests/data/small.kiln --train \
  --keep-denormals -o "$tmp/small_cpu"
for t in cpu gpu; do
  expect 0 "the small $t program trains 2 epochs" -- "$tmp/small_$t" train --data "$tmp/npy" \
    --epochs 2 --save "$tmp/prog_trained.$t.safetensors"
  tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/prog_trained.$t.txt"
done
same_line "a --target cuda --train program: the CPU program's loss and accuracy" \
  "$tmp/prog_trained.cpu.txt" "$tmp/prog_trained.gpu.txt"

# --- kiln bench on the device ------------------------------------------------------------
for m in mlp lenet5; do
  expect 0 "bench $m --target cuda" -- "$KILN" bench models/$m.kiln --target cuda --repeat 5
  contains "$out" "speedup"
done

finish gpu
