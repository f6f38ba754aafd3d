#!/usr/bin/python3
"""Builds the PyTorch fixtures that tests/zoo.sh compares kiln with.

Run it with Debian's python3 (it sees python3-torch), from anywhere, after
building kiln:

    /usr/bin/python3 tests/reference/make_fixtures.py            # every model
    /usr/bin/python3 tests/reference/make_fixtures.py --only mlp # one model
    /usr/bin/python3 tests/reference/make_fixtures.py --list     # what is there

It imports every tests/reference/zoo_*.py and reads its MODELS, a dict
{name: spec} where name is the models/NAME.kiln file stem, or, when one
file holds several models, a name of its own with "file": FILE (for
models/FILE.kiln) and "model": the kiln model's name (the contract is in
docs/zoo.md).  For each model:

  1. `kiln init models/NAME.kiln -D ... --seed 1` writes kiln's initial
     parameters;
  2. they are loaded into the PyTorch twin, strictly: every kiln parameter
     must be a state_dict entry of the same shape and every state_dict
     entry a kiln parameter (num_batches_tracked aside), or it fails;
  3. seeded inputs are generated (f32 ~ N(0, 1), or uniform in "ranges";
     i32 uniform integers in "ranges");
  4. PyTorch runs, in float64, the forward pass in eval mode (the output)
     and forward + backward in train mode (the loss and the gradients);
  5. tests/reference/fixtures/NAME/ receives the inputs, the output, the
     loss, the gradients (all .npy, float32 / int32) and meta.json; the
     weights too (weights.safetensors) when they are small, else meta.json
     holds their sha256 and tests/zoo.sh regenerates them with kiln init;
     meta.json also has PyTorch's parameter count (parameters, not buffers)
     and its trainable part (requires_grad), which kiln check's trainable
     count must equal.

The fixtures are committed; tests/zoo.sh needs only kiln and numpy.
"""
import argparse
import copy
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ beside the committed specs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(HERE, "fixtures")
SEED = 1                      # kiln init --seed
WEIGHTS_MAX = 256 * 1024      # store weights.safetensors up to this size
WARN_BYTES = 512 * 1024       # a fixture larger than this is reported

# --- safetensors with numpy (the safetensors package is not needed) -----------------------
ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
             "F16": np.float16, "U8": np.uint8, "I8": np.int8, "I16": np.int16}


def read_safetensors(path):
    """{name: array} from a safetensors file."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        a = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=ST_DTYPES[t["dtype"]])
        out[name] = a.reshape(t["shape"]).copy()
    return out


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: array} (float32 / int32 ...) as safetensors, the layout
    `kiln run --weights` reads: an 8-byte little-endian header length, a
    JSON header of dtype, shape and byte offsets, then the raw data."""
    names = {v: k for k, v in ST_DTYPES.items()}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# --- the specs ---------------------------------------------------------------------------
def load_specs():
    """{name: (spec, source file)} from every tests/reference/zoo_*.py."""
    sys.path.insert(0, HERE)
    specs = {}
    for path in sorted(glob.glob(os.path.join(HERE, "zoo_*.py"))):
        mod_name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
        for name, s in getattr(mod, "MODELS", {}).items():
            if name in specs:
                raise SystemExit(f"{path}: model {name} is also in {specs[name][1]}")
            specs[name] = (s, os.path.basename(path))
    return specs


class FixtureError(Exception):
    pass


def check_spec(name, s):
    for key in ("module", "defines", "inputs", "output", "grads"):
        if key not in s:
            raise FixtureError(f"spec {name}: missing '{key}'")
    if not os.path.exists(model_file(name, s)):
        raise FixtureError(f"spec {name}: there is no models/{s.get('file', name)}.kiln")
    for inp, (dt, shape) in s["inputs"].items():
        if dt not in ("f32", "i32"):
            raise FixtureError(f"spec {name}: input {inp}: dtype must be f32 or i32, not {dt}")
        if dt == "i32" and inp not in s.get("ranges", {}):
            raise FixtureError(f"spec {name}: i32 input {inp} needs a range in 'ranges'")


