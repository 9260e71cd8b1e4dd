// SPDX-License-Identifier: MIT
// Softmax over the last axis of a tensor of any device: numerically stable forward (max subtraction, see
// backend/cpu/softmax.hpp) and the accumulating backward. A row that is all -infinity gives all zeros.
#pragma once

#include <cstdint>

#include "prefixtune/backend/cpu/softmax.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/elementwise.hpp"

namespace prefixtune {

/// out = softmax(x) along the last axis, computed as exp(x - max) / sum exp(x - max) so large logits never
/// overflow; a row whose entries are all -inf (fully masked) is defined to give all zeros, never NaN. out may
/// be x itself. // x (..., N), out (..., N)
template <class T, class Device>
void softmax_forward(const Tensor<T, Device>& x, Tensor<T, Device>& out) {
  detail::check_map_args("softmax_forward", "x", x, "out", out);
  PREFIXTUNE_CHECK(x.rank() >= 1, "softmax_forward: x must have rank >= 1, got shape ", x.shape());
  const std::int64_t n = x.size(-1);
  softmax_forward_kernel(Device{}, x.data(), out.data(), n == 0 ? 0 : x.numel() / n, n);
}

/// dx += y * (dout - sum(dout * y)) row by row, y the forward output (the softmax Jacobian-vector product);
/// skipped when dx is undefined. // dout (..., N), y (..., N), dx (..., N)
template <class T, class Device>
void softmax_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& y, Tensor<T, Device>& dx) {
  detail::check_map_args("softmax_backward", "dout", dout, "y", y);
  detail::check_grad_args("softmax_backward", dout, "dx", dx);
  PREFIXTUNE_CHECK(y.rank() >= 1, "softmax_backward: y must have rank >= 1, got shape ", y.shape());
  if (!dx.defined()) return;
  const std::int64_t n = y.size(-1);
  softmax_backward_kernel(Device{}, dout.data(), y.data(), dx.data(), n == 0 ? 0 : y.numel() / n, n);
}

}  // namespace prefixtune
