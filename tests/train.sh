#!/usr/bin/env bash
# train.sh: `kiln train` and `kiln show --stage grad` as a user runs them.
#
# The headline check: the MLP trained with the reference evaluator on the
# first 5,000 Fashion-MNIST training images for one epoch (seed 1) reaches
# exactly ACCURACY on the 10,000 test images, run after run.
# Also: --save/--resume gives the same result as an uninterrupted run, .npy
# datasets, --batch, the progress output, and the errors.
#
# Usage: tests/train.sh path/to/kiln    (ctest passes the built binary)
set -uo pipefail
source "$(dirname "$0")/sh_helpers.sh"
FMNIST=/usr/share/datasets/fashion-mnist
ACCURACY="test accuracy 75.96%"   # measured (same in -O2 and -O0 ASan builds)

# --- show --stage grad --------------------------------------------------------
expect 0 "show --stage grad" -- "$KILN" show models/mlp.kiln --stage grad
contains "$out" "grad(h1.weight)"
contains "$out" "update h1.weight <- "
contains "$out" "update h1.weight.momentum_buffer <- "
contains "$out" "backward of %"
contains "$out" "saved-for-backward"
expect 0 "show --stage grad as json" -- "$KILN" show models/lenet5.kiln --stage grad --format json
if "$PY" - "$out" <<'PY'; then echo "ok: json marks backward nodes"; else fails=$((fails + 1)); fi
import json, sys
g = json.load(open(sys.argv[1]))
back = [n for n in g["nodes"] if n["backward"]]
assert back and all("grad_of" in n for n in back if n["op"] not in ("input",)), "provenance"
names = {n["name"] for n in g["nodes"]}
assert "grad(c1.weight)" in names and "new(c1.weight)" in names
assert len(g["updates"]) == 3 * 10, len(g["updates"])  # params, Adam's two moments
PY
expect 1 "show --stage grad without a train section" -- "$KILN" show tests/data/no_train.kiln \
  --stage grad
contains "$err" "has no train section"

# --- errors -------------------------------------------------------------------
expect 1 "train without data" -- "$KILN" train models/mlp.kiln
contains "$err" "no data: give --data DIR"
expect 1 "train from a missing folder" -- "$KILN" train models/mlp.kiln --data "$tmp/none"
contains "$err" "none"
expect 2 "train with a bad --epochs" -- "$KILN" train models/mlp.kiln --epochs 0
expect 1 "train a model without a train section" -- "$KILN" train tests/data/no_train.kiln \
  --data "$tmp"
contains "$err" "has no train section"
printf 'model none() {\n  param w: f32[3]\n  loss = mean(w * w)\n}\ntrain none {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/none.kiln"
expect 1 "train a model without inputs" -- "$KILN" train "$tmp/none.kiln" --data "$tmp"
contains "$err" "none.kiln:5:7: error: kiln train needs one or two inputs: the examples (f32, or i32 ids)"
contains "$err" "model none has no input"
printf 'model sc() {\n  input x: f32[]\n  input y: f32[]\n  param w: f32[1]\n  loss = mean((w * x - y) * (w * x - y))\n}\ntrain sc {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/sc.kiln"
expect 1 "train on scalar examples" -- "$KILN" train "$tmp/sc.kiln" --data "$tmp"
contains "$err" "sc.kiln:2:9: error: kiln train: the examples x (f32[]) need a first axis"
printf 'model mis(N = 4) {\n  input x: f32[N, 6]\n  input y: i32[2]\n  output p = dense(x, out=3)\n  loss = cross_entropy(p[0:2], y)\n}\ntrain mis {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/mis.kiln"
expect 1 "train with labels of another batch" -- "$KILN" train "$tmp/mis.kiln" --data "$tmp"
contains "$err" "the labels y (i32[2]) need the examples' first axis (x is f32[4, 6])"
expect 1 "a program with labels of another batch" -- "$KILN" build "$tmp/mis.kiln" --train \
  -o "$tmp/mis"
