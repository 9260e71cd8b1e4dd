// SPDX-License-Identifier: MIT
// What every device's GEMM shares: the transpose flag of an operand and the argument checks of a row-major GEMM
// (the CPU kernels of cpu/gemm.hpp and the cuBLAS calls of cuda/gemm.hpp both validate with them).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// Whether a GEMM operand is used as stored (N) or transposed (T).
enum class Trans { N, T };

inline const char* to_string(Trans t) { return t == Trans::N ? "N" : "T"; }

namespace detail {

/// Validates the arguments of a row-major GEMM; `what` names the caller in the message.
inline void check_gemm_args(const char* what, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                            const void* a, std::int64_t lda, const void* b, std::int64_t ldb, const void* c,
                            std::int64_t ldc) {
  PREFIXTUNE_CHECK(m >= 0 && n >= 0 && k >= 0, what, ": negative size m=", m, " n=", n, " k=", k);
  const std::int64_t a_cols = ta == Trans::N ? k : m, b_cols = tb == Trans::N ? n : k;
  PREFIXTUNE_CHECK(lda >= std::max<std::int64_t>(1, a_cols), what, ": lda=", lda, " < ",
                   std::max<std::int64_t>(1, a_cols), " (op(A) is ", m, "x", k, ", trans ", to_string(ta), ")");
  PREFIXTUNE_CHECK(ldb >= std::max<std::int64_t>(1, b_cols), what, ": ldb=", ldb, " < ",
                   std::max<std::int64_t>(1, b_cols), " (op(B) is ", k, "x", n, ", trans ", to_string(tb), ")");
  PREFIXTUNE_CHECK(ldc >= std::max<std::int64_t>(1, n), what, ": ldc=", ldc, " < n=", n, " (at least 1)");
  PREFIXTUNE_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX,
                   what, ": sizes beyond 32-bit BLAS limits (m=", m, " n=", n, " k=", k, ")");
  PREFIXTUNE_CHECK((m == 0 || n == 0 || c != nullptr) && (m == 0 || n == 0 || k == 0 || (a && b)), what,
                   ": null data pointer");
}

}  // namespace detail

}  // namespace prefixtune
