"""LeNet-5 (or the MLP, the autoencoder, the VAE) on Fashion-MNIST, batch 64
(the autoencoder and the VAE: 16, their models'), or the token models (the
transformer classifier, the language model) at batch 32 on synthetic token
sequences: kiln's built program against PyTorch, side
by side, interleaved, repeated (docs/benchmarks.md, "CPU code generation"
and the tenth session).

    /usr/bin/python3 bench/train_epoch.py --kiln build/kiln [--rounds 3] [--epochs 2]
        [--model lenet5|mlp|autoencoder|vae|transformer|lm] [--keep-denormals-too]

kiln: `kiln build models/MODEL.kiln --train` once (the token models with -D N=32), then per round
`PROG train --data FMNIST --epochs E --threads T --seed R`; the epoch time is
the one the program prints (its training steps, batches gathered included;
not the test-set pass that follows), the accuracy its test accuracy after
the last epoch.

PyTorch (Debian's python3-torch, a fresh process per run with the thread
variables set): bench/torch_models.py's LeNet5 (the same layers and input
normalization), Adam(lr 0.002) as in models/lenet5.kiln (the MLP: MLP,
SGD(lr 0.1, momentum 0.9) as in models/mlp.kiln; the autoencoder:
Autoencoder, Adam(lr 0.001), binary cross-entropy with logits against its
input, as in models/autoencoder.kiln; the VAE: VAE, Adam(lr 0.001), the
negative ELBO with torch.randn_like's noise, as models/vae.kiln; the token
models: tests/reference/zoo_gen.py's twins, Adam(lr 0.001) as their train
sections, on 20000 sequences of 16 tokens written as .npy files: a class's
sequences draw 70% of their tokens from its fifth of the 100 ids; the
language model's count up by one, mod 64), the same 937 shuffled batches of
64 per epoch (3750 of 16) (the data already in tensors); timed: the
training loop; its accuracy is reported too (the autoencoders: none).  PyTorch keeps subnormal numbers (its
default; torch.set_flush_denormal changes that); kiln's code flushes them
unless built with --keep-denormals, which --keep-denormals-too adds as a
third engine ("kiln-keep").  Every epoch's time is printed.

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


TOKENS = ("transformer", "lm")


def token_data(model, d):
    """The token models' synthetic train and test splits, as .npy files in d."""
    rng = np.random.default_rng(7)
    for split, n in (("train", 20000), ("test", 2000)):
        if model == "transformer":
            y = rng.integers(0, 5, n)
            x = np.where(rng.random((n, 16)) < 0.3, rng.integers(0, 100, (n, 16)),
                         y[:, None] * 20 + rng.integers(0, 20, (n, 16)))
        else:
            seq = (rng.integers(0, 64, (n, 1)) + np.arange(17)) % 64
            x, y = seq[:, :16], seq[:, 1:]
        np.save(f"{d}/{split}_x.npy", x.astype(np.int32))
        np.save(f"{d}/{split}_y.npy", y.astype(np.int32))


def epoch_times(m, opt, loss_of, xs, ys, batch, epochs):
    """PyTorch's training loop: each epoch's seconds over its shuffled full batches."""
    import torch
    times = []
    for _ in range(epochs):
        perm = torch.randperm(len(xs))
        m.train()
        t0 = time.perf_counter()
        for s in range(len(xs) // batch):
            i = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss_of(xs[i], ys[i]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def torch_tokens(threads, epochs, seed, model, data):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "reference"))
    from zoo_gen import LM, Transformer
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    load = lambda s, k: torch.from_numpy(np.load(f"{data}/{s}_{k}.npy").astype(np.int64))
    xs, ys, xt, yt = load("train", "x"), load("train", "y"), load("test", "x"), load("test", "y")
    m = Transformer() if model == "transformer" else LM()
    opt = torch.optim.Adam(m.parameters(), lr=0.001)
    times = epoch_times(m, opt, lambda x, y: m(x, y)["loss"], xs, ys, BATCH[model], epochs)
    m.eval()
    with torch.no_grad():
        acc = float((m(xt, yt)["probs"].argmax(-1) == yt).float().mean())
    print(json.dumps(dict(epoch_s=times, acc=acc)))


