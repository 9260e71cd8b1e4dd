// SPDX-License-Identifier: MIT
// CPU kernels of the embedding lookup: row gather (forward) and race-free scatter-add (backward); the id
// validation they rely on is common/embedding.hpp.
#pragma once

#include <cstdint>
#include <cstring>

#include "prefixtune/backend/common/embedding.hpp"
#include "prefixtune/backend/cpu/linear.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// out[i, :] = table[ids[i], :]; ids must be valid.  // ids (n); table (V, C); out (n, C)
template <class T>
void embedding_forward_kernel(Cpu, const std::int32_t* ids, const T* table, T* out, std::int64_t n, std::int64_t C) {
  if (C == 0) return;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n * C >= kParallelMinElements)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * C, table + static_cast<std::int64_t>(ids[i]) * C, static_cast<std::size_t>(C) * sizeof(T));
  }
}

/// dtable[ids[i], :] += dout[i, :]; ids must be valid. Threads own column blocks, so repeated ids never race and
/// each row's additions happen in id order (deterministic).  // dout (n, C); ids (n); dtable (V, C)
template <class T>
void embedding_backward_kernel(Cpu, const T* dout, const std::int32_t* ids, T* dtable, std::int64_t n, std::int64_t C) {
  for_each_column_block(C, n * C, [&](std::int64_t j0, std::int64_t w) {
    for (std::int64_t i = 0; i < n; ++i) {
      T* dst = dtable + static_cast<std::int64_t>(ids[i]) * C + j0;
      const T* src = dout + i * C + j0;
      PREFIXTUNE_CPU_SIMD
      for (std::int64_t j = 0; j < w; ++j) dst[j] += src[j];
    }
  });
}

}  // namespace prefixtune::detail
