// SPDX-License-Identifier: MIT
// Llama: the frozen weights of a Llama-family decoder (llama, mistral, qwen2, qwen3) and its forward pass with
// optional per-layer prefix K/V: RMSNorm pre-norm blocks, fused q|k|v projection (optional biases), Qwen3's
// per-head q/k norms, rotary embeddings, grouped-query attention, SwiGLU MLP, tied or untied LM head.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/autograd/llama_functions.hpp"
#include "prefixtune/models/llama_config.hpp"
#include "prefixtune/models/llama_rope.hpp"
#include "prefixtune/models/positions.hpp"
#include "prefixtune/models/prefix_kv.hpp"
#include "prefixtune/ops/gemm.hpp"

namespace prefixtune {

/// One decoder layer; linear weights are stored [in, out] (HuggingFace's nn.Linear [out, in], transposed on load).
template <class T, class Device = Cpu>
struct LlamaBlock {
  Tensor<T, Device> input_norm;      // input_layernorm.weight (C)
  Tensor<T, Device> qkv_w, qkv_b;    // self_attn.{q,k,v}_proj fused: (C, (NH + 2 KVH) HD); bias or undefined
  Tensor<T, Device> q_norm, k_norm;  // self_attn.{q,k}_norm.weight (HD): Qwen3 only
  Tensor<T, Device> o_w, o_b;        // self_attn.o_proj: (NH HD, C); bias only with attention_bias
  Tensor<T, Device> post_norm;       // post_attention_layernorm.weight (C)
  Tensor<T, Device> gate_w, up_w;    // mlp.gate_proj, mlp.up_proj: (C, I)
  Tensor<T, Device> down_w;          // mlp.down_proj: (I, C)
};

/// A frozen Llama-family model: config, weights and its rotary frequencies.
template <class T, class Device = Cpu>
struct Llama {
  using value_type = T;
  using device_type = Device;
  LlamaConfig config;
  Tensor<T, Device> embed;  // model.embed_tokens.weight (V, C); also the LM head when tied
  std::vector<LlamaBlock<T, Device>> layers;
  Tensor<T, Device> norm;     // model.norm.weight (C)
  Tensor<T, Device> lm_head;  // lm_head.weight (V, C); undefined when tied
  std::vector<float> inv_freq;

  /// The matrix the LM head multiplies by: lm_head when present, else the tied embedding.
  const Tensor<T, Device>& head() const { return lm_head.defined() ? lm_head : embed; }
  /// Layer l's attention heads (and Qwen3's per-head norms).
  GqaHeads<T, Device> heads(std::int64_t l) const {
    const auto& b = layers[static_cast<std::size_t>(l)];
    return GqaHeads<T, Device>{config.num_attention_heads, config.num_key_value_heads, config.head_dim, b.q_norm,
                               b.k_norm, config.rms_norm_eps};
  }
};

namespace detail {

/// Pointers to every weight tensor of m (defined or not), for device copies and counting.
template <class Model>
auto llama_weight_slots(Model& m) {
  std::vector<decltype(&m.embed)> v = {&m.embed, &m.norm, &m.lm_head};
  for (auto& b : m.layers)
    for (auto* t : {&b.input_norm, &b.qkv_w, &b.qkv_b, &b.q_norm, &b.k_norm, &b.o_w, &b.o_b, &b.post_norm, &b.gate_w,
                    &b.up_w, &b.down_w})
      v.push_back(t);
  return v;
}

/// cos / sin (B*T, HD) of position ids (B, T) on the model's device.
template <class T, class Device>
std::pair<Tensor<T, Device>, Tensor<T, Device>> llama_rope(const Llama<T, Device>& m,
                                                           const Tensor<std::int32_t, Cpu>& pos) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(pos.numel()));
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = pos.data()[i];
  Tensor<T, Cpu> c, s;
  rope_tables(m.inv_freq, p, c, s);
  return {c.template to<Device>(), s.template to<Device>()};
}

}  // namespace detail

/// Number of weights (a tied head counted once).
template <class T, class Device>
std::int64_t num_parameters(const Llama<T, Device>& m) {
  std::int64_t n = 0;
  for (const auto* w : detail::llama_weight_slots(m))
    if (w->defined()) n += w->numel();
  return n;
}

