// SPDX-License-Identifier: MIT
// Whole-model checks on the GPU through the same templates as the CPU: a GPT-2 prefix-tuning step (forward,
// loss, backward, AdamW) and generation (greedy, beam search, batched rows with different prefixes) must equal
// the CPU's, from the same random weights; and the same for a Llama-family (Qwen3-like, GQA) model.
#include <doctest/doctest.h>

#include <cmath>

#include "prefixtune/cuda.cuh"
#include "test_util.hpp"

using namespace prefixtune;
using test::max_rel_diff;

namespace {

Gpt2Config tiny_config() {
  Gpt2Config c;
  c.vocab_size = 97;
  c.n_positions = 64;
  c.n_embd = 48;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

struct Batch {
  Tensor<std::int32_t> ids, targets;
  Tensor<std::uint8_t> mask;
};

// B rows right-padded to T: row b has T - b real tokens, targets on the second half of each row.
Batch padded_batch(std::int64_t B, std::int64_t T, std::int64_t V, Rng& rng) {
  Batch b{Tensor<std::int32_t>::zeros({B, T}), Tensor<std::int32_t>::zeros({B, T}),
          Tensor<std::uint8_t>::zeros({B, T})};
  for (std::int64_t r = 0; r < B; ++r)
    for (std::int64_t t = 0; t < T; ++t) {
      const bool real = t < T - r;
      b.ids(r, t) = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(V)));
      b.mask(r, t) = real ? 1 : 0;
      b.targets(r, t) =
          real && t >= T / 2 ? static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(V))) : kIgnoreLabel;
    }
  return b;
}

template <class Device>
struct StepResult {
  double loss = 0;
  std::vector<std::vector<float>> grads, params;
  std::vector<float> logits;
};

// One prefix-tuning step: loss, gradients of the encoder, then one AdamW update.
template <class Device>
StepResult<Device> prefix_step(const Gpt2<float, Device>& m, const PrefixEncoder<float, Device>& enc,
                               const Batch& host_batch) {
  const auto ids = host_batch.ids.to<Device>(), targets = host_batch.targets.to<Device>();
  const auto mask = host_batch.mask.to<Device>();
  Tape<float, Device> tape;
  auto kv = prefix_kv_from_table(tape, enc.forward(tape), m.config.kv_shape());
  auto hidden = gpt2_hidden(tape, m, ids, mask, kv, enc.length());
  auto loss = gpt2_loss(tape, m, hidden, targets, Reduction::SumPerSequenceMeanBatch);
  StepResult<Device> r;
  r.loss = static_cast<double>(loss.value().item());
  r.logits = gpt2_logits(m, hidden.value()).to_vector();
  tape.backward(loss);
  for (const auto& p : enc.parameters()) r.grads.push_back(p.grad().to_vector());
  AdamW<float, Device> opt(enc.parameters(), AdamWConfig{});
  opt.step();
  for (const auto& p : enc.parameters()) r.params.push_back(p.value().to_vector());
  return r;
}

}  // namespace

TEST_CASE("a GPT-2 prefix-tuning step on the GPU equals the CPU step") {
  Rng rng(21);
  const auto m = random_gpt2<float>(tiny_config(), rng);
  PrefixConfig pc;
  pc.length = 5;
  pc.mid = 32;
  const auto enc = PrefixEncoder<float>::create(pc, m.config, rng);
  const Batch batch = padded_batch(3, 14, m.config.vocab_size, rng);
  const auto gpu_model = to_device<Cuda>(m);
  const auto gpu_enc = to_device<Cuda>(enc);
  const auto cpu = prefix_step(m, enc, batch);
  const auto gpu = prefix_step(gpu_model, gpu_enc, batch);
  CHECK(std::abs(gpu.loss - cpu.loss) < 1e-5 * std::abs(cpu.loss));
  CHECK(max_rel_diff(gpu.logits, cpu.logits) < 1e-5);
  for (std::size_t i = 0; i < cpu.grads.size(); ++i) {
    CAPTURE(i);
    CHECK(max_rel_diff(gpu.grads[i], cpu.grads[i]) < 1e-5);
    CHECK(max_rel_diff(gpu.params[i], cpu.params[i]) < 1e-5);
  }
}

