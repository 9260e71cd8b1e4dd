// SPDX-License-Identifier: MIT
// Multi-head causal self-attention with optional prefix K/V (prefix-tuning) and key padding mask, forward and
// backward: the cache, the shape checks, and dispatch by device tag to the kernels in backend/<device>/attention.hpp.
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/backend/cpu/attention.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// What attention_backward needs from the forward pass; filled by attention_forward when passed non-null.
/// Tensors already held with the right shapes are reused (overwritten in place) instead of reallocated.
template <class T, class Device>
struct AttentionCache {
  Tensor<T, Device> q, k, v;  // (B, NH, T, HS) split heads
  Tensor<T, Device> probs;    // (B, NH, T, P + T) softmax probabilities: P prefix columns, then T token columns
};

namespace detail {

/// Checks the prefix pair (Bp, NH, P, HS) against dims and sets d.P and d.Bp (P = 0 when both are undefined).
template <class T, class Device>
void check_attention_prefix(const char* op, AttentionDims& d, const Tensor<T, Device>& prefix_k,
                            const Tensor<T, Device>& prefix_v) {
  PREFIXTUNE_CHECK(prefix_k.defined() == prefix_v.defined(), op, ": prefix_k and prefix_v must both be defined or ",
                   "both undefined (prefix_k ", prefix_k.defined() ? "defined" : "undefined", ", prefix_v ",
                   prefix_v.defined() ? "defined" : "undefined", ")");
  d.P = 0;
  d.Bp = 1;
  if (!prefix_k.defined()) return;
  PREFIXTUNE_CHECK(prefix_k.shape() == prefix_v.shape(), op, ": prefix_k shape ", prefix_k.shape(),
                   " differs from prefix_v shape ", prefix_v.shape());
  const Shape& s = prefix_k.shape();
  PREFIXTUNE_CHECK(s.rank() == 4 && (s[0] == 1 || s[0] == d.B) && s[1] == d.NH && s[3] == d.HS, op,
                   ": prefix_k/prefix_v shape ", s, " must be (Bp, NH, P, HS) with Bp 1 or B = ", d.B, ", NH = ", d.NH,
                   ", HS = ", d.HS);
  d.P = s[2];
  d.Bp = s[0];
}

template <class Device>
void check_attention_mask(const char* op, const AttentionDims& d, const Tensor<std::uint8_t, Device>& mask) {
  PREFIXTUNE_CHECK(!mask.defined() || mask.shape() == Shape({d.B, d.T}), op, ": mask shape ", mask.shape(),
                   " must be (B, T) = (", d.B, ", ", d.T, ")");
}

/// Makes t a tensor of shape s, keeping its storage when it already has that shape.
template <class T, class Device>
void ensure_shape(Tensor<T, Device>& t, const Shape& s) {
  if (!t.defined() || t.shape() != s) t = Tensor<T, Device>(s);
}

}  // namespace detail

/// Causal multi-head self-attention over GPT-2's c_attn output, every query also seeing P prefix slots.
/// qkv (B, T, 3C) = [q | k | v], head h in channels h*HS .. of each (HS = C / num_heads);
/// prefix_k, prefix_v (Bp, NH, P, HS) with Bp 1 (shared) or B, or both undefined (no prefix);
/// mask (B, T) uint8, 1 = real token, 0 = padding (hidden as a key), or undefined; out (B, T, C).
/// Query t of row b attends to all P prefix slots and to the real tokens j <= t, scores scaled by 1/sqrt(HS);
/// a query with nothing visible outputs zeros. cache may be null (inference). prefix_from (B) int32, when
/// defined, makes the prefix an infix: query t of row b sees the P slots only when t >= prefix_from[b].
template <class T, class Device>
void attention_forward(const Tensor<T, Device>& qkv, std::int64_t num_heads, const Tensor<T, Device>& prefix_k,
                       const Tensor<T, Device>& prefix_v, const Tensor<std::uint8_t, Device>& mask,
                       Tensor<T, Device>& out, AttentionCache<T, Device>* cache,
                       const Tensor<std::int32_t, Device>& prefix_from = Tensor<std::int32_t, Device>()) {
  constexpr const char* op = "attention_forward";
  PREFIXTUNE_CHECK(qkv.defined() && qkv.rank() == 3, op, ": qkv must be (B, T, 3C), got ",
                   qkv.defined() ? qkv.shape().to_string() : std::string("an undefined tensor"));
  PREFIXTUNE_CHECK(qkv.size(2) % 3 == 0 && qkv.size(2) > 0, op, ": qkv ", qkv.shape(), " last dim ", qkv.size(2),
                   " is not a positive multiple of 3");
  detail::AttentionDims d;
  d.B = qkv.size(0), d.T = qkv.size(1), d.C = qkv.size(2) / 3, d.NH = num_heads;
  PREFIXTUNE_CHECK(num_heads >= 1 && d.C % num_heads == 0, op, ": channels C = ", d.C, " of qkv ", qkv.shape(),
                   " are not divisible by num_heads = ", num_heads);
  d.HS = d.C / d.NH;
  detail::check_attention_prefix(op, d, prefix_k, prefix_v);
  detail::check_attention_mask(op, d, mask);
  PREFIXTUNE_CHECK(!prefix_from.defined() || prefix_from.shape() == Shape({d.B}), op, ": prefix_from shape ",
                   prefix_from.shape(), " must be (B) = (", d.B, ")");
  if (prefix_from.defined()) d.prefix_from = prefix_from.data();
  PREFIXTUNE_CHECK(out.defined() && out.shape() == Shape({d.B, d.T, d.C}), op, ": out shape ", out.shape(),
                   " must be (B, T, C) = (", d.B, ", ", d.T, ", ", d.C, ") for qkv ", qkv.shape());

  AttentionCache<T, Device>* c = cache;  // null for inference: the kernel then keeps scores per thread
  if (c) {
    const Shape heads{d.B, d.NH, d.T, d.HS};
    detail::ensure_shape(c->q, heads);
    detail::ensure_shape(c->k, heads);
    detail::ensure_shape(c->v, heads);
    detail::ensure_shape(c->probs, Shape{d.B, d.NH, d.T, d.L()});
  }
  if (d.B * d.T == 0) return;
  attention_forward_kernel(Device{}, d, qkv.data(), prefix_k.data(), prefix_v.data(),
                           mask.defined() ? mask.data() : nullptr, out.data(), c ? c->q.data() : nullptr,
                           c ? c->k.data() : nullptr, c ? c->v.data() : nullptr, c ? c->probs.data() : nullptr);
}

