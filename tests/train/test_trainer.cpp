// SPDX-License-Identifier: MIT
// The prefix-tuning loop on a tiny random GPT-2 and a synthetic copy task: the training loss falls, validation
// keeps the best prefix, an interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted one
// (weights, and with validation the best step, loss and prefix file, for every prefix method and fine-tuning).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/embedding_prefix.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "prefixtune/train/finetune.hpp"
#include "prefixtune/train/trainer.hpp"
#include "test_util.hpp"
#include "train/train_fixture.hpp"

using namespace prefixtune;
using test::copy_task;
using test::error_of;
using test::Setup;
using test::TempDir;

namespace {

double mean(const std::vector<double>& v, std::size_t b, std::size_t e) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(b), v.begin() + static_cast<std::ptrdiff_t>(e), 0.0) /
         static_cast<double>(e - b);
}

// Runs `make(seed)`'s method without interruption, then interrupted after each of `stops` (the checkpoint of that
// step on disk, as a kill leaves it) and resumed on a method made from another seed: the resumed run reports the
// same best step and loss and writes a byte-identical best prefix. Returns how many stops came after the best step
// (there the best is known only from the checkpoint).
template <class Make>
int check_resume_keeps_best(const Setup& s, Make make, const std::string& what, std::vector<std::int64_t> stops) {
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 3, cfg.batch_size = 4, cfg.lr = 3e-2, cfg.eval_every = 3, cfg.checkpoint_every = 5;
  auto m0 = make(1);
  const auto straight = train_prefix(s.model, m0, s.train, s.valid, cfg);
  REQUIRE(straight.steps == 30);
  REQUIRE(straight.best_step > 0);
  save_prefix(dir.file("straight.safetensors"), straight.best_prefix, s.model.config);
  const std::string expected = read_text_file(dir.file("straight.safetensors"));
  stops.push_back(straight.best_step);  // killed right after the best validation: every later one is worse
  stops.push_back(straight.steps);      // a checkpoint at the final step
  int after_best = 0;
  for (const std::int64_t stop : stops) {
    INFO(what, ": stopped after step ", stop, " (uninterrupted best at step ", straight.best_step, ")");
    TrainConfig first = cfg;
    first.checkpoint_path = dir.file("run.ckpt");
    std::filesystem::remove(first.checkpoint_path);
    first.stop_after = stop;
    auto m1 = make(1);
    REQUIRE(train_prefix(s.model, m1, s.train, s.valid, first).steps == stop);
    TrainConfig rest = first;
    rest.stop_after = 0;
    rest.resume = true;
    auto m2 = make(999);  // other initial values: everything must come from the checkpoint
    const auto r = train_prefix(s.model, m2, s.train, s.valid, rest);
    CHECK(r.steps == straight.steps);
    CHECK(r.best_step == straight.best_step);
    CHECK(r.best_valid_loss == straight.best_valid_loss);
    REQUIRE(r.best_prefix.table.defined());
    save_prefix(dir.file("resumed.safetensors"), r.best_prefix, s.model.config);
    CHECK(read_text_file(dir.file("resumed.safetensors")) == expected);
    after_best += stop >= straight.best_step ? 1 : 0;
  }
  return after_best;
}

}  // namespace

TEST_CASE("train_prefix lowers the loss and keeps the best validated prefix") {
  const Setup s;
  auto enc = s.fresh_encoder(1);
  TrainConfig cfg;
  cfg.epochs = 6, cfg.batch_size = 4, cfg.lr = 3e-2, cfg.eval_every = 10;
  std::vector<TrainProgress> seen;
  const auto r = train_prefix(s.model, enc, s.train, s.valid, cfg, [&](const TrainProgress& p) { seen.push_back(p); });
  REQUIRE(r.losses.size() == 60);
  CHECK(r.steps == 60);
  CHECK(seen.back().step == 60);
  CHECK(seen.back().total_steps == 60);
  const double first = mean(r.losses, 0, 10), last = mean(r.losses, 50, 60);
  MESSAGE("training loss: first epoch ", first, ", last epoch ", last);
  CHECK(last < 0.6 * first);  // the stated amount: at least 40% lower after 6 epochs (measured: 54%)
  CHECK(std::isfinite(r.best_valid_loss));
  CHECK(r.best_step % 10 == 0);
  REQUIRE(r.best_prefix.table.defined());
  CHECK(evaluate_prefix(s.model, r.best_prefix.table, s.valid, 4, s.pc.offset()) ==
        doctest::Approx(r.best_valid_loss).epsilon(1e-5));
}

