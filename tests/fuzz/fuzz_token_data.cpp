// SPDX-License-Identifier: MIT
// Fuzz target: a pre-tokenized data file (JSON lines {"input_ids": [...], "labels": [...]}) read by
// read_token_examples for a vocabulary of 50 tokens, and its first line read as a generation prompt.
#include <prefixtune/io/token_data.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(token_data) {
  using namespace prefixtune;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = prefixtune_fuzz::write_scratch("tokens.jsonl", text);
  prefixtune_fuzz::expect_ok_or_error([&] {
    (void)is_token_data(text);
    for (const Example& e : read_token_examples(path, 50, 64)) {
      FUZZ_CHECK(!e.ids.empty() && e.ids.size() == e.targets.size() && e.ids.size() <= 64);
      for (const auto id : e.ids) FUZZ_CHECK(id >= 0 && id < 50);
      for (const auto t : e.targets) FUZZ_CHECK(t == kIgnoreLabel || (t >= 0 && t < 50));
      FUZZ_CHECK(e.targets.back() == kIgnoreLabel);
    }
  });
  prefixtune_fuzz::expect_ok_or_error([&] {
    const auto j = nlohmann::json::parse(text.substr(0, text.find('\n')), nullptr, false);
    if (j.is_object() && j.contains("input_ids"))
      for (const auto id : prompt_token_ids(j, 50, "stdin", 1)) FUZZ_CHECK(id >= 0 && id < 50);
  });
}
