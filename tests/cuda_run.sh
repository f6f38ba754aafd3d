#!/usr/bin/env bash
# cuda_run.sh: `kiln run --target cuda` end to end without a GPU, on the fake
# driver (tests/fake_cuda.c: device memory is host memory, and the module's
# CUDA source, which kiln passes as the image under KILN_CUDA_IMAGE=source,
# is compiled by the host C++ compiler with tests/cuda_emu.h and run a
# block at a time).  Everything kiln does for a device runs for real:
# opening it, codegen/cuda/cuda_program.c's module, launches and device
# arena, parameters uploaded once and prepared on the device, inputs copied
# in, outputs copied out.  What a real GPU and NVRTC's CUBIN do is not
# tested here (tests/gpu.sh, on a machine with a GPU).
#
# Checks: mlp, lenet5 and resnet_small compute the CPU's outputs bit for bit
# (random inputs; lenet5 also with --input and --weights files, and --grad
# on mlp); --repeat and -v on the device; `kiln train --target cuda` saves
# the CPU's parameters and optimizer state bit for bit (and resumes; also a
# language model on token ids, and the VAE, whose randn draws on the
# device); the
# error paths: a failing launch named (exit 1, no output file left), an
# image the driver cannot load, no device, --reference with --target cuda.
# `kiln bench --target cuda` (mlp, lenet5, --train, --json; its default
# --fuse, all kinds but row and reduce, and --fuse=all given): both builds
# run and agree, every kernel is timed with the fake's events (the host's
# clock) and reported under the CPU bench's names; a fused kernel that
# computes nothing (FAKE_CUDA_SKIP) is caught as a disagreement.
#
# Usage: tests/cuda_run.sh path/to/kiln path/to/libfake_cuda.so
set -uo pipefail
FAKE=$(realpath "$2")
source "$(dirname "$0")/sh_helpers.sh"

fake=(env KILN_LIBCUDA="$FAKE" KILN_CUDA_IMAGE=source "$KILN")

# --- results: the CPU's, bit for bit ---------------------------------------
# (the CPU's with --keep-denormals: CUDA code keeps subnormals, as kir_eval
# does, where compiled CPU code flushes them by default)
for m in mlp lenet5 resnet_small; do
  expect 0 "run $m on the CPU" -- "$KILN" run models/$m.kiln --random-inputs --seed 4 \
    --keep-denormals --output probs="$tmp/$m.cpu.npy"
  expect 0 "run $m --target cuda" -- "${fake[@]}" run models/$m.kiln --random-inputs \
    --seed 4 --target cuda --output probs="$tmp/$m.cuda.npy"
  contains "$err" "wrote probs (f32["
  same_bytes "$m --target cuda" "$tmp/$m.cpu.npy" "$tmp/$m.cuda.npy"
done

# the summary printed without --output is the CPU's too
expect 0 "run mlp --target cuda, printed" -- "${fake[@]}" run models/mlp.kiln --random-inputs \
  --target cuda
cp "$out" "$tmp/printed.cuda"
expect 0 "run mlp, printed" -- "$KILN" run models/mlp.kiln --random-inputs --keep-denormals
same_bytes "mlp's printed summary" "$tmp/printed.cuda" "$out"

# input and weights from files; parameters are uploaded and prepared once
expect 0 "init lenet5" -- "$KILN" init models/lenet5.kiln --seed 9 -o "$tmp/w.safetensors"
expect 0 "an input file" -- "$KILN" run models/lenet5.kiln --random-inputs --seed 2 \
  --output x="$tmp/x.npy"
expect 0 "run lenet5 with files" -- "$KILN" run models/lenet5.kiln --input x="$tmp/x.npy" \
  --keep-denormals --weights "$tmp/w.safetensors" --output probs="$tmp/lf.cpu.npy"
expect 0 "run lenet5 --target cuda with files, -v, --repeat 2" -- "${fake[@]}" run \
  models/lenet5.kiln --input x="$tmp/x.npy" --weights "$tmp/w.safetensors" --target cuda \
  -v --repeat 2 --output probs="$tmp/lf.cuda.npy"
contains "$err" "for kiln fake device (sm_80)"
contains "$err" "lenet5: 2 runs on the CUDA device"
same_bytes "lenet5 --target cuda with files" "$tmp/lf.cpu.npy" "$tmp/lf.cuda.npy"

