// SPDX-License-Identifier: MIT
// Tests of attention_forward/backward (causal multi-head attention with prefix K/V and padding mask) against
// naive double loops, central finite differences and HuggingFace's "past_key_values = prefix" semantics.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/ops/attention.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::max_rel_diff;
using test::tensor;

namespace {

using Mask = Tensor<std::uint8_t, Cpu>;

enum class MaskKind { none, right_pad, empty_row, holes };

/// One attention problem in double: qkv (B, T, 3C), prefix (Bp, NH, P, HS), mask (B, T).
struct Problem {
  std::int64_t B, T, NH, HS, P, Bp;
  std::vector<double> qkv, pk, pv;
  std::vector<std::uint8_t> mask;  // empty = no mask
  std::vector<std::int32_t> from;  // per row, the first query that sees the prefix (an infix); empty = all
  std::int64_t C() const { return NH * HS; }
};

Problem make_problem(std::int64_t B, std::int64_t T, std::int64_t NH, std::int64_t HS, std::int64_t P, std::int64_t Bp,
                     MaskKind mk, std::uint64_t seed) {
  Rng rng(seed);
  Problem p{B, T, NH, HS, P, Bp, {}, {}, {}, {}, {}};
  p.qkv = test::random_values(B * T * 3 * p.C(), rng);
  p.pk = test::random_values(Bp * NH * P * HS, rng);
  p.pv = test::random_values(Bp * NH * P * HS, rng);
  if (mk != MaskKind::none) {
    p.mask.assign(B * T, 1);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) {
        if (mk == MaskKind::right_pad || mk == MaskKind::empty_row) p.mask[b * T + t] = t < T - b ? 1 : 0;
        if (mk == MaskKind::empty_row && b == B - 1) p.mask[b * T + t] = 0;
        if (mk == MaskKind::holes) p.mask[b * T + t] = rng.uniform() < 0.7 ? 1 : 0;
      }
  }
  return p;
}

/// Plain loops per (b, h, t): out (B, T, C); with dout given, also the gradients (dqkv, dpk, dpv).
struct Reference {
  std::vector<double> out, dqkv, dpk, dpv;
};

Reference reference(const Problem& p, const std::vector<double>* dout = nullptr) {
  const std::int64_t B = p.B, T = p.T, NH = p.NH, HS = p.HS, P = p.P, C = p.C();
  Reference r;
  r.out.assign(B * T * C, 0.0);
  r.dqkv.assign(p.qkv.size(), 0.0);
  r.dpk.assign(p.pk.size(), 0.0);
  r.dpv.assign(p.pv.size(), 0.0);
  const double scale = 1.0 / std::sqrt(double(HS));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        // Visible keys as offsets of their K vectors (V follows in the same array at the same offset + shift).
        struct Key {
          bool prefix;
          std::int64_t off;
        };
        std::vector<Key> keys;
        const std::int64_t bp = p.Bp == 1 ? 0 : b;
        const bool sees_prefix = p.from.empty() || t >= p.from[static_cast<std::size_t>(b)];
        for (std::int64_t j = 0; j < P && sees_prefix; ++j) keys.push_back({true, ((bp * NH + h) * P + j) * HS});
        for (std::int64_t j = 0; j <= t; ++j)
          if (p.mask.empty() || p.mask[b * T + j]) keys.push_back({false, (b * T + j) * 3 * C + C + h * HS});
        if (keys.empty()) continue;
        const std::int64_t qoff = (b * T + t) * 3 * C + h * HS;
        auto kptr = [&](const Key& k) { return k.prefix ? &p.pk[k.off] : &p.qkv[k.off]; };
        auto vptr = [&](const Key& k) { return k.prefix ? &p.pv[k.off] : &p.qkv[k.off + C]; };
        std::vector<double> s(keys.size());
        double mx = -INFINITY, sum = 0;
        for (std::size_t j = 0; j < keys.size(); ++j) {
          double dot = 0;
          for (std::int64_t e = 0; e < HS; ++e) dot += p.qkv[qoff + e] * kptr(keys[j])[e];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (auto& x : s) x /= sum;
        double* o = &r.out[(b * T + t) * C + h * HS];
        for (std::size_t j = 0; j < keys.size(); ++j)
          for (std::int64_t e = 0; e < HS; ++e) o[e] += s[j] * vptr(keys[j])[e];
        if (!dout) continue;
        const double* dy = &(*dout)[(b * T + t) * C + h * HS];
        std::vector<double> dp(keys.size());
        double dot_pdp = 0;
        for (std::size_t j = 0; j < keys.size(); ++j) {
          for (std::int64_t e = 0; e < HS; ++e) dp[j] += dy[e] * vptr(keys[j])[e];
          dot_pdp += dp[j] * s[j];
        }
        for (std::size_t j = 0; j < keys.size(); ++j) {
          const double ds = s[j] * (dp[j] - dot_pdp) * scale;
          double* dk = keys[j].prefix ? &r.dpk[keys[j].off] : &r.dqkv[keys[j].off];
          double* dv = keys[j].prefix ? &r.dpv[keys[j].off] : &r.dqkv[keys[j].off + C];
          for (std::int64_t e = 0; e < HS; ++e) {
            r.dqkv[qoff + e] += ds * kptr(keys[j])[e];
            dk[e] += ds * p.qkv[qoff + e];
            dv[e] += s[j] * dy[e];
          }
        }
      }
  return r;
}