contains "$err" "kiln build --train: the labels y (i32[2]) need the examples' first axis"
if [ -e "$tmp/mis" ]; then echo "FAIL: a program left by a failed build"; fails=$((fails + 1)); fi
printf 'model three(N = 4) {\n  input a: i32[N]\n  input b: i32[N]\n  input c: i32[N]\n  e = embedding(a + b + c, num=5, features=2)\n  loss = mean(e * e)\n}\ntrain three {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/three.kiln"
expect 1 "train a model with three i32 inputs" -- "$KILN" train "$tmp/three.kiln" --data "$tmp"
contains "$err" "three.kiln:4:9: error: kiln train needs"
contains "$err" "model three has another i32 input 'c'"
printf 'model noisy(N = 4) {\n  input x: f32[N, 6]\n  input t: f32[N, 2]\n  input eps: f32[N, 2]\n  output z = dense(x, out=2) + eps - t\n  loss = mean(z * z)\n}\ntrain noisy {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/noisy.kiln"
expect 1 "train a model with a third input" -- "$KILN" train "$tmp/noisy.kiln" --data "$tmp"
contains "$err" "model noisy has another f32 input 'eps'"

# --- .npy datasets -------------------------------------------------------------
mkdir -p "$tmp/npy"
"$PY" tests/data/make_toy.py "$tmp/npy"
cp tests/data/small.kiln "$tmp/small.kiln"
expect 0 "train on .npy files" -- "$KILN" train "$tmp/small.kiln" --data "$tmp/npy" --reference
contains "$err" "epoch 3/3"
contains "$err" "test accuracy"
expect 0 "--batch" -- "$KILN" train "$tmp/small.kiln" --data "$tmp/npy" --batch 32 --epochs 1
contains "$err" "step 3/3"

# --- without labels: an autoencoder on the examples alone, scored by test loss ------
mkdir -p "$tmp/xonly"
cp "$tmp/npy/train_x.npy" "$tmp/npy/test_x.npy" "$tmp/xonly/"
cat >"$tmp/ae.kiln" <<'KILN'
model ae(N = 8) {
  input x: f32[N, 6]
  output z = dense(x, out=3)
  d = dense(relu(z), out=6) - x
  loss = mean(d * d)
}
train ae {
  minimize  loss
  optimizer adam(lr=0.01)
  epochs    3
}
KILN
# falls_as_reference NAME WHAT [DATA]: 3 epochs of $tmp/NAME.kiln on DATA
# ($tmp/xonly), compiled and with --reference: the test loss falls, within
# 2e-4 of the reference's each epoch.
falls_as_reference() {
  local name=$1 what=$2 data=${3:-$tmp/xonly}
  expect 0 "train $what" -- "$KILN" train "$tmp/$name.kiln" --data "$data"
  contains "$err" "epoch 3/3 loss"
  grep -o 'test loss [0-9.]*' "$err" | awk '{print $3}' >"$tmp/${name}_compiled.txt"
  expect 0 "train $what, --reference" -- "$KILN" train "$tmp/$name.kiln" --data "$data" \
    --reference
  grep -o 'test loss [0-9.]*' "$err" | awk '{print $3}' >"$tmp/${name}_reference.txt"
  if [ "$(wc -l <"$tmp/${name}_compiled.txt")" -eq 3 ] &&
     paste "$tmp/${name}_compiled.txt" "$tmp/${name}_reference.txt" |
     awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-4) bad = 1 } END { exit bad }' &&
     awk 'NR == 1 { first = $1 } END { exit !($1 < first) }' "$tmp/${name}_compiled.txt"; then
    echo "ok: $what: test loss falls, compiled as the reference"
  else
    echo "FAIL: $what: test loss $(tr '\n' ' ' <"$tmp/${name}_compiled.txt") against the" \
      "reference's $(tr '\n' ' ' <"$tmp/${name}_reference.txt")"
    fails=$((fails + 1))
  fi
}
falls_as_reference ae "without labels"
# A VAE-like model drawing its noise with randn, a new sample each step: the
# compiled steps draw the reference's samples (the same test losses).
cat >"$tmp/vae.kiln" <<'KILN'
model vae(N = 8) {
  input x: f32[N, 6]
  mu = dense(x, out=3)
  logvar = dense(x, out=3)
  z = mu + exp(0.5 * logvar) * randn([N, 3])
  d = dense(z, out=6) - x
  loss = mean(d * d) + 0.01 * mean(mu * mu + exp(logvar) - logvar)
}
train vae {
  minimize  loss
  optimizer adam(lr=0.01)
  epochs    3
}
KILN
falls_as_reference vae "a model drawing noise"
# f32 targets as the labels (a regression: two f32 inputs, the first
# declared the examples), scored by the test loss with the targets bound
mkdir -p "$tmp/reg"
"$PY" tests/data/make_toy.py "$tmp/npy" --targets "$tmp/reg"
cat >"$tmp/reg.kiln" <<'KILN'
model reg(N = 8) {
  input x: f32[N, 6]
  input target: f32[N, 2]
  output p = dense(relu(dense(x, out=8)), out=2)
  loss = mean((p - target) * (p - target))
}
train reg {
  minimize  loss
  optimizer adam(lr=0.01)
  epochs    3
}
KILN
falls_as_reference reg "a regression on f32 targets" "$tmp/reg"
expect 1 "f32 targets from an integer file" -- "$KILN" train "$tmp/reg.kiln" --data "$tmp/npy"
contains "$err" "train_y.npy: labels are integers (i32[96]); the model reads f32 targets"
expect 0 "without labels, no full test batch" -- "$KILN" train "$tmp/ae.kiln" \
  --data "$tmp/xonly" --epochs 1 --test-limit 5