TEST_CASE("an interrupted run resumed from its checkpoint matches an uninterrupted one bit for bit") {
  const Setup s;
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 3, cfg.batch_size = 4, cfg.lr = 5e-3, cfg.warmup_steps = 5, cfg.checkpoint_every = 7;
  auto straight = s.fresh_encoder(2);
  train_prefix(s.model, straight, s.train, {}, cfg);

  cfg.checkpoint_path = dir.file("run.ckpt");
  cfg.stop_after = 14;  // "killed" after step 14 (the checkpoint of step 14 is on disk)
  auto first = s.fresh_encoder(2);
  CHECK(train_prefix(s.model, first, s.train, {}, cfg).steps == 14);
  cfg.stop_after = 0;
  cfg.resume = true;
  auto resumed = s.fresh_encoder(999);  // different initial values: everything must come from the checkpoint
  const auto r = train_prefix(s.model, resumed, s.train, {}, cfg);
  CHECK(r.steps == 30);
  CHECK(r.losses.size() == 16);
  const auto a = straight.parameters(), b = resumed.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name());
    CHECK(std::memcmp(a[i].value().data(), b[i].value().data(), a[i].value().bytes()) == 0);
  }
  cfg.seed = 7;
  auto other = s.fresh_encoder(2);
  CHECK(error_of([&] { (void)train_prefix(s.model, other, s.train, {}, cfg); }).find("made with seed 42") !=
        std::string::npos);
}

TEST_CASE("train_prefix rejects bad settings and data") {
  const Setup s;
  auto enc = s.fresh_encoder(3);
  TrainConfig cfg;
  cfg.batch_size = 0;
  CHECK(error_of([&] { (void)train_prefix(s.model, enc, s.train, {}, cfg); }).find("batch_size") != std::string::npos);
  CHECK(error_of([&] { (void)train_prefix(s.model, enc, {}, {}, TrainConfig{}); }).find("empty") != std::string::npos);
  TrainConfig smooth;
  smooth.label_smoothing = 0.1;  // applied by train_bart_prefix only: refused rather than ignored
  CHECK(error_of([&] {
          (void)train_prefix(s.model, enc, s.train, {}, smooth);
        }).find("label_smoothing 0.1 is not supported by this trainer") != std::string::npos);
  smooth.label_smoothing = -0.5;
  CHECK(error_of([&] {
          (void)train_prefix(s.model, enc, s.train, {}, smooth);
        }).find("label_smoothing must be finite and in [0, 1)") != std::string::npos);
  auto bad = s.train;
  bad[3].ids[0] = 77;  // outside the vocabulary
  TrainConfig one;
  one.epochs = 1;
  one.batch_size = 40;
  CHECK(error_of([&] { (void)train_prefix(s.model, enc, bad, {}, one); }).find("token id 77") != std::string::npos);
}

TEST_CASE("a non-finite loss stops training with the step and keeps the last checkpoint, or skips the step") {
  const Setup s;
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 2, cfg.batch_size = 4, cfg.lr = 5e-3, cfg.checkpoint_every = 1;
  cfg.checkpoint_path = dir.file("run.ckpt");
  // After step 5 (its checkpoint is already written) a parameter turns NaN, as a diverging run would.
  auto enc = s.fresh_encoder(4);
  float* poison = enc.parameters().front().value().data();
  float saved = 0;
  const auto poison_after_5 = [&](const TrainProgress& p) {
    if (p.step == 5) {
      saved = *poison;
      *poison = std::numeric_limits<float>::quiet_NaN();
    }
  };
  const std::string err = error_of([&] { (void)train_prefix(s.model, enc, s.train, {}, cfg, poison_after_5); });
  CHECK(err.find("non-finite loss nan at step 6") != std::string::npos);
  CHECK(err.find("run.ckpt") != std::string::npos);
  // The checkpoint on disk is step 5's good state: resuming from it runs on with finite losses.
  cfg.resume = true;
  cfg.stop_after = 8;
  auto resumed = s.fresh_encoder(5);
  const auto r = train_prefix(s.model, resumed, s.train, {}, cfg);
  CHECK(r.steps == 8);
  REQUIRE(r.losses.size() == 3);
  for (const double l : r.losses) CHECK(std::isfinite(l));

  // SkipStep: the poisoned step is skipped (no update from it), the parameter is mended, training goes on.
  TrainConfig skip;
  skip.epochs = 2, skip.batch_size = 4, skip.lr = 5e-3, skip.on_nonfinite = NonFinitePolicy::SkipStep;
  auto enc2 = s.fresh_encoder(4);
  poison = enc2.parameters().front().value().data();
  std::vector<bool> skipped_seen;
  const auto r2 = train_prefix(s.model, enc2, s.train, {}, skip, [&](const TrainProgress& p) {
    skipped_seen.push_back(p.skipped);
    if (p.step == 6) *poison = saved;  // the skipped step made no update; restore the value
    poison_after_5(p);
  });
  CHECK(r2.steps == 20);
  CHECK(r2.skipped_steps == std::vector<std::int64_t>{6});
  REQUIRE(skipped_seen.size() == 20);
  CHECK(skipped_seen[5]);
  CHECK(std::count(skipped_seen.begin(), skipped_seen.end(), true) == 1);
  CHECK(std::isnan(r2.losses[5]));
  for (const auto& p : enc2.parameters())
    for (std::int64_t i = 0; i < p.value().numel(); ++i) REQUIRE(std::isfinite(p.value().data()[i]));
}

