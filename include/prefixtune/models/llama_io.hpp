// SPDX-License-Identifier: MIT
// Llama-family HuggingFace folders: the configuration (config.json in either transformers layout; when present,
// generation_config.json, which contributes its end-of-sequence ids only: decoding is what the caller's
// GenerateConfig says), the weights (model.safetensors, or an index and its shards; F32, F16 or BF16 converted to
// the compute type), saving in the same layout, and random models for tests and benchmarks.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/io/safetensors_checkpoint.hpp"
#include "prefixtune/models/hf_reader.hpp"
#include "prefixtune/models/llama.hpp"
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

namespace detail {

/// The q, k, v projections' output widths: NH HD, KVH HD, KVH HD.
inline std::vector<std::int64_t> llama_qkv_widths(const LlamaConfig& c) {
  return {c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.num_key_value_heads * c.head_dim};
}

/// True for keys a Llama checkpoint may carry that are not weights: the rotary buffers of older exports.
inline bool is_llama_buffer(const std::string& key) {
  const std::string tail = ".rotary_emb.inv_freq";
  return key.size() > tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace detail

/// Loads a frozen Llama-family model (llama, mistral, qwen2, qwen3) from a HuggingFace folder: config.json
/// (+ generation_config.json's end ids) and model.safetensors or model.safetensors.index.json with its shards.
/// Keys "model.*" (LlamaForCausalLM and kin) or bare (the base model); lm_head.weight required unless
/// tie_word_embeddings (a stored copy of a tied head must equal the embedding); rotary buffers ignored; any other
/// key refused; missing keys and wrong shapes named with the file.
template <class T, class Device = Cpu>
Llama<T, Device> load_llama(const std::string& dir) {
  Llama<T, Device> m;
  m.config = load_llama_config(dir);
  const LlamaConfig& c = m.config;
  const SafeTensorsCheckpoint file = SafeTensorsCheckpoint::open(dir);
  const std::string prefix = file.has("model.embed_tokens.weight") ? "model." : "";
  PREFIXTUNE_CHECK(file.has(prefix + "embed_tokens.weight"), file.path(),
                   ": no 'model.embed_tokens.weight': not a Llama-family checkpoint");
  detail::HfReader<T, SafeTensorsCheckpoint> r(file, prefix);
  const std::int64_t C = c.hidden_size, V = c.vocab_size, I = c.intermediate_size, HD = c.head_dim;
  const std::int64_t NHD = c.num_attention_heads * HD;
  auto to = [](const Tensor<T, Cpu>& t) { return t.defined() ? t.template to<Device>() : Tensor<T, Device>(); };
  const auto embed = r.get("embed_tokens.weight", Shape{V, C});
  m.embed = to(embed);
  m.norm = to(r.get("norm.weight", Shape{C}));
  if (file.has("lm_head.weight")) {
    r.mark("lm_head.weight");
    const auto head = file.template load<T>("lm_head.weight", Shape{V, C});
    PREFIXTUNE_CHECK(!c.tie_word_embeddings || detail::same_values(head, embed), file.path(),
                     ": lm_head.weight differs from the embedding but config.json says tie_word_embeddings=true");
    if (!c.tie_word_embeddings) m.lm_head = to(head);
  } else {
    PREFIXTUNE_CHECK(c.tie_word_embeddings, file.path(),
                     ": missing tensor 'lm_head.weight' (config.json says tie_word_embeddings=false)");
  }
  const bool qkv_bias = c.qkv_bias || c.attention_bias;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    LlamaBlock<T, Device> b;
    b.input_norm = to(r.get(p + "input_layernorm.weight", Shape{C}));
    const auto qkv =
        r.linear(p + "self_attn.", {"q_proj", "k_proj", "v_proj"}, C, detail::llama_qkv_widths(c), qkv_bias);
    b.qkv_w = to(qkv.first);
    b.qkv_b = to(qkv.second);
    if (c.qk_norm) {
      b.q_norm = to(r.get(p + "self_attn.q_norm.weight", Shape{HD}));
      b.k_norm = to(r.get(p + "self_attn.k_norm.weight", Shape{HD}));
    }
    const auto o = r.linear(p + "self_attn.", {"o_proj"}, NHD, {C}, c.attention_bias);
    b.o_w = to(o.first);
    b.o_b = to(o.second);
    b.post_norm = to(r.get(p + "post_attention_layernorm.weight", Shape{C}));
    b.gate_w = to(r.linear(p + "mlp.", {"gate_proj"}, C, {I}, false).first);
    b.up_w = to(r.linear(p + "mlp.", {"up_proj"}, C, {I}, false).first);
    b.down_w = to(r.linear(p + "mlp.", {"down_proj"}, I, {C}, false).first);
    m.layers.push_back(std::move(b));
  }
  for (const std::string& key : file.names())
    PREFIXTUNE_CHECK(r.seen().count(key) || detail::is_llama_buffer(key), file.file_of(key).path(),
                     ": unexpected tensor '", key, "' (not part of a ", c.model_type, " with ", c.num_hidden_layers,
                     " layers", qkv_bias ? "" : " without attention biases", c.qk_norm ? "" : " without q/k norms",
                     "; does config.json match?)");
  m.inv_freq = rope_inv_freq(c.rope, HD);
  return m;
}

/// Writes `dir`/config.json and the weights in HuggingFace's layout (keys "model.*", lm_head.weight only when
/// untied) in `dtype` (F32, F16, BF16 or F64): one model.safetensors, or, when max_shard_bytes > 0 and the weights
/// exceed it, model-0000i-of-0000n.safetensors shards of at most that size (a tensor larger than it gets its own)
/// and model.safetensors.index.json, as save_pretrained does. Each file is written atomically; the other layout's
/// files left in `dir` are removed so that loaders see one checkpoint.
template <class T, class Device>
void save_llama(const std::string& dir, const Llama<T, Device>& m, DType dtype = DType::F32,
                std::int64_t max_shard_bytes = 0) {
  namespace fs = std::filesystem;
  PREFIXTUNE_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64,
                   "save_llama: unsupported dtype ", dtype_name(dtype));
  const LlamaConfig& c = m.config;
  fs::create_directories(dir);
  // Every tensor in save_pretrained's order, with its key.
  std::vector<std::pair<std::string, Tensor<T, Cpu>>> tensors;
  auto host = [](const Tensor<T, Device>& t) { return t.template to<Cpu>(); };
  tensors.emplace_back("model.embed_tokens.weight", host(m.embed));
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& b = m.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    tensors.emplace_back(p + "input_layernorm.weight", host(b.input_norm));
    auto linear = [&](const std::string& base, const std::vector<std::string>& names, const Tensor<T, Device>& w,
                      const Tensor<T, Device>& bias, const std::vector<std::int64_t>& outs) {
      const auto hb = bias.defined() ? host(bias) : Tensor<T, Cpu>();
      for (auto& kt : detail::hf_linear_tensors(base, names, host(w), hb, outs)) tensors.push_back(std::move(kt));
    };
    linear(p + "self_attn.", {"q_proj", "k_proj", "v_proj"}, b.qkv_w, b.qkv_b, detail::llama_qkv_widths(c));
    if (b.q_norm.defined()) {
      tensors.emplace_back(p + "self_attn.q_norm.weight", host(b.q_norm));
      tensors.emplace_back(p + "self_attn.k_norm.weight", host(b.k_norm));
    }
    linear(p + "self_attn.", {"o_proj"}, b.o_w, b.o_b, {c.hidden_size});
    tensors.emplace_back(p + "post_attention_layernorm.weight", host(b.post_norm));
    linear(p + "mlp.", {"gate_proj"}, b.gate_w, Tensor<T, Device>(), {c.intermediate_size});
    linear(p + "mlp.", {"up_proj"}, b.up_w, Tensor<T, Device>(), {c.intermediate_size});
    linear(p + "mlp.", {"down_proj"}, b.down_w, Tensor<T, Device>(), {c.hidden_size});
  }
  tensors.emplace_back("model.norm.weight", host(m.norm));
  if (m.lm_head.defined()) tensors.emplace_back("lm_head.weight", host(m.lm_head));
  // Shards: consecutive tensors up to max_shard_bytes each.
  std::vector<std::vector<std::size_t>> shards(1);
  std::int64_t in_shard = 0, total = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto bytes = static_cast<std::int64_t>(dtype_size(dtype)) * tensors[i].second.numel();
    if (max_shard_bytes > 0 && in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes;
    total += bytes;
  }
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  if (shards.size() == 1) {
    SafeTensorsWriter w;
    w.add_metadata("format", "pt");
    for (const auto& [key, t] : tensors) w.add(key, t, dtype);
    w.write(single);
    if (fs::exists(index)) fs::remove(index);
  } else {
    nlohmann::json map = nlohmann::json::object();
    char name[64];
    for (std::size_t s = 0; s < shards.size(); ++s) {
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      SafeTensorsWriter w;
      w.add_metadata("format", "pt");
      for (std::size_t i : shards[s]) {
        w.add(tensors[i].first, tensors[i].second, dtype);
        map[tensors[i].first] = name;
      }
      w.write((fs::path(dir) / name).string());
    }
    const nlohmann::json j = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
    write_text_file_atomic(index, j.dump(2) + "\n");
    if (fs::exists(single)) fs::remove(single);
  }
  write_text_file_atomic((fs::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
}

/// A Llama-family model with transformers' initialization: every linear weight and the embedding N(0, 0.02),
/// biases 0, norm weights 1 (tests, benchmarks). The config is validated first.
template <class T, class Device = Cpu>
Llama<T, Device> random_llama(const LlamaConfig& c, Rng& rng) {
  c.validate("random_llama");
  const std::int64_t C = c.hidden_size, I = c.intermediate_size, HD = c.head_dim;
  const std::int64_t W = (c.num_attention_heads + 2 * c.num_key_value_heads) * HD, NHD = c.num_attention_heads * HD;
  auto normal = [&](const Shape& s) {
    auto t = Tensor<T, Cpu>::empty(s);
    fill_normal(t, rng, 0.0, 0.02);
    return t.template to<Device>();
  };
  auto ones = [](std::int64_t n) { return Tensor<T, Cpu>::full({n}, T(1)).template to<Device>(); };
  auto zeros = [](std::int64_t n) { return Tensor<T, Device>::zeros({n}); };
  Llama<T, Device> m;
  m.config = c;
  m.embed = normal({c.vocab_size, C});
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LlamaBlock<T, Device> b;
    b.input_norm = ones(C);
    b.qkv_w = normal({C, W});
    if (c.qkv_bias || c.attention_bias) b.qkv_b = zeros(W);
    if (c.qk_norm) b.q_norm = ones(HD), b.k_norm = ones(HD);
    b.o_w = normal({NHD, C});
    if (c.attention_bias) b.o_b = zeros(C);
    b.post_norm = ones(C);
    b.gate_w = normal({C, I});
    b.up_w = normal({C, I});
    b.down_w = normal({I, C});
    m.layers.push_back(std::move(b));
  }
  m.norm = ones(C);
  if (!c.tie_word_embeddings) m.lm_head = normal({c.vocab_size, C});
  m.inv_freq = rope_inv_freq(c.rope, HD);
  return m;
}

}  // namespace prefixtune
