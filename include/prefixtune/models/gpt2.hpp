// SPDX-License-Identifier: MIT
// Gpt2: the weights of a GPT-2-family decoder and its forward pass (learned positions, pre-LN blocks, gelu_new,
// tied LM head), with optional per-layer prefix K/V. Weights are frozen Tensors by default; Param = Var makes
// them trainable (full fine-tuning baseline, pretraining).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/models/gpt2_config.hpp"
#include "prefixtune/models/positions.hpp"
#include "prefixtune/models/prefix_kv.hpp"
#include "prefixtune/ops/gemm.hpp"

namespace prefixtune {

/// The weights of one transformer block, HuggingFace names in comments; linear weights are Conv1D [in, out].
template <class Param>
struct Gpt2Block {
  Param ln_1_w, ln_1_b;            // h.{i}.ln_1.weight/bias          (C)
  Param attn_w, attn_b;            // h.{i}.attn.c_attn.weight/bias   (C, 3C), (3C)
  Param attn_proj_w, attn_proj_b;  // h.{i}.attn.c_proj.weight/bias (C, C), (C)
  Param ln_2_w, ln_2_b;            // h.{i}.ln_2.weight/bias          (C)
  Param fc_w, fc_b;                // h.{i}.mlp.c_fc.weight/bias      (C, 4C), (4C)
  Param mlp_proj_w, mlp_proj_b;    // h.{i}.mlp.c_proj.weight/bias    (4C, C), (C)
};

/// A GPT-2 model: config plus weights. Param is Tensor<T, Device> (frozen) or Var<T, Device> (trainable).
template <class T, class Device = Cpu, class Param = Tensor<T, Device>>
struct Gpt2 {
  using value_type = T;
  using device_type = Device;
  Gpt2Config config;
  Param wte;  // (V, C) token embedding, also the LM head when lm_head is undefined (tied)
  Param wpe;  // (n_positions, C)
  std::vector<Gpt2Block<Param>> h;
  Param ln_f_w, ln_f_b;  // (C)
  Param lm_head;         // (V, C) only for untied checkpoints

