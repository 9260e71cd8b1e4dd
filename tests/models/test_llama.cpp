// SPDX-License-Identifier: MIT
// The Llama family (llama, mistral, qwen2, qwen3): checkpoints saved and loaded (one file or an index and shards,
// F32/F16/BF16) and their errors, the prefix gradient against central differences in double, batch rows against
// the rows alone, KV-cache decoding (KVH heads cached) against the full forward, mixed-prefix generation batches
// against their rows alone, and parity with the independent PyTorch reference
// (tests/reference/llama_prefix_reference.py) when --reference=DIR holds it: logits, loss, encoder gradients, PEFT
// adapters written by the reference.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "models/parity_util.hpp"
#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/generate/llama_generate.hpp"
#include "prefixtune/models/llama_io.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "prefixtune/train/trainer.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::cast_ids;
using test::error_of;
using test::rel_err;
using test::TempDir;

extern std::string g_reference_dir;  // test_models.cpp: --reference=DIR

namespace {

/// A tiny config of `family` with everything that family may exercise: GQA, an explicit head_dim, biases, q/k
/// norms, llama3 scaling, a tied or untied head.
LlamaConfig tiny_llama(const std::string& family) {
  LlamaConfig c;
  c.model_type = family;
  c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = 4, c.max_position_embeddings = 32, c.vocab_size = 29;
  c.rope.theta = 10000;
  if (family == "llama") {
    c.attention_bias = true;
    c.rope.type = "llama3", c.rope.factor = 4, c.rope.original_max_position_embeddings = 16;
  } else if (family == "mistral") {
    c.num_key_value_heads = 1, c.head_dim = 6;
  } else if (family == "qwen2") {
    c.qkv_bias = true, c.tie_word_embeddings = true;
  } else {
    c.qk_norm = true, c.head_dim = 8, c.tie_word_embeddings = true;
  }
  c.eos_token_ids = {2};
  return c;
}

/// random_llama with every weight perturbed (norms around 1, non-zero biases), so nothing is trivially symmetric.
template <class T>
Llama<T> perturbed_llama(const LlamaConfig& c, std::uint64_t seed) {
  Rng rng(seed);
  Llama<T> m = random_llama<T>(c, rng);
  for (auto* w : detail::llama_weight_slots(m)) {
    if (!w->defined()) continue;
    auto noise = Tensor<T>::empty(w->shape());
    fill_normal(noise, rng, 0.0, w->rank() == 1 ? 0.1 : 0.3);
    for (std::int64_t i = 0; i < w->numel(); ++i)
      w->data()[i] = (w->rank() == 1 ? w->data()[i] : T(0)) + noise.data()[i];
  }
  return m;
}

const std::vector<std::string> kFamilies = {"llama", "mistral", "qwen2", "qwen3"};

template <class T>
Tensor<T> logits_of(const Llama<T>& m, const Tensor<std::int32_t>& ids, const Tensor<std::uint8_t>& mask,
                    const PrefixKv<T>& kv, std::int64_t offset) {
  NoGradGuard ng;
  Tape<T> tape;
  const auto h = llama_hidden(tape, m, ids, mask, kv, offset);
  Tensor<T> logits({ids.size(0), ids.size(1), m.config.vocab_size});
  Tensor<T> rows = logits.reshape({-1, m.config.vocab_size});
  gemm(h.value().reshape({-1, m.config.hidden_size}), Trans::N, m.head(), Trans::T, rows);
  return logits;
}

Tensor<std::int32_t> ids_of(std::int64_t B, std::int64_t T, std::int64_t V, Rng& rng) {
  auto ids = Tensor<std::int32_t>::empty({B, T});
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    ids.data()[i] = static_cast<std::int32_t>(3 + rng.next_u64() % (V - 3));
  return ids;
}

}  // namespace

