// SPDX-License-Identifier: MIT
// Attention over a KV cache (inference), on the tensors' device: rows of new tokens append their K/V to their
// cache slot and attend to their own prefix and to every cached token up to themselves; and the copy of one slot's
// tokens into another (beam search). Checks sizes, then dispatches to the device's kernel: the CPU kernels come
// with this header, the CUDA ones with prefixtune/cuda.cuh (found by argument-dependent lookup on the device tag).
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cpu/cached_attention.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// qkv (N, 3C) holds the rows' new tokens, packed; their K/V go into cache_k / cache_v (slots, NH, capacity, HS)
/// and out (N, C) receives their attention over [prefix | cached tokens] (see detail::cached_attention_kernel).
template <class T, class Device>
void cached_attention_forward(const detail::CachedAttentionDims& d,
                              const std::vector<detail::CachedAttentionRow<T>>& rows, const Tensor<T, Device>& qkv,
                              Tensor<T, Device>& cache_k, Tensor<T, Device>& cache_v, Tensor<T, Device>& out) {
  const std::int64_t C = d.C();
  PREFIXTUNE_CHECK(qkv.rank() == 2 && qkv.size(1) == 3 * C && out.shape() == Shape({qkv.size(0), C}),
                   "cached_attention: qkv ", qkv.shape(), " and out ", out.shape(),
                   " must be (N, 3C) and (N, C) for C=", C);
  const Shape cs{cache_k.defined() ? cache_k.size(0) : 0, d.NH, d.capacity, d.HS};
  PREFIXTUNE_CHECK(cache_k.shape() == cs && cache_v.shape() == cs, "cached_attention: cache ", cache_k.shape(), " / ",
                   cache_v.shape(), " must be (slots, ", d.NH, ", ", d.capacity, ", ", d.HS, ")");
  cached_attention_kernel(Device{}, d, rows.data(), static_cast<std::int64_t>(rows.size()), qkv.data(), cache_k.data(),
                          cache_v.data(), out.data());
}

/// Copies the first `length` tokens of slot src of a cache tensor (slots, NH, capacity, HS) over slot dst.
template <class T, class Device>
void cache_copy_slot(const detail::CachedAttentionDims& d, Tensor<T, Device>& cache, std::int64_t dst, std::int64_t src,
                     std::int64_t length) {
  PREFIXTUNE_CHECK(cache.rank() == 4 && dst >= 0 && src >= 0 && dst < cache.size(0) && src < cache.size(0) &&
                       length >= 0 && length <= d.capacity,
                   "cache_copy_slot: slots ", src, " -> ", dst, " (", length, " tokens) do not fit the cache ",
                   cache.shape());
  cache_copy_slot_kernel(Device{}, d, cache.data(), dst, src, length);
}

}  // namespace prefixtune
