// SPDX-License-Identifier: MIT
// Tests of io/bpe.hpp (GPT-2's byte-level BPE): the reference vectors, Python-regex corner cases, special tokens,
// round trips of random text, strict UTF-8, decode errors, validation of vocabulary and merges files, threads.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "prefixtune/io/bpe.hpp"
#include "prefixtune/io/file.hpp"
#include "test_util.hpp"

#ifndef PREFIXTUNE_TEST_DATA_DIR
#error "PREFIXTUNE_TEST_DATA_DIR must name the tests/data folder"
#endif

using namespace prefixtune;
namespace fs = std::filesystem;
using Ids = std::vector<std::int32_t>;

namespace {

const std::string kBpeDir = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe";

/// GPT-2's tokenizer, loaded once per test binary.
const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(kBpeDir);
  return tok;
}

struct Vector {
  std::string text;
  Ids ids;
};

/// test_vectors.jsonl: {"text": ..., "ids": [...]} per line (made with gpt-3-encoder, see its README).
const std::vector<Vector>& vectors() {
  static const std::vector<Vector> v = [] {
    std::vector<Vector> out;
    std::ifstream f(kBpeDir + "/test_vectors.jsonl");
    for (std::string line; std::getline(f, line);) {
      const auto j = nlohmann::json::parse(line);
      out.push_back({j.at("text").get<std::string>(), j.at("ids").get<Ids>()});
    }
    return out;
  }();
  return v;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  REQUIRE(f.good());
}

Ids concat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// A tiny vocabulary: the 256 byte tokens (id = byte) plus `extra` (raw bytes) from id 256 on.
nlohmann::json mini_vocab(const std::vector<std::string>& extra) {
  nlohmann::json v = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) v[detail::bytes_to_token_text(std::string(1, static_cast<char>(b)))] = b;
  for (std::size_t k = 0; k < extra.size(); ++k) v[detail::bytes_to_token_text(extra[k])] = 256 + k;
  return v;
}

/// Writes vocab and merges text into dir and returns the error message of loading them ("" if none).
std::string load_error(const test::TempDir& dir, const std::string& vocab, const std::string& merges) {
  write_text(dir.file("vocab.json"), vocab);
  write_text(dir.file("merges.txt"), merges);
  return test::error_of([&] { Gpt2Tokenizer::load(dir.file("vocab.json"), dir.file("merges.txt")); });
}

}  // namespace

TEST_CASE("bpe: GPT-2 vocabulary facts") {
  const Gpt2Tokenizer& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.num_merges() == 50000);
  CHECK(tok.eot_id() == 50256);
  CHECK(tok.id_of("<|endoftext|>") == 50256);
  CHECK(tok.id_of("\xC4\xA0the") == 262);  // "Ġthe"
  CHECK(tok.token_of(262) == "\xC4\xA0the");
  CHECK(tok.token_bytes(262) == " the");
  CHECK(tok.token_of(50256) == "<|endoftext|>");
  CHECK_FALSE(tok.id_of("no-such-token-anywhere").has_value());
  CHECK_FALSE(tok.id_of("a b").has_value());  // a raw space is outside the byte alphabet
  CHECK_FALSE(tok.id_of("").has_value());
  CHECK(test::error_of([&] { tok.token_of(50257); }).find("id 50257 is outside the vocabulary") != std::string::npos);
  CHECK(test::error_of([&] { tok.token_bytes(-1); }).find("id -1") != std::string::npos);
  for (int b = 0; b < 256; ++b) {  // the byte tokens are ids 0..255
    const std::string byte(1, static_cast<char>(b));
    const std::optional<std::int32_t> id = tok.id_of(detail::bytes_to_token_text(byte));
    REQUIRE(id.has_value());
    CHECK(*id < 256);
    CHECK(tok.token_bytes(*id) == byte);
  }
}