TEST_CASE("Llama family: save_llama and load_llama round trip (one file, shards, F32 / BF16), forward unchanged") {
  for (const auto& family : kFamilies) {
    CAPTURE(family);
    const LlamaConfig c = tiny_llama(family);
    const Llama<float> m = perturbed_llama<float>(c, 3);
    TempDir dir;
    save_llama(dir.path.string(), m, DType::F32, 2000);  // sharded
    REQUIRE(std::filesystem::exists(dir.file("model.safetensors.index.json")));
    REQUIRE_FALSE(std::filesystem::exists(dir.file("model.safetensors")));
    const auto back = load_llama<float>(dir.path.string());
    CHECK(back.config.to_json() == c.to_json());
    const auto a = detail::llama_weight_slots(m);
    const auto b = detail::llama_weight_slots(back);
    for (std::size_t i = 0; i < a.size(); ++i) {
      REQUIRE(a[i]->defined() == b[i]->defined());
      if (a[i]->defined()) CHECK(a[i]->to_vector() == b[i]->to_vector());
    }
    CHECK(num_parameters(back) == num_parameters(m));
    save_llama(dir.path.string(), m, DType::BF16);  // one file replaces the shards
    CHECK_FALSE(std::filesystem::exists(dir.file("model.safetensors.index.json")));
    const auto bf = load_llama<double>(dir.path.string());
    Rng rng(5);
    const auto ids = ids_of(2, 5, c.vocab_size, rng);
    const auto l32 = logits_of(m, ids, {}, {}, 0);
    const auto l16 = logits_of(bf, ids, {}, {}, 0);
    CHECK(rel_err(l16, l32) < 0.1);  // bf16 weights: close, not equal
    CHECK(rel_err(l16, l32) > 0);
  }
}

