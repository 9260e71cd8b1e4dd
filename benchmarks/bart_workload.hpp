// SPDX-License-Identifier: MIT
// The BART workloads of bench_bart (CPU): the facebook/bart-base config (d_model 768, 6 + 6 layers, 12 heads, ffn
// 3072, vocabulary 50265) with random frozen weights (seed 1) and the paper's three prefixes (encoder
// self-attention, decoder self-attention, decoder cross-attention), each an MLP-reparameterized PrefixEncoder with
// the paper's XSUM sizes (P = 100, mid = 800).
//
// BM_bart_train_step/P:{10,100}/step:{0,1}: B = 4 sources of 128 and targets of 32 fixed random ids (no padding),
// through make_seq2seq_batch (decoder inputs = shift_tokens_right(labels)). step:1 = one prefix-tuning step: the
// three prefix MLPs -> per-layer K/V -> encoder + decoder -> fused chunked LM-head loss (per-token mean) ->
// backward to the prefix parameters only -> AdamW (lr 5e-5) -> zero_grad. step:0 = the same forward (taped, grad
// mode on) and loss without backward or update. Counter tokens/s = (source + target) tokens per second (640 per
// step); torch_bart_train_step.py runs the same step in PyTorch.
//
// Generation: greedy, sources of 128 random ids, exactly 32 new tokens per row after the decoder start token (the
// end token is banned until then, as in bench_generate: min_new_tokens = max_new_tokens). Counter tokens/s = new
// tokens per second. Bank entries are Seq2SeqPrefix::create(P = 100, mid = 800).merged() of fresh random MLPs.
// BM_bart_generate_batch1/prefix:{0,1}: one request, no prefix vs the three P = 100 prefixes.
// BM_bart_generate_many_prefixes/batched:{0,1}: 8 requests, each with its own source and its own three prefixes,
// served one after another (8 generate calls of batch 1) vs in one generate call.
// BM_bart_generate_beam: batch 1 with the three prefixes, bart_xsum_config (beam 6, no repeated 3-gram, length
// penalty 1, early stopping) with max_new_tokens (and min_new_tokens) 32.
// BM_bart_encode/prefix:{0,1}: the encoder side of one batch-1 request alone (what generate does before decoding:
// the encoder over 128 tokens, with / without the encoder prefix, and every decoder layer's cross-attention K/V),
// to split generation time into encoding and decoding.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/generate/bart_generate.hpp"
#include "prefixtune/models/bart_io.hpp"
#include "prefixtune/prefix/seq2seq_bank.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"
#include "prefixtune/train/adamw.hpp"
#include "prefixtune/train/seq2seq_trainer.hpp"

namespace prefixtune::bench {

constexpr std::int64_t kBartBatch = 4, kBartSource = 128, kBartTarget = 32;  // training batch
constexpr std::int64_t kBartPrefix = 100, kBartMid = 800;                    // the paper's XSUM prefix
constexpr std::int64_t kBartNewTokens = 32, kBartRequests = 8;               // generation

/// facebook/bart-base's config with random weights (seed 1, N(0, 0.02)), built once.
inline const Bart<float>& bart_base() {
  static const Bart<float> model = [] {
    Rng r(1);
    return random_bart<float>(BartConfig{}, r);
  }();
  return model;
}

inline PrefixConfig bart_prefix_config(std::int64_t P) {
  PrefixConfig pc;
  pc.length = P;
  pc.mid = kBartMid;
  return pc;
}

inline std::vector<std::int32_t> random_ids(Rng& rng, std::int64_t n, std::int64_t vocab) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& t : ids) t = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  return ids;
}

/// B fixed random (source 128, target 32) pairs as one teacher-forcing batch (no padding).
inline Seq2SeqBatch random_bart_batch(const BartConfig& c, Rng& rng) {
  std::vector<Seq2SeqExample> examples;
  std::vector<std::size_t> order;
  for (std::int64_t b = 0; b < kBartBatch; ++b) {
    examples.push_back({random_ids(rng, kBartSource, c.vocab_size), random_ids(rng, kBartTarget, c.vocab_size),
                        static_cast<std::size_t>(b)});
    order.push_back(static_cast<std::size_t>(b));
  }
  return make_seq2seq_batch(examples, order, 0, order.size(), c);
}

