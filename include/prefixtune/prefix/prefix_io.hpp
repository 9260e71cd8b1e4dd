// SPDX-License-Identifier: MIT
// Prefix files: a merged prefix as safetensors (our format), and PEFT adapter folders (adapter_config.json with
// peft_type PREFIX_TUNING + adapter_model.safetensors holding prompt_embeddings [P, 2*L*KVH*HD]), both directions,
// checked against the KvShape of the model's stack (a model config converts to it).
#pragma once

#include <charconv>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/io/file.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune {

namespace detail {

/// Throws unless table (P, 2*L*KVH*HD) fits the stack `s`; `where` names the file.
template <class T>
void check_prefix_table(const Tensor<T, Cpu>& table, const KvShape& s, const std::string& where) {
  PREFIXTUNE_CHECK(table.rank() == 2 && table.size(0) >= 1 && table.size(1) == s.table_width(), where,
                   ": prefix table of shape ", table.shape(), " does not fit the model (expected (P, ", s.table_width(),
                   ") = (P, 2 * ", s.layers, " layers * ", s.kv_heads, " kv_heads * head_dim ", s.head_dim, "))");
}

}  // namespace detail

/// Writes a merged prefix to `path` (safetensors, tensor "prefix.table", the model's shape in the metadata, and
/// "placement": "infix" for an infix).
template <class T, class Device>
void save_prefix(const std::string& path, const DirectPrefix<T, Device>& prefix, const KvShape& s) {
  const auto table = prefix.table.value().template to<Cpu>();
  detail::check_prefix_table(table, s, path);
  SafeTensorsWriter w;
  w.add("prefix.table", table, DType::F32);
  w.add_metadata("format", "prefixtune.prefix");
  w.add_metadata("num_virtual_tokens", std::to_string(table.size(0)));
  w.add_metadata("num_layers", std::to_string(s.layers));
  w.add_metadata("num_attention_heads", std::to_string(s.kv_heads));
  w.add_metadata("token_dim", std::to_string(s.kv_width()));
  if (prefix.placement == Placement::Infix) w.add_metadata("placement", "infix");
  if (prefix.position_offset >= 0) w.add_metadata("position_offset", std::to_string(prefix.position_offset));
  w.write(path);
}

/// Exports a merged prefix as a PEFT PREFIX_TUNING adapter folder that PEFT's PeftModel.from_pretrained loads
/// (token_dim = kv_heads * head_dim, num_attention_heads = kv_heads, as PEFT writes them).
template <class T, class Device>
void export_peft(const std::string& dir, const DirectPrefix<T, Device>& prefix, const KvShape& s,
                 const std::string& base_model = "") {
  const auto table = prefix.table.value().template to<Cpu>();
  detail::check_prefix_table(table, s, dir);
  PREFIXTUNE_CHECK(prefix.placement == Placement::Prefix, dir,
                   ": PEFT has no infix placement; save an infix with save_prefix instead");
  std::filesystem::create_directories(dir);
  const nlohmann::json config = {{"peft_type", "PREFIX_TUNING"},
                                 {"task_type", "CAUSAL_LM"},
                                 {"num_virtual_tokens", table.size(0)},
                                 {"token_dim", s.kv_width()},
                                 {"num_layers", s.layers},
                                 {"num_attention_heads", s.kv_heads},
                                 {"num_transformer_submodules", 1},
                                 {"prefix_projection", false},
                                 {"encoder_hidden_size", s.kv_width()},
                                 {"inference_mode", true},
                                 {"base_model_name_or_path", base_model.empty() ? nullptr : nlohmann::json(base_model)},
                                 {"revision", nullptr}};
  SafeTensorsWriter w;
  w.add("prompt_embeddings", table, DType::F32);
  w.add_metadata("format", "pt");
  w.write((std::filesystem::path(dir) / "adapter_model.safetensors").string());
  write_text_file_atomic((std::filesystem::path(dir) / "adapter_config.json").string(), config.dump(2) + "\n");
}

