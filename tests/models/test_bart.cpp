// SPDX-License-Identifier: MIT
// BART with the paper's three prefixes: gradients of the three tables against central finite differences (double),
// what each prefix may and may not change, shift_tokens_right, config and checkpoint errors, and parity with the
// independent PyTorch BART (tests/reference/bart_prefix_reference.py) when --reference=DIR holds it.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "models/parity_util.hpp"
#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/generate/bart_generate.hpp"
#include "prefixtune/models/bart_io.hpp"
#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"
#include "prefixtune/train/seq2seq_trainer.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::cast_ids;
using test::error_of;
using test::rel_err;
using test::TempDir;

extern std::string g_reference_dir;  // test_models.cpp: --reference=DIR

namespace {

BartConfig tiny_bart() {
  BartConfig c;
  c.d_model = 8, c.encoder_layers = 2, c.decoder_layers = 1, c.encoder_attention_heads = 2;
  c.decoder_attention_heads = 4, c.encoder_ffn_dim = 12, c.decoder_ffn_dim = 10, c.max_position_embeddings = 12;
  c.vocab_size = 23;
  return c;
}

struct Batch {
  Tensor<std::int32_t> source, decoder_inputs, labels;
  Tensor<std::uint8_t> mask;
};

Batch tiny_batch(const BartConfig& c) {
  Batch b;
  b.source = Tensor<std::int32_t>::from_vector({2, 5}, {5, 9, 3, 14, 2, 7, 4, 11, 1, 1});
  b.mask = Tensor<std::uint8_t>::from_vector({2, 5}, {1, 1, 1, 1, 1, 1, 1, 1, 0, 0});
  b.labels = Tensor<std::int32_t>::from_vector({2, 4}, {8, 16, 21, 2, 6, 2, -100, -100});
  b.decoder_inputs = shift_tokens_right(b.labels, static_cast<std::int32_t>(c.pad_token_id),
                                        static_cast<std::int32_t>(c.decoder_start_token_id));
  return b;
}

/// The per-token mean over labels != -100 of (1 - eps) (-log_softmax(z)[label]) + eps mean_v(-log_softmax(z)_v),
/// by hand in double from logits z (B, T, V): PyTorch's F.cross_entropy(..., label_smoothing=eps).
double hand_loss(const Tensor<double>& logits, const Tensor<std::int32_t>& labels, double eps = 0) {
  const std::int64_t V = logits.size(2);
  double sum = 0;
  int n = 0;
  for (std::int64_t r = 0; r < labels.size(0); ++r)
    for (std::int64_t t = 0; t < labels.size(1); ++t) {
      if (labels(r, t) < 0) continue;
      double mx = -1e300, z = 0, nll_all = 0;
      for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, logits(r, t, v));
      for (std::int64_t v = 0; v < V; ++v) z += std::exp(logits(r, t, v) - mx);
      const double lse = mx + std::log(z);
      for (std::int64_t v = 0; v < V; ++v) nll_all += lse - logits(r, t, v);
      sum += (1 - eps) * (lse - logits(r, t, labels(r, t))) + eps * nll_all / static_cast<double>(V);
      ++n;
    }
  return sum / n;
}

/// Three direct (P, 2*L*C) tables as trainable Vars.
struct Tables {
  Var<double> enc, dec, cross;
};

Seq2SeqPrefixKv<double> kv_of(Tape<double>& tape, const BartConfig& c, const Tables& t) {
  return {prefix_kv_from_table(tape, t.enc, c.encoder_kv_shape()),
          prefix_kv_from_table(tape, t.dec, c.decoder_kv_shape()),
          prefix_kv_from_table(tape, t.cross, c.decoder_kv_shape())};
}

}  // namespace

