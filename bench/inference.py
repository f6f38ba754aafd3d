"""Inference latency: kiln's compiled code against PyTorch eager and ONNX
Runtime (onnxruntime-node) on the same model, weights and input, side by
side in one run.

    /usr/bin/python3 bench/inference.py --kiln build/kiln > /tmp/inference.md

For each model (mlp, lenet5) and batch (1 by default):
  1. `kiln init --seed 1` writes the weights; they are loaded into the PyTorch
     module of bench/torch_models.py (same names, same layouts), which is
     exported to ONNX; one seeded input is saved as .npy.
  2. Rounds, interleaved (kiln, torch, ort, kiln, ...), each peer in a fresh
     process at 1 and 2 threads: kiln `run --repeat R --output logits=...`
     (the step alone, timed inside the program); torch `model(x)` under
     no_grad (the Python call included: that is what using eager costs);
     ort `await session.run()` from node.  Each prints its median.
  3. The three outputs (logits) must agree (max |diff| < 1e-4) or the script
     fails: a latency of the wrong computation means nothing.
The table gives the median over rounds of each peer's median, in
microseconds, and the ratios peer / kiln (above 1: kiln is faster).
onnxruntime-node is installed into bench/ort on first use
(ONNXRUNTIME_NODE_INSTALL=skip npm install; its default script fetches GPU
binaries).
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORT_DIR = os.path.join(HERE, "ort")
SHAPES = {"mlp": (784,), "lenet5": (1, 28, 28)}


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=np.float32).reshape(t["shape"])
    return out


def torch_module(model, weights):
    import torch
    sys.path.insert(0, HERE)
    from torch_models import MODELS
    m = MODELS[model][0]()
    state = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(weights).items()}
    m.load_state_dict(state, strict=True)
    return m.eval()


def prepare(kiln, model, batch, work):
    """Weights, input, ONNX file and PyTorch's own output for one case."""
    base = os.path.join(work, f"{model}_b{batch}")
    subprocess.run([kiln, "init", f"{ROOT}/models/{model}.kiln", "-D", f"N={batch}", "--seed", "1",
                    "-o", base + ".safetensors"], check=True, capture_output=True)
    x = np.random.default_rng(1).random((batch,) + SHAPES[model], dtype=np.float32)
    np.save(base + "_x.npy", x)
    subprocess.run([sys.executable, __file__, "--export", model, base], check=True,
                   env=thread_env(1))
    return base


def export(model, base):
    import torch
    m = torch_module(model, base + ".safetensors")
    x = torch.from_numpy(np.load(base + "_x.npy"))
    with torch.no_grad():
        np.save(base + "_torch.npy", m(x).numpy())
    torch.onnx.export(m, (x,), base + ".onnx", input_names=["input"], output_names=["output"],
                      opset_version=13)


def time_torch(model, base, threads, runs):
    import time
    import torch
    torch.set_num_threads(threads)
    m = torch_module(model, base + ".safetensors")
    x = torch.from_numpy(np.load(base + "_x.npy"))
    t = []
    with torch.no_grad():
        for _ in range(20):
            m(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            m(x)
            t.append(time.perf_counter() - t0)
    print(json.dumps({"median_us": 1e6 * statistics.median(t), "min_us": 1e6 * min(t)}))


def run_kiln(kiln, model, batch, base, threads, runs):
    out = base + f"_kiln{threads}.npy"
    p = subprocess.run([kiln, "run", f"{ROOT}/models/{model}.kiln", "-D", f"N={batch}",
                        "--weights", base + ".safetensors", "--input", f"x={base}_x.npy",
                        "--output", f"logits={out}", "--threads", str(threads),
                        "--repeat", str(runs)], check=True, capture_output=True, text=True)
    line = [l for l in p.stderr.splitlines() if " runs on compiled code: median " in l][0]
    median = float(line.split("median ")[1].split(" us")[0])
    return median, np.load(out)


def run_torch(model, base, threads, runs):
    p = subprocess.run([sys.executable, __file__, "--time-torch", model, base, str(threads),
                        str(runs)], check=True, capture_output=True, text=True,
                       env=thread_env(threads))
    return json.loads(p.stdout)["median_us"], np.load(base + "_torch.npy")


def run_ort(base, threads, runs):
    out = base + f"_ort{threads}.npy"
    p = subprocess.run(["node", os.path.join(ORT_DIR, "latency.js"), base + ".onnx",
                        base + "_x.npy", out, str(threads), str(runs)], check=True,
                       capture_output=True, text=True, env=thread_env(threads))
    return json.loads(p.stdout)["median_us"], np.load(out)


def ensure_ort():
    if os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return
    print("installing onnxruntime-node into bench/ort ...", file=sys.stderr)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=ORT_DIR, check=True,
                   env=dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip"),
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300, help="timed runs per round and peer")
    args = ap.parse_args()
    ensure_ort()
    kiln = os.path.abspath(args.kiln)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for model in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                base = prepare(kiln, model, batch, work)
                for threads in map(int, args.threads.split(",")):
                    t = {"kiln": [], "torch": [], "ort": []}
                    for _ in range(args.rounds):
                        k, yk = run_kiln(kiln, model, batch, base, threads, args.runs)
                        p, yp = run_torch(model, base, threads, args.runs)
                        o, yo = run_ort(base, threads, args.runs)
                        diff = max(abs(yk - yp).max(), abs(yo - yp).max())
                        if diff > 1e-4:
                            sys.exit(f"{model} b{batch}: outputs differ by {diff:g}")
                        t["kiln"].append(k), t["torch"].append(p), t["ort"].append(o)
                    med = {k: statistics.median(v) for k, v in t.items()}
                    rows.append((model, batch, threads, med, diff))
                    print(f"{model} b{batch} t{threads}: {med}", file=sys.stderr)
    print("| model | batch | threads | kiln µs | PyTorch µs | ORT µs | PyTorch / kiln "
          "| ORT / kiln | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, batch, threads, m, diff in rows:
        print(f"| {model} | {batch} | {threads} | {m['kiln']:.1f} | {m['torch']:.1f} | "
              f"{m['ort']:.1f} | {m['torch'] / m['kiln']:.2f} | {m['ort'] / m['kiln']:.2f} "
              f"| {diff:.1e} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--export":
        export(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--time-torch":
        time_torch(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
