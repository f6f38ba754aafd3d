#!/usr/bin/env bash
# cli.sh: the `kiln` driver as a user runs it: exit codes, --help, the three
# show formats, run with .npy files (read back with NumPy), init and
# --weights, that failures never leave partial output files, and fusion
# (--fuse, show --stage fused, bench: that it runs and agrees, never how fast).
#
# Usage: tests/cli.sh path/to/kiln     (ctest passes the built binary)
# Adding a case: call `expect CODE "what" -- kiln args...` and, if needed,
# check the files it wrote; `contains FILE TEXT` checks captured output.
set -uo pipefail
source "$(dirname "$0")/sh_helpers.sh"

absent() { # absent PATH: a failed command must not leave this file
  if [ -e "$1" ] || ls "$(dirname "$1")"/*.tmp.* >/dev/null 2>&1; then
    echo "FAIL: $1 (or a temporary file) exists after a failure"
    fails=$((fails + 1))
  fi
}

have_numpy() { "$PY" -c 'import numpy' 2>/dev/null; }

# --- usage -----------------------------------------------------------------
expect 0 "kiln --help" -- "$KILN" --help
contains "$out" "usage: kiln COMMAND"
for c in check show run init; do
  expect 0 "kiln $c --help" -- "$KILN" $c --help
  contains "$out" "usage: kiln $c"
done
expect 2 "no arguments" -- "$KILN"
expect 2 "unknown command" -- "$KILN" frobnicate models/mlp.kiln
expect 2 "unknown option" -- "$KILN" check models/mlp.kiln --frob
contains "$err" "unknown option '--frob'"
expect 2 "option of another command" -- "$KILN" check models/mlp.kiln --output y=a.npy
expect 2 "no model file" -- "$KILN" check
expect 2 "option without its value" -- "$KILN" check models/mlp.kiln -D
expect 2 "malformed -D" -- "$KILN" check models/mlp.kiln -D N
expect 2 "unknown format" -- "$KILN" show models/mlp.kiln --format yaml
expect 2 "unknown stage" -- "$KILN" show models/mlp.kiln --stage bogus
contains "$err" "unknown stage 'bogus' (available: graph, grad, plan, fused)"
expect 2 "init without -o" -- "$KILN" init models/mlp.kiln

# --- check ------------------------------------------------------------------
expect 0 "check lenet5" -- "$KILN" check models/lenet5.kiln
contains "$out" "model lenet5(N = 64): ok"
contains "$out" "c1                   f32[64, 6, 28, 28]"
contains "$out" "parameters: 61706"
expect 0 "check with -D" -- "$KILN" check models/lenet5.kiln -D N=1
contains "$out" "input   x                f32[1, 1, 28, 28]"
expect 0 "check -DN=2 (attached)" -- "$KILN" check models/lenet5.kiln -DN=2
contains "$out" "f32[2, 1, 28, 28]"
expect 1 "unknown -D constant" -- "$KILN" check models/lenet5.kiln -D M=3
contains "$err" "model 'lenet5' has no constant 'M' (its constants: N)"
# the ImageNet classics at batch 1: the published parameter counts, and the
# FLOP totals test_models.c counts by hand layer by layer (check rounds to 3
# digits; show's JSON has the exact total)
expect 0 "check vgg11 at batch 1" -- "$KILN" check models/vgg11.kiln -D N=1
contains "$out" "parameters: 132863336 in 22 tensors (132863336 trainable)"
contains "$out" "graph: 72 nodes, 15.2G FLOPs per run"
expect 0 "show vgg11 as JSON" -- "$KILN" show models/vgg11.kiln -D N=1 --format json
contains "$out" '"flops": 15239180048,'
expect 0 "check resnet50 at batch 1" -- "$KILN" check models/resnet50.kiln -D N=1
contains "$out" "(25557032 trainable)"
contains "$out" "8.24G FLOPs per run"
expect 0 "show resnet50 as JSON" -- "$KILN" show models/resnet50.kiln -D N=1 --format json
contains "$out" '"flops": 8240002000,'
expect 1 "missing file" -- "$KILN" check "$tmp/nope.kiln"
contains "$err" "nope.kiln"
printf 'model m() {\n  input x: f32[2, 3]\n  output y = relu(x) @ x\n}\n' >"$tmp/bad.kiln"
expect 1 "shape error" -- "$KILN" check "$tmp/bad.kiln"
contains "$err" "bad.kiln:3:22: error: matmul: inner dimensions differ: f32[2, 3] @ f32[2, 3] (3 vs 2)"
contains "$err" "                     ^"
expect 1 "--model that does not exist" -- "$KILN" check models/mlp.kiln --model lenet
contains "$err" "there is no model named 'lenet' (models here: mlp)"
# A model too large for the machine (a 2^20 x 2^20 weight: 4 TiB) is the
# user's error, not an internal one: exit 1 naming the bytes, no program
# left behind.  (Where the kernel lets any allocation succeed,
# vm.overcommit_memory=1, the allocations would not fail: skipped there.
# Under AddressSanitizer, whose allocator aborts on such sizes by default,
# it must return NULL as libc's does.)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"
if [ "$(cat /proc/sys/vm/overcommit_memory 2>/dev/null)" != 1 ]; then
  printf 'model huge() {\n  input x: f32[1, 1048576]\n  output y = dense(x, out=1048576)\n}\n' \
    >"$tmp/huge.kiln"
  expect 1 "build a model too large for memory" -- "$KILN" build "$tmp/huge.kiln" -o "$tmp/huge"
  contains "$err" "kiln: error: huge: out of memory: the parameters need 4398050705408 bytes"
  absent "$tmp/huge"
  expect 1 "run a model too large for memory" -- "$KILN" run "$tmp/huge.kiln" --random-inputs
  contains "$err" "kiln: error: huge: out of memory"
  expect 1 "bench a model too large for memory" -- "$KILN" bench "$tmp/huge.kiln" --repeat 1
  contains "$err" "kiln: error: huge (fused): out of memory"
fi

# --- show -------------------------------------------------------------------
expect 0 "show text" -- "$KILN" show models/lenet5.kiln
contains "$out" "conv2d(%5, %6) stride=1 pad=2"
contains "$out" "models/lenet5.kiln:14:"
expect 0 "show dot" -- "$KILN" show models/lenet5.kiln --format dot
contains "$out" "digraph"
if command -v dot >/dev/null; then
  if dot -Tsvg "$out" >"$tmp/g.svg" 2>"$err" && grep -q "<svg" "$tmp/g.svg"; then
    echo "ok: dot renders the graph"
  else
    echo "FAIL: dot could not render"; fails=$((fails + 1))
  fi
fi
expect 0 "show json to a file" -- "$KILN" show models/lenet5.kiln --format json -o "$tmp/g.json"
if have_numpy; then
  if "$PY" - "$tmp/g.json" <<'PY'; then echo "ok: json has every value's facts"; else fails=$((fails + 1)); fi
import json, sys
g = json.load(open(sys.argv[1]))
assert g["model"] == "lenet5" and g["parameters"] == 61706, g["parameters"]
for n in g["nodes"]:
    for k in ("name", "op", "shape", "dtype", "source", "flops", "bytes"):
        assert k in n, (k, n)
c1 = [n for n in g["nodes"] if n["name"] == "c1"][0]
assert c1["shape"] == [64, 6, 28, 28] and c1["source"]["line"] == 14, c1
assert g["flops"] > 5e7
PY
fi

# --- show --stage plan (unfused: every value its buffer) --------------------------
expect 0 "show --stage plan" -- "$KILN" show models/lenet5.kiln --stage plan --fuse=none
contains "$out" "memplan: 33 values, naive 5.831 MiB -> planned 1.436 MiB (lower bound 1.436 MiB"
contains "$out" "shares bytes with"
expect 0 "show --stage plan --train as json" -- "$KILN" show models/lenet5.kiln --stage plan \
  --train --format json -o "$tmp/plan.json"
if "$PY" - "$tmp/plan.json" <<'PY'; then echo "ok: the plan's json"; else fails=$((fails + 1)); fi
import json, sys
p = json.load(open(sys.argv[1]))
assert p["planned"] <= 1.05 * p["lower_bound"] and 2 * p["planned"] <= p["naive"], p
assert all(v["offset"] % 64 == 0 and v["offset"] + v["bytes"] <= p["planned"] for v in p["values"])
PY
expect 0 "show --stage plan --format svg" -- "$KILN" show models/mlp.kiln --stage plan --format svg
contains "$out" "<svg"
contains "$out" "<rect"
expect 0 "--no-share" -- "$KILN" show models/lenet5.kiln --stage plan --no-share --no-inplace \
  --fuse=none
contains "$out" "planned 5.831 MiB"
expect 0 "--schedule=min-memory" -- "$KILN" show models/lenet5.kiln --stage plan \
  --schedule=min-memory
contains "$out" "schedule: min-memory"
expect 2 "bad --schedule" -- "$KILN" show models/lenet5.kiln --stage plan --schedule=fast
expect 2 "svg is for plans" -- "$KILN" show models/lenet5.kiln --format svg

# --- run ----------------------------------------------------------------------
if have_numpy; then
  "$PY" -c "
import numpy as np
np.save('$tmp/x.npy', np.random.default_rng(0).random((64, 784)))      # float64: converted
np.save('$tmp/x1.npy', np.random.default_rng(1).random((1, 784), dtype=np.float32))
np.save('$tmp/wrong.npy', np.zeros((64, 785), np.float32))
np.save('$tmp/labels.npy', np.arange(64) % 10)                          # int64: converted
"
  expect 0 "run mlp" -- "$KILN" run --reference models/mlp.kiln --input x="$tmp/x.npy" \
    --output probs="$tmp/p.npy"
  "$PY" -c "
import numpy as np
p = np.load('$tmp/p.npy')
assert p.shape == (64, 10) and p.dtype == np.float32
assert abs(p.sum(1) - 1).max() < 1e-5
" && echo "ok: numpy reads the output" || { echo "FAIL: numpy check"; fails=$((fails + 1)); }
  expect 0 "run with -D N=1" -- "$KILN" run models/mlp.kiln -D N=1 --input x="$tmp/x1.npy" \
    --output probs="$tmp/p1.npy"
  expect 0 "run an intermediate value and the loss" -- "$KILN" run models/mlp.kiln \
    --input x="$tmp/x.npy" --input y="$tmp/labels.npy" --output h1="$tmp/h1.npy" \
    --output loss="$tmp/loss.npy"
  "$PY" -c "
import numpy as np
assert np.load('$tmp/h1.npy').shape == (64, 256) and (np.load('$tmp/h1.npy') >= 0).all()
l = np.load('$tmp/loss.npy'); assert l.shape == () and 0 < l < 20
" && echo "ok: intermediate and loss" || { echo "FAIL: intermediate/loss"; fails=$((fails + 1)); }
  expect 1 "wrong input shape" -- "$KILN" run models/mlp.kiln --input x="$tmp/wrong.npy" \
    --output probs="$tmp/never.npy"
  contains "$err" "input x must be f32[64, 784], but the file holds f32[64, 785]"
  absent "$tmp/never.npy"
  expect 0 "the batch size follows the input file" -- "$KILN" run models/mlp.kiln \
    --input x="$tmp/x1.npy"
  contains "$err" "note: N=1, from the shape of"
  contains "$out" "probs: f32[1, 10]"
  expect 1 "a -D given is not overridden" -- "$KILN" run models/mlp.kiln -D N=2 \
    --input x="$tmp/x1.npy"
  contains "$err" "input x must be f32[2, 784], but the file holds f32[1, 784]"
  head -c 100 "$tmp/x.npy" >"$tmp/trunc.npy"
  expect 1 "truncated .npy" -- "$KILN" run models/mlp.kiln --input x="$tmp/trunc.npy" \
    --output probs="$tmp/never.npy"
  contains "$err" "trunc.npy"
  absent "$tmp/never.npy"
  expect 1 "unknown input name" -- "$KILN" run models/mlp.kiln --input z="$tmp/x.npy"
  contains "$err" "model mlp has no input 'z' (its inputs: x, y)"
  expect 1 "output into a missing directory" -- "$KILN" run models/mlp.kiln \
    --input x="$tmp/x.npy" --output probs="$tmp/no/such/dir/p.npy"
  absent "$tmp/no/such/dir/p.npy"
fi
expect 1 "missing input" -- "$KILN" run models/mlp.kiln
contains "$err" "input 'x' (f32[64, 784]) is needed: give --input x=FILE.npy or use --random-inputs"
expect 0 "random inputs" -- "$KILN" run models/lenet5.kiln --random-inputs -D N=2
contains "$out" "probs: f32[2, 10]"
compiled_kernels() { sed -n 's/^lenet5: compiled \([0-9]*\) kernels in .*/\1/p' "$err"; }
expect 0 "-v prints the plan" -- "$KILN" run models/lenet5.kiln --random-inputs -D N=2 -v \
  --verify-plan --output probs="$tmp/compiled.npy"
contains "$err" "lenet5: compiled "
contains "$err" "memplan: "
k_fused=$(compiled_kernels)
expect 0 "-v, unfused: every value its buffer" -- "$KILN" run models/lenet5.kiln --random-inputs \
  -D N=2 -v --verify-plan --fuse=none --output probs="$tmp/unfused.npy"
contains "$err" "memplan: 33 values"
k_unfused=$(compiled_kernels)
if [ -n "$k_fused" ] && [ -n "$k_unfused" ] && [ "$k_fused" -lt "$k_unfused" ]; then
  echo "ok: fused, the step compiles fewer kernels ($k_fused, unfused $k_unfused)"
else
  echo "FAIL: kernels compiled: fused '$k_fused', unfused '$k_unfused'"; fails=$((fails + 1))
fi
expect 0 "the reference evaluator, planned" -- "$KILN" run models/lenet5.kiln --reference \
  --random-inputs -D N=2 --verify-plan --output probs="$tmp/planned.npy"
expect 0 "the reference evaluator, --no-plan" -- "$KILN" run models/lenet5.kiln --reference \
  --random-inputs -D N=2 --no-plan --output probs="$tmp/unplanned.npy"
if cmp -s "$tmp/planned.npy" "$tmp/unplanned.npy"; then echo "ok: plan on = plan off"; else
  echo "FAIL: planned and unplanned runs differ"; fails=$((fails + 1)); fi
if have_numpy; then
  "$PY" -c "
import numpy as np
a, b = np.load('$tmp/compiled.npy'), np.load('$tmp/planned.npy')
assert np.allclose(a, b, rtol=1e-5, atol=1e-6), abs(a - b).max()
a = np.load('$tmp/unfused.npy')
assert np.allclose(a, b, rtol=1e-5, atol=1e-6), abs(a - b).max()
" && echo "ok: compiled (fused, unfused) = reference" || {
    echo "FAIL: compiled and reference differ"; fails=$((fails + 1)); }
