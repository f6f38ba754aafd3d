"""Inference latency: kiln's compiled code (fused and unfused) against
PyTorch eager and ONNX Runtime (onnxruntime-node) on every model of
models/*.kiln, with the same weights and inputs, side by side in one run.

    /usr/bin/python3 bench/inference.py --kiln build/kiln --batches 1,64 --rounds 3 > /tmp/inference.md
    /usr/bin/python3 bench/inference.py --models mlp,lstm --batches 1    # a subset

The models (MODELS): attention, autoencoder, dcgan_g and dcgan_d (dcgan.kiln's
two), lenet5, lm, lstm, mlp, resnet_small, transformer, vae, and the
convolutional ones: vgg11, vgg_small, resnet18, resnet50, mobilenet_v2,
densenet, se_resnet, unet.  vgg11 and resnet50 take ImageNet-sized images
(3x224x224; ~7.6 and ~4.1 G multiply-adds per image): a batch of --batches
above --imagenet-batch (default 8) runs at --imagenet-batch instead (so
`--batches 1,64` runs them at 1 and 8); the batch column gives the batch
run, and a note under the table says which batches were replaced.  The
other models run every batch asked.

For each model and batch (`-D N=BATCH`; every other constant at the model's
default):
  1. `kiln init --seed 1` writes the weights; they are loaded strictly (every
     name and shape) into the model's PyTorch twin of tests/reference
     (zoo_base.py, zoo_gen.py, zoo_conv.py: the twins the zoo's tests check
     kiln against), built at the model's default sizes.  PyTorch runs only
     what the compared output needs (the twins' forward also computes the
     training loss, and dcgan_g's the frozen discriminator, which `kiln run
     --output` prunes): the output-only forwards below call the twins' own
     layers (zoo_conv.py's twins compute no loss without labels: their
     forward(x) is used as is).  That computation is exported to ONNX;
     seeded inputs are saved as .npy (f32 ~ N(0, 1) or uniform in the
     model's range, i32 token ids within the vocabulary; vae's noise eps is
     kiln's randn at step 0, which the twin reproduces (zoo_gen.VAE.eps), a
     constant for the peers;
     resnet50's images are small, see MODELS).
  2. Rounds, interleaved (kiln fused, kiln unfused, torch, ort, kiln fused,
     ...), each peer in a fresh process at 1 and 2 threads: kiln `run
     --repeat R --output OUT=...` (the step alone, timed inside the program;
     fused is kiln's default, unfused is `--fuse=none`; it first times the
     step at 1, 2, 4, ... threads up to the row's and keeps the fastest, and
     a note under the table says where that was fewer); torch: the forward
     under no_grad (the Python call included: that is what using eager
     costs); ort `await session.run()` from node (bench/ort/latency.js).  Each
     prints its median.  R is picked per case so that one measurement takes
     about --budget seconds (at most --runs).
  3. The outputs of kiln (fused and unfused) and ORT must agree with
     PyTorch's (max |diff| < --tol: every compared output is a probability,
     a sigmoid or a tanh; unet's is its per-pixel sigmoid map probs), or
     that model fails with a message (the others go on; the script then
     exits 1): a latency of the wrong computation means nothing.  A model
     ONNX cannot export, or ORT cannot load, gets "n/a" for ORT with the
     reason in the notes under the table.
The table gives the median over rounds of each peer's median, in
microseconds, the ratios peer / kiln fused (above 1: kiln is faster) and
kiln unfused / kiln fused (fusion's speedup).  onnxruntime-node is
installed into bench/ort on first use (ONNXRUNTIME_NODE_INSTALL=skip npm
install; its default script fetches GPU binaries).  PyTorch is Debian's
(apt-get install python3-torch libopenblas0-pthread, run by
/usr/bin/python3): without an OpenBLAS its matmuls go to Debian's
reference BLAS, and the MLP at batch 64 took 6.7 ms instead of 0.28.
"""
import ctypes.util
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REFERENCE = os.path.join(ROOT, "tests", "reference")
ORT_DIR = os.path.join(HERE, "ort")
OPSETS = (17, 13)  # tried in this order (17 has LayerNormalization)

