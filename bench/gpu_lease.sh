#!/usr/bin/env bash
# gpu_lease.sh: everything a lent GPU machine is used for, in one command,
# since such a machine starts bare and is lent for minutes (the `device`
# tool of this workplace).  It runs from the repository root on that
# machine with a kiln built here:
#   CARRY/kiln, CARRY/runtime/*.a   the kiln binary and the runtime archives
#                                   that `kiln build` links (next to kiln)
#   CARRY/libs.tar.xz               the shared libraries kiln needs that the
#                                   GPU machine's image lacks (LLVM 19 and
#                                   its dependencies, from Debian 12)
# and writes its logs and JSON into $OUT/results.tar.gz (one file: the
# device tool brings back at most 8):
#   ceilings.json      the device's measured bandwidth and f32 GEMM rate
#   gpu.log            tests/gpu.sh: every op, every model, gradients,
#                      training, a built program and bench, against the CPU
#   bench-*.json       kiln bench --target cuda per model (fused vs unfused)
#   peer-*.json, torch.jsonl   kiln and PyTorch (bench/gpu_torch.py) on the
#                      same models, training step and inference at batch 32
# bench/gpu_pack.sh makes CARRY here.
#   bench/gpu_lease.sh CARRY [STEPS]     STEPS: any of ceilings,test,bench,peer
# (CARRY/old/kiln, if there, is benchmarked too, as bench-old-*.json)
set -uo pipefail
cd "$(dirname "$0")/.."
carry=$(realpath "$1")
steps=${2:-ceilings,test,bench,peer}
results=${OUT:-/tmp}/results.tar.gz
OUT=/tmp/kiln_gpu_results
mkdir -p "$OUT" /tmp/kiln_libs
trap 'tar czf "$results" -C "$OUT" .' EXIT
tar xJf "$carry/libs.tar.xz" -C /tmp/kiln_libs
nvrtc=$(find /usr/local /usr/lib /opt -name 'libnvrtc.so.13' 2>/dev/null | head -n 1)
export LD_LIBRARY_PATH=/tmp/kiln_libs/libs:$(dirname "${nvrtc:-/usr/local/cuda/lib64/x}")
export KILN_PY=$(command -v python3)
KILN=$carry/kiln
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
  --format=csv | tee "$OUT/device.txt"
echo "nvrtc: $nvrtc" | tee -a "$OUT/device.txt"
ldd "$KILN" | grep -i "not found"

if [[ $steps == *ceilings* ]]; then
  timeout 120 python3 bench/gpu_ceilings.py | tee "$OUT/ceilings.json"
fi
if [[ $steps == *test* ]]; then
  timeout 380 bash tests/gpu.sh "$KILN" 2>&1 | tee "$OUT/gpu.log" | grep -v "^ok: "
  echo "gpu.sh: exit ${PIPESTATUS[0]}, $(grep -c '^ok: ' "$OUT/gpu.log") ok"
fi
if [[ $steps == *bench* ]]; then
  bench() { # bench NAME ARGS...: this kiln's, then the old one's
    local name=$1 k
    shift
    for k in "$KILN" "$carry/old/kiln"; do
      [ -x "$k" ] || continue
      timeout 60 "$k" bench "$@" --target cuda --repeat 20 --json >"$OUT/bench-$name.json" \
        2>"$OUT/bench-$name.err" || { echo "bench $name: failed"; tail -n 5 "$OUT/bench-$name.err"; }
      name=old-$name
    done
  }
  bench stream bench/stream.kiln
  bench mlp-b64 models/mlp.kiln --batch 64
  bench lenet5-b64 models/lenet5.kiln --batch 64
  for m in lstm transformer resnet_small; do
    bench $m-train models/$m.kiln --train -D N=32
    bench $m-train-fuseall models/$m.kiln --train -D N=32 --fuse=all
  done
  bench resnet50-b8 models/resnet50.kiln -D N=8
  python3 - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(sys.argv[1] + "/bench-*.json")):
    try:
        d = json.load(open(f))
    except Exception as e:
        print(os.path.basename(f), "unreadable:", e)
        continue
    steps = " ".join("%s %.1f us" % (b["fuse"], b["step"]["median_s"] * 1e6) for b in d["builds"])
    print(os.path.basename(f)[6:-5], steps, "speedup %.2f" % d["speedup"])
PY
fi
if [[ $steps == *peer* ]]; then
  # the models bench/torch_models.py has twins of, at batch 32, kiln's CUDA
  # default build against PyTorch's eager steps on the same device
  models=mlp,lenet5,resnet_small,attention
  timeout 300 python3 bench/gpu_torch.py --batch 32 --models $models >"$OUT/torch.jsonl" ||
    echo "gpu_torch.py: failed"
  for m in ${models//,/ }; do
    for mode in train infer; do
      flag=$([ $mode = train ] && echo --train)
      timeout 90 "$KILN" bench models/$m.kiln $flag --batch 32 --target cuda --repeat 20 --json \
        >"$OUT/peer-$m-$mode.json" 2>"$OUT/peer-$m-$mode.err" || echo "peer $m $mode: failed"
    done
  done
  python3 bench/gpu_peer_table.py "$OUT"
fi
