// SPDX-License-Identifier: MIT
// CPU kernels of the Llama family's gated MLP activation: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)), and
// its gradients with respect to gate and up.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// out = silu(gate) * up, element-wise (silu in double, rounded to T as torch's silu is, then times up).
template <class T>
void swiglu_forward_kernel(Cpu, const T* gate, const T* up, T* out, std::int64_t n) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements / 8)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(gate[i]);
    out[i] = static_cast<T>(g / (1.0 + std::exp(-g))) * up[i];
  }
}

/// dgate += dout * up * silu'(gate), dup += dout * silu(gate), with silu'(g) = s (1 + g (1 - s)), s = sigmoid(g);
/// either may be null.
template <class T>
void swiglu_backward_kernel(Cpu, const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::int64_t n) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements / 8)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(gate[i]), s = 1.0 / (1.0 + std::exp(-g)), d = static_cast<double>(dout[i]);
    if (dgate) dgate[i] += static_cast<T>(d * static_cast<double>(up[i]) * s * (1.0 + g * (1.0 - s)));
    if (dup) dup[i] += static_cast<T>(d * g * s);
  }
}

}  // namespace prefixtune::detail
