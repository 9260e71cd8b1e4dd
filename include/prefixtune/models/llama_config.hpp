// SPDX-License-Identifier: MIT
// LlamaConfig: the hyper-parameters of the Llama family (model_type llama, mistral, qwen2, qwen3), read from a
// HuggingFace config.json in either layout: transformers 4.x (rope_theta, rope_scaling with "type" or
// "rope_type", torch_dtype) and 5.x (rope_parameters, dtype). What the forward pass cannot honour (another
// activation, a rope scaling other than llama3, a sliding window in use, MLP biases) is refused by name.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/models/kv_shape.hpp"

namespace prefixtune {

/// Rotary embedding settings: the base (rope_theta) and the frequency scaling, "default" (none) or "llama3"
/// (Llama 3.1+: long wavelengths divided by factor, short ones kept, the band between interpolated).
struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
};

/// The fields of HuggingFace's LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config that the forward pass
/// depends on. Defaults are transformers' LlamaConfig defaults; from_json applies each model_type's own.
struct LlamaConfig {
  std::string model_type = "llama";  // llama, mistral, qwen2 or qwen3
  std::int64_t hidden_size = 4096;   // C
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;  // query heads NH
  std::int64_t num_key_value_heads = 32;  // K/V heads KVH: NH for plain multi-head attention, fewer for GQA
  std::int64_t head_dim = 128;            // HD: C / NH unless the config says otherwise (Qwen3)
  std::int64_t max_position_embeddings = 2048;
  std::int64_t vocab_size = 32000;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool attention_bias = false;  // q/k/v/o projections with biases (llama, mistral's attention_bias)
  bool qkv_bias = false;        // q/k/v biases without one on o (Qwen2 always)
  bool qk_norm = false;         // per-head RMSNorm of queries and keys before the rotation (Qwen3)
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = -1;           // -1: none
  std::vector<std::int32_t> eos_token_ids;  // generation ends at any of them (Llama 3 lists several)

  /// Query heads per K/V head.
  std::int64_t group_size() const { return num_attention_heads / num_key_value_heads; }

  /// The K/V a prefix fills: num_key_value_heads heads of head_dim per layer (PEFT's token_dim = KVH * HD),
  /// positions shifted by the prefix as in PEFT.
  KvShape kv_shape() const {
    return KvShape{num_hidden_layers, num_key_value_heads, head_dim, max_position_embeddings, true};
  }
  operator KvShape() const { return kv_shape(); }  // NOLINT(google-explicit-constructor)

  /// Throws an Error naming `where` (a file) unless every field is usable.
  void validate(const std::string& where) const {
    auto in = [](std::int64_t v, std::int64_t lo, std::int64_t hi) { return v >= lo && v <= hi; };
    PREFIXTUNE_CHECK(in(hidden_size, 1, 1 << 16), where, ": hidden_size=", hidden_size, " is out of range");
    PREFIXTUNE_CHECK(in(intermediate_size, 1, 1 << 18), where, ": intermediate_size=", intermediate_size,
                     " is out of range");
    PREFIXTUNE_CHECK(in(num_hidden_layers, 1, 1024), where, ": num_hidden_layers=", num_hidden_layers,
                     " is out of range");
    PREFIXTUNE_CHECK(in(num_attention_heads, 1, 1024), where, ": num_attention_heads=", num_attention_heads,
                     " is out of range");
    PREFIXTUNE_CHECK(in(num_key_value_heads, 1, num_attention_heads) && num_attention_heads % num_key_value_heads == 0,
                     where, ": num_key_value_heads=", num_key_value_heads,
                     " does not divide num_attention_heads=", num_attention_heads);
    PREFIXTUNE_CHECK(in(head_dim, 2, 1 << 12) && head_dim % 2 == 0, where, ": head_dim=", head_dim,
                     " must be even and in [2, 4096] (rotary embeddings rotate pairs of channels)");
    PREFIXTUNE_CHECK(in(max_position_embeddings, 1, 1 << 22), where,
                     ": max_position_embeddings=", max_position_embeddings, " is out of range");
    PREFIXTUNE_CHECK(in(vocab_size, 1, 1 << 24), where, ": vocab_size=", vocab_size, " is out of range");
    PREFIXTUNE_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps > 0 && rms_norm_eps < 1, where,
                     ": rms_norm_eps=", rms_norm_eps, " is out of range");
    PREFIXTUNE_CHECK(std::isfinite(rope.theta) && rope.theta > 1, where, ": rope_theta=", rope.theta, " must be > 1");
    PREFIXTUNE_CHECK(rope.type == "default" || rope.type == "llama3", where, ": rope scaling type '", rope.type,
                     "' is not supported (only llama3 scaling, or none)");
    if (rope.type == "llama3") {
      PREFIXTUNE_CHECK(std::isfinite(rope.factor) && rope.factor >= 1 && std::isfinite(rope.low_freq_factor) &&
                           std::isfinite(rope.high_freq_factor) && rope.low_freq_factor > 0 &&
                           rope.high_freq_factor > rope.low_freq_factor &&
                           in(rope.original_max_position_embeddings, 1, 1 << 22),
                       where, ": llama3 rope scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and ",
                       "original_max_position_embeddings >= 1; got factor=", rope.factor,
                       " low_freq_factor=", rope.low_freq_factor, " high_freq_factor=", rope.high_freq_factor,
                       " original_max_position_embeddings=", rope.original_max_position_embeddings);
    }
    PREFIXTUNE_CHECK(bos_token_id >= -1 && bos_token_id < vocab_size, where, ": bos_token_id=", bos_token_id,
                     " is outside the vocabulary [0, ", vocab_size, ")");
    for (auto id : eos_token_ids)
      PREFIXTUNE_CHECK(id >= 0 && id < vocab_size, where, ": eos_token_id ", id, " is outside the vocabulary [0, ",
                       vocab_size, ")");
  }

  /// Reads a parsed config.json; `where` names the file in errors. Missing fields take the model_type's
  /// transformers defaults.
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& where);

  /// The config.json fields for this model in transformers 4.x's layout (which 5.x also reads).
  nlohmann::json to_json() const;
};

