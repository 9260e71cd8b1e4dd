// SPDX-License-Identifier: MIT
// Generation: KV-cache decoding against the full (training-path) forward at every step, batches mixing prefixes
// and prompt lengths against each row alone, beam search against a brute-force search on a tiny vocabulary,
// sampling semantics and reproducibility, and the errors bad requests get.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;

namespace {

// A tiny random GPT-2 whose logits are far from uniform (weights larger than GPT-2's N(0, 0.02)).
Gpt2<float> tiny_model(std::int64_t vocab, std::int64_t n_positions, std::uint64_t seed = 5) {
  Rng rng(seed);
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.n_positions = n_positions, c.vocab_size = vocab;
  auto m = random_gpt2<float>(c, rng);
  for (auto& b : m.h)
    for (Tensor<float>* w : {&b.attn_w, &b.attn_proj_w, &b.fc_w, &b.mlp_proj_w}) fill_normal(*w, rng, 0.0, 0.3);
  fill_normal(m.wte, rng, 0.0, 1.0);
  fill_normal(m.wpe, rng, 0.0, 0.3);
  return m;
}

Tensor<float> random_table(const Gpt2Config& c, std::int64_t P, Rng& rng) {
  auto t = Tensor<float>::empty({P, 2 * c.n_layer * c.n_embd});
  fill_normal(t, rng);
  return t;
}

// Last-position logits (V) of the full forward over ids, through the training path (gpt2_hidden + gpt2_logits).
std::vector<float> full_forward_last(const Gpt2<float>& m, const std::vector<std::int32_t>& ids,
                                     const Tensor<float>& table, std::int64_t offset) {
  NoGradGuard no_grad;
  Tape<float> tape;
  PrefixKv<float> kv;
  if (table.defined()) kv = prefix_kv_from_table(tape, Var<float>(table, false), m.config.n_layer, m.config.n_head);
  const auto x = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(ids.size())}, ids);
  auto h = gpt2_hidden(tape, m, x, Tensor<std::uint8_t>(), kv, offset);
  const auto logits = gpt2_logits(m, h.value());
  const std::int64_t V = logits.size(2), T = logits.size(1);
  return std::vector<float>(logits.data() + (T - 1) * V, logits.data() + T * V);
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

}  // namespace

TEST_CASE("KV-cache decoding equals recomputing the full forward at every step") {
  const auto m = tiny_model(50, 64);
  Rng rng(9);
  PrefixBank<float> bank(m.config);
  const auto table = random_table(m.config, 4, rng);
  bank.add(table, "user");
  for (const std::int64_t prefix : {kNoPrefix, std::int64_t{0}}) {
    CAPTURE(prefix);
    KvCache<float> cache(m.config, 2, 40);
    cache.reset(1, prefix);  // slot 1, slot 0 stays unused
    std::vector<std::int32_t> seq = {7, 3, 41, 0, 12, 9};
    // the prompt in two chunks: exercises past > 0 with several new tokens
    (void)gpt2_extend(m, bank, cache, {1}, {{seq.begin(), seq.begin() + 4}});
    Tensor<float> logits = gpt2_extend(m, bank, cache, {1}, {{seq.begin() + 4, seq.end()}});
    for (int step = 0; step < 12; ++step) {
      CAPTURE(step);
      const auto want = full_forward_last(m, seq, prefix == kNoPrefix ? Tensor<float>() : table, bank.length(prefix));
      const std::vector<float> got(logits.data(), logits.data() + logits.numel());
      REQUIRE(got.size() == want.size());
      double diff = 0;
      for (std::size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::abs(double(got[i]) - double(want[i])));
      CHECK(diff <= 1e-5 * std::max(1.0, max_abs(want)));
      const std::int32_t next = detail::argmax_token(got.data(), static_cast<std::int64_t>(got.size()));
      seq.push_back(next);
      logits = gpt2_extend(m, bank, cache, {1}, {{next}});
    }
    CHECK(cache.length(1) == static_cast<std::int64_t>(seq.size()));
  }
}

