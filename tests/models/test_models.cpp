// SPDX-License-Identifier: MIT
// Tests of models/ and prefix/: HuggingFace GPT-2 folders (save/load, key layouts, dtypes, every bad input), the
// prefix encoder and merge, frozen weights, and parity with an independent PyTorch reference
// (tests/reference/gpt2_prefix_reference.py). Run with --reference=DIR for the parity cases; if DIR holds no
// reference (python3-torch missing) the program exits 77 and CTest reports the parity test as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "models/parity_util.hpp"
#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::cast_ids;
using test::error_of;
using test::rel_err;
using test::TempDir;
using test::transpose2d;

std::string g_reference_dir;  // set by --reference=DIR (also read by test_generate_parity.cpp)

namespace {

Gpt2Config tiny_config() {
  Gpt2Config c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.n_positions = 12;
  c.vocab_size = 17;
  return c;
}

// Writes config.json + model.safetensors from explicit tensors (for layouts save_gpt2 does not produce).
void write_checkpoint(const std::string& dir, const Gpt2Config& c, const std::map<std::string, Tensor<float>>& w) {
  std::filesystem::create_directories(dir);
  save_safetensors((std::filesystem::path(dir) / "model.safetensors").string(), w);
  write_text_file_atomic((std::filesystem::path(dir) / "config.json").string(), c.to_json().dump());
}

std::map<std::string, Tensor<float>> named_weights(const Gpt2<float>& m, const std::string& prefix = "") {
  std::map<std::string, Tensor<float>> w;
  const auto shapes = detail::gpt2_weight_shapes(m.config);
  const auto slots = detail::gpt2_weight_slots(m);
  for (std::size_t i = 0; i < shapes.size(); ++i) w[prefix + shapes[i].first] = *slots[i];
  return w;
}

struct Batch {
  Tensor<std::int32_t> ids, targets;
  Tensor<std::uint8_t> mask;
};

Batch random_batch(std::int64_t B, std::int64_t T, std::int64_t V, Rng& rng) {
  Batch b{Tensor<std::int32_t>::empty({B, T}), Tensor<std::int32_t>::empty({B, T}),
          Tensor<std::uint8_t>::full({B, T}, 1)};
  for (std::int64_t i = 0; i < B * T; ++i) {
    b.ids.data()[i] = static_cast<std::int32_t>(rng.below(V));
    b.targets.data()[i] = static_cast<std::int32_t>(rng.below(V));
  }
  return b;
}

}  // namespace

TEST_CASE("GPT-2 config.json: fields, defaults, validation") {
  TempDir dir;
  write_text_file_atomic(dir.file("config.json"), R"({"n_layer": 3, "n_head": 4, "n_embd": 96, "n_positions": 64,
      "vocab_size": 1000, "layer_norm_epsilon": 1e-6, "model_type": "gpt2", "activation_function": "gelu_new"})");
  const Gpt2Config c = load_gpt2_config(dir.path.string());
  CHECK(c.n_layer == 3);
  CHECK(c.head_size() == 24);
  CHECK(c.layer_norm_epsilon == 1e-6);
  write_text_file_atomic(dir.file("config.json"), R"({"n_layer": 3, "n_head": 5, "n_embd": 96})");
  CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find("not divisible by n_head=5") != std::string::npos);
  write_text_file_atomic(dir.file("config.json"), R"({"n_layer": "3"})");
  CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find("'n_layer' must be an integer") !=
        std::string::npos);
  write_text_file_atomic(dir.file("config.json"), R"({"activation_function": "relu"})");
  CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find("relu") != std::string::npos);
  write_text_file_atomic(dir.file("config.json"), R"({"model_type": "bart"})");
  CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find("not a GPT-2") != std::string::npos);
  write_text_file_atomic(dir.file("config.json"), "{not json");
  const std::string e = error_of([&] { load_gpt2_config(dir.path.string()); });
  CHECK(e.find("invalid JSON") != std::string::npos);
  CHECK(e.find("config.json") != std::string::npos);
  std::filesystem::remove(dir.file("config.json"));
  CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find("config.json") != std::string::npos);
}

