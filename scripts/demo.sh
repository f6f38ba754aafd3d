#!/usr/bin/env bash
# demo.sh: from a fresh checkout, install what is missing, build kiln, and run
# the main job: check LeNet-5, compile it ahead of time with its training
# step into a standalone program (kiln build --train), train that program on
# Fashion-MNIST (2 epochs, progress bar, test accuracy after each), then
# classify real test images with the built program and the trained weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

out=out/demo
mkdir -p "$out"
fmnist=/usr/share/datasets/fashion-mnist
python3=/usr/bin/python3
echo "== kiln check models/lenet5.kiln"
./build/kiln check models/lenet5.kiln
echo
echo "== kiln show models/lenet5.kiln --format dot | dot -Tsvg > $out/lenet5.svg"
./build/kiln show models/lenet5.kiln --format dot | dot -Tsvg > "$out/lenet5.svg"
echo "wrote $out/lenet5.svg"
echo
echo "== kiln build models/lenet5.kiln --train -o $out/lenet5"
./build/kiln build models/lenet5.kiln --train -o "$out/lenet5" -v
echo
echo "== $out/lenet5 --help"
"$out/lenet5" --help
echo
echo "== $out/lenet5 train --data $fmnist --epochs 2 --save $out/lenet5.safetensors"
"$out/lenet5" train --data "$fmnist" --epochs 2 --save "$out/lenet5.safetensors"
echo
echo "== the first eight test images, classified by the built program with the trained weights"
"$python3" - "$fmnist" "$out" <<'PY'
import gzip, sys, numpy as np
src, out = sys.argv[1], sys.argv[2]
with gzip.open(f"{src}/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:8] / 255.0
with gzip.open(f"{src}/t10k-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)[:8]
np.save(f"{out}/test8.npy", x.astype(np.float32))
np.save(f"{out}/labels8.npy", y.astype(np.int32))
print(f"wrote {out}/test8.npy: float32{list(x.shape)}")
PY
"$out/lenet5" --weights "$out/lenet5.safetensors" --input x="$out/test8.npy" \
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
