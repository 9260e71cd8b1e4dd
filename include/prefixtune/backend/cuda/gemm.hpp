// SPDX-License-Identifier: MIT
// cuBLAS GEMM with the CPU GEMM's row-major API (plain and strided-batched, fp32/fp64, opt-in TF32).
#pragma once

#include <climits>
#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/common/gemm.hpp"
#include "prefixtune/backend/cuda/context.hpp"
#include "prefixtune/backend/cuda/device.hpp"

namespace prefixtune {

namespace detail {

// cuBLAS is column-major. A row-major (m, n) matrix C with leading dimension ldc is, read column-major, the
// (n, m) matrix C^T with the same leading dimension. So C = op(A) op(B) becomes C^T = op(B)^T op(A)^T: we ask
// cuBLAS for the (n, m) product with the operands swapped and the same transpose flags, and no data moves.
template <class T>
void cublas_gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                 std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb, std::int64_t stride_b, T beta,
                 T* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuBLAS GEMM needs float or double");
  if (m == 0 || n == 0 || batch == 0) return;
  auto& ctx = CudaContext::current();
  const cudaDataType_t dtype = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_64F;
  if constexpr (std::is_same_v<T, float>) {
    compute = ctx.math() == CudaMath::Tf32   ? CUBLAS_COMPUTE_32F_FAST_TF32
              : ctx.math() == CudaMath::Bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                             : CUBLAS_COMPUTE_32F;
  }
  const cublasOperation_t opa = ta == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t opb = tb == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  if (batch == 1) {
    PREFIXTUNE_CUBLAS_CHECK(cublasGemmEx(ctx.cublas(), opb, opa, static_cast<int>(n), static_cast<int>(m),
                                         static_cast<int>(k), &alpha, b, dtype, static_cast<int>(ldb), a, dtype,
                                         static_cast<int>(lda), &beta, c, dtype, static_cast<int>(ldc), compute,
                                         CUBLAS_GEMM_DEFAULT));
  } else {
    PREFIXTUNE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        ctx.cublas(), opb, opa, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b, dtype,
        static_cast<int>(ldb), stride_b, a, dtype, static_cast<int>(lda), stride_a, &beta, c, dtype,
        static_cast<int>(ldc), stride_c, static_cast<int>(batch), compute, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace detail

/// Same contract as gemm(Cpu, ...): row-major C (m, n) = alpha * op(A) op(B) + beta * C, on device pointers.
template <class T>
void gemm(Cuda, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  detail::check_gemm_args("gemm(Cuda)", ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  detail::cublas_gemm(ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

/// Same contract as gemm_strided_batched(Cpu, ...), one cublasGemmStridedBatchedEx call.
template <class T>
void gemm_strided_batched(Cuda, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                          std::int64_t lda, std::int64_t stride_a, const T* b, std::int64_t ldb, std::int64_t stride_b,
                          T beta, T* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm_args("gemm_strided_batched(Cuda)", ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  PREFIXTUNE_CHECK(batch >= 0 && batch <= INT_MAX && stride_a >= 0 && stride_b >= 0 && stride_c >= 0,
                   "gemm_strided_batched(Cuda): invalid batch ", batch, " or negative stride");
  detail::cublas_gemm(ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch);
}

}  // namespace prefixtune
