// SPDX-License-Identifier: MIT
// Element-wise math written once for host and device, shared by the CPU kernels (cpu/elementwise.hpp) and the
// CUDA kernels (cuda/elementwise.cuh): GELU (gelu_new and exact) and their derivatives, the tanh derivative, and
// the dropout keep test with the Philox mask of one block of four elements. No host-only calls in here.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/core/macros.hpp"
#include "prefixtune/core/rng.hpp"

namespace prefixtune::detail {

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

}  // namespace prefixtune::detail
