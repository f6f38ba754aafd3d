#!/usr/bin/env bash
# demo.sh: from a fresh checkout, install what is missing, build kiln, and run
# the main job: check, show and run LeNet-5 with the reference evaluator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

out=out/demo
mkdir -p "$out"
echo "== kiln check models/lenet5.kiln"
./build/kiln check models/lenet5.kiln
echo
echo "== kiln show models/lenet5.kiln --format dot | dot -Tsvg > $out/lenet5.svg"
./build/kiln show models/lenet5.kiln --format dot | dot -Tsvg > "$out/lenet5.svg"
echo "wrote $out/lenet5.svg"
echo
echo "== kiln init models/lenet5.kiln -D N=4 -o $out/lenet5.safetensors"
./build/kiln init models/lenet5.kiln -D N=4 --seed 1 -o "$out/lenet5.safetensors"
echo
echo "== four 28x28 images (a seeded pattern; real data arrives with training)"
python3=/usr/bin/python3
"$python3" - "$out/images.npy" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
x = rng.random((4, 1, 28, 28), dtype=np.float32)
np.save(sys.argv[1], x)
print(f"wrote {sys.argv[1]}: float32{list(x.shape)}")
PY
echo
echo "== kiln run --reference models/lenet5.kiln -D N=4 --weights ... --input x=... --output probs=..."
./build/kiln run --reference models/lenet5.kiln -D N=4 --weights "$out/lenet5.safetensors" \
  --input x="$out/images.npy" --output probs="$out/probs.npy"
"$python3" - "$out/probs.npy" <<'PY'
import sys, numpy as np
p = np.load(sys.argv[1])
print(f"probs {p.dtype}{list(p.shape)}; rows sum to {np.round(p.sum(1), 5).tolist()}")
print("predicted classes:", p.argmax(1).tolist())
PY
