// SPDX-License-Identifier: MIT
// Dense ops at GPT-2 small shapes (B*T = 4*128 rows, C = 768, MLP 3072, V = 50257): linear forward, backward with
// a frozen weight (dx only) and a trainable one (dx, dw, db); layer_norm and embedding forward / backward.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/embedding.hpp"
#include "prefixtune/ops/layer_norm.hpp"
#include "prefixtune/ops/linear.hpp"

using namespace prefixtune;

namespace {

constexpr std::int64_t kB = 4, kT = 128, kC = 768, kV = 50257;

Tensor<float> random_tensor(const Shape& s, std::uint64_t seed) {
  Rng rng(seed);
  auto t = Tensor<float>::empty(s);
  fill_uniform(t, rng, -1.0, 1.0);
  return t;
}

/// GFLOP/s of `flops` per iteration, on wall time.
void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: (Cin, Cout) of the QKV, MLP-up and MLP-down projections.
void linear_shapes(benchmark::internal::Benchmark* b) {
  b->Args({kC, 3 * kC})->Args({kC, 4 * kC})->Args({4 * kC, kC})->Unit(benchmark::kMillisecond)->UseRealTime();
}

struct LinearData {
  Tensor<float> x, w, b, out, dx, dw, db;
  LinearData(std::int64_t cin, std::int64_t cout)
      : x(random_tensor({kB, kT, cin}, 1)),
        w(random_tensor({cin, cout}, 2)),
        b(random_tensor({cout}, 3)),
        out(random_tensor({kB, kT, cout}, 4)),
        dx(Tensor<float>::zeros({kB, kT, cin})),
        dw(Tensor<float>::zeros({cin, cout})),
        db(Tensor<float>::zeros({cout})) {}
};

void BM_linear_forward(benchmark::State& state) {
  LinearData d(state.range(0), state.range(1));
  for (auto _ : state) {
    linear_forward(d.x, d.w, d.b, d.out);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * kB * kT * double(state.range(0)) * double(state.range(1)));
}
BENCHMARK(BM_linear_forward)->Apply(linear_shapes);

// Frozen weight (prefix-tuning): only the input gradient.
void BM_linear_backward_frozen(benchmark::State& state) {
  LinearData d(state.range(0), state.range(1));
  Tensor<float> none_w, none_b;
  for (auto _ : state) {
    linear_backward(d.out, d.x, d.w, d.dx, none_w, none_b);
    benchmark::DoNotOptimize(d.dx.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * kB * kT * double(state.range(0)) * double(state.range(1)));
}
BENCHMARK(BM_linear_backward_frozen)->Apply(linear_shapes);

// Trainable weight (full fine-tuning baseline): dx, dw and db.
void BM_linear_backward_trainable(benchmark::State& state) {
  LinearData d(state.range(0), state.range(1));
  for (auto _ : state) {
    linear_backward(d.out, d.x, d.w, d.dx, d.dw, d.db);
    benchmark::DoNotOptimize(d.dw.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 4.0 * kB * kT * double(state.range(0)) * double(state.range(1)));
}
BENCHMARK(BM_linear_backward_trainable)->Apply(linear_shapes);

struct LayerNormData {
  Tensor<float> x = random_tensor({kB, kT, kC}, 5), gamma = random_tensor({kC}, 6), beta = random_tensor({kC}, 7);
  Tensor<float> out = Tensor<float>::zeros({kB, kT, kC}), mean = Tensor<float>::zeros({kB * kT});
  Tensor<float> rstd = Tensor<float>::zeros({kB * kT}), dout = random_tensor({kB, kT, kC}, 8);
  Tensor<float> dx = Tensor<float>::zeros({kB, kT, kC}), dgamma = Tensor<float>::zeros({kC});
  Tensor<float> dbeta = Tensor<float>::zeros({kC});
  LayerNormData() { layer_norm_forward(x, gamma, beta, 1e-5, out, mean, rstd); }
};

void BM_layer_norm_forward(benchmark::State& state) {
  LayerNormData d;
  for (auto _ : state) {
    layer_norm_forward(d.x, d.gamma, d.beta, 1e-5, d.out, d.mean, d.rstd);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_layer_norm_forward)->Unit(benchmark::kMillisecond)->UseRealTime();

// dx, dgamma and dbeta (trainable gamma/beta).
void BM_layer_norm_backward(benchmark::State& state) {
  LayerNormData d;
  for (auto _ : state) {
    layer_norm_backward(d.dout, d.x, d.gamma, d.mean, d.rstd, d.dx, d.dgamma, d.dbeta);
    benchmark::DoNotOptimize(d.dx.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_layer_norm_backward)->Unit(benchmark::kMillisecond)->UseRealTime();

// Frozen gamma/beta (prefix-tuning): dx only.
void BM_layer_norm_backward_frozen(benchmark::State& state) {
  LayerNormData d;
  Tensor<float> none_g, none_b;
  for (auto _ : state) {
    layer_norm_backward(d.dout, d.x, d.gamma, d.mean, d.rstd, d.dx, none_g, none_b);
    benchmark::DoNotOptimize(d.dx.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_layer_norm_backward_frozen)->Unit(benchmark::kMillisecond)->UseRealTime();

struct EmbeddingData {
  Tensor<std::int32_t> ids;
  Tensor<float> table = random_tensor({kV, kC}, 9), out = Tensor<float>::zeros({kB, kT, kC});
  Tensor<float> dout = random_tensor({kB, kT, kC}, 10), dtable = Tensor<float>::zeros({kV, kC});
  EmbeddingData() {
    Rng rng(11);
    std::vector<std::int32_t> v(kB * kT);
    for (auto& id : v) id = static_cast<std::int32_t>(rng.below(kV));
    ids = Tensor<std::int32_t>::from_vector({kB, kT}, v);
  }
};

void BM_embedding_forward(benchmark::State& state) {
  EmbeddingData d;
  for (auto _ : state) {
    embedding_forward(d.ids, d.table, d.out);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_embedding_forward)->Unit(benchmark::kMillisecond)->UseRealTime();

// Scatter-add into a (V, C) gradient that the caller keeps (zeroing it is not part of the op).
void BM_embedding_backward(benchmark::State& state) {
  EmbeddingData d;
  for (auto _ : state) {
    embedding_backward(d.dout, d.ids, d.dtable);
    benchmark::DoNotOptimize(d.dtable.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_embedding_backward)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
