// SPDX-License-Identifier: MIT
// The paper's variants and baselines on a tiny random GPT-2: deep MLP, direct table, embedding-only, infix,
// initialization from real words (+ MSE pre-fit of the MLP), full and top-2 fine-tuning, discrete prompts.
// Gradients against central finite differences in double; semantics against independent paths (the KV cache,
// the bare model); every trainer lowers the loss.
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/generate/gpt2_generate.hpp"
#include "prefixtune/prefix/embedding_prefix.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "prefixtune/train/finetune.hpp"
#include "prefixtune/train/prefix_init.hpp"
#include "prefixtune/train/trainer.hpp"
#include "test_util.hpp"
#include "train/train_fixture.hpp"

using namespace prefixtune;
using test::BasicSetup;
using test::error_of;
using test::Setup;
using test::TempDir;

namespace {

TokenBatch batch_of(const std::vector<Example>& data, std::size_t n) {
  std::vector<std::size_t> order(data.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  return make_batch(data, order, 0, n, 0);
}

/// Central differences of the batch loss against backprop for every parameter of `method` (double).
template <class Method>
void check_gradients(const Gpt2<double>& model, const Method& method, const TokenBatch& batch) {
  Tape<double> tape;
  auto loss = prefix_batch_loss(tape, model, method, batch);
  tape.backward(loss);
  auto f = [&] {
    NoGradGuard no_grad;
    Tape<double> t;
    return prefix_batch_loss(t, model, method, batch).value().item();
  };
  for (const auto& p : method.parameters()) {
    Tensor<double> x = p.value();
    const auto r = gradcheck(f, x, p.grad().clone(), 1e-6);
    INFO(p.name(), ": max relative error ", r.max_rel_error);
    CHECK(r.ok(1e-6));
  }
}

double mean_of(const std::vector<double>& v, std::size_t b, std::size_t e) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(b), v.begin() + static_cast<std::ptrdiff_t>(e), 0.0) /
         static_cast<double>(e - b);
}

}  // namespace

TEST_CASE("variant gradients match central finite differences in double (deep MLP, direct, EMB, infix)") {
  const BasicSetup<double> s;
  const TokenBatch batch = batch_of(s.train, 3);
  Rng rng(5);
  PrefixConfig deep = s.pc;
  deep.deep = true;
  deep.mid = 6;
  check_gradients(s.model, PrefixEncoder<double>::create(deep, s.model.config, rng), batch);
  check_gradients(s.model, DirectPrefix<double>::random_normal(2, s.model.config, rng), batch);
  PrefixConfig emb = s.pc;
  emb.mid = 5;
  check_gradients(s.model, EmbeddingPrefix<double>::create(emb, s.model.config.n_embd, rng, false, 0.5), batch);
  check_gradients(s.model, EmbeddingPrefix<double>::create(emb, s.model.config.n_embd, rng, true, 0.5), batch);
  auto infix = DirectPrefix<double>::random_normal(2, s.model.config, rng);
  infix.placement = Placement::Infix;
  check_gradients(s.model, infix, batch);
  PrefixConfig infix_mlp = s.pc;
  infix_mlp.placement = Placement::Infix;
  infix_mlp.mid = 6;
  check_gradients(s.model, PrefixEncoder<double>::create(infix_mlp, s.model.config, rng), batch);
}

