// SPDX-License-Identifier: MIT
// Fuzz target: a tokenizer's vocab.json and merges.txt (the input holds both, cut by "\n--8<--\n"), loaded by
// Gpt2Tokenizer::load; a tokenizer that loads must encode and decode.
#include <prefixtune/io/bpe.hpp>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(bpe_files) {
  using namespace prefixtune;
  const auto [vocab, merges] = prefixtune_fuzz::split_two(data, size);
  const std::string vp = prefixtune_fuzz::write_scratch("vocab.json", vocab);
  const std::string mp = prefixtune_fuzz::write_scratch("merges.txt", merges);
  prefixtune_fuzz::expect_ok_or_error([&] {
    const Gpt2Tokenizer tok = Gpt2Tokenizer::load(vp, mp);
    FUZZ_CHECK(tok.vocab_size() >= 1);
    std::vector<std::int32_t> ids;
    for (std::int32_t i = 0; i < tok.vocab_size() && i < 64; ++i) ids.push_back(i);
    tok.decode_lossy(ids);
    prefixtune_fuzz::expect_ok_or_error([&] { tok.encode("Hello world, it's 2024! <|endoftext|>", true); });
    prefixtune_fuzz::expect_ok_or_error([&] { tok.eot_id(); });
  });
}
