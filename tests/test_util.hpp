// SPDX-License-Identifier: MIT
// Shared test helpers: random tensors, naive double-precision references, error-message capture.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/rng.hpp"

namespace prefixtune::test {

/// A fresh folder under the system temp dir, unique per process and instance, removed on destruction.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("prefixtune_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  /// Names of all entries in the folder.
  std::vector<std::string> entries() const {
    std::vector<std::string> v;
    for (const auto& e : std::filesystem::directory_iterator(path)) v.push_back(e.path().filename().string());
    return v;
  }
};

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

/// Forward-pass tolerance against a double reference: float 1e-5, double 1e-10 (relative).
template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-10;
}

/// A host tensor of U[lo, hi) values.
template <class T>
Tensor<T> random_tensor(const Shape& s, Rng& rng, double lo = -1.0, double hi = 1.0) {
  auto t = Tensor<T>::empty(s);
  fill_uniform(t, rng, lo, hi);
  return t;
}

/// The values of t widened to double (a reference then sees exactly the rounded inputs the op sees).
template <class T>
std::vector<double> as_double(const Tensor<T>& t) {
  auto v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

/// A double copy of t.
template <class T>
Tensor<double> to_double(const Tensor<T>& t) {
  return Tensor<double>::from_vector(t.shape(), as_double(t));
}

/// A Tensor<T> of shape s from double values (rounded to T).
template <class T>
Tensor<T> tensor(const Shape& s, const std::vector<double>& v) {
  return Tensor<T>::from_vector(s, std::vector<T>(v.begin(), v.end()));
}

/// n uniform values in [-1, 1).
inline std::vector<double> random_values(std::int64_t n, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = rng.uniform(-1.0, 1.0);
  return v;
}

/// sum_i a_i b_i over two equally shaped double tensors (the scalar of a finite-difference check: <w, f(x)>).
inline double dot(const Tensor<double>& a, const Tensor<double>& b) {
  REQUIRE(a.numel() == b.numel());
  double s = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += a.data()[i] * b.data()[i];
  return s;
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

/// Largest |x - y| / (1 + |y|) over two equally long sequences (0 where x == y, equal infinities included).
/// Sequences of different lengths, or a NaN difference (a NaN on either side, an infinity against another value),
/// fail the calling test with a message naming them and give +infinity: neither a comparison of a prefix of the
/// elements nor std::max's dropping of NaN can pass a `max_rel_diff(...) < tol` or `== 0.0`. Callers pass flat
/// sequences (Tensor::to_vector()), so a shape mismatch shows as a length mismatch; compare shapes first where equal
/// lengths could hide one.
template <class X, class Y>
double max_rel_diff(const X& x, const Y& y) {
  if (x.size() != y.size()) {
    FAIL_CHECK("max_rel_diff: the sequences have different lengths, " << x.size() << " and " << y.size());
    return std::numeric_limits<double>::infinity();
  }
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xi = static_cast<double>(x[i]), yi = static_cast<double>(y[i]);
    const double d = xi == yi ? 0.0 : std::abs(xi - yi) / (1.0 + std::abs(yi));
    if (std::isnan(d)) {
      FAIL_CHECK("max_rel_diff: element " << i << " compares " << xi << " with " << yi);
      return std::numeric_limits<double>::infinity();
    }
    m = std::max(m, d);
  }
  return m;
}

}  // namespace prefixtune::test
