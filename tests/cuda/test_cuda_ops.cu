// SPDX-License-Identifier: MIT
// Every op's CUDA kernels against its CPU kernels on random inputs, through the public op API on Tensor<T, Cuda>:
// fp32 within 1e-5 (max |gpu - cpu| / (1 + |cpu|)), TF32 GEMMs within 1e-3; dropout masks bit for bit; cached
// attention with grouped K/V heads (out, and the cache exactly). Plus the caching allocator (no cudaMalloc in
// steady state).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "prefixtune/cuda.cuh"
#include "reference/cached_attention_reference.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::dev;
using test::diff;
using test::max_rel_diff;

namespace {

constexpr double kTol = 1e-5;

// ||gpu - cpu|| / ||cpu|| (2-norms): the relative error of a whole TF32 product (each product rounds its inputs to
// 10-bit mantissas, so single elements near zero can be off by more).
double norm_rel_diff(const Tensor<float, Cuda>& gpu, const Tensor<float>& cpu) {
  const auto g = gpu.to_vector(), c = cpu.to_vector();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    num += (double(g[i]) - c[i]) * (double(g[i]) - c[i]);
    den += double(c[i]) * c[i];
  }
  return std::sqrt(num / den);
}

Tensor<float> rnd(const Shape& s, Rng& rng, double lo = -1, double hi = 1) {
  return test::random_tensor<float>(s, rng, lo, hi);
}

}  // namespace

TEST_CASE("CUDA element-wise ops equal the CPU kernels") {
  Rng rng(1);
  const Shape s{3, 37, 129};  // not a multiple of a block
  auto x = rnd(s, rng, -6, 6), y = rnd(s, rng), g = rnd(s, rng);
  auto dx = dev(x), dy = dev(y), dg = dev(g);
  auto out = Tensor<float>::zeros(s);
  auto dout = Tensor<float, Cuda>::zeros(s);

  add_forward(x, y, out);
  add_forward(dx, dy, dout);
  CHECK(diff(dout, out) < kTol);
  scale_forward(x, 0.37, out);
  scale_forward(dx, 0.37, dout);
  CHECK(diff(dout, out) < kTol);
  auto acc = y.clone();
  auto dacc = dev(y);
  accumulate(acc, x, 0.5);
  accumulate(dacc, dx, 0.5);
  CHECK(diff(dacc, acc) < kTol);

  gelu_forward(x, out);
  gelu_forward(dx, dout);
  CHECK(diff(dout, out) < kTol);
  acc = y.clone(), dacc = dev(y);
  gelu_backward(g, x, acc);
  gelu_backward(dg, dx, dacc);
  CHECK(diff(dacc, acc) < kTol);

  tanh_forward(x, out);
  tanh_forward(dx, dout);
  CHECK(diff(dout, out) < kTol);
  acc = y.clone(), dacc = dev(y);
  tanh_backward(g, out, acc);
  tanh_backward(dg, dout, dacc);
  CHECK(diff(dacc, acc) < kTol);

  dropout_forward(x, 0.3, 77, 5, out);
  dropout_forward(dx, 0.3, 77, 5, dout);
  CHECK(dout.to_vector() == out.to_vector());  // the same Philox mask, element for element
  acc = y.clone(), dacc = dev(y);
  dropout_backward(g, 0.3, 77, 5, acc);
  dropout_backward(dg, 0.3, 77, 5, dacc);
  CHECK(dacc.to_vector() == acc.to_vector());
}

