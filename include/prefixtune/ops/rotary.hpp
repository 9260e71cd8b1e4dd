// SPDX-License-Identifier: MIT
// Rotary position embeddings (rotate-half layout) applied to every head of a projection, forward and backward,
// checking shapes and dispatching to the device's kernel.
#pragma once

#include <cstdint>

#include "prefixtune/backend/cpu/rotary.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/elementwise.hpp"

namespace prefixtune {

namespace detail {

/// Checks x (..., H * HD) against cos / sin (N, HD), N = the number of tokens (x.numel() / (H * HD)); returns N.
template <class T, class Device>
std::int64_t rotary_tokens(const char* op, const Tensor<T, Device>& x, const Tensor<T, Device>& cos,
                           const Tensor<T, Device>& sin, std::int64_t heads) {
  PREFIXTUNE_CHECK(x.defined() && cos.defined() && sin.defined(), op, ": undefined tensor argument");
  PREFIXTUNE_CHECK(cos.rank() == 2 && cos.shape() == sin.shape() && cos.size(1) >= 2 && cos.size(1) % 2 == 0, op,
                   ": cos ", cos.shape(), " and sin ", sin.shape(), " must be one (N, HD) shape with HD even");
  const std::int64_t HD = cos.size(1);
  PREFIXTUNE_CHECK(heads >= 1 && x.rank() >= 1 && x.size(-1) == heads * HD && x.numel() / (heads * HD) == cos.size(0),
                   op, ": x ", x.shape(), " is not (..., ", heads, " heads * ", HD, ") over the ", cos.size(0),
                   " tokens of the tables");
  return cos.size(0);
}

}  // namespace detail

/// out = every head's channels of x (..., H * HD) rotated by its token's angles: out[i] = x[i] cos[n, i] -
/// x[i + HD/2] sin[n, i], out[i + HD/2] = x[i + HD/2] cos[n, i + HD/2] + x[i] sin[n, i + HD/2]; cos / sin (N, HD)
/// from rope_tables (both halves of a row equal). out may be x.
template <class T, class Device>
void rotary_forward(const Tensor<T, Device>& x, const Tensor<T, Device>& cos, const Tensor<T, Device>& sin,
                    std::int64_t heads, Tensor<T, Device>& out) {
  const std::int64_t N = detail::rotary_tokens("rotary_forward", x, cos, sin, heads);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == x.shape(), "rotary_forward: out ", out.shape(), " differs from x ",
                   x.shape());
  rotary_kernel(Device{}, x.data(), cos.data(), sin.data(), out.data(), N, heads, cos.size(1), false);
}

/// dx += the inverse rotation of dout (the transpose of rotary_forward's); dx may be undefined (nothing to do).
template <class T, class Device>
void rotary_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& cos, const Tensor<T, Device>& sin,
                     std::int64_t heads, Tensor<T, Device>& dx) {
  const std::int64_t N = detail::rotary_tokens("rotary_backward", dout, cos, sin, heads);
  if (!dx.defined()) return;
  PREFIXTUNE_CHECK(dx.shape() == dout.shape(), "rotary_backward: dx ", dx.shape(), " differs from dout ", dout.shape());
  Tensor<T, Device> back(dout.shape());
  rotary_kernel(Device{}, dout.data(), cos.data(), sin.data(), back.data(), N, heads, cos.size(1), true);
  accumulate(dx, back);
}

}  // namespace prefixtune
