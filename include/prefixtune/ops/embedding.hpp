// SPDX-License-Identifier: MIT
// Embedding lookup (token or position ids -> table rows), forward and scatter-add backward, with every id
// validated against the table before anything is written.
#pragma once

#include <cstdint>

#include "prefixtune/backend/cpu/embedding.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

namespace detail {

/// ids.shape + (C): the shape of an embedding output.
inline Shape embedding_out_shape(const Shape& ids, std::int64_t C) {
  switch (ids.rank()) {
    case 0:
      return Shape{C};
    case 1:
      return Shape{ids[0], C};
    case 2:
      return Shape{ids[0], ids[1], C};
    default:
      return Shape{ids[0], ids[1], ids[2], C};
  }
}

/// Throws, naming the first id outside [0, V), its flat position and V. `op` names the caller.
template <class Device>
void embedding_check_ids(const char* op, const Tensor<std::int32_t, Device>& ids, std::int64_t V) {
  const BadTokenId bad = find_bad_token_id(Device{}, ids.data(), ids.numel(), V);
  PREFIXTUNE_CHECK(bad.position < 0, op, ": token id ", bad.id, " at position ", bad.position,
                   " is out of range for a table of ", V, " rows");
}

}  // namespace detail

/// out[..., :] = table[ids[...], :]. Throws (writing nothing) if any id is outside [0, V).
/// ids (any shape of rank <= 3, e.g. (B, T)); table (V, C); out (ids.shape..., C)
template <class T, class Device>
void embedding_forward(const Tensor<std::int32_t, Device>& ids, const Tensor<T, Device>& table,
                       Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(out.defined(), "embedding_forward: out must be defined");
  PREFIXTUNE_CHECK(table.defined() && table.rank() == 2, "embedding_forward: table must be 2-D (V, C), got ",
                   table.shape());
  PREFIXTUNE_CHECK(ids.defined() && ids.rank() <= 3, "embedding_forward: ids ", ids.shape(),
                   " must be defined with rank <= 3 (the output adds a dim)");
  const Shape expect = detail::embedding_out_shape(ids.shape(), table.size(1));
  PREFIXTUNE_CHECK(out.shape() == expect, "embedding_forward: out shape ", out.shape(), " should be ", expect,
                   " for ids ", ids.shape(), " and table ", table.shape());
  detail::embedding_check_ids("embedding_forward", ids, table.size(0));
  embedding_forward_kernel(Device{}, ids.data(), table.data(), out.data(), ids.numel(), table.size(1));
}

/// dtable[ids[...], :] += dout[..., :]; repeated ids accumulate. Throws (writing nothing) on an out-of-range id.
/// An undefined dtable (frozen table) is skipped.
/// dout (ids.shape..., C); ids (any shape of rank <= 3); dtable (V, C)
template <class T, class Device>
void embedding_backward(const Tensor<T, Device>& dout, const Tensor<std::int32_t, Device>& ids,
                        Tensor<T, Device>& dtable) {
  if (!dtable.defined()) return;
  PREFIXTUNE_CHECK(dout.defined(), "embedding_backward: dout must be defined");
  PREFIXTUNE_CHECK(dtable.rank() == 2, "embedding_backward: dtable must be 2-D (V, C), got ", dtable.shape());
  PREFIXTUNE_CHECK(ids.defined() && ids.rank() <= 3, "embedding_backward: ids ", ids.shape(),
                   " must be defined with rank <= 3 (the output adds a dim)");
  const Shape expect = detail::embedding_out_shape(ids.shape(), dtable.size(1));
  PREFIXTUNE_CHECK(dout.shape() == expect, "embedding_backward: dout shape ", dout.shape(), " should be ", expect,
                   " for ids ", ids.shape(), " and dtable ", dtable.shape());
  detail::embedding_check_ids("embedding_backward", ids, dtable.size(0));
  embedding_backward_kernel(Device{}, dout.data(), ids.data(), dtable.data(), ids.numel(), dtable.size(1));
}

}  // namespace prefixtune