TEST_CASE("a batch mixing prefixes and prompt lengths gives every row what it gives alone") {
  const auto m = tiny_model(50, 64);
  Rng rng(11);
  PrefixBank<float> bank(m.config);
  bank.add(random_table(m.config, 3, rng), "alice");
  bank.add(random_table(m.config, 5, rng), "bob");
  bank.add(random_table(m.config, 2, rng), "carol", 0);  // real tokens from position 0
  std::vector<GenerationRequest> reqs = {{{1, 2, 3}, 0},    {{4, 5, 6, 7, 8, 9, 10}, 1},
                                         {{11}, kNoPrefix}, {{12, 13, 14, 15}, 2},
                                         {{16, 17}, 0},     {{18, 19, 20, 21, 22}, 1}};
  for (std::size_t i = 0; i < reqs.size(); ++i) reqs[i].stream = static_cast<std::int64_t>(i);
  GenerateConfig greedy;
  greedy.max_new_tokens = 9;
  greedy.eos_id = 49;
  GenerateConfig sampled = greedy;
  sampled.sample = true, sampled.seed = 123, sampled.temperature = 0.8, sampled.top_k = 20, sampled.top_p = 0.9;
  GenerateConfig beam = greedy;
  beam.num_beams = 3, beam.length_penalty = 0.7;
  for (const auto* cfg : {&greedy, &sampled, &beam}) {
    CAPTURE(cfg->num_beams);
    CAPTURE(cfg->sample);
    const auto batched = generate(m, bank, reqs, *cfg);
    REQUIRE(batched.size() == reqs.size());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      const auto alone = generate(m, bank, {reqs[i]}, *cfg);
      CHECK(batched[i].ids == alone[0].ids);
      CHECK(batched[i].ended == alone[0].ended);
      CHECK(batched[i].score == doctest::Approx(alone[0].score).epsilon(1e-5));
      CHECK(!batched[i].ids.empty());
    }
  }
  // A row that stops at once (its first greedy token made the end token) leaves the others untouched.
  GenerateConfig stop = greedy;
  stop.eos_id = generate(m, bank, {reqs[2]}, greedy)[0].ids.at(0);
  const auto with_stop = generate(m, bank, reqs, stop);
  CHECK(with_stop[2].ids.empty());
  CHECK(with_stop[2].ended);
  for (std::size_t i = 0; i < reqs.size(); ++i) CHECK(with_stop[i].ids == generate(m, bank, {reqs[i]}, stop)[0].ids);
}

namespace {

struct Best {
  double score = -std::numeric_limits<double>::infinity();
  std::vector<std::int32_t> ids;
};

// Every continuation of prompt up to cfg.max_new_tokens, scored as beam search scores hypotheses (full forward
// for the log-probabilities, processed by the same bans and minimum length).
void brute_force(const Gpt2<float>& m, const Tensor<float>& table, std::int64_t offset, std::vector<std::int32_t>& seq,
                 std::size_t prompt_len, double sum, const GenerateConfig& cfg, Best& best) {
  const auto generated = static_cast<std::int64_t>(seq.size() - prompt_len);
  auto logits = full_forward_last(m, seq, table, offset);
  detail::process_logits(logits.data(), cfg, generated);
  std::vector<double> logp;
  detail::log_softmax_row(logits.data(), static_cast<std::int64_t>(logits.size()), logp);
  auto norm = [&](std::int64_t len) { return std::pow(double(std::max<std::int64_t>(len, 1)), cfg.length_penalty); };
  for (std::size_t v = 0; v < logp.size(); ++v) {
    if (!std::isfinite(logp[v])) continue;
    const double s = sum + logp[v];
    if (static_cast<std::int32_t>(v) == cfg.eos_id) {
      const double score = s / norm(generated);
      if (score > best.score) best = Best{score, {seq.begin() + static_cast<std::ptrdiff_t>(prompt_len), seq.end()}};
      continue;
    }
    seq.push_back(static_cast<std::int32_t>(v));
    if (generated + 1 == cfg.max_new_tokens) {
      const double score = s / norm(generated + 1);
      if (score > best.score) best = Best{score, {seq.begin() + static_cast<std::ptrdiff_t>(prompt_len), seq.end()}};
    } else {
      brute_force(m, table, offset, seq, prompt_len, s, cfg, best);
    }
    seq.pop_back();
  }
}

}  // namespace

