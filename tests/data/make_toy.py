"""make_toy.py DIR [--targets DIR2]: the separable toy task the shell tests
train tests/data/small.kiln on (train.sh, cuda_run.sh, cuda_build.sh,
gpu.sh): 96 training and 40 test examples of 6 features in 3 classes, each
class's features shifted by its number, as DIR/{train,test}_{x,y}.npy;
with --targets, the same examples with f32 targets for tests/data/reg.kiln
(x0 - x1 and x2 / 2) in DIR2.  Seeded: every test gets the same values."""
import os
import sys

import numpy as np

d = sys.argv[1]
targets = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--targets" else None
rng = np.random.default_rng(0)
for split, n in (("train", 96), ("test", 40)):
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 6)).astype(np.float32) + y[:, None]  # separable (float64)
    np.save(os.path.join(d, f"{split}_x.npy"), x)
    np.save(os.path.join(d, f"{split}_y.npy"), y)
    if targets:
        np.save(os.path.join(targets, f"{split}_x.npy"), x)
        np.save(os.path.join(targets, f"{split}_y.npy"), np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], 1))