TEST_CASE("an infix is seen only from the first labelled token on, which moves P positions right") {
  const BasicSetup<double> s;
  const TokenBatch batch = batch_of(s.train, 4);
  Rng rng(7);
  auto infix = DirectPrefix<double>::random_normal(3, s.model.config, rng);
  infix.placement = Placement::Infix;
  NoGradGuard no_grad;
  Tape<double> tape;
  auto kv = infix.prefix_kv(tape, s.model);
  detail::place_prefix(kv, Placement::Infix, batch);
  const auto ids = batch.ids;
  const auto mask = batch.mask;
  const auto with = gpt2_hidden(tape, s.model, ids, mask, kv, infix.offset()).value();
  const auto bare = gpt2_hidden(tape, s.model, ids, mask, PrefixKv<double>(), 0).value();
  const std::int64_t C = s.model.config.n_embd;
  for (std::int64_t b = 0; b < ids.size(0); ++b) {
    const std::int64_t from = kv.visible_from(b);
    CHECK(from == static_cast<std::int64_t>(s.train[static_cast<std::size_t>(b)].ids.size() / 2) - 1);
    for (std::int64_t t = 0; t < ids.size(1); ++t) {
      double diff = 0;
      for (std::int64_t e = 0; e < C; ++e) diff = std::max(diff, std::abs(with(b, t, e) - bare(b, t, e)));
      INFO("row ", b, " token ", t, " (infix before ", from, ")");
      // The source never sees the infix: equal up to the order of the softmax sum (its hidden slots add zeros).
      if (t < from) CHECK(diff < 1e-12);
      if (t >= from && mask(b, t)) CHECK(diff > 1e-6);
    }
  }
  // Visible from token 0 on, an infix is a prefix whose tokens start at position P.
  kv.visible_from = Tensor<std::int32_t>::zeros({ids.size(0)});
  auto as_prefix = infix;
  as_prefix.placement = Placement::Prefix;
  Tape<double> t2;
  const auto a = gpt2_hidden(t2, s.model, ids, mask, kv, 0).value();
  const auto p = gpt2_hidden(t2, s.model, ids, mask, as_prefix.prefix_kv(t2, s.model), as_prefix.offset()).value();
  CHECK(test::max_rel_diff(a.to_vector(), p.to_vector()) == 0.0);
  // Positions past the context are refused with the infix's share named.
  Gpt2<double> small = s.model;
  small.config.n_positions = ids.size(1) + 1;
  CHECK(error_of([&] { (void)gpt2_hidden(t2, small, ids, mask, kv, 0); }).find("with an infix of 3 slots") !=
        std::string::npos);
}

TEST_CASE("prefix_from_words holds exactly the K/V the KV cache computes for those tokens") {
  const BasicSetup<double> s;
  const std::vector<std::int32_t> words = {7, 3, 11, 42};
  const auto prefix = prefix_from_words(s.model, words);
  CHECK(prefix.length() == 4);
  // The independent path: incremental decoding writes every layer's K/V into the cache.
  PrefixBank<double> bank(s.model.config);
  KvCache<double> cache(s.model.config, 1, 8);
  cache.reset(0, kNoPrefix);
  (void)gpt2_extend(s.model, bank, cache, {0}, {words});
  NoGradGuard no_grad;
  Tape<double> tape;
  const auto kv = prefix_kv_from_table(tape, prefix.table, s.model.config.kv_shape());
  const std::int64_t NH = s.model.config.n_head, HS = s.model.config.head_size();
  for (std::int64_t l = 0; l < s.model.config.n_layer; ++l)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t p = 0; p < 4; ++p)
        for (std::int64_t e = 0; e < HS; ++e) {
          CHECK(kv.k[l].value()(0, h, p, e) == doctest::Approx(cache.k(l)(0, h, p, e)).epsilon(1e-12));
          CHECK(kv.v[l].value()(0, h, p, e) == doctest::Approx(cache.v(l)(0, h, p, e)).epsilon(1e-12));
        }
  // table -> K/V -> table is the identity.
  CHECK(test::max_rel_diff(prefix_table_from_kv(kv).to_vector(), prefix.table.value().to_vector()) == 0.0);
  CHECK(error_of([&] { (void)prefix_from_words(s.model, {}); }).find("no tokens") != std::string::npos);
  CHECK(error_of([&] { (void)prefix_from_words(s.model, {3, 50}); }).find("id 50") != std::string::npos);
}

TEST_CASE("an embedding-only prefix serves, merged, exactly what it trains with") {
  const BasicSetup<double> s;
  Rng rng(9);
  PrefixConfig pc = s.pc;
  pc.mid = 8;
  const auto emb = EmbeddingPrefix<double>::create(pc, s.model.config.n_embd, rng, true, 0.5);
  const auto merged = emb.merged(s.model);
  CHECK(merged.length() == 3);
  const TokenBatch batch = batch_of(s.valid, 5);
  NoGradGuard no_grad;
  Tape<double> tape;
  const double trained_view = prefix_batch_loss(tape, s.model, emb, batch).value().item();
  const double served = prefix_batch_loss(tape, s.model, merged, batch).value().item();
  CHECK(served == doctest::Approx(trained_view).epsilon(1e-12));
}

