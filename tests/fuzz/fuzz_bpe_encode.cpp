// SPDX-License-Identifier: MIT
// Fuzz target: GPT-2's real tokenizer encoding arbitrary bytes. Invalid UTF-8 must throw; valid text must decode
// back to itself, with and without <|endoftext|> parsing.
#include <prefixtune/io/bpe.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(bpe_encode) {
  using namespace prefixtune;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  prefixtune_fuzz::expect_ok_or_error([&] {
    const auto ids = prefixtune_fuzz::gpt2_tokenizer().encode(text);
    FUZZ_CHECK(prefixtune_fuzz::gpt2_tokenizer().decode(ids) == text);
    const auto special = prefixtune_fuzz::gpt2_tokenizer().encode(text, true);
    FUZZ_CHECK(special.size() <= ids.size());
    FUZZ_CHECK(prefixtune_fuzz::gpt2_tokenizer().decode(special) == text);
  });
}