/// The problem as tensors of type T, ready for the op.
template <class T>
struct Inputs {
  Tensor<T> qkv, pk, pv;
  Mask mask;
  Tensor<std::int32_t> from;
  std::int64_t NH;
  explicit Inputs(const Problem& p) : NH(p.NH) {
    if (!p.from.empty()) from = Tensor<std::int32_t>::from_vector({p.B}, p.from);
    qkv = tensor<T>({p.B, p.T, 3 * p.C()}, p.qkv);
    if (p.P > 0) {
      pk = tensor<T>({p.Bp, p.NH, p.P, p.HS}, p.pk);
      pv = tensor<T>({p.Bp, p.NH, p.P, p.HS}, p.pv);
    }
    if (!p.mask.empty()) mask = Mask::from_vector({p.B, p.T}, p.mask);
  }
  /// Gradients of sum(out * dout) into fresh zero tensors (prefix ones only when there is a prefix).
  struct Grads {
    Tensor<T> qkv, pk, pv;
  };
  Grads backward(const Tensor<T>& dout) const {
    AttentionCache<T, Cpu> cache;
    forward(&cache);
    Grads g{Tensor<T>::zeros(qkv.shape()), {}, {}};
    if (pk.defined()) g.pk = Tensor<T>::zeros(pk.shape()), g.pv = Tensor<T>::zeros(pv.shape());
    attention_backward(dout, NH, cache, pk, pv, mask, g.qkv, g.pk, g.pv);
    return g;
  }
  Tensor<T> forward(AttentionCache<T, Cpu>* cache) const {
    auto out = Tensor<T>::full({qkv.size(0), qkv.size(1), qkv.size(2) / 3}, T(7));  // garbage must vanish
    attention_forward(qkv, NH, pk, pv, mask, out, cache, from);
    return out;
  }
};

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-10;
}

struct Config {
  std::int64_t B, T, NH, HS, P, Bp;
  MaskKind mask;
};

const Config kConfigs[] = {
    {2, 5, 3, 4, 0, 1, MaskKind::none},       {2, 5, 3, 4, 3, 1, MaskKind::none},
    {2, 5, 3, 4, 3, 2, MaskKind::none},       {2, 5, 3, 4, 3, 1, MaskKind::right_pad},
    {2, 5, 3, 4, 3, 2, MaskKind::right_pad},  {3, 5, 3, 4, 0, 1, MaskKind::empty_row},
    {3, 5, 3, 4, 2, 1, MaskKind::empty_row},  {3, 6, 2, 5, 2, 3, MaskKind::holes},
    {3, 6, 2, 5, 0, 1, MaskKind::holes},      {1, 1, 1, 1, 1, 1, MaskKind::none},
    {2, 70, 2, 8, 4, 2, MaskKind::right_pad}, {2, 67, 3, 6, 0, 1, MaskKind::holes},
    {2, 40, 2, 3, 5, 1, MaskKind::none},
};

}  // namespace

