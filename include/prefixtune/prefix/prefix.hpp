// SPDX-License-Identifier: MIT
// Prefix parameters: PrefixConfig, the MLP reparameterizer PrefixEncoder (Embedding(P, C) -> Linear(C, mid) ->
// tanh [-> Linear(mid, mid) -> tanh] -> Linear(mid, 2*L*C)), the DirectPrefix table, merge(), and the split of a
// (P, 2*L*C) table into the per-layer K/V blocks attention reads (and back).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/models/gpt2.hpp"

namespace prefixtune {

/// Where the trained vectors sit: before the whole sequence ([prefix, X, Y], the paper's method) or between source
/// and target ([X, infix, Y], the paper's infix ablation: only the target side sees them, and it takes positions
/// after them).
enum class Placement { Prefix, Infix };

/// Prefix hyper-parameters (defaults: the paper's table-to-text settings and PEFT's).
struct PrefixConfig {
  std::int64_t length = 10;           // P, prefix slots per layer
  std::int64_t mid = 512;             // hidden width of the reparameterization MLP
  double dropout = 0.0;               // dropout on the MLP output (training only)
  std::int64_t position_offset = -1;  // position of the first real token: -1 = P (paper, PEFT), or 0
  bool deep = false;                  // a second mid -> mid tanh layer in the MLP (the paper code's deep variant)
  Placement placement = Placement::Prefix;

  /// Position of the first real token: 0 for an infix (the source starts at 0; the target follows the infix).
  std::int64_t offset() const {
    if (placement == Placement::Infix) return 0;
    return position_offset < 0 ? length : position_offset;
  }
  void validate() const {
    PREFIXTUNE_CHECK(length >= 1, "prefix length P must be >= 1, got ", length);
    PREFIXTUNE_CHECK(mid >= 1, "prefix MLP width mid must be >= 1, got ", mid);
    PREFIXTUNE_CHECK(dropout >= 0 && dropout < 1, "prefix dropout ", dropout, " is outside [0, 1)");
    PREFIXTUNE_CHECK(placement == Placement::Prefix || position_offset < 0,
                     "prefix: position_offset does not apply to an infix (its target side follows its P slots)");
  }
};

namespace detail {

/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for nn.Linear weights and biases.
template <class T, class Device>
Tensor<T, Device> linear_default_init(const Shape& shape, std::int64_t fan_in, Rng& rng) {
  auto t = Tensor<T, Device>::empty(shape);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  fill_uniform(t, rng, -bound, bound);
  return t;
}

}  // namespace detail

/// Splits a prefix table (P, 2*L*C) into per-layer keys and values (1, NH, P, HS), differentiably. Row p holds
/// layer i's key (kv = 0) and value (kv = 1) at flat index ((2i + kv) * NH + h) * HS + e, PEFT's layout: viewed
/// as (P, 2L*NH, HS) and swapped to (2L*NH, P, HS), block 2i*NH.. is layer i's key, (2i+1)*NH.. its value.
template <class X>
PrefixKv<detail::value_t<X>, detail::device_t<X>> prefix_kv_from_table(detail::tape_t<X>& tape, const X& table,
                                                                       std::int64_t n_layer, std::int64_t n_head) {
  const auto tv = detail::value_of(table);
  PREFIXTUNE_CHECK(
      tv.defined() && tv.rank() == 2 && n_layer >= 1 && n_head >= 1 && tv.size(1) % (2 * n_layer * n_head) == 0,
      "prefix table ", tv.shape(), " is not (P, 2*L*C) for L=", n_layer, " NH=", n_head);
  const std::int64_t P = tv.size(0), HS = tv.size(1) / (2 * n_layer * n_head);
  auto kv = transpose01(tape, reshape(tape, table, Shape{P, 2 * n_layer * n_head, HS}));
  PrefixKv<detail::value_t<X>, detail::device_t<X>> out;
  for (std::int64_t i = 0; i < n_layer; ++i) {
    out.k.push_back(reshape(tape, rows(tape, kv, 2 * i * n_head, (2 * i + 1) * n_head), Shape{1, n_head, P, HS}));
    out.v.push_back(reshape(tape, rows(tape, kv, (2 * i + 1) * n_head, (2 * i + 2) * n_head), Shape{1, n_head, P, HS}));
  }
  return out;
}

/// The (P, 2*L*C) table of per-layer keys and values (each (1, NH, P, HS)): the inverse of prefix_kv_from_table
/// (no gradient).
template <class T, class Device>
Tensor<T, Device> prefix_table_from_kv(const PrefixKv<T, Device>& kv) {
  PREFIXTUNE_CHECK(!kv.empty() && kv.k.size() == kv.v.size(), "prefix_table_from_kv: no layers");
  const auto L = static_cast<std::int64_t>(kv.k.size());
  const Shape& s = kv.k[0].value().shape();
  PREFIXTUNE_CHECK(s.rank() == 4 && s[0] == 1, "prefix_table_from_kv: keys ", s, " are not (1, NH, P, HS)");
  const std::int64_t NH = s[1], P = s[2], HS = s[3];
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  std::vector<Var<T, Device>> blocks;  // (NH, P, HS) each, in the table's order: layer 0 k, layer 0 v, ...
  for (std::int64_t l = 0; l < L; ++l)
    for (const auto* part : {&kv.k[static_cast<std::size_t>(l)], &kv.v[static_cast<std::size_t>(l)]}) {
      PREFIXTUNE_CHECK(part->value().shape() == s, "prefix_table_from_kv: layer ", l, " has shape ",
                       part->value().shape(), ", layer 0 ", s);
      blocks.push_back(*part);
    }
  Tensor<T, Device> stacked(Shape{2 * L * NH, P, HS});
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto n = static_cast<std::int64_t>(i) * NH;
    Tensor<T, Device> dst = stacked.rows(n, n + NH);
    dst.copy_from(blocks[i].value().reshape({NH, P, HS}));
  }
  return transpose01(tape, Var<T, Device>(stacked)).value().reshape({P, 2 * L * NH * HS});
}

