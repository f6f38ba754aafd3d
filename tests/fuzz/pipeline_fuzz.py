#!/usr/bin/env python3
"""pipeline_fuzz.py: mutated models through the whole compiler, not just the
frontend.

fuzz_parser.c (libFuzzer, in CI) covers the lexer, parser, elaboration and
shape inference.  A model that gets through them still goes through
autodiff, the optimizer, fusion, the schedule, the memory plan and the
lowering to Kernel IR, which that target never reaches.  This script takes
the models of models/ (and any other .kiln files given), mutates them a
little at a time (a number changed, an op or an attribute swapped, a line
dropped or repeated, a batch or width overridden with -D), and runs each
mutant through

    kiln show MUTANT --stage fused [--train]     (every pass, both steps)
    kiln build MUTANT --emit kir --train -o OUT  (every kernel's Kernel IR)

Any of these is a finding: a signal or a sanitizer report (build kiln with
-DKILN_SANITIZE=ON to see more), an exit status other than 0, 1 or 2, an
error without a location (`FILE:LINE:COL: error:` or a message naming the
problem), "internal error" in the output, or a run past --timeout.
Findings are copied to --out with the command that failed.

    python3 tests/fuzz/pipeline_fuzz.py --kiln build/kiln --seconds 300
    python3 tests/fuzz/pipeline_fuzz.py --kiln /tmp/basan/kiln --seconds 600 --seed 7 models/lstm.kiln

It is a tool for a person (minutes of runs), not a CI test; what it finds
becomes a case in tests/bad/ or a unit test.
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPS = ["relu", "gelu", "tanh", "sigmoid", "exp", "log", "sqrt", "abs", "neg",
       "softmax", "log_softmax", "sum", "mean", "max", "layernorm", "batchnorm",
       "dropout", "dense", "conv2d", "maxpool2d", "avgpool2d", "matmul",
       "transpose", "reshape", "concat", "embedding", "flatten", "upsample",
       "stop_gradient", "attention", "lstm", "where", "cast"]
NUMBERS = ["0", "1", "2", "3", "4", "5", "7", "8", "16", "31", "64", "-1", "-2",
           "0.0", "0.5", "1e-30", "1e30", "100000"]
WORDS = ["axis", "out", "keepdims", "transpose_b", "pad", "stride", "heads",
         "causal", "p", "lr", "features", "num", "true", "false", "-1"]
CONSTS = ["N", "T", "D", "C", "H", "W", "hidden", "heads", "layers", "latent",
          "classes", "vocab", "base", "width"]


def mutate(text, rng):
    lines = text.split("\n")
    kind = rng.randrange(7)
    if kind == 0:  # a number
        nums = [m for m in re.finditer(r"(?<![\w.])\d+(\.\d+)?(e-?\d+)?", text)]
        if nums:
            m = rng.choice(nums)
            return text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
    if kind == 1:  # an op name
        names = [m for m in re.finditer(r"\b(" + "|".join(OPS) + r")\b(?=\()", text)]
        if names:
            m = rng.choice(names)
            return text[:m.start()] + rng.choice(OPS) + text[m.end():]
    if kind == 2:  # an attribute or keyword
        names = [m for m in re.finditer(r"\b(" + "|".join(WORDS[:-1]) + r")\b", text)]
        if names:
            m = rng.choice(names)
            return text[:m.start()] + rng.choice(WORDS) + text[m.end():]
    if kind == 3 and len(lines) > 2:  # drop a line
        del lines[rng.randrange(len(lines))]
        return "\n".join(lines)
    if kind == 4 and len(lines) > 2:  # repeat a line
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines)), lines[i])
        return "\n".join(lines)
    if kind == 5:  # swap two arguments of a call
        m = re.search(r"\(([^(),]+),\s*([^(),]+)\)", text[rng.randrange(max(1, len(text) // 2)):])
        if m:
            a, b = m.group(1), m.group(2)
            return text.replace(m.group(0), "(%s, %s)" % (b, a), 1)
    # kind 6 (or nothing to change above): a character dropped
    if text:
        i = rng.randrange(len(text))
        return text[:i] + text[i + 1:]
    return text


def defines(rng):
    out = []
    for _ in range(rng.randrange(3)):
        out += ["-D", "%s=%s" % (rng.choice(CONSTS), rng.choice(["1", "2", "3", "5", "8", "16"]))]
    return out


LOCATED = re.compile(r"(:\d+:\d+: error: |^kiln[^:]*: |error: )", re.M)


def classify(proc, timed_out):
    if timed_out:
        return "timeout"
    out = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode < 0:
        return "signal %d" % -proc.returncode
    if "Sanitizer" in out or "runtime error:" in out:
        return "sanitizer"
    if "internal error" in out.lower():
        return "internal error"
    if proc.returncode not in (0, 1, 2):
        return "exit %d" % proc.returncode
    if proc.returncode == 1 and not LOCATED.search(proc.stderr or ""):
        return "unlocated error"
    return None


def run(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           errors="replace")
        return p, False
    except subprocess.TimeoutExpired as e:
        class P:  # what classify reads
            returncode, stdout, stderr = 0, "", ""
        return P, True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("seeds", nargs="*", help=".kiln files (default: models/*.kiln)")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--out", default="/tmp/kiln_pipeline_fuzz")
    args = ap.parse_args()
    seeds = args.seeds or sorted(os.path.join(ROOT, "models", f)
                                 for f in os.listdir(os.path.join(ROOT, "models"))
                                 if f.endswith(".kiln"))
    texts = [(s, open(s).read()) for s in seeds]
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="kiln_pf_")
    end = time.time() + args.seconds
    runs = findings = compiled = 0
    while time.time() < end:
        name, text = rng.choice(texts)
        for _ in range(1 + rng.randrange(3)):
            text = mutate(text, rng)
        path = os.path.join(work, "m.kiln")
        with open(path, "w") as f:
            f.write(text)
        d = defines(rng)
        cmds = [[args.kiln, "show", path, "--stage", "fused"] + d,
                [args.kiln, "show", path, "--stage", "fused", "--train"] + d,
                [args.kiln, "build", path, "--emit", "kir", "--train",
                 "-o", os.path.join(work, "prog")] + d]
        for cmd in cmds:
            p, timed_out = run(cmd, args.timeout)
            runs += 1
            what = classify(p, timed_out)
            compiled += p.returncode == 0 and not timed_out
            if what:
                findings += 1
                base = os.path.join(args.out, "finding_%03d" % findings)
                shutil.copy(path, base + ".kiln")
                with open(base + ".txt", "w") as f:
                    f.write("%s (from %s)\n%s\n\n%s\n%s\n" % (
                        what, os.path.basename(name), " ".join(cmd[2:]),
                        (p.stdout or "")[-2000:], (p.stderr or "")[-4000:]))
                print("finding %d: %s: %s (from %s)" % (findings, what, base, os.path.basename(name)),
                      flush=True)
                break
            if p.returncode != 0:
                break  # the same error would repeat
    print("%d runs, %d compiled, %d findings (in %s)" % (runs, compiled, findings, args.out))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
