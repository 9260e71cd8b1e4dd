// SPDX-License-Identifier: MIT
// BART generation with users' three-part prefixes: the cached decoder (encoder once, cross K/V kept apart) against
// the full training-path forward at every step, batches mixing users / source lengths / beams against each row
// alone, the sequence processors (forced first token, no-repeat n-grams), the XSUM preset, Seq2SeqBank and the
// errors bad requests get. PyTorch parity of greedy and beam outputs is in tests/models/test_bart.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;

namespace {

BartConfig small_bart() {
  BartConfig c;
  c.d_model = 16, c.encoder_layers = 2, c.decoder_layers = 2, c.encoder_attention_heads = 2;
  c.decoder_attention_heads = 4, c.encoder_ffn_dim = 24, c.decoder_ffn_dim = 20, c.max_position_embeddings = 24;
  c.vocab_size = 29;
  return c;
}

// Weights large enough that logits are far from uniform and every prefix matters.
Bart<double> small_model(std::uint64_t seed = 3) {
  Rng rng(seed);
  return random_bart<double>(small_bart(), rng, 0.3);
}

Seq2SeqTables<double> random_tables(const BartConfig& c, std::int64_t P, Rng& rng) {
  auto table = [&](std::int64_t layers) {
    auto t = Tensor<double>::empty({P, 2 * layers * c.d_model});
    fill_normal(t, rng, 0.0, 1.0);
    return DirectPrefix<double>{Var<double>(t)};
  };
  return {table(c.encoder_layers), table(c.decoder_layers), table(c.decoder_layers)};
}

// The last decoder position's logits by the training path, recomputed from scratch: the source alone (no
// padding), the bank entry's three tables (none for kNoPrefix), the whole decoder sequence.
std::vector<double> full_forward_logits(const Bart<double>& m, const std::vector<Seq2SeqTables<double>>& users,
                                        std::int64_t user, const std::vector<std::int32_t>& source,
                                        const std::vector<std::int32_t>& decoder) {
  NoGradGuard ng;
  Tape<double> tape;
  const BartConfig& c = m.config;
  Seq2SeqPrefixKv<double> kv;
  if (user != kNoPrefix) kv = seq2seq_prefix_kv(tape, users[static_cast<std::size_t>(user)], c);
  const auto src = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(source.size())}, source);
  const auto dec = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(decoder.size())}, decoder);
  const auto memory = bart_encode(tape, m, src, {}, kv.encoder);
  const auto logits = bart_logits(m, bart_decode(tape, m, dec, memory, {}, kv.decoder, kv.cross).value());
  std::vector<double> last(static_cast<std::size_t>(c.vocab_size));
  for (std::int64_t v = 0; v < c.vocab_size; ++v) last[static_cast<std::size_t>(v)] = logits(0, dec.size(1) - 1, v);
  return last;
}

double max_rel(const Tensor<double>& got, std::int64_t row, const std::vector<double>& want) {
  double worst = 0, scale = 0;
  for (std::size_t v = 0; v < want.size(); ++v) {
    worst = std::max(worst, std::abs(got(row, static_cast<std::int64_t>(v)) - want[v]));
    scale = std::max(scale, std::abs(want[v]));
  }
  return worst / scale;
}

}  // namespace

TEST_CASE("bart_extend: the cached decoder equals the full forward at every step (users, lengths, token counts)") {
  auto m = small_model();
  Rng rng(11);
  // A non-zero final_logits_bias: the cached logits include it as bart_logits does.
  m.final_logits_bias = Tensor<double>::empty({m.config.vocab_size});
  fill_normal(m.final_logits_bias, rng, 0.0, 0.5);
  const std::vector<Seq2SeqTables<double>> users = {random_tables(m.config, 2, rng), random_tables(m.config, 3, rng)};
  Seq2SeqBank<double> bank(m.config);
  CHECK(bank.add(users[0], "ann") == 0);
  CHECK(bank.add(users[1], "bob") == 1);
  const std::vector<GenerationRequest> requests = {
      {{0, 7, 5, 9, 2}, 0}, {{0, 11, 2}, kNoPrefix}, {{0, 4, 8, 6, 3, 2}, 1}, {{0, 13, 9, 2}, 0}};
  GenerateConfig cfg = bart_generate_config(m.config, 10);
  detail::BartDecoding<double, Cpu, Tensor<double>> engine(m, bank, requests, cfg, 1);
  std::vector<std::vector<std::int32_t>> seq(requests.size());
  auto step = [&](const std::vector<std::int64_t>& slots, const std::vector<std::vector<std::int32_t>>& feed) {
    const auto logits = engine.extend(slots, feed);
    for (std::size_t r = 0; r < slots.size(); ++r) {
      const auto i = static_cast<std::size_t>(slots[r]);
      seq[i].insert(seq[i].end(), feed[r].begin(), feed[r].end());
      const auto want = full_forward_logits(m, users, requests[i].prefix, requests[i].prompt, seq[i]);
      CHECK(max_rel(logits, static_cast<std::int64_t>(r), want) < 1e-10);
    }
  };
  for (std::int64_t i = 0; i < 4; ++i) engine.start(i, i);
  step({0, 1, 2, 3}, {{2, 17, 4}, {2}, {2, 9}, {2}});  // several tokens per row in one call, different counts
  step({2, 0}, {{5}, {6}});                            // rows in any order; idle rows skipped
  step({1}, {{8, 8, 3}});
  step({3, 2, 1, 0}, {{1}, {12}, {7}, {0}});
  // Beam-style slot copies keep the copy's request (its source memory and cross prefix).
  engine.copy_slot(1, 2);
  seq[1] = seq[2];
  const auto logits = engine.extend({1, 2}, {{4}, {5}});
  seq[1].push_back(4);
  seq[2].push_back(5);
  CHECK(max_rel(logits, 0, full_forward_logits(m, users, 1, requests[2].prompt, seq[1])) < 1e-10);
  CHECK(max_rel(logits, 1, full_forward_logits(m, users, 1, requests[2].prompt, seq[2])) < 1e-10);
}

