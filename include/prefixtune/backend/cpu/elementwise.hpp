// SPDX-License-Identifier: MIT
// CPU raw-pointer kernels of the element-wise ops, over the scalar math shared with the CUDA kernels
// (common/elementwise.hpp): accumulate, add, scale, gelu (gelu_new and exact), tanh, dropout (forward and
// accumulating backward).
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/common/elementwise.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune {
namespace detail {

/// Loops that evaluate an exponential per element (GELU) pay for the fork sooner, at an eighth of the element
/// count of the cheap maps (a decoding batch of 8 rows has 24576 MLP activations).
inline constexpr std::int64_t kTranscendentalParallelMin = kParallelMinElements / 8;

/// Calls f(i) for i in [0, n), split across the OpenMP threads when n >= parallel_min. f must be independent
/// per i.
template <class F>
void parallel_for_elements(std::int64_t n, F&& f, std::int64_t parallel_min = kParallelMinElements) {
  [[maybe_unused]] const bool parallel = n >= parallel_min;
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static) if (parallel)
#endif
  for (std::int64_t i = 0; i < n; ++i) f(i);
}

/// dst[i] += alpha * src[i]; dst may alias src.
template <class T>
void accumulate_kernel(Cpu, T* dst, const T* src, T alpha, std::int64_t n) {
  if (alpha == T(1)) {
    parallel_for_elements(n, [=](std::int64_t i) { dst[i] += src[i]; });
  } else {
    parallel_for_elements(n, [=](std::int64_t i) { dst[i] += alpha * src[i]; });
  }
}

/// out[i] = a[i] + b[i]; out may alias a or b.
template <class T>
void add_forward_kernel(Cpu, const T* a, const T* b, T* out, std::int64_t n) {
  parallel_for_elements(n, [=](std::int64_t i) { out[i] = a[i] + b[i]; });
}

/// out[i] = s * x[i]; out may alias x.
template <class T>
void scale_forward_kernel(Cpu, const T* x, T s, T* out, std::int64_t n) {
  parallel_for_elements(n, [=](std::int64_t i) { out[i] = s * x[i]; });
}

/// out[i] = gelu(x[i]); out may alias x.
template <class T>
void gelu_forward_kernel(Cpu, const T* x, T* out, std::int64_t n) {
  parallel_for_elements(
      n, [=](std::int64_t i) { out[i] = gelu_value(x[i]); }, kTranscendentalParallelMin);
}

/// dx[i] += dout[i] * gelu'(x[i]).
template <class T>
void gelu_backward_kernel(Cpu, const T* dout, const T* x, T* dx, std::int64_t n) {
  parallel_for_elements(
      n, [=](std::int64_t i) { dx[i] += dout[i] * gelu_derivative(x[i]); }, kTranscendentalParallelMin);
}

/// out[i] = gelu_exact(x[i]); out may alias x.
template <class T>
void gelu_exact_forward_kernel(Cpu, const T* x, T* out, std::int64_t n) {
  parallel_for_elements(
      n, [=](std::int64_t i) { out[i] = gelu_exact_value(x[i]); }, kTranscendentalParallelMin);
}

/// dx[i] += dout[i] * gelu_exact'(x[i]).
template <class T>
void gelu_exact_backward_kernel(Cpu, const T* dout, const T* x, T* dx, std::int64_t n) {
  parallel_for_elements(
      n, [=](std::int64_t i) { dx[i] += dout[i] * gelu_exact_derivative(x[i]); }, kTranscendentalParallelMin);
}

/// out[i] = tanh(x[i]); out may alias x.
template <class T>
void tanh_forward_kernel(Cpu, const T* x, T* out, std::int64_t n) {
  parallel_for_elements(n, [=](std::int64_t i) { out[i] = std::tanh(x[i]); });
}

/// dx[i] += dout[i] * (1 - y[i]^2), y the forward output.
template <class T>
void tanh_backward_kernel(Cpu, const T* dout, const T* y, T* dx, std::int64_t n) {
  parallel_for_elements(n, [=](std::int64_t i) { dx[i] += dout[i] * tanh_derivative_from_output(y[i]); });
}

/// The mask of dropout_apply_block over all n elements, one Philox block (four elements) per iteration;
/// scale = 1 / (1 - p).
template <class T>
void dropout_apply_kernel(Cpu, const T* src, T p, std::uint64_t seed, std::uint64_t offset, T* dst, std::int64_t n,
                          bool accumulate) {
  const T scale = T(1) / (T(1) - p);
  const std::int64_t blocks = (n + 3) / 4;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
#endif
  for (std::int64_t b = 0; b < blocks; ++b) dropout_apply_block(src, p, scale, seed, offset, dst, n, b, accumulate);
}

/// out = dropout(x) with the mask of (seed, offset); out may alias x.
template <class T>
void dropout_forward_kernel(Cpu, const T* x, T p, std::uint64_t seed, std::uint64_t offset, T* out, std::int64_t n) {
  dropout_apply_kernel(Cpu{}, x, p, seed, offset, out, n, false);
}

/// dx += dout * mask * 1/(1-p), recomputing the forward mask from (seed, offset).
template <class T>
void dropout_backward_kernel(Cpu, const T* dout, T p, std::uint64_t seed, std::uint64_t offset, T* dx, std::int64_t n) {
  dropout_apply_kernel(Cpu{}, dout, p, seed, offset, dx, n, true);
}

}  // namespace detail
}  // namespace prefixtune
