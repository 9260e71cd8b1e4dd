// SPDX-License-Identifier: MIT
// Generation: KV-cache decoding against the full (training-path) forward at every step, batches mixing prefixes
// and prompt lengths against each row alone, beam search against a brute-force search on a tiny vocabulary and
// against an independent reference of HuggingFace's rules (reference/beam_reference.hpp), sampling semantics and
// reproducibility, and the errors bad requests get.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "prefixtune/prefixtune.hpp"
#include "reference/beam_reference.hpp"
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
  if (table.defined()) kv = prefix_kv_from_table(tape, Var<float>(table, false), m.config.kv_shape());
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

// Next-token log-probabilities as beam search sees them, computed naively: banned ids and (before min_new_tokens
// new tokens) the end token at -inf, then log-softmax in double.
std::vector<double> processed_log_probs(std::vector<double> z, const GenerateConfig& cfg, std::size_t generated) {
  const double inf = std::numeric_limits<double>::infinity();
  for (auto id : cfg.ban_ids) z[static_cast<std::size_t>(id)] = -inf;
  if (static_cast<std::int64_t>(generated) < cfg.min_new_tokens) z[static_cast<std::size_t>(cfg.eos_id)] = -inf;
  double mx = -inf, sum = 0;
  for (double x : z) mx = std::max(mx, x);
  for (double x : z) sum += std::exp(x - mx);
  for (double& x : z) x -= mx + std::log(sum);
  return z;
}

// A sequence a search can return: stopped at the end token (not stored) or cut at max_new_tokens.
struct Complete {
  std::vector<std::int32_t> ids;
  bool ended = false;
  double sum = 0;  // summed log-probabilities, the end token's included
};

// HuggingFace's hypothesis score: sum / length^length_penalty, the length counting the new tokens and the end token.
double hypothesis_score(const Complete& c, double length_penalty) {
  return c.sum / std::pow(static_cast<double>(c.ids.size() + (c.ended ? 1 : 0)), length_penalty);
}

// Every sequence a search can return, by brute force over the step function.
void enumerate_sequences(const reference::StepFn& step, const GenerateConfig& cfg, std::vector<std::int32_t>& ids,
                         double sum, std::vector<Complete>& out) {
  const std::vector<double> logp = step(ids);
  for (std::size_t v = 0; v < logp.size(); ++v) {
    if (!std::isfinite(logp[v])) continue;
    const auto token = static_cast<std::int32_t>(v);
    if (token == cfg.eos_id) {
      out.push_back(Complete{ids, true, sum + logp[v]});
      continue;
    }
    ids.push_back(token);
    if (static_cast<std::int64_t>(ids.size()) == cfg.max_new_tokens)
      out.push_back(Complete{ids, false, sum + logp[v]});
    else
      enumerate_sequences(step, cfg, ids, sum + logp[v], out);
    ids.pop_back();
  }
}

struct Exhaustive {
  std::vector<Complete> all;
  Exhaustive(const reference::StepFn& step, const GenerateConfig& cfg) {
    std::vector<std::int32_t> ids;
    enumerate_sequences(step, cfg, ids, 0.0, all);
  }
  const Complete& best(double length_penalty) const {
    const Complete* b = &all.front();
    for (const auto& c : all)
      if (hypothesis_score(c, length_penalty) > hypothesis_score(*b, length_penalty)) b = &c;
    return *b;
  }
  const Complete* find(const std::vector<std::int32_t>& ids, bool ended) const {
    for (const auto& c : all)
      if (c.ids == ids && c.ended == ended) return &c;
    return nullptr;
  }
};

// The step function of one GPT-2 request through the full training-path forward (memoized).
reference::StepFn gpt2_step(const Gpt2<float>& m, const Tensor<float>& table, std::int64_t offset,
                            const std::vector<std::int32_t>& prompt, const GenerateConfig& cfg) {
  auto memo = std::make_shared<std::map<std::vector<std::int32_t>, std::vector<double>>>();
  return [&m, table, offset, prompt, cfg, memo](const std::vector<std::int32_t>& generated) {
    auto it = memo->find(generated);
    if (it != memo->end()) return it->second;
    std::vector<std::int32_t> seq = prompt;
    seq.insert(seq.end(), generated.begin(), generated.end());
    const auto logits = full_forward_last(m, seq, table, offset);
    return memo->emplace(generated, processed_log_probs({logits.begin(), logits.end()}, cfg, generated.size()))
        .first->second;
  };
}

