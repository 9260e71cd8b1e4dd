// SPDX-License-Identifier: MIT
// BartConfig: the hyper-parameters of a BART encoder-decoder, read from a HuggingFace config.json.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/models/kv_shape.hpp"

namespace prefixtune {

/// The fields of HuggingFace's BartConfig that the forward pass depends on (defaults: facebook/bart-base).
struct BartConfig {
  std::int64_t d_model = 768;
  std::int64_t encoder_layers = 6, decoder_layers = 6;
  std::int64_t encoder_attention_heads = 12, decoder_attention_heads = 12;
  std::int64_t encoder_ffn_dim = 3072, decoder_ffn_dim = 3072;
  std::int64_t max_position_embeddings = 1024;
  std::int64_t vocab_size = 50265;
  bool scale_embedding = false;  // multiply token embeddings by sqrt(d_model)
  std::int64_t pad_token_id = 1, bos_token_id = 0, eos_token_id = 2, decoder_start_token_id = 2;
  std::int64_t forced_bos_token_id = -1;  // generation's forced first token (bart-large: 0); -1 = none
  double layer_norm_epsilon = 1e-5;       // nn.LayerNorm's default (BART has no config key for it)

  /// The K/V of the encoder's self-attention prefix; decoder_kv_shape() is that of the decoder's self-attention
  /// and of its cross-attention prefixes. BART's prefixes shift no positions.
  KvShape encoder_kv_shape() const {
    return KvShape{encoder_layers, encoder_attention_heads, d_model / encoder_attention_heads, max_position_embeddings,
                   false};
  }
  KvShape decoder_kv_shape() const {
    return KvShape{decoder_layers, decoder_attention_heads, d_model / decoder_attention_heads, max_position_embeddings,
                   false};
  }

  /// BART's learned positions start at row 2 of embed_positions (a fairseq legacy).
  static constexpr std::int64_t kPositionOffset = 2;

  /// Throws an Error naming `where` unless every field is usable.
  void validate(const std::string& where) const {
    auto in = [](std::int64_t v, std::int64_t lo, std::int64_t hi) { return v >= lo && v <= hi; };
    PREFIXTUNE_CHECK(in(d_model, 1, 1 << 16), where, ": d_model=", d_model, " is out of range");
    PREFIXTUNE_CHECK(in(encoder_layers, 1, 1024) && in(decoder_layers, 1, 1024), where,
                     ": encoder_layers=", encoder_layers, " / decoder_layers=", decoder_layers, " out of range");
    PREFIXTUNE_CHECK(in(encoder_attention_heads, 1, d_model) && d_model % encoder_attention_heads == 0 &&
                         in(decoder_attention_heads, 1, d_model) && d_model % decoder_attention_heads == 0,
                     where, ": d_model=", d_model,
                     " is not divisible by encoder_attention_heads=", encoder_attention_heads,
                     " and decoder_attention_heads=", decoder_attention_heads);
    PREFIXTUNE_CHECK(in(encoder_ffn_dim, 1, 1 << 18) && in(decoder_ffn_dim, 1, 1 << 18), where, ": ffn dims ",
                     encoder_ffn_dim, " / ", decoder_ffn_dim, " out of range");
    PREFIXTUNE_CHECK(in(max_position_embeddings, 1, 1 << 20), where,
                     ": max_position_embeddings=", max_position_embeddings, " is out of range");
    PREFIXTUNE_CHECK(in(vocab_size, 1, 1 << 24), where, ": vocab_size=", vocab_size, " is out of range");
    for (const auto& [name, id] : {std::pair<const char*, std::int64_t>{"pad_token_id", pad_token_id},
                                   {"bos_token_id", bos_token_id},
                                   {"eos_token_id", eos_token_id},
                                   {"decoder_start_token_id", decoder_start_token_id}})
      PREFIXTUNE_CHECK(in(id, 0, vocab_size - 1), where, ": ", name, "=", id, " is outside the vocabulary [0, ",
                       vocab_size, ")");
    PREFIXTUNE_CHECK(in(forced_bos_token_id, -1, vocab_size - 1), where, ": forced_bos_token_id=", forced_bos_token_id,
                     " is outside the vocabulary [0, ", vocab_size, ") (null or absent = none)");
  }

