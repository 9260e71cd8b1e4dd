// SPDX-License-Identifier: MIT
// Reading safetensors files (SafeTensorsFile): a validated memory map, or an in-memory image, whose tensors load
// converted to float/double/int32/int64 Cpu tensors, with an optional NaN/Inf scan.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/shape.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/dtype.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/safetensors_header.hpp"

namespace prefixtune {

/// The bytes of one tensor inside an open file (valid while the SafeTensorsFile lives; may be unaligned).
struct ByteView {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

/// A safetensors file, memory-mapped and fully validated on open(). Tensors are converted on load<T>() into
/// new Cpu tensors, so they outlive the file. Every error message names the file and the tensor key.
class SafeTensorsFile {
 public:
  /// Largest header accepted (the Python library's limit), checked before anything is allocated.
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
  static constexpr std::size_t kMaxRank = detail::kSafeTensorsMaxRank;

  /// Maps and validates path (header, dtypes, shapes, offsets, overlaps, metadata); throws Error if anything
  /// is wrong, so every later access is in bounds.
  static SafeTensorsFile open(const std::string& path) {
    SafeTensorsFile f(path);
    f.map_ = MappedFile(path);
    f.validate();
    return f;
  }

  /// Validates an in-memory image of a file; `name` stands for the path in error messages.
  static SafeTensorsFile from_bytes(std::vector<std::uint8_t> bytes, const std::string& name = "<memory>") {
    SafeTensorsFile f(name);
    f.owned_ = std::move(bytes);
    f.validate();
    return f;
  }

  /// The path given to open() (or the name given to from_bytes()).
  const std::string& path() const { return path_; }
  /// Tensor names, sorted (std::string order). Use info(name).begin for file order.
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  /// Header entry of name; throws Error naming the key and the file when it is absent.
  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    PREFIXTUNE_CHECK(it != tensors_.end(), path_, ": no tensor named '", name, "' (the file holds ", names_.size(),
                     " tensors)");
    return it->second;
  }
  /// The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The stored bytes of name (little-endian, row-major, possibly unaligned).
  ByteView raw(const std::string& name) const {
    const TensorInfo& t = info(name);
    return {bytes() + data_start_ + t.begin, static_cast<std::size_t>(t.end - t.begin)};
  }

  /// Tensor name converted to T: float/double from F32, F16, BF16, F64; int32/int64 from I32, I64, U8, BOOL.
  /// With check_finite, the first NaN/inf (after conversion to T) throws Error naming its flat index.
  template <class T>
  Tensor<T, Cpu> load(const std::string& name, bool check_finite = false) const {
    static_assert(detail::is_float_element_v<T> || detail::is_int_element_v<T>,
                  "load<T>: T must be float, double, std::int32_t or std::int64_t");
    const TensorInfo& t = info(name);
    PREFIXTUNE_CHECK(t.shape.size() <= static_cast<std::size_t>(Shape::kMaxRank), path_, ": tensor '", name,
                     "' has rank ", t.shape.size(), " (shape ", detail::dims_to_string(t.shape),
                     "); a Tensor holds at most ", Shape::kMaxRank, " dimensions");
    PREFIXTUNE_CHECK(dtype_is_floating(t.dtype) == detail::is_float_element_v<T>, path_, ": tensor '", name,
                     "' has dtype ", dtype_name(t.dtype), "; load it as ",
                     dtype_is_floating(t.dtype) ? "float or double" : "std::int32_t or std::int64_t");
    Tensor<T, Cpu> out(detail::shape_from_dims(t.shape));
    const std::int64_t bad = decode(t.dtype, bytes() + data_start_ + t.begin, t.numel(), out.data());
    PREFIXTUNE_CHECK(bad < 0, path_, ": tensor '", name, "' of dtype ", dtype_name(t.dtype), ": value at flat index ",
                     bad, " is out of range for the requested type");
    if constexpr (detail::is_float_element_v<T>) {
      if (check_finite) {
        const T* p = out.data();
        for (std::int64_t i = 0, n = out.numel(); i < n; ++i)
          PREFIXTUNE_CHECK(std::isfinite(p[i]), "non-finite value (", std::isnan(p[i]) ? "nan" : "inf",
                           ") at flat index ", i, " in tensor '", name, "' of ", path_);
      }
    }
    return out;
  }

