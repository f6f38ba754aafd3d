#!/usr/bin/env bash
# build_time.sh: how long `kiln build` takes for a model (default LeNet-5
# with its training step): R builds, each timed (wall, and CPU of kiln and
# the linker together), then the median, and kiln's own breakdown (-v) of
# the fastest (front end, planning, lowering, LLVM IR, O3, object, link).
#   bench/build_time.sh [KILN] [MODEL.kiln] [R]     (defaults: build/kiln, models/lenet5.kiln, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${1:-build/kiln}
model=${2:-models/lenet5.kiln}
runs=${3:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TIMEFORMAT='%R %U %S'
for r in $(seq "$runs"); do
  { time "$kiln" build "$model" --train -o "$tmp/prog" -v 2>"$tmp/v$r.txt"; } 2>"$tmp/t$r.txt"
  read -r wall user sys <"$tmp/t$r.txt"
  awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$r" \
    'BEGIN { printf "run %d: %.2f s wall, %.2f s CPU\n", r, w, u + s }' | tee -a "$tmp/all.txt"
done
n=$(wc -l <"$tmp/all.txt")
m=$(((n + 1) / 2))
echo "median of $n: $(awk '{ print $3 }' "$tmp/all.txt" | sort -n | sed -n "${m}p") s wall," \
  "$(awk '{ print $6 }' "$tmp/all.txt" | sort -n | sed -n "${m}p") s CPU"
best=$(awk '{ print $3, NR }' "$tmp/all.txt" | sort -n | head -1 | cut -d' ' -f2)
echo "kiln's breakdown of the fastest run:"
sed 's/^/  /' "$tmp/v$best.txt" | head -3