TEST_CASE("CUDA layer norm, softmax, linear and transpose equal the CPU kernels") {
  Rng rng(2);
  const std::int64_t rows = 70, C = 300;
  auto x = rnd({rows, C}, rng, -3, 5), gamma = rnd({C}, rng), beta = rnd({C}, rng), g = rnd({rows, C}, rng);
  Tensor<float> out({rows, C}), mean({rows}), rstd({rows});
  Tensor<float, Cuda> dout({rows, C}), dmean({rows}), drstd({rows});
  layer_norm_forward(x, gamma, beta, 1e-5f, out, mean, rstd);
  layer_norm_forward(dev(x), dev(gamma), dev(beta), 1e-5f, dout, dmean, drstd);
  CHECK(diff(dout, out) < kTol);
  CHECK(diff(dmean, mean) < kTol);
  CHECK(diff(drstd, rstd) < kTol);
  for (bool saved : {true, false}) {
    auto dxc = rnd({rows, C}, rng), dgc = rnd({C}, rng), dbc = rnd({C}, rng);
    auto dxg = dev(dxc), dgg = dev(dgc), dbg = dev(dbc);
    layer_norm_backward(g, x, gamma, saved ? mean : Tensor<float>(), saved ? rstd : Tensor<float>(), dxc, dgc, dbc);
    layer_norm_backward(dev(g), dev(x), dev(gamma), saved ? dmean : Tensor<float, Cuda>(),
                        saved ? drstd : Tensor<float, Cuda>(), dxg, dgg, dbg);
    CHECK(diff(dxg, dxc) < kTol);
    CHECK(diff(dgg, dgc) < kTol);
    CHECK(diff(dbg, dbc) < kTol);
  }

  auto logits = rnd({rows, 513}, rng, -20, 20);
  for (std::int64_t j = 0; j < 513; ++j) logits.data()[5 * 513 + j] = -std::numeric_limits<float>::infinity();
  logits.data()[7 * 513 + 3] = -std::numeric_limits<float>::infinity();
  Tensor<float> p(logits.shape());
  Tensor<float, Cuda> dp(logits.shape());
  softmax_forward(logits, p);
  softmax_forward(dev(logits), dp);
  CHECK(diff(dp, p) < kTol);
  auto gs = rnd(logits.shape(), rng);
  auto ds = Tensor<float>::zeros(logits.shape());
  auto dds = Tensor<float, Cuda>::zeros(logits.shape());
  softmax_backward(gs, p, ds);
  softmax_backward(dev(gs), dp, dds);
  CHECK(diff(dds, ds) < kTol);

  auto xl = rnd({4, 9, 96}, rng), w = rnd({96, 130}, rng), b = rnd({130}, rng), gl = rnd({4, 9, 130}, rng);
  Tensor<float> yl({4, 9, 130});
  Tensor<float, Cuda> dyl({4, 9, 130});
  linear_forward(xl, w, b, yl);
  linear_forward(dev(xl), dev(w), dev(b), dyl);
  CHECK(diff(dyl, yl) < kTol);
  auto gx = Tensor<float>::zeros(xl.shape()), gw = Tensor<float>::zeros(w.shape()),
       gb = Tensor<float>::zeros(b.shape());
  auto dgx = Tensor<float, Cuda>::zeros(xl.shape()), dgw = Tensor<float, Cuda>::zeros(w.shape()),
       dgb = Tensor<float, Cuda>::zeros(b.shape());
  linear_backward(gl, xl, w, gx, gw, gb);
  linear_backward(dev(gl), dev(xl), dev(w), dgx, dgw, dgb);
  CHECK(diff(dgx, gx) < kTol);
  CHECK(diff(dgw, gw) < kTol);
  CHECK(diff(dgb, gb) < kTol);
  CudaContext::current().set_math(CudaMath::Tf32);
  linear_forward(dev(xl), dev(w), dev(b), dyl);
  CudaContext::current().set_math(CudaMath::Fp32);
  CHECK(norm_rel_diff(dyl, yl) < 1e-3);
  CHECK(norm_rel_diff(dyl, yl) > 1e-7);  // TF32 really ran (fp32 gives ~1e-8)

  auto t3 = rnd({5, 6, 7}, rng);
  Tensor<float> tt({6, 5, 7});
  Tensor<float, Cuda> dtt({6, 5, 7});
  transpose01_forward(t3, tt);
  transpose01_forward(dev(t3), dtt);
  CHECK(dtt.to_vector() == tt.to_vector());
  auto back = rnd({5, 6, 7}, rng);
  auto dback = dev(back);
  transpose01_backward(tt, back);
  transpose01_backward(dtt, dback);
  CHECK(diff(dback, back) < kTol);
}

