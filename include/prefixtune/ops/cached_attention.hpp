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

/// qkv (N, (NH + 2 KVH) HS) holds the rows' new tokens, packed as [q: NH heads | k: KVH heads | v: KVH heads];
/// their K/V go into cache_k / cache_v (slots, KVH, capacity, HS) and out (N, NH HS) receives their attention over
/// [prefix | cached tokens], query head h reading K/V head h / (NH / KVH) (see detail::cached_attention_kernel).
template <class T, class Device>
void cached_attention_forward(const detail::CachedAttentionDims& d,
                              const std::vector<detail::CachedAttentionRow<T>>& rows, const Tensor<T, Device>& qkv,
                              Tensor<T, Device>& cache_k, Tensor<T, Device>& cache_v, Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(d.KVH >= 1 && d.NH >= 1 && d.NH % d.KVH == 0 && d.HS >= 1, "cached_attention: ", d.NH,
                   " query heads must be a positive multiple of the ", d.KVH, " K/V heads (head size ", d.HS, ")");
  const std::int64_t C = d.C(), W = d.qkv_width();
  PREFIXTUNE_CHECK(qkv.rank() == 2 && qkv.size(1) == W && out.shape() == Shape({qkv.size(0), C}),
                   "cached_attention: qkv ", qkv.shape(), " and out ", out.shape(), " must be (N, ", W, ") and (N, ", C,
                   "): (N, (NH + 2 KVH) HS) and (N, NH HS) for NH=", d.NH, " KVH=", d.KVH, " HS=", d.HS);
  const Shape cs{cache_k.defined() ? cache_k.size(0) : 0, d.KVH, d.capacity, d.HS};
  PREFIXTUNE_CHECK(cache_k.shape() == cs && cache_v.shape() == cs, "cached_attention: cache ", cache_k.shape(), " / ",
                   cache_v.shape(), " must be (slots, ", d.KVH, ", ", d.capacity, ", ", d.HS,
                   "): (slots, KVH, capacity, HS)");
  cached_attention_kernel(Device{}, d, rows.data(), static_cast<std::int64_t>(rows.size()), qkv.data(), cache_k.data(),
                          cache_v.data(), out.data());
}

/// Copies the first `length` tokens of slot src of a cache tensor (slots, KVH, capacity, HS) over slot dst.
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
