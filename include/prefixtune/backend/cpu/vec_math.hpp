// SPDX-License-Identifier: MIT
// Vectorizable row math shared by the CPU kernels: a fast float exp for softmax rows and a double-accumulated sum.
#pragma once

#include <cstdint>
#include <cstring>

namespace prefixtune::detail {

/// Largest spread (max - min) of a float row for which the vectorized exp is used; wider rows (or rows with
/// NaN) take std::exp. Below it, (x - max) * log2(e) fits an int32, so the exponent trick below is exact.
inline constexpr float kFastExpMaxSpread = 1e9f;

/// y[i] = exp(x[i] - shift) for x[i] <= shift (so every result is in [0, 1]), in float, vectorized.
/// exp(a) = 2^k * exp(r) with k = round(a / ln 2) and r = a - k ln 2 in [-ln2/2, ln2/2] (ln 2 split in two
/// parts so k ln 2 is exact); exp(r) is the degree-7 Cephes polynomial (<= 2 ulp), and 2^k is built directly in
/// the exponent bits. k < -127 (a < ~ -88) flushes to 0. Rounding uses the 1.5 * 2^23 trick (exact for
/// |a / ln 2| < 2^22; larger |a| only occur with k far below -127, which flushes anyway). x and y may alias.
inline void exp_shifted_f32(const float* x, float* y, std::int64_t n, float shift) {
#if defined(_OPENMP)
#pragma omp simd
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = x[i] - shift;
    const float k = (a * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = a - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    std::int32_t ki = static_cast<std::int32_t>(k);
    ki = ki < -127 ? -127 : ki;  // an integer clamp keeps the loop branch-free (a float one blocks GCC's vectorizer)
    const std::int32_t bits = (ki + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    y[i] = p * scale;
  }
}

/// Sum of a row in double, four independent accumulators (about as fast as a float sum, far more accurate).
template <class T>
double sum_double(const T* x, std::int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += static_cast<double>(x[i]);
    s1 += static_cast<double>(x[i + 1]);
    s2 += static_cast<double>(x[i + 2]);
    s3 += static_cast<double>(x[i + 3]);
  }
  for (; i < n; ++i) s0 += static_cast<double>(x[i]);
  return (s0 + s1) + (s2 + s3);
}

}  // namespace prefixtune::detail