/// A trainable (P, 2*L*C) table used directly as the prefix (no reparameterization), or the result of merge().
template <class T, class Device = Cpu>
struct DirectPrefix {
  Var<T, Device> table;  // (P, 2*L*C)
  Placement placement = Placement::Prefix;
  std::int64_t position_offset = -1;  // position of the first real token: -1 = P, or 0 (a prefix only)

  /// N(0, 1) initialization, as the paper's code does for a direct table.
  static DirectPrefix random_normal(std::int64_t P, const Gpt2Config& c, Rng& rng) {
    PREFIXTUNE_CHECK(P >= 1, "prefix length P must be >= 1, got ", P);
    auto t = Tensor<T, Device>::empty({P, 2 * c.n_layer * c.n_embd});
    fill_normal(t, rng);
    return DirectPrefix{Var<T, Device>(t, true, "prefix.table")};
  }
  /// U(0, 1) initialization (the paper's other random initialization).
  static DirectPrefix random_uniform(std::int64_t P, const Gpt2Config& c, Rng& rng) {
    PREFIXTUNE_CHECK(P >= 1, "prefix length P must be >= 1, got ", P);
    auto t = Tensor<T, Device>::empty({P, 2 * c.n_layer * c.n_embd});
    fill_uniform(t, rng, 0.0, 1.0);
    return DirectPrefix{Var<T, Device>(t, true, "prefix.table")};
  }
  std::int64_t length() const { return table.value().size(0); }
  std::int64_t offset() const {
    return placement == Placement::Infix ? 0 : position_offset < 0 ? length() : position_offset;
  }
  std::vector<Var<T, Device>> parameters() const { return {table}; }
  Var<T, Device> forward(Tape<T, Device>&, Rng* = nullptr) const { return table; }
  /// The per-layer K/V the model's attention reads (a training step's view of the prefix).
  template <class Param>
  PrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m, Rng* = nullptr) const {
    return prefix_kv_from_table(tape, table, m.config.n_layer, m.config.n_head);
  }
  /// A copy of the table, detached from training (what gets served).
  template <class Param>
  DirectPrefix merged(const Gpt2<T, Device, Param>&) const {
    return DirectPrefix{Var<T, Device>(table.value().clone(), true, "prefix.table"), placement, position_offset};
  }
};

