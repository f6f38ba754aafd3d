#!/usr/bin/env bash
# build_time.sh: how long `kiln build --train` takes (the inference graph,
# the prepare step and the training step, compiled and linked).
#
#   bench/build_time.sh [KILN] [MODEL.kiln] [R]   one model (default LeNet-5),
#       R builds (default 5), each timed (wall, and CPU of kiln and the
#       linker together), then the median and kiln's own breakdown (-v) of
#       the fastest (front end, planning, lowering, LLVM IR, O3, link);
#   bench/build_time.sh [KILN] all [R]            every model of models/ at its
#       own sizes (R builds each, default 3), as a markdown table: median
#       wall seconds, the fastest run's kernels, planning and LLVM seconds.
#
# A model whose inputs are not one f32 examples input and one i32 labels
# input has no standalone trainer; its training step is built as an object
# and header instead (--emit obj,header), which is the same compilation
# without the link.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${1:-build/kiln}
model=${2:-models/lenet5.kiln}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TIMEFORMAT='%R %U %S'

# time_builds MODEL R [ARGS...]: R timed builds into $tmp/all.txt, $tmp/vN.txt
time_builds() {
  local m=$1 runs=$2
  shift 2
  rm -f "$tmp/all.txt"
  local emit=()
  if ! "$kiln" build "$m" "$@" --train -o "$tmp/prog" 2>"$tmp/probe.txt" >/dev/null; then
    grep -qF "command reads from a dataset" "$tmp/probe.txt" || { cat "$tmp/probe.txt" >&2; exit 1; }
    emit=(--emit obj,header)
  fi
  for r in $(seq "$runs"); do
    { time "$kiln" build "$m" "$@" --train "${emit[@]}" -o "$tmp/prog" -v 2>"$tmp/v$r.txt"; } 2>"$tmp/t$r.txt"
    read -r wall user sys <"$tmp/t$r.txt"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$r" \
      'BEGIN { printf "run %d: %.2f s wall, %.2f s CPU\n", r, w, u + s }' >>"$tmp/all.txt"
  done
  obj=${emit[*]:+" (--emit obj,header)"}
}

median() { # median COLUMN of $tmp/all.txt
  local n m
  n=$(wc -l <"$tmp/all.txt")
  m=$(((n + 1) / 2))
  awk -v c="$1" '{ print $c }' "$tmp/all.txt" | sort -n | sed -n "${m}p"
}

fastest() { awk '{ print $3, NR }' "$tmp/all.txt" | sort -n | head -1 | cut -d' ' -f2; }

if [ "$model" != all ]; then
  time_builds "$model" "${3:-5}"
  cat "$tmp/all.txt"
  echo "median of $(wc -l <"$tmp/all.txt"): $(median 3) s wall, $(median 6) s CPU$obj"
  echo "kiln's breakdown of the fastest run:"
  sed 's/^/  /' "$tmp/v$(fastest).txt" | head -3
  exit 0
fi

runs=${3:-3}
echo "| model | kernels | median s | plan s | LLVM s (IR, O3, objects) | link s |"
echo "|---|---|---|---|---|---|"
for f in models/*.kiln; do
  for name in $(sed -n 's/^model \([A-Za-z_0-9]*\).*/\1/p' "$f"); do
    time_builds "$f" "$runs" --model "$name"
    v="$tmp/v$(fastest).txt"
    kernels=$(sed -n 's/.*step, \([0-9]*\) kernels.*/\1/p' "$v")
    plan=$(sed -n 's/.*plan \([0-9.]*\) s.*/\1/p' "$v")
    llvm=$(sed -n 's/.*LLVM IR \([0-9.]*\) s, O3 and objects on [0-9]* threads\{0,1\} \([0-9.]*\) s.*/\1 \2/p' "$v" |
      awk '{ printf "%.2f", $1 + $2 }')
    link=$(sed -n 's/.*, link \([0-9.]*\) s.*/\1/p' "$v")
    echo "| $name$obj | $kernels | $(median 3) | $plan | $llvm | ${link:--} |"
  done
done
