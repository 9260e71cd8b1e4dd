// SPDX-License-Identifier: MIT
// Writing safetensors files (SafeTensorsWriter, save_safetensors): atomic, byte-identical to the Python library's
// layout, with F16/BF16 rounding and range checks of integer dtypes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/shape.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/dtype.hpp"
#include "prefixtune/io/file.hpp"

namespace prefixtune {

namespace detail {

/// Order in which the Python/Rust safetensors writer lays tensors out (its Dtype enum order, descending), so
/// each tensor starts aligned to its element size and our files are byte-identical to theirs.
inline int dtype_layout_rank(DType d) {
  switch (d) {
    case DType::I64:
      return 13;
    case DType::F64:
      return 12;
    case DType::F32:
      return 11;
    case DType::I32:
      return 9;
    case DType::BF16:
      return 8;
    case DType::F16:
      return 7;
    case DType::U8:
      return 1;
    default:
      return 0;  // BOOL
  }
}

}  // namespace detail

/// Collects named tensors (float/double stored as F32, F16, BF16 or F64; int32/int64 as I32, I64, U8 or BOOL)
/// plus string metadata, and writes a safetensors file exactly as the Python library lays it out: header keys
/// "__metadata__" first, then tensors by descending element size and name, header padded with spaces to a
/// multiple of 8 bytes. Tensors are referenced (shared storage), not copied, until write().
class SafeTensorsWriter {
 public:
  /// Adds t as name; dtype defaults to F32 for float/double and to I32/I64 for int32/int64 tensors.
  template <class T>
  SafeTensorsWriter& add(const std::string& name, const Tensor<T, Cpu>& t, std::optional<DType> dtype = std::nullopt) {
    static_assert(detail::is_float_element_v<T> || detail::is_int_element_v<T>,
                  "SafeTensorsWriter::add: T must be float, double, std::int32_t or std::int64_t");
    const DType d =
        dtype ? *dtype : (detail::is_float_element_v<T> ? DType::F32 : (sizeof(T) == 4 ? DType::I32 : DType::I64));
    PREFIXTUNE_CHECK(!name.empty() && name != "__metadata__", "invalid tensor name '", name, "'");
    PREFIXTUNE_CHECK(t.defined(), "tensor '", name, "' is undefined");
    PREFIXTUNE_CHECK(dtype_is_floating(d) == detail::is_float_element_v<T>, "tensor '", name, "' cannot be stored as ",
                     dtype_name(d), (detail::is_float_element_v<T> ? " (a floating-point" : " (an integer"),
                     " tensor)");
    for (const Entry& e : entries_) PREFIXTUNE_CHECK(e.name != name, "tensor '", name, "' added twice");
    entries_.push_back(Entry{name, d, t});
    return *this;
  }

  /// Sets one "__metadata__" entry.
  SafeTensorsWriter& add_metadata(const std::string& key, const std::string& value) {
    metadata_[key] = value;
    return *this;
  }

  /// Writes the file atomically (temporary file + rename); throws Error naming path on any failure.
  void write(const std::string& path) const {
    write_file_atomic(path, [&](std::ostream& os) { write_to(os); });
  }

  /// The exact bytes write() would put in a file.
  std::vector<std::uint8_t> to_bytes() const {
    std::ostringstream os;
    write_to(os);
    const std::string s = os.str();
    return std::vector<std::uint8_t>(s.begin(), s.end());
  }

 private:
  using AnyTensor = std::variant<Tensor<float>, Tensor<double>, Tensor<std::int32_t>, Tensor<std::int64_t>>;
  struct Entry {
    std::string name;
    DType dtype;
    AnyTensor tensor;
  };

  static std::int64_t numel_of(const AnyTensor& t) {
    return std::visit([](const auto& x) { return x.numel(); }, t);
  }

