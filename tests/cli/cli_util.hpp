// SPDX-License-Identifier: MIT
// Running the command-line programs from the CLI tests: a command line through the shell (stdin redirects work),
// its exit status and its stdout + stderr; the JSON lines of an output.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace prefixtune::test {

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr together
};

inline Run run_program(const std::string& program, const std::string& args) {
  const std::string cmd = program + " " + args + " 2>&1";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// The prefixtune command with args.
inline Run run(const std::string& args) { return run_program(PREFIXTUNE_CLI, args); }

/// The lines of text that hold JSON objects, parsed.
inline std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> v;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') v.push_back(nlohmann::json::parse(line));
  return v;
}

}  // namespace prefixtune::test