TEST_CASE("BART generate: a batch of users' prefixes and sources gives every row what it gives alone") {
  const auto m = small_model();
  Rng rng(12);
  Seq2SeqBank<double> bank(m.config);
  bank.add(random_tables(m.config, 2, rng), "ann");
  bank.add(random_tables(m.config, 4, rng), "bob");
  const std::vector<GenerationRequest> requests = {{{0, 7, 5, 9, 2}, 0},
                                                   {{0, 11, 2}, kNoPrefix},
                                                   {{0, 4, 8, 6, 3, 2, 5, 5, 2}, 1},
                                                   {{0, 13, 9, 2}, 0},
                                                   {{0, 13, 9, 2}, 1}};
  GenerateConfig greedy = bart_generate_config(m.config, 9);
  GenerateConfig sampled = greedy;
  sampled.sample = true, sampled.temperature = 0.8, sampled.top_k = 12, sampled.seed = 4;
  GenerateConfig beam = bart_xsum_config(m.config);
  beam.max_new_tokens = 9, beam.min_new_tokens = 2, beam.num_beams = 3, beam.no_repeat_ngram_size = 2;
  for (const GenerateConfig* cfg : {&greedy, &sampled, &beam}) {
    const auto together = generate(m, bank, requests, *cfg);
    REQUIRE(together.size() == requests.size());
    std::set<std::vector<std::int32_t>> distinct;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      GenerationRequest alone = requests[i];
      alone.stream = static_cast<std::int64_t>(i);  // the same sampling stream as in the batch
      const auto one = generate(m, bank, {alone}, *cfg);
      CHECK(one[0].ids == together[i].ids);
      CHECK(one[0].ended == together[i].ended);
      CHECK(one[0].score == doctest::Approx(together[i].score).epsilon(1e-12));
      CHECK(!together[i].ids.empty());
      distinct.insert(together[i].ids);
    }
    CHECK(distinct.size() >= 3);  // users and sources matter
  }
}

