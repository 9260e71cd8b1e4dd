// SPDX-License-Identifier: MIT
// Tests of metrics/bleu.hpp: the 13a tokenizer, n-gram statistics worked out by hand (clipping, brevity penalty, the
// closest-reference rule, exp smoothing), and the exact scores published in sacreBLEU's README and test suite.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/metrics/bleu.hpp"

using namespace prefixtune;

namespace {

using Stats = std::array<std::int64_t, 4>;

BleuOptions raw_options(double floor_value) {  // sacrebleu.raw_corpus_bleu(sys, refs, floor_value)
  BleuOptions o;
  o.tokenizer = BleuTokenizer::None;
  o.smooth = BleuSmooth::Floor;
  o.smooth_value = floor_value;
  o.effective_order = true;
  return o;
}

// sacreBLEU's README / test_bleu.py corpus: two reference streams, regrouped per hypothesis.
const std::vector<std::string> kReadmeHyps = {"The dog bit the man.", "It wasn't surprising.",
                                              "The man had just bitten him."};
const std::vector<std::vector<std::string>> kReadmeRefs = {{"The dog bit the man.", "The dog had bit the man."},
                                                           {"It was not unexpected.", "No one was surprised."},
                                                           {"The man bit him first.", "The man had bitten the dog."}};

}  // namespace

TEST_CASE("tokenize_13a: punctuation, numbers, dashes, quotes, entities") {
  CHECK(tokenize_13a("Hello, world!") == "Hello , world !");
  CHECK(tokenize_13a("the end.") == "the end .");
  CHECK(tokenize_13a("It costs 1,000.5 dollars.") == "It costs 1,000.5 dollars .");  // '.' ',' between digits stay
  CHECK(tokenize_13a("1990-2000 and well-known -5 a-1") == "1990 - 2000 and well-known -5 a-1");  // '-' after a digit
  CHECK(tokenize_13a("He said \"hi\" (twice)") == "He said \" hi \" ( twice )");
  CHECK(tokenize_13a("It wasn't me") == "It wasn't me");  // the apostrophe is not split
  CHECK(tokenize_13a("Tom &amp; Jerry &lt;b&gt; &quot;x&quot;") == "Tom & Jerry < b > \" x \"");
  CHECK(tokenize_13a("&amp;lt;") == "<");  // the unescapes run one after the other, as str.replace does
  CHECK(tokenize_13a("<skipped> a") == "a");
  CHECK(tokenize_13a("line-\nbreak\nnext") == "linebreak next");
  CHECK(tokenize_13a("e.g. U.S.A.") == "e . g . U . S . A .");
  CHECK(tokenize_13a("$5.00 or 5.- or .5 or 5.") == "$ 5.00 or 5 . - or . 5 or 5 .");
  // re.sub scans without overlaps: the second '.' of ".." is consumed by the first match of each pass.
  CHECK(tokenize_13a("a..b 3..4 1,2,3 ,5 5, x,y") == "a . . b 3 . . 4 1,2,3 , 5 5 , x , y");
  CHECK(tokenize_13a("a/b_c@d#e+f=g~h|i^j{k}[l]\\m`n*o%p;q:r?s<t>u") ==
        "a / b _ c @ d # e + f = g ~ h | i ^ j { k } [ l ] \\ m ` n * o % p ; q : r ? s < t > u");
  CHECK(tokenize_13a("Caf\xc3\xa9 au lait.") == "Caf\xc3\xa9 au lait .");  // UTF-8 passes through
  // Python's str.split() whitespace: NBSP, ideographic space, em space, \x1c.
  CHECK(tokenize_13a("x\xc2\xa0y\xe3\x80\x80z\xe2\x80\x83w") == "x y z w");
  CHECK(tokenize_13a("tab\tsep  \x1c"
                     "fs") == "tab sep fs");
  CHECK(tokenize_13a("bad \xff\xfe bytes.") == "bad \xff\xfe bytes .");
  CHECK(tokenize_13a("") == "");
  CHECK(tokenize_13a("  ") == "");
}

