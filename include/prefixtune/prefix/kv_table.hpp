// SPDX-License-Identifier: MIT
// The prefix table and the K/V it stands for: a (P, table_width) table (PEFT's prompt_embeddings) split into the
// per-layer (1, KVH, P, HD) keys and values an attention stack reads, differentiably (training, PrefixBank, the
// BART path: the one split), and back. The row layout is KvShape::table_column's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/models/prefix_kv.hpp"

namespace prefixtune {

/// Splits a prefix table (P, s.table_width()) into per-layer keys and values (1, KVH, P, HD), differentiably.
/// Viewed as (P, 2L*KVH, HD) and swapped to (2L*KVH, P, HD), block 2i*KVH.. is layer i's key, (2i+1)*KVH.. its
/// value: the columns of KvShape::table_column.
template <class X>
PrefixKv<detail::value_t<X>, detail::device_t<X>> prefix_kv_from_table(detail::tape_t<X>& tape, const X& table,
                                                                       const KvShape& s) {
  const auto tv = detail::value_of(table);
  PREFIXTUNE_CHECK(tv.defined() && tv.rank() == 2 && s.layers >= 1 && s.kv_heads >= 1 && s.head_dim >= 1 &&
                       tv.size(1) == s.table_width(),
                   "prefix table ", tv.defined() ? tv.shape().to_string() : std::string("(undefined)"),
                   " is not (P, 2 * layers * kv_heads * head_dim = ", s.table_width(), ") for ", s.to_string());
  const std::int64_t P = tv.size(0), L = s.layers, H = s.kv_heads, HD = s.head_dim;
  auto kv = transpose01(tape, reshape(tape, table, Shape{P, 2 * L * H, HD}));
  PrefixKv<detail::value_t<X>, detail::device_t<X>> out;
  for (std::int64_t i = 0; i < L; ++i) {
    out.k.push_back(reshape(tape, rows(tape, kv, 2 * i * H, (2 * i + 1) * H), Shape{1, H, P, HD}));
    out.v.push_back(reshape(tape, rows(tape, kv, (2 * i + 1) * H, (2 * i + 2) * H), Shape{1, H, P, HD}));
  }
  return out;
}

/// The (P, 2 * L * KVH * HD) table of per-layer keys and values (each (1, KVH, P, HD)): the inverse of
/// prefix_kv_from_table (no gradient).
template <class T, class Device>
Tensor<T, Device> prefix_table_from_kv(const PrefixKv<T, Device>& kv) {
  PREFIXTUNE_CHECK(!kv.empty() && kv.k.size() == kv.v.size(), "prefix_table_from_kv: no layers");
  const auto L = static_cast<std::int64_t>(kv.k.size());
  const Shape& s = kv.k[0].value().shape();
  PREFIXTUNE_CHECK(s.rank() == 4 && s[0] == 1, "prefix_table_from_kv: keys ", s, " are not (1, KVH, P, HD)");
  const std::int64_t H = s[1], P = s[2], HD = s[3];
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  std::vector<Var<T, Device>> blocks;  // (KVH, P, HD) each, in the table's order: layer 0 k, layer 0 v, ...
  for (std::int64_t l = 0; l < L; ++l)
    for (const auto* part : {&kv.k[static_cast<std::size_t>(l)], &kv.v[static_cast<std::size_t>(l)]}) {
      PREFIXTUNE_CHECK(part->value().shape() == s, "prefix_table_from_kv: layer ", l, " has shape ",
                       part->value().shape(), ", layer 0 ", s);
      blocks.push_back(*part);
    }
  Tensor<T, Device> stacked(Shape{2 * L * H, P, HD});
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto n = static_cast<std::int64_t>(i) * H;
    Tensor<T, Device> dst = stacked.rows(n, n + H);
    dst.copy_from(blocks[i].value().reshape({H, P, HD}));
  }
  return transpose01(tape, Var<T, Device>(stacked)).value().reshape({P, 2 * L * H * HD});
}

}  // namespace prefixtune