fi
expect 0 "--repeat times the step" -- "$KILN" run models/lenet5.kiln --random-inputs -D N=2 \
  --repeat 5 --output probs="$tmp/repeated.npy"
contains "$err" "lenet5: 5 runs on compiled code on "
contains "$err" ": median "
if cmp -s "$tmp/repeated.npy" "$tmp/compiled.npy"; then echo "ok: --repeat keeps the outputs"; else
  echo "FAIL: --repeat changed the outputs"; fails=$((fails + 1)); fi
# --repeat first times the step at 1 and 2 threads and keeps the faster; the
# outputs are the same bits on either
expect 0 "--repeat on at most 2 threads" -- "$KILN" run models/lenet5.kiln --random-inputs -D N=2 \
  --repeat 3 --threads 2 --output probs="$tmp/repeated2.npy"
contains "$err" " of 2 threads"
contains "$err" ", the fastest of 1 ("
contains "$err" "), 2 ("
contains "$err" "), 2 at a coarse grain ("
expect 0 "--repeat on 1 thread" -- "$KILN" run models/lenet5.kiln --random-inputs -D N=2 \
  --repeat 3 --threads 1 --output probs="$tmp/repeated1.npy"
contains "$err" "lenet5: 3 runs on compiled code on 1 thread: median"
for t in 1 2; do
  if cmp -s "$tmp/repeated$t.npy" "$tmp/compiled.npy"; then
    echo "ok: --repeat --threads $t keeps the outputs"
  else echo "FAIL: --repeat --threads $t changed the outputs"; fails=$((fails + 1)); fi
