// SPDX-License-Identifier: MIT
// Fused LM head + cross-entropy at GPT-2 small shapes (B=4, T=128, C=768, V=50257): forward only, forward +
// dh with a frozen tied E (prefix-tuning), and + dE (full fine-tuning), with labels on all or half the positions;
// the bare logits GEMM over all positions is the same-run baseline.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/cross_entropy.hpp"

using namespace prefixtune;

namespace {

constexpr std::int64_t kB = 4, kT = 128, kC = 768, kV = 50257;

struct Inputs {
  Tensor<float, Cpu> h{Shape{kB, kT, kC}}, E{Shape{kV, kC}};
  Inputs() {
    Rng rng(42);
    fill_normal(h, rng, 0.0, 1.0);
    fill_normal(E, rng, 0.0, 0.02);  // GPT-2's initialization scale
  }
};

const Inputs& inputs() {
  static const Inputs in;  // built once: filling E (38.6M values) costs more than one run
  return in;
}

// Labels on the last `percent`% of each sequence (as for "source || target" data), -100 elsewhere.
Tensor<std::int32_t, Cpu> make_labels(std::int64_t percent) {
  auto labels = Tensor<std::int32_t, Cpu>::full(Shape{kB, kT}, kIgnoreLabel);
  Rng rng(7);
  for (std::int64_t b = 0; b < kB; ++b)
    for (std::int64_t t = kT - kT * percent / 100; t < kT; ++t)
      labels(b, t) = static_cast<std::int32_t>(rng.uniform(0.0, double(kV)));
  return labels;
}

void run(benchmark::State& state, bool want_dh, bool want_dE) {
  const Inputs& in = inputs();
  const auto labels = make_labels(state.range(0));
  std::int64_t n = 0;
  for (auto _ : state) {
    auto r = cross_entropy_forward(in.h, in.E, labels, Reduction::SumPerSequenceMeanBatch, want_dh, want_dE);
    n = r.num_labels;
    benchmark::DoNotOptimize(r.loss);
  }
  const double gemms = 1.0 + (want_dh ? 1.0 : 0.0) + (want_dE ? 1.0 : 0.0);
  state.counters["labelled"] = double(n);
  state.counters["GFLOP/s"] = benchmark::Counter(gemms * 2.0 * double(n) * double(kV) * double(kC) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// Forward only (evaluation): loss, no gradients.
void BM_cross_entropy_forward(benchmark::State& state) { run(state, false, false); }
// Prefix-tuning training step: fused forward + dh, frozen E (no dE work).
void BM_cross_entropy_backward(benchmark::State& state) { run(state, true, false); }
// Full fine-tuning reference: fused forward + dh + dE.
void BM_cross_entropy_backward_with_dE(benchmark::State& state) { run(state, true, true); }

// Same-run baseline, the floor of BM_cross_entropy_forward: only the logits GEMM (B*T*pct/100, C) x E^T, with
// all of those logits materialized at once (what an unfused LM head computes before its softmax).
void BM_cross_entropy_baseline_logits_gemm(benchmark::State& state) {
  const Inputs& in = inputs();
  const std::int64_t m = kB * kT * state.range(0) / 100;
  auto logits = Tensor<float, Cpu>::empty(Shape{m, kV});
  for (auto _ : state) {
    gemm(Cpu{}, Trans::N, Trans::T, m, kV, kC, 1.0f, in.h.data(), kC, in.E.data(), kC, 0.0f, logits.data(), kV);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(kV) * double(kC) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// Two iterations each: one all-position run is several hundred ms (three 40-GFLOP GEMMs with dE).
void settings(benchmark::internal::Benchmark* b) {
  b->ArgName("labelled_pct")->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

// Arg: percentage of positions that carry a label (100 = all, 50 = target half only).
BENCHMARK(BM_cross_entropy_baseline_logits_gemm)->Apply(settings)->Arg(100);
BENCHMARK(BM_cross_entropy_forward)->Apply(settings)->Arg(100)->Arg(50);
BENCHMARK(BM_cross_entropy_backward)->Apply(settings)->Arg(100)->Arg(50);
BENCHMARK(BM_cross_entropy_backward_with_dE)->Apply(settings)->Arg(100);