namespace detail {

/// The rope settings of a rope_scaling (4.x) or rope_parameters (5.x) object: its type under "rope_type" or
/// "type" ("default" when absent), and the llama3 fields.
inline void read_rope_object(const nlohmann::json& r, const char* key, const std::string& where, RopeConfig& rope) {
  if (r.is_null()) return;
  PREFIXTUNE_CHECK(r.is_object(), where, ": '", key, "' must be an object or null, got ", r.dump());
  for (const char* name : {"rope_type", "type"}) {
    if (r.contains(name) && !r[name].is_null()) {
      PREFIXTUNE_CHECK(r[name].is_string(), where, ": '", key, ".", name, "' must be a string, got ", r[name].dump());
      rope.type = r[name].get<std::string>();
      break;
    }
  }
  const std::string w = where + ": '" + key + "'";
  json_optional_number(r, "rope_theta", w, rope.theta);
  json_optional_number(r, "factor", w, rope.factor);
  json_optional_number(r, "low_freq_factor", w, rope.low_freq_factor);
  json_optional_number(r, "high_freq_factor", w, rope.high_freq_factor);
  json_optional_int(r, "original_max_position_embeddings", w, rope.original_max_position_embeddings);
}

/// eos_token_id: an integer, a list of integers, or null / absent (none).
inline std::vector<std::int32_t> read_eos_ids(const nlohmann::json& j, const std::string& where) {
  std::vector<std::int32_t> ids;
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return ids;
  const nlohmann::json& e = j["eos_token_id"];
  auto one = [&](const nlohmann::json& v) {
    PREFIXTUNE_CHECK(v.is_number_integer() && v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() < (1 << 24), where,
                     ": 'eos_token_id' must be a token id or a list of them, got ", e.dump());
    ids.push_back(static_cast<std::int32_t>(v.get<std::int64_t>()));
  };
  if (e.is_array()) {
    for (const auto& v : e) one(v);
  } else {
    one(e);
  }
  return ids;
}

}  // namespace detail

