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

/// qkv (N, 3C) packed new tokens; writes their K/V into the cache, then out (N, C) = attention of every new token
/// over [its prefix | cached tokens 0 .. past + j] (scores scaled by 1/sqrt(HS), softmax in the row order of the
/// training kernel, so incremental decoding reproduces the full forward).
template <class T>
void cached_attention_kernel(Cpu, const CachedAttentionDims& d, const CachedAttentionRow<T>* rows, std::int64_t R,
                             const T* qkv, T* cache_k, T* cache_v, T* out) {
  const std::int64_t NH = d.NH, HS = d.HS, C = d.C(), cap = d.capacity;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  auto slot_head = [&](T* base, std::int64_t slot, std::int64_t h) { return base + (slot * NH + h) * cap * HS; };
  for (std::int64_t r = 0; r < R; ++r) {  // append K/V (cheap copies)
    const CachedAttentionRow<T>& w = rows[r];
    for (std::int64_t j = 0; j < w.count; ++j) {
      const T* src = qkv + (w.first + j) * 3 * C;
      for (std::int64_t h = 0; h < NH; ++h) {
        std::copy(src + C + h * HS, src + C + (h + 1) * HS, slot_head(cache_k, w.slot, h) + (w.past + j) * HS);
        std::copy(src + 2 * C + h * HS, src + 2 * C + (h + 1) * HS, slot_head(cache_v, w.slot, h) + (w.past + j) * HS);
      }
    }
  }
  std::int64_t work = 0;
  for (std::int64_t r = 0; r < R; ++r) work += rows[r].count * (rows[r].prefix_len + rows[r].past + rows[r].count);
  [[maybe_unused]] const bool parallel = R * NH >= num_threads() && work * NH * HS >= kAttentionParallelMin;
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<T> scores;
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
    for (std::int64_t rh = 0; rh < R * NH; ++rh) {
      const CachedAttentionRow<T>& w = rows[rh / NH];
      const std::int64_t h = rh % NH, n = w.count, P = w.prefix_len, keys = w.past + n, L = P + keys;
      if (n == 0) continue;
      scores.resize(static_cast<std::size_t>(n * L));
      T* s = scores.data();
      const T* q = qkv + w.first * 3 * C + h * HS;
      const T* k = slot_head(cache_k, w.slot, h);
      const T* v = slot_head(cache_v, w.slot, h);
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, n, P, HS, scale, q, 3 * C, w.prefix_k + h * P * HS, HS, T(0), s, L);
      gemm(Cpu{}, Trans::N, Trans::T, n, keys, HS, scale, q, 3 * C, k, HS, T(0), s + P, L);
      for (std::int64_t j = 0; j < n; ++j)
        attention_softmax_row(s + j * L, nullptr, P, w.past + j, L, w.past + j >= w.prefix_from);
      T* o = out + w.first * C + h * HS;
      T beta = T(0);
      if (P > 0) {
        gemm(Cpu{}, Trans::N, Trans::N, n, HS, P, T(1), s, L, w.prefix_v + h * P * HS, HS, T(0), o, C);
        beta = T(1);
      }
      gemm(Cpu{}, Trans::N, Trans::N, n, HS, keys, T(1), s + P, L, v, HS, beta, o, C);
    }
  }
}

/// dst slot <- src slot for the first `length` tokens of every head (beam search reorders its beams this way).
template <class T>
void cache_copy_slot_kernel(Cpu, const CachedAttentionDims& d, T* cache, std::int64_t dst, std::int64_t src,
                            std::int64_t length) {
  for (std::int64_t h = 0; h < d.NH; ++h) {
    const T* from = cache + (src * d.NH + h) * d.capacity * d.HS;
    std::copy(from, from + length * d.HS, cache + (dst * d.NH + h) * d.capacity * d.HS);
  }
}

}  // namespace prefixtune::detail
