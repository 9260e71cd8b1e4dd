// SPDX-License-Identifier: MIT
// GPT-2 generation: gpt2_extend, the incremental forward that appends tokens to KV-cache slots (each row with its
// own bank prefix) and returns the logits of each row's last new token; generate() is causal_generate.hpp's over it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "prefixtune/generate/causal_generate.hpp"
#include "prefixtune/generate/kv_cache.hpp"
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

/// cached_step for a GPT-2: gpt2_extend (what causal_generate.hpp's engine calls).
template <class T, class Device, class Param>
Tensor<T, Device> cached_step(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                              KvCache<T, Device>& cache, const std::vector<std::int64_t>& slots,
                              const std::vector<std::vector<std::int32_t>>& tokens) {
  return gpt2_extend(m, bank, cache, slots, tokens);
}

}  // namespace prefixtune
