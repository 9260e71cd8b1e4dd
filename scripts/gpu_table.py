#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Prints scripts/gpu_check.sh's table: prefixtune's GPU benchmarks (Google Benchmark JSON) beside the same
workloads in PyTorch (the JSON last lines of torch_train_step.py / torch_generate.py and torch_cuda_gemm.py's
lines), as ratios (ours / PyTorch, higher is better for us).

    scripts/gpu_table.py OUT_DIR
"""
import json
import os
import re
import sys


def last_json(path):
    try:
        with open(path) as f:
            lines = [l for l in f if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "bench_cuda.json")) as f:
        bench = {b["name"]: b for b in json.load(f)["benchmarks"] if b.get("run_type", "iteration") == "iteration"}

    def ours(pattern, counter):
        for name, b in bench.items():
            if re.search(pattern, name):
                return b.get(counter)
        return None

    rows = []
    torch_gemm = {}
    try:
        with open(os.path.join(out, "torch_cuda_gemm.txt")) as f:
            for line in f:
                p = line.split()
                if p and p[0] == "torch_gemm":
                    torch_gemm[tuple(int(x) for x in p[1:5])] = float(p[6])
    except OSError:
        pass
    for tf32 in (0, 1):
        peak = ours(r"M:8192/K:8192/N:8192/tf32:%d/" % tf32, "GFLOP/s")
        for name, b in bench.items():
            m = re.search(r"BM_cuda_gemm/M:(\d+)/K:(\d+)/N:(\d+)/tf32:%d/" % tf32, name)
            if not m:
                continue
            key = tuple(int(x) for x in m.groups()) + (tf32,)
            g = b["GFLOP/s"] / 1e3
            t = torch_gemm.get(key)
            frac = " (%.0f%% of peak)" % (100 * b["GFLOP/s"] / peak) if peak else ""
            rows.append(("GEMM %dx%dx%d %s" % (key[0], key[1], key[2], "tf32" if tf32 else "fp32"),
                         "%.1f TFLOP/s%s" % (g, frac), "%.1f TFLOP/s" % (t / 1e3) if t else "-",
                         "%.2fx" % (b["GFLOP/s"] / t) if t else "-"))

    def add(label, pattern, torch_file, unit="tokens/s"):
        o = ours(pattern, "tokens/s")
        t = last_json(os.path.join(out, torch_file))
        tv = t["tokens_per_s"] if t else None
        rows.append((label, "%.0f %s" % (o, unit) if o else "-", "%.0f %s" % (tv, unit) if tv else "-",
                     "%.2fx" % (o / tv) if o and tv else "-"))

    add("W1 train step fp32 (B=4, T=128, P=10)", r"BM_prefix_train_step<Cuda>", "torch_train_fp32.json")
    add("W1 train step tf32", r"BM_prefix_train_step_tf32", "torch_train_tf32.json")
    add("W1 train step bf16 GEMMs (vs PyTorch tf32)", r"BM_prefix_train_step_bf16", "torch_train_tf32.json")
    add("generate batch 1, no prefix", r"BM_generate_batch1<Cuda>/prefix:0", "torch_gen_b1_p0.json")
    add("generate batch 1, P=10 prefix", r"BM_generate_batch1<Cuda>/prefix:1", "torch_gen_b1_p10.json")
    add("generate 8 users, 8 prefixes, one batch", r"BM_generate_many_prefixes<Cuda>/batched:1",
        "torch_gen_b8_p10.json")
    add("generate 8 users one after another", r"BM_generate_many_prefixes<Cuda>/batched:0", "torch_gen_b1_p10.json")
    widths = [max(len(r[i]) for r in rows + [("workload", "prefixtune", "PyTorch", "ratio")]) for i in range(4)]
    fmt = "| " + " | ".join("%%-%ds" % w for w in widths) + " |"
    print(fmt % ("workload", "prefixtune", "PyTorch", "ratio"))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(fmt % r)


if __name__ == "__main__":
    main()
