// SPDX-License-Identifier: MIT
// Fuzz target: a HuggingFace GPT-2 config.json read and validated by load_gpt2_config.
#include <prefixtune/models/gpt2_io.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(gpt2_config) {
  using namespace prefixtune;
  prefixtune_fuzz::write_scratch("config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  prefixtune_fuzz::expect_ok_or_error([&] {
    const Gpt2Config c = load_gpt2_config(prefixtune_fuzz::scratch_dir().string());
    FUZZ_CHECK(c.n_layer >= 1 && c.n_head >= 1 && c.n_embd >= 1 && c.n_embd % c.n_head == 0);
    FUZZ_CHECK(c.vocab_size >= 1 && c.n_positions >= 1);
  });
}
