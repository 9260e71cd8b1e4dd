// SPDX-License-Identifier: MIT
// Device tags. A device is a type with one set of static methods (allocate, deallocate, copy, copy_to_host,
// copy_from_host, fill, synchronize); code picks the backend at compile time from the tag.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

namespace detail {
/// Base of every device tag. Ops call their kernels unqualified, `kernel(Device{}, ...)`; because the tag derives
/// from this type, argument-dependent lookup searches prefixtune::detail at instantiation, so a backend's
/// overloads (e.g. the CUDA kernels) are found whatever the order in which headers were included.
struct DeviceTag {};
}  // namespace detail

/// Host memory. Buffers are 64-byte aligned so that SIMD kernels and BLAS see aligned rows.
struct Cpu : detail::DeviceTag {
  static constexpr const char* name() { return "cpu"; }
  static constexpr std::size_t kAlignment = 64;

  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    PREFIXTUNE_CHECK(bytes <= (std::size_t{1} << 46), "refusing to allocate ", bytes, " bytes on the cpu");
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    PREFIXTUNE_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
    return p;
  }
  static void deallocate(void* p) noexcept { std::free(p); }

  /// Copies between two buffers of this device.
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
  }
  static void copy_to_host(void* host_dst, const void* src, std::size_t bytes) { copy(host_dst, src, bytes); }
  static void copy_from_host(void* dst, const void* host_src, std::size_t bytes) { copy(dst, host_src, bytes); }

  template <class T>
  static void fill(T* dst, std::int64_t n, T value) {
    std::fill(dst, dst + n, value);
  }
  static void synchronize() {}
};

/// NVIDIA GPU memory through the CUDA runtime. Only declared here: the definition lives in
/// prefixtune/backend/cuda/device.hpp, which needs PREFIXTUNE_WITH_CUDA. A CPU build never sees CUDA headers.
struct Cuda;

template <class Device>
struct is_host_device : std::false_type {};
template <>
struct is_host_device<Cpu> : std::true_type {};
template <class Device>
inline constexpr bool is_host_device_v = is_host_device<Device>::value;

}  // namespace prefixtune
