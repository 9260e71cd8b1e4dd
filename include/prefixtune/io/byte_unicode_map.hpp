// SPDX-License-Identifier: MIT
// GPT-2's byte <-> unicode map (bytes_to_unicode() of encoder.py): the byte-level form of vocabulary strings
// ("Ġthe") and the raw bytes they stand for.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "prefixtune/io/utf8.hpp"

namespace prefixtune {

namespace detail {

/// bytes_to_unicode() of encoder.py: bytes 21-7E, A1-AC, AE-FF stand for the same code point; the other 68 bytes,
/// in increasing order, for U+0100..U+0143. to_byte is the inverse (-1 where a code point stands for no byte).
struct ByteUnicodeMap {
  std::array<std::uint32_t, 256> to_cp{};
  std::array<std::int16_t, 0x144> to_byte{};
};

inline const ByteUnicodeMap& byte_unicode_map() {
  static const ByteUnicodeMap m = [] {
    ByteUnicodeMap r;
    r.to_byte.fill(-1);
    std::uint32_t next = 0x100;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      r.to_cp[b] = printable ? b : next++;
      r.to_byte[r.to_cp[b]] = static_cast<std::int16_t>(b);
    }
    return r;
  }();
  return m;
}

/// The raw bytes a vocabulary string (byte-level unicode form, e.g. "Ġthe") stands for; nullopt if it holds a
/// character outside the 256-symbol alphabet. `text` must be valid UTF-8.
inline std::optional<std::string> token_text_to_bytes(std::string_view text) {
  const auto& map = byte_unicode_map();
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::string out;
  for (std::size_t i = 0, len = 0; i < text.size(); i += len) {
    const std::int32_t cp = utf8_decode(s, text.size(), i, len);
    if (cp < 0 || cp >= 0x144 || map.to_byte[static_cast<std::size_t>(cp)] < 0) return std::nullopt;
    out += static_cast<char>(map.to_byte[static_cast<std::size_t>(cp)]);
  }
  return out;
}

/// The vocabulary string (byte-level unicode form) of raw bytes: encoder.py's byte_encoder applied to each byte.
inline std::string bytes_to_token_text(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) utf8_append(out, byte_unicode_map().to_cp[static_cast<unsigned char>(c)]);
  return out;
}

}  // namespace detail

}  // namespace prefixtune
