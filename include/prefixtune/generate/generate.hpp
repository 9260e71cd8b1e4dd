// SPDX-License-Identifier: MIT
// Batched generation where every row carries its own prompt (any length) and its own prefix from a PrefixBank:
// one batched prompt pass, then one token per unfinished row per step; rows stop independently and finished rows
// cost nothing. Greedy, sampling (temperature / top-k / top-p, seeded per request) and beam search.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "prefixtune/generate/beam_search.hpp"
#include "prefixtune/generate/decode_loops.hpp"
#include "prefixtune/generate/kv_cache.hpp"

namespace prefixtune {

/// Throws an Error naming request `index` unless it can be generated from: a non-empty prompt of ids in the
/// vocabulary, a prefix index in the bank (or kNoPrefix), and a prompt that fits the model's context after
/// the prefix's position offset.
template <class T, class Device, class Param>
void check_generation_request(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                              const GenerationRequest& r, std::size_t index) {
  const Gpt2Config& c = m.config;
  PREFIXTUNE_CHECK(!r.prompt.empty(), "generate: request ", index, " has an empty prompt");
  PREFIXTUNE_CHECK(r.prefix == kNoPrefix || (r.prefix >= 0 && r.prefix < bank.size()), "generate: request ", index,
                   " names prefix ", r.prefix, " but the bank holds ", bank.size(), " prefixes");
  for (std::size_t j = 0; j < r.prompt.size(); ++j)
    PREFIXTUNE_CHECK(r.prompt[j] >= 0 && r.prompt[j] < c.vocab_size, "generate: request ", index, " token ", j,
                     " has id ", r.prompt[j], ", outside the vocabulary [0, ", c.vocab_size, ")");
  const std::int64_t room = c.n_positions - bank.position_offset(r.prefix);
  PREFIXTUNE_CHECK(static_cast<std::int64_t>(r.prompt.size()) <= room, "generate: request ", index, " has a prompt of ",
                   r.prompt.size(), " tokens but the model's context holds ", room, " after the prefix (n_positions ",
                   c.n_positions, ")");
}

namespace detail {

/// The decoding engine of a GPT-2 batch for the loops of decode_loops.hpp / beam_search.hpp: KV-cache slots bound
/// to requests (their prompt fed first, their bank prefix read by index), gpt2_extend as the step.
template <class T, class Device, class Param>
class Gpt2Decoding {
 public:
  using value_type = T;
  using device_type = Device;
  Gpt2Decoding(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
               const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg,
               std::int64_t slots_per_request)
      : m_(m),
        bank_(bank),
        requests_(requests),
        cache_(m.config, static_cast<std::int64_t>(requests.size()) * slots_per_request,
               generation_capacity(m.config, bank, requests, cfg)) {}

  /// The tokens request i's decoding starts from: fed first, and the start of its no-repeat n-gram history.
  const std::vector<std::int32_t>& start_tokens(std::int64_t i) const {
    return requests_[static_cast<std::size_t>(i)].prompt;
  }
  /// Empties `slot` and binds it to request i.
  void start(std::int64_t slot, std::int64_t i) {
    const GenerationRequest& r = requests_[static_cast<std::size_t>(i)];
    cache_.reset(slot, r.prefix, bank_.visible_from(r.prefix, r.prompt.size()));
  }
  Tensor<T, Device> extend(const std::vector<std::int64_t>& slots,
                           const std::vector<std::vector<std::int32_t>>& tokens) {
    return gpt2_extend(m_, bank_, cache_, slots, tokens);
  }
  void copy_slot(std::int64_t dst, std::int64_t src) { cache_.copy_slot(dst, src); }
  /// Whether the slot's context is full (no further token fits).
  bool full(std::int64_t slot) const {
    return cache_.length(slot) + bank_.position_offset(cache_.prefix(slot)) >= m_.config.n_positions;
  }

 private:
  const Gpt2<T, Device, Param>& m_;
  const PrefixBank<T, Device>& bank_;
  const std::vector<GenerationRequest>& requests_;
  KvCache<T, Device> cache_;
};

}  // namespace detail

/// Generates for every request in one batch (each row with its own prompt and prefix; see GenerateConfig).
/// Every request is checked first (check_generation_request); a bad one fails the call with an Error naming it.
template <class T, class Device, class Param>
std::vector<Generation> generate(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                                 const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  cfg.validate(m.config.vocab_size);
  for (std::size_t i = 0; i < requests.size(); ++i) check_generation_request(m, bank, requests[i], i);
  if (requests.empty()) return {};
  detail::Gpt2Decoding<T, Device, Param> engine(m, bank, requests, cfg, cfg.num_beams);
  if (cfg.num_beams > 1) return detail::generate_beam(engine, requests, cfg);
  return detail::generate_sampled(engine, requests, cfg);
}

}  // namespace prefixtune