TEST_CASE("generation on the GPU equals the CPU: greedy, beam search, batched rows with different prefixes") {
  Rng rng(22);
  auto m = random_gpt2<float>(tiny_config(), rng);
  // Weights larger than GPT-2's N(0, 0.02), so that the logits are far from uniform (no near-ties in greedy).
  for (auto& b : m.h)
    for (Tensor<float>* w : {&b.attn_w, &b.attn_proj_w, &b.fc_w, &b.mlp_proj_w}) fill_normal(*w, rng, 0.0, 0.3);
  fill_normal(m.wte, rng, 0.0, 1.0);
  fill_normal(m.wpe, rng, 0.0, 0.3);
  const auto gm = to_device<Cuda>(m);
  PrefixBank<float> bank(m.config);
  PrefixBank<float, Cuda> gbank(m.config);
  for (std::int64_t P : {3, 6}) {
    auto table = test::random_tensor<float>({P, 2 * m.config.n_layer * m.config.n_embd}, rng);
    bank.add(table);
    gbank.add(table);
  }
  std::vector<GenerationRequest> reqs = {{{1, 2, 3}, 0}, {{4, 5, 6, 7, 8, 9}, 1}, {{10}, kNoPrefix}, {{11, 12}, 0}};
  GenerateConfig greedy;
  greedy.max_new_tokens = 12;
  greedy.eos_id = 96;
  GenerateConfig beam = greedy;
  beam.num_beams = 3;
  beam.length_penalty = 0.8;
  for (const auto* cfg : {&greedy, &beam}) {
    CAPTURE(cfg->num_beams);
    const auto cpu = generate(m, bank, reqs, *cfg);
    const auto gpu = generate(gm, gbank, reqs, *cfg);
    REQUIRE(gpu.size() == cpu.size());
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      CAPTURE(i);
      CHECK(gpu[i].ids == cpu[i].ids);
      CHECK(gpu[i].ended == cpu[i].ended);
      CHECK(gpu[i].score == doctest::Approx(cpu[i].score).epsilon(1e-4));
    }
  }
}

TEST_CASE("train_prefix on the GPU follows the CPU run: losses, validation, best prefix, checkpoint resume") {
  Rng rng(23);
  Gpt2Config c = tiny_config();
  auto m = random_gpt2<float>(c, rng);
  for (auto& b : m.h)
    for (Tensor<float>* w : {&b.attn_w, &b.attn_proj_w, &b.fc_w, &b.mlp_proj_w}) fill_normal(*w, rng, 0.0, 0.3);
  fill_normal(m.wte, rng, 0.0, 1.0);
  std::vector<Example> train, valid;
  for (std::size_t i = 0; i < 24; ++i) {
    std::vector<std::int32_t> src;
    for (std::size_t j = 0; j < 2 + i % 3; ++j) src.push_back(static_cast<std::int32_t>(rng.below(10)));
    (i < 18 ? train : valid).push_back(example_from_ids(src, src, 96, i + 1));
  }
  PrefixConfig pc;
  pc.length = 3;
  pc.mid = 16;
  pc.dropout = 0.1;  // the same Philox masks on both devices
  const auto enc0 = PrefixEncoder<float>::create(pc, c, rng);
  TrainConfig cfg;
  cfg.epochs = 3, cfg.batch_size = 4, cfg.lr = 1e-2, cfg.eval_every = 5;
  auto cpu_enc = to_device<Cpu>(enc0);  // a deep copy (copying the struct would share the parameters)
  const auto cpu = train_prefix(m, cpu_enc, train, valid, cfg);
  const auto gm = to_device<Cuda>(m);
  auto gpu_enc = to_device<Cuda>(enc0);
  const auto gpu = train_prefix(gm, gpu_enc, train, valid, cfg);
  REQUIRE(gpu.losses.size() == cpu.losses.size());
  for (std::size_t i = 0; i < cpu.losses.size(); ++i)
    CHECK(gpu.losses[i] == doctest::Approx(cpu.losses[i]).epsilon(1e-4));
  CHECK(gpu.best_step == cpu.best_step);
  CHECK(gpu.best_valid_loss == doctest::Approx(cpu.best_valid_loss).epsilon(1e-4));
  CHECK(max_rel_diff(gpu.best_prefix.table.value().to_vector(), cpu.best_prefix.table.value().to_vector()) < 1e-4);

  // Checkpoints written from the GPU resume on the GPU to the same end as an uninterrupted run.
  test::TempDir dir;
  TrainConfig ck = cfg;
  ck.checkpoint_path = (dir.path / "ckpt.safetensors").string();
  ck.checkpoint_every = 4;
  ck.stop_after = 7;
  auto part = to_device<Cuda>(enc0);
  train_prefix(gm, part, train, valid, ck);
  ck.resume = true;
  ck.stop_after = 0;
  auto resumed = to_device<Cuda>(enc0);
  const auto rest = train_prefix(gm, resumed, train, valid, ck);
  CHECK(rest.steps == gpu.steps);
  const auto a = resumed.parameters(), b = gpu_enc.parameters();
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK(max_rel_diff(a[i].value().to_vector(), b[i].value().to_vector()) < 1e-5);
}

