// SPDX-License-Identifier: MIT
// RMS normalization over the last dimension (Llama, Mistral, Qwen: out = x / sqrt(mean(x^2) + eps) * gamma),
// forward and backward, checking shapes and dispatching to the device's row kernels.
#pragma once

#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/cpu/rms_norm.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/layer_norm.hpp"

namespace prefixtune {

namespace detail {

/// Checks x (..., C) and gamma (C) as layer_norm does, and rstd (rows) or undefined; returns C. `op` names the
/// caller.
template <class T, class Device>
std::int64_t rms_norm_channels(const char* op, const Tensor<T, Device>& x, const Tensor<T, Device>& gamma,
                               const Tensor<T, Device>& rstd) {
  const std::int64_t C = layer_norm_channels(op, x, gamma);
  PREFIXTUNE_CHECK(!rstd.defined() || (rstd.rank() == 1 && rstd.size(0) == x.numel() / C), op, ": rstd shape ",
                   rstd.shape(), " should be (", x.numel() / C, ") for x ", x.shape());
  return C;
}

}  // namespace detail

/// out = x / sqrt(mean(x^2) + eps) * gamma over the last dim (statistics in double; the normalized row rounded to T
/// before the scale, as transformers' LlamaRMSNorm). rstd = 1 / sqrt(mean(x^2) + eps) is saved when defined. out
/// may be x. x (..., C); gamma (C); out like x; rstd (rows = x.numel() / C) or undefined
template <class T, class Device>
void rms_norm_forward(const Tensor<T, Device>& x, const Tensor<T, Device>& gamma, std::common_type_t<T> eps,
                      Tensor<T, Device>& out, Tensor<T, Device>& rstd) {
  const std::int64_t C = detail::rms_norm_channels("rms_norm_forward", x, gamma, rstd);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == x.shape(), "rms_norm_forward: out shape ", out.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(eps >= T(0), "rms_norm_forward: eps must be >= 0, got ", eps);
  rms_norm_forward_kernel(Device{}, x.data(), gamma.data(), eps, out.data(), rstd.data(), x.numel() / C, C);
}

/// Gradients of rms_norm_forward, ADDED into dx and dgamma (either may be undefined: skipped), from the saved rstd.
/// dout, x (..., C); gamma (C); rstd (rows); dx like x; dgamma (C)
template <class T, class Device>
void rms_norm_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, const Tensor<T, Device>& gamma,
                       const Tensor<T, Device>& rstd, Tensor<T, Device>& dx, Tensor<T, Device>& dgamma) {
  const std::int64_t C = detail::rms_norm_channels("rms_norm_backward", x, gamma, rstd);
  PREFIXTUNE_CHECK(rstd.defined(), "rms_norm_backward: the saved rstd is undefined");
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == x.shape(), "rms_norm_backward: dout shape ", dout.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(!dx.defined() || dx.shape() == x.shape(), "rms_norm_backward: dx shape ", dx.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(!dgamma.defined() || dgamma.shape() == gamma.shape(), "rms_norm_backward: dgamma shape ",
                   dgamma.shape(), " does not match gamma ", gamma.shape());
  const std::int64_t rows = x.numel() / C;
  if (dx.defined())
    rms_norm_backward_input_kernel(Device{}, dout.data(), x.data(), gamma.data(), rstd.data(), dx.data(), rows, C);
  if (dgamma.defined())
    rms_norm_backward_weight_kernel(Device{}, dout.data(), x.data(), rstd.data(), dgamma.data(), rows, C);
}

}  // namespace prefixtune