TEST_CASE("Llama family: checkpoint errors name the file and the key") {
  const LlamaConfig c = tiny_llama("qwen2");
  const Llama<float> m = perturbed_llama<float>(c, 4);
  TempDir dir;
  const std::string d = dir.path.string();
  save_llama(d, m, DType::F32, 2000);
  const std::string index = dir.file("model.safetensors.index.json");
  const std::string text = read_text_file(index);
  const auto map = nlohmann::json::parse(text)["weight_map"];
  const std::string shard = map["model.norm.weight"].get<std::string>();
  // A shard missing from the folder.
  std::filesystem::rename(dir.file(shard), dir.file("moved"));
  CHECK(error_of([&] { (void)load_llama<float>(d); }).find("shard '" + shard + "'") != std::string::npos);
  std::filesystem::rename(dir.file("moved"), dir.file(shard));
  // A shard path escaping the folder.
  auto escaping = nlohmann::json::parse(text);
  escaping["weight_map"]["model.norm.weight"] = "../" + shard;
  write_text_file_atomic(index, escaping.dump());
  CHECK(error_of([&] { (void)load_llama<float>(d); }).find("is not a file name in the index's folder") !=
        std::string::npos);
  // A key the index does not list.
  auto partial = nlohmann::json::parse(text);
  partial["weight_map"].erase("model.norm.weight");
  write_text_file_atomic(index, partial.dump());
  CHECK(error_of([&] { (void)load_llama<float>(d); }).find("tensor 'model.norm.weight' is not in the index") !=
        std::string::npos);
  write_text_file_atomic(index, "{\"weight_map\": 3}");
  CHECK(error_of([&] { (void)load_llama<float>(d); }).find("no 'weight_map' object") != std::string::npos);
  write_text_file_atomic(index, text);
  CHECK_NOTHROW((void)load_llama<float>(d));
  // A tensor of the wrong shape, an unknown key, a missing key (one-file checkpoints written by hand).
  auto write_one = [&](const std::function<void(SafeTensorsWriter&, const std::string&, const Tensor<float>&)>& edit) {
    const SafeTensorsCheckpoint ck = SafeTensorsCheckpoint::open(d);
    SafeTensorsWriter w;
    for (const auto& key : ck.names()) {
      const auto& f = ck.file_of(key);
      edit(w, key, f.load<float>(key));
    }
    TempDir out;
    w.write(out.file("model.safetensors"));
    std::filesystem::copy_file(dir.file("config.json"), out.file("config.json"));
    return error_of([&] { (void)load_llama<float>(out.path.string()); });
  };
  CHECK(write_one([](SafeTensorsWriter& w, const std::string& k, const Tensor<float>& t) {
          w.add(k, k == "model.norm.weight" ? Tensor<float>::zeros({17}) : t);
        }).find("tensor 'model.norm.weight' has shape (17), expected (16)") != std::string::npos);
  CHECK(write_one([](SafeTensorsWriter& w, const std::string& k, const Tensor<float>& t) {
          w.add(k, t);
          if (k == "model.norm.weight") w.add("model.layers.2.mlp.up_proj.weight", t);
        }).find("unexpected tensor 'model.layers.2.mlp.up_proj.weight'") != std::string::npos);
  CHECK(write_one([](SafeTensorsWriter& w, const std::string& k, const Tensor<float>& t) {
          if (k != "model.layers.1.self_attn.k_proj.bias") w.add(k, t);
        }).find("missing tensor 'model.layers.1.self_attn.k_proj.bias'") != std::string::npos);
  CHECK(write_one([](SafeTensorsWriter& w, const std::string& k, const Tensor<float>& t) {
          w.add(k, t);
          if (k == "model.norm.weight") w.add("model.layers.0.self_attn.rotary_emb.inv_freq", t);  // ignored
        }).empty());
  // An untied model without its head.
  const LlamaConfig u = tiny_llama("mistral");
  TempDir d2;
  save_llama(d2.path.string(), perturbed_llama<float>(u, 1), DType::F32);
  auto j = nlohmann::json::parse(read_text_file(d2.file("config.json")));
  j["tie_word_embeddings"] = true;  // the stored head differs from the embedding
  write_text_file_atomic(d2.file("config.json"), j.dump());
  CHECK(error_of([&] {
          (void)load_llama<float>(d2.path.string());
        }).find("lm_head.weight differs from the embedding but config.json says tie_word_embeddings=true") !=
        std::string::npos);
}

TEST_CASE("Llama family: prefix-encoder gradient against central differences (double), every family") {
  for (const auto& family : kFamilies) {
    CAPTURE(family);
    const LlamaConfig c = tiny_llama(family);
    const Llama<double> m = perturbed_llama<double>(c, 7);
    Rng rng(8);
    PrefixConfig pc;
    pc.length = 3, pc.mid = 6;
    auto enc = PrefixEncoder<double>::create(pc, c, rng);
    std::vector<Example> data = {example_from_ids({3, 4, 5}, {6, 7}, 2), example_from_ids({8, 9}, {10, 11, 12}, 2)};
    std::vector<std::size_t> order = {0, 1};
    const TokenBatch batch = make_batch(data, order, 0, 2, 0);
    Tape<double> tape;
    tape.backward(prefix_batch_loss(tape, m, enc, batch));
    auto f = [&] {
      NoGradGuard ng;
      Tape<double> t;
      return prefix_batch_loss(t, m, enc, batch).value().item();
    };
    Tensor<double> w2 = enc.w2.value();
    const auto r = gradcheck(f, w2, enc.w2.grad());
    CHECK_MESSAGE(r.ok(1e-7), r.max_rel_error);
    Tensor<double> emb = enc.embedding.value();
    const auto r2 = gradcheck(f, emb, enc.embedding.grad());
    CHECK_MESSAGE(r2.ok(1e-7), r2.max_rel_error);
  }
}

