// SPDX-License-Identifier: MIT
// Tensor<T, Device>: a row-major, contiguous view (shape + offset) into shared Storage. No math lives here:
// math is in backend/ and ops/. Views (reshape, rows, select) share storage and never copy.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "prefixtune/core/device.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/shape.hpp"
#include "prefixtune/core/storage.hpp"

namespace prefixtune {

namespace detail {

template <class>
inline constexpr bool dependent_false_v = false;

/// Copies bytes from a buffer on device Src to one on device Dst (same device, host->device or device->host).
template <class Dst, class Src>
void copy_bytes(void* dst, const void* src, std::size_t bytes) {
  if constexpr (std::is_same_v<Dst, Src>) {
    Dst::copy(dst, src, bytes);
  } else if constexpr (is_host_device_v<Src>) {
    Dst::copy_from_host(dst, src, bytes);
  } else if constexpr (is_host_device_v<Dst>) {
    Src::copy_to_host(dst, src, bytes);
  } else {
    static_assert(dependent_false_v<Dst>, "copies between two different accelerators go through the host");
  }
}

}  // namespace detail

/// A contiguous row-major tensor of element type T living on Device (Cpu or Cuda).
/// Copying a Tensor is cheap and shares storage (like a shared_ptr); use clone() for a deep copy.
template <class T, class Device = Cpu>
class Tensor {
  static_assert(std::is_trivially_copyable_v<T>, "tensor elements must be trivially copyable");

 public:
  using value_type = T;
  using device_type = Device;

  /// An undefined tensor: no storage, shape ().
  Tensor() = default;

  /// An uninitialized tensor of the given shape.
  explicit Tensor(const Shape& shape) : storage_(checked_bytes(shape)), shape_(shape), offset_(0), defined_(true) {}

