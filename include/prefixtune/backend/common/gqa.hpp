// SPDX-License-Identifier: MIT
// The sizes the grouped-query attention input kernels of every device take (the Llama family): how one fused q|k|v
// projection row is split into heads, normalized per head (Qwen3), rotated and laid out for attention. The CPU
// kernels are in cpu/gqa.hpp, the CUDA ones in cuda/gqa.cuh.
#pragma once

#include <cstdint>

namespace prefixtune::detail {

/// N tokens whose projection rows are [q: NH heads | k: KVH heads | v: KVH heads] of HD channels each (KVH divides
/// NH). eps is the per-head RMSNorm's epsilon (used only with norm weights). expand: the output repeats every K/V
/// head for its NH / KVH query heads, rows [q | k | v] of NH heads each (what the multi-head attention kernels
/// read); otherwise the output keeps the input's layout (what a KV cache of KVH heads stores).
struct GqaDims {
  std::int64_t N = 0, NH = 0, KVH = 0, HD = 0;
  double eps = 0;
  bool expand = true;
  std::int64_t group() const { return NH / KVH; }
  std::int64_t reps() const { return expand ? group() : 1; }  // output copies of each K (and V) head
  std::int64_t in_width() const { return (NH + 2 * KVH) * HD; }
  std::int64_t out_heads() const { return KVH * reps(); }  // K (and V) heads per output row
  std::int64_t out_width() const { return (NH + 2 * out_heads()) * HD; }
};

}  // namespace prefixtune::detail
