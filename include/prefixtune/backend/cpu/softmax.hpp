// SPDX-License-Identifier: MIT
// CPU row kernels for the softmax over the last axis: a numerically stable forward (max subtraction) and the
// accumulating backward dx += y * (dout - sum(dout * y)).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune {
namespace detail {

/// Below this many elements the row loop runs on one thread (the OpenMP fork would cost more than it saves).
/// Each element costs an exponential and three passes over its row, so the loop pays for the fork at half the
/// element count of the cheap maps.
inline constexpr std::int64_t kSoftmaxParallelMin = kParallelMinElements / 2;

/// out[r, :] = softmax(x[r, :]) for `rows` rows of length n; out may alias x.
///
/// Stability: softmax is invariant to subtracting a constant c from every logit,
///   exp(x_j) / sum_k exp(x_k) = exp(x_j - c) / sum_k exp(x_k - c),
/// and with c = max_k x_k every exponent is <= 0, so exp never overflows (logits of 1000 are fine) and the
/// largest term is exactly 1, so the sum is >= 1 and never underflows to 0. (This is the log-sum-exp trick:
/// log sum_k exp(x_k) = c + log sum_k exp(x_k - c).) The sum is accumulated in double.
///
/// A row whose entries are all -infinity (e.g. every key masked out) has no finite maximum: x - c would be
/// -inf - (-inf) = NaN. Such a row is defined to produce all zeros, so it contributes nothing downstream and
/// its backward gives zero gradient. Entries that are -inf in a row with some finite entry get exactly 0.
template <class T>
void softmax_forward_kernel(Cpu, const T* x, T* out, std::int64_t rows, std::int64_t n) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * n >= kSoftmaxParallelMin)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = out + r * n;
    T maxv = -std::numeric_limits<T>::infinity();
    for (std::int64_t j = 0; j < n; ++j) maxv = xr[j] > maxv ? xr[j] : maxv;
    if (maxv == -std::numeric_limits<T>::infinity()) {
      for (std::int64_t j = 0; j < n; ++j) yr[j] = T(0);
      continue;
    }
    double sum = 0.0;
    for (std::int64_t j = 0; j < n; ++j) {
      const T e = std::exp(xr[j] - maxv);
      yr[j] = e;
      sum += static_cast<double>(e);
    }
    const T inv = static_cast<T>(1.0 / sum);
    for (std::int64_t j = 0; j < n; ++j) yr[j] *= inv;
  }
}

/// dx[r, :] += y[r, :] * (dout[r, :] - sum_j dout[r, j] y[r, j]) for `rows` rows of length n, y the forward
/// output (the softmax Jacobian is diag(y) - y y^T). The dot product is accumulated in double.
template <class T>
void softmax_backward_kernel(Cpu, const T* dout, const T* y, T* dx, std::int64_t rows, std::int64_t n) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * n >= kSoftmaxParallelMin)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* gr = dout + r * n;
    const T* yr = y + r * n;
    T* dr = dx + r * n;
    double dot = 0.0;
    for (std::int64_t j = 0; j < n; ++j) dot += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
    const T d = static_cast<T>(dot);
    for (std::int64_t j = 0; j < n; ++j) dr[j] += yr[j] * (gr[j] - d);
  }
}

}  // namespace detail
}  // namespace prefixtune
