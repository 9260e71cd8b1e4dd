// SPDX-License-Identifier: MIT
// Typed reads of integer fields from parsed JSON files (config.json, adapter_config.json), with errors naming the
// file and the key.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "prefixtune/core/error.hpp"

namespace prefixtune::detail {

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

}  // namespace prefixtune::detail
