// SPDX-License-Identifier: MIT
// Seq2SeqPrefix: the paper's three independent prefixes of an encoder-decoder ([prefix, X, prefix', Y]), each an
// MLP-reparameterized PrefixEncoder: encoder self-attention, decoder self-attention, decoder cross-attention. PEFT
// prefixes only the decoder; the paper's code (and its summarization results) uses all three.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/models/bart.hpp"
#include "prefixtune/prefix/kv_table.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune {

/// The merged tables of a Seq2SeqPrefix: (P, 2 * encoder_layers * C), (P, 2 * decoder_layers * C) twice.
template <class T, class Device = Cpu>
struct Seq2SeqTables {
  DirectPrefix<T, Device> encoder, decoder, cross;
};

/// Three PrefixEncoders of the same PrefixConfig (length P, mid): parameters named "encoder_prefix.*",
/// "decoder_prefix.*" and "cross_prefix.*".
template <class T, class Device = Cpu>
struct Seq2SeqPrefix {
  PrefixEncoder<T, Device> encoder, decoder, cross;  // each knows its stack's KvShape

  static Seq2SeqPrefix create(const PrefixConfig& pc, const BartConfig& c, Rng& rng) {
    PREFIXTUNE_CHECK(pc.placement == Placement::Prefix && pc.position_offset < 0,
                     "Seq2SeqPrefix: an encoder-decoder's prefixes shift no positions and have no infix form");
    Seq2SeqPrefix s;
    s.encoder = named(PrefixEncoder<T, Device>::create(pc, c.encoder_kv_shape(), rng), "encoder_prefix");
    s.decoder = named(PrefixEncoder<T, Device>::create(pc, c.decoder_kv_shape(), rng), "decoder_prefix");
    s.cross = named(PrefixEncoder<T, Device>::create(pc, c.decoder_kv_shape(), rng), "cross_prefix");
    return s;
  }

  std::int64_t length() const { return encoder.length(); }
  std::vector<Var<T, Device>> parameters() const {
    std::vector<Var<T, Device>> all;
    for (const auto* e : {&encoder, &decoder, &cross})
      for (const auto& p : e->parameters()) all.push_back(p);
    return all;
  }

  /// The three prefixes' per-layer K/V; dropout (config.dropout) when grad mode is on and rng is given.
  Seq2SeqPrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, Rng* dropout_rng = nullptr) const {
    return {prefix_kv_from_table(tape, encoder.forward(tape, dropout_rng), encoder.shape),
            prefix_kv_from_table(tape, decoder.forward(tape, dropout_rng), decoder.shape),
            prefix_kv_from_table(tape, cross.forward(tape, dropout_rng), cross.shape)};
  }

  /// The three MLPs evaluated once: what a trained prefix is served from.
  Seq2SeqTables<T, Device> merged() const { return {merge(encoder), merge(decoder), merge(cross)}; }

 private:
  static PrefixEncoder<T, Device> named(PrefixEncoder<T, Device> e, const std::string& who) {
    for (auto* v : {&e.embedding, &e.w1, &e.b1, &e.w_mid, &e.b_mid, &e.w2, &e.b2})
      if (v->defined()) {
        const std::string field = v->name().substr(v->name().find('.') + 1);  // "prefix.w1" -> "w1"
        *v = Var<T, Device>(v->value(), true, who + "." + field);
      }
    return e;
  }
};

/// The three encoders' parameters copied to another device (train there, then `to_device<Cpu>` to save).
template <class To, class T, class From>
Seq2SeqPrefix<T, To> to_device(const Seq2SeqPrefix<T, From>& s) {
  return {to_device<To>(s.encoder), to_device<To>(s.decoder), to_device<To>(s.cross)};
}

/// Merged tables copied to another device.
template <class To, class T, class From>
Seq2SeqTables<T, To> to_device(const Seq2SeqTables<T, From>& t) {
  return {to_device<To>(t.encoder), to_device<To>(t.decoder), to_device<To>(t.cross)};
}

/// The per-layer K/V of merged tables (no gradient), for serving and evaluation.
template <class T, class Device>
Seq2SeqPrefixKv<T, Device> seq2seq_prefix_kv(Tape<T, Device>& tape, const Seq2SeqTables<T, Device>& t,
                                             const BartConfig& c) {
  return {prefix_kv_from_table(tape, t.encoder.table, c.encoder_kv_shape()),
          prefix_kv_from_table(tape, t.decoder.table, c.decoder_kv_shape()),
          prefix_kv_from_table(tape, t.cross.table, c.decoder_kv_shape())};
}

/// The per-token mean loss of one teacher-forced batch with the three prefixes: source ids / mask (B, S), decoder
/// inputs and labels (B, T) (labels -100 where padded; inputs from shift_tokens_right); label_smoothing as in
/// bart_loss.
template <class T, class Device, class Param>
Var<T, Device> bart_prefix_loss(Tape<T, Device>& tape, const Bart<T, Device, Param>& m,
                                const Seq2SeqPrefixKv<T, Device>& prefix, const Tensor<std::int32_t, Device>& source,
                                const Tensor<std::uint8_t, Device>& source_mask,
                                const Tensor<std::int32_t, Device>& decoder_inputs,
                                const Tensor<std::int32_t, Device>& labels, double label_smoothing = 0) {
  const auto memory = bart_encode(tape, m, source, source_mask, prefix.encoder);
  const auto h = bart_decode(tape, m, decoder_inputs, memory, source_mask, prefix.decoder, prefix.cross);
  return bart_loss(tape, m, h, labels, label_smoothing);
}

}  // namespace prefixtune
