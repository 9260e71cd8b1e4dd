// SPDX-License-Identifier: MIT
// CPU kernels of the optimizer: the fused AdamW update of one parameter tensor, and the sum of squares of a
// gradient (accumulated in double) that gradient-norm clipping builds on.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/common/adamw.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/simd.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/macros.hpp"

namespace prefixtune {
namespace detail {

#if defined(PREFIXTUNE_X86_KERNELS)
/// The AVX2 lanes of one element type (8 floats or 4 doubles) for adamw_step_avx2.
template <class T>
struct Avx2Lanes;
template <>
struct Avx2Lanes<float> {
  using V = __m256;
  static constexpr int kWidth = 8;
  PREFIXTUNE_TARGET_AVX2 static V set1(float x) { return _mm256_set1_ps(x); }
  PREFIXTUNE_TARGET_AVX2 static V load(const float* x) { return _mm256_loadu_ps(x); }
  PREFIXTUNE_TARGET_AVX2 static void store(float* x, V a) { _mm256_storeu_ps(x, a); }
  PREFIXTUNE_TARGET_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V div(V a, V b) { return _mm256_div_ps(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  PREFIXTUNE_TARGET_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
template <>
struct Avx2Lanes<double> {
  using V = __m256d;
  static constexpr int kWidth = 4;
  PREFIXTUNE_TARGET_AVX2 static V set1(double x) { return _mm256_set1_pd(x); }
  PREFIXTUNE_TARGET_AVX2 static V load(const double* x) { return _mm256_loadu_pd(x); }
  PREFIXTUNE_TARGET_AVX2 static void store(double* x, V a) { _mm256_storeu_pd(x, a); }
  PREFIXTUNE_TARGET_AVX2 static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V add(V a, V b) { return _mm256_add_pd(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V div(V a, V b) { return _mm256_div_pd(a, b); }
  PREFIXTUNE_TARGET_AVX2 static V sqrt(V a) { return _mm256_sqrt_pd(a); }
  PREFIXTUNE_TARGET_AVX2 static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};

/// AdamWStep::update on elements [begin, end), a vector of lanes at a time (the same roundings; the tail per
/// element).
template <class T>
PREFIXTUNE_TARGET_AVX2 void adamw_step_avx2(const AdamWStep<T>& s, T* p, const T* g, T* m, T* v, std::int64_t begin,
                                            std::int64_t end) {
  using L = Avx2Lanes<T>;
  const auto decay = L::set1(s.decay), b1 = L::set1(s.b1), b2 = L::set1(s.b2), one_minus_b1 = L::set1(s.one_minus_b1),
             one_minus_b2 = L::set1(s.one_minus_b2), neg_step = L::set1(s.neg_step), bc2 = L::set1(s.bc2),
             eps = L::set1(s.eps);
  std::int64_t i = begin;
  for (; i + L::kWidth <= end; i += L::kWidth) {
    const auto gi = L::load(g + i);
    const auto mi = L::fma(gi, one_minus_b1, L::mul(L::load(m + i), b1));
    const auto vi = L::fma(L::mul(one_minus_b2, gi), gi, L::mul(L::load(v + i), b2));
    L::store(m + i, mi);
    L::store(v + i, vi);
    const auto denom = L::add(L::div(L::sqrt(vi), bc2), eps);
    auto decayed = L::mul(L::load(p + i), decay);
    __asm__("" : "+x"(decayed));  // rounded by itself, as in unfused_mul: not fused into the addition below
    L::store(p + i, L::add(decayed, L::div(L::mul(neg_step, mi), denom)));
  }
  for (; i < end; ++i) s.update(p[i], g[i], m[i], v[i]);
}
#endif

/// One AdamW update of n elements (AdamWStep::update per element), in blocks split across the OpenMP threads: AVX2
/// lanes where the CPU has AVX2 + FMA, else one element at a time (std::fma is exact on every CPU, in software
/// where it has no FMA; the loop is not an `omp simd` one: the unfused product cannot be vectorized).
template <class T>
void adamw_step_kernel(Cpu, T* p, const T* g, T* m, T* v, std::int64_t n, const AdamWScalars& s) {
  const AdamWStep<T> step(s);
  constexpr bool kHasLanes = std::is_same_v<T, float> || std::is_same_v<T, double>;
  [[maybe_unused]] const bool lanes = kHasLanes && cpu_has_avx2_fma();
  constexpr std::int64_t kBlock = 1 << 12;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
#endif
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
#if defined(PREFIXTUNE_X86_KERNELS)
    if constexpr (kHasLanes) {
      if (lanes) {
        adamw_step_avx2(step, p, g, m, v, begin, end);
        continue;
      }
    }
#endif
    for (std::int64_t i = begin; i < end; ++i) step.update(p[i], g[i], m[i], v[i]);
  }
}

/// sum_i x[i]^2 accumulated in double (deterministic for a fixed thread count).
template <class T>
double sum_squares_kernel(Cpu, const T* x, std::int64_t n) {
  double acc = 0.0;
#if defined(_OPENMP)
#pragma omp parallel for reduction(+ : acc) schedule(static) if (n >= kParallelMinElements)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    acc += xi * xi;
  }
  return acc;
}

}  // namespace detail
}  // namespace prefixtune