TEST_CASE("BART: the three prefix tables' gradients match central finite differences in double") {
  const BartConfig c = tiny_bart();
  Rng rng(3);
  const auto m = random_bart<double>(c, rng, 0.4);
  const Batch b = tiny_batch(c);
  auto table = [&](std::int64_t L) {
    auto t = Tensor<double>::empty({2, 2 * L * c.d_model});
    fill_normal(t, rng);
    return Var<double>(t, true);
  };
  Tables t{table(c.encoder_layers), table(c.decoder_layers), table(c.decoder_layers)};
  Tape<double> tape;
  auto loss = bart_prefix_loss(tape, m, kv_of(tape, c, t), b.source, b.mask, b.decoder_inputs, b.labels);
  tape.backward(loss);
  auto f = [&] {
    NoGradGuard ng;
    Tape<double> t2;
    return bart_prefix_loss(t2, m, kv_of(t2, c, t), b.source, b.mask, b.decoder_inputs, b.labels).value().item();
  };
  for (auto* v : {&t.enc, &t.dec, &t.cross}) {
    Tensor<double> x = v->value();
    const auto r = gradcheck(f, x, v->grad().clone());
    INFO("max relative error ", r.max_rel_error);
    CHECK(r.ok(1e-6));
  }
}

TEST_CASE("BART: the encoder prefix changes the encoder states, the decoder prefixes do not; padding stays hidden") {
  const BartConfig c = tiny_bart();
  Rng rng(4);
  const auto m = random_bart<double>(c, rng, 0.4);
  const Batch b = tiny_batch(c);
  Rng prng(5);
  PrefixConfig pc;
  pc.length = 3, pc.mid = 6;
  const auto prefix = Seq2SeqPrefix<double>::create(pc, c, prng);
  CHECK(prefix.parameters().size() == 15);
  CHECK(prefix.parameters()[5].name() == "decoder_prefix.embedding");
  NoGradGuard ng;
  Tape<double> tape;
  const auto kv = prefix.prefix_kv(tape);
  const auto bare = bart_encode(tape, m, b.source, b.mask).value();
  const auto with = bart_encode(tape, m, b.source, b.mask, kv.encoder).value();
  CHECK(rel_err(with, bare) > 1e-3);
  // Row 1's padded source tokens change nothing that row 0 or row 1's real tokens see.
  auto other = b.source.clone();
  other(1, 3) = 20, other(1, 4) = 17;
  const auto padded_changed = bart_encode(tape, m, other, b.mask, kv.encoder).value();
  for (std::int64_t t = 0; t < 3; ++t)
    for (std::int64_t e = 0; e < c.d_model; ++e) CHECK(padded_changed(1, t, e) == with(1, t, e));
  const auto memory = Var<double>(with);
  const auto h0 = bart_decode(tape, m, b.decoder_inputs, memory, b.mask).value();
  const auto h1 = bart_decode(tape, m, b.decoder_inputs, memory, b.mask, kv.decoder, kv.cross).value();
  CHECK(rel_err(h1, h0) > 1e-3);
  // Merged tables serve exactly what the encoders trained with.
  const auto merged = prefix.merged();
  const auto mkv = seq2seq_prefix_kv(tape, merged, c);
  const auto h2 = bart_decode(tape, m, b.decoder_inputs, memory, b.mask, mkv.decoder, mkv.cross).value();
  CHECK(rel_err(h2, h1) == 0.0);
}

