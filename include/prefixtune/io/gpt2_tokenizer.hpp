// SPDX-License-Identifier: MIT
// Gpt2Tokenizer, GPT-2's byte-level BPE tokenizer: loading its files, encode (pre-tokenizer, word cache, merges by
// rank) and decode.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/bpe_files.hpp"
#include "prefixtune/io/bpe_model.hpp"
#include "prefixtune/io/byte_unicode_map.hpp"
#include "prefixtune/io/pretokenize.hpp"
#include "prefixtune/io/utf8.hpp"

namespace prefixtune {

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