  /// load<T>(name) that also requires the stored shape to equal expected (Error names key, expected, actual).
  template <class T>
  Tensor<T, Cpu> load(const std::string& name, const Shape& expected, bool check_finite = false) const {
    const TensorInfo& t = info(name);
    const bool same = t.shape.size() == static_cast<std::size_t>(expected.rank()) &&
                      std::equal(t.shape.begin(), t.shape.end(), expected.begin());
    PREFIXTUNE_CHECK(same, path_, ": tensor '", name, "' has shape ", detail::dims_to_string(t.shape), ", expected ",
                     expected);
    return load<T>(name, check_finite);
  }

 private:
  explicit SafeTensorsFile(std::string path) : path_(std::move(path)) {}

  const std::uint8_t* bytes() const { return owned_.empty() ? map_.data() : owned_.data(); }
  std::size_t byte_count() const { return owned_.empty() ? map_.size() : owned_.size(); }

  [[noreturn]] void fail(const std::string& what) const { detail::safetensors_fail(path_, what); }

  void validate() {
    const std::size_t size = byte_count();
    if (size < 8) fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes()[i];
    if (n > kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
           " bytes");
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
           " bytes)");
    data_start_ = 8 + n;
    const std::uint64_t data_size = size - data_start_;
    const nlohmann::json header =
        detail::parse_safetensors_header(path_, reinterpret_cast<const char*>(bytes()) + 8, n);
    if (!header.is_object()) fail(std::string("header is not a JSON object but a JSON ") + header.type_name());

    std::vector<const TensorInfo*> by_offset;
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) fail(std::string("__metadata__ is not a JSON object but a JSON ") + value.type_name());
        for (const auto& [k, v] : value.items()) {
          if (!v.is_string()) fail("__metadata__: value of '" + k + "' is not a string but a JSON " + v.type_name());
          metadata_[k] = v.get<std::string>();
        }
        continue;
      }
      TensorInfo info = detail::parse_safetensors_entry(path_, key, value, data_size);
      names_.push_back(key);
      const TensorInfo& stored = tensors_.emplace(key, std::move(info)).first->second;
      if (stored.end > stored.begin) by_offset.push_back(&stored);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
    });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo &a = *by_offset[i - 1], &b = *by_offset[i];
      if (b.begin < a.end)
        fail("tensor '" + a.name + "' [" + std::to_string(a.begin) + ", " + std::to_string(a.end) + "] and tensor '" +
             b.name + "' [" + std::to_string(b.begin) + ", " + std::to_string(b.end) + "] overlap");
    }
  }

  /// Converts n stored elements of dtype at src into dst; returns the flat index of the first element that does
  /// not fit T (integer narrowing, BOOL byte not 0/1), or -1.
  template <class T>
  static std::int64_t decode(DType dtype, const std::uint8_t* src, std::int64_t n, T* dst) {
    if constexpr (detail::is_float_element_v<T>) {
      switch (dtype) {
        case DType::F32:
          if constexpr (std::is_same_v<T, float>) {
            if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
          } else {
            detail::decode_loop<float>(src, n, dst, [](float s) { return static_cast<T>(s); });
          }
          break;
        case DType::F64:
          if constexpr (std::is_same_v<T, double>) {
            if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(double));
          } else {
            detail::decode_loop<double>(src, n, dst, [](double s) { return static_cast<T>(s); });
          }
          break;
        case DType::F16:
          detail::decode_loop<std::uint16_t>(src, n, dst,
                                             [](std::uint16_t s) { return static_cast<T>(half_to_float(s)); });
          break;
        default:  // BF16 (the caller checked that dtype is floating)
          detail::decode_loop<std::uint16_t>(src, n, dst,
                                             [](std::uint16_t s) { return static_cast<T>(bf16_to_float(s)); });
          break;
      }
    } else {
      for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t v;
        if (dtype == DType::I64) {
          std::memcpy(&v, src + 8 * i, 8);
        } else if (dtype == DType::I32) {
          std::int32_t s;
          std::memcpy(&s, src + 4 * i, 4);
          v = s;
        } else {  // U8, BOOL
          v = src[i];
          if (dtype == DType::BOOL && v > 1) return i;
        }
        if (!detail::fits<T>(v)) return i;
        dst[i] = static_cast<T>(v);
      }
    }
    return -1;
  }

  std::string path_;
  MappedFile map_;
  std::vector<std::uint8_t> owned_;
  std::uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::vector<std::string> names_;  // sorted: filled from the (sorted) JSON object
  std::map<std::string, std::string> metadata_;
};

}  // namespace prefixtune
