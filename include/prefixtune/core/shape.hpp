// SPDX-License-Identifier: MIT
// Shape: the dimensions of a row-major tensor of rank 0..4, with overflow-checked element counts.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <string>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// Dimensions of a tensor, outermost first (row-major). Rank is at most 4; every dimension is >= 0.
class Shape {
 public:
  static constexpr int kMaxRank = 4;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    PREFIXTUNE_CHECK(static_cast<int>(dims.size()) <= kMaxRank, "a shape has at most ", kMaxRank, " dimensions, got ",
                     dims.size());
    for (std::int64_t d : dims) {
      PREFIXTUNE_CHECK(d >= 0, "negative dimension ", d, " in a shape");
      dims_[rank_++] = d;
    }
    numel();  // validates that the element count fits in int64
  }

  /// The shape with dims[0..n); throws unless 0 <= n <= kMaxRank.
  static Shape from_dims(const std::int64_t* dims, std::size_t n) {
    PREFIXTUNE_CHECK(n <= static_cast<std::size_t>(kMaxRank), "a shape has at most ", kMaxRank, " dimensions, got ", n);
    switch (n) {
      case 0:
        return Shape{};
      case 1:
        return Shape{dims[0]};
      case 2:
        return Shape{dims[0], dims[1]};
      case 3:
        return Shape{dims[0], dims[1], dims[2]};
      default:
        return Shape{dims[0], dims[1], dims[2], dims[3]};
    }
  }

  int rank() const { return rank_; }

  /// Dimension i; negative i counts from the end (-1 is the last).
  std::int64_t operator[](int i) const {
    const int j = i < 0 ? i + rank_ : i;
    PREFIXTUNE_CHECK(j >= 0 && j < rank_, "dimension index ", i, " out of range for shape ", to_string());
    return dims_[j];
  }

  /// Product of all dimensions (1 for rank 0); throws if it overflows int64.
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) {
      PREFIXTUNE_CHECK(dims_[i] == 0 || n <= std::numeric_limits<std::int64_t>::max() / dims_[i],
                       "element count of shape ", to_string(), " overflows int64");
      n *= dims_[i];
    }
    return n;
  }

  /// Elements between consecutive indices of dimension i (row-major strides).
  std::int64_t stride(int i) const {
    const int j = i < 0 ? i + rank_ : i;
    PREFIXTUNE_CHECK(j >= 0 && j < rank_, "dimension index ", i, " out of range for shape ", to_string());
    std::int64_t s = 1;
    for (int k = j + 1; k < rank_; ++k) s *= dims_[k];
    return s;
  }

  /// The same shape with dimension i replaced by d.
  Shape with(int i, std::int64_t d) const {
    Shape s = *this;
    const int j = i < 0 ? i + rank_ : i;
    PREFIXTUNE_CHECK(j >= 0 && j < rank_, "dimension index ", i, " out of range for shape ", to_string());
    PREFIXTUNE_CHECK(d >= 0, "negative dimension ", d);
    s.dims_[j] = d;
    return s;
  }

  const std::int64_t* begin() const { return dims_.data(); }
  const std::int64_t* end() const { return dims_.data() + rank_; }

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

  /// "(2, 3, 4)" — the form used in every error message.
  std::string to_string() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[i]);
    }
    return s + ")";
  }

  friend std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.to_string(); }

 private:
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace prefixtune