TEST_CASE("BART: shift_tokens_right, loss and logits agree; bad inputs name the problem") {
  const auto labels = Tensor<std::int32_t>::from_vector({2, 3}, {5, 6, 7, 8, -100, -100});
  const auto d = shift_tokens_right(labels, 1, 2);
  CHECK(d.to_vector() == std::vector<std::int32_t>{2, 5, 6, 2, 8, 1});
  const BartConfig c = tiny_bart();
  Rng rng(6);
  auto m = random_bart<double>(c, rng, 0.4);
  const Batch b = tiny_batch(c);
  NoGradGuard ng;
  Tape<double> tape;
  const auto memory = bart_encode(tape, m, b.source, b.mask);
  const auto h = bart_decode(tape, m, b.decoder_inputs, memory, b.mask);
  const double loss = bart_loss(tape, m, h, b.labels).value().item();
  const auto logits = bart_logits(m, h.value());
  CHECK(loss == doctest::Approx(hand_loss(logits, b.labels)).epsilon(1e-12));
  m.final_logits_bias(3) = 0.5;
  CHECK(bart_logits(m, h.value())(0, 0, 3) == doctest::Approx(logits(0, 0, 3) + 0.5).epsilon(1e-12));
  // A random non-zero final_logits_bias goes into the fused loss; label smoothing as PyTorch's.
  fill_uniform(m.final_logits_bias, rng, -2.0, 2.0);
  const auto biased = bart_logits(m, h.value());
  CHECK(std::abs(biased(1, 1, 5) - logits(1, 1, 5) - m.final_logits_bias(5)) < 1e-12);
  CHECK(bart_loss(tape, m, h, b.labels).value().item() == doctest::Approx(hand_loss(biased, b.labels)).epsilon(1e-12));
  CHECK(bart_loss(tape, m, h, b.labels, 0.1).value().item() ==
        doctest::Approx(hand_loss(biased, b.labels, 0.1)).epsilon(1e-12));
  CHECK(std::abs(hand_loss(biased, b.labels) - hand_loss(logits, b.labels)) > 1e-3);  // the bias matters
  CHECK(std::abs(hand_loss(biased, b.labels, 0.1) - hand_loss(biased, b.labels)) > 1e-3);
  CHECK(error_of([&] { (void)bart_loss(tape, m, h, b.labels, 1.0); }).find("label_smoothing") != std::string::npos);
  auto long_ids = Tensor<std::int32_t>::zeros({1, 13});
  CHECK(error_of([&] { (void)bart_encode(tape, m, long_ids, {}); }).find("max_position_embeddings = 12") !=
        std::string::npos);
  auto bad_id = b.source.clone();
  bad_id(0, 0) = 23;
  CHECK(!error_of([&] { (void)bart_encode(tape, m, bad_id, b.mask); }).empty());
  Rng prng(1);
  PrefixConfig pc;
  pc.length = 2, pc.mid = 4;
  KvShape three = c.encoder_kv_shape();
  three.layers = 3;  // the encoder has 2
  const auto wrong = PrefixEncoder<double>::create(pc, three, prng);
  Tape<double> t2;
  const auto kv = prefix_kv_from_table(t2, wrong.forward(t2), three);
  CHECK(error_of([&] { (void)bart_encode(t2, m, b.source, b.mask, kv); }).find("encoder prefix has 3 layers") !=
        std::string::npos);
}

TEST_CASE("BART config.json: a GPT-2 folder is not a BART and vice versa; bad fields are refused") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("m"));
  write_text_file_atomic(dir.file("m/config.json"), R"({"model_type": "gpt2", "n_layer": 2})");
  CHECK(error_of([&] { (void)load_bart_config(dir.file("m")); }).find("load it with load_gpt2") != std::string::npos);
  write_text_file_atomic(dir.file("m/config.json"), R"({"model_type": "bart", "d_model": 8})");
  CHECK(error_of([&] { (void)load_gpt2_config(dir.file("m")); }).find("load it with load_bart") != std::string::npos);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"model_type": "bart", "d_model": 10, "encoder_attention_heads": 4})", "not divisible"},
      {R"({"model_type": "bart", "activation_function": "relu"})", "activation_function"},
      {R"({"model_type": "bart", "normalize_before": true})", "pre-LN"},
      {R"({"model_type": "bart", "vocab_size": 10, "eos_token_id": 12})", "eos_token_id=12"},
      {R"({"model_type": "bart", "d_model": "big"})", "'d_model' must be an integer"}};
  for (const auto& [json, expect] : bad) {
    write_text_file_atomic(dir.file("m/config.json"), json);
    INFO(json);
    CHECK(error_of([&] { (void)load_bart_config(dir.file("m")); }).find(expect) != std::string::npos);
  }
}

namespace {

// "<s> a b c </s>" -> the same: a copy task a prefix can learn on a random model.
std::vector<Seq2SeqExample> copy_pairs(std::size_t n, Rng& rng) {
  std::vector<Seq2SeqExample> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::int32_t> ids = {0};
    for (std::size_t j = 0, len = 2 + rng.below(3); j < len; ++j)
      ids.push_back(static_cast<std::int32_t>(3 + rng.below(8)));
    ids.push_back(2);
    out.push_back({ids, ids, i + 1});
  }
  return out;
}