# a gradient (the training-mode graph and its backward pass, run once)
expect 0 "run mlp --grad" -- "$KILN" run models/mlp.kiln --random-inputs --keep-denormals \
  --grad h1.weight="$tmp/g.cpu.npy"
expect 0 "run mlp --grad --target cuda" -- "${fake[@]}" run models/mlp.kiln --random-inputs \
  --target cuda --grad h1.weight="$tmp/g.cuda.npy"
same_bytes "mlp --grad --target cuda" "$tmp/g.cpu.npy" "$tmp/g.cuda.npy"

# --- training: steps and updates on the device, the CPU's parameters ---------
if "$PY" -c 'import numpy' 2>/dev/null; then
  mkdir -p "$tmp/npy"
  "$PY" tests/data/make_toy.py "$tmp/npy"
  for t in cpu cuda; do
    expect 0 "train 2 epochs, --target $t" -- env KILN_LIBCUDA="$FAKE" KILN_CUDA_IMAGE=source \
      "$KILN" train tests/data/small.kiln --data "$tmp/npy" --epochs 2 --target $t \
      --keep-denormals --save "$tmp/trained.$t.safetensors"
    tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/trained.$t.txt"
  done
  contains "$tmp/trained.cuda.txt" "test accuracy"
  same_bytes "train --target cuda: parameters and optimizer state" \
    "$tmp/trained.cpu.safetensors" "$tmp/trained.cuda.safetensors"
  same_bytes "train --target cuda: loss and test accuracy" "$tmp/trained.cpu.txt" \
    "$tmp/trained.cuda.txt"
  expect 0 "train --target cuda, resumed" -- "${fake[@]}" train tests/data/small.kiln \
    --data "$tmp/npy" --epochs 3 --target cuda --resume "$tmp/trained.cuda.safetensors" \
    --save "$tmp/resumed.cuda.safetensors"
  expect 0 "train, resumed" -- "$KILN" train tests/data/small.kiln --data "$tmp/npy" \
    --epochs 3 --keep-denormals --resume "$tmp/trained.cpu.safetensors" --save "$tmp/resumed.cpu.safetensors"
  same_bytes "train --target cuda --resume" "$tmp/resumed.cpu.safetensors" \
    "$tmp/resumed.cuda.safetensors"
  # token ids as examples, a row of next tokens as labels (a language model)
  mkdir -p "$tmp/lmd"
  "$PY" - "$tmp/lmd" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(3)
for split, n in (("train", 24), ("test", 8)):
    seq = (rng.integers(0, 16, (n, 1)) + np.arange(5)) % 16
    np.save(f"{sys.argv[1]}/{split}_x.npy", seq[:, :4].astype(np.int32))
    np.save(f"{sys.argv[1]}/{split}_y.npy", seq[:, 1:].astype(np.int32))
PY
  for t in cpu cuda; do
    expect 0 "train a language model on token ids, --target $t" -- env KILN_LIBCUDA="$FAKE" \
      KILN_CUDA_IMAGE=source "$KILN" train models/lm.kiln -D T=4 -D D=8 -D heads=2 -D layers=1 \
      -D vocab=16 --data "$tmp/lmd" --epochs 2 --target $t --keep-denormals \
      --save "$tmp/lm.$t.safetensors"
    tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/lm.$t.txt"
  done
  contains "$tmp/lm.cuda.txt" "test accuracy"
  same_bytes "train lm --target cuda: parameters and optimizer state" "$tmp/lm.cpu.safetensors" \
    "$tmp/lm.cuda.safetensors"
  same_bytes "train lm --target cuda: loss and test accuracy" "$tmp/lm.cpu.txt" "$tmp/lm.cuda.txt"
  # randn's noise, drawn on the device each step (the VAE, without labels)
  for t in cpu cuda; do
    expect 0 "train the VAE, --target $t" -- env KILN_LIBCUDA="$FAKE" KILN_CUDA_IMAGE=source \
      "$KILN" train models/vae.kiln -D N=8 -D D=6 -D hidden=8 -D latent=2 --data "$tmp/npy" \
      --epochs 2 --target $t --keep-denormals --save "$tmp/vae.$t.safetensors"
    tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/vae.$t.txt"
  done
  contains "$tmp/vae.cuda.txt" "test loss"
  same_bytes "train the VAE --target cuda: parameters" "$tmp/vae.cpu.safetensors" \
    "$tmp/vae.cuda.safetensors"
  same_bytes "train the VAE --target cuda: loss and test loss" "$tmp/vae.cpu.txt" "$tmp/vae.cuda.txt"