reference::BeamOptions reference_options(const GenerateConfig& cfg) {
  reference::BeamOptions o;
  o.num_beams = static_cast<int>(cfg.num_beams), o.max_new_tokens = static_cast<int>(cfg.max_new_tokens);
  o.eos_id = cfg.eos_id, o.length_penalty = cfg.length_penalty;
  // our early_stopping = false is the exact bound (transformers' "never"), true is transformers' True
  o.early_stopping = cfg.early_stopping ? reference::EarlyStopping::kTrue : reference::EarlyStopping::kNever;
  return o;
}

// A toy language model for the beam search core alone: the logits after a sequence (prompt and generated tokens)
// are a fixed pseudo-random function of (seed, sequence), N(0, 1.5^2), the end token's rising with the length so
// that ended hypotheses of several lengths compete with each other and with the cut ones.
std::vector<double> toy_logits(std::uint64_t seed, const std::vector<std::int32_t>& seq, std::int64_t V,
                               std::int32_t eos) {
  std::uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (auto t : seq) h = (h ^ static_cast<std::uint64_t>(t + 1)) * 1099511628211ull;
  Rng rng(h);
  std::vector<double> z(static_cast<std::size_t>(V));
  for (auto& x : z) x = rng.normal(0.0, 1.5);
  z[static_cast<std::size_t>(eos)] += 0.5 * static_cast<double>(seq.size()) - 2.0;
  return z;
}

// The decoding engine interface of decode_loops.hpp over toy_logits: a slot holds its sequence, so a beam reading
// the wrong slot (a bad copy_slot) sees other logits.
class ToyEngine {
 public:
  using value_type = double;
  ToyEngine(std::uint64_t seed, std::int64_t V, std::int32_t eos, std::vector<std::vector<std::int32_t>> prompts,
            std::int64_t slots)
      : seed_(seed), V_(V), eos_(eos), prompts_(std::move(prompts)), seq_(static_cast<std::size_t>(slots)) {}
  const std::vector<std::int32_t>& start_tokens(std::int64_t i) const { return prompts_[static_cast<std::size_t>(i)]; }
  void start(std::int64_t slot, std::int64_t) { seq_[static_cast<std::size_t>(slot)].clear(); }
  Tensor<double> extend(const std::vector<std::int64_t>& slots, const std::vector<std::vector<std::int32_t>>& tokens) {
    auto out = Tensor<double>::empty({static_cast<std::int64_t>(slots.size()), V_});
    for (std::size_t r = 0; r < slots.size(); ++r) {
      auto& s = seq_[static_cast<std::size_t>(slots[r])];
      s.insert(s.end(), tokens[r].begin(), tokens[r].end());
      const auto z = toy_logits(seed_, s, V_, eos_);
      std::copy(z.begin(), z.end(), out.data() + static_cast<std::int64_t>(r) * V_);
    }
    return out;
  }
  void copy_slot(std::int64_t dst, std::int64_t src) {
    seq_[static_cast<std::size_t>(dst)] = seq_[static_cast<std::size_t>(src)];
  }
  bool full(std::int64_t) const { return false; }

 private:
  std::uint64_t seed_;
  std::int64_t V_;
  std::int32_t eos_;
  std::vector<std::vector<std::int32_t>> prompts_;
  std::vector<std::vector<std::int32_t>> seq_;
};

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
      const Exhaustive all(gpt2_step(m, reqs[i].prefix == kNoPrefix ? Tensor<float>() : table,
                                     bank.position_offset(reqs[i].prefix), reqs[i].prompt, cfg),
                           cfg);
      const Complete& best = all.best(lp);
      CHECK(got[i].ids == best.ids);
      CHECK(got[i].ended == best.ended);
      CHECK(got[i].score == doctest::Approx(hypothesis_score(best, lp)).epsilon(1e-5));
    }
  }
}

