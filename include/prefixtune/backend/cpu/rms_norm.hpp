// SPDX-License-Identifier: MIT
// CPU kernels of RMS normalization over the last dimension (the Llama family's norm): out = x / sqrt(mean(x^2) +
// eps) * gamma, statistics in double, and its backward split into a row-parallel input gradient and a
// column-parallel gamma gradient.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cpu/linear.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// 1 / sqrt(mean(x^2) + eps) of one row of C values, in double.
template <class T>
double rms_norm_row_rstd(const T* x, std::int64_t C, double eps) {
  double sq = 0;
  PREFIXTUNE_CPU_SIMD_SUM(sq)
  for (std::int64_t j = 0; j < C; ++j) sq += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  return 1.0 / std::sqrt(sq / static_cast<double>(C) + eps);
}

/// One row: o = T(x * s) * gamma with s = rms_norm_row_rstd(x); returns s. o may equal x.
template <class T>
double rms_norm_row(const T* x, const T* gamma, double eps, T* o, std::int64_t C) {
  const double s = rms_norm_row_rstd(x, C, eps);
  PREFIXTUNE_CPU_SIMD
  for (std::int64_t j = 0; j < C; ++j) o[j] = static_cast<T>(static_cast<double>(x[j]) * s) * gamma[j];
  return s;
}

/// out = T(x * rstd) * gamma per row (transformers: the normalized row rounded to the input type, then scaled);
/// rstd is stored when non-null. out may equal x. x, out (rows, C); gamma (C); rstd (rows) or nullptr
template <class T>
void rms_norm_forward_kernel(Cpu, const T* x, const T* gamma, T eps, T* out, T* rstd, std::int64_t rows,
                             std::int64_t C) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* o = out + r * C;
    const double s = rms_norm_row(xr, gamma, static_cast<double>(eps), o, C);
    if (rstd) rstd[r] = static_cast<T>(s);
  }
}

/// One row of the input gradient: d += s * (g - n * mean(g * n)) with n = x * s and g = gamma * dout.
template <class T>
void rms_norm_row_backward(const T* dout, const T* x, const T* gamma, double s, T* d, std::int64_t C) {
  double sum_gn = 0;
  PREFIXTUNE_CPU_SIMD_SUM(sum_gn)
  for (std::int64_t j = 0; j < C; ++j)
    sum_gn += static_cast<double>(gamma[j]) * static_cast<double>(dout[j]) * static_cast<double>(x[j]) * s;
  const double mean_gn = sum_gn / static_cast<double>(C);
  PREFIXTUNE_CPU_SIMD
  for (std::int64_t j = 0; j < C; ++j) {
    const double n = static_cast<double>(x[j]) * s;
    d[j] += static_cast<T>(s * (static_cast<double>(gamma[j]) * static_cast<double>(dout[j]) - n * mean_gn));
  }
}

/// dx += s * (g - n * mean(g * n)) per row, with n = x * s and g = gamma * dout.
/// dout, x, dx (rows, C); gamma (C); rstd (rows)
template <class T>
void rms_norm_backward_input_kernel(Cpu, const T* dout, const T* x, const T* gamma, const T* rstd, T* dx,
                                    std::int64_t rows, std::int64_t C) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r)
    rms_norm_row_backward(dout + r * C, x + r * C, gamma, static_cast<double>(rstd[r]), dx + r * C, C);
}

/// dgamma[j] += sum_r dout[r, j] * x[r, j] * rstd[r], column blocks in parallel, accumulated in double (the result
/// does not depend on the thread count). dout, x (rows, C); rstd (rows); dgamma (C)
template <class T>
void rms_norm_backward_weight_kernel(Cpu, const T* dout, const T* x, const T* rstd, T* dgamma, std::int64_t rows,
                                     std::int64_t C) {
  for_each_column_block(C, rows * C, [&](std::int64_t j0, std::int64_t w) {
    double acc[kCpuColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* g = dout + r * C + j0;
      const T* xr = x + r * C + j0;
      const double s = static_cast<double>(rstd[r]);
      PREFIXTUNE_CPU_SIMD
      for (std::int64_t j = 0; j < w; ++j) acc[j] += static_cast<double>(g[j]) * static_cast<double>(xr[j]) * s;
    }
    for (std::int64_t j = 0; j < w; ++j) dgamma[j0 + j] = static_cast<T>(static_cast<double>(dgamma[j0 + j]) + acc[j]);
  });
}

}  // namespace prefixtune::detail