TEST_CASE("beam search with enough beams equals a brute-force search on a tiny vocabulary") {
  const auto m = tiny_model(6, 16, 21);
  Rng rng(3);
  PrefixBank<float> bank(m.config);
  const auto table = random_table(m.config, 2, rng);
  bank.add(table);
  const std::vector<GenerationRequest> reqs = {{{1, 3}, 0}, {{4, 0, 2}, kNoPrefix}};
  for (const double lp : {1.0, 0.0, 2.0, -0.5}) {
    CAPTURE(lp);
    GenerateConfig cfg;
    cfg.max_new_tokens = 3, cfg.min_new_tokens = 1, cfg.eos_id = 5, cfg.ban_ids = {2};
    cfg.num_beams = 216, cfg.length_penalty = lp;  // >= 6^3: no continuation is ever pruned
    const auto got = generate(m, bank, reqs, cfg);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      Best best;
      std::vector<std::int32_t> seq = reqs[i].prompt;
      brute_force(m, reqs[i].prefix == kNoPrefix ? Tensor<float>() : table, bank.position_offset(reqs[i].prefix), seq,
                  seq.size(), 0.0, cfg, best);
      CHECK(got[i].ids == best.ids);
      CHECK(got[i].score == doctest::Approx(best.score).epsilon(1e-5));
    }
  }
  // Fewer beams: never better than the optimum, and with num_beams = 1 ... still a valid hypothesis.
  GenerateConfig small;
  small.max_new_tokens = 3, small.eos_id = 5, small.num_beams = 2;
  const auto two = generate(m, bank, reqs, small);
  for (const auto& g : two) CHECK(g.ids.size() <= 3);
}

TEST_CASE(
    "sampling: seeded and reproducible, top-k 1 and a tiny top-p are greedy, frequencies follow the warped "
    "distribution") {
  const auto m = tiny_model(50, 64);
  PrefixBank<float> bank(m.config);
  std::vector<GenerationRequest> reqs;
  for (std::int32_t i = 0; i < 6; ++i) reqs.push_back({{i, static_cast<std::int32_t>(i + 7)}, kNoPrefix});
  GenerateConfig cfg;
  cfg.max_new_tokens = 10, cfg.eos_id = 49, cfg.sample = true, cfg.seed = 7;
  const auto a = generate(m, bank, reqs, cfg), b = generate(m, bank, reqs, cfg);
  cfg.seed = 8;
  const auto c = generate(m, bank, reqs, cfg);
  bool any_diff = false;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CHECK(a[i].ids == b[i].ids);
    any_diff = any_diff || a[i].ids != c[i].ids;
  }
  CHECK(any_diff);
  GenerateConfig greedy;
  greedy.max_new_tokens = 10, greedy.eos_id = 49;
  const auto g = generate(m, bank, reqs, greedy);
  GenerateConfig k1 = cfg, p0 = cfg;
  k1.top_k = 1;
  p0.top_p = 1e-9;
  const auto gk = generate(m, bank, reqs, k1), gp = generate(m, bank, reqs, p0);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CHECK(gk[i].ids == g[i].ids);
    CHECK(gp[i].ids == g[i].ids);
  }

  // logits -> temperature 2 -> top-3 -> top-p 0.8 over a fixed row: the kept set and the renormalized frequencies
  const std::vector<float> logits = {2.0f, 0.5f, 3.0f, -1.0f, 2.5f, 1.0f};
  GenerateConfig w;
  w.sample = true, w.temperature = 2.0, w.top_k = 3, w.top_p = 0.8;
  // by hand: z = logits / 2, top-3 = ids 2 (1.5), 4 (1.25), 0 (1.0); softmax over those: 0.4007, 0.3120, 0.2430 ...
  // cumulative 0.4007, 0.7127, 0.9557 -> top-p keeps 3 tokens (0.7127 < 0.8); renormalized = the same three
  const double z[3] = {1.5, 1.25, 1.0};
  double sum = 0;
  for (double x : z) sum += std::exp(x);
  std::map<std::int32_t, int> counts;
  Rng rng(1);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[detail::sample_token(logits.data(), 6, w, rng)];
  CHECK(counts.size() == 3);
  CHECK(double(counts[2]) / n == doctest::Approx(std::exp(1.5) / sum).epsilon(0.03));
  CHECK(double(counts[4]) / n == doctest::Approx(std::exp(1.25) / sum).epsilon(0.03));
  CHECK(double(counts[0]) / n == doctest::Approx(std::exp(1.0) / sum).epsilon(0.03));
  w.top_p = 0.7;  // now only ids 2 and 4 (0.4007 < 0.7 <= 0.7127)
  counts.clear();
  for (int i = 0; i < n; ++i) ++counts[detail::sample_token(logits.data(), 6, w, rng)];
  CHECK(counts.size() == 2);
  CHECK(double(counts[2]) / n == doctest::Approx(std::exp(1.5) / (std::exp(1.5) + std::exp(1.25))).epsilon(0.03));
}