  void write_to(std::ostream& os) const {
    std::vector<const Entry*> order;
    for (const Entry& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      const int ra = detail::dtype_layout_rank(a->dtype), rb = detail::dtype_layout_rank(b->dtype);
      return ra != rb ? ra > rb : a->name < b->name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const Entry* e : order) {
      const std::uint64_t bytes = static_cast<std::uint64_t>(numel_of(e->tensor)) * dtype_size(e->dtype);
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = dtype_name(e->dtype);
      // A copy, not a reference: g++ 13 (-Wdangling-reference) flags a reference bound to what a visit of a
      // temporary lambda returns.
      const Shape s = std::visit([](const auto& x) { return x.shape(); }, e->tensor);
      entry["shape"] = std::vector<std::int64_t>(s.begin(), s.end());
      entry["data_offsets"] = {offset, offset + bytes};
      header[e->name] = std::move(entry);
      offset += bytes;
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      PREFIXTUNE_FAIL("cannot encode the safetensors header (names and metadata must be UTF-8): ", e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((static_cast<std::uint64_t>(text.size()) >> (8 * i)) & 0xff);
    os.write(len, 8);
    os.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Entry* e : order) std::visit([&](const auto& t) { write_data(os, e->name, e->dtype, t); }, e->tensor);
  }

  template <class T>
  static void write_data(std::ostream& os, const std::string& name, DType dtype, const Tensor<T, Cpu>& t) {
    const T* src = t.data();
    const std::int64_t n = t.numel();
    const bool same_layout = (std::is_same_v<T, float> && dtype == DType::F32) ||
                             (std::is_same_v<T, double> && dtype == DType::F64) ||
                             (std::is_same_v<T, std::int32_t> && dtype == DType::I32) ||
                             (std::is_same_v<T, std::int64_t> && dtype == DType::I64);
    if (same_layout) {
      if (n > 0) os.write(reinterpret_cast<const char*>(src), static_cast<std::streamsize>(n * sizeof(T)));
      return;
    }
    constexpr std::int64_t kChunk = 1 << 14;
    std::vector<char> buf(static_cast<std::size_t>(kChunk) * 8);
    for (std::int64_t c = 0; c < n; c += kChunk) {
      const std::int64_t m = std::min(kChunk, n - c);
      char* out = buf.data();
      for (std::int64_t i = 0; i < m; ++i) encode_one(src[c + i], dtype, out + i * dtype_size(dtype), name, c + i);
      os.write(buf.data(), static_cast<std::streamsize>(m * dtype_size(dtype)));
    }
  }

  template <class T>
  static void encode_one(T v, DType dtype, char* out, const std::string& name, std::int64_t index) {
    if constexpr (detail::is_float_element_v<T>) {
      if (dtype == DType::F32) {
        const float f = static_cast<float>(v);
        std::memcpy(out, &f, 4);
      } else if (dtype == DType::F64) {
        const double d = static_cast<double>(v);
        std::memcpy(out, &d, 8);
      } else {
        const std::uint16_t h = dtype == DType::F16 ? float_to_half(v) : float_to_bf16(v);
        std::memcpy(out, &h, 2);
      }
    } else {
      const std::int64_t x = v;
      const bool ok = dtype == DType::I64   ? true
                      : dtype == DType::I32 ? detail::fits<std::int32_t>(x)
                      : dtype == DType::U8  ? (x >= 0 && x <= 255)
                                            : (x == 0 || x == 1);
      PREFIXTUNE_CHECK(ok, "tensor '", name, "': value ", x, " at flat index ", index, " does not fit ",
                       dtype_name(dtype));
      if (dtype == DType::I64) {
        std::memcpy(out, &x, 8);
      } else if (dtype == DType::I32) {
        const std::int32_t y = static_cast<std::int32_t>(x);
        std::memcpy(out, &y, 4);
      } else {
        *out = static_cast<char>(static_cast<std::uint8_t>(x));
      }
    }
  }

  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Writes tensors (and metadata) to path as one safetensors file, every tensor stored as dtype (default: F32 for
/// floating T, I32/I64 for integer T). See SafeTensorsWriter.
template <class T>
void save_safetensors(const std::string& path, const std::map<std::string, Tensor<T, Cpu>>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      std::optional<DType> dtype = std::nullopt) {
  SafeTensorsWriter w;
  for (const auto& [name, t] : tensors) w.add(name, t, dtype);
  for (const auto& [k, v] : metadata) w.add_metadata(k, v);
  w.write(path);
}

}  // namespace prefixtune