namespace {

// Each rule of HuggingFace's beam search must decide something in these cases, or the comparison proves little.
struct BeamTally {
  int pruned[5] = {};  // cases per num_beams whose result is below the exhaustive optimum
  int eos_outside_top = 0, beams_past_rank = 0, done_early[2] = {}, finalized_best = 0, ended_best = 0;
};

// One request's beam search (got) against the reference, the exhaustive optimum and its own rescored sequence.
void check_beam(const Generation& got, const reference::StepFn& step, const Exhaustive& all, const GenerateConfig& cfg,
                double tol, BeamTally& tally) {
  const double lp = cfg.length_penalty;
  const auto ref = reference::reference_beam_search(step, reference_options(cfg));
  CHECK(got.ids == ref.best.ids);
  CHECK(got.ended == ref.best.ended);
  CHECK(got.score == doctest::Approx(ref.best.score).epsilon(tol));
  const double optimum = hypothesis_score(all.best(lp), lp);
  CHECK(got.score <= optimum + tol * std::max(1.0, std::abs(optimum)));
  const Complete* self = all.find(got.ids, got.ended);  // a sequence the model can produce, scored as it claims
  CHECK(self != nullptr);
  if (self != nullptr) CHECK(got.score == doctest::Approx(hypothesis_score(*self, lp)).epsilon(tol));
  if (ref.best.score < optimum - 1e-9) ++tally.pruned[cfg.num_beams];
  tally.eos_outside_top += ref.trace.eos_outside_top;
  tally.beams_past_rank += ref.trace.beams_past_rank;
  tally.done_early[cfg.early_stopping ? 1 : 0] += ref.trace.done_before_limit;
  tally.finalized_best += !ref.best.ended;
  tally.ended_best += ref.best.ended;
}

// 2, 3 and 4 beams, with and without early_stopping, at each length penalty: run(cfg) generates for the requests
// of steps / all, and each result goes through check_beam.
void sweep_beams(const GenerateConfig& base, std::initializer_list<double> length_penalties,
                 const std::vector<reference::StepFn>& steps, const std::vector<Exhaustive>& all, double tol,
                 BeamTally& tally, const std::function<std::vector<Generation>(const GenerateConfig&)>& run) {
  for (const double lp : length_penalties) {
    for (const std::int64_t nb : {2, 3, 4}) {
      for (const bool early : {false, true}) {
        CAPTURE(lp);
        CAPTURE(nb);
        CAPTURE(early);
        GenerateConfig cfg = base;
        cfg.num_beams = nb, cfg.length_penalty = lp, cfg.early_stopping = early;
        const auto got = run(cfg);
        REQUIRE(got.size() == steps.size());
        for (std::size_t i = 0; i < got.size(); ++i) check_beam(got[i], steps[i], all[i], cfg, tol, tally);
      }
    }
  }
}

}  // namespace

