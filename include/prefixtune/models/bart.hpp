// SPDX-License-Identifier: MIT
// Bart: the weights of a BART encoder-decoder and its forward pass (learned positions with BART's offset of 2,
// layernorm_embedding, post-LN blocks, exact GELU, cross-attention, tied LM head plus final_logits_bias), with the
// paper's three optional prefixes: encoder self-attention, decoder self-attention and decoder cross-attention.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/models/bart_config.hpp"
#include "prefixtune/models/prefix_kv.hpp"
#include "prefixtune/ops/gemm.hpp"

namespace prefixtune {

/// One encoder layer; HuggingFace names in comments. Linear weights are stored [in, out] (x W + b): HF's
/// nn.Linear [out, in] transposed at load, and self_attn's k_proj / v_proj fused into kv [k | v].
template <class Param>
struct BartEncoderLayer {
  Param q_w, q_b;              // self_attn.q_proj (C, C), (C)
  Param kv_w, kv_b;            // self_attn.k_proj | v_proj (C, 2C), (2C)
  Param out_w, out_b;          // self_attn.out_proj (C, C), (C)
  Param attn_ln_w, attn_ln_b;  // self_attn_layer_norm (C)
  Param fc1_w, fc1_b;          // fc1 (C, F), (F)
  Param fc2_w, fc2_b;          // fc2 (F, C), (C)
  Param ffn_ln_w, ffn_ln_b;    // final_layer_norm (C)
};

/// One decoder layer: causal self-attention (q | k | v fused into qkv, the layout the causal attention op reads),
/// cross-attention over the encoder states, FFN; each followed by its layer norm (post-LN).
template <class Param>
struct BartDecoderLayer {
  Param qkv_w, qkv_b;                // self_attn.q_proj | k_proj | v_proj (C, 3C), (3C)
  Param self_out_w, self_out_b;      // self_attn.out_proj
  Param self_ln_w, self_ln_b;        // self_attn_layer_norm
  Param cross_q_w, cross_q_b;        // encoder_attn.q_proj (C, C)
  Param cross_kv_w, cross_kv_b;      // encoder_attn.k_proj | v_proj (C, 2C), applied to the encoder states
  Param cross_out_w, cross_out_b;    // encoder_attn.out_proj
  Param cross_ln_w, cross_ln_b;      // encoder_attn_layer_norm
  Param fc1_w, fc1_b, fc2_w, fc2_b;  // fc1 (C, F), fc2 (F, C)
  Param ffn_ln_w, ffn_ln_b;          // final_layer_norm
};

/// A BART model: config plus weights. Param is Tensor<T, Device> (frozen) or Var<T, Device> (trainable).
template <class T, class Device = Cpu, class Param = Tensor<T, Device>>
struct Bart {
  BartConfig config;
  Param shared;              // model.shared (V, C): token embeddings of both stacks and the tied head
  Param enc_pos, dec_pos;    // model.{encoder,decoder}.embed_positions (max_positions + 2, C)
  Param enc_ln_w, enc_ln_b;  // model.encoder.layernorm_embedding
  Param dec_ln_w, dec_ln_b;  // model.decoder.layernorm_embedding
  std::vector<BartEncoderLayer<Param>> encoder;
  std::vector<BartDecoderLayer<Param>> decoder;
  Param final_logits_bias;  // (V), added to the logits
  Param lm_head;            // (V, C) only for untied checkpoints

  /// The matrix the LM head multiplies by: lm_head when present, else the tied shared embedding.
  const Param& head() const { return detail::value_of(lm_head).defined() ? lm_head : shared; }
};

namespace detail {

/// Token embeddings (times sqrt(C) with scale_embedding) plus learned positions 0..T-1 (rows 2..T+1), then
/// layernorm_embedding.
template <class T, class Device, class Param>
Var<T, Device> bart_embed(Tape<T, Device>& tape, const Bart<T, Device, Param>& m,
                          const Tensor<std::int32_t, Device>& ids, const Param& positions, const Param& ln_w,
                          const Param& ln_b, const char* stack) {
  const BartConfig& c = m.config;
  PREFIXTUNE_CHECK(ids.defined() && ids.rank() == 2 && ids.size(1) >= 1, "bart ", stack,
                   ": token ids must be (B, T >= 1), got ",
                   ids.defined() ? ids.shape().to_string() : std::string("undefined"));
  const std::int64_t B = ids.size(0), TT = ids.size(1);
  PREFIXTUNE_CHECK(TT <= c.max_position_embeddings, "bart ", stack, ": a sequence of ", TT,
                   " tokens is longer than max_position_embeddings = ", c.max_position_embeddings);
  auto pos = Tensor<std::int32_t, Cpu>::empty({B, TT});
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < TT; ++t) pos(b, t) = static_cast<std::int32_t>(t + BartConfig::kPositionOffset);
  Var<T, Device> tok = embedding(tape, ids, m.shared);
  if (c.scale_embedding) tok = scale(tape, tok, static_cast<T>(std::sqrt(static_cast<double>(c.d_model))));
  auto x = add(tape, tok, embedding(tape, pos.template to<Device>(), positions));
  return layer_norm(tape, x, ln_w, ln_b, static_cast<T>(c.layer_norm_epsilon));
}

template <class T, class Device>
void check_prefix_layers(const PrefixKv<T, Device>& p, std::int64_t layers, const char* which) {
  PREFIXTUNE_CHECK(p.empty() || (static_cast<std::int64_t>(p.k.size()) == layers && p.v.size() == p.k.size()),
                   "bart: the ", which, " prefix has ", p.k.size(), " layers, the model ", layers);
  PREFIXTUNE_CHECK(!p.visible_from.defined(), "bart: the ", which, " prefix cannot be an infix");
}

}  // namespace detail

