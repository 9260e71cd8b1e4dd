// SPDX-License-Identifier: MIT
// CPU kernels of the grouped-query attention input (the Llama family): every token's fused q|k|v projection row
// split into heads, q and k heads RMS-normalized per head when the model has q_norm / k_norm (Qwen3), rotated by
// the token's angles, and laid out for attention (K/V heads repeated for their query heads, or kept compact for a
// KV cache); the backward sums the repeated heads' gradients and runs the rotation and the norm backwards. And the
// repetition of a prefix's K/V heads for their query heads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/gqa.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/rms_norm.hpp"
#include "prefixtune/backend/cpu/rotary.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// out (N, d.out_width()) from in (N, d.in_width()): q heads [norm with q_gamma] then rotated; k heads [norm with
/// k_gamma] then rotated, each written to its d.group() query heads' slots when d.expand; v heads copied likewise.
/// cos, sin (N, HD); q_gamma, k_gamma (HD) or both null (no per-head norm).
template <class T>
void gqa_qkv_forward_kernel(Cpu, const GqaDims& d, const T* in, const T* cos, const T* sin, const T* q_gamma,
                            const T* k_gamma, T* out) {
  const std::int64_t HD = d.HD, NH = d.NH, KVH = d.KVH, reps = d.reps();
  const std::int64_t iw = d.in_width(), ow = d.out_width(), out_kv = d.out_heads() * HD;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (d.N * ow >= kParallelMinElements)
#endif
  for (std::int64_t n = 0; n < d.N; ++n) {
    std::vector<T> tmp(static_cast<std::size_t>(HD));
    const T* row = in + n * iw;
    T* o = out + n * ow;
    const T* c = cos + n * HD;
    const T* s = sin + n * HD;
    auto prepare = [&](const T* head, const T* gamma, T* dst) {  // [norm] then rotate
      if (gamma) {
        rms_norm_row(head, gamma, d.eps, tmp.data(), HD);
        head = tmp.data();
      }
      rotate_half_row(head, c, s, dst, HD, false);
    };
    for (std::int64_t h = 0; h < NH; ++h) prepare(row + h * HD, q_gamma, o + h * HD);
    for (std::int64_t j = 0; j < KVH; ++j) {
      T* k0 = o + NH * HD + j * reps * HD;
      prepare(row + (NH + j) * HD, k_gamma, k0);
      for (std::int64_t r = 1; r < reps; ++r) std::copy(k0, k0 + HD, k0 + r * HD);
      const T* v = row + (NH + KVH + j) * HD;
      for (std::int64_t r = 0; r < reps; ++r) std::copy(v, v + HD, o + NH * HD + out_kv + (j * reps + r) * HD);
    }
  }
}

/// din (N, d.in_width()) += the gradient of gqa_qkv_forward_kernel from dout (N, d.out_width()): repeated K/V
/// heads summed, the rotation inverted, the per-head norm's input gradient (its weights are frozen: no gradient
/// for them). in is the forward's input (the norm's statistics are recomputed from it).
template <class T>
void gqa_qkv_backward_kernel(Cpu, const GqaDims& d, const T* dout, const T* in, const T* cos, const T* sin,
                             const T* q_gamma, const T* k_gamma, T* din) {
  const std::int64_t HD = d.HD, NH = d.NH, KVH = d.KVH, reps = d.reps();
  const std::int64_t iw = d.in_width(), ow = d.out_width(), out_kv = d.out_heads() * HD;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (d.N * ow >= kParallelMinElements)
#endif
  for (std::int64_t n = 0; n < d.N; ++n) {
    std::vector<T> sum(static_cast<std::size_t>(HD)), back(static_cast<std::size_t>(HD));
    const T* g = dout + n * ow;
    const T* row = in + n * iw;
    T* dr = din + n * iw;
    const T* c = cos + n * HD;
    const T* s = sin + n * HD;
    auto retreat = [&](const T* dy, const T* head, const T* gamma, T* dx) {  // rotate back, then the norm's
      rotate_half_row(dy, c, s, back.data(), HD, true);
      if (gamma) {
        rms_norm_row_backward(back.data(), head, gamma, rms_norm_row_rstd(head, HD, d.eps), dx, HD);
      } else {
        for (std::int64_t e = 0; e < HD; ++e) dx[e] += back[static_cast<std::size_t>(e)];
      }
    };
    auto sum_reps = [&](const T* first) {
      std::copy(first, first + HD, sum.begin());
      for (std::int64_t r = 1; r < reps; ++r)
        for (std::int64_t e = 0; e < HD; ++e) sum[static_cast<std::size_t>(e)] += first[r * HD + e];
    };
    for (std::int64_t h = 0; h < NH; ++h) retreat(g + h * HD, row + h * HD, q_gamma, dr + h * HD);
    for (std::int64_t j = 0; j < KVH; ++j) {
      sum_reps(g + NH * HD + j * reps * HD);
      retreat(sum.data(), row + (NH + j) * HD, k_gamma, dr + (NH + j) * HD);
      sum_reps(g + NH * HD + out_kv + j * reps * HD);
      T* dv = dr + (NH + KVH + j) * HD;
      for (std::int64_t e = 0; e < HD; ++e) dv[e] += sum[static_cast<std::size_t>(e)];
    }
  }
}

/// Head repetition over (outer, heads, inner) blocks: forward out (outer, heads * group, inner) with out[o, h] =
/// in[o, h / group]; backward (inverse) din[o, j] += the sum of dout[o, j * group .. j * group + group).
template <class T>
void repeat_heads_kernel(Cpu, const T* in, T* out, std::int64_t outer, std::int64_t heads, std::int64_t group,
                         std::int64_t inner, bool inverse) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (outer * heads * group * inner >= kParallelMinElements)
#endif
  for (std::int64_t oh = 0; oh < outer * heads; ++oh) {
    for (std::int64_t r = 0; r < group; ++r) {
      const std::int64_t wide = (oh * group + r) * inner;
      if (inverse) {
        for (std::int64_t e = 0; e < inner; ++e) out[oh * inner + e] += in[wide + e];
      } else {
        std::copy(in + oh * inner, in + (oh + 1) * inner, out + wide);
      }
    }
  }
}

}  // namespace prefixtune::detail