# name: models/FILE.kiln (--model), the compared output, the inputs it needs
# (dtype, shape after N, range: uniform in [lo, hi) or None for N(0, 1)).
# The shapes are checked against `kiln check`.
MODELS = {
    "attention": dict(file="attention", output="probs",
                      inputs={"tokens": ("i32", (16,), (0, 100))}),
    "autoencoder": dict(file="autoencoder", output="recon",
                        inputs={"x": ("f32", (784,), (0, 1))}),
    "dcgan_g": dict(file="dcgan", model="dcgan_g", output="images",
                    inputs={"z": ("f32", (100,), None)}),
    "dcgan_d": dict(file="dcgan", model="dcgan_d", output="prob",
                    inputs={"x": ("f32", (1, 32, 32), (-1, 1))}),
    "lenet5": dict(file="lenet5", output="probs", inputs={"x": ("f32", (1, 28, 28), (0, 1))}),
    "lm": dict(file="lm", output="probs", inputs={"tokens": ("i32", (16,), (0, 64))}),
    "lstm": dict(file="lstm", output="probs", inputs={"x": ("f32", (16, 8), None)}),
    "mlp": dict(file="mlp", output="probs", inputs={"x": ("f32", (784,), (0, 1))}),
    "resnet_small": dict(file="resnet_small", output="probs",
                         inputs={"x": ("f32", (3, 32, 32), None)}),
    "transformer": dict(file="transformer", output="probs",
                        inputs={"tokens": ("i32", (16,), (0, 100))}),
    "vae": dict(file="vae", output="recon",
                inputs={"x": ("f32", (784,), (0, 1))}),
    # the zoo's convolutional models (twins in zoo_conv.py; unet's in zoo_gen.py)
    "vgg11": dict(file="vgg11", output="probs", imagenet=True,
                  inputs={"x": ("f32", (3, 224, 224), None)}),
    "vgg_small": dict(file="vgg_small", output="probs", inputs={"x": ("f32", (3, 32, 32), None)}),
    "resnet18": dict(file="resnet18", output="probs", inputs={"x": ("f32", (3, 32, 32), None)}),
    # resnet50's x is small: at kiln init (batchnorm's running mean 0, variance 1)
    # the network is positively homogeneous (no biases before fc's, which is 0)
    # and grows the activations through its 16 bottlenecks: N(0, 1) images give
    # logits spread over ~5700, one-hot probabilities that would compare only the
    # argmax; uniform in +-0.005: spread ~16, largest probability ~0.12
    "resnet50": dict(file="resnet50", output="probs", imagenet=True,
                     inputs={"x": ("f32", (3, 224, 224), (-0.005, 0.005))}),
    "mobilenet_v2": dict(file="mobilenet_v2", output="probs",
                         inputs={"x": ("f32", (3, 32, 32), None)}),
    "densenet": dict(file="densenet", output="probs", inputs={"x": ("f32", (3, 32, 32), None)}),
    "se_resnet": dict(file="se_resnet", output="probs", inputs={"x": ("f32", (3, 32, 32), None)}),
    "unet": dict(file="unet", output="probs", inputs={"x": ("f32", (1, 64, 64), None)}),
}
# imagenet=True: 3x224x224 inputs (vgg11 ~7.6, resnet50 ~4.1 G multiply-adds per image);
# a requested batch above --imagenet-batch runs at --imagenet-batch instead (see main)
IMAGENET_BATCH = 8


class CaseError(Exception):
    pass


