#!/usr/bin/env bash
# zoo.sh: every model of the zoo against PyTorch, through the fixtures that
# tests/reference/make_fixtures.py wrote (tests/reference/fixtures/NAME/;
# see docs/zoo.md).  No PyTorch is needed here, only kiln and numpy.
#
# For each fixtures/NAME/meta.json:
#   - the weights: the stored weights.safetensors, or `kiln init` with the
#     recorded -D and seed, whose sha256 must be the recorded one (else
#     kiln's initialization changed: regenerate the fixtures);
#   - forward: `kiln run` (compiled, inference mode) on the stored inputs
#     equals PyTorch's output in eval mode: |kiln - torch| <= 1e-4 *
#     max|torch| + 1e-6 elementwise (relative to the largest value, with a
#     small absolute floor for all-zero fixtures);
#   - training: `kiln run --grad P=...` (the training-mode graph, compiled)
#     gives the loss within 1e-4 relative and each fixture gradient within
#     1e-3 * max|torch gradient| + 1e-6 elementwise;
#   - the trainable parameter count `kiln check` prints equals PyTorch's
#     (sum of numel of parameters, not buffers, with requires_grad: a part
#     the twin freezes is kiln's trainable=false);
#   - `kiln build --train` at the fixture's sizes makes a program (how long
#     builds take at the models' own sizes is bench/build_time.sh's to
#     measure, not a test's).  A model whose inputs the standalone trainer
#     cannot take (one or two inputs: the examples, f32 or i32 token ids,
#     and labels, i32 classes or f32 targets) gets its training step built
#     with --emit obj,header instead.
# A kiln linked with ASan skips a few models' fixtures (see `skip` below).
#
# Usage: tests/zoo.sh path/to/kiln    (ctest passes the built binary)
set -uo pipefail
source "$(dirname "$0")/sh_helpers.sh"

RTOL_FWD=1e-4
RTOL_GRAD=1e-3
ATOL=1e-6

build_prog() { # build_prog NAME MODEL [ARGS...]: 0 if `kiln build` made the program
  local name=$1 model=$2
  shift 2
  "$KILN" build "$model" "$@" -o "$tmp/$name.prog" >"$out" 2>"$err" && [ -x "$tmp/$name.prog" ]
}

close() { # close GOT.npy WANT.npy RTOL WHAT
  if "$PY" - "$1" "$2" "$3" "$ATOL" <<'PY'; then echo "ok: $4"; else echo "FAIL: $4"; fails=$((fails + 1)); fi
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
rtol, atol = float(sys.argv[3]), float(sys.argv[4])
if a.shape != b.shape:
    sys.exit(f"    shape {a.shape}, expected {b.shape}")
a, b = a.astype(np.float64), b.astype(np.float64)
scale = float(np.abs(b).max()) if b.size else 0.0
err = np.abs(a - b)
worst = int(err.argmax()) if err.size else 0
if not np.isfinite(a).all() or (err.size and err.max() > rtol * scale + atol):
    sys.exit(f"    max |kiln - torch| = {err.max():.3g} at flat index {worst} (kiln "
             f"{a.flat[worst]:.7g}, torch {b.flat[worst]:.7g}); allowed {rtol:g} * "
             f"{scale:.3g} + {atol:g}")
PY
}

# A kiln built with ASan (CI's second run) skips the fixtures that the C
# tests' sanitizer builds leave out too (kt_sanitizer_skip in
# tests/kiln_test.h: their layers are all in other models);
# KILN_TEST_ALL_MODELS=1 takes them anyway.
skip=""
if [ "${KILN_TEST_ALL_MODELS:-0}" = 0 ] && ldd "$KILN" 2>/dev/null | grep -q libasan; then
  skip=" resnet18 resnet50 vgg11 vgg_small "
