// SPDX-License-Identifier: MIT
// The generation workloads of bench_generate (CPU) and bench_cuda (GPU), templated over the device: GPT-2 small
// (random weights), greedy decoding with the KV cache, prompt 32 tokens, exactly 64 new tokens per row (the end
// token is banned until then). Counter tokens/s = new tokens per second. The generate_* functions run each
// workload on any decoder-only model (bench_llama: Qwen2.5-0.5B); prompts are drawn from ids below the vocabulary's
// last, which is the banned end token.
//
// BM_generate_batch1/prefix:{0,1}: one request, no prefix vs a merged P=10 prefix from a PrefixBank.
// BM_generate_many_prefixes/batched:{0,1}: 8 requests, each with its own P=10 prefix and prompt, served one after
// another (8 generate calls of batch 1) vs in one generate call.
// BM_generate_prefix_cost and BM_generate_batching time the two sides of each comparison one after the other within
// every iteration, so both see the same machine (a shared machine's load changes over seconds), in alternating
// order (each side leads in half of the iterations): counters tokens/s of each side and the median over the
// iterations of the ratio of the pair's times (prefix_cost = time with / without the prefix; speedup = time one
// after another / in one batch); *_total is the ratio of the summed times.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "prefixtune/generate/gpt2_generate.hpp"
#include "prefixtune/models/gpt2_io.hpp"

namespace prefixtune::bench {

constexpr std::int64_t kPrompt = 32, kNewTokens = 64, kPrefixLen = 10, kRequests = 8;

/// GPT-2 small with random weights (seed 1), built once per device.
template <class Device>
const Gpt2<float, Device>& gpt2_small() {
  static const Gpt2<float, Device> model = [] {
    Rng r(1);
    return to_device<Device>(random_gpt2<float>(Gpt2Config::gpt2_small(), r));
  }();
  return model;
}

/// A bank of n random merged prefixes (P = 10) for K/V stacks of shape s, named p0, p1, ...
template <class Device>
PrefixBank<float, Device> random_bank(const KvShape& s, std::int64_t n, Rng& rng) {
  PrefixBank<float, Device> bank(s);
  for (std::int64_t i = 0; i < n; ++i) {
    auto table = Tensor<float>::empty({kPrefixLen, s.table_width()});
    for (std::int64_t j = 0; j < table.numel(); ++j) table.data()[j] = static_cast<float>(rng.normal(0.0, 0.5));
    bank.add(table, "p" + std::to_string(i));
  }
  return bank;
}

/// The end token of the workloads: the vocabulary's last id (GPT-2's <|endoftext|>, 50256).
template <class Model>
std::int32_t end_id(const Model& m) {
  return static_cast<std::int32_t>(m.config.vocab_size - 1);
}

/// kPrompt ids uniform in [0, end): anything but the end token.
inline std::vector<std::int32_t> random_prompt(Rng& rng, std::int32_t end) {
  std::vector<std::int32_t> ids(kPrompt);
  for (auto& t : ids) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(end)));
  return ids;
}

/// Greedy, exactly kNewTokens per row: the end token `eos` is banned until the length limit.
inline GenerateConfig fixed_length_greedy(std::int32_t eos) {
  GenerateConfig cfg;
  cfg.eos_id = eos;
  cfg.max_new_tokens = kNewTokens;
  cfg.min_new_tokens = kNewTokens;
  return cfg;
}

/// New tokens in `out`; reports an error on the benchmark unless every row generated exactly kNewTokens.
inline std::int64_t count_new_tokens(benchmark::State& state, const std::vector<Generation>& out) {
  std::int64_t n = 0;
  for (const auto& g : out) {
    if (static_cast<std::int64_t>(g.ids.size()) != kNewTokens) state.SkipWithError("a row did not generate 64 tokens");
    n += static_cast<std::int64_t>(g.ids.size());
  }
  return n;
}

/// The one-user workload: a bank with one random P=10 prefix and one random prompt (seed 3).
template <class Device>
struct OneUser {
  Rng rng{3};
  PrefixBank<float, Device> bank;
  std::vector<std::int32_t> prompt;
  template <class Model>
  explicit OneUser(const Model& m)
      : bank(random_bank<Device>(m.config.kv_shape(), 1, rng)), prompt(random_prompt(rng, end_id(m))) {}
};