done
expect 2 "--repeat 0" -- "$KILN" run models/mlp.kiln --random-inputs --repeat 0
contains "$err" "--repeat needs a positive integer, got '0'"
expect 1 "unknown output" -- "$KILN" run models/mlp.kiln --random-inputs --output nope="$tmp/n.npy"
absent "$tmp/n.npy"

# --- init and --weights ------------------------------------------------------
expect 0 "init" -- "$KILN" init models/lenet5.kiln -D N=2 --seed 3 -o "$tmp/w.safetensors"
expect 0 "run with weights" -- "$KILN" run models/lenet5.kiln -D N=2 --random-inputs \
  --seed 3 --weights "$tmp/w.safetensors" --output probs="$tmp/pw.npy"
expect 0 "run with the same seed" -- "$KILN" run models/lenet5.kiln -D N=2 --random-inputs \
  --seed 3 --output probs="$tmp/ps.npy"
if cmp -s "$tmp/pw.npy" "$tmp/ps.npy"; then echo "ok: init file = seeded init"; else
  echo "FAIL: weights from init differ from seeded initialization"; fails=$((fails + 1)); fi
expect 0 "weights are used, not the seed" -- "$KILN" run models/lenet5.kiln -D N=2 \
  --random-inputs --weights "$tmp/w.safetensors" --output probs="$tmp/pw0.npy"