TEST_CASE("Llama family: each padded batch row equals the row alone, with a prefix and with an infix") {
  for (const auto& family : kFamilies) {
    CAPTURE(family);
    const LlamaConfig c = tiny_llama(family);
    const Llama<double> m = perturbed_llama<double>(c, 9);
    Rng rng(10);
    const auto table = DirectPrefix<double>::random_normal(3, c, rng);
    const std::vector<Example> data = {example_from_ids({3, 4, 5, 6}, {7, 8, 9}, 2),
                                       example_from_ids({10, 11}, {12}, 2)};
    for (const auto placement : {Placement::Prefix, Placement::Infix}) {
      DirectPrefix<double> p = table;
      p.placement = placement;
      const auto both = score_examples(m, p, data, 2);
      const auto one = score_examples(m, p, data, 1);
      REQUIRE(both.size() == 2);
      for (std::size_t i = 0; i < 2; ++i) {
        CHECK(both[i].first == doctest::Approx(one[i].first).epsilon(1e-12));
        CHECK(both[i].second == one[i].second);
      }
    }
  }
}

TEST_CASE("Llama family: KV-cache decoding equals the full forward at every step (prefix, offset 0, infix, none)") {
  for (const auto& family : kFamilies) {
    CAPTURE(family);
    const LlamaConfig c = tiny_llama(family);
    const Llama<double> m = perturbed_llama<double>(c, 11);
    Rng rng(12);
    PrefixBank<double> bank(c);
    const auto table = DirectPrefix<double>::random_normal(3, c, rng).table.value();
    bank.add(table, "p");
    bank.add(table, "p0", 0);
    bank.add(table, "in", -1, Placement::Infix);
    for (const std::int64_t pi : {kNoPrefix, std::int64_t{0}, std::int64_t{1}, std::int64_t{2}}) {
      CAPTURE(pi);
      KvCache<double> cache(c, 2, 16);
      REQUIRE(cache.k(0).shape() == Shape({2, c.num_key_value_heads, 16, c.head_dim}));  // KVH heads cached
      std::vector<std::int32_t> seq = {5, 9, 13, 4, 20};
      cache.reset(1, pi, bank.visible_from(pi, seq.size()));
      (void)llama_extend(m, bank, cache, {1}, {{seq.begin(), seq.begin() + 3}});  // the prompt in two chunks
      Tensor<double> logits = llama_extend(m, bank, cache, {1}, {{seq.begin() + 3, seq.end()}});
      for (int step = 0; step < 6; ++step) {
        CAPTURE(step);
        // The full forward of seq with the same prefix placement.
        const auto T = static_cast<std::int64_t>(seq.size());
        auto ids = Tensor<std::int32_t>::empty({1, T});
        for (std::int64_t t = 0; t < T; ++t) ids.data()[t] = seq[static_cast<std::size_t>(t)];
        PrefixKv<double> kv;
        std::int64_t offset = 0;
        if (pi != kNoPrefix) {
          NoGradGuard ng;
          Tape<double> t;
          kv = prefix_kv_from_table(t, Var<double>(table), c.kv_shape());
          offset = pi == 0 ? 3 : 0;
          if (pi == 2) kv.visible_from = Tensor<std::int32_t>::full({1}, 4);  // from the last prompt token on
        }
        const auto full = logits_of(m, ids, {}, kv, offset);
        const auto want = full.reshape({T, c.vocab_size}).rows(T - 1, T);
        CHECK(rel_err(logits, want) < 1e-12);
        const std::int32_t next = detail::argmax_token(logits.data(), c.vocab_size);
        seq.push_back(next);
        logits = llama_extend(m, bank, cache, {1}, {{next}});
      }
    }
  }
}