  /// The matrix the LM head multiplies by: lm_head when present, else the tied wte.
  const Param& head() const { return detail::value_of(lm_head).defined() ? lm_head : wte; }
};

namespace detail {

/// The HuggingFace key of every GPT-2 weight (without any "transformer." prefix) and its shape.
inline std::vector<std::pair<std::string, Shape>> gpt2_weight_shapes(const Gpt2Config& c) {
  const std::int64_t C = c.n_embd;
  std::vector<std::pair<std::string, Shape>> v = {{"wte.weight", {c.vocab_size, C}},
                                                  {"wpe.weight", {c.n_positions, C}}};
  for (std::int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "h." + std::to_string(i) + ".";
    v.push_back({p + "ln_1.weight", {C}});
    v.push_back({p + "ln_1.bias", {C}});
    v.push_back({p + "attn.c_attn.weight", {C, 3 * C}});
    v.push_back({p + "attn.c_attn.bias", {3 * C}});
    v.push_back({p + "attn.c_proj.weight", {C, C}});
    v.push_back({p + "attn.c_proj.bias", {C}});
    v.push_back({p + "ln_2.weight", {C}});
    v.push_back({p + "ln_2.bias", {C}});
    v.push_back({p + "mlp.c_fc.weight", {C, 4 * C}});
    v.push_back({p + "mlp.c_fc.bias", {4 * C}});
    v.push_back({p + "mlp.c_proj.weight", {4 * C, C}});
    v.push_back({p + "mlp.c_proj.bias", {C}});
  }
  v.push_back({"ln_f.weight", {C}});
  v.push_back({"ln_f.bias", {C}});
  return v;
}

/// Pointers to the model's weights in the order of gpt2_weight_shapes (lm_head not included); const pointers for a
/// const model.
template <class Model>
auto gpt2_weight_slots(Model& m) {
  std::vector<decltype(&m.wte)> v = {&m.wte, &m.wpe};
  for (auto& b : m.h) {
    for (auto* t : {&b.ln_1_w, &b.ln_1_b, &b.attn_w, &b.attn_b, &b.attn_proj_w, &b.attn_proj_b, &b.ln_2_w, &b.ln_2_b,
                    &b.fc_w, &b.fc_b, &b.mlp_proj_w, &b.mlp_proj_b})
      v.push_back(t);
  }
  v.push_back(&m.ln_f_w);
  v.push_back(&m.ln_f_b);
  return v;
}

}  // namespace detail

/// Trainable weights sharing storage with `m` (an optimizer step on them changes m): every weight becomes a Var
/// with requires_grad, named by its HuggingFace key (full fine-tuning, pretraining). A tied head stays tied.
template <class T, class Device>
Gpt2<T, Device, Var<T, Device>> make_trainable(Gpt2<T, Device>& m) {
  Gpt2<T, Device, Var<T, Device>> t;
  t.config = m.config;
  t.h.resize(m.h.size());
  const auto keys = detail::gpt2_weight_shapes(m.config);
  const auto src = detail::gpt2_weight_slots(m);
  const auto dst = detail::gpt2_weight_slots(t);
  for (std::size_t i = 0; i < src.size(); ++i) *dst[i] = Var<T, Device>(*src[i], true, keys[i].first);
  if (m.lm_head.defined()) t.lm_head = Var<T, Device>(m.lm_head, true, "lm_head.weight");
  return t;
}

/// Frozen weights sharing storage with a trainable model (what training changes shows through), for saving
/// (save_gpt2), scoring and generation.
template <class T, class Device>
Gpt2<T, Device> frozen_view(const Gpt2<T, Device, Var<T, Device>>& m) {
  Gpt2<T, Device> f;
  f.config = m.config;
  f.h.resize(m.h.size());
  const auto from = detail::gpt2_weight_slots(m);
  const auto to = detail::gpt2_weight_slots(f);
  for (std::size_t i = 0; i < from.size(); ++i) *to[i] = from[i]->value();
  if (m.lm_head.defined()) f.lm_head = m.lm_head.value();
  return f;
}

/// Number of weights (a tied head counted once), e.g. 124,439,808 for GPT-2 small.
template <class T, class Device, class Param>
std::int64_t num_parameters(const Gpt2<T, Device, Param>& m) {
  std::int64_t n = 0;
  for (const auto* w : detail::gpt2_weight_slots(m)) n += detail::value_of(*w).numel();
  if (detail::value_of(m.lm_head).defined()) n += detail::value_of(m.lm_head).numel();
  return n;
}

/// A copy of a frozen model on another device, e.g. `to_device<Cuda>(load_gpt2<float>(dir))`.
template <class To, class T, class From>
Gpt2<T, To> to_device(const Gpt2<T, From>& m) {
  Gpt2<T, To> r;
  r.config = m.config;
  r.h.resize(m.h.size());
  const auto from = detail::gpt2_weight_slots(m);
  const auto to = detail::gpt2_weight_slots(r);
  for (std::size_t i = 0; i < from.size(); ++i) *to[i] = from[i]->template to<To>();
  if (m.lm_head.defined()) r.lm_head = m.lm_head.template to<To>();
  return r;
}

/// Final hidden states (B, T, C) after ln_f for token ids (B, T) (right-padded rows flagged 0 in mask (B, T),
/// which may be undefined for "no padding"). Real tokens take positions position_offset..position_offset+T-1
/// (the paper and PEFT use P). The prefix, when given, is seen by every token in every layer (an infix, with
/// prefix.visible_from, only by the tokens after it; see PrefixKv).
template <class T, class Device, class Param>
Var<T, Device> gpt2_hidden(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m,
                           const Tensor<std::int32_t, Device>& ids, const Tensor<std::uint8_t, Device>& mask,
                           const PrefixKv<T, Device>& prefix, std::int64_t position_offset) {
  const Gpt2Config& c = m.config;
  PREFIXTUNE_CHECK(ids.defined() && ids.rank() == 2, "gpt2: token ids must be (B, T), got ", ids.shape());
  PREFIXTUNE_CHECK(!mask.defined() || mask.shape() == ids.shape(), "gpt2: mask shape ", mask.shape(),
                   " differs from ids ", ids.shape());
  PREFIXTUNE_CHECK(
      prefix.empty() || (static_cast<std::int64_t>(prefix.k.size()) == c.n_layer && prefix.v.size() == prefix.k.size()),
      "gpt2: the prefix has ", prefix.k.size(), " key and ", prefix.v.size(),
      " value layers but the model has n_layer=", c.n_layer);
  const std::int64_t B = ids.size(0), TT = ids.size(1);
  const auto pos = detail::token_positions(B, TT, position_offset, c.n_positions, prefix.visible_from, prefix.length())
                       .template to<Device>();
  const auto from =
      prefix.visible_from.defined() ? prefix.visible_from.template to<Device>() : Tensor<std::int32_t, Device>();
  Var<T, Device> x = add(tape, embedding(tape, ids, m.wte), embedding(tape, pos, m.wpe));
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  for (std::int64_t l = 0; l < c.n_layer; ++l) {
    const Gpt2Block<Param>& b = m.h[static_cast<std::size_t>(l)];
    const Var<T, Device> pk = prefix.empty() ? Var<T, Device>() : prefix.k[l];
    const Var<T, Device> pv = prefix.empty() ? Var<T, Device>() : prefix.v[l];
    auto qkv = linear(tape, layer_norm(tape, x, b.ln_1_w, b.ln_1_b, eps), b.attn_w, b.attn_b);
    auto a = attention(tape, qkv, c.n_head, pk, pv, mask, from);
    x = add(tape, x, linear(tape, a, b.attn_proj_w, b.attn_proj_b));
    auto f = gelu(tape, linear(tape, layer_norm(tape, x, b.ln_2_w, b.ln_2_b, eps), b.fc_w, b.fc_b));
    x = add(tape, x, linear(tape, f, b.mlp_proj_w, b.mlp_proj_b));
  }
  return layer_norm(tape, x, m.ln_f_w, m.ln_f_b, eps);
}

/// hidden_states for a GPT-2: gpt2_hidden (what the model-generic trainer and scorer call).
template <class T, class Device, class Param>
Var<T, Device> hidden_states(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m,
                             const Tensor<std::int32_t, Device>& ids, const Tensor<std::uint8_t, Device>& mask,
                             const PrefixKv<T, Device>& prefix, std::int64_t position_offset) {
  return gpt2_hidden(tape, m, ids, mask, prefix, position_offset);
}

/// The language-model loss over aligned targets (B, T) (-100 = no label), computed by the fused, chunked head.
template <class T, class Device, class Param>
Var<T, Device> gpt2_loss(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m, const Var<T, Device>& hidden,
                         const Tensor<std::int32_t, Device>& targets, Reduction reduction) {
  return cross_entropy(tape, hidden, m.head(), targets, reduction);
}

/// Logits (B, T, V) = hidden (B, T, C) x head^T, for evaluation and generation (no gradient).
template <class T, class Device, class Param>
Tensor<T, Device> gpt2_logits(const Gpt2<T, Device, Param>& m, const Tensor<T, Device>& hidden) {
  const Tensor<T, Device> e = detail::value_of(m.head());
  PREFIXTUNE_CHECK(hidden.defined() && hidden.rank() == 3 && hidden.size(2) == e.size(1), "gpt2_logits: hidden ",
                   hidden.shape(), " does not match the head ", e.shape());
  Tensor<T, Device> logits(Shape{hidden.size(0), hidden.size(1), e.size(0)});
  Tensor<T, Device> rows = logits.reshape({-1, e.size(0)});
  gemm(hidden.reshape({-1, e.size(1)}), Trans::N, e, Trans::T, rows);
  return logits;
}

}  // namespace prefixtune
