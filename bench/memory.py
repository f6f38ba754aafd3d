"""Memory planning benchmark: kiln's planned arena against the naive total and
the lower bound for every model in models/, inference and the training step,
batch 1 and 64; side by side with PyTorch's peak extra memory for the same
training step (one fresh process per measurement).

    /usr/bin/python3 bench/memory.py --kiln build/kiln > /tmp/memory.md

kiln's numbers come from `kiln show --stage plan --format json` (exact: the
plan is static).  PyTorch's come from a child process per (model, batch):
build the model, optimizer and batch, gc, read VmRSS, reset the peak counter
(/proc/self/clear_refs), run 3 training steps, read VmHWM; the difference is
the step's own peak working set (activations, gradients, optimizer state
created on the first step, allocator slack), the weights being resident
before.  kiln's comparable figure is arena + persistent region (parameters,
optimizer state).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ["mlp", "lenet5", "resnet_small", "attention"]
MIB = 1024 * 1024


def kiln_plan(kiln, model, batch, train, extra=()):
    args = [kiln, "show", f"{ROOT}/models/{model}.kiln", "--stage", "plan", "--format", "json",
            "-D", f"N={batch}", *extra] + (["--train"] if train else [])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def torch_peak(model, batch, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, __file__, "--probe", model, str(batch)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def probe(model, batch):
    import gc

    import torch
    sys.path.insert(0, HERE)
    from torch_models import MODELS as TM
    torch.manual_seed(0)
    build, make_batch, make_opt = TM[model]
    m = build()
    m.train()
    opt = make_opt(m.parameters())
    x, y = make_batch(batch)

    def status_kb(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

    gc.collect()
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    peak = status_kb("VmHWM")
    params = sum(p.numel() for p in m.parameters()) * 4
    print(json.dumps({"extra_MiB": (peak - before) / 1024, "params_MiB": params / MIB,
                      "torch": torch.__version__}))


def ratio(a, b):
    return f"{a / b:.3f}" if b else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=f"{ROOT}/build/kiln")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", nargs=2)
    a = ap.parse_args()
    if a.probe:
        return probe(a.probe[0], int(a.probe[1]))
    print("| model | step | batch | naive MiB | planned MiB | lower bound MiB | planned/lower |"
          " planned/naive | no in-place | no sharing | min-memory schedule |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in MODELS:
        for train in (False, True):
            for batch in (1, 64):
                p = kiln_plan(a.kiln, model, batch, train)
                ni = kiln_plan(a.kiln, model, batch, train, ["--no-inplace"])
                ns = kiln_plan(a.kiln, model, batch, train, ["--no-share"])
                mm = kiln_plan(a.kiln, model, batch, train, ["--schedule=min-memory"])
                print(f"| {model} | {'training' if train else 'inference'} | {batch} "
                      f"| {p['naive'] / MIB:.3f} | {p['planned'] / MIB:.3f} "
                      f"| {p['lower_bound'] / MIB:.3f} | {ratio(p['planned'], p['lower_bound'])} "
                      f"| {ratio(p['planned'], p['naive'])} | {ni['planned'] / MIB:.3f} "
                      f"| {ns['planned'] / MIB:.3f} | {mm['planned'] / MIB:.3f} |")
    print()
    print("| model | batch | kiln arena MiB | kiln persistent MiB | kiln total MiB |"
          " PyTorch peak extra MiB (weights resident before) | PyTorch weights MiB |")
    print("|---|---|---|---|---|---|---|")
    for model in MODELS:
        for batch in (1, 64):
            p = kiln_plan(a.kiln, model, batch, True)
            t = torch_peak(model, batch, a.threads)
            print(f"| {model} | {batch} | {p['planned'] / MIB:.3f} | {p['persistent'] / MIB:.3f} "
                  f"| {(p['planned'] + p['persistent']) / MIB:.3f} | {t['extra_MiB']:.1f} "
                  f"| {t['params_MiB']:.3f} |")


if __name__ == "__main__":
    main()
