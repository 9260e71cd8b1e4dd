// SPDX-License-Identifier: MIT
// CUDA kernels of attention over a KV cache (generation): new tokens append their K/V to their slot, then one
// block per (new token, head) scores its prefix and cached keys, takes the softmax (sum in double) and writes its
// output; plus the slot copy of beam search.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/cpu/cached_attention.hpp"
#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

template <class T>
__global__ void cached_attention_decode(CachedAttentionDims d, const CachedAttentionRow<T>* rows,
                                        const std::int32_t* row_of, const T* qkv, const T* cache_k, const T* cache_v,
                                        T* out, T scale) {
  extern __shared__ unsigned char smem[];
  const std::int64_t i = blockIdx.x, h = blockIdx.y, NH = d.NH, HS = d.HS, C = NH * HS, cap = d.capacity;
  if (row_of[i] < 0) return;  // a gap in the packing (not produced by gpt2_extend)
  const CachedAttentionRow<T> w = rows[row_of[i]];
  const std::int64_t j = i - w.first, P = w.prefix_len, keys = w.past + j + 1, L = P + keys;
  T* q = reinterpret_cast<T*>(smem);  // HS query values, then L scores
  T* s = q + HS;
  for (std::int64_t e = threadIdx.x; e < HS; e += blockDim.x) q[e] = qkv[i * 3 * C + h * HS + e];
  __syncthreads();
  const T* kh = cache_k + (w.slot * NH + h) * cap * HS;
  const T* vh = cache_v + (w.slot * NH + h) * cap * HS;
  T mx = -INFINITY;
  for (std::int64_t c = threadIdx.x; c < L; c += blockDim.x) {
    const T* key = c < P ? w.prefix_k + (h * P + c) * HS : kh + (c - P) * HS;
    T dot = 0;
    for (std::int64_t e = 0; e < HS; ++e) dot += q[e] * key[e];
    s[c] = dot * scale;
    mx = s[c] > mx ? s[c] : mx;
  }
  mx = block_max(mx);
  double sum = 0;
  for (std::int64_t c = threadIdx.x; c < L; c += blockDim.x) {
    s[c] = exp(s[c] - mx);
    sum += static_cast<double>(s[c]);
  }
  const T inv = static_cast<T>(1.0 / block_sum(sum));  // block_sum synchronizes: s is complete
  for (std::int64_t e = threadIdx.x; e < HS; e += blockDim.x) {
    T acc = 0;
    for (std::int64_t c = 0; c < P; ++c) acc += s[c] * w.prefix_v[(h * P + c) * HS + e];
    for (std::int64_t c = 0; c < keys; ++c) acc += s[P + c] * vh[c * HS + e];
    out[i * C + h * HS + e] = acc * inv;
  }
}

/// Same contract as cached_attention_kernel(Cpu, ...); rows is a host array (copied to the GPU with a map from
/// each packed token to its row).
template <class T>
void cached_attention_kernel(Cuda, const CachedAttentionDims& d, const CachedAttentionRow<T>* rows, std::int64_t R,
                             const T* qkv, T* cache_k, T* cache_v, T* out) {
  const std::int64_t NH = d.NH, HS = d.HS, C = d.C(), cap = d.capacity;
  std::int64_t N = 0, max_l = 0;
  for (std::int64_t r = 0; r < R; ++r) {
    N = std::max(N, rows[r].first + rows[r].count);
    max_l = std::max(max_l, rows[r].prefix_len + rows[r].past + rows[r].count);
  }
  if (N == 0) return;
  std::vector<std::int32_t> row_of(static_cast<std::size_t>(N), -1);
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t j = 0; j < rows[r].count; ++j) row_of[static_cast<std::size_t>(rows[r].first + j)] = static_cast<std::int32_t>(r);
  auto d_rows = Tensor<unsigned char, Cuda>::empty(Shape{static_cast<std::int64_t>(R * sizeof(CachedAttentionRow<T>))});
  Cuda::copy_from_host(d_rows.data(), rows, static_cast<std::size_t>(R) * sizeof(CachedAttentionRow<T>));
  const auto d_row_of = cuda_upload(row_of.data(), N);
  const auto* rw = reinterpret_cast<const CachedAttentionRow<T>*>(d_rows.data());
  const std::int32_t* ro = d_row_of.data();
  // Append every new token's K/V to its slot first: a token attends to itself and to earlier new tokens.
  cuda_for_elements("cached_attention append", N * 2 * C, [=] __device__(std::int64_t x) {
    const std::int64_t i = x / (2 * C), c = x % (2 * C), which = c / C, h = (c % C) / HS, e = c % HS;
    if (ro[i] < 0) return;  // a gap in the packing (not produced by gpt2_extend)
    const CachedAttentionRow<T>& w = rw[ro[i]];
    T* dst = (which == 0 ? cache_k : cache_v) + ((w.slot * NH + h) * cap + w.past + (i - w.first)) * HS + e;
    *dst = qkv[i * 3 * C + C + c];
  });
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const std::size_t shared = static_cast<std::size_t>(HS + max_l) * sizeof(T);
  PREFIXTUNE_CHECK(shared <= 48 * 1024, "cached_attention(Cuda): ", max_l, " keys exceed the shared-memory scores");
  cached_attention_decode<<<dim3(static_cast<unsigned>(N), static_cast<unsigned>(NH)), 128, shared, cuda_stream()>>>(
      d, rw, ro, qkv, cache_k, cache_v, out, scale);
  cuda_check_launch("cached_attention");
}

template <class T>
void cache_copy_slot_kernel(Cuda, const CachedAttentionDims& d, T* cache, std::int64_t dst, std::int64_t src,
                            std::int64_t length) {
  for (std::int64_t h = 0; h < d.NH; ++h) {
    const T* from = cache + (src * d.NH + h) * d.capacity * d.HS;
    Cuda::copy(cache + (dst * d.NH + h) * d.capacity * d.HS, from, static_cast<std::size_t>(length * d.HS) * sizeof(T));
  }
}

}  // namespace prefixtune::detail
