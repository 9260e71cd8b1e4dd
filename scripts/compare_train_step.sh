#!/usr/bin/env bash
# W1 in prefixtune and in PyTorch on this machine, same run, same thread count, both with AdamW: ROUNDS pairs of
# one bench_train_step run and one torch_train_step.py run, the order alternating (ours first in odd rounds, torch
# first in even ones) so that neither side always runs on the machine state the other leaves. Prints each pair's
# tokens/s ratio and their median, and each side's peak RSS above its own idle baseline (the process before the
# model is built: for PyTorch with Python and libtorch loaded), not the raw peak.
# Usage: scripts/compare_train_step.sh [BUILD_DIR] [THREADS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/alternate.sh
build=${1:-build}
threads=${2:-2}
rounds=${3:-2}
cmake --build "$build" --target bench_train_step >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ours() {
  OMP_NUM_THREADS=$threads "$build"/benchmarks/bench_train_step --benchmark_min_time=3 \
    --benchmark_out="$dir/ours.$1.json" --benchmark_out_format=json >/dev/null
}
theirs() {
  /usr/bin/python3 benchmarks/torch_train_step.py --threads "$threads" --steps 5 | tail -n 1 >"$dir/torch.$1.json"
}
alternate_rounds "$rounds" ours theirs
/usr/bin/python3 - "$dir" "$rounds" "$threads" <<'PY'
import json, statistics, sys

folder, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for r in range(rounds):
    ours = json.load(open(f"{folder}/ours.{r}.json"))["benchmarks"][0]
    torch = json.load(open(f"{folder}/torch.{r}.json"))
    optimizers = (ours.get("label", ""), "optimizer=" + torch.get("optimizer", "?"))
    if optimizers[0] != optimizers[1]:
        sys.exit(f"compare_train_step.sh: the two sides ran different optimizers: {optimizers}")
    rows.append((ours, torch))
print(f"W1 prefix-tuning step, GPT-2 small, B=4 T=128 P=10, fp32, AdamW, {threads} threads "
      f"(torch {rows[0][1]['torch']}); RSS = peak resident size above the process's idle baseline")
for r, (ours, torch) in enumerate(rows):
    first = "prefixtune" if r % 2 == 0 else "pytorch"
    print(f"round {r + 1} ({first} first): "
          f"prefixtune {ours['tokens/s']:6.1f} tokens/s, RSS +{ours['peak_rss_above_idle_MB']:5.0f} MB "
          f"(idle {ours['rss_idle_MB']:.0f}) | "
          f"pytorch {torch['tokens_per_s']:6.1f} tokens/s, RSS +{torch['peak_rss_above_idle_mb']:5.0f} MB "
          f"(idle {torch['idle_rss_mb']:.0f}) | ratio {ours['tokens/s'] / torch['tokens_per_s']:.2f}x")
print(f"median ratio (prefixtune / pytorch tokens/s): "
      f"{statistics.median(o['tokens/s'] / t['tokens_per_s'] for o, t in rows):.2f}x; median memory ratio "
      f"(RSS above idle): "
      f"{statistics.median(o['peak_rss_above_idle_MB'] / t['peak_rss_above_idle_mb'] for o, t in rows):.2f}x")
PY
