// SPDX-License-Identifier: MIT
// Llama-family generation: llama_extend, the incremental forward that appends tokens to KV-cache slots (each row with
// its own bank prefix; the cache holds KVH heads, keys after the norm and the rotation, as transformers caches them)
// and returns the logits of each row's last new token; generate() is causal_generate.hpp's over it.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/generate/causal_generate.hpp"
#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/models/llama.hpp"
#include "prefixtune/ops/cached_attention.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/embedding.hpp"
#include "prefixtune/ops/gqa.hpp"
#include "prefixtune/ops/linear.hpp"
#include "prefixtune/ops/rms_norm.hpp"
#include "prefixtune/ops/swiglu.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"

namespace prefixtune {

/// Appends tokens[r] to cache slot slots[r] for every row r (rows may carry different prefixes, past lengths and
/// token counts >= 1) and returns the logits (R, V) at each row's last new token. Real tokens take positions
/// bank.position_offset(prefix) + index in the slot (an infix: index, plus P from the slot's visible_from on).
/// Errors name the row: a token id out of range, a slot listed twice, or more tokens than the cache capacity / the
/// model's context holds.
template <class T, class Device>
Tensor<T, Device> llama_extend(const Llama<T, Device>& m, const PrefixBank<T, Device>& bank, KvCache<T, Device>& cache,
                               const std::vector<std::int64_t>& slots,
                               const std::vector<std::vector<std::int32_t>>& tokens) {
  const LlamaConfig& c = m.config;
  PREFIXTUNE_CHECK(cache.shape() == c.kv_shape(), "llama_extend: the cache was made for another model (",
                   cache.shape().to_string(), ", not ", c.kv_shape().to_string(), ")");
  auto step = detail::pack_cached_step("llama_extend", cache, bank, slots, tokens, c.vocab_size,
                                       c.max_position_embeddings, [&](std::int64_t s, std::int64_t i) {
                                         return detail::token_position(bank, cache.prefix(s), cache.visible_from(s), i);
                                       });
  auto& rows = step.rows;
  const auto R = static_cast<std::int64_t>(rows.size());
  const std::int64_t N = step.tokens, C = c.hidden_size, I = c.intermediate_size;
  const std::int64_t W = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
  const auto [cos, sin] = detail::llama_rope(m, step.pos.reshape({1, N}));
  const auto dims = cache.dims(c.num_attention_heads);
  Tensor<T, Device> x({N, C}), h({N, C}), tmp({N, C}), raw({N, W}), qkv({N, W}), a({N, dims.C()});
  Tensor<T, Device> gate({N, I}), up({N, I}), none;
  embedding_forward(step.ids.template to<Device>(), m.embed, x);
  const T eps = static_cast<T>(c.rms_norm_eps);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& b = m.layers[static_cast<std::size_t>(l)];
    rms_norm_forward(x, b.input_norm, eps, h, none);
    linear_forward(h, b.qkv_w, b.qkv_b, raw);
    gqa_qkv_forward(raw, cos, sin, m.heads(l), false, qkv);
    detail::bind_prefix(rows, cache, bank, l);
    cached_attention_forward(dims, rows, qkv, cache.k(l), cache.v(l), a);
    linear_forward(a, b.o_w, b.o_b, tmp);
    accumulate(x, tmp);
    rms_norm_forward(x, b.post_norm, eps, h, none);
    linear_forward(h, b.gate_w, none, gate);
    linear_forward(h, b.up_w, none, up);
    swiglu_forward(gate, up, gate);
    linear_forward(gate, b.down_w, none, tmp);
    accumulate(x, tmp);
  }
  for (const auto& w : rows) cache.advance(w.slot, w.count);
  const Tensor<T, Device> last = detail::last_token_states(x, rows);
  Tensor<T, Device> normed({R, C}), logits({R, c.vocab_size});
  rms_norm_forward(last, m.norm, eps, normed, none);
  gemm(normed, Trans::N, m.head(), Trans::T, logits);
  return logits;
}

/// cached_step for a Llama: llama_extend (what causal_generate.hpp's engine calls).
template <class T, class Device>
Tensor<T, Device> cached_step(const Llama<T, Device>& m, const PrefixBank<T, Device>& bank, KvCache<T, Device>& cache,
                              const std::vector<std::int64_t>& slots,
                              const std::vector<std::vector<std::int32_t>>& tokens) {
  return llama_extend(m, bank, cache, slots, tokens);
}

}  // namespace prefixtune