TEST_CASE("CUDA embedding, sums of squares and AdamW equal the CPU kernels") {
  Rng rng(3);
  auto table = rnd({50, 33}, rng);
  auto ids = Tensor<std::int32_t>::from_vector({2, 5}, {3, 7, 3, 49, 0, 7, 7, 1, 2, 3});
  Tensor<float> e({2, 5, 33});
  Tensor<float, Cuda> de({2, 5, 33});
  embedding_forward(ids, table, e);
  embedding_forward(dev(ids), dev(table), de);
  CHECK(de.to_vector() == e.to_vector());
  auto g = rnd({2, 5, 33}, rng);
  auto dt = rnd({50, 33}, rng);
  auto ddt = dev(dt);
  embedding_backward(g, ids, dt);
  embedding_backward(dev(g), dev(ids), ddt);
  CHECK(diff(ddt, dt) < kTol);
  auto bad = Tensor<std::int32_t>::from_vector({3}, {1, 50, 2}).to<Cuda>();
  Tensor<float, Cuda> bad_out({3, 33});
  CHECK(test::error_of([&] { embedding_forward(bad, dev(table), bad_out); }).find("token id 50 at position 1") !=
        std::string::npos);

  auto big = rnd({100003}, rng);
  CHECK(std::abs(detail::sum_squares_kernel(Cuda{}, dev(big).data(), big.numel()) -
                 detail::sum_squares_kernel(Cpu{}, big.data(), big.numel())) < 1e-9 * big.numel());

  auto p = rnd({1000}, rng), gr = rnd({1000}, rng), m = rnd({1000}, rng), v = rnd({1000}, rng, 0, 1);
  auto dpp = dev(p), dm = dev(m), dv = dev(v);
  const detail::AdamWScalars sc{
      1 - 1e-3 * 0.01, 0.9, 0.999, 1e-3 / (1 - 0.9 * 0.9), std::sqrt(1 - 0.999 * 0.999), 1e-8};
  detail::adamw_step_kernel(Cpu{}, p.data(), gr.data(), m.data(), v.data(), 1000, sc);
  detail::adamw_step_kernel(Cuda{}, dpp.data(), dev(gr).data(), dm.data(), dv.data(), 1000, sc);
  CHECK(diff(dpp, p) < kTol);
  CHECK(diff(dm, m) < kTol);
  CHECK(diff(dv, v) < kTol);
}

namespace {

struct AttentionCase {
  std::int64_t B, T, NH, HS, P, Bp;
  bool mask;
  bool infix = false;  // prefix_from per row: 0, the middle, past the end
};

}  // namespace

