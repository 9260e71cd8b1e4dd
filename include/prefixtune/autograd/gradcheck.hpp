// SPDX-License-Identifier: MIT
// Central finite differences in double precision: the reference every hand-written backward is checked against.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// d f / d x by central differences: (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element i of x.
/// f must read x (a host double tensor, perturbed in place and restored) and return a scalar.
inline Tensor<double, Cpu> numeric_gradient(const std::function<double()>& f, Tensor<double, Cpu>& x,
                                            double eps = 1e-6) {
  PREFIXTUNE_CHECK(x.defined(), "numeric_gradient: undefined input");
  auto g = Tensor<double, Cpu>::zeros(x.shape());
  double* p = x.data();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double orig = p[i];
    p[i] = orig + eps;
    const double fp = f();
    p[i] = orig - eps;
    const double fm = f();
    p[i] = orig;
    g.data()[i] = (fp - fm) / (2.0 * eps);
  }
  return g;
}

/// Result of comparing an analytic gradient with a numeric one.
struct GradcheckResult {
  double max_abs_error = 0;  // max |analytic - numeric|
  double max_rel_error = 0;  // max |analytic - numeric| / max(1, |numeric|)
  std::int64_t worst_index = -1;
  bool ok(double tol) const { return max_rel_error <= tol; }
};

/// Compares analytic (same shape as numeric) element by element.
inline GradcheckResult compare_gradients(const Tensor<double, Cpu>& analytic, const Tensor<double, Cpu>& numeric) {
  PREFIXTUNE_CHECK(analytic.defined() && numeric.defined() && analytic.shape() == numeric.shape(),
                   "compare_gradients: shapes ", analytic.shape(), " and ", numeric.shape(), " differ");
  GradcheckResult r;
  for (std::int64_t i = 0; i < numeric.numel(); ++i) {
    const double a = analytic.data()[i], n = numeric.data()[i];
    const double abs_err = std::abs(a - n), rel = abs_err / std::max(1.0, std::abs(n));
    r.max_abs_error = std::max(r.max_abs_error, abs_err);
    if (rel > r.max_rel_error || !(rel == rel)) {
      r.max_rel_error = rel == rel ? rel : INFINITY;
      r.worst_index = i;
    }
  }
  return r;
}

/// Convenience: numeric gradient of f w.r.t. x compared with `analytic`; tol is on the relative error.
inline GradcheckResult gradcheck(const std::function<double()>& f, Tensor<double, Cpu>& x,
                                 const Tensor<double, Cpu>& analytic, double eps = 1e-6) {
  return compare_gradients(analytic, numeric_gradient(f, x, eps));
}

}  // namespace prefixtune
