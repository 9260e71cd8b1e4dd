#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch's fp32 / TF32 GEMM throughput on the shapes of bench_cuda_gemm (same-machine baseline).

Prints one line per shape: "torch_gemm M K N tf32 <microseconds> <GFLOP/s>" (median of CUDA-event timings)."""
import torch


def bench(m, k, n, tf32, reps=50):
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    a = torch.empty(m, k, device="cuda").uniform_(-1, 1)
    b = torch.empty(k, n, device="cuda").uniform_(-1, 1)
    c = a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.matmul(a, b, out=c)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    us = times[len(times) // 2]
    return us, 2.0 * m * n * k / us * 1e-3


def main():
    print("torch", torch.__version__, "device", torch.cuda.get_device_name(0))
    for tf32 in (0, 1):
        shapes = [(8192, 8192, 8192)]
        for m in (512, 1):
            shapes += [(m, 768, 2304), (m, 768, 3072), (m, 3072, 768), (m, 768, 50257)]
        for m, k, n in shapes:
            us, gf = bench(m, k, n, tf32)
            print(f"torch_gemm {m} {k} {n} {tf32} {us:.1f} {gf:.0f}")


if __name__ == "__main__":
    main()