TEST_CASE("GPT-2 checkpoints round-trip in every supported layout and dtype") {
  Rng rng(1);
  const auto m = random_gpt2<float>(tiny_config(), rng);
  Batch b = random_batch(2, 5, m.config.vocab_size, rng);
  auto logits_of = [&](const Gpt2<float>& model) {
    NoGradGuard ng;
    Tape<float> tape;
    return gpt2_logits(model, gpt2_hidden(tape, model, b.ids, b.mask, PrefixKv<float>(), 0).value());
  };
  const auto ref = logits_of(m);
  TempDir dir;
  save_gpt2(dir.file("f32"), m);
  CHECK(rel_err(logits_of(load_gpt2<float>(dir.file("f32"))), ref) == 0.0);
  save_gpt2(dir.file("f16"), m, DType::F16);
  CHECK(rel_err(logits_of(load_gpt2<float>(dir.file("f16"))), ref) < 2e-2);
  save_gpt2(dir.file("bf16"), m, DType::BF16);
  CHECK(rel_err(logits_of(load_gpt2<float>(dir.file("bf16"))), ref) < 5e-2);
  // The save_pretrained layout: "transformer." keys and an explicit (tied) lm_head.
  auto w = named_weights(m, "transformer.");
  w["lm_head.weight"] = m.wte;
  write_checkpoint(dir.file("prefixed"), m.config, w);
  const auto loaded = load_gpt2<float>(dir.file("prefixed"));
  CHECK_FALSE(loaded.lm_head.defined());  // identical to wte: kept tied
  CHECK(rel_err(logits_of(loaded), ref) == 0.0);
  // An untied head is kept and used.
  auto w2 = named_weights(m);
  auto head = Tensor<float>::empty({m.config.vocab_size, m.config.n_embd});
  fill_normal(head, rng, 0, 0.02);
  w2["lm_head.weight"] = head;
  w2["h.0.attn.bias"] = Tensor<float>::full({1, 1, 12, 12}, 1.0f);  // buffers are ignored
  w2["h.1.attn.masked_bias"] = Tensor<float>::full({}, -1e4f);
  write_checkpoint(dir.file("untied"), m.config, w2);
  const auto untied = load_gpt2<float>(dir.file("untied"));
  REQUIRE(untied.lm_head.defined());
  CHECK(untied.lm_head.to_vector() == head.to_vector());
  CHECK(rel_err(logits_of(untied), ref) > 1e-3);
}

TEST_CASE("bad checkpoints give errors naming the file and the key") {
  Rng rng(2);
  const auto m = random_gpt2<float>(tiny_config(), rng);
  TempDir dir;
  auto expect = [&](std::map<std::string, Tensor<float>> w, const Gpt2Config& c, const std::string& what) {
    const std::string d = dir.file("bad");
    std::filesystem::remove_all(d);
    write_checkpoint(d, c, w);
    const std::string e = error_of([&] { (void)load_gpt2<float>(d); });
    INFO(e);
    CHECK(e.find(what) != std::string::npos);
    CHECK(e.find("model.safetensors") != std::string::npos);
  };
  auto w = named_weights(m);
  w.erase("h.1.mlp.c_fc.bias");
  expect(w, m.config, "missing tensor 'h.1.mlp.c_fc.bias'");
  w = named_weights(m);
  w["h.0.attn.c_attn.weight"] = Tensor<float>::zeros({8, 25});
  expect(w, m.config, "h.0.attn.c_attn.weight");
  w = named_weights(m);
  w["h.0.adapter.weight"] = Tensor<float>::zeros({2});
  expect(w, m.config, "unexpected tensor 'h.0.adapter.weight'");
  Gpt2Config more_layers = m.config;
  more_layers.n_layer = 3;
  expect(named_weights(m), more_layers, "missing tensor 'h.2.ln_1.weight'");
  Gpt2Config fewer_layers = m.config;
  fewer_layers.n_layer = 1;
  expect(named_weights(m), fewer_layers, "unexpected tensor 'h.1.");
  Gpt2Config bigger_vocab = m.config;
  bigger_vocab.vocab_size = 18;
  expect(named_weights(m), bigger_vocab, "wte.weight");
  std::map<std::string, Tensor<float>> other = {{"encoder.weight", Tensor<float>::zeros({2})}};
  expect(other, m.config, "not a GPT-2 checkpoint");
  // NaN in weights: found when asked for.
  w = named_weights(m);
  auto bad = m.h[1].fc_w.clone();
  bad.data()[5] = std::numeric_limits<float>::quiet_NaN();
  w["h.1.mlp.c_fc.weight"] = bad;
  write_checkpoint(dir.file("nan"), m.config, w);
  CHECK_NOTHROW((void)load_gpt2<float>(dir.file("nan")));
  Gpt2LoadOptions check;
  check.check_finite = true;
  const std::string e = error_of([&] { (void)load_gpt2<float>(dir.file("nan"), check); });
  CHECK(e.find("non-finite value (nan) at flat index 5 in tensor 'h.1.mlp.c_fc.weight'") != std::string::npos);
  // A truncated file.
  save_gpt2(dir.file("trunc"), m);
  const std::string st = dir.file("trunc") + "/model.safetensors";
  std::filesystem::resize_file(st, std::filesystem::file_size(st) - 7);
  CHECK(error_of([&] { (void)load_gpt2<float>(dir.file("trunc")); }).find("model.safetensors") != std::string::npos);
  CHECK(error_of([&] { (void)load_gpt2<float>(dir.file("nowhere")); }).find("nowhere") != std::string::npos);
}

