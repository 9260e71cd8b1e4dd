// SPDX-License-Identifier: MIT
// GEMM throughput at GPT-2 small shapes (M = 512 rows, (K, N) of the QKV, MLP-up, MLP-down and LM-head
// products) for prefixtune's dispatching gemm, pure Eigen, and OpenBLAS cblas_sgemm as the same-run baseline.
// M = 1 rows (batch-1 decoding) show the GEMV routing.
#include <benchmark/benchmark.h>

#include <vector>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/core/rng.hpp"

using namespace prefixtune;

namespace {

struct Operands {
  std::vector<float> a, b, c;
  Operands(std::int64_t m, std::int64_t n, std::int64_t k) : a(m * k), b(k * n), c(m * n) {
    Rng rng(1);
    for (auto& x : a) x = float(rng.uniform(-1, 1));
    for (auto& x : b) x = float(rng.uniform(-1, 1));
  }
};

template <class Kernel>
void run(benchmark::State& state, Kernel kernel) {
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Operands op(m, n, k);
  for (auto _ : state) {
    kernel(m, n, k, op);
    benchmark::DoNotOptimize(op.c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m) * double(n) * double(k) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_prefixtune(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    gemm(Cpu{}, Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b.data(), n, 0.0f, op.c.data(), n);
  });
}

void BM_gemm_eigen(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    detail::gemm_eigen(Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b.data(), n, 0.0f, op.c.data(), n);
  });
}

#if defined(PREFIXTUNE_WITH_BLAS)
void BM_gemm_openblas(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, op.a.data(), int(k),
                op.b.data(), int(n), 0.0f, op.c.data(), int(n));
  });
}
#endif

// (M, K, N): GPT-2 small at B*T = 512 rows, then batch-1 decoding rows.
void gpt2_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t m : {512, 1})
    for (auto kn : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {768, 3072}, {3072, 768}, {768, 50257}})
      b->Args({m, kn.first, kn.second});
  b->ArgNames({"M", "K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_gemm_prefixtune)->Apply(gpt2_shapes);
BENCHMARK(BM_gemm_eigen)->Apply(gpt2_shapes);
#if defined(PREFIXTUNE_WITH_BLAS)
BENCHMARK(BM_gemm_openblas)->Apply(gpt2_shapes);
#endif
