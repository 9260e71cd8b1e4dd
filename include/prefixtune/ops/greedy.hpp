// SPDX-License-Identifier: MIT
// The batched greedy choice over a (R, V) logits tensor on its device: bans, argmax and the chosen token's
// log-probability per row, checked and dispatched to the device's kernel (on a GPU only 2R numbers reach the host).
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/backend/cpu/greedy.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// For every row r of logits (R, V), modified in place: ban_ids, and eos_ids where ban_eos[r], become -inf; then
/// tok[r] = the argmax (lowest index on ties) and logp[r] = its log-probability among the allowed tokens (double).
/// A row with no allowed token is an Error.
template <class T, class Device>
void greedy_select(Tensor<T, Device>& logits, const std::vector<std::int32_t>& ban_ids,
                   const std::vector<std::int32_t>& eos_ids, const std::vector<std::uint8_t>& ban_eos,
                   std::vector<std::int32_t>& tok, std::vector<double>& logp) {
  PREFIXTUNE_CHECK(logits.defined() && logits.rank() == 2, "greedy_select: logits must be (R, V), got ",
                   logits.defined() ? logits.shape().to_string() : std::string("(undefined)"));
  const std::int64_t R = logits.size(0), V = logits.size(1);
  PREFIXTUNE_CHECK(static_cast<std::int64_t>(ban_eos.size()) == R, "greedy_select: ", ban_eos.size(),
                   " ban_eos flags for ", R, " rows");
  for (auto id : eos_ids) PREFIXTUNE_CHECK(id >= 0 && id < V, "greedy_select: eos_id ", id, " is outside [0, ", V, ")");
  for (auto id : ban_ids)
    PREFIXTUNE_CHECK(id >= 0 && id < V, "greedy_select: banned id ", id, " is outside [0, ", V, ")");
  greedy_select_kernel(Device{}, logits.data(), R, V, ban_ids, eos_ids, ban_eos, tok, logp);
}

}  // namespace prefixtune
