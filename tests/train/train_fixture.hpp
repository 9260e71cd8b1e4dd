// SPDX-License-Identifier: MIT
// A tiny random GPT-2 with weights large enough for a prefix to move its logits, and a synthetic copy task
// ("source <eot> source <eot>"), shared by the trainer and variant tests.
#pragma once

#include <vector>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune::test {

inline constexpr std::int32_t kEot = 49;

// "source <eot> target <eot>" where the target repeats the source: something a prefix can learn quickly.
inline std::vector<Example> copy_task(std::size_t n, Rng& rng) {
  std::vector<Example> out;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t len = 2 + rng.below(3);
    std::vector<std::int32_t> src;
    for (std::size_t j = 0; j < len; ++j) src.push_back(static_cast<std::int32_t>(rng.below(8)));
    out.push_back(example_from_ids(src, src, kEot, i + 1));
  }
  return out;
}

template <class T>
struct BasicSetup {
  Gpt2<T> model;
  std::vector<Example> train, valid;
  PrefixConfig pc;
  BasicSetup() {
    Rng rng(100);
    Gpt2Config c;
    c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.n_positions = 32, c.vocab_size = 50;
    model = random_gpt2<T>(c, rng);
    // Larger weights than GPT-2's N(0, 0.02) so that a prefix can move the logits of a random model.
    for (auto& b : model.h)
      for (Tensor<T>* w : {&b.attn_w, &b.attn_proj_w, &b.fc_w, &b.mlp_proj_w}) fill_normal(*w, rng, 0.0, 0.3);
    fill_normal(model.wte, rng, 0.0, 1.0);
    train = copy_task(40, rng);
    valid = copy_task(10, rng);
    pc.length = 3;
    pc.mid = 16;
  }
  PrefixEncoder<T> fresh_encoder(std::uint64_t seed) const {
    Rng rng(seed);
    return PrefixEncoder<T>::create(pc, model.config, rng);
  }
};

using Setup = BasicSetup<float>;

}  // namespace prefixtune::test
