// SPDX-License-Identifier: MIT
// BART on the GPU: the cross-attention kernels against the CPU kernels (fp32 within 1e-5, max |gpu - cpu| /
// (1 + |cpu|)), and a prefix-tuning loss with its three prefixes' gradients against the CPU, from the same weights.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "prefixtune/cuda.cuh"
#include "prefixtune/models/bart_io.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::dev;
using test::diff;
using test::max_rel_diff;

namespace {

constexpr double kTol = 1e-5;

Tensor<float> rnd(const Shape& s, Rng& rng) { return test::random_tensor<float>(s, rng); }

enum class KeyMask { None, Some, RowHidden };  // RowHidden: row 1 hides every key

struct CrossCase {
  std::int64_t B, Tq, Tk, NH, HS, P, Bp;
  KeyMask mask;
};

}  // namespace

TEST_CASE("CUDA cross-attention with prefix and key mask equals the CPU kernels, forward and backward") {
  Rng rng(31);
  for (const CrossCase& c : {CrossCase{2, 7, 9, 3, 4, 0, 1, KeyMask::None},           // no prefix
                             CrossCase{3, 6, 9, 2, 8, 4, 1, KeyMask::Some},           // shared prefix
                             CrossCase{3, 11, 8, 4, 16, 5, 3, KeyMask::Some},         // per-row prefix
                             CrossCase{3, 5, 70, 2, 8, 3, 1, KeyMask::Some},          // Tq != Tk
                             CrossCase{3, 5, 70, 2, 8, 3, 3, KeyMask::RowHidden},     // the prefix still in view
                             CrossCase{3, 4, 6, 2, 8, 0, 1, KeyMask::RowHidden},      // nothing visible: zeros
                             CrossCase{2, 33, 300, 12, 64, 10, 1, KeyMask::Some}}) {  // rows wider than a block
    INFO("B=", c.B, " Tq=", c.Tq, " Tk=", c.Tk, " NH=", c.NH, " HS=", c.HS, " P=", c.P, " Bp=", c.Bp,
         " mask=", static_cast<int>(c.mask));
    const std::int64_t C = c.NH * c.HS;
    const auto q = rnd({c.B, c.Tq, C}, rng), kv = rnd({c.B, c.Tk, 2 * C}, rng);
    Tensor<float> pk, pv;
    if (c.P > 0) pk = rnd({c.Bp, c.NH, c.P, c.HS}, rng), pv = rnd({c.Bp, c.NH, c.P, c.HS}, rng);
    Tensor<std::uint8_t> mask;
    if (c.mask != KeyMask::None) {
      mask = Tensor<std::uint8_t>::zeros({c.B, c.Tk});
      for (std::int64_t b = 0; b < c.B; ++b)
        for (std::int64_t t = 0; t < c.Tk; ++t)
          mask(b, t) = (c.mask == KeyMask::RowHidden && b == 1) || (t + 2 * b) % 4 == 1 ? 0 : 1;
    }
    const auto gq = dev(q), gkv = dev(kv), gpk = dev(pk), gpv = dev(pv);
    const auto gmask = dev(mask);

    Tensor<float> out({c.B, c.Tq, C}), probs;
    Tensor<float, Cuda> gout({c.B, c.Tq, C}), gprobs;
    cross_attention_forward(q, kv, c.NH, pk, pv, mask, out, &probs);
    cross_attention_forward(gq, gkv, c.NH, gpk, gpv, gmask, gout, &gprobs);
    CHECK(diff(gout, out) < kTol);
    CHECK(diff(gprobs, probs) < kTol);
    Tensor<float, Cuda> gout2({c.B, c.Tq, C});
    cross_attention_forward(gq, gkv, c.NH, gpk, gpv, gmask, gout2, static_cast<Tensor<float, Cuda>*>(nullptr));
    CHECK(diff(gout2, out) < kTol);  // inference: no probabilities kept
    if (c.mask == KeyMask::RowHidden && c.P == 0) {
      const auto o = gout.to<Cpu>(), p = gprobs.to<Cpu>();
      for (std::int64_t t = 0; t < c.Tq; ++t)
        for (std::int64_t e = 0; e < C; ++e) CHECK(o(1, t, e) == 0.0f);
      for (std::int64_t h = 0; h < c.NH; ++h)
        for (std::int64_t t = 0; t < c.Tq; ++t)
          for (std::int64_t j = 0; j < c.Tk; ++j) CHECK(p(1, h, t, j) == 0.0f);
    }

    // Backward into non-zero gradients (the kernels accumulate).
    const auto dout = rnd(q.shape(), rng);
    const auto gdout = dev(dout);
    auto dq = rnd(q.shape(), rng), dkv = rnd(kv.shape(), rng);
    Tensor<float> dpk, dpv;
    if (c.P > 0) dpk = rnd(pk.shape(), rng), dpv = rnd(pv.shape(), rng);
    auto gdq = dev(dq), gdkv = dev(dkv), gdpk = dev(dpk), gdpv = dev(dpv);
    const auto dq0 = dq.clone();
    cross_attention_backward(dout, q, kv, c.NH, probs, pk, pv, mask, dq, dkv, dpk, dpv);
    cross_attention_backward(gdout, gq, gkv, c.NH, gprobs, gpk, gpv, gmask, gdq, gdkv, gdpk, gdpv);
    CHECK(diff(gdq, dq) < kTol);
    CHECK(diff(gdkv, dkv) < kTol);
    if (c.P > 0) {
      CHECK(diff(gdpk, dpk) < kTol);
      CHECK(diff(gdpv, dpv) < kTol);
    }
    if (c.mask == KeyMask::RowHidden && c.P == 0) {  // a query that sees nothing gets no gradient
      const auto g = gdq.to<Cpu>();
      for (std::int64_t t = 0; t < c.Tq; ++t)
        for (std::int64_t e = 0; e < C; ++e) CHECK(g(1, t, e) == dq0(1, t, e));
    }

    // Some gradients skipped: the prefix's only (a frozen model), or q's only.
    Tensor<float> none;
    Tensor<float, Cuda> gnone;
    if (c.P > 0) {
      auto dpk2 = Tensor<float>::zeros(pk.shape()), dpv2 = Tensor<float>::zeros(pv.shape());
      auto gdpk2 = Tensor<float, Cuda>::zeros(pk.shape()), gdpv2 = Tensor<float, Cuda>::zeros(pv.shape());
      cross_attention_backward(dout, q, kv, c.NH, probs, pk, pv, mask, none, none, dpk2, dpv2);
      cross_attention_backward(gdout, gq, gkv, c.NH, gprobs, gpk, gpv, gmask, gnone, gnone, gdpk2, gdpv2);
      CHECK(diff(gdpk2, dpk2) < kTol);
      CHECK(diff(gdpv2, dpv2) < kTol);
    }
    auto dq3 = Tensor<float>::zeros(q.shape());
    auto gdq3 = Tensor<float, Cuda>::zeros(q.shape());
    Tensor<float> npk, npv;
    Tensor<float, Cuda> gnpk, gnpv;
    cross_attention_backward(dout, q, kv, c.NH, probs, pk, pv, mask, dq3, none, npk, npv);
    cross_attention_backward(gdout, gq, gkv, c.NH, gprobs, gpk, gpv, gmask, gdq3, gnone, gnpk, gnpv);
    CHECK(diff(gdq3, dq3) < kTol);
  }
}