TEST_CASE("first_nonfinite_grad names the first parameter whose gradient is NaN or infinite") {
  Var<float> a(Tensor<float>::zeros({2}), true, "a"), b(Tensor<float>::zeros({3}), true, "b");
  a.grad_for_accumulation();
  b.grad_for_accumulation().data()[2] = std::numeric_limits<float>::infinity();
  CHECK(detail::first_nonfinite_grad(std::vector<Var<float>>{a, b}) == "b");
  b.grad_for_accumulation().data()[2] = 0;
  CHECK(detail::first_nonfinite_grad(std::vector<Var<float>>{a, b}) == "?");
}

TEST_CASE("a run resumed at any step keeps the uninterrupted run's best validated prefix, byte for byte") {
  const Setup s;
  const std::vector<std::int64_t> stops = {1, 4, 6, 17, 29};
  CHECK(check_resume_keeps_best(
            s, [&](std::uint64_t seed) { return s.fresh_encoder(seed); }, "MLP", stops) >= 2);
  PrefixConfig infix = s.pc;
  infix.placement = Placement::Infix;
  check_resume_keeps_best(s,
                          [&](std::uint64_t seed) {
                            Rng rng(seed);
                            return PrefixEncoder<float>::create(infix, s.model.config, rng);
                          },
                          "infix MLP", {9});
  check_resume_keeps_best(s,
                          [&](std::uint64_t seed) {
                            Rng rng(seed);
                            return DirectPrefix<float>::random_normal(3, s.model.config, rng);
                          },
                          "direct", {9});
  check_resume_keeps_best(s,
                          [&](std::uint64_t seed) {
                            Rng rng(seed);
                            return EmbeddingPrefix<float>::create(s.pc, s.model.config.n_embd, rng, true, 0.5);
                          },
                          "embedding-only", {9});
}

TEST_CASE("fine-tuning resumed at any step reports the uninterrupted run's best validation step and loss") {
  const Setup s;
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 2, cfg.batch_size = 4, cfg.lr = 3e-3, cfg.eval_every = 3, cfg.checkpoint_every = 5;
  Gpt2<float> m0 = to_device<Cpu>(s.model);
  const auto straight = fine_tune(m0, s.train, s.valid, cfg, 1);
  REQUIRE(straight.best_step > 0);
  for (const std::int64_t stop : {straight.best_step, std::int64_t{7}, straight.steps}) {
    INFO("stopped after step ", stop);
    TrainConfig first = cfg;
    first.checkpoint_path = dir.file("ft.ckpt");
    std::filesystem::remove(first.checkpoint_path);
    first.stop_after = stop;
    Gpt2<float> m1 = to_device<Cpu>(s.model);
    (void)fine_tune(m1, s.train, s.valid, first, 1);
    TrainConfig rest = first;
    rest.stop_after = 0, rest.resume = true;
    const auto r = fine_tune(m1, s.train, s.valid, rest, 1);
    CHECK(r.best_step == straight.best_step);
    CHECK(r.best_valid_loss == straight.best_valid_loss);
    CHECK(m1.h[1].attn_w.to_vector() == m0.h[1].attn_w.to_vector());
  }
}

