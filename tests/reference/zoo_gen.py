"""PyTorch twins of the generative, segmentation and sequence models of the
zoo: models/unet.kiln, autoencoder.kiln, vae.kiln, dcgan.kiln (two models:
dcgan_g and dcgan_d), transformer.kiln, lm.kiln and lstm.kiln.
make_fixtures.py reads MODELS (the contract is in docs/zoo.md).

Each module's state_dict() names are exactly kiln's parameter names, with
the same shapes, so kiln's weights load into it strictly: a kiln name is
the block-call scopes joined by dots, and a PyTorch module gets the same
name when its attribute path spells those scopes.  BatchNorm2d's
num_batches_tracked buffer, which kiln does not have, is removed (BatchNorm).

MODELS[name] is keyed by the model file's stem, except for dcgan.kiln,
which holds two models: its entries are "dcgan_g" and "dcgan_d", each with
"file": "dcgan" (models/dcgan.kiln) and "model": the --model NAME to pass
to kiln.  An entry without "file" is models/NAME.kiln; without "model", the
file's first (only) model.

Run as a script, it checks every twin against kiln itself (needs a built
kiln, default build/kiln):
  /usr/bin/python3 tests/reference/zoo_gen.py [--kiln build/kiln] [NAME...]
kiln init writes seeded weights, they load into the twin, both get the
same inputs, and the eval-mode forward output and the loss are compared
(and, where `kiln run --grad` exists, the training-mode gradients).
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_base import SelfAttention  # noqa: E402  (the prelude's attention block)


class Scope(nn.Module):
    """A name scope: holds child modules (given by name) and no code."""

    def __init__(self, **children):
        super().__init__()
        for name, m in children.items():
            self.add_module(name, m)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with kiln's state (weight, bias, running_mean,
    running_var): no num_batches_tracked (momentum is set, so it is unused),
    and loading does not add it back (as it does for state dicts without
    version metadata)."""

    def __init__(self, c):
        super().__init__(c)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        super()._load_from_state_dict(state_dict, prefix, dict(local_metadata, version=2), *args)


def bn(c):
    return BatchNorm(c)


# --- unet -----------------------------------------------------------------------------
class DoubleConv(nn.Module):
    """block double_conv: a = relu(conv3x3(x)), b = relu(conv3x3(a))."""

    def __init__(self, cin, width):
        super().__init__()
        self.a = nn.Conv2d(cin, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x))))


class UNet(nn.Module):
    def __init__(self, base=16):
        super().__init__()
        b = base
        self.down1, self.down2, self.bottom = DoubleConv(1, b), DoubleConv(b, 2 * b), DoubleConv(2 * b, 4 * b)
        self.up2t = nn.ConvTranspose2d(4 * b, 2 * b, 2, stride=2)
        self.up2 = DoubleConv(4 * b, 2 * b)
        self.up1t = nn.ConvTranspose2d(2 * b, b, 2, stride=2)
        self.up1 = DoubleConv(2 * b, b)
        self.logits = nn.Conv2d(b, 1, 1)

    def forward(self, x, mask):
        down1 = self.down1(x)
        down2 = self.down2(F.max_pool2d(down1, 2))
        bottom = self.bottom(F.max_pool2d(down2, 2))
        up2 = self.up2(torch.cat([self.up2t(bottom), down2], 1))
        up1 = self.up1(torch.cat([self.up1t(up2), down1], 1))
        logits = self.logits(up1)
        return {"probs": torch.sigmoid(logits),
                "loss": F.binary_cross_entropy_with_logits(logits, mask)}


# --- autoencoder ----------------------------------------------------------------------
class Autoencoder(nn.Module):
    def __init__(self, D=784, hidden=256, latent=32):
        super().__init__()
        self.enc, self.z = nn.Linear(D, hidden), nn.Linear(hidden, latent)
        self.dec, self.logits = nn.Linear(latent, hidden), nn.Linear(hidden, D)

    def forward(self, x):
        z = self.z(F.relu(self.enc(x)))
        logits = self.logits(F.relu(self.dec(z)))
        return {"recon": torch.sigmoid(logits),
                "loss": F.binary_cross_entropy_with_logits(logits, x)}