namespace {

/// A copy of a frozen BART on the GPU (every weight, same values).
Bart<float, Cuda> bart_to_gpu(const Bart<float>& m) {
  Bart<float, Cuda> g;
  g.config = m.config;
  g.shared = dev(m.shared), g.enc_pos = dev(m.enc_pos), g.dec_pos = dev(m.dec_pos);
  g.enc_ln_w = dev(m.enc_ln_w), g.enc_ln_b = dev(m.enc_ln_b);
  g.dec_ln_w = dev(m.dec_ln_w), g.dec_ln_b = dev(m.dec_ln_b);
  g.final_logits_bias = dev(m.final_logits_bias), g.lm_head = dev(m.lm_head);
  for (const auto& L : m.encoder) {
    BartEncoderLayer<Tensor<float, Cuda>> G;
    G.q_w = dev(L.q_w), G.q_b = dev(L.q_b), G.kv_w = dev(L.kv_w), G.kv_b = dev(L.kv_b);
    G.out_w = dev(L.out_w), G.out_b = dev(L.out_b);
    G.attn_ln_w = dev(L.attn_ln_w), G.attn_ln_b = dev(L.attn_ln_b);
    G.fc1_w = dev(L.fc1_w), G.fc1_b = dev(L.fc1_b), G.fc2_w = dev(L.fc2_w), G.fc2_b = dev(L.fc2_b);
    G.ffn_ln_w = dev(L.ffn_ln_w), G.ffn_ln_b = dev(L.ffn_ln_b);
    g.encoder.push_back(G);
  }
  for (const auto& L : m.decoder) {
    BartDecoderLayer<Tensor<float, Cuda>> G;
    G.qkv_w = dev(L.qkv_w), G.qkv_b = dev(L.qkv_b);
    G.self_out_w = dev(L.self_out_w), G.self_out_b = dev(L.self_out_b);
    G.self_ln_w = dev(L.self_ln_w), G.self_ln_b = dev(L.self_ln_b);
    G.cross_q_w = dev(L.cross_q_w), G.cross_q_b = dev(L.cross_q_b);
    G.cross_kv_w = dev(L.cross_kv_w), G.cross_kv_b = dev(L.cross_kv_b);
    G.cross_out_w = dev(L.cross_out_w), G.cross_out_b = dev(L.cross_out_b);
    G.cross_ln_w = dev(L.cross_ln_w), G.cross_ln_b = dev(L.cross_ln_b);
    G.fc1_w = dev(L.fc1_w), G.fc1_b = dev(L.fc1_b), G.fc2_w = dev(L.fc2_w), G.fc2_b = dev(L.fc2_b);
    G.ffn_ln_w = dev(L.ffn_ln_w), G.ffn_ln_b = dev(L.ffn_ln_b);
    g.decoder.push_back(G);
  }
  return g;
}

struct BartBatch {
  Tensor<std::int32_t> source, decoder_inputs, labels;
  Tensor<std::uint8_t> mask;
};

struct BartResult {
  double loss = 0;
  std::vector<float> logits;
  std::vector<std::vector<float>> grads;
};

// The teacher-forced loss with the three prefixes, its gradients (every parameter of the three encoders) and the
// logits, on Device.
template <class Device>
BartResult bart_step(const Bart<float, Device>& m, const Seq2SeqPrefix<float, Device>& prefix, const BartBatch& hb) {
  const auto source = hb.source.to<Device>(), decoder_inputs = hb.decoder_inputs.to<Device>();
  const auto labels = hb.labels.to<Device>();
  const auto mask = hb.mask.to<Device>();
  Tape<float, Device> tape;
  const auto kv = prefix.prefix_kv(tape);
  auto loss = bart_prefix_loss(tape, m, kv, source, mask, decoder_inputs, labels);
  BartResult r;
  r.loss = static_cast<double>(loss.value().item());
  tape.backward(loss);
  for (const auto& p : prefix.parameters()) r.grads.push_back(p.grad().to_vector());
  NoGradGuard ng;
  Tape<float, Device> t2;
  const auto memory = bart_encode(t2, m, source, mask, kv.encoder);
  const auto h = bart_decode(t2, m, decoder_inputs, memory, mask, kv.decoder, kv.cross);
  r.logits = bart_logits(m, h.value()).to_vector();
  return r;
}

}  // namespace

