// SPDX-License-Identifier: MIT
// Fuzz target: a HuggingFace Llama-family config.json (llama, mistral, qwen2, qwen3; either transformers layout)
// read and validated by load_llama_config.
#include <prefixtune/models/llama_io.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(llama_config) {
  using namespace prefixtune;
  prefixtune_fuzz::write_scratch("config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  prefixtune_fuzz::expect_ok_or_error([&] {
    const LlamaConfig c = load_llama_config(prefixtune_fuzz::scratch_dir().string());
    FUZZ_CHECK(c.num_hidden_layers >= 1 && c.num_key_value_heads >= 1 &&
               c.num_attention_heads % c.num_key_value_heads == 0 && c.head_dim >= 2 && c.head_dim % 2 == 0);
    FUZZ_CHECK(c.vocab_size >= 1 && c.max_position_embeddings >= 1 && c.kv_shape().table_width() >= 1);
    for (auto id : c.eos_token_ids) FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  });
}
