// SPDX-License-Identifier: MIT
// The BPE model of the GPT-2 tokenizer: vocabulary and merge table (BpeModel, BpePairTable), the thread-safe word
// cache (BpeCache), and bpe_word, the merges by rank that turn one pre-tokenized word into ids.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace prefixtune {

namespace detail {

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

}  // namespace detail

}  // namespace prefixtune
