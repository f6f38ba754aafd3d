"""gpu_ceilings.py: the lent GPU's two ceilings, measured once per lease
(bench/gpu_lease.sh): device memory bandwidth (a 1 GiB device-to-device
copy, bytes read plus bytes written) and f32 matrix-product rate (8192^3
with TF32 off, so the CUDA cores' f32 FMA rate, which is what kiln's f32
kernels can use; and with TF32 on, for reference).  Timed with CUDA events,
median of 20 after warm-up.  Needs PyTorch with CUDA (the GPU machine's
python3)."""
import json, statistics, sys

import torch


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


def main():
    dev = torch.device("cuda")
    p = torch.cuda.get_device_properties(dev)
    n = 1 << 28  # 1 GiB of f32
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    t_copy = timed(lambda: dst.copy_(src))
    bw = 2 * 4 * n / t_copy
    del src, dst
    m = 8192
    x, y = torch.randn(m, m, device=dev), torch.randn(m, m, device=dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    t_f32 = timed(lambda: x @ y, 10)
    torch.backends.cuda.matmul.allow_tf32 = True
    t_tf32 = timed(lambda: x @ y, 10)
    r = {"device": p.name, "sms": p.multi_processor_count, "torch": torch.__version__,
         "copy_gb_per_s": bw / 1e9, "f32_gemm_tflop_per_s": 2 * m ** 3 / t_f32 / 1e12,
         "tf32_gemm_tflop_per_s": 2 * m ** 3 / t_tf32 / 1e12}
    json.dump(r, sys.stdout)
    print()


main()
