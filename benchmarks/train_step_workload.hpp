// SPDX-License-Identifier: MIT
// W1, templated over the device (bench_train_step on the CPU, bench_cuda on the GPU): one prefix-tuning step on a
// GPT-2 small config (random frozen weights): prefix MLP (P=10, mid=512) -> per-layer K/V -> forward over
// B=4 x T=128 -> fused chunked LM-head loss on every position -> backward to the prefix -> AdamW on the encoder
// (lr 5e-5, torch's defaults otherwise, as torch_train_step.py). Reports tokens/s and the process's memory:
// its resident size before the model is built (rss_idle_MB), its peak (peak_rss_MB) and the difference
// (peak_rss_above_idle_MB, the workload's own memory; torch_train_step.py reports the same for PyTorch).
#pragma once

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix.hpp"
#include "prefixtune/train/adamw.hpp"

namespace prefixtune::bench {

/// A field of /proc/self/status in MB ("VmRSS": resident now, "VmHWM": peak resident); the peak falls back on
/// getrusage where /proc is missing, the current size on 0.
inline double proc_status_mb(const char* field) {
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    const std::size_t n = std::strlen(field);
    double kb = -1;
    while (kb < 0 && std::fgets(line, sizeof line, f))
      if (std::strncmp(line, field, n) == 0 && line[n] == ':') kb = std::atof(line + n + 1);
    std::fclose(f);
    if (kb >= 0) return kb / 1024.0;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return std::strcmp(field, "VmHWM") == 0 ? double(usage.ru_maxrss) / 1024.0 : 0.0;
}

template <class Device>
void BM_prefix_train_step(benchmark::State& state) {
  const std::int64_t B = state.range(0), T = state.range(1);
  Rng rng(0);
  static const double idle_mb = proc_status_mb("VmRSS");  // before the model below: the process's baseline
  static const Gpt2<float, Device> model = [] {
    Rng r(1);
    return to_device<Device>(random_gpt2<float>(Gpt2Config::gpt2_small(), r));
  }();
  PrefixConfig pc;  // P = 10, mid = 512
  auto encoder = to_device<Device>(PrefixEncoder<float>::create(pc, model.config, rng));
  AdamW<float, Device> opt(encoder.parameters());  // lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay
  auto host_ids = Tensor<std::int32_t>::empty({B, T}), host_targets = Tensor<std::int32_t>::empty({B, T});
  for (std::int64_t i = 0; i < B * T; ++i) {
    host_ids.data()[i] = static_cast<std::int32_t>(rng.below(50257));
    host_targets.data()[i] = static_cast<std::int32_t>(rng.below(50257));
  }
  const auto ids = host_ids.template to<Device>(), targets = host_targets.template to<Device>();
  for (auto _ : state) {
    Tape<float, Device> tape;
    auto kv = prefix_kv_from_table(tape, encoder.forward(tape), model.config.kv_shape());
    auto hidden = gpt2_hidden(tape, model, ids, Tensor<std::uint8_t, Device>(), kv, pc.offset());
    auto loss = gpt2_loss(tape, model, hidden, targets, Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
    opt.step();
    opt.zero_grad();
    benchmark::DoNotOptimize(loss.value().data());
    Device::synchronize();  // the GPU's queued work belongs to this step
  }
  const double peak_mb = proc_status_mb("VmHWM");
  state.SetLabel("optimizer=AdamW");  // compare_train_step.sh checks that both sides name the same optimizer
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["rss_idle_MB"] = idle_mb;
  state.counters["peak_rss_MB"] = peak_mb;
  state.counters["peak_rss_above_idle_MB"] = peak_mb - idle_mb;
}

}  // namespace prefixtune::bench