TEST_CASE("bpe: every reference vector encodes and decodes exactly") {
  const Gpt2Tokenizer& tok = gpt2();
  REQUIRE(vectors().size() == 107);
  for (const Vector& v : vectors()) {
    INFO("text: ", v.text);
    CHECK(tok.encode(v.text) == v.ids);
    CHECK(tok.decode(v.ids) == v.text);
    CHECK(tok.decode_lossy(v.ids) == v.text);
    if (v.text.find("<|endoftext|>") == std::string::npos) CHECK(tok.encode(v.text, true) == v.ids);
  }
}

TEST_CASE("bpe: the regex module's semantics (computed with OpenAI's encoder.py and `regex`)") {
  const Gpt2Tokenizer& tok = gpt2();
  // \s is Unicode White_Space: U+0085 is a space, U+FEFF is not (JavaScript's \s says the opposite)...
  CHECK(tok.encode("x \xC2\x85y") == Ids{87, 220, 126, 227, 88});
  CHECK(tok.encode(" \xEF\xBB\xBFx") == Ids{27332, 119, 123, 87});
  // ...and U+001C..U+001F are not, though Python's str.isspace() says they are (that would give {216, 338}).
  CHECK(tok.encode("\x1c's") == Ids{216, 6, 82});
  CHECK(tok.encode("a\x1f\x1f\x1f"
                   "b") == Ids{64, 219, 219, 219, 65});
  // \s+(?!\S) leaves the last space to the next word; other whitespace stands alone.
  CHECK(tok.encode("         x") == Ids{220, 220, 220, 220, 220, 220, 220, 220, 2124});
  CHECK(tok.encode("x\xE3\x80\x80\xE3\x80\x80y") == Ids{87, 5099, 222, 5099, 222, 88});
  CHECK(tok.encode("a\xC2\xA0"
                   "b") == Ids{64, 1849, 65});
  CHECK(tok.encode("\r\n") == Ids{201, 198});
  // Contractions are case-sensitive.
  CHECK(tok.encode("DON'T") == Ids{41173, 6, 51});
  CHECK(tok.encode("don't") == Ids{9099, 470});
  // Runs of one character (many equal pairs merge in one pass).
  CHECK(tok.encode("aaaaaaa") == Ids{24794, 46071});
  CHECK(tok.encode("!!!!!!!!") == Ids{34635});
  CHECK(tok.encode("0000000") == Ids{24598});
  CHECK(tok.encode("").empty());
}

TEST_CASE("bpe: <|endoftext|> is text by default and id eot_id() with parse_special") {
  const Gpt2Tokenizer& tok = gpt2();
  const Ids plain{27, 91, 437, 1659, 5239, 91, 29};
  CHECK(tok.encode("<|endoftext|>") == plain);
  CHECK(tok.encode("<|endoftext|>", true) == Ids{50256});
  CHECK(tok.encode("<|endoftext|><|endoftext|>", true) == Ids{50256, 50256});
  CHECK(tok.encode("Hello<|endoftext|> world", true) ==
        concat(concat(tok.encode("Hello"), {50256}), tok.encode(" world")));
  CHECK(tok.encode("a <|endoftext|>", true) == Ids{64, 220, 50256});
  CHECK(tok.encode("<|endoftext|", true) == tok.encode("<|endoftext|"));
  CHECK(tok.encode("<|ENDOFTEXT|>", true) == tok.encode("<|ENDOFTEXT|>"));
  CHECK(tok.decode({50256}) == "<|endoftext|>");
  CHECK(tok.decode(tok.encode("x<|endoftext|>y", true)) == "x<|endoftext|>y");
}

