// SPDX-License-Identifier: MIT
// The paper's variants against the independent PyTorch reference (tests/reference/variants_reference.py,
// variants.safetensors): embedding-only prefixes (plain and through an MLP), the infix, initialization from real
// words, the deep encoder, and full fine-tuning's gradients. In double (the reference is float64): logits and
// losses within 1e-10, gradients within 1e-8 (norm-wise relative); the infix also in float (1e-5 / 1e-4).
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "models/parity_util.hpp"
#include "prefixtune/prefixtune.hpp"

using namespace prefixtune;
using test::cast_ids;
using test::rel_err;

extern std::string g_reference_dir;  // test_models.cpp: --reference=DIR

namespace {

struct Variants {
  SafeTensorsFile ref, var;
  TokenBatch batch;
  Variants()
      : ref(SafeTensorsFile::open((std::filesystem::path(g_reference_dir) / "reference.safetensors").string())),
        var(SafeTensorsFile::open((std::filesystem::path(g_reference_dir) / "variants.safetensors").string())) {
    batch.ids = cast_ids<std::int32_t>(ref.load<std::int64_t>("input_ids"));
    batch.targets = cast_ids<std::int32_t>(ref.load<std::int64_t>("targets"));
    batch.mask = cast_ids<std::uint8_t>(ref.load<std::int64_t>("attention_mask"));
  }
  template <class T = double>
  Tensor<T> get(const std::string& name) const {
    return var.load<T>(name);
  }
  template <class T = double>
  Var<T> param(const std::string& name) const {
    return Var<T>(var.load<T>(name), true, name);
  }
  double scalar(const std::string& name) const { return get(name).to_vector()[0]; }
};

struct Run {
  Tensor<double> logits;
  double loss_sum = 0, loss_mean = 0;
};

/// Logits and both losses of `method` on the reference batch; backpropagates loss_sum into its parameters.
template <class T, class Param, class Method>
Run run(const Gpt2<T, Cpu, Param>& m, const Method& method, const TokenBatch& batch) {
  Tape<T> tape;
  auto kv = method.prefix_kv(tape, m);
  detail::place_prefix(kv, detail::placement_of(method), batch);
  auto h = gpt2_hidden(tape, m, batch.ids, batch.mask, kv, method.offset());
  Run r;
  const Tensor<T> logits = gpt2_logits(m, h.value());
  r.logits = Tensor<double>::empty(logits.shape());
  for (std::int64_t i = 0; i < logits.numel(); ++i) r.logits.data()[i] = static_cast<double>(logits.data()[i]);
  {
    NoGradGuard ng;
    r.loss_mean = gpt2_loss(tape, m, h, batch.targets, Reduction::MeanPerToken).value().item();
  }
  auto loss = gpt2_loss(tape, m, h, batch.targets, Reduction::SumPerSequenceMeanBatch);
  r.loss_sum = loss.value().item();
  tape.backward(loss);
  return r;
}

double rel(double a, double b) { return std::abs(a - b) / std::abs(b); }

}  // namespace

TEST_CASE("PyTorch parity: embedding-only prefixes (plain and MLP) in double") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Variants v;
  const auto m = load_gpt2<double>(g_reference_dir + "/model");
  EmbeddingPrefix<double> emb;
  emb.embedding = v.param("emb.embedding");
  emb.config.length = emb.embedding.shape()[0];
  const Run r = run(m, emb, v.batch);
  CHECK(rel_err(r.logits, v.get("emb.logits")) < 1e-10);
  CHECK(rel(r.loss_sum, v.scalar("emb.loss_sum")) < 1e-10);
  CHECK(rel(r.loss_mean, v.scalar("emb.loss_mean")) < 1e-10);
  CHECK(rel_err(emb.embedding.grad(), v.get("emb.grad.embedding")) < 1e-8);
  CHECK(rel_err(emb.merged(m).table.value(), v.get("emb.table")) < 1e-10);

  EmbeddingPrefix<double> mlp;
  mlp.mlp = true;
  mlp.embedding = v.param("emb_mlp.embedding");
  mlp.w1 = v.param("emb_mlp.w1"), mlp.b1 = v.param("emb_mlp.b1");
  mlp.w2 = v.param("emb_mlp.w2"), mlp.b2 = v.param("emb_mlp.b2");
  mlp.config.length = mlp.embedding.shape()[0];
  mlp.config.mid = mlp.w1.shape()[1];
  const Run rm = run(m, mlp, v.batch);
  CHECK(rel(rm.loss_sum, v.scalar("emb_mlp.loss_sum")) < 1e-10);
  for (const auto& p : mlp.parameters()) {
    INFO(p.name());
    CHECK(rel_err(p.grad(), v.get("emb_mlp.grad." + p.name().substr(8))) < 1e-8);
  }
  CHECK(rel_err(mlp.merged(m).table.value(), v.get("emb_mlp.table")) < 1e-10);
}