// tiny_bart widened so that three P=3 prefixes can move a random model's loss (the training tests).
BartConfig trainable_bart() {
  BartConfig c = tiny_bart();
  c.d_model = 16, c.encoder_attention_heads = 2, c.decoder_attention_heads = 2, c.encoder_ffn_dim = 24;
  c.decoder_ffn_dim = 24;
  return c;
}

}  // namespace

TEST_CASE("train_bart_prefix: the loss falls, validation keeps the best tables, a resumed run ends bit-identical") {
  const BartConfig c = trainable_bart();
  Rng rng(7);
  const auto m = random_bart<float>(c, rng, 0.3);
  const auto train = copy_pairs(40, rng), valid = copy_pairs(8, rng);
  PrefixConfig pc;
  pc.length = 3, pc.mid = 16;
  TrainConfig cfg;
  cfg.epochs = 6, cfg.batch_size = 4, cfg.lr = 1e-2;
  Rng r1(9);
  auto prefix = Seq2SeqPrefix<float>::create(pc, c, r1);
  const double before = evaluate_bart_prefix(m, prefix.merged(), valid, 4);
  const auto r = train_bart_prefix(m, prefix, train, valid, cfg);
  const auto mean = [](const std::vector<double>& v, std::size_t b, std::size_t e) {
    double s = 0;
    for (std::size_t i = b; i < e; ++i) s += v[i];
    return s / static_cast<double>(e - b);
  };
  INFO("valid ", before, " -> ", r.best_valid_loss, "; train ", mean(r.losses, 0, 10), " -> ",
       mean(r.losses, r.losses.size() - 10, r.losses.size()));
  CHECK(r.steps == 60);
  CHECK(r.best_valid_loss < 0.9 * before);
  CHECK(mean(r.losses, r.losses.size() - 10, r.losses.size()) < 0.9 * mean(r.losses, 0, 10));
  CHECK(evaluate_bart_prefix(m, r.best_tables, valid, 3) == doctest::Approx(r.best_valid_loss).epsilon(1e-5));
  // Interrupted after 17 steps and resumed from the checkpoint: the same tables as one straight run.
  TempDir dir;
  TrainConfig ck = cfg;
  ck.checkpoint_path = dir.file("bart.ckpt");
  ck.stop_after = 17;
  Rng r2(9), r3(9);
  auto straight = Seq2SeqPrefix<float>::create(pc, c, r2), resumed = Seq2SeqPrefix<float>::create(pc, c, r3);
  (void)train_bart_prefix(m, straight, train, {}, cfg);
  (void)train_bart_prefix(m, resumed, train, {}, ck);
  ck.stop_after = 0;
  ck.resume = true;
  (void)train_bart_prefix(m, resumed, train, {}, ck);
  CHECK(resumed.cross.w2.value().to_vector() == straight.cross.w2.value().to_vector());
  CHECK(resumed.encoder.embedding.value().to_vector() == straight.encoder.embedding.value().to_vector());
  // Bad data names its line.
  auto bad = train;
  bad[2].target.push_back(99);
  CHECK(error_of([&] { (void)train_bart_prefix(m, prefix, bad, {}, cfg); }).find("line 3: token id 99") !=
        std::string::npos);
}

