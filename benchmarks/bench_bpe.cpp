// SPDX-License-Identifier: MIT
// GPT-2 BPE tokenizer throughput: loading, encode (cold and warm word cache) and decode, in MB/s of text,
// on ~1 MB of deterministic English-like text.
#include <benchmark/benchmark.h>

#include <cctype>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "prefixtune/io/bpe.hpp"

#ifndef PREFIXTUNE_TEST_DATA_DIR
#error "PREFIXTUNE_TEST_DATA_DIR must name the tests/data folder"
#endif

namespace {

using prefixtune::Gpt2Tokenizer;

const std::string kBpeDir = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe";

const Gpt2Tokenizer& tokenizer() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(kBpeDir);
  return tok;
}

/// ~1 MB of English-like text: sentences of words drawn (Zipf-like) from a built-in passage, with capitals,
/// commas, numbers, contractions, some rare made-up words and paragraph breaks. Deterministic (fixed seed).
const std::string& english_text() {
  static const std::string text = [] {
    const std::string passage =
        "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
        "they you were their one all we can her has there been if more when will would who so no she other its "
        "time people may only new about some could these two first after any like years into most very many over "
        "such where through our those because between well should both during under while being without against "
        "language model training prefix tuning keeps the pretrained transformer frozen and learns a small "
        "continuous task specific vector that the model attends to as if it were virtual tokens restaurant "
        "serves Italian food near the river in the city centre customer rating is high price range moderate "
        "family friendly coffee shop named The Golden Palace located beside Cafe Rouge where people meet";
    std::vector<std::string> words;
    for (std::size_t b = 0, e; b < passage.size(); b = e + 1) {
      e = passage.find(' ', b);
      if (e == std::string::npos) e = passage.size();
      words.push_back(passage.substr(b, e - b));
    }
    const char* contractions[] = {"don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "can't"};
    std::mt19937 rng(12345);
    const auto uniform = [&] { return static_cast<double>(rng()) / 4294967296.0; };
    std::string out;
    out.reserve((1 << 20) + 256);
    while (out.size() < (1u << 20)) {
      const int len = 5 + static_cast<int>(rng() % 16);
      for (int k = 0; k < len; ++k) {
        std::string w;
        const double u = uniform();
        if (u < 0.02) {  // a rare made-up word
          for (int c = 0, n = 4 + static_cast<int>(rng() % 8); c < n; ++c) w += static_cast<char>('a' + rng() % 26);
        } else if (u < 0.04) {
          w = std::to_string(rng() % 100000);
        } else if (u < 0.06) {
          w = contractions[rng() % 8];
        } else {
          const double z = uniform();
          w = words[static_cast<std::size_t>(z * z * z * static_cast<double>(words.size()))];
        }
        if (k == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
        out += w;
        if (k + 1 < len) out += rng() % 9 == 0 ? ", " : " ";
      }
      out += ".!?"[rng() % 10 < 8 ? 0 : 1 + rng() % 2];
      out += rng() % 7 == 0 ? "\n\n" : " ";
    }
    return out;
  }();
  return text;
}

void BM_bpe_load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Gpt2Tokenizer::load_dir(kBpeDir));
}

void BM_bpe_encode_cold_cache(benchmark::State& state) {
  const Gpt2Tokenizer& tok = tokenizer();
  const std::string& text = english_text();
  for (auto _ : state) {
    tok.clear_cache();  // every word is merged once per run: the first pass over a corpus
    benchmark::DoNotOptimize(tok.encode(text));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(text.size()));
}

void BM_bpe_encode_warm_cache(benchmark::State& state) {
  const Gpt2Tokenizer& tok = tokenizer();
  const std::string& text = english_text();
  tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.encode(text));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(text.size()));
  state.counters["tokens"] = static_cast<double>(tok.encode(text).size());
}

void BM_bpe_decode(benchmark::State& state) {
  const Gpt2Tokenizer& tok = tokenizer();
  const std::string& text = english_text();
  const std::vector<std::int32_t> ids = tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(text.size()));
}

}  // namespace

BENCHMARK(BM_bpe_load)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bpe_encode_cold_cache)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bpe_encode_warm_cache)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_bpe_decode)->Unit(benchmark::kMillisecond)->UseRealTime();