TEST_CASE("GPT-2 forward rejects bad token ids and over-long sequences") {
  Rng rng(3);
  const auto m = random_gpt2<float>(tiny_config(), rng);
  Tape<float> tape;
  auto ids = Tensor<std::int32_t>::full({1, 4}, 3);
  ids(0, 2) = 17;
  CHECK(error_of([&] {
          (void)gpt2_hidden(tape, m, ids, Tensor<std::uint8_t>(), PrefixKv<float>(), 0);
        }).find("token id 17") != std::string::npos);
  auto long_ids = Tensor<std::int32_t>::full({1, 9}, 1);
  CHECK_NOTHROW((void)gpt2_hidden(tape, m, long_ids, Tensor<std::uint8_t>(), PrefixKv<float>(), 3));
  const std::string e =
      error_of([&] { (void)gpt2_hidden(tape, m, long_ids, Tensor<std::uint8_t>(), PrefixKv<float>(), 4); });
  CHECK(e.find("a sequence of 9 tokens starting at position 4") != std::string::npos);
  CHECK(e.find("n_positions=12") != std::string::npos);
  PrefixKv<float> wrong;
  wrong.k.resize(1);
  wrong.v.resize(1);
  CHECK(error_of([&] { (void)gpt2_hidden(tape, m, ids, Tensor<std::uint8_t>(), wrong, 0); }).find("n_layer=2") !=
        std::string::npos);
}

TEST_CASE("prefix encoder: shapes, PyTorch default init ranges, merge, frozen model bitwise unchanged") {
  Rng rng(4);
  const auto m = random_gpt2<float>(tiny_config(), rng);
  PrefixConfig pc;
  pc.length = 3;
  pc.mid = 16;
  auto enc = PrefixEncoder<float>::create(pc, m.config, rng);
  CHECK(enc.embedding.shape() == Shape{3, 8});
  CHECK(enc.w1.shape() == Shape{8, 16});
  CHECK(enc.w2.shape() == Shape{16, 2 * 2 * 8});
  for (float v : enc.w1.value().to_vector()) CHECK(std::abs(v) <= 1.0f / std::sqrt(8.0f));
  for (float v : enc.b2.value().to_vector()) CHECK(std::abs(v) <= 1.0f / std::sqrt(16.0f));
  CHECK(error_of([&] {
          PrefixConfig bad;
          bad.length = 0;
          (void)PrefixEncoder<float>::create(bad, m.config, rng);
        }).find("P must be >= 1") != std::string::npos);

  const auto before = named_weights(m);
  std::map<std::string, std::vector<float>> snapshot;
  for (auto& kv : before) snapshot[kv.first] = kv.second.to_vector();
  Batch b = random_batch(2, 6, m.config.vocab_size, rng);
  auto loss_of = [&](Tape<float>& tape, const Var<float>& table) {
    auto kv = prefix_kv_from_table(tape, table, m.config.kv_shape());
    auto h = gpt2_hidden(tape, m, b.ids, b.mask, kv, pc.offset());
    return gpt2_loss(tape, m, h, b.targets, Reduction::SumPerSequenceMeanBatch);
  };
  Tape<float> tape;
  const auto loss = loss_of(tape, enc.forward(tape));
  tape.backward(loss);
  for (const auto& p : enc.parameters()) {
    REQUIRE(p.grad().defined());
    Tensor<float> value = p.value();
    accumulate(value, p.grad(), -0.1f);  // one SGD step on the prefix only
  }
  for (auto& kv : named_weights(m)) {
    INFO(kv.first);
    CHECK(std::memcmp(kv.second.data(), snapshot[kv.first].data(), kv.second.bytes()) == 0);
  }
  // merge(): the table the MLP produces, now a plain trainable table with the same loss.
  const DirectPrefix<float> merged = merge(enc);
  CHECK(merged.table.shape() == Shape{3, 32});
  NoGradGuard ng;
  Tape<float> t1, t2;
  CHECK(loss_of(t1, enc.forward(t1)).value().item() == doctest::Approx(loss_of(t2, merged.table).value().item()));
}

