// SPDX-License-Identifier: MIT
// Shared Google Benchmark main: prints backend, threads and build type before the runs.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "prefixtune/backend/cpu/threads.hpp"

#ifndef NDEBUG
#define PREFIXTUNE_BUILD_TYPE "debug (assertions on: do not trust these timings)"
#else
#define PREFIXTUNE_BUILD_TYPE "release"
#endif

int main(int argc, char** argv) {
  std::printf("prefixtune benchmarks | cpu gemm: %s | threads: %d | build: %s\n",
              prefixtune::cpu_gemm_backend().c_str(), prefixtune::num_threads(), PREFIXTUNE_BUILD_TYPE);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