TEST_CASE_TEMPLATE("attention_forward matches a naive double loop (prefix, Bp, padding, odd sizes)", T, float, double) {
  std::uint64_t seed = 1;
  for (const Config& c : kConfigs) {
    const Problem p = make_problem(c.B, c.T, c.NH, c.HS, c.P, c.Bp, c.mask, seed++);
    Inputs<T> in(p);
    AttentionCache<T, Cpu> cache;
    const auto out = test::as_double(in.forward(&cache));
    INFO("B=", c.B, " T=", c.T, " NH=", c.NH, " HS=", c.HS, " P=", c.P, " Bp=", c.Bp, " mask=", int(c.mask));
    CHECK(max_rel_diff(out, reference(p).out) < tol<T>());
    CHECK(test::as_double(in.forward(nullptr)) == out);  // inference path: per-thread score rows, same arithmetic
    // Probability rows sum to 1 (0 for a row that sees nothing), hidden entries are exactly 0.
    const std::int64_t L = c.P + c.T;
    REQUIRE(cache.probs.shape() == Shape{c.B, c.NH, c.T, L});
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t h = 0; h < c.NH; ++h)
        for (std::int64_t t = 0; t < c.T; ++t) {
          double sum = 0;
          bool any = c.P > 0;
          for (std::int64_t j = 0; j < L; ++j) {
            const bool visible = j < c.P || (j - c.P <= t && (p.mask.empty() || p.mask[b * c.T + j - c.P]));
            any = any || visible;
            if (!visible) REQUIRE(cache.probs(b, h, t, j) == T(0));
            sum += cache.probs(b, h, t, j);
          }
          CHECK(sum == doctest::Approx(any ? 1.0 : 0.0).epsilon(1e-5));
        }
  }
}

TEST_CASE("attention_forward: an all-padding row outputs zeros with P = 0 and only the prefix with P > 0") {
  Problem p = make_problem(2, 4, 2, 3, 0, 1, MaskKind::empty_row, 11);
  {
    Inputs<double> in(p);
    const auto out = in.forward(nullptr);
    for (std::int64_t t = 0; t < 4; ++t)
      for (std::int64_t c = 0; c < 6; ++c) CHECK(out(1, t, c) == 0.0);
    AttentionCache<double, Cpu> cache;
    in.forward(&cache);
    auto dqkv = Tensor<double>::zeros({2, 4, 18});
    Tensor<double> none;
    attention_backward(Tensor<double>::full({2, 4, 6}, 1.0), 2, cache, none, none, in.mask, dqkv, none, none);
    for (std::int64_t t = 0; t < 4; ++t)
      for (std::int64_t c = 0; c < 18; ++c) CHECK(dqkv(1, t, c) == 0.0);
    for (double x : dqkv.to_vector()) CHECK(std::isfinite(x));
  }
  // With a prefix, the empty row's output does not depend on its (all padded) tokens' keys and values.
  p = make_problem(2, 4, 2, 3, 3, 1, MaskKind::empty_row, 12);
  const auto before = test::as_double(Inputs<double>(p).forward(nullptr));
  for (std::int64_t i = 4 * 18; i < 8 * 18; ++i)
    if ((i % 18) >= 6) p.qkv[i] += 0.5;  // row 1's k and v
  const auto after = test::as_double(Inputs<double>(p).forward(nullptr));
  for (std::int64_t i = 4 * 6; i < 8 * 6; ++i) CHECK(after[i] == doctest::Approx(before[i]).epsilon(1e-14));
  CHECK(max_rel_diff(after, reference(p).out) < 1e-12);
}

TEST_CASE("attention: a prefix whose keys equal token keys still matches the reference") {
  Problem p = make_problem(2, 5, 3, 4, 3, 2, MaskKind::right_pad, 21);
  const std::int64_t C = p.C();
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 3; ++h)
      for (std::int64_t j = 0; j < 3; ++j)
        for (std::int64_t e = 0; e < 4; ++e) {
          p.pk[((b * 3 + h) * 3 + j) * 4 + e] = p.qkv[(b * 5 + j) * 3 * C + C + h * 4 + e];      // same key
          p.pv[((b * 3 + h) * 3 + j) * 4 + e] = p.qkv[(b * 5 + j) * 3 * C + 2 * C + h * 4 + e];  // same value
        }
  Inputs<double> in(p);
  CHECK(max_rel_diff(test::as_double(in.forward(nullptr)), reference(p).out) < 1e-12);
}

