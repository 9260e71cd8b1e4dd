// SPDX-License-Identifier: MIT
// CudaCachingAllocator: device memory for Tensor<T, Cuda> without a cudaMalloc per op in steady state. Freed
// blocks go to per-size free lists and are handed out again for requests of the same size class; cudaMalloc runs
// only when a class is empty (and, on out-of-memory, once more after the cache was released).
//
// Stream safety: a block freed by the host may still be in use by kernels queued on the stream. Reusing it for a
// later op on the same stream is safe (the stream orders them), which is the case for a thread's own work: each
// thread has its own CudaContext stream, so each thread has its own cache. A tensor freed on another thread than
// the one whose stream used it should be freed after that thread synchronized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "prefixtune/backend/cuda/check.hpp"
#include "prefixtune/backend/cuda/context.hpp"

namespace prefixtune {

/// Bytes held by a thread's caching allocator.
struct CudaMemoryStats {
  std::size_t allocated = 0;  // in live tensors (rounded to the size class)
  std::size_t cached = 0;     // in free blocks waiting for reuse
  std::int64_t cuda_mallocs = 0;
};

class CudaCachingAllocator {
 public:
  /// The size class of a request: multiples of 512 bytes up to 1 MiB, then four classes per power of two
  /// (at most 25% over the request), so that a model's repeating shapes find their blocks again.
  static std::size_t size_class(std::size_t bytes) {
    constexpr std::size_t kSmall = std::size_t{1} << 20;
    if (bytes <= kSmall) return (bytes + 511) / 512 * 512;
    std::size_t pow2 = kSmall;
    while (pow2 * 2 < bytes) pow2 *= 2;
    const std::size_t step = pow2 / 4;
    return (bytes + step - 1) / step * step;
  }

  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t cls = size_class(bytes);
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.cached -= cls;
      return track(p, cls);
    }
    CudaContext::current();  // binds the device before the first allocation
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, cls);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back to the driver and try once more
      (void)cudaGetLastError();
      release_cached();
      err = cudaMalloc(&p, cls);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      detail::throw_error(
          "Cuda::allocate",
          detail::str_cat("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") allocating ", bytes,
                          " bytes (", stats_.allocated, " in use, ", stats_.cached, " cached by this thread)"));
    }
    ++stats_.cuda_mallocs;
    return track(p, cls);
  }

  void deallocate(void* p) noexcept {
    if (!p) return;
    auto it = live_.find(p);
    if (it == live_.end()) {  // allocated by another thread's cache: return it to the driver
      (void)cudaFree(p);
      return;
    }
    const std::size_t cls = it->second;
    live_.erase(it);
    stats_.allocated -= cls;
    try {
      free_[cls].push_back(p);
      stats_.cached += cls;
    } catch (...) {
      (void)cudaFree(p);
    }
  }

  /// Returns every cached block to the driver (synchronizing the stream first).
  void release_cached() noexcept {
    (void)cudaStreamSynchronize(CudaContext::current().stream());
    for (auto& [cls, blocks] : free_)
      for (void* p : blocks) (void)cudaFree(p);
    free_.clear();
    stats_.cached = 0;
  }

  const CudaMemoryStats& stats() const { return stats_; }

  /// This thread's allocator.
  static CudaCachingAllocator& current() {
    thread_local CudaCachingAllocator a;
    return a;
  }

  CudaCachingAllocator() = default;
  CudaCachingAllocator(const CudaCachingAllocator&) = delete;
  CudaCachingAllocator& operator=(const CudaCachingAllocator&) = delete;
  ~CudaCachingAllocator() {
    for (auto& [cls, blocks] : free_)
      for (void* p : blocks) (void)cudaFree(p);
    torn_down() = true;
  }

  /// True once this thread's allocator was destroyed (a tensor with static storage duration freed after the
  /// thread-local objects then goes straight to cudaFree).
  static bool& torn_down() {
    thread_local bool flag = false;  // trivially destructible: readable during teardown
    return flag;
  }

 private:
  void* track(void* p, std::size_t cls) {
    live_.emplace(p, cls);
    stats_.allocated += cls;
    return p;
  }

  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::unordered_map<void*, std::size_t> live_;
  CudaMemoryStats stats_;
};

/// Returns this thread's cached device memory to the driver (e.g. before handing the GPU to another program).
inline void cuda_empty_cache() { CudaCachingAllocator::current().release_cached(); }

/// This thread's device memory statistics.
inline CudaMemoryStats cuda_memory_stats() { return CudaCachingAllocator::current().stats(); }

}  // namespace prefixtune
