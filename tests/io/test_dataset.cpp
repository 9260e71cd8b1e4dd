// SPDX-License-Identifier: MIT
// Tests of io/dataset.hpp: E2E and JSON-lines parsing with file:line errors, the paper's example encoding with
// labels on the target only (real GPT-2 vocabulary), length policies, right-padded batches, seeded shuffling.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "prefixtune/io/dataset.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::TempDir;

namespace {

const Gpt2Tokenizer& tokenizer() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe");
  return tok;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("dataset: E2E and JSON lines are parsed with their line numbers") {
  TempDir dir;
  write_text_file_atomic(dir.file("train.txt"),
                         "name : Blue Spice | Type : coffee shop||A coffee shop called Blue Spice .\r\n"
                         "\n"
                         "name : Aromi | area : city centre||Aromi is in the city centre .\n"
                         "a||b");
  const auto pairs = read_pairs(dir.file("train.txt"));
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0].source == "name : Blue Spice | Type : coffee shop");
  CHECK(pairs[0].target == "A coffee shop called Blue Spice .");
  CHECK(pairs[1].line == 3);
  CHECK(pairs[2].source == "a");
  CHECK(pairs[2].target == "b");
  write_text_file_atomic(dir.file("data.jsonl"), "{\"source\": \"x | y\", \"target\": \"z\", \"id\": 4}\n\n");
  const auto json = read_pairs(dir.file("data.jsonl"));
  REQUIRE(json.size() == 1);
  CHECK(json[0].source == "x | y");
  write_text_file_atomic(dir.file("data.txt"), "  {\"source\": \"s\", \"target\": \"t\"}\n");
  CHECK(read_pairs(dir.file("data.txt"))[0].target == "t");  // detected from the first character
}

TEST_CASE("dataset: bad lines name the file and the line") {
  TempDir dir;
  auto err = [&](const std::string& name, const std::string& text) {
    write_text_file_atomic(dir.file(name), text);
    return error_of([&] { (void)read_pairs(dir.file(name)); });
  };
  std::string e = err("a.txt", "ok||fine\nno separator here\n");
  CHECK(has(e, "a.txt:2: expected 'source||target', found no '||'"));
  CHECK(has(err("b.txt", "x||y||z\n"), "b.txt:1: expected exactly one '||' separator"));
  CHECK(has(err("c.jsonl", "{\"source\": \"s\", \"target\": \"t\"}\n{\"source\": 1, \"target\": \"t\"}\n"),
            "c.jsonl:2: field \"source\" missing or not a string"));
  CHECK(has(err("d.jsonl", "{\"source\": \"s\"}\n"), "d.jsonl:1: field \"target\" missing"));
  CHECK(has(err("e.jsonl", "{\"source\": \"s\", \n"), "e.jsonl:1: invalid JSON"));
  CHECK(has(err("f.jsonl", "[1, 2]\n"), "f.jsonl:1: a JSON line must be an object"));
  CHECK(has(error_of([&] { (void)read_pairs(dir.file("missing.txt")); }), "missing.txt"));
}

