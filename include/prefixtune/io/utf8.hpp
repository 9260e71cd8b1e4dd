// SPDX-License-Identifier: MIT
// Strict UTF-8 for the GPT-2 tokenizer: decoding by Unicode's table of well-formed sequences, the reason an
// ill-formed one is invalid, Python's errors="replace", encoding a code point, and escaping for error messages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

namespace detail {

/// Decodes the code point at s[i] following Unicode's table of well-formed UTF-8 (no overlongs, surrogates or
/// values above U+10FFFF). Returns it and sets len to its byte count; on ill-formed input returns -1 and sets len
/// to the length of the maximal ill-formed subpart (>= 1): the unit Python's errors="replace" turns into one U+FFFD.
inline std::int32_t utf8_decode(const unsigned char* s, std::size_t n, std::size_t i, std::size_t& len) {
  const unsigned b0 = s[i];
  len = 1;
  if (b0 < 0x80) return static_cast<std::int32_t>(b0);
  std::size_t need = 0;
  unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the next byte
  std::uint32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // below: overlong
    if (b0 == 0xED) hi = 0x9F;  // above: UTF-16 surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // below: overlong
    if (b0 == 0xF4) hi = 0x8F;  // above: beyond U+10FFFF
  } else {
    return -1;  // a continuation byte, C0/C1 (always overlong) or F5..FF
  }
  for (std::size_t k = 1; k <= need; ++k, lo = 0x80, hi = 0xBF) {
    if (i + k >= n || s[i + k] < lo || s[i + k] > hi) {
      len = k;
      return -1;
    }
    cp = (cp << 6) | (s[i + k] & 0x3Fu);
  }
  len = need + 1;
  return static_cast<std::int32_t>(cp);
}

/// Why the ill-formed sequence at s[i] (maximal subpart of length len) is invalid, in words.
inline std::string utf8_error_reason(const unsigned char* s, std::size_t n, std::size_t i, std::size_t len) {
  const unsigned b0 = s[i];
  const bool lead = b0 >= 0xC2 && b0 <= 0xF4;  // then show the subpart and the byte that broke it
  std::string bytes;
  for (std::size_t k = i; k < std::min(n, i + (lead ? len + 1 : 1)); ++k) {
    static const char* kHex = "0123456789ABCDEF";
    if (k > i) bytes += ' ';
    bytes += kHex[s[k] >> 4], bytes += kHex[s[k] & 15];
  }
  const unsigned b1 = i + 1 < n ? s[i + 1] : 0;
  std::string why = "invalid continuation byte";
  if (b0 >= 0x80 && b0 <= 0xBF) {
    why = "unexpected continuation byte";
  } else if (b0 == 0xC0 || b0 == 0xC1 || (b0 == 0xE0 && len == 1 && b1 >= 0x80 && b1 < 0xA0) ||
             (b0 == 0xF0 && len == 1 && b1 >= 0x80 && b1 < 0x90)) {
    why = "overlong encoding";
  } else if (b0 >= 0xF5) {
    why = "byte that never occurs in UTF-8";
  } else if (b0 == 0xED && len == 1 && b1 >= 0xA0 && b1 <= 0xBF) {
    why = "UTF-16 surrogate encoded in UTF-8";
  } else if (b0 == 0xF4 && len == 1 && b1 >= 0x90 && b1 <= 0xBF) {
    why = "code point above U+10FFFF";
  } else if (i + len == n) {
    why = "truncated sequence at the end";
  }
  return str_cat(why, " (bytes ", bytes, ")");
}

/// Throws Error naming `what`, the byte offset and the reason unless s[0, n) is well-formed UTF-8.
inline void check_utf8(const unsigned char* s, std::size_t n, const std::string& what) {
  for (std::size_t i = 0, len = 0; i < n; i += len) {
    if (s[i] < 0x80) {
      len = 1;
      continue;
    }
    PREFIXTUNE_CHECK(utf8_decode(s, n, i, len) >= 0, what, ": invalid UTF-8 at byte offset ", i, ": ",
                     utf8_error_reason(s, n, i, len));
  }
}

/// bytes with every maximal ill-formed UTF-8 subpart replaced by U+FFFD, exactly as Python's
/// bytes.decode("utf-8", errors="replace") does.
inline std::string utf8_replace_invalid(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t i = 0, len = 0; i < bytes.size(); i += len) {
    if (utf8_decode(s, bytes.size(), i, len) >= 0) {
      out.append(bytes.data() + i, len);
    } else {
      out += "\xEF\xBF\xBD";
    }
  }
  return out;
}

/// Appends the UTF-8 encoding of the code point cp (< 0x110000) to out.
inline void utf8_append(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6)), out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12)), out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18)), out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// A string for error messages: control characters and backslashes escaped, long strings cut.
inline std::string escaped(std::string_view s) {
  std::string out = "'";
  for (std::size_t k = 0; k < s.size() && k < 200; ++k) {
    const auto c = static_cast<unsigned char>(s[k]);
    if (c < 0x20 || c == 0x7F || c == '\\') {
      static const char* kHex = "0123456789abcdef";
      out += "\\x", out += kHex[c >> 4], out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + (s.size() > 200 ? "'..." : "'");
}

}  // namespace detail

}  // namespace prefixtune