# --- vae ------------------------------------------------------------------------------
MASK64 = (1 << 64) - 1


def _mix(z):  # SplitMix64's finalizer (runtime/rt_init.c)
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK64
    return z ^ (z >> 31)


def rng_hash(seed, counter):  # rt_rng_hash
    return _mix((_mix(seed) + 0x9e3779b97f4a7c15 * (counter + 1)) & MASK64)


def rng_seed_for(seed, name):  # rt_rng_seed_for: the seed of a scope's seed-th random op
    h = 1469598103934665603  # FNV-1a from this start (rt_init.c says why)
    for c in name.encode():
        h = ((h ^ c) * 0x100000001b3) & MASK64
    return rng_hash(seed, h)


def kiln_randn(shape, seed, step=0):
    """randn's samples (ir/eval_nn.c randn_value), in f32 as kiln computes them."""
    stream = rng_hash(seed, step)
    out = np.empty(math.prod(shape), np.float32)
    for i in range(out.size):
        h = rng_hash(stream, i)
        u1 = np.float32((h >> 40) + 1) * np.float32(2.0 ** -24)
        u2 = np.float32((h >> 16) & 0xFFFFFF) * np.float32(2.0 ** -24)
        out[i] = np.sqrt(np.float32(-2) * np.log(u1)) * np.cos(np.float32(6.2831855) * u2)
    return out.reshape(shape)


class VAE(nn.Module):
    """models/vae.kiln: its eps = randn([N, latent]) is the model's first (only)
    random op at the top scope, so its seed is rng_seed_for(0, ""); `kiln run`
    and `kiln run --grad` draw at step 0."""

    def __init__(self, D=784, hidden=400, latent=20):
        super().__init__()
        self.enc, self.mu, self.logvar = nn.Linear(D, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec, self.logits = nn.Linear(latent, hidden), nn.Linear(hidden, D)
        self.latent, self._eps = latent, {}

    def eps(self, n):
        if n not in self._eps:
            self._eps[n] = torch.from_numpy(kiln_randn((n, self.latent), rng_seed_for(0, "")))
        return self._eps[n]

    def forward(self, x):
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * self.eps(x.shape[0]).to(x.dtype)
        logits = self.logits(F.relu(self.dec(z)))
        n = x.shape[0]
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / n
        return {"recon": torch.sigmoid(logits), "loss": rec + kl}


# --- dcgan ----------------------------------------------------------------------------
class Up(nn.Module):
    """block up: relu(batchnorm(conv_transpose 4x4, no bias))."""

    def __init__(self, cin, out, stride, pad):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, out, 4, stride, pad, bias=False)
        self.bn = bn(out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Generator(nn.Module):
    def __init__(self, latent=100, base=32):
        super().__init__()
        b = base
        self.up1, self.up2, self.up3 = Up(latent, 4 * b, 1, 0), Up(4 * b, 2 * b, 2, 1), Up(2 * b, b, 2, 1)
        self.out = nn.ConvTranspose2d(b, 1, 4, 2, 1, bias=False)

    def forward(self, z):
        h = z.reshape(z.shape[0], z.shape[1], 1, 1)
        return torch.tanh(self.out(self.up3(self.up2(self.up1(h)))))


class Down(nn.Module):
    """block down: leaky_relu(batchnorm?(conv 4x4 stride 2, no bias), 0.2)."""

    def __init__(self, cin, out, norm):
        super().__init__()
        self.conv = nn.Conv2d(cin, out, 4, 2, 1, bias=False)
        self.bn = bn(out) if norm else None

    def forward(self, x):
        h = self.conv(x)
        if self.bn is not None:
            h = self.bn(h)
        return F.leaky_relu(h, 0.2)


class Discriminator(nn.Module):
    def __init__(self, base=32):
        super().__init__()
        b = base
        self.down1, self.down2, self.down3 = Down(1, b, False), Down(b, 2 * b, True), Down(2 * b, 4 * b, True)
        self.logit = nn.Conv2d(4 * b, 1, 4, 1, 0, bias=False)

    def forward(self, x):
        return self.logit(self.down3(self.down2(self.down1(x)))).reshape(x.shape[0])


class DCGANG(nn.Module):
    """model dcgan_g: the generator g, trained through the frozen
    discriminator d (non-saturating loss: BCE of D(G(z)) against 1)."""

    def __init__(self, latent=100, base=32):
        super().__init__()
        self.g, self.d = Generator(latent, base), Discriminator(base)
        self.d.requires_grad_(False)  # kiln: trainable=false

    def forward(self, z):
        images = self.g(z)
        logit = self.d(images)
        return {"images": images,
                "loss": F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))}


