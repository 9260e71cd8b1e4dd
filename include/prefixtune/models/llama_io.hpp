// SPDX-License-Identifier: MIT
// Reading a Llama-family HuggingFace folder's configuration: config.json (either transformers layout) and, when
// present, generation_config.json, which contributes its end-of-sequence ids only (decoding is what the caller's
// GenerateConfig says).
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/models/llama_config.hpp"

namespace prefixtune {

/// Reads and validates `dir`/config.json as a Llama-family config (a GPT-2 or BART folder is refused, naming its
/// loader). When `dir`/generation_config.json exists and names eos_token_id (an id or a list, as Llama 3's
/// chat models do), those ids replace config.json's.
inline LlamaConfig load_llama_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  LlamaConfig c = LlamaConfig::from_json(read_json_file(path), path);
  const std::string gen = (std::filesystem::path(dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen)) {
    const nlohmann::json g = read_json_file(gen);
    PREFIXTUNE_CHECK(g.is_object(), gen, ": must be a JSON object");
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      c.eos_token_ids = detail::read_eos_ids(g, gen);
      c.validate(gen);
    }
  }
  return c;
}

}  // namespace prefixtune
