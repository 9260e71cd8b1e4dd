// SPDX-License-Identifier: MIT
// Point-wise ops at GPT-2 small shapes: add / scale / tanh / dropout on (B, T, C) = (4, 128, 768), gelu on the
// MLP's (4, 128, 3072) and (4, 128, 768), softmax over attention rows (B*NH*T, P+T) = (6144, 138). fp32.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/softmax.hpp"

using namespace prefixtune;

namespace {

constexpr std::int64_t kB = 4, kT = 128, kC = 768, kNH = 12, kP = 10;

Tensor<float> random_tensor(const Shape& s, std::uint64_t seed) {
  auto t = Tensor<float>::empty(s);
  Rng rng(seed);
  fill_uniform(t, rng, -3.0, 3.0);
  return t;
}

// Runs `op` in the timing loop and reports the bytes it streams (`tensors` tensors of `numel` floats each).
template <class Op>
void run(benchmark::State& state, std::int64_t numel, int tensors, Op op) {
  for (auto _ : state) {
    op();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * numel * tensors * std::int64_t(sizeof(float)));
}

// (B, T, width) with width = state.range(0).
Shape btc(const benchmark::State& state) { return Shape{kB, kT, state.range(0)}; }

// Baselines in the same run: a memcpy of the same tensor (the bandwidth bound every map op is measured against)
// and GELU in its textbook tanh form with std::tanh, single-threaded loop (what gelu_forward replaces).
void BM_copy_baseline(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  run(state, x.numel(), 2, [&] { out.copy_from(x); });
}
void BM_gelu_tanh_form_baseline(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  run(state, x.numel(), 2, [&] {
    const float* xs = x.data();
    float* ys = out.data();
    for (std::int64_t i = 0; i < x.numel(); ++i)
      ys[i] = 0.5f * xs[i] * (1.0f + std::tanh(0.7978845608f * (xs[i] + 0.044715f * xs[i] * xs[i] * xs[i])));
  });
}

void BM_add_forward(benchmark::State& state) {
  auto a = random_tensor(btc(state), 1), b = random_tensor(btc(state), 2), out = Tensor<float>::zeros(btc(state));
  run(state, a.numel(), 3, [&] { add_forward(a, b, out); });
}
void BM_add_backward(benchmark::State& state) {
  auto g = random_tensor(btc(state), 1), da = Tensor<float>::zeros(btc(state)), db = Tensor<float>::zeros(btc(state));
  run(state, g.numel(), 5, [&] { add_backward(g, da, db); });
}

void BM_scale_forward(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  run(state, x.numel(), 2, [&] { scale_forward(x, 0.125f, out); });
}
void BM_scale_backward(benchmark::State& state) {
  auto g = random_tensor(btc(state), 1), dx = Tensor<float>::zeros(btc(state));
  run(state, g.numel(), 3, [&] { scale_backward(g, 0.125f, dx); });
}

void BM_gelu_forward(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  run(state, x.numel(), 2, [&] { gelu_forward(x, out); });
}
void BM_gelu_backward(benchmark::State& state) {
  auto g = random_tensor(btc(state), 1), x = random_tensor(btc(state), 2), dx = Tensor<float>::zeros(btc(state));
  run(state, g.numel(), 4, [&] { gelu_backward(g, x, dx); });
}

void BM_tanh_forward(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  run(state, x.numel(), 2, [&] { tanh_forward(x, out); });
}
void BM_tanh_backward(benchmark::State& state) {
  auto g = random_tensor(btc(state), 1), y = random_tensor(btc(state), 2), dx = Tensor<float>::zeros(btc(state));
  run(state, g.numel(), 4, [&] { tanh_backward(g, y, dx); });
}

void BM_dropout_forward(benchmark::State& state) {
  auto x = random_tensor(btc(state), 1), out = Tensor<float>::zeros(btc(state));
  std::uint64_t offset = 0;
  run(state, x.numel(), 2, [&] { dropout_forward(x, 0.1f, 42, offset++, out); });
}
void BM_dropout_backward(benchmark::State& state) {
  auto g = random_tensor(btc(state), 1), dx = Tensor<float>::zeros(btc(state));
  run(state, g.numel(), 3, [&] { dropout_backward(g, 0.1f, 42, 0, dx); });
}

// Attention probabilities: every (b, h, t) row spans the P prefix slots and the T tokens.
Shape attention_rows() { return Shape{kB * kNH * kT, kP + kT}; }

void BM_softmax_forward(benchmark::State& state) {
  auto x = random_tensor(attention_rows(), 1), y = Tensor<float>::zeros(attention_rows());
  run(state, x.numel(), 2, [&] { softmax_forward(x, y); });
}
void BM_softmax_backward(benchmark::State& state) {
  auto x = random_tensor(attention_rows(), 1), y = Tensor<float>::zeros(attention_rows());
  auto g = random_tensor(attention_rows(), 2), dx = Tensor<float>::zeros(attention_rows());
  softmax_forward(x, y);
  run(state, x.numel(), 4, [&] { softmax_backward(g, y, dx); });
}

}  // namespace

#define PREFIXTUNE_BENCH_BTC(fn) BENCHMARK(fn)->Arg(kC)->ArgName("C")->Unit(benchmark::kMillisecond)->UseRealTime()
PREFIXTUNE_BENCH_BTC(BM_copy_baseline);
PREFIXTUNE_BENCH_BTC(BM_add_forward);
PREFIXTUNE_BENCH_BTC(BM_add_backward);
PREFIXTUNE_BENCH_BTC(BM_scale_forward);
PREFIXTUNE_BENCH_BTC(BM_scale_backward);
PREFIXTUNE_BENCH_BTC(BM_gelu_forward)->Arg(4 * kC);
PREFIXTUNE_BENCH_BTC(BM_gelu_backward)->Arg(4 * kC);
PREFIXTUNE_BENCH_BTC(BM_gelu_tanh_form_baseline)->Arg(4 * kC);
PREFIXTUNE_BENCH_BTC(BM_tanh_forward);
PREFIXTUNE_BENCH_BTC(BM_tanh_backward);
PREFIXTUNE_BENCH_BTC(BM_dropout_forward);
PREFIXTUNE_BENCH_BTC(BM_dropout_backward);
BENCHMARK(BM_softmax_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_softmax_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