TEST_CASE("fit_encoder_to_table pre-fits the MLP to the K/V of real words") {
  const Setup s;
  const std::vector<std::int32_t> words = {5, 9, 21};
  const auto target = prefix_from_words(s.model, words).table.value();
  PrefixConfig pc = s.pc;  // P = 3 = the words' token count
  Rng rng(3);
  auto enc = PrefixEncoder<float>::create(pc, s.model.config, rng);
  const double before = fit_encoder_to_table(enc, target, 0);
  const double after = fit_encoder_to_table(enc, target, 400, 1e-2);
  INFO("MSE before ", before, " after ", after);
  CHECK(after < 0.05 * before);
  PrefixConfig wrong = s.pc;
  wrong.length = 4;
  auto enc4 = PrefixEncoder<float>::create(wrong, s.model.config, rng);
  CHECK(error_of([&] { (void)fit_encoder_to_table(enc4, target); }).find("token count") != std::string::npos);
}

TEST_CASE("train_prefix trains every variant: the loss falls") {
  const Setup s;
  TrainConfig cfg;
  cfg.epochs = 6;
  cfg.batch_size = 4;
  cfg.lr = 1e-2;
  auto falls = [&](auto method, const char* what, double lr = 1e-2, double factor = 0.8) {
    TrainConfig c = cfg;
    c.lr = lr;
    const auto r = train_prefix(s.model, method, s.train, s.valid, c);
    INFO(what, ": first ", mean_of(r.losses, 0, 10), " last ",
         mean_of(r.losses, r.losses.size() - 10, r.losses.size()));
    CHECK(mean_of(r.losses, r.losses.size() - 10, r.losses.size()) < factor * mean_of(r.losses, 0, 10));
    CHECK(r.best_prefix.table.defined());
    CHECK(r.best_prefix.placement == detail::placement_of(method));
    // The served (merged) prefix scores what validation reported.
    CHECK(evaluate_prefix(s.model, r.best_prefix, s.valid, 4) == doctest::Approx(r.best_valid_loss).epsilon(1e-5));
  };
  Rng rng(11);
  PrefixConfig deep = s.pc;
  deep.deep = true;
  falls(PrefixEncoder<float>::create(deep, s.model.config, rng), "deep MLP");
  falls(DirectPrefix<float>::random_normal(3, s.model.config, rng), "direct N(0,1)", 0.1);
  falls(DirectPrefix<float>::random_uniform(3, s.model.config, rng), "direct U(0,1)", 0.1);
  falls(prefix_from_words(s.model, {5, 9, 21}), "direct from words", 0.1);
  // Embedding-only tuning is the weakest (the paper's EMB rows): its loss falls less.
  falls(EmbeddingPrefix<float>::create(s.pc, s.model.config.n_embd, rng, false, 1.0), "embedding-only", 0.1, 0.9);
  PrefixConfig infix = s.pc;
  infix.placement = Placement::Infix;
  falls(PrefixEncoder<float>::create(infix, s.model.config, rng), "infix MLP");
  // Low-data mode: a fixed step count with warmup instead of epochs.
  TrainConfig low = cfg;
  low.max_steps = 40;
  low.warmup_steps = 10;
  std::vector<TrainProgress> seen;
  auto enc = s.fresh_encoder(1);
  (void)train_prefix(s.model, enc, s.train, {}, low, [&](const TrainProgress& p) { seen.push_back(p); });
  REQUIRE(seen.size() == 40);
  CHECK(seen[0].lr == doctest::Approx(0.0));
  CHECK(seen[10].lr == doctest::Approx(1e-2));
  CHECK(seen[39].total_steps == 40);
}

TEST_CASE("a deep encoder's checkpoint resumes bit for bit") {
  const Setup s;
  TempDir dir;
  PrefixConfig deep = s.pc;
  deep.deep = true;
  TrainConfig cfg;
  cfg.epochs = 2;
  cfg.batch_size = 4;
  cfg.lr = 1e-2;
  cfg.checkpoint_path = dir.file("ckpt.safetensors");
  Rng r1(4), r2(4);
  auto straight = PrefixEncoder<float>::create(deep, s.model.config, r1);
  TrainConfig no_ckpt = cfg;
  no_ckpt.checkpoint_path.clear();
  (void)train_prefix(s.model, straight, s.train, {}, no_ckpt);
  auto resumed = PrefixEncoder<float>::create(deep, s.model.config, r2);
  TrainConfig first = cfg;
  first.stop_after = 7;
  (void)train_prefix(s.model, resumed, s.train, {}, first);
  TrainConfig rest = cfg;
  rest.resume = true;
  (void)train_prefix(s.model, resumed, s.train, {}, rest);
  CHECK(resumed.w_mid.value().to_vector() == straight.w_mid.value().to_vector());
  CHECK(resumed.w2.value().to_vector() == straight.w2.value().to_vector());
}

