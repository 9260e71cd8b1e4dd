// SPDX-License-Identifier: MIT
// Gradient-norm clipping over a parameter list (torch.nn.utils.clip_grad_norm_, L2 norm), and the global
// gradient norm it is built on.
#pragma once

#include <cmath>
#include <vector>

#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/optimizer.hpp"

namespace prefixtune {

/// sqrt(sum of g^2 over every defined gradient of params), accumulated in double. Parameters without a gradient
/// are skipped; an empty list (or no gradient at all) gives 0. NaN/inf in a gradient give NaN/inf.
template <class T, class Device>
double global_grad_norm(const std::vector<Var<T, Device>>& params) {
  double sum = 0.0;
  for (const auto& p : params) {
    if (!p.defined()) continue;
    const Tensor<T, Device>& g = p.grad();
    if (g.defined()) sum += sum_of_squares(g);
  }
  return std::sqrt(sum);
}

/// torch.nn.utils.clip_grad_norm_(params, max_norm) (L2): computes the global norm of all defined gradients
/// (in double) and scales every gradient by coef = max_norm / (norm + 1e-6) when coef < 1, i.e. when the norm
/// exceeds max_norm (or lies within 1e-6 below it: PyTorch's clamp(coef, max=1)). Returns the norm before
/// clipping. Differs from PyTorch on purpose for a non-finite norm (NaN/inf in some gradient): it is
/// returned as is and the gradients are left untouched (PyTorch would multiply them by NaN or 0); the caller
/// decides, typically by skipping the optimizer step. max_norm must be > 0 (inf: never clip).
template <class T, class Device>
double clip_grad_norm(const std::vector<Var<T, Device>>& params, double max_norm) {
  PREFIXTUNE_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm=", max_norm, " must be > 0");
  const double norm = global_grad_norm(params);
  const double coef_double = max_norm / (norm + 1e-6);
  if (!std::isfinite(norm) || !(coef_double < 1.0)) return norm;
  const T coef = static_cast<T>(coef_double);
  for (const auto& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    Tensor<T, Device> g = p.grad();
    scale_forward(g, coef, g);
  }
  return norm;
}

}  // namespace prefixtune
