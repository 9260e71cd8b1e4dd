// SPDX-License-Identifier: MIT
// Optimizer ops on tensors of any device: the sum of squares that gradient-norm clipping adds up, and the fused
// AdamW update of one parameter tensor with its two moment estimates (the element math is
// backend/common/adamw.hpp, shared by the CPU and CUDA kernels).
#pragma once

#include <cstdint>

#include "prefixtune/backend/common/adamw.hpp"
#include "prefixtune/backend/cpu/adamw.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/elementwise.hpp"

namespace prefixtune {

/// sum_i x[i]^2 over every element of x, accumulated in double (deterministic for a fixed thread count on the
/// CPU, and for a fixed grid on the GPU); 0 for an empty or undefined tensor. // x: any shape
template <class T, class Device>
double sum_of_squares(const Tensor<T, Device>& x) {
  return sum_squares_kernel(Device{}, x.data(), x.numel());
}

/// One AdamW update in place of param with its gradient grad and moment estimates exp_avg, exp_avg_sq, with the
/// per-step scalars s (detail::AdamWScalars: decay, betas, step size, sqrt of the second bias correction, eps,
/// computed in double by the caller; see AdamW::step). Bit-identical to torch 1.13's AdamW in float and double.
/// // param, grad, exp_avg, exp_avg_sq: any shape, equal
template <class T, class Device>
void adamw_step(Tensor<T, Device>& param, const Tensor<T, Device>& grad, Tensor<T, Device>& exp_avg,
                Tensor<T, Device>& exp_avg_sq, const detail::AdamWScalars& s) {
  detail::check_map_args("adamw_step", "param", param, "grad", grad);
  detail::check_map_args("adamw_step", "param", param, "exp_avg", exp_avg);
  detail::check_map_args("adamw_step", "param", param, "exp_avg_sq", exp_avg_sq);
  adamw_step_kernel(Device{}, param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(), param.numel(), s);
}

}  // namespace prefixtune