TEST_CASE(
    "beam search with 2-4 beams follows HuggingFace's rules (an independent reference) and never beats the optimum") {
  BeamTally tally;
  {  // the beam search core on a toy model, 40 seeds, a batch of two requests
    const std::int64_t V = 6;
    const std::int32_t eos = 5;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      const std::vector<std::vector<std::int32_t>> prompts = {{static_cast<std::int32_t>(seed % 5), 1},
                                                              {2, static_cast<std::int32_t>(seed % 3)}};
      GenerateConfig base;
      base.max_new_tokens = 5, base.eos_id = eos, base.min_new_tokens = seed % 4 == 0 ? 1 : 0;
      std::vector<reference::StepFn> steps;
      std::vector<Exhaustive> all;
      for (const auto& prompt : prompts) {
        steps.push_back([seed, prompt, base, V, eos](const std::vector<std::int32_t>& generated) {
          std::vector<std::int32_t> seq = prompt;
          seq.insert(seq.end(), generated.begin(), generated.end());
          return processed_log_probs(toy_logits(seed, seq, V, eos), base, generated.size());
        });
        all.emplace_back(steps.back(), base);
      }
      sweep_beams(base, {1.0, 0.0, 2.0, -0.5}, steps, all, 1e-12, tally, [&](const GenerateConfig& cfg) {
        ToyEngine engine(seed, V, eos, prompts, cfg.num_beams * static_cast<std::int64_t>(prompts.size()));
        return detail::generate_beam(engine, {{prompts[0], kNoPrefix}, {prompts[1], kNoPrefix}}, cfg);
      });
    }
  }
  {  // GPT-2 through generate(), 3 models, a batch of a request with a prefix and one without
    for (const std::uint64_t seed : {21, 22, 23}) {
      CAPTURE(seed);
      const auto m = tiny_model(6, 16, seed);
      Rng rng(seed);
      PrefixBank<float> bank(m.config);
      const auto table = random_table(m.config, 2, rng);
      bank.add(table);
      const std::vector<GenerationRequest> reqs = {{{1, 3}, 0}, {{4, 0, 2}, kNoPrefix}};
      GenerateConfig base;
      base.max_new_tokens = 4, base.min_new_tokens = 1, base.eos_id = 5, base.ban_ids = {2};
      std::vector<reference::StepFn> steps;
      std::vector<Exhaustive> all;
      for (const auto& r : reqs) {
        steps.push_back(gpt2_step(m, r.prefix == kNoPrefix ? Tensor<float>() : table, bank.position_offset(r.prefix),
                                  r.prompt, base));
        all.emplace_back(steps.back(), base);
      }
      sweep_beams(base, {1.0, 2.0, -0.5}, steps, all, 1e-5, tally,
                  [&](const GenerateConfig& cfg) { return generate(m, bank, reqs, cfg); });
    }
  }
  MESSAGE("pruned below the optimum (2/3/4 beams): ", tally.pruned[2], "/", tally.pruned[3], "/", tally.pruned[4],
          "; end tokens past rank num_beams: ", tally.eos_outside_top,
          "; beams from rank >= num_beams: ", tally.beams_past_rank,
          "; stopped before the limit (exact bound / early_stopping): ", tally.done_early[0], "/", tally.done_early[1],
          "; best was cut / ended: ", tally.finalized_best, "/", tally.ended_best);
  CHECK(tally.pruned[2] > 0);  // 2 beams lose the optimum somewhere: the comparison is not vacuous
  CHECK(tally.eos_outside_top > 0);
  CHECK(tally.beams_past_rank > 0);
  CHECK(tally.done_early[0] > 0);
  CHECK(tally.done_early[1] > 0);
  CHECK(tally.finalized_best > 0);
  CHECK(tally.ended_best > 0);
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

  // HuggingFace's warpers in order over a fixed row: temperature 2, top-3, then top-p over the renormalized top 3
  // (TopPLogitsWarper: the smallest set of most likely tokens whose probability reaches top_p, at least one token).
  // z = logits / 2 = {0, 0.5, 1.75, -0.5, 0.75, -0.25}; top-3 = ids 2, 4, 1; their softmax: 0.6045, 0.2224, 0.1732,
  // cumulative 0.6045, 0.8268, 1. At top_p = 0.72 that keeps ids 2 and 4. The other orders keep other sets:
  // top-p before top-k (full tempered softmax 0.4834, 0.1778, 0.1385, ...: cumulative 0.7996 >= 0.72 at the third
  // token) keeps 2, 4, 1; top-p over the un-tempered top 3 (0.8214, ...) or the un-tempered row (0.7831, ...) keeps 2.
  const std::vector<float> logits = {0.0f, 1.0f, 3.5f, -1.0f, 1.5f, -0.5f};
  GenerateConfig w;
  w.sample = true, w.temperature = 2.0, w.top_k = 3;
  const int n = 40000;
  Rng rng(1);
  auto frequencies = [&](double top_p) {
    w.top_p = top_p;
    std::map<std::int32_t, double> f;
    for (int i = 0; i < n; ++i) f[detail::sample_token(logits.data(), 6, w, rng)] += 1.0 / n;
    return f;
  };
  auto kept = frequencies(0.72);
  CHECK(kept.size() == 2);
  CHECK(kept.count(2) == 1);
  CHECK(kept.count(4) == 1);
  CHECK(kept[2] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(0.03));  // e^1.75 / (e^1.75 + e^0.75)
  CHECK(kept[4] == doctest::Approx(1.0 / (1.0 + std::exp(1.0))).epsilon(0.03));
  kept = frequencies(0.9);  // 0.8268 < 0.9: the whole top 3, renormalized
  const double sum = std::exp(1.75) + std::exp(0.75) + std::exp(0.5);
  CHECK(kept.size() == 3);
  CHECK(kept[2] == doctest::Approx(std::exp(1.75) / sum).epsilon(0.03));
  CHECK(kept[4] == doctest::Approx(std::exp(0.75) / sum).epsilon(0.03));
  CHECK(kept[1] == doctest::Approx(std::exp(0.5) / sum).epsilon(0.03));
  kept = frequencies(0.6);  // below the top token's 0.6045: only it (min_tokens_to_keep = 1)
  CHECK(kept.size() == 1);
  CHECK(kept.count(2) == 1);
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
