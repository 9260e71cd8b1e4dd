// SPDX-License-Identifier: MIT
// KvShape: the keys and values one attention stack reads per layer, which is all a prefix must fill. Every model
// config describes its stacks with one (GPT-2: one stack; BART: encoder self-attention, decoder self-attention
// and cross-attention; grouped-query models: fewer K/V heads than query heads, head_dim not C / heads).
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// The position rule, written once: the position of the first real token after a prefix of P slots is
/// position_offset when >= 0, else P for a stack whose prefix shifts positions (GPT-2, PEFT, HF with
/// past_key_values), else 0 (BART).
inline std::int64_t first_token_position(std::int64_t P, std::int64_t position_offset, bool shifts_positions = true) {
  if (position_offset >= 0) return position_offset;
  return shifts_positions ? P : 0;
}

/// Per layer, K and V of shape (kv_heads, P, head_dim) for a prefix of P slots. A prefix table (P, table_width())
/// holds them in PEFT's prompt_embeddings row layout, see table_column(). `positions` is the stack's context
/// (tokens it can hold, prefix slots not counted); `shifts_positions` is its position rule: real tokens after a
/// prefix of P slots take positions P.. (GPT-2, PEFT, HF with past_key_values) unless a prefix asks for 0, or
/// always 0.. (BART's prefixes shift no positions).
struct KvShape {
  std::int64_t layers = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t positions = 0;
  bool shifts_positions = true;

  /// kv_heads * head_dim: PEFT's token_dim.
  std::int64_t kv_width() const { return kv_heads * head_dim; }
  /// Columns of a prefix table: 2 * layers * kv_heads * head_dim.
  std::int64_t table_width() const { return 2 * layers * kv_width(); }
  /// The table column of channel e of head h of layer `layer`'s key (kv = 0) or value (kv = 1): PEFT's
  /// ((2i + kv) * KVH + h) * HD + e. The one place this layout is written down.
  std::int64_t table_column(std::int64_t layer, int kv, std::int64_t h, std::int64_t e) const {
    return ((2 * layer + kv) * kv_heads + h) * head_dim + e;
  }
  /// Position of the first real token after a prefix of P slots (first_token_position with this stack's rule).
  std::int64_t first_position(std::int64_t P, std::int64_t position_offset = -1) const {
    return first_token_position(P, position_offset, shifts_positions);
  }
  /// "3 layers x 2 kv_heads x head_dim 4": for error messages.
  std::string to_string() const {
    return std::to_string(layers) + " layers x " + std::to_string(kv_heads) + " kv_heads x head_dim " +
           std::to_string(head_dim);
  }
  bool operator==(const KvShape& o) const {
    return layers == o.layers && kv_heads == o.kv_heads && head_dim == o.head_dim && positions == o.positions &&
           shifts_positions == o.shifts_positions;
  }
  bool operator!=(const KvShape& o) const { return !(*this == o); }

  /// Throws an Error naming `where` unless every count is >= 1.
  void validate(const char* where) const {
    PREFIXTUNE_CHECK(layers >= 1 && kv_heads >= 1 && head_dim >= 1 && positions >= 1, where, ": K/V shape ",
                     to_string(), " with ", positions, " positions needs every count >= 1");
  }
};

}  // namespace prefixtune
