// SPDX-License-Identifier: MIT
// Generation for every decoder-only model (GPT-2, the Llama family): the request checks, the decoding engine that
// binds KV-cache slots to requests and runs the model's cached step (the overload cached_step(model, bank, cache,
// slots, tokens): gpt2_extend, llama_extend), and generate(), which runs the shared decode loops (greedy, sampling,
// beam search) over it.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/generate/beam_search.hpp"
#include "prefixtune/generate/decode_loops.hpp"
#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"

namespace prefixtune {

/// Throws an Error naming request `index` unless it can be generated from: a non-empty prompt of ids in the
/// vocabulary, a prefix index in the bank (or kNoPrefix), and a prompt that fits the model's context after
/// the prefix's position offset. Model: any decoder-only model (its config's vocab_size and kv_shape()).
template <class Model, class T, class Device>
void check_generation_request(const Model& m, const PrefixBank<T, Device>& bank, const GenerationRequest& r,
                              std::size_t index) {
  const std::int64_t vocab = m.config.vocab_size, positions = m.config.kv_shape().positions;
  PREFIXTUNE_CHECK(!r.prompt.empty(), "generate: request ", index, " has an empty prompt");
  PREFIXTUNE_CHECK(r.prefix == kNoPrefix || (r.prefix >= 0 && r.prefix < bank.size()), "generate: request ", index,
                   " names prefix ", r.prefix, " but the bank holds ", bank.size(), " prefixes");
  for (std::size_t j = 0; j < r.prompt.size(); ++j)
    PREFIXTUNE_CHECK(r.prompt[j] >= 0 && r.prompt[j] < vocab, "generate: request ", index, " token ", j, " has id ",
                     r.prompt[j], ", outside the vocabulary [0, ", vocab, ")");
  const std::int64_t room = positions - bank.position_offset(r.prefix);
  PREFIXTUNE_CHECK(static_cast<std::int64_t>(r.prompt.size()) <= room, "generate: request ", index, " has a prompt of ",
                   r.prompt.size(), " tokens but the model's context holds ", room, " after the prefix (n_positions ",
                   positions, ")");
}

namespace detail {

/// The decoding engine of a decoder-only batch for the loops of decode_loops.hpp / beam_search.hpp: KV-cache slots
/// bound to requests (their prompt fed first, their bank prefix read by index), the model's cached_step as the step.
template <class Model, class T, class Device>
class CausalDecoding {
 public:
  using value_type = T;
  using device_type = Device;
  CausalDecoding(const Model& m, const PrefixBank<T, Device>& bank, const std::vector<GenerationRequest>& requests,
                 const GenerateConfig& cfg, std::int64_t slots_per_request)
      : m_(m),
        bank_(bank),
        requests_(requests),
        cache_(m.config.kv_shape(), static_cast<std::int64_t>(requests.size()) * slots_per_request,
               generation_capacity(m.config.kv_shape(), bank, requests, cfg)) {}

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
    return cached_step(m_, bank_, cache_, slots, tokens);
  }
  void copy_slot(std::int64_t dst, std::int64_t src) { cache_.copy_slot(dst, src); }
  /// Whether the slot's context is full (no further token fits).
  bool full(std::int64_t slot) const {
    return cache_.length(slot) + bank_.position_offset(cache_.prefix(slot)) >= cache_.shape().positions;
  }

 private:
  const Model& m_;
  const PrefixBank<T, Device>& bank_;
  const std::vector<GenerationRequest>& requests_;
  KvCache<T, Device> cache_;
};

}  // namespace detail

/// Generates for every request in one batch (each row with its own prompt and prefix; see GenerateConfig) from a
/// decoder-only model (Gpt2, Llama). Every request is checked first (check_generation_request); a bad one fails the
/// call with an Error naming it.
template <class Model, class T, class Device>
std::vector<Generation> generate(const Model& m, const PrefixBank<T, Device>& bank,
                                 const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  cfg.validate(m.config.vocab_size);
  for (std::size_t i = 0; i < requests.size(); ++i) check_generation_request(m, bank, requests[i], i);
  if (requests.empty()) return {};
  detail::CausalDecoding<Model, T, Device> engine(m, bank, requests, cfg, cfg.num_beams);
  if (cfg.num_beams > 1) return detail::generate_beam(engine, requests, cfg);
  return detail::generate_sampled(engine, requests, cfg);
}

}  // namespace prefixtune
