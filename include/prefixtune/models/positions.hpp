// SPDX-License-Identifier: MIT
// The position ids of a batch of real tokens after a prefix (or with an infix), checked against the model's
// context: one rule for every causal model (GPT-2's learned positions, the Llama family's rotary angles).
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune::detail {

/// Position ids offset..offset+T-1 for every row, after checking they fit the model's context of n_positions.
/// With an infix (visible_from (B) defined, of length P), tokens t >= visible_from[b] move P positions further.
inline Tensor<std::int32_t, Cpu> token_positions(std::int64_t B, std::int64_t T, std::int64_t offset,
                                                 std::int64_t n_positions,
                                                 const Tensor<std::int32_t, Cpu>& visible_from = {},
                                                 std::int64_t P = 0) {
  const std::int64_t shift = visible_from.defined() ? P : 0;
  PREFIXTUNE_CHECK(offset >= 0 && T >= 1 && offset + T + shift <= n_positions, "a sequence of ", T,
                   " tokens starting at position ", offset, " (the prefix offset)",
                   shift ? " with an infix of " + std::to_string(shift) + " slots" : std::string(),
                   " needs positions up to ", offset + T + shift - 1, " but the model has n_positions=", n_positions);
  PREFIXTUNE_CHECK(!visible_from.defined() || visible_from.shape() == Shape({B}), "infix visible_from shape ",
                   visible_from.shape(), " must be (B) = (", B, ")");
  auto pos = Tensor<std::int32_t, Cpu>::empty({B, T});
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      pos(b, t) = static_cast<std::int32_t>(offset + t + (shift && t >= visible_from(b) ? shift : 0));
  return pos;
}

}  // namespace prefixtune::detail