/// One request per iteration, without (state.range(0) == 0) or with the bank's P=10 prefix.
template <class Model>
void generate_batch1(benchmark::State& state, const Model& model) {
  const OneUser<typename Model::device_type> user(model);
  const auto& bank = user.bank;
  const std::vector<GenerationRequest> requests{{user.prompt, state.range(0) != 0 ? 0 : kNoPrefix}};
  const GenerateConfig cfg = fixed_length_greedy(end_id(model));
  count_new_tokens(state, generate(model, bank, requests, cfg));  // warm-up: caches, allocator, thread pool
  for (auto _ : state) {
    auto out = generate(model, bank, requests, cfg);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(kNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

template <class Device>
void BM_generate_batch1(benchmark::State& state) {
  generate_batch1(state, gpt2_small<Device>());
}

/// The many-users workload: kRequests random P=10 prefixes in a bank and one request per prefix, each with its
/// own random prompt (seed 5).
template <class Device>
struct ManyUsers {
  Rng rng{5};
  PrefixBank<float, Device> bank;
  std::vector<GenerationRequest> requests;
  template <class Model>
  explicit ManyUsers(const Model& m) : bank(random_bank<Device>(m.config.kv_shape(), kRequests, rng)) {
    for (std::int64_t i = 0; i < kRequests; ++i) requests.push_back({random_prompt(rng, end_id(m)), i});
  }
};

template <class Device>
void BM_generate_many_prefixes(benchmark::State& state) {
  const Gpt2<float, Device>& model = gpt2_small<Device>();
  const bool batched = state.range(0) != 0;
  const ManyUsers<Device> users(model);
  const auto& bank = users.bank;
  const auto& requests = users.requests;
  const GenerateConfig cfg = fixed_length_greedy(end_id(model));
  auto serve = [&] {
    std::int64_t n = 0;
    if (batched) return count_new_tokens(state, generate(model, bank, requests, cfg));
    for (const auto& r : requests) n += count_new_tokens(state, generate(model, bank, {r}, cfg));
    return n;
  };
  serve();  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(serve());
  state.counters["tokens/s"] =
      benchmark::Counter(double(kRequests * kNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

/// Wall times in seconds of each side of a paired benchmark, one per iteration.
struct PairedTimes {
  std::vector<double> first, second;
  std::int64_t first_ran_first = 0;  // iterations in which `first` ran before `second`
  double total(const std::vector<double>& side) const { return std::accumulate(side.begin(), side.end(), 0.0); }
  /// Median over the iterations of first / second: one side stalled by a neighbour's burst moves one pair, not
  /// the result (a ratio of totals moves with it).
  double median_ratio() const {
    std::vector<double> r(first.size());
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = first[i] / second[i];
    std::sort(r.begin(), r.end());
    const std::size_t n = r.size();
    return n == 0 ? 0.0 : n % 2 == 1 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2]);
  }
};

/// Runs `first` and `second` once per iteration and records each one's wall time. The order alternates: `first`
/// runs first in even iterations, `second` in odd ones, so that neither side always runs on the caches, clock and
/// memory the other leaves (or always first after the benchmark's own start). Reports an error on the benchmark
/// if the orders come out unbalanced (counter first_ran_first: the share of iterations `first` led; use an even
/// iteration count for exactly 0.5).
template <class First, class Second>
PairedTimes time_alternately(benchmark::State& state, First&& first, Second&& second) {
  PairedTimes t;
  auto timed = [](auto& side, std::vector<double>& out) {
    const auto t0 = std::chrono::steady_clock::now();
    side();
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  for (auto _ : state) {
    if (t.first.size() % 2 == 0) {
      timed(first, t.first);
      timed(second, t.second);
      ++t.first_ran_first;
    } else {
      timed(second, t.second);
      timed(first, t.first);
    }
  }
  const auto n = static_cast<std::int64_t>(t.first.size());
  state.counters["first_ran_first"] = n == 0 ? 0.0 : double(t.first_ran_first) / double(n);
  if (n >= 2 && std::abs(2 * t.first_ran_first - n) > 1)
    state.SkipWithError("a paired benchmark's order did not alternate");
  return t;
}

/// Both sides of the prefix cost in every iteration: the one-user request with and without its P=10 prefix.
template <class Model>
void generate_prefix_cost(benchmark::State& state, const Model& model) {
  const OneUser<typename Model::device_type> user(model);
  const auto& bank = user.bank;
  const auto& prompt = user.prompt;
  const GenerateConfig cfg = fixed_length_greedy(end_id(model));
  auto bare = [&] { count_new_tokens(state, generate(model, bank, {{prompt, kNoPrefix}}, cfg)); };
  auto prefixed = [&] { count_new_tokens(state, generate(model, bank, {{prompt, 0}}, cfg)); };
  bare(), prefixed();  // warm-up
  const PairedTimes t = time_alternately(state, prefixed, bare);
  const double n = double(state.iterations()) * kNewTokens;
  state.counters["tokens/s"] = n / t.total(t.second);
  state.counters["tokens/s_prefix"] = n / t.total(t.first);
  state.counters["prefix_cost"] = t.median_ratio();
  state.counters["prefix_cost_total"] = t.total(t.first) / t.total(t.second);
}

template <class Device>
void BM_generate_prefix_cost(benchmark::State& state) {
  generate_prefix_cost(state, gpt2_small<Device>());
}

/// Both sides of the batching speedup in every iteration: the kRequests users one after another and in one batch.
template <class Model>
void generate_batching(benchmark::State& state, const Model& model) {
  const ManyUsers<typename Model::device_type> users(model);
  const auto& bank = users.bank;
  const auto& requests = users.requests;
  const GenerateConfig cfg = fixed_length_greedy(end_id(model));
  auto sequential = [&] {
    for (const auto& r : requests) count_new_tokens(state, generate(model, bank, {r}, cfg));
  };
  auto batched = [&] { count_new_tokens(state, generate(model, bank, requests, cfg)); };
  batched();  // warm-up of both sides: the batched call, and one batch-1 call (what the other side repeats)
  count_new_tokens(state, generate(model, bank, {requests[0]}, cfg));
  const PairedTimes t = time_alternately(state, sequential, batched);
  const double n = double(state.iterations()) * kRequests * kNewTokens;
  state.counters["tokens/s_sequential"] = n / t.total(t.first);
  state.counters["tokens/s_batched"] = n / t.total(t.second);
  state.counters["speedup"] = t.median_ratio();
  state.counters["speedup_total"] = t.total(t.first) / t.total(t.second);
}

template <class Device>
void BM_generate_batching(benchmark::State& state) {
  generate_batching(state, gpt2_small<Device>());
}

}  // namespace prefixtune::bench
