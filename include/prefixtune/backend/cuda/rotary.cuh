// SPDX-License-Identifier: MIT
// CUDA kernel of rotary position embeddings in the rotate-half layout (forward and inverse rotation), and the
// rotation of one channel pair that the grouped-query input kernels (cuda/gqa.cuh) share. The arithmetic is the CPU
// kernel's (cpu/rotary.hpp: rotate_half_row), in T.
#pragma once

#include <cstdint>

#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

/// Channels i and i + half (values lo, hi) of one head rotated by a token's cos / sin rows (c, s of 2 * half);
/// sign -1 gives the inverse rotation.
template <class T>
__device__ void cuda_rotate_pair(T lo, T hi, const T* c, const T* s, std::int64_t i, std::int64_t half, T sign,
                                 T& out_lo, T& out_hi) {
  const T rot_lo = -hi * (sign * s[i]), rot_hi = lo * (sign * s[i + half]);
  out_lo = lo * c[i] + rot_lo;
  out_hi = hi * c[i + half] + rot_hi;
}

/// One thread per channel pair (so out may equal x). x, out (N, H * HD); cos, sin (N, HD)
template <class T>
void rotary_kernel(Cuda, const T* x, const T* cos, const T* sin, T* out, std::int64_t N, std::int64_t H,
                   std::int64_t HD, bool inverse) {
  const std::int64_t half = HD / 2;
  const T sign = inverse ? T(-1) : T(1);
  cuda_for_elements("rotary", N * H * half, [=] __device__(std::int64_t p) {
    const std::int64_t i = p % half, nh = p / half, n = nh / H;
    const T* a = x + nh * HD;
    T* o = out + nh * HD;
    T lo, hi;
    cuda_rotate_pair(a[i], a[i + half], cos + n * HD, sin + n * HD, i, half, sign, lo, hi);
    o[i] = lo;
    o[i + half] = hi;
  });
}

}  // namespace prefixtune::detail
