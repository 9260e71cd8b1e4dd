// SPDX-License-Identifier: MIT
// JSON files (config.json, adapter_config.json, generation_config.json): read_json_file, and typed reads of their
// optional fields, with errors naming the file and the key.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/file.hpp"

namespace prefixtune {

/// `text` parsed as JSON; invalid JSON is an Error "<where>: invalid JSON: <the parser's reason>" (`where`: a file,
/// or a file and a line as "path:n").
inline nlohmann::json parse_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    PREFIXTUNE_FAIL(where, ": invalid JSON: ", e.what());
  }
}

/// `path` parsed as JSON; a missing file or invalid JSON is an Error naming the path.
inline nlohmann::json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

namespace detail {

/// Sets `out` from j[key] when present; absent or null (HuggingFace's "unset") keeps `out`; anything but an
/// integer is an Error naming `where` and the key.
inline void json_optional_int(const nlohmann::json& j, const char* key, const std::string& where, std::int64_t& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  PREFIXTUNE_CHECK(j[key].is_number_integer(), where, ": '", key, "' must be an integer, got ", j[key].dump());
  out = j[key].get<std::int64_t>();
}

/// j[key], which must be an integer.
inline std::int64_t json_int(const nlohmann::json& j, const char* key, const std::string& where) {
  PREFIXTUNE_CHECK(j.contains(key) && j[key].is_number_integer(), where, ": '", key, "' missing or not an integer");
  return j[key].get<std::int64_t>();
}

/// j[key] as a number when present and not null (HuggingFace's "unset"), else `out` is kept.
inline void json_optional_number(const nlohmann::json& j, const char* key, const std::string& where, double& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  PREFIXTUNE_CHECK(j[key].is_number(), where, ": '", key, "' must be a number, got ", j[key].dump());
  out = j[key].get<double>();
}

/// j[key] as a boolean when present and not null, else `out` is kept.
inline void json_optional_bool(const nlohmann::json& j, const char* key, const std::string& where, bool& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  PREFIXTUNE_CHECK(j[key].is_boolean(), where, ": '", key, "' must be true or false, got ", j[key].dump());
  out = j[key].get<bool>();
}

}  // namespace detail
}  // namespace prefixtune
