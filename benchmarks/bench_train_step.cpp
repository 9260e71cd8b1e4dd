// SPDX-License-Identifier: MIT
// W1 on the CPU (the workload is in train_step_workload.hpp). torch_train_step.py runs the same workload in
// PyTorch; scripts/compare_train_step.sh prints both and the ratio.
#include "train_step_workload.hpp"

using namespace prefixtune;
using namespace prefixtune::bench;

BENCHMARK_TEMPLATE(BM_prefix_train_step, Cpu)
    ->Args({4, 128})
    ->ArgNames({"B", "T"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
