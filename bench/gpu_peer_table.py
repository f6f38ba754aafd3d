"""gpu_peer_table.py DIR: the table of bench/gpu_lease.sh's peer step:
kiln's step (its default --fuse, fused build of DIR/peer-MODEL-MODE.json)
against PyTorch's (DIR/torch.jsonl, bench/gpu_torch.py), per model and
mode, with PyTorch / kiln (above 1: kiln faster)."""
import json, os, sys

d = sys.argv[1]
torch = {}
for line in open(os.path.join(d, "torch.jsonl")):
    r = json.loads(line)
    torch[(r["model"], r["mode"])] = r
print("| model | step | batch | kiln µs | PyTorch µs | PyTorch / kiln |")
print("|---|---|---|---|---|---|")
for (model, mode), t in torch.items():
    f = os.path.join(d, "peer-%s-%s.json" % (model, "train" if mode == "training" else "infer"))
    try:
        k = json.load(open(f))["builds"][0]["step"]["median_s"]
    except (OSError, ValueError, KeyError, IndexError):
        print("| %s | %s | %d | - | %.1f | - |" % (model, mode, t["batch"], t["median_s"] * 1e6))
        continue
    print("| %s | %s | %d | %.1f | %.1f | %.2f |" % (model, mode, t["batch"], k * 1e6,
                                                   t["median_s"] * 1e6, t["median_s"] / k))