/// The encoder's output states (B, S, C) for source ids (B, S) with padding mask (B, S) (1 = token; undefined =
/// none); every token also sees the encoder prefix (when given) in every layer. Positions are not shifted.
template <class T, class Device, class Param>
Var<T, Device> bart_encode(Tape<T, Device>& tape, const Bart<T, Device, Param>& m,
                           const Tensor<std::int32_t, Device>& ids, const Tensor<std::uint8_t, Device>& mask,
                           const PrefixKv<T, Device>& prefix = {}) {
  const BartConfig& c = m.config;
  detail::check_prefix_layers(prefix, c.encoder_layers, "encoder");
  PREFIXTUNE_CHECK(!mask.defined() || mask.shape() == ids.shape(), "bart encoder: mask ", mask.shape(),
                   " differs from ids ", ids.shape());
  Var<T, Device> x = detail::bart_embed(tape, m, ids, m.enc_pos, m.enc_ln_w, m.enc_ln_b, "encoder");
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  for (std::int64_t l = 0; l < c.encoder_layers; ++l) {
    const auto& L = m.encoder[static_cast<std::size_t>(l)];
    const Var<T, Device> pk = prefix.empty() ? Var<T, Device>() : prefix.k[l];
    const Var<T, Device> pv = prefix.empty() ? Var<T, Device>() : prefix.v[l];
    auto a = cross_attention(tape, linear(tape, x, L.q_w, L.q_b), linear(tape, x, L.kv_w, L.kv_b),
                             c.encoder_attention_heads, pk, pv, mask);
    x = layer_norm(tape, add(tape, x, linear(tape, a, L.out_w, L.out_b)), L.attn_ln_w, L.attn_ln_b, eps);
    auto f = linear(tape, gelu_exact(tape, linear(tape, x, L.fc1_w, L.fc1_b)), L.fc2_w, L.fc2_b);
    x = layer_norm(tape, add(tape, x, f), L.ffn_ln_w, L.ffn_ln_b, eps);
  }
  return x;
}

/// The decoder's final states (B, T, C) for decoder input ids (B, T) (teacher forcing: shift_tokens_right of the
/// labels), attending causally to themselves (and the decoder prefix) and, in every layer, to the cross prefix and
/// the encoder states `memory` (B, S, C) with the source padding mask (B, S).
template <class T, class Device, class Param>
Var<T, Device> bart_decode(Tape<T, Device>& tape, const Bart<T, Device, Param>& m,
                           const Tensor<std::int32_t, Device>& ids, const Var<T, Device>& memory,
                           const Tensor<std::uint8_t, Device>& source_mask, const PrefixKv<T, Device>& self_prefix = {},
                           const PrefixKv<T, Device>& cross_prefix = {}) {
  const BartConfig& c = m.config;
  detail::check_prefix_layers(self_prefix, c.decoder_layers, "decoder");
  detail::check_prefix_layers(cross_prefix, c.decoder_layers, "cross");
  const auto mem = memory.value();
  PREFIXTUNE_CHECK(mem.defined() && mem.rank() == 3 && mem.size(0) == ids.size(0) && mem.size(2) == c.d_model,
                   "bart decoder: encoder states ", mem.shape(), " do not fit ids ", ids.shape(), " and d_model ",
                   c.d_model);
  Var<T, Device> x = detail::bart_embed(tape, m, ids, m.dec_pos, m.dec_ln_w, m.dec_ln_b, "decoder");
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  const Tensor<std::uint8_t, Device> no_mask;
  for (std::int64_t l = 0; l < c.decoder_layers; ++l) {
    const auto& L = m.decoder[static_cast<std::size_t>(l)];
    const bool sp = !self_prefix.empty(), cp = !cross_prefix.empty();
    auto a = attention(tape, linear(tape, x, L.qkv_w, L.qkv_b), c.decoder_attention_heads,
                       sp ? self_prefix.k[l] : Var<T, Device>(), sp ? self_prefix.v[l] : Var<T, Device>(), no_mask);
    x = layer_norm(tape, add(tape, x, linear(tape, a, L.self_out_w, L.self_out_b)), L.self_ln_w, L.self_ln_b, eps);
    auto ca = cross_attention(tape, linear(tape, x, L.cross_q_w, L.cross_q_b),
                              linear(tape, memory, L.cross_kv_w, L.cross_kv_b), c.decoder_attention_heads,
                              cp ? cross_prefix.k[l] : Var<T, Device>(), cp ? cross_prefix.v[l] : Var<T, Device>(),
                              source_mask);
    x = layer_norm(tape, add(tape, x, linear(tape, ca, L.cross_out_w, L.cross_out_b)), L.cross_ln_w, L.cross_ln_b, eps);
    auto f = linear(tape, gelu_exact(tape, linear(tape, x, L.fc1_w, L.fc1_b)), L.fc2_w, L.fc2_b);
    x = layer_norm(tape, add(tape, x, f), L.ffn_ln_w, L.ffn_ln_b, eps);
  }
  return x;
}

