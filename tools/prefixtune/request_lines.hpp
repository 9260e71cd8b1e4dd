// SPDX-License-Identifier: MIT
// JSON-lines request handling shared by `prefixtune generate` and serve_many_prefixes: one input line parsed
// into its object (or an error line), and a batch of lines generated in one call and written back in order.
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace prefixtune_examples {

/// One input line: its JSON object (written back with "text"/"ids" or "error") and, when good, its request.
struct RequestLine {
  nlohmann::json out;
  bool ok = false;
  prefixtune::GenerationRequest request;
};

/// Parses input line n into p.out. A line that is not JSON, or not an object, becomes {"line", "input", "error"}
/// (the error saying what an object must hold: `expected`) and false is returned.
inline bool parse_request_object(const std::string& line, std::size_t n, const char* expected, RequestLine& p) {
  std::string error;
  try {
    p.out = nlohmann::json::parse(line);
    if (p.out.is_object()) return true;
    error = prefixtune::detail::str_cat("stdin:", n, ": expected ", expected);
  } catch (const nlohmann::json::exception& e) {
    error = prefixtune::detail::str_cat("stdin:", n, ": invalid JSON: ", e.what());
  }
  p.out = nlohmann::json{{"line", n}, {"input", line}};
  p.out["error"] = error;
  return false;
}

/// What one batch produced.
struct BatchResult {
  std::int64_t tokens = 0;  // new tokens written
  std::int64_t failed = 0;  // good lines marked with the error of a failed generate call
  bool ran = false;         // a generate call was made (some line was good)
  double seconds = 0;       // spent in generate
};

/// Generates the good lines of `lines` in one call and writes every line, in order, to stdout; a failure of the
/// call itself (after every request was checked) marks each good line with its error. Empties `lines`. Model and
/// Bank: a decoder-only model (Gpt2, Llama) and a PrefixBank, or a Bart and a Seq2SeqBank; tok null: no "text"
/// (a folder whose tokenizer is not read); `unprinted` ids stay out of "text" (BART's special tokens, as
/// HuggingFace's skip_special_tokens) but are kept in "ids".
template <class Model, class Bank>
BatchResult serve_request_lines(std::vector<RequestLine>& lines, const Model& model,
                                const prefixtune::Gpt2Tokenizer* tok, const Bank& bank,
                                const prefixtune::GenerateConfig& cfg,
                                const std::vector<std::int32_t>& unprinted = {}) {
  std::vector<prefixtune::GenerationRequest> requests;
  for (const auto& p : lines)
    if (p.ok) requests.push_back(p.request);
  BatchResult result;
  std::vector<prefixtune::Generation> gens;
  std::string failure;
  if (!requests.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      gens = prefixtune::generate(model, bank, requests, cfg);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result.ran = true;
  }
  std::size_t r = 0;
  for (auto& p : lines) {
    if (p.ok && failure.empty()) {
      const prefixtune::Generation& g = gens[r++];
      std::vector<std::int32_t> shown;
      for (auto id : g.ids)
        if (std::find(unprinted.begin(), unprinted.end(), id) == unprinted.end()) shown.push_back(id);
      if (tok) p.out["text"] = tok->decode_lossy(shown);
      p.out["ids"] = g.ids;
      result.tokens += static_cast<std::int64_t>(g.ids.size());
    } else if (p.ok) {
      p.out["error"] = failure;
      ++result.failed;
    }
    std::cout << p.out.dump() << "\n";
  }
  std::cout.flush();
  lines.clear();
  return result;
}

}  // namespace prefixtune_examples