# --- PyTorch: the twins of tests/reference, output-only ---------------------------------
def twins():
    """{name: (build() -> module, forward(module, **inputs) -> output)}: the
    twins at the models' default sizes and the computation of the compared
    output with the twins' own layers (their forward() adds the loss)."""
    import math

    import torch
    import torch.nn.functional as F
    sys.path.insert(0, REFERENCE)
    import zoo_base as zb
    import zoo_conv as zc
    import zoo_gen as zg

    def mlp(m, x):
        return torch.softmax(m.logits(F.relu(m.h2(F.relu(m.h1(x))))), dim=1)

    def lenet5(m, x):
        x = (x - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(m.c1(x)), 2, 2)
        x = F.max_pool2d(F.relu(m.c3(x)), 2, 2)
        x = F.relu(m.f5(x.flatten(1)))
        return torch.softmax(m.logits(F.relu(m.f6(x))), dim=1)

    def resnet_small(m, x):
        h = F.relu(zb.run_conv_bn(m.h, x))
        for layer in m.stages:
            for block in layer.children():
                h = block(h)
        return torch.softmax(m.logits(h.mean((2, 3))), dim=1)

    def attention(m, tokens):
        h = F.embedding(tokens, m.h.weight) + m.pos
        for block in m.h.children():
            h = block(h)
        return torch.softmax(m.logits(m.pooled(h).mean(1)), dim=-1)

    def autoencoder(m, x):
        return torch.sigmoid(m.logits(F.relu(m.dec(m.z(F.relu(m.enc(x)))))))

    def vae(m, x):  # eps: kiln's randn at step 0 (zoo_gen.VAE.eps), a constant here
        h = F.relu(m.enc(x))
        z = m.mu(h) + torch.exp(0.5 * m.logvar(h)) * m.eps(x.shape[0])
        return torch.sigmoid(m.logits(F.relu(m.dec(z))))

    def trunk(m, tokens):  # transformer and lm: embedding, positions, blocks, ln_f
        h = m.embed(tokens) * math.sqrt(m.D) + m.pe
        for block in m.blocks:
            h = block(h)
        return m.ln_f(h)

    def lstm(m, x):
        _, (h, _) = m.lstm(x)
        return torch.softmax(m.fc(h[-1]), dim=-1)

    def unet(m, x):  # the twin's forward without the mask and its loss
        down1 = m.down1(x)
        down2 = m.down2(F.max_pool2d(down1, 2))
        bottom = m.bottom(F.max_pool2d(down2, 2))
        up2 = m.up2(torch.cat([m.up2t(bottom), down2], 1))
        up1 = m.up1(torch.cat([m.up1t(up2), down1], 1))
        return torch.sigmoid(m.logits(up1))

    def conv_probs(m, x):  # zoo_conv's twins: forward(x, y=None) computes no loss
        return m(x)["probs"]

    return {
        "attention": (zb.TinyTransformer, attention),
        "autoencoder": (zg.Autoencoder, autoencoder),
        "dcgan_g": (zg.DCGANG, lambda m, z: m.g(z)),          # without the frozen D
        "dcgan_d": (zg.DCGAND, lambda m, x: torch.sigmoid(m.d(x))),
        "lenet5": (zb.LeNet5, lenet5),
        "lm": (zg.LM, lambda m, tokens: torch.softmax(m.head(trunk(m, tokens)), dim=-1)),
        "lstm": (zg.LSTMClassifier, lstm),
        "mlp": (zb.MLP, mlp),
        "resnet_small": (zb.ResNetSmall, resnet_small),
        "transformer": (zg.Transformer,
                        lambda m, tokens: torch.softmax(m.head(trunk(m, tokens).mean(1)), dim=-1)),
        "vae": (zg.VAE, vae),
        # at the .kiln files' defaults
        "vgg11": (zc.VGG11, conv_probs),  # eval(): no dropout, like `kiln run`
        "vgg_small": (zc.VGGSmall, conv_probs),
        "resnet18": (lambda: zc.ResNet("resnet18", [2, 2, 2, 2]), conv_probs),
        "resnet50": (lambda: zc.ResNet("resnet50", [3, 4, 6, 3], classes=1000), conv_probs),
        "mobilenet_v2": (zc.MobileNetV2, conv_probs),
        "densenet": (zc.DenseNet, conv_probs),
        "se_resnet": (lambda: zc.ResNet("se_resnet", [2, 2, 2]), conv_probs),
        "unet": (zg.UNet, unet),
    }


def torch_model(name, base):
    """The twin with kiln's weights (strictly), as a module whose forward
    takes the model's inputs in MODELS order and returns the output."""
    import torch
    sys.path.insert(0, REFERENCE)
    from make_fixtures import load_into, read_safetensors
    build, forward = twins()[name]
    twin = build()
    load_into(name, twin, read_safetensors(base + ".safetensors"))
    names = list(MODELS[name]["inputs"])

    class Infer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.twin = twin

        def forward(self, *args):
            return forward(self.twin, **dict(zip(names, args)))

    inputs = tuple(torch.from_numpy(np.load(f"{base}_{k}.npy")) for k in names)
    return Infer().eval(), inputs


