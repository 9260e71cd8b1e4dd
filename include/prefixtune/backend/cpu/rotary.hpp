// SPDX-License-Identifier: MIT
// CPU kernel of rotary position embeddings in HuggingFace's rotate-half layout: every head's HD channels of a token
// rotated pairwise (channel i with i + HD/2) by that token's angles, and the inverse rotation (the backward).
#pragma once

#include <cstdint>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// One head of HD channels rotated by one token's angles (cos / sin rows of HD), or by the inverse rotation (sin
/// negated). o may equal a.
template <class T>
void rotate_half_row(const T* a, const T* c, const T* s, T* o, std::int64_t HD, bool inverse) {
  const std::int64_t half = HD / 2;
  const T sign = inverse ? T(-1) : T(1);
  for (std::int64_t i = 0; i < half; ++i) {
    const T lo = a[i], hi = a[i + half];
    const T rot_lo = -hi * (sign * s[i]), rot_hi = lo * (sign * s[i + half]);
    o[i] = lo * c[i] + rot_lo;
    o[i + half] = hi * c[i + half] + rot_hi;
  }
}

/// For token n and head h of x (N, H * HD): out[i] = x[i] cos[n, i] - x[i + HD/2] sin[n, i] and
/// out[i + HD/2] = x[i + HD/2] cos[n, i + HD/2] + x[i] sin[n, i + HD/2] (transformers' q * cos + rotate_half(q) *
/// sin). With inverse, the transposed rotation (sin negated): the gradient of the forward. out may equal x.
/// x, out (N, H * HD); cos, sin (N, HD)
template <class T>
void rotary_kernel(Cpu, const T* x, const T* cos, const T* sin, T* out, std::int64_t N, std::int64_t H, std::int64_t HD,
                   bool inverse) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (N * H * HD >= kParallelMinElements)
#endif
  for (std::int64_t n = 0; n < N; ++n) {
    const T* c = cos + n * HD;
    const T* s = sin + n * HD;
    for (std::int64_t h = 0; h < H; ++h) {
      rotate_half_row(x + (n * H + h) * HD, c, s, out + (n * H + h) * HD, HD, inverse);
    }
  }
}

}  // namespace prefixtune::detail
