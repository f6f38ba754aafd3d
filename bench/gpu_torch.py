"""gpu_torch.py: the PyTorch peer of `kiln bench --target cuda`: the
training step and inference of bench/torch_models.py's twins of
models/*.kiln (mlp, lenet5, resnet_small, attention), timed on the GPU with
CUDA events (median of --repeat steps after 5 warm-up steps), one JSON
line per measurement.  bench/gpu_lease.sh runs it beside kiln bench and
prints the ratios.  --device cpu runs the same code on the CPU (timed with
the host clock), which is how it is checked on a machine without a GPU.

  gpu_torch.py [--device cuda|cpu] [--batch 32] [--repeat 50] [--models LIST]
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import MODELS  # noqa: E402


def timer(dev):
    """A function timing fn() once, in seconds, on dev's clock."""
    if dev.type == "cuda":
        def run(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3
    else:
        def run(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
    return run


def measure(name, dev, batch, repeat, train):
    torch.manual_seed(0)
    build, make_batch, make_opt = MODELS[name]
    m = build().to(dev)
    x, y = (t.to(dev) for t in make_batch(batch))
    if train:
        m.train()
        opt = make_opt(m.parameters())

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
    else:
        m.eval()

        def step():
            with torch.no_grad():
                F.softmax(m(x), dim=-1)
    run = timer(dev)
    for _ in range(5):
        run(step)
    ts = [run(step) for _ in range(repeat)]
    return {"model": name, "mode": "training" if train else "inference", "batch": batch,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__, "median_s": statistics.median(ts), "min_s": min(ts),
            "max_s": max(ts)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    dev = torch.device(a.device)
    for name in a.models.split(","):
        for train in (True, False):
            print(json.dumps(measure(name, dev, a.batch, a.repeat, train)), flush=True)


main()
