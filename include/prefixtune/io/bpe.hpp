// SPDX-License-Identifier: MIT
// GPT-2's byte-level BPE tokenizer (Gpt2Tokenizer), output-identical to OpenAI's gpt-2 encoder.py and HuggingFace's
// GPT2Tokenizer: strict UTF-8, the pre-tokenizer regex written by hand, merges by rank, a thread-safe word cache.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/unicode_tables.hpp"

namespace prefixtune {

namespace detail {

/// Limits checked before anything is allocated: vocabulary entries / merges, and bytes per tokenizer file.
inline constexpr std::size_t kMaxBpeEntries = 10'000'000;
inline constexpr std::size_t kMaxBpeFileBytes = std::size_t{512} << 20;

// ---------------------------------------------------------------------------------------------------------------
// UTF-8

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

// ---------------------------------------------------------------------------------------------------------------
// GPT-2's byte <-> unicode map and the pre-tokenizer

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

// ---------------------------------------------------------------------------------------------------------------
// The model: vocabulary, merges, cache

/// What a merge of an adjacent pair makes: its rank (priority; lower first) and the id of the merged token.
struct BpeMerge {
  std::uint32_t rank;
  std::int32_t id;
};

/// Open-addressing hash map (left id, right id) -> BpeMerge, built once; lookups are lock-free reads.
class BpePairTable {
 public:
  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, BpeMerge{0, 0});
  }
  /// Inserts; returns the existing entry instead if the pair is present.
  const BpeMerge* insert(std::int32_t a, std::int32_t b, BpeMerge m) {
    const std::uint64_t key = pack(a, b);
    std::size_t k = slot(key);
    for (; keys_[k] != kEmpty; k = (k + 1) & (keys_.size() - 1)) {
      if (keys_[k] == key) return &vals_[k];
    }
    keys_[k] = key, vals_[k] = m;
    return nullptr;
  }
  const BpeMerge* find(std::int32_t a, std::int32_t b) const {
    if (keys_.empty()) return nullptr;
    const std::uint64_t key = pack(a, b);
    for (std::size_t k = slot(key); keys_[k] != kEmpty; k = (k + 1) & (keys_.size() - 1)) {
      if (keys_[k] == key) return &vals_[k];
    }
    return nullptr;
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  static std::uint64_t pack(std::int32_t a, std::int32_t b) {
    return (std::uint64_t{static_cast<std::uint32_t>(a)} << 32) | static_cast<std::uint32_t>(b);
  }
  std::size_t slot(std::uint64_t k) const {
    k ^= k >> 33, k *= 0xff51afd7ed558ccdULL, k ^= k >> 33;
    return static_cast<std::size_t>(k) & (keys_.size() - 1);
  }
  std::vector<std::uint64_t> keys_;
  std::vector<BpeMerge> vals_;
};

/// The immutable part of a tokenizer, shared by its copies.
struct BpeModel {
  std::vector<std::string> token_bytes;  // id -> raw bytes
  std::vector<std::string> token_text;   // id -> vocabulary string ("Ġthe")
  std::unordered_map<std::string, std::int32_t> id_by_bytes;
  std::array<std::int32_t, 256> byte_id{};  // id of each single-byte token
  BpePairTable merges;
  std::size_t num_merges = 0;
  std::int32_t eot = -1;  // id of "<|endoftext|>", -1 if the vocabulary lacks it
};

/// Word -> ids cache in 16 mutex-protected shards; a shard is emptied when it reaches its cap.
class BpeCache {
 public:
  static constexpr std::size_t kShards = 16, kMaxPerShard = 8192, kMaxWordBytes = 128;

  /// A word with its hash, computed once for both the shard and the shard's map.
  struct Key {
    std::string word;
    std::size_t hash;
    bool operator==(const Key& o) const { return hash == o.hash && word == o.word; }
  };