  /// The config.json HuggingFace's BartConfig reads back (post-LN, exact GELU, tied embeddings).
  nlohmann::json to_json() const {
    nlohmann::json j = {{"model_type", "bart"},
                        {"architectures", {"BartForConditionalGeneration"}},
                        {"d_model", d_model},
                        {"encoder_layers", encoder_layers},
                        {"decoder_layers", decoder_layers},
                        {"encoder_attention_heads", encoder_attention_heads},
                        {"decoder_attention_heads", decoder_attention_heads},
                        {"encoder_ffn_dim", encoder_ffn_dim},
                        {"decoder_ffn_dim", decoder_ffn_dim},
                        {"max_position_embeddings", max_position_embeddings},
                        {"vocab_size", vocab_size},
                        {"scale_embedding", scale_embedding},
                        {"activation_function", "gelu"},
                        {"normalize_before", false},
                        {"add_final_layer_norm", false},
                        {"tie_word_embeddings", true},
                        {"pad_token_id", pad_token_id},
                        {"bos_token_id", bos_token_id},
                        {"eos_token_id", eos_token_id},
                        {"decoder_start_token_id", decoder_start_token_id}};
    if (forced_bos_token_id >= 0) j["forced_bos_token_id"] = forced_bos_token_id;
    return j;
  }

  /// Reads a parsed config.json (`where` names the file): model_type must be "bart" (a GPT-2 config is refused
  /// with a pointer to load_gpt2); activation "gelu" (exact); post-LN only (normalize_before and
  /// add_final_layer_norm false, as every BART checkpoint has).
  static BartConfig from_json(const nlohmann::json& j, const std::string& where) {
    PREFIXTUNE_CHECK(j.is_object(), where, ": config must be a JSON object");
    const std::string type = j.contains("model_type") && j["model_type"].is_string()
                                 ? j["model_type"].get<std::string>()
                                 : std::string("(none)");
    PREFIXTUNE_CHECK(type == "bart", where, ": model_type '", type, "' is not a BART model",
                     type == "gpt2" ? " (a GPT-2 folder: load it with load_gpt2)" : "");
    BartConfig c;
    auto get_int = [&](const char* key, std::int64_t& out) { detail::json_optional_int(j, key, where, out); };
    get_int("d_model", c.d_model);
    get_int("encoder_layers", c.encoder_layers);
    get_int("decoder_layers", c.decoder_layers);
    get_int("encoder_attention_heads", c.encoder_attention_heads);
    get_int("decoder_attention_heads", c.decoder_attention_heads);
    get_int("encoder_ffn_dim", c.encoder_ffn_dim);
    get_int("decoder_ffn_dim", c.decoder_ffn_dim);
    get_int("max_position_embeddings", c.max_position_embeddings);
    get_int("vocab_size", c.vocab_size);
    get_int("pad_token_id", c.pad_token_id);
    get_int("bos_token_id", c.bos_token_id);
    get_int("eos_token_id", c.eos_token_id);
    get_int("decoder_start_token_id", c.decoder_start_token_id);
    get_int("forced_bos_token_id", c.forced_bos_token_id);
    if (j.contains("scale_embedding")) {
      PREFIXTUNE_CHECK(j["scale_embedding"].is_boolean(), where, ": 'scale_embedding' must be true or false");
      c.scale_embedding = j["scale_embedding"].get<bool>();
    }
    for (const char* key : {"normalize_before", "add_final_layer_norm"})
      PREFIXTUNE_CHECK(!j.contains(key) || j[key] == false, where, ": '", key,
                       "' = true (a pre-LN mBART-style model) is not supported");
    if (j.contains("activation_function"))
      PREFIXTUNE_CHECK(j["activation_function"] == "gelu", where, ": activation_function ",
                       j["activation_function"].dump(), " is not supported (BART uses \"gelu\")");
    c.validate(where);
    return c;
  }
};

}  // namespace prefixtune
