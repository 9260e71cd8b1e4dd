// SPDX-License-Identifier: MIT
// cross_attention (non-causal, queries over [prefix, keys/values of another tensor], key padding mask): against a
// naive double loop (forward and backward, prefix shared or per row, all-hidden rows), central finite differences,
// the autograd wrapper, and its shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/autograd/gradcheck.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::max_rel_diff;
using test::tensor;

namespace {

struct Case {
  std::int64_t B, Tq, Tk, NH, HS, P, Bp;
  bool mask;
};

struct Problem {
  Case c;
  std::vector<double> q, kv, pk, pv;
  std::vector<std::uint8_t> mask;  // (B, Tk); row B-1 all hidden when mask is on
  std::int64_t C() const { return c.NH * c.HS; }
};

Problem make(const Case& c, std::uint64_t seed) {
  Rng rng(seed);
  Problem p{c, {}, {}, {}, {}, {}};
  p.q = test::random_values(c.B * c.Tq * p.C(), rng);
  p.kv = test::random_values(c.B * c.Tk * 2 * p.C(), rng);
  p.pk = test::random_values(c.Bp * c.NH * c.P * c.HS, rng);
  p.pv = test::random_values(c.Bp * c.NH * c.P * c.HS, rng);
  if (c.mask)
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t j = 0; j < c.Tk; ++j) p.mask.push_back(b == c.B - 1 ? 0 : (j + b) % 3 != 1);
  return p;
}

struct Ref {
  std::vector<double> out, dq, dkv, dpk, dpv;
};

/// Per (b, h, query) loops: softmax over the visible [prefix | keys], then the weighted values; with dout the
/// gradients by the chain rule written out.
Ref reference(const Problem& p, const std::vector<double>& dout) {
  const Case& c = p.c;
  const std::int64_t C = p.C();
  Ref r{std::vector<double>(c.B * c.Tq * C), std::vector<double>(p.q.size()), std::vector<double>(p.kv.size()),
        std::vector<double>(p.pk.size()), std::vector<double>(p.pv.size())};
  const double scale = 1.0 / std::sqrt(double(c.HS));
  for (std::int64_t b = 0; b < c.B; ++b)
    for (std::int64_t h = 0; h < c.NH; ++h)
      for (std::int64_t t = 0; t < c.Tq; ++t) {
        std::vector<const double*> ks, vs;
        std::vector<double*> dks, dvs;
        const std::int64_t bp = c.Bp == 1 ? 0 : b;
        for (std::int64_t j = 0; j < c.P; ++j) {
          const std::int64_t o = ((bp * c.NH + h) * c.P + j) * c.HS;
          ks.push_back(&p.pk[o]), vs.push_back(&p.pv[o]), dks.push_back(&r.dpk[o]), dvs.push_back(&r.dpv[o]);
        }
        for (std::int64_t j = 0; j < c.Tk; ++j) {
          if (!p.mask.empty() && !p.mask[b * c.Tk + j]) continue;
          const std::int64_t o = (b * c.Tk + j) * 2 * C + h * c.HS;
          ks.push_back(&p.kv[o]), vs.push_back(&p.kv[o + C]), dks.push_back(&r.dkv[o]), dvs.push_back(&r.dkv[o + C]);
        }
        if (ks.empty()) continue;
        const double* qp = &p.q[(b * c.Tq + t) * C + h * c.HS];
        std::vector<double> s(ks.size());
        double mx = -INFINITY, sum = 0;
        for (std::size_t j = 0; j < ks.size(); ++j) {
          for (std::int64_t e = 0; e < c.HS; ++e) s[j] += qp[e] * ks[j][e] * scale;
          mx = std::max(mx, s[j]);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (auto& x : s) x /= sum;
        const std::int64_t oo = (b * c.Tq + t) * C + h * c.HS;
        std::vector<double> dp(ks.size());
        double dot = 0;
        for (std::size_t j = 0; j < ks.size(); ++j) {
          for (std::int64_t e = 0; e < c.HS; ++e) {
            r.out[oo + e] += s[j] * vs[j][e];
            dp[j] += dout[oo + e] * vs[j][e];
          }
          dot += dp[j] * s[j];
        }
        for (std::size_t j = 0; j < ks.size(); ++j) {
          const double dsc = s[j] * (dp[j] - dot) * scale;
          for (std::int64_t e = 0; e < c.HS; ++e) {
            r.dq[oo + e] += dsc * ks[j][e];
            dks[j][e] += dsc * qp[e];
            dvs[j][e] += s[j] * dout[oo + e];
          }
        }
      }
  return r;
}

const Case kCases[] = {{2, 3, 5, 2, 4, 0, 1, false}, {2, 4, 6, 2, 3, 3, 1, true},   {3, 5, 2, 3, 2, 2, 3, true},
                       {1, 1, 1, 1, 1, 1, 1, false}, {2, 40, 33, 2, 8, 5, 1, true}, {2, 7, 9, 4, 4, 0, 1, true},
                       {3, 6, 70, 2, 6, 4, 3, false}};

}  // namespace

