// SPDX-License-Identifier: MIT
// Storage<Device>: a reference-counted buffer on one device; tensors and their views share it.
#pragma once

#include <cstddef>
#include <memory>

#include "prefixtune/core/device.hpp"

namespace prefixtune {

/// A byte buffer owned jointly by every tensor viewing it; freed by Device::deallocate with the last owner.
template <class Device>
class Storage {
 public:
  Storage() = default;
  explicit Storage(std::size_t bytes) : bytes_(bytes) {
    void* p = Device::allocate(bytes);
    data_ = std::shared_ptr<void>(p, [](void* q) { Device::deallocate(q); });
  }

  void* data() const { return data_.get(); }
  std::size_t bytes() const { return bytes_; }
  long use_count() const { return data_.use_count(); }
  bool operator==(const Storage& o) const { return data_ == o.data_; }

 private:
  std::shared_ptr<void> data_;
  std::size_t bytes_ = 0;
};

}  // namespace prefixtune
