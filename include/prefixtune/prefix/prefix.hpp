// SPDX-License-Identifier: MIT
// Prefix parameters over a KvShape (any model's attention stack): PrefixConfig, the MLP reparameterizer
// PrefixEncoder (Embedding(P, D) -> Linear(D, mid) -> tanh [-> Linear(mid, mid) -> tanh] -> Linear(mid, 2*L*D),
// D = kv_heads * head_dim, PEFT's token_dim), the DirectPrefix table and merge(). The table's split into the K/V
// attention reads is prefix/kv_table.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/prefix/kv_table.hpp"

namespace prefixtune {

/// Where the trained vectors sit: before the whole sequence ([prefix, X, Y], the paper's method) or between source
/// and target ([X, infix, Y], the paper's infix ablation: only the target side sees them, and it takes positions
/// after them).
enum class Placement { Prefix, Infix };

namespace detail {

/// Position of the first real token of a sequence read with a prefix of P slots at `placement`: 0 for an infix (the
/// source starts at 0), else first_token_position (P, or position_offset when >= 0).
inline std::int64_t prefix_first_position(Placement placement, std::int64_t P, std::int64_t position_offset) {
  return placement == Placement::Infix ? 0 : first_token_position(P, position_offset);
}

/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for nn.Linear weights and biases.
template <class T, class Device>
Tensor<T, Device> linear_default_init(const Shape& shape, std::int64_t fan_in, Rng& rng) {
  auto t = Tensor<T, Device>::empty(shape);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  fill_uniform(t, rng, -bound, bound);
  return t;
}

}  // namespace detail

/// Prefix hyper-parameters (defaults: the paper's table-to-text settings and PEFT's).
struct PrefixConfig {
  std::int64_t length = 10;           // P, prefix slots per layer
  std::int64_t mid = 512;             // hidden width of the reparameterization MLP
  double dropout = 0.0;               // dropout on the MLP output (training only)
  std::int64_t position_offset = -1;  // position of the first real token: -1 = P (paper, PEFT), or 0
  bool deep = false;                  // a second mid -> mid tanh layer in the MLP (the paper code's deep variant)
  Placement placement = Placement::Prefix;

  /// Position of the first real token: 0 for an infix (the source starts at 0; the target follows the infix).
  std::int64_t offset() const { return detail::prefix_first_position(placement, length, position_offset); }
  void validate() const {
    PREFIXTUNE_CHECK(length >= 1, "prefix length P must be >= 1, got ", length);
    PREFIXTUNE_CHECK(mid >= 1, "prefix MLP width mid must be >= 1, got ", mid);
    PREFIXTUNE_CHECK(dropout >= 0 && dropout < 1, "prefix dropout ", dropout, " is outside [0, 1)");
    PREFIXTUNE_CHECK(placement == Placement::Prefix || position_offset < 0,
                     "prefix: position_offset does not apply to an infix (its target side follows its P slots)");
  }
};

/// A trainable (P, 2*L*KVH*HD) table used directly as the prefix (no reparameterization), or the result of
/// merge().
template <class T, class Device = Cpu>
struct DirectPrefix {
  Var<T, Device> table;  // (P, KvShape::table_width())
  Placement placement = Placement::Prefix;
  std::int64_t position_offset = -1;  // position of the first real token: -1 = P, or 0 (a prefix only)

  /// N(0, 1) initialization, as the paper's code does for a direct table.
  static DirectPrefix random_normal(std::int64_t P, const KvShape& s, Rng& rng) {
    PREFIXTUNE_CHECK(P >= 1, "prefix length P must be >= 1, got ", P);
    auto t = Tensor<T, Device>::empty({P, s.table_width()});
    fill_normal(t, rng);
    return DirectPrefix{Var<T, Device>(t, true, "prefix.table")};
  }
  /// U(0, 1) initialization (the paper's other random initialization).
  static DirectPrefix random_uniform(std::int64_t P, const KvShape& s, Rng& rng) {
    PREFIXTUNE_CHECK(P >= 1, "prefix length P must be >= 1, got ", P);
    auto t = Tensor<T, Device>::empty({P, s.table_width()});
    fill_uniform(t, rng, 0.0, 1.0);
    return DirectPrefix{Var<T, Device>(t, true, "prefix.table")};
  }
  std::int64_t length() const { return table.value().size(0); }
  std::int64_t offset() const { return detail::prefix_first_position(placement, length(), position_offset); }
  std::vector<Var<T, Device>> parameters() const { return {table}; }
  Var<T, Device> forward(Tape<T, Device>&, Rng* = nullptr) const { return table; }
  /// The per-layer K/V the model's attention reads (a training step's view of the prefix); the model's config
  /// gives the KvShape.
  template <class Model>
  PrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, const Model& m, Rng* = nullptr) const {
    return prefix_kv_from_table(tape, table, m.config.kv_shape());
  }
  /// A copy of the table, detached from training (what gets served).
  template <class Model>
  DirectPrefix merged(const Model&) const {
    return DirectPrefix{Var<T, Device>(table.value().clone(), true, "prefix.table"), placement, position_offset};
  }
};

