// SPDX-License-Identifier: MIT
// CUDA kernels of the Llama family's gated MLP activation, out = silu(gate) * up, and its gradients: the CPU
// kernels' arithmetic (cpu/swiglu.hpp: silu in double, rounded to T, then times up), one thread per element.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

template <class T>
void swiglu_forward_kernel(Cuda, const T* gate, const T* up, T* out, std::int64_t n) {
  cuda_for_elements("swiglu_forward", n, [=] __device__(std::int64_t i) {
    const double g = static_cast<double>(gate[i]);
    out[i] = static_cast<T>(g / (1.0 + exp(-g))) * up[i];
  });
}

/// dgate += dout * up * silu'(gate), dup += dout * silu(gate); either may be null.
template <class T>
void swiglu_backward_kernel(Cuda, const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::int64_t n) {
  cuda_for_elements("swiglu_backward", n, [=] __device__(std::int64_t i) {
    const double g = static_cast<double>(gate[i]), s = 1.0 / (1.0 + exp(-g)), d = static_cast<double>(dout[i]);
    if (dgate) dgate[i] += static_cast<T>(d * static_cast<double>(up[i]) * s * (1.0 + g * (1.0 - s)));
    if (dup) dup[i] += static_cast<T>(d * g * s);
  });
}

}  // namespace prefixtune::detail