TEST_CASE("a BART prefix-tuning loss and its three prefixes' gradients on the GPU equal the CPU's") {
  BartConfig c;
  c.d_model = 32, c.encoder_layers = 2, c.decoder_layers = 2, c.encoder_attention_heads = 4;
  c.decoder_attention_heads = 2, c.encoder_ffn_dim = 48, c.decoder_ffn_dim = 40, c.max_position_embeddings = 16;
  c.vocab_size = 53;
  Rng rng(32);
  const auto m = random_bart<float>(c, rng, 0.3);
  PrefixConfig pc;
  pc.length = 3, pc.mid = 16;
  const auto prefix = Seq2SeqPrefix<float>::create(pc, c, rng);
  Seq2SeqPrefix<float, Cuda> gprefix;
  gprefix.encoder = to_device<Cuda>(prefix.encoder), gprefix.decoder = to_device<Cuda>(prefix.decoder);
  gprefix.cross = to_device<Cuda>(prefix.cross);

  // Row 1's source padded by 3, row 2's by 6; labels padded (-100) at the ends of rows 0 and 2.
  const std::int64_t B = 3, S = 9, T = 6;
  BartBatch b{Tensor<std::int32_t>::zeros({B, S}),
              {},
              Tensor<std::int32_t>::zeros({B, T}),
              Tensor<std::uint8_t>::zeros({B, S})};
  for (std::int64_t r = 0; r < B; ++r) {
    for (std::int64_t s = 0; s < S; ++s) {
      const bool real = s < S - 3 * r;
      b.source(r, s) = real ? static_cast<std::int32_t>(3 + rng.below(50)) : static_cast<std::int32_t>(c.pad_token_id);
      b.mask(r, s) = real ? 1 : 0;
    }
    for (std::int64_t t = 0; t < T; ++t)
      b.labels(r, t) = t < T - (r == 1 ? 0 : r + 1) ? static_cast<std::int32_t>(3 + rng.below(50)) : kIgnoreLabel;
  }
  b.decoder_inputs = shift_tokens_right(b.labels, static_cast<std::int32_t>(c.pad_token_id),
                                        static_cast<std::int32_t>(c.decoder_start_token_id));

  const auto cpu = bart_step(m, prefix, b);
  const auto gpu = bart_step(bart_to_gpu(m), gprefix, b);
  CHECK(std::abs(gpu.loss - cpu.loss) < 1e-4 * std::abs(cpu.loss));
  CHECK(max_rel_diff(gpu.logits, cpu.logits) < 1e-4);
  REQUIRE(gpu.grads.size() == 15);
  REQUIRE(cpu.grads.size() == 15);
  for (std::size_t i = 0; i < cpu.grads.size(); ++i) {
    CAPTURE(i);
    CHECK(max_rel_diff(gpu.grads[i], cpu.grads[i]) < 1e-3);
  }
}