TEST_CASE("fine_tune: full fine-tuning and FT-top2 lower the loss; FT-top2 leaves the rest untouched") {
  const Setup s;
  TrainConfig cfg;
  cfg.epochs = 4;
  cfg.batch_size = 4;
  cfg.lr = 3e-3;
  for (std::int64_t top : {0, 1}) {
    Gpt2<float> m = to_device<Cpu>(s.model);  // a private copy
    const auto wte = m.wte.to_vector(), h0 = m.h[0].attn_w.to_vector(), h1 = m.h[1].attn_w.to_vector();
    const double before = evaluate_prefix(m, DirectPrefix<float>(), s.valid, 4);
    const auto r = fine_tune(m, s.train, s.valid, cfg, top);
    INFO("top_layers ", top, ": valid ", before, " -> ", r.best_valid_loss);
    CHECK(r.best_valid_loss < 0.8 * before);
    CHECK(mean_of(r.losses, r.losses.size() - 10, r.losses.size()) < mean_of(r.losses, 0, 10));
    CHECK(m.h[1].attn_w.to_vector() != h1);
    if (top == 1) {
      CHECK(m.wte.to_vector() == wte);
      CHECK(m.h[0].attn_w.to_vector() == h0);
    } else {
      CHECK(m.wte.to_vector() != wte);
    }
  }
  Gpt2<float> m = to_device<Cpu>(s.model);
  CHECK(error_of([&] { (void)fine_tune(m, s.train, {}, cfg, 3); }).find("top_layers 3") != std::string::npos);
}

TEST_CASE("discrete prompting: prepend_prompt puts unlabelled ids before every source") {
  Rng rng(1);
  const auto data = test::copy_task(3, rng);
  const auto prompted = prepend_prompt(data, {40, 41});
  REQUIRE(prompted.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(prompted[i].ids.size() == data[i].ids.size() + 2);
    CHECK(prompted[i].ids[0] == 40);
    CHECK(prompted[i].targets[0] == kIgnoreLabel);
    CHECK(std::equal(data[i].targets.begin(), data[i].targets.end(), prompted[i].targets.begin() + 2));
  }
}

TEST_CASE("an infix prefix is saved, loaded and served: incremental decoding equals the full forward") {
  const BasicSetup<double> s;
  Rng rng(13);
  auto infix = DirectPrefix<double>::random_normal(3, s.model.config, rng);
  infix.placement = Placement::Infix;
  TempDir dir;
  save_prefix(dir.file("infix.safetensors"), infix, s.model.config);
  const auto loaded = load_prefix<double>(dir.file("infix.safetensors"), s.model.config);
  CHECK(loaded.placement == Placement::Infix);
  CHECK(error_of([&] { export_peft(dir.file("peft"), infix, s.model.config); }).find("no infix") != std::string::npos);
  PrefixBank<double> bank(s.model.config);
  const std::int64_t id = bank.add(loaded, "user");
  CHECK(bank.infix(id));
  const std::vector<std::int32_t> prompt = {4, 7, 1, test::kEot}, more = {9, 2};
  KvCache<double> cache(s.model.config, 1, 16);
  cache.reset(0, id, bank.visible_from(id, prompt.size()));
  std::vector<Tensor<double>> steps = {gpt2_extend(s.model, bank, cache, {0}, {prompt})};
  for (std::int32_t tok : more) steps.push_back(gpt2_extend(s.model, bank, cache, {0}, {{tok}}));
  // The full forward over prompt + more with the infix before the prompt's last token.
  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), more.begin(), more.end());
  auto ids = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(all.size())}, all);
  NoGradGuard no_grad;
  Tape<double> tape;
  auto kv = loaded.prefix_kv(tape, s.model);
  kv.visible_from = Tensor<std::int32_t>::full({1}, static_cast<std::int32_t>(prompt.size() - 1));
  const auto logits = gpt2_logits(s.model, gpt2_hidden(tape, s.model, ids, {}, kv, 0).value());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const std::int64_t t = static_cast<std::int64_t>(prompt.size() + i) - 1;
    for (std::int64_t v = 0; v < s.model.config.vocab_size; ++v)
      CHECK(steps[i](0, v) == doctest::Approx(logits(0, t, v)).epsilon(1e-10));
  }
}