/// A copy of the model on another device, e.g. `to_device<Cuda>(load_llama<float>(dir))`.
template <class To, class T, class From>
Llama<T, To> to_device(const Llama<T, From>& m) {
  Llama<T, To> r;
  r.config = m.config;
  r.inv_freq = m.inv_freq;
  r.layers.resize(m.layers.size());
  const auto from = detail::llama_weight_slots(m);
  const auto to = detail::llama_weight_slots(r);
  for (std::size_t i = 0; i < from.size(); ++i)
    if (from[i]->defined()) *to[i] = from[i]->template to<To>();
  return r;
}

/// Final hidden states (B, T, C) after the last RMSNorm for token ids (B, T) (right-padded rows flagged 0 in mask,
/// which may be undefined). Real tokens take positions position_offset.. (PEFT: P); the prefix, when given, holds
/// per layer KVH key and value heads (1 or B, KVH, P, HD), used as stored (never rotated or normalized: what
/// transformers caches), seen by every token (an infix, with prefix.visible_from, by the tokens after it).
template <class T, class Device>
Var<T, Device> llama_hidden(Tape<T, Device>& tape, const Llama<T, Device>& m, const Tensor<std::int32_t, Device>& ids,
                            const Tensor<std::uint8_t, Device>& mask, const PrefixKv<T, Device>& prefix,
                            std::int64_t position_offset) {
  const LlamaConfig& c = m.config;
  PREFIXTUNE_CHECK(ids.defined() && ids.rank() == 2, "llama: token ids must be (B, T), got ", ids.shape());
  PREFIXTUNE_CHECK(!mask.defined() || mask.shape() == ids.shape(), "llama: mask shape ", mask.shape(),
                   " differs from ids ", ids.shape());
  PREFIXTUNE_CHECK(prefix.empty() || (static_cast<std::int64_t>(prefix.k.size()) == c.num_hidden_layers &&
                                      prefix.v.size() == prefix.k.size()),
                   "llama: the prefix has ", prefix.k.size(), " key and ", prefix.v.size(),
                   " value layers but the model has num_hidden_layers=", c.num_hidden_layers);
  const std::int64_t B = ids.size(0), TT = ids.size(1), NH = c.num_attention_heads, group = c.group_size();
  const auto pos = detail::token_positions(B, TT, position_offset, c.max_position_embeddings, prefix.visible_from,
                                           prefix.length());
  const auto [cos, sin] = detail::llama_rope(m, pos);
  const auto from =
      prefix.visible_from.defined() ? prefix.visible_from.template to<Device>() : Tensor<std::int32_t, Device>();
  const T eps = static_cast<T>(c.rms_norm_eps);
  const Tensor<T, Device> none;
  Var<T, Device> x = embedding(tape, ids, m.embed);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LlamaBlock<T, Device>& b = m.layers[static_cast<std::size_t>(l)];
    Var<T, Device> pk, pv;
    if (!prefix.empty()) {
      PREFIXTUNE_CHECK(prefix.k[l].shape().rank() == 4 && prefix.k[l].shape()[1] == c.num_key_value_heads, "llama: ",
                       "layer ", l, "'s prefix keys ", prefix.k[l].shape(), " must be (1 or B, KVH = ",
                       c.num_key_value_heads, ", P, HD = ", c.head_dim, ")");
      pk = repeat_heads(tape, prefix.k[l], group);
      pv = repeat_heads(tape, prefix.v[l], group);
    }
    auto raw = linear(tape, rms_norm(tape, x, b.input_norm, eps), b.qkv_w, b.qkv_b);
    auto qkv = gqa_qkv(tape, raw, cos, sin, m.heads(l));
    auto a = attention(tape, qkv, NH, pk, pv, mask, from);
    x = add(tape, x, linear(tape, a, b.o_w, b.o_b));
    auto h = rms_norm(tape, x, b.post_norm, eps);
    auto f = swiglu(tape, linear(tape, h, b.gate_w, none), linear(tape, h, b.up_w, none));
    x = add(tape, x, linear(tape, f, b.down_w, none));
  }
  return rms_norm(tape, x, m.norm, eps);
}

}  // namespace prefixtune