inline void BM_bart_train_step(benchmark::State& state) {
  const std::int64_t P = state.range(0);
  const bool full_step = state.range(1) != 0;
  const Bart<float>& model = bart_base();
  Rng rng(0);
  const auto prefix = Seq2SeqPrefix<float>::create(bart_prefix_config(P), model.config, rng);
  AdamW<float> opt(prefix.parameters());
  const Seq2SeqBatch batch = random_bart_batch(model.config, rng);
  auto run = [&] {
    Tape<float, Cpu> tape;
    auto loss = bart_batch_loss(tape, model, prefix.prefix_kv(tape), batch);
    if (full_step) {
      tape.backward(loss);
      opt.step();
      opt.zero_grad();
    }
    benchmark::DoNotOptimize(loss.value().data());
  };
  run();  // warm-up: allocator, thread pool, AdamW moments
  for (auto _ : state) run();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["tokens/s"] = benchmark::Counter(double(kBartBatch * (kBartSource + kBartTarget)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MB"] = double(usage.ru_maxrss) / 1024.0;
}

/// A bank of n users' merged three-part prefixes (P = 100, mid = 800), named u0, u1, ...: each from its own
/// freshly initialized Seq2SeqPrefix (only the merged tables are kept).
inline Seq2SeqBank<float> random_bart_bank(const BartConfig& c, std::int64_t n, Rng& rng) {
  Seq2SeqBank<float> bank(c);
  for (std::int64_t i = 0; i < n; ++i)
    bank.add(Seq2SeqPrefix<float>::create(bart_prefix_config(kBartPrefix), c, rng).merged(), "u" + std::to_string(i));
  return bank;
}

/// Greedy, exactly kBartNewTokens per row: the end token is banned until the length limit.
inline GenerateConfig bart_fixed_length_greedy(const BartConfig& c) {
  GenerateConfig cfg = bart_generate_config(c, kBartNewTokens);
  cfg.min_new_tokens = kBartNewTokens;
  return cfg;
}

/// New tokens in `out`; reports an error on the benchmark unless every row generated exactly kBartNewTokens.
inline std::int64_t count_bart_tokens(benchmark::State& state, const std::vector<Generation>& out) {
  std::int64_t n = 0;
  for (const auto& g : out) {
    if (static_cast<std::int64_t>(g.ids.size()) != kBartNewTokens)
      state.SkipWithError("a row did not generate 32 tokens");
    n += static_cast<std::int64_t>(g.ids.size());
  }
  return n;
}

/// One warm-up call, then generate() per iteration; tokens/s counts kBartNewTokens per iteration (one request).
inline void time_bart_generate(benchmark::State& state, const Bart<float>& model, const Seq2SeqBank<float>& bank,
                               const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  count_bart_tokens(state, generate(model, bank, requests, cfg));  // warm-up
  for (auto _ : state) {
    auto out = generate(model, bank, requests, cfg);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(double(kBartNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

inline void BM_bart_generate_batch1(benchmark::State& state) {
  const Bart<float>& model = bart_base();
  Rng rng(3);
  const Seq2SeqBank<float> bank = random_bart_bank(model.config, 1, rng);
  const std::vector<GenerationRequest> requests{
      {random_ids(rng, kBartSource, model.config.vocab_size), state.range(0) != 0 ? 0 : kNoPrefix}};
  const GenerateConfig cfg = bart_fixed_length_greedy(model.config);
  time_bart_generate(state, model, bank, requests, cfg);
}

inline void BM_bart_generate_many_prefixes(benchmark::State& state) {
  const Bart<float>& model = bart_base();
  const bool batched = state.range(0) != 0;
  Rng rng(5);
  const Seq2SeqBank<float> bank = random_bart_bank(model.config, kBartRequests, rng);
  std::vector<GenerationRequest> requests;
  for (std::int64_t i = 0; i < kBartRequests; ++i)
    requests.push_back({random_ids(rng, kBartSource, model.config.vocab_size), i});
  const GenerateConfig cfg = bart_fixed_length_greedy(model.config);
  auto serve = [&] {
    if (batched) return count_bart_tokens(state, generate(model, bank, requests, cfg));
    std::int64_t n = 0;
    for (const auto& r : requests) n += count_bart_tokens(state, generate(model, bank, {r}, cfg));
    return n;
  };
  // warm-up: the batched call itself, or one batch-1 call (what the sequential case repeats)
  if (batched)
    serve();
  else
    count_bart_tokens(state, generate(model, bank, {requests[0]}, cfg));
  for (auto _ : state) benchmark::DoNotOptimize(serve());
  state.counters["tokens/s"] =
      benchmark::Counter(double(kBartRequests * kBartNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

inline void BM_bart_generate_beam(benchmark::State& state) {
  const Bart<float>& model = bart_base();
  Rng rng(7);
  const Seq2SeqBank<float> bank = random_bart_bank(model.config, 1, rng);
  const std::vector<GenerationRequest> requests{{random_ids(rng, kBartSource, model.config.vocab_size), 0}};
  GenerateConfig cfg = bart_xsum_config(model.config);
  cfg.max_new_tokens = cfg.min_new_tokens = kBartNewTokens;
  time_bart_generate(state, model, bank, requests, cfg);
  state.counters["beams"] = double(cfg.num_beams);
}

inline void BM_bart_encode(benchmark::State& state) {
  const Bart<float>& model = bart_base();
  Rng rng(3);
  const Seq2SeqBank<float> bank = random_bart_bank(model.config, 1, rng);
  const std::vector<GenerationRequest> requests{
      {random_ids(rng, kBartSource, model.config.vocab_size), state.range(0) != 0 ? 0 : kNoPrefix}};
  benchmark::DoNotOptimize(detail::bart_cross_memory(model, bank, requests).data());  // warm-up
  for (auto _ : state) {
    auto memory = detail::bart_cross_memory(model, bank, requests);
    benchmark::DoNotOptimize(memory.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(kBartSource), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace prefixtune::bench
