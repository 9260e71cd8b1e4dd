// SPDX-License-Identifier: MIT
// Float GEMMs with few rows (m <= 16: decoding a batch of 1..16 tokens) as AVX2 + FMA kernels (and, for B (k, n)
// on CPUs with AVX-512F, the kernel of gemm_small_avx512.hpp) that read the weight matrix B once, in place, for
// all m rows. OpenBLAS repacks all of B on every call (at decoding shapes most of its time) and Eigen's GEMV is
// SSE2-only in a default build; these kernels are compiled through function target attributes (simd.hpp) and
// chosen at run time when the CPU has them, so users need no -march flag.
//
// Two layouts, both with A (m, k) row-major:
//  - NN: C = A B, B (k, n) row-major (GPT-2's Conv1D weights): B streamed row by row, partial sums in L1 (AVX2)
//    or in registers (AVX-512).
//  - NT: C = A B^T, B (n, k) row-major (nn.Linear weights, the tied LM head). Each (row, column) pair is one dot
//    product of 8 lanes, reduced in a fixed order.
// Every output element is summed in the same order whatever m is, so a row's result does not depend on the rows
// batched with it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "prefixtune/backend/cpu/gemm_small_avx512.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/simd.hpp"
#include "prefixtune/backend/cpu/threads.hpp"

namespace prefixtune::detail {

/// Row counts the small-m kernels take; larger products go to the blocked GEMM.
inline constexpr std::int64_t kSmallGemmMaxRows = 16;

#if defined(PREFIXTUNE_X86_KERNELS)

/// Writes alpha * s (+ beta * C) to 8 consecutive outputs; beta == 0 never reads C.
PREFIXTUNE_TARGET_AVX2 inline void store8(float* c, __m256 s, float alpha, float beta) {
  __m256 r = _mm256_mul_ps(_mm256_set1_ps(alpha), s);
  if (beta != 0.0f) r = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(c), r);
  _mm256_storeu_ps(c, r);
}

