// SPDX-License-Identifier: MIT
// CUDA and cuBLAS error checks that throw prefixtune::Error naming the failing call and the CUDA error.
#pragma once

#if !defined(PREFIXTUNE_WITH_CUDA)
#error "prefixtune/backend/cuda needs PREFIXTUNE_WITH_CUDA (link the prefixtune::cuda target)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "prefixtune/core/error.hpp"

namespace prefixtune::detail {

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_UNKNOWN";
  }
}

}  // namespace prefixtune::detail

/// Throws prefixtune::Error when a CUDA runtime call fails: "CUDA error cudaErrorMemoryAllocation (out of
/// memory) in cudaMalloc(&p, bytes) at file:line".
#define PREFIXTUNE_CUDA_CHECK(call)                                                                            \
  do {                                                                                                         \
    const cudaError_t prefixtune_err_ = (call);                                                                \
    if (prefixtune_err_ != cudaSuccess) {                                                                      \
      ::prefixtune::detail::throw_error(                                                                       \
          __func__, ::prefixtune::detail::str_cat("CUDA error ", cudaGetErrorName(prefixtune_err_), " (",      \
                                                  cudaGetErrorString(prefixtune_err_), ") in ", #call, " at ", \
                                                  __FILE__, ":", __LINE__));                                   \
    }                                                                                                          \
  } while (0)

/// Throws prefixtune::Error when a cuBLAS call fails, naming the status and the call.
#define PREFIXTUNE_CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                             \
    const cublasStatus_t prefixtune_st_ = (call);                                                                  \
    if (prefixtune_st_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
      ::prefixtune::detail::throw_error(                                                                           \
          __func__,                                                                                                \
          ::prefixtune::detail::str_cat("cuBLAS error ", ::prefixtune::detail::cublas_status_name(prefixtune_st_), \
                                        " in ", #call, " at ", __FILE__, ":", __LINE__));                          \
    }                                                                                                              \
  } while (0)
