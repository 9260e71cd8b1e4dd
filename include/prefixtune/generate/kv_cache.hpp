// SPDX-License-Identifier: MIT
// KvCache: the keys and values of the real tokens of every row (slot) being decoded, per layer, kept apart from
// the prefixes (which stay in the PrefixBank and are read by index, never copied), for any model's stack (a
// KvShape); and what every model's cached step shares: packing a step's rows, binding their bank prefixes, and
// gathering each row's last state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/ops/cached_attention.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"

namespace prefixtune {

/// Per layer (slots, KVH, capacity, HD) keys and values of real tokens; each slot remembers how many tokens it
/// holds and which bank prefix (kNoPrefix = none) its tokens attend to.
template <class T, class Device = Cpu>
class KvCache {
 public:
  KvCache() = default;

  /// A cache for any causal stack (a GPT-2 config converts to its KvShape; BART's decoder_kv_shape()): `slots`
  /// rows of `capacity` tokens each, at most the stack's context.
  KvCache(const KvShape& shape, std::int64_t slots, std::int64_t capacity) : shape_(shape), capacity_(capacity) {
    PREFIXTUNE_CHECK(slots >= 1 && capacity >= 1, "KvCache: slots (", slots, ") and capacity (", capacity,
                     ") must be >= 1");
    PREFIXTUNE_CHECK(capacity <= shape.positions, "KvCache: capacity ", capacity, " exceeds the model's context of ",
                     shape.positions, " positions");
    const Shape s{slots, shape.kv_heads, capacity, shape.head_dim};
    for (std::int64_t l = 0; l < shape.layers; ++l) {
      k_.push_back(Tensor<T, Device>(s));
      v_.push_back(Tensor<T, Device>(s));
    }
    length_.assign(static_cast<std::size_t>(slots), 0);
    prefix_.assign(static_cast<std::size_t>(slots), kNoPrefix);
    from_.assign(static_cast<std::size_t>(slots), 0);
  }

  std::int64_t slots() const { return static_cast<std::int64_t>(length_.size()); }
  std::int64_t capacity() const { return capacity_; }
  std::int64_t length(std::int64_t slot) const { return length_.at(static_cast<std::size_t>(slot)); }
  std::int64_t prefix(std::int64_t slot) const { return prefix_.at(static_cast<std::size_t>(slot)); }
  /// The stack this cache was made for.
  const KvShape& shape() const { return shape_; }
  /// The sizes the cached-attention kernels read for a model with `query_heads` query heads (a positive multiple of
  /// the cache's kv_heads: grouped-query attention when larger): heads, K/V heads, head size, capacity.
  detail::CachedAttentionDims dims(std::int64_t query_heads) const {
    PREFIXTUNE_CHECK(query_heads >= 1 && shape_.kv_heads >= 1 && query_heads % shape_.kv_heads == 0,
                     "KvCache: ", query_heads, " query heads must be a positive multiple of the cache's ",
                     shape_.kv_heads, " kv_heads");
    return {query_heads, shape_.kv_heads, shape_.head_dim, capacity_};
  }
  /// The same for as many query heads as K/V heads (GPT-2, BART).
  detail::CachedAttentionDims dims() const { return dims(shape_.kv_heads); }
  Tensor<T, Device>& k(std::int64_t l) { return k_.at(static_cast<std::size_t>(l)); }
  Tensor<T, Device>& v(std::int64_t l) { return v_.at(static_cast<std::size_t>(l)); }

  /// Empties `slot` and binds it to bank prefix `prefix_index` (kNoPrefix: none), seen by the tokens at index >=
  /// `visible_from` (0: all; an infix: the last prompt token, see PrefixBank::visible_from).
  void reset(std::int64_t slot, std::int64_t prefix_index, std::int64_t visible_from = 0) {
    check_slot(slot);
    PREFIXTUNE_CHECK(visible_from >= 0, "KvCache: visible_from ", visible_from, " must be >= 0");
    length_[static_cast<std::size_t>(slot)] = 0;
    prefix_[static_cast<std::size_t>(slot)] = prefix_index;
    from_[static_cast<std::size_t>(slot)] = visible_from;
  }
  std::int64_t visible_from(std::int64_t slot) const { return from_.at(static_cast<std::size_t>(slot)); }

  /// Makes slot dst a copy of slot src (its tokens, length and prefix).
  void copy_slot(std::int64_t dst, std::int64_t src) {
    check_slot(dst);
    check_slot(src);
    if (dst == src) return;
    const std::int64_t n = length_[static_cast<std::size_t>(src)];
    for (std::size_t l = 0; l < k_.size(); ++l) {
      cache_copy_slot(dims(), k_[l], dst, src, n);
      cache_copy_slot(dims(), v_[l], dst, src, n);
    }
    length_[static_cast<std::size_t>(dst)] = n;
    prefix_[static_cast<std::size_t>(dst)] = prefix_[static_cast<std::size_t>(src)];
    from_[static_cast<std::size_t>(dst)] = from_[static_cast<std::size_t>(src)];
  }

  /// Records that `count` tokens were appended to slot (done by a model's cached step after all layers).
  void advance(std::int64_t slot, std::int64_t count) { length_.at(static_cast<std::size_t>(slot)) += count; }

  void check_slot(std::int64_t slot) const {
    PREFIXTUNE_CHECK(slot >= 0 && slot < slots(), "KvCache: slot ", slot, " is out of range [0, ", slots(), ")");
  }