inline void store1(float* c, float s, float alpha, float beta) {
  *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

/// NN (B (k, n) row-major): B is read 4 rows at a time in pieces of up to 1024 columns (4 contiguous streams,
/// the rows kNnPrefetchRows further down prefetched meanwhile, spread over the pass: 0.63-0.91x the time of one
/// burst of prefetches per pass, and 16 rows ahead 0.88-0.95x the time of 8), and every row of A adds its products into
/// partial sums of those columns kept in L1 (at most kNnSumFloats of them). Each element of C is one chain of fused
/// multiply-adds over p = 0..k in order, whatever m is.
inline constexpr std::int64_t kNnSumFloats = 4096, kNnPrefetchRows = 16;

/// Columns j0..j1 of C = alpha A B + beta C (NN), all m rows.
PREFIXTUNE_TARGET_AVX2 inline void nn_columns_avx2(std::int64_t m, std::int64_t j0, std::int64_t j1, std::int64_t k,
                                                   float alpha, const float* a, std::int64_t lda, const float* b,
                                                   std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  alignas(32) float y[kNnSumFloats];
  const std::int64_t piece = std::min<std::int64_t>(1024, kNnSumFloats / m / 8 * 8);
  const std::int64_t j8 = j0 + (j1 - j0) / 8 * 8;
  for (std::int64_t t0 = j0; t0 < j8; t0 += piece) {
    const std::int64_t w = std::min(piece, j8 - t0);  // a multiple of 8
    std::fill(y, y + m * piece, 0.0f);
    std::int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const float *b0 = b + p * ldb + t0, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
      // The first pass over these 4 rows of B prefetches rows p + kNnPrefetchRows .. + 4 as it goes (a line of
      // each every 16 columns), spread over the pass rather than in one burst.
      const float* pf = p + 4 + kNnPrefetchRows <= k ? b0 + kNnPrefetchRows * ldb : nullptr;
      auto prefetch = [&](std::int64_t j) {
        if (pf != nullptr && j % 16 == 0)
          for (std::int64_t r = 0; r < 4; ++r)
            _mm_prefetch(reinterpret_cast<const char*>(pf + r * ldb + j), _MM_HINT_T0);
      };
      std::int64_t i = 0;
      // Two rows of A per pass: each B vector loaded once for 8 multiply-adds.
      for (; i + 2 <= m; i += 2, pf = nullptr) {
        const float *ai = a + i * lda + p, *an = ai + lda;
        const __m256 x0 = _mm256_set1_ps(ai[0]), x1 = _mm256_set1_ps(ai[1]), x2 = _mm256_set1_ps(ai[2]),
                     x3 = _mm256_set1_ps(ai[3]), z0 = _mm256_set1_ps(an[0]), z1 = _mm256_set1_ps(an[1]),
                     z2 = _mm256_set1_ps(an[2]), z3 = _mm256_set1_ps(an[3]);
        float *yi = y + i * piece, *yn = yi + piece;
        for (std::int64_t j = 0; j < w; j += 8) {
          prefetch(j);
          const __m256 v0 = _mm256_loadu_ps(b0 + j), v1 = _mm256_loadu_ps(b1 + j), v2 = _mm256_loadu_ps(b2 + j),
                       v3 = _mm256_loadu_ps(b3 + j);
          __m256 s = _mm256_load_ps(yi + j), t = _mm256_load_ps(yn + j);
          s = _mm256_fmadd_ps(x0, v0, s);
          t = _mm256_fmadd_ps(z0, v0, t);
          s = _mm256_fmadd_ps(x1, v1, s);
          t = _mm256_fmadd_ps(z1, v1, t);
          s = _mm256_fmadd_ps(x2, v2, s);
          t = _mm256_fmadd_ps(z2, v2, t);
          s = _mm256_fmadd_ps(x3, v3, s);
          t = _mm256_fmadd_ps(z3, v3, t);
          _mm256_store_ps(yi + j, s);
          _mm256_store_ps(yn + j, t);
        }
      }
      if (i < m) {
        const float* ai = a + i * lda + p;
        const __m256 x0 = _mm256_set1_ps(ai[0]), x1 = _mm256_set1_ps(ai[1]), x2 = _mm256_set1_ps(ai[2]),
                     x3 = _mm256_set1_ps(ai[3]);
        float* yi = y + i * piece;
        for (std::int64_t j = 0; j < w; j += 8) {
          prefetch(j);
          __m256 acc = _mm256_load_ps(yi + j);
          acc = _mm256_fmadd_ps(x0, _mm256_loadu_ps(b0 + j), acc);
          acc = _mm256_fmadd_ps(x1, _mm256_loadu_ps(b1 + j), acc);
          acc = _mm256_fmadd_ps(x2, _mm256_loadu_ps(b2 + j), acc);
          acc = _mm256_fmadd_ps(x3, _mm256_loadu_ps(b3 + j), acc);
          _mm256_store_ps(yi + j, acc);
        }
      }
    }
    for (; p < k; ++p) {
      const float* bp = b + p * ldb + t0;
      for (std::int64_t i = 0; i < m; ++i) {
        const __m256 x = _mm256_set1_ps(a[i * lda + p]);
        float* yi = y + i * piece;
        for (std::int64_t j = 0; j < w; j += 8)
          _mm256_store_ps(yi + j, _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + j), _mm256_load_ps(yi + j)));
      }
    }
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < w; j += 8)
        store8(c + i * ldc + t0 + j, _mm256_load_ps(y + i * piece + j), alpha, beta);
  }
  for (std::int64_t j = j8; j < j1; ++j)  // fewer than 8 columns left: scalar, the same chain per element
    for (std::int64_t i = 0; i < m; ++i) {
      float s = 0.0f;
      for (std::int64_t p = 0; p < k; ++p) s = std::fma(a[i * lda + p], b[p * ldb + j], s);
      store1(c + i * ldc + j, s, alpha, beta);
    }
}

