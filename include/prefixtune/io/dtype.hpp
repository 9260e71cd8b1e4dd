// SPDX-License-Identifier: MIT
// The element types of safetensors files (DType: sizes, names, parsing) and their conversions: F16/BF16 <-> float
// with exact rounding, and the per-element helpers the reader and writer share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "prefixtune/core/error.hpp"
#include "prefixtune/ops/parallel.hpp"

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

template <class T>
inline constexpr bool is_float_element_v = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T>
inline constexpr bool is_int_element_v = std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>;

template <class S, class T, class F>
void decode_loop(const std::uint8_t* src, std::int64_t n, T* dst, F f) {
#if defined(_OPENMP)
#pragma omp parallel for if (n > 2 * kParallelMinElements)
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

}  // namespace prefixtune
