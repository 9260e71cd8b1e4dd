# SPDX-License-Identifier: MIT
# Sourced by the scripts that compare two sides in one run (compare_train_step.sh, compare_generate.sh,
# compare_llama.sh, compare_builds.sh): these VMs change speed within minutes, so neither side may always run on the
# machine state the other leaves.
#   alternate_rounds ROUNDS FIRST SECOND   runs `FIRST r; SECOND r` in rounds r = 0, 2, 4, ... and
#                                          `SECOND r; FIRST r` in rounds 1, 3, ... (each a command taking the round);
#                                          returns 1 as soon as one fails (set -e does not apply inside `a && b`)
alternate_rounds() {
  local rounds=$1 first=$2 second=$3 r
  for ((r = 0; r < rounds; r++)); do
    if ((r % 2 == 0)); then
      "$first" "$r" && "$second" "$r" || return 1
    else
      "$second" "$r" && "$first" "$r" || return 1
    fi
  done
}

#   bench_binary BUILD NAME                prints the path of benchmark NAME: BUILD is a CMake build folder (NAME is
#                                          rebuilt there first, then taken from BUILD/benchmarks) or a folder holding a
#                                          NAME binary built some other way; returns 1, saying so, when there is none
bench_binary() {
  local build=$1 name=$2 bin
  if [[ -f "$build/CMakeCache.txt" ]]; then
    cmake --build "$build" --target "$name" >/dev/null || return 1
  fi
  bin="$build/benchmarks/$name"
  [[ -x "$bin" ]] || bin="$build/$name"
  [[ -x "$bin" ]] || { echo "no $name in $build or $build/benchmarks" >&2; return 1; }
  echo "$bin"
}
