// SPDX-License-Identifier: MIT
// A HuggingFace checkpoint's weights: one model.safetensors, or model.safetensors.index.json with its shards
// (save_pretrained's layout above its shard size). Keys are looked up across the shards; every error names the
// file (the index or the shard) and the key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/json_fields.hpp"
#include "prefixtune/io/safetensors_read.hpp"

namespace prefixtune {

namespace detail {

/// The weight_map of a model.safetensors.index.json text: key -> shard file name. Every shard must be a plain file
/// name in the index's folder (no directory part, not "." or ".."); `where` names the index in errors.
/// Whether path names an existing file; a path the system cannot even look up (too long, ...) is an Error naming it.
inline bool checkpoint_file_exists(const std::string& path) {
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  PREFIXTUNE_CHECK(!ec || ec == std::errc::no_such_file_or_directory, "cannot look up '", path, "': ", ec.message());
  return exists;
}

inline std::map<std::string, std::string> parse_safetensors_index(const std::string& text, const std::string& where) {
  const nlohmann::json j = parse_json(text, where);
  PREFIXTUNE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), where,
                   ": not a safetensors index (no 'weight_map' object)");
  for (auto it = j.begin(); it != j.end(); ++it)
    PREFIXTUNE_CHECK(it.key() == "weight_map" || it.key() == "metadata", where, ": unknown field '", it.key(),
                     "' (an index holds 'metadata' and 'weight_map')");
  std::map<std::string, std::string> map;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    PREFIXTUNE_CHECK(it.value().is_string(), where, ": weight_map['", it.key(), "'] must be a file name, got ",
                     it.value().dump());
    const std::string file = it.value().get<std::string>();
    PREFIXTUNE_CHECK(!file.empty() && file.size() <= 255 && file != "." && file != ".." &&
                         file.find('/') == std::string::npos && file.find('\\') == std::string::npos &&
                         file.find('\0') == std::string::npos,
                     where, ": weight_map['", it.key(), "'] = '", file,
                     "' is not a file name in the index's folder (shards must sit beside the index)");
    map[it.key()] = file;
  }
  PREFIXTUNE_CHECK(!map.empty(), where, ": the weight_map is empty");
  return map;
}

}  // namespace detail

/// The weights of a HuggingFace folder: `dir`/model.safetensors, else `dir`/model.safetensors.index.json and the
/// shards it names (each opened and validated once). A key the index maps to a shard must be in that shard, and
/// every tensor of a shard must be in the index.
class SafeTensorsCheckpoint {
 public:
  static SafeTensorsCheckpoint open(const std::string& dir) {
    namespace fs = std::filesystem;
    SafeTensorsCheckpoint c;
    const std::string single = (fs::path(dir) / "model.safetensors").string();
    const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
    if (detail::checkpoint_file_exists(single)) {
      c.description_ = single;
      c.files_.push_back(std::make_shared<SafeTensorsFile>(SafeTensorsFile::open(single)));
      for (const auto& k : c.files_[0]->names()) c.where_[k] = 0;
      return c;
    }
    PREFIXTUNE_CHECK(detail::checkpoint_file_exists(index), "no model.safetensors or model.safetensors.index.json in '",
                     dir,
                     "' (only safetensors checkpoints are read; convert pytorch_model.bin with transformers' "
                     "save_pretrained(..., safe_serialization=True))");
    c.description_ = index;
    const auto map = detail::parse_safetensors_index(read_text_file(index), index);
    std::map<std::string, std::size_t> shard_of_file;
    for (const auto& [key, file] : map) {
      auto it = shard_of_file.find(file);
      if (it == shard_of_file.end()) {
        const std::string path = (fs::path(dir) / file).string();
        PREFIXTUNE_CHECK(detail::checkpoint_file_exists(path), index, ": shard '", file, "' (holding '", key,
                         "') is missing from '", dir, "'");
        c.files_.push_back(std::make_shared<SafeTensorsFile>(SafeTensorsFile::open(path)));
        it = shard_of_file.emplace(file, c.files_.size() - 1).first;
      }
      const SafeTensorsFile& shard = *c.files_[it->second];
      PREFIXTUNE_CHECK(shard.has(key), index, ": maps '", key, "' to '", file, "', which has no such tensor");
      c.where_[key] = it->second;
    }
    for (const auto& f : c.files_)
      for (const auto& k : f->names())
        PREFIXTUNE_CHECK(map.count(k) && c.files_[c.where_[k]].get() == f.get(), f->path(), ": tensor '", k,
                         "' is not in the index ", index, " (or the index maps it to another shard)");
    return c;
  }

  /// model.safetensors, or the index: what error messages name for the checkpoint as a whole.
  const std::string& path() const { return description_; }
  bool has(const std::string& key) const { return where_.count(key) != 0; }
  /// Every key, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& kv : where_) v.push_back(kv.first);
    return v;
  }
  /// The file that holds key (Error naming the checkpoint when none does).
  const SafeTensorsFile& file_of(const std::string& key) const {
    const auto it = where_.find(key);
    PREFIXTUNE_CHECK(it != where_.end(), description_, ": no tensor named '", key, "'");
    return *files_[it->second];
  }
  /// SafeTensorsFile::load of key's shard: converted to T, its shape checked against expected.
  template <class T>
  Tensor<T, Cpu> load(const std::string& key, const Shape& expected, bool check_finite = false) const {
    return file_of(key).template load<T>(key, expected, check_finite);
  }

 private:
  std::string description_;
  std::vector<std::shared_ptr<SafeTensorsFile>> files_;
  std::map<std::string, std::size_t> where_;
};

}  // namespace prefixtune