  /// Appends the cached ids of the word to out and returns true, or returns false.
  bool lookup(const Key& key, std::vector<std::int32_t>& out) {
    Shard& sh = shards_[key.hash % kShards];
    const std::lock_guard<std::mutex> lock(sh.mu);
    const auto it = sh.map.find(key);
    if (it == sh.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(Key key, const std::int32_t* ids, std::size_t count) {
    Shard& sh = shards_[key.hash % kShards];
    const std::lock_guard<std::mutex> lock(sh.mu);
    if (sh.map.size() >= kMaxPerShard) sh.map.clear();
    sh.map.emplace(std::move(key), std::vector<std::int32_t>(ids, ids + count));
  }
  void clear() {
    for (Shard& sh : shards_) {
      const std::lock_guard<std::mutex> lock(sh.mu);
      sh.map.clear();
    }
  }
  std::size_t size() {
    std::size_t total = 0;
    for (Shard& sh : shards_) {
      const std::lock_guard<std::mutex> lock(sh.mu);
      total += sh.map.size();
    }
    return total;
  }

 private:
  struct KeyHash {
    std::size_t operator()(const Key& k) const { return k.hash; }
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<Key, std::vector<std::int32_t>, KeyHash> map;
  };
  std::array<Shard, kShards> shards_;
};

/// Per-call working memory of bpe_word: a linked list of symbols and a min-heap of mergeable adjacent pairs.
struct BpeScratch {
  struct Symbol {
    std::int32_t id, prev, next;  // id -1: merged into its left neighbour
  };
  struct Candidate {
    std::uint32_t rank;
    std::int32_t left, a, b, merged;  // the pair (a, b) starting at symbol `left`
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::vector<std::int32_t> touched;
};

/// Appends the BPE ids of one pre-tokenized word (raw bytes, n >= 1) to out. Same result as encoder.py's bpe():
/// repeatedly take the lowest-ranked adjacent pair and merge all its occurrences left to right; here in
/// O(n log n) with a heap ordered by (rank, position) that pops one rank's occurrences as a batch.
inline void bpe_word(const BpeModel& m, const unsigned char* w, std::size_t n, BpeScratch& sc,
                     std::vector<std::int32_t>& out) {
  using Candidate = BpeScratch::Candidate;
  auto& sym = sc.symbols;
  auto& heap = sc.heap;
  const auto later = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.left > y.left;
  };
  const auto push_pair = [&](std::int32_t left) {
    const std::int32_t right = sym[static_cast<std::size_t>(left)].next;
    if (right < 0) return;
    const std::int32_t a = sym[static_cast<std::size_t>(left)].id, b = sym[static_cast<std::size_t>(right)].id;
    if (const BpeMerge* mg = m.merges.find(a, b)) {
      heap.push_back({mg->rank, left, a, b, mg->id});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  sym.resize(n);
  heap.clear();
  for (std::size_t k = 0; k < n; ++k) {
    sym[k] = {m.byte_id[w[k]], static_cast<std::int32_t>(k) - 1, k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1};
  }
  for (std::size_t k = 0; k + 1 < n; ++k) push_pair(static_cast<std::int32_t>(k));
  while (!heap.empty()) {
    const std::uint32_t rank = heap.front().rank;
    sc.touched.clear();
    while (!heap.empty() && heap.front().rank == rank) {  // all occurrences of one pair, left to right
      std::pop_heap(heap.begin(), heap.end(), later);
      const Candidate c = heap.back();
      heap.pop_back();
      auto& left = sym[static_cast<std::size_t>(c.left)];
      if (left.id != c.a || left.next < 0 || sym[static_cast<std::size_t>(left.next)].id != c.b) continue;  // stale
      auto& right = sym[static_cast<std::size_t>(left.next)];
      left.id = c.merged;
      left.next = right.next;
      if (right.next >= 0) sym[static_cast<std::size_t>(right.next)].prev = c.left;
      right.id = -1;
      sc.touched.push_back(c.left);
    }
    for (const std::int32_t k : sc.touched) {  // the new pairs enter only after the whole batch, as in encoder.py
      if (sym[static_cast<std::size_t>(k)].prev >= 0) push_pair(sym[static_cast<std::size_t>(k)].prev);
      push_pair(k);
    }
  }
  for (std::int32_t k = 0; k >= 0; k = sym[static_cast<std::size_t>(k)].next) {
    out.push_back(sym[static_cast<std::size_t>(k)].id);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading vocabulary and merges files

/// Maps a file read-only and refuses one larger than kMaxBpeFileBytes before anything is allocated.
inline MappedFile map_bpe_file(const std::string& path, const char* what) {
  MappedFile f(path);
  PREFIXTUNE_CHECK(f.size() <= kMaxBpeFileBytes, what, " '", path, "' is ", f.size(), " bytes, more than the limit of ",
                   kMaxBpeFileBytes);
  return f;
}

/// SAX reader of a vocabulary file: one JSON object token -> integer id; collects (token, id) pairs.
class VocabSaxReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit VocabSaxReader(std::string path) : path_(std::move(path)) {}
  std::vector<std::pair<std::string, std::int64_t>> entries;

  bool start_object(std::size_t) override {
    if (depth_++ == 0) return true;
    fail_value("an object");
  }
  bool end_object() override { return --depth_, true; }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool number_integer(number_integer_t v) override { return add(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return add(static_cast<std::int64_t>(std::min<number_unsigned_t>(v, std::numeric_limits<std::int64_t>::max())));
  }
  bool number_float(number_float_t, const string_t& text) override { fail_value(str_cat("the number ", text)); }
  bool null() override { fail_value("null"); }
  bool boolean(bool) override { fail_value("a boolean"); }
  bool string(string_t& v) override { fail_value(str_cat("the string ", escaped(v))); }
  bool binary(binary_t&) override { fail_value("binary data"); }
  bool start_array(std::size_t) override { fail_value("an array"); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    PREFIXTUNE_FAIL("vocabulary file '", path_, "' is not valid JSON: ", ex.what());
  }

 private:
  [[noreturn]] void fail_value(const std::string& what) const {
    if (depth_ == 0) PREFIXTUNE_FAIL("vocabulary file '", path_, "': expected a JSON object token -> id, found ", what);
    PREFIXTUNE_FAIL("vocabulary file '", path_, "': token ", escaped(key_), " has ", what, ", not an integer id");
  }
  bool add(std::int64_t v) {
    if (depth_ == 0) fail_value("a number");
    PREFIXTUNE_CHECK(entries.size() < kMaxBpeEntries, "vocabulary file '", path_, "' has more than ", kMaxBpeEntries,
                     " entries");
    PREFIXTUNE_CHECK(v >= 0, "vocabulary file '", path_, "': token ", escaped(key_), " has the negative id ", v);
    entries.emplace_back(std::move(key_), v);
    return true;
  }
  std::string path_;
  std::string key_;
  int depth_ = 0;
};

/// Reads and validates a vocabulary file (vocab.json / encoder.json) into m.
inline void read_bpe_vocab(const std::string& path, BpeModel& m) {
  const MappedFile file = map_bpe_file(path, "vocabulary file");
  VocabSaxReader reader(path);
  nlohmann::json::sax_parse(file.data(), file.data() + file.size(), &reader);
  auto& entries = reader.entries;
  const std::size_t count = entries.size();
  PREFIXTUNE_CHECK(count >= 256, "vocabulary file '", path, "' has ", count,
                   " entries; a byte-level BPE vocabulary needs at least the 256 single-byte tokens");
  m.token_text.assign(count, std::string());
  m.token_bytes.assign(count, std::string());
  std::vector<bool> seen(count, false);
  m.id_by_bytes.reserve(count);
  for (auto& [text, id] : entries) {
    PREFIXTUNE_CHECK(static_cast<std::size_t>(id) < count, "vocabulary file '", path, "': token ", escaped(text),
                     " has the id ", id, ", outside [0, ", count, ") for a vocabulary of ", count, " entries");
    const auto k = static_cast<std::size_t>(id);
    PREFIXTUNE_CHECK(!seen[k], "vocabulary file '", path, "': the id ", id, " belongs to both ",
                     escaped(m.token_text[k]), " and ", escaped(text));
    std::optional<std::string> bytes = token_text_to_bytes(text);
    PREFIXTUNE_CHECK(bytes.has_value() && !bytes->empty(), "vocabulary file '", path, "': token ", escaped(text),
                     bytes ? " is empty" : " has a character outside GPT-2's 256-symbol byte alphabet");
    PREFIXTUNE_CHECK(m.id_by_bytes.emplace(*bytes, static_cast<std::int32_t>(id)).second, "vocabulary file '", path,
                     "': token ", escaped(text), " appears twice");
    seen[k] = true;
    m.token_text[k] = std::move(text);
    m.token_bytes[k] = std::move(*bytes);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = m.id_by_bytes.find(std::string(1, static_cast<char>(b)));
    PREFIXTUNE_CHECK(it != m.id_by_bytes.end(), "vocabulary file '", path, "' lacks the single-byte token ",
                     escaped(bytes_to_token_text(std::string(1, static_cast<char>(b)))), " (byte ", b, ")");
    m.byte_id[static_cast<std::size_t>(b)] = it->second;
  }
  const auto eot = m.id_by_bytes.find("<|endoftext|>");
  m.eot = eot == m.id_by_bytes.end() ? -1 : eot->second;
}

/// Reads and validates a merges file (merges.txt / vocab.bpe): an optional "#version" first line, then one merge
/// "A B" per line (rank = index), an optional final newline. Both parts and A+B must be vocabulary tokens.
inline void read_bpe_merges(const std::string& path, BpeModel& m) {
  const MappedFile file = map_bpe_file(path, "merges file");
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  check_utf8(file.data(), file.size(), str_cat("merges file '", path, "'"));
  const auto id_of_part = [&](std::string_view part, std::size_t line_no) {
    const std::optional<std::string> bytes = token_text_to_bytes(part);
    const auto it = bytes ? m.id_by_bytes.find(*bytes) : m.id_by_bytes.end();
    PREFIXTUNE_CHECK(it != m.id_by_bytes.end(), "merges file '", path, "' line ", line_no, ": ", escaped(part),
                     " is not a token of the vocabulary");
    return it->second;
  };
  std::vector<std::array<std::int32_t, 3>> merges;  // left, right, merged
  std::vector<std::size_t> line_of;                 // line number of each rank
  std::size_t pos = 0;
  for (std::size_t line_no = 1; pos < text.size(); ++line_no) {
    const std::size_t eol = std::min(text.find('\n', pos), text.size());
    const std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line_no == 1 && line.substr(0, 8) == "#version") continue;
    PREFIXTUNE_CHECK(line.empty() || line.back() != '\r', "merges file '", path, "' line ", line_no,
                     " ends in a carriage return; CRLF line endings are not supported");
    const std::size_t sp = line.find(' ');
    PREFIXTUNE_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
                         line.find(' ', sp + 1) == std::string_view::npos,
                     "merges file '", path, "' line ", line_no, ": expected two tokens separated by one space, got ",
                     escaped(line));
    PREFIXTUNE_CHECK(merges.size() < kMaxBpeEntries, "merges file '", path, "' has more than ", kMaxBpeEntries,
                     " merges");
    const std::string_view a = line.substr(0, sp), b = line.substr(sp + 1);
    const std::int32_t ia = id_of_part(a, line_no), ib = id_of_part(b, line_no);
    const auto merged =
        m.id_by_bytes.find(m.token_bytes[static_cast<std::size_t>(ia)] + m.token_bytes[static_cast<std::size_t>(ib)]);
    PREFIXTUNE_CHECK(merged != m.id_by_bytes.end(), "merges file '", path, "' line ", line_no, ": the merged token ",
                     escaped(str_cat(a, b)), " is not in the vocabulary");
    merges.push_back({ia, ib, merged->second});
    line_of.push_back(line_no);
  }
  m.merges.reserve(merges.size());
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const BpeMerge* old = m.merges.insert(merges[r][0], merges[r][1], {static_cast<std::uint32_t>(r), merges[r][2]});
    PREFIXTUNE_CHECK(old == nullptr, "merges file '", path, "' line ", line_of[r], " repeats the merge of line ",
                     old ? line_of[old->rank] : 0);
  }
  m.num_merges = merges.size();
}

}  // namespace detail

/// GPT-2's byte-level BPE tokenizer. encode() gives exactly the ids of OpenAI's encoder.py (and HuggingFace's
/// GPT2Tokenizer for text without special tokens). Thread-safe: all methods are const and may run concurrently;
/// copies are cheap and share the vocabulary and the word cache.
class Gpt2Tokenizer {
 public:
  /// Loads a vocabulary (vocab.json / encoder.json: JSON object token -> id) and merges (merges.txt / vocab.bpe).
  /// Throws Error naming the file and the line or token at fault.
  static Gpt2Tokenizer load(const std::string& vocab_json, const std::string& merges_txt) {
    auto m = std::make_shared<detail::BpeModel>();
    detail::read_bpe_vocab(vocab_json, *m);
    detail::read_bpe_merges(merges_txt, *m);
    return Gpt2Tokenizer(std::move(m));
  }

  /// Loads dir/vocab.json + dir/merges.txt (HuggingFace names) or else dir/encoder.json + dir/vocab.bpe (OpenAI's).
  static Gpt2Tokenizer load_dir(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path d(dir);
    for (const auto& [vocab, merges] :
         {std::pair{"vocab.json", "merges.txt"}, std::pair{"encoder.json", "vocab.bpe"}}) {
      std::error_code ec;
      if (fs::exists(d / vocab, ec) && fs::exists(d / merges, ec))
        return load((d / vocab).string(), (d / merges).string());
    }
    PREFIXTUNE_FAIL("no GPT-2 tokenizer files in '", dir,
                    "': expected vocab.json + merges.txt or encoder.json + vocab.bpe");
  }

  /// Token ids of UTF-8 text. With parse_special, each exact "<|endoftext|>" becomes eot_id() and the text
  /// between is encoded on its own; without, it is ordinary text (as in encoder.py). Throws Error naming the byte
  /// offset for invalid UTF-8.
  std::vector<std::int32_t> encode(std::string_view utf8, bool parse_special = false) const {
    const auto* s = reinterpret_cast<const unsigned char*>(utf8.data());
    detail::check_utf8(s, utf8.size(), "encode");
    std::vector<std::int32_t> out;
    out.reserve(utf8.size() / 4 + 1);
    detail::BpeScratch scratch;
    if (!parse_special) {
      encode_plain(s, utf8.size(), scratch, out);
      return out;
    }
    const std::string& special = model_->token_bytes[static_cast<std::size_t>(eot_id())];
    for (std::size_t pos = 0;;) {
      const std::size_t hit = utf8.find(special, pos);
      encode_plain(s + pos, std::min(hit, utf8.size()) - pos, scratch, out);
      if (hit == std::string_view::npos) return out;
      out.push_back(model_->eot);
      pos = hit + special.size();
    }
  }

  /// The raw bytes of ids, concatenated (decode(encode(s)) == s). A partial multi-byte sequence stays as it is,
  /// so the result may be invalid UTF-8; see decode_lossy. Throws Error naming an out-of-range id and its position.
  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::size_t total = 0;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      PREFIXTUNE_CHECK(ids[k] >= 0 && ids[k] < vocab_size(), "decode: id ", ids[k], " at position ", k,
                       " is outside the vocabulary [0, ", vocab_size(), ")");
      total += model_->token_bytes[static_cast<std::size_t>(ids[k])].size();
    }
    std::string out;
    out.reserve(total);
    for (const std::int32_t id : ids) out += model_->token_bytes[static_cast<std::size_t>(id)];
    return out;
  }