expect 0 "seed 0 without weights" -- "$KILN" run models/lenet5.kiln -D N=2 --random-inputs \
  --output probs="$tmp/p0.npy"
if cmp -s "$tmp/pw0.npy" "$tmp/p0.npy"; then
  echo "FAIL: --weights made no difference"; fails=$((fails + 1)); fi
expect 1 "weights of another model" -- "$KILN" run models/mlp.kiln --random-inputs \
  --weights "$tmp/w.safetensors"
contains "$err" "parameter h1.weight: expected f32[256, 784], the file does not have it"
printf 'not a safetensors file' >"$tmp/junk.safetensors"
expect 1 "malformed weights" -- "$KILN" run models/mlp.kiln --random-inputs \
  --weights "$tmp/junk.safetensors"
contains "$err" "junk.safetensors"

# --- run --grad: d loss / d parameter, no update ---------------------------------
expect 2 "--grad without a file" -- "$KILN" run models/mlp.kiln --grad h1.weight
contains "$err" "--grad needs PARAM=FILE.npy, got 'h1.weight'"
expect 2 "--grad given twice" -- "$KILN" run models/mlp.kiln --grad h1.bias=a.npy \
  --grad h1.bias=b.npy
expect 1 "--grad of an unknown parameter" -- "$KILN" run models/lenet5.kiln -D N=2 \
  --random-inputs --grad c1.bias="$tmp/g_ok.npy" --grad nope="$tmp/g_never.npy"
contains "$err" "--grad nope: model lenet5 has no parameter 'nope' (its trainable parameters: c1.weight, c1.bias,"
absent "$tmp/g_ok.npy"
expect 1 "--grad of a running statistic" -- "$KILN" run models/resnet_small.kiln -D N=2 \
  --random-inputs --grad h.batchnorm.running_var="$tmp/g_never.npy"
contains "$err" "is not trained (trainable=false), so it has no gradient"
expect 1 "--grad without a train section" -- "$KILN" run tests/data/no_train.kiln \
  --random-inputs --grad w="$tmp/g_never.npy"
contains "$err" "model plain has no train section"
absent "$tmp/g_never.npy"
expect 0 "--grad prints the loss" -- "$KILN" run models/lenet5.kiln -D N=2 --random-inputs \
  --seed 3 --weights "$tmp/w.safetensors" --grad c1.weight="$tmp/gc.npy" \
  --grad logits.bias="$tmp/gb.npy" --grad f5.weight="$tmp/gf.npy"
contains "$out" "loss: f32[]"
contains "$err" "wrote grad(c1.weight) (f32[6, 1, 5, 5]) to $tmp/gc.npy"
expect 0 "--grad on the reference evaluator, with outputs" -- "$KILN" run models/lenet5.kiln \
  -D N=2 --random-inputs --seed 3 --weights "$tmp/w.safetensors" --reference \
  --grad c1.weight="$tmp/rc.npy" --grad logits.bias="$tmp/rb.npy" \
  --grad f5.weight="$tmp/rf.npy" --output probs="$tmp/gp.npy" --output loss="$tmp/gl.npy"
expect 0 "the labels of that run" -- "$KILN" run models/lenet5.kiln -D N=2 --random-inputs \
  --seed 3 --output y="$tmp/gy.npy"
if have_numpy; then
  # compiled = reference; d loss / d logits.bias = mean(probs - onehot(y)) exactly
  "$PY" - "$tmp" <<'PY' && echo "ok: gradients: compiled = reference = analytic" || {
import sys, numpy as np
t = sys.argv[1]
for a, b in (("gc", "rc"), ("gb", "rb"), ("gf", "rf")):
    x, y = np.load(f"{t}/{a}.npy"), np.load(f"{t}/{b}.npy")
    assert x.shape == y.shape and x.dtype == np.float32, (x.shape, y.shape)
    assert abs(x - y).max() <= 1e-5 * abs(y).max() + 1e-7, (a, abs(x - y).max())
    assert abs(y).max() > 0, b
p, lab = np.load(f"{t}/gp.npy"), np.load(f"{t}/gy.npy")
want = (p - np.eye(10, dtype=np.float32)[lab]).mean(0)
assert abs(np.load(f"{t}/rb.npy") - want).max() < 1e-6, (np.load(f"{t}/rb.npy"), want)
PY
    echo "FAIL: gradients"; fails=$((fails + 1)); }
  # a central finite difference on two weights of c1 (deep in the graph)
  fd_ok=1
  for idx in 0 37; do
    for sign in 1 -1; do
      "$PY" - "$tmp/w.safetensors" "$tmp/w_fd.safetensors" c1.weight $idx $((sign))e-3 <<'PY'
