// SPDX-License-Identifier: MIT
// Prefixes made by the frozen model itself: EmbeddingPrefix (the paper's embedding-only ablation: P trainable
// input embeddings, optionally through a C -> mid -> C MLP, read by the model at positions 0..P-1; their per-layer
// K/V are the prefix) and prefix_from_words (a direct table initialized from the K/V of real words). Any model
// family with kv_of_embeddings / kv_of_tokens overloads (models/<family>_kv.hpp) serves.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/models/gpt2_kv.hpp"
#include "prefixtune/models/llama.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune {

/// Embedding-only tuning: only P input embeddings are trained; every layer's prefix K/V is what the frozen model
/// computes from them. Less expressive than a prefix of free activations in every layer (the paper's EMB rows).
template <class T, class Device = Cpu>
struct EmbeddingPrefix {
  PrefixConfig config;            // length P, placement, position_offset, mid (with mlp), dropout on the embeddings
  bool mlp = false;               // embeddings through Linear(C, mid) -> tanh -> Linear(mid, C)
  Var<T, Device> embedding;       // (P, C), N(0, 1) scaled by `init_scale`
  Var<T, Device> w1, b1, w2, b2;  // (C, mid), (mid), (mid, C), (C) when mlp

  /// P embeddings drawn from N(0, init_scale^2) (the default 0.02 is GPT-2's embedding scale), and with `mlp` the
  /// MLP with PyTorch's default initialization.
  /// `hidden_size`: the width of the model's input embeddings (GPT-2's n_embd).
  static EmbeddingPrefix create(const PrefixConfig& pc, std::int64_t hidden_size, Rng& rng, bool mlp = false,
                                double init_scale = 0.02) {
    pc.validate();
    PREFIXTUNE_CHECK(init_scale > 0, "EmbeddingPrefix: init_scale must be > 0, got ", init_scale);
    EmbeddingPrefix e;
    e.config = pc;
    e.mlp = mlp;
    PREFIXTUNE_CHECK(hidden_size >= 1, "EmbeddingPrefix: hidden_size must be >= 1, got ", hidden_size);
    const std::int64_t C = hidden_size;
    auto emb = Tensor<T, Device>::empty({pc.length, C});
    fill_normal(emb, rng, 0.0, init_scale);
    e.embedding = Var<T, Device>(emb, true, "prefix.embedding");
    if (mlp) {
      e.w1 = Var<T, Device>(detail::linear_default_init<T, Device>({C, pc.mid}, C, rng), true, "prefix.w1");
      e.b1 = Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid}, C, rng), true, "prefix.b1");
      e.w2 = Var<T, Device>(detail::linear_default_init<T, Device>({pc.mid, C}, pc.mid, rng), true, "prefix.w2");
      e.b2 = Var<T, Device>(detail::linear_default_init<T, Device>({C}, pc.mid, rng), true, "prefix.b2");
    }
    return e;
  }

  std::int64_t length() const { return config.length; }
  std::int64_t offset() const { return config.offset(); }
  std::vector<Var<T, Device>> parameters() const {
    if (mlp) return {embedding, w1, b1, w2, b2};
    return {embedding};
  }

  /// The input embeddings (P, C) the model reads.
  Var<T, Device> inputs(Tape<T, Device>& tape, Rng* dropout_rng = nullptr) const {
    Var<T, Device> x = embedding;
    if (mlp) x = linear(tape, tanh(tape, linear(tape, x, w1, b1)), w2, b2);
    if (config.dropout > 0 && dropout_rng) x = dropout(tape, x, static_cast<T>(config.dropout), *dropout_rng);
    return x;
  }
  /// The K/V the model computes from the embeddings (kv_of_embeddings checks their width against the model).
  template <class Model>
  PrefixKv<T, Device> prefix_kv(Tape<T, Device>& tape, const Model& m, Rng* dropout_rng = nullptr) const {
    return kv_of_embeddings(tape, m, inputs(tape, dropout_rng));
  }
  /// The K/V the model computes from the embeddings, as a table to serve like any prefix.
  template <class Model>
  DirectPrefix<T, Device> merged(const Model& m) const {
    NoGradGuard no_grad;
    Tape<T, Device> tape;
    return DirectPrefix<T, Device>{Var<T, Device>(prefix_table_from_kv(prefix_kv(tape, m)), true, "prefix.table"),
                                   config.placement, config.position_offset};
  }
};

/// A direct prefix of P = ids.size() slots holding exactly the per-layer K/V the frozen model computes for the
/// tokens `ids` read alone (the paper's initialization from real words, e.g. the tokens of " table-to-text:").
template <class Model, class T = typename Model::value_type, class Device = typename Model::device_type>
DirectPrefix<T, Device> prefix_from_words(const Model& m, const std::vector<std::int32_t>& ids) {
  PREFIXTUNE_CHECK(!ids.empty(), "prefix_from_words: the words encode to no tokens");
  return DirectPrefix<T, Device>{Var<T, Device>(prefix_table_from_kv(kv_of_tokens(m, ids)), true, "prefix.table")};
}

}  // namespace prefixtune
