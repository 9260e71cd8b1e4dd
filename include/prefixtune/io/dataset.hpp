// SPDX-License-Identifier: MIT
// Table-to-text data: E2E lines "source||target" and JSON lines {"source": ..., "target": ...}, their encoding
// into the paper's training text ' ' + source + ' <|endoftext|> ' + target + ' <|endoftext|>' with labels on the
// target only, right-padded batches, and seeded shuffling.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/io/bpe.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/ops/cross_entropy.hpp"

namespace prefixtune {

/// One source/target pair and where it came from.
struct TextPair {
  std::string source, target;
  std::size_t line = 0;  // 1-based line in the file
};

namespace detail {

inline bool is_json_lines(const std::string& path, const std::string& text) {
  auto ends_with = [&](const char* ext) {
    const std::string e(ext);
    return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
  };
  if (ends_with(".jsonl") || ends_with(".json")) return true;
  const auto first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{';
}

/// f(line, n) for every line of text that is not blank, n counting from 1 over all lines, a trailing '\r' dropped.
template <class F>
void for_each_line(const std::string& text, F&& f) {
  std::size_t begin = 0, n = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) f(line, n);
  }
}

inline TextPair parse_e2e_line(const std::string& line, const std::string& where, std::size_t n) {
  const auto sep = line.find("||");
  PREFIXTUNE_CHECK(sep != std::string::npos, where, ":", n, ": expected 'source||target', found no '||'");
  PREFIXTUNE_CHECK(line.find("||", sep + 2) == std::string::npos, where, ":", n,
                   ": expected exactly one '||' separator, found more");
  return TextPair{line.substr(0, sep), line.substr(sep + 2), n};
}

inline TextPair parse_json_line(const std::string& line, const std::string& where, std::size_t n) {
  const nlohmann::json j = parse_json(line, where + ":" + std::to_string(n));
  PREFIXTUNE_CHECK(j.is_object(), where, ":", n, ": a JSON line must be an object with \"source\" and \"target\"");
  for (const char* key : {"source", "target"}) {
    PREFIXTUNE_CHECK(j.contains(key) && j[key].is_string(), where, ":", n, ": field \"", key,
                     "\" missing or not a string");
  }
  return TextPair{j["source"].get<std::string>(), j["target"].get<std::string>(), n};
}

}  // namespace detail

/// Every pair of a data file's text (`path` names it in errors): JSON lines when the name ends in .jsonl/.json or
/// the text starts with '{', E2E "source||target" lines otherwise. Blank lines are skipped; a trailing '\r' is
/// dropped. A bad line throws an Error naming the file and the line number.
inline std::vector<TextPair> parse_pairs(const std::string& text, const std::string& path) {
  const bool json = detail::is_json_lines(path, text);
  std::vector<TextPair> pairs;
  detail::for_each_line(text, [&](const std::string& line, std::size_t n) {
    pairs.push_back(json ? detail::parse_json_line(line, path, n) : detail::parse_e2e_line(line, path, n));
  });
  return pairs;
}

/// parse_pairs of the file at `path`.
inline std::vector<TextPair> read_pairs(const std::string& path) { return parse_pairs(read_text_file(path), path); }

/// What to do with an example longer than the maximum length.
enum class LengthPolicy {
  Error,           // throw, naming the line (the default: nothing is silently changed)
  Skip,            // leave the example out (encode_examples reports how many)
  TruncateSource,  // drop source tokens from the start until it fits; the target is never cut
};

/// One tokenized example: ids (T) and aligned targets (T): targets[t] is the token predicted at position t, -100
/// everywhere except where that token belongs to the target part (after the first <|endoftext|>).
struct Example {
  std::vector<std::int32_t> ids, targets;
  std::size_t line = 0;
};

/// source ids, <eot>, target ids, <eot>, with aligned targets on the target part and the final <eot> only.
inline Example example_from_ids(std::vector<std::int32_t> source, const std::vector<std::int32_t>& target,
                                std::int32_t eot, std::size_t line = 0) {
  Example ex;
  ex.line = line;
  ex.ids = std::move(source);
  ex.ids.push_back(eot);
  const std::size_t sep = ex.ids.size() - 1;
  ex.ids.insert(ex.ids.end(), target.begin(), target.end());
  ex.ids.push_back(eot);
  ex.targets.assign(ex.ids.size(), kIgnoreLabel);
  for (std::size_t t = sep; t + 1 < ex.ids.size(); ++t) ex.targets[t] = ex.ids[t + 1];
  return ex;
}

