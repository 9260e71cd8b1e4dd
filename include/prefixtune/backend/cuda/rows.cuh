// SPDX-License-Identifier: MIT
// CUDA row kernels (one block per row, block-wide reductions in double): layer norm forward, statistics and
// backward, and softmax forward and backward. Each follows its CPU kernel's arithmetic (two-pass statistics in
// double, double sums), so results agree to float rounding.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

/// Launches f(row) with one block of kCudaThreads per row (rows may exceed 65535: grid x goes to 2^31 - 1).
template <class F>
__global__ void cuda_rows_kernel(F f) {
  f(static_cast<std::int64_t>(blockIdx.x));
}

template <class F>
void cuda_for_rows(const char* what, std::int64_t rows, F f) {
  if (rows <= 0) return;
  PREFIXTUNE_CHECK(rows <= 0x7fffffff, what, ": ", rows, " rows exceed the CUDA grid");
  cuda_rows_kernel<<<static_cast<unsigned>(rows), kCudaThreads, 0, cuda_stream()>>>(f);
  cuda_check_launch(what);
}

/// Mean and rstd of one row of C elements (two passes in double), known to every thread of the block.
template <class T>
__device__ void cuda_row_stats(const T* x, std::int64_t C, double eps, double& mean, double& rstd) {
  double s = 0;
  for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) s += static_cast<double>(x[j]);
  mean = block_sum(s) / static_cast<double>(C);
  double q = 0;
  for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const double d = static_cast<double>(x[j]) - mean;
    q += d * d;
  }
  rstd = 1.0 / sqrt(block_sum(q) / static_cast<double>(C) + eps);
}

template <class T>
void layer_norm_stats_kernel(Cuda, const T* x, std::int64_t rows, std::int64_t C, T eps, T* mean, T* rstd) {
  const double e = static_cast<double>(eps);
  cuda_for_rows("layer_norm_stats", rows, [=] __device__(std::int64_t r) {
    double m, s;
    cuda_row_stats(x + r * C, C, e, m, s);
    if (threadIdx.x == 0) {
      mean[r] = static_cast<T>(m);
      rstd[r] = static_cast<T>(s);
    }
  });
}

template <class T>
void layer_norm_forward_kernel(Cuda, const T* x, const T* gamma, const T* beta, T eps, T* out, T* mean, T* rstd,
                               std::int64_t rows, std::int64_t C) {
  const double e = static_cast<double>(eps);
  cuda_for_rows("layer_norm_forward", rows, [=] __device__(std::int64_t r) {
    const T* xr = x + r * C;
    T* o = out + r * C;
    double m, s;
    cuda_row_stats(xr, C, e, m, s);
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x)
      o[j] = static_cast<T>((static_cast<double>(xr[j]) - m) * s) * gamma[j] + beta[j];
    if (threadIdx.x == 0) {
      if (mean) mean[r] = static_cast<T>(m);
      if (rstd) rstd[r] = static_cast<T>(s);
    }
  });
}

template <class T>
void layer_norm_backward_input_kernel(Cuda, const T* dout, const T* x, const T* gamma, const T* mean, const T* rstd,
                                      T* dx, std::int64_t rows, std::int64_t C) {
  cuda_for_rows("layer_norm_backward_input", rows, [=] __device__(std::int64_t r) {
    const T* g = dout + r * C;
    const T* xr = x + r * C;
    T* d = dx + r * C;
    const double m = static_cast<double>(mean[r]), s = static_cast<double>(rstd[r]);
    double sum_g = 0, sum_gn = 0;
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const double gj = static_cast<double>(gamma[j]) * static_cast<double>(g[j]);
      sum_g += gj;
      sum_gn += gj * (static_cast<double>(xr[j]) - m) * s;
    }
    const double mean_g = block_sum(sum_g) / static_cast<double>(C);
    const double mean_gn = block_sum(sum_gn) / static_cast<double>(C);
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const double n = (static_cast<double>(xr[j]) - m) * s;
      const double gj = static_cast<double>(gamma[j]) * static_cast<double>(g[j]);
      d[j] += static_cast<T>(s * (gj - mean_g - n * mean_gn));
    }
  });
}

/// dgamma, dbeta: one thread per column walks the rows in order (deterministic, double sums).
template <class T>
void layer_norm_backward_params_kernel(Cuda, const T* dout, const T* x, const T* mean, const T* rstd, T* dgamma,
                                       T* dbeta, std::int64_t rows, std::int64_t C) {
  cuda_for_elements("layer_norm_backward_params", C, [=] __device__(std::int64_t j) {
    double acc_g = 0, acc_b = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const double gj = static_cast<double>(dout[r * C + j]);
      acc_g += gj * (static_cast<double>(x[r * C + j]) - static_cast<double>(mean[r])) * static_cast<double>(rstd[r]);
      acc_b += gj;
    }
    if (dgamma) dgamma[j] = static_cast<T>(static_cast<double>(dgamma[j]) + acc_g);
    if (dbeta) dbeta[j] = static_cast<T>(static_cast<double>(dbeta[j]) + acc_b);
  });
}

/// out = softmax(x) per row; an all -inf row becomes zeros (as on the CPU).
template <class T>
void softmax_forward_kernel(Cuda, const T* x, T* out, std::int64_t rows, std::int64_t n) {
  cuda_for_rows("softmax_forward", rows, [=] __device__(std::int64_t r) {
    const T* xr = x + r * n;
    T* yr = out + r * n;
    T mx = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = xr[j] > mx ? xr[j] : mx;
    mx = block_max(mx);
    if (mx == T(-INFINITY)) {
      for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = T(0);
      return;
    }
    double sum = 0;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T e = exp(xr[j] - mx);
      yr[j] = e;
      sum += static_cast<double>(e);
    }
    const T inv = static_cast<T>(1.0 / block_sum(sum));
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] *= inv;
  });
}

template <class T>
void softmax_backward_kernel(Cuda, const T* dout, const T* y, T* dx, std::int64_t rows, std::int64_t n) {
  cuda_for_rows("softmax_backward", rows, [=] __device__(std::int64_t r) {
    const T* gr = dout + r * n;
    const T* yr = y + r * n;
    T* dr = dx + r * n;
    double dot = 0;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x)
      dot += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
    const T d = static_cast<T>(block_sum(dot));
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) dr[j] += yr[j] * (gr[j] - d);
  });
}

}  // namespace prefixtune::detail
