// SPDX-License-Identifier: MIT
// Training throughput of train_prefix (the whole loop: batching, prefix MLP, forward, fused LM-head loss,
// backward, clipping, AdamW, schedule) in examples/s on E2E-length examples: source 24..36 tokens, target
// 20..30 tokens (+2 <|endoftext|>), batch 5, P=10, mid=512, random frozen weights with the real vocabulary size.
//
// Models: "tiny" (4 layers, C=256, 8 heads: the size of the quickstart's base model) and GPT-2 small.
// head=targets is what train_prefix does: the LM head (logits GEMM + softmax) runs only at the ~45% of positions
// that carry a label. head=all puts a label on every position, which costs what a head computed over every
// position (the usual logits-then-mask implementation) costs; the ratio of the two is the speed-up.
#include <benchmark/benchmark.h>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/train/trainer.hpp"

using namespace prefixtune;

namespace {

constexpr std::int32_t kEot = 50256;
constexpr std::size_t kExamples = 10;  // two steps per iteration

const Gpt2<float>& model_of(std::int64_t which) {
  static const Gpt2<float> tiny = [] {
    Rng r(1);
    Gpt2Config c;
    c.n_layer = 4, c.n_embd = 256, c.n_head = 8, c.n_positions = 256;
    return random_gpt2<float>(c, r);
  }();
  static const Gpt2<float> small = [] {
    Rng r(1);
    return random_gpt2<float>(Gpt2Config::gpt2_small(), r);
  }();
  return which == 0 ? tiny : small;
}

std::vector<Example> e2e_like(std::size_t n, bool label_everything, Rng& rng) {
  std::vector<Example> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::int32_t> src(24 + rng.below(13)), tgt(20 + rng.below(11));
    for (auto& t : src) t = static_cast<std::int32_t>(rng.below(kEot));
    for (auto& t : tgt) t = static_cast<std::int32_t>(rng.below(kEot));
    Example ex = example_from_ids(src, tgt, kEot, i + 1);
    if (label_everything)
      for (std::size_t t = 0; t + 1 < ex.ids.size(); ++t) ex.targets[t] = ex.ids[t + 1];
    out.push_back(std::move(ex));
  }
  return out;
}

void BM_train_examples(benchmark::State& state) {
  const Gpt2<float>& model = model_of(state.range(0));
  Rng rng(7);
  const auto data = e2e_like(kExamples, state.range(1) != 0, rng);
  PrefixConfig pc;  // P = 10, mid = 512
  auto encoder = PrefixEncoder<float>::create(pc, model.config, rng);
  TrainConfig cfg;  // the paper's table-to-text settings: batch 5, lr 5e-5, clipping at 1.0
  cfg.epochs = 1;
  std::size_t labels = 0, tokens = 0;
  for (const auto& ex : data) {
    tokens += ex.ids.size();
    for (auto t : ex.targets) labels += t != kIgnoreLabel;
  }
  for (auto _ : state) {
    auto result = train_prefix(model, encoder, data, {}, cfg);
    benchmark::DoNotOptimize(result.losses.data());
  }
  state.counters["examples/s"] = benchmark::Counter(double(kExamples), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["labelled_fraction"] = double(labels) / double(tokens);
}

}  // namespace

// model: 0 = tiny (4 x 256), 1 = GPT-2 small; head_all: 0 = head on labelled positions only, 1 = on all positions.
BENCHMARK(BM_train_examples)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"model", "head_all"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