  /// decode() made valid UTF-8: each maximal invalid subsequence becomes U+FFFD, like encoder.py's decode
  /// (bytes.decode("utf-8", errors="replace")).
  std::string decode_lossy(const std::vector<std::int32_t>& ids) const {
    return detail::utf8_replace_invalid(decode(ids));
  }

  /// The id of a vocabulary string in its byte-level form (e.g. "Ġthe" for " the"), or nullopt.
  std::optional<std::int32_t> id_of(std::string_view token) const {
    const std::optional<std::string> bytes = detail::token_text_to_bytes(token);
    if (!bytes) return std::nullopt;
    const auto it = model_->id_by_bytes.find(*bytes);
    if (it == model_->id_by_bytes.end()) return std::nullopt;
    return it->second;
  }

  /// The vocabulary string of an id in its byte-level form (e.g. "Ġthe"); throws Error if id is out of range.
  const std::string& token_of(std::int32_t id) const { return model_->token_text[checked(id)]; }

  /// The raw bytes an id stands for (e.g. " the"); throws Error if id is out of range.
  const std::string& token_bytes(std::int32_t id) const { return model_->token_bytes[checked(id)]; }

  /// Number of tokens (50257 for GPT-2).
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(model_->token_bytes.size()); }

  /// Number of merges (50000 for GPT-2).
  std::size_t num_merges() const { return model_->num_merges; }