TEST_CASE("BART generate: forced first token, no repeated n-grams, minimum length, the XSUM preset") {
  SUBCASE("process_sequence_logits on hand-made sequences (HuggingFace's NoRepeatNGram rule)") {
    GenerateConfig cfg;
    cfg.no_repeat_ngram_size = 3;
    std::vector<double> z(6, 0.0);
    detail::process_sequence_logits(z.data(), 6, cfg, {1, 2, 3}, {1, 2});  // [1 2 3 1 2]: "1 2 3" seen: ban 3
    CHECK(z == std::vector<double>{0, 0, 0, -INFINITY, 0, 0});
    cfg.no_repeat_ngram_size = 2;
    z.assign(6, 0.0);
    detail::process_sequence_logits(z.data(), 6, cfg, {5}, {5, 4, 5});  // bigrams after 5: 5 and 4
    CHECK(z == std::vector<double>{0, 0, 0, 0, -INFINITY, -INFINITY});
    z.assign(6, 0.0);
    detail::process_sequence_logits(z.data(), 6, cfg, {5}, {});  // one token: no bigram to complete yet
    CHECK(z == std::vector<double>(6, 0.0));
    cfg.no_repeat_ngram_size = 0;
    cfg.forced_bos_id = 4;
    z = {1, 2, 3, 4, 5, 6};
    detail::process_sequence_logits(z.data(), 6, cfg, {2}, {});
    CHECK(z == std::vector<double>{-INFINITY, -INFINITY, -INFINITY, -INFINITY, 5, -INFINITY});
    z = {1, 2, 3, 4, 5, 6};
    detail::process_sequence_logits(z.data(), 6, cfg, {2}, {4});  // only the first token is forced
    CHECK(z == std::vector<double>{1, 2, 3, 4, 5, 6});
  }
  const auto m = small_model(7);
  Rng rng(13);
  Seq2SeqBank<double> bank(m.config);
  bank.add(random_tables(m.config, 3, rng));
  const std::vector<GenerationRequest> requests = {{{0, 7, 5, 9, 2}, 0}, {{0, 11, 2}, kNoPrefix}};
  for (std::int64_t beams : {1, 3}) {
    CAPTURE(beams);
    GenerateConfig cfg = bart_generate_config(m.config, 16);
    cfg.num_beams = beams;
    cfg.forced_bos_id = 0;
    cfg.no_repeat_ngram_size = 2;
    cfg.min_new_tokens = 6;
    for (const auto& g : generate(m, bank, requests, cfg)) {
      REQUIRE(!g.ids.empty());
      CHECK(g.ids[0] == 0);
      CHECK(static_cast<std::int64_t>(g.ids.size()) >= 6);
      std::vector<std::int32_t> dec = {static_cast<std::int32_t>(m.config.decoder_start_token_id)};
      dec.insert(dec.end(), g.ids.begin(), g.ids.end());
      std::set<std::pair<std::int32_t, std::int32_t>> bigrams;
      for (std::size_t j = 0; j + 1 < dec.size(); ++j) CHECK(bigrams.insert({dec[j], dec[j + 1]}).second);
    }
  }
  const GenerateConfig x = bart_xsum_config(m.config);
  CHECK(x.num_beams == 6);
  CHECK(x.max_new_tokens == 61);  // HF max_length 62 counts the decoder start token
  CHECK(x.min_new_tokens == 10);  // HF min_length 11: the end token allowed from the 11th decoder token on
  CHECK(x.no_repeat_ngram_size == 3);
  CHECK(x.length_penalty == 1.0);
  CHECK(x.eos_id == m.config.eos_token_id);
  const auto out = generate(m, bank, requests, x);
  for (const auto& g : out) CHECK(static_cast<std::int64_t>(g.ids.size()) >= 10);
}

TEST_CASE("BART generate and Seq2SeqBank: bad requests and tables name the problem") {
  const auto m = small_model();
  const BartConfig& c = m.config;
  Rng rng(14);
  Seq2SeqBank<double> bank(c);
  bank.add(random_tables(c, 2, rng), "ann");
  const GenerateConfig cfg = bart_generate_config(c, 4);
  auto fails = [&](const std::vector<GenerationRequest>& r, const GenerateConfig& g, const std::string& what) {
    const std::string e = test::error_of([&] { generate(m, bank, r, g); });
    CHECK_MESSAGE(e.find(what) != std::string::npos, e);
  };
  fails({{{}, 0}}, cfg, "request 0 has an empty source");
  fails({{{0, 2}, 0}, {{0, 99, 2}, 0}}, cfg, "request 1 source token 1 has id 99");
  fails({{{0, 2}, 3}}, cfg, "names prefix 3 but the bank holds 1");
  fails({{std::vector<std::int32_t>(25, 4), 0}}, cfg, "longer than max_position_embeddings = 24");
  GenerateConfig gpt2_eos = cfg;
  gpt2_eos.eos_id = 5;
  fails({{{0, 2}, 0}}, gpt2_eos, "eos_id 5 is not the model's eos_token_id 2");
  auto t = random_tables(c, 2, rng);
  CHECK(test::error_of([&] { bank.add(t, "ann"); }).find("a prefix named 'ann' is already there") != std::string::npos);
  auto short_cross = t;
  short_cross.cross = random_tables(c, 3, rng).cross;
  CHECK(test::error_of([&] { bank.add(short_cross, "eve"); }).find("have 2 / 2 / 3 rows") != std::string::npos);
  auto narrow = t;
  narrow.encoder = narrow.decoder;  // decoder width (2 layers) happens to equal the encoder's here: use another
  narrow.encoder.table = Var<double>(Tensor<double>::zeros({2, 3 * c.d_model}));
  CHECK(test::error_of([&] { bank.add(narrow, "eve"); }).find("'s encoder table has shape (2, 48)") !=
        std::string::npos);
  CHECK(bank.size() == 1);  // nothing was added by the refused calls
  CHECK(bank.index_of("ann") == 0);
}
