// SPDX-License-Identifier: MIT
// Seq2SeqBank: many users' three-part encoder-decoder prefixes (encoder self-attention, decoder self-attention,
// decoder cross-attention), materialized once as per-layer K/V and served by one index per user.
#pragma once

#include <cstdint>
#include <string>

#include "prefixtune/models/bart_config.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"

namespace prefixtune {

/// Three PrefixBanks with one index space: entry i of each is user i's encoder / decoder / cross prefix.
template <class T, class Device = Cpu>
class Seq2SeqBank {
 public:
  Seq2SeqBank() = default;
  explicit Seq2SeqBank(const BartConfig& c)
      : config_(c), encoder_(c.encoder_kv_shape()), decoder_(c.decoder_kv_shape()), cross_(c.decoder_kv_shape()) {}

  const BartConfig& config() const { return config_; }

  /// Adds merged tables (P, 2 * layers * d_model) each (KvShape::table_width of each stack), all of one length P;
  /// returns the entry's index. `name` (may be empty) must be new. Nothing is added when any table is refused.
  template <class D>
  std::int64_t add(const Seq2SeqTables<T, D>& t, const std::string& name = "") {
    const std::string who = name.empty() ? std::string("prefix #") + std::to_string(size()) : name;
    const auto rows = [](const DirectPrefix<T, D>& p) { return p.table.defined() ? p.table.value().size(0) : -1; };
    PREFIXTUNE_CHECK(rows(t.encoder) == rows(t.decoder) && rows(t.decoder) == rows(t.cross), "Seq2SeqBank: ", who,
                     "'s encoder / decoder / cross tables have ", rows(t.encoder), " / ", rows(t.decoder), " / ",
                     rows(t.cross), " rows (they must share one length P)");
    PREFIXTUNE_CHECK(name.empty() || !encoder_.contains(name), "Seq2SeqBank: a prefix named '", name,
                     "' is already there");
    check_width(t.encoder, encoder_.shape(), who, "encoder");
    check_width(t.decoder, decoder_.shape(), who, "decoder");
    check_width(t.cross, cross_.shape(), who, "cross");
    encoder_.add(t.encoder.table.value().template to<Cpu>(), name);
    decoder_.add(t.decoder.table.value().template to<Cpu>(), name);
    return cross_.add(t.cross.table.value().template to<Cpu>(), name);
  }

  std::int64_t size() const { return encoder_.size(); }
  bool contains(const std::string& name) const { return encoder_.contains(name); }
  std::int64_t index_of(const std::string& name) const { return encoder_.index_of(name); }
  /// Prefix length P of entry i (0 for kNoPrefix).
  std::int64_t length(std::int64_t i) const { return encoder_.length(i); }
  void check_index(std::int64_t i, const char* where) const { encoder_.check_index(i, where); }

  /// Per-layer K/V (KVH, P, HD) of the encoder self-attention / decoder self-attention / cross-attention prefixes.
  const PrefixBank<T, Device>& encoder() const { return encoder_; }
  const PrefixBank<T, Device>& decoder() const { return decoder_; }
  const PrefixBank<T, Device>& cross() const { return cross_; }

 private:
  template <class D>
  void check_width(const DirectPrefix<T, D>& p, const KvShape& s, const std::string& who, const char* which) const {
    const std::int64_t layers = s.layers, want = s.table_width();
    PREFIXTUNE_CHECK(p.table.defined() && p.table.value().rank() == 2 && p.table.value().size(1) == want,
                     "Seq2SeqBank: ", who, "'s ", which, " table has shape ",
                     p.table.defined() ? p.table.value().shape().to_string() : std::string("(undefined)"),
                     ", the model needs (P, 2 * ", layers, " * ", config_.d_model, " = ", want, ")");
  }

  BartConfig config_{};
  PrefixBank<T, Device> encoder_, decoder_, cross_;
};

}  // namespace prefixtune
