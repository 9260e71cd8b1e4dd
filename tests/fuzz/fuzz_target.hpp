// SPDX-License-Identifier: MIT
// Shared scaffolding of the fuzz targets (tests/fuzz/fuzz_*.cpp). Each target defines its body with
// PREFIXTUNE_FUZZ_TARGET(name) { ... data, size ... }. Built with -fsanitize=fuzzer (PREFIXTUNE_FUZZ_LIBFUZZER) the
// body becomes LLVMFuzzerTestOneInput; otherwise it registers itself with the replay driver (fuzz_replay.cpp), which
// runs every target over its seed and regression corpora in any build (CTest: test_fuzz_replay).
//
// The contract a target checks: parsing arbitrary bytes either succeeds or throws prefixtune::Error. Any other
// exception (std::invalid_argument from a bare std::stoll, nlohmann::json::type_error, std::bad_alloc from an
// unchecked size, ...) escapes and is reported as a failure, as are crashes, sanitizer reports and failed invariants
// (FUZZ_CHECK).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "prefixtune/core/error.hpp"
#include "prefixtune/io/bpe.hpp"

namespace prefixtune_fuzz {

using TargetFn = void (*)(const std::uint8_t*, std::size_t);

/// name -> body, for the replay driver.
inline std::map<std::string, TargetFn>& registry() {
  static std::map<std::string, TargetFn> r;
  return r;
}

struct Registrar {
  Registrar(const char* name, TargetFn fn) { registry()[name] = fn; }
};

/// A private scratch folder for file-based parsers, made once per process and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string templ = (std::filesystem::temp_directory_path() / "prefixtune_fuzz_XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

/// Writes bytes to scratch_dir()/name and returns the path.
inline std::string write_scratch(const std::string& name, std::string_view bytes) {
  const auto path = scratch_dir() / name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.string().c_str());
    std::abort();
  }
  return path.string();
}

/// Splits an input at the first "\n--8<--\n" (the seed files use it between the two files a parser reads).
inline std::pair<std::string_view, std::string_view> split_two(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kCut = "\n--8<--\n";
  const std::size_t at = all.find(kCut);
  if (at == std::string_view::npos) return {all, std::string_view()};
  return {all.substr(0, at), all.substr(at + kCut.size())};
}

/// GPT-2's real tokenizer (tests/data/gpt2-bpe), loaded once.
inline const prefixtune::Gpt2Tokenizer& gpt2_tokenizer() {
  static const prefixtune::Gpt2Tokenizer tok = prefixtune::Gpt2Tokenizer::load_dir(PREFIXTUNE_FUZZ_BPE_DIR);
  return tok;
}

/// Runs f; a prefixtune::Error is the expected way to reject bad input.
template <class F>
void expect_ok_or_error(F&& f) {
  try {
    f();
  } catch (const prefixtune::Error& e) {
    static const bool verbose = std::getenv("PREFIXTUNE_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  }
}

}  // namespace prefixtune_fuzz

/// An invariant of accepted input; a violation aborts (a finding).
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#if defined(PREFIXTUNE_FUZZ_LIBFUZZER)
#define PREFIXTUNE_FUZZ_TARGET(name)                                                  \
  static void prefixtune_fuzz_body(const std::uint8_t* data, std::size_t size);       \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
    prefixtune_fuzz_body(data, size);                                                 \
    return 0;                                                                         \
  }                                                                                   \
  static void prefixtune_fuzz_body(const std::uint8_t* data, std::size_t size)
#else
#define PREFIXTUNE_FUZZ_TARGET(name)                                                                             \
  static void prefixtune_fuzz_body_##name(const std::uint8_t* data, std::size_t size);                           \
  static const prefixtune_fuzz::Registrar prefixtune_fuzz_registrar_##name(#name, &prefixtune_fuzz_body_##name); \
  static void prefixtune_fuzz_body_##name(const std::uint8_t* data, std::size_t size)
#endif
