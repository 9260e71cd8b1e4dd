#!/usr/bin/env bash
# W1 in prefixtune and in PyTorch on this machine, same run, same thread count; prints both and the ratio.
# Usage: scripts/compare_train_step.sh [BUILD_DIR] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
cmake --build "$build" --target bench_train_step >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
OMP_NUM_THREADS=$threads "$build"/benchmarks/bench_train_step --benchmark_min_time=3 --benchmark_out="$out" \
  --benchmark_out_format=json >/dev/null
ours=$(/usr/bin/python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["benchmarks"][0]; print(b["tokens/s"], b["peak_rss_MB"])' "$out")
theirs=$(/usr/bin/python3 benchmarks/torch_train_step.py --threads "$threads" --steps 5 | tail -n 1)
/usr/bin/python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours_tps, ours_mb = map(float, sys.argv[1].split())
torch = json.loads(sys.argv[2])
print(f"prefixtune: {ours_tps:8.1f} tokens/s, peak RSS {ours_mb:7.0f} MB")
print(f"pytorch   : {torch['tokens_per_s']:8.1f} tokens/s, peak RSS {torch['peak_rss_mb']:7.0f} MB (torch {torch['torch']})")
print(f"ratio (prefixtune / pytorch tokens/s): {ours_tps / torch['tokens_per_s']:.2f}")
PY
