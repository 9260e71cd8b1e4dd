// SPDX-License-Identifier: MIT
// Attention forward and backward at GPT-2 small shapes (B=4, T=128, C=768, NH=12, HS=64) with a shared prefix of
// P=10 slots (Bp=1) and, as the same-run baseline, without one (P=0).
#include <benchmark/benchmark.h>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/attention.hpp"

using namespace prefixtune;

namespace {

constexpr std::int64_t kB = 4, kT = 128, kC = 768, kNH = 12, kHS = kC / kNH;

struct AttentionInputs {
  Tensor<float> qkv = Tensor<float>::empty({kB, kT, 3 * kC}), out = Tensor<float>::empty({kB, kT, kC});
  Tensor<float> pk, pv;
  Tensor<std::uint8_t> mask;  // no padding: every token real
  AttentionCache<float, Cpu> cache;
  explicit AttentionInputs(std::int64_t P) {
    Rng rng(1);
    fill_normal(qkv, rng, 0.0, 1.0);
    if (P > 0) {
      pk = Tensor<float>::empty({1, kNH, P, kHS});
      pv = Tensor<float>::empty({1, kNH, P, kHS});
      fill_normal(pk, rng, 0.0, 1.0);
      fill_normal(pv, rng, 0.0, 1.0);
    }
  }
};

// Arg 0: P (prefix slots, shared by the batch).
void BM_attention_forward(benchmark::State& state) {
  AttentionInputs in(state.range(0));
  for (auto _ : state) {
    attention_forward(in.qkv, kNH, in.pk, in.pv, in.mask, in.out, &in.cache);
    benchmark::DoNotOptimize(in.out.data());
    benchmark::ClobberMemory();
  }
}

// Arg 0: P; arg 1: whether dqkv is wanted (0 = only the prefix gradients, as in the first layer of
// prefix-tuning where nothing below the attention is trainable).
void BM_attention_backward(benchmark::State& state) {
  const std::int64_t P = state.range(0);
  AttentionInputs in(P);
  attention_forward(in.qkv, kNH, in.pk, in.pv, in.mask, in.out, &in.cache);
  auto dout = Tensor<float>::empty({kB, kT, kC});
  Rng rng(2);
  fill_normal(dout, rng, 0.0, 1.0);
  Tensor<float> dqkv, dpk, dpv;
  if (state.range(1)) dqkv = Tensor<float>::zeros({kB, kT, 3 * kC});
  if (P > 0) dpk = Tensor<float>::zeros(in.pk.shape()), dpv = Tensor<float>::zeros(in.pv.shape());
  for (auto _ : state) {
    attention_backward(dout, kNH, in.cache, in.pk, in.pv, in.mask, dqkv, dpk, dpv);
    benchmark::ClobberMemory();
  }
}

}  // namespace

BENCHMARK(BM_attention_forward)->ArgName("P")->Arg(10)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_backward)
    ->ArgNames({"P", "dqkv"})
    ->Args({10, 1})
    ->Args({0, 1})
    ->Args({10, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
