// SPDX-License-Identifier: MIT
// PrefixBank: many users' merged prefixes, materialized once as per-layer K/V (KVH, P, HD), served by index.
// Generation reads a per-row index into the bank, so one batch serves many users without copying prefix K/V.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/prefix/kv_table.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune {

/// The index of "no prefix" in a PrefixBank.
inline constexpr std::int64_t kNoPrefix = -1;

template <class T, class Device = Cpu>
class PrefixBank {
 public:
  PrefixBank() = default;
  /// A bank for one attention stack (a model config converts to its KvShape).
  explicit PrefixBank(const KvShape& shape) : shape_(shape) {}

  const KvShape& shape() const { return shape_; }

  /// Adds a merged prefix table (P, 2*L*KVH*HD) (PEFT's prompt_embeddings layout) and returns its index. `name`
  /// (may be empty) must be new; position_offset is the position of the first real token: -1 = the stack's rule
  /// (P for GPT-2 as in the paper and PEFT, 0 for BART), or a position.
  /// A Placement::Infix entry is seen only from the last prompt token on (the separator before the target), and
  /// that token and the generated ones take positions P further (position_offset must be -1).
  std::int64_t add(const Tensor<T, Cpu>& table, const std::string& name = "", std::int64_t position_offset = -1,
                   Placement placement = Placement::Prefix) {
    const KvShape& s = shape_;
    const std::string who = name.empty() ? std::string("prefix #") + std::to_string(entries_.size()) : name;
    PREFIXTUNE_CHECK(table.defined() && table.rank() == 2 && table.size(0) >= 1 && table.size(1) == s.table_width(),
                     "PrefixBank: ", who, " has shape ",
                     table.defined() ? table.shape().to_string() : std::string("(undefined)"),
                     ", the model needs (P >= 1, 2 * layers * kv_heads * head_dim = ", s.table_width(), ")");
    PREFIXTUNE_CHECK(name.empty() || !by_name_.count(name), "PrefixBank: a prefix named '", name, "' is already there");
    const std::int64_t P = table.size(0);
    Entry e;
    e.name = name;
    e.length = P;
    PREFIXTUNE_CHECK(placement == Placement::Prefix || position_offset < 0, "PrefixBank: ", who,
                     " is an infix: position_offset does not apply");
    e.infix = placement == Placement::Infix;
    e.offset = e.infix ? P : s.first_position(P, position_offset);  // an infix takes P positions too
    PREFIXTUNE_CHECK(e.offset < s.positions, "PrefixBank: ", who, " puts the first token at position ", e.offset,
                     " but the model has n_positions = ", s.positions);
    NoGradGuard no_grad;
    Tape<T, Cpu> tape;
    const PrefixKv<T, Cpu> kv = prefix_kv_from_table(tape, Var<T, Cpu>(table), s);
    for (std::int64_t l = 0; l < s.layers; ++l) {
      const auto i = static_cast<std::size_t>(l);
      e.k.push_back(kv.k[i].value().reshape({s.kv_heads, P, s.head_dim}).template to<Device>());
      e.v.push_back(kv.v[i].value().reshape({s.kv_heads, P, s.head_dim}).template to<Device>());
    }
    if (!name.empty()) by_name_[name] = static_cast<std::int64_t>(entries_.size());
    entries_.push_back(std::move(e));
    return static_cast<std::int64_t>(entries_.size()) - 1;
  }

  /// Adds a merged DirectPrefix at its own placement; position_offset -1 takes the prefix's own.
  template <class D>
  std::int64_t add(const DirectPrefix<T, D>& prefix, const std::string& name = "", std::int64_t position_offset = -1) {
    return add(prefix.table.value().template to<Cpu>(), name,
               position_offset < 0 ? prefix.position_offset : position_offset, prefix.placement);
  }

  std::int64_t size() const { return static_cast<std::int64_t>(entries_.size()); }
  bool contains(const std::string& name) const { return by_name_.count(name) != 0; }

  /// The index of the prefix called `name`, or an Error.
  std::int64_t index_of(const std::string& name) const {
    auto it = by_name_.find(name);
    PREFIXTUNE_CHECK(it != by_name_.end(), "PrefixBank: no prefix named '", name, "'");
    return it->second;
  }

  /// Prefix length P of entry i (0 for kNoPrefix).
  std::int64_t length(std::int64_t i) const { return i == kNoPrefix ? 0 : entry(i).length; }
  /// Position of the first real token for entry i (0 for kNoPrefix); for an infix, the positions it takes (P).
  std::int64_t position_offset(std::int64_t i) const { return i == kNoPrefix ? 0 : entry(i).offset; }
  /// Whether entry i is an infix (seen from the last prompt token on); false for kNoPrefix.
  bool infix(std::int64_t i) const { return i != kNoPrefix && entry(i).infix; }
  /// The first token index (in a request's prompt + generated tokens) that sees entry i: 0 for a prefix, the
  /// last prompt token for an infix.
  std::int64_t visible_from(std::int64_t i, std::size_t prompt_length) const {
    return infix(i) && prompt_length > 0 ? static_cast<std::int64_t>(prompt_length) - 1 : 0;
  }
  const std::string& name(std::int64_t i) const { return entry(i).name; }
  /// Layer l's keys / values (KVH, P, HD) of entry i.
  const Tensor<T, Device>& k(std::int64_t i, std::int64_t l) const {
    return entry(i).k.at(static_cast<std::size_t>(l));
  }
  const Tensor<T, Device>& v(std::int64_t i, std::int64_t l) const {
    return entry(i).v.at(static_cast<std::size_t>(l));
  }

  /// Throws unless i is kNoPrefix or a valid index; `where` names the caller.
  void check_index(std::int64_t i, const char* where) const {
    PREFIXTUNE_CHECK(i == kNoPrefix || (i >= 0 && i < size()), where, ": prefix index ", i,
                     " is not in the bank (size ", size(), "; -1 = no prefix)");
  }

 private:
  struct Entry {
    std::string name;
    std::int64_t length = 0, offset = 0;
    bool infix = false;
    std::vector<Tensor<T, Device>> k, v;
  };
  const Entry& entry(std::int64_t i) const {
    check_index(i, "PrefixBank");
    PREFIXTUNE_CHECK(i != kNoPrefix, "PrefixBank: entry -1 (no prefix) has no K/V");
    return entries_[static_cast<std::size_t>(i)];
  }
  KvShape shape_{};
  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::int64_t> by_name_;
};

}  // namespace prefixtune