TEST_CASE("train_bart_prefix resumed at any step keeps the uninterrupted run's best tables, bit for bit") {
  const BartConfig c = trainable_bart();
  Rng rng(7);
  const auto m = random_bart<float>(c, rng, 0.3);
  const auto train = copy_pairs(24, rng), valid = copy_pairs(6, rng);
  PrefixConfig pc;
  pc.length = 3, pc.mid = 16;
  TrainConfig cfg;
  cfg.epochs = 3, cfg.batch_size = 4, cfg.lr = 3e-2, cfg.eval_every = 2, cfg.checkpoint_every = 5;
  Rng r0(9);
  auto p0 = Seq2SeqPrefix<float>::create(pc, c, r0);
  const auto straight = train_bart_prefix(m, p0, train, valid, cfg);
  REQUIRE(straight.best_step > 0);
  TempDir dir;
  for (const std::int64_t stop : {std::int64_t{3}, straight.best_step, straight.steps}) {
    INFO("stopped after step ", stop, " (uninterrupted best at step ", straight.best_step, ")");
    TrainConfig first = cfg;
    first.checkpoint_path = dir.file("bart.ckpt");
    std::filesystem::remove(first.checkpoint_path);
    first.stop_after = stop;
    Rng r1(9), r2(10);
    auto p1 = Seq2SeqPrefix<float>::create(pc, c, r1);
    (void)train_bart_prefix(m, p1, train, valid, first);
    TrainConfig rest = first;
    rest.stop_after = 0, rest.resume = true;
    auto p2 = Seq2SeqPrefix<float>::create(pc, c, r2);  // other initial values: all must come from the checkpoint
    const auto r = train_bart_prefix(m, p2, train, valid, rest);
    CHECK(r.best_step == straight.best_step);
    CHECK(r.best_valid_loss == straight.best_valid_loss);
    for (const auto& [a, b] : {std::pair{&r.best_tables.encoder, &straight.best_tables.encoder},
                               std::pair{&r.best_tables.decoder, &straight.best_tables.decoder},
                               std::pair{&r.best_tables.cross, &straight.best_tables.cross}}) {
      REQUIRE(a->table.defined());
      CHECK(a->table.value().to_vector() == b->table.value().to_vector());
    }
  }
}

