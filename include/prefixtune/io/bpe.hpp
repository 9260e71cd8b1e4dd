// SPDX-License-Identifier: MIT
// GPT-2's byte-level BPE tokenizer (Gpt2Tokenizer), output-identical to OpenAI's gpt-2 encoder.py and HuggingFace's
// GPT2Tokenizer: strict UTF-8, the pre-tokenizer regex written by hand, merges by rank, a thread-safe word cache.
// The pieces: utf8.hpp, byte_unicode_map.hpp, pretokenize.hpp (over unicode_tables.hpp), bpe_model.hpp,
// bpe_files.hpp and gpt2_tokenizer.hpp.
#pragma once

#include "prefixtune/io/bpe_files.hpp"
#include "prefixtune/io/bpe_model.hpp"
#include "prefixtune/io/byte_unicode_map.hpp"
#include "prefixtune/io/gpt2_tokenizer.hpp"
#include "prefixtune/io/pretokenize.hpp"
#include "prefixtune/io/unicode_tables.hpp"
#include "prefixtune/io/utf8.hpp"
