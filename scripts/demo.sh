#!/usr/bin/env bash
# demo.sh: from a fresh checkout, install what is missing, build kiln, and run
# the main job: check, show and run LeNet-5 with the reference evaluator,
# then train the MLP on Fashion-MNIST (5,000 images, one epoch, reference
# evaluator) and classify real test images with the trained weights.
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

fmnist=/usr/share/datasets/fashion-mnist
echo
echo "== kiln train models/mlp.kiln --data $fmnist --reference --limit 5000 --epochs 1 --save ..."
./build/kiln train models/mlp.kiln --data "$fmnist" --reference --limit 5000 --epochs 1 --seed 1 \
  --save "$out/mlp.safetensors"
echo
echo "== the first eight test images, classified by the trained MLP"
"$python3" - "$fmnist" "$out" <<'PY'
import gzip, sys, numpy as np
src, out = sys.argv[1], sys.argv[2]
with gzip.open(f"{src}/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:8] / 255.0
with gzip.open(f"{src}/t10k-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)[:8]
np.save(f"{out}/test8.npy", x.astype(np.float32))
np.save(f"{out}/labels8.npy", y.astype(np.int32))
PY
./build/kiln run models/mlp.kiln --weights "$out/mlp.safetensors" --input x="$out/test8.npy" \
  --output probs="$out/probs8.npy"
"$python3" - "$out" <<'PY'
import sys, numpy as np
out = sys.argv[1]
names = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
p, y = np.load(f"{out}/probs8.npy"), np.load(f"{out}/labels8.npy")
for i, (row, label) in enumerate(zip(p, y)):
    k = int(row.argmax())
    print(f"  image {i}: {names[k]:9s} ({row[k]:.2f})  true: {names[label]}")
print(f"  {int((p.argmax(1) == y).sum())} of 8 right")
PY