TEST_CASE("attention with a prefix equals causal attention over [prefix tokens, real tokens] (HF past_key_values)") {
  for (std::int64_t Bp : {1, 2}) {
    const std::int64_t B = 2, T = 5, NH = 3, HS = 4, P = 3, C = NH * HS, Tc = P + T;
    const Problem p = make_problem(B, T, NH, HS, P, Bp, MaskKind::right_pad, 31 + Bp);
    // The concatenated sequence: positions 0..P-1 carry the prefix K/V (and arbitrary queries), then the tokens.
    Problem cat = make_problem(B, Tc, NH, HS, 0, 1, MaskKind::none, 41);
    cat.mask.assign(B * Tc, 1);
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t t = 0; t < Tc; ++t)
        for (std::int64_t c = 0; c < 3 * C; ++c) {
          double& x = cat.qkv[(b * Tc + t) * 3 * C + c];
          if (t >= P) {
            x = p.qkv[(b * T + t - P) * 3 * C + c];
          } else if (c >= C) {  // prefix K (c < 2C) or V
            const std::int64_t h = (c % C) / HS, e = c % HS;
            const auto& src = c < 2 * C ? p.pk : p.pv;
            x = src[(((Bp == 1 ? 0 : b) * NH + h) * P + t) * HS + e];
          }
        }
      for (std::int64_t t = 0; t < T; ++t) cat.mask[b * Tc + P + t] = p.mask[b * T + t];
    }
    // A plain causal attention over the concatenated sequence, written directly.
    std::vector<double> direct(B * T * C, 0.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < NH; ++h)
        for (std::int64_t t = P; t < Tc; ++t) {
          const double* q = &cat.qkv[(b * Tc + t) * 3 * C + h * HS];
          std::vector<double> w(t + 1, 0.0);
          double mx = -INFINITY, sum = 0;
          for (std::int64_t j = 0; j <= t; ++j) {
            if (!cat.mask[b * Tc + j]) continue;
            for (std::int64_t e = 0; e < HS; ++e) w[j] += q[e] * cat.qkv[(b * Tc + j) * 3 * C + C + h * HS + e];
            w[j] /= std::sqrt(double(HS));
            mx = std::max(mx, w[j]);
          }
          for (std::int64_t j = 0; j <= t; ++j) sum += (w[j] = cat.mask[b * Tc + j] ? std::exp(w[j] - mx) : 0.0);
          for (std::int64_t j = 0; j <= t; ++j)
            for (std::int64_t e = 0; e < HS; ++e)
              direct[(b * T + t - P) * C + h * HS + e] +=
                  w[j] / sum * cat.qkv[(b * Tc + j) * 3 * C + 2 * C + h * HS + e];
        }
    Inputs<double> in(p), in_cat(cat);
    AttentionCache<double, Cpu> cache, cache_cat;
    const auto out = in.forward(&cache), out_cat = in_cat.forward(&cache_cat);
    INFO("Bp=", Bp);
    CHECK(max_rel_diff(test::as_double(out), direct) < 1e-12);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t c = 0; c < C; ++c)
          CHECK(out(b, t, c) == doctest::Approx(out_cat(b, P + t, c)).epsilon(1e-12));
    // Gradients agree too: d(prefix K/V) are the concatenated run's dK/dV at positions < P (summed when shared).
    Rng wr(6);
    const auto w = test::random_values(B * T * C, wr);
    std::vector<double> w_cat(B * Tc * C, 0.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T * C; ++i) w_cat[(b * Tc + P) * C + i] = w[b * T * C + i];
    auto dqkv = Tensor<double>::zeros(in.qkv.shape()), dqkv_cat = Tensor<double>::zeros(in_cat.qkv.shape());
    auto dpk = Tensor<double>::zeros(in.pk.shape()), dpv = Tensor<double>::zeros(in.pv.shape());
    Tensor<double> none;
    attention_backward(tensor<double>({B, T, C}, w), NH, cache, in.pk, in.pv, in.mask, dqkv, dpk, dpv);
    attention_backward(tensor<double>({B, Tc, C}, w_cat), NH, cache_cat, none, none, in_cat.mask, dqkv_cat, none, none);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t c = 0; c < 3 * C; ++c) {
        for (std::int64_t t = 0; t < T; ++t)
          CHECK(dqkv(b, t, c) == doctest::Approx(dqkv_cat(b, P + t, c)).epsilon(1e-12));
        if (c < C) continue;
        const std::int64_t h = (c % C) / HS, e = c % HS;
        for (std::int64_t j = 0; j < P; ++j) {
          const double g = dqkv_cat(b, j, c);
          auto& acc = c < 2 * C ? dpk : dpv;
          acc(Bp == 1 ? 0 : b, h, j, e) -= g;  // subtract; what remains must be zero
        }
      }
    for (double x : dpk.to_vector()) CHECK(std::abs(x) < 1e-12);
    for (double x : dpv.to_vector()) CHECK(std::abs(x) < 1e-12);
  }
}

