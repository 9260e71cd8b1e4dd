// SPDX-License-Identifier: MIT
// CPU kernels of the optimizer: the fused AdamW update of one parameter tensor, and the sum of squares of a
// gradient (accumulated in double) that gradient-norm clipping builds on.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cpu/elementwise.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/macros.hpp"

namespace prefixtune {
namespace detail {

/// Per-step scalars of one AdamW update, computed in double by the caller (see AdamW::step):
/// decay = 1 - lr * weight_decay, step_size = lr / (1 - beta1^t), bias_correction2_sqrt = sqrt(1 - beta2^t).
struct AdamWScalars {
  double decay, beta1, beta2, step_size, bias_correction2_sqrt, eps;
};

/// One fused AdamW update of n elements, in T, with the operations and their order of torch.optim.AdamW
/// (single-tensor path): p *= decay; m = m beta1 + (1 - beta1) g; v = v beta2 + ((1 - beta2) g) g;
/// p += (-step_size m) / (sqrt(v) / bias_correction2_sqrt + eps). The scalars are rounded to T once.
/// The per-step scalars rounded to T once, and the update of one element (shared by the CPU and CUDA kernels).
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
    const T mi = m * b1 + one_minus_b1 * g;
    const T vi = v * b2 + (one_minus_b2 * g) * g;
    m = mi;
    v = vi;
    using std::sqrt;
    const T denom = sqrt(vi) / bc2 + eps;
    p = p * decay + (neg_step * mi) / denom;
  }
};

template <class T>
void adamw_step_kernel(Cpu, T* p, const T* g, T* m, T* v, std::int64_t n, const AdamWScalars& s) {
  const AdamWStep<T> step(s);
  parallel_for_elements(n, [=](std::int64_t i) { step.update(p[i], g[i], m[i], v[i]); });
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