/// Whether final_logits_bias holds any non-zero value (a zero bias is skipped by bart_loss and bart_logits).
template <class T, class Device, class Param>
bool bart_has_logits_bias(const Bart<T, Device, Param>& m) {
  const auto b = detail::value_of(m.final_logits_bias);
  if (!b.defined()) return false;
  for (T v : b.to_vector())
    if (v != T(0)) return true;
  return false;
}

/// The per-token mean cross-entropy of the decoder states h (B, T, C) against labels (B, T) (-100 = padding,
/// ignored), by the fused chunked head; a non-zero final_logits_bias is added to the logits (frozen, no gradient).
/// label_smoothing eps in [0, 1) gives (1 - eps) nll + eps mean_v(-log p_v) per token, as PyTorch's
/// F.cross_entropy(label_smoothing=eps) and HuggingFace's label_smoothing_factor.
template <class T, class Device, class Param>
Var<T, Device> bart_loss(Tape<T, Device>& tape, const Bart<T, Device, Param>& m, const Var<T, Device>& h,
                         const Tensor<std::int32_t, Device>& labels, double label_smoothing = 0) {
  CrossEntropyOptions<T, Device> options;
  options.label_smoothing = label_smoothing;
  if (bart_has_logits_bias(m)) options.bias = detail::value_of(m.final_logits_bias);  // zero: skip the adds
  return cross_entropy(tape, h, m.head(), labels, Reduction::MeanPerToken, options);
}

/// Logits (B, T, V) = h (B, T, C) x head^T + final_logits_bias (no gradient).
template <class T, class Device, class Param>
Tensor<T, Device> bart_logits(const Bart<T, Device, Param>& m, const Tensor<T, Device>& h) {
  const Tensor<T, Device> e = detail::value_of(m.head());
  PREFIXTUNE_CHECK(h.defined() && h.rank() == 3 && h.size(2) == e.size(1), "bart_logits: states ", h.shape(),
                   " do not match the head ", e.shape());
  const std::int64_t V = e.size(0);
  auto logits = Tensor<T, Device>::zeros(Shape{h.size(0), h.size(1), V});
  Tensor<T, Device> rows = logits.reshape({-1, V});
  const bool biased = bart_has_logits_bias(m);
  if (biased) {  // every row starts as the bias; the product is added to it
    const Tensor<T, Device> bias = detail::value_of(m.final_logits_bias).reshape({1, V});
    for (std::int64_t r = 0; r < rows.size(0); ++r) rows.rows(r, r + 1).copy_from(bias);
  }
  gemm(h.reshape({-1, e.size(1)}), Trans::N, e, Trans::T, rows, T(1), biased ? T(1) : T(0));
  return logits;
}

/// HuggingFace's shift_tokens_right: decoder inputs = [decoder_start, labels[:-1]] with -100 replaced by pad.
inline Tensor<std::int32_t, Cpu> shift_tokens_right(const Tensor<std::int32_t, Cpu>& labels, std::int32_t pad_id,
                                                    std::int32_t decoder_start_id) {
  PREFIXTUNE_CHECK(labels.defined() && labels.rank() == 2 && labels.size(1) >= 1,
                   "shift_tokens_right: labels must be (B, T >= 1)");
  auto out = Tensor<std::int32_t, Cpu>::empty(labels.shape());
  for (std::int64_t b = 0; b < labels.size(0); ++b) {
    out(b, 0) = decoder_start_id;
    for (std::int64_t t = 1; t < labels.size(1); ++t) {
      const std::int32_t v = labels(b, t - 1);
      out(b, t) = v == kIgnoreLabel ? pad_id : v;
    }
  }
  return out;
}

}  // namespace prefixtune