import json, struct, sys
src, dst, name, idx, eps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
import numpy as np
b = bytearray(open(src, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
start = 8 + n + json.loads(b[8:8 + n])[name]["data_offsets"][0] + 4 * idx
v = np.frombuffer(bytes(b[start:start + 4]), np.float32)[0] + np.float32(eps)
b[start:start + 4] = np.float32(v).tobytes()
open(dst, "wb").write(b)
PY
      "$KILN" run models/lenet5.kiln -D N=2 --random-inputs --seed 3 --train --reference \
        --weights "$tmp/w_fd.safetensors" --output loss="$tmp/fd_${idx}_$sign.npy" 2>"$err" || fd_ok=0
    done
  done
  if [ $fd_ok = 1 ] && "$PY" - "$tmp" <<'PY'; then echo "ok: --grad = finite difference"; else
import sys, numpy as np
t = sys.argv[1]
g = np.load(f"{t}/rc.npy").reshape(-1)
for idx in (0, 37):
    fd = (float(np.load(f"{t}/fd_{idx}_1.npy")) - float(np.load(f"{t}/fd_{idx}_-1.npy"))) / 2e-3
    assert abs(fd - g[idx]) <= 1e-2 * abs(g).max(), (idx, fd, g[idx])
PY
    echo "FAIL: --grad against a finite difference"; fails=$((fails + 1)); fi
fi

# --- fusion: --fuse, show --stage fused, bench -------------------------------------
expect 2 "--fuse=bogus" -- "$KILN" show models/lenet5.kiln --stage fused --fuse=bogus
contains "$err" "--fuse must be none, all or a comma list of eltwise, reduce, row, multi, epilogue, fold, scatter, deriv, view, batchsum, const; got 'bogus'"
expect 2 "--fuse with an empty kind" -- "$KILN" run models/mlp.kiln --random-inputs --fuse eltwise,
expect 2 "--fuse where nothing is fused" -- "$KILN" show models/lenet5.kiln --fuse=none
for c in run train build show bench; do
  expect 0 "kiln $c --help tells of --fuse" -- "$KILN" $c --help
  contains "$out" "--fuse=LIST"
done
expect 0 "kiln --help lists bench" -- "$KILN" --help
contains "$out" "  bench   "
# "N nodes in K kernels, M values internal (no buffer)": prints "N K M"
kernel_counts() { sed -n 's/^\([0-9]*\) nodes in \([0-9]*\) kernels, \([0-9]*\) values internal.*/\1 \2 \3/p' "$1"; }
expect 0 "show --stage fused" -- "$KILN" show models/lenet5.kiln --stage fused
contains "$out" "kernel 0: "
contains "$out" "models/lenet5.kiln:14:"
contains "$out" " internal"
contains "$out" " stored"
contains "$out" "ends at probs: a result of the step"
read -r nodes fused internal <<<"$(kernel_counts "$out")"
expect 0 "show --stage fused --fuse=none" -- "$KILN" show models/lenet5.kiln --stage fused \
  --fuse=none
read -r nodes_u unfused internal_u <<<"$(kernel_counts "$out")"
expect 0 "show --stage fused --fuse=eltwise" -- "$KILN" show models/lenet5.kiln --stage fused \
  --fuse=eltwise
read -r _ eltwise _ <<<"$(kernel_counts "$out")"
if [ -n "${fused:-}" ] && [ "$nodes" = "$nodes_u" ] && [ "$unfused" = "$nodes_u" ] &&
  [ "$internal_u" = 0 ] && [ "$internal" -gt 0 ] && [ "$fused" -lt "$unfused" ] &&
  [ "$fused" -le "$eltwise" ] && [ "$eltwise" -le "$unfused" ]; then
  echo "ok: fusion makes fewer kernels ($fused, eltwise only $eltwise, unfused $unfused)"
else
  echo "FAIL: kernels: all '${fused:-}', eltwise '${eltwise:-}', none '${unfused:-}' of '${nodes:-}' nodes"
  fails=$((fails + 1))
fi
expect 0 "show --stage fused --train --format dot" -- "$KILN" show models/lenet5.kiln \
  --stage fused --train --format dot -D N=2
contains "$out" "subgraph cluster_0 {"
contains "$out" "(the backward pass needs it)"
if command -v dot >/dev/null; then
  if dot -Tsvg "$out" >"$tmp/k.svg" 2>"$err" && grep -q "<svg" "$tmp/k.svg"; then
    echo "ok: dot renders the kernels"
  else
    echo "FAIL: dot could not render the kernels"; fails=$((fails + 1))
  fi
fi
expect 0 "show --stage fused --train: the LSTM's split gradients scatter" -- "$KILN" show \
  models/lstm.kiln --stage fused --train
contains "$out" "(scatter, 21 nodes)"
expect 0 "show --stage fused --train, every kind but scatter" -- "$KILN" show models/lstm.kiln \
  --stage fused --train --fuse=eltwise,reduce,multi,epilogue,row
contains "$out" "slice_back makes a kernel of its own; scatter fusion is off (--fuse)"
expect 0 "show --stage fused --train: gelu's derivative beside gelu" -- "$KILN" show \
  models/transformer.kiln --stage fused --train
contains "$out" "gelu's derivative for the backward pass: computed in gelu's kernel"
contains "$out" ": gelu t81 (eltwise, 4 nodes, 2 outputs)"
# kind view: attention's 8 head transposes a layer, forward and backward, are the strides of
# its 6 batched matmuls, 2 views each (an operand read, or the result written)
views_of() { grep -c "through transpose \[0, 2, 1, 3\]: folded into its strides (kind view)" "$1"; }
expect 0 "show --stage fused --train: head transposes folded into the matmuls" -- "$KILN" show \
  models/transformer.kiln --stage fused --train
contains "$out" "reads t47 through transpose [0, 2, 1, 3]: folded into its strides (kind view)"
if [ "$(views_of "$out")" = 24 ] && ! grep -q "^kernel [0-9]*: transpose t4[0-9] *$" "$out"; then
  echo "ok: 24 views in 2 layers, no head-split kernel"
else
  echo "FAIL: $(views_of "$out") views, not 24"; fails=$((fails + 1))
fi
expect 0 "show --stage fused --train --format json: the views" -- "$KILN" show \
  models/transformer.kiln --stage fused --train --format json
if "$PY" - "$out" <<'PY'; then echo "ok: json lists 12 viewing matmuls"; else
import json, sys
views = [m["views"] for k in json.load(open(sys.argv[1]))["kernels"] for m in k["members"]
         if "views" in m]
assert len(views) == 12 and {"a": [0, 2, 1, 3], "b": [0, 2, 1, 3]} in views, views
PY
  echo "FAIL: json views"; fails=$((fails + 1)); fi
# kind batchsum: the weight gradients of the dense layers on [N, T, D] (q, k, v, proj, fc1,
# fc2: 6 a layer) are summed over N by their matmuls
sums_of() { grep -c "sums its products over batch axes \[0\] as it computes them (kind batchsum)" "$1"; }
expect 0 "show --stage fused --train: weight gradients summed by their matmuls" -- "$KILN" show \
  models/transformer.kiln --stage fused --train
if [ "$(sums_of "$out")" = 12 ]; then echo "ok: 12 batch sums in 2 layers"; else
  echo "FAIL: $(sums_of "$out") batch sums, not 12"; fails=$((fails + 1)); fi
expect 0 "show --stage fused --train --format json: the batch sums" -- "$KILN" show \
  models/transformer.kiln --stage fused --train --format json
if "$PY" - "$out" <<'PY'; then echo "ok: json lists 12 summing matmuls"; else
import json, sys
sums = [m["batch_sum"] for k in json.load(open(sys.argv[1]))["kernels"] for m in k["members"]
        if "batch_sum" in m]
assert len(sums) == 12 and all(s == [0] for s in sums), sums
PY
  echo "FAIL: json batch sums"; fails=$((fails + 1)); fi
for off in "--fuse=eltwise,reduce,multi,epilogue,row,scatter,deriv" "--target cuda"; do
  expect 0 "show --stage fused --train $off: no views" -- "$KILN" show models/transformer.kiln \
    --stage fused --train $off
  if [ "$(views_of "$out")" = 0 ] && [ "$(sums_of "$out")" = 0 ]; then
    echo "ok: no views, no batch sums with $off"
  else
    echo "FAIL: views or batch sums with $off"; fails=$((fails + 1))
  fi
done
# kind const: Adam's hyperparameters and the other scalars elementwise ops read are literals in
# their kernels (show says so where a kernel reads one); with the kind off, kernels again
expect 0 "show --stage fused --train: constants as literals" -- "$KILN" show \
  models/transformer.kiln --stage fused --train --format json
if "$PY" - "$out" <<'PY'; then echo "ok: json lists the literals"; else
import json, sys
d = json.load(open(sys.argv[1]))
lits = {l["name"]: l["value"] for k in d["kernels"] for l in k["literals"]}
assert d["n_literals"] == len(lits) and len(lits) > 100, (d["n_literals"], len(lits))
assert {0.9, 0.999, 1e-05} <= set(lits.values()), sorted(set(lits.values()))
assert not any(k["anchor"] in lits for k in d["kernels"])
PY
  echo "FAIL: json literals"; fails=$((fails + 1)); fi
expect 0 "show --stage fused --train: a literal where a kernel reads it" -- "$KILN" show \
  models/transformer.kiln --stage fused --train
contains "$out" "(the constant 0.999, a literal in the kernel: kind const)"
contains "$out" "constants literals in the kernels reading them (kind const)"
expect 0 "show --stage fused --train --fuse=all but const" -- "$KILN" show \
  models/transformer.kiln --stage fused --train --format json \
  --fuse=eltwise,reduce,multi,epilogue,row,scatter,deriv,view,batchsum
if "$PY" - "$out" <<'PY'; then echo "ok: no literals without const"; else
import json, sys
d = json.load(open(sys.argv[1]))
assert d["n_literals"] == 0 and not any(k["literals"] for k in d["kernels"]), d["n_literals"]
PY
  echo "FAIL: literals with const off"; fails=$((fails + 1)); fi
expect 0 "show --stage fused --train, every kind but deriv" -- "$KILN" show \
  models/transformer.kiln --stage fused --train --fuse=eltwise,reduce,multi,epilogue,row,scatter
if grep -q "gelu's derivative" "$out"; then
  echo "FAIL: gelu's derivative shared with deriv off"; fails=$((fails + 1))
else
  echo "ok: without deriv, gelu_back stays in the backward pass"
fi
contains "$out" ": gelu_back t212 (eltwise"
expect 0 "show --stage fused --train --format json" -- "$KILN" show models/lenet5.kiln \
  --stage fused --train --format json -D N=2 -o "$tmp/k.json"
if "$PY" - "$tmp/k.json" <<'PY'; then echo "ok: the kernels' json"; else fails=$((fails + 1)); fi
import json, sys
k = json.load(open(sys.argv[1]))
assert k["model"] == "lenet5" and k["training"] and k["fuse"] == "all", k["fuse"]
assert k["n_kernels"] == len(k["kernels"]) < k["n_nodes"], (k["n_kernels"], k["n_nodes"])
assert sum(len(g["members"]) for g in k["kernels"]) == k["n_nodes"]
members = [m for g in k["kernels"] for m in g["members"]]
assert sum(m["internal"] for m in members) == k["n_internal"] > 0
for m in members:
    for f in ("name", "op", "shape", "loc", "internal"):
        assert f in m, (f, m)
assert any(m["loc"].startswith("models/lenet5.kiln:") for m in members)
assert all(b["why"] for g in k["kernels"] for b in g["boundaries"])
PY
expect 0 "bench mlp" -- "$KILN" bench models/mlp.kiln --repeat 3
contains "$out" "results agree: every output within 1e-5 relative"
contains "$out" "fused (--fuse=all): "
contains "$out" "unfused (--fuse=none): "
contains "$out" "speedup (unfused / fused): "
# on 2 threads each build's grain is chosen first, and the report names it
expect 0 "bench mlp on 2 threads" -- "$KILN" bench models/mlp.kiln --repeat 2 --threads 2
contains "$out" " grain (step "
contains "$out" " us; at the "
expect 0 "bench mlp --train --json" -- "$KILN" bench models/mlp.kiln --train --json --repeat 3 \
  --batch 8
if "$PY" - "$out" <<'PY'; then echo "ok: the benchmark's json"; else fails=$((fails + 1)); fi
import json, sys
b = json.load(open(sys.argv[1]))
assert b["agree"] is True and b["max_rel_diff"] <= 1e-5, b["max_rel_diff"]
assert b["mode"] == "training" and b["constants"]["N"] == "8" and b["rounds"] == 3, b
assert b["speedup"] > 0
fused, unfused = b["builds"]
assert fused["fuse"] == "all" and unfused["fuse"] == "none"
assert fused["grain"] in (1, 8) and unfused["grain"] in (1, 8), (fused["grain"], unfused["grain"])
assert 0 < fused["n_kernels"] < unfused["n_kernels"] == len(unfused["kernels"])
for k in fused["kernels"] + unfused["kernels"]:
    assert k["name"] and k["bytes"] > 0 and k["time"]["min_s"] <= k["time"]["median_s"], k
assert fused["step"]["median_s"] > 0 and unfused["step"]["median_s"] > 0
PY
# --batch when two constants have the input's first axis (N = heads = 4):
# the one whose change moves the axis is set; a literal axis is refused
expect 0 "bench attention --batch" -- "$KILN" bench models/attention.kiln --json --repeat 1 \
  --batch 6
if "$PY" - "$out" <<'PY'; then echo "ok: --batch picks N over heads"; else fails=$((fails + 1)); fi
import json, sys
b = json.load(open(sys.argv[1]))
assert b["constants"]["N"] == "6" and b["constants"]["heads"] == "4", b["constants"]
PY
cat >"$tmp/literal_batch.kiln" <<'EOF'
model literal(A = 4, B = 4) {
  input x: f32[4, A]
  output y = x * B
}
EOF
expect 1 "bench --batch on a literal first axis" -- "$KILN" bench "$tmp/literal_batch.kiln" \
  --batch 8 --repeat 1
contains "$err" "--batch: no single model constant sizes the first axis of input x"
sed -e 's/A = 4, B = 4/A = 4/' -e 's/x \* B/x * A/' -e 's/f32\[4, A\]/f32[4, 3]/' \
  "$tmp/literal_batch.kiln" >"$tmp/literal_one.kiln"
expect 1 "bench --batch: the one constant of that value does not size it" -- "$KILN" bench \
  "$tmp/literal_one.kiln" --batch 8 --repeat 1
contains "$err" "--batch: no single model constant sizes the first axis of input x"
expect 1 "bench a missing file" -- "$KILN" bench "$tmp/nope.kiln"
contains "$err" "nope.kiln"
expect 1 "bench a model with an error" -- "$KILN" bench "$tmp/bad.kiln"
contains "$err" "bad.kiln:3:22: error: matmul: inner dimensions differ"
expect 1 "bench --train without a train section" -- "$KILN" bench tests/data/no_train.kiln \
  --train --repeat 1
contains "$err" "has no train section"
expect 2 "bench --repeat 0" -- "$KILN" bench models/mlp.kiln --repeat 0

# --- the CUDA target (codegen/cuda; no GPU needed) ---------------------------
# No driver (KILN_LIBCUDA names the library to load, here one that is not
# there, so the check holds on a machine with a GPU too): exit 1, one line.
nodev=(env KILN_LIBCUDA=/nonexistent/libcuda.so.1 "$KILN")
nodev_msg="kiln: error: no CUDA device found (/nonexistent/libcuda.so.1: cannot open shared"
expect 1 "run --target cuda without a device" -- "${nodev[@]}" run models/mlp.kiln \
  --random-inputs --target cuda
contains "$err" "$nodev_msg"
expect 1 "train --target cuda without a device" -- "${nodev[@]}" train models/lenet5.kiln \
  --data "$tmp" --target cuda
contains "$err" "$nodev_msg"
expect 1 "bench --target cuda without a device" -- "${nodev[@]}" bench models/mlp.kiln \
  --target cuda
contains "$err" "$nodev_msg"
expect 2 "an unknown --target" -- "$KILN" run models/mlp.kiln --target gpu
contains "$err" "--target must be cpu or cuda, got 'gpu'"
for c in run train bench build show; do
  expect 0 "kiln $c --help mentions --target" -- "$KILN" $c --help
  contains "$out" "--target cpu|cuda"
done
# the CUDA default --fuse (all kinds but row, reduce, view and batchsum), shown as planned
expect 0 "show --stage fused --target cuda" -- "$KILN" show models/resnet_small.kiln --train \
  --stage fused --target cuda
contains "$out" "(training step), --fuse=eltwise,multi,epilogue,fold,scatter,deriv,const: kernels"
contains "$out" "row fusion is off (--fuse)"
expect 0 "show --stage fused --target cuda --fuse=all" -- "$KILN" show models/resnet_small.kiln \
  --train --stage fused --target cuda --fuse=all
contains "$out" "(training step), --fuse=all: kernels"
if command -v ldd >/dev/null && ldd "$KILN" | grep -q libcuda; then
  echo "FAIL: kiln links libcuda (the runtime must load it with dlopen)"
  fails=$((fails + 1))
fi
expect 0 "build --target cuda prints CUDA C" -- "$KILN" build models/mlp.kiln --target cuda
contains "$out" 'extern "C" __global__ void softmax_probs_'
contains "$out" "KILN_DEV float kiln_exp(float x)"
contains "$out" " * kiln_infer: 4 launches, arena " # each dense layer one tiled GEMM launch
contains "$out" "per thread (cuda_gemm.c)"
contains "$out" "/* the epilogue at this element */"
contains "$out" " *   extern \$1: h1.weight f32[256, 784]"
expect 0 "build --target cuda --train --emit cuda -o" -- "$KILN" build models/mlp.kiln \
  --target cuda --train --emit cuda -o "$tmp/mlp_cuda"
contains "$tmp/mlp_cuda.cu" 'extern "C" __global__ void train_'
contains "$tmp/mlp_cuda.cu" " * kiln_train_step: "
expect 2 "build --target cuda --emit obj" -- "$KILN" build models/mlp.kiln --target cuda \
  --emit obj -o "$tmp/x"
contains "$err" "unknown kind 'obj' for --target cuda"
expect 2 "build --emit ptx without -o" -- "$KILN" build models/mlp.kiln --target cuda --emit ptx
expect 2 "build --arch with a bad word" -- "$KILN" build models/mlp.kiln --target cuda \
  --arch sm_80,gfx90a -o "$tmp/x"
contains "$err" "'gfx90a' is not an architecture"
"$KILN" build models/mlp.kiln --target cuda --emit ptx,cubin --arch sm_80,compute_80 \
  -o "$tmp/mlp_nv" >"$out" 2>"$err"
if [ $? -eq 0 ]; then
  [ "$(head -c 4 "$tmp/mlp_nv.sm_80.cubin" | od -An -c | tr -d ' ')" = "177ELF" ] &&
    grep -q "^.target sm_80" "$tmp/mlp_nv.ptx" && [ ! -e "$tmp/mlp_nv.cu" ] &&
    echo "ok: build --emit ptx,cubin (NVRTC)" ||
    { echo "FAIL: build --emit ptx,cubin wrote no CUBIN or PTX"; fails=$((fails + 1)); }
elif grep -q "built without the CUDA toolkit" "$err"; then
  echo "skipped: build --emit ptx,cubin (kiln was built without the CUDA toolkit)"
else
  echo "FAIL: build --emit ptx,cubin"; sed 's/^/    /' "$err" | tail -n 8; fails=$((fails + 1))
fi

# --- subnormals: flushed by compiled CPU code unless --keep-denormals -----------
if have_numpy; then
  printf 'model tiny() {\n  input x: f32[4]\n  y = x * 1e-30\n  output y\n}\n' >"$tmp/tiny.kiln"
  "$PY" -c "import numpy as np; np.save('$tmp/tiny_x.npy', np.full(4, 1e-10, np.float32))"
  subnormal_y() { # subnormal_y WHAT WANT FILE: WANT is zero or kept
    if "$PY" - "$3" "$2" <<'PY'; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi
import numpy as np, sys
y = np.load(sys.argv[1])
assert (y == 0).all() if sys.argv[2] == "zero" else (abs(y - 1e-40) < 1e-42).all(), y
PY
  }
  expect 0 "run: flushed" -- "$KILN" run "$tmp/tiny.kiln" --input x="$tmp/tiny_x.npy" \
    --output y="$tmp/tiny_y0.npy"
  subnormal_y "run flushes x * 1e-30 to zero" zero "$tmp/tiny_y0.npy"
  expect 0 "run --keep-denormals" -- "$KILN" run "$tmp/tiny.kiln" --keep-denormals \
    --input x="$tmp/tiny_x.npy" --output y="$tmp/tiny_y1.npy"
  subnormal_y "run --keep-denormals keeps 1e-40" kept "$tmp/tiny_y1.npy"
  expect 0 "run --reference" -- "$KILN" run "$tmp/tiny.kiln" --reference \
    --input x="$tmp/tiny_x.npy" --output y="$tmp/tiny_y2.npy"
  subnormal_y "the reference evaluator keeps 1e-40" kept "$tmp/tiny_y2.npy"
  for keep in "" --keep-denormals; do
    expect 0 "build $keep" -- "$KILN" build "$tmp/tiny.kiln" $keep -o "$tmp/tiny$keep"
    expect 0 "built program $keep" -- "$tmp/tiny$keep" --input x="$tmp/tiny_x.npy" \
      --output y="$tmp/tiny_y3$keep.npy"
    subnormal_y "a program built ${keep:-without --keep-denormals}" \
      "$([ -n "$keep" ] && echo kept || echo zero)" "$tmp/tiny_y3$keep.npy"
  done
  expect 0 "bench --keep-denormals" -- "$KILN" bench "$tmp/tiny.kiln" --keep-denormals --repeat 2
fi

# --step N: randn's draw of step N, compiled and on the reference alike;
# step 0 is the default.
cat >"$tmp/noisy.kiln" <<'EOF'
model noisy(N = 2) {
  input x: f32[N, 3]
  output y = x + randn([N, 3])
}
EOF
"$PY" -c "import sys, numpy as np; np.save(sys.argv[1], np.zeros((2, 3), np.float32))" "$tmp/zx.npy"
noisy=("$KILN" run "$tmp/noisy.kiln" --input x="$tmp/zx.npy")
expect 0 "run --step 3" -- "${noisy[@]}" --step 3 --output y="$tmp/n3.npy"
expect 0 "run --step 3 --reference" -- "${noisy[@]}" --step 3 --reference --output y="$tmp/n3r.npy"
same_bytes "--step 3: compiled = reference" "$tmp/n3.npy" "$tmp/n3r.npy"
expect 0 "run at the default step" -- "${noisy[@]}" --output y="$tmp/n0.npy"
expect 0 "run --step 0" -- "${noisy[@]}" --step 0 --output y="$tmp/n00.npy"
same_bytes "--step 0 is the default" "$tmp/n0.npy" "$tmp/n00.npy"
if cmp -s "$tmp/n0.npy" "$tmp/n3.npy"; then
  echo "FAIL: --step 3 drew step 0's samples"; fails=$((fails + 1))
else echo "ok: --step 3 draws other samples than step 0"; fi
expect 2 "run --step -1" -- "${noisy[@]}" --step -1
contains "$err" "--step needs a non-negative integer"

finish driver
