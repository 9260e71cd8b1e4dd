// SPDX-License-Identifier: MIT
// The Cuda device tag: the same static methods as Cpu, on GPU memory, ordered on the current context's stream.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/backend/cuda/allocator.hpp"
#include "prefixtune/backend/cuda/check.hpp"
#include "prefixtune/backend/cuda/context.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune {

struct Cuda : detail::DeviceTag {
  static constexpr const char* name() { return "cuda"; }

  /// Through this thread's caching allocator: no cudaMalloc in steady state.
  static void* allocate(std::size_t bytes) { return CudaCachingAllocator::current().allocate(bytes); }
  static void deallocate(void* p) noexcept {
    if (!p) return;
    if (CudaCachingAllocator::torn_down()) {
      (void)cudaFree(p);
    } else {
      CudaCachingAllocator::current().deallocate(p);
    }
  }

  /// Device-to-device copy, asynchronous on the current stream.
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (!bytes) return;
    PREFIXTUNE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, CudaContext::current().stream()));
  }
  /// Device-to-host copy; returns when the host buffer holds the data.
  static void copy_to_host(void* host_dst, const void* src, std::size_t bytes) {
    if (!bytes) return;
    auto& ctx = CudaContext::current();
    PREFIXTUNE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream()));
    ctx.synchronize();
  }
  /// Host-to-device copy; returns when the host buffer may be reused.
  static void copy_from_host(void* dst, const void* host_src, std::size_t bytes) {
    if (!bytes) return;
    auto& ctx = CudaContext::current();
    PREFIXTUNE_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx.stream()));
    ctx.synchronize();
  }
  /// Zero fills use cudaMemsetAsync; other values are staged through the host.
  template <class T>
  static void fill(T* dst, std::int64_t n, T value) {
    if (n <= 0) return;
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    bool zero = true;
    const unsigned char* raw = reinterpret_cast<const unsigned char*>(&value);
    for (std::size_t i = 0; i < sizeof(T); ++i) zero = zero && raw[i] == 0;
    if (zero) {
      PREFIXTUNE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, CudaContext::current().stream()));
      return;
    }
    const std::vector<T> host(static_cast<std::size_t>(n), value);
    copy_from_host(dst, host.data(), bytes);
  }
  static void synchronize() { CudaContext::current().synchronize(); }
};

}  // namespace prefixtune
