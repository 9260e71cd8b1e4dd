#!/usr/bin/env bash
# Runs every check: the formatting check, the Release build's tests, the ASan+UBSan build's tests (both replay the
# fuzz corpora), the ThreadSanitizer generation test, 30 s of fuzzing per parser, and the CUDA configuration
# (compiled and linked; its GPU tests skip without a GPU). Build trees live in ./build-*.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
common=(-DCMAKE_BUILD_TYPE=Release)
if command -v ccache >/dev/null; then common+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache); fi
ctest_args=(--output-on-failure -j"$jobs")
summary_dir=$(mktemp -d)
trap 'rm -rf "$summary_dir"' EXIT

# Runs ctest, keeps its output, and adds its counts to the closing summary (a CUDA run with every test skipped must
# not be the last word on what ran).
run_ctest() {
  local log="$summary_dir/ctest.$RANDOM.log"
  ctest "$@" | tee "$log"
}

print_summary() {
  cat "$summary_dir"/ctest.*.log | awk '
    /tests passed, [0-9]+ tests? failed out of [0-9]+/ {
      for (i = 1; i <= NF; i++) { if ($i == "failed") f += $(i - 2); if ($i == "of") t += $(i + 1) } }
    /\(Skipped\)$/ { s++ }
    END { printf "== summary over all builds: %d passed, %d failed, %d skipped\n", t - f - s, f, s;
          printf "%d passed, %d failed, %d skipped\n", t - f - s, f, s }'
}

echo "== formatting (clang-format --dry-run -Werror)"
git ls-files -- 'include/*.hpp' 'include/*.cuh' 'tests/*.cpp' 'tests/*.hpp' 'tests/*.cu' 'benchmarks/*.cpp' \
  'benchmarks/*.hpp' 'benchmarks/*.cu' 'examples/*.cpp' 'examples/*.hpp' 'examples/*.cu' | xargs clang-format --dry-run -Werror

echo "== release build + tests"
cmake -S . -B build-release "${common[@]}"
cmake --build build-release -j"$jobs"
run_ctest --test-dir build-release "${ctest_args[@]}"

echo "== ASan + UBSan build + tests"
# -O0 -g1 (line tables for the reports): the Eigen-heavy tests compile 3.2x faster than at -O1 (measured on
# tests/autograd/test_attention.cpp: 41 s vs 132 s) and the sanitized tests still run in about a minute.
cmake -S . -B build-sanitize "${common[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1" \
  -DPREFIXTUNE_SANITIZE=ON \
  -DPREFIXTUNE_BUILD_BENCHMARKS=OFF -DPREFIXTUNE_INSTALL=OFF
cmake --build build-sanitize -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest --test-dir build-sanitize "${ctest_args[@]}" -LE slow

echo "== ThreadSanitizer: one loaded model serving generation from several threads at once"
# Without OpenMP and OpenBLAS: their thread pools are not instrumented, so TSan would report their own
# synchronization as races. Only the generation test is built (the threads test case runs).
cmake -S . -B build-tsan "${common[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DPREFIXTUNE_SANITIZE_THREAD=ON -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON -DPREFIXTUNE_USE_OPENBLAS=OFF \
  -DPREFIXTUNE_BUILD_BENCHMARKS=OFF -DPREFIXTUNE_BUILD_EXAMPLES=OFF -DPREFIXTUNE_INSTALL=OFF
cmake --build build-tsan -j"$jobs" --target test_generate
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" build-tsan/tests/test_generate --test-case="threads*"

if command -v clang++ >/dev/null; then
  echo "== fuzzing: every parser's libFuzzer target for 30 s (clang, ASan + UBSan; scripts/fuzz.sh)"
  # The seed and regression corpora are also replayed above by test_fuzz_replay in the Release and ASan builds.
  PREFIXTUNE_FUZZ_BUILD=build-fuzz scripts/fuzz.sh 30
else
  echo "== fuzzing SKIPPED: no clang++ (Debian: clang, libclang-rt-14-dev)"
fi

nvcc=""
for c in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
  if [ -n "$c" ] && [ -x "$c" ]; then nvcc="$c"; break; fi
done
if [ -n "$nvcc" ]; then
  echo "== CUDA configuration (compile + link; GPU tests skip without a GPU)"
  cuda_root=$(dirname "$(dirname "$nvcc")")
  # A compile-and-link check of every GPU program (tests, the CLI with --device cuda, the benchmarks), kept short:
  # no optimization (build type CompileCheck has no flags) and one virtual architecture (PTX, no machine code); a
  # GPU build (scripts/gpu_check.sh, or your own) is Release with real architectures.
  cmake -S . -B build-cuda "${common[@]}" -DCMAKE_BUILD_TYPE=CompileCheck -DPREFIXTUNE_ENABLE_CUDA=ON \
    -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_ARCHITECTURES=90-virtual -DPREFIXTUNE_INSTALL=OFF
  cmake --build build-cuda -j"$jobs" --target test_cuda prefixtune_cli bench_cuda
  run_ctest --test-dir build-cuda "${ctest_args[@]}" -L cuda
else
  echo "== CUDA configuration SKIPPED: no nvcc found (install the CUDA toolkit to build the GPU backend)"
fi
echo "== all checks passed"
print_summary
