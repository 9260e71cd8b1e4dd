// SPDX-License-Identifier: MIT
// Attention forward and backward at GPT-2 small shapes (B=4, T=128, C=768, NH=12, HS=64) with a shared prefix of
// P=10 slots (Bp=1) and, as the same-run baseline, without one (P=0); and attention over a KV cache at Llama-like
// shapes (NH=32 query heads of HS=64) with grouped K/V heads, KVH=32 (plain multi-head) the same-run baseline.
#include <benchmark/benchmark.h>

#include <vector>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/attention.hpp"
#include "prefixtune/ops/cached_attention.hpp"

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

// Arg 0: KVH (K/V heads for NH=32 query heads); arg 1: rows; arg 2: new tokens per row (1: decoding, more: a
// prompt), each row after 512 cached tokens and with a prefix of 10 slots.
void BM_cached_attention(benchmark::State& state) {
  const std::int64_t KVH = state.range(0), R = state.range(1), n = state.range(2), P = 10, past = 512;
  const detail::CachedAttentionDims d{32, KVH, 64, past + n};
  Rng rng(3);
  auto qkv = Tensor<float>::empty({R * n, d.qkv_width()}), out = Tensor<float>::empty({R * n, d.C()});
  auto ck = Tensor<float>::empty({R, KVH, d.capacity, d.HS}), cv = Tensor<float>::empty({R, KVH, d.capacity, d.HS});
  auto pk = Tensor<float>::empty({KVH, P, d.HS}), pv = Tensor<float>::empty({KVH, P, d.HS});
  for (auto* t : {&qkv, &ck, &cv, &pk, &pv}) fill_normal(*t, rng, 0.0, 1.0);
  std::vector<detail::CachedAttentionRow<float>> rows(static_cast<std::size_t>(R));
  for (std::int64_t r = 0; r < R; ++r) {
    auto& w = rows[static_cast<std::size_t>(r)];
    w.slot = r, w.past = past, w.count = n, w.first = r * n, w.prefix_len = P, w.prefix_k = pk.data();
    w.prefix_v = pv.data();
  }
  for (auto _ : state) {
    cached_attention_forward(d, rows, qkv, ck, cv, out);
    benchmark::DoNotOptimize(out.data());
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
BENCHMARK(BM_cached_attention)
    ->ArgNames({"KVH", "rows", "n"})
    ->Args({32, 1, 1})
    ->Args({8, 1, 1})
    ->Args({1, 1, 1})
    ->Args({32, 8, 1})
    ->Args({8, 8, 1})
    ->Args({32, 1, 64})
    ->Args({8, 1, 64})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
