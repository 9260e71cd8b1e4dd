// SPDX-License-Identifier: MIT
// CPU row kernels around the linear layer's GEMMs (broadcast bias add, bias gradient as column sums) and the
// column-block loop that every per-column reduction over rows shares.
#pragma once

#include <algorithm>
#include <cstdint>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

// Loop vectorization hints for row kernels: `omp simd` (optionally with a `+` reduction over the named
// variables) when OpenMP is on, nothing otherwise. At -O2 GCC does not vectorize loops that need runtime alias
// checks, nor reorder floating-point sums; these pragmas make the inner loops vectorize at -O2 and -O3 alike.
#if defined(_OPENMP)
#define PREFIXTUNE_CPU_PRAGMA(x) _Pragma(#x)
#define PREFIXTUNE_CPU_SIMD PREFIXTUNE_CPU_PRAGMA(omp simd)
#define PREFIXTUNE_CPU_SIMD_SUM(...) PREFIXTUNE_CPU_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define PREFIXTUNE_CPU_SIMD
#define PREFIXTUNE_CPU_SIMD_SUM(...)
#endif

namespace prefixtune::detail {

/// Columns per task in column-parallel reductions: wide enough to vectorize, narrow enough that GPT-2 widths
/// (768, 2304, 3072) give every thread several tasks. Reducing per column block keeps results independent of
/// the thread count (no per-thread partial sums).
inline constexpr std::int64_t kCpuColumnBlock = 128;

/// out[r, j] += bias[j] for every row r.  // out (rows, cols), bias (cols)
template <class T>
void bias_add_kernel(Cpu, T* out, const T* bias, std::int64_t rows, std::int64_t cols) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    T* o = out + r * cols;
    PREFIXTUNE_CPU_SIMD
    for (std::int64_t j = 0; j < cols; ++j) o[j] += bias[j];
  }
}

/// Calls f(j0, w) for every block [j0, j0 + w) of kCpuColumnBlock columns out of `cols`, blocks in parallel when
/// `work` (elements touched) is large. Each block belongs to one thread: a race-free, deterministic way to reduce
/// over rows into per-column outputs.
template <class F>
void for_each_column_block(std::int64_t cols, std::int64_t work, F&& f) {
  const std::int64_t blocks = (cols + kCpuColumnBlock - 1) / kCpuColumnBlock;
  (void)work;  // only read by the OpenMP pragma
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (work >= kParallelMinElements)
#endif
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t j0 = blk * kCpuColumnBlock;
    f(j0, std::min(kCpuColumnBlock, cols - j0));
  }
}

/// sums[j] += sum over r of x[r, j], accumulated in double.  // x (rows, cols), sums (cols)
template <class T>
void column_sum_kernel(Cpu, const T* x, std::int64_t rows, std::int64_t cols, T* sums) {
  for_each_column_block(cols, rows * cols, [&](std::int64_t j0, std::int64_t w) {
    double acc[kCpuColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = x + r * cols + j0;
      PREFIXTUNE_CPU_SIMD
      for (std::int64_t j = 0; j < w; ++j) acc[j] += static_cast<double>(row[j]);
    }
    for (std::int64_t j = 0; j < w; ++j) sums[j0 + j] = static_cast<T>(static_cast<double>(sums[j0 + j]) + acc[j]);
  });
}

}  // namespace prefixtune::detail