TEST_CASE("train_bart_prefix: label_smoothing smooths the training loss only, validation stays the plain NLL") {
  const BartConfig c = tiny_bart();
  Rng rng(8);
  auto m = random_bart<double>(c, rng, 0.3);
  fill_uniform(m.final_logits_bias, rng, -1.0, 1.0);  // a biased model trains too
  const auto train = copy_pairs(6, rng), valid = copy_pairs(3, rng);
  PrefixConfig pc;
  pc.length = 2, pc.mid = 8;
  TrainConfig cfg;
  cfg.epochs = 1, cfg.batch_size = 6, cfg.lr = 0.0;  // one step over the whole set, no update
  cfg.label_smoothing = 0.2;
  Rng r1(3);
  auto prefix = Seq2SeqPrefix<double>::create(pc, c, r1);
  const auto r = train_bart_prefix(m, prefix, train, valid, cfg);
  REQUIRE(r.losses.size() == 1);
  std::vector<std::size_t> order(train.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto all = make_seq2seq_batch(train, order, 0, train.size(), c);
  Tape<double> tape;
  const auto kv = seq2seq_prefix_kv(tape, prefix.merged(), c);
  const double smoothed = bart_batch_loss(tape, m, kv, all, 0.2).value().item();
  const double plain = bart_batch_loss(tape, m, kv, all).value().item();
  CHECK(r.losses[0] == doctest::Approx(smoothed).epsilon(1e-12));  // the same tokens in another order
  CHECK(std::abs(smoothed - plain) > 1e-3);
  CHECK(r.best_valid_loss == evaluate_bart_prefix(m, prefix.merged(), valid, cfg.batch_size));
  cfg.label_smoothing = 1.0;
  CHECK(error_of([&] { (void)train_bart_prefix(m, prefix, train, {}, cfg); }).find("label_smoothing") !=
        std::string::npos);
}

TEST_CASE("encode_seq2seq: BART's <s> / </s> from the vocabulary, a GPT-2 vocabulary is refused") {
  TempDir dir;
  const std::string bpe = (std::filesystem::path(__FILE__).parent_path().parent_path() / "data/gpt2-bpe/").string();
  const auto gpt2 = Gpt2Tokenizer::load(bpe + "encoder.json", bpe + "vocab.bpe");
  const std::vector<TextPair> pairs = {{"Hello world", "Hi", 1}};
  CHECK(error_of([&] { (void)encode_seq2seq(gpt2, pairs); }).find("not a BART vocabulary") != std::string::npos);
  auto vocab = nlohmann::json::parse(read_text_file(bpe + "encoder.json"));
  vocab["<s>"] = 50257;
  vocab["</s>"] = 50258;
  write_text_file_atomic(dir.file("vocab.json"), vocab.dump());
  const auto tok = Gpt2Tokenizer::load(dir.file("vocab.json"), bpe + "vocab.bpe");
  const auto ex = encode_seq2seq(tok, pairs);
  REQUIRE(ex.size() == 1);
  std::vector<std::int32_t> want = {50257};
  for (auto id : gpt2.encode("Hello world")) want.push_back(id);
  want.push_back(50258);
  CHECK(ex[0].source == want);
  CHECK(ex[0].target.front() == 50257);
  CHECK(ex[0].target.back() == 50258);
  CHECK(encode_seq2seq(tok, pairs, 3)[0].source.size() == 3);  // cut before </s>
  CHECK(error_of([&] { (void)encode_seq2seq(tok, pairs, 2); }).find("max_source 2 leaves no room") !=
        std::string::npos);
  CHECK(error_of([&] { (void)encode_seq2seq(tok, pairs, 0, 2); }).find("line 1: the target has 3 tokens") !=
        std::string::npos);
}

// ---- parity with the PyTorch reference ---------------------------------------------------------------------

TEST_CASE("PyTorch parity: BART with three prefixes (logits, loss, the three gradients, greedy; double and float)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const std::string dir = g_reference_dir + "/bart";
  const auto f = SafeTensorsFile::open(g_reference_dir + "/bart_reference.safetensors");
  const auto source = cast_ids<std::int32_t>(f.load<std::int64_t>("input_ids"));
  const auto mask = cast_ids<std::uint8_t>(f.load<std::int64_t>("attention_mask"));
  const auto labels = cast_ids<std::int32_t>(f.load<std::int64_t>("labels"));
  const auto decoder_inputs = cast_ids<std::int32_t>(f.load<std::int64_t>("decoder_input_ids"));
  const auto m = load_bart<double>(dir);
  const BartConfig& c = m.config;
  CHECK(shift_tokens_right(labels, static_cast<std::int32_t>(c.pad_token_id),
                           static_cast<std::int32_t>(c.decoder_start_token_id))
            .to_vector() == decoder_inputs.to_vector());
  Tables t{Var<double>(f.load<double>("prefix.encoder"), true), Var<double>(f.load<double>("prefix.decoder"), true),
           Var<double>(f.load<double>("prefix.cross"), true)};
  Tape<double> tape;
  const auto kv = kv_of(tape, c, t);
  const auto memory = bart_encode(tape, m, source, mask, kv.encoder);
  CHECK(rel_err(memory.value(), f.load<double>("encoder_hidden_prefix")) < 1e-10);
  const auto h = bart_decode(tape, m, decoder_inputs, memory, mask, kv.decoder, kv.cross);
  CHECK(rel_err(bart_logits(m, h.value()), f.load<double>("logits_prefix")) < 1e-10);
  auto loss = bart_loss(tape, m, h, labels);
  CHECK(loss.value().item() == doctest::Approx(f.load<double>("loss_mean_prefix").to_vector()[0]).epsilon(1e-10));
  {  // HF's LabelSmoother at epsilon 0.1 (not recorded: the gradients below are of loss_mean_prefix)
    NoGradGuard ng;
    CHECK(bart_loss(tape, m, h, labels, 0.1).value().item() ==
          doctest::Approx(f.load<double>("loss_smoothed_prefix").to_vector()[0]).epsilon(1e-10));
  }
  tape.backward(loss);
  CHECK(rel_err(t.enc.grad(), f.load<double>("grad.prefix.encoder")) < 1e-8);
  CHECK(rel_err(t.dec.grad(), f.load<double>("grad.prefix.decoder")) < 1e-8);
  CHECK(rel_err(t.cross.grad(), f.load<double>("grad.prefix.cross")) < 1e-8);
  {  // no prefix; the model with a non-zero final_logits_bias (stored without the tied copies)
    NoGradGuard ng;
    Tape<double> t2;
    const auto h0 = bart_decode(t2, m, decoder_inputs, bart_encode(t2, m, source, mask), mask);
    CHECK(rel_err(bart_logits(m, h0.value()), f.load<double>("logits_noprefix")) < 1e-10);
    const auto mb = load_bart<double>(g_reference_dir + "/bart_bias");
    CHECK(bart_has_logits_bias(mb));
    const auto hb = bart_decode(t2, mb, decoder_inputs, bart_encode(t2, mb, source, mask), mask);
    CHECK(rel_err(bart_logits(mb, hb.value()), f.load<double>("logits_bias_noprefix")) < 1e-10);
    const auto ref_bias_logits = f.load<double>("logits_bias_noprefix");
    CHECK(bart_loss(t2, mb, hb, labels).value().item() ==
          doctest::Approx(hand_loss(ref_bias_logits, labels)).epsilon(1e-10));
    CHECK(bart_loss(t2, mb, hb, labels, 0.1).value().item() ==
          doctest::Approx(hand_loss(ref_bias_logits, labels, 0.1)).epsilon(1e-10));
  }
  {  // greedy decoding with the three prefixes, recomputing the decoder at every step
    NoGradGuard ng;
    for (int row = 0; row < 2; ++row) {
      const auto want = f.load<std::int64_t>("greedy.ids" + std::to_string(row)).to_vector();
      const auto step_logits = f.load<double>("greedy.logits" + std::to_string(row));  // (steps, V)
      std::int64_t S = 0;
      while (S < source.size(1) && mask(row, S)) ++S;
      auto src = Tensor<std::int32_t>::empty({1, S});
      for (std::int64_t s = 0; s < S; ++s) src(0, s) = source(row, s);
      Tape<double> t3;
      Tables one{Var<double>(t.enc.value()), Var<double>(t.dec.value()), Var<double>(t.cross.value())};
      const auto kv1 = kv_of(t3, c, one);
      const auto mem = bart_encode(t3, m, src, {}, kv1.encoder);
      std::vector<std::int32_t> ids = {static_cast<std::int32_t>(c.decoder_start_token_id)}, out;
      for (int step = 0; step < 8; ++step) {
        const auto dec = Tensor<std::int32_t>::from_vector({1, static_cast<std::int64_t>(ids.size())}, ids);
        const auto logits = bart_logits(m, bart_decode(t3, m, dec, mem, {}, kv1.decoder, kv1.cross).value());
        double worst = 0, scale = 0;  // this step's logits against the reference's, norm-wise
        for (std::int32_t v = 0; v < c.vocab_size; ++v) {
          worst = std::max(worst, std::abs(logits(0, dec.size(1) - 1, v) - step_logits(step, v)));
          scale = std::max(scale, std::abs(step_logits(step, v)));
        }
        CHECK(worst / scale < 1e-10);
        std::int32_t best = 0;
        for (std::int32_t v = 1; v < c.vocab_size; ++v)
          if (logits(0, dec.size(1) - 1, v) > logits(0, dec.size(1) - 1, best)) best = v;
        if (best == c.eos_token_id) break;
        out.push_back(best);
        ids.push_back(best);
      }
      CHECK(std::vector<std::int64_t>(out.begin(), out.end()) == want);
    }
  }
  {  // cached generation in one batch (both sources, the reference's tables as one bank entry): beam search and
     // greedy with the sequence processors, as the reference's search_generate (ids exact, scores 1e-10)
    Seq2SeqBank<double> bank(c);
    bank.add(Seq2SeqTables<double>{
        {Var<double>(t.enc.value())}, {Var<double>(t.dec.value())}, {Var<double>(t.cross.value())}});
    std::vector<GenerationRequest> requests;
    for (std::int64_t row = 0; row < 2; ++row) {
      GenerationRequest r;
      for (std::int64_t s = 0; s < source.size(1) && mask(row, s); ++s) r.prompt.push_back(source(row, s));
      r.prefix = 0;
      requests.push_back(r);
    }
    GenerateConfig beam = bart_generate_config(c, 7);  // BEAM in the reference
    beam.num_beams = 3, beam.min_new_tokens = 3, beam.no_repeat_ngram_size = 2, beam.length_penalty = 1.0;
    beam.early_stopping = true, beam.forced_bos_id = -1;
    GenerateConfig greedy = bart_generate_config(c, 8);  // GREEDY_PROC: forced BOS from the config
    CHECK(greedy.forced_bos_id == 0);
    greedy.min_new_tokens = 2, greedy.no_repeat_ngram_size = 2;
    for (const auto& [name, cfg] : {std::pair<std::string, GenerateConfig>{"beam", beam}, {"greedy_proc", greedy}}) {
      CAPTURE(name);
      const auto got = generate(m, bank, requests, cfg);
      const auto scores = f.load<double>(name + ".score").to_vector();
      for (std::size_t row = 0; row < 2; ++row) {
        const auto want = f.load<std::int64_t>(name + ".ids" + std::to_string(row)).to_vector();
        CHECK(std::vector<std::int64_t>(got[row].ids.begin(), got[row].ids.end()) == want);
        CHECK(got[row].score == doctest::Approx(scores[row]).epsilon(1e-10));
      }
    }
  }
  // Float: logits 1e-5, gradients 1e-4.
  const auto mf = load_bart<float>(dir);
  Var<float> ef(f.load<float>("prefix.encoder"), true), df(f.load<float>("prefix.decoder"), true),
      cf(f.load<float>("prefix.cross"), true);
  Tape<float> tf;
  const Seq2SeqPrefixKv<float> kvf{prefix_kv_from_table(tf, ef, c.encoder_kv_shape()),
                                   prefix_kv_from_table(tf, df, c.decoder_kv_shape()),
                                   prefix_kv_from_table(tf, cf, c.decoder_kv_shape())};
  const auto hf =
      bart_decode(tf, mf, decoder_inputs, bart_encode(tf, mf, source, mask, kvf.encoder), mask, kvf.decoder, kvf.cross);
  CHECK(rel_err(bart_logits(mf, hf.value()), f.load<double>("logits_prefix")) < 1e-5);
  auto lf = bart_loss(tf, mf, hf, labels);
  tf.backward(lf);
  CHECK(rel_err(ef.grad(), f.load<double>("grad.prefix.encoder")) < 1e-4);
  CHECK(rel_err(df.grad(), f.load<double>("grad.prefix.decoder")) < 1e-4);
  CHECK(rel_err(cf.grad(), f.load<double>("grad.prefix.cross")) < 1e-4);
}

TEST_CASE("save_bart writes HuggingFace's layout: load_bart reads back the same model (tied and untied heads)") {
  Rng rng(21);
  BartConfig c = tiny_bart();
  c.forced_bos_token_id = 0;
  c.scale_embedding = true;
  for (bool untied : {false, true}) {
    CAPTURE(untied);
    auto m = random_bart<double>(c, rng, 0.3);
    fill_normal(m.final_logits_bias, rng, 0.0, 0.5);
    if (untied) {
      m.lm_head = Tensor<double>::empty(m.shared.shape());
      fill_normal(m.lm_head, rng, 0.0, 0.3);
    }
    TempDir dir;
    save_bart(dir.file("m"), m, DType::F64);  // F64: every bit kept
    const auto back = load_bart<double>(dir.file("m"));
    CHECK(back.config.to_json() == c.to_json());
    CHECK(back.lm_head.defined() == untied);
    const Batch b = tiny_batch(c);
    NoGradGuard ng;
    Tape<double> tape;
    auto logits = [&](const Bart<double>& x) {
      return bart_logits(x,
                         bart_decode(tape, x, b.decoder_inputs, bart_encode(tape, x, b.source, b.mask), b.mask).value())
          .to_vector();
    };
    CHECK(logits(back) == logits(m));  // every weight in its place, bit for bit
    const auto names = SafeTensorsFile::open(dir.file("m/model.safetensors")).names();
    CHECK(std::count(names.begin(), names.end(), "model.decoder.layers.0.encoder_attn.k_proj.weight") == 1);
    CHECK(std::count(names.begin(), names.end(), "lm_head.weight") == (untied ? 1 : 0));
  }
}
