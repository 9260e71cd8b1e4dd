// SPDX-License-Identifier: MIT
// Fuzz target: a data file (E2E "source||target" lines, or JSON lines when the first byte is odd) read by read_pairs
// and tokenized by encode_examples under a length limit.
#include <prefixtune/io/dataset.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(dataset) {
  using namespace prefixtune;
  if (size == 0) return;
  const bool jsonl = (data[0] & 1) != 0;
  const auto policy = static_cast<LengthPolicy>((data[0] >> 1) % 3);
  const std::string path = prefixtune_fuzz::write_scratch(
      jsonl ? "data.jsonl" : "data.txt", std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  prefixtune_fuzz::expect_ok_or_error([&] {
    const auto pairs = read_pairs(path);
    const auto examples = encode_examples(prefixtune_fuzz::gpt2_tokenizer(), pairs, 48, policy);
    for (const Example& e : examples) {
      FUZZ_CHECK(e.ids.size() == e.targets.size() && e.ids.size() <= 48);
      for (const auto id : e.ids) FUZZ_CHECK(id >= 0 && id < prefixtune_fuzz::gpt2_tokenizer().vocab_size());
    }
  });
}