class DCGAND(nn.Module):
    """model dcgan_d: the discriminator d; BCE of D(x) against y (1 real, 0 fake)."""

    def __init__(self, base=32):
        super().__init__()
        self.d = Discriminator(base)

    def forward(self, x, y):
        logit = self.d(x)
        return {"prob": torch.sigmoid(logit), "loss": F.binary_cross_entropy_with_logits(logit, y)}


# --- transformer and lm ---------------------------------------------------------------
def positional_encoding(T, D):
    """PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D))."""
    pos = torch.arange(T, dtype=torch.float32).reshape(T, 1)
    freq = torch.exp(torch.arange(D // 2, dtype=torch.float32) * (-2 * math.log(10000.0) / D))
    angle = pos * freq.reshape(1, D // 2)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=2).reshape(T, D)


class Block(nn.Module):
    """block encoder_block (pre-norm): a = x + attn(ln1(x)); a + fc2(gelu(fc1(ln2(a))))."""

    def __init__(self, d, heads, causal):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads, causal)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        a = x + self.attn(self.ln1(x))
        return a + self.fc2(F.gelu(self.fc1(self.ln2(a))))


class Transformer(nn.Module):
    def __init__(self, T=16, D=32, heads=4, vocab=100, layers=2, classes=5, causal=False):
        super().__init__()
        self.D = D
        self.embed = nn.Embedding(vocab, D)
        self.blocks = nn.ModuleList([Block(D, heads, causal) for _ in range(layers)])
        self.ln_f, self.head = nn.LayerNorm(D), nn.Linear(D, classes)
        self.register_buffer("pe", positional_encoding(T, D), persistent=False)

    def forward(self, tokens, y):
        h = self.embed(tokens) * math.sqrt(self.D) + self.pe
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.ln_f(h).mean(1))
        return {"probs": torch.softmax(logits, dim=-1), "loss": F.cross_entropy(logits, y)}


class LM(nn.Module):
    def __init__(self, T=16, D=32, heads=4, vocab=64, layers=2):
        super().__init__()
        self.D = D
        self.embed = nn.Embedding(vocab, D)
        self.blocks = nn.ModuleList([Block(D, heads, True) for _ in range(layers)])
        self.ln_f, self.head = nn.LayerNorm(D), nn.Linear(D, vocab)
        self.register_buffer("pe", positional_encoding(T, D), persistent=False)

    def forward(self, tokens, targets):
        h = self.embed(tokens) * math.sqrt(self.D) + self.pe
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.ln_f(h))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return {"probs": torch.softmax(logits, dim=-1), "loss": loss}


# --- lstm -----------------------------------------------------------------------------
class LSTMClassifier(nn.Module):
    def __init__(self, features=8, hidden=32, classes=5):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x, y):
        _, (h, _) = self.lstm(x)
        logits = self.fc(h[-1])
        return {"probs": torch.softmax(logits, dim=-1), "loss": F.cross_entropy(logits, y)}