/// Backward of attention_forward from its cache. dout (B, T, C); accumulates (+=) into dqkv (B, T, 3C),
/// dprefix_k and dprefix_v (shaped like the prefix; with Bp == 1 they sum over the batch). Undefined gradients
/// are skipped with all the work that only they need. mask is only checked: the cached probabilities already
/// carry it (and the infix visibility of attention_forward's prefix_from).
template <class T, class Device>
void attention_backward(const Tensor<T, Device>& dout, std::int64_t num_heads, const AttentionCache<T, Device>& cache,
                        const Tensor<T, Device>& prefix_k, const Tensor<T, Device>& prefix_v,
                        const Tensor<std::uint8_t, Device>& mask, Tensor<T, Device>& dqkv, Tensor<T, Device>& dprefix_k,
                        Tensor<T, Device>& dprefix_v) {
  constexpr const char* op = "attention_backward";
  PREFIXTUNE_CHECK(cache.q.defined() && cache.q.rank() == 4, op,
                   ": cache.q must be (B, NH, T, HS) as filled by attention_forward, got ",
                   cache.q.defined() ? cache.q.shape().to_string() : std::string("an undefined tensor"));
  detail::AttentionDims d;
  d.B = cache.q.size(0), d.NH = cache.q.size(1), d.T = cache.q.size(2), d.HS = cache.q.size(3);
  d.C = d.NH * d.HS;
  PREFIXTUNE_CHECK(num_heads == d.NH, op, ": num_heads = ", num_heads, " but cache.q ", cache.q.shape(), " has ", d.NH,
                   " heads");
  PREFIXTUNE_CHECK(cache.k.defined() && cache.v.defined() && cache.k.shape() == cache.q.shape() &&
                       cache.v.shape() == cache.q.shape(),
                   op, ": cache.k ", cache.k.shape(), " and cache.v ", cache.v.shape(), " must match cache.q ",
                   cache.q.shape());
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == Shape({d.B, d.T, d.C}), op, ": dout shape ", dout.shape(),
                   " must be (B, T, C) = (", d.B, ", ", d.T, ", ", d.C, ")");
  detail::check_attention_prefix(op, d, prefix_k, prefix_v);
  detail::check_attention_mask(op, d, mask);
  PREFIXTUNE_CHECK(cache.probs.defined() && cache.probs.shape() == Shape({d.B, d.NH, d.T, d.L()}), op,
                   ": cache.probs shape ", cache.probs.shape(), " must be (B, NH, T, P + T) = (", d.B, ", ", d.NH, ", ",
                   d.T, ", ", d.L(), ") (P = ", d.P, " from the prefix)");
  PREFIXTUNE_CHECK(!dqkv.defined() || dqkv.shape() == Shape({d.B, d.T, 3 * d.C}), op, ": dqkv shape ", dqkv.shape(),
                   " must be (B, T, 3C) = (", d.B, ", ", d.T, ", ", 3 * d.C, ")");
  PREFIXTUNE_CHECK(!dprefix_k.defined() || (prefix_k.defined() && dprefix_k.shape() == prefix_k.shape()), op,
                   ": dprefix_k shape ", dprefix_k.shape(), " must equal prefix_k shape ", prefix_k.shape());
  PREFIXTUNE_CHECK(!dprefix_v.defined() || (prefix_v.defined() && dprefix_v.shape() == prefix_v.shape()), op,
                   ": dprefix_v shape ", dprefix_v.shape(), " must equal prefix_v shape ", prefix_v.shape());

  const bool want_prefix = d.P > 0 && (dprefix_k.defined() || dprefix_v.defined());
  if (d.B * d.T == 0 || (!dqkv.defined() && !want_prefix)) return;
  attention_backward_kernel(Device{}, d, dout.data(), cache.q.data(), cache.k.data(), cache.v.data(),
                            cache.probs.data(), prefix_k.data(), prefix_v.data(), dqkv.data(), dprefix_k.data(),
                            dprefix_v.data());
}

}  // namespace prefixtune