TEST_CASE("make_trainable and frozen_view share the weights; gradients reach every weight, the tied wte twice") {
  Rng rng(4);
  auto m = random_gpt2<double>(tiny_config(), rng);
  for (auto& b : m.h) fill_normal(b.attn_w, rng, 0.0, 0.3);
  auto t = make_trainable(m);
  const Batch batch = random_batch(2, 6, m.config.vocab_size, rng);
  auto loss_of = [&]() {
    NoGradGuard no_grad;
    Tape<double> tape;
    auto h = gpt2_hidden(tape, t, batch.ids, batch.mask, PrefixKv<double>(), 0);
    return gpt2_loss(tape, t, h, batch.targets, Reduction::MeanPerToken).value().item();
  };
  {
    Tape<double> tape;
    auto h = gpt2_hidden(tape, t, batch.ids, batch.mask, PrefixKv<double>(), 0);
    tape.backward(gpt2_loss(tape, t, h, batch.targets, Reduction::MeanPerToken));
  }
  const auto keys = detail::gpt2_weight_shapes(m.config);
  const auto params = detail::gpt2_weight_slots(t);
  const auto weights = detail::gpt2_weight_slots(m);
  REQUIRE(params.size() == keys.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    CAPTURE(keys[i].first);
    CHECK(params[i]->name() == keys[i].first);
    CHECK(params[i]->value().data() == weights[i]->data());  // shared, not copied
    REQUIRE(params[i]->grad().defined());
    double norm = 0;
    for (double g : params[i]->grad().to_vector()) norm += g * g;
    CHECK(norm > 0);
    // central difference on one element, perturbing the frozen model's tensor (the trainable one sees it)
    const std::int64_t at = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(weights[i]->numel())));
    double& w = weights[i]->data()[at];
    const double saved = w, eps = 1e-6;
    w = saved + eps;
    const double up = loss_of();
    w = saved - eps;
    const double down = loss_of();
    w = saved;
    CHECK(params[i]->grad().data()[at] == doctest::Approx((up - down) / (2 * eps)).epsilon(1e-6).scale(1e-3));
  }
  const Gpt2<double> f = frozen_view(t);
  CHECK(f.wte.data() == m.wte.data());
  CHECK(f.h[1].mlp_proj_b.data() == m.h[1].mlp_proj_b.data());
  CHECK(!f.lm_head.defined());  // tied stays tied
}

TEST_CASE("a GPT-2 small (124M config, random weights) runs a full prefix-tuning step") {
  Rng rng(5);
  const auto m = random_gpt2<float>(Gpt2Config::gpt2_small(), rng);
  PrefixConfig pc;  // P = 10, mid = 512
  auto enc = PrefixEncoder<float>::create(pc, m.config, rng);
  Batch b = random_batch(1, 16, m.config.vocab_size, rng);
  Tape<float> tape;
  auto kv = prefix_kv_from_table(tape, enc.forward(tape), m.config.kv_shape());
  auto loss = gpt2_loss(tape, m, gpt2_hidden(tape, m, b.ids, b.mask, kv, pc.offset()), b.targets,
                        Reduction::SumPerSequenceMeanBatch);
  CHECK(std::isfinite(loss.value().item()));
  CHECK(loss.value().item() == doctest::Approx(16 * std::log(50257.0)).epsilon(0.05));
  tape.backward(loss);
  for (const auto& p : enc.parameters()) {
    REQUIRE(p.grad().defined());
    double norm = 0;
    for (float g : p.grad().to_vector()) norm += double(g) * g;
    CHECK(std::isfinite(norm));
    CHECK(norm > 0);
  }
}