MODELS = {
    "unet": {
        "module": lambda: UNet(base=4),
        "defines": {"N": 2, "S": 16, "base": 4},
        "inputs": {"x": ("f32", (2, 1, 16, 16)), "mask": ("f32", (2, 1, 16, 16))},
        "ranges": {"mask": (0, 1)},
        "output": "probs",
        "grads": ["down1.a.weight", "down2.b.bias", "bottom.a.weight", "up2t.weight", "up1.b.weight",
                  "logits.bias"],
    },
    "autoencoder": {
        "module": lambda: Autoencoder(D=64, hidden=32, latent=8),
        "defines": {"N": 4, "D": 64, "hidden": 32, "latent": 8},
        "inputs": {"x": ("f32", (4, 64))},
        "ranges": {"x": (0, 1)},
        "output": "recon",
        "grads": ["enc.weight", "z.bias", "dec.weight", "logits.bias"],
    },
    "vae": {
        "module": lambda: VAE(D=64, hidden=32, latent=8),
        "defines": {"N": 4, "D": 64, "hidden": 32, "latent": 8},
        "inputs": {"x": ("f32", (4, 64))},
        "ranges": {"x": (0, 1)},
        "output": "recon",
        "grads": ["enc.weight", "mu.weight", "logvar.bias", "dec.weight", "logits.bias"],
    },
    "dcgan_g": {
        "file": "dcgan",
        "model": "dcgan_g",
        "module": lambda: DCGANG(latent=8, base=4),
        "defines": {"N": 4, "latent": 8, "base": 4},
        "inputs": {"z": ("f32", (4, 8))},
        "output": "images",
        "grads": ["g.up1.conv.weight", "g.up2.bn.weight", "g.up3.bn.bias", "g.out.weight"],
    },
    "dcgan_d": {
        "file": "dcgan",
        "model": "dcgan_d",
        "module": lambda: DCGAND(base=4),
        "defines": {"N": 4, "base": 4},
        "inputs": {"x": ("f32", (4, 1, 32, 32)), "y": ("f32", (4,))},
        "ranges": {"x": (-1, 1), "y": (0, 1)},
        "output": "prob",
        "grads": ["d.down1.conv.weight", "d.down2.bn.weight", "d.down3.conv.weight", "d.logit.weight"],
    },
    "transformer": {
        "module": lambda: Transformer(T=6, D=16, heads=2, vocab=20, layers=2, classes=3),
        "defines": {"N": 2, "T": 6, "D": 16, "heads": 2, "vocab": 20, "layers": 2, "classes": 3},
        "inputs": {"tokens": ("i32", (2, 6)), "y": ("i32", (2,))},
        "ranges": {"tokens": (0, 20), "y": (0, 3)},
        "output": "probs",
        "grads": ["embed.weight", "blocks.0.attn.q.weight", "blocks.0.ln2.weight", "blocks.1.fc1.weight",
                  "ln_f.bias", "head.weight"],
    },
    "lm": {
        "module": lambda: LM(T=6, D=16, heads=2, vocab=20, layers=2),
        "defines": {"N": 2, "T": 6, "D": 16, "heads": 2, "vocab": 20, "layers": 2},
        "inputs": {"tokens": ("i32", (2, 6)), "targets": ("i32", (2, 6))},
        "ranges": {"tokens": (0, 20), "targets": (0, 20)},
        "output": "probs",
        "grads": ["embed.weight", "blocks.0.attn.k.weight", "blocks.1.attn.proj.bias", "blocks.1.fc2.weight",
                  "head.weight"],
    },
    "lstm": {
        "module": lambda: LSTMClassifier(features=4, hidden=6, classes=3),
        "defines": {"N": 3, "T": 5, "features": 4, "hidden": 6, "classes": 3},
        "inputs": {"x": ("f32", (3, 5, 4)), "y": ("i32", (3,))},
        "ranges": {"y": (0, 3)},
        "output": "probs",
        "grads": ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "fc.weight"],
    },
}


# --- self-check against kiln (python3 tests/reference/zoo_gen.py) ----------------------
def _read_safetensors(path):
    import json
    import struct

    import numpy as np

    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    types = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=types[t["dtype"]]).reshape(t["shape"]).copy()
    return out


