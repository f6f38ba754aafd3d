"""DCGAN on Fashion-MNIST, batch 8: examples/gan/train_gan.c (kiln's two
compiled training steps in a C loop) against the same loop in PyTorch, side
by side, interleaved, repeated (docs/benchmarks.md, fourteenth session).

    /usr/bin/python3 bench/gan.py --kiln build/kiln [--steps 300] [--rounds 3]

kiln: `kiln build models/dcgan.kiln --model dcgan_g|dcgan_d --train --emit
obj,header --prefix gen|disc`, train_gan.c compiled with cc -O2 against
build/runtime/libkiln_rt.a, then per run `train_gan FMNIST STEPS OUT.pgm
--threads T`; the time is the one it prints (its training loop: noise,
batches gathered and padded, three training steps and the weight copy per
step; not the data loading before it nor the samples after it).

PyTorch (Debian's python3-torch, a fresh process per run with the thread
variables set): tests/reference/zoo_gen.py's Generator and Discriminator
(the same layers as models/dcgan.kiln), Adam(lr 0.0002, betas (0.5,
0.999)) for each, per step: z ~ N(0, 1) [8, 100]; the generator's step
(BCE with logits of D(G(z)) against 1, D's parameters not trained); the
discriminator's step on 8 real images (padded to 32 x 32 and scaled to
[-1, 1], against 1), then on G(z) detached (against 0): the work of
train_gan's loop (train_gan keeps a copy of D inside its generator model
and copies D's weights into it after each step; PyTorch uses D itself).
The images are in a tensor beforehand; timed: the loop.

Both run at 1 and 2 threads, in turns within each round.  Reported: the
median milliseconds per step for each engine and thread count, and the
ratio of PyTorch's best (of 1 and 2 threads) to kiln's best.
"""
import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FMNIST = "/usr/share/datasets/fashion-mnist"


def torch_worker(threads, steps):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    import zoo_gen as zg
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with gzip.open(f"{FMNIST}/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    real = torch.full((len(x), 1, 32, 32), -1.0)
    real[:, :, 2:30, 2:30] = torch.from_numpy(x.astype(np.float32) / 255 * 2 - 1)
    g, d = zg.Generator(100, 32), zg.Discriminator(32)
    og = torch.optim.Adam(g.parameters(), lr=0.0002, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=0.0002, betas=(0.5, 0.999))
    ones, zeros = torch.ones(8), torch.zeros(8)
    order = torch.randperm(len(real))

    def step(s):
        z = torch.randn(8, 100)
        fake = g(z)
        d.requires_grad_(False)
        lg = F.binary_cross_entropy_with_logits(d(fake), ones)
        og.zero_grad()
        lg.backward()
        og.step()
        d.requires_grad_(True)
        batch = real[order[(s * 8) % len(real):(s * 8) % len(real) + 8]]
        for xb, yb in ((batch, ones), (fake.detach(), zeros)):
            ld = F.binary_cross_entropy_with_logits(d(xb), yb)
            od.zero_grad()
            ld.backward()
            od.step()
        return float(lg), float(ld)

    for s in range(5):  # warm-up
        step(s)
    t0 = time.perf_counter()
    for s in range(steps):
        lg, ld = step(s)
    took = time.perf_counter() - t0
    print(json.dumps(dict(ms=1e3 * took / steps, g=lg, d=ld)))


def run_torch(threads, steps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(["/usr/bin/python3", __file__, "--torch-worker", "--threads", str(threads),
                          "--steps", str(steps)], env=env, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ms"]


LINE = re.compile(r"(\d+) steps in [0-9.]+ s: ([0-9.]+) ms a step on (\d+) thread")


def build_kiln(kiln, tmp):
    for model, prefix in (("dcgan_g", "gen"), ("dcgan_d", "disc")):
        subprocess.run([kiln, "build", os.path.join(ROOT, "models/dcgan.kiln"), "--model", model,
                        "--train", "--emit", "obj,header", "--prefix", prefix, "-o",
                        os.path.join(tmp, prefix)], check=True, capture_output=True)
    rtlib = os.path.join(os.path.dirname(os.path.abspath(kiln)), "runtime", "libkiln_rt.a")
    prog = os.path.join(tmp, "train_gan")
    subprocess.run(["cc", "-O2", "-I", tmp, "-I", os.path.join(ROOT, "runtime"),
                    os.path.join(ROOT, "examples/gan/train_gan.c"), os.path.join(tmp, "gen.o"),
                    os.path.join(tmp, "disc.o"), rtlib, "-lm", "-lpthread", "-o", prog], check=True)
    return prog


def run_kiln(prog, threads, steps, tmp):
    out = subprocess.run([prog, FMNIST, str(steps), os.path.join(tmp, "s.pgm"), "--threads",
                          str(threads)], check=True, capture_output=True, text=True).stdout
    m = LINE.search(out)
    assert m and int(m.group(3)) == threads, out
    return float(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--torch-worker", action="store_true")
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a.threads, a.steps)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        prog = build_kiln(a.kiln, tmp)
        for r in range(a.rounds):
            for t in (1, 2):
                for eng, fn in (("kiln", lambda: run_kiln(prog, t, a.steps, tmp)),
                                ("pytorch", lambda: run_torch(t, a.steps))):
                    ms = fn()
                    res.setdefault((eng, t), []).append(ms)
                    print(f"round {r + 1}: {eng} {t} thread(s): {ms:.2f} ms a step", flush=True)
    print("\n| engine | threads | ms a step (median) | runs |")
    print("|---|---|---|---|")
    for (eng, t), v in sorted(res.items()):
        print(f"| {eng} | {t} | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    best = {e: min(statistics.median(v) for (e2, _), v in res.items() if e2 == e)
            for e in ("kiln", "pytorch")}
    print(f"\nPyTorch's best / kiln's best: {best['pytorch'] / best['kiln']:.2f}x")


if __name__ == "__main__":
    main()
