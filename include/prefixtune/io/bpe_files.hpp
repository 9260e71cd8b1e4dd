// SPDX-License-Identifier: MIT
// Reading the GPT-2 tokenizer's files: the vocabulary (vocab.json / encoder.json) and the merges (merges.txt /
// vocab.bpe), validated with size and entry limits checked before anything is allocated.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/bpe_model.hpp"
#include "prefixtune/io/byte_unicode_map.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/utf8.hpp"

namespace prefixtune {

namespace detail {

/// Limits checked before anything is allocated: vocabulary entries / merges, and bytes per tokenizer file.
inline constexpr std::size_t kMaxBpeEntries = 10'000'000;
inline constexpr std::size_t kMaxBpeFileBytes = std::size_t{512} << 20;

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

}  // namespace prefixtune
