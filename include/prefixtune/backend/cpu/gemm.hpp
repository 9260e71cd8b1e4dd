// SPDX-License-Identifier: MIT
// CPU GEMM on row-major data: C = alpha * op(A) * op(B) + beta * C, plain and strided-batched, all transposes.
// Float products of 1..16 rows (decoding) go to the AVX2 + FMA kernels of gemm_small.hpp when the CPU has them;
// other large products to OpenBLAS's cblas_?gemm when PREFIXTUNE_WITH_BLAS is set (about 2x Eigen's built-in
// GEMM on these machines), the remaining matrix-vector products (m == 1 or n == 1) to Eigen's GEMV, the rest to
// Eigen::Map.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "prefixtune/backend/cpu/gemm_small.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/error.hpp"

// Trans and check_gemm_args (common/gemm.hpp) come after the kernels above, as they did when they were defined in
// this header: declared first, they change the order in which GCC considers functions for inlining, and with it
// the object code of the small-GEMM kernels (measured: bench_ops_dense.cpp compiles to identical functions only
// in this order).
#include "prefixtune/backend/common/gemm.hpp"

namespace prefixtune {

namespace detail {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// C = alpha * op(A) op(B) + beta * C through Eigen::Map. With beta == 0, C is never read (NaNs in it vanish).
template <class T>
void gemm_eigen(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  using ConstMap = Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;
  Map C(c, m, n, Eigen::OuterStride<>(ldc));
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == T(0)) {
    if (beta == T(0)) {
      C.setZero();
    } else {
      C *= beta;
    }
    return;
  }
  const ConstMap A(a, ta == Trans::N ? m : k, ta == Trans::N ? k : m, Eigen::OuterStride<>(lda));
  const ConstMap B(b, tb == Trans::N ? k : n, tb == Trans::N ? n : k, Eigen::OuterStride<>(ldb));
  auto run = [&](const auto& opa, const auto& opb) {
    if (beta == T(0)) {
      C.noalias() = alpha * (opa * opb);
    } else {
      if (beta != T(1)) C *= beta;
      C.noalias() += alpha * (opa * opb);
    }
  };
  if (ta == Trans::N && tb == Trans::N) run(A, B);
  if (ta == Trans::N && tb == Trans::T) run(A, B.transpose());
  if (ta == Trans::T && tb == Trans::N) run(A.transpose(), B);
  if (ta == Trans::T && tb == Trans::T) run(A.transpose(), B.transpose());
}

#if defined(PREFIXTUNE_WITH_BLAS)
/// The same product through OpenBLAS's row-major CBLAS interface (float and double only).
template <class T>
void gemm_blas(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
               std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "BLAS GEMM needs float or double");
  if (m == 0 || n == 0) return;
  const auto opa = ta == Trans::N ? CblasNoTrans : CblasTrans;
  const auto opb = tb == Trans::N ? CblasNoTrans : CblasTrans;
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, opa, opb, M, N, K, alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
                static_cast<int>(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, M, N, K, alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
                static_cast<int>(ldc));
  }
}
#endif

/// Matrix-vector products with at least this many multiply-adds split their output over the OpenMP threads
/// (Eigen's GEMV runs on one thread; decoding one token is a chain of such products). Counted in multiply-adds
/// (m n k), which stream through registers far faster than an element loop touches memory: four times the
/// element threshold.
inline constexpr std::int64_t kGemvParallelMin = 4 * kParallelMinElements;

/// A GEMV shape (m == 1 or n == 1) as independent output blocks, one per thread, when it is large enough and we
/// are not inside a parallel region already. Returns false when it left the work to the caller.
template <class T>
bool gemv_parallel(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                   std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
#if defined(_OPENMP)
  const std::int64_t out = m == 1 ? n : m;
  if ((m != 1 && n != 1) || m * n * k < kGemvParallelMin || omp_in_parallel() || num_threads() < 2 || out < 64)
    return false;
#pragma omp parallel
  {
    const std::int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t per = ((out + nt - 1) / nt + 15) / 16 * 16;  // blocks of whole 16-element groups
    const std::int64_t o0 = std::min(out, t * per), o1 = std::min(out, o0 + per);
    if (o1 > o0) {
      if (m == 1)  // columns o0..o1 of op(B) and of C
        gemm_eigen(ta, tb, 1, o1 - o0, k, alpha, a, lda, tb == Trans::N ? b + o0 : b + o0 * ldb, ldb, beta, c + o0,
                   ldc);
      else  // rows o0..o1 of op(A) and of C
        gemm_eigen(ta, tb, o1 - o0, 1, k, alpha, ta == Trans::N ? a + o0 * lda : a + o0, lda, b, ldb, beta,
                   c + o0 * ldc, ldc);
    }
  }
  return true;
#else
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)beta;
  (void)c, (void)ldc;
  return false;