namespace {

// A small Qwen3-like model: GQA (4 query heads, 2 K/V heads), head_dim != hidden / heads, q/k norms, tied head;
// weights scaled up so that greedy choices have no near-ties.
Llama<float> tiny_llama_model(Rng& rng) {
  LlamaConfig c;
  c.model_type = "qwen3", c.qk_norm = true, c.tie_word_embeddings = true;
  c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = 16, c.max_position_embeddings = 64, c.vocab_size = 97;
  Llama<float> m = random_llama<float>(c, rng);
  for (auto* w : detail::llama_weight_slots(m))
    if (w->defined()) fill_normal(*w, rng, w->rank() == 1 ? 1.0 : 0.0, w->rank() == 1 ? 0.1 : 0.3);
  return m;
}

}  // namespace

TEST_CASE("the Llama family on the GPU equals the CPU: a prefix-tuning step and generation with prefixes") {
  Rng rng(31);
  const Llama<float> m = tiny_llama_model(rng);
  const auto gm = to_device<Cuda>(m);
  PrefixConfig pc;
  pc.length = 4, pc.mid = 16;
  const auto enc = PrefixEncoder<float>::create(pc, m.config.kv_shape(), rng);
  const auto genc = to_device<Cuda>(enc);
  const Batch batch = padded_batch(3, 12, m.config.vocab_size, rng);
  auto step = [&](const auto& model, const auto& e, auto device) {
    using Device = decltype(device);
    Tape<float, Device> tape;
    auto kv = prefix_kv_from_table(tape, e.forward(tape), model.config.kv_shape());
    auto h = llama_hidden(tape, model, batch.ids.to<Device>(), batch.mask.to<Device>(), kv, pc.length);
    auto loss = cross_entropy(tape, h, model.head(), batch.targets.to<Device>(), Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
    std::vector<std::vector<float>> grads;
    for (const auto& p : e.parameters()) grads.push_back(p.grad().to_vector());
    return std::make_pair(static_cast<double>(loss.value().item()), grads);
  };
  const auto cpu = step(m, enc, Cpu{});
  const auto gpu = step(gm, genc, Cuda{});
  CHECK(std::abs(gpu.first - cpu.first) < 1e-5 * std::abs(cpu.first));
  for (std::size_t i = 0; i < cpu.second.size(); ++i) CHECK(max_rel_diff(gpu.second[i], cpu.second[i]) < 1e-4);
  PrefixBank<float> bank(m.config.kv_shape());
  PrefixBank<float, Cuda> gbank(m.config.kv_shape());
  for (std::int64_t P : {3, 5}) {
    const auto table = test::random_tensor<float>({P, m.config.kv_shape().table_width()}, rng);
    bank.add(table);
    gbank.add(table);
  }
  const std::vector<GenerationRequest> reqs = {{{1, 2, 3}, 0}, {{4, 5, 6, 7, 8}, 1}, {{9}, kNoPrefix}};
  GenerateConfig greedy;
  greedy.max_new_tokens = 10, greedy.eos_id = 96, greedy.more_eos_ids = {95};
  GenerateConfig beam = greedy;
  beam.num_beams = 3;
  for (const auto* cfg : {&greedy, &beam}) {
    CAPTURE(cfg->num_beams);
    const auto c = generate(m, bank, reqs, *cfg);
    const auto g = generate(gm, gbank, reqs, *cfg);
    REQUIRE(g.size() == c.size());
    for (std::size_t i = 0; i < c.size(); ++i) {
      CAPTURE(i);
      CHECK(g[i].ids == c[i].ids);
      CHECK(g[i].score == doctest::Approx(c[i].score).epsilon(1e-4));
    }
  }
}