TEST_CASE("CUDA attention with prefix (or infix) and padding equals the CPU kernels, forward and backward") {
  Rng rng(4);
  for (const AttentionCase& c :
       {AttentionCase{2, 7, 3, 4, 0, 1, false}, AttentionCase{3, 9, 2, 8, 0, 1, true},
        AttentionCase{3, 9, 2, 8, 4, 1, true}, AttentionCase{3, 33, 4, 16, 5, 3, true},
        AttentionCase{2, 40, 12, 64, 10, 1, false}, AttentionCase{3, 9, 2, 8, 4, 1, true, true},
        AttentionCase{3, 33, 4, 16, 5, 3, false, true}}) {
    INFO("B=", c.B, " T=", c.T, " NH=", c.NH, " HS=", c.HS, " P=", c.P, " Bp=", c.Bp, " mask=", c.mask,
         " infix=", c.infix);
    const std::int64_t C = c.NH * c.HS;
    auto qkv = rnd({c.B, c.T, 3 * C}, rng, -2, 2);
    Tensor<float> pk, pv;
    if (c.P > 0) pk = rnd({c.Bp, c.NH, c.P, c.HS}, rng), pv = rnd({c.Bp, c.NH, c.P, c.HS}, rng);
    Tensor<std::uint8_t> mask;
    if (c.mask) {
      mask = Tensor<std::uint8_t>::zeros({c.B, c.T});
      for (std::int64_t b = 0; b < c.B; ++b)
        for (std::int64_t t = 0; t < c.T; ++t) mask.data()[b * c.T + t] = (t >= b && (t + b) % 5 != 3) ? 1 : 0;
    }
    auto to_gpu = [](const auto& t) { return t.defined() ? t.template to<Cuda>() : decltype(t.template to<Cuda>())(); };
    auto dqkv_in = to_gpu(qkv), dpk = to_gpu(pk), dpv = to_gpu(pv);
    auto dmask = to_gpu(mask);
    Tensor<std::int32_t> from;
    if (c.infix)
      from = Tensor<std::int32_t>::from_vector(
          {c.B}, {0, static_cast<std::int32_t>(c.T / 2), static_cast<std::int32_t>(c.T + 1)});
    const auto dfrom = to_gpu(from);
    Tensor<float> out({c.B, c.T, C});
    Tensor<float, Cuda> dout({c.B, c.T, C});
    AttentionCache<float, Cpu> cache;
    AttentionCache<float, Cuda> dcache;
    attention_forward(qkv, c.NH, pk, pv, mask, out, &cache, from);
    attention_forward(dqkv_in, c.NH, dpk, dpv, dmask, dout, &dcache, dfrom);
    CHECK(diff(dout, out) < kTol);
    CHECK(diff(dcache.probs, cache.probs) < kTol);
    attention_forward(dqkv_in, c.NH, dpk, dpv, dmask, dout, static_cast<AttentionCache<float, Cuda>*>(nullptr),
                      dfrom);  // inference: no cache kept
    CHECK(diff(dout, out) < kTol);

    auto gy = rnd({c.B, c.T, C}, rng);
    auto gqkv = rnd(qkv.shape(), rng);
    Tensor<float> gpk, gpv;
    if (c.P > 0) gpk = rnd(pk.shape(), rng), gpv = rnd(pv.shape(), rng);
    auto dgqkv = to_gpu(gqkv), dgpk = to_gpu(gpk), dgpv = to_gpu(gpv);
    attention_backward(gy, c.NH, cache, pk, pv, mask, gqkv, gpk, gpv);
    attention_backward(to_gpu(gy), c.NH, dcache, dpk, dpv, dmask, dgqkv, dgpk, dgpv);
    CHECK(diff(dgqkv, gqkv) < kTol);
    if (c.P > 0) {
      CHECK(diff(dgpk, gpk) < kTol);
      CHECK(diff(dgpv, gpv) < kTol);
      // prefix gradients only (a frozen model: dqkv undefined)
      Tensor<float> none;
      Tensor<float, Cuda> dnone;
      auto gpk2 = Tensor<float>::zeros(pk.shape()), gpv2 = Tensor<float>::zeros(pv.shape());
      auto dgpk2 = Tensor<float, Cuda>::zeros(pk.shape()), dgpv2 = Tensor<float, Cuda>::zeros(pv.shape());
      attention_backward(gy, c.NH, cache, pk, pv, mask, none, gpk2, gpv2);
      attention_backward(to_gpu(gy), c.NH, dcache, dpk, dpv, dmask, dnone, dgpk2, dgpv2);
      CHECK(diff(dgpk2, gpk2) < kTol);
      CHECK(diff(dgpv2, gpv2) < kTol);
    }
  }
}

