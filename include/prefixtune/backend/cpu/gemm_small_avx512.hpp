// SPDX-License-Identifier: MIT
// The AVX-512 kernel of the few-row NN product (C = A B, A (m, k), B (k, n) row-major, m <= 16), used by
// gemm_small.hpp when the CPU has AVX-512F. With 32 vector registers all of up to 8 rows x 48 columns of C stay in
// registers while B is read 8 rows at a time: per row of B 3 loads and up to 8 broadcasts feed 24 fused
// multiply-adds, where the AVX2 kernel keeps its sums in L1 (a load and a store per 4 multiply-adds). Columns past a
// multiple of 16 are masked lanes, so there is no scalar tail.
//
// Every element of C is the same chain of fused multiply-adds over p = 0..k in order as in the AVX2 kernel (and
// as alone, whatever m is), so the two kernels give bit-identical results.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "prefixtune/backend/cpu/simd.hpp"

#if defined(PREFIXTUNE_X86_KERNELS)

namespace prefixtune::detail {

/// B rows per pass, the passes the prefetches run ahead, the widest column piece, and the floats of partial sums
/// (m rows of a piece, kept between passes on the stack: 32 KB, within any thread's stack).
inline constexpr std::int64_t kNn512Rows = 8, kNn512PrefetchPasses = 2, kNn512MaxPiece = 2016, kNn512SumFloats = 8192;

/// As store8 on the lanes of `lanes`: alpha * s (+ beta * C; beta == 0 never reads C).
PREFIXTUNE_TARGET_AVX512 inline void store16(float* c, __mmask16 lanes, __m512 s, float alpha, float beta) {
  __m512 r = _mm512_mul_ps(_mm512_set1_ps(alpha), s);
  if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(lanes, c), r);
  _mm512_mask_storeu_ps(c, lanes, r);
}

/// One row of a tile: its 3 vectors of sums and what it does with them (lanes past the tile's columns masked).
PREFIXTUNE_TARGET_AVX512 inline void load3(__m512 (&acc)[3], const float* y, const __mmask16 (&k)[3]) {
  acc[0] = _mm512_maskz_loadu_ps(k[0], y);
  acc[1] = _mm512_maskz_loadu_ps(k[1], y + 16);
  acc[2] = _mm512_maskz_loadu_ps(k[2], y + 32);
}
PREFIXTUNE_TARGET_AVX512 inline void fma3(__m512 (&acc)[3], float a, __m512 v0, __m512 v1, __m512 v2) {
  const __m512 x = _mm512_set1_ps(a);
  acc[0] = _mm512_fmadd_ps(x, v0, acc[0]);
  acc[1] = _mm512_fmadd_ps(x, v1, acc[1]);
  acc[2] = _mm512_fmadd_ps(x, v2, acc[2]);
}
PREFIXTUNE_TARGET_AVX512 inline void save3(float* y, const __mmask16 (&k)[3], const __m512 (&acc)[3]) {
  _mm512_mask_storeu_ps(y, k[0], acc[0]);
  _mm512_mask_storeu_ps(y + 16, k[1], acc[1]);
  _mm512_mask_storeu_ps(y + 32, k[2], acc[2]);
}
PREFIXTUNE_TARGET_AVX512 inline void out3(float* c, const __mmask16 (&k)[3], const __m512 (&acc)[3], float alpha,
                                          float beta) {
  store16(c, k[0], acc[0], alpha, beta);
  store16(c + 16, k[1], acc[1], alpha, beta);
  store16(c + 32, k[2], acc[2], alpha, beta);
}

/// C tile of sizeof...(I) rows x 48 columns (3 vectors, lanes past `cols` masked) over rows p0..p1 of B. The sums
/// start at zero (first pass) or at y, and end in y or, on the last pass, as alpha * s + beta * C in c. The rows
/// are a pack expansion, not a loop: straight-line code with the sums in registers under every compiler (nvcc's
/// host pass drops `#pragma GCC unroll`, and a loop left rolled keeps the sums in memory).
template <int... I>
PREFIXTUNE_TARGET_AVX512 inline void nn512_tile(std::integer_sequence<int, I...>, std::int64_t p0, std::int64_t p1,
                                                std::int64_t cols, const float* a, std::int64_t lda, const float* b,
                                                std::int64_t ldb, float* y, std::int64_t ys, bool first, bool last,
                                                float alpha, float beta, float* c, std::int64_t ldc) {
  const auto mask = [cols](int v) -> __mmask16 {
    const std::int64_t left = cols - 16 * v;
    return left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
  };
  const __mmask16 k[3] = {mask(0), mask(1), mask(2)};
  __m512 acc[sizeof...(I)][3] = {};
  if (!first) (load3(acc[I], y + I * ys, k), ...);
  for (std::int64_t p = p0; p < p1; ++p) {
    const float* bp = b + p * ldb;
    const __m512 v0 = _mm512_maskz_loadu_ps(k[0], bp), v1 = _mm512_maskz_loadu_ps(k[1], bp + 16),
                 v2 = _mm512_maskz_loadu_ps(k[2], bp + 32);
    (fma3(acc[I], a[I * lda + p], v0, v1, v2), ...);
  }
  if (last)
    (out3(c + I * ldc, k, acc[I], alpha, beta), ...);
  else
    (save3(y + I * ys, k, acc[I]), ...);
}