/// Sum of the 8 lanes in a fixed order.
PREFIXTUNE_TARGET_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// One row of an NT block: each of its sums adds av times the matching vector of B.
template <int... J>
PREFIXTUNE_TARGET_AVX2 inline void nt_fma_row(std::integer_sequence<int, J...>, __m256 (&acc)[sizeof...(J)], __m256 av,
                                              const __m256 (&bv)[sizeof...(J)]) {
  ((acc[J] = _mm256_fmadd_ps(av, bv[J], acc[J])), ...);
}

/// One element of an NT block into C: the sum's 8 lanes reduced, the k % 8 tail added, then alpha / beta.
PREFIXTUNE_TARGET_AVX2 inline void nt_store(__m256 sum, std::int64_t k8, std::int64_t k, const float* a, const float* b,
                                            float alpha, float beta, float* c) {
  float s = hsum8(sum);
  for (std::int64_t p = k8; p < k; ++p) s = std::fma(a[p], b[p], s);
  store1(c, s, alpha, beta);
}

/// One row of an NT block into C.
template <int... J>
PREFIXTUNE_TARGET_AVX2 inline void nt_store_row(std::integer_sequence<int, J...>, const __m256 (&acc)[sizeof...(J)],
                                                std::int64_t k8, std::int64_t k, const float* a, const float* b,
                                                std::int64_t ldb, float alpha, float beta, float* c) {
  (nt_store(acc[J], k8, k, a, b + J * ldb, alpha, beta, c + J), ...);
}

/// NT block: C[I..., J...] of C = A B^T, each element a dot product over k (8 lanes, then the k % 8 tail). Rows and
/// columns are pack expansions, not loops: straight-line code with the sums in registers under every compiler
/// (nvcc's host pass drops `#pragma GCC unroll`, and a loop left rolled keeps the sums in memory).
template <int... I, int... J>
PREFIXTUNE_TARGET_AVX2 inline void nt_block(std::integer_sequence<int, I...>, std::integer_sequence<int, J...> cols,
                                            std::int64_t k, const float* a, std::int64_t lda, const float* b,
                                            std::int64_t ldb, float alpha, float beta, float* c, std::int64_t ldc,
                                            bool prefetch_next) {
  constexpr int JR = sizeof...(J);
  __m256 acc[sizeof...(I)][JR] = {};
  const std::int64_t k8 = k / 8 * 8;
  for (std::int64_t p = 0; p < k8; p += 8) {
    if (prefetch_next)  // the same line of the next JR rows of B
      (_mm_prefetch(reinterpret_cast<const char*>(b + (JR + J) * ldb + p), _MM_HINT_T0), ...);
    const __m256 bv[JR] = {_mm256_loadu_ps(b + J * ldb + p)...};
    (nt_fma_row(cols, acc[I], _mm256_loadu_ps(a + I * lda + p), bv), ...);
  }
  (nt_store_row(cols, acc[I], k8, k, a + I * lda, b, ldb, alpha, beta, c + I * ldc), ...);
}

/// Rows 0..m of an NT block of JR columns (3, or 1 for a range's last columns), in groups of up to 4 rows (up to
/// 12 accumulators); only the first group prefetches.
template <int JR>
PREFIXTUNE_TARGET_AVX2 inline void nt_rows(std::int64_t m, std::int64_t k, const float* a, std::int64_t lda,
                                           const float* b, std::int64_t ldb, float alpha, float beta, float* c,
                                           std::int64_t ldc, bool prefetch_next) {
  constexpr auto cols = std::make_integer_sequence<int, JR>{};
  std::int64_t i = 0;
  for (; i + 4 <= m; i += 4, prefetch_next = false)
    nt_block(std::make_integer_sequence<int, 4>{}, cols, k, a + i * lda, lda, b, ldb, alpha, beta, c + i * ldc, ldc,
             prefetch_next);
  const float* ai = a + i * lda;
  float* ci = c + i * ldc;
  switch (m - i) {
    case 3:
      nt_block(std::make_integer_sequence<int, 3>{}, cols, k, ai, lda, b, ldb, alpha, beta, ci, ldc, prefetch_next);
      break;
    case 2:
      nt_block(std::make_integer_sequence<int, 2>{}, cols, k, ai, lda, b, ldb, alpha, beta, ci, ldc, prefetch_next);
      break;
    case 1:
      nt_block(std::make_integer_sequence<int, 1>{}, cols, k, ai, lda, b, ldb, alpha, beta, ci, ldc, prefetch_next);
      break;
    default:
      break;
  }
}

