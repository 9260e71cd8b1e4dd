#!/usr/bin/env bash
# Generation on the GPT-2 small config (random weights, prompt 32, 64 new tokens, greedy): bench_generate and
# torch_generate.py in the same run with the same thread count; prints tokens/s and the three ratios the goals are
# about: prefixtune vs PyTorch at batch 1 (goal >= 2x), the cost of a P=10 prefix at batch 1 (goal <= 3% slower),
# and 8 requests with 8 prefixes in one batch vs one after another (goal >= 4x).
# Usage: scripts/compare_generate.sh [BUILD_DIR] [THREADS]
#   BUILD_DIR: a CMake build folder (bench_generate is rebuilt there first) or a folder holding a bench_generate
#   binary built some other way.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
if [[ -f "$build/CMakeCache.txt" ]]; then
  cmake --build "$build" --target bench_generate >/dev/null
fi
bin="$build/benchmarks/bench_generate"
[[ -x "$bin" ]] || bin="$build/bench_generate"
[[ -x "$bin" ]] || { echo "compare_generate.sh: no bench_generate in $build or $build/benchmarks" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
OMP_NUM_THREADS=$threads "$bin" --benchmark_out="$out" --benchmark_out_format=json >/dev/null
torch0=$(/usr/bin/python3 benchmarks/torch_generate.py --threads "$threads" --runs 2 --prefix 0 | tail -n 1)
torch10=$(/usr/bin/python3 benchmarks/torch_generate.py --threads "$threads" --runs 2 --prefix 10 | tail -n 1)
/usr/bin/python3 - "$out" "$torch0" "$torch10" "$threads" <<'PY'
import json, sys

runs = json.load(open(sys.argv[1]))["benchmarks"]
torch0, torch10 = json.loads(sys.argv[2]), json.loads(sys.argv[3])


def tps(prefix):
    found = [b["tokens/s"] for b in runs
             if b["name"].replace("<Cpu>", "").startswith(prefix + "/") and b.get("run_type") != "aggregate"]
    if not found:
        sys.exit(f"compare_generate.sh: no result for {prefix} in bench_generate's output")
    return sum(found) / len(found)


ours0, ours10 = tps("BM_generate_batch1/prefix:0"), tps("BM_generate_batch1/prefix:1")
seq, batched = tps("BM_generate_many_prefixes/batched:0"), tps("BM_generate_many_prefixes/batched:1")
theirs0, theirs10 = torch0["tokens_per_s"], torch10["tokens_per_s"]
print(f"GPT-2 small, random weights, prompt 32, 64 new tokens, greedy, fp32, {sys.argv[4]} threads "
      f"(torch {torch0['torch']}); tokens/s = new tokens per second")
print(f"{'':34s} {'prefixtune':>12s} {'pytorch':>12s} {'ratio':>8s}")
print(f"{'batch 1, no prefix':34s} {ours0:12.2f} {theirs0:12.2f} {ours0 / theirs0:7.2f}x   (goal >= 2x)")
print(f"{'batch 1, P=10 prefix':34s} {ours10:12.2f} {theirs10:12.2f} {ours10 / theirs10:7.2f}x")
print(f"{'prefix cost (time with / without)':34s} {ours0 / ours10:12.3f} {theirs0 / theirs10:12.3f}"
      f"           (goal <= 1.03)")
print(f"{'8 prefixes, one after another':34s} {seq:12.2f}")
print(f"{'8 prefixes, one batch':34s} {batched:12.2f}")
print(f"{'batched / sequential':34s} {batched / seq:11.2f}x              (goal >= 4x)")
PY
