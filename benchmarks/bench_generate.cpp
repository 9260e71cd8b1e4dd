// SPDX-License-Identifier: MIT
// Generation throughput on a GPT-2 small config (random weights): greedy decoding with the KV cache, prompt 32
// tokens, exactly 64 new tokens per row (the end token is banned until then). Counter tokens/s = new tokens per
// second. torch_generate.py runs the batch-1 workload in PyTorch; scripts/compare_generate.sh prints the ratios.
//
// BM_generate_batch1/prefix:{0,1}: one request, no prefix vs a merged P=10 prefix from a PrefixBank.
// BM_generate_many_prefixes/batched:{0,1}: 8 requests, each with its own P=10 prefix and prompt, served one after
// another (8 generate calls of batch 1) vs in one generate call.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "prefixtune/generate/generate.hpp"
#include "prefixtune/models/gpt2_io.hpp"

using namespace prefixtune;

namespace {

constexpr std::int64_t kPrompt = 32, kNewTokens = 64, kPrefixLen = 10, kRequests = 8;
constexpr std::uint64_t kEot = 50256;

const Gpt2<float>& gpt2_small() {
  static const Gpt2<float> model = [] {
    Rng r(1);
    return random_gpt2<float>(Gpt2Config::gpt2_small(), r);
  }();
  return model;
}

/// A bank of n random merged prefixes (P = 10), named p0, p1, ...
PrefixBank<float> random_bank(const Gpt2Config& c, std::int64_t n, Rng& rng) {
  PrefixBank<float> bank(c);
  for (std::int64_t i = 0; i < n; ++i) {
    auto table = Tensor<float>::empty({kPrefixLen, 2 * c.n_layer * c.n_embd});
    for (std::int64_t j = 0; j < table.numel(); ++j) table.data()[j] = static_cast<float>(rng.normal(0.0, 0.5));
    bank.add(table, "p" + std::to_string(i));
  }
  return bank;
}

std::vector<std::int32_t> random_prompt(Rng& rng) {
  std::vector<std::int32_t> ids(kPrompt);
  for (auto& t : ids) t = static_cast<std::int32_t>(rng.below(kEot));
  return ids;
}

/// Greedy, exactly kNewTokens per row: the end token is banned until the length limit.
GenerateConfig fixed_length_greedy() {
  GenerateConfig cfg;
  cfg.max_new_tokens = kNewTokens;
  cfg.min_new_tokens = kNewTokens;
  return cfg;
}

/// New tokens in `out`; reports an error on the benchmark unless every row generated exactly kNewTokens.
std::int64_t count_new_tokens(benchmark::State& state, const std::vector<Generation>& out) {
  std::int64_t n = 0;
  for (const auto& g : out) {
    if (static_cast<std::int64_t>(g.ids.size()) != kNewTokens) state.SkipWithError("a row did not generate 64 tokens");
    n += static_cast<std::int64_t>(g.ids.size());
  }
  return n;
}

void BM_generate_batch1(benchmark::State& state) {
  const Gpt2<float>& model = gpt2_small();
  Rng rng(3);
  const PrefixBank<float> bank = random_bank(model.config, 1, rng);
  const std::vector<GenerationRequest> requests{{random_prompt(rng), state.range(0) != 0 ? 0 : kNoPrefix}};
  const GenerateConfig cfg = fixed_length_greedy();
  count_new_tokens(state, generate(model, bank, requests, cfg));  // warm-up: caches, allocator, thread pool
  for (auto _ : state) {
    auto out = generate(model, bank, requests, cfg);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(kNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_generate_many_prefixes(benchmark::State& state) {
  const Gpt2<float>& model = gpt2_small();
  const bool batched = state.range(0) != 0;
  Rng rng(5);
  const PrefixBank<float> bank = random_bank(model.config, kRequests, rng);
  std::vector<GenerationRequest> requests;
  for (std::int64_t i = 0; i < kRequests; ++i) requests.push_back({random_prompt(rng), i});
  const GenerateConfig cfg = fixed_length_greedy();
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

}  // namespace

// Each batch-1 iteration is ~64 decode steps of GPT-2 small (seconds on 2 cores): a few iterations suffice.
BENCHMARK(BM_generate_batch1)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->MinTime(3.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_generate_many_prefixes)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("batched")
    ->MinTime(3.0)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