 private:
  KvShape shape_{};
  std::int64_t capacity_ = 0;
  std::vector<Tensor<T, Device>> k_, v_;
  std::vector<std::int64_t> length_, prefix_, from_;
};

namespace detail {

/// The position of the token at `index` in a slot bound to bank entry pi, seen from index `from` on.
template <class T, class Device>
std::int64_t token_position(const PrefixBank<T, Device>& bank, std::int64_t pi, std::int64_t from, std::int64_t index) {
  if (bank.infix(pi)) return index + (index >= from ? bank.length(pi) : 0);
  return bank.position_offset(pi) + index;
}

/// The new tokens of one cached step, packed: every row's CachedAttentionRow (slot, past, count, first, prefix
/// length and visibility; prefix pointers are bound per layer by bind_prefix) and the ids and positions of all
/// N tokens.
template <class T>
struct CachedStep {
  std::vector<CachedAttentionRow<T>> rows;
  Tensor<std::int32_t, Cpu> ids, pos;
  std::int64_t tokens = 0;
};

/// Checks and packs tokens[r] for cache slot slots[r]: the slot in range and listed once, >= 1 token, its bank
/// prefix valid, room in the cache and positions below `positions` (position(slot, index) is the position of the
/// token at `index` of a slot), every id in [0, vocab_size). Errors start with `op` and name the row.
template <class T, class Device, class Position>
CachedStep<T> pack_cached_step(const char* op, const KvCache<T, Device>& cache, const PrefixBank<T, Device>& bank,
                               const std::vector<std::int64_t>& slots,
                               const std::vector<std::vector<std::int32_t>>& tokens, std::int64_t vocab_size,
                               std::int64_t positions, Position position) {
  PREFIXTUNE_CHECK(slots.size() == tokens.size() && !slots.empty(), op, ": ", slots.size(), " slots for ",
                   tokens.size(), " token rows (need the same number, >= 1)");
  const auto R = static_cast<std::int64_t>(slots.size());
  CachedStep<T> step;
  step.rows.resize(static_cast<std::size_t>(R));
  std::vector<char> seen(static_cast<std::size_t>(cache.slots()), 0);
  for (std::int64_t r = 0; r < R; ++r) {
    const std::int64_t s = slots[static_cast<std::size_t>(r)];
    cache.check_slot(s);
    PREFIXTUNE_CHECK(!seen[static_cast<std::size_t>(s)], op, ": slot ", s, " is listed twice");
    seen[static_cast<std::size_t>(s)] = 1;
    const auto n = static_cast<std::int64_t>(tokens[static_cast<std::size_t>(r)].size());
    PREFIXTUNE_CHECK(n >= 1, op, ": row ", r, " has no tokens");
    const std::int64_t pi = cache.prefix(s), past = cache.length(s);
    bank.check_index(pi, op);
    const std::int64_t last_pos = position(s, past + n - 1);
    PREFIXTUNE_CHECK(past + n <= cache.capacity() && last_pos < positions, op, ": row ", r, " would hold ", past + n,
                     " tokens (positions up to ", last_pos, "), more than the cache capacity ", cache.capacity(),
                     " or the model's context (positions < ", positions, ")");
    auto& w = step.rows[static_cast<std::size_t>(r)];
    w.slot = s, w.past = past, w.count = n, w.first = step.tokens, w.prefix_len = bank.length(pi);
    w.prefix_from = cache.visible_from(s);
    step.tokens += n;
  }
  step.ids = Tensor<std::int32_t, Cpu>::empty(Shape{step.tokens});
  step.pos = Tensor<std::int32_t, Cpu>::empty(Shape{step.tokens});
  for (std::int64_t r = 0; r < R; ++r) {
    const auto& w = step.rows[static_cast<std::size_t>(r)];
    for (std::int64_t j = 0; j < w.count; ++j) {
      const std::int32_t id = tokens[static_cast<std::size_t>(r)][static_cast<std::size_t>(j)];
      PREFIXTUNE_CHECK(id >= 0 && id < vocab_size, op, ": row ", r, " token ", j, " has id ", id,
                       ", outside the vocabulary [0, ", vocab_size, ")");
      step.ids.data()[w.first + j] = id;
      step.pos.data()[w.first + j] = static_cast<std::int32_t>(position(w.slot, w.past + j));
    }
  }
  return step;
}

/// Points every row at layer l's K/V of its slot's bank prefix (null for none).
template <class T, class Device>
void bind_prefix(std::vector<CachedAttentionRow<T>>& rows, const KvCache<T, Device>& cache,
                 const PrefixBank<T, Device>& bank, std::int64_t l) {
  for (auto& w : rows) {
    const std::int64_t pi = cache.prefix(w.slot);
    w.prefix_k = pi == kNoPrefix ? nullptr : bank.k(pi, l).data();
    w.prefix_v = pi == kNoPrefix ? nullptr : bank.v(pi, l).data();
  }
}

/// The states (R, C) of every row's last new token, gathered from x (N, C).
template <class T, class Device>
Tensor<T, Device> last_token_states(const Tensor<T, Device>& x, const std::vector<CachedAttentionRow<T>>& rows) {
  const auto R = static_cast<std::int64_t>(rows.size());
  Tensor<T, Device> last({R, x.size(1)});
  for (std::int64_t r = 0; r < R; ++r) {
    const auto& w = rows[static_cast<std::size_t>(r)];
    last.rows(r, r + 1).copy_from(x.rows(w.first + w.count - 1, w.first + w.count));
  }
  return last;
}

}  // namespace detail

}  // namespace prefixtune
