// SPDX-License-Identifier: MIT
// Layout ops: transpose01 swaps the two outer axes of a 3-D tensor. It turns a prefix table (P, 2L*NH, HS) into
// per-layer key/value blocks (2L*NH, P, HS), the layout attention reads.
#pragma once

#include "prefixtune/backend/cpu/layout.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// out (B, A, X) = x (A, B, X) with axes 0 and 1 swapped.
template <class T, class Device>
void transpose01_forward(const Tensor<T, Device>& x, Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(x.defined() && out.defined() && x.rank() == 3, "transpose01_forward: x must be 3-D, got ",
                   x.shape());
  PREFIXTUNE_CHECK(out.shape() == (Shape{x.size(1), x.size(0), x.size(2)}), "transpose01_forward: out shape ",
                   out.shape(), " should be (", x.size(1), ", ", x.size(0), ", ", x.size(2), ") for x ", x.shape());
  transpose01_kernel(Device{}, x.data(), out.data(), x.size(0), x.size(1), x.size(2), false);
}

/// dx (A, B, X) += dout (B, A, X) transposed back; skipped when dx is undefined.
template <class T, class Device>
void transpose01_backward(const Tensor<T, Device>& dout, Tensor<T, Device>& dx) {
  if (!dx.defined()) return;
  PREFIXTUNE_CHECK(dx.rank() == 3 && dout.defined() && dout.shape() == (Shape{dx.size(1), dx.size(0), dx.size(2)}),
                   "transpose01_backward: dout ", dout.shape(), " does not match dx ", dx.shape(), " transposed");
  transpose01_kernel(Device{}, dout.data(), dx.data(), dout.size(0), dout.size(1), dout.size(2), true);
}

}  // namespace prefixtune