/// Columns j0..j1 of C = alpha A B^T + beta C (NT), all m rows; the first row group of each block of 3 columns
/// prefetches the next block's rows of B.
PREFIXTUNE_TARGET_AVX2 inline void nt_columns_avx2(std::int64_t m, std::int64_t j0, std::int64_t j1, std::int64_t k,
                                                   float alpha, const float* a, std::int64_t lda, const float* b,
                                                   std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  std::int64_t j = j0;
  for (; j + 3 <= j1; j += 3) nt_rows<3>(m, k, a, lda, b + j * ldb, ldb, alpha, beta, c + j, ldc, j + 6 <= j1);
  for (; j < j1; ++j) nt_rows<1>(m, k, a, lda, b + j * ldb, ldb, alpha, beta, c + j, ldc, false);
}

#endif  // PREFIXTUNE_X86_KERNELS

/// The kernels gemm_small_m may use: the best this CPU runs, or AVX2 + FMA only (for comparisons).
enum class SmallGemmIsa { best, avx2 };

/// Products with at least this many multiply-adds split their columns over the OpenMP threads: counted in
/// multiply-adds (m n k), as kGemvParallelMin, hence four times the element threshold.
inline constexpr std::int64_t kSmallGemmParallelMin = 4 * kParallelMinElements;

/// C (m, n) = alpha * A op(B) + beta * C with A (m, k) row-major, op(B) = B (k, n) or, when b_transposed,
/// B^T with B (n, k); 1 <= m <= kSmallGemmMaxRows, on a CPU with AVX2 + FMA (B (k, n) with the AVX-512 kernel
/// where the CPU has AVX-512F, unless isa says avx2). Returns false (nothing done) when the product is not of that
/// kind or the CPU lacks them.
inline bool gemm_small_m(bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                         std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                         SmallGemmIsa isa = SmallGemmIsa::best) {
#if defined(PREFIXTUNE_X86_KERNELS)
  if (m < 1 || m > kSmallGemmMaxRows || n < 1 || k < 1 || !cpu_has_avx2_fma()) return false;
  const bool nn_avx512 = !b_transposed && isa == SmallGemmIsa::best && cpu_has_avx512f();
  auto columns = [&](std::int64_t j0, std::int64_t j1) {
    if (b_transposed)
      nt_columns_avx2(m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else if (nn_avx512)
      nn_columns_avx512(m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
      nn_columns_avx2(m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
  };
#if defined(_OPENMP)
  if (m * n * k >= kSmallGemmParallelMin && !omp_in_parallel() && num_threads() > 1) {
    // Column ranges in whole blocks of 48 (multiples of the NN kernel's 8 lanes and of the NT kernel's 3 columns):
    // NN one contiguous range per thread (long row pieces stream best); NT 4 ranges per thread handed out as the
    // threads come free (measured on the LM head, 50257 x 768: 0.5-0.65x the time of one range per thread).
    const std::int64_t blocks = (n + 47) / 48;
    auto range = [&](std::int64_t r, std::int64_t ranges) {
      const std::int64_t j0 = std::min(n, blocks * r / ranges * 48), j1 = std::min(n, blocks * (r + 1) / ranges * 48);
      if (j1 > j0) columns(j0, j1);
    };
    if (b_transposed) {
      const std::int64_t ranges = std::min<std::int64_t>(blocks, 4 * num_threads());
#pragma omp parallel for schedule(dynamic, 1)
      for (std::int64_t r = 0; r < ranges; ++r) range(r, ranges);
    } else {
#pragma omp parallel
      range(omp_get_thread_num(), omp_get_num_threads());
    }
    return true;
  }
#endif
  columns(0, n);
  return true;
#else
  (void)b_transposed, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)beta;
  (void)c, (void)ldc, (void)isa;
  return false;
#endif
}

}  // namespace prefixtune::detail
