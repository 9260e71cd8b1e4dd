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

/// inv_freq[i], i < head_dim / 2: 1 / theta^(2i / HD), then, for rope type llama3, wavelengths 2*pi/inv_freq
/// above original_max_position_embeddings / low_freq_factor divided by factor, those below
/// original_max_position_embeddings / high_freq_factor kept, and the band between interpolated smoothly
/// (transformers' formulas). Computed in double and rounded to float32 once at the end: transformers keeps
/// inv_freq in float32 (its own float32 arithmetic may differ from this by an ulp); the rounding makes the value
/// independent of the platform's pow, so the PyTorch reference reproduces it exactly.
inline std::vector<float> rope_inv_freq(const RopeConfig& r, std::int64_t head_dim) {
  PREFIXTUNE_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope_inv_freq: head_dim ", head_dim, " must be even");
  PREFIXTUNE_CHECK(r.type == "default" || r.type == "llama3", "rope_inv_freq: rope type '", r.type,
                   "' is not supported");
  const std::int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<std::size_t>(half));
  const double factor = r.factor, low = r.low_freq_factor, high = r.high_freq_factor;
  const auto old_len = static_cast<double>(r.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / low, high_freq_wavelen = old_len / high;
  constexpr double kTwoPi = 2.0 * 3.14159265358979323846;
  for (std::int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(r.theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    if (r.type == "llama3") {
      const double wavelen = kTwoPi / f;
      const double scaled = wavelen > low_freq_wavelen ? f / factor : f;  // long wavelengths: interpolated by factor
      if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) {
        f = scaled;
      } else {
        const double smooth = (old_len / wavelen - low) / (high - low);  // the band between: a linear blend
        f = (1.0 - smooth) * scaled / factor + smooth * scaled;
      }
    }
    inv[static_cast<std::size_t>(i)] = static_cast<float>(f);
  }
  return inv;
}

/// cos and sin (n, HD) of the positions pos[0..n) in the rotate-half layout: row t holds cos(pos[t] * inv_freq[i])
/// at channels i and i + HD/2, the angle and its cos / sin computed in T (float32: transformers' float32 product of
/// inv_freq and positions; double: the exact angle of the float32 frequencies).
template <class T>
void rope_tables(const std::vector<float>& inv_freq, const std::vector<std::int64_t>& pos, Tensor<T, Cpu>& cos_out,
                 Tensor<T, Cpu>& sin_out) {
  const auto half = static_cast<std::int64_t>(inv_freq.size()), n = static_cast<std::int64_t>(pos.size());
  cos_out = Tensor<T, Cpu>::empty({n, 2 * half});
  sin_out = Tensor<T, Cpu>::empty({n, 2 * half});
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      const T angle =
          static_cast<T>(pos[static_cast<std::size_t>(t)]) * static_cast<T>(inv_freq[static_cast<std::size_t>(i)]);
      const T c = std::cos(angle), s = std::sin(angle);
      cos_out(t, i) = cos_out(t, i + half) = c;
      sin_out(t, i) = sin_out(t, i + half) = s;
    }
}

}  // namespace prefixtune
