// SPDX-License-Identifier: MIT
// Launch helpers of the CUDA kernels: grid sizes, grid-stride loops over a device lambda (one thread or one warp
// per item), and warp- and block-wide reductions. Needs nvcc with --extended-lambda (the prefixtune::cuda target adds
// it for CUDA sources).
#pragma once

#if !defined(__CUDACC__)
#error "prefixtune/backend/cuda/*.cuh hold CUDA kernels: include them from a .cu file compiled by nvcc"
#endif

#include <cuda_runtime.h>

#include <cstdint>

#include "prefixtune/backend/cuda/check.hpp"
#include "prefixtune/backend/cuda/context.hpp"
#include "prefixtune/backend/cuda/device.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune::detail {

inline constexpr int kCudaThreads = 256;      // threads per block of the element and row kernels
inline constexpr int kCudaMaxBlocks = 65535;  // grid-stride loops cap their grid here

/// Blocks for n elements at `threads` per block, capped (the kernels loop over the rest).
inline unsigned cuda_blocks(std::int64_t n, int threads = kCudaThreads) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > kCudaMaxBlocks ? kCudaMaxBlocks : b));
}

/// The current thread's stream (every kernel and cuBLAS call of a thread is ordered on it).
inline cudaStream_t cuda_stream() { return CudaContext::current().stream(); }

/// Throws if the last launch failed (bad configuration, no kernel image for this GPU).
inline void cuda_check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw_error(what, str_cat("CUDA kernel launch failed in ", what, ": ", cudaGetErrorName(err), " (",
                              cudaGetErrorString(err), ")"));
  }
}

template <class F>
__global__ void cuda_for_elements_kernel(std::int64_t n, F f) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x)
    f(i);
}

/// Calls f(i) on the GPU for i in [0, n); f is a __device__ lambda independent per i.
template <class F>
void cuda_for_elements(const char* what, std::int64_t n, F f) {
  if (n <= 0) return;
  cuda_for_elements_kernel<<<cuda_blocks(n), kCudaThreads, 0, cuda_stream()>>>(n, f);
  cuda_check_launch(what);
}

template <class F>
__global__ void cuda_for_warps_kernel(std::int64_t n, F f) {
  const std::int64_t warps = blockDim.x >> 5;
  for (std::int64_t w = blockIdx.x * warps + (threadIdx.x >> 5); w < n; w += std::int64_t{gridDim.x} * warps)
    f(w, static_cast<int>(threadIdx.x & 31));
}

/// Calls f(w, lane) on the GPU for w in [0, n), one whole warp per w (lane 0..31), so f may call warp_sum.
template <class F>
void cuda_for_warps(const char* what, std::int64_t n, F f) {
  if (n <= 0) return;
  cuda_for_warps_kernel<<<cuda_blocks(n, kCudaThreads / 32), kCudaThreads, 0, cuda_stream()>>>(n, f);
  cuda_check_launch(what);
}

/// Sum of v over the warp (every lane gets it); every lane of the warp must call it.
template <class A>
__device__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum of v over the block (every thread gets it). blockDim.x must be a multiple of 32, at most 1024; every
/// thread of the block must call it.
template <class A>
__device__ A block_sum(A v) {
  __shared__ A partial[32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? partial[lane] : A(0));
}

/// Maximum of v over the block (every thread gets it); same rules as block_sum.
template <class A>
__device__ A block_max(A v) {
  __shared__ A partial[32];
  for (int o = 16; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : partial[0];
  for (int o = 16; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

/// Copies n elements from a host array to a fresh device tensor (for small index arrays the host prepared).
template <class T>
Tensor<T, Cuda> cuda_upload(const T* host, std::int64_t n) {
  auto t = Tensor<T, Cuda>::empty(Shape{n});
  if (n > 0) Cuda::copy_from_host(t.data(), host, static_cast<std::size_t>(n) * sizeof(T));
  return t;
}

}  // namespace prefixtune::detail