TEST_CASE(
    "checkpoints without the best-validation state are refused with a message; validating runs resume only "
    "validated checkpoints") {
  const Setup s;
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 1, cfg.batch_size = 4, cfg.lr = 1e-2, cfg.eval_every = 3;
  cfg.checkpoint_path = dir.file("plain.ckpt");
  cfg.stop_after = 4;
  auto enc = s.fresh_encoder(1);
  (void)train_prefix(s.model, enc, s.train, {}, cfg);  // no validation
  cfg.stop_after = 0, cfg.resume = true;
  auto again = s.fresh_encoder(3);
  const auto before = again.parameters().front().value().to_vector();
  CHECK(error_of([&] {
          (void)train_prefix(s.model, again, s.train, s.valid, cfg);
        }).find("checkpoint of a run without validation") != std::string::npos);
  CHECK(again.parameters().front().value().to_vector() == before);    // refused before the weights changed
  CHECK(train_prefix(s.model, again, s.train, {}, cfg).steps == 10);  // the same run without validation resumes

  // An older checkpoint (the metadata before the best state was stored) is refused, naming what it lacks.
  const SafeTensorsFile f = SafeTensorsFile::open(cfg.checkpoint_path);
  SafeTensorsWriter old;
  for (const auto& name : f.names()) {
    if (f.info(name).dtype == DType::I64)
      old.add(name, f.load<std::int64_t>(name), DType::I64);
    else
      old.add(name, f.load<float>(name), DType::F32);
  }
  for (const auto& [k, v] : f.metadata())
    if (k == "format" || k == "step" || k == "seed") old.add_metadata(k, v);
  old.write(dir.file("old.ckpt"));
  cfg.checkpoint_path = dir.file("old.ckpt");
  const std::string e = error_of([&] { (void)train_prefix(s.model, again, s.train, {}, cfg); });
  CHECK(e.find("older prefixtune without the best-validation state") != std::string::npos);
  CHECK(e.find(dir.file("old.ckpt")) != std::string::npos);
}

TEST_CASE("a checkpoint with a wrong format or step is refused, naming the file, before anything is changed") {
  const Setup s;
  TempDir dir;
  auto enc = s.fresh_encoder(1);
  AdamW<float> opt(enc.parameters());
  detail::save_checkpoint(dir.file("good.ckpt"), enc.parameters(), opt, 3, 42);
  CHECK(detail::load_checkpoint(dir.file("good.ckpt"), enc.parameters(), opt, 42) == 3);
  const auto write_meta = [&](const std::string& name, const std::vector<std::pair<std::string, std::string>>& meta) {
    SafeTensorsWriter w;
    w.add("x", Tensor<float>::zeros({1}), DType::F32);
    for (const auto& [k, v] : meta) w.add_metadata(k, v);
    w.write(dir.file(name));
    return dir.file(name);
  };
  const auto before = enc.parameters().front().value().clone();
  const std::vector<std::pair<std::vector<std::pair<std::string, std::string>>, std::string>> cases = {
      {{{"format", "pt"}}, "not a prefixtune training checkpoint"},
      {{{"format", "prefixtune.checkpoint"}, {"seed", "42"}}, "no 'step' metadata"},
      {{{"format", "prefixtune.checkpoint"}, {"seed", "42"}, {"step", "12abc"}},
       "metadata 'step' must be a non-negative integer, got '12abc'"},
      {{{"format", "prefixtune.checkpoint"}, {"seed", "42"}, {"step", "-1"}}, "got '-1'"},
      {{{"format", "prefixtune.checkpoint"}, {"seed", "42"}, {"step", "99999999999999999999"}}, "got '9999"},
      {{{"format", "prefixtune.checkpoint"}, {"seed", "42"}, {"step", "5"}}, "older prefixtune"},
      {{{"format", "prefixtune.checkpoint"},
        {"seed", "42"},
        {"step", "5"},
        {"validated", "1"},
        {"best_step", "6"},
        {"best_valid_loss", "1.5"},
        {"best_tensors", "1"}},
       "best_step 6 / best_valid_loss 1.5 do not describe a validation at or before step 5"},
      {{{"format", "prefixtune.checkpoint"},
        {"seed", "42"},
        {"step", "5"},
        {"validated", "1"},
        {"best_step", "-1"},
        {"best_valid_loss", "nan"},
        {"best_tensors", "0"}},
       "'best_valid_loss' must be a number, got 'nan'"},
      {{{"format", "prefixtune.checkpoint"},
        {"seed", "42"},
        {"step", "5"},
        {"validated", "1"},
        {"best_step", "-1"},
        {"best_valid_loss", "inf"},
        {"best_tensors", "0"}},
       "no tensor named"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(i);
    const std::string path = write_meta("bad" + std::to_string(i), cases[i].first);
    const std::string e = error_of([&] { (void)detail::load_checkpoint(path, enc.parameters(), opt, 42); });
    CHECK(e.find(cases[i].second) != std::string::npos);
    CHECK(e.find(path) != std::string::npos);
  }
  const auto after = enc.parameters().front().value();
  CHECK(std::memcmp(before.data(), after.data(), before.bytes()) == 0);
}