if grep -q "test loss" "$err"; then echo "FAIL: a test loss of no batch"; fails=$((fails + 1)); fi
expect 1 "a classifier without its labels' files" -- "$KILN" train "$tmp/small.kiln" \
  --data "$tmp/xonly"
contains "$err" "but not its labels"

# --- token ids: a sequence classifier and a language model ------------------------
# Class c's sequences draw most tokens from 10c .. 10c + 9; the language
# model's sequences count up by one (mod 32), its labels the next tokens.
mkdir -p "$tmp/tok" "$tmp/lmd"
"$PY" - "$tmp/tok" "$tmp/lmd" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(1)
for split, n in (("train", 160), ("test", 42)):
    y = rng.integers(0, 3, n)
    x = np.where(rng.random((n, 8)) < 0.25, rng.integers(0, 30, (n, 8)),
                 y[:, None] * 10 + rng.integers(0, 10, (n, 8)))
    np.save(f"{sys.argv[1]}/{split}_x.npy", x.astype(np.int64))   # int64: loaded as i32
    np.save(f"{sys.argv[1]}/{split}_y.npy", y.astype(np.int32))
    seq = (rng.integers(0, 32, (n, 1)) + np.arange(9)) % 32
    np.save(f"{sys.argv[2]}/{split}_x.npy", seq[:, :8].astype(np.int32))
    np.save(f"{sys.argv[2]}/{split}_y.npy", seq[:, 1:].astype(np.int32))
PY
tok_sizes=(-D T=8 -D D=16 -D heads=2 -D layers=1)
expect 0 "train a sequence classifier on token ids" -- "$KILN" train models/transformer.kiln \
  "${tok_sizes[@]}" -D vocab=30 -D classes=3 --data "$tmp/tok" --epochs 3
grep -o 'test accuracy [0-9.]*' "$err" | awk '{print $3}' >"$tmp/tok_compiled.txt"
expect 0 "the same, --reference" -- "$KILN" train models/transformer.kiln "${tok_sizes[@]}" \
  -D vocab=30 -D classes=3 --data "$tmp/tok" --epochs 3 --reference
grep -o 'test accuracy [0-9.]*' "$err" | awk '{print $3}' >"$tmp/tok_reference.txt"
if [ "$(wc -l <"$tmp/tok_compiled.txt")" -eq 3 ] && cmp -s "$tmp/tok_compiled.txt" "$tmp/tok_reference.txt" &&
   awk 'END { exit !($1 > 80) }' "$tmp/tok_compiled.txt"; then
  echo "ok: token ids: test accuracy above 80%, compiled as the reference"
else
  echo "FAIL: token ids: test accuracy $(tr '\n' ' ' <"$tmp/tok_compiled.txt") against the" \
    "reference's $(tr '\n' ' ' <"$tmp/tok_reference.txt")"
  fails=$((fails + 1))
fi
expect 0 "train a language model (a row of labels per example)" -- "$KILN" train models/lm.kiln \
  "${tok_sizes[@]}" -D vocab=32 --data "$tmp/lmd" --epochs 4 --batch 8
grep -o 'test accuracy [0-9.]*' "$err" | awk '{print $3}' >"$tmp/lm_acc.txt"
if awk 'NR == 1 { first = $1 } END { exit !(NR == 4 && $1 > first && $1 > 50) }' "$tmp/lm_acc.txt"; then
  echo "ok: the language model's per-token test accuracy rises: $(tr '\n' ' ' <"$tmp/lm_acc.txt")"
