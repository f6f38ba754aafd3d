#!/usr/bin/env bash
# gan.sh: examples/gan/train_gan.c, a C program that trains models/dcgan.kiln's
# generator and discriminator in turns from two objects kiln built with
# --emit obj,header --prefix gen / --prefix disc, checked against kiln run:
#   - both objects and headers compile and link into one program (their
#     symbols and macros apart), with libkiln_rt.a for the data and threads;
#   - on toy 28x28 images, the first generator step's loss and the images it
#     generated (GEN_TRAIN_OUTPUT_images: the training step keeps the
#     outputs) are `kiln run --model dcgan_g --train`'s from the same
#     parameters and noise; the discriminator's first loss on the real batch
#     is `kiln run --model dcgan_d --train`'s;
#   - the second generator step's loss is kiln run's from the parameters the
#     program had then, which hold the generator's update and, in its frozen
#     copy (d.*), the discriminator's weights and statistics after its two
#     steps (copied by name);
#   - 20 steps run with finite losses and write a 256x256 PGM of samples;
#     bad arguments fail with a message.
#
# Usage: tests/gan.sh path/to/kiln path/to/libkiln_rt.a [LINK_FLAGS]
# (LINK_FLAGS: what linking the runtime library needs besides, e.g.
# -fsanitize=address,undefined when it was built with them)
set -uo pipefail
RTLIB=$(realpath "$2")
read -r -a link_flags <<<"${3:-}"
source "$(dirname "$0")/sh_helpers.sh"

close() { # close A.npy B.npy WHAT: same shape, within 1e-5 relative
  if "$PY" - "$1" "$2" <<'PY'; then echo "ok: $3"; else echo "FAIL: $3"; fails=$((fails + 1)); fi
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape, (a.shape, b.shape)
assert np.allclose(a, b, rtol=1e-5, atol=1e-6), float(abs(a - b).max())
PY
}

# --- building ---------------------------------------------------------------------
expect 0 "build the generator (--prefix gen)" -- "$KILN" build models/dcgan.kiln --model dcgan_g \
  --train --emit obj,header --prefix gen -o "$tmp/gen"
contains "$tmp/gen.h" "#define GEN_TRAIN_OUTPUT_images_OFFSET"
expect 0 "build the discriminator (--prefix disc)" -- "$KILN" build models/dcgan.kiln \
  --model dcgan_d --train --emit obj,header --prefix disc -o "$tmp/disc"
expect 0 "compile and link train_gan.c" -- cc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall \
  -Wextra -Werror -I "$tmp" -I runtime examples/gan/train_gan.c "$tmp/gen.o" "$tmp/disc.o" \
  "$RTLIB" "${link_flags[@]}" -lm -lpthread -o "$tmp/train_gan"

# --- toy data: 32 "images" of 28 x 28 in [0, 1] ---------------------------------------
mkdir -p "$tmp/data" "$tmp/dump"
"$PY" - "$tmp/data" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
np.save(f"{sys.argv[1]}/train_x.npy", rng.random((32, 28, 28), dtype=np.float32))
np.save(f"{sys.argv[1]}/train_y.npy", np.zeros(32, np.int64))
PY

expect 0 "train_gan: 20 steps on 2 threads, dumping the first two" -- "$tmp/train_gan" "$tmp/data" 20 \
  "$tmp/s.pgm" --dump "$tmp/dump" --threads 2
contains "$out" "step 20: G loss "
contains "$out" "20 steps in "
contains "$out" "wrote 64 samples to $tmp/s.pgm"
if [ "$(head -c 15 "$tmp/s.pgm" | tr '\n' ' ')" = "P5 256 256 255 " ] &&
  [ "$(wc -c <"$tmp/s.pgm")" -eq $((15 + 256 * 256)) ]; then
  echo "ok: a 256x256 PGM of samples"
else
  echo "FAIL: $tmp/s.pgm is not a 256x256 PGM"; fails=$((fails + 1))
fi

# the generator's parameters as the program had them: safetensors for kiln
# run (the Adam state left out)
for k in 0 1; do
  "$PY" - "$tmp/dump/gen.manifest" "$tmp/dump/gen$k.params" "$tmp/gen$k.safetensors" <<'PY'