def torch_worker(threads, epochs, seed, model, data):
    if model in TOKENS:
        return torch_tokens(threads, epochs, seed, model, data)
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from torch_models import MLP, VAE, Autoencoder, LeNet5
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    xs = torch.from_numpy(idx(f"{FMNIST}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
                          .astype(np.float32) / 255)
    ys = torch.from_numpy(idx(f"{FMNIST}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xt = torch.from_numpy(idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
                          .astype(np.float32) / 255)
    yt = torch.from_numpy(idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    batch = BATCH[model]
    if model == "lenet5":
        m = LeNet5()
        opt = torch.optim.Adam(m.parameters(), lr=0.002)
    else:
        xs, xt = xs.reshape(-1, 784), xt.reshape(-1, 784)
        m = {"mlp": MLP, "autoencoder": Autoencoder, "vae": VAE}[model]()
        opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) if model == "mlp"
               else torch.optim.Adam(m.parameters(), lr=0.001))
    if model == "autoencoder":
        loss_of = lambda x, y: F.binary_cross_entropy_with_logits(m(x), x)
    elif model == "vae":
        loss_of = lambda x, y: m.loss(x)
    else:
        loss_of = lambda x, y: F.cross_entropy(m(x), y)
    times = epoch_times(m, opt, loss_of, xs, ys, batch, epochs)
    m.eval()
    acc = None
    with torch.no_grad():
        if model not in ("autoencoder", "vae"):
            acc = float((m(xt).argmax(1) == yt).float().mean())
    print(json.dumps(dict(epoch_s=times, acc=acc)))


def run_torch(threads, epochs, seed, model, data):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(["/usr/bin/python3", __file__, "--torch-worker", "--threads", str(threads),
                          "--epochs", str(epochs), "--seed", str(seed), "--model", model,
                          "--data", data],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


BATCH = {"lenet5": 64, "mlp": 64, "autoencoder": 16, "vae": 16, "transformer": 32, "lm": 32}

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ loss [0-9.]+ \| ([0-9]+) ex/s \| ([0-9.]+)s"
                        r"(?: \| test accuracy ([0-9.]+)%| \| test loss [0-9.]+)?")


def run_kiln(prog, threads, epochs, seed, batch, data):
    n = len(np.load(f"{data}/train_x.npy", mmap_mode="r")) if data != FMNIST else 60000
    r = subprocess.run([prog, "train", "--data", data, "--epochs", str(epochs), "--threads",
                        str(threads), "--seed", str(seed)], check=True, capture_output=True,
                       text=True)
    times, acc = [], None
    for line in r.stderr.splitlines():
        m = EPOCH_LINE.fullmatch(line.strip())
        if m:
            # the printed seconds have one decimal: derive them from ex/s
            # (examples of the epoch's batches / its rate) for 3 digits
            times.append(n // batch * batch / float(m.group(2)))
            acc = float(m.group(4)) / 100 if m.group(4) else acc
    if len(times) != epochs:
        sys.exit(f"unexpected output of {prog} train:\n{r.stderr}")
    return dict(epoch_s=times, acc=acc)


def pct(acc):
    return "-" if acc is None else f"{100 * acc:.2f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="build/kiln")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=tuple(BATCH), default="lenet5")
    ap.add_argument("--keep-denormals-too", action="store_true")
    ap.add_argument("--data", default=FMNIST, help=argparse.SUPPRESS)  # the workers'
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a.threads, a.epochs, a.seed, a.model, a.data)
    tmp = tempfile.mkdtemp(prefix="kiln_bench_")
    data = FMNIST
    if a.model in TOKENS:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        token_data(a.model, data)
    progs = {"kiln": os.path.join(tmp, a.model)}
    if a.keep_denormals_too:
        progs["kiln-keep"] = os.path.join(tmp, a.model + "_keep")
    for eng, prog in progs.items():
        t0 = time.perf_counter()
        flags = ["--keep-denormals"] if eng == "kiln-keep" else []
        flags += ["-D", "N=32"] if a.model in TOKENS else []
        subprocess.run([a.kiln, "build", f"models/{a.model}.kiln", "--train", *flags, "-o", prog],
                       check=True)
        print(f"kiln build models/{a.model}.kiln --train {' '.join(flags)}: "
              f"{time.perf_counter() - t0:.2f} s wall", flush=True)
    res = {}
    for r in range(a.rounds):
        order = [(e, t) for t in (2, 1) for e in (*progs, "torch")]
        if r % 2:
            order.reverse()
        for eng, t in order:
            out = (run_kiln(progs[eng], t, a.epochs, r, BATCH[a.model], data) if eng != "torch"
                   else run_torch(t, a.epochs, r, a.model, data))
            res.setdefault((eng, t), []).append(out)
            print(f"round {r} {eng} t{t}: epochs {[round(x, 3) for x in out['epoch_s']]} s, "
                  f"test accuracy {pct(out['acc'])}", flush=True)
    med = {k: statistics.median(x for o in v for x in o["epoch_s"]) for k, v in res.items()}
    first = {k: statistics.median(o["epoch_s"][0] for o in v) for k, v in res.items()}
    later = {k: statistics.median(x for o in v for x in o["epoch_s"][1:]) if a.epochs > 1 else None
             for k, v in res.items()}
    accs = {k: [pct(o["acc"]) for o in v] for k, v in res.items()}
    print()
    print(f"| engine | threads | epoch s (median) | first epoch s | later epochs s "
          f"| test accuracy after {a.epochs} epochs (per round) |")
    print("|---|---|---|---|---|---|")
    for (eng, t) in sorted(res):
        lat = f"{later[(eng, t)]:.3f}" if later[(eng, t)] is not None else "-"
        print(f"| {eng} | {t} | {med[(eng, t)]:.3f} | {first[(eng, t)]:.3f} | {lat} | "
              f"{', '.join(accs[(eng, t)])} |")
    best_torch = min(med[("torch", 1)], med[("torch", 2)])
    print(f"\nPyTorch's best / kiln at 2 threads: {best_torch / med[('kiln', 2)]:.2f}x")

if __name__ == "__main__":
    main()
