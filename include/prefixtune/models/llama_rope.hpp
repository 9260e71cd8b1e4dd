// SPDX-License-Identifier: MIT
// Rotary position embeddings of the Llama family as transformers computes them: the inverse frequencies
// 1 / theta^(2i / HD) in float32 (with Llama 3.1's "llama3" scaling when configured), and the cos / sin tables of
// given positions in HuggingFace's rotate-half layout (channel i and i + HD/2 form a pair; both halves of a row
// repeat the HD/2 angles).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/models/llama_config.hpp"

namespace prefixtune {

/// inv_freq[i], i < head_dim / 2, in float32 as transformers' rotary initialisation computes it: the exponent
/// float(2i) / float(HD), theta raised to it, its reciprocal; then, for rope type llama3, wavelengths 2*pi/inv_freq
/// above original_max_position_embeddings / low_freq_factor divided by factor, those below
/// original_max_position_embeddings / high_freq_factor kept, and the band between interpolated smoothly.
inline std::vector<float> rope_inv_freq(const RopeConfig& r, std::int64_t head_dim) {
  PREFIXTUNE_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope_inv_freq: head_dim ", head_dim, " must be even");
  PREFIXTUNE_CHECK(r.type == "default" || r.type == "llama3", "rope_inv_freq: rope type '", r.type,
                   "' is not supported");
  const std::int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<std::size_t>(half));
  const float base = static_cast<float>(r.theta), dim = static_cast<float>(head_dim);
  for (std::int64_t i = 0; i < half; ++i)
    inv[static_cast<std::size_t>(i)] = 1.0f / std::pow(base, static_cast<float>(2 * i) / dim);
  if (r.type != "llama3") return inv;
  const float factor = static_cast<float>(r.factor), low = static_cast<float>(r.low_freq_factor),
              high = static_cast<float>(r.high_freq_factor);
  const float old_len = static_cast<float>(r.original_max_position_embeddings);
  const float low_freq_wavelen = old_len / low, high_freq_wavelen = old_len / high;
  constexpr float kTwoPi = static_cast<float>(2.0 * 3.14159265358979323846);
  for (auto& f : inv) {
    const float wavelen = kTwoPi / f;
    const float scaled = wavelen > low_freq_wavelen ? f / factor : f;  // long wavelengths: interpolated by factor
    if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) {
      f = scaled;
      continue;
    }
    const float smooth = (old_len / wavelen - low) / (high - low);  // the band between: a linear blend
    f = (1.0f - smooth) * scaled / factor + smooth * scaled;
  }
  return inv;
}

/// cos and sin (n, HD) of the positions pos[0..n) in the rotate-half layout: row t holds cos(pos[t] * inv_freq[i])
/// at channels i and i + HD/2 (angles in float32, as transformers' float32 product of inv_freq and positions).
template <class T>
void rope_tables(const std::vector<float>& inv_freq, const std::vector<std::int64_t>& pos, Tensor<T, Cpu>& cos_out,
                 Tensor<T, Cpu>& sin_out) {
  const auto half = static_cast<std::int64_t>(inv_freq.size()), n = static_cast<std::int64_t>(pos.size());
  cos_out = Tensor<T, Cpu>::empty({n, 2 * half});
  sin_out = Tensor<T, Cpu>::empty({n, 2 * half});
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[static_cast<std::size_t>(t)]) * inv_freq[static_cast<std::size_t>(i)];
      const T c = static_cast<T>(std::cos(angle)), s = static_cast<T>(std::sin(angle));
      cos_out(t, i) = cos_out(t, i + half) = c;
      sin_out(t, i) = sin_out(t, i + half) = s;
    }
}

}  // namespace prefixtune