def export(name, base):
    """PyTorch's output, a first latency estimate, the ONNX file (or why not)."""
    import torch
    m, x = torch_model(name, base)
    with torch.no_grad():
        np.save(base + "_torch.npy", m(*x).numpy())
        for _ in range(5):
            m(*x)
        t0 = time.perf_counter()
        for _ in range(5):
            m(*x)
        est = (time.perf_counter() - t0) / 5
    why = []
    for opset in OPSETS:
        try:
            torch.onnx.export(m, x, base + ".onnx", input_names=list(MODELS[name]["inputs"]),
                              output_names=[MODELS[name]["output"]], opset_version=opset)
            break
        except Exception as e:  # noqa: BLE001 (recorded: ORT gets n/a with the reason)
            why.append(f"opset {opset}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    else:
        opset = None
    with open(base + "_export.json", "w") as f:
        json.dump({"torch_s": est, "opset": opset, "error": "; ".join(why) if opset is None
                   else None}, f)


def time_torch(name, base, threads, runs):
    import torch
    torch.set_num_threads(threads)
    m, x = torch_model(name, base)
    t = []
    with torch.no_grad():
        for _ in range(20):
            m(*x)
        for _ in range(runs):
            t0 = time.perf_counter()
            m(*x)
            t.append(time.perf_counter() - t0)
    print(json.dumps({"median_us": 1e6 * statistics.median(t), "min_us": 1e6 * min(t)}))


# --- the peers, each in a fresh process -------------------------------------------------
def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")


def run(cmd, what, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise CaseError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return p


def kiln_args(name, batch):
    s = MODELS[name]
    args = [os.path.join(ROOT, "models", s["file"] + ".kiln"), "-D", f"N={batch}"]
    return args + (["--model", s["model"]] if "model" in s else [])


def run_kiln(kiln, name, batch, base, threads, runs, fuse):
    tag = "fused" if fuse else "unfused"
    out = f"{base}_kiln_{tag}{threads}.npy"
    cmd = [kiln, "run"] + kiln_args(name, batch) + ["--weights", base + ".safetensors"]
    for k in MODELS[name]["inputs"]:
        cmd += ["--input", f"{k}={base}_{k}.npy"]
    cmd += ["--output", f"{MODELS[name]['output']}={out}", "--threads", str(threads),
            "--repeat", str(runs)] + ([] if fuse else ["--fuse=none"])
    p = run(cmd, f"kiln {tag}")
    # "... runs on compiled code on K of T threads, the fastest of ...: median X us" (kiln
    # run --repeat times its step at 1, 2, 4, ... threads first and keeps the fastest), or
    # "... on T threads: median X us"
    line = [l for l in p.stderr.splitlines() if " runs on compiled code on " in l][0]
    used = int(line.split(" runs on compiled code on ")[1].split(" ")[0])
    return float(line.split("median ")[1].split(" us")[0]), np.load(out), used


def run_torch(name, base, threads, runs):
    p = run([sys.executable, __file__, "--time-torch", name, base, str(threads), str(runs)],
            "PyTorch", env=thread_env(threads))
    return json.loads(p.stdout)["median_us"], np.load(base + "_torch.npy")


def run_ort(name, base, threads, runs):
    out = base + f"_ort{threads}.npy"
    feeds = ",".join(f"{k}={base}_{k}.npy" for k in MODELS[name]["inputs"])
    p = run(["node", os.path.join(ORT_DIR, "latency.js"), base + ".onnx", feeds, out,
             str(threads), str(runs)], "onnxruntime-node", env=thread_env(threads))
    return json.loads(p.stdout)["median_us"], np.load(out)


def ensure_ort():
    if os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return
    print("installing onnxruntime-node into bench/ort ...", file=sys.stderr)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=ORT_DIR, check=True,
                   env=dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip"),
                   stdout=subprocess.DEVNULL)


# --- one case: model x batch ------------------------------------------------------------
def check_inputs(kiln, name, batch):
    """The inputs of MODELS against `kiln check`'s (names, dtypes, shapes)."""
    p = run([kiln, "check"] + kiln_args(name, batch), "kiln check")
    theirs = {}
    for line in p.stdout.splitlines():
        f = line.split(None, 2)
        if len(f) == 3 and f[0] == "input":
            theirs[f[1]] = f[2].strip()
    ours = {k: f"{dt}[{', '.join(map(str, (batch,) + shape))}]"
            for k, (dt, shape, _) in MODELS[name]["inputs"].items()}
    needed = {k: v for k, v in theirs.items() if k in ours}
    if needed != ours:
        raise CaseError(f"inputs {ours} do not match kiln check's {theirs}")


def prepare(kiln, name, batch, work, budget, max_runs):
    """Weights, inputs, PyTorch's output, the ONNX file and the run count."""
    check_inputs(kiln, name, batch)
    base = os.path.join(work, f"{name}_b{batch}")
    run([kiln, "init"] + kiln_args(name, batch) + ["--seed", "1", "-o", base + ".safetensors"],
        "kiln init")
    for k, (dt, shape, rng_range) in MODELS[name]["inputs"].items():
        rng = np.random.default_rng([zlib.crc32(name.encode()), zlib.crc32(k.encode()), batch])
        shape = (batch,) + shape
        if dt == "i32":
            x = rng.integers(*rng_range, size=shape).astype(np.int32)
        elif rng_range:
            x = rng.uniform(*rng_range, size=shape).astype(np.float32)
        else:
            x = rng.standard_normal(size=shape).astype(np.float32)
        np.save(f"{base}_{k}.npy", x)
    run([sys.executable, __file__, "--export", name, base], "PyTorch twin / ONNX export",
        env=thread_env(1))
    with open(base + "_export.json") as f:
        exp = json.load(f)
    # the run count: about `budget` seconds for the slower of PyTorch and kiln unfused
    k, _, _ = run_kiln(kiln, name, batch, base, 1, 3, fuse=False)
    slowest = max(exp["torch_s"], 1e-6 * k)
    runs = int(min(max_runs, max(10, budget / slowest)))
    return base, exp, runs


def measure(kiln, name, batch, threads, rounds, base, runs, ort_ok, tol):
    t = {"fused": [], "unfused": [], "torch": [], "ort": []}
    used = set()  # the thread counts kiln's runs picked (at most `threads`)
    diff = 0.0
    for _ in range(rounds):
        kf, yf, uf = run_kiln(kiln, name, batch, base, threads, runs, fuse=True)
        ku, yu, uu = run_kiln(kiln, name, batch, base, threads, runs, fuse=False)
        used |= {uf, uu}
        p, yp = run_torch(name, base, threads, runs)
        outs = {"kiln fused": yf, "kiln unfused": yu}
        t["fused"].append(kf), t["unfused"].append(ku), t["torch"].append(p)
        if ort_ok:
            o, yo = run_ort(name, base, threads, runs)
            outs["ORT"] = yo
            t["ort"].append(o)
        for peer, y in outs.items():
            if y.shape != yp.shape:
                raise CaseError(f"{peer}'s output has shape {y.shape}, PyTorch's {yp.shape}")
            d = float(np.abs(y - yp).max())
            if not d <= tol:  # NaN fails too
                raise CaseError(f"{peer}'s {MODELS[name]['output']} differs from PyTorch's by "
                                f"{d:.3g} (max abs; tolerance {tol:g})")
            diff = max(diff, d)
    return {k: statistics.median(v) if v else None for k, v in t.items()}, diff, used


def model_batches(name, batches, imagenet_batch, capped):
    """The batches `name` runs at: --batches, except that the ImageNet-sized
    models run a batch above imagenet_batch at imagenet_batch (once); capped
    records {name: [the batches asked]} for the notes."""
    out = []
    for b in map(int, batches.split(",")):
        if MODELS[name].get("imagenet") and b > imagenet_batch:
            capped.setdefault(name, []).append(str(b))
            b = imagenet_batch
        if b not in out:
            out.append(b)
    return out


def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma list (default: all of %(default)s)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300, help="most timed runs per round and peer")
    ap.add_argument("--budget", type=float, default=0.3,
                    help="seconds one measurement should take (sets the run count)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference of the outputs")
    ap.add_argument("--imagenet-batch", type=int, default=IMAGENET_BATCH,
                    help="the largest batch of the ImageNet-sized models (%s): a larger one in "
                    "--batches runs at this batch instead (default %%(default)s)"
                    % ", ".join(n for n, s in MODELS.items() if s.get("imagenet")))
    args = ap.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(MODELS)})")
    ensure_ort()
    if not ctypes.util.find_library("openblas"):
        print("warning: no OpenBLAS: PyTorch's matmuls will use Debian's reference BLAS, "
              "~20x slower (apt-get install libopenblas0-pthread)", file=sys.stderr)
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"warning: load average {load:.2f}: timings on a busy machine mean little "
              "(kiln's 2-thread runs especially)", file=sys.stderr)
    kiln = os.path.abspath(args.kiln)
    rows, notes, failed, ort_na, opsets, capped = [], [], [], {}, {}, {}
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            for batch in model_batches(name, args.batches, args.imagenet_batch, capped):
                try:
                    base, exp, runs = prepare(kiln, name, batch, work, args.budget, args.runs)
                    ort_ok = exp["opset"] is not None
                    if ort_ok and name not in opsets.get(exp["opset"], []):
                        opsets.setdefault(exp["opset"], []).append(name)
                    if not ort_ok:
                        ort_na[name] = f"the ONNX export failed ({exp['error']})"
                    for threads in map(int, args.threads.split(",")):
                        try:
                            med, diff, used = measure(kiln, name, batch, threads, args.rounds,
                                                      base, runs, ort_ok, args.tol)
                        except CaseError as e:
                            if ort_ok and str(e).startswith("onnxruntime-node failed"):
                                ort_ok = False
                                opsets[exp["opset"]].remove(name)
                                ort_na[name] = "onnxruntime-node cannot run the export: " + \
                                    str(e).splitlines()[-1][:300]
                                med, diff, used = measure(kiln, name, batch, threads,
                                                          args.rounds, base, runs, ort_ok,
                                                          args.tol)
                            else:
                                raise
                        rows.append((name, batch, threads, med, diff))
                        if used != {threads}:
                            notes.append(f"{name} batch {batch}, {threads} threads: kiln's runs "
                                         f"used {' and '.join(map(str, sorted(used)))} (kiln "
                                         "run --repeat times its step at 1, 2, 4, ... threads "
                                         "first and keeps the fastest)")
                        print(f"{name} b{batch} t{threads} ({runs} runs, "
                              f"{time.time() - start:.0f} s): "
                              + ", ".join(f"{k} {fmt(v)}" for k, v in med.items())
                              + f", diff {diff:.1e}", file=sys.stderr)
                except CaseError as e:
                    msg = f"{name} batch {batch}: FAILED: {e}"
                    print(msg, file=sys.stderr)
                    failed.append(msg)
    print("| model | batch | threads | kiln fused µs | kiln unfused µs | PyTorch µs | ORT µs "
          "| PyTorch / kiln | ORT / kiln | fused speedup | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, batch, threads, m, diff in rows:
        f = m["fused"]
        ort_ratio = None if m["ort"] is None else m["ort"] / f
        print(f"| {name} | {batch} | {threads} | {fmt(f)} | {fmt(m['unfused'])} | "
              f"{fmt(m['torch'])} | {fmt(m['ort'])} | {fmt(m['torch'] / f, 2)} | "
              f"{fmt(ort_ratio, 2)} | {fmt(m['unfused'] / f, 2)} | {diff:.1e} |")
    opsets = {o: n for o, n in opsets.items() if n}
    if opsets:
        notes.append("ONNX opset " + ", ".join(f"{o}: {', '.join(n)}" for o, n in opsets.items())
                     if len(opsets) > 1 or ort_na
                     else f"ONNX opset {next(iter(opsets))} for every model")
    for name, asked in capped.items():
        notes.append(f"{name}: batch {args.imagenet_batch} instead of {', '.join(asked)} "
                     "(ImageNet-sized: 3x224x224 inputs)")
    for name, why in ort_na.items():
        notes.append(f"{name}: ORT n/a: {why}")
    for msg in failed:
        notes.append(msg.replace("\n", " "))
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    print(f"{len(rows)} rows in {time.time() - start:.0f} s", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--export":
        export(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--time-torch":
        time_torch(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
