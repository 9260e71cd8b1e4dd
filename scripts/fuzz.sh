#!/usr/bin/env bash
# Builds the libFuzzer programs (clang, ASan + UBSan; tests/fuzz) and runs each for SECONDS (default 30), as many at
# once as there are cores. New inputs go to BUILD/fuzz-work/<target>/ (not committed), failures to
# BUILD/fuzz-artifacts/<target>/ and the log to BUILD/fuzz-logs/<target>.log. A failing input belongs in
# tests/fuzz/regressions/<target>/ once fixed (test_fuzz_replay replays it in every build).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]        # targets: tests/fuzz/fuzz_<target>.cpp; default all
#   PREFIXTUNE_FUZZ_BUILD=dir (default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
if [ $# -gt 0 ]; then shift; fi
build=${PREFIXTUNE_FUZZ_BUILD:-build-fuzz}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then  # every tests/fuzz/fuzz_<target>.cpp but the replay driver
  for f in tests/fuzz/fuzz_*.cpp; do
    t=$(basename "$f" .cpp)
    t=${t#fuzz_}
    if [ "$t" != replay ]; then targets+=("$t"); fi
  done
fi
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPREFIXTUNE_BUILD_FUZZERS=ON -DPREFIXTUNE_BUILD_EXAMPLES=OFF -DPREFIXTUNE_BUILD_BENCHMARKS=OFF \
  -DPREFIXTUNE_INSTALL=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzzers

run_one() {
  local t=$1 work="$build/fuzz-work/$1" art="$build/fuzz-artifacts/$1" log="$build/fuzz-logs/$1.log"
  mkdir -p "$work" "$art" "$build/fuzz-logs"
  local corpora=("$work" "tests/fuzz/corpus/$t")
  if [ -d "tests/fuzz/regressions/$t" ]; then corpora+=("tests/fuzz/regressions/$t"); fi
  if "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -print_final_stats=1 -artifact_prefix="$art/" "${corpora[@]}" >"$log" 2>&1; then
    echo "fuzz $t: ok, $(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}') runs in ${secs} s," \
      "corpus $(find "$work" -type f | wc -l) new inputs"
  else
    echo "fuzz $t: FAILED (log $log, input in $art/)"
    grep -m5 -E 'ERROR|SUMMARY|FUZZ_CHECK|terminate|what\(\)' "$log" || true
    return 1
  fi
}

failed=0
slots=$(nproc)
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$slots" ]; then
    wait "${pids[0]}" || failed=$((failed + 1))
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
if [ "$failed" -gt 0 ]; then
  echo "fuzz: $failed target(s) failed"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs} s each without a finding"