TEST_CASE("bpe: random valid UTF-8 round-trips, ids in range") {
  const Gpt2Tokenizer& tok = gpt2();
  const std::vector<std::vector<std::uint32_t>> pools = {
      {'a', 'b', 'e', 'q', 'Z', 'T', '0', '7', ' ', ' ', '\'', 's', 't', '.', ',', '!', '"', '-', '(', '<', '|'},
      {0xE9, 0xFC, 0xDF, 0xF8, 0xC6, 0x152, 0xF1, 0x101, 0x17E, 0x1EA1},                      // Latin
      {0x4E2D, 0x6587, 0x65E5, 0x672C, 0x8A9E, 0xD55C, 0x20000, 0x3042, 0x30AB},              // CJK
      {0x1F600, 0x1F389, 0x1F44D, 0x1F3FD, 0x200D, 0x1F468, 0x1F1FA, 0x1F1F8, 0xFE0F},        // emoji, ZWJ
      {0x301, 0x308, 0x327, 0x20DD, 0x93F},                                                   // combining marks
      {' ', '\t', '\n', '\r', 0x0B, 0x0C, 0x85, 0xA0, 0x3000, 0x2028, 0x2003, 0xFEFF, 0x1C},  // spaces
      {0x0, 0x1, 0x7F, 0xAD, 0x200B, 0x10FFFF, 0xFFFD, 0x660, 0xBD, 0x2167, 0x1D7D9},         // controls, numbers
  };
  std::mt19937 rng(20240531);
  for (int iter = 0; iter < 1500; ++iter) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) {
      const auto& pool = pools[rng() % pools.size()];
      detail::utf8_append(s, pool[rng() % pool.size()]);
      if (rng() % 11 == 0) s += "\r\n";
    }
    INFO("text: ", s);
    const Ids ids = tok.encode(s);
    for (const std::int32_t id : ids) REQUIRE((id >= 0 && id < 50256));
    CHECK(tok.decode(ids) == s);
    CHECK(tok.encode(s, true) == ids);
  }
}

TEST_CASE("bpe: long words (no cache, heap merges) round-trip") {
  const Gpt2Tokenizer& tok = gpt2();
  const std::string as(50000, 'a');
  CHECK(tok.decode(tok.encode(as)) == as);
  std::string letters;
  std::mt19937 rng(7);
  for (int k = 0; k < 20000; ++k) letters += static_cast<char>('a' + rng() % 26);
  const Ids ids = tok.encode(letters);
  CHECK(ids.size() < letters.size());
  CHECK(tok.decode(ids) == letters);
}

TEST_CASE("bpe: invalid UTF-8 is refused, naming the byte offset") {
  const Gpt2Tokenizer& tok = gpt2();
  const auto err = [&](const std::string& s, bool special = false) {
    return test::error_of([&] { tok.encode(s, special); });
  };
  CHECK(err("ab\x80"
            "c")
            .find("byte offset 2: unexpected continuation byte") != std::string::npos);
  CHECK(err("x\xC0\xAF").find("byte offset 1: overlong encoding") != std::string::npos);
  CHECK(err("\xE0\x80\xAF").find("byte offset 0: overlong encoding") != std::string::npos);
  CHECK(err("abc\xED\xA0\x80").find("byte offset 3: UTF-16 surrogate") != std::string::npos);
  CHECK(err("hello \xE2\x82").find("byte offset 6: truncated sequence") != std::string::npos);
  CHECK(err("\xF4\x90\x80\x80").find("byte offset 0: code point above U+10FFFF") != std::string::npos);
  CHECK(err("ok\xFF").find("byte offset 2: byte that never occurs") != std::string::npos);
  CHECK(err("\xE2\x28\xA1").find("byte offset 0: invalid continuation byte (bytes E2 28)") != std::string::npos);
  CHECK(err("<|endoftext|>\x80", true).find("byte offset 13") != std::string::npos);
  CHECK(err("fine \xF0\x9F\x98\x80 then \xF0\x9F\x98").find("byte offset 15") != std::string::npos);
}

