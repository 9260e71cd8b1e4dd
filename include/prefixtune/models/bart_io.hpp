// SPDX-License-Identifier: MIT
// BART from HuggingFace folders: load_bart_config and load_bart (config.json + model.safetensors with
// BartForConditionalGeneration's keys, with or without "model.", tied or untied head, optional final_logits_bias),
// fusing q/k/v projections into the layouts the attention ops read; random_bart for tests.
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/bart.hpp"
#include "prefixtune/models/hf_reader.hpp"

namespace prefixtune {

/// Reads and validates `dir`/config.json as a BART config (a GPT-2 config is refused, naming load_gpt2).
inline BartConfig load_bart_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  return BartConfig::from_json(read_json_file(path), path);
}

namespace detail {

/// BART reads one safetensors file.
template <class T>
using BartReader = HfReader<T, SafeTensorsFile>;

}  // namespace detail

/// Loads a frozen BART from a HuggingFace folder. Token embeddings: model.shared (or, when a writer dropped it, the
/// encoder's / decoder's embed_tokens); a stored embed_tokens or lm_head equal to it is the tied copy, a different
/// embed_tokens is refused and a different lm_head kept as an untied head. final_logits_bias (1, V) is optional.
/// Every other key must be a BART weight of the config's sizes; errors name the file and the key.
template <class T, class Device = Cpu>
Bart<T, Device> load_bart(const std::string& dir) {
  Bart<T, Device> m;
  m.config = load_bart_config(dir);
  const BartConfig& c = m.config;
  const std::string path = (std::filesystem::path(dir) / "model.safetensors").string();
  PREFIXTUNE_CHECK(std::filesystem::exists(path), "no model.safetensors in '", dir,
                   "' (only safetensors checkpoints are read)");
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  const bool wrapped = file.has("model.encoder.layernorm_embedding.weight");
  PREFIXTUNE_CHECK(wrapped || file.has("encoder.layernorm_embedding.weight"), path,
                   ": no encoder.layernorm_embedding: not a BART checkpoint");
  detail::BartReader<T> r(file, wrapped ? "model." : "");
  const std::int64_t C = c.d_model, V = c.vocab_size, NP = c.max_position_embeddings + BartConfig::kPositionOffset;
  auto to = [](const Tensor<T, Cpu>& t) { return t.template to<Device>(); };
  // Token embeddings and their tied copies.
  Tensor<T, Cpu> shared;
  for (const char* key : {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"})
    if (file.has(r.prefix() + key)) {
      const auto t = r.get(key, Shape{V, C});
      if (!shared.defined()) {
        shared = t;
      } else {
        PREFIXTUNE_CHECK(detail::same_values(t, shared), path, ": '", r.prefix(), key,
                         "' differs from the shared embedding (untied encoder/decoder embeddings are not supported)");
      }
    }
  PREFIXTUNE_CHECK(shared.defined(), path, ": no token embedding ('", r.prefix(), "shared.weight')");
  m.shared = to(shared);
  if (file.has("lm_head.weight")) {
    r.mark("lm_head.weight");
    const auto head = file.load<T>("lm_head.weight", Shape{V, C}, false);
    if (!detail::same_values(head, shared)) m.lm_head = to(head);
  }
  if (file.has("final_logits_bias")) {
    r.mark("final_logits_bias");
    m.final_logits_bias = to(file.load<T>("final_logits_bias", Shape{1, V}, false).reshape({V}));
  } else {
    m.final_logits_bias = Tensor<T, Device>::zeros({V});
  }
  m.enc_pos = to(r.get("encoder.embed_positions.weight", Shape{NP, C}));
  m.dec_pos = to(r.get("decoder.embed_positions.weight", Shape{NP, C}));
  m.enc_ln_w = to(r.get("encoder.layernorm_embedding.weight", Shape{C}));
  m.enc_ln_b = to(r.get("encoder.layernorm_embedding.bias", Shape{C}));
  m.dec_ln_w = to(r.get("decoder.layernorm_embedding.weight", Shape{C}));
  m.dec_ln_b = to(r.get("decoder.layernorm_embedding.bias", Shape{C}));
  auto set = [&](auto& w, auto& b, const std::pair<Tensor<T, Cpu>, Tensor<T, Cpu>>& wb) {
    w = to(wb.first);
    b = to(wb.second);
  };
  for (std::int64_t l = 0; l < c.encoder_layers; ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    BartEncoderLayer<Tensor<T, Device>> L;
    set(L.q_w, L.q_b, r.linear(p + "self_attn.", {"q_proj"}, C, C));
    set(L.kv_w, L.kv_b, r.linear(p + "self_attn.", {"k_proj", "v_proj"}, C, C));
    set(L.out_w, L.out_b, r.linear(p + "self_attn.", {"out_proj"}, C, C));
    L.attn_ln_w = to(r.get(p + "self_attn_layer_norm.weight", Shape{C}));
    L.attn_ln_b = to(r.get(p + "self_attn_layer_norm.bias", Shape{C}));
    set(L.fc1_w, L.fc1_b, r.linear(p, {"fc1"}, C, c.encoder_ffn_dim));
    set(L.fc2_w, L.fc2_b, r.linear(p, {"fc2"}, c.encoder_ffn_dim, C));
    L.ffn_ln_w = to(r.get(p + "final_layer_norm.weight", Shape{C}));
    L.ffn_ln_b = to(r.get(p + "final_layer_norm.bias", Shape{C}));
    m.encoder.push_back(L);
  }
  for (std::int64_t l = 0; l < c.decoder_layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    BartDecoderLayer<Tensor<T, Device>> L;
    set(L.qkv_w, L.qkv_b, r.linear(p + "self_attn.", {"q_proj", "k_proj", "v_proj"}, C, C));
    set(L.self_out_w, L.self_out_b, r.linear(p + "self_attn.", {"out_proj"}, C, C));
    L.self_ln_w = to(r.get(p + "self_attn_layer_norm.weight", Shape{C}));
    L.self_ln_b = to(r.get(p + "self_attn_layer_norm.bias", Shape{C}));
    set(L.cross_q_w, L.cross_q_b, r.linear(p + "encoder_attn.", {"q_proj"}, C, C));
    set(L.cross_kv_w, L.cross_kv_b, r.linear(p + "encoder_attn.", {"k_proj", "v_proj"}, C, C));
    set(L.cross_out_w, L.cross_out_b, r.linear(p + "encoder_attn.", {"out_proj"}, C, C));
    L.cross_ln_w = to(r.get(p + "encoder_attn_layer_norm.weight", Shape{C}));
    L.cross_ln_b = to(r.get(p + "encoder_attn_layer_norm.bias", Shape{C}));
    set(L.fc1_w, L.fc1_b, r.linear(p, {"fc1"}, C, c.decoder_ffn_dim));
    set(L.fc2_w, L.fc2_b, r.linear(p, {"fc2"}, c.decoder_ffn_dim, C));
    L.ffn_ln_w = to(r.get(p + "final_layer_norm.weight", Shape{C}));
    L.ffn_ln_b = to(r.get(p + "final_layer_norm.bias", Shape{C}));
    m.decoder.push_back(L);
  }
  for (const std::string& key : file.names())
    PREFIXTUNE_CHECK(r.seen().count(key), path, ": unexpected tensor '", key, "' (not part of a BART with ",
                     c.encoder_layers, " encoder and ", c.decoder_layers, " decoder layers; does config.json match?)");
  return m;
}

namespace detail {

/// Adds n equally wide fused nn.Linear layers (add_hf_linear).
template <class T>
void add_bart_linear(SafeTensorsWriter& w, const std::string& base, const std::vector<std::string>& names,
                     const Tensor<T, Cpu>& weight, const Tensor<T, Cpu>& bias, DType dtype) {
  const auto n = static_cast<std::int64_t>(names.size());
  add_hf_linear(w, base, names, weight, bias, std::vector<std::int64_t>(names.size(), weight.size(1) / n), dtype);
}

}  // namespace detail

/// Writes `dir`/config.json and `dir`/model.safetensors in HuggingFace's BartForConditionalGeneration layout (keys
/// "model.*", final_logits_bias (1, V), lm_head.weight only when untied) in `dtype` (F32, F16, BF16 or F64), each
/// file atomically; load_bart and transformers read it back. The folder is created if needed.
template <class T, class Device>
void save_bart(const std::string& dir, const Bart<T, Device>& m, DType dtype = DType::F32) {
  PREFIXTUNE_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64,
                   "save_bart: unsupported dtype ", dtype_name(dtype));
  const BartConfig& c = m.config;
  auto host = [](const Tensor<T, Device>& t) { return t.template to<Cpu>(); };
  SafeTensorsWriter w;
  w.add_metadata("format", "pt");
  w.add("model.shared.weight", host(m.shared), dtype);
  w.add("final_logits_bias", host(m.final_logits_bias).reshape({1, c.vocab_size}), dtype);
  if (m.lm_head.defined()) w.add("lm_head.weight", host(m.lm_head), dtype);
  for (const char* stack : {"encoder", "decoder"}) {
    const bool enc = stack[0] == 'e';
    const std::string p = std::string("model.") + stack + ".";
    w.add(p + "embed_positions.weight", host(enc ? m.enc_pos : m.dec_pos), dtype);
    w.add(p + "layernorm_embedding.weight", host(enc ? m.enc_ln_w : m.dec_ln_w), dtype);
    w.add(p + "layernorm_embedding.bias", host(enc ? m.enc_ln_b : m.dec_ln_b), dtype);
  }
  auto norm = [&](const std::string& key, const Tensor<T, Device>& g, const Tensor<T, Device>& b) {
    w.add(key + ".weight", host(g), dtype);
    w.add(key + ".bias", host(b), dtype);
  };
  for (std::size_t l = 0; l < m.encoder.size(); ++l) {
    const auto& L = m.encoder[l];
    const std::string p = "model.encoder.layers." + std::to_string(l) + ".";
    detail::add_bart_linear(w, p + "self_attn.", {"q_proj"}, host(L.q_w), host(L.q_b), dtype);
    detail::add_bart_linear(w, p + "self_attn.", {"k_proj", "v_proj"}, host(L.kv_w), host(L.kv_b), dtype);
    detail::add_bart_linear(w, p + "self_attn.", {"out_proj"}, host(L.out_w), host(L.out_b), dtype);
    norm(p + "self_attn_layer_norm", L.attn_ln_w, L.attn_ln_b);
    detail::add_bart_linear(w, p, {"fc1"}, host(L.fc1_w), host(L.fc1_b), dtype);
    detail::add_bart_linear(w, p, {"fc2"}, host(L.fc2_w), host(L.fc2_b), dtype);
    norm(p + "final_layer_norm", L.ffn_ln_w, L.ffn_ln_b);
  }
  for (std::size_t l = 0; l < m.decoder.size(); ++l) {
    const auto& L = m.decoder[l];
    const std::string p = "model.decoder.layers." + std::to_string(l) + ".";
    detail::add_bart_linear(w, p + "self_attn.", {"q_proj", "k_proj", "v_proj"}, host(L.qkv_w), host(L.qkv_b), dtype);
    detail::add_bart_linear(w, p + "self_attn.", {"out_proj"}, host(L.self_out_w), host(L.self_out_b), dtype);
    norm(p + "self_attn_layer_norm", L.self_ln_w, L.self_ln_b);
    detail::add_bart_linear(w, p + "encoder_attn.", {"q_proj"}, host(L.cross_q_w), host(L.cross_q_b), dtype);
    detail::add_bart_linear(w, p + "encoder_attn.", {"k_proj", "v_proj"}, host(L.cross_kv_w), host(L.cross_kv_b),
                            dtype);
    detail::add_bart_linear(w, p + "encoder_attn.", {"out_proj"}, host(L.cross_out_w), host(L.cross_out_b), dtype);
    norm(p + "encoder_attn_layer_norm", L.cross_ln_w, L.cross_ln_b);
    detail::add_bart_linear(w, p, {"fc1"}, host(L.fc1_w), host(L.fc1_b), dtype);
    detail::add_bart_linear(w, p, {"fc2"}, host(L.fc2_w), host(L.fc2_b), dtype);
    norm(p + "final_layer_norm", L.ffn_ln_w, L.ffn_ln_b);
  }
  std::filesystem::create_directories(dir);
  w.write((std::filesystem::path(dir) / "model.safetensors").string());
  write_text_file_atomic((std::filesystem::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
}

/// A BART with random weights (N(0, scale) matrices and biases, layer norms 1 + N(0, 0.1) / N(0, 0.1), a zero
/// logits bias), for tests and benchmarks.
template <class T, class Device = Cpu>
Bart<T, Device> random_bart(const BartConfig& c, Rng& rng, double scale = 0.02) {
  c.validate("random_bart");
  Bart<T, Device> m;
  m.config = c;
  const std::int64_t C = c.d_model, NP = c.max_position_embeddings + BartConfig::kPositionOffset;
  auto n = [&](const Shape& s, double mean = 0.0, double sd = -1) {
    auto t = Tensor<T, Device>::empty(s);
    fill_normal(t, rng, mean, sd < 0 ? scale : sd);
    return t;
  };
  auto ln = [&](Tensor<T, Device>& w, Tensor<T, Device>& b) { w = n({C}, 1.0, 0.1), b = n({C}, 0.0, 0.1); };
  m.shared = n({c.vocab_size, C});
  m.enc_pos = n({NP, C});
  m.dec_pos = n({NP, C});
  ln(m.enc_ln_w, m.enc_ln_b);
  ln(m.dec_ln_w, m.dec_ln_b);
  m.final_logits_bias = Tensor<T, Device>::zeros({c.vocab_size});
  for (std::int64_t l = 0; l < c.encoder_layers; ++l) {
    BartEncoderLayer<Tensor<T, Device>> L;
    L.q_w = n({C, C}), L.q_b = n({C}), L.kv_w = n({C, 2 * C}), L.kv_b = n({2 * C}), L.out_w = n({C, C});
    L.out_b = n({C}), L.fc1_w = n({C, c.encoder_ffn_dim}), L.fc1_b = n({c.encoder_ffn_dim});
    L.fc2_w = n({c.encoder_ffn_dim, C}), L.fc2_b = n({C});
    ln(L.attn_ln_w, L.attn_ln_b);
    ln(L.ffn_ln_w, L.ffn_ln_b);
    m.encoder.push_back(L);
  }
  for (std::int64_t l = 0; l < c.decoder_layers; ++l) {
    BartDecoderLayer<Tensor<T, Device>> L;
    L.qkv_w = n({C, 3 * C}), L.qkv_b = n({3 * C}), L.self_out_w = n({C, C}), L.self_out_b = n({C});
    L.cross_q_w = n({C, C}), L.cross_q_b = n({C}), L.cross_kv_w = n({C, 2 * C}), L.cross_kv_b = n({2 * C});
    L.cross_out_w = n({C, C}), L.cross_out_b = n({C}), L.fc1_w = n({C, c.decoder_ffn_dim});
    L.fc1_b = n({c.decoder_ffn_dim}), L.fc2_w = n({c.decoder_ffn_dim, C}), L.fc2_b = n({C});
    ln(L.self_ln_w, L.self_ln_b);
    ln(L.cross_ln_w, L.cross_ln_b);
    ln(L.ffn_ln_w, L.ffn_ln_b);
    m.decoder.push_back(L);
  }
  return m;
}

}  // namespace prefixtune
