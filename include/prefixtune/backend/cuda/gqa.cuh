// SPDX-License-Identifier: MIT
// CUDA kernels of the grouped-query attention input (the Llama family): one warp per (token, input head) splits the
// fused q|k|v row, normalizes q and k heads per head (statistics in double), rotates them and writes them to their
// output slots (K/V heads repeated for their query heads, or kept compact); the backward sums a head's repeated
// gradients in that same warp (no atomics). And the repetition of a prefix's K/V heads. The arithmetic is the CPU
// kernels' (cpu/gqa.hpp).
#pragma once

#include <cstdint>

#include "prefixtune/backend/common/gqa.hpp"
#include "prefixtune/backend/cuda/launch.cuh"
#include "prefixtune/backend/cuda/rms_norm.cuh"
#include "prefixtune/backend/cuda/rotary.cuh"

namespace prefixtune::detail {

/// Warp-wide 1 / sqrt(mean(x^2) + eps) of one head of HD values (every lane gets it).
template <class T>
__device__ double cuda_head_rstd(const T* x, std::int64_t HD, double eps, int lane) {
  return cuda_rms_norm_rstd(x, HD, eps, lane, 32, [](double v) { return warp_sum(v); });
}

/// out (N, d.out_width()) from in (N, d.in_width()); cos, sin (N, HD); q_gamma, k_gamma (HD) or both null.
template <class T>
void gqa_qkv_forward_kernel(Cuda, const GqaDims& d, const T* in, const T* cos, const T* sin, const T* q_gamma,
                            const T* k_gamma, T* out) {
  const std::int64_t HD = d.HD, half = HD / 2, NH = d.NH, KVH = d.KVH, reps = d.reps();
  const std::int64_t iw = d.in_width(), ow = d.out_width(), out_kv = d.out_heads() * HD, heads = NH + 2 * KVH;
  const double eps = d.eps;
  cuda_for_warps("gqa_qkv_forward", d.N * heads, [=] __device__(std::int64_t w, int lane) {
    const std::int64_t n = w / heads, h = w % heads;  // h is one value for the whole warp
    const T* src = in + n * iw + h * HD;
    T* o = out + n * ow;
    if (h >= NH + KVH) {  // a v head: copied to its reps slots
      T* dst = o + NH * HD + out_kv + (h - NH - KVH) * reps * HD;
      for (std::int64_t e = lane; e < reps * HD; e += 32) dst[e] = src[e % HD];
      return;
    }
    const bool is_q = h < NH;
    const T* gamma = is_q ? q_gamma : k_gamma;
    T* dst = is_q ? o + h * HD : o + NH * HD + (h - NH) * reps * HD;
    const std::int64_t copies = is_q ? 1 : reps;
    const double s = gamma ? cuda_head_rstd(src, HD, eps, lane) : 0.0;
    auto value = [&](std::int64_t e) { return gamma ? cuda_rms_norm_value(src[e], gamma[e], s) : src[e]; };
    for (std::int64_t i = lane; i < half; i += 32) {
      T lo, hi;
      cuda_rotate_pair(value(i), value(i + half), cos + n * HD, sin + n * HD, i, half, T(1), lo, hi);
      for (std::int64_t r = 0; r < copies; ++r) {
        dst[r * HD + i] = lo;
        dst[r * HD + i + half] = hi;
      }
    }
  });
}

/// din (N, d.in_width()) += the gradient of gqa_qkv_forward_kernel from dout (N, d.out_width()); in is the
/// forward's input (the norm's statistics are recomputed from it).
template <class T>
void gqa_qkv_backward_kernel(Cuda, const GqaDims& d, const T* dout, const T* in, const T* cos, const T* sin,
                             const T* q_gamma, const T* k_gamma, T* din) {
  const std::int64_t HD = d.HD, half = HD / 2, NH = d.NH, KVH = d.KVH, reps = d.reps();
  const std::int64_t iw = d.in_width(), ow = d.out_width(), out_kv = d.out_heads() * HD, heads = NH + 2 * KVH;
  const double eps = d.eps;
  cuda_for_warps("gqa_qkv_backward", d.N * heads, [=] __device__(std::int64_t w, int lane) {
    const std::int64_t n = w / heads, h = w % heads;  // h is one value for the whole warp
    const T* g = dout + n * ow;
    const T* x = in + n * iw + h * HD;
    T* dx = din + n * iw + h * HD;
    // This head's output slots: one for a q head, reps consecutive ones for a k or v head.
    const T* g0 = h < NH         ? g + h * HD
                  : h < NH + KVH ? g + NH * HD + (h - NH) * reps * HD
                                 : g + NH * HD + out_kv + (h - NH - KVH) * reps * HD;
    const std::int64_t copies = h < NH ? 1 : reps;
    auto dy = [&](std::int64_t e) {  // the slots' gradients summed in order, in T (as on the CPU)
      T acc = g0[e];
      for (std::int64_t r = 1; r < copies; ++r) acc += g0[r * HD + e];
      return acc;
    };
    if (h >= NH + KVH) {  // a v head
      for (std::int64_t e = lane; e < HD; e += 32) dx[e] += dy(e);
      return;
    }
    const T* gamma = h < NH ? q_gamma : k_gamma;
    auto back = [&](std::int64_t i, T& lo, T& hi) {  // the inverse rotation of channels i and i + half
      cuda_rotate_pair(dy(i), dy(i + half), cos + n * HD, sin + n * HD, i, half, T(-1), lo, hi);
    };
    T lo, hi;
    if (!gamma) {
      for (std::int64_t i = lane; i < half; i += 32) {
        back(i, lo, hi);
        dx[i] += lo;
        dx[i + half] += hi;
      }
      return;
    }
    const double s = cuda_head_rstd(x, HD, eps, lane);
    double sum_gn = 0;
    for (std::int64_t i = lane; i < half; i += 32) {
      back(i, lo, hi);
      sum_gn += cuda_rms_norm_gn(lo, x[i], gamma[i], s);
      sum_gn += cuda_rms_norm_gn(hi, x[i + half], gamma[i + half], s);
    }
    const double mean_gn = warp_sum(sum_gn) / static_cast<double>(HD);
    for (std::int64_t i = lane; i < half; i += 32) {
      back(i, lo, hi);
      dx[i] += cuda_rms_norm_dx(lo, x[i], gamma[i], s, mean_gn);
      dx[i + half] += cuda_rms_norm_dx(hi, x[i + half], gamma[i + half], s, mean_gn);
    }
  });
}

/// Forward: out (outer, heads * group, inner) with out[o, h] = in[o, h / group], one thread per output element.
/// Inverse: out[o, j] += the sum of in[o, j * group .. j * group + group), one thread per out element summing its
/// group in order (no atomics).
template <class T>
void repeat_heads_kernel(Cuda, const T* in, T* out, std::int64_t outer, std::int64_t heads, std::int64_t group,
                         std::int64_t inner, bool inverse) {
  if (inverse) {
    cuda_for_elements("repeat_heads_backward", outer * heads * inner, [=] __device__(std::int64_t i) {
      const std::int64_t e = i % inner, oh = i / inner;
      T acc = out[i];
      for (std::int64_t r = 0; r < group; ++r) acc += in[(oh * group + r) * inner + e];
      out[i] = acc;
    });
  } else {
    cuda_for_elements("repeat_heads_forward", outer * heads * group * inner,
                      [=] __device__(std::int64_t i) { out[i] = in[i / (group * inner) * inner + i % inner]; });
  }
}

}  // namespace prefixtune::detail
