// SPDX-License-Identifier: MIT
// CPU kernel of attention over a KV cache (inference): rows of new tokens append their K/V to their cache slot
// and attend to their own prefix (any length, or none) and to every cached token up to themselves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cpu/attention.hpp"
#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// qkv (N, (NH + 2 KVH) HS) packed new tokens [q | k | v]; writes their K/V into the cache (S, KVH, capacity, HS),
/// then out (N, NH HS) = attention of every new token's query heads over [its prefix | cached tokens 0 .. past + j]
/// of their K/V head (scores scaled by 1/sqrt(HS), softmax in the row order of the training kernel, so incremental
/// decoding reproduces the full forward).
///
/// One unit of work per (row, K/V head): the group of NH / KVH query heads that share the K/V head is one
/// (count * group, HS) matrix of queries, token-major (score row j * group + g is token j, query head g of the
/// group), so the slot's K and V are read by one GEMM each per group. With group 1 that matrix is the row's q
/// columns of the head as they lie in qkv (the same GEMMs as before grouped heads); with one new token the group's
/// heads are adjacent in qkv and out; otherwise they are gathered and the output scattered back.
template <class T>
void cached_attention_kernel(Cpu, const CachedAttentionDims& d, const CachedAttentionRow<T>* rows, std::int64_t R,
                             const T* qkv, T* cache_k, T* cache_v, T* out) {
  const std::int64_t NH = d.NH, KVH = d.KVH, G = d.group(), HS = d.HS, C = d.C(), KVC = d.KVC(), W = d.qkv_width(),
                     cap = d.capacity;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  auto slot_head = [&](T* base, std::int64_t slot, std::int64_t h) { return base + (slot * KVH + h) * cap * HS; };
  for (std::int64_t r = 0; r < R; ++r) {  // append K/V (cheap copies)
    const CachedAttentionRow<T>& w = rows[r];
    for (std::int64_t j = 0; j < w.count; ++j) {
      const T* src = qkv + (w.first + j) * W;
      for (std::int64_t h = 0; h < KVH; ++h) {
        std::copy(src + C + h * HS, src + C + (h + 1) * HS, slot_head(cache_k, w.slot, h) + (w.past + j) * HS);
        std::copy(src + C + KVC + h * HS, src + C + KVC + (h + 1) * HS,
                  slot_head(cache_v, w.slot, h) + (w.past + j) * HS);
      }
    }
  }
  std::int64_t work = 0;
  for (std::int64_t r = 0; r < R; ++r) work += rows[r].count * (rows[r].prefix_len + rows[r].past + rows[r].count);
  [[maybe_unused]] const bool parallel = R * KVH >= num_threads() && work * NH * HS >= kAttentionParallelMin;
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<T> scores, qbuf, obuf;
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
    for (std::int64_t rh = 0; rh < R * KVH; ++rh) {
      const CachedAttentionRow<T>& w = rows[rh / KVH];
      const std::int64_t h = rh % KVH, n = w.count, m = n * G, P = w.prefix_len, keys = w.past + n, L = P + keys;
      if (n == 0) continue;
      const T* q0 = qkv + w.first * W + h * G * HS;  // the group's first query head of the first new token
      T* o0 = out + w.first * C + h * G * HS;
      const T* q = q0;  // the (m, HS) queries and outputs, leading dimensions lq and lo
      T* o = o0;
      std::int64_t lq = W, lo = C;
      if (G > 1) {
        lq = lo = HS;
        if (n > 1) {
          qbuf.resize(static_cast<std::size_t>(m * HS));
          obuf.resize(static_cast<std::size_t>(m * HS));
          for (std::int64_t j = 0; j < n; ++j) std::copy(q0 + j * W, q0 + j * W + G * HS, qbuf.data() + j * G * HS);
          q = qbuf.data();
          o = obuf.data();
        }
      }
      scores.resize(static_cast<std::size_t>(m * L));
      T* s = scores.data();
      const T* k = slot_head(cache_k, w.slot, h);
      const T* v = slot_head(cache_v, w.slot, h);
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, m, P, HS, scale, q, lq, w.prefix_k + h * P * HS, HS, T(0), s, L);
      gemm(Cpu{}, Trans::N, Trans::T, m, keys, HS, scale, q, lq, k, HS, T(0), s + P, L);
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t g = 0; g < G; ++g)
          attention_softmax_row(s + (j * G + g) * L, nullptr, P, w.past + j, L, w.past + j >= w.prefix_from);
      T beta = T(0);
      if (P > 0) {
        gemm(Cpu{}, Trans::N, Trans::N, m, HS, P, T(1), s, L, w.prefix_v + h * P * HS, HS, T(0), o, lo);
        beta = T(1);
      }
      gemm(Cpu{}, Trans::N, Trans::N, m, HS, keys, T(1), s + P, L, v, HS, beta, o, lo);
      if (o != o0)
        for (std::int64_t j = 0; j < n; ++j) std::copy(o + j * G * HS, o + (j + 1) * G * HS, o0 + j * C);
    }
  }
}

/// dst slot <- src slot for the first `length` tokens of every K/V head (beam search reorders its beams this way).
template <class T>
void cache_copy_slot_kernel(Cpu, const CachedAttentionDims& d, T* cache, std::int64_t dst, std::int64_t src,
                            std::int64_t length) {
  for (std::int64_t h = 0; h < d.KVH; ++h) {
    const T* from = cache + (src * d.KVH + h) * d.capacity * d.HS;
    std::copy(from, from + length * d.HS, cache + (dst * d.KVH + h) * d.capacity * d.HS);
  }
}

}  // namespace prefixtune::detail