// ---- parity with the PyTorch reference ---------------------------------------------------------------------

namespace {

struct Reference {
  SafeTensorsFile file;
  Tensor<std::int32_t> ids, targets;
  Tensor<std::uint8_t> mask;
  explicit Reference(const std::string& dir)
      : file(SafeTensorsFile::open((std::filesystem::path(dir) / "reference.safetensors").string())) {
    ids = cast_ids<std::int32_t>(file.load<std::int64_t>("input_ids"));
    targets = cast_ids<std::int32_t>(file.load<std::int64_t>("targets"));
    mask = cast_ids<std::uint8_t>(file.load<std::int64_t>("attention_mask"));
  }
  Tensor<double> get(const std::string& name) const { return file.load<double>(name); }
  Tensor<float> getf(const std::string& name) const { return file.load<float>(name); }
};

PrefixEncoder<float> reference_encoder(const Reference& r, const Gpt2Config& c) {
  return test::reference_encoder(r.file, c);
}

struct Outputs {
  Tensor<float> logits;
  double loss_sum = 0, loss_mean = 0;
};

Outputs run(const Gpt2<float>& m, const Reference& r, Tape<float>& tape, const Var<float>& table) {
  PrefixKv<float> kv;
  std::int64_t offset = 0;
  if (table.defined()) {
    kv = prefix_kv_from_table(tape, table, m.config.kv_shape());
    offset = table.shape()[0];
  }
  auto h = gpt2_hidden(tape, m, r.ids, r.mask, kv, offset);
  Outputs o;
  o.logits = gpt2_logits(m, h.value());
  {
    NoGradGuard ng;
    o.loss_mean = gpt2_loss(tape, m, h, r.targets, Reduction::MeanPerToken).value().item();
  }
  auto loss = gpt2_loss(tape, m, h, r.targets, Reduction::SumPerSequenceMeanBatch);
  o.loss_sum = loss.value().item();
  if (loss.requires_grad()) tape.backward(loss);
  return o;
}

double scalar(const Reference& r, const std::string& name) { return r.get(name).to_vector()[0]; }

}  // namespace

TEST_CASE("PyTorch parity: logits, losses and prefix gradients (encoder, direct table, no prefix; fp32)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Reference r(g_reference_dir);
  const auto m = load_gpt2<float>(g_reference_dir + "/model");
  // MLP encoder: logits and loss to 1e-5, gradients of every encoder parameter to 1e-4.
  auto enc = reference_encoder(r, m.config);
  Tape<float> tape;
  auto table = enc.forward(tape);
  CHECK(rel_err(table.value(), r.get("prefix_table_from_encoder")) < 1e-5);
  const Outputs o = run(m, r, tape, table);
  MESSAGE("encoder: logits rel err ", rel_err(o.logits, r.get("logits_encoder")));
  CHECK(rel_err(o.logits, r.get("logits_encoder")) < 1e-5);
  CHECK(std::abs(o.loss_sum - scalar(r, "loss_sum_encoder")) / scalar(r, "loss_sum_encoder") < 1e-5);
  CHECK(std::abs(o.loss_mean - scalar(r, "loss_mean_encoder")) / scalar(r, "loss_mean_encoder") < 1e-5);
  const double ge = rel_err(enc.embedding.grad(), r.get("grad.prefix_encoder.embedding.weight"));
  const double g1 = rel_err(transpose2d(enc.w1.grad()), r.get("grad.prefix_encoder.transform.0.weight"));
  const double gb1 = rel_err(enc.b1.grad(), r.get("grad.prefix_encoder.transform.0.bias"));
  const double g2 = rel_err(transpose2d(enc.w2.grad()), r.get("grad.prefix_encoder.transform.2.weight"));
  const double gb2 = rel_err(enc.b2.grad(), r.get("grad.prefix_encoder.transform.2.bias"));
  MESSAGE("encoder grads rel err: emb ", ge, " w1 ", g1, " b1 ", gb1, " w2 ", g2, " b2 ", gb2);
  CHECK(ge < 1e-4);
  CHECK(g1 < 1e-4);
  CHECK(gb1 < 1e-4);
  CHECK(g2 < 1e-4);
  CHECK(gb2 < 1e-4);

  // Direct table.
  Var<float> direct(r.getf("direct_prefix"), true);
  Tape<float> t2;
  const Outputs od = run(m, r, t2, direct);
  CHECK(rel_err(od.logits, r.get("logits_direct")) < 1e-5);
  CHECK(std::abs(od.loss_sum - scalar(r, "loss_sum_direct")) / scalar(r, "loss_sum_direct") < 1e-5);
  MESSAGE("direct table grad rel err ", rel_err(direct.grad(), r.get("grad.direct_prefix")));
  CHECK(rel_err(direct.grad(), r.get("grad.direct_prefix")) < 1e-4);

  // No prefix: positions 0..T-1.
  NoGradGuard ng;
  Tape<float> t3;
  const Outputs on = run(m, r, t3, Var<float>());
  CHECK(rel_err(on.logits, r.get("logits_noprefix")) < 1e-5);
  CHECK(std::abs(on.loss_sum - scalar(r, "loss_sum_noprefix")) / scalar(r, "loss_sum_noprefix") < 1e-5);
}