fi
n_models=0
n_skipped=0
limits=0 # models whose training step is built as an object (reported, not failed)
for meta in tests/reference/fixtures/*/meta.json; do
  [ -e "$meta" ] || continue
  dir=$(dirname "$meta")
  # meta.json -> shell variables (values quoted with printf %q by Python)
  if ! vars=$("$PY" - "$meta" "$dir" <<'PY'
import json, shlex, sys
m, d = json.load(open(sys.argv[1])), sys.argv[2]
q = shlex.quote
defs = " ".join(q(f"-D{k}={v}") for k, v in m["defines"].items())
if m.get("kiln_model"):
    defs += " " + q("--model=" + m["kiln_model"])
ins = " ".join(q(f"--input={k}={d}/inputs/{k}.npy") for k in m["inputs"])
print(f"name={q(m['model'])}; model={q(m.get('file', 'models/' + m['model'] + '.kiln'))}")
print(f"kmodel=({q('--model=' + m['kiln_model']) if m.get('kiln_model') else ''}); defs=({defs}); ins=({ins}); output={q(m['output'])}")
print(f"grads=({' '.join(q(g) for g in m['grads'])}); torch_params={int(m['torch_params'])}; torch_trainable={int(m['torch_trainable'])}")
print(f"seed={int(m['seed'])}; stored={q(m['weights'] or '')}; sha={q(m['weights_sha256'])}")
PY
  ); then
    echo "FAIL: $meta: unreadable"
    fails=$((fails + 1))
    continue
  fi
  eval "$vars"
  if [[ "$skip" == *" $name "* ]]; then
    echo "skipped: $name (a sanitizer build; KILN_TEST_ALL_MODELS=1 to check it)"
    n_skipped=$((n_skipped + 1))
    continue
  fi
  n_models=$((n_models + 1))
  if [ ! -e "$model" ]; then
    echo "FAIL: $name: $model is missing (its fixture is $dir)"
    fails=$((fails + 1))
    continue
  fi

  # --- the weights PyTorch computed with
  if [ -n "$stored" ]; then
    w="$dir/$stored"
  else
    w="$tmp/$name.safetensors"
    expect 0 "$name: kiln init" -- "$KILN" init "$model" "${defs[@]}" --seed "$seed" -o "$w" ||
      continue
    got=$(sha256sum "$w" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
      echo "FAIL: $name: kiln init's weights are not the ones the fixture was made with" \
        "(sha256 $got, recorded $sha): regenerate with tests/reference/make_fixtures.py --only $name"
      fails=$((fails + 1))
      continue
    fi
  fi

  # --- forward (inference mode) against PyTorch's eval()
  if expect 0 "$name: kiln run" -- "$KILN" run "$model" "${defs[@]}" --weights "$w" "${ins[@]}" \
    --output "$output=$tmp/$name.out.npy"; then
    close "$tmp/$name.out.npy" "$dir/output.npy" "$RTOL_FWD" "$name: $output = PyTorch (rtol $RTOL_FWD)"
  fi

  # --- the training-mode loss and gradients against PyTorch's train()
  gargs=()
  for g in "${grads[@]}"; do gargs+=(--grad "$g=$tmp/$name.grad.$g.npy"); done
  if expect 0 "$name: kiln run --grad" -- "$KILN" run "$model" "${defs[@]}" --weights "$w" \
    "${ins[@]}" "${gargs[@]}" --output "loss=$tmp/$name.loss.npy"; then
    close "$tmp/$name.loss.npy" "$dir/loss.npy" "$RTOL_FWD" "$name: training loss = PyTorch (rtol $RTOL_FWD)"
    for g in "${grads[@]}"; do
      close "$tmp/$name.grad.$g.npy" "$dir/grads/$g.npy" "$RTOL_GRAD" \
        "$name: d loss / d $g = PyTorch (rtol $RTOL_GRAD)"
    done
  fi

  # --- parameter count: kiln check's trainable count = PyTorch's trained
  # parameters (requires_grad; all of them unless the twin freezes a part)
  if expect 0 "$name: kiln check" -- "$KILN" check "$model" "${defs[@]}"; then
    count=$(sed -n 's/^ *parameters: .*(\([0-9]*\) trainable).*/\1/p' "$out")
    if [ "$count" = "$torch_trainable" ]; then
      echo "ok: $name: $count trainable parameters, as PyTorch ($torch_params parameters in all)"
    else
      echo "FAIL: $name: kiln check counts '${count}' trainable parameters, PyTorch $torch_trainable"
      fails=$((fails + 1))
    fi
  fi

  # --- kiln build --train at the fixture's sizes
  if build_prog "$name" "$model" "${defs[@]}" --train; then
    echo "ok: $name: kiln build --train"
  elif grep -qF "kiln build --train makes a program whose \`train\` command reads from a dataset" "$err"; then
    # the standalone trainer reads (f32 examples, i32 labels) datasets only:
    # the training step compiles into an object and header instead
    limits=$((limits + 1))
    if "$KILN" build "$model" "${defs[@]}" --train --emit obj,header -o "$tmp/$name.emb" \
      >"$out" 2>"$err" && [ -s "$tmp/$name.emb.o" ] && [ -s "$tmp/$name.emb.h" ]; then
      echo "ok: $name: kiln build --train --emit obj,header (no program: its inputs are not a dataset's)"
    else
      echo "FAIL: $name: kiln build --train --emit obj,header"; sed 's/^/    /' "$err" | tail -n 8
      fails=$((fails + 1))
    fi
  else
    echo "FAIL: $name: kiln build --train"
    sed 's/^/    /' "$err" | tail -n 8
    fails=$((fails + 1))
  fi
  rm -f "$tmp/$name".*
done

if [ "$n_models" -eq 0 ]; then
  echo "FAIL: no fixtures in tests/reference/fixtures (run tests/reference/make_fixtures.py)"
  fails=$((fails + 1))
fi
[ "$limits" -eq 0 ] || echo "$limits model(s) whose training step was built as an object, not a program (their inputs are not a dataset's)"
[ "$n_skipped" -eq 0 ] || echo "$n_skipped model(s) skipped in a sanitizer build"
finish "zoo ($n_models models)"