else
  echo "FAIL: the language model's test accuracy: $(tr '\n' ' ' <"$tmp/lm_acc.txt")"
  fails=$((fails + 1))
fi
expect 1 "ids beyond the embedding table" -- "$KILN" train models/lm.kiln "${tok_sizes[@]}" \
  -D vocab=20 --data "$tmp/lmd"
contains "$err" "id 2"
contains "$err" "is outside 0 .. 19"
expect 1 "a label beyond the class scores" -- "$KILN" train models/transformer.kiln \
  "${tok_sizes[@]}" -D vocab=30 -D classes=2 --data "$tmp/tok"
contains "$err" "label 2 of example"
contains "$err" "is outside 0 .. 1"
expect 1 "labels of another width" -- "$KILN" train models/lm.kiln "${tok_sizes[@]}" -D vocab=32 \
  --data "$tmp/tok"
contains "$err" "an example has 1 label (train split), but input targets (i32[4, 8]) needs 8 per example"
expect 1 "float examples for a token model" -- "$KILN" train models/lm.kiln "${tok_sizes[@]}" \
  -D vocab=32 --data "$tmp/npy"
contains "$err" "train_x.npy: examples are floats (f32[96, 6]); the model reads integer ids"

# --- resume = uninterrupted ------------------------------------------------------
expect 0 "two epochs straight" -- "$KILN" train "$tmp/small.kiln" --data "$tmp/npy" --epochs 2 \
  --save "$tmp/straight.safetensors"
tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/straight.txt"
expect 0 "one epoch, saved" -- "$KILN" train "$tmp/small.kiln" --data "$tmp/npy" --epochs 1 \
  --save "$tmp/half.safetensors"
expect 0 "resumed for the second" -- "$KILN" train "$tmp/small.kiln" --data "$tmp/npy" \
  --epochs 2 --resume "$tmp/half.safetensors" --save "$tmp/resumed.safetensors"
tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //' >"$tmp/resumed.txt"
if cmp -s "$tmp/straight.txt" "$tmp/resumed.txt" &&
   cmp -s "$tmp/straight.safetensors" "$tmp/resumed.safetensors"; then
  echo "ok: resuming gives the same parameters, state and accuracy"
else
  echo "FAIL: resumed run differs"; cat "$tmp/straight.txt" "$tmp/resumed.txt"
  fails=$((fails + 1))
fi
ls "$tmp"/*.tmp.* >/dev/null 2>&1 && { echo "FAIL: temporary files left"; fails=$((fails + 1)); }

# --- --threads is a limit: the first steps pick the count, the results stay ------
# (three epochs: the choice takes 25 steps on 2 threads, 12 an epoch here)
for t in 1 2; do
  expect 0 "three epochs, --threads $t -v" -- "$KILN" train "$tmp/small.kiln" \
    --data "$tmp/npy" --epochs 3 --threads $t -v --save "$tmp/threads$t.safetensors"
  contains "$err" "small: training steps on "
done
contains "$err" " of 2 threads"
contains "$err" ", the fastest of 1 ("
contains "$err" "), 2 at a coarse grain ("
if cmp -s "$tmp/threads1.safetensors" "$tmp/threads2.safetensors"; then
  echo "ok: the same parameters on 1 and 2 threads"
else
  echo "FAIL: the thread count changed the parameters"; fails=$((fails + 1))
fi
expect 0 "run with trained weights (optimizer state ignored quietly)" -- "$KILN" run \
  "$tmp/small.kiln" --weights "$tmp/resumed.safetensors" --random-inputs
if grep -q warning "$err"; then echo "FAIL: warnings about optimizer state"; fails=$((fails + 1)); fi
expect 1 "resume from another model's file" -- "$KILN" train models/mlp.kiln --data "$tmp/npy" \
  --resume "$tmp/half.safetensors"

# --- Fashion-MNIST: the reproducible accuracy -------------------------------------
if [ -d "$FMNIST" ]; then
  for run in 1 2; do
    expect 0 "MLP, 5000 images, one epoch (run $run)" -- "$KILN" train models/mlp.kiln \
      --data "$FMNIST" --reference --limit 5000 --epochs 1 --seed 1
    contains "$err" "$ACCURACY"
  done
else
  echo "SKIP: $FMNIST is missing (apt-get install dataset-fashion-mnist)"
fi

finish training
