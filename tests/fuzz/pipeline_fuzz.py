#!/usr/bin/env python3
"""pipeline_fuzz.py: mutated models through the whole compiler, not just the
frontend.

fuzz_parser.c (libFuzzer, in CI) covers the lexer, parser, elaboration and
shape inference.  A model that gets through them still goes through
autodiff, the optimizer, fusion, the schedule, the memory plan and the
lowering to Kernel IR, which that target never reaches.  This script takes
the models of models/ (and any other .kiln files given), mutates them a
little at a time (a number changed, an op or an attribute swapped, a line
dropped or repeated, another optimizer, gradient clipping or a learning-rate
schedule, a batch or width overridden with -D), and runs each
mutant through

    kiln show MUTANT --stage fused [--train]     (every pass, both steps)
    kiln build MUTANT --emit kir --train -o OUT  (every kernel's Kernel IR)

Any of these is a finding: a signal or a sanitizer report (build kiln with
-DKILN_SANITIZE=ON to see more), an exit status other than 0, 1 or 2, an
error without a location (`FILE:LINE:COL: error:` or a message naming the
problem), "internal error" in the output, or a run past --timeout.

With --differential, a mutant that compiles also runs once on seeded random
inputs four ways, `kiln run MUTANT --random-inputs` with every fusion kind
but fold, with --fuse=none, with --reference and fused (the default), and
these must agree: the first two's summaries of every output character for
character (kiln keeps the bits of builds that differ in those kinds equal;
fold, batchnorm scaled into a convolution's weights, moves the last bits),
the other two's numbers within 1e-3 relative (plus 1e-5; NaN where the
unfused code has NaN) of the unfused ones, and all four on the exit
status.  A mutant with a train section then runs `kiln bench MUTANT
--train --repeat 1 --threads 1`, which steps both builds once from the
same parameters: it must report the loss and the updates identical (no
training graph is folded), not merely within its tolerance, nor that
they disagree.  A run past --timeout there is skipped, not reported (the
reference evaluator is slow on large mutants by design).
Findings are copied to --out with the command that failed.

    python3 tests/fuzz/pipeline_fuzz.py --kiln build/kiln --seconds 300
    python3 tests/fuzz/pipeline_fuzz.py --kiln /tmp/basan/kiln --seconds 600 --seed 7 models/lstm.kiln

scripts/test.sh (CI) runs it for FUZZ_SECONDS (60) with --seed 1 on the
sanitized kiln; a finding prints its command, the tail of its stderr and
the mutant, and fails the run.  Longer runs, other seeds and --differential
are for a person; what they find becomes a case in tests/bad/ or a unit
test.
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
       "stop_gradient", "attention", "lstm", "where", "cast", "randn"]
NUMBERS = ["0", "1", "2", "3", "4", "5", "7", "8", "16", "31", "64", "-1", "-2",
           "0.0", "0.5", "1e-30", "1e30", "100000"]
WORDS = ["axis", "out", "keepdims", "transpose_b", "pad", "stride", "heads",
         "causal", "p", "lr", "features", "num", "true", "false", "-1"]
CONSTS = ["N", "T", "D", "C", "H", "W", "hidden", "heads", "layers", "latent",
          "classes", "vocab", "base", "width"]


OPTIMIZERS = ["sgd(lr=0.1)", "sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01)",
              "momentum(lr=0.01)", "nesterov(lr=0.01)", "adam(lr=0.01, weight_decay=0.1)",
              "adagrad(lr=0.1)", "rmsprop(lr=0.01, momentum=0.5)", "adam(lr=0.001, eps=0)"]
TRAIN_LINES = ["  clip_norm 1.0", "  clip_norm 0.0", "  schedule  cosine(warmup=3)",
               "  schedule  linear(end=0.5)"]


def mutate(text, rng):
    lines = text.split("\n")
    kind = rng.randrange(8)
    if kind == 7:  # the train section: another optimizer, or clipping or a schedule
        m = re.search(r"optimizer\s+\w+\([^)]*\)", text)
        if m and rng.randrange(2):
            return text[:m.start()] + "optimizer " + rng.choice(OPTIMIZERS) + text[m.end():]
        if m:
            return text[:m.end()] + "\n" + rng.choice(TRAIN_LINES) + text[m.end():]
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
# With allocator_may_return_null=1 (ENV below) ASan warns of a size it
# cannot serve and returns NULL, which kiln reports as the model's error
# ("out of memory: the parameters need N bytes"): not a finding.
ASAN_NULL = re.compile(r"^==\d+==WARNING: AddressSanitizer failed to allocate .*$", re.M)


def classify(proc, timed_out):
    if timed_out:
        return "timeout"
    out = ASAN_NULL.sub("", (proc.stdout or "") + (proc.stderr or ""))
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


NO_FOLD = "eltwise,reduce,row,multi,epilogue,scatter,deriv,view,batchsum,const"
NUM = re.compile(r"-?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)", re.I)


def close(a, b):
    """The summaries' numbers agree within the tolerance (same count)."""
    x, y = NUM.findall(a), NUM.findall(b)
    if len(x) != len(y):
        return False
    for p, q in zip(x, y):
        fp, fq = float(p), float(q)
        if fp != fp or fq != fq:
            if (fp != fp) != (fq != fq):
                return False
            continue
        if abs(fp - fq) > 1e-3 * max(abs(fp), abs(fq)) + 1e-5:
            return False
    return True


