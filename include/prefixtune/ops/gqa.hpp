// SPDX-License-Identifier: MIT
// The grouped-query attention input of the Llama family (split, per-head norm, rotation, K/V heads repeated or
// kept compact) and the repetition of a prefix's K/V heads, forward and backward: shape checks, then dispatch by
// device tag to backend/<device>/gqa.
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/backend/cpu/gqa.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// The heads of a grouped-query projection: NH query heads, KVH K/V heads (dividing NH) of HD channels, and the
/// optional per-head norm (q_norm / k_norm weights (HD), both defined or both undefined, with eps).
template <class T, class Device>
struct GqaHeads {
  std::int64_t NH = 0, KVH = 0, HD = 0;
  Tensor<T, Device> q_norm, k_norm;
  double eps = 0;
};

namespace detail {

/// Checks x (..., (NH + 2 KVH) HD), the tables (N, HD) and the norm weights; returns the kernel's dims.
template <class T, class Device>
GqaDims gqa_dims(const char* op, const Tensor<T, Device>& x, const Tensor<T, Device>& cos, const Tensor<T, Device>& sin,
                 const GqaHeads<T, Device>& h, bool expand) {
  PREFIXTUNE_CHECK(h.NH >= 1 && h.KVH >= 1 && h.NH % h.KVH == 0 && h.HD >= 2 && h.HD % 2 == 0, op, ": ", h.KVH,
                   " K/V heads must divide ", h.NH, " query heads, and head_dim ", h.HD, " must be even");
  GqaDims d{0, h.NH, h.KVH, h.HD, h.eps, expand};
  PREFIXTUNE_CHECK(x.defined() && x.rank() >= 1 && x.size(-1) == d.in_width(), op, ": input ",
                   x.defined() ? x.shape().to_string() : std::string("(undefined)"), " must be (..., (", h.NH,
                   " + 2 * ", h.KVH, ") heads * ", h.HD, ") = (..., ", d.in_width(), ")");
  d.N = x.numel() / d.in_width();
  PREFIXTUNE_CHECK(cos.defined() && sin.defined() && cos.shape() == Shape({d.N, h.HD}) && sin.shape() == cos.shape(),
                   op, ": cos ", cos.shape(), " and sin ", sin.shape(), " must be (tokens, head_dim) = (", d.N, ", ",
                   h.HD, ")");
  PREFIXTUNE_CHECK(h.q_norm.defined() == h.k_norm.defined(), op, ": q_norm and k_norm must both be given or neither");
  PREFIXTUNE_CHECK(!h.q_norm.defined() || (h.q_norm.shape() == Shape({h.HD}) && h.k_norm.shape() == Shape({h.HD})), op,
                   ": q_norm ", h.q_norm.shape(), " and k_norm ", h.k_norm.shape(), " must be (head_dim) = (", h.HD,
                   ")");
  return d;
}

}  // namespace detail

/// out = the attention input of x (..., (NH + 2 KVH) HD), rows [q | k | v] of heads: q and k heads normalized per
/// head (when h has norm weights) and rotated by cos / sin (tokens, HD); with expand, out (..., 3 NH HD) repeats
/// every K/V head for its NH / KVH query heads (K/V head j serves query heads j*g .. j*g + g - 1, transformers'
/// repeat_kv); without, out keeps x's layout (a KV cache's compact rows).
template <class T, class Device>
void gqa_qkv_forward(const Tensor<T, Device>& x, const Tensor<T, Device>& cos, const Tensor<T, Device>& sin,
                     const GqaHeads<T, Device>& h, bool expand, Tensor<T, Device>& out) {
  const detail::GqaDims d = detail::gqa_dims("gqa_qkv_forward", x, cos, sin, h, expand);
  PREFIXTUNE_CHECK(out.defined() && out.numel() == d.N * d.out_width() && out.size(-1) == d.out_width(),
                   "gqa_qkv_forward: out ", out.shape(), " must be (..., ", d.out_width(), ") over ", d.N, " tokens");
  gqa_qkv_forward_kernel(Device{}, d, x.data(), cos.data(), sin.data(), h.q_norm.data(), h.k_norm.data(), out.data());
}

/// dx += the gradient of gqa_qkv_forward (expand as there) from dout; the norm weights get none (frozen).
template <class T, class Device>
void gqa_qkv_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, const Tensor<T, Device>& cos,
                      const Tensor<T, Device>& sin, const GqaHeads<T, Device>& h, bool expand, Tensor<T, Device>& dx) {
  const detail::GqaDims d = detail::gqa_dims("gqa_qkv_backward", x, cos, sin, h, expand);
  PREFIXTUNE_CHECK(dout.defined() && dout.numel() == d.N * d.out_width() && dout.size(-1) == d.out_width(),
                   "gqa_qkv_backward: dout ", dout.shape(), " must be (..., ", d.out_width(), ") over ", d.N,
                   " tokens");
  if (!dx.defined()) return;
  PREFIXTUNE_CHECK(dx.shape() == x.shape(), "gqa_qkv_backward: dx ", dx.shape(), " differs from x ", x.shape());
  gqa_qkv_backward_kernel(Device{}, d, dout.data(), x.data(), cos.data(), sin.data(), h.q_norm.data(), h.k_norm.data(),
                          dx.data());
}

/// out (B, H * group, ...) = x (B, H, ...) with every head repeated `group` times in place (out head i = x head
/// i / group): a prefix's K/V heads laid out for their query heads.
template <class T, class Device>
void repeat_heads_forward(const Tensor<T, Device>& x, std::int64_t group, Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(x.defined() && x.rank() >= 2 && group >= 1, "repeat_heads: x ", x.shape(),
                   " must be (B, heads, ...) and group ", group, " >= 1");
  const Shape s = x.shape().with(1, x.size(1) * group);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == s, "repeat_heads: out ", out.shape(), " must be ", s);
  repeat_heads_kernel(Device{}, x.data(), out.data(), x.size(0), x.size(1), group, x.numel() / (x.size(0) * x.size(1)),
                      false);
}

/// dx (B, H, ...) += dout (B, H * group, ...) summed over each head's `group` copies.
template <class T, class Device>
void repeat_heads_backward(const Tensor<T, Device>& dout, std::int64_t group, Tensor<T, Device>& dx) {
  if (!dx.defined()) return;
  PREFIXTUNE_CHECK(dx.rank() >= 2 && group >= 1, "repeat_heads_backward: dx ", dx.shape(), " must be (B, heads, ...)");
  const Shape s = dx.shape().with(1, dx.size(1) * group);
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == s, "repeat_heads_backward: dout ", dout.shape(), " must be ", s);
  repeat_heads_kernel(Device{}, dout.data(), dx.data(), dx.size(0), dx.size(1), group,
                      dx.numel() / (dx.size(0) * dx.size(1)), true);
}

}  // namespace prefixtune