TEST_CASE("PyTorch parity: transformer.-prefixed keys with lm_head, F16 and BF16 checkpoints") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Reference r(g_reference_dir);
  NoGradGuard ng;
  const auto enc = reference_encoder(r, load_gpt2_config(g_reference_dir + "/model"));
  auto logits = [&](const std::string& sub) {
    const auto m = load_gpt2<float>(g_reference_dir + "/" + sub);
    Tape<float> tape;
    return run(m, r, tape, enc.forward(tape));
  };
  CHECK(rel_err(logits("model_prefixed").logits, r.get("logits_encoder")) < 1e-5);
  const Outputs f16 = logits("model_f16"), bf16 = logits("model_bf16");
  CHECK(rel_err(f16.logits, r.get("logits_encoder_f16")) < 1e-5);
  CHECK(rel_err(bf16.logits, r.get("logits_encoder_bf16")) < 1e-5);
  CHECK(std::abs(f16.loss_sum - scalar(r, "loss_sum_encoder_f16")) / scalar(r, "loss_sum_encoder_f16") < 1e-5);
  CHECK(std::abs(bf16.loss_sum - scalar(r, "loss_sum_encoder_bf16")) / scalar(r, "loss_sum_encoder_bf16") < 1e-5);
}

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--reference=", 12) == 0) {
      g_reference_dir = argv[i] + 12;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (!g_reference_dir.empty() &&
      !std::filesystem::exists(std::filesystem::path(g_reference_dir) / "reference.safetensors")) {
    std::printf("no PyTorch reference in %s (python3-torch missing?): parity tests skipped\n", g_reference_dir.c_str());
    return 77;
  }
  doctest::Context ctx(static_cast<int>(args.size()), args.data());
  if (g_reference_dir.empty()) ctx.addFilter("test-case-exclude", "PyTorch parity*");
  return ctx.run();
}

TEST_CASE("GPT-2 config.json: sizes out of range are refused before anything is allocated") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"vocab_size": 1000000000})", "vocab_size=1000000000 is out of range"},
      {R"({"n_layer": 0})", "n_layer=0 is out of range"},
      {R"({"n_layer": 100000})", "n_layer=100000 is out of range"},
      {R"({"n_embd": 1048576, "n_head": 1})", "n_embd=1048576 out of range"},
      {R"({"n_positions": 1073741824})", "n_positions=1073741824 is out of range"},
      {R"({"layer_norm_epsilon": -1})", "layer_norm_epsilon=-1 is out of range"},
      {R"({"n_head": 0})", "n_head=0"},
  };
  for (const auto& [json, message] : cases) {
    CAPTURE(json);
    write_text_file_atomic(dir.file("config.json"), json);
    CHECK(error_of([&] { load_gpt2_config(dir.path.string()); }).find(message) != std::string::npos);
  }
  // A folder with a valid config but no weights names the missing file.
  write_text_file_atomic(dir.file("config.json"), R"({"n_layer": 1, "n_head": 1, "n_embd": 4, "vocab_size": 8})");
  CHECK(error_of([&] { load_gpt2<float>(dir.path.string()); }).find("model.safetensors") != std::string::npos);
}
