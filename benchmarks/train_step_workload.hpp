// SPDX-License-Identifier: MIT
// W1, templated over the device (bench_train_step on the CPU, bench_cuda on the GPU): one prefix-tuning step on a
// GPT-2 small config (random frozen weights): prefix MLP (P=10, mid=512) -> per-layer K/V -> forward over
// B=4 x T=128 -> fused chunked LM-head loss on every position -> backward to the prefix -> AdamW on the encoder
// (lr 5e-5, torch's defaults otherwise, as torch_train_step.py). time_prefix_train_step runs the same step on any
// decoder-only model (bench_llama: Qwen2.5-0.5B). Reports tokens/s and the process's memory: its resident size
// before the model is built (rss_idle_MB), its peak (peak_rss_MB) and the difference (peak_rss_above_idle_MB, the
// workload's own memory; torch_train_step.py reports the same for PyTorch).
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

/// The process's resident size in MB at the first call: call it before building a model (the idle baseline).
inline double rss_idle_mb() {
  static const double mb = proc_status_mb("VmRSS");
  return mb;
}

/// Restarts the peak resident size VmHWM (not getrusage's ru_maxrss) from the current size, where Linux allows it:
/// called after a model is built, peak_rss_MB leaves out the construction's temporaries (random weights are drawn
/// into host buffers and copied).
inline void reset_peak_rss() {
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

/// Counters rss_idle_MB, peak_rss_MB (the process's peak resident size, VmHWM), peak_rss_above_idle_MB (the
/// difference: the workload's own memory) and ru_maxrss_MB (getrusage's peak, never reset) of a benchmark whose
/// model was built after rss_idle_mb() was called.
inline void set_memory_counters(benchmark::State& state) {
  const double idle_mb = rss_idle_mb(), peak_mb = proc_status_mb("VmHWM");
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["rss_idle_MB"] = idle_mb;
  state.counters["peak_rss_MB"] = peak_mb;
  state.counters["peak_rss_above_idle_MB"] = peak_mb - idle_mb;
  state.counters["ru_maxrss_MB"] = double(usage.ru_maxrss) / 1024.0;
}

/// W1's step on any decoder-only model with a hidden_states overload (Gpt2, Llama): a PrefixEncoder (P = 10,
/// mid = 512) sized from the model's KvShape, B x T token ids and targets uniform over the vocabulary, one step per
/// iteration (state.range(0) = B, state.range(1) = T) after `warmup_steps` untimed ones.
template <class Model>
void time_prefix_train_step(benchmark::State& state, const Model& model, int warmup_steps = 0) {
  using T = typename Model::value_type;
  using Device = typename Model::device_type;
  const std::int64_t B = state.range(0), TT = state.range(1);
  const auto V = static_cast<std::uint64_t>(model.config.vocab_size);
  Rng rng(0);
  PrefixConfig pc;  // P = 10, mid = 512
  auto encoder = to_device<Device>(PrefixEncoder<T>::create(pc, model.config, rng));
  AdamW<T, Device> opt(encoder.parameters());  // lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay
  auto host_ids = Tensor<std::int32_t>::empty({B, TT}), host_targets = Tensor<std::int32_t>::empty({B, TT});
  for (std::int64_t i = 0; i < B * TT; ++i) {
    host_ids.data()[i] = static_cast<std::int32_t>(rng.below(V));
    host_targets.data()[i] = static_cast<std::int32_t>(rng.below(V));
  }
  const auto ids = host_ids.template to<Device>(), targets = host_targets.template to<Device>();
  auto step = [&] {
    Tape<T, Device> tape;
    auto kv = encoder.prefix_kv(tape, model);
    auto hidden = hidden_states(tape, model, ids, Tensor<std::uint8_t, Device>(), kv, pc.offset());
    auto loss = cross_entropy(tape, hidden, model.head(), targets, Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
    opt.step();
    opt.zero_grad();
    benchmark::DoNotOptimize(loss.value().data());
    Device::synchronize();  // the GPU's queued work belongs to this step
  };
  for (int i = 0; i < warmup_steps; ++i) step();
  for (auto _ : state) step();
  state.SetLabel("optimizer=AdamW");  // the compare scripts check that both sides name the same optimizer
  state.counters["tokens/s"] = benchmark::Counter(double(B * TT), benchmark::Counter::kIsIterationInvariantRate);
  set_memory_counters(state);
}

template <class Device>
void BM_prefix_train_step(benchmark::State& state) {
  rss_idle_mb();  // before the model below: the process's baseline
  static const Gpt2<float, Device> model = [] {
    Rng r(1);
    return to_device<Device>(random_gpt2<float>(Gpt2Config::gpt2_small(), r));
  }();
  time_prefix_train_step(state, model);
}

}  // namespace prefixtune::bench
