// SPDX-License-Identifier: MIT
// W1, templated over the device (bench_train_step on the CPU, bench_cuda on the GPU): one prefix-tuning step on a
// GPT-2 small config (random frozen weights): prefix MLP (P=10, mid=512) -> per-layer K/V -> forward over
// B=4 x T=128 -> fused chunked LM-head loss on every position -> backward to the prefix -> SGD on the encoder.
// Reports tokens/s and the process's peak RSS.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune::bench {

template <class Device>
void BM_prefix_train_step(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1);
  Rng rng(0);
  static const Gpt2<float, Device> model = [] {
    Rng r(1);
    return to_device<Device>(random_gpt2<float>(Gpt2Config::gpt2_small(), r));
  }();
  PrefixConfig pc;  // P = 10, mid = 512
  auto encoder = to_device<Device>(PrefixEncoder<float>::create(pc, model.config, rng));
  auto host_ids = Tensor<std::int32_t>::empty({B, T}), host_targets = Tensor<std::int32_t>::empty({B, T});
  for (std::int64_t i = 0; i < B * T; ++i) {
    host_ids.data()[i] = static_cast<std::int32_t>(rng.below(50257));
    host_targets.data()[i] = static_cast<std::int32_t>(rng.below(50257));
  }
  const auto ids = host_ids.template to<Device>(), targets = host_targets.template to<Device>();
  for (auto _ : state) {
    Tape<float, Device> tape;
    auto kv = prefix_kv_from_table(tape, encoder.forward(tape), model.config.n_layer, model.config.n_head);
    auto hidden = gpt2_hidden(tape, model, ids, Tensor<std::uint8_t, Device>(), kv, pc.offset());
    auto loss = gpt2_loss(tape, model, hidden, targets, Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
    for (const auto& p : encoder.parameters()) {
      Tensor<float, Device> value = p.value();
      accumulate(value, p.grad(), -5e-5f);
      p.zero_grad();
    }
    benchmark::DoNotOptimize(loss.value().data());
    Device::synchronize();  // the GPU's queued work belongs to this step
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MB"] = double(usage.ru_maxrss) / 1024.0;
}

}  // namespace prefixtune::bench