def _check(name, spec, kiln, tmp):
    import os
    import subprocess

    import numpy as np

    stem = spec.get("file", name)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", stem + ".kiln")
    common = [path]
    if "model" in spec:
        common += ["--model", spec["model"]]
    for k, v in spec["defines"].items():
        common += ["-D", "%s=%s" % (k, str(v).lower() if isinstance(v, bool) else v)]
    w = os.path.join(tmp, name + ".safetensors")
    subprocess.run([kiln, "init"] + common + ["-o", w, "--seed", "3"], check=True, capture_output=True)
    weights = _read_safetensors(w)
    module = spec["module"]()
    sd = module.state_dict()
    if sorted(sd) != sorted(weights):
        raise SystemExit("%s: names differ: torch only %s, kiln only %s" % (
            name, sorted(set(sd) - set(weights)), sorted(set(weights) - set(sd))))
    for k in sd:
        if tuple(sd[k].shape) != weights[k].shape:
            raise SystemExit("%s: %s is %s in torch, %s in kiln" % (name, k, tuple(sd[k].shape), weights[k].shape))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    rng = np.random.default_rng(7)
    inputs, args = {}, []
    for k, (dt, shape) in spec["inputs"].items():
        lo, hi = spec.get("ranges", {}).get(k, (-1, 1) if dt == "f32" else (0, 2))
        if dt == "f32":
            v = rng.uniform(lo, hi, size=shape).astype(np.float32)
        else:
            v = rng.integers(lo, hi, size=shape).astype(np.int32)
        inputs[k] = v
        f = os.path.join(tmp, "%s_%s.npy" % (name, k))
        np.save(f, v)
        args += ["--input", "%s=%s" % (k, f)]
    torch_in = {k: torch.from_numpy(v) if v.dtype == np.float32 else torch.from_numpy(v).long()
                for k, v in inputs.items()}
    out_f, loss_f = os.path.join(tmp, name + "_out.npy"), os.path.join(tmp, name + "_loss.npy")
    report = []
    # eval forward
    module.eval()
    with torch.no_grad():
        ref = module(**torch_in)
    subprocess.run([kiln, "run"] + common + args + ["--weights", w, "--output", "%s=%s" % (spec["output"], out_f),
                                                    "--output", "loss=" + loss_f], check=True, capture_output=True)
    for key, f in ((spec["output"], out_f), ("loss", loss_f)):
        got, want = np.load(f), ref[key].numpy()
        err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
        report.append("%s %.2e" % (key, err))
        if err > 1e-4:
            raise SystemExit("%s: eval %s differs: %.3g relative" % (name, key, err))
    # training-mode loss and gradients, where kiln run --grad exists
    module.train()
    module.zero_grad()
    out = module(**torch_in)
    out["loss"].backward()
    params = dict(module.named_parameters())
    help_text = subprocess.run([kiln, "run", "--help"], capture_output=True, text=True).stdout
    grad_args, grad_files = [], {}
    if "--grad" in help_text:
        for p in spec["grads"]:
            grad_files[p] = os.path.join(tmp, "%s_grad_%s.npy" % (name, p))
            grad_args += ["--grad", "%s=%s" % (p, grad_files[p])]
    subprocess.run([kiln, "run"] + common + args + ["--weights", w, "--train", "--output", "loss=" + loss_f]
                   + grad_args, check=True, capture_output=True)
    got, want = float(np.load(loss_f)), float(out["loss"])
    err = abs(got - want) / max(abs(want), 1e-30)
    report.append("train loss %.2e" % err)
    if err > 1e-4:
        raise SystemExit("%s: training loss differs: kiln %.7g, torch %.7g" % (name, got, want))
    for p, f in grad_files.items():
        got, want = np.load(f), params[p].grad.numpy()
        err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
        report.append("d%s %.1e" % (p, err))
        if err > 1e-3:
            raise SystemExit("%s: gradient of %s differs: %.3g relative" % (name, p, err))
    print("%-12s ok: %s" % (name, ", ".join(report)))


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="check the twins against kiln")
    ap.add_argument("--kiln", default="build/kiln")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.names or MODELS:
            _check(name, MODELS[name], a.kiln, tmp)
