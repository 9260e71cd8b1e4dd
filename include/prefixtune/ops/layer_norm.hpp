// SPDX-License-Identifier: MIT
// Layer normalization over the last dimension (biased variance, as PyTorch and GPT-2), forward and backward,
// checking shapes and dispatching to the device's row kernels.
#pragma once

#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/cpu/layer_norm.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

namespace detail {

/// Checks x (..., C) against gamma (C) and a (C) per-channel tensor; returns C. `op` names the caller.
template <class T, class Device>
std::int64_t layer_norm_channels(const char* op, const Tensor<T, Device>& x, const Tensor<T, Device>& gamma) {
  PREFIXTUNE_CHECK(x.defined() && gamma.defined(), op, ": x and gamma must be defined");
  PREFIXTUNE_CHECK(x.rank() >= 1 && x.size(-1) >= 1, op, ": x must have rank >= 1 and a last dim >= 1, got ",
                   x.shape());
  const std::int64_t C = x.size(-1);
  PREFIXTUNE_CHECK(gamma.rank() == 1 && gamma.size(0) == C, op, ": gamma shape ", gamma.shape(), " does not match x ",
                   x.shape(), " last dim ", C);
  return C;
}

/// Checks that saved statistics (mean, rstd) are both undefined or both (rows).
template <class T, class Device>
void layer_norm_check_stats(const char* op, const Tensor<T, Device>& mean, const Tensor<T, Device>& rstd,
                            const Tensor<T, Device>& x, std::int64_t rows) {
  PREFIXTUNE_CHECK(mean.defined() == rstd.defined(), op, ": mean and rstd must be both defined or both undefined");
  PREFIXTUNE_CHECK(!mean.defined() || (mean.rank() == 1 && mean.size(0) == rows), op, ": mean shape ", mean.shape(),
                   " should be (", rows, ") for x ", x.shape());
  PREFIXTUNE_CHECK(!rstd.defined() || (rstd.rank() == 1 && rstd.size(0) == rows), op, ": rstd shape ", rstd.shape(),
                   " should be (", rows, ") for x ", x.shape());
}

}  // namespace detail

/// out = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim (biased variance; GPT-2 uses eps = 1e-5).
/// mean and rstd = 1/sqrt(var + eps) are saved for the backward pass when defined. out may be x itself.
/// (eps is not deduced, so a double literal works for float tensors.)
/// x (..., C); gamma, beta (C); out (..., C); mean, rstd (rows = x.numel() / C) or undefined
template <class T, class Device>
void layer_norm_forward(const Tensor<T, Device>& x, const Tensor<T, Device>& gamma, const Tensor<T, Device>& beta,
                        std::common_type_t<T> eps, Tensor<T, Device>& out, Tensor<T, Device>& mean,
                        Tensor<T, Device>& rstd) {
  const std::int64_t C = detail::layer_norm_channels("layer_norm_forward", x, gamma);
  PREFIXTUNE_CHECK(beta.defined() && beta.rank() == 1 && beta.size(0) == C, "layer_norm_forward: beta shape ",
                   beta.shape(), " does not match x ", x.shape(), " last dim ", C);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == x.shape(), "layer_norm_forward: out shape ", out.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(eps >= T(0), "layer_norm_forward: eps must be >= 0, got ", eps);
  const std::int64_t rows = x.numel() / C;
  detail::layer_norm_check_stats("layer_norm_forward", mean, rstd, x, rows);
  layer_norm_forward_kernel(Device{}, x.data(), gamma.data(), beta.data(), eps, out.data(), mean.data(), rstd.data(),
                            rows, C);
}

/// Gradients of layer_norm_forward, ADDED into dx, dgamma, dbeta; each may be undefined (skipped).
/// mean / rstd are the saved statistics; pass both undefined to recompute them from x with eps.
/// dout, x (..., C); gamma (C); mean, rstd (rows) or undefined; dx like x; dgamma, dbeta (C)
template <class T, class Device>
void layer_norm_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, const Tensor<T, Device>& gamma,
                         const Tensor<T, Device>& mean, const Tensor<T, Device>& rstd, Tensor<T, Device>& dx,
                         Tensor<T, Device>& dgamma, Tensor<T, Device>& dbeta, std::common_type_t<T> eps = T(1e-5)) {
  const std::int64_t C = detail::layer_norm_channels("layer_norm_backward", x, gamma);
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == x.shape(), "layer_norm_backward: dout shape ", dout.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(!dx.defined() || dx.shape() == x.shape(), "layer_norm_backward: dx shape ", dx.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(!dgamma.defined() || dgamma.shape() == gamma.shape(), "layer_norm_backward: dgamma shape ",
                   dgamma.shape(), " does not match gamma ", gamma.shape());
  PREFIXTUNE_CHECK(!dbeta.defined() || dbeta.shape() == gamma.shape(), "layer_norm_backward: dbeta shape ",
                   dbeta.shape(), " does not match gamma ", gamma.shape());
  const std::int64_t rows = x.numel() / C;
  detail::layer_norm_check_stats("layer_norm_backward", mean, rstd, x, rows);
  if (!dx.defined() && !dgamma.defined() && !dbeta.defined()) return;
  Tensor<T, Device> m = mean, s = rstd;
  if (!mean.defined()) {
    PREFIXTUNE_CHECK(eps >= T(0), "layer_norm_backward: eps must be >= 0, got ", eps);
    m = Tensor<T, Device>(Shape{rows});
    s = Tensor<T, Device>(Shape{rows});
    layer_norm_stats_kernel(Device{}, x.data(), rows, C, eps, m.data(), s.data());
  }
  if (dx.defined()) {
    layer_norm_backward_input_kernel(Device{}, dout.data(), x.data(), gamma.data(), m.data(), s.data(), dx.data(), rows,
                                     C);
  }
  if (dgamma.defined() || dbeta.defined()) {
    layer_norm_backward_params_kernel(Device{}, dout.data(), x.data(), m.data(), s.data(), dgamma.data(), dbeta.data(),
                                      rows, C);
  }
}

}  // namespace prefixtune
