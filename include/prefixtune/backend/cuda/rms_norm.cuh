// SPDX-License-Identifier: MIT
// CUDA kernels of RMS normalization over the last dimension (one block per row, statistics in double), and the
// per-element pieces of its arithmetic that the grouped-query input kernels (cuda/gqa.cuh) share. Each follows the
// CPU kernel's arithmetic (cpu/rms_norm.hpp), so results agree to the rounding of the sums.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cuda/launch.cuh"
#include "prefixtune/backend/cuda/rows.cuh"

namespace prefixtune::detail {

/// 1 / sqrt(mean(x^2) + eps) of one row of C values in double: thread `tid` of `threads` sums every threads-th
/// square and `reduce` (a block or warp sum) adds the partial sums; every thread gets the result.
template <class T, class Reduce>
__device__ double cuda_rms_norm_rstd(const T* x, std::int64_t C, double eps, int tid, int threads, Reduce reduce) {
  double sq = 0;
  for (std::int64_t j = tid; j < C; j += threads) sq += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  return 1.0 / sqrt(reduce(sq) / static_cast<double>(C) + eps);
}

/// One normalized element: T(x * s) * gamma (the row rounded to T before the scale, as on the CPU).
template <class T>
__device__ T cuda_rms_norm_value(T x, T gamma, double s) {
  return static_cast<T>(static_cast<double>(x) * s) * gamma;
}

/// One term of the input gradient's sum: gamma * dy * n with n = x * s, in double.
template <class T>
__device__ double cuda_rms_norm_gn(T dy, T x, T gamma, double s) {
  return static_cast<double>(gamma) * static_cast<double>(dy) * static_cast<double>(x) * s;
}

/// One element of the input gradient: s * (gamma * dy - n * mean_gn) with n = x * s, in double, rounded to T.
template <class T>
__device__ T cuda_rms_norm_dx(T dy, T x, T gamma, double s, double mean_gn) {
  const double n = static_cast<double>(x) * s;
  return static_cast<T>(s * (static_cast<double>(gamma) * static_cast<double>(dy) - n * mean_gn));
}

template <class T>
void rms_norm_forward_kernel(Cuda, const T* x, const T* gamma, T eps, T* out, T* rstd, std::int64_t rows,
                             std::int64_t C) {
  const double e = static_cast<double>(eps);
  cuda_for_rows("rms_norm_forward", rows, [=] __device__(std::int64_t r) {
    const T* xr = x + r * C;
    T* o = out + r * C;  // may be xr: each thread writes only the values it read itself
    const double s = cuda_rms_norm_rstd(xr, C, e, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
                                        [](double v) { return block_sum(v); });
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) o[j] = cuda_rms_norm_value(xr[j], gamma[j], s);
    if (rstd && threadIdx.x == 0) rstd[r] = static_cast<T>(s);
  });
}

template <class T>
void rms_norm_backward_input_kernel(Cuda, const T* dout, const T* x, const T* gamma, const T* rstd, T* dx,
                                    std::int64_t rows, std::int64_t C) {
  cuda_for_rows("rms_norm_backward_input", rows, [=] __device__(std::int64_t r) {
    const T* g = dout + r * C;
    const T* xr = x + r * C;
    T* d = dx + r * C;
    const double s = static_cast<double>(rstd[r]);
    double sum_gn = 0;
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) sum_gn += cuda_rms_norm_gn(g[j], xr[j], gamma[j], s);
    const double mean_gn = block_sum(sum_gn) / static_cast<double>(C);
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x)
      d[j] += cuda_rms_norm_dx(g[j], xr[j], gamma[j], s, mean_gn);
  });
}

/// dgamma: one thread per column walks the rows in order (deterministic, double sums, no atomics).
template <class T>
void rms_norm_backward_weight_kernel(Cuda, const T* dout, const T* x, const T* rstd, T* dgamma, std::int64_t rows,
                                     std::int64_t C) {
  cuda_for_elements("rms_norm_backward_weight", C, [=] __device__(std::int64_t j) {
    double acc = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      acc += static_cast<double>(dout[r * C + j]) * static_cast<double>(x[r * C + j]) * static_cast<double>(rstd[r]);
    dgamma[j] = static_cast<T>(static_cast<double>(dgamma[j]) + acc);
  });
}

}  // namespace prefixtune::detail