TEST_CASE("dataset: the paper's training text, labels only on the target") {
  const auto& tok = tokenizer();
  const TextPair pair{"name : Blue Spice | Type : coffee shop", "A coffee shop called Blue Spice .", 1};
  const Example ex = encode_example(tok, pair);
  // Identical to encoding the paper's string with <|endoftext|> as the special token.
  CHECK(ex.ids == tok.encode(" " + pair.source + " <|endoftext|> " + pair.target + " <|endoftext|>", true));
  const auto target = tok.encode(" " + pair.target + " ");
  const auto sep = static_cast<std::size_t>(std::find(ex.ids.begin(), ex.ids.end(), tok.eot_id()) - ex.ids.begin());
  REQUIRE(ex.targets.size() == ex.ids.size());
  for (std::size_t t = 0; t < sep; ++t) CHECK(ex.targets[t] == kIgnoreLabel);
  for (std::size_t t = sep; t + 1 < ex.ids.size(); ++t) CHECK(ex.targets[t] == ex.ids[t + 1]);
  CHECK(ex.targets.back() == kIgnoreLabel);
  CHECK(ex.targets[ex.ids.size() - 2] == tok.eot_id());  // the final <|endoftext|> is predicted
  CHECK(std::count_if(ex.targets.begin(), ex.targets.end(), [](int v) { return v != kIgnoreLabel; }) ==
        static_cast<std::ptrdiff_t>(target.size() + 1));
  // "<|endoftext|>" typed inside a source stays text: the label boundary is still the separator.
  const Example odd = encode_example(tok, TextPair{"a <|endoftext|> b", "c", 2});
  CHECK(std::count(odd.ids.begin(), odd.ids.end(), tok.eot_id()) == 2);
  // The decoding prompt is the example up to and including its separator.
  CHECK(encode_source_prompt(tok, pair.source) == std::vector<std::int32_t>(ex.ids.begin(), ex.ids.begin() + sep + 1));
  CHECK(encode_source_prompt(tok, pair.source) == tok.encode(" " + pair.source + " <|endoftext|>", true));
}

TEST_CASE("dataset: maximum length policies") {
  const auto& tok = tokenizer();
  const TextPair pair{"one two three four five six seven eight", "nine ten", 7};
  const std::size_t full = encode_example(tok, pair).ids.size();
  CHECK(has(error_of([&] { (void)encode_example(tok, pair, full - 1); }), "line 7: example of"));
  std::size_t skipped = 0;
  CHECK(encode_examples(tok, {pair, pair}, full - 1, LengthPolicy::Skip, &skipped).empty());
  CHECK(skipped == 2);
  const Example cut = encode_example(tok, pair, full - 3, LengthPolicy::TruncateSource);
  CHECK(cut.ids.size() == full - 3);
  const Example whole = encode_example(tok, pair);
  CHECK(std::equal(whole.ids.end() - 6, whole.ids.end(), cut.ids.end() - 6));  // the target is never cut
  CHECK(has(error_of([&] { (void)encode_example(tok, pair, 3, LengthPolicy::TruncateSource); }),
            "the target alone needs"));
}

TEST_CASE("dataset: right-padded batches and seeded shuffling") {
  const auto& tok = tokenizer();
  const auto examples =
      encode_examples(tok, {TextPair{"short", "a", 1}, TextPair{"a much longer source text here", "b c d", 2}});
  const std::vector<std::size_t> order = {1, 0};
  const TokenBatch b = make_batch(examples, order, 0, 2, tok.eot_id());
  const auto T = static_cast<std::int64_t>(examples[1].ids.size());
  REQUIRE(b.ids.shape() == Shape{2, T});
  const auto n0 = static_cast<std::int64_t>(examples[0].ids.size());
  for (std::int64_t t = 0; t < T; ++t) {
    CHECK(b.mask(0, t) == 1);
    CHECK(b.mask(1, t) == (t < n0 ? 1 : 0));
    if (t >= n0) {
      CHECK(b.targets(1, t) == kIgnoreLabel);
      CHECK(b.ids(1, t) == tok.eot_id());
    }
  }
  // Every target token (" a", then the space before <|endoftext|>) plus the final <|endoftext|>.
  CHECK(b.num_labels == static_cast<std::int64_t>(tok.encode(" a ").size() + 1 + tok.encode(" b c d ").size() + 1));
  CHECK(has(error_of([&] { (void)make_batch(examples, order, 1, 1, 0); }), "is empty"));

  Rng r1(5), r2(5), r3(6);
  const auto o1 = shuffled_order(100, r1), o2 = shuffled_order(100, r2), o3 = shuffled_order(100, r3);
  CHECK(o1 == o2);
  CHECK(o1 != o3);
  CHECK(std::set<std::size_t>(o1.begin(), o1.end()).size() == 100);
}
