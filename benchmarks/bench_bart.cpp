// SPDX-License-Identifier: MIT
// BART-base with the paper's three prefixes on the CPU (workloads in bart_workload.hpp): the prefix-tuning step
// (torch_bart_train_step.py runs it in PyTorch) and generation. A BART-base step takes seconds on 2 cores: every
// case runs one warm-up call and a fixed number of timed iterations (--benchmark_repetitions=N for more).
#include "bart_workload.hpp"

using namespace prefixtune;
using namespace prefixtune::bench;

// P=10 vs P=100 (the prefix's cost), forward only vs the full step (the backward's and AdamW's share).
BENCHMARK(BM_bart_train_step)
    ->Args({10, 1})
    ->Args({100, 1})
    ->Args({100, 0})
    ->ArgNames({"P", "step"})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_bart_generate_batch1)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_bart_generate_many_prefixes)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("batched")
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_bart_generate_beam)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bart_encode)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
