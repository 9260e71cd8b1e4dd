// SPDX-License-Identifier: MIT
// Shared by the example programs that parse "--name value" pairs themselves (the prefixtune CLI uses CLI11):
// the option table, its strict value parsing and the argument loop, and a wall-clock helper.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <prefixtune/core/error.hpp>

namespace prefixtune_examples {

/// Where each option's value goes, by type.
struct OptionTargets {
  std::map<std::string, std::string*> text;
  std::map<std::string, std::int64_t*> ints;
  std::map<std::string, double*> reals;
  std::map<std::string, std::uint64_t*> unsigned_ints;
};

/// Stores `value` into the target of option `name`; false when `name` is no option of `t`. A value that is not a
/// whole number of the option's type throws prefixtune::Error ("--steps: 'x' is not a number").
inline bool set_option(const OptionTargets& t, const std::string& name, const std::string& value) {
  if (auto s = t.text.find(name); s != t.text.end()) {
    *s->second = value;
    return true;
  }
  char* end = nullptr;
  if (auto i = t.ints.find(name); i != t.ints.end()) {
    *i->second = std::strtoll(value.c_str(), &end, 10);
  } else if (auto r = t.reals.find(name); r != t.reals.end()) {
    *r->second = std::strtod(value.c_str(), &end);
  } else if (auto u = t.unsigned_ints.find(name); u != t.unsigned_ints.end()) {
    *u->second = std::strtoull(value.c_str(), &end, 10);
  } else {
    return false;
  }
  PREFIXTUNE_CHECK(!value.empty() && *end == '\0', name, ": '", value, "' is not a number");
  return true;
}

/// Parses "--name value" pairs of `args` into `t` (`flag` is skipped: the caller handled it). Prints what is wrong
/// (or calls usage() for --help) and returns false on an unknown option, a missing value, a value of the wrong type
/// or an integer option below 1.
template <class Usage>
bool parse_options(const std::vector<std::string>& args, const OptionTargets& t, const std::string& flag,
                   Usage&& usage) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == flag) continue;
    if (a == "--help" || a == "-h" || i + 1 >= args.size()) {
      usage();
      return false;
    }
    const std::string& v = args[++i];
    try {
      if (!set_option(t, a, v)) {
        std::fprintf(stderr, "unknown option '%s'\n", a.c_str());
        usage();
        return false;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return false;
    }
    if (auto n = t.ints.find(a); n != t.ints.end() && *n->second < 1) {
      std::fprintf(stderr, "%s needs a positive integer, got '%s'\n", a.c_str(), v.c_str());
      return false;
    }
  }
  return true;
}

/// Seconds since `t0`.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace prefixtune_examples