/// Reads a PEFT PREFIX_TUNING adapter folder, checked against the model: prompt_embeddings (P, 2 * num_layers *
/// token_dim) is the prefix table, with or without prefix_projection (PEFT saves a projected prefix as the MLP's
/// output).
template <class T, class Device = Cpu>
DirectPrefix<T, Device> import_peft(const std::string& dir, const KvShape& s) {
  const std::string cfg_path = (std::filesystem::path(dir) / "adapter_config.json").string();
  const nlohmann::json j = read_json_file(cfg_path);
  PREFIXTUNE_CHECK(j.is_object() && j.contains("peft_type") && j["peft_type"] == "PREFIX_TUNING", cfg_path,
                   ": not a PEFT prefix-tuning adapter (peft_type must be \"PREFIX_TUNING\")");
  bool projection = false;  // absent or null: PEFT's default, false
  if (j.contains("prefix_projection")) {
    const nlohmann::json& pp = j["prefix_projection"];
    PREFIXTUNE_CHECK(pp.is_boolean() || pp.is_null(), cfg_path, ": 'prefix_projection' must be true or false, got ",
                     pp.dump());
    projection = pp.is_boolean() && pp.get<bool>();
  }
  const std::int64_t P = detail::json_int(j, "num_virtual_tokens", cfg_path);
  const std::int64_t layers = detail::json_int(j, "num_layers", cfg_path);
  const std::int64_t dim = detail::json_int(j, "token_dim", cfg_path);
  const std::int64_t heads = detail::json_int(j, "num_attention_heads", cfg_path);
  PREFIXTUNE_CHECK(layers == s.layers && dim == s.kv_width() && heads == s.kv_heads, cfg_path,
                   ": adapter for num_layers=", layers, " token_dim=", dim, " num_attention_heads=", heads,
                   " does not fit the model (layers=", s.layers, " token_dim=", s.kv_width(), " kv_heads=", s.kv_heads,
                   ")");
  std::string st = (std::filesystem::path(dir) / "adapter_model.safetensors").string();
  const SafeTensorsFile file = SafeTensorsFile::open(st);
  const std::string key = file.has("prompt_embeddings") ? "prompt_embeddings" : "base_model.prompt_embeddings";
  PREFIXTUNE_CHECK(file.has(key), st, ": no 'prompt_embeddings' tensor");
  // With prefix_projection, PEFT saves the MLP's output (the table), never the MLP: a (P, token_dim) tensor is
  // the MLP's input embedding from some other writer, and cannot be served.
  const auto& stored = file.info(key).shape;
  PREFIXTUNE_CHECK(!(projection && stored.size() == 2 && stored[0] == P && stored[1] == dim && dim != 2 * layers * dim),
                   st, ": '", key, "' is (", P, ", token_dim ", dim,
                   "): the prefix MLP's input embeddings, not the prefix (PEFT saves prefix_projection adapters as the "
                   "MLP's output table (P, 2 * num_layers * token_dim) = (",
                   P, ", ", 2 * layers * dim, "))");
  auto table = file.load<T>(key, Shape{P, 2 * layers * dim}, true);
  return DirectPrefix<T, Device>{Var<T, Device>(table.template to<Device>(), true, "prefix.table")};
}

/// Loads a merged prefix from our safetensors file or from a PEFT adapter folder, checked against the model.
template <class T, class Device = Cpu>
DirectPrefix<T, Device> load_prefix(const std::string& path, const KvShape& s) {
  if (std::filesystem::is_directory(path)) return import_peft<T, Device>(path, s);
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  PREFIXTUNE_CHECK(!file.has("encoder_prefix.table"), path,
                   ": an encoder-decoder (seq2seq) prefix file, not a decoder-only one (load it with "
                   "load_seq2seq_prefix)");
  PREFIXTUNE_CHECK(file.has("prefix.table"), path, ": no 'prefix.table' tensor (not a prefixtune prefix file)");
  auto table = file.load<T>("prefix.table", true);
  detail::check_prefix_table(table, s, path);
  DirectPrefix<T, Device> prefix{Var<T, Device>(table.template to<Device>(), true, "prefix.table")};
  const auto& meta = file.metadata();
  if (const auto it = meta.find("placement"); it != meta.end()) {
    PREFIXTUNE_CHECK(it->second == "infix" || it->second == "prefix", path, ": metadata 'placement' is '", it->second,
                     "', expected \"prefix\" or \"infix\"");
    if (it->second == "infix") prefix.placement = Placement::Infix;
  }
  if (const auto it = meta.find("position_offset"); it != meta.end()) {
    std::int64_t v = -1;
    const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
    PREFIXTUNE_CHECK(ec == std::errc() && end == it->second.data() + it->second.size() && v >= 0 && v < s.positions &&
                         prefix.placement == Placement::Prefix,
                     path, ": metadata 'position_offset' '", it->second, "' is not a position in [0, ", s.positions,
                     ") of a prefix");
    prefix.position_offset = v;
  }
  return prefix;
}

}  // namespace prefixtune
