// SPDX-License-Identifier: MIT
// The per-layer keys and values a GPT-2 computes for a short sequence read on its own (positions 0..n-1, causal,
// no prefix): from input embeddings (the paper's embedding-only ablation, differentiable) or from token ids
// (initializing a prefix from real words).
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/models/gpt2.hpp"

namespace prefixtune {

/// Runs `inputs` (n, C), treated as the input token embeddings of one sequence, through the model at positions
/// 0..n-1 and returns every layer's keys and values, each (1, NH, n, HS): the K/V the model's attention would
/// read for those n tokens. Differentiable with respect to `inputs` (a Var) and to trainable weights.
template <class T, class Device, class Param, class X>
PrefixKv<T, Device> kv_of_embeddings(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m, const X& inputs) {
  const Gpt2Config& c = m.config;
  const Tensor<T, Device> iv = detail::value_of(inputs);
  PREFIXTUNE_CHECK(iv.defined() && iv.rank() == 2 && iv.size(1) == c.n_embd && iv.size(0) >= 1,
                   "kv_of_embeddings: inputs ", iv.defined() ? iv.shape().to_string() : std::string("(undefined)"),
                   " must be (n >= 1, n_embd = ", c.n_embd, ")");
  const std::int64_t n = iv.size(0), C = c.n_embd, NH = c.n_head, HS = c.head_size();
  const auto pos = detail::token_positions(1, n, 0, c.n_positions).template to<Device>();
  Var<T, Device> x = add(tape, reshape(tape, inputs, Shape{1, n, C}), embedding(tape, pos, m.wpe));
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  PrefixKv<T, Device> out;
  for (std::int64_t l = 0; l < c.n_layer; ++l) {
    const Gpt2Block<Param>& b = m.h[static_cast<std::size_t>(l)];
    auto qkv = linear(tape, layer_norm(tape, x, b.ln_1_w, b.ln_1_b, eps), b.attn_w, b.attn_b);
    auto heads = transpose01(tape, reshape(tape, qkv, Shape{n, 3 * NH, HS}));  // (3NH, n, HS): q, k, v heads
    out.k.push_back(reshape(tape, rows(tape, heads, NH, 2 * NH), Shape{1, NH, n, HS}));
    out.v.push_back(reshape(tape, rows(tape, heads, 2 * NH, 3 * NH), Shape{1, NH, n, HS}));
    if (l + 1 == c.n_layer) break;  // the last block's output is not needed
    auto a = attention(tape, qkv, NH, Var<T, Device>(), Var<T, Device>(), Tensor<std::uint8_t, Device>());
    x = add(tape, x, linear(tape, a, b.attn_proj_w, b.attn_proj_b));
    auto f = gelu(tape, linear(tape, layer_norm(tape, x, b.ln_2_w, b.ln_2_b, eps), b.fc_w, b.fc_b));
    x = add(tape, x, linear(tape, f, b.mlp_proj_w, b.mlp_proj_b));
  }
  return out;
}

/// The per-layer keys and values of the tokens `ids` read alone at positions 0..n-1 (no gradient).
template <class T, class Device, class Param>
PrefixKv<T, Device> kv_of_tokens(const Gpt2<T, Device, Param>& m, const std::vector<std::int32_t>& ids) {
  const Gpt2Config& c = m.config;
  PREFIXTUNE_CHECK(!ids.empty(), "kv_of_tokens: no tokens");
  auto t = Tensor<std::int32_t, Cpu>::empty({static_cast<std::int64_t>(ids.size())});
  for (std::size_t i = 0; i < ids.size(); ++i) {
    PREFIXTUNE_CHECK(ids[i] >= 0 && ids[i] < c.vocab_size, "kv_of_tokens: token ", i, " has id ", ids[i],
                     ", outside the vocabulary [0, ", c.vocab_size, ")");
    t.data()[i] = ids[i];
  }
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  const auto x = embedding(tape, t.template to<Device>(), m.wte);
  return kv_of_embeddings(tape, m, x);
}

}  // namespace prefixtune
