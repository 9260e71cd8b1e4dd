// SPDX-License-Identifier: MIT
// W1: one prefix-tuning step on a GPT-2 small config (random frozen weights): prefix MLP (P=10, mid=512) ->
// per-layer K/V -> forward over B=4 x T=128 -> fused chunked LM-head loss on every position -> backward to the
// prefix -> SGD on the encoder. Reports tokens/s and the process's peak RSS. torch_train_step.py runs the same
// workload in PyTorch; scripts/compare_train_step.sh prints both and the ratio.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix.hpp"

using namespace prefixtune;

namespace {

void BM_prefix_train_step(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1);
  Rng rng(0);
  static const Gpt2<float> model = [] {
    Rng r(1);
    return random_gpt2<float>(Gpt2Config::gpt2_small(), r);
  }();
  PrefixConfig pc;  // P = 10, mid = 512
  auto encoder = PrefixEncoder<float>::create(pc, model.config, rng);
  auto ids = Tensor<std::int32_t>::empty({B, T}), targets = Tensor<std::int32_t>::empty({B, T});
  for (std::int64_t i = 0; i < B * T; ++i) {
    ids.data()[i] = static_cast<std::int32_t>(rng.below(50257));
    targets.data()[i] = static_cast<std::int32_t>(rng.below(50257));
  }
  for (auto _ : state) {
    Tape<float> tape;
    auto kv = prefix_kv_from_table(tape, encoder.forward(tape), model.config.n_layer, model.config.n_head);
    auto hidden = gpt2_hidden(tape, model, ids, Tensor<std::uint8_t>(), kv, pc.offset());
    auto loss = gpt2_loss(tape, model, hidden, targets, Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
    for (const auto& p : encoder.parameters()) {
      Tensor<float> value = p.value();
      accumulate(value, p.grad(), -5e-5f);
      p.zero_grad();
    }
    benchmark::DoNotOptimize(loss.value().data());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MB"] = double(usage.ru_maxrss) / 1024.0;
}

}  // namespace

BENCHMARK(BM_prefix_train_step)->Args({4, 128})->ArgNames({"B", "T"})->Unit(benchmark::kMillisecond)->UseRealTime();
