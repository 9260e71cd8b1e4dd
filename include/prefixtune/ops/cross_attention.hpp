// SPDX-License-Identifier: MIT
// Non-causal multi-head attention of queries over [prefix, keys] with separate query and key/value tensors: an
// encoder-decoder's cross-attention (queries from the decoder, keys/values from the encoder states), or, with both
// from one sequence, an encoder's bidirectional self-attention. Forward and backward with shape checks, dispatched
// by device tag to backend/<device>/cross_attention.hpp.
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/backend/cpu/cross_attention.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/attention.hpp"

namespace prefixtune {

namespace detail {

/// Dims of q (B, Tq, C) and kv (B, Tk, 2C), the prefix pair (Bp, NH, P, HS) and the key mask (B, Tk), checked.
template <class T, class Device>
CrossAttentionDims cross_attention_dims(const char* op, const Tensor<T, Device>& q, const Tensor<T, Device>& kv,
                                        std::int64_t num_heads, const Tensor<T, Device>& prefix_k,
                                        const Tensor<T, Device>& prefix_v, const Tensor<std::uint8_t, Device>& mask) {
  PREFIXTUNE_CHECK(q.defined() && q.rank() == 3 && kv.defined() && kv.rank() == 3, op,
                   ": q must be (B, Tq, C) and kv (B, Tk, 2C), got ",
                   q.defined() ? q.shape().to_string() : std::string("undefined"), " and ",
                   kv.defined() ? kv.shape().to_string() : std::string("undefined"));
  CrossAttentionDims d;
  d.B = q.size(0), d.Tq = q.size(1), d.C = q.size(2), d.Tk = kv.size(1), d.NH = num_heads;
  PREFIXTUNE_CHECK(kv.size(0) == d.B && kv.size(2) == 2 * d.C && d.Tk >= 1, op, ": kv ", kv.shape(),
                   " must be (B = ", d.B, ", Tk >= 1, 2C = ", 2 * d.C, ") for q ", q.shape());
  PREFIXTUNE_CHECK(num_heads >= 1 && d.C % num_heads == 0, op, ": channels C = ", d.C,
                   " are not divisible by num_heads = ", num_heads);
  d.HS = d.C / d.NH;
  AttentionDims ad;  // the prefix checks of the causal op, on the same fields
  ad.B = d.B, ad.NH = d.NH, ad.HS = d.HS;
  check_attention_prefix(op, ad, prefix_k, prefix_v);
  d.P = ad.P, d.Bp = ad.Bp;
  PREFIXTUNE_CHECK(!mask.defined() || mask.shape() == Shape({d.B, d.Tk}), op, ": key mask shape ", mask.shape(),
                   " must be (B, Tk) = (", d.B, ", ", d.Tk, ")");
  return d;
}

}  // namespace detail

/// out (B, Tq, C) = attention of every query of q (B, Tq, C) over P prefix slots (prefix_k/v (Bp, NH, P, HS), Bp
/// 1 or B, or both undefined) and the Tk keys/values of kv (B, Tk, 2C) = [k | v] (head h in channels h*HS..),
/// keys with mask (B, Tk) == 0 hidden; no causal mask; scores scaled by 1/sqrt(HS). A query with nothing visible
/// outputs zeros. probs, when non-null, receives (B, NH, Tq, P + Tk) for the backward.
template <class T, class Device>
void cross_attention_forward(const Tensor<T, Device>& q, const Tensor<T, Device>& kv, std::int64_t num_heads,
                             const Tensor<T, Device>& prefix_k, const Tensor<T, Device>& prefix_v,
                             const Tensor<std::uint8_t, Device>& mask, Tensor<T, Device>& out,
                             Tensor<T, Device>* probs) {
  const auto d = detail::cross_attention_dims("cross_attention_forward", q, kv, num_heads, prefix_k, prefix_v, mask);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == q.shape(), "cross_attention_forward: out shape ", out.shape(),
                   " must equal q's ", q.shape());
  if (probs) detail::ensure_shape(*probs, Shape{d.B, d.NH, d.Tq, d.L()});
  if (d.B * d.Tq == 0) return;
  cross_attention_forward_kernel(Device{}, d, q.data(), kv.data(), prefix_k.data(), prefix_v.data(),
                                 mask.defined() ? mask.data() : nullptr, out.data(), probs ? probs->data() : nullptr);
}

/// Backward of cross_attention_forward from its probabilities: accumulates (+=) into dq, dkv, dprefix_k and
/// dprefix_v (each undefined to skip it; prefix gradients sum over the batch when Bp == 1).
template <class T, class Device>
void cross_attention_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& q, const Tensor<T, Device>& kv,
                              std::int64_t num_heads, const Tensor<T, Device>& probs, const Tensor<T, Device>& prefix_k,
                              const Tensor<T, Device>& prefix_v, const Tensor<std::uint8_t, Device>& mask,
                              Tensor<T, Device>& dq, Tensor<T, Device>& dkv, Tensor<T, Device>& dprefix_k,
                              Tensor<T, Device>& dprefix_v) {
  constexpr const char* op = "cross_attention_backward";
  const auto d = detail::cross_attention_dims(op, q, kv, num_heads, prefix_k, prefix_v, mask);
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == q.shape(), op, ": dout ", dout.shape(), " must equal q's ",
                   q.shape());
  PREFIXTUNE_CHECK(probs.defined() && probs.shape() == Shape({d.B, d.NH, d.Tq, d.L()}), op, ": probs ", probs.shape(),
                   " must be (B, NH, Tq, P + Tk) as filled by the forward");
  PREFIXTUNE_CHECK(!dq.defined() || dq.shape() == q.shape(), op, ": dq ", dq.shape(), " must equal q's ", q.shape());
  PREFIXTUNE_CHECK(!dkv.defined() || dkv.shape() == kv.shape(), op, ": dkv ", dkv.shape(), " must equal kv's ",
                   kv.shape());
  PREFIXTUNE_CHECK(!dprefix_k.defined() || dprefix_k.shape() == prefix_k.shape(), op, ": dprefix_k ", dprefix_k.shape(),
                   " must equal prefix_k's ", prefix_k.shape());
  PREFIXTUNE_CHECK(!dprefix_v.defined() || dprefix_v.shape() == prefix_v.shape(), op, ": dprefix_v ", dprefix_v.shape(),
                   " must equal prefix_v's ", prefix_v.shape());
  if (d.B * d.Tq == 0) return;
  cross_attention_backward_kernel(Device{}, d, dout.data(), q.data(), kv.data(), probs.data(), prefix_k.data(),
                                  prefix_v.data(), dq.data(), dkv.data(), d.P > 0 ? dprefix_k.data() : nullptr,
                                  d.P > 0 ? dprefix_v.data() : nullptr);
}

}  // namespace prefixtune
