#!/usr/bin/env bash
# Builds the libFuzzer programs (clang, ASan + UBSan; tests/fuzz) and runs each for SECONDS (default 20, as CI), as
# many at once as there are cores (PREFIXTUNE_FUZZ_JOBS to change). Each run starts from the committed corpora
# (tests/fuzz/corpus/<target>/, tests/fuzz/regressions/<target>/) with an empty BUILD/fuzz-work/<target>/ for its new
# inputs and an explicit libFuzzer -seed, printed on its output line with the command that replays it (same seed,
# same starting corpus, same binary: the same inputs in the same order). Failures go to
# BUILD/fuzz-artifacts/<target>/, the log to BUILD/fuzz-logs/<target>.log. A failing input belongs in
# tests/fuzz/regressions/<target>/ once fixed (test_fuzz_replay replays it in every build).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]          # targets: tests/fuzz/fuzz_<target>.cpp; default all
#   scripts/fuzz.sh --merge [SECONDS] [TARGET ...]  # fuzz, then keep the new inputs that add coverage
#   PREFIXTUNE_FUZZ_SEED=N    libFuzzer seed for every target (default: a random one per target)
#   PREFIXTUNE_FUZZ_JOBS=N    targets fuzzed at once (default: the number of cores)
#   PREFIXTUNE_FUZZ_BUILD=dir (default build-fuzz)
#
# --merge: after fuzzing, `fuzz_<target> -merge=1 tests/fuzz/corpus/<target> BUILD/fuzz-work/<target>` copies into
# the committed seed corpus only the new inputs that reach coverage the corpus does not (at most -max_len = 16 KiB
# each), and prints how many files and bytes it added; commit them after test_fuzz_replay passes over them.
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
if [ "${1:-}" = --merge ]; then
  merge=1
  shift
fi
secs=${1:-20}
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

flags=(-timeout=10 -rss_limit_mb=2048 -max_len=16384)

# A libFuzzer seed in [1, 2^31): from PREFIXTUNE_FUZZ_SEED, else random (0 would mean "pick one" to libFuzzer).
pick_seed() {
  if [ -n "${PREFIXTUNE_FUZZ_SEED:-}" ]; then
    echo "$PREFIXTUNE_FUZZ_SEED"
  else
    echo $(($(od -An -N4 -tu4 /dev/urandom) % 2147483647 + 1))
  fi
}

run_one() {
  local t=$1 work="$build/fuzz-work/$1" art="$build/fuzz-artifacts/$1" log="$build/fuzz-logs/$1.log"
  local seed
  seed=$(pick_seed)
  local replay="replay: PREFIXTUNE_FUZZ_SEED=$seed scripts/fuzz.sh $secs $t"
  rm -rf "$work"
  mkdir -p "$work" "$art" "$build/fuzz-logs"
  local corpora=("$work" "tests/fuzz/corpus/$t")
  if [ -d "tests/fuzz/regressions/$t" ]; then corpora+=("tests/fuzz/regressions/$t"); fi
  if "$build/tests/fuzz/fuzz_$t" -seed="$seed" -max_total_time="$secs" "${flags[@]}" -print_final_stats=1 \
      -artifact_prefix="$art/" "${corpora[@]}" >"$log" 2>&1; then
    echo "fuzz $t: ok, $(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}') runs in ${secs} s," \
      "$(find "$work" -type f | wc -l) new inputs, seed $seed; $replay"
  else
    echo "fuzz $t: FAILED (log $log, input in $art/), seed $seed; $replay"
    grep -m5 -E 'ERROR|SUMMARY|FUZZ_CHECK|terminate|what\(\)' "$log" || true
    return 1
  fi
}

# Copies the inputs of BUILD/fuzz-work/<target>/ that add coverage into tests/fuzz/corpus/<target>/.
merge_one() {
  local t=$1 dest="tests/fuzz/corpus/$1" log="$build/fuzz-logs/$1.merge.log"
  sizes() { find "$dest" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d files, %d bytes", n, s }'; }
  local before
  before=$(sizes)
  if ! "$build/tests/fuzz/fuzz_$t" -merge=1 "${flags[@]}" "$dest" "$build/fuzz-work/$t" >"$log" 2>&1; then
    echo "merge $t: FAILED (log $log)"
    return 1
  fi
  echo "merge $t: $before -> $(sizes), the largest $(find "$dest" -type f -printf '%s\n' | sort -n | tail -1) bytes;" \
    "$(grep -o '[0-9]* new files with [0-9]* new features added; [0-9]* new coverage edges' "$log" || true)"
}

failed=0
slots=${PREFIXTUNE_FUZZ_JOBS:-$(nproc)}
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
if [ "$merge" = 1 ]; then
  for t in "${targets[@]}"; do merge_one "$t"; done
  echo "fuzz: merged; check with test_fuzz_replay, then commit tests/fuzz/corpus/"
fi