TEST_CASE("bleu_tokens: rstrip, lowercase, the none tokenizer") {
  CHECK(bleu_tokens("A b.\n") == std::vector<std::string>{"A", "b", "."});
  BleuOptions lc;
  lc.lowercase = true;
  CHECK(bleu_tokens("&QUOT;Caf\xc3\x89 ABC&quot;", lc) == std::vector<std::string>{"\"", "caf\xc3\xa9", "abc", "\""});
  // str.lower() on UTF-8: Latin-1, Latin Extended-A/B (U+0130 -> "i" U+0307), Cyrillic; Greek is left as is.
  CHECK(bleu_lowercase("\xc4\xb0STANBUL \xc5\xb8 \xc5\x81\xc3\x93"
                       "D\xc5\xb9 \xc3\x80\xc3\x89\xc3\x97 \xc8\x98\xc8\x9a "
                       "\xd0\x9c\xd0\xa1 \xd0\x81\xd0\xb6 \xce\x91 \xff") ==
        "i\xcc\x87stanbul \xc3\xbf \xc5\x82\xc3\xb3"
        "d\xc5\xba \xc3\xa0\xc3\xa9\xc3\x97 \xc8\x99\xc8\x9b "
        "\xd0\xbc\xd1\x81 \xd1\x91\xd0\xb6 \xce\x91 \xff");
  BleuOptions none;
  none.tokenizer = BleuTokenizer::None;
  CHECK(bleu_tokens(" x, y. ", none) == std::vector<std::string>{"x,", "y."});
}

TEST_CASE("corpus_bleu: counts, exp smoothing of a zero 4-gram count") {
  // hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 tokens each, BP = 1):
  //   1-grams: the x2, cat, on, mat match          -> 5/6
  //   2-grams: the cat, on the, the mat             -> 3/5
  //   3-grams: on the mat                           -> 1/4
  //   4-grams: none                                 -> 0/3, exp smoothing: 100 / (2 * 3) = 16.67%
  //   BLEU = (83.33 * 60 * 25 * 16.67)^(1/4) = 2083333.33^(1/4) = 37.9918
  const BleuScore s = corpus_bleu({"the cat sat on the mat"}, {{"the cat is on the mat"}});
  CHECK(s.counts == Stats{5, 3, 1, 0});
  CHECK(s.totals == Stats{6, 5, 4, 3});
  CHECK(s.precisions[3] == doctest::Approx(100.0 / 6.0));
  CHECK(s.score == doctest::Approx(37.99178428257963).epsilon(1e-12));
  CHECK(s.to_string() == "BLEU = 37.99 83.3/60.0/25.0/16.7 (BP = 1.000 ratio = 1.000 hyp_len = 6 ref_len = 6)");
  // Without smoothing the zero 4-gram precision makes the score 0.
  BleuOptions none;
  none.smooth = BleuSmooth::None;
  CHECK(corpus_bleu({"the cat sat on the mat"}, {{"the cat is on the mat"}}, none).score == 0.0);
}

TEST_CASE("corpus_bleu: brevity penalty and effective order") {
  // hyp "the cat sat on the" (5) vs ref "the cat sat on the mat" (6): all n-grams match, BP = exp(1 - 6/5).
  const BleuScore s = corpus_bleu({"the cat sat on the"}, {{"the cat sat on the mat"}});
  CHECK(s.counts == Stats{5, 4, 3, 2});
  CHECK(s.bp == doctest::Approx(0.8187307530779818));
  CHECK(s.score == doctest::Approx(81.87307530779818).epsilon(1e-12));
  CHECK(s.to_string() == "BLEU = 81.87 100.0/100.0/100.0/100.0 (BP = 0.819 ratio = 0.833 hyp_len = 5 ref_len = 6)");
  // hyp "the cat" has no 3-gram: the score is 0 (precision 0 at order 3), but 100 * exp(1 - 6/2) with effective
  // order (orders 1 and 2 only).
  const BleuScore t = corpus_bleu({"the cat"}, {{"the cat sat on the mat"}});
  CHECK(t.score == 0.0);
  CHECK(t.totals == Stats{2, 1, 0, 0});
  CHECK(t.to_string() == "BLEU = 0.00 100.0/100.0/0.0/0.0 (BP = 0.135 ratio = 0.333 hyp_len = 2 ref_len = 6)");
  CHECK(sentence_bleu("the cat", {"the cat sat on the mat"}).score == doctest::Approx(13.533528323661276));
}