TEST_CASE("attention_backward matches central finite differences in double (qkv, prefix_k, prefix_v)") {
  const Config configs[] = {{2, 5, 3, 4, 3, 1, MaskKind::right_pad},
                            {2, 5, 3, 4, 3, 2, MaskKind::empty_row},
                            {2, 4, 2, 3, 0, 1, MaskKind::empty_row},
                            {2, 4, 2, 3, 2, 2, MaskKind::holes}};
  std::uint64_t seed = 100;
  for (const Config& c : configs) {
    const Problem p = make_problem(c.B, c.T, c.NH, c.HS, c.P, c.Bp, c.mask, seed++);
    Inputs<double> in(p);
    Rng rng(seed++);
    const auto w = tensor<double>({c.B, c.T, p.C()}, test::random_values(c.B * c.T * p.C(), rng));
    auto loss = [&] {
      const auto out = in.forward(nullptr);
      double s = 0;
      for (std::int64_t i = 0; i < out.numel(); ++i) s += out.data()[i] * w.data()[i];
      return s;
    };
    const auto g = in.backward(w);
    INFO("B=", c.B, " T=", c.T, " P=", c.P, " Bp=", c.Bp, " mask=", int(c.mask));
    CHECK(gradcheck(loss, in.qkv, g.qkv).ok(1e-6));
    if (c.P > 0) {
      CHECK(gradcheck(loss, in.pk, g.pk).ok(1e-6));
      CHECK(gradcheck(loss, in.pv, g.pv).ok(1e-6));
    }
  }
}

TEST_CASE_TEMPLATE("attention with prefix_from (an infix) matches the naive loop; its backward, finite differences", T,
                   float, double) {
  const Config configs[] = {{3, 6, 2, 4, 3, 1, MaskKind::right_pad},
                            {3, 6, 2, 4, 2, 3, MaskKind::holes},
                            {2, 40, 2, 3, 5, 1, MaskKind::none}};
  std::uint64_t seed = 300;
  for (const Config& c : configs) {
    Problem p = make_problem(c.B, c.T, c.NH, c.HS, c.P, c.Bp, c.mask, seed++);
    for (std::int64_t b = 0; b < c.B; ++b)  // 0 (all see it), the middle, past the end (nobody does)
      p.from.push_back(static_cast<std::int32_t>(b == 0 ? 0 : b == 1 ? c.T / 2 : c.T + 3));
    Inputs<T> in(p);
    Rng rng(seed++);
    const auto dy = test::random_values(c.B * c.T * p.C(), rng);
    const Reference r = reference(p, &dy);
    INFO("B=", c.B, " T=", c.T, " P=", c.P, " Bp=", c.Bp, " mask=", int(c.mask));
    CHECK(max_rel_diff(test::as_double(in.forward(nullptr)), r.out) < tol<T>());
    const auto g = in.backward(tensor<T>({c.B, c.T, p.C()}, dy));
    CHECK(max_rel_diff(test::as_double(g.qkv), r.dqkv) < tol<T>());
    CHECK(max_rel_diff(test::as_double(g.pk), r.dpk) < tol<T>());
    CHECK(max_rel_diff(test::as_double(g.pv), r.dpv) < tol<T>());
    if constexpr (std::is_same_v<T, double>) {
      const auto w = tensor<double>({c.B, c.T, p.C()}, dy);
      auto loss = [&] {
        const auto out = in.forward(nullptr);
        double s = 0;
        for (std::int64_t i = 0; i < out.numel(); ++i) s += out.data()[i] * w.data()[i];
        return s;
      };
      if (c.T < 10) {
        CHECK(gradcheck(loss, in.qkv, g.qkv).ok(1e-6));
        CHECK(gradcheck(loss, in.pk, g.pk).ok(1e-6));
      }
    }
  }
  Inputs<float> in(make_problem(2, 4, 2, 3, 2, 1, MaskKind::none, 9));
  in.from = Tensor<std::int32_t>::zeros({3});
  CHECK(error_of([&] { (void)in.forward(nullptr); }).find("prefix_from shape") != std::string::npos);
}