def model_file(name, s):
    """models/FILE.kiln: "file" when one file holds several models, else NAME."""
    return os.path.join(ROOT, "models", s.get("file", name) + ".kiln")


def kiln_args(s):
    """The -D (and --model) arguments of a spec."""
    args = ["--model", s["model"]] if s.get("model") else []
    for k, v in s["defines"].items():
        args += ["-D", f"{k}={v}"]
    return args


def kiln_init(kiln, name, s, path):
    cmd = [kiln, "init", model_file(name, s), "--seed", str(SEED), "-o", path] + kiln_args(s)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise FixtureError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return cmd


def load_into(name, module, weights):
    """Loads kiln's weights into the module strictly (names and shapes)."""
    sd = module.state_dict()
    theirs = {k for k in sd if not k.endswith("num_batches_tracked")}
    ours = set(weights)
    problems = []
    for k in sorted(ours - theirs):
        problems.append(f"  kiln parameter {k} {list(weights[k].shape)} is not in the module")
    for k in sorted(theirs - ours):
        problems.append(f"  module entry {k} {list(sd[k].shape)} is not a kiln parameter")
    for k in sorted(ours & theirs):
        if tuple(sd[k].shape) != weights[k].shape:
            problems.append(f"  {k}: kiln {list(weights[k].shape)}, module {list(sd[k].shape)}")
    if problems:
        raise FixtureError(f"{name}: kiln's parameters and the module's state_dict differ:\n"
                           + "\n".join(problems))
    import torch
    new = {k: torch.from_numpy(weights[k].astype(np.float64)) if weights[k].dtype == np.float32
           else torch.from_numpy(weights[k]) for k in ours}
    for k in sd:
        if k.endswith("num_batches_tracked"):
            new[k] = sd[k]
    module.load_state_dict(new, strict=True)


def make_inputs(name, s):
    """Seeded inputs: {input name: np array (float32 / int32)}."""
    ranges = s.get("ranges", {})
    out = {}
    for inp, (dt, shape) in s["inputs"].items():
        rng = np.random.default_rng([zlib.crc32(name.encode()), zlib.crc32(inp.encode())])
        shape = tuple(shape)
        if dt == "i32":
            lo, hi = ranges[inp]
            out[inp] = rng.integers(lo, hi, size=shape).astype(np.int32)
        elif inp in ranges:
            lo, hi = ranges[inp]
            out[inp] = rng.uniform(lo, hi, size=shape).astype(np.float32)
        else:
            out[inp] = rng.standard_normal(size=shape).astype(np.float32)
    return out


def torch_inputs(arrays):
    """float32 -> float64 tensors, int32 -> int64 (long) tensors."""
    import torch
    return {k: torch.from_numpy(a.astype(np.float64 if a.dtype == np.float32 else np.int64))
            for k, a in arrays.items()}


def run_torch(name, s, weights, inputs):
    import torch
    torch.manual_seed(0)
    module = s["module"]()
    module.double()
    load_into(name, module, weights)
    # PyTorch's count (parameters, not buffers), and the trained ones:
    # a frozen part (requires_grad False) is kiln's trainable=false
    n_params = (sum(p.numel() for p in module.parameters()),
                sum(p.numel() for p in module.parameters() if p.requires_grad))
    train_module = copy.deepcopy(module)  # eval forward must not touch running statistics
    module.eval()
    with torch.no_grad():
        res = module(**torch_inputs(inputs))
    if s["output"] not in res or "loss" not in res:
        raise FixtureError(f"{name}: forward must return {{'{s['output']}': ..., 'loss': ...}}, "
                           f"got keys {sorted(res)}")
    output = res[s["output"]].detach().numpy()
    loss_eval = float(res["loss"])
    train_module.train()
    res = train_module(**torch_inputs(inputs))
    loss = res["loss"]
    if loss.dim() != 0:
        raise FixtureError(f"{name}: the loss must be a scalar, got shape {list(loss.shape)}")
    params = dict(train_module.named_parameters())
    for g in s["grads"]:
        if g not in params:
            raise FixtureError(f"{name}: grads: {g} is not a parameter of the module (buffers "
                               "have no gradient)")
    loss.backward()
    grads = {}
    for g in s["grads"]:
        gr = params[g].grad
        grads[g] = np.zeros(params[g].shape) if gr is None else gr.numpy()
    return output, loss_eval, float(loss), grads, n_params


