// SPDX-License-Identifier: MIT
// The AdamW update of one element, written once for the CPU kernel (cpu/adamw.hpp) and the CUDA kernel
// (cuda/elementwise.cuh): the per-step scalars computed by the caller, their rounding to the element type, and
// the element math with torch's roundings.
#pragma once

#include <cmath>
#include <type_traits>

#include "prefixtune/core/macros.hpp"

namespace prefixtune::detail {

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

}  // namespace prefixtune::detail
