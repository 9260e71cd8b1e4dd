// SPDX-License-Identifier: MIT
// Fuzz target: our own files for a tiny model: a merged prefix file (load_prefix) when the first byte is even, a
// training checkpoint (encoder weights, AdamW state, metadata) loaded for resuming when it is odd.
#include <prefixtune/prefix/prefix_io.hpp>
#include <prefixtune/train/trainer.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(prefix_files) {
  using namespace prefixtune;
  if (size == 0) return;
  const std::string path = prefixtune_fuzz::write_scratch(
      "file.safetensors", std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  Gpt2Config c;
  c.n_layer = 2, c.n_embd = 8, c.n_head = 2, c.vocab_size = 16, c.n_positions = 16;
  prefixtune_fuzz::expect_ok_or_error([&] {
    if ((data[0] & 1) == 0) {
      const auto p = load_prefix<float>(path, c);
      FUZZ_CHECK(p.table.value().size(1) == 2 * c.n_layer * c.n_embd);
    } else {
      PrefixConfig pc;
      pc.length = 3, pc.mid = 4;
      Rng rng(1);
      auto enc = PrefixEncoder<float>::create(pc, c, rng);
      AdamW<float> opt(enc.parameters());
      const std::int64_t step = detail::load_checkpoint(path, enc.parameters(), opt, 7);
      FUZZ_CHECK(step >= 0);
    }
  });
}
