// SPDX-License-Identifier: MIT
// safetensors (https://huggingface.co/docs/safetensors) reading through a validated memory map, and writing
// (atomic, byte-identical to the Python library's layout); F16/BF16 <-> float conversions with exact rounding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
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
#include "prefixtune/io/file.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "prefixtune's safetensors reader and writer assume a little-endian host"
#endif

namespace prefixtune {

/// Element types of a safetensors file that prefixtune reads and writes (others are rejected by name).
enum class DType { F32, F16, BF16, F64, I32, I64, U8, BOOL };

/// Bytes per element.
inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
      return 2;
    default:
      return 1;
  }
}

/// The name used in safetensors headers: "F32", "BF16", ...
inline const char* dtype_name(DType d) {
  constexpr const char* kNames[] = {"F32", "F16", "BF16", "F64", "I32", "I64", "U8", "BOOL"};
  return kNames[static_cast<int>(d)];
}

/// The DType named s; throws Error naming s when it is unknown or unsupported (e.g. "F8_E4M3").
inline DType parse_dtype(const std::string& s) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32, DType::I64, DType::U8, DType::BOOL})
    if (s == dtype_name(d)) return d;
  PREFIXTUNE_FAIL("unknown or unsupported dtype '", s, "'");
}

/// True for F32, F16, BF16, F64.
inline bool dtype_is_floating(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}

namespace detail {

/// Rounds x to the nearest value (ties to even) of the binary format with exp_bits exponent and man_bits
/// mantissa bits (IEEE-754 layout, subnormals included) and returns its bit pattern. Rounding straight from
/// double avoids the double rounding of a double -> float -> half path. Overflow gives inf; NaN stays a
/// (quiet) NaN keeping the top payload bits.
inline std::uint32_t round_to_narrow_float(double x, int exp_bits, int man_bits) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  const std::uint32_t sign = static_cast<std::uint32_t>(b >> 63) << (exp_bits + man_bits);
  const int e = static_cast<int>((b >> 52) & 0x7ff);
  const std::uint64_t m = b & ((std::uint64_t{1} << 52) - 1);
  const std::uint32_t inf = ((std::uint32_t{1} << exp_bits) - 1) << man_bits;
  if (e == 0x7ff) {
    if (m == 0) return sign | inf;
    return sign | inf | (std::uint32_t{1} << (man_bits - 1)) | static_cast<std::uint32_t>(m >> (52 - man_bits));
  }
  const int bias = (1 << (exp_bits - 1)) - 1;
  const std::uint64_t sig = e == 0 ? m : (m | (std::uint64_t{1} << 52));  // value = sig * 2^(ex - 52)
  const int ex = e == 0 ? -1022 : e - 1023;
  int shift;           // bits of sig below the target's last mantissa bit
  std::uint64_t base;  // (target exponent field - 1) << man_bits; the implicit bit of q adds the missing 1
  if (ex >= 1 - bias) {
    shift = 52 - man_bits;
    base = static_cast<std::uint64_t>(ex + bias - 1) << man_bits;
  } else {  // subnormal in the target: units of 2^(1 - bias - man_bits)
    shift = 52 - man_bits + (1 - bias - ex);
    base = 0;
  }
  if (shift > 60) return sign;  // below half the smallest subnormal
  std::uint64_t q = sig >> shift;
  const std::uint64_t rem = sig & ((std::uint64_t{1} << shift) - 1), half = std::uint64_t{1} << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) ++q;  // a carry ripples into the exponent, as it should
  const std::uint64_t bits = base + q;
  return bits >= inf ? (sign | inf) : (sign | static_cast<std::uint32_t>(bits));
}

/// "(4, 8)": a shape of any rank in the form Shape prints.
inline std::string dims_to_string(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

/// The Shape with these dims; rank must be <= 4 (checked by the caller).
inline Shape shape_from_dims(const std::vector<std::int64_t>& d) { return Shape::from_dims(d.data(), d.size()); }

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

template <class T>
inline constexpr bool is_float_element_v = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T>
inline constexpr bool is_int_element_v = std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>;

template <class S, class T, class F>
void decode_loop(const std::uint8_t* src, std::int64_t n, T* dst, F f) {
#if defined(_OPENMP)
#pragma omp parallel for if (n > (1 << 16))
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    S s;
    std::memcpy(&s, src + i * static_cast<std::int64_t>(sizeof(S)), sizeof(S));
    dst[i] = f(s);
  }
}

/// Fits v into T; false when it does not (narrowing int64 -> int32, or a BOOL byte other than 0/1).
template <class T, class V>
bool fits(V v) {
  return v >= static_cast<V>(std::numeric_limits<T>::min()) && v <= static_cast<V>(std::numeric_limits<T>::max());
}

}  // namespace detail

