#!/usr/bin/env bash
# build.sh: `kiln build` and the programs it makes, run as a user runs them.
#
# Programs built from mlp, lenet5, resnet_small and attention compute what
# `kiln run` computes on the same .npy inputs (any number of rows: chunks of
# the built batch); --help lists the shapes; bad inputs, files and options
# fail with exit 1 or 2 and leave no partial output; --weights reads what
# `kiln init` writes; a --train program trains a small model on .npy data,
# its --save/--resume equals an uninterrupted run and its files are byte
# for byte those of `kiln train`; --emit obj,header gives an object that
# calls no malloc and a header that a C program compiles and runs with;
# a failed link leaves nothing behind.  (How long a build takes is measured
# by bench/build_time.sh, not here.)
#
# Usage: tests/build.sh path/to/kiln    (ctest passes the built binary)
set -uo pipefail
source "$(dirname "$0")/sh_helpers.sh"

absent() { # absent PATH: a failed command must not leave this file or temporaries
  if [ -e "$1" ] || ls "$(dirname "$1")"/*.tmp.* >/dev/null 2>&1; then
    echo "FAIL: $1 (or a temporary file) exists after a failure"
    fails=$((fails + 1))
  fi
}

same_npy() { # same_npy A.npy B.npy WHAT: same shape and dtype, allclose
  if "$PY" - "$1" "$2" <<'PY'; then echo "ok: $3"; else echo "FAIL: $3"; fails=$((fails + 1)); fi
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
assert np.allclose(a, b, rtol=1e-5, atol=1e-6), float(abs(a - b).max())
PY
}

same_file() { # same_file A B WHAT
  if cmp -s "$1" "$2"; then echo "ok: $3"; else echo "FAIL: $3 ($1 and $2 differ)"; fails=$((fails + 1)); fi
}

d="$tmp/data"
mkdir -p "$d"
"$PY" - "$d" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
for n in (8, 64, 100):
    np.save(f"{d}/x{n}.npy", rng.random((n, 784), dtype=np.float32))
np.save(f"{d}/x64_f8.npy", rng.random((64, 784)))            # float64: converted
np.save(f"{d}/x_i32.npy", np.zeros((64, 784), np.int32))      # wrong dtype
np.save(f"{d}/x_bad.npy", np.zeros((8, 10), np.float32))      # wrong shape
np.save(f"{d}/img3.npy", rng.random((3, 1, 28, 28), dtype=np.float32))
np.save(f"{d}/cifar5.npy", rng.random((5, 3, 32, 32), dtype=np.float32))
np.save(f"{d}/tok5.npy", rng.integers(0, 100, (5, 8)).astype(np.int32))
rng.random((64, 784), dtype=np.float32).tofile(f"{d}/x64.raw")
for split, n in (("train", 96), ("test", 40)):                # a separable toy task
    y = rng.integers(0, 3, n)
    np.save(f"{d}/{split}_x.npy", rng.normal(0, 1, (n, 6)).astype(np.float32) + y[:, None])
    np.save(f"{d}/{split}_y.npy", y)
PY

# --- kiln build: usage and errors ------------------------------------------------
expect 0 "kiln build --help" -- "$KILN" build --help
contains "$out" "usage: kiln build MODEL.kiln -o PROG"
expect 0 "kiln --help lists build" -- "$KILN" --help
contains "$out" "build   compile the model ahead of time"
expect 2 "build without -o" -- "$KILN" build models/mlp.kiln
contains "$err" "-o PROG is required"
expect 2 "unknown --emit kind" -- "$KILN" build models/mlp.kiln -o "$tmp/x" --emit obj,exe,pdf
contains "$err" "unknown kind 'pdf'"
expect 2 "unknown option" -- "$KILN" build models/mlp.kiln -o "$tmp/x" --frob
expect 1 "missing model file" -- "$KILN" build "$tmp/nope.kiln" -o "$tmp/x"
absent "$tmp/x"
expect 1 "-o into a missing folder" -- "$KILN" build models/mlp.kiln -o "$tmp/no/dir/prog"
contains "$err" "cannot write in folder $tmp/no/dir"
expect 1 "--train without a train section" -- "$KILN" build tests/data/no_train.kiln --train \
  -o "$tmp/x"
contains "$err" "has no train section"
absent "$tmp/x"
expect 1 "--weights that do not exist" -- "$KILN" build models/mlp.kiln -o "$tmp/x" \
  --weights "$tmp/none.safetensors"
contains "$err" "none.safetensors"
absent "$tmp/x"

# --- the MLP: inference against kiln run -------------------------------------------
expect 0 "build mlp" -- "$KILN" build models/mlp.kiln -o "$tmp/mlp"
contains "$err" "built $tmp/mlp: model mlp, inference"
expect 0 "mlp --help" -- "$tmp/mlp" --help
contains "$out" "usage: mlp [--input NAME=FILE.npy]"
contains "$out" "x                f32[64, 784]             (any number of rows)"
contains "$out" "y                i32[64]                  (not needed)"
contains "$out" "probs            f32[64, 10]"
for n in 8 64 100; do
  expect 0 "mlp on $n rows" -- "$tmp/mlp" --input x="$d/x$n.npy" --output probs="$tmp/p$n.npy" \
    --threads 2
  contains "$err" "wrote probs (f32[$n, 10]) to $tmp/p$n.npy"
  expect 0 "kiln run on $n rows" -- "$KILN" run models/mlp.kiln --input x="$d/x$n.npy" \
    --output probs="$tmp/r$n.npy" --threads 2
  same_npy "$tmp/p$n.npy" "$tmp/r$n.npy" "mlp program = kiln run ($n rows)"
done
for t in 1 3; do # the code cut into 1 and 3 object files, compiled on as many threads
  expect 0 "build mlp on $t threads" -- "$KILN" build models/mlp.kiln --threads $t -o "$tmp/mlp_t$t" -v
  contains "$err" "O3 and objects on $t thread$([ $t = 1 ] || echo s) "
  expect 0 "mlp built on $t threads" -- "$tmp/mlp_t$t" --input x="$d/x100.npy" --output probs="$tmp/pt$t.npy"
  same_npy "$tmp/pt$t.npy" "$tmp/r100.npy" "program compiled on $t threads = kiln run"
done
expect 0 "float64 input converted" -- "$tmp/mlp" --input x="$d/x64_f8.npy"
contains "$out" "probs: f32[64, 10]  min "
expect 0 "kiln run prints the same summary" -- "$KILN" run models/mlp.kiln --input x="$d/x64_f8.npy"
cp "$out" "$tmp/summary_run.txt"
"$tmp/mlp" --input x="$d/x64_f8.npy" >"$tmp/summary_prog.txt" 2>/dev/null
same_file "$tmp/summary_prog.txt" "$tmp/summary_run.txt" "summary without --output = kiln run's"

# --- bad inputs, files and options ------------------------------------------------
expect 1 "wrong shape" -- "$tmp/mlp" --input x="$d/x_bad.npy" --output probs="$tmp/never.npy"
contains "$err" "x_bad.npy: input x must be f32[64, 784] with any number of rows (the first axis), but the file holds f32[8, 10]"
absent "$tmp/never.npy"
expect 1 "wrong dtype" -- "$tmp/mlp" --input x="$d/x_i32.npy" --output probs="$tmp/never.npy"
contains "$err" "but the file holds i32[64, 784]"
absent "$tmp/never.npy"
expect 1 "missing input file" -- "$tmp/mlp" --input x="$tmp/gone.npy" --output probs="$tmp/never.npy"
contains "$err" "gone.npy"
absent "$tmp/never.npy"
expect 1 "input not given" -- "$tmp/mlp" --output probs="$tmp/never.npy"
contains "$err" "input 'x' (f32[64, 784]) is needed: give --input x=FILE.npy"
expect 1 "unknown input" -- "$tmp/mlp" --input z="$d/x8.npy"
contains "$err" "model mlp has no input named 'z' (its inputs: x, y)"
expect 1 "unknown output" -- "$tmp/mlp" --input x="$d/x8.npy" --output h1="$tmp/never.npy"
contains "$err" "has no output named 'h1' (its outputs: probs)"
expect 1 "output into a missing folder" -- "$tmp/mlp" --input x="$d/x8.npy" \
  --output probs="$tmp/no/dir/p.npy"
absent "$tmp/no/dir/p.npy"
expect 2 "unknown option" -- "$tmp/mlp" --input x="$d/x8.npy" --frob
contains "$err" "unknown option '--frob'"
expect 2 "--input without NAME=" -- "$tmp/mlp" --input "$d/x8.npy"
expect 2 "--input given twice" -- "$tmp/mlp" --input x="$d/x8.npy" --input x="$d/x8.npy"
expect 2 "--threads 0" -- "$tmp/mlp" --input x="$d/x8.npy" --threads 0
expect 2 "option without its value" -- "$tmp/mlp" --input
expect 2 "train on an inference-only program" -- "$tmp/mlp" train --data "$d"
contains "$err" "built without training"

# --- --weights round trip with kiln init ---------------------------------------------
expect 0 "kiln init" -- "$KILN" init models/mlp.kiln --seed 7 -o "$tmp/w7.safetensors"
expect 0 "program with --weights" -- "$tmp/mlp" --weights "$tmp/w7.safetensors" \
  --input x="$d/x8.npy" --output probs="$tmp/pw.npy"
expect 0 "kiln run with --weights" -- "$KILN" run models/mlp.kiln --weights "$tmp/w7.safetensors" \
  --input x="$d/x8.npy" --output probs="$tmp/rw.npy"
same_npy "$tmp/pw.npy" "$tmp/rw.npy" "--weights: program = kiln run"
expect 0 "build with the weights built in" -- "$KILN" build models/mlp.kiln -o "$tmp/mlp7" \
  --weights "$tmp/w7.safetensors"
expect 0 "built-in weights" -- "$tmp/mlp7" --input x="$d/x8.npy" --output probs="$tmp/pw7.npy"
same_npy "$tmp/pw7.npy" "$tmp/rw.npy" "kiln build --weights = program --weights"
expect 0 "build with --seed 7" -- "$KILN" build models/mlp.kiln -o "$tmp/mlps7" --seed 7
expect 0 "seeded build" -- "$tmp/mlps7" --input x="$d/x8.npy" --output probs="$tmp/ps7.npy"
same_npy "$tmp/ps7.npy" "$tmp/rw.npy" "kiln build --seed 7 = kiln init --seed 7"
# Without --weights a program draws its parameters when it starts (the
# manifest's initializers, runtime/rt_init.c): mlp's 941 KB of them are not
# in the file, which the built-in weights make about that much larger.
size_drawn=$(stat -c %s "$tmp/mlps7") size_built_in=$(stat -c %s "$tmp/mlp7")
if [ $((size_built_in - size_drawn)) -ge 900000 ]; then
  echo "ok: a program without --weights does not carry its parameters"
else
  echo "FAIL: programs of $size_drawn (drawn) and $size_built_in bytes (built in)"
  fails=$((fails + 1))
fi
expect 0 "kiln init lenet5" -- "$KILN" init models/lenet5.kiln -o "$tmp/lenet.safetensors"
expect 1 "--weights of another model" -- "$tmp/mlp" --weights "$tmp/lenet.safetensors" \
  --input x="$d/x8.npy" --output probs="$tmp/never.npy"
contains "$err" "lenet.safetensors: parameter h1.weight: expected f32[256, 784], the file does not have it"
absent "$tmp/never.npy"

# --- LeNet-5, ResNet, attention: every model against kiln run -------------------------
check_model() { # check_model NAME INPUT FILE [-D ...]: build, run, compare with kiln run
  local m=$1 in=$2 f=$3
  shift 3
  expect 0 "build $m $*" -- "$KILN" build "models/$m.kiln" "$@" -o "$tmp/$m" || return
  expect 0 "$m program" -- "$tmp/$m" --input "$in=$f" --output probs="$tmp/p_$m.npy"
  expect 0 "$m kiln run" -- "$KILN" run "models/$m.kiln" "$@" --input "$in=$f" \
    --output probs="$tmp/r_$m.npy"
  same_npy "$tmp/p_$m.npy" "$tmp/r_$m.npy" "$m program = kiln run"
}
check_model lenet5 x "$d/img3.npy"
check_model resnet_small x "$d/cifar5.npy" -D blocks=1 -D N=5
check_model attention tokens "$d/tok5.npy" -D N=5 -D T=8
expect 0 "attention built for 2 rows runs 5" -- "$KILN" build models/attention.kiln -D N=2 -D T=8 \
  -o "$tmp/att2"
expect 0 "attention --help" -- "$tmp/att2" --help
contains "$out" "tokens           i32[2, 8]                (any number of rows)"
expect 0 "att2 on 5 rows" -- "$tmp/att2" --input tokens="$d/tok5.npy" --output probs="$tmp/p_att2.npy"
same_npy "$tmp/p_att2.npy" "$tmp/r_attention.npy" "chunks of 2 rows = kiln run on 5"

# --- --emit: object, header, IR, assembly --------------------------------------------
expect 0 "emit obj,header" -- "$KILN" build models/mlp.kiln -o "$tmp/emb" --emit obj,header
[ -e "$tmp/emb" ] && { echo "FAIL: --emit obj,header also linked a program"; fails=$((fails + 1)); }
if nm -u "$tmp/emb.o" >"$tmp/undef.txt" && ! grep -Ewq 'malloc|calloc|realloc|free|aligned_alloc' \
  "$tmp/undef.txt"; then
  echo "ok: the object calls no malloc (needs: $(tr -s ' \n' ' ' <"$tmp/undef.txt"))"
else
  echo "FAIL: nm -u lists an allocator:"; cat "$tmp/undef.txt"; fails=$((fails + 1))
fi
contains "$tmp/emb.h" "#define KILN_ARENA_BYTES"
contains "$tmp/emb.h" "#define KILN_INPUT_x_OFFSET"
contains "$tmp/emb.h" "#define KILN_PARAM_h1_weight_SLOT 1"
contains "$tmp/emb.h" "void kiln_infer(char *arena, void *const *ext);"
cat >"$tmp/embed.c" <<'EOF'
/* A C program embedding the MLP: the caller's arena and parameters. */
#include <stdint.h>
#include <stdio.h>
#include "emb.h"

void rt_parallel_for(int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx) {
  (void)grain;
  if (n > 0)
    fn(ctx, 0, n);
}

static _Alignas(KILN_ARENA_ALIGN) char arena[KILN_ARENA_BYTES];

int main(int argc, char **argv) {
  int64_t step = 0;
  void *ext[KILN_EXT_SLOTS] = {&step};
#define P(name) ext[KILN_PARAM_##name##_SLOT] = (void *)(kiln_params + KILN_PARAM_##name##_OFFSET)
  P(h1_weight); P(h1_bias); P(h2_weight); P(h2_bias); P(logits_weight); P(logits_bias);
  static _Alignas(KILN_ARENA_ALIGN) unsigned char prepared[KILN_PREPARED_BYTES];
  static const struct { int slot; long long offset, bytes; } prep[] = KILN_PREPARED;
  for (int i = 0; i < KILN_PREPARED_COUNT; i++)
    ext[prep[i].slot] = prepared + prep[i].offset;
  kiln_prepare(arena, ext); /* after setting the parameters */
  FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
  if (argc != 3 || !in || !out ||
      fread(arena + KILN_INPUT_x_OFFSET, 1, KILN_INPUT_x_BYTES, in) != KILN_INPUT_x_BYTES)
    return 1;
  kiln_infer(arena, ext);
  fwrite(arena + KILN_OUTPUT_probs_OFFSET, 1, KILN_OUTPUT_probs_BYTES, out);
  return fclose(out) != 0;
}
EOF
expect 0 "the header compiles (cc -c)" -- cc -std=c11 -Wall -Werror -c "$tmp/embed.c" \
  -I "$tmp" -o "$tmp/embed_main.o"
expect 0 "link the object into a C program" -- cc -o "$tmp/embed" "$tmp/embed_main.o" \
  "$tmp/emb.o" -lm
expect 0 "the embedding program runs" -- "$tmp/embed" "$d/x64.raw" "$tmp/embed_out.raw"
"$PY" -c "import numpy as np, sys; np.save(sys.argv[2], np.fromfile(sys.argv[1], np.float32).reshape(64, 784))" \
  "$d/x64.raw" "$tmp/x64raw.npy"
"$PY" -c "import numpy as np, sys; np.save(sys.argv[2], np.fromfile(sys.argv[1], np.float32).reshape(64, 10))" \
  "$tmp/embed_out.raw" "$tmp/embed_out.npy"
expect 0 "the program on the same input" -- "$tmp/mlp" --input x="$tmp/x64raw.npy" \
  --output probs="$tmp/p_raw.npy"
same_npy "$tmp/embed_out.npy" "$tmp/p_raw.npy" "embedded object = built program"
expect 0 "--emit llvm to stdout" -- "$KILN" build models/mlp.kiln --emit llvm
contains "$out" "define void @kiln_infer(ptr"
contains "$out" "@kiln_manifest = "
contains "$out" 'params_stored\22: 0' # on stdout the code draws its parameters at start
expect 0 "--emit asm to stdout" -- "$KILN" build models/mlp.kiln --emit asm
contains "$out" "kiln_infer:"
[ "$(wc -c <"$out")" -lt 400000 ] && echo "ok: --emit asm on stdout: no parameters as data" ||
  { echo "FAIL: --emit asm on stdout is $(wc -c <"$out") bytes"; fails=$((fails + 1)); }
expect 0 "--emit llvm,asm,exe with -o" -- "$KILN" build models/mlp.kiln -o "$tmp/all" \
  --emit llvm,asm,exe
for f in "$tmp/all" "$tmp/all.ll" "$tmp/all.s" "$tmp/all.params"; do
  [ -s "$f" ] || { echo "FAIL: $f was not written"; fails=$((fails + 1)); }
done
# the text includes PROG.params (.incbin) instead of its 940608 bytes as data; the
# .s assembles, with kiln_params that file's size; the program beside it is mlp
contains "$tmp/all.s" ".incbin \"$tmp/all.params\""
contains "$tmp/all.ll" 'incbin \22'
[ "$(wc -c <"$tmp/all.s")" -lt "$(wc -c <"$tmp/all.params")" ] && echo "ok: .s without the parameters" ||
  { echo "FAIL: all.s is $(wc -c <"$tmp/all.s") bytes"; fails=$((fails + 1)); }
expect 0 "assemble all.s" -- cc -c "$tmp/all.s" -o "$tmp/all_s.o"
size=$(nm -S "$tmp/all_s.o" | awk '$4 == "kiln_params" {print $2}')
[ -n "$size" ] && [ "$((16#$size))" = "$(wc -c <"$tmp/all.params")" ] && echo "ok: kiln_params from all.params" ||
  { echo "FAIL: kiln_params is ${size:-missing} bytes in all.s's object"; fails=$((fails + 1)); }
expect 0 "the program built with them" -- "$tmp/all" --input x="$tmp/x64raw.npy" \
  --output probs="$tmp/p_all.npy"
same_npy "$tmp/p_all.npy" "$tmp/p_raw.npy" "--emit llvm,asm,exe program = built program"
expect 2 "llvm and asm together on stdout" -- "$KILN" build models/mlp.kiln --emit llvm,asm
contains "$err" "--emit llvm,asm without -o would mix them on stdout"

# --- --emit kir: each kernel's Kernel IR, after the nodes it computes -------------------
expect 0 "--emit kir to stdout" -- "$KILN" build models/mlp.kiln --emit kir
contains "$out" "// kiln_infer (inference): 4 kernels, in the order the step calls them"
contains "$out" "kernel infer_matmul_add_relu_"
contains "$out" "//   relu "
contains "$out" "models/mlp.kiln:"
expect 0 "--emit kir,llvm with -o, training step" -- "$KILN" build models/mlp.kiln --train \
  --emit kir,llvm -o "$tmp/k"
contains "$tmp/k.kir" "// kiln_train_step (training step): "
[ ! -e "$tmp/k" ] && echo "ok: --emit kir,llvm writes no program" ||
  { echo "FAIL: --emit kir,llvm wrote $tmp/k"; fails=$((fails + 1)); }
# every kernel of the IR is a function of the module, under the same name
if "$PY" - "$tmp/k.kir" "$tmp/k.ll" <<'PY'; then echo "ok: the kir's kernels are the module's"; else
import re, sys
kir = re.findall(r"^kernel (\w+)\(", open(sys.argv[1]).read(), re.M)
ll = set(re.findall(r"^define .*@(\w+)\(", open(sys.argv[2], errors="replace").read(), re.M))
assert len(kir) > 20 and not set(kir) - ll, sorted(set(kir) - ll)[:5]
PY
  echo "FAIL: kir kernels not in the module"; fails=$((fails + 1)); fi
expect 0 "--emit kir --fuse=none" -- "$KILN" build models/mlp.kiln --emit kir --fuse=none
contains "$out" "// kiln_infer (inference): 9 kernels, in the order the step calls them"
expect 2 "kir and asm together on stdout" -- "$KILN" build models/mlp.kiln --emit kir,asm
contains "$err" "--emit kir,asm without -o would mix them on stdout"
expect 2 "--emit obj without -o" -- "$KILN" build models/mlp.kiln --emit obj
contains "$err" "-o PROG is required (only --emit llvm, asm or kir print to stdout)"

# --- each distinct kernel compiled once; step functions unoptimized ---------------------
# resnet_small repeats its blocks, and its inference kernels are mostly the
# training step's: no two functions of the optimized module may have the
# same code up to names (value names, and the functions they call or hand
# to the thread pool, compared by their own code in turn), which catches
# a merge stopped by MergeFunctions' thunks (codegen/aot.c).  The step
# functions are optnone (codegen/llvm/cg_kernel.c: their O3 cost seconds).
expect 0 "resnet_small --train --emit llvm" -- "$KILN" build models/resnet_small.kiln --train \
  --emit llvm -o "$tmp/rs"
if "$PY" - "$tmp/rs.ll" >"$tmp/dups.txt" <<'PY'; then echo "ok: $(tail -n 1 "$tmp/dups.txt")"; else
import re, sys
fns, cur = {}, None
for line in open(sys.argv[1], errors="replace"):
    if len(line) > 10000:            # the manifest and parameter constants
        continue
    if line.startswith("define "):
        name = re.search(r"@([-\w$.]+)\(", line).group(1)
        cur = fns[name] = [line.split("@", 1)[0] + "@SELF(" + line.split("(", 1)[1]]
    elif cur is not None:
        cur.append(line.split(";", 1)[0])
        if line.startswith("}"):
            cur = None
tok = re.compile(r"([%@])([-\w$.]+)")
def key(name, cls):                  # the code, values numbered, functions by class
    seen = {}
    def sub(m):
        g = m.group(2)
        if m.group(1) == "%":
            return "%%%d" % seen.setdefault(g, len(seen))
        return "@SELF" if g == name else ("@F%d" % cls[g] if g in cls else m.group(0))
    return "".join(tok.sub(sub, l) for l in fns[name])
cls = {f: 0 for f in fns}            # refined until the classes stop splitting
while True:
    ids = {}
    new = {f: ids.setdefault(key(f, cls), len(ids)) for f in fns}
    if len(ids) == len(set(cls.values())):
        break
    cls = new
groups = {}
for f, c in cls.items():
    groups.setdefault(c, []).append(f)
for g in groups.values():
    if len(g) > 1:
        print("same code: " + " = ".join(g))
print("%d functions, %d distinct" % (len(fns), len(groups)))
sys.exit(len(fns) != len(groups))
PY
  echo "FAIL: functions with the same code were compiled separately:"; head -n 5 "$tmp/dups.txt"
  tail -n 1 "$tmp/dups.txt"; fails=$((fails + 1))
fi
for step in kiln_infer kiln_prepare kiln_train_step; do
  grp=$(sed -n "s/^define .*@$step(.*) [a-z_ ]*#\([0-9]*\) {\$/\1/p" "$tmp/rs.ll")
  if [ -n "$grp" ] && grep -q "^attributes #$grp = { .*optnone" "$tmp/rs.ll"; then
    echo "ok: $step is optnone"
  else
    echo "FAIL: $step is not optnone (attributes #${grp:-?})"; fails=$((fails + 1))
  fi
done
# On AVX-512 hosts no kernel uses gathers (codegen/llvm/cg_module.c: LLVM's
# 16-lane gathers made max pooling 5x slower than wide loads and shuffles).
if grep -q '\bavx512f\b' /proc/cpuinfo 2>/dev/null; then
  n=$(grep -c 'llvm\.masked\.gather\|llvm\.masked\.scatter' "$tmp/rs.ll" || true)
  if [ "$n" = 0 ]; then
    echo "ok: no gathers or scatters in resnet_small's kernels"
  else
    echo "FAIL: $n gathers or scatters in resnet_small's kernels"; fails=$((fails + 1))
  fi
fi

# --- linking fails: cc's output, exit 1, nothing left -----------------------------------
mkdir -p "$tmp/fakebin" "$tmp/linkfail"
printf '#!/bin/sh\necho "fake cc: cannot link this" >&2\nexit 3\n' >"$tmp/fakebin/cc"
chmod +x "$tmp/fakebin/cc"
expect 1 "a failing linker" -- env PATH="$tmp/fakebin:$PATH" "$KILN" build models/mlp.kiln \
  -o "$tmp/linkfail/prog"
contains "$err" "linking $tmp/linkfail/prog failed (cc exited with status 3)"
contains "$err" "fake cc: cannot link this"
absent "$tmp/linkfail/prog"
[ -z "$(ls -A "$tmp/linkfail")" ] || { echo "FAIL: files left: $(ls "$tmp/linkfail")"; fails=$((fails + 1)); }

# --- a --train program on a small .npy dataset ------------------------------------------
cp tests/data/small.kiln "$tmp/small.kiln"
expect 0 "build small --train" -- "$KILN" build "$tmp/small.kiln" --train -o "$tmp/small"
contains "$err" "inference + training step"
expect 0 "small train --help" -- "$tmp/small" train --help
contains "$out" "optimizer adam"
expect 0 "--help mentions train" -- "$tmp/small" --help
contains "$out" "small train --data DIR"
last_line() { tail -n 1 "$err" | sed 's/| [0-9]* ex\/s | [0-9.]*s //'; }
expect 0 "three epochs (the train section)" -- "$tmp/small" train --data "$d" --threads 2
contains "$err" "epoch 3/3"
contains "$err" "test accuracy"
expect 0 "two epochs straight" -- "$tmp/small" train --data "$d" --epochs 2 --threads 2 \
  --save "$tmp/straight.safetensors"
last_line >"$tmp/straight.txt"
expect 0 "one epoch, saved" -- "$tmp/small" train --data "$d" --epochs 1 --threads 2 \
  --save "$tmp/half.safetensors"
expect 0 "resumed for the second" -- "$tmp/small" train --data "$d" --epochs 2 --threads 2 \
  --resume "$tmp/half.safetensors" --save "$tmp/resumed.safetensors"
last_line >"$tmp/resumed.txt"
same_file "$tmp/straight.txt" "$tmp/resumed.txt" "resumed run reports what the straight one does"
same_file "$tmp/straight.safetensors" "$tmp/resumed.safetensors" "resume = uninterrupted (parameters, state)"
expect 0 "kiln train, two epochs" -- "$KILN" train "$tmp/small.kiln" --data "$d" --epochs 2 \
  --threads 2 --save "$tmp/kiln_straight.safetensors"
same_file "$tmp/kiln_straight.safetensors" "$tmp/straight.safetensors" "program train --save = kiln train --save"
expect 0 "kiln train, one epoch" -- "$KILN" train "$tmp/small.kiln" --data "$d" --epochs 1 \
  --threads 2 --save "$tmp/kiln_half.safetensors"
expect 0 "the program resumes kiln train's file" -- "$tmp/small" train --data "$d" --epochs 2 \
  --threads 2 --resume "$tmp/kiln_half.safetensors" --save "$tmp/mixed.safetensors"
same_file "$tmp/mixed.safetensors" "$tmp/straight.safetensors" "kiln train file resumed by the program"
expect 0 "inference with trained weights" -- "$tmp/small" --weights "$tmp/straight.safetensors" \
  --input x="$d/test_x.npy" --output probs="$tmp/p_small.npy"
if grep -q warning "$err"; then echo "FAIL: warnings about optimizer state"; fails=$((fails + 1)); fi
expect 0 "kiln run with trained weights" -- "$KILN" run "$tmp/small.kiln" \
  --weights "$tmp/straight.safetensors" --input x="$d/test_x.npy" --output probs="$tmp/r_small.npy"
same_npy "$tmp/p_small.npy" "$tmp/r_small.npy" "trained program = kiln run"
expect 0 "emit a training build's object and header" -- "$KILN" build "$tmp/small.kiln" --train \
  -o "$tmp/smallemb" --emit obj,header
printf '#include "smallemb.h"\nstatic const struct { long long value; int slot; long long bytes; }\n  updates[KILN_UPDATE_COUNT] = KILN_UPDATES;\nvoid step(char *a, void *const *e) { kiln_train_step(a, e); }\nlong long first(void) { return updates[0].bytes + KILN_TRAIN_ARENA_BYTES + KILN_TRAIN_LOSS_OFFSET; }\n' \
  >"$tmp/train_embed.c"
expect 0 "the training header compiles" -- cc -std=c11 -Wall -Werror -c "$tmp/train_embed.c" \
  -I "$tmp" -o "$tmp/train_embed.o"
contains "$tmp/smallemb.h" "#define KILN_TRAIN_LR 0.01 " # small.kiln's adam(lr=0.01)
contains "$tmp/smallemb.h" '{1, 0, 384, "logits.dense.weight"}, ' # KILN_PARAMS
contains "$tmp/smallemb.h" "#define KILN_TRAIN_OUTPUT_probs_OFFSET" # outputs kept by the step
exported=$(nm -g --defined-only "$tmp/smallemb.o" | awk '{ print $3 }' | sort | tr '\n' ' ')
if [ "$exported" = "kiln_infer kiln_manifest kiln_params kiln_prepare kiln_train_step " ]; then
  echo "ok: the object (compiled in parts) exports the kiln_* entry points only"
else
  echo "FAIL: the object exports: $exported"; fails=$((fails + 1))
fi
if nm -u "$tmp/smallemb.o" | grep -Ewq 'malloc|calloc|realloc|free'; then
  echo "FAIL: the training object calls an allocator"; fails=$((fails + 1))
fi
# --prefix: two models' objects and headers in one C program (a classifier
# compiled in parts, a regression), each computing kiln run's outputs, and
# both training steps callable
expect 2 "--prefix with a program" -- "$KILN" build "$tmp/small.kiln" --prefix cls -o "$tmp/x"
contains "$err" "--prefix names the symbols of --emit obj,header"
expect 2 "--prefix not an identifier" -- "$KILN" build "$tmp/small.kiln" --prefix 2cls \
  --emit obj -o "$tmp/x"
contains "$err" "--prefix must be a C identifier"
expect 2 "--prefix like a kernel's name" -- "$KILN" build "$tmp/small.kiln" --prefix train_x \
  --emit obj -o "$tmp/x"
expect 2 "--prefix with --target cuda" -- "$KILN" build "$tmp/small.kiln" --prefix cls \
  --target cuda --emit cuda -o "$tmp/x"
expect 0 "the classifier with --prefix cls" -- "$KILN" build "$tmp/small.kiln" --train \
  --emit obj,header --prefix cls --threads 2 -o "$tmp/cls"
expect 0 "the regression with --prefix reg" -- "$KILN" build tests/data/reg.kiln --train \
  --emit obj,header --prefix reg -o "$tmp/reg"
for m in cls reg; do
  exported=$(nm -g --defined-only "$tmp/$m.o" | awk '{ print $3 }' | sort | tr '\n' ' ')
  want="${m}_infer ${m}_manifest ${m}_params ${m}_prepare ${m}_train_step "
  if [ "$exported" = "$want" ]; then
    echo "ok: --prefix $m: the object exports ${m}_* only"
  else
    echo "FAIL: --prefix $m: the object exports: $exported"; fails=$((fails + 1))
  fi
  if grep -Ewq 'KILN_[A-Za-z0-9_]*|kiln_(infer|prepare|train_step|params|manifest)' "$tmp/$m.h"; then
    echo "FAIL: --prefix $m: $m.h still names kiln's symbols:"
    grep -Ew 'KILN_[A-Za-z0-9_]*|kiln_(infer|prepare|train_step|params|manifest)' "$tmp/$m.h" | head -3
    fails=$((fails + 1))
  fi
done
contains "$tmp/cls.h" "#define CLS_INPUT_x_OFFSET"
contains "$tmp/reg.h" "#define REG_TRAIN_LOSS_OFFSET"
cat >"$tmp/two.c" <<'EOF'
/* Two models in one program: the classifier and the regression read the
 * same 8 rows; each writes its output. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "cls.h"
#include "reg.h"

void rt_parallel_for(int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx) {
  (void)grain;
  if (n > 0)
    fn(ctx, 0, n);
}

static _Alignas(64) char cls_arena[CLS_ARENA_BYTES], reg_arena[REG_ARENA_BYTES];
static _Alignas(64) unsigned char cls_prep[CLS_PREPARED_BYTES + 1], reg_prep[REG_PREPARED_BYTES + 1];
static _Alignas(64) unsigned char cls_p[CLS_PARAMS_BYTES], reg_p[REG_PARAMS_BYTES];

/* parameters (writable copies: training changes them) and prepared
 * values, from the headers' tables */
#define SETUP(P, p)                                                                   \
  do {                                                                                \
    static const struct { int slot; long long offset, bytes; const char *name; }     \
        par[] = P##_PARAMS;                                                           \
    static const struct { int slot; long long offset, bytes; } prep[] = P##_PREPARED; \
    memcpy(p##_p, p##_params, P##_PARAMS_BYTES);                                     \
    for (int i = 0; i < P##_PARAM_COUNT; i++)                                         \
      p##_ext[par[i].slot] = p##_p + par[i].offset;                                  \
    for (int i = 0; i < P##_PREPARED_COUNT; i++)                                      \
      p##_ext[prep[i].slot] = p##_prep + prep[i].offset;                             \
  } while (0)

int main(int argc, char **argv) {
  int64_t step = 0;
  void *cls_ext[CLS_EXT_SLOTS] = {&step}, *reg_ext[REG_EXT_SLOTS] = {&step};
  SETUP(CLS, cls);
  SETUP(REG, reg);
  cls_prepare(NULL, cls_ext);
  reg_prepare(NULL, reg_ext);
  FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
  if (argc != 3 || !in || !out ||
      fread(cls_arena + CLS_INPUT_x_OFFSET, 1, CLS_INPUT_x_BYTES, in) != CLS_INPUT_x_BYTES)
    return 1;
  memcpy(reg_arena + REG_INPUT_x_OFFSET, cls_arena + CLS_INPUT_x_OFFSET, REG_INPUT_x_BYTES);
  cls_infer(cls_arena, cls_ext);
  reg_infer(reg_arena, reg_ext);
  fwrite(cls_arena + CLS_OUTPUT_probs_OFFSET, 1, CLS_OUTPUT_probs_BYTES, out);
  fwrite(reg_arena + REG_OUTPUT_p_OFFSET, 1, REG_OUTPUT_p_BYTES, out);
  if (argc > 3) { /* never: both training steps link */
    cls_train_step(cls_arena, cls_ext);
    reg_train_step(reg_arena, reg_ext);
  }
  return fclose(out) != 0;
}
EOF
expect 0 "two prefixed headers compile in one file" -- cc -std=c11 -Wall -Werror -c "$tmp/two.c" \
  -I "$tmp" -o "$tmp/two_main.o"
expect 0 "two prefixed objects link into one program" -- cc -o "$tmp/two" "$tmp/two_main.o" \
  "$tmp/cls.o" "$tmp/reg.o" -lm
"$PY" -c "import numpy as np, sys; x = np.load(sys.argv[1])[:8].astype(np.float32); np.save(sys.argv[2], x); x.tofile(sys.argv[3])" \
  "$d/test_x.npy" "$tmp/x8.npy" "$tmp/x8.raw"
expect 0 "the two-model program runs" -- "$tmp/two" "$tmp/x8.raw" "$tmp/two_out.raw"
"$PY" -c "import numpy as np, sys; r = np.fromfile(sys.argv[1], np.float32); np.save(sys.argv[2], r[:24].reshape(8, 3)); np.save(sys.argv[3], r[24:].reshape(8, 2))" \
  "$tmp/two_out.raw" "$tmp/two_cls.npy" "$tmp/two_reg.npy"
expect 0 "kiln run, the classifier" -- "$KILN" run "$tmp/small.kiln" --input x="$tmp/x8.npy" \
  --output probs="$tmp/run_cls.npy"
expect 0 "kiln run, the regression" -- "$KILN" run tests/data/reg.kiln --input x="$tmp/x8.npy" \
  --output p="$tmp/run_reg.npy"
same_npy "$tmp/two_cls.npy" "$tmp/run_cls.npy" "--prefix cls in a two-model program = kiln run"
same_npy "$tmp/two_reg.npy" "$tmp/run_reg.npy" "--prefix reg in a two-model program = kiln run"
# A model trained on its examples alone (an autoencoder, no labels read):
# the program trains as kiln train does, byte for byte, and reports no
# test accuracy.
mkdir -p "$tmp/xonly"
cp "$d/train_x.npy" "$d/test_x.npy" "$tmp/xonly/"
printf 'model ae(N = 8) {\n  input x: f32[N, 6]\n  output z = dense(x, out=3)\n  d = dense(relu(z), out=6) - x\n  loss = mean(d * d)\n}\ntrain ae {\n  minimize loss\n  optimizer adam(lr=0.01)\n  epochs 2\n}\n' >"$tmp/ae.kiln"
expect 0 "build an autoencoder --train" -- "$KILN" build "$tmp/ae.kiln" --train -o "$tmp/ae"
expect 0 "the autoencoder trains without labels" -- "$tmp/ae" train --data "$tmp/xonly" \
  --save "$tmp/ae_prog.safetensors"
contains "$err" "epoch 2/2 loss"
if grep -q "test accuracy" "$err"; then echo "FAIL: a test accuracy without labels"; fails=$((fails + 1)); fi
grep -o 'test loss [0-9.]*' "$err" >"$tmp/ae_prog_loss.txt"
expect 0 "kiln train, the same autoencoder" -- "$KILN" train "$tmp/ae.kiln" --data "$tmp/xonly" \
  --save "$tmp/ae_kiln.safetensors"
grep -o 'test loss [0-9.]*' "$err" >"$tmp/ae_kiln_loss.txt"
same_file "$tmp/ae_kiln.safetensors" "$tmp/ae_prog.safetensors" "an autoencoder: program train = kiln train"
if [ "$(wc -l <"$tmp/ae_prog_loss.txt")" -eq 2 ]; then
  same_file "$tmp/ae_kiln_loss.txt" "$tmp/ae_prog_loss.txt" "an autoencoder: the same test losses"
else
  echo "FAIL: the autoencoder program printed no test loss per epoch"; fails=$((fails + 1))
fi
# f32 targets (a regression): the program reports kiln train's test losses,
# its inference step reading the targets for them; running the program
# does not need the targets.
mkdir -p "$tmp/reg"
"$PY" - "$d" "$tmp/reg" <<'PY'
import sys, numpy as np
for split in ("train", "test"):
    x = np.load(f"{sys.argv[1]}/{split}_x.npy")
    np.save(f"{sys.argv[2]}/{split}_x.npy", x)
    np.save(f"{sys.argv[2]}/{split}_y.npy", np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], 1))
PY
expect 0 "build a regression --train" -- "$KILN" build tests/data/reg.kiln --train -o "$tmp/reg_prog"
expect 0 "the regression program trains on f32 targets" -- "$tmp/reg_prog" train --data "$tmp/reg" \
  --save "$tmp/reg_prog.safetensors"
grep -o 'test loss [0-9.]*' "$err" >"$tmp/reg_prog_loss.txt"
expect 0 "kiln train, the same regression" -- "$KILN" train tests/data/reg.kiln --data "$tmp/reg" \
  --save "$tmp/reg_kiln.safetensors"
grep -o 'test loss [0-9.]*' "$err" >"$tmp/reg_kiln_loss.txt"
same_file "$tmp/reg_kiln.safetensors" "$tmp/reg_prog.safetensors" "a regression: program train = kiln train"
if [ "$(wc -l <"$tmp/reg_prog_loss.txt")" -eq 2 ]; then
  same_file "$tmp/reg_kiln_loss.txt" "$tmp/reg_prog_loss.txt" "a regression: the same test losses"
else
  echo "FAIL: the regression program printed no test loss per epoch"; fails=$((fails + 1))
fi
expect 0 "the regression program's help" -- "$tmp/reg_prog" --help
contains "$out" "only train's test loss reads it"
"$PY" -c "import sys, numpy as np; np.save(sys.argv[2], np.load(sys.argv[1])[:3])" \
  "$tmp/reg/test_x.npy" "$tmp/reg_x.npy"
expect 0 "the regression program runs without its targets" -- "$tmp/reg_prog" \
  --weights "$tmp/reg_prog.safetensors" --input x="$tmp/reg_x.npy" --output p="$tmp/reg_p.npy"
expect 0 "kiln run, the same regression" -- "$KILN" run tests/data/reg.kiln \
  --weights "$tmp/reg_prog.safetensors" --input x="$tmp/reg_x.npy" --output p="$tmp/reg_kp.npy"
same_file "$tmp/reg_kp.npy" "$tmp/reg_p.npy" "a regression: program = kiln run without targets"
expect 1 "a classifier program without its labels' files" -- "$tmp/small" train --data "$tmp/xonly"
contains "$err" "but not its labels"

# The VAE draws its noise (randn, a new sample each step): the program's
# training ends with kiln train's parameters, byte for byte.
vae_sizes=(-D N=8 -D D=6 -D hidden=8 -D latent=2)
expect 0 "build the VAE --train" -- "$KILN" build models/vae.kiln "${vae_sizes[@]}" --train \
  -o "$tmp/vae"
expect 0 "the VAE program trains" -- "$tmp/vae" train --data "$tmp/xonly" --epochs 2 \
  --save "$tmp/vae_prog.safetensors"
grep -o 'test loss [0-9.]*' "$err" >"$tmp/vae_prog_loss.txt"
expect 0 "kiln train, the same VAE" -- "$KILN" train models/vae.kiln "${vae_sizes[@]}" \
  --data "$tmp/xonly" --epochs 2 --save "$tmp/vae_kiln.safetensors"
grep -o 'test loss [0-9.]*' "$err" >"$tmp/vae_kiln_loss.txt"
same_file "$tmp/vae_kiln.safetensors" "$tmp/vae_prog.safetensors" "the VAE: program train = kiln train"
same_file "$tmp/vae_kiln_loss.txt" "$tmp/vae_prog_loss.txt" "the VAE: the same test losses"

# --step N: the VAE program and kiln run draw step N's noise, the same
# bits; step 5's differs from the default step 0's.
"$PY" -c "import sys, numpy as np; np.save(sys.argv[2], np.load(sys.argv[1])[:8])" \
  "$tmp/xonly/test_x.npy" "$tmp/vae_x.npy"
vae_run=(--input x="$tmp/vae_x.npy" --weights "$tmp/vae_prog.safetensors")
expect 0 "the VAE program at --step 5" -- "$tmp/vae" "${vae_run[@]}" --step 5 \
  --output z="$tmp/z5_prog.npy"
expect 0 "kiln run, the VAE at --step 5" -- "$KILN" run models/vae.kiln "${vae_sizes[@]}" \
  "${vae_run[@]}" --step 5 --output z="$tmp/z5_run.npy"
same_file "$tmp/z5_run.npy" "$tmp/z5_prog.npy" "the VAE at --step 5: program = kiln run"
expect 0 "the VAE program at its default step" -- "$tmp/vae" "${vae_run[@]}" \
  --output z="$tmp/z0_prog.npy"
if cmp -s "$tmp/z0_prog.npy" "$tmp/z5_prog.npy"; then
  echo "FAIL: the VAE program drew the same noise at steps 0 and 5"; fails=$((fails + 1))
else echo "ok: the VAE program: steps 0 and 5 draw different noise"; fi
expect 2 "a program's --step -1" -- "$tmp/vae" "${vae_run[@]}" --step -1
contains "$err" "--step needs a non-negative integer"

# A language model: token ids as examples, a row of next tokens as each
# example's labels (per-token test accuracy); program train = kiln train.
mkdir -p "$tmp/lmd"
"$PY" - "$tmp/lmd" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(2)
for split, n in (("train", 64), ("test", 20)):
    seq = (rng.integers(0, 32, (n, 1)) + np.arange(9)) % 32
    np.save(f"{sys.argv[1]}/{split}_x.npy", seq[:, :8].astype(np.int32))
    np.save(f"{sys.argv[1]}/{split}_y.npy", seq[:, 1:].astype(np.int32))
PY
lm_sizes=(-D T=8 -D D=16 -D heads=2 -D layers=1 -D vocab=32)
expect 0 "build the language model --train" -- "$KILN" build models/lm.kiln "${lm_sizes[@]}" \
  --train -o "$tmp/lm"
expect 0 "the language model program trains on token ids" -- "$tmp/lm" train --data "$tmp/lmd" \
  --epochs 2 --save "$tmp/lm_prog.safetensors"
contains "$err" "test accuracy"
grep -o 'test accuracy [0-9.]*%' "$err" >"$tmp/lm_prog_acc.txt"
expect 0 "kiln train, the same language model" -- "$KILN" train models/lm.kiln "${lm_sizes[@]}" \
  --data "$tmp/lmd" --epochs 2 --save "$tmp/lm_kiln.safetensors"
grep -o 'test accuracy [0-9.]*%' "$err" >"$tmp/lm_kiln_acc.txt"
same_file "$tmp/lm_kiln.safetensors" "$tmp/lm_prog.safetensors" "a language model: program train = kiln train"
same_file "$tmp/lm_kiln_acc.txt" "$tmp/lm_prog_acc.txt" "a language model: the same test accuracies"
"$PY" -c "import numpy as np; np.save('$tmp/lmd/test_x.npy', np.full((20, 8), 40, np.int32))"
expect 1 "the program, with ids beyond its table" -- "$tmp/lm" train --data "$tmp/lmd" --epochs 1
contains "$err" "id 40 of example 0 is outside 0 .. 31"

# A model with inputs other than examples and labels (here three inputs):
# its training step compiles for code of one's own, not into a program.
printf 'model noisy(N = 4) {\n  input x: f32[N, 6]\n  input t: f32[N, 2]\n  input eps: f32[N, 2]\n  output z = dense(x, out=2) + eps - t\n  loss = mean(z * z)\n}\ntrain noisy {\n  minimize loss\n  optimizer sgd(lr=0.1)\n}\n' >"$tmp/noisy.kiln"
expect 1 "a program training a model with three inputs" -- "$KILN" build "$tmp/noisy.kiln" \
  --train -o "$tmp/noisy"
contains "$err" "model noisy has another f32 input 'eps' (--emit obj,header compiles the training step"
absent "$tmp/noisy"
expect 0 "the noise model's training step as an object" -- "$KILN" build "$tmp/noisy.kiln" --train \
  -o "$tmp/vaeemb" --emit obj,header
printf '#include "vaeemb.h"\nlong long eps(void) { return KILN_TRAIN_INPUT_eps_OFFSET + KILN_TRAIN_INPUT_eps_BYTES + KILN_TRAIN_INPUT_x_OFFSET; }\nvoid step(char *a, void *const *e) { kiln_train_step(a, e); }\n' \
  >"$tmp/vae_embed.c"
expect 0 "the training header names every input" -- cc -std=c11 -Wall -Werror \
  -c "$tmp/vae_embed.c" -I "$tmp" -o "$tmp/vae_embed.o"
expect 2 "train without --data" -- "$tmp/small" train
contains "$err" "--data DIR is required"
expect 2 "train with a bad option" -- "$tmp/small" train --data "$d" --frob
expect 2 "train with --epochs 0" -- "$tmp/small" train --data "$d" --epochs 0
expect 1 "train from a missing folder" -- "$tmp/small" train --data "$tmp/none"
contains "$err" "none"
expect 1 "resume from another model's file" -- "$tmp/small" train --data "$d" \
  --resume "$tmp/lenet.safetensors" --save "$tmp/never.safetensors"
contains "$err" "lenet.safetensors: parameter"
absent "$tmp/never.safetensors"
expect 1 "data of the wrong width" -- "$tmp/mlp7" --input x="$d/train_x.npy"
ls "$tmp"/*.tmp.* >/dev/null 2>&1 && { echo "FAIL: temporary files left"; fails=$((fails + 1)); }

finish build
