// SPDX-License-Identifier: MIT
// The gated MLP activation of the Llama family, out = silu(gate) * up, forward and backward, checking shapes and
// dispatching to the device's kernels.
#pragma once

#include <cstdint>

#include "prefixtune/backend/cpu/swiglu.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// out = silu(gate) * up element-wise; gate, up and out of one shape (out may be gate or up).
template <class T, class Device>
void swiglu_forward(const Tensor<T, Device>& gate, const Tensor<T, Device>& up, Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(
      gate.defined() && up.defined() && out.defined() && gate.shape() == up.shape() && out.shape() == gate.shape(),
      "swiglu_forward: gate ", gate.shape(), ", up ", up.shape(), " and out ", out.shape(), " must share one shape");
  swiglu_forward_kernel(Device{}, gate.data(), up.data(), out.data(), gate.numel());
}

/// Gradients of swiglu_forward ADDED into dgate and dup (either may be undefined: skipped).
template <class T, class Device>
void swiglu_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& gate, const Tensor<T, Device>& up,
                     Tensor<T, Device>& dgate, Tensor<T, Device>& dup) {
  PREFIXTUNE_CHECK(dout.defined() && gate.defined() && up.defined() && dout.shape() == gate.shape() &&
                       up.shape() == gate.shape() && (!dgate.defined() || dgate.shape() == gate.shape()) &&
                       (!dup.defined() || dup.shape() == gate.shape()),
                   "swiglu_backward: dout ", dout.shape(), ", gate ", gate.shape(), ", up ", up.shape(), ", dgate ",
                   dgate.shape(), " and dup ", dup.shape(), " must share one shape");
  if (!dgate.defined() && !dup.defined()) return;
  swiglu_backward_kernel(Device{}, dout.data(), gate.data(), up.data(), dgate.data(), dup.data(), gate.numel());
}

}  // namespace prefixtune
