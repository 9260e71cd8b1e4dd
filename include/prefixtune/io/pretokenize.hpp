// SPDX-License-Identifier: MIT
// GPT-2's pre-tokenizer: the regex of encoder.py written by hand over the code-point classes of unicode_tables.hpp
// (letters, numbers, White_Space), splitting text into the words that BPE then merges.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "prefixtune/io/unicode_tables.hpp"
#include "prefixtune/io/utf8.hpp"

namespace prefixtune {

namespace detail {

/// The classes the pre-tokenizer regex distinguishes: \p{L}, \p{N}, \s and everything else.
enum class CharClass : std::uint8_t { kOther, kLetter, kNumber, kSpace };

template <std::size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], std::uint32_t cp) {
  const auto* it =
      std::upper_bound(ranges, ranges + N, cp, [](std::uint32_t c, const CodePointRange& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

/// The class of a code point (ASCII by comparisons, the rest by binary search in the generated tables).
inline CharClass char_class(std::uint32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (in_ranges(kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
  if (in_ranges(kWhiteSpaceRanges, cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

/// Splits well-formed UTF-8 s[0, n) like regex.findall of GPT-2's pattern
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// calling emit(begin, end) with byte offsets of each piece, in order; the pieces tile s. As in the `regex` module
/// that encoder.py uses, \s is Unicode White_Space (Python's str.isspace() would add U+001C..U+001F).
template <class Emit>
void pretokenize(const unsigned char* s, std::size_t n, Emit&& emit) {
  std::size_t i = 0, len = 0;
  const auto class_at = [&](std::size_t k) {
    if (s[k] < 0x80) return len = 1, char_class(s[k]);
    return char_class(static_cast<std::uint32_t>(utf8_decode(s, n, k, len)));
  };
  while (i < n) {
    if (s[i] == '\'' && i + 1 < n) {  // contractions, case-sensitive, before everything else
      const unsigned char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
      const std::size_t m = (a == 's' || a == 't' || a == 'm' || a == 'd')                                 ? 2
                            : ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) ? 3
                                                                                                           : 0;
      if (m != 0) {
        emit(i, i + m);
        i += m;
        continue;
      }
    }
    CharClass cls = class_at(i);
    std::size_t j = i + len;
    if (s[i] == ' ' && j < n) {  // " ?X+": a space joins a following letter, number or other run
      const CharClass next = class_at(j);
      if (next != CharClass::kSpace) cls = next, j += len;
    }
    if (cls != CharClass::kSpace) {
      while (j < n && class_at(j) == cls) j += len;
    } else {
      std::size_t last = i;  // start of the run's last code point
      while (j < n && class_at(j) == CharClass::kSpace) last = j, j += len;
      if (j < n && last > i) j = last;  // \s+(?!\S) leaves the space before a non-space to the next piece
    }
    emit(i, j);
    i = j;
  }
}

}  // namespace detail

}  // namespace prefixtune
