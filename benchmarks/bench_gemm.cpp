// SPDX-License-Identifier: MIT
// GEMM throughput at GPT-2 small shapes (M = 512 rows, (K, N) of the QKV, MLP-up, MLP-down and LM-head
// products) for prefixtune's dispatching gemm, pure Eigen, and OpenBLAS cblas_sgemm as the same-run baseline.
// M = 1..16 rows (decoding a batch) show the small-m kernels (gemm_small.hpp; B (k, n) also limited to AVX2)
// against OpenBLAS and Eigen's GEMV, with B as stored by GPT-2's Conv1D (k, n: "NN") and by nn.Linear / the tied
// LM head (n, k: "NT").
#include <benchmark/benchmark.h>

#include <initializer_list>
#include <stdexcept>
#include <vector>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/core/rng.hpp"

using namespace prefixtune;

namespace {

// Decoding reads every weight matrix from memory once per token (a model's weights do not fit in the caches):
// for m <= 16 rows, B cycles through copies that total at least 256 MB, so each call reads a cold B. M = 512 keeps
// one hot B (compute-bound).
struct Operands {
  std::vector<float> a, c;
  std::vector<std::vector<float>> copies;
  const float* b = nullptr;
  std::size_t next = 0;
  Operands(std::int64_t m, std::int64_t n, std::int64_t k) : a(m * k), c(m * n) {
    Rng rng(1);
    for (auto& x : a) x = float(rng.uniform(-1, 1));
    std::vector<float> first(k * n);
    for (auto& x : first) x = float(rng.uniform(-1, 1));
    const std::int64_t bytes = k * n * std::int64_t(sizeof(float)), cold = std::int64_t{256} << 20;
    copies.assign(m <= 16 ? std::size_t((cold + bytes - 1) / bytes) : 1, first);
    rotate();
  }
  void rotate() {
    b = copies[next].data();
    next = (next + 1) % copies.size();
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
    op.rotate();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m) * double(n) * double(k) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter(double(k) * double(n) * sizeof(float) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_prefixtune(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    gemm(Cpu{}, Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b, n, 0.0f, op.c.data(), n);
  });
}

void BM_gemm_prefixtune_nt(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    gemm(Cpu{}, Trans::N, Trans::T, m, n, k, 1.0f, op.a.data(), k, op.b, k, 0.0f, op.c.data(), n);
  });
}

// The small-m kernels limited to AVX2 + FMA (what a CPU without AVX-512F runs; B (k, n) only: B (n, k) has no
// AVX-512 kernel).
void BM_gemm_small_avx2(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    if (!detail::gemm_small_m(false, m, n, k, 1.0f, op.a.data(), k, op.b, n, 0.0f, op.c.data(), n,
                              detail::SmallGemmIsa::avx2))
      throw std::runtime_error("BM_gemm_small_avx2: this CPU has no AVX2 + FMA");
  });
}

// What m == 1 used before the small-m kernels: Eigen's GEMV split over the threads in output blocks.
void BM_gemv_eigen_parallel(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    if (!detail::gemv_parallel(Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b, n, 0.0f, op.c.data(), n))
      detail::gemm_eigen(Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b, n, 0.0f, op.c.data(), n);
  });
}

void BM_gemm_eigen(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    detail::gemm_eigen(Trans::N, Trans::N, m, n, k, 1.0f, op.a.data(), k, op.b, n, 0.0f, op.c.data(), n);
  });
}

#if defined(PREFIXTUNE_WITH_BLAS)
void BM_gemm_openblas(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, op.a.data(), int(k), op.b,
                int(n), 0.0f, op.c.data(), int(n));
  });
}
void BM_gemm_openblas_nt(benchmark::State& state) {
  run(state, [](std::int64_t m, std::int64_t n, std::int64_t k, Operands& op) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, op.a.data(), int(k), op.b,
                int(k), 0.0f, op.c.data(), int(n));
  });
}
#endif

// (M, K, N) for every M in `rows`, with (K, N) of GPT-2 small's QKV, MLP-up, MLP-down and LM-head products.
void gpt2_shapes_for(benchmark::internal::Benchmark* b, std::initializer_list<std::int64_t> rows) {
  for (std::int64_t m : rows)
    for (auto kn : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {768, 3072}, {3072, 768}, {768, 50257}})
      b->Args({m, kn.first, kn.second});
  b->ArgNames({"M", "K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// B*T = 512 rows (training), then decoding batches of 16 down to 1 rows.
void gpt2_shapes(benchmark::internal::Benchmark* b) { gpt2_shapes_for(b, {512, 16, 8, 4, 2, 1}); }

// Decoding batches only.
void small_shapes(benchmark::internal::Benchmark* b) { gpt2_shapes_for(b, {16, 8, 4, 2, 1}); }

// Batch-1 decoding rows only.
void decode_shapes(benchmark::internal::Benchmark* b) { gpt2_shapes_for(b, {1}); }

}  // namespace

BENCHMARK(BM_gemm_prefixtune)->Apply(gpt2_shapes);
BENCHMARK(BM_gemm_prefixtune_nt)->Apply(gpt2_shapes);
BENCHMARK(BM_gemm_small_avx2)->Apply(small_shapes);
BENCHMARK(BM_gemm_eigen)->Apply(gpt2_shapes);
BENCHMARK(BM_gemv_eigen_parallel)->Apply(decode_shapes);
#if defined(PREFIXTUNE_WITH_BLAS)
BENCHMARK(BM_gemm_openblas)->Apply(gpt2_shapes);
BENCHMARK(BM_gemm_openblas_nt)->Apply(gpt2_shapes);
#endif