/// The MLP reparameterizer P = MLP(P'): Embedding(P, C) -> Linear(C, mid) -> tanh [-> Linear(mid, mid) -> tanh
/// when deep] -> Linear(mid, 2*L*C), with PyTorch's default initialization; weights are stored [in, out] (x W + b).
template <class T, class Device = Cpu>
struct PrefixEncoder {
  PrefixConfig config;
  std::int64_t n_layer = 0, n_embd = 0;
  Var<T, Device> embedding;     // (P, C), N(0, 1)
  Var<T, Device> w1, b1;        // (C, mid), (mid)
  Var<T, Device> w_mid, b_mid;  // (mid, mid), (mid): only when config.deep
  Var<T, Device> w2, b2;        // (mid, 2*L*C), (2*L*C)

  static PrefixEncoder create(const PrefixConfig& pc, const Gpt2Config& c, Rng& rng) {
    return create(pc, c.n_layer, c.n_embd, rng);
  }

  /// An encoder for a stack of n_layer attention layers of width n_embd (e.g. one of an encoder-decoder's three).
  static PrefixEncoder create(const PrefixConfig& pc, std::int64_t n_layer, std::int64_t n_embd, Rng& rng) {
    pc.validate();
    PREFIXTUNE_CHECK(n_layer >= 1 && n_embd >= 1, "PrefixEncoder: n_layer ", n_layer, " and n_embd ", n_embd,
                     " must be >= 1");
    PrefixEncoder e;
    e.config = pc;
    e.n_layer = n_layer;
    e.n_embd = n_embd;
    const std::int64_t C = n_embd, out = 2 * n_layer * n_embd;
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

  /// The prefix table (P, 2*L*C); dropout (config.dropout) applies when grad mode is on and rng is given.
  Var<T, Device> forward(Tape<T, Device>& tape, Rng* dropout_rng = nullptr) const {
    auto hidden = tanh(tape, linear(tape, embedding, w1, b1));
    if (config.deep) hidden = tanh(tape, linear(tape, hidden, w_mid, b_mid));
    auto table = linear(tape, hidden, w2, b2);
    if (config.dropout > 0 && dropout_rng) table = dropout(tape, table, static_cast<T>(config.dropout), *dropout_rng);
    return table;
  }
  template <class Param>
  PrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, const Gpt2<T, Device, Param>& m,
                                Rng* dropout_rng = nullptr) const {
    return prefix_kv_from_table(tape, forward(tape, dropout_rng), m.config.n_layer, m.config.n_head);
  }
  /// merge(*this): the MLP evaluated once.
  template <class Param>
  DirectPrefix<T, Device> merged(const Gpt2<T, Device, Param>&) const;
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
  r.n_layer = e.n_layer;
  r.n_embd = e.n_embd;
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

/// Evaluates the MLP once and keeps only its output: the (P, 2*L*C) table a trained prefix is served from.
template <class T, class Device>
DirectPrefix<T, Device> merge(const PrefixEncoder<T, Device>& encoder) {
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  const Var<T, Device> table = encoder.forward(tape);
  return DirectPrefix<T, Device>{Var<T, Device>(table.value().clone(), true, "prefix.table"), encoder.config.placement,
                                 encoder.config.position_offset};
}

template <class T, class Device>
template <class Param>
DirectPrefix<T, Device> PrefixEncoder<T, Device>::merged(const Gpt2<T, Device, Param>&) const {
  return merge(*this);
}

}  // namespace prefixtune
