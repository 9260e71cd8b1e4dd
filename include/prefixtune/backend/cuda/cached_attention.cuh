// SPDX-License-Identifier: MIT
// CUDA kernels of attention over a KV cache (generation): new tokens append their K/V to their slot, then one
// block per (new token, query head) scores its prefix and cached keys of its K/V head (grouped-query attention:
// query head h reads K/V head h / (NH / KVH)), takes the softmax (sum in double) and writes its output; plus the
// slot copy of beam search.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

/// Up to this many rows travel by value in one launch's parameters (56 bytes each, well inside the 4 KiB limit),
/// so decoding uploads nothing and never waits for the GPU; more rows take more launches.
inline constexpr int kCachedRowsPerLaunch = 48;

template <class T>
struct CachedRowsParam {
  CachedAttentionRow<T> rows[kCachedRowsPerLaunch];
};

/// Appends the new tokens' K/V of row blockIdx.y to its slot (grid-stride over count * 2 KVC elements).
template <class T>
__global__ void cached_attention_append(CachedAttentionDims d, CachedRowsParam<T> p, const T* qkv, T* cache_k,
                                        T* cache_v) {
  const CachedAttentionRow<T>& w = p.rows[blockIdx.y];
  const std::int64_t KVH = d.KVH, HS = d.HS, C = d.C(), KVC = d.KVC(), W = d.qkv_width(), cap = d.capacity;
  const std::int64_t n = w.count * 2 * KVC;
  for (std::int64_t x = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; x < n;
       x += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t j = x / (2 * KVC), c = x % (2 * KVC), h = (c % KVC) / HS, e = c % HS;
    T* dst = (c < KVC ? cache_k : cache_v) + ((w.slot * KVH + h) * cap + w.past + j) * HS + e;
    *dst = qkv[(w.first + j) * W + C + c];
  }
}

/// One block per (new token blockIdx.x of row blockIdx.z, query head blockIdx.y): scores over the row's prefix and
/// cached keys of its K/V head up to itself, softmax (sum in double), output.
template <class T>
__global__ void cached_attention_decode(CachedAttentionDims d, CachedRowsParam<T> p, const T* qkv, const T* cache_k,
                                        const T* cache_v, T* out, T scale) {
  extern __shared__ unsigned char smem[];
  const CachedAttentionRow<T>& w = p.rows[blockIdx.z];
  const std::int64_t j = blockIdx.x, h = blockIdx.y, kvh = h / d.group(), HS = d.HS, C = d.C(), W = d.qkv_width(),
                     cap = d.capacity;
  if (j >= w.count) return;  // the whole block leaves together
  const std::int64_t i = w.first + j, P = w.prefix_len, keys = w.past + j + 1, L = P + keys;
  const bool prefix_visible = w.past + j >= w.prefix_from;
  T* q = reinterpret_cast<T*>(smem);  // HS query values, then L scores
  T* s = q + HS;
  for (std::int64_t e = threadIdx.x; e < HS; e += blockDim.x) q[e] = qkv[i * W + h * HS + e];
  __syncthreads();
  const T* kh = cache_k + (w.slot * d.KVH + kvh) * cap * HS;
  const T* vh = cache_v + (w.slot * d.KVH + kvh) * cap * HS;
  T mx = -INFINITY;
  for (std::int64_t c = threadIdx.x; c < L; c += blockDim.x) {
    const T* key = c < P ? w.prefix_k + (kvh * P + c) * HS : kh + (c - P) * HS;
    T dot = 0;
    for (std::int64_t e = 0; e < HS; ++e) dot += q[e] * key[e];
    s[c] = c < P && !prefix_visible ? T(-INFINITY) : dot * scale;  // an infix not reached yet: hidden
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
    for (std::int64_t c = 0; c < P; ++c) acc += s[c] * w.prefix_v[(kvh * P + c) * HS + e];
    for (std::int64_t c = 0; c < keys; ++c) acc += s[P + c] * vh[c * HS + e];
    out[i * C + h * HS + e] = acc * inv;
  }
}

/// Same contract as cached_attention_kernel(Cpu, ...). The rows go to the GPU as launch parameters, in groups of
/// kCachedRowsPerLaunch; every group appends first (a token attends to itself and to earlier new tokens of its
/// row, and rows never share a slot), then attends.
template <class T>
void cached_attention_kernel(Cuda, const CachedAttentionDims& d, const CachedAttentionRow<T>* rows, std::int64_t R,
                             const T* qkv, T* cache_k, T* cache_v, T* out) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d.HS)));
  for (std::int64_t r0 = 0; r0 < R; r0 += kCachedRowsPerLaunch) {
    const int n = static_cast<int>(std::min<std::int64_t>(kCachedRowsPerLaunch, R - r0));
    CachedRowsParam<T> p{};
    std::int64_t max_count = 0, max_l = 0;
    for (int r = 0; r < n; ++r) {
      p.rows[r] = rows[r0 + r];
      max_count = std::max(max_count, p.rows[r].count);
      max_l = std::max(max_l, p.rows[r].prefix_len + p.rows[r].past + p.rows[r].count);
    }
    if (max_count == 0) continue;
    PREFIXTUNE_CHECK(max_count <= 0x7fffffff, "cached_attention(Cuda): ", max_count, " new tokens in one row");
    const std::size_t shared = static_cast<std::size_t>(d.HS + max_l) * sizeof(T);
    PREFIXTUNE_CHECK(shared <= 48 * 1024, "cached_attention(Cuda): ", max_l,
                     " keys per row exceed the shared memory of one block");
    cached_attention_append<<<dim3(cuda_blocks(max_count * 2 * d.KVC()), static_cast<unsigned>(n)), kCudaThreads, 0,
                              cuda_stream()>>>(d, p, qkv, cache_k, cache_v);
    cuda_check_launch("cached_attention append");
    cached_attention_decode<<<dim3(static_cast<unsigned>(max_count), static_cast<unsigned>(d.NH),
                                   static_cast<unsigned>(n)),
                              128, shared, cuda_stream()>>>(d, p, qkv, cache_k, cache_v, out, scale);
    cuda_check_launch("cached_attention");
  }
}

template <class T>
void cache_copy_slot_kernel(Cuda, const CachedAttentionDims& d, T* cache, std::int64_t dst, std::int64_t src,
                            std::int64_t length) {
  for (std::int64_t h = 0; h < d.KVH; ++h) {
    const T* from = cache + (src * d.KVH + h) * d.capacity * d.HS;
    Cuda::copy(cache + (dst * d.KVH + h) * d.capacity * d.HS, from,
               static_cast<std::size_t>(length * d.HS) * sizeof(T));
  }
}

}  // namespace prefixtune::detail
