// SPDX-License-Identifier: MIT
// Fuzz target: GPT-2's real tokenizer decoding arbitrary ids (4 bytes each, little-endian). Ids out of range must
// throw; decode_lossy must return valid UTF-8.
#include <prefixtune/io/bpe.hpp>

#include <cstring>
#include <vector>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(bpe_decode) {
  using namespace prefixtune;
  std::vector<std::int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  prefixtune_fuzz::expect_ok_or_error([&] {
    const std::string lossy = prefixtune_fuzz::gpt2_tokenizer().decode_lossy(ids);
    prefixtune_fuzz::expect_ok_or_error([&] {
      detail::check_utf8(reinterpret_cast<const unsigned char*>(lossy.data()), lossy.size(), "decode_lossy");
    });
    const std::string exact = prefixtune_fuzz::gpt2_tokenizer().decode(ids);
    FUZZ_CHECK(exact.size() >= lossy.size() / 3);
  });
}
