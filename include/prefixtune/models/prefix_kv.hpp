// SPDX-License-Identifier: MIT
// PrefixKv: the per-layer prefix keys and values an attention stack reads during a forward pass (a training step's
// view of a prefix), and Seq2SeqPrefixKv, the three of an encoder-decoder. Model-agnostic: any model's forward
// takes them; their shape is the stack's KvShape.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// Per-layer prefix keys and values, each (1 or B, KVH, P, HD); empty vectors mean no prefix. visible_from (B),
/// when defined, places them as an infix: row b's tokens t >= visible_from[b] see the slots and take positions
/// shifted by P (the infix occupies positions visible_from[b] .. + P - 1); earlier tokens never see them.
template <class T, class Device = Cpu>
struct PrefixKv {
  std::vector<Var<T, Device>> k, v;
  Tensor<std::int32_t, Cpu> visible_from;
  bool empty() const { return k.empty(); }
  std::int64_t length() const { return k.empty() ? 0 : k[0].value().size(2); }
};

/// The three prefixes of an encoder-decoder (each empty = none): seen by the encoder's self-attention, the
/// decoder's self-attention, and the decoder's cross-attention (before the encoder states).
template <class T, class Device = Cpu>
struct Seq2SeqPrefixKv {
  PrefixKv<T, Device> encoder, decoder, cross;
};

}  // namespace prefixtune