TEST_CASE("corpus_bleu: several references (max clipping, closest length, ties to the shorter)") {
  // hyp "the the the the" vs refs "the cat" (2) and "the the mat" (3):
  //   clipping by the max count over the refs: "the" 2 -> 2/4; "the the" 1 -> 1/3; 0/2; 0/1
  //   exp smoothing doubles per zero order: p3 = 100/(2*2) = 25, p4 = 100/(4*1) = 25
  //   closest ref length to 4 is 3; BLEU = (50 * 33.33 * 25 * 25)^(1/4) = 31.9472
  const BleuScore s = corpus_bleu({"the the the the"}, {{"the cat", "the the mat"}});
  CHECK(s.counts == Stats{2, 1, 0, 0});
  CHECK(s.totals == Stats{4, 3, 2, 1});
  CHECK(s.ref_len == 3);
  CHECK(s.score == doctest::Approx(31.947155212313625).epsilon(1e-12));
  CHECK(s.to_string() == "BLEU = 31.95 50.0/33.3/25.0/25.0 (BP = 1.000 ratio = 1.333 hyp_len = 4 ref_len = 3)");
  // Lengths 6 and 2 are both 2 away from 4: the shorter wins, in either order; 7 vs 5 -> 5.
  CHECK(corpus_bleu({"a b c d"}, {{"a b c d e f", "a b"}}).ref_len == 2);
  CHECK(corpus_bleu({"a b c d"}, {{"a b", "a b c d e f"}}).ref_len == 2);
  CHECK(corpus_bleu({"a b c d"}, {{"a b c d e f g", "a b c d e"}}).ref_len == 5);
  // Lengths add up over the corpus; the reference count may differ per hypothesis; empty references are skipped.
  const BleuScore c = corpus_bleu({"a b c d", "x y"}, {{"a b c", "", "a b c d e"}, {"x y z"}});
  CHECK(c.sys_len == 6);
  CHECK(c.ref_len == 3 + 3);
}

TEST_CASE("corpus_bleu: no match at all, empty input, errors") {
  const BleuScore z = corpus_bleu({"this is a cat"}, {{"okay thanks"}});
  CHECK(z.score == 0.0);
  CHECK(z.precisions == std::array<double, 4>{0, 0, 0, 0});
  CHECK(corpus_bleu({}, {}).score == 0.0);
  CHECK_THROWS_AS(corpus_bleu({"a", "b"}, {{"a"}}), Error);
  CHECK_THROWS_AS(corpus_bleu({"a"}, {{}}), Error);
  CHECK_THROWS_AS(corpus_bleu({"a"}, {{"", ""}}), Error);
}

// --- sacreBLEU's published numbers -------------------------------------------------------------------------------

TEST_CASE("sacreBLEU README: corpus_bleu(sys, refs) with two reference streams") {
  const BleuScore s = corpus_bleu(kReadmeHyps, kReadmeRefs);
  CHECK(s.to_string() == "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)");
  // test_bleu.py test_corpus_bleu_cases, to its EPSILON 1e-8
  CHECK(std::abs(s.score - 48.530827) < 1e-8);
  BleuOptions none_tok;
  none_tok.tokenizer = BleuTokenizer::None;
  CHECK(std::abs(corpus_bleu(kReadmeHyps, kReadmeRefs, none_tok).score - 49.1919566) < 1e-8);
  BleuOptions no_smooth;
  no_smooth.smooth = BleuSmooth::None;
  CHECK(std::abs(corpus_bleu(kReadmeHyps, kReadmeRefs, no_smooth).score - 48.530827) < 1e-8);
  CHECK(corpus_bleu({"", "", ""}, kReadmeRefs).score == 0.0);  // empty hypotheses are kept
}

TEST_CASE("sacreBLEU test_bleu.py: raw_corpus_bleu, statistics, offsets, effective order") {
  constexpr double kEps = 1e-8;  // test_bleu.py's EPSILON, on score / 100
  CHECK(corpus_bleu({"this is a test", "another test"}, {{"ref1"}, {"ref2"}}, raw_options(0.01)).score == 0.0);
  CHECK(std::abs(corpus_bleu({"this is a test"}, {{"this is a test"}}, raw_options(0.01)).score / 100 - 1.0) < kEps);
  CHECK(std::abs(corpus_bleu({"this is a fest"}, {{"this is a test"}}, raw_options(0.01)).score / 100 -
                 0.223606797749979) < kEps);
  const BleuScore st =
      corpus_bleu({"am I am a character sequence"}, {{"I am a symbol string sequence a a"}}, raw_options(0.01));
  CHECK(st.counts == Stats{4, 2, 1, 0});
  CHECK(st.totals == Stats{6, 5, 4, 3});
  CHECK(
      corpus_bleu({"am I am a character sequence"}, {{"I am a symbol string sequence a a"}}, raw_options(0.0)).score ==
      0.0);
  CHECK(std::abs(corpus_bleu({"am I am a character sequence"}, {{"I am a symbol string sequence a a"}},
                             raw_options(-1.0))  // the default floor, 0.1
                         .score /
                     100 -
                 0.1555722182) < kEps);
  CHECK(std::abs(corpus_bleu({"test"}, {{"a test"}}, raw_options(0.01)).score / 100 - 0.3678794411714425) < kEps);
  CHECK(std::abs(corpus_bleu({"a test"}, {{"a test"}}, raw_options(0.01)).score / 100 - 1.0) < kEps);
  CHECK(std::abs(corpus_bleu({"a little test"}, {{"a test"}}, raw_options(0.01)).score / 100 - 0.03218297948685433) <
        kEps);
}