def differential(kiln, path, d, timeout):
    """None when the three evaluations agree (or one timed out), else why."""
    base = [kiln, "run", path, "--random-inputs", "--seed", "1"] + d
    got = []
    for extra in (["--fuse=" + NO_FOLD], ["--fuse=none"], ["--reference"], []):
        p, timed_out = run(base + extra, timeout)
        if timed_out:
            return None, None
        if p.returncode < 0 or p.returncode not in (0, 1, 2):
            return "signal or exit %d in kiln run %s" % (p.returncode, " ".join(extra)), p
        got.append(p)
    if len({p.returncode for p in got}) != 1:
        return "exit statuses differ: fused but fold %d, unfused %d, reference %d, fused %d" % \
            tuple(p.returncode for p in got), got[2]
    if got[0].returncode != 0:
        return None, None
    if got[0].stdout != got[1].stdout:
        return "fused (all but fold) and unfused outputs differ", got[1]
    if not close(got[1].stdout, got[2].stdout):
        return "compiled and reference outputs differ", got[2]
    if not close(got[1].stdout, got[3].stdout):
        return "fused (with fold) and unfused outputs differ beyond rounding", got[3]
    p, timed_out = run([kiln, "bench", path, "--train", "--repeat", "1", "--threads", "1"] + d,
                       timeout)
    if timed_out or "no train section" in p.stderr:
        return None, None
    if "disagree" in p.stderr or (p.returncode == 0 and "(identical)" not in p.stdout):
        return "the training step's fused and unfused results differ", p
    what = classify(p, False)
    return ("kiln bench --train: " + what, p) if what else (None, None)


# AddressSanitizer's allocator aborts on sizes it cannot serve; libc's
# returns NULL, which kiln reports as the model's error: ask ASan for that.
ENV = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
           ":allocator_may_return_null=1")


def run(cmd, timeout):
    for attempt in range(60):  # kiln being relinked: wait for it
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               errors="replace", env=ENV)
            return p, False
        except subprocess.TimeoutExpired:
            class P:  # what classify reads
                returncode, stdout, stderr = 0, "", ""
            return P, True
        except OSError:
            time.sleep(1)
    raise SystemExit("cannot run %s" % cmd[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("seeds", nargs="*", help=".kiln files (default: models/*.kiln)")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--out", default="/tmp/kiln_pipeline_fuzz")
    ap.add_argument("--differential", action="store_true",
                    help="also run compiling mutants fused, unfused and on the reference")
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
        ok = 0
        for cmd in cmds + ([None] if args.differential else []):
            if cmd is None:  # every command above succeeded
                if ok < len(cmds):
                    break
                what, p = differential(args.kiln, path, d, args.timeout)
                cmd = [args.kiln, "run", path, "--random-inputs", "--seed", "1"] + d
                runs += 5
            else:
                p, timed_out = run(cmd, args.timeout)
                runs += 1
                what = classify(p, timed_out)
                compiled += p.returncode == 0 and not timed_out
                ok += p.returncode == 0 and not timed_out
            if what:
                findings += 1
                base = os.path.join(args.out, "finding_%03d" % findings)
                shutil.copy(path, base + ".kiln")
                with open(base + ".txt", "w") as f:
                    f.write("%s (from %s)\n%s\n\n%s\n%s\n" % (
                        what, os.path.basename(name), " ".join(cmd[2:]),
                        (p.stdout or "")[-2000:], (p.stderr or "")[-4000:]))
                print("finding %d: %s: %s (from %s)\n  %s\n%s" % (
                    findings, what, base, os.path.basename(name), " ".join(cmd),
                    "\n".join("  | " + l for l in (p.stderr or "").splitlines()[-15:])),
                    flush=True)
                print("--- the mutant:\n" + text, flush=True)
                break
            if p is not None and p.returncode != 0:
                break  # the same error would repeat
    print("%d runs, %d compiled, %d findings (in %s)" % (runs, compiled, findings, args.out))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