TEST_CASE("bpe: decode checks ids; decode_lossy replaces like Python's errors=\"replace\"") {
  const Gpt2Tokenizer& tok = gpt2();
  CHECK(test::error_of([&] { tok.decode({0, 50257}); }).find("id 50257 at position 1") != std::string::npos);
  CHECK(test::error_of([&] { tok.decode({-1}); }).find("id -1 at position 0") != std::string::npos);
  const std::int32_t c3 = *tok.id_of("\xC3\x83");  // "Ã": the byte 0xC3, half of "é"
  CHECK(tok.decode({c3}) == "\xC3");
  CHECK(tok.decode_lossy({c3, 220}) == "\xEF\xBF\xBD ");
  // Expected strings from Python: bytes.decode("utf-8", errors="replace").
  const std::string r = "\xEF\xBF\xBD";
  CHECK(detail::utf8_replace_invalid("\xE2\x82") == r);
  CHECK(detail::utf8_replace_invalid("\xC0\xAF") == r + r);
  CHECK(detail::utf8_replace_invalid("\xED\xA0\x80") == r + r + r);
  CHECK(detail::utf8_replace_invalid("\xF0\x9F\x98"
                                     "a") == r + "a");
  CHECK(detail::utf8_replace_invalid("\xF4\x90\x80\x80") == r + r + r + r);
  CHECK(detail::utf8_replace_invalid("\xE2(\xA1") == r + "(" + r);
  CHECK(detail::utf8_replace_invalid("\xF0\x9F\x98\x80\xFF") == "\xF0\x9F\x98\x80" + r);
}

TEST_CASE("bpe: the word cache is shared, bounded to results it cannot change, and thread-safe") {
  const Gpt2Tokenizer tok = gpt2();  // a copy shares vocabulary and cache
  tok.clear_cache();
  CHECK(gpt2().cache_size() == 0);
  const Ids first = tok.encode("hello wonderful world");
  CHECK(tok.cache_size() >= 3);
  CHECK(tok.encode("hello wonderful world") == first);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        if (t == 0) tok.clear_cache();
        for (const Vector& v : vectors()) failures[static_cast<std::size_t>(t)] += tok.encode(v.text) != v.ids;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == std::vector<int>(4, 0));
}

TEST_CASE("bpe: load_dir takes HuggingFace or OpenAI file names") {
  test::TempDir dir;
  fs::create_symlink(fs::absolute(kBpeDir + "/encoder.json"), dir.file("vocab.json"));
  fs::create_symlink(fs::absolute(kBpeDir + "/vocab.bpe"), dir.file("merges.txt"));
  const Gpt2Tokenizer hf = Gpt2Tokenizer::load_dir(dir.path.string());
  CHECK(hf.encode(vectors()[3].text) == vectors()[3].ids);
  test::TempDir empty;
  CHECK(test::error_of([&] { Gpt2Tokenizer::load_dir(empty.path.string()); }).find("no GPT-2 tokenizer files") !=
        std::string::npos);
  CHECK(test::error_of([&] {
          Gpt2Tokenizer::load(empty.file("nope.json"), empty.file("nope.txt"));
        }).find("nope.json") != std::string::npos);
}

TEST_CASE("bpe: a tiny vocabulary; merges of one rank apply as a batch before newer pairs") {
  test::TempDir dir;
  // rank 0: ("ab", "a"), rank 1: ("a", "b"). encoder.py turns "abab" into ab|ab (all (a, b) first), not aba|b.
  write_text(dir.file("vocab.json"), mini_vocab({"ab", "aba"}).dump());
  write_text(dir.file("merges.txt"), "#version: 0.2\nab a\na b\n");
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));
  CHECK(tok.vocab_size() == 258);
  CHECK(tok.num_merges() == 2);
  CHECK(tok.encode("abab") == Ids{256, 256});
  CHECK(tok.encode("aba") == Ids{257});
  CHECK(tok.encode(" ab") == Ids{' ', 256});
  CHECK(tok.encode("<|endoftext|>", false).size() == 13);
  CHECK(test::error_of([&] { tok.eot_id(); }).find("no <|endoftext|>") != std::string::npos);
  CHECK(test::error_of([&] { tok.encode("x", true); }).find("no <|endoftext|>") != std::string::npos);
}