TEST_CASE_TEMPLATE("attention_backward matches a naive double backward on larger shapes", T, float, double) {
  const Config configs[] = {{2, 70, 2, 8, 4, 1, MaskKind::right_pad},
                            {2, 70, 2, 8, 4, 2, MaskKind::holes},
                            {2, 67, 3, 6, 0, 1, MaskKind::empty_row},
                            {2, 9, 3, 5, 6, 1, MaskKind::none}};
  std::uint64_t seed = 200;
  for (const Config& c : configs) {
    const Problem p = make_problem(c.B, c.T, c.NH, c.HS, c.P, c.Bp, c.mask, seed++);
    Rng rng(seed++);
    const auto w = test::random_values(c.B * c.T * p.C(), rng);
    const Reference ref = reference(p, &w);
    Inputs<T> in(p);
    const auto g = in.backward(tensor<T>({c.B, c.T, p.C()}, w));
    INFO("B=", c.B, " T=", c.T, " P=", c.P, " Bp=", c.Bp, " mask=", int(c.mask));
    CHECK(max_rel_diff(test::as_double(g.qkv), ref.dqkv) < 5 * tol<T>());
    if (c.P > 0) {
      CHECK(max_rel_diff(test::as_double(g.pk), ref.dpk) < 5 * tol<T>());
      CHECK(max_rel_diff(test::as_double(g.pv), ref.dpv) < 5 * tol<T>());
    }
  }
}

TEST_CASE("attention: cache == nullptr gives the same output; a reused cache is refilled correctly") {
  const Problem p = make_problem(2, 6, 2, 4, 3, 1, MaskKind::right_pad, 51);
  Inputs<float> in(p);
  AttentionCache<float, Cpu> cache;
  const auto a = in.forward(nullptr).to_vector(), b = in.forward(&cache).to_vector();
  CHECK(a == b);
  const float* probs = cache.probs.data();
  const auto c = in.forward(&cache).to_vector();  // same shapes: the cache's buffers are reused
  CHECK(cache.probs.data() == probs);
  CHECK(a == c);
}

TEST_CASE("attention_backward skips undefined gradients and accumulates into defined ones") {
  const Problem p = make_problem(2, 5, 3, 4, 3, 1, MaskKind::right_pad, 61);
  Inputs<double> in(p);
  AttentionCache<double, Cpu> cache;
  in.forward(&cache);
  Rng rng(62);
  const auto w = tensor<double>({2, 5, 12}, test::random_values(2 * 5 * 12, rng));
  auto full_qkv = Tensor<double>::zeros(in.qkv.shape());
  auto full_pk = Tensor<double>::zeros(in.pk.shape()), full_pv = Tensor<double>::zeros(in.pv.shape());
  attention_backward(w, 3, cache, in.pk, in.pv, in.mask, full_qkv, full_pk, full_pv);
  Tensor<double> none;

  SUBCASE("frozen prefix: only dqkv, identical to the full call") {
    auto g = Tensor<double>::zeros(in.qkv.shape());
    Tensor<double> npk, npv;
    attention_backward(w, 3, cache, in.pk, in.pv, in.mask, g, npk, npv);
    CHECK(g.to_vector() == full_qkv.to_vector());
    CHECK(!npk.defined());
    CHECK(!npv.defined());
  }
  SUBCASE("prefix-tuning: no dqkv, prefix gradients identical to the full call") {
    auto gk = Tensor<double>::zeros(in.pk.shape()), gv = Tensor<double>::zeros(in.pv.shape());
    Tensor<double> nq;
    attention_backward(w, 3, cache, in.pk, in.pv, in.mask, nq, gk, gv);
    CHECK(!nq.defined());
    CHECK(gk.to_vector() == full_pk.to_vector());
    CHECK(gv.to_vector() == full_pv.to_vector());
    auto only_v = Tensor<double>::zeros(in.pv.shape());
    attention_backward(w, 3, cache, in.pk, in.pv, in.mask, nq, none, only_v);
    CHECK(only_v.to_vector() == full_pv.to_vector());
  }
  SUBCASE("nothing wanted: no work, no error") {
    attention_backward(w, 3, cache, in.pk, in.pv, in.mask, none, none, none);
  }
  SUBCASE("accumulation") {
    auto g = Tensor<double>::full(in.qkv.shape(), 1.5);
    auto gk = Tensor<double>::full(in.pk.shape(), -2.0), gv = Tensor<double>::full(in.pv.shape(), 0.25);
    attention_backward(w, 3, cache, in.pk, in.pv, in.mask, g, gk, gv);
    auto check = [](const Tensor<double>& acc, const Tensor<double>& once, double init) {
      for (std::int64_t i = 0; i < acc.numel(); ++i)
        REQUIRE(acc.data()[i] == doctest::Approx(once.data()[i] + init).epsilon(1e-14));
    };
    check(g, full_qkv, 1.5);
    check(gk, full_pk, -2.0);
    check(gv, full_pv, 0.25);
  }
}

