// SPDX-License-Identifier: MIT
// The header of a safetensors file: one tensor's entry (TensorInfo) and the validation of the header's JSON text
// and of each entry (dtype, shape, data offsets) that SafeTensorsFile::open runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/shape.hpp"
#include "prefixtune/io/dtype.hpp"

namespace prefixtune {

/// One tensor's header entry. begin/end are byte offsets relative to the start of the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  // rank 0..8 in the file; loading as a Tensor needs rank <= 4
  std::uint64_t begin = 0, end = 0;

  /// Element count (product of shape; 1 for rank 0).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;  // validated against overflow when the file was opened
    return n;
  }
};

namespace detail {

/// "(4, 8)": a shape of any rank in the form Shape prints.
inline std::string dims_to_string(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

/// The Shape with these dims; rank must be <= 4 (checked by the caller).
inline Shape shape_from_dims(const std::vector<std::int64_t>& d) { return Shape::from_dims(d.data(), d.size()); }

/// Largest rank accepted in a header (SafeTensorsFile::kMaxRank).
inline constexpr std::size_t kSafeTensorsMaxRank = 8;

/// Throws the Error of SafeTensorsFile::open for the file (or in-memory image) `path`.
[[noreturn]] inline void safetensors_fail(const std::string& path, const std::string& what) {
  detail::throw_error("SafeTensorsFile::open", path + ": " + what);
}
[[noreturn]] inline void safetensors_fail_tensor(const std::string& path, const std::string& key,
                                                 const std::string& what) {
  safetensors_fail(path, "tensor '" + key + "': " + what);
}

/// Parses the header text, rejecting duplicate keys in any object (nlohmann would keep the last silently).
inline nlohmann::json parse_safetensors_header(const std::string& path, const char* text, std::uint64_t n) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty() && duplicate.empty()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + n, callback);
  } catch (const nlohmann::json::exception& e) {
    safetensors_fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) safetensors_fail(path, "header repeats the key '" + duplicate + "'");
  return header;
}

/// The validated entry of tensor key (data_size: bytes in the data section).
inline TensorInfo parse_safetensors_entry(const std::string& path, const std::string& key, const nlohmann::json& v,
                                          std::uint64_t data_size) {
  if (!v.is_object())
    safetensors_fail_tensor(path, key, std::string("entry is not a JSON object but a JSON ") + v.type_name());
  for (const auto& item : v.items())
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets")
      safetensors_fail_tensor(path, key, "unexpected field '" + item.key() + "'");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) safetensors_fail_tensor(path, key, std::string("missing field '") + field + "'");
  TensorInfo t;
  t.name = key;
  const nlohmann::json& dt = v["dtype"];
  if (!dt.is_string()) safetensors_fail_tensor(path, key, "dtype is not a string");
  try {
    t.dtype = parse_dtype(dt.get<std::string>());
  } catch (const Error&) {
    safetensors_fail_tensor(path, key, "unknown or unsupported dtype '" + dt.get<std::string>() + "'");
  }

  const nlohmann::json& shape = v["shape"];
  if (!shape.is_array()) safetensors_fail_tensor(path, key, "shape is not an array");
  if (shape.size() > kSafeTensorsMaxRank)
    safetensors_fail_tensor(
        path, key,
        "shape has rank " + std::to_string(shape.size()) + ", more than " + std::to_string(kSafeTensorsMaxRank));
  std::int64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_integer()) safetensors_fail_tensor(path, key, "shape " + shape.dump() + " holds a non-integer");
    if (d.is_number_unsigned() && d.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      safetensors_fail_tensor(path, key, "dimension " + d.dump() + " of shape " + shape.dump() + " overflows int64");
    const std::int64_t dim = d.get<std::int64_t>();
    if (dim < 0)
      safetensors_fail_tensor(path, key, "negative dimension " + std::to_string(dim) + " in shape " + shape.dump());
    if (dim != 0 && numel > std::numeric_limits<std::int64_t>::max() / dim)
      safetensors_fail_tensor(path, key, "element count of shape " + shape.dump() + " overflows int64");
    numel *= dim;
    t.shape.push_back(dim);
  }

  const nlohmann::json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    safetensors_fail_tensor(path, key, "data_offsets " + off.dump() + " is not a pair of non-negative integers");
  t.begin = off[0].get<std::uint64_t>();
  t.end = off[1].get<std::uint64_t>();
  const std::string offsets = "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
  if (t.begin > t.end) safetensors_fail_tensor(path, key, offsets + " are reversed");
  if (t.end > data_size)
    safetensors_fail_tensor(
        path, key, offsets + " run past the end of the data section (" + std::to_string(data_size) + " bytes)");
  const std::uint64_t esize = dtype_size(t.dtype), held = t.end - t.begin;
  const bool too_big = static_cast<std::uint64_t>(numel) > std::numeric_limits<std::uint64_t>::max() / esize;
  if (too_big || static_cast<std::uint64_t>(numel) * esize != held)
    safetensors_fail_tensor(
        path, key,
        offsets + " hold " + std::to_string(held) + " bytes but shape " + detail::dims_to_string(t.shape) + " of " +
            dtype_name(t.dtype) + " needs " +
            (too_big ? "more than 2^64" : std::to_string(static_cast<std::uint64_t>(numel) * esize)));
  return t;
}

}  // namespace detail

}  // namespace prefixtune