TEST_CASE("Llama family: generate() batches of mixed prefixes give every row what it gives alone") {
  for (const auto& family : kFamilies) {
    CAPTURE(family);
    const LlamaConfig c = tiny_llama(family);
    const Llama<float> m = perturbed_llama<float>(c, 13);
    Rng rng(14);
    PrefixBank<float> bank(c);
    bank.add(DirectPrefix<float>::random_normal(3, c, rng).table.value(), "a");
    bank.add(DirectPrefix<float>::random_normal(5, c, rng).table.value(), "b");
    std::vector<GenerationRequest> reqs = {{{3, 4, 5}, 0}, {{6, 7, 8, 9, 10, 11}, 1}, {{12}, kNoPrefix}, {{13, 14}, 0}};
    for (std::size_t i = 0; i < reqs.size(); ++i) reqs[i].stream = static_cast<std::int64_t>(i);
    GenerateConfig greedy;
    greedy.max_new_tokens = 7, greedy.eos_id = 2, greedy.more_eos_ids = {25, 26};
    GenerateConfig sampled = greedy;
    sampled.sample = true, sampled.top_k = 5, sampled.seed = 3;
    GenerateConfig beam = greedy;
    beam.num_beams = 3;
    for (const auto* cfg : {&greedy, &sampled, &beam}) {
      const auto together = generate(m, bank, reqs, *cfg);
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        CAPTURE(i);
        const auto alone = generate(m, bank, {reqs[i]}, *cfg);
        CHECK(together[i].ids == alone[0].ids);
        CHECK(together[i].ended == alone[0].ended);
        for (auto id : together[i].ids) CHECK_FALSE(cfg->is_eos(id));
      }
    }
  }
  const Llama<float> m = perturbed_llama<float>(tiny_llama("qwen2"), 13);
  PrefixBank<float> bank(m.config);
  GenerateConfig cfg;
  cfg.eos_id = 2;
  CHECK(error_of([&] {
          (void)generate(m, bank, {{{3, 40}, kNoPrefix}}, cfg);
        }).find("request 0 token 1 has id 40, outside the vocabulary [0, 29)") != std::string::npos);
  CHECK(error_of([&] {
          (void)generate(m, bank, {{std::vector<std::int32_t>(33, 3), kNoPrefix}}, cfg);
        }).find("has a prompt of 33 tokens but the model's context holds 32") != std::string::npos);
  cfg.more_eos_ids = {29};
  CHECK(error_of([&] {
          (void)generate(m, bank, {{{3}, kNoPrefix}}, cfg);
        }).find("eos_id 29 is outside") != std::string::npos);
}

// ---- parity with the PyTorch reference ---------------------------------------------------------------------

