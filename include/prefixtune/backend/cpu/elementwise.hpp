// SPDX-License-Identifier: MIT
// Element-wise math written once for host and device (GELU, tanh derivative, dropout keep test), and the CPU
// raw-pointer kernels over it: accumulate, add, scale, gelu (gelu_new and exact), tanh, dropout (forward and
// accumulating backward).
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/core/device.hpp"
#include "prefixtune/core/macros.hpp"
#include "prefixtune/core/rng.hpp"

namespace prefixtune {
namespace detail {

// ---- Scalar math shared with future CUDA kernels (no host-only calls in here) ----------------------------------

// GPT-2's "gelu_new" is 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3). Since
// 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)) = sigmoid(2u), it equals x / (1 + exp(-2u)), which is what is computed:
// the tanh form loses its relative precision for negative x, where 1 + tanh(u) cancels (in float: 1e-5 relative
// error at x = -3, 1e-2 at x = -4.5, and 0 instead of -8e-11 at x = -6), and one exp is several times cheaper
// than glibc's tanhf.
// The exponent -2u is capped at 80 so exp stays finite in float; beyond it gelu and gelu' are below 1e-30.

/// The exponent a = -2u(x) of gelu_new = x / (1 + exp(a)), capped at 80.
template <class T>
PREFIXTUNE_HOST_DEVICE inline T gelu_exp_arg(T x) {
  const T a = T(-2.0 * 0.79788456080286535588) * x * (T(1) + T(0.044715) * x * x);  // sqrt(2/pi) = 0.797...
  return a < T(80) ? a : T(80);
}

/// GPT-2 "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as x / (1 + exp(-2u)).
template <class T>
PREFIXTUNE_HOST_DEVICE inline T gelu_value(T x) {
  return x / (T(1) + std::exp(gelu_exp_arg(x)));
}

/// d gelu_new / dx = s + 2 x u'(x) s (1 - s) with s = sigmoid(2u) = 1 / (1 + e), 1 - s = e s, e = exp(-2u),
/// u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <class T>
PREFIXTUNE_HOST_DEVICE inline T gelu_derivative(T x) {
  const T e = std::exp(gelu_exp_arg(x));
  const T s = T(1) / (T(1) + e);
  return s + T(2.0 * 0.79788456080286535588) * x * (T(1) + T(3.0 * 0.044715) * x * x) * s * (e * s);
}

/// The exact GELU of BART and BERT ("gelu"): x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), evaluated as
/// 0.5 x erfc(-x / sqrt(2)), which keeps its relative precision for negative x (no 1 + erf cancellation).
template <class T>
PREFIXTUNE_HOST_DEVICE inline T gelu_exact_value(T x) {
  return T(0.5) * x * std::erfc(T(-0.70710678118654752440) * x);
}

/// d gelu_exact / dx = Phi(x) + x phi(x), phi the standard normal density.
template <class T>
PREFIXTUNE_HOST_DEVICE inline T gelu_exact_derivative(T x) {
  return T(0.5) * std::erfc(T(-0.70710678118654752440) * x) + x * T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
}

/// d tanh(x) / dx expressed through the forward output y = tanh(x).
template <class T>
PREFIXTUNE_HOST_DEVICE inline T tanh_derivative_from_output(T y) {
  return T(1) - y * y;
}

/// Dropout keeps an element iff its uniform draw u = u32_to_unit_float(bits) is >= p (so p == 0 keeps all).
template <class T>
PREFIXTUNE_HOST_DEVICE inline bool dropout_keeps(std::uint32_t bits, T p) {
  return static_cast<T>(u32_to_unit_float(bits)) >= p;
}

// ---- CPU kernels ------------------------------------------------------------------------------------------------

/// Below this many elements a loop runs on one thread: forking the OpenMP team would cost more than it saves.
/// Loops that evaluate an exponential per element (GELU) pay for the fork sooner (a decoding batch of 8 rows
/// has 24576 MLP activations).
inline constexpr std::int64_t kElementwiseParallelMin = 1 << 15, kTranscendentalParallelMin = 1 << 12;

/// Calls f(i) for i in [0, n), split across the OpenMP threads when n >= parallel_min. f must be independent
/// per i.
template <class F>
void parallel_for_elements(std::int64_t n, F&& f, std::int64_t parallel_min = kElementwiseParallelMin) {
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

/// Block b (elements 4b .. 4b + 3) of the dropout mask applied to src (written once for the CPU and CUDA kernels):
/// element i is kept iff its draw, word i % 4 of philox4x32(seed, i / 4 + offset, 0), passes dropout_keeps; then
///   accumulate == false: dst[i] = kept ? src[i] * scale : 0   (forward, dst may alias src)
///   accumulate == true:  dst[i] += kept ? src[i] * scale : 0  (backward)
/// One Philox block serves four consecutive elements, so `offset` counts blocks of 4 elements.
template <class T>
PREFIXTUNE_HOST_DEVICE inline void dropout_apply_block(const T* src, T p, T scale, std::uint64_t seed,
                                                       std::uint64_t offset, T* dst, std::int64_t n, std::int64_t b,
                                                       bool accumulate) {
  std::uint32_t bits[4];
  philox4x32(seed, static_cast<std::uint64_t>(b) + offset, 0, bits);
  const std::int64_t base = 4 * b;
  const int count = n - base < 4 ? static_cast<int>(n - base) : 4;
  for (int j = 0; j < count; ++j) {
    const T v = dropout_keeps(bits[j], p) ? src[base + j] * scale : T(0);
    if (accumulate) {
      dst[base + j] += v;
    } else {
      dst[base + j] = v;
    }
  }
}

/// The mask above over all n elements, one Philox block (four elements) per iteration; scale = 1 / (1 - p).
template <class T>
void dropout_apply_kernel(Cpu, const T* src, T p, std::uint64_t seed, std::uint64_t offset, T* dst, std::int64_t n,
                          bool accumulate) {
  const T scale = T(1) / (T(1) - p);
  const std::int64_t blocks = (n + 3) / 4;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= kElementwiseParallelMin)
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
