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
    return GqaHeads<T, Device>{
        config.num_attention_heads, config.num_key_value_heads, config.head_dim, b.q_norm, b.k_norm,
        config.rms_norm_eps};
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

namespace detail {

/// Decoder layer l on x (B, T, C) with the rotation tables of its tokens, the prefix K/V already repeated for the
/// query heads (or undefined), the key mask and the infix visibility (or undefined). With `collect`, the layer's
/// own keys (rotated, normalized) and values, KVH heads (1, KVH, T, HD) of batch row 0, are appended to it.
template <class T, class Device>
Var<T, Device> llama_layer(Tape<T, Device>& tape, const Llama<T, Device>& m, std::int64_t l, const Var<T, Device>& x,
                           const Tensor<T, Device>& cos, const Tensor<T, Device>& sin, const Var<T, Device>& pk,
                           const Var<T, Device>& pv, const Tensor<std::uint8_t, Device>& mask,
                           const Tensor<std::int32_t, Device>& from, PrefixKv<T, Device>* collect = nullptr) {
  const LlamaConfig& c = m.config;
  const LlamaBlock<T, Device>& b = m.layers[static_cast<std::size_t>(l)];
  const T eps = static_cast<T>(c.rms_norm_eps);
  const Tensor<T, Device> none;
  auto raw = linear(tape, rms_norm(tape, x, b.input_norm, eps), b.qkv_w, b.qkv_b);
  if (collect) {
    const std::int64_t NH = c.num_attention_heads, KVH = c.num_key_value_heads, HD = c.head_dim, n = raw.shape()[1];
    auto compact = gqa_qkv(tape, reshape(tape, rows(tape, raw, 0, 1), Shape{n, (NH + 2 * KVH) * HD}), cos.rows(0, n),
                           sin.rows(0, n), m.heads(l), false);
    auto heads = transpose01(tape, reshape(tape, compact, Shape{n, NH + 2 * KVH, HD}));  // (heads, n, HD)
    collect->k.push_back(reshape(tape, rows(tape, heads, NH, NH + KVH), Shape{1, KVH, n, HD}));
    collect->v.push_back(reshape(tape, rows(tape, heads, NH + KVH, NH + 2 * KVH), Shape{1, KVH, n, HD}));
  }
  auto a = attention(tape, gqa_qkv(tape, raw, cos, sin, m.heads(l)), c.num_attention_heads, pk, pv, mask, from);
  auto y = add(tape, x, linear(tape, a, b.o_w, b.o_b));
  auto h = rms_norm(tape, y, b.post_norm, eps);
  auto f = swiglu(tape, linear(tape, h, b.gate_w, none), linear(tape, h, b.up_w, none));
  return add(tape, y, linear(tape, f, b.down_w, none));
}

}  // namespace detail

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
  const std::int64_t B = ids.size(0), TT = ids.size(1);
  const auto pos =
      detail::token_positions(B, TT, position_offset, c.max_position_embeddings, prefix.visible_from, prefix.length());
  const auto [cos, sin] = detail::llama_rope(m, pos);
  const auto from =
      prefix.visible_from.defined() ? prefix.visible_from.template to<Device>() : Tensor<std::int32_t, Device>();
  Var<T, Device> x = embedding(tape, ids, m.embed);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    Var<T, Device> pk, pv;
    if (!prefix.empty()) {
      PREFIXTUNE_CHECK(prefix.k[l].shape().rank() == 4 && prefix.k[l].shape()[1] == c.num_key_value_heads,
                       "llama: ", "layer ", l, "'s prefix keys ", prefix.k[l].shape(),
                       " must be (1 or B, KVH = ", c.num_key_value_heads, ", P, HD = ", c.head_dim, ")");
      pk = repeat_heads(tape, prefix.k[l], c.group_size());
      pv = repeat_heads(tape, prefix.v[l], c.group_size());
    }
    x = detail::llama_layer(tape, m, l, x, cos, sin, pk, pv, mask, from);
  }
  return rms_norm(tape, x, m.norm, static_cast<T>(c.rms_norm_eps));
}

/// hidden_states for a Llama: llama_hidden (what the model-generic trainer and scorer call).
template <class T, class Device>
Var<T, Device> hidden_states(Tape<T, Device>& tape, const Llama<T, Device>& m, const Tensor<std::int32_t, Device>& ids,
                             const Tensor<std::uint8_t, Device>& mask, const PrefixKv<T, Device>& prefix,
                             std::int64_t position_offset) {
  return llama_hidden(tape, m, ids, mask, prefix, position_offset);
}

/// Runs `inputs` (n, C), the input embeddings of one sequence, through the model at positions 0..n-1 and returns
/// every layer's keys (normalized and rotated, as transformers caches them) and values, each (1, KVH, n, HD): the
/// K/V its attention would read for those n tokens. Differentiable with respect to `inputs`.
template <class T, class Device, class X>
PrefixKv<T, Device> kv_of_embeddings(Tape<T, Device>& tape, const Llama<T, Device>& m, const X& inputs) {
  const LlamaConfig& c = m.config;
  const Tensor<T, Device> iv = detail::value_of(inputs);
  PREFIXTUNE_CHECK(iv.defined() && iv.rank() == 2 && iv.size(1) == c.hidden_size && iv.size(0) >= 1,
                   "kv_of_embeddings: inputs ", iv.defined() ? iv.shape().to_string() : std::string("(undefined)"),
                   " must be (n >= 1, hidden_size = ", c.hidden_size, ")");
  const std::int64_t n = iv.size(0);
  const auto [cos, sin] = detail::llama_rope(m, detail::token_positions(1, n, 0, c.max_position_embeddings));
  Var<T, Device> x = reshape(tape, inputs, Shape{1, n, c.hidden_size});
  PrefixKv<T, Device> out;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
    x = detail::llama_layer(tape, m, l, x, cos, sin, Var<T, Device>(), Var<T, Device>(), Tensor<std::uint8_t, Device>(),
                            Tensor<std::int32_t, Device>(), &out);
  return out;
}

/// The per-layer keys and values of the tokens `ids` read alone at positions 0..n-1 (no gradient): a prefix
/// initialized from real words.
template <class T, class Device>
PrefixKv<T, Device> kv_of_tokens(const Llama<T, Device>& m, const std::vector<std::int32_t>& ids) {
  PREFIXTUNE_CHECK(!ids.empty(), "kv_of_tokens: no tokens");
  auto t = Tensor<std::int32_t, Cpu>::empty({static_cast<std::int64_t>(ids.size())});
  for (std::size_t i = 0; i < ids.size(); ++i) {
    PREFIXTUNE_CHECK(ids[i] >= 0 && ids[i] < m.config.vocab_size, "kv_of_tokens: token ", i, " has id ", ids[i],
                     ", outside the vocabulary [0, ", m.config.vocab_size, ")");
    t.data()[i] = ids[i];
  }
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  return kv_of_embeddings(tape, m, embedding(tape, t.template to<Device>(), m.embed));
}

}  // namespace prefixtune
