#!/usr/bin/env bash
# Generation on the GPT-2 small config (random weights, prompt 32, 64 new tokens, greedy): the three ratios the
# goals are about, each measured so that both sides see the same machine load (this machine is shared: its speed
# changes over seconds):
#  - the cost of a P=10 prefix at batch 1 (goal <= 3% slower) and 8 requests with 8 prefixes in one batch vs one
#    after another (goal >= 4x): bench_generate's BM_generate_prefix_cost / BM_generate_batching, which time both
#    sides one after the other within every iteration, each side leading in half of the iterations;
#  - prefixtune vs PyTorch at batch 1 (goal >= 2x): bench_generate's batch-1 run and torch_generate.py one after the
#    other, ROUNDS times, the order alternating (prefixtune first in odd rounds); the ratio of each pair, and their
#    median.
# Usage: scripts/compare_generate.sh [BUILD_DIR] [THREADS] [ROUNDS]
#   BUILD_DIR: a CMake build folder (bench_generate is rebuilt there first) or a folder holding a bench_generate
#   binary built some other way.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/alternate.sh
build=${1:-build}
threads=${2:-2}
rounds=${3:-3}
bin=$(bench_binary "$build" bench_generate) || exit 1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=$threads
"$bin" --benchmark_filter='prefix_cost|batching' --benchmark_out="$dir/paired.json" --benchmark_out_format=json \
  >/dev/null
ours() {
  "$bin" --benchmark_filter='BM_generate_batch1<Cpu>/prefix:0' --benchmark_out="$dir/ours.$1.json" \
    --benchmark_out_format=json >/dev/null
}
theirs() {
  /usr/bin/python3 benchmarks/torch_generate.py --threads "$threads" --runs 2 --prefix 0 | tail -n 1 >"$dir/torch.$1.json"
}
alternate_rounds "$rounds" ours theirs  # prefixtune first in rounds 1, 3, ..., PyTorch first in rounds 2, 4, ...
/usr/bin/python3 - "$dir" "$rounds" "$threads" <<'PY'
import json, statistics, sys

folder, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def counters(path, name):
    for b in json.load(open(path))["benchmarks"]:
        if b["name"].startswith(name) and b.get("run_type") != "aggregate":
            return b
    sys.exit(f"compare_generate.sh: no result for {name} in {path}")


cost = counters(f"{folder}/paired.json", "BM_generate_prefix_cost")
batching = counters(f"{folder}/paired.json", "BM_generate_batching")
pairs = []
for r in range(rounds):
    ours = counters(f"{folder}/ours.{r}.json", "BM_generate_batch1<Cpu>/prefix:0")["tokens/s"]
    theirs = json.load(open(f"{folder}/torch.{r}.json"))
    pairs.append((ours, theirs["tokens_per_s"], theirs["torch"]))
print(f"GPT-2 small, random weights, prompt 32, 64 new tokens, greedy, fp32, {threads} threads "
      f"(torch {pairs[0][2]}); tokens/s = new tokens per second")
for r, (ours, theirs, _) in enumerate(pairs):
    first = "prefixtune" if r % 2 == 0 else "pytorch"
    print(f"batch 1, round {r + 1} ({first:10s} first): prefixtune {ours:8.2f}  pytorch {theirs:8.2f}  "
          f"ratio {ours / theirs:5.2f}x")
print(f"{'batch 1 vs PyTorch, median ratio':40s} {statistics.median(o / t for o, t, _ in pairs):7.2f}x   (goal >= 2x)")
print(f"{'batch 1 without / with a P=10 prefix':40s} {cost['tokens/s']:7.2f} / {cost['tokens/s_prefix']:.2f} tokens/s")
for name, b in (("BM_generate_prefix_cost", cost), ("BM_generate_batching", batching)):
    if b.get("error_occurred") or b.get("first_ran_first") != 0.5:
        sys.exit(f"compare_generate.sh: {name} did not alternate its sides' order evenly "
                 f"({b.get('error_message', '')}, first_ran_first {b.get('first_ran_first')})")
print(f"{'prefix cost (time with / without)':40s} {cost['prefix_cost']:7.3f}    (goal <= 1.03; median of "
      f"{cost['iterations']} pairs, ratio of totals {cost['prefix_cost_total']:.3f})")
print(f"{'8 prefixes: one after another / batched':40s} {batching['tokens/s_sequential']:7.2f} / "
      f"{batching['tokens/s_batched']:.2f} tokens/s")
print(f"{'batched / one after another':40s} {batching['speedup']:7.2f}x   (goal >= 4x; median of "
      f"{batching['iterations']} pairs, ratio of totals {batching['speedup_total']:.2f}x)")
PY
