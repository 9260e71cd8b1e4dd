// SPDX-License-Identifier: MIT
// cuBLAS GEMM throughput through gemm(Cuda, ...) at GPT-2 small shapes (M = 512 rows and M = 1 decoding rows;
// (K, N) of the QKV, MLP-up, MLP-down and LM-head products), fp32 and opt-in TF32, plus an 8192^3 product as the
// card's measured peak for each mode. Timed with CUDA events (manual time), so only GPU time is counted.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdio>

#include "prefixtune/cuda.hpp"

using namespace prefixtune;

namespace {

void BM_cuda_gemm(benchmark::State& state) {
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const auto math = state.range(3) ? CudaMath::Tf32 : CudaMath::Fp32;
  auto& ctx = CudaContext::current();
  ctx.set_math(math);
  Rng rng(1);
  auto a = Tensor<float>::empty({m, k}), b = Tensor<float>::empty({k, n});
  fill_uniform(a, rng, -1, 1);
  fill_uniform(b, rng, -1, 1);
  auto da = a.to<Cuda>(), db = b.to<Cuda>();
  auto dc = Tensor<float, Cuda>::zeros({m, n});
  cudaEvent_t start, stop;
  PREFIXTUNE_CUDA_CHECK(cudaEventCreate(&start));
  PREFIXTUNE_CUDA_CHECK(cudaEventCreate(&stop));
  gemm(da, Trans::N, db, Trans::N, dc);  // warm-up: cuBLAS picks and loads its kernel
  ctx.synchronize();
  for (auto _ : state) {
    PREFIXTUNE_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
    gemm(da, Trans::N, db, Trans::N, dc);
    PREFIXTUNE_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
    PREFIXTUNE_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PREFIXTUNE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  ctx.set_math(CudaMath::Fp32);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m) * double(n) * double(k) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t tf32 : {0, 1}) {
    b->Args({8192, 8192, 8192, tf32});  // the card's measured peak in this mode
    for (std::int64_t m : {512, 1})
      for (auto kn : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {768, 3072}, {3072, 768}, {768, 50257}})
        b->Args({m, kn.first, kn.second, tf32});
  }
  b->ArgNames({"M", "K", "N", "tf32"})->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.05);
}

}  // namespace

BENCHMARK(BM_cuda_gemm)->Apply(shapes);

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::printf("bench_cuda: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  PREFIXTUNE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("prefixtune CUDA benchmarks | device: %s | %d SMs\n", prop.name, prop.multiProcessorCount);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
