// SPDX-License-Identifier: MIT
// CudaContext: RAII owner of one CUDA stream and one cuBLAS handle bound to it, plus the math mode (fp32 or
// opt-in TF32). Each host thread has a current context; Cuda device methods and GEMMs run on its stream.
#pragma once

#include "prefixtune/backend/cuda/check.hpp"

namespace prefixtune {

/// Number of visible CUDA devices; 0 when there is no GPU or no driver (never throws).
inline int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

/// Math precision of fp32 GEMMs: exact fp32 (default), TF32 tensor cores (~1e-3 relative error), or bf16 tensor
/// cores with fp32 accumulation (~1e-2). Storage stays fp32 in every mode; only the products' inputs are rounded.
enum class CudaMath { Fp32, Tf32, Bf16 };

/// One stream and one cuBLAS handle on `device`. Not copyable; movable contexts are not needed.
class CudaContext {
 public:
  explicit CudaContext(int device = 0) : device_(device) {
    PREFIXTUNE_CHECK(device >= 0 && device < cuda_device_count(), "CUDA device ", device, " not available (",
                     cuda_device_count(), " visible)");
    PREFIXTUNE_CUDA_CHECK(cudaSetDevice(device_));
    PREFIXTUNE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const cublasStatus_t st = cublasCreate(&handle_);
    if (st != CUBLAS_STATUS_SUCCESS) {
      cudaStreamDestroy(stream_);
      PREFIXTUNE_CUBLAS_CHECK(st);
    }
    PREFIXTUNE_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
    set_math(CudaMath::Fp32);
  }
  ~CudaContext() {
    if (handle_) cublasDestroy(handle_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return handle_; }
  CudaMath math() const { return math_; }

  /// TF32 and bf16 are opt-in: cuBLAS then rounds fp32 inputs to 10-bit (TF32) or 7-bit (bf16) mantissas inside
  /// tensor cores.
  void set_math(CudaMath m) {
    PREFIXTUNE_CUBLAS_CHECK(
        cublasSetMathMode(handle_, m == CudaMath::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    math_ = m;
  }

  void synchronize() const { PREFIXTUNE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  /// This thread's context (created on device 0 at first use).
  static CudaContext& current() {
    thread_local CudaContext ctx(0);
    return ctx;
  }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  CudaMath math_ = CudaMath::Fp32;
};

}  // namespace prefixtune