/// The MLP reparameterizer P = MLP(P'): Embedding(P, D) -> Linear(D, mid) -> tanh [-> Linear(mid, mid) -> tanh
/// when deep] -> Linear(mid, 2*L*D), D = kv_heads * head_dim (PEFT's token_dim), with PyTorch's default
/// initialization; weights are stored [in, out] (x W + b).
template <class T, class Device = Cpu>
struct PrefixEncoder {
  PrefixConfig config;
  KvShape shape;                // the stack it fills
  Var<T, Device> embedding;     // (P, D), N(0, 1)
  Var<T, Device> w1, b1;        // (D, mid), (mid)
  Var<T, Device> w_mid, b_mid;  // (mid, mid), (mid): only when config.deep
  Var<T, Device> w2, b2;        // (mid, 2*L*D), (2*L*D)

  /// An encoder for one attention stack (a GPT-2 config converts to its KvShape; an encoder-decoder has three).
  static PrefixEncoder create(const PrefixConfig& pc, const KvShape& s, Rng& rng) {
    pc.validate();
    PREFIXTUNE_CHECK(s.layers >= 1 && s.kv_heads >= 1 && s.head_dim >= 1, "PrefixEncoder: ", s.to_string(),
                     " must have every count >= 1");
    PrefixEncoder e;
    e.config = pc;
    e.shape = s;
    const std::int64_t C = s.kv_width(), out = s.table_width();
    auto emb = Tensor<T, Device>::empty({pc.length, C});
    fill_normal(emb, rng);
    e.embedding = Var<T, Device>(emb, true, "prefix.embedding");
    e.w1 = Var<T, Device>(detail::linear_default_init<T, Device>({C, pc.mid}, C, rng), true, "prefix.w1");
    e.b1 = Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid}, C, rng), true, "prefix.b1");
    if (pc.deep) {
      e.w_mid =
          Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid, pc.mid}, pc.mid, rng), true, "prefix.w_mid");
      e.b_mid = Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid}, pc.mid, rng), true, "prefix.b_mid");
    }
    e.w2 = Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid, out}, pc.mid, rng), true, "prefix.w2");
    e.b2 = Var<T, Device>(detail::linear_default_init<T, Device>({out}, pc.mid, rng), true, "prefix.b2");
    return e;
  }

  std::int64_t length() const { return config.length; }
  std::int64_t offset() const { return config.offset(); }
  std::vector<Var<T, Device>> parameters() const {
    if (config.deep) return {embedding, w1, b1, w_mid, b_mid, w2, b2};
    return {embedding, w1, b1, w2, b2};
  }

  /// The prefix table (P, 2*L*D); dropout (config.dropout) applies when grad mode is on and rng is given.
  Var<T, Device> forward(Tape<T, Device>& tape, Rng* dropout_rng = nullptr) const {
    auto hidden = tanh(tape, linear(tape, embedding, w1, b1));
    if (config.deep) hidden = tanh(tape, linear(tape, hidden, w_mid, b_mid));
    auto table = linear(tape, hidden, w2, b2);
    if (config.dropout > 0 && dropout_rng) table = dropout(tape, table, static_cast<T>(config.dropout), *dropout_rng);
    return table;
  }
  /// The per-layer K/V of the table, split by the model's KvShape.
  template <class Model>
  PrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, const Model& m, Rng* dropout_rng = nullptr) const {
    return prefix_kv_from_table(tape, forward(tape, dropout_rng), m.config.kv_shape());
  }
  /// merge(*this): the MLP evaluated once.
  template <class Model>
  DirectPrefix<T, Device> merged(const Model&) const;
};

namespace detail {

/// A parameter copied to another device: same value, requires_grad and name; no gradient.
template <class To, class T, class From>
Var<T, To> var_to_device(const Var<T, From>& v) {
  if (!v.defined()) return Var<T, To>();
  return Var<T, To>(v.value().template to<To>(), v.requires_grad(), v.name());
}

}  // namespace detail

/// The encoder's parameters copied to another device, e.g. `to_device<Cuda>(encoder)` (train there, then
/// `to_device<Cpu>` to save).
template <class To, class T, class From>
PrefixEncoder<T, To> to_device(const PrefixEncoder<T, From>& e) {
  PrefixEncoder<T, To> r;
  r.config = e.config;
  r.shape = e.shape;
  r.embedding = detail::var_to_device<To>(e.embedding);
  r.w1 = detail::var_to_device<To>(e.w1);
  r.b1 = detail::var_to_device<To>(e.b1);
  r.w_mid = detail::var_to_device<To>(e.w_mid);
  r.b_mid = detail::var_to_device<To>(e.b_mid);
  r.w2 = detail::var_to_device<To>(e.w2);
  r.b2 = detail::var_to_device<To>(e.b2);
  return r;
}

/// A direct prefix table copied to another device.
template <class To, class T, class From>
DirectPrefix<T, To> to_device(const DirectPrefix<T, From>& p) {
  return DirectPrefix<T, To>{detail::var_to_device<To>(p.table), p.placement, p.position_offset};
}

/// Evaluates the MLP once and keeps only its output: the (P, 2*L*D) table a trained prefix is served from.
template <class T, class Device>
DirectPrefix<T, Device> merge(const PrefixEncoder<T, Device>& encoder) {
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  const Var<T, Device> table = encoder.forward(tape);
  return DirectPrefix<T, Device>{Var<T, Device>(table.value().clone(), true, "prefix.table"), encoder.config.placement,
                                 encoder.config.position_offset};
}

template <class T, class Device>
template <class Model>
DirectPrefix<T, Device> PrefixEncoder<T, Device>::merged(const Model&) const {
  return merge(*this);
}

}  // namespace prefixtune
