// SPDX-License-Identifier: MIT
// The sizes and per-row descriptions that the attention kernels of every device take: causal self-attention
// (AttentionDims), cross-attention (CrossAttentionDims) and attention over a KV cache (CachedAttentionRow,
// CachedAttentionDims). The CPU kernels are in cpu/{attention,cross_attention,cached_attention}.hpp, the CUDA
// kernels in cuda/{attention,cross_attention,cached_attention}.cuh.
#pragma once

#include <cstdint>

namespace prefixtune::detail {

/// Sizes of one attention call. Bp is the prefix batch: 1 = one prefix shared by every row, or B.
/// prefix_from (B int32 on the kernel's device, or null): query t of row b sees the prefix slots only when
/// t >= prefix_from[b] (an infix placed before token prefix_from[b]); null: every query sees them.
struct AttentionDims {
  std::int64_t B = 0, T = 0, C = 0, NH = 0, HS = 0, P = 0, Bp = 1;
  const std::int32_t* prefix_from = nullptr;
  std::int64_t L() const { return P + T; }  // key columns per query row: P prefix slots, then T tokens
};

/// Sizes of one cross-attention call: Tq queries over P prefix slots + Tk keys. Bp: 1 (shared prefix) or B.
struct CrossAttentionDims {
  std::int64_t B = 0, Tq = 0, Tk = 0, C = 0, NH = 0, HS = 0, P = 0, Bp = 1;
  std::int64_t L() const { return P + Tk; }  // key columns per query row
};

/// One row of a cached-attention call: `count` new tokens packed at token index `first` of qkv/out, appended to
/// cache slot `slot` after the `past` tokens it holds; its prefix K/V (KVH, prefix_len, HS) or null. Only tokens
/// at slot index >= prefix_from see the prefix (0: all; larger for an infix).
template <class T>
struct CachedAttentionRow {
  std::int64_t slot = 0, past = 0, count = 0, first = 0, prefix_len = 0, prefix_from = 0;
  const T* prefix_k = nullptr;
  const T* prefix_v = nullptr;
};

/// Sizes shared by every row: NH query heads, KVH K/V heads (KVH divides NH; query head h reads K/V head
/// h / (NH / KVH): grouped-query attention, KVH == NH for GPT-2 and BART), head size, cache capacity per slot.
/// qkv rows are [q: NH heads | k: KVH heads | v: KVH heads] of HS each; cache_k/v are (S, KVH, capacity, HS).
/// The sizes are constexpr so that CUDA kernels can call them (--expt-relaxed-constexpr).
struct CachedAttentionDims {
  std::int64_t NH = 0, KVH = 0, HS = 0, capacity = 0;
  constexpr std::int64_t C() const { return NH * HS; }                      // width of q and of the output
  constexpr std::int64_t KVC() const { return KVH * HS; }                   // width of k and of v
  constexpr std::int64_t qkv_width() const { return (NH + 2 * KVH) * HS; }  // width of a qkv row
  constexpr std::int64_t group() const { return NH / KVH; }                 // query heads per K/V head
};

}  // namespace prefixtune::detail
