// SPDX-License-Identifier: MIT
// GPT-2 generation: gpt2_extend, the incremental forward that appends tokens to KV-cache slots (each row with its
// own bank prefix) and returns the logits of each row's last new token; the request checks; and generate(), which
// runs the shared decode loops (greedy, sampling, beam search) over it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "prefixtune/generate/beam_search.hpp"
#include "prefixtune/generate/decode_loops.hpp"
#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/models/gpt2.hpp"
#include "prefixtune/ops/cached_attention.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/embedding.hpp"
#include "prefixtune/ops/layer_norm.hpp"
#include "prefixtune/ops/linear.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"

namespace prefixtune {

/// Appends tokens[r] to cache slot slots[r] for every row r (rows may carry different prefixes, past lengths and
/// token counts >= 1) and returns the logits (R, V) at each row's last new token. Real tokens take positions
/// bank.position_offset(prefix) + index in the slot (an infix: index, plus P from the slot's visible_from on).
/// Errors name the row: a token id out of range, a slot
/// listed twice, or more tokens than the cache capacity / the model's context holds.
template <class T, class Device, class Param>
Tensor<T, Device> gpt2_extend(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                              KvCache<T, Device>& cache, const std::vector<std::int64_t>& slots,
                              const std::vector<std::vector<std::int32_t>>& tokens) {
  const Gpt2Config& c = m.config;
  PREFIXTUNE_CHECK(cache.shape().kv_heads == c.n_head && cache.shape().head_dim == c.head_size(),
                   "gpt2_extend: the cache was made for another model");
  auto step = detail::pack_cached_step("gpt2_extend", cache, bank, slots, tokens, c.vocab_size, c.n_positions,
                                       [&](std::int64_t s, std::int64_t i) {
                                         return detail::token_position(bank, cache.prefix(s), cache.visible_from(s), i);
                                       });
  auto& rows = step.rows;
  const auto R = static_cast<std::int64_t>(rows.size());
  const std::int64_t N = step.tokens, C = c.n_embd;
  const auto dids = step.ids.template to<Device>(), dpos = step.pos.template to<Device>();
  Tensor<T, Device> x({N, C}), tmp({N, C}), a({N, C}), qkv({N, 3 * C}), f({N, 4 * C}), g({N, 4 * C}), none;
  embedding_forward(dids, detail::value_of(m.wte), x);
  embedding_forward(dpos, detail::value_of(m.wpe), tmp);
  accumulate(x, tmp);
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  for (std::int64_t l = 0; l < c.n_layer; ++l) {
    const auto& b = m.h[static_cast<std::size_t>(l)];
    using detail::value_of;
    layer_norm_forward(x, value_of(b.ln_1_w), value_of(b.ln_1_b), eps, a, none, none);
    linear_forward(a, value_of(b.attn_w), value_of(b.attn_b), qkv);
    detail::bind_prefix(rows, cache, bank, l);
    cached_attention_forward(cache.dims(c.n_head), rows, qkv, cache.k(l), cache.v(l), a);
    linear_forward(a, value_of(b.attn_proj_w), value_of(b.attn_proj_b), tmp);
    accumulate(x, tmp);
    layer_norm_forward(x, value_of(b.ln_2_w), value_of(b.ln_2_b), eps, a, none, none);
    linear_forward(a, value_of(b.fc_w), value_of(b.fc_b), f);
    gelu_forward(f, g);
    linear_forward(g, value_of(b.mlp_proj_w), value_of(b.mlp_proj_b), tmp);
    accumulate(x, tmp);
  }
  for (const auto& w : rows) cache.advance(w.slot, w.count);
  const Tensor<T, Device> last = detail::last_token_states(x, rows);
  Tensor<T, Device> normed({R, C});
  layer_norm_forward(last, detail::value_of(m.ln_f_w), detail::value_of(m.ln_f_b), eps, normed, none, none);
  return gpt2_logits(m, normed.reshape({R, 1, C})).reshape({R, -1});
}

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