TEST_CASE("bpe: bad vocabulary and merges files are refused, naming file and line or token") {
  test::TempDir dir;
  const std::string vocab_path = dir.file("vocab.json"), merges_path = dir.file("merges.txt");
  const std::string good_vocab = mini_vocab({"ab", "aba"}).dump(), good_merges = "#version: 0.2\na b\nab a\n";
  CHECK(load_error(dir, good_vocab, good_merges).empty());
  CHECK(load_error(dir, good_vocab, "a b\nab a").empty());  // no header, no final newline

  const auto vocab_err = [&](const std::string& vocab) { return load_error(dir, vocab, good_merges); };
  const auto has = [](const std::string& msg, const std::string& part) {
    INFO(msg);
    return msg.find(part) != std::string::npos;
  };
  std::string e = vocab_err("{\"a\": 1,");
  CHECK((has(e, vocab_path) && has(e, "is not valid JSON")));
  nlohmann::json v = mini_vocab({"ab"});
  v["ab"] = 1.5;
  CHECK(has(vocab_err(v.dump()), "token 'ab' has the number 1.5, not an integer id"));
  v["ab"] = "256";
  CHECK(has(vocab_err(v.dump()), "token 'ab' has the string '256', not an integer id"));
  v["ab"] = 5;
  e = vocab_err(v.dump());
  CHECK((has(e, vocab_path) && has(e, "the id 5 belongs to both")));
  v["ab"] = 300;
  CHECK(has(vocab_err(v.dump()), "token 'ab' has the id 300, outside [0, 257)"));
  v["ab"] = -3;
  CHECK(has(vocab_err(v.dump()), "token 'ab' has the negative id -3"));
  CHECK(has(vocab_err("[1, 2]"), "expected a JSON object token -> id, found an array"));
  v = mini_vocab({});
  v.erase("a");
  v["ab"] = 'a';
  CHECK(has(vocab_err(v.dump()), "lacks the single-byte token 'a' (byte 97)"));
  v = mini_vocab({"ab"});
  v["a b"] = 257;
  CHECK(has(vocab_err(v.dump()), "token 'a b' has a character outside GPT-2's 256-symbol byte alphabet"));
  std::string dup = mini_vocab({}).dump();  // "!" twice, with ids 0 and 256
  dup.insert(1, "\"!\": 256, ");
  CHECK(has(vocab_err(dup), "token '!' appears twice"));

  const auto merges_err = [&](const std::string& merges) { return load_error(dir, good_vocab, merges); };
  e = merges_err("#version: 0.2\nab\n");
  CHECK((has(e, merges_path) && has(e, "line 2: expected two tokens separated by one space, got 'ab'")));
  CHECK(has(merges_err("#version: 0.2\na b c\n"), "line 2: expected two tokens"));
  CHECK(has(merges_err("#version: 0.2\na b\n\nab a\n"), "line 3: expected two tokens"));
  CHECK(has(merges_err("#version: 0.2\na zz\n"), "line 2: 'zz' is not a token of the vocabulary"));
  CHECK(has(merges_err("#version: 0.2\nb a\n"), "line 2: the merged token 'ba' is not in the vocabulary"));
  CHECK(has(merges_err("#version: 0.2\na b\nab a\na b\n"), "line 4 repeats the merge of line 2"));
  CHECK(has(merges_err("#version: 0.2\r\na b\r\n"), "line 2 ends in a carriage return"));
  CHECK(has(merges_err("#version: 0.2\na b\n\xC3(\n"), "invalid UTF-8 at byte offset 18"));

  // Too large: refused from the size alone (a sparse file, nothing read).
  write_text(vocab_path, good_vocab);
  fs::resize_file(merges_path, detail::kMaxBpeFileBytes + 1);
  CHECK(has(test::error_of([&] { Gpt2Tokenizer::load(vocab_path, merges_path); }), "more than the limit"));
}

TEST_CASE("bpe: a vocabulary claiming 10^9 entries or fewer than 256 is refused without allocating for it") {
  test::TempDir dir;
  // Ids up to 10^9 in a small file: the tables are sized by the entries actually present, so this is an error,
  // not a 10^9-entry allocation.
  auto v = mini_vocab({});
  v["\xc4\xa0huge"] = 1000000000;
  std::string e = load_error(dir, v.dump(), "#version: 0.2\n");
  CHECK(e.find("has the id 1000000000, outside [0, 257)") != std::string::npos);
  nlohmann::json small = nlohmann::json::object();
  small["a"] = 0;
  e = load_error(dir, small.dump(), "");
  CHECK(e.find("has 1 entries; a byte-level BPE vocabulary needs at least the 256 single-byte tokens") !=
        std::string::npos);
}
