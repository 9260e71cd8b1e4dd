// SPDX-License-Identifier: MIT
// Fuzz target: a PEFT prefix-tuning adapter folder (adapter_config.json, then "\n--8<--\n", then
// adapter_model.safetensors) imported for a tiny model.
#include <prefixtune/models/gpt2_config.hpp>
#include <prefixtune/prefix/prefix_io.hpp>

#include <filesystem>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(peft) {
  using namespace prefixtune;
  const auto [config, weights] = prefixtune_fuzz::split_two(data, size);
  std::filesystem::create_directories(prefixtune_fuzz::scratch_dir() / "adapter");
  prefixtune_fuzz::write_scratch("adapter/adapter_config.json", config);
  prefixtune_fuzz::write_scratch("adapter/adapter_model.safetensors", weights);
  Gpt2Config c;
  c.n_layer = 2, c.n_embd = 8, c.n_head = 2, c.vocab_size = 16, c.n_positions = 16;
  prefixtune_fuzz::expect_ok_or_error([&] {
    const auto p = import_peft<float>((prefixtune_fuzz::scratch_dir() / "adapter").string(), c);
    FUZZ_CHECK(p.table.value().rank() == 2 && p.table.value().size(1) == 2 * c.n_layer * c.n_embd);
  });
}
