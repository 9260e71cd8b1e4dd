// SPDX-License-Identifier: MIT
// Shared test helpers: random tensors, naive double-precision references, error-message capture.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/rng.hpp"

namespace prefixtune::test {

/// The message of the prefixtune::Error thrown by f, or "" if it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// n uniform values in [-1, 1).
inline std::vector<double> random_values(std::int64_t n, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = rng.uniform(-1.0, 1.0);
  return v;
}

/// Naive row-major GEMM in double: C = alpha op(A) op(B) + beta C.
inline void naive_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                       const std::vector<double>& a, std::int64_t lda, const std::vector<double>& b, std::int64_t ldb,
                       double beta, std::vector<double>& c, std::int64_t ldc, std::int64_t off_a = 0,
                       std::int64_t off_b = 0, std::int64_t off_c = 0) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const double av = ta ? a[off_a + p * lda + i] : a[off_a + i * lda + p];
        const double bv = tb ? b[off_b + j * ldb + p] : b[off_b + p * ldb + j];
        s += av * bv;
      }
      double& cv = c[off_c + i * ldc + j];
      cv = alpha * s + (beta == 0.0 ? 0.0 : beta * cv);
    }
}

/// Largest |x - y| / (1 + |y|) over two equally long sequences.
template <class X, class Y>
double max_rel_diff(const X& x, const Y& y) {
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(x[i]) - static_cast<double>(y[i])) /
                        (1.0 + std::abs(static_cast<double>(y[i]))));
  return m;
}

}  // namespace prefixtune::test