else
  echo "skipped: train --target cuda (no NumPy to write a dataset)"
fi

# --- errors -----------------------------------------------------------------
# a launch that fails is named, and no output file is left behind
kernel=$("$KILN" build models/lenet5.kiln --target cuda |
  sed -n '/ \* kiln_infer: /,$p' | sed -n 's/^ \*   \([A-Za-z0-9_]*\) <<<.*/\1/p' | sed -n 3p)
if [ -z "$kernel" ]; then
  echo "FAIL: no launch of lenet5's step found in its CUDA source"
  fails=$((fails + 1))
fi
expect 1 "a failing launch" -- env FAKE_CUDA_FAIL="$kernel" "${fake[@]}" run \
  models/lenet5.kiln --random-inputs --target cuda --output probs="$tmp/failed.npy"
contains "$err" "kiln: error: running lenet5 on kiln fake device: kernel $kernel: CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure"
if [ -e "$tmp/failed.npy" ]; then
  echo "FAIL: a failed run left its output file"
  fails=$((fails + 1))
fi
expect 1 "a failing launch, synchronized after each" -- env FAKE_CUDA_FAIL="$kernel" \
  KILN_CUDA_SYNC=1 "${fake[@]}" run models/lenet5.kiln --random-inputs --target cuda
contains "$err" "kernel $kernel: CUDA_ERROR_LAUNCH_FAILED"

# a device too small for the model: exit 1 naming the allocation, no output
# file (and, under ASan, nothing leaked)
expect 1 "a device out of memory" -- env FAKE_CUDA_MEM=100000 "${fake[@]}" run \
  models/mlp.kiln --random-inputs --target cuda --output probs="$tmp/oom.npy"
contains "$err" "kiln: error: compiling mlp for kiln fake device (sm_80): allocating 266240 bytes on the CUDA device: CUDA_ERROR_OUT_OF_MEMORY: out of memory"
if [ -e "$tmp/oom.npy" ]; then
  echo "FAIL: a run out of device memory left its output file"
  fails=$((fails + 1))
fi
expect 1 "a device out of memory, bench" -- env FAKE_CUDA_MEM=100000 "${fake[@]}" bench \
  models/mlp.kiln --target cuda --repeat 2
contains "$err" "CUDA_ERROR_OUT_OF_MEMORY"

# without KILN_CUDA_IMAGE=source kiln hands the driver NVRTC's CUBIN, which
# the fake cannot run (or says NVRTC is missing): either way exit 1, clearly
expect 1 "an image the driver cannot load" -- env KILN_LIBCUDA="$FAKE" "$KILN" run \
  models/mlp.kiln --random-inputs --target cuda
contains "$err" "kiln: error: compiling mlp for kiln fake device (sm_80): "
if ! grep -qF "loading the CUDA module: CUDA_ERROR_INVALID_IMAGE" "$err" &&
  ! grep -qF "built without the CUDA toolkit" "$err"; then
  echo "FAIL: neither the driver's nor NVRTC's reason in:"
  sed 's/^/    /' "$err"
  fails=$((fails + 1))
fi

expect 1 "no device" -- env KILN_LIBCUDA=/nonexistent/libcuda.so.1 "$KILN" run \
  models/mlp.kiln --random-inputs --target cuda --output probs="$tmp/nodev.npy"
contains "$err" "kiln: error: no CUDA device found (/nonexistent/libcuda.so.1: cannot open"
[ -e "$tmp/nodev.npy" ] && { echo "FAIL: no device, yet an output"; fails=$((fails + 1)); }
expect 1 "--reference with --target cuda" -- "${fake[@]}" run models/mlp.kiln \
  --random-inputs --target cuda --reference
contains "$err" "--reference evaluates on the CPU"

# --- bench: fused against unfused on the device ------------------------------
# (small batches and 2 rounds: the fake runs every thread on the host)
for m in mlp lenet5; do
  expect 0 "bench $m --target cuda" -- "${fake[@]}" bench models/$m.kiln --target cuda \
    --repeat 2 --batch 2
  contains "$out" "kiln bench: $m("
  contains "$out" "), inference, on kiln fake device (sm_80), 2 rounds after 2 warm-up"
  contains "$out" "device memory: 1555.2 GB/s peak (memory clock x bus width x 2"
  contains "$out" "results agree: every output within 1e-5 relative"
  contains "$out" "speedup (unfused / fused): "
  # every kernel of each build has its row, its peak fraction at the end
  if "$PY" - "$out" <<'PY'; then echo "ok: $m: every kernel"; else fails=$((fails + 1)); fi