def make_one(kiln, name, s, source):
    check_spec(name, s)
    work = tempfile.mkdtemp(prefix=f"fixture-{name}-")
    try:
        wpath = os.path.join(work, "weights.safetensors")
        kiln_init(kiln, name, s, wpath)
        weights = read_safetensors(wpath)
        inputs = make_inputs(name, s)
        output, loss_eval, loss, grads, n_params = run_torch(name, s, weights, inputs)

        out = os.path.join(work, "out")
        os.makedirs(os.path.join(out, "inputs"))
        os.makedirs(os.path.join(out, "grads"))
        with open(wpath, "rb") as f:
            wbytes = f.read()
        stored = len(wbytes) <= WEIGHTS_MAX
        if stored:
            shutil.copy(wpath, os.path.join(out, "weights.safetensors"))
        for k, a in inputs.items():
            np.save(os.path.join(out, "inputs", k + ".npy"), a)
        np.save(os.path.join(out, "output.npy"), output.astype(np.float32))
        np.save(os.path.join(out, "loss.npy"), np.float32(loss))
        for g, a in grads.items():
            np.save(os.path.join(out, "grads", g + ".npy"), a.astype(np.float32))
        meta = {
            "model": name,
            "spec": source,
            "file": "models/%s.kiln" % s.get("file", name),
            "kiln_model": s.get("model"),
            "defines": s["defines"],
            "seed": SEED,
            "init": "kiln init models/%s.kiln %s --seed %d" % (
                s.get("file", name), " ".join(kiln_args(s)), SEED),
            "weights": "weights.safetensors" if stored else None,
            "weights_sha256": hashlib.sha256(wbytes).hexdigest(),
            "inputs": {k: {"dtype": dt, "shape": list(shape)}
                       for k, (dt, shape) in s["inputs"].items()},
            "output": s["output"],
            "grads": list(s["grads"]),
            "loss": loss,
            "loss_eval": loss_eval,
            "torch_params": n_params[0],
            "torch_trainable": n_params[1],
            "torch": __import__("torch").__version__,
        }
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        size = sum(os.path.getsize(os.path.join(d, x)) for d, _, xs in os.walk(out) for x in xs)
        dest = os.path.join(FIXTURES, name)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.makedirs(FIXTURES, exist_ok=True)
        shutil.move(out, dest)
        note = "" if stored else f" (weights {len(wbytes) // 1024} KB: regenerated by kiln init)"
        warn = f"  WARNING: over {WARN_BYTES // 1024} KB, make the fixture smaller" \
            if size > WARN_BYTES else ""
        print(f"{name}: ok, {size // 1024} KB{note}, loss {loss:.6g}, "
              f"{n_params[0]} parameters ({n_params[1]} trainable){warn}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="only this model (repeatable)")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"), help="the kiln binary")
    ap.add_argument("--list", action="store_true", help="list the specs and exit")
    a = ap.parse_args()
    specs = load_specs()
    if a.list:
        for name, (s, src) in sorted(specs.items()):
            print(f"{name:20s} {src}")
        return 0
    names = sorted(specs)
    if a.only:
        unknown = [n for n in a.only if n not in specs]
        if unknown:
            raise SystemExit(f"no spec for {', '.join(unknown)} (specs: {', '.join(names)})")
        names = a.only
    if not os.access(a.kiln, os.X_OK):
        raise SystemExit(f"{a.kiln}: no kiln binary (build it, or give --kiln)")
    failed = []
    for name in names:
        s, src = specs[name]
        try:
            make_one(a.kiln, name, s, src)
        except Exception as e:  # a spec's own bug fails loudly too, with its traceback
            if isinstance(e, FixtureError):
                print(f"{name}: FAILED: {e}", file=sys.stderr)
            else:
                import traceback
                traceback.print_exc()
                print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