/// ' ' + source + ' <|endoftext|> ' + target + ' <|endoftext|>' with <|endoftext|> as the special token. Source and
/// target are encoded as text (an "<|endoftext|>" typed inside them stays text), so the label boundary is always
/// the separator. max_length counts every token (0 = no limit).
inline Example encode_example(const Gpt2Tokenizer& tok, const TextPair& pair, std::size_t max_length = 0,
                              LengthPolicy policy = LengthPolicy::Error) {
  const std::int32_t eot = tok.eot_id();
  std::vector<std::int32_t> source = tok.encode(" " + pair.source + " ");
  const std::vector<std::int32_t> target = tok.encode(" " + pair.target + " ");
  const std::size_t total = source.size() + target.size() + 2;
  if (max_length > 0 && total > max_length) {
    PREFIXTUNE_CHECK(policy != LengthPolicy::Error, "line ", pair.line, ": example of ", total,
                     " tokens exceeds the maximum length ", max_length);
    if (policy == LengthPolicy::Skip) return Example{{}, {}, pair.line};
    PREFIXTUNE_CHECK(target.size() + 2 <= max_length, "line ", pair.line, ": the target alone needs ",
                     target.size() + 2, " tokens, more than the maximum length ", max_length);
    source.erase(source.begin(), source.begin() + static_cast<std::ptrdiff_t>(total - max_length));
  }
  return example_from_ids(std::move(source), target, eot, pair.line);
}

/// The paper's decoding prompt for a source: ' ' + source + ' <|endoftext|>', i.e. a training example
/// (encode_example) up to and including its first <|endoftext|>; generation continues with the target.
inline std::vector<std::int32_t> encode_source_prompt(const Gpt2Tokenizer& tok, const std::string& source) {
  std::vector<std::int32_t> ids = tok.encode(" " + source + " ");
  ids.push_back(tok.eot_id());
  return ids;
}

/// Encodes every pair; with LengthPolicy::Skip, skipped examples are left out and counted in *skipped.
inline std::vector<Example> encode_examples(const Gpt2Tokenizer& tok, const std::vector<TextPair>& pairs,
                                            std::size_t max_length = 0, LengthPolicy policy = LengthPolicy::Error,
                                            std::size_t* skipped = nullptr) {
  std::vector<Example> out;
  std::size_t skip = 0;
  for (const auto& p : pairs) {
    Example ex = encode_example(tok, p, max_length, policy);
    if (ex.ids.empty()) {
      ++skip;
    } else {
      out.push_back(std::move(ex));
    }
  }
  if (skipped) *skipped = skip;
  return out;
}

/// A right-padded batch: ids and targets (B, T), mask (B, T) with 1 on real tokens; padding takes pad_id and -100.
struct TokenBatch {
  Tensor<std::int32_t, Cpu> ids, targets;
  Tensor<std::uint8_t, Cpu> mask;
  std::int64_t num_labels = 0;
};

/// Batches examples[order[begin..end)], padded on the right to the longest one.
inline TokenBatch make_batch(const std::vector<Example>& examples, const std::vector<std::size_t>& order,
                             std::size_t begin, std::size_t end, std::int32_t pad_id) {
  PREFIXTUNE_CHECK(begin < end && end <= order.size(), "make_batch: range [", begin, ", ", end,
                   ") is empty or outside the ", order.size(), " indices");
  std::size_t T = 0;
  for (std::size_t i = begin; i < end; ++i) {
    PREFIXTUNE_CHECK(order[i] < examples.size(), "make_batch: index ", order[i], " out of range");
    T = std::max(T, examples[order[i]].ids.size());
  }
  const auto B = static_cast<std::int64_t>(end - begin);
  TokenBatch b{Tensor<std::int32_t, Cpu>::full({B, static_cast<std::int64_t>(T)}, pad_id),
               Tensor<std::int32_t, Cpu>::full({B, static_cast<std::int64_t>(T)}, kIgnoreLabel),
               Tensor<std::uint8_t, Cpu>::zeros({B, static_cast<std::int64_t>(T)}), 0};
  for (std::int64_t r = 0; r < B; ++r) {
    const Example& ex = examples[order[begin + static_cast<std::size_t>(r)]];
    for (std::size_t t = 0; t < ex.ids.size(); ++t) {
      const auto tt = static_cast<std::int64_t>(t);
      b.ids(r, tt) = ex.ids[t];
      b.targets(r, tt) = ex.targets[t];
      b.mask(r, tt) = 1;
      b.num_labels += ex.targets[t] != kIgnoreLabel;
    }
  }
  return b;
}

/// The examples with `prompt` (token ids) put before every source, unlabelled: the paper's discrete-prompting
/// baseline (a fixed text instruction, nothing trained).
inline std::vector<Example> prepend_prompt(const std::vector<Example>& examples,
                                           const std::vector<std::int32_t>& prompt) {
  std::vector<Example> out = examples;
  for (Example& ex : out) {
    ex.ids.insert(ex.ids.begin(), prompt.begin(), prompt.end());
    ex.targets.insert(ex.targets.begin(), prompt.size(), kIgnoreLabel);
  }
  return out;
}

/// 0..n-1 in a random order drawn from rng (Fisher-Yates; the same seed gives the same order everywhere).
inline std::vector<std::size_t> shuffled_order(std::size_t n, Rng& rng) {
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<std::size_t>(rng.below(i))]);
  return order;
}

}  // namespace prefixtune
