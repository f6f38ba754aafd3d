"""op_models.py: tests/op_cases.h's cases as model files, for running every
op through `kiln run` on a real device (tests/gpu.sh) where the C tests run
them through the host emulator and LLVM.

  op_models.py DIR

writes, for case K: DIR/opK.kiln (the case's statements, `y` the output)
and DIR/opK.x.npy per input x (seeded uniform values in the case's fill
range, default f32 [-2, 2), i32 [0, 3), as the C harness draws them); and
DIR/opK.back.kiln, the same statements with the f32 inputs as parameters
and a train section minimizing sum(y * y) (when y is f32), so that `kiln
run --grad` computes the backward ops of the case (params drawn by kiln's
initializer from --seed).  Prints the case numbers, one per line.  Needs
numpy."""
import os, re, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def cases():
    text = open(os.path.join(HERE, "op_cases.h")).read()
    text = text[text.index("op_cases[] = {"):]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for m in re.finditer(r'\{((?:\s*"(?:[^"\\]|\\.)*")+)\s*,\s*(NULL|(?:\s*"(?:[^"\\]|\\.)*")+)\s*\}', text):
        lit = lambda s: "".join(x.encode().decode("unicode_escape")
                                for x in re.findall(r'"((?:[^"\\]|\\.)*)"', s))
        out.append((lit(m.group(1)), None if m.group(2) == "NULL" else lit(m.group(2))))
    want = text.count('\n    {"')  # one per case, as the file is formatted
    assert len(out) == want, f"op_cases.h: parsed {len(out)} of {want} cases"
    return out


def fills(spec):
    r = {}
    for item in (spec or "").split():
        name, rng = item.split("=")
        lo, hi = rng.split(":")
        r[name] = (float(lo), float(hi))
    return r


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    for k, (body, spec) in enumerate(cases()):
        stmts = [s.strip() for s in body.split(";") if s.strip()]
        ranges = fills(spec)
        inputs = []
        for s in stmts:
            m = re.match(r"input (\w+): (f32|i32)\[([\d, ]*)\]$", s)
            if m:
                inputs.append((m.group(1), m.group(2), [int(x) for x in m.group(3).split(",") if x.strip()]))
        fwd = ["output " + s if s.startswith("y =") else s for s in stmts]
        with open(f"{d}/op{k}.kiln", "w") as f:
            f.write("model op%d() {\n%s\n}\n" % (k, "\n".join("  " + s for s in fwd)))
        for name, dt, shape in inputs:
            lo, hi = ranges.get(name, (-2.0, 2.0) if dt == "f32" else (0, 3))
            if dt == "f32":
                v = rng.uniform(lo, hi, shape).astype(np.float32)
            else:
                v = rng.integers(int(lo), int(hi), shape).astype(np.int32)
            np.save(f"{d}/op{k}.{name}.npy", v)
        back = [re.sub(r"^input (\w+): f32", r"param \1: f32", s) for s in stmts]
        with open(f"{d}/op{k}.back.kiln", "w") as f:
            f.write("model op%d() {\n%s\n  output loss = sum(y * y)\n}\n"
                    "train op%d {\n  minimize  loss\n  optimizer sgd(lr=0.1)\n}\n"
                    % (k, "\n".join("  " + s for s in back), k))
        print(k)


main()