TEST_CASE_TEMPLATE("cross_attention matches the naive double loop, forward and backward", T, float, double) {
  std::uint64_t seed = 1;
  for (const Case& c : kCases) {
    INFO("B=", c.B, " Tq=", c.Tq, " Tk=", c.Tk, " NH=", c.NH, " HS=", c.HS, " P=", c.P, " Bp=", c.Bp, " mask=", c.mask);
    const Problem p = make(c, seed++);
    Rng rng(seed++);
    const auto dout = test::random_values(c.B * c.Tq * p.C(), rng);
    const Ref r = reference(p, dout);
    const auto q = tensor<T>({c.B, c.Tq, p.C()}, p.q), kv = tensor<T>({c.B, c.Tk, 2 * p.C()}, p.kv);
    Tensor<T> pk, pv;
    if (c.P > 0) pk = tensor<T>({c.Bp, c.NH, c.P, c.HS}, p.pk), pv = tensor<T>({c.Bp, c.NH, c.P, c.HS}, p.pv);
    Tensor<std::uint8_t> mask;
    if (c.mask) mask = Tensor<std::uint8_t>::from_vector({c.B, c.Tk}, p.mask);
    auto out = Tensor<T>::full(q.shape(), T(7)), probs = Tensor<T>();
    cross_attention_forward(q, kv, c.NH, pk, pv, mask, out, &probs);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    CHECK(max_rel_diff(test::as_double(out), r.out) < tol);
    auto dq = Tensor<T>::zeros(q.shape()), dkv = Tensor<T>::zeros(kv.shape());
    Tensor<T> dpk, dpv;
    if (c.P > 0) dpk = Tensor<T>::zeros(pk.shape()), dpv = Tensor<T>::zeros(pv.shape());
    cross_attention_backward(tensor<T>(q.shape(), dout), q, kv, c.NH, probs, pk, pv, mask, dq, dkv, dpk, dpv);
    CHECK(max_rel_diff(test::as_double(dq), r.dq) < tol);
    CHECK(max_rel_diff(test::as_double(dkv), r.dkv) < tol);
    if (c.P > 0) {
      CHECK(max_rel_diff(test::as_double(dpk), r.dpk) < tol);
      CHECK(max_rel_diff(test::as_double(dpv), r.dpv) < tol);
    }
    auto out2 = Tensor<T>::zeros(q.shape());  // inference: no probabilities kept, the same output
    cross_attention_forward(q, kv, c.NH, pk, pv, mask, out2, static_cast<Tensor<T>*>(nullptr));
    CHECK(out2.to_vector() == out.to_vector());
  }
}

TEST_CASE("cross_attention: the autograd wrapper against central finite differences in double") {
  for (const Case& c : {Case{2, 3, 4, 2, 3, 2, 1, true}, Case{2, 2, 3, 1, 2, 2, 2, false}}) {
    const Problem p = make(c, 50);
    auto q = Var<double>(tensor<double>({c.B, c.Tq, p.C()}, p.q), true, "q");
    auto kv = Var<double>(tensor<double>({c.B, c.Tk, 2 * p.C()}, p.kv), true, "kv");
    auto pk = Var<double>(tensor<double>({c.Bp, c.NH, c.P, c.HS}, p.pk), true, "pk");
    auto pv = Var<double>(tensor<double>({c.Bp, c.NH, c.P, c.HS}, p.pv), true, "pv");
    Tensor<std::uint8_t> mask;
    if (c.mask) mask = Tensor<std::uint8_t>::from_vector({c.B, c.Tk}, p.mask);
    Rng rng(51);
    const auto w = tensor<double>({c.B, c.Tq, p.C()}, test::random_values(c.B * c.Tq * p.C(), rng));
    auto loss = [&] {
      NoGradGuard ng;
      Tape<double> t;
      const auto y = cross_attention(t, q, kv, c.NH, pk, pv, mask).value();
      double s = 0;
      for (std::int64_t i = 0; i < y.numel(); ++i) s += y.data()[i] * w.data()[i];
      return s;
    };
    Tape<double> tape;
    auto y = cross_attention(tape, q, kv, c.NH, pk, pv, mask);
    auto total = matmul(tape, reshape(tape, y, Shape{1, y.value().numel()}), w.reshape({w.numel(), 1}));
    tape.backward(total);
    for (auto* v : {&q, &kv, &pk, &pv}) {
      Tensor<double> x = v->value();
      INFO(v->name());
      CHECK(gradcheck(loss, x, v->grad().clone()).ok(1e-6));
    }
  }
}

TEST_CASE("cross_attention: bad shapes name the problem") {
  auto q = Tensor<float>::zeros({2, 3, 8}), kv = Tensor<float>::zeros({2, 4, 16}),
       out = Tensor<float>::zeros({2, 3, 8});
  Tensor<float> none;
  Tensor<std::uint8_t> no_mask;
  auto call = [&](const Tensor<float>& qq, const Tensor<float>& kk, std::int64_t nh, const Tensor<std::uint8_t>& m) {
    return error_of(
        [&] { cross_attention_forward(qq, kk, nh, none, none, m, out, static_cast<Tensor<float>*>(nullptr)); });
  };
  CHECK(call(q, Tensor<float>::zeros({2, 4, 8}), 2, no_mask).find("2C = 16") != std::string::npos);
  CHECK(call(q, Tensor<float>::zeros({3, 4, 16}), 2, no_mask).find("B = 2") != std::string::npos);
  CHECK(call(q, kv, 3, no_mask).find("not divisible by num_heads = 3") != std::string::npos);
  CHECK(call(q, kv, 2, Tensor<std::uint8_t>::zeros({2, 3})).find("key mask shape") != std::string::npos);
  const auto pk = Tensor<float>::zeros({1, 2, 3, 4});
  CHECK(error_of([&] {
          cross_attention_forward(q, kv, 2, pk, none, no_mask, out, static_cast<Tensor<float>*>(nullptr));
        }).find("must both be defined") != std::string::npos);
}
