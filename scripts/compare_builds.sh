#!/usr/bin/env bash
# The same Google Benchmark of two builds (e.g. before and after a change), in one run on one machine: ROUNDS pairs,
# the order alternating (the first build first in odd rounds, the second in even ones) so that neither side always
# runs on the machine state the other leaves. Prints each pair's ratio of the benchmark's counter (items/s-like:
# larger is faster, e.g. tokens/s) and their median; these VMs change speed by up to 5x within minutes, so only
# such in-run ratios say anything.
# Usage: scripts/compare_builds.sh OLD_BUILD NEW_BUILD BENCHMARK FILTER COUNTER [ROUNDS] [THREADS]
#   e.g. scripts/compare_builds.sh ../baseline/build build-release bench_train_step 'BM_prefix_train_step' tokens/s 4
set -euo pipefail
source "$(dirname "$0")/alternate.sh"
if [ $# -lt 5 ]; then sed -n '2,8p' "$0"; exit 2; fi
old=$1 new=$2 bench=$3 filter=$4 counter=$5 rounds=${6:-4} threads=${7:-2}
for b in "$old" "$new"; do
  [ -x "$b/benchmarks/$bench" ] || { echo "compare_builds.sh: no $b/benchmarks/$bench (build it first)"; exit 2; }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run() {  # run SIDE BUILD ROUND
  OMP_NUM_THREADS=$threads "$2/benchmarks/$bench" --benchmark_filter="$filter" --benchmark_out="$dir/$1.$3.json" \
    --benchmark_out_format=json >/dev/null 2>"$dir/$1.$3.log" || { cat "$dir/$1.$3.log"; exit 1; }
}
run_old() { run old "$old" "$1"; }
run_new() { run new "$new" "$1"; }
alternate_rounds "$rounds" run_old run_new
/usr/bin/python3 - "$dir" "$rounds" "$counter" "$old" "$new" <<'PY'
import json, statistics, sys

folder, rounds, counter, old, new = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def rows(side, r):
    return {b["name"]: b[counter] for b in json.load(open(f"{folder}/{side}.{r}.json"))["benchmarks"] if counter in b}
names = list(rows("old", 0))
if not names:
    sys.exit(f"compare_builds.sh: no benchmark reported the counter '{counter}'")
print(f"{counter}: {new} / {old}, {rounds} alternated rounds")
for name in names:
    pairs = [(rows("old", r)[name], rows("new", r)[name]) for r in range(rounds)]
    each = " ".join(f"{n / o:.3f}" for o, n in pairs)
    print(f"{name}: old {statistics.median(o for o, _ in pairs):.1f}, new {statistics.median(n for _, n in pairs):.1f}; "
          f"ratios {each}; median ratio {statistics.median(n / o for o, n in pairs):.3f}")
PY