inline LlamaConfig LlamaConfig::from_json(const nlohmann::json& j, const std::string& where) {
  PREFIXTUNE_CHECK(j.is_object(), where, ": config must be a JSON object");
  PREFIXTUNE_CHECK(j.contains("model_type") && j["model_type"].is_string(), where,
                   ": 'model_type' is missing (expected llama, mistral, qwen2 or qwen3)");
  LlamaConfig c;
  c.model_type = j["model_type"].get<std::string>();
  const std::string& t = c.model_type;
  PREFIXTUNE_CHECK(t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3", where, ": model_type \"", t,
                   "\" is not a Llama-family model (llama, mistral, qwen2, qwen3)",
                   t == "gpt2"   ? " (a GPT-2 folder: load it with load_gpt2)"
                   : t == "bart" ? " (a BART folder: load it with load_bart)"
                                 : "");
  // Each family's transformers defaults where they differ from LlamaConfig's.
  if (t == "mistral") {
    c.intermediate_size = 14336, c.max_position_embeddings = 4096 * 32;
  } else if (t == "qwen2" || t == "qwen3") {
    c.vocab_size = 151936, c.intermediate_size = 22016, c.max_position_embeddings = 32768;
    c.qkv_bias = t == "qwen2";  // Qwen2's q/k/v projections always carry biases
    c.qk_norm = t == "qwen3";
  }
  auto get_int = [&](const char* key, std::int64_t& out) { detail::json_optional_int(j, key, where, out); };
  get_int("hidden_size", c.hidden_size);
  get_int("intermediate_size", c.intermediate_size);
  get_int("num_hidden_layers", c.num_hidden_layers);
  get_int("num_attention_heads", c.num_attention_heads);
  // Absent: the family's default (Llama: as many as the query heads; Mistral 8; Qwen 32); null: no grouping.
  c.num_key_value_heads =
      !j.contains("num_key_value_heads") && t != "llama" ? (t == "mistral" ? 8 : 32) : c.num_attention_heads;
  get_int("num_key_value_heads", c.num_key_value_heads);
  PREFIXTUNE_CHECK(c.num_attention_heads >= 1, where, ": num_attention_heads=", c.num_attention_heads,
                   " is out of range");
  c.head_dim = t == "qwen3" ? 128 : c.hidden_size / c.num_attention_heads;
  get_int("head_dim", c.head_dim);  // null (Mistral's default): hidden_size / num_attention_heads
  get_int("max_position_embeddings", c.max_position_embeddings);
  get_int("vocab_size", c.vocab_size);
  get_int("bos_token_id", c.bos_token_id);
  detail::json_optional_number(j, "rms_norm_eps", where, c.rms_norm_eps);
  detail::json_optional_bool(j, "tie_word_embeddings", where, c.tie_word_embeddings);
  if (t == "llama" || t == "qwen3") detail::json_optional_bool(j, "attention_bias", where, c.attention_bias);
  if (j.contains("hidden_act") && !j["hidden_act"].is_null())
    PREFIXTUNE_CHECK(j["hidden_act"] == "silu", where, ": hidden_act ", j["hidden_act"].dump(),
                     " is not supported (the Llama family's MLP uses silu)");
  bool mlp_bias = false;
  detail::json_optional_bool(j, "mlp_bias", where, mlp_bias);
  PREFIXTUNE_CHECK(!mlp_bias, where,
                   ": mlp_bias=true is not supported (no released checkpoint of these families uses it)");
  // Rotary settings: 4.x puts rope_theta at the top and the scaling in rope_scaling; 5.x both in rope_parameters.
  detail::json_optional_number(j, "rope_theta", where, c.rope.theta);
  if (j.contains("rope_scaling")) detail::read_rope_object(j["rope_scaling"], "rope_scaling", where, c.rope);
  if (j.contains("rope_parameters")) detail::read_rope_object(j["rope_parameters"], "rope_parameters", where, c.rope);
  c.eos_token_ids = detail::read_eos_ids(j, where);
  // A sliding window in use changes which tokens attend to which: not implemented, so refused.
  std::int64_t window = t == "llama" ? -1 : 4096;  // transformers' default when the key is absent
  if (j.contains("sliding_window")) window = j["sliding_window"].is_null() ? -1 : window;
  get_int("sliding_window", window);
  bool use_window = t == "mistral";  // Mistral applies its window whenever one is set
  detail::json_optional_bool(j, "use_sliding_window", where, use_window);
  PREFIXTUNE_CHECK(!(use_window && window >= 1 && window < c.max_position_embeddings), where,
                   ": sliding_window=", window,
                   " is in use (shorter than max_position_embeddings=", c.max_position_embeddings,
                   "): sliding-window attention is not supported");
  c.validate(where);
  return c;
}

inline nlohmann::json LlamaConfig::to_json() const {
  static const std::map<std::string, std::string> kArchitecture = {{"llama", "LlamaForCausalLM"},
                                                                   {"mistral", "MistralForCausalLM"},
                                                                   {"qwen2", "Qwen2ForCausalLM"},
                                                                   {"qwen3", "Qwen3ForCausalLM"}};
  const auto arch = kArchitecture.find(model_type);
  PREFIXTUNE_CHECK(arch != kArchitecture.end(), "LlamaConfig::to_json: model_type '", model_type,
                   "' is not llama, mistral, qwen2 or qwen3");
  nlohmann::json j = {{"model_type", model_type},
                      {"architectures", {arch->second}},
                      {"hidden_size", hidden_size},
                      {"intermediate_size", intermediate_size},
                      {"num_hidden_layers", num_hidden_layers},
                      {"num_attention_heads", num_attention_heads},
                      {"num_key_value_heads", num_key_value_heads},
                      {"head_dim", head_dim},
                      {"max_position_embeddings", max_position_embeddings},
                      {"vocab_size", vocab_size},
                      {"rms_norm_eps", rms_norm_eps},
                      {"rope_theta", rope.theta},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", tie_word_embeddings},
                      {"torch_dtype", "float32"}};
  if (rope.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope.factor},
                         {"low_freq_factor", rope.low_freq_factor},
                         {"high_freq_factor", rope.high_freq_factor},
                         {"original_max_position_embeddings", rope.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (model_type == "qwen2" || model_type == "qwen3") j["use_sliding_window"] = false;
  if (model_type == "mistral") j["sliding_window"] = nullptr;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
  return j;
}

}  // namespace prefixtune
