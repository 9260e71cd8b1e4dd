// SPDX-License-Identifier: MIT
// CPU kernels of layer normalization over the last dimension: row statistics, forward, and the backward split
// into a row-parallel input gradient and a column-parallel gamma/beta gradient.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cpu/linear.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// Mean and 1/sqrt(biased variance + eps) of one row of C values, two-pass in double (no cancellation).
template <class T>
void layer_norm_row_stats(const T* x, std::int64_t C, double eps, double& mean, double& rstd) {
  double sum = 0, sq = 0;
  PREFIXTUNE_CPU_SIMD_SUM(sum)
  for (std::int64_t j = 0; j < C; ++j) sum += static_cast<double>(x[j]);
  mean = sum / static_cast<double>(C);
  const double m = mean;
  PREFIXTUNE_CPU_SIMD_SUM(sq)
  for (std::int64_t j = 0; j < C; ++j) {
    const double d = static_cast<double>(x[j]) - m;
    sq += d * d;
  }
  rstd = 1.0 / std::sqrt(sq / static_cast<double>(C) + eps);
}

/// Per-row mean and rstd only (used when a backward pass was not handed the saved statistics).
/// x (rows, C); mean, rstd (rows)
template <class T>
void layer_norm_stats_kernel(Cpu, const T* x, std::int64_t rows, std::int64_t C, T eps, T* mean, T* rstd) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    double m, s;
    layer_norm_row_stats(x + r * C, C, static_cast<double>(eps), m, s);
    mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(s);
  }
}

/// out = (x - mean) * rstd * gamma + beta per row; mean / rstd are stored when non-null. out may equal x.
/// x, out (rows, C); gamma, beta (C); mean, rstd (rows) or nullptr
template <class T>
void layer_norm_forward_kernel(Cpu, const T* x, const T* gamma, const T* beta, T eps, T* out, T* mean, T* rstd,
                               std::int64_t rows, std::int64_t C) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* o = out + r * C;
    double m, s;
    layer_norm_row_stats(xr, C, static_cast<double>(eps), m, s);
    PREFIXTUNE_CPU_SIMD
    for (std::int64_t j = 0; j < C; ++j) {
      o[j] = static_cast<T>((static_cast<double>(xr[j]) - m) * s) * gamma[j] + beta[j];
    }
    if (mean) mean[r] = static_cast<T>(m);
    if (rstd) rstd[r] = static_cast<T>(s);
  }
}

/// dx += rstd * (g - mean(g) - n * mean(g * n)) per row, with n = (x - mean) * rstd and g = gamma * dout.
/// dout, x, dx (rows, C); gamma (C); mean, rstd (rows)
template <class T>
void layer_norm_backward_input_kernel(Cpu, const T* dout, const T* x, const T* gamma, const T* mean, const T* rstd,
                                      T* dx, std::int64_t rows, std::int64_t C) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMinElements)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* g = dout + r * C;
    const T* xr = x + r * C;
    T* d = dx + r * C;
    const double m = static_cast<double>(mean[r]), s = static_cast<double>(rstd[r]);
    double sum_g = 0, sum_gn = 0;
    PREFIXTUNE_CPU_SIMD_SUM(sum_g, sum_gn)
    for (std::int64_t j = 0; j < C; ++j) {
      const double gj = static_cast<double>(gamma[j]) * static_cast<double>(g[j]);
      sum_g += gj;
      sum_gn += gj * (static_cast<double>(xr[j]) - m) * s;
    }
    const double mean_g = sum_g / static_cast<double>(C), mean_gn = sum_gn / static_cast<double>(C);
    PREFIXTUNE_CPU_SIMD
    for (std::int64_t j = 0; j < C; ++j) {
      const double n = (static_cast<double>(xr[j]) - m) * s;
      const double gj = static_cast<double>(gamma[j]) * static_cast<double>(g[j]);
      d[j] += static_cast<T>(s * (gj - mean_g - n * mean_gn));
    }
  }
}

/// dgamma[j] += sum_r dout[r, j] * n[r, j], dbeta[j] += sum_r dout[r, j], either pointer may be null.
/// Column blocks in parallel, accumulated in double: the result does not depend on the thread count.
/// dout, x (rows, C); mean, rstd (rows); dgamma, dbeta (C)
template <class T>
void layer_norm_backward_params_kernel(Cpu, const T* dout, const T* x, const T* mean, const T* rstd, T* dgamma,
                                       T* dbeta, std::int64_t rows, std::int64_t C) {
  for_each_column_block(C, rows * C, [&](std::int64_t j0, std::int64_t w) {
    double acc_g[kCpuColumnBlock] = {}, acc_b[kCpuColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* g = dout + r * C + j0;
      const T* xr = x + r * C + j0;
      const double m = static_cast<double>(mean[r]), s = static_cast<double>(rstd[r]);
      PREFIXTUNE_CPU_SIMD
      for (std::int64_t j = 0; j < w; ++j) {
        const double gj = static_cast<double>(g[j]);
        acc_g[j] += gj * (static_cast<double>(xr[j]) - m) * s;
        acc_b[j] += gj;
      }
    }
    for (std::int64_t j = 0; j < w; ++j) {
      if (dgamma) dgamma[j0 + j] = static_cast<T>(static_cast<double>(dgamma[j0 + j]) + acc_g[j]);
      if (dbeta) dbeta[j0 + j] = static_cast<T>(static_cast<double>(dbeta[j0 + j]) + acc_b[j]);
    }
  });
}

}  // namespace prefixtune::detail