import json, sys, numpy as np
man = json.load(open(sys.argv[1]))
raw = open(sys.argv[2], "rb").read()
header, blobs, at = {}, [], 0
for p in man["params"]:
    if p["name"].endswith((".exp_avg", ".exp_avg_sq")):
        continue
    n = int(np.prod(p["shape"])) if p["shape"] else 1
    a = np.frombuffer(raw, np.float32, n, p["offset"])
    header[p["name"]] = {"dtype": "F32", "shape": p["shape"], "data_offsets": [at, at + 4 * n]}
    blobs.append(a.tobytes())
    at += 4 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[3], "wb") as f:
    f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
PY
done

# step 1: the generator's loss and images, and the discriminator's loss on the real batch
expect 0 "kiln run dcgan_g --train, step 1" -- "$KILN" run models/dcgan.kiln --model dcgan_g \
  --train --weights "$tmp/gen0.safetensors" --input z="$tmp/dump/z0.npy" \
  --output loss="$tmp/gl0.npy" --output images="$tmp/im0.npy"
close "$tmp/dump/gloss0.npy" "$tmp/gl0.npy" "step 1: the generator's loss = kiln run's"
close "$tmp/dump/images0.npy" "$tmp/im0.npy" "step 1: the images it made (training mode) = kiln run's"
"$PY" -c "import numpy as np, sys; np.save(sys.argv[1], np.ones(8, np.float32))" "$tmp/ones.npy"
expect 0 "kiln run dcgan_d --train on the real batch" -- "$KILN" run models/dcgan.kiln \
  --model dcgan_d --train --input x="$tmp/dump/x0.npy" --input y="$tmp/ones.npy" \
  --output loss="$tmp/dl0.npy"
close "$tmp/dump/dloss0.npy" "$tmp/dl0.npy" "step 1: the discriminator's loss on real images = kiln run's"
# step 2: after the updates and the copy of the discriminator's weights
expect 0 "kiln run dcgan_g --train, step 2" -- "$KILN" run models/dcgan.kiln --model dcgan_g \
  --train --weights "$tmp/gen1.safetensors" --input z="$tmp/dump/z1.npy" --output loss="$tmp/gl1.npy"
close "$tmp/dump/gloss1.npy" "$tmp/gl1.npy" "step 2: the generator's loss = kiln run's"
# the generator's frozen copy (d.*) is the discriminator's, after its two steps
if "$PY" - "$tmp/dump" <<'PY'; then
import json, sys, numpy as np
d = sys.argv[1]
def params(model):
    man = json.load(open(f"{d}/{model}.manifest"))
    raw = open(f"{d}/{model}1.params", "rb").read()
    return {p["name"]: np.frombuffer(raw, np.float32, int(np.prod(p["shape"] or [1])), p["offset"])
            for p in man["params"]}
g, dd = params("gen"), params("disc")
shared = [k for k in g if k.startswith("d.")]
assert len(shared) == 12, shared
for k in shared:
    assert np.array_equal(g[k], dd[k]), k
PY
  echo "ok: step 2 starts from the discriminator's updated weights and statistics"
else
  echo "FAIL: the generator's d.* are not the discriminator's after its steps"; fails=$((fails + 1))
fi
if cmp -s "$tmp/gen0.safetensors" "$tmp/gen1.safetensors"; then
  echo "FAIL: the generator's parameters did not change in step 1"; fails=$((fails + 1))
fi

# --- bad arguments -------------------------------------------------------------------
expect 2 "train_gan without arguments" -- "$tmp/train_gan"
contains "$err" "usage: train_gan DATA_DIR STEPS OUT.pgm [--threads N] [--dump DIR]"
expect 2 "train_gan, no steps" -- "$tmp/train_gan" "$tmp/data" 0 "$tmp/x.pgm"
expect 2 "train_gan, --threads 0" -- "$tmp/train_gan" "$tmp/data" 5 "$tmp/x.pgm" --threads 0
expect 2 "train_gan, an unknown option" -- "$tmp/train_gan" "$tmp/data" 5 "$tmp/x.pgm" --fast 1
expect 1 "train_gan, no data" -- "$tmp/train_gan" "$tmp/nothing" 5 "$tmp/x.pgm"
contains "$err" "train_gan: $tmp/nothing"

finish gan