namespace {

template <class T>
void check_family_parity(const std::string& family, double logits_tol, double loss_tol, double grad_tol) {
  CAPTURE(family);
  const auto f = SafeTensorsFile::open(g_reference_dir + "/" + family + "_reference.safetensors");
  const auto m = load_llama<T>(g_reference_dir + "/" + family);
  const LlamaConfig& c = m.config;
  // The rotary frequencies: the same float32 values.
  const auto inv = f.load<double>("inv_freq").to_vector();
  REQUIRE(inv.size() == m.inv_freq.size());
  for (std::size_t i = 0; i < inv.size(); ++i) CHECK(double(m.inv_freq[i]) == inv[i]);
  const auto ids = cast_ids<std::int32_t>(f.load<std::int64_t>("ids"));
  const auto mask = cast_ids<std::uint8_t>(f.load<std::int64_t>("mask"));
  const auto targets = cast_ids<std::int32_t>(f.load<std::int64_t>("targets"));
  auto enc = test::reference_encoder<T>(f, c);
  const std::int64_t P = enc.config.length;
  Tape<T> tape;
  const auto table = enc.forward(tape);
  CHECK(rel_err(table.value(), f.load<double>("table")) < logits_tol);
  const auto kv = prefix_kv_from_table(tape, table, c.kv_shape());
  const auto h = llama_hidden(tape, m, ids, mask, kv, P);
  auto loss = cross_entropy(tape, h, m.head(), targets, Reduction::SumPerSequenceMeanBatch);
  CHECK(loss.value().item() == doctest::Approx(f.load<double>("loss").to_vector()[0]).epsilon(loss_tol));
  tape.backward(loss);
  CHECK(rel_err(enc.embedding.grad(), f.load<double>("grad.prefix_encoder.embedding.weight")) < grad_tol);
  CHECK(rel_err(test::transpose2d(enc.w1.grad()), f.load<double>("grad.prefix_encoder.transform.0.weight")) < grad_tol);
  CHECK(rel_err(enc.b1.grad(), f.load<double>("grad.prefix_encoder.transform.0.bias")) < grad_tol);
  CHECK(rel_err(test::transpose2d(enc.w2.grad()), f.load<double>("grad.prefix_encoder.transform.2.weight")) < grad_tol);
  CHECK(rel_err(enc.b2.grad(), f.load<double>("grad.prefix_encoder.transform.2.bias")) < grad_tol);
  PrefixKv<T> frozen;
  {
    NoGradGuard ng;
    Tape<T> t;
    frozen = prefix_kv_from_table(t, Var<T>(table.value()), c.kv_shape());
  }
  CHECK(rel_err(logits_of(m, ids, mask, frozen, P), f.load<double>("logits")) < logits_tol);
  CHECK(rel_err(logits_of(m, ids, mask, frozen, 0), f.load<double>("logits_offset0")) < logits_tol);
  CHECK(rel_err(logits_of(m, ids, mask, PrefixKv<T>(), 0), f.load<double>("logits_noprefix")) < logits_tol);
  // The reference's PEFT adapter (prefix_projection: the table) loads and gives the same logits.
  const auto peft = load_prefix<T>(g_reference_dir + "/" + family + "_peft", c.kv_shape());
  CHECK(rel_err(peft.table.value(), f.load<double>("table")) < 1e-6);  // stored in F32
  {
    NoGradGuard ng;
    Tape<T> t;
    CHECK(rel_err(logits_of(m, ids, mask, prefix_kv_from_table(t, peft.table, c.kv_shape()), P),
                  f.load<double>("logits")) < 1e-5);
  }
  // Greedy decoding with the KV cache (prefix from the reference table) gives the reference's tokens; the end id is
  // one the reference never chose, so nothing stops early.
  {
    PrefixBank<T> bank(c);
    bank.add(table.value(), "reference");
    const auto prompt = f.load<std::int64_t>("greedy_prompt").to_vector();
    const auto want = f.load<std::int64_t>("greedy_ids").to_vector();
    GenerateConfig cfg;
    cfg.max_new_tokens = static_cast<std::int64_t>(want.size());
    cfg.eos_id = 0;
    while (std::find(want.begin(), want.end(), cfg.eos_id) != want.end()) ++cfg.eos_id;
    const auto got = generate(m, bank, {{std::vector<std::int32_t>(prompt.begin(), prompt.end()), 0}}, cfg);
    CHECK(std::vector<std::int64_t>(got[0].ids.begin(), got[0].ids.end()) == want);
  }
  // Our export of that table is what PEFT writes, and reads back bit for bit.
  TempDir out;
  export_peft(out.file("peft"), peft, c.kv_shape());
  CHECK(load_prefix<T>(out.file("peft"), c.kv_shape()).table.value().to_vector() == peft.table.value().to_vector());
}

}  // namespace

TEST_CASE("PyTorch parity: Llama family (llama3 rope, GQA, head_dim, biases, q/k norms, F16/BF16 shards; double)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  for (const auto& family : kFamilies) check_family_parity<double>(family, 1e-10, 1e-12, 1e-10);
}

TEST_CASE("PyTorch parity: Llama family in float32 (logits 1e-5, loss 1e-6, encoder gradients 1e-4)") {
  REQUIRE_FALSE(g_reference_dir.empty());
  for (const auto& family : kFamilies) check_family_parity<float>(family, 1e-5, 1e-6, 1e-4);
}