import re, sys
text = open(sys.argv[1]).read()
for build in ("fused (--fuse=eltwise,multi,epilogue,fold,scatter,deriv,const)", "unfused (--fuse=none)"):
    head = re.search(re.escape(build) + r": (\d+) kernels, compiled in", text)
    assert head, build
    rows = text[head.end():].split("sum of the kernels' medians")[0].splitlines()[2:]
    rows = [r for r in rows if r.strip()]
    assert len(rows) == int(head.group(1)) > 0, (build, rows)
    assert all(re.search(r"[0-9.e+-]+%$", r) for r in rows), rows
PY
done

# the CUDA default is all kinds but row, reduce, view and batchsum (one thread per row on a
# device, cli.c); --fuse given is taken as given
expect 0 "bench mlp --target cuda --fuse=all" -- "${fake[@]}" bench models/mlp.kiln --target cuda \
  --repeat 1 --batch 2 --fuse=all
contains "$out" "fused (--fuse=all): "

# --json: the CPU bench's fields, the target and the device; the kernels
# are the CPU bench's (with the CUDA default's kinds), under the same names
expect 0 "bench mlp --train --json" -- "$KILN" bench models/mlp.kiln --train --json \
  --repeat 1 --batch 2 --fuse=eltwise,multi,epilogue,fold,scatter,deriv,const
cp "$out" "$tmp/bench.cpu.json"
expect 0 "bench mlp --train --json --target cuda" -- "${fake[@]}" bench models/mlp.kiln \
  --train --json --repeat 2 --batch 2 --target cuda
if "$PY" - "$out" "$tmp/bench.cpu.json" <<'PY'; then echo "ok: the device bench's json"; else fails=$((fails + 1)); fi
import json, sys
b, cpu = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert b["target"] == "cuda" and cpu["target"] == "cpu", (b["target"], cpu["target"])
assert b["builds"][0]["fuse"] == "eltwise,multi,epilogue,fold,scatter,deriv,const", b["builds"][0]["fuse"]
assert b["device"] == {"name": "kiln fake device", "arch": "sm_80", "peak_gb_per_s": 1555.2}, b
assert b["agree"] is True and b["max_rel_diff"] <= 1e-5 and b["rounds"] == 2, b
assert b["mode"] == "training" and b["constants"]["N"] == "2" and b["speedup"] > 0, b
assert set(b) == set(cpu) | {"device"}, set(b) ^ set(cpu)
for dev, host in zip(b["builds"], cpu["builds"]):
    assert dev["build"] == host["build"] and dev["fuse"] == host["fuse"], (dev, host)
    assert dev["n_kernels"] == len(dev["kernels"]) == host["n_kernels"] > 0, dev
    assert dev["step"]["median_s"] > 0, dev["step"]
    for k, h in zip(dev["kernels"], host["kernels"]):
        assert (k["name"], k["bytes"], k["flops"]) == (h["name"], h["bytes"], h["flops"]), (k, h)
        assert set(k) == set(h) | {"peak_fraction"}, k
        assert k["time"]["min_s"] <= k["time"]["median_s"] and 0 < k["peak_fraction"] < 1, k
fused, unfused = b["builds"]
assert fused["n_kernels"] < unfused["n_kernels"], (fused["n_kernels"], unfused["n_kernels"])
PY

# a fused kernel that computes nothing: the builds disagree (exit 1)
first=$("$KILN" build models/mlp.kiln --target cuda |
  sed -n '/ \* kiln_infer: /,$p' | sed -n 's/^ \*   \([A-Za-z0-9_]*\) <<<.*/\1/p' | sed -n 1p)
expect 1 "bench --target cuda, a fused kernel skipped" -- env FAKE_CUDA_SKIP="$first" \
  "${fake[@]}" bench models/mlp.kiln --target cuda --repeat 1 --batch 2
contains "$err" "kiln: error: the fused and unfused builds of mlp disagree: probs differs by"

finish cuda_run
