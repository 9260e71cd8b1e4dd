// SPDX-License-Identifier: MIT
// Generation throughput on the CPU (workloads in generate_workload.hpp). torch_generate.py runs the batch-1
// workload in PyTorch; scripts/compare_generate.sh prints the ratios.
#include "generate_workload.hpp"

using namespace prefixtune;
using namespace prefixtune::bench;

// Each batch-1 iteration is ~64 decode steps of GPT-2 small (seconds on 2 cores): a few iterations suffice.
BENCHMARK_TEMPLATE(BM_generate_batch1, Cpu)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->MinTime(3.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_generate_many_prefixes, Cpu)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("batched")
    ->MinTime(3.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Same-run ratios (each iteration times both sides, in alternating order): the P=10 prefix's cost and 8 prefixes
// batched vs one after another. Even iteration counts: each side leads in half of them. compare_generate.sh reads
// these.
BENCHMARK_TEMPLATE(BM_generate_prefix_cost, Cpu)->Iterations(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_generate_batching, Cpu)->Iterations(6)->Unit(benchmark::kMillisecond)->UseRealTime();
