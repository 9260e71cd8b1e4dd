// SPDX-License-Identifier: MIT
// What a caller hands to generation and gets back: GenerateConfig (how to decode), GenerationRequest (one row: its
// prompt and its PrefixBank index), Generation (one row's result), and the KV-cache capacity a call needs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/models/kv_shape.hpp"

namespace prefixtune {

/// How to decode. num_beams > 1 selects beam search (sample must then be false); otherwise sample chooses
/// between greedy (false) and sampling (true).
struct GenerateConfig {
  std::int64_t max_new_tokens = 64;
  std::int64_t min_new_tokens = 0;  // the end token is banned until this many tokens were generated
  bool sample = false;
  double temperature = 1.0;
  std::int64_t top_k = 0;  // 0: off
  double top_p = 1.0;      // 1: off
  std::uint64_t seed = 0;  // a request samples from Rng(seed, its stream): the same with or without batching
  std::int64_t num_beams = 1;
  double length_penalty =
      1.0;  // beam hypothesis score = sum log p / (generated tokens, an end token included)^length_penalty
  bool early_stopping = false;             // beam search: stop a request once num_beams hypotheses ended
  std::vector<std::int32_t> ban_ids;       // never generated (the paper bans 198 and 628: "\n", "\n\n")
  std::int32_t eos_id = 50256;             // generation of a row ends at this token (not included in the output)
  std::vector<std::int32_t> more_eos_ids;  // further end tokens (Llama 3 lists several), treated as eos_id
  std::int64_t no_repeat_ngram_size = 0;   // > 0: no n-gram of the row's decoder sequence appears twice
  std::int32_t forced_bos_id = -1;         // >= 0: the first generated token is this one (BART's forced_bos_token_id)

  /// Every end token: eos_id, then more_eos_ids.
  std::vector<std::int32_t> eos_ids() const {
    std::vector<std::int32_t> v = {eos_id};
    v.insert(v.end(), more_eos_ids.begin(), more_eos_ids.end());
    return v;
  }
  /// Whether a generated token ends its row.
  bool is_eos(std::int32_t token) const {
    return token == eos_id || std::find(more_eos_ids.begin(), more_eos_ids.end(), token) != more_eos_ids.end();
  }

  void validate(std::int64_t vocab_size) const {
    PREFIXTUNE_CHECK(max_new_tokens >= 1, "generate: max_new_tokens must be >= 1, got ", max_new_tokens);
    PREFIXTUNE_CHECK(min_new_tokens >= 0 && min_new_tokens <= max_new_tokens, "generate: min_new_tokens ",
                     min_new_tokens, " must be in [0, max_new_tokens = ", max_new_tokens, "]");
    PREFIXTUNE_CHECK(std::isfinite(temperature) && temperature > 0, "generate: temperature must be > 0, got ",
                     temperature);
    PREFIXTUNE_CHECK(top_k >= 0, "generate: top_k must be >= 0, got ", top_k);
    PREFIXTUNE_CHECK(top_p > 0 && top_p <= 1, "generate: top_p must be in (0, 1], got ", top_p);
    PREFIXTUNE_CHECK(num_beams >= 1, "generate: num_beams must be >= 1, got ", num_beams);
    PREFIXTUNE_CHECK(num_beams == 1 || !sample, "generate: beam search with sampling is not supported");
    PREFIXTUNE_CHECK(std::isfinite(length_penalty), "generate: length_penalty must be finite");
    PREFIXTUNE_CHECK(no_repeat_ngram_size >= 0, "generate: no_repeat_ngram_size must be >= 0, got ",
                     no_repeat_ngram_size);
    PREFIXTUNE_CHECK(forced_bos_id >= -1 && forced_bos_id < vocab_size, "generate: forced_bos_id ", forced_bos_id,
                     " is outside the vocabulary [0, ", vocab_size, ") (-1 = none)");
    for (auto id : eos_ids())
      PREFIXTUNE_CHECK(id >= 0 && id < vocab_size, "generate: eos_id ", id, " is outside the vocabulary [0, ",
                       vocab_size, ")");
    for (auto id : ban_ids)
      PREFIXTUNE_CHECK(id >= 0 && id < vocab_size, "generate: banned id ", id, " is outside the vocabulary [0, ",
                       vocab_size, ")");
  }
};

/// One row to generate from: prompt token ids and a PrefixBank index (kNoPrefix: the bare model).
struct GenerationRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t prefix = -1;
  std::int64_t stream = -1;  // sampling draws from Rng(cfg.seed, stream); -1: the request's index in the call
};

/// What a row generated: the new tokens, without the end token; ended = stopped at the end token (false: the
/// length limit or the end of the context). score: greedy/sampling, the summed log-probability of the chosen tokens
/// (end token included) under the processed distribution; beam search, the hypothesis score (see GenerateConfig).
struct Generation {
  std::vector<std::int32_t> ids;
  bool ended = false;
  double score = 0;
};

namespace detail {

/// Tokens a row must hold in the KV cache (its prompt and every generated token but the last, capped by the
/// context after its prefix's position offset), maximized over the requests: the cache capacity of one call.
template <class Bank>
std::int64_t generation_capacity(const KvShape& s, const Bank& bank, const std::vector<GenerationRequest>& requests,
                                 const GenerateConfig& cfg) {
  std::int64_t capacity = 1;
  for (const auto& r : requests) {
    const auto len = static_cast<std::int64_t>(r.prompt.size());
    capacity = std::max(capacity, std::min(len + cfg.max_new_tokens - 1, s.positions - bank.position_offset(r.prefix)));
  }
  return capacity;
}

}  // namespace detail
}  // namespace prefixtune
