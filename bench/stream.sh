#!/bin/bash
# stream.sh: do kiln's fused elementwise kernels run at the machine's memory
# bandwidth?  Side by side, round after round: STREAM's triad (bench/stream.c)
# and `kiln bench bench/stream.kiln` (y = relu(a * 2 + b) * c over 16M floats:
# one fused kernel, or four unfused ones), at the same thread count.  Prints
# the triad's GB/s, the fused kernel's and the unfused kernels' (kbench counts
# each buffer once, as STREAM does), fused / triad, and the step's speedup.
#   bench/stream.sh [BUILD_DIR] [THREADS] [ROUNDS]      (default build 2 5)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} threads=${2:-2} rounds=${3:-5}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O3 -march=native -pthread -o "$out/stream" bench/stream.c
for r in $(seq "$rounds"); do
  "$out/stream" "$threads" 16 10 >>"$out/triad"
  "$build/kiln" bench bench/stream.kiln --json --repeat 5 --threads "$threads" >"$out/bench$r.json"
done
"$py" - "$out" "$rounds" "$threads" <<'PY'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
triad = [float(x) for x in open(out + "/triad").read().split()]
fused, unfused, speedup = [], [], []
for r in range(1, rounds + 1):
    d = json.load(open(f"{out}/bench{r}.json"))
    speedup.append(d["speedup"])
    for b in d["builds"]:
        big = [k for k in b["kernels"] if k["bytes"] > 1e8]
        rate = sum(k["bytes"] for k in big) / sum(k["time"]["median_s"] for k in big) / 1e9
        (fused if b["fuse"] != "none" else unfused).append(rate)
med = statistics.median
print(f"threads {threads}, {rounds} rounds (median, min..max), GB/s:")
print(f"  STREAM triad          {med(triad):6.1f}  ({min(triad):.1f}..{max(triad):.1f})")
print(f"  kiln fused kernel     {med(fused):6.1f}  ({min(fused):.1f}..{max(fused):.1f})")
print(f"  kiln unfused kernels  {med(unfused):6.1f}  ({min(unfused):.1f}..{max(unfused):.1f})")
print(f"  fused / triad         {med(fused) / med(triad):6.2f}")
print(f"step, unfused / fused   {med(speedup):6.2f}x")
PY
