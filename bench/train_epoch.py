"""LeNet-5 on Fashion-MNIST, batch 64: kiln's built program against PyTorch,
side by side, interleaved, repeated (docs/benchmarks.md, "CPU code
generation").

    /usr/bin/python3 bench/train_epoch.py --kiln build/kiln [--rounds 3] [--epochs 2]

kiln: `kiln build models/lenet5.kiln --train` once, then per round
`PROG train --data FMNIST --epochs E --threads T --seed R`; the epoch time is
the one the program prints (its training steps, batches gathered included;
not the test-set pass that follows), the accuracy its test accuracy after
the last epoch.

PyTorch (Debian's python3-torch, a fresh process per run with the thread
variables set): bench/torch_models.py's LeNet5 (the same layers and input
normalization), Adam(lr 0.002) as in models/lenet5.kiln, the same 937 shuffled
batches of 64 per epoch (the data already in tensors); timed: the training
loop; its accuracy is reported too.

Both run at 1 and 2 threads, in turns within each round.  Reported: median
epoch seconds per engine and thread count, and the ratio of PyTorch's best
(of 1 and 2 threads) to kiln's at 2 threads.
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
FMNIST = "/usr/share/datasets/fashion-mnist"


def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def torch_worker(threads, epochs, seed):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from torch_models import LeNet5
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    xs = torch.from_numpy(idx(f"{FMNIST}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
                          .astype(np.float32) / 255)
    ys = torch.from_numpy(idx(f"{FMNIST}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xt = torch.from_numpy(idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
                          .astype(np.float32) / 255)
    yt = torch.from_numpy(idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    m = LeNet5()
    opt = torch.optim.Adam(m.parameters(), lr=0.002)
    steps = len(xs) // 64
    times = []
    for _ in range(epochs):
        perm = torch.randperm(len(xs))
        m.train()
        t0 = time.perf_counter()
        for s in range(steps):
            i = perm[s * 64:(s + 1) * 64]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xs[i]), ys[i]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    m.eval()
    with torch.no_grad():
        acc = float((m(xt).argmax(1) == yt).float().mean())
    print(json.dumps(dict(epoch_s=times, acc=acc)))


def run_torch(threads, epochs, seed):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(["/usr/bin/python3", __file__, "--torch-worker", "--threads", str(threads),
                          "--epochs", str(epochs), "--seed", str(seed)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ loss [0-9.]+ \| ([0-9]+) ex/s \| ([0-9.]+)s"
                        r"(?: \| test accuracy ([0-9.]+)%)?")


def run_kiln(prog, threads, epochs, seed):
    r = subprocess.run([prog, "train", "--data", FMNIST, "--epochs", str(epochs), "--threads",
                        str(threads), "--seed", str(seed)], check=True, capture_output=True,
                       text=True)
    times, acc = [], None
    for line in r.stderr.splitlines():
        m = EPOCH_LINE.fullmatch(line.strip())
        if m:
            # the printed seconds have one decimal: derive them from ex/s
            # (examples of the epoch's batches / its rate) for 3 digits
            times.append(937 * 64 / float(m.group(2)))
            acc = float(m.group(4)) / 100 if m.group(4) else acc
    if len(times) != epochs:
        sys.exit(f"unexpected output of {prog} train:\n{r.stderr}")
    return dict(epoch_s=times, acc=acc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="build/kiln")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a.threads, a.epochs, a.seed)
    tmp = tempfile.mkdtemp(prefix="kiln_bench_")
    prog = os.path.join(tmp, "lenet5")
    t0 = time.perf_counter()
    subprocess.run([a.kiln, "build", "models/lenet5.kiln", "--train", "-o", prog], check=True)
    print(f"kiln build models/lenet5.kiln --train: {time.perf_counter() - t0:.2f} s wall",
          flush=True)
    res = {}
    for r in range(a.rounds):
        order = [("kiln", 2), ("torch", 1), ("kiln", 1), ("torch", 2)]
        if r % 2:
            order.reverse()
        for eng, t in order:
            out = run_kiln(prog, t, a.epochs, r) if eng == "kiln" else run_torch(t, a.epochs, r)
            res.setdefault((eng, t), []).append(out)
            print(f"round {r} {eng} t{t}: epochs {[round(x, 2) for x in out['epoch_s']]} s, "
                  f"test accuracy {100 * out['acc']:.2f}%", flush=True)
    med = {k: statistics.median(x for o in v for x in o["epoch_s"]) for k, v in res.items()}
    accs = {k: [round(100 * o["acc"], 2) for o in v] for k, v in res.items()}
    print()
    print(f"| engine | threads | epoch s (median) | test accuracy after {a.epochs} epochs (per round) |")
    print("|---|---|---|---|")
    for (eng, t) in sorted(res):
        print(f"| {eng} | {t} | {med[(eng, t)]:.2f} | {', '.join(f'{x:.2f}%' for x in accs[(eng, t)])} |")
    best_torch = min(med[("torch", 1)], med[("torch", 2)])
    print(f"\nPyTorch's best / kiln at 2 threads: {best_torch / med[('kiln', 2)]:.2f}x")


if __name__ == "__main__":
    main()