TEST_CASE("attention: bad shapes throw errors that name the problem") {
  auto qkv = Tensor<float>::zeros({2, 5, 36});
  auto out = Tensor<float>::zeros({2, 5, 12});
  auto pk = Tensor<float>::zeros({1, 3, 2, 4}), pv = Tensor<float>::zeros({1, 3, 2, 4});
  Mask mask = Mask::full({2, 5}, 1), none_mask;
  Tensor<float> none;
  auto fwd = [&](const Tensor<float>& x, std::int64_t nh, const Tensor<float>& k, const Tensor<float>& v, const Mask& m,
                 Tensor<float>& o) {
    return error_of([&] { attention_forward(x, nh, k, v, m, o, static_cast<AttentionCache<float, Cpu>*>(nullptr)); });
  };
  CHECK(fwd(qkv, 3, pk, pv, mask, out) == "");
  auto bad_qkv = Tensor<float>::zeros({2, 5, 35});
  CHECK(fwd(bad_qkv, 3, pk, pv, mask, out).find("not a positive multiple of 3") != std::string::npos);
  CHECK(fwd(qkv.reshape({10, 36}), 3, pk, pv, mask, out).find("qkv must be (B, T, 3C)") != std::string::npos);
  CHECK(fwd(qkv, 5, none, none, mask, out).find("not divisible by num_heads = 5") != std::string::npos);
  CHECK(fwd(qkv, 0, none, none, mask, out).find("num_heads = 0") != std::string::npos);
  auto pk_nh = Tensor<float>::zeros({1, 2, 2, 6});
  CHECK(fwd(qkv, 3, pk_nh, pk_nh, mask, out).find("(Bp, NH, P, HS)") != std::string::npos);
  auto pk_hs = Tensor<float>::zeros({1, 3, 2, 5});
  CHECK(fwd(qkv, 3, pk_hs, pk_hs, mask, out).find("HS = 4") != std::string::npos);
  auto pk_bp = Tensor<float>::zeros({3, 3, 2, 4});
  CHECK(fwd(qkv, 3, pk_bp, pk_bp, mask, out).find("Bp 1 or B = 2") != std::string::npos);
  auto pk_r3 = Tensor<float>::zeros({3, 2, 4});
  CHECK(fwd(qkv, 3, pk_r3, pk_r3, mask, out).find("prefix_k/prefix_v shape (3, 2, 4)") != std::string::npos);
  auto pv_p = Tensor<float>::zeros({1, 3, 3, 4});
  CHECK(fwd(qkv, 3, pk, pv_p, mask, out).find("differs from prefix_v shape (1, 3, 3, 4)") != std::string::npos);
  CHECK(fwd(qkv, 3, pk, none, mask, out).find("both be defined or both undefined") != std::string::npos);
  Mask bad_mask = Mask::full({2, 4}, 1);
  CHECK(fwd(qkv, 3, pk, pv, bad_mask, out).find("mask shape (2, 4) must be (B, T) = (2, 5)") != std::string::npos);
  auto bad_out = Tensor<float>::zeros({2, 5, 36});
  CHECK(fwd(qkv, 3, pk, pv, mask, bad_out).find("out shape (2, 5, 36)") != std::string::npos);
  CHECK(fwd(qkv, 3, pk, pv, mask, none).find("out shape") != std::string::npos);
  CHECK(fwd(bad_qkv, 3, pk, pv, mask, out).find("attention_forward") != std::string::npos);

  AttentionCache<float, Cpu> cache;
  attention_forward(qkv, 3, pk, pv, mask, out, &cache);
  auto dqkv = Tensor<float>::zeros({2, 5, 36});
  auto dpk = Tensor<float>::zeros({1, 3, 2, 4}), dpv = Tensor<float>::zeros({1, 3, 2, 4});
  auto bwd = [&](const Tensor<float>& dout, std::int64_t nh, const AttentionCache<float, Cpu>& c,
                 const Tensor<float>& k, const Tensor<float>& v, const Mask& m, Tensor<float>& dq, Tensor<float>& dk,
                 Tensor<float>& dv) { return error_of([&] { attention_backward(dout, nh, c, k, v, m, dq, dk, dv); }); };
  CHECK(bwd(out, 3, cache, pk, pv, mask, dqkv, dpk, dpv) == "");
  auto bad_dout = Tensor<float>::zeros({2, 5, 11});
  CHECK(bwd(bad_dout, 3, cache, pk, pv, mask, dqkv, dpk, dpv)
            .find("dout shape (2, 5, 11) must be (B, T, C) = (2, 5, 12)") != std::string::npos);
  CHECK(bwd(out, 4, cache, pk, pv, mask, dqkv, dpk, dpv).find("num_heads = 4") != std::string::npos);
  CHECK(bwd(out, 3, AttentionCache<float, Cpu>{}, pk, pv, mask, dqkv, dpk, dpv).find("cache.q") != std::string::npos);
  CHECK(bwd(out, 3, cache, none, none, mask, dqkv, none, none).find("cache.probs shape (2, 3, 5, 7)") !=
        std::string::npos);  // the cache was made with P = 2
  CHECK(bwd(out, 3, cache, pk, pv, bad_mask, dqkv, dpk, dpv).find("mask shape") != std::string::npos);
  CHECK(bwd(out, 3, cache, pk, pv_p, mask, dqkv, dpk, dpv).find("differs from prefix_v") != std::string::npos);
  auto bad_dqkv = Tensor<float>::zeros({2, 5, 12});
  CHECK(bwd(out, 3, cache, pk, pv, mask, bad_dqkv, dpk, dpv).find("dqkv shape (2, 5, 12)") != std::string::npos);
  auto bad_dpk = Tensor<float>::zeros({2, 3, 2, 4});
  CHECK(bwd(out, 3, cache, pk, pv, mask, dqkv, bad_dpk, dpv).find("dprefix_k shape (2, 3, 2, 4)") != std::string::npos);
  CHECK(bwd(out, 3, cache, pk, pv, mask, dqkv, dpk, bad_dpk).find("dprefix_v shape") != std::string::npos);
}

TEST_CASE("attention: an empty batch or an empty sequence runs without error") {
  const std::int64_t sizes[][2] = {{0, 5}, {2, 0}};
  for (const auto& bt : sizes) {
    auto qkv = Tensor<float>::zeros({bt[0], bt[1], 36}), out = Tensor<float>::zeros({bt[0], bt[1], 12});
    auto pk = Tensor<float>::zeros({1, 3, 2, 4}), pv = Tensor<float>::zeros({1, 3, 2, 4});
    auto dpk = Tensor<float>::full({1, 3, 2, 4}, 1.0f), dqkv = Tensor<float>::zeros(qkv.shape());
    Mask mask;
    AttentionCache<float, Cpu> cache;
    CHECK(error_of([&] {
            attention_forward(qkv, 3, pk, pv, mask, out, &cache);
            attention_backward(out, 3, cache, pk, pv, mask, dqkv, dpk, dpk);
          }) == "");
    for (float x : dpk.to_vector()) CHECK(x == 1.0f);
  }
}