TEST_CASE("PyTorch parity: the infix (placement, positions, logits, loss, gradient; double and float)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Variants v;
  const auto from = detail::first_labelled(v.batch);
  const auto ref_from = v.var.load<std::int64_t>("infix.from");
  for (std::int64_t b = 0; b < from.numel(); ++b) CHECK(from(b) == ref_from(b));
  const auto P = v.get("infix.table").size(0);
  const auto pos = detail::token_positions(v.batch.ids.size(0), v.batch.ids.size(1), 0, 64, from, P);
  const auto ref_pos = v.var.load<std::int64_t>("infix.position_ids");
  for (std::int64_t i = 0; i < pos.numel(); ++i) CHECK(pos.data()[i] == ref_pos.data()[i]);

  const auto m = load_gpt2<double>(g_reference_dir + "/model");
  DirectPrefix<double> infix{v.param("infix.table"), Placement::Infix};
  const Run r = run(m, infix, v.batch);
  CHECK(rel_err(r.logits, v.get("infix.logits")) < 1e-10);
  CHECK(rel(r.loss_sum, v.scalar("infix.loss_sum")) < 1e-10);
  CHECK(rel(r.loss_mean, v.scalar("infix.loss_mean")) < 1e-10);
  CHECK(rel_err(infix.table.grad(), v.get("infix.grad.table")) < 1e-8);

  const auto mf = load_gpt2<float>(g_reference_dir + "/model");
  DirectPrefix<float> infix32{v.param<float>("infix.table"), Placement::Infix};
  const Run rf = run(mf, infix32, v.batch);
  CHECK(rel_err(rf.logits, v.get("infix.logits")) < 1e-5);
  CHECK(rel(rf.loss_sum, v.scalar("infix.loss_sum")) < 1e-5);
  CHECK(rel_err(infix32.table.grad(), v.get("infix.grad.table")) < 1e-4);
}

TEST_CASE("PyTorch parity: a prefix from real words and the deep encoder in double") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Variants v;
  const auto m = load_gpt2<double>(g_reference_dir + "/model");
  const auto ids = cast_ids<std::int32_t>(v.var.load<std::int64_t>("words.ids")).to_vector();
  CHECK(rel_err(prefix_from_words(m, ids).table.value(), v.get("words.table")) < 1e-12);

  PrefixEncoder<double> deep;
  deep.shape = m.config.kv_shape();
  deep.embedding = v.param("deep.embedding");
  deep.w1 = v.param("deep.w1"), deep.b1 = v.param("deep.b1");
  deep.w_mid = v.param("deep.w_mid"), deep.b_mid = v.param("deep.b_mid");
  deep.w2 = v.param("deep.w2"), deep.b2 = v.param("deep.b2");
  deep.config.deep = true;
  deep.config.length = deep.embedding.shape()[0];
  deep.config.mid = deep.w1.shape()[1];
  {
    NoGradGuard ng;
    Tape<double> t;
    CHECK(rel_err(deep.forward(t).value(), v.get("deep.table")) < 1e-12);
  }
  const Run r = run(m, deep, v.batch);
  CHECK(rel_err(r.logits, v.get("deep.logits")) < 1e-10);
  CHECK(rel(r.loss_sum, v.scalar("deep.loss_sum")) < 1e-10);
  for (const auto& p : deep.parameters()) {
    INFO(p.name());
    CHECK(rel_err(p.grad(), v.get("deep.grad." + p.name().substr(5))) < 1e-8);
  }
}

TEST_CASE("PyTorch parity: full fine-tuning's loss and gradients (per-token mean, double)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  const Variants v;
  auto m = load_gpt2<double>(g_reference_dir + "/model");
  auto t = make_trainable(m);
  const auto params = fine_tune_parameters(t, 0);
  Tape<double> tape;
  auto h = gpt2_hidden(tape, t, v.batch.ids, v.batch.mask, PrefixKv<double>(), 0);
  auto loss = gpt2_loss(tape, t, h, v.batch.targets, Reduction::MeanPerToken);
  CHECK(rel(loss.value().item(), v.scalar("full.loss_mean")) < 1e-10);
  tape.backward(loss);
  int compared = 0;
  for (const auto& p : params) {
    const std::string key = "full.grad." + p.name();
    if (!v.var.has(key)) continue;
    INFO(p.name());
    CHECK(rel_err(p.grad(), v.get(key)) < 1e-8);
    ++compared;
  }
  CHECK(compared == 6);
}
