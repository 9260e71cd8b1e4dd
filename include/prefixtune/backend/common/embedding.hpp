// SPDX-License-Identifier: MIT
// The token-id check of the embedding lookup, shared by every device: a scan of host ids for the first one outside
// [0, V) (the CUDA kernel copies its ids to the host and calls it, so both name the same position).
#pragma once

#include <cstdint>

#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// The first id outside [0, V) and its flat position; position == -1 when every id is valid.
struct BadTokenId {
  std::int64_t position = -1;
  std::int32_t id = 0;
};

/// Scans ids (n) for the first one outside [0, V).
inline BadTokenId find_bad_token_id(Cpu, const std::int32_t* ids, std::int64_t n, std::int64_t V) {
  for (std::int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= V) return BadTokenId{i, ids[i]};
  }
  return BadTokenId{};
}

}  // namespace prefixtune::detail