TEST_CASE("bans and the minimum length hold, and bad requests get errors that name them") {
  const auto m = tiny_model(50, 16);
  Rng rng(2);
  PrefixBank<float> bank(m.config);
  bank.add(random_table(m.config, 4, rng), "u");
  GenerateConfig cfg;
  cfg.max_new_tokens = 8, cfg.eos_id = 49;
  const GenerationRequest ok{{1, 2, 3}, 0};
  auto first = generate(m, bank, {ok}, cfg)[0].ids;
  REQUIRE(!first.empty());
  cfg.ban_ids = {first[0]};
  const auto banned = generate(m, bank, {ok}, cfg)[0].ids;
  CHECK(!banned.empty());
  for (auto id : banned) CHECK(id != first[0]);
  cfg.ban_ids.clear();
  cfg.eos_id = first[0];   // would stop at once ...
  cfg.min_new_tokens = 3;  // ... but not before 3 tokens
  const auto g = generate(m, bank, {ok}, cfg)[0];
  CHECK(g.ids.size() >= 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(g.ids[i] != first[0]);
  // the context: 16 positions, prefix offset 4 -> at most 12 tokens in the slot, so at most 12 - 3 + 1 new ones
  GenerateConfig longer;
  longer.max_new_tokens = 50, longer.eos_id = 49, longer.ban_ids = {49};
  CHECK(generate(m, bank, {ok}, longer)[0].ids.size() == 10);

  GenerateConfig plain;
  plain.eos_id = 49;
  using test::error_of;
  CHECK(error_of([&] {
          generate(m, bank, {ok, GenerationRequest{{}, 0}}, plain);
        }).find("request 1 has an empty prompt") != std::string::npos);
  CHECK(error_of([&] {
          generate(m, bank, {GenerationRequest{{1}, 3}}, plain);
        }).find("names prefix 3") != std::string::npos);
  CHECK(error_of([&] {
          generate(m, bank, {GenerationRequest{{1, 50}, kNoPrefix}}, plain);
        }).find("token 1 has id 50, outside the vocabulary") != std::string::npos);
  CHECK(error_of([&] {
          generate(m, bank, {GenerationRequest{std::vector<std::int32_t>(13, 1), 0}}, plain);
        }).find("the model's context holds 12 after the prefix") != std::string::npos);
  GenerateConfig bad = plain;
  bad.top_p = 0;
  CHECK(error_of([&] { generate(m, bank, {ok}, bad); }).find("top_p") != std::string::npos);
  bad = plain;
  bad.num_beams = 2, bad.sample = true;
  CHECK(error_of([&] { generate(m, bank, {ok}, bad); }).find("beam search with sampling") != std::string::npos);
  KvCache<float> cache(m.config, 1, 4);
  cache.reset(0, 0);
  CHECK(error_of([&] {
          gpt2_extend(m, bank, cache, {0}, {{1, 2, 3, 4, 5}});
        }).find("more than the cache capacity") != std::string::npos);
  CHECK(error_of([&] { bank.add(random_table(m.config, 2, rng), "u"); }).find("already there") != std::string::npos);
  CHECK(error_of([&] { bank.add(Tensor<float>::zeros({2, 7})); }).find("the model needs") != std::string::npos);
}

TEST_CASE("threads: one loaded model and bank serve generation from several threads at once") {
  // The model and the bank are shared and read-only; every call keeps its own caches. Run under ThreadSanitizer in
  // CI (scripts/run_tests.sh): any data race in generation fails there.
  const auto m = tiny_model(50, 64);
  Rng rng(21);
  PrefixBank<float> bank(m.config);
  bank.add(random_table(m.config, 3, rng), "alice");
  bank.add(random_table(m.config, 4, rng), "bob");
  GenerateConfig greedy;
  greedy.max_new_tokens = 8;
  greedy.eos_id = 49;
  GenerateConfig sampled = greedy;
  sampled.sample = true, sampled.seed = 9, sampled.temperature = 0.9, sampled.top_p = 0.95;
  GenerateConfig beam = greedy;
  beam.num_beams = 3;
  const std::vector<const GenerateConfig*> configs = {&greedy, &sampled, &beam};
  std::vector<std::vector<GenerationRequest>> work;
  for (int t = 0; t < 4; ++t) {
    std::vector<GenerationRequest> reqs;
    for (int r = 0; r < 3; ++r) {
      GenerationRequest q{{static_cast<std::int32_t>(1 + t), static_cast<std::int32_t>(10 + r), 7}, (t + r) % 3 - 1};
      if (q.prefix < 0) q.prefix = kNoPrefix;
      q.stream = t * 10 + r;
      reqs.push_back(q);
    }
    work.push_back(reqs);
  }
  // Expected: each thread's work done alone, one call after another.
  std::vector<std::vector<std::vector<Generation>>> expected(work.size());
  for (std::size_t t = 0; t < work.size(); ++t)
    for (const auto* cfg : configs) expected[t].push_back(generate(m, bank, work[t], *cfg));
  std::vector<std::vector<std::vector<Generation>>> got(work.size());
  std::vector<std::string> errors(work.size());
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < work.size(); ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int rep = 0; rep < 2; ++rep) {
          got[t].clear();
          for (const auto* cfg : configs) got[t].push_back(generate(m, bank, work[t], *cfg));
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (std::size_t t = 0; t < work.size(); ++t) {
    CAPTURE(t);
    CHECK(errors[t].empty());
    REQUIRE(got[t].size() == expected[t].size());
    for (std::size_t c = 0; c < got[t].size(); ++c)
      for (std::size_t r = 0; r < got[t][c].size(); ++r) {
        CHECK(got[t][c][r].ids == expected[t][c][r].ids);
        CHECK(got[t][c][r].score == expected[t][c][r].score);
      }
  }
}

TEST_CASE("generation settings out of range are refused, naming the setting") {
  const auto m = tiny_model(50, 16);
  PrefixBank<float> bank(m.config);
  const GenerationRequest ok{{1, 2, 3}, kNoPrefix};
  const std::vector<std::pair<std::function<void(GenerateConfig&)>, std::string>> cases = {
      {[](GenerateConfig& c) { c.max_new_tokens = 0; }, "max_new_tokens must be >= 1, got 0"},
      {[](GenerateConfig& c) { c.min_new_tokens = 9; }, "min_new_tokens"},
      {[](GenerateConfig& c) { c.min_new_tokens = -1; }, "min_new_tokens"},
      {[](GenerateConfig& c) { c.temperature = 0; }, "temperature must be > 0, got 0"},
      {[](GenerateConfig& c) { c.temperature = std::nan(""); }, "temperature must be > 0"},
      {[](GenerateConfig& c) { c.top_k = -2; }, "top_k must be >= 0, got -2"},
      {[](GenerateConfig& c) { c.top_p = 1.5; }, "top_p must be in (0, 1], got 1.5"},
      {[](GenerateConfig& c) { c.num_beams = 0; }, "num_beams must be >= 1, got 0"},
      {[](GenerateConfig& c) { c.length_penalty = INFINITY; }, "length_penalty must be finite"},
      {[](GenerateConfig& c) { c.eos_id = 50; }, "eos_id 50 is outside the vocabulary [0, 50)"},
      {[](GenerateConfig& c) {
         c.ban_ids = {3, -1};
       },
       "banned id -1 is outside the vocabulary"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(i);
    GenerateConfig cfg;
    cfg.max_new_tokens = 8, cfg.eos_id = 49;
    cases[i].first(cfg);
    CHECK(test::error_of([&] { (void)generate(m, bank, {ok}, cfg); }).find(cases[i].second) != std::string::npos);
  }
  CHECK(test::error_of([&] { KvCache<float> cache(m.config, 1, 17); }).find("exceeds the model's context of") !=
        std::string::npos);
}
