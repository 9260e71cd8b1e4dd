// SPDX-License-Identifier: MIT
// Loading and saving GPT-2 models in the HuggingFace folder layout: config.json + model.safetensors (F32, F16 or
// BF16; keys with or without "transformer."; lm_head.weight absent (tied) or present; attention buffers ignored).
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/gpt2.hpp"

namespace prefixtune {

/// Options of load_gpt2.
struct Gpt2LoadOptions {
  bool check_finite = false;  // scan every weight for NaN/Inf and name the first one found
};

/// Reads and validates `dir`/config.json.
inline Gpt2Config load_gpt2_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  return Gpt2Config::from_json(read_json_file(path), path);
}

namespace detail {

/// True for the non-weight buffers HuggingFace GPT-2 checkpoints may carry: h.{i}.attn.bias / masked_bias.
inline bool is_gpt2_buffer(const std::string& key) {
  auto ends_with = [&](const std::string& s) {
    return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
  };
  return key.rfind("h.", 0) == 0 && (ends_with(".attn.bias") || ends_with(".attn.masked_bias"));
}

}  // namespace detail

/// Loads a frozen GPT-2 from a HuggingFace folder (config.json + model.safetensors). Every expected tensor must
/// be present with the shape the config implies; unknown keys are refused; errors name the file and the key.
template <class T, class Device = Cpu>
Gpt2<T, Device> load_gpt2(const std::string& dir, const Gpt2LoadOptions& options = {}) {
  Gpt2<T, Device> m;
  m.config = load_gpt2_config(dir);
  const std::string path = (std::filesystem::path(dir) / "model.safetensors").string();
  PREFIXTUNE_CHECK(std::filesystem::exists(path), "no model.safetensors in '", dir,
                   "' (only safetensors checkpoints are read; convert pytorch_model.bin with transformers' "
                   "save_pretrained(..., safe_serialization=True))");
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  std::string prefix;
  if (!file.has("wte.weight") && file.has("transformer.wte.weight")) prefix = "transformer.";
  PREFIXTUNE_CHECK(file.has(prefix + "wte.weight"), path,
                   ": neither 'wte.weight' nor 'transformer.wte.weight' found: not a GPT-2 checkpoint");
  m.h.resize(static_cast<std::size_t>(m.config.n_layer));
  const auto shapes = detail::gpt2_weight_shapes(m.config);
  const auto slots = detail::gpt2_weight_slots(m);
  std::set<std::string> known;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const std::string key = prefix + shapes[i].first;
    PREFIXTUNE_CHECK(file.has(key), path, ": missing tensor '", key, "' (expected shape ", shapes[i].second,
                     " for the config in config.json)");
    *slots[i] = file.load<T>(key, shapes[i].second, options.check_finite).template to<Device>();
    known.insert(key);
  }
  const std::string head_key = file.has("lm_head.weight") ? "lm_head.weight" : prefix + "lm_head.weight";
  if (file.has(head_key)) {
    auto head = file.load<T>(head_key, Shape{m.config.vocab_size, m.config.n_embd}, options.check_finite);
    // Tied checkpoints that still store the head keep one matrix; a different head is kept as an untied one.
    if (head.to_vector() != m.wte.to_vector()) m.lm_head = head.template to<Device>();
    known.insert(head_key);
  }
  for (const std::string& key : file.names()) {
    if (known.count(key)) continue;
    const std::string bare = key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
    PREFIXTUNE_CHECK(detail::is_gpt2_buffer(bare), path, ": unexpected tensor '", key,
                     "' (not part of a GPT-2 with n_layer=", m.config.n_layer, "; does config.json match?)");
  }
  return m;
}

/// Writes `dir`/config.json and `dir`/model.safetensors (keys without "transformer.", tied head omitted) in
/// `dtype` (F32, F16 or BF16), each file atomically. The folder is created if needed.
template <class T, class Device>
void save_gpt2(const std::string& dir, const Gpt2<T, Device>& model, DType dtype = DType::F32) {
  PREFIXTUNE_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64,
                   "save_gpt2: unsupported dtype ", dtype_name(dtype));
  std::filesystem::create_directories(dir);
  Gpt2<T, Device> m = model;  // shallow: shares storage
  const auto shapes = detail::gpt2_weight_shapes(m.config);
  const auto slots = detail::gpt2_weight_slots(m);
  SafeTensorsWriter w;
  w.add_metadata("format", "pt");
  for (std::size_t i = 0; i < shapes.size(); ++i) w.add(shapes[i].first, slots[i]->template to<Cpu>(), dtype);
  if (m.lm_head.defined()) w.add("lm_head.weight", m.lm_head.template to<Cpu>(), dtype);
  w.write((std::filesystem::path(dir) / "model.safetensors").string());
  write_text_file_atomic((std::filesystem::path(dir) / "config.json").string(), m.config.to_json().dump(2) + "\n");
}

/// A GPT-2 with HuggingFace-style random initialization N(0, 0.02), LN weights 1 and biases 0 (tests, pretraining).
template <class T, class Device = Cpu>
Gpt2<T, Device> random_gpt2(const Gpt2Config& config, Rng& rng) {
  config.validate("random_gpt2");
  Gpt2<T, Device> m;
  m.config = config;
  m.h.resize(static_cast<std::size_t>(config.n_layer));
  const auto shapes = detail::gpt2_weight_shapes(config);
  const auto slots = detail::gpt2_weight_slots(m);
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    auto t = Tensor<T, Cpu>::empty(shapes[i].second);
    const std::string& key = shapes[i].first;
    const bool is_ln = key.find("ln_") != std::string::npos;
    const bool is_bias = key.size() > 5 && key.compare(key.size() - 5, 5, ".bias") == 0;
    if (is_ln && !is_bias) {
      t.fill(T(1));
    } else if (is_bias) {
      t.fill(T(0));
    } else {
      fill_normal(t, rng, 0.0, 0.02);
    }
    *slots[i] = t.template to<Device>();
  }
  return m;
}

}  // namespace prefixtune
