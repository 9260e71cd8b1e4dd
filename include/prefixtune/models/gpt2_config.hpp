// SPDX-License-Identifier: MIT
// Gpt2Config: the hyper-parameters of a GPT-2-family model, read from a HuggingFace config.json.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/models/kv_shape.hpp"

namespace prefixtune {

/// The fields of HuggingFace's GPT2Config that the forward pass depends on.
struct Gpt2Config {
  std::int64_t n_layer = 12;
  std::int64_t n_head = 12;
  std::int64_t n_embd = 768;
  std::int64_t n_positions = 1024;
  std::int64_t vocab_size = 50257;
  double layer_norm_epsilon = 1e-5;

  std::int64_t head_size() const { return n_embd / n_head; }

  /// The K/V a prefix fills: n_layer layers of n_head heads of head_size(), positions shifted by the prefix.
  KvShape kv_shape() const { return KvShape{n_layer, n_head, head_size(), n_positions, true}; }
  /// A GPT-2 config stands for its one stack wherever a KvShape is asked for (PrefixBank, prefix files, ...).
  operator KvShape() const { return kv_shape(); }  // NOLINT(google-explicit-constructor)

  /// GPT-2 small (124M parameters).
  static Gpt2Config gpt2_small() { return Gpt2Config{}; }

  /// Throws an Error naming `where` (a file) unless every field is usable.
  void validate(const std::string& where) const {
    PREFIXTUNE_CHECK(n_layer >= 1 && n_layer <= 1024, where, ": n_layer=", n_layer, " is out of range");
    PREFIXTUNE_CHECK(n_head >= 1 && n_embd >= 1 && n_embd <= (1 << 16), where, ": n_head=", n_head,
                     " / n_embd=", n_embd, " out of range");
    PREFIXTUNE_CHECK(n_embd % n_head == 0, where, ": n_embd=", n_embd, " is not divisible by n_head=", n_head);
    PREFIXTUNE_CHECK(n_positions >= 1 && n_positions <= (1 << 20), where, ": n_positions=", n_positions,
                     " is out of range");
    PREFIXTUNE_CHECK(vocab_size >= 1 && vocab_size <= (1 << 24), where, ": vocab_size=", vocab_size,
                     " is out of range");
    PREFIXTUNE_CHECK(layer_norm_epsilon > 0 && layer_norm_epsilon < 1, where,
                     ": layer_norm_epsilon=", layer_norm_epsilon, " is out of range");
  }

  /// Reads a parsed config.json; `where` names the file in errors. Missing optional fields keep GPT-2 defaults
  /// as HuggingFace does; an activation other than gelu_new, or a non-GPT-2 model_type, is refused.
  static Gpt2Config from_json(const nlohmann::json& j, const std::string& where) {
    PREFIXTUNE_CHECK(j.is_object(), where, ": config must be a JSON object");
    Gpt2Config c;
    auto get_int = [&](const char* key, std::int64_t& out) { detail::json_optional_int(j, key, where, out); };
    get_int("n_layer", c.n_layer);
    get_int("n_head", c.n_head);
    get_int("n_embd", c.n_embd);
    get_int("n_positions", c.n_positions);
    get_int("vocab_size", c.vocab_size);
    if (j.contains("layer_norm_epsilon")) {
      PREFIXTUNE_CHECK(j["layer_norm_epsilon"].is_number(), where, ": 'layer_norm_epsilon' must be a number");
      c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
    }
    if (j.contains("model_type")) {
      PREFIXTUNE_CHECK(j["model_type"] == "gpt2", where, ": model_type ", j["model_type"].dump(),
                       " is not a GPT-2 model",
                       j["model_type"] == "bart" ? " (a BART folder: load it with load_bart)" : "");
    }
    if (j.contains("activation_function")) {
      PREFIXTUNE_CHECK(j["activation_function"] == "gelu_new", where, ": activation_function ",
                       j["activation_function"].dump(), " is not supported (GPT-2 uses gelu_new)");
    }
    c.validate(where);
    return c;
  }

  /// The HuggingFace config.json fields for this model (loadable by transformers' GPT2LMHeadModel).
  nlohmann::json to_json() const {
    return {{"model_type", "gpt2"},
            {"architectures", {"GPT2LMHeadModel"}},
            {"n_layer", n_layer},
            {"n_head", n_head},
            {"n_embd", n_embd},
            {"n_positions", n_positions},
            {"n_ctx", n_positions},
            {"vocab_size", vocab_size},
            {"layer_norm_epsilon", layer_norm_epsilon},
            {"activation_function", "gelu_new"},
            {"resid_pdrop", 0.1},
            {"embd_pdrop", 0.1},
            {"attn_pdrop", 0.1},
            {"tie_word_embeddings", true},
            {"bos_token_id", 50256},
            {"eos_token_id", 50256}};
  }
};

}  // namespace prefixtune