  static Tensor empty(const Shape& shape) { return Tensor(shape); }
  static Tensor zeros(const Shape& shape) { return full(shape, T(0)); }
  static Tensor full(const Shape& shape, T value) {
    Tensor t(shape);
    t.fill(value);
    return t;
  }
  /// A tensor holding host values (row-major); their count must equal the shape's element count.
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values) {
    PREFIXTUNE_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
                     " values for shape ", shape, " (", shape.numel(), " elements)");
    Tensor t(shape);
    detail::copy_bytes<Device, Cpu>(t.data(), values.data(), values.size() * sizeof(T));
    return t;
  }

  bool defined() const { return defined_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  std::int64_t size(int dim) const { return shape_[dim]; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * sizeof(T); }

  /// Pointer to the first element of this view (shallow constness, as in every tensor library).
  T* data() const { return defined_ ? static_cast<T*>(storage_.data()) + offset_ : nullptr; }
  const Storage<Device>& storage() const { return storage_; }
  bool shares_storage_with(const Tensor& o) const { return defined_ && o.defined_ && storage_ == o.storage_; }

  /// The same elements seen with another shape of equal element count. One dimension may be -1 (inferred).
  Tensor reshape(std::initializer_list<std::int64_t> dims) const { return reshape(resolve(dims)); }
  Tensor reshape(const Shape& shape) const {
    require_defined("reshape");
    PREFIXTUNE_CHECK(shape.numel() == numel(), "cannot reshape ", shape_, " (", numel(), " elements) to ", shape, " (",
                     shape.numel(), " elements)");
    Tensor t = *this;
    t.shape_ = shape;
    return t;
  }

  /// Rows [begin, end) of dimension 0, sharing storage.
  Tensor rows(std::int64_t begin, std::int64_t end) const {
    require_defined("rows");
    PREFIXTUNE_CHECK(rank() >= 1, "rows() needs rank >= 1, got shape ", shape_);
    PREFIXTUNE_CHECK(0 <= begin && begin <= end && end <= shape_[0], "row range [", begin, ", ", end,
                     ") out of bounds for shape ", shape_);
    Tensor t = *this;
    t.offset_ += begin * shape_.stride(0);
    t.shape_ = shape_.with(0, end - begin);
    return t;
  }

  /// Index i of dimension 0 with that dimension removed, sharing storage: (A, B, C) -> (B, C).
  Tensor select(std::int64_t i) const {
    Tensor r = rows(i, i + 1);
    PREFIXTUNE_CHECK(i >= 0 && i < shape_[0], "index ", i, " out of bounds for shape ", shape_);
    return r.reshape(Shape::from_dims(shape_.begin() + 1, static_cast<std::size_t>(rank() - 1)));
  }

  /// Sets every element to value.
  Tensor& fill(T value) {
    require_defined("fill");
    Device::fill(data(), numel(), value);
    return *this;
  }

  /// Copies the elements of src (same shape, any device) into this tensor.
  template <class SrcDevice>
  Tensor& copy_from(const Tensor<T, SrcDevice>& src) {
    require_defined("copy_from");
    PREFIXTUNE_CHECK(src.defined(), "copy_from: source tensor is undefined");
    PREFIXTUNE_CHECK(src.shape() == shape_, "copy_from: source shape ", src.shape(), " differs from destination ",
                     shape_);
    detail::copy_bytes<Device, SrcDevice>(data(), src.data(), bytes());
    return *this;
  }

  /// A deep copy on device D2 (the same device by default).
  template <class D2 = Device>
  Tensor<T, D2> to() const {
    require_defined("to");
    Tensor<T, D2> t(shape_);
    t.copy_from(*this);
    return t;
  }
  Tensor clone() const { return to<Device>(); }

  /// All elements copied to the host, row-major.
  std::vector<T> to_vector() const {
    require_defined("to_vector");
    std::vector<T> v(static_cast<std::size_t>(numel()));
    detail::copy_bytes<Cpu, Device>(v.data(), data(), bytes());
    return v;
  }

  /// Bounds-checked element access on host tensors: t(i, j, k).
  template <class... I>
  T& operator()(I... idx) const {
    static_assert(is_host_device_v<Device>, "element access needs a host tensor; copy it with to<Cpu>() first");
    static_assert(sizeof...(I) <= Shape::kMaxRank, "too many indices");
    const std::int64_t ids[] = {static_cast<std::int64_t>(idx)...};
    PREFIXTUNE_CHECK(static_cast<int>(sizeof...(I)) == rank(), sizeof...(I), " indices for a tensor of shape ", shape_);
    std::int64_t flat = 0;
    for (int d = 0; d < rank(); ++d) {
      PREFIXTUNE_CHECK(ids[d] >= 0 && ids[d] < shape_[d], "index ", ids[d], " out of bounds for dimension ", d,
                       " of shape ", shape_);
      flat = flat * shape_[d] + ids[d];
    }
    return data()[flat];
  }

  /// The single element of a one-element tensor, copied to the host.
  T item() const {
    PREFIXTUNE_CHECK(defined_ && numel() == 1, "item() needs exactly one element, shape is ", shape_);
    T v;
    detail::copy_bytes<Cpu, Device>(&v, data(), sizeof(T));
    return v;
  }

 private:
  static std::size_t checked_bytes(const Shape& shape) {
    const std::int64_t n = shape.numel();
    PREFIXTUNE_CHECK(n <= static_cast<std::int64_t>((std::size_t{1} << 46) / sizeof(T)), "tensor of shape ", shape,
                     " is too large to allocate");
    return static_cast<std::size_t>(n) * sizeof(T);
  }

  void require_defined(const char* what) const { PREFIXTUNE_CHECK(defined_, what, "() on an undefined tensor"); }

  Shape resolve(std::initializer_list<std::int64_t> dims) const {
    PREFIXTUNE_CHECK(static_cast<int>(dims.size()) <= Shape::kMaxRank, "reshape to ", dims.size(),
                     " dimensions; at most ", Shape::kMaxRank);
    std::int64_t d[Shape::kMaxRank] = {0, 0, 0, 0};
    int n = 0, infer = -1;
    std::int64_t known = 1;
    for (std::int64_t x : dims) {
      if (x == -1) {
        PREFIXTUNE_CHECK(infer < 0, "reshape: at most one dimension may be -1");
        infer = n;
      } else {
        PREFIXTUNE_CHECK(x >= 0, "reshape: invalid dimension ", x);
        PREFIXTUNE_CHECK(x == 0 || known <= std::numeric_limits<std::int64_t>::max() / x,
                         "reshape: element count overflows int64");
        known *= x;
      }
      d[n++] = x;
    }
    if (infer >= 0) {
      PREFIXTUNE_CHECK(known > 0 && numel() % known == 0, "reshape: cannot infer -1 for ", numel(),
                       " elements of shape ", shape_);
      d[infer] = numel() / known;
    }
    return Shape::from_dims(d, static_cast<std::size_t>(n));
  }

  Storage<Device> storage_;
  Shape shape_;
  std::int64_t offset_ = 0;
  bool defined_ = false;
};

}  // namespace prefixtune