#endif
}

/// A few rows times a large transposed matrix (the tied LM head while decoding a small batch: C = A B^T with B
/// (n, k) row-major) as dot products that read each row of B once for all m rows; OpenBLAS would repack all of B
/// on every call (measured 1.4-2.6x slower at m = 4..8, k = 768, n = 50257). The portable route for CPUs without
/// AVX2 and for double (gemm_small.hpp's kernel takes float on AVX2 machines). Returns false when not applicable.
inline constexpr std::int64_t kSkinnyMinRows = 3, kSkinnyMaxRows = 8, kSkinnyMinWork = std::int64_t{1} << 20;

template <class T>
bool gemm_skinny_nt(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                    std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (ta != Trans::N || tb != Trans::T || m < kSkinnyMinRows || m > kSkinnyMaxRows || n * k < kSkinnyMinWork)
    return false;
  auto store = [&](std::int64_t i, std::int64_t j, T s) {
    T& out = c[i * ldc + j];
    out = beta == T(0) ? alpha * s : alpha * s + beta * out;  // beta == 0 never reads C
  };
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && num_threads() > 1)
#endif
  for (std::int64_t j = 0; j < n; ++j) {
    const T* bj = b + j * ldb;
    std::int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
      const T *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#if defined(_OPENMP)
#pragma omp simd reduction(+ : s0, s1, s2, s3)
#endif
      for (std::int64_t p = 0; p < k; ++p) {
        s0 += a0[p] * bj[p];
        s1 += a1[p] * bj[p];
        s2 += a2[p] * bj[p];
        s3 += a3[p] * bj[p];
      }
      store(i, j, s0), store(i + 1, j, s1), store(i + 2, j, s2), store(i + 3, j, s3);
    }
    for (; i < m; ++i) {
      const T* ai = a + i * lda;
      T s = 0;
#if defined(_OPENMP)
#pragma omp simd reduction(+ : s)
#endif
      for (std::int64_t p = 0; p < k; ++p) s += ai[p] * bj[p];
      store(i, j, s);
    }
  }
  return true;
}

/// Picks the CPU kernel: few-row float products to the AVX2 kernels (when the CPU has them), then GEMV shapes and
/// non-BLAS types to Eigen, the rest to OpenBLAS when present.
template <class T>
void gemm_cpu_dispatch(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                       std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (ta == Trans::N && gemm_small_m(tb == Trans::T, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  }
  if (gemm_skinny_nt(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
#if defined(PREFIXTUNE_WITH_BLAS)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    // OpenBLAS 0.3.21 runs m == 1 through its GEMM kernels (~11 GFLOP/s); Eigen's GEMV reaches ~32.
    if (m > 1 && n > 1 && k > 0) {
      gemm_blas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    }
  }
#endif
  if (gemv_parallel(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  gemm_eigen(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace detail

/// C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, all row-major with leading dimensions lda/ldb/ldc.
/// A is stored (m, k) when ta == N and (k, m) when ta == T; likewise B. With beta == 0, C is write-only.
template <class T>
void gemm(Cpu, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  detail::check_gemm_args("gemm", ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  detail::gemm_cpu_dispatch(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// `batch` independent GEMMs; matrix i of A starts at a + i * stride_a (likewise B, C). A stride of 0
/// broadcasts one operand over the batch. Small products run one per thread; large ones use all threads each.
template <class T>
void gemm_strided_batched(Cpu, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                          std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb, std::int64_t stride_b,
                          T beta, T* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm_args("gemm_strided_batched", ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  PREFIXTUNE_CHECK(batch >= 0 && stride_a >= 0 && stride_b >= 0 && stride_c >= 0,
                   "gemm_strided_batched: negative batch or stride");
  PREFIXTUNE_CHECK(batch <= 1 || m == 0 || n == 0 || stride_c >= (m - 1) * ldc + n,
                   "gemm_strided_batched: output matrices overlap (stride_c=", stride_c, ", m=", m, ", ldc=", ldc, ")");
  if (batch == 0) return;
  const double flops_each = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const bool per_thread = batch >= num_threads() && flops_each < 64.0 * 1024 * 1024;
  if (per_thread) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (std::int64_t i = 0; i < batch; ++i) {
      detail::gemm_cpu_dispatch(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
                                c + i * stride_c, ldc);
    }
  } else {
    for (std::int64_t i = 0; i < batch; ++i) {
      detail::gemm_cpu_dispatch(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
                                c + i * stride_c, ldc);
    }
  }
}

}  // namespace prefixtune
