// SPDX-License-Identifier: MIT
// Pre-tokenized data in HuggingFace's convention, for every model family (and for data tokenized elsewhere): JSON
// lines {"input_ids": [...], "labels": [...]} with labels aligned with input_ids (-100: not a label; absent: every
// position is one) and shifted inside, as transformers' causal-LM loss does; and prompts {"input_ids": [...]}.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/dataset.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"

namespace prefixtune {

namespace detail {

/// j[key] as token ids, each in [0, vocab_size) (or kIgnoreLabel when allow_ignore); errors name where:n and key.
inline std::vector<std::int32_t> json_token_ids(const nlohmann::json& j, const char* key, std::int64_t vocab_size,
                                                bool allow_ignore, const std::string& where, std::size_t n) {
  PREFIXTUNE_CHECK(j[key].is_array(), where, ":", n, ": field \"", key, "\" must be a list of token ids");
  std::vector<std::int32_t> ids;
  ids.reserve(j[key].size());
  for (std::size_t i = 0; i < j[key].size(); ++i) {
    const nlohmann::json& v = j[key][i];
    PREFIXTUNE_CHECK(v.is_number_integer(), where, ":", n, ": \"", key, "\"[", i, "] is ", v.dump(),
                     ", not an integer token id");
    const std::int64_t id = v.get<std::int64_t>();
    PREFIXTUNE_CHECK((id >= 0 && id < vocab_size) || (allow_ignore && id == kIgnoreLabel), where, ":", n, ": \"", key,
                     "\"[", i, "] = ", id, " is outside the vocabulary [0, ", vocab_size, ")",
                     allow_ignore ? " (and not -100)" : "");
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

}  // namespace detail

/// Whether a data file holds pre-tokenized lines: its first non-blank line is a JSON object with "input_ids".
inline bool is_token_data(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos || text[begin] != '{') return false;
  const auto end = text.find('\n', begin);
  const auto j =
      nlohmann::json::parse(text.substr(begin, end == std::string::npos ? end : end - begin), nullptr, false);
  return j.is_object() && j.contains("input_ids");
}

/// One pre-tokenized line: {"input_ids": [...], "labels": [...]} (labels optional) into an Example whose
/// targets[t] = labels[t + 1] (the last position predicts nothing). `where` and n name the line in errors; unknown
/// fields are refused (a misspelt "labels" would silently train on every token).
inline Example parse_token_line(const std::string& line, std::int64_t vocab_size, const std::string& where,
                                std::size_t n) {
  const nlohmann::json j = parse_json(line, where + ":" + std::to_string(n));
  PREFIXTUNE_CHECK(j.is_object() && j.contains("input_ids"), where, ":", n,
                   ": expected an object with \"input_ids\" (and optionally \"labels\")");
  for (auto it = j.begin(); it != j.end(); ++it)
    PREFIXTUNE_CHECK(it.key() == "input_ids" || it.key() == "labels", where, ":", n, ": unknown field \"", it.key(),
                     "\" (a pre-tokenized line holds \"input_ids\" and optionally \"labels\")");
  Example ex;
  ex.line = n;
  ex.ids = detail::json_token_ids(j, "input_ids", vocab_size, false, where, n);
  PREFIXTUNE_CHECK(!ex.ids.empty(), where, ":", n, ": \"input_ids\" is empty");
  const std::vector<std::int32_t> labels =
      j.contains("labels") ? detail::json_token_ids(j, "labels", vocab_size, true, where, n) : ex.ids;
  PREFIXTUNE_CHECK(labels.size() == ex.ids.size(), where, ":", n, ": \"labels\" has ", labels.size(),
                   " entries but \"input_ids\" has ", ex.ids.size(), " (labels are aligned with the ids)");
  ex.targets.assign(ex.ids.size(), kIgnoreLabel);
  for (std::size_t t = 0; t + 1 < labels.size(); ++t) ex.targets[t] = labels[t + 1];
  return ex;
}

/// Every line of a pre-tokenized data file's text (blank lines skipped; `path` names it in errors); max_length > 0
/// refuses longer examples, naming the line. A file with no labelled position at all is refused too (nothing to
/// score or train on).
inline std::vector<Example> parse_token_examples(const std::string& text, const std::string& path,
                                                 std::int64_t vocab_size, std::size_t max_length = 0) {
  std::vector<Example> out;
  bool labelled = false;
  detail::for_each_line(text, [&](const std::string& line, std::size_t n) {
    out.push_back(parse_token_line(line, vocab_size, path, n));
    PREFIXTUNE_CHECK(max_length == 0 || out.back().ids.size() <= max_length, path, ":", n, ": ", out.back().ids.size(),
                     " tokens, more than the maximum length ", max_length);
    for (const auto t : out.back().targets) labelled = labelled || t != kIgnoreLabel;
  });
  PREFIXTUNE_CHECK(out.empty() || labelled, path, ": no line has a label to score or train on (every label after ",
                   "the first position is -100)");
  return out;
}

/// parse_token_examples of the file at `path`.
inline std::vector<Example> read_token_examples(const std::string& path, std::int64_t vocab_size,
                                                std::size_t max_length = 0) {
  return parse_token_examples(read_text_file(path), path, vocab_size, max_length);
}

/// A prompt line {"input_ids": [...]} (other fields are the caller's: they are echoed back): its ids, used exactly
/// as given (no BOS or EOS added).
inline std::vector<std::int32_t> prompt_token_ids(const nlohmann::json& j, std::int64_t vocab_size,
                                                  const std::string& where, std::size_t n) {
  return detail::json_token_ids(j, "input_ids", vocab_size, false, where, n);
}

}  // namespace prefixtune