TEST_CASE("CUDA attention over a KV cache with grouped K/V heads equals the CPU kernel, out and cache") {
  Rng rng(9);
  for (const auto& c : test::gqa_cases()) {
    INFO("NH=", c.d.NH, " KVH=", c.d.KVH, " rows=", c.rows.size());
    auto in = test::cached_inputs<float>(c, rng);
    auto dqkv = dev(in.qkv), dk = dev(in.cache_k), dv = dev(in.cache_v);
    std::vector<Tensor<float, Cuda>> dpk, dpv;
    auto drows = in.rows;  // the same rows with their prefixes on the GPU
    for (std::size_t r = 0; r < drows.size(); ++r) {
      dpk.push_back(dev(in.prefix_k[r]));
      dpv.push_back(dev(in.prefix_v[r]));
      drows[r].prefix_k = dpk.back().defined() ? dpk.back().data() : nullptr;
      drows[r].prefix_v = dpv.back().defined() ? dpv.back().data() : nullptr;
    }
    Tensor<float> out({in.qkv.size(0), c.d.C()});
    Tensor<float, Cuda> dout({in.qkv.size(0), c.d.C()});
    cached_attention_forward(c.d, in.rows, in.qkv, in.cache_k, in.cache_v, out);
    cached_attention_forward(c.d, drows, dqkv, dk, dv, dout);
    CHECK(diff(dout, out) < kTol);
    CHECK(diff(dk, in.cache_k) == 0.0);  // copies: exact
    CHECK(diff(dv, in.cache_v) == 0.0);
    cache_copy_slot(c.d, in.cache_k, 1, 0, c.d.capacity);
    cache_copy_slot(c.d, dk, 1, 0, c.d.capacity);
    CHECK(diff(dk, in.cache_k) == 0.0);
  }
}

TEST_CASE("CUDA fused LM head + cross-entropy equals the CPU kernel, in chunks") {
  Rng rng(5);
  const std::int64_t B = 3, T = 11, C = 40, V = 1003;
  auto h = rnd({B, T, C}, rng), E = rnd({V, C}, rng, -0.5, 0.5);
  auto labels = Tensor<std::int32_t>::zeros({B, T});
  for (std::int64_t i = 0; i < B * T; ++i)
    labels.data()[i] = i % 4 == 1 ? kIgnoreLabel : static_cast<std::int32_t>((i * 37) % V);
  auto dh = dev(h), dE = dev(E);
  auto dl = dev(labels);
  for (std::int64_t chunk : {std::int64_t{4}, std::int64_t{128}}) {
    INFO("chunk_rows=", chunk);
    auto r = cross_entropy_forward(h, E, labels, Reduction::SumPerSequenceMeanBatch, true, true, chunk);
    auto dr = cross_entropy_forward(dh, dE, dl, Reduction::SumPerSequenceMeanBatch, true, true, chunk);
    CHECK(std::abs(dr.loss - r.loss) < 1e-5 * (1 + std::abs(r.loss)));
    CHECK(dr.num_labels == r.num_labels);
    CHECK(diff(dr.dh, r.dh) < kTol);
    CHECK(diff(dr.dE, r.dE) < kTol);
    auto pp = cross_entropy_per_position(h, E, labels, chunk);
    auto dpp = cross_entropy_per_position(dh, dE, dl, chunk);
    CHECK(diff(dpp, pp) < kTol);
  }
  auto bad = labels.clone();
  bad.data()[5] = static_cast<std::int32_t>(V);
  CHECK(test::error_of([&] {
          cross_entropy_forward(dh, dE, dev(bad), Reduction::MeanPerToken, true, false);
        }).find("label 1003") != std::string::npos);
}

