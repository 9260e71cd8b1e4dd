// SPDX-License-Identifier: MIT
// CPU kernels of the optimizer: the fused AdamW update of one parameter tensor, and the sum of squares of a
// gradient (accumulated in double) that gradient-norm clipping builds on.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/cpu/elementwise.hpp"
#include "prefixtune/backend/cpu/simd.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/macros.hpp"

namespace prefixtune {
namespace detail {

/// Per-step scalars of one AdamW update, computed in double by the caller (see AdamW::step):
/// decay = 1 - lr * weight_decay, step_size = lr / (1 - beta1^t), bias_correction2_sqrt = sqrt(1 - beta2^t).
struct AdamWScalars {
  double decay, beta1, beta2, step_size, bias_correction2_sqrt, eps;
};

/// a * b rounded to T by itself. Compilers contract a product and a later sum into one fused multiply-add (GCC
/// across statements under its default -ffp-contract=fast when FMA is enabled, nvcc under --fmad=true); torch's
/// `param.mul_` is a kernel of its own whose rounded result is stored before `addcdiv_` reads it, so this product
/// must stay a product: the empty asm hides it from contraction on the host, __fmul_rn / __dmul_rn on the device.
template <class T>
PREFIXTUNE_HOST_DEVICE inline T unfused_mul(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  T r = a * b;
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(r));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(r));
#else
  volatile T kept = r;
  r = kept;
#endif
  return r;
#endif
}

/// The per-step scalars rounded to T once (as torch's CPU kernels round a Python float argument to the tensor's
/// type), and the update of one element, shared by the CPU and CUDA kernels. It is torch 1.13's
/// _single_tensor_adamw on its AVX2 CPU kernels (measured; the vectorized loops and the scalar tails agree), one
/// rounding per step:
///   p.mul_(decay)                         p' = round(p decay)
///   m.mul_(beta1).add_(g, alpha=1-beta1)  m' = fma(g, 1 - beta1, round(m beta1))       (add_ is vec::fmadd)
///   v.mul_(beta2).addcmul_(g, g, 1-beta2) v' = fma(round((1 - beta2) g), g, round(v beta2))
///   denom = (v.sqrt() / bc2).add_(eps)    d  = round(round(sqrt(v') / bc2) + eps)
///   p.addcdiv_(m, denom, -step_size)      p  = round(p' + round(round(-step_size m') / d))
/// bit for bit in float and in double (tests/train/test_optim.cpp compares with ==).
template <class T>
struct AdamWStep {
  T decay, b1, b2, one_minus_b1, one_minus_b2, neg_step, bc2, eps;
  explicit AdamWStep(const AdamWScalars& s)
      : decay(static_cast<T>(s.decay)),
        b1(static_cast<T>(s.beta1)),
        b2(static_cast<T>(s.beta2)),
        one_minus_b1(static_cast<T>(1.0 - s.beta1)),
        one_minus_b2(static_cast<T>(1.0 - s.beta2)),
        neg_step(static_cast<T>(-s.step_size)),
        bc2(static_cast<T>(s.bias_correction2_sqrt)),
        eps(static_cast<T>(s.eps)) {}

  PREFIXTUNE_HOST_DEVICE void update(T& p, T g, T& m, T& v) const {
    using std::fma;
    using std::sqrt;
    const T mi = fma(g, one_minus_b1, m * b1);
    const T vi = fma(one_minus_b2 * g, g, v * b2);
    m = mi;
    v = vi;
    const T denom = sqrt(vi) / bc2 + eps;
    p = unfused_mul(p, decay) + (neg_step * mi) / denom;
  }
};

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
#pragma omp parallel for schedule(static) if (n >= kElementwiseParallelMin)
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
#pragma omp parallel for reduction(+ : acc) schedule(static) if (n >= kElementwiseParallelMin)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    acc += xi * xi;
  }
  return acc;
}

}  // namespace detail
}  // namespace prefixtune