  /// The id of "<|endoftext|>" as read from the vocabulary (50256 for GPT-2); throws Error if it has none.
  std::int32_t eot_id() const {
    PREFIXTUNE_CHECK(model_->eot >= 0, "the vocabulary has no <|endoftext|> token");
    return model_->eot;
  }

  /// Empties the word cache (shared with copies); results never depend on it.
  void clear_cache() const { cache_->clear(); }

  /// Number of words in the cache.
  std::size_t cache_size() const { return cache_->size(); }

 private:
  explicit Gpt2Tokenizer(std::shared_ptr<const detail::BpeModel> m)
      : model_(std::move(m)), cache_(std::make_shared<detail::BpeCache>()) {}

  std::size_t checked(std::int32_t id) const {
    PREFIXTUNE_CHECK(id >= 0 && id < vocab_size(), "id ", id, " is outside the vocabulary [0, ", vocab_size(), ")");
    return static_cast<std::size_t>(id);
  }

  void encode_plain(const unsigned char* s, std::size_t n, detail::BpeScratch& scratch,
                    std::vector<std::int32_t>& out) const {
    detail::pretokenize(s, n, [&](std::size_t b, std::size_t e) {
      if (e - b == 1) {
        out.push_back(model_->byte_id[s[b]]);
      } else if (e - b > detail::BpeCache::kMaxWordBytes) {
        detail::bpe_word(*model_, s + b, e - b, scratch, out);
      } else {
        const std::string_view word(reinterpret_cast<const char*>(s + b), e - b);
        detail::BpeCache::Key key{std::string(word), std::hash<std::string_view>{}(word)};
        if (cache_->lookup(key, out)) return;
        const std::size_t first = out.size();
        detail::bpe_word(*model_, s + b, e - b, scratch, out);
        cache_->insert(std::move(key), out.data() + first, out.size() - first);
      }
    });
  }

  std::shared_ptr<const detail::BpeModel> model_;
  std::shared_ptr<detail::BpeCache> cache_;
};

}  // namespace prefixtune