/// The tile for `rows` (1..8) rows.
PREFIXTUNE_TARGET_AVX512 inline void nn512_rows(std::int64_t rows, std::int64_t p0, std::int64_t p1, std::int64_t cols,
                                                const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
                                                float* y, std::int64_t ys, bool first, bool last, float alpha,
                                                float beta, float* c, std::int64_t ldc) {
  switch (rows) {
#define PREFIXTUNE_NN512_CASE(R)                                                                                       \
  case R:                                                                                                              \
    nn512_tile(std::make_integer_sequence<int, R>{}, p0, p1, cols, a, lda, b, ldb, y, ys, first, last, alpha, beta, c, \
               ldc);                                                                                                   \
    break;
    PREFIXTUNE_NN512_CASE(1)
    PREFIXTUNE_NN512_CASE(2)
    PREFIXTUNE_NN512_CASE(3)
    PREFIXTUNE_NN512_CASE(4)
    PREFIXTUNE_NN512_CASE(5)
    PREFIXTUNE_NN512_CASE(6)
    PREFIXTUNE_NN512_CASE(7)
    PREFIXTUNE_NN512_CASE(8)
#undef PREFIXTUNE_NN512_CASE
    default:
      break;
  }
}

/// Columns j0..j1 of C = alpha A B + beta C (NN), all m (<= 16) rows: in pieces of up to kNn512MaxPiece columns
/// (fewer for more rows), B read kNn512Rows rows at a time across the piece (contiguous streams), the rows
/// kNn512PrefetchPasses passes further down prefetched as the pass goes (3 lines of each per tile of 48 columns).
PREFIXTUNE_TARGET_AVX512 inline void nn_columns_avx512(std::int64_t m, std::int64_t j0, std::int64_t j1, std::int64_t k,
                                                       float alpha, const float* a, std::int64_t lda, const float* b,
                                                       std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  constexpr std::int64_t kTile = 48;
  alignas(64) float y[kNn512SumFloats];
  // Whole tiles per piece; rows of partial sums 16 floats more apart than the piece is wide (not 4 KB apart).
  const std::int64_t piece = std::min(kNn512MaxPiece, (kNn512SumFloats / m - 16) / kTile * kTile), ys = piece + 16;
  const std::int64_t ahead = kNn512PrefetchPasses * kNn512Rows;
  for (std::int64_t t0 = j0; t0 < j1; t0 += piece) {
    const std::int64_t w = std::min(piece, j1 - t0);
    for (std::int64_t p0 = 0; p0 < k; p0 += kNn512Rows) {
      const std::int64_t p1 = std::min(k, p0 + kNn512Rows);
      const bool first = p0 == 0, last = p1 == k;
      const std::int64_t pf_rows = std::min(kNn512Rows, k - (p0 + ahead));  // rows to prefetch (<= 0: none)
      for (std::int64_t t = 0; t < w; t += kTile) {
        const std::int64_t cols = std::min(kTile, w - t);
        const float* bt = b + t0 + t;
        for (std::int64_t r = 0; r < pf_rows; ++r) {
          const char* line = reinterpret_cast<const char*>(bt + (p0 + ahead + r) * ldb);
          _mm_prefetch(line, _MM_HINT_T0);
          _mm_prefetch(line + 64, _MM_HINT_T0);
          _mm_prefetch(line + 128, _MM_HINT_T0);
        }
        for (std::int64_t i = 0; i < m; i += 8)
          nn512_rows(std::min<std::int64_t>(8, m - i), p0, p1, cols, a + i * lda, lda, bt, ldb, y + i * ys + t, ys,
                     first, last, alpha, beta, c + i * ldc + t0 + t, ldc);
      }
    }
  }
}

}  // namespace prefixtune::detail

#endif  // PREFIXTUNE_X86_KERNELS
