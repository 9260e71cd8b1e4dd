// SPDX-License-Identifier: MIT
// GPU benchmarks of the model workloads, the same templates as the CPU benchmarks on Tensor<float, Cuda>:
// W1 (one GPT-2 small prefix-tuning step, B=4 x T=128, fp32 and opt-in TF32 / bf16 GEMMs) and generation (batch 1 with
// and without a P=10 prefix; 8 requests with 8 prefixes, one after another vs one batch). torch_train_step.py and
// torch_generate.py with --device cuda are the same-machine PyTorch baselines (scripts/gpu_check.sh runs all).
#include "prefixtune/cuda.cuh"
// the workloads (after the CUDA kernels: they instantiate the ops on Cuda)
#include "generate_workload.hpp"
#include "train_step_workload.hpp"

using namespace prefixtune;
using namespace prefixtune::bench;

namespace {

template <CudaMath kMath>
void BM_prefix_train_step_math(benchmark::State& state) {
  CudaContext::current().set_math(kMath);
  BM_prefix_train_step<Cuda>(state);
  CudaContext::current().set_math(CudaMath::Fp32);
}

void BM_prefix_train_step_tf32(benchmark::State& state) { BM_prefix_train_step_math<CudaMath::Tf32>(state); }
void BM_prefix_train_step_bf16(benchmark::State& state) { BM_prefix_train_step_math<CudaMath::Bf16>(state); }

}  // namespace

BENCHMARK_TEMPLATE(BM_prefix_train_step, Cuda)
    ->Args({4, 128})
    ->ArgNames({"B", "T"})
    ->MinTime(1.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_prefix_train_step_tf32)
    ->Args({4, 128})
    ->ArgNames({"B", "T"})
    ->MinTime(1.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_prefix_train_step_bf16)
    ->Args({4, 128})
    ->ArgNames({"B", "T"})
    ->MinTime(1.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_generate_batch1, Cuda)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->MinTime(1.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_generate_many_prefixes, Cuda)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("batched")
    ->MinTime(1.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