TEST_CASE("sacreBLEU test_bleu.py: compute_bleu from statistics (scoring, degenerate statistics)") {
  BleuOptions none;
  none.smooth = BleuSmooth::None;
  CHECK(std::abs(compute_bleu({9, 7, 5, 3}, {10, 8, 6, 4}, 11, 11, none).score / 100 - 0.8375922397) < 1e-8);
  struct Case {
    Stats counts, totals;
    std::int64_t sys_len, ref_len;
    double floor;
  };
  const Case cases[] = {{{0, 0, 0, 0}, {4, 4, 2, 1}, 0, 1, 0.0}, {{0, 0, 0, 0}, {10, 11, 12, 0}, 14, 10, 0.0},
                        {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.0}, {{6, 5, 4, 0}, {6, 5, 4, 3}, 6, 6, 0.0},
                        {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.1}, {{0, 0, 0, 0}, {0, 0, 0, 0}, 1, 5, 0.01}};
  for (const Case& c : cases) {
    BleuOptions floor;
    floor.smooth = BleuSmooth::Floor;
    floor.smooth_value = c.floor;
    CHECK(compute_bleu(c.counts, c.totals, c.sys_len, c.ref_len, floor).score == 0.0);  // exactly, as published
  }
}

TEST_CASE("sacreBLEU test_sentence_bleu.py: smoothing methods and tokenizers with effective order") {
  // Example from sacreBLEU issue #98 (Romanian, UTF-8); EPSILON 1e-3 as published.
  const std::string ref = "produc\xc5\xa3ia de zah\xc4\x83r brut se exprim\xc4\x83 \xc3\xaen zah\xc4\x83r alb;";
  const std::string sys =
      "Produc\xc8\x9bia de zah\xc4\x83r prim\xc4\x83 va fi exprimat\xc4\x83 \xc3\xaen ceea ce prive\xc8\x99te "
      "zah\xc4\x83rul alb;";
  struct Case {
    BleuSmooth smooth;
    double value;
    BleuTokenizer tok;
    double expected;
  };
  const Case cases[] = {
      {BleuSmooth::Exp, -1, BleuTokenizer::V13a, 8.493},     {BleuSmooth::None, -1, BleuTokenizer::V13a, 0.0},
      {BleuSmooth::Floor, -1, BleuTokenizer::V13a, 4.51688}, {BleuSmooth::Floor, 0.1, BleuTokenizer::V13a, 4.51688},
      {BleuSmooth::Floor, 0.5, BleuTokenizer::V13a, 10.10},  {BleuSmooth::AddK, -1, BleuTokenizer::V13a, 14.882},
      {BleuSmooth::AddK, 1, BleuTokenizer::V13a, 14.882},    {BleuSmooth::AddK, 2, BleuTokenizer::V13a, 21.389},
      {BleuSmooth::Exp, -1, BleuTokenizer::None, 7.347},
  };
  for (const Case& c : cases) {
    BleuOptions o = sentence_bleu_options();
    o.smooth = c.smooth;
    o.smooth_value = c.value;
    o.tokenizer = c.tok;
    CHECK(std::abs(sentence_bleu(sys, {ref}, o).score - c.expected) < 1e-3);
  }
  // Example from issue #141: no match at all gives 0 whatever the smoothing.
  for (BleuSmooth m : {BleuSmooth::Exp, BleuSmooth::None, BleuSmooth::Floor, BleuSmooth::AddK}) {
    BleuOptions o = sentence_bleu_options();
    o.smooth = m;
    CHECK(sentence_bleu("this is a cat", {"okay thanks"}, o).score == 0.0);
  }
}
