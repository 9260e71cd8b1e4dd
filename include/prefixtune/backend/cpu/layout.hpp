// SPDX-License-Identifier: MIT
// CPU kernels that move data between layouts: swapping the two outer axes of a 3-D tensor.
#pragma once

#include <cstdint>
#include <cstring>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// Above this many elements the axis swap runs on the OpenMP threads: it copies whole rows of X (memcpy, or a
/// vectorized add), less work per element than the element maps, so the fork pays off only at twice their count.
inline constexpr std::int64_t kTransposeParallelMin = 2 * kParallelMinElements;

/// y (B, A, X) = x (A, B, X) with the two outer axes swapped; accumulate adds into y instead of writing.
template <class T>
void transpose01_kernel(Cpu, const T* x, T* y, std::int64_t A, std::int64_t B, std::int64_t X, bool accumulate) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (A * B * X > kTransposeParallelMin)
#endif
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t a = 0; a < A; ++a) {
      const T* src = x + (a * B + b) * X;
      T* dst = y + (b * A + a) * X;
      if (accumulate) {
        for (std::int64_t i = 0; i < X; ++i) dst[i] += src[i];
      } else {
        std::memcpy(dst, src, static_cast<std::size_t>(X) * sizeof(T));
      }
    }
  }
}

}  // namespace prefixtune::detail