/// F16 bits -> float (exact; subnormals, inf and NaN included).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else {  // zero or subnormal: man * 2^-24, exact in float
    const float f = static_cast<float>(man) * 5.9604644775390625e-08f;
    std::memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

/// BF16 bits -> float (exact).
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

/// x rounded to F16 (nearest, ties to even; overflow -> inf; NaN stays NaN). Accepts float or double exactly.
inline std::uint16_t float_to_half(double x) {
  return static_cast<std::uint16_t>(detail::round_to_narrow_float(x, 5, 10));
}

/// x rounded to BF16 (nearest, ties to even; overflow -> inf; NaN stays NaN). Accepts float or double exactly.
inline std::uint16_t float_to_bf16(double x) {
  return static_cast<std::uint16_t>(detail::round_to_narrow_float(x, 8, 7));
}

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
  static constexpr std::size_t kMaxRank = 8;

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

  [[noreturn]] void fail(const std::string& what) const {
    detail::throw_error("SafeTensorsFile::open", path_ + ": " + what);
  }
  [[noreturn]] void fail_tensor(const std::string& key, const std::string& what) const {
    fail("tensor '" + key + "': " + what);
  }

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
    const nlohmann::json header = parse_header(reinterpret_cast<const char*>(bytes()) + 8, n);
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
      TensorInfo info = parse_entry(key, value, data_size);
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

  /// Parses the header text, rejecting duplicate keys in any object (nlohmann would keep the last silently).
  nlohmann::json parse_header(const char* text, std::uint64_t n) const {
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
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!duplicate.empty()) fail("header repeats the key '" + duplicate + "'");
    return header;
  }

  TensorInfo parse_entry(const std::string& key, const nlohmann::json& v, std::uint64_t data_size) const {
    if (!v.is_object()) fail_tensor(key, std::string("entry is not a JSON object but a JSON ") + v.type_name());
    for (const auto& item : v.items())
      if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets")
        fail_tensor(key, "unexpected field '" + item.key() + "'");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) fail_tensor(key, std::string("missing field '") + field + "'");
    TensorInfo t;
    t.name = key;
    const nlohmann::json& dt = v["dtype"];
    if (!dt.is_string()) fail_tensor(key, "dtype is not a string");
    try {
      t.dtype = parse_dtype(dt.get<std::string>());
    } catch (const Error&) {
      fail_tensor(key, "unknown or unsupported dtype '" + dt.get<std::string>() + "'");
    }

    const nlohmann::json& shape = v["shape"];
    if (!shape.is_array()) fail_tensor(key, "shape is not an array");
    if (shape.size() > kMaxRank)
      fail_tensor(key, "shape has rank " + std::to_string(shape.size()) + ", more than " + std::to_string(kMaxRank));
    std::int64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_integer()) fail_tensor(key, "shape " + shape.dump() + " holds a non-integer");
      if (d.is_number_unsigned() && d.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail_tensor(key, "dimension " + d.dump() + " of shape " + shape.dump() + " overflows int64");
      const std::int64_t dim = d.get<std::int64_t>();
      if (dim < 0) fail_tensor(key, "negative dimension " + std::to_string(dim) + " in shape " + shape.dump());
      if (dim != 0 && numel > std::numeric_limits<std::int64_t>::max() / dim)
        fail_tensor(key, "element count of shape " + shape.dump() + " overflows int64");
      numel *= dim;
      t.shape.push_back(dim);
    }

    const nlohmann::json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail_tensor(key, "data_offsets " + off.dump() + " is not a pair of non-negative integers");
    t.begin = off[0].get<std::uint64_t>();
    t.end = off[1].get<std::uint64_t>();
    const std::string offsets = "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.begin > t.end) fail_tensor(key, offsets + " are reversed");
    if (t.end > data_size)
      fail_tensor(key, offsets + " run past the end of the data section (" + std::to_string(data_size) + " bytes)");
    const std::uint64_t esize = dtype_size(t.dtype), held = t.end - t.begin;
    const bool too_big = static_cast<std::uint64_t>(numel) > std::numeric_limits<std::uint64_t>::max() / esize;
    if (too_big || static_cast<std::uint64_t>(numel) * esize != held)
      fail_tensor(key, offsets + " hold " + std::to_string(held) + " bytes but shape " +
                           detail::dims_to_string(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                           (too_big ? "more than 2^64" : std::to_string(static_cast<std::uint64_t>(numel) * esize)));
    return t;
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