TEST_CASE("CUDA fused cross-entropy with label smoothing and a logits bias equals the CPU kernel") {
  Rng rng(6);
  const std::int64_t B = 2, T = 9, C = 40, V = 1003;
  auto h = rnd({B, T, C}, rng), E = rnd({V, C}, rng, -0.5, 0.5), bias = rnd({V}, rng, -2, 2);
  auto labels = Tensor<std::int32_t>::zeros({B, T});
  for (std::int64_t i = 0; i < B * T; ++i)
    labels.data()[i] = i % 3 == 1 ? kIgnoreLabel : static_cast<std::int32_t>((i * 41) % V);
  auto dh = dev(h), dE = dev(E), dbias = dev(bias);
  auto dl = dev(labels);
  struct Case {
    double eps;
    bool biased;
  };
  for (const Case k : {Case{0.1, true}, Case{0.1, false}, Case{0.0, true}, Case{0.3, true}})
    for (Reduction red : {Reduction::SumPerSequenceMeanBatch, Reduction::MeanPerToken})
      for (std::int64_t chunk : {std::int64_t{4}, std::int64_t{128}}) {
        INFO("eps=", k.eps, " biased=", k.biased, " reduction=", int(red), " chunk_rows=", chunk);
        const CrossEntropyOptions<float, Cpu> o{k.eps, k.biased ? bias : Tensor<float>()};
        const CrossEntropyOptions<float, Cuda> d_o{k.eps, k.biased ? dbias : Tensor<float, Cuda>()};
        auto r = cross_entropy_forward(h, E, labels, red, true, true, o, chunk);
        auto dr = cross_entropy_forward(dh, dE, dl, red, true, true, d_o, chunk);
        CHECK(std::abs(dr.loss - r.loss) < 1e-5 * (1 + std::abs(r.loss)));
        CHECK(dr.num_labels == r.num_labels);
        CHECK(diff(dr.dh, r.dh) < kTol);
        CHECK(diff(dr.dE, r.dE) < kTol);
        auto forward_only = cross_entropy_forward(dh, dE, dl, red, false, false, d_o, chunk);
        CHECK(forward_only.loss == dr.loss);
        if (k.biased) {
          auto pp = cross_entropy_per_position(h, E, labels, bias, chunk);
          auto dpp = cross_entropy_per_position(dh, dE, dl, dbias, chunk);
          CHECK(diff(dpp, pp) < kTol);
        }
      }
  // options off: the plain kernel, bit for bit
  auto plain = cross_entropy_forward(dh, dE, dl, Reduction::MeanPerToken, true, true);
  auto off = cross_entropy_forward(dh, dE, dl, Reduction::MeanPerToken, true, true, CrossEntropyOptions<float, Cuda>{});
  CHECK(off.loss == plain.loss);
  CHECK(off.dh.to_vector() == plain.dh.to_vector());
  CHECK(off.dE.to_vector() == plain.dE.to_vector());
  CHECK(test::error_of([&] {
          cross_entropy_forward(dh, dE, dl, Reduction::MeanPerToken, true, false,
                                CrossEntropyOptions<float, Cuda>{0.1, Tensor<float, Cuda>::zeros({V + 1})});
        }).find("logits bias shape (1004)") != std::string::npos);
}

TEST_CASE("the caching allocator reuses freed blocks: no cudaMalloc in steady state") {
  for (int i = 0; i < 3; ++i) {  // warm-up: the size classes get their blocks
    Tensor<float, Cuda> a({1000, 1000}), b({37});
  }
  const auto before = cuda_memory_stats();
  for (int i = 0; i < 10; ++i) {
    Tensor<float, Cuda> a({1000, 1000}), b({37});
    a.fill(1.0f);
  }
  const auto after = cuda_memory_stats();
  CHECK(after.cuda_mallocs == before.cuda_mallocs);
  CHECK(after.allocated == before.allocated);
  CHECK(CudaCachingAllocator::size_class(1) == 512);
  CHECK(CudaCachingAllocator::size_class((1 << 20) + 1) == (1 << 20) + (1 << 18));
  cuda_empty_cache();
  CHECK(cuda_memory_stats().cached == 0);
}
