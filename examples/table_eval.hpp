// SPDX-License-Identifier: MIT
// Shared by the quickstart and the ablation runner: the held-out tables of a test file with all their references,
// batched descriptions of them (beam search or greedy, each table's prompt built as the paper does) for BLEU, and
// the random base model of their smoke tests.
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace prefixtune_examples {

/// A table (the source) and every reference description of it.
using TableRefs = std::pair<std::string, std::vector<std::string>>;

/// The first n distinct tables of an E2E-format file (one line per reference) with all their references, in file
/// order.
inline std::vector<TableRefs> test_tables(const std::string& path, std::size_t n) {
  std::vector<TableRefs> tables;
  std::map<std::string, std::size_t> index;
  for (const prefixtune::TextPair& p : prefixtune::read_pairs(path)) {
    auto [it, added] = index.emplace(p.source, tables.size());
    if (added) {
      if (tables.size() == n) break;
      tables.push_back({p.source, {}});
    }
    tables[it->second].second.push_back(p.target);
  }
  return tables;
}

/// The reference lists of `tables`, in order (corpus_bleu's second argument).
inline std::vector<std::vector<std::string>> references(const std::vector<TableRefs>& tables) {
  std::vector<std::vector<std::string>> refs;
  for (const auto& t : tables) refs.push_back(t.second);
  return refs;
}

/// Descriptions of every table decoded with `cfg` from the paper's prompt (`instruction` ids, usually none, then
/// ' ' + table + ' <|endoftext|>') with bank entry `prefix_index` (kNoPrefix: none), `batch` tables per generate
/// call; leading spaces trimmed. on_done(n) follows progress.
template <class Progress>
std::vector<std::string> describe_tables(const prefixtune::Gpt2<float>& m, const prefixtune::Gpt2Tokenizer& tok,
                                         const prefixtune::PrefixBank<float>& bank, std::int64_t prefix_index,
                                         const std::vector<TableRefs>& tables, const prefixtune::GenerateConfig& cfg,
                                         const std::vector<std::int32_t>& instruction, std::size_t batch,
                                         Progress&& on_done) {
  std::vector<std::string> out;
  for (std::size_t b = 0; b < tables.size(); b += batch) {
    std::vector<prefixtune::GenerationRequest> requests;
    for (std::size_t i = b; i < std::min(tables.size(), b + batch); ++i) {
      prefixtune::GenerationRequest r{instruction, prefix_index};
      const auto ids = prefixtune::encode_source_prompt(tok, tables[i].first);
      r.prompt.insert(r.prompt.end(), ids.begin(), ids.end());
      requests.push_back(std::move(r));
    }
    for (const auto& g : prefixtune::generate(m, bank, requests, cfg)) {
      const std::string text = tok.decode_lossy(g.ids);
      const auto first = text.find_first_not_of(' ');
      out.push_back(first == std::string::npos ? std::string() : text.substr(first));
    }
    on_done(out.size());
  }
  return out;
}

/// A random 2-layer GPT-2 with GPT-2's vocabulary size (smoke tests: no pretrained weights needed).
inline prefixtune::Gpt2<float> random_base_model(std::uint64_t seed) {
  prefixtune::Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.n_positions = 128;
  prefixtune::Rng rng(seed);
  return prefixtune::random_gpt2<float>(c, rng);
}

}  // namespace prefixtune_examples
