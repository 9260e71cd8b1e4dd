#!/usr/bin/env bash
# The Llama family on the Qwen2.5-0.5B configuration (random weights, fp32): prefixtune (bench_llama) vs plain
# PyTorch (torch_llama.py) on this machine, same thread count:
#  - the W1 prefix-tuning step (B=4, T=128, P=10, AdamW; goal >= 1.2x PyTorch's tokens/s) and batch-1 greedy
#    decoding (prompt 32, 64 new tokens, no prefix; goal >= 2x): ROUNDS rounds, each one bench_llama run (decoding,
#    then one warm-up and one timed training step) and the two torch_llama.py runs, the order alternating
#    (prefixtune first in odd rounds, PyTorch in even ones, scripts/alternate.sh); each pair's ratio and the median;
#  - the cost of a P=10 prefix at batch 1 (goal <= 3%) and 8 users with 8 prefixes in one batch vs one after
#    another (goal >= 4x): BM_llama_generate_prefix_cost / BM_llama_generate_batching, which time both sides within
#    every iteration, each side leading in half of them;
#  - peak memory of each side: peak RSS once the model is built (both sides restart VmHWM there, so the random
#    weights' construction is left out; the ~2 GB of weights are included) and the whole process's ru_maxrss.
# About 15 minutes with 3 rounds on a 2-core VM.
# Usage: [KEEP=1] scripts/compare_llama.sh [BUILD_DIR] [THREADS] [ROUNDS]   (KEEP=1: leave the raw JSON, path on stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/alternate.sh
build=${1:-build}
threads=${2:-2}
rounds=${3:-3}
bin=$(bench_binary "$build" bench_llama) || exit 1
dir=$(mktemp -d)
if [[ -n "${KEEP:-}" ]]; then echo "compare_llama.sh: raw results in $dir" >&2; else trap 'rm -rf "$dir"' EXIT; fi
export OMP_NUM_THREADS=$threads
ours() {
  "$bin" --benchmark_filter='BM_llama_generate_batch1/prefix:0|BM_llama_train_step' \
    --benchmark_out="$dir/ours.$1.json" --benchmark_out_format=json >/dev/null
}
theirs() {
  /usr/bin/python3 benchmarks/torch_llama.py --workload train --threads "$threads" --steps 1 | tail -n 1 \
    >"$dir/torch_train.$1.json"
  /usr/bin/python3 benchmarks/torch_llama.py --workload generate --threads "$threads" --runs 2 | tail -n 1 \
    >"$dir/torch_generate.$1.json"
}
alternate_rounds "$rounds" ours theirs
"$bin" --benchmark_filter='prefix_cost|batching' --benchmark_out="$dir/paired.json" --benchmark_out_format=json \
  >/dev/null
/usr/bin/python3 - "$dir" "$rounds" "$threads" <<'PY'
import json, statistics, sys

folder, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def result(path, name):
    for b in json.load(open(path))["benchmarks"]:
        if b["name"].startswith(name) and b.get("run_type") != "aggregate":
            if b.get("error_occurred"):
                sys.exit(f"compare_llama.sh: {name} failed: {b.get('error_message')}")
            return b
    sys.exit(f"compare_llama.sh: no result for {name} in {path}")


rows = []
for r in range(rounds):
    step = result(f"{folder}/ours.{r}.json", "BM_llama_train_step")
    decode = result(f"{folder}/ours.{r}.json", "BM_llama_generate_batch1/prefix:0")
    t_step = json.load(open(f"{folder}/torch_train.{r}.json"))
    t_decode = json.load(open(f"{folder}/torch_generate.{r}.json"))
    if step.get("label") != "optimizer=" + t_step.get("optimizer", "?"):
        sys.exit(f"compare_llama.sh: the two sides ran different optimizers: {step.get('label')}, {t_step.get('optimizer')}")
    rows.append((step, decode, t_step, t_decode))
print(f"Qwen2.5-0.5B configuration (random weights), fp32, {threads} threads (torch {rows[0][2]['torch']}); "
      f"RSS = peak resident size once the model is built (weights included), ru_maxrss = the whole process's peak")
for r, (step, decode, t_step, t_decode) in enumerate(rows):
    first = "prefixtune" if r % 2 == 0 else "pytorch"
    print(f"round {r + 1} ({first:10s} first): train step prefixtune {step['tokens/s']:6.1f} pytorch "
          f"{t_step['tokens_per_s']:6.1f} tokens/s, ratio {step['tokens/s'] / t_step['tokens_per_s']:5.2f}x | batch-1 "
          f"decoding prefixtune {decode['tokens/s']:6.2f} pytorch {t_decode['tokens_per_s']:6.2f} tokens/s, ratio "
          f"{decode['tokens/s'] / t_decode['tokens_per_s']:5.2f}x")
med = statistics.median
print(f"{'train step vs PyTorch, median ratio':44s} {med(s['tokens/s'] / t['tokens_per_s'] for s, _, t, _ in rows):7.2f}x"
      f"   (goal >= 1.2x; {rounds} pairs)")
print(f"{'batch-1 decoding vs PyTorch, median ratio':44s} "
      f"{med(d['tokens/s'] / t['tokens_per_s'] for _, d, _, t in rows):7.2f}x   (goal >= 2x; {rounds} pairs)")
cost = result(f"{folder}/paired.json", "BM_llama_generate_prefix_cost")
batching = result(f"{folder}/paired.json", "BM_llama_generate_batching")
for name, b in (("BM_llama_generate_prefix_cost", cost), ("BM_llama_generate_batching", batching)):
    if b.get("first_ran_first") != 0.5:
        sys.exit(f"compare_llama.sh: {name} did not alternate its sides' order evenly "
                 f"(first_ran_first {b.get('first_ran_first')})")
print(f"{'batch 1 without / with a P=10 prefix':44s} {cost['tokens/s']:7.2f} / {cost['tokens/s_prefix']:.2f} tokens/s")
print(f"{'prefix cost (time with / without)':44s} {cost['prefix_cost']:7.3f}    (goal <= 1.03; median of "
      f"{cost['iterations']} pairs, ratio of totals {cost['prefix_cost_total']:.3f})")
print(f"{'8 prefixes: one after another / batched':44s} {batching['tokens/s_sequential']:7.2f} / "
      f"{batching['tokens/s_batched']:.2f} tokens/s")
print(f"{'batched / one after another':44s} {batching['speedup']:7.2f}x   (goal >= 4x; median of "
      f"{batching['iterations']} pairs, ratio of totals {batching['speedup_total']:.2f}x)")
for what, ours_key, torch_rows in (("train step", 0, 2), ("batch-1 decoding", 1, 3)):
    # bench_llama decodes before its training step in the same process: its decoding peak is the decode's alone,
    # the training step's covers both.
    o = [row[ours_key] for row in rows]
    t = [row[torch_rows] for row in rows]
    print(f"peak memory, {what}: prefixtune RSS {med(x['peak_rss_MB'] for x in o):6.0f} MB "
          f"(ru_maxrss {med(x['ru_maxrss_MB'] for x in o):.0f}) | pytorch RSS {med(x['peak_rss_mb'] for x in t):6.0f} MB "
          f"(ru_maxrss {med(x['ru_maxrss_mb'] for x in t):.0f}; idle {med(x['idle_rss_mb'] for x in t):.0f}) "
          f"[medians over the rounds]")
PY
