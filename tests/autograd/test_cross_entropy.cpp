// SPDX-License-Identifier: MIT
// Tests of the fused LM head + cross-entropy: a naive full-logits double reference for both reductions and
// every chunk size, gradients against finite differences, frozen E, large logits, ignored positions, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/backend/cpu/cross_entropy.hpp"
#include "prefixtune/ops/cross_entropy.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::max_rel_diff;
using test::tolerance;

namespace {

// A problem of odd sizes with some ignored positions; h and E uniform in [-scale, scale).
struct Problem {
  std::int64_t B = 3, T = 7, C = 5, V = 11;
  std::vector<double> h, E;
  std::vector<std::int32_t> labels;

  explicit Problem(std::uint64_t seed, double scale = 1.0) {
    Rng rng(seed);
    h = test::random_values(B * T * C, rng);
    E = test::random_values(V * C, rng);
    for (auto& x : h) x *= scale;
    for (std::int64_t i = 0; i < B * T; ++i) {
      // every 4th position ignored; the rest cover 0 and V - 1
      labels.push_back(i % 4 == 1 ? kIgnoreLabel : static_cast<std::int32_t>((i * 5 + 3) % V));
    }
    labels[0] = 0;
    labels[2] = static_cast<std::int32_t>(V - 1);
  }
  template <class T_>
  Tensor<T_, Cpu> h_tensor() const {
    return Tensor<T_, Cpu>::from_vector(Shape{B, T, C}, std::vector<T_>(h.begin(), h.end()));
  }
  template <class T_>
  Tensor<T_, Cpu> E_tensor() const {
    return Tensor<T_, Cpu>::from_vector(Shape{V, C}, std::vector<T_>(E.begin(), E.end()));
  }
  Tensor<std::int32_t, Cpu> label_tensor() const { return Tensor<std::int32_t, Cpu>::from_vector(Shape{B, T}, labels); }
};

// Naive reference in double over the full (B*T, V) logits, with analytic gradients.
struct Reference {
  double loss = 0;
  std::int64_t num_labels = 0;
  std::vector<double> per_position, dh, dE;
};

Reference reference(const Problem& p, const std::vector<double>& h, const std::vector<double>& E, Reduction red) {
  const std::int64_t N = p.B * p.T;
  Reference r;
  r.per_position.assign(N, 0.0);
  r.dh.assign(N * p.C, 0.0);
  r.dE.assign(p.V * p.C, 0.0);
  for (auto l : p.labels) r.num_labels += l != kIgnoreLabel;
  const double w = red == Reduction::SumPerSequenceMeanBatch ? 1.0 / double(p.B) : 1.0 / double(r.num_labels);
  std::vector<double> z(p.V);
  for (std::int64_t i = 0; i < N; ++i) {
    const std::int32_t label = p.labels[i];
    if (label == kIgnoreLabel) continue;
    double mx = -INFINITY;
    for (std::int64_t v = 0; v < p.V; ++v) {
      z[v] = 0;
      for (std::int64_t c = 0; c < p.C; ++c) z[v] += h[i * p.C + c] * E[v * p.C + c];
      mx = std::max(mx, z[v]);
    }
    double s = 0;
    for (std::int64_t v = 0; v < p.V; ++v) s += std::exp(z[v] - mx);
    const double lse = mx + std::log(s);
    r.per_position[i] = lse - z[label];
    r.loss += r.per_position[i];
    for (std::int64_t v = 0; v < p.V; ++v) {
      const double g = w * (std::exp(z[v] - lse) - (v == label ? 1.0 : 0.0));
      for (std::int64_t c = 0; c < p.C; ++c) {
        r.dh[i * p.C + c] += g * E[v * p.C + c];
        r.dE[v * p.C + c] += g * h[i * p.C + c];
      }
    }
  }
  r.loss *= w;
  return r;
}

// The values as T holds them, so the reference sees exactly the op's inputs.
template <class T>
std::vector<double> rounded(const std::vector<double>& v) {
  std::vector<double> o;
  for (double x : v) o.push_back(static_cast<double>(static_cast<T>(x)));
  return o;
}

const Reduction kReductions[] = {Reduction::SumPerSequenceMeanBatch, Reduction::MeanPerToken};

}  // namespace

TEST_CASE_TEMPLATE("cross_entropy_forward matches a naive full-logits reference for every chunk size", T, float,
                   double) {
  const Problem p(7);
  const auto h = p.h_tensor<T>(), E = p.E_tensor<T>();
  const auto labels = p.label_tensor();
  for (Reduction red : kReductions) {
    const Reference ref = reference(p, rounded<T>(p.h), rounded<T>(p.E), red);
    for (std::int64_t chunk : {1, 2, 3, 1000}) {
      INFO("reduction ", int(red), " chunk_rows ", chunk);
      const auto r = cross_entropy_forward(h, E, labels, red, true, true, chunk);
      CHECK(r.num_labels == ref.num_labels);
      CHECK(std::abs(r.loss - ref.loss) / (1.0 + std::abs(ref.loss)) < tolerance<T>());
      REQUIRE(r.dh.shape() == h.shape());
      REQUIRE(r.dE.shape() == E.shape());
      CHECK(max_rel_diff(r.dh.to_vector(), ref.dh) < tolerance<T>());
      CHECK(max_rel_diff(r.dE.to_vector(), ref.dE) < tolerance<T>());
      // unlabelled positions get exactly zero
      for (std::int64_t i = 0; i < p.B * p.T; ++i)
        if (p.labels[i] == kIgnoreLabel)
          for (std::int64_t c = 0; c < p.C; ++c) CHECK(r.dh.data()[i * p.C + c] == T(0));
      // forward only gives the same loss
      const auto f = cross_entropy_forward(h, E, labels, red, false, false, chunk);
      CHECK(!f.dh.defined());
      CHECK(!f.dE.defined());
      CHECK(std::abs(f.loss - r.loss) <= 1e-12 * (1.0 + std::abs(r.loss)));
    }
  }
}

TEST_CASE("cross_entropy_forward gradients match central finite differences in double") {
  const Problem p(11);
  auto h = p.h_tensor<double>(), E = p.E_tensor<double>();
  const auto labels = p.label_tensor();
  for (Reduction red : kReductions) {
    INFO("reduction ", int(red));
    const auto r = cross_entropy_forward(h, E, labels, red, true, true, 2);
    auto loss = [&] { return cross_entropy_forward(h, E, labels, red, false, false, 2).loss; };
    const GradcheckResult gh = gradcheck(loss, h, r.dh);
    const GradcheckResult gE = gradcheck(loss, E, r.dE);
    INFO("dh max_rel ", gh.max_rel_error, " dE max_rel ", gE.max_rel_error);
    CHECK(gh.ok(1e-6));
    CHECK(gE.ok(1e-6));
  }
}

TEST_CASE_TEMPLATE("a frozen E (want_dE = false) leaves dE undefined and dh unchanged", T, float, double) {
  const Problem p(3);
  const auto h = p.h_tensor<T>(), E = p.E_tensor<T>();
  const auto E_before = E.to_vector();
  const auto labels = p.label_tensor();
  const auto both = cross_entropy_forward(h, E, labels, Reduction::SumPerSequenceMeanBatch, true, true, 4);
  const auto frozen = cross_entropy_forward(h, E, labels, Reduction::SumPerSequenceMeanBatch, true, false, 4);
  CHECK(!frozen.dE.defined());
  REQUIRE(frozen.dh.defined());
  CHECK(frozen.dh.to_vector() == both.dh.to_vector());
  CHECK(frozen.loss == both.loss);
  CHECK(E.to_vector() == E_before);  // inputs are never written
  const auto only_dE = cross_entropy_forward(h, E, labels, Reduction::MeanPerToken, false, true, 4);
  CHECK(!only_dE.dh.defined());
  CHECK(only_dE.dE.defined());
}

TEST_CASE_TEMPLATE("large logits stay finite and match the reference (log-sum-exp trick)", T, float, double) {
  for (double scale : {100.0, 1e8}) {  // 1e8: logits ~1e8, the float kernel falls back to std::exp
    INFO("h scale ", scale);
    const Problem p(5, scale);
    const auto r = cross_entropy_forward(p.h_tensor<T>(), p.E_tensor<T>(), p.label_tensor(), Reduction::MeanPerToken,
                                         true, true, 3);
    CHECK(std::isfinite(r.loss));
    for (T x : r.dh.to_vector()) REQUIRE(std::isfinite(x));
    for (T x : r.dE.to_vector()) REQUIRE(std::isfinite(x));
    const Reference ref = reference(p, rounded<T>(p.h), rounded<T>(p.E), Reduction::MeanPerToken);
    // the loss is a difference of numbers of size ~|logits|: compare relative to that size
    CHECK(std::abs(r.loss - ref.loss) / (1.0 + scale) < tolerance<T>());
    CHECK(max_rel_diff(r.dh.to_vector(), ref.dh) < 10 * tolerance<T>());
  }
}

TEST_CASE_TEMPLATE("all positions ignored: loss 0, no labels, zero gradients", T, float, double) {
  Problem p(9);
  for (auto& l : p.labels) l = kIgnoreLabel;
  for (Reduction red : kReductions) {
    const auto r = cross_entropy_forward(p.h_tensor<T>(), p.E_tensor<T>(), p.label_tensor(), red, true, true);
    CHECK(r.loss == 0.0);
    CHECK(r.num_labels == 0);
    for (T x : r.dh.to_vector()) CHECK(x == T(0));
    for (T x : r.dE.to_vector()) CHECK(x == T(0));
  }
  const auto pp = cross_entropy_per_position(p.h_tensor<T>(), p.E_tensor<T>(), p.label_tensor());
  for (T x : pp.to_vector()) CHECK(x == T(0));
}

TEST_CASE_TEMPLATE("cross_entropy_per_position matches the reference and sums to the sum-reduction times B", T, float,
                   double) {
  const Problem p(13);
  const auto h = p.h_tensor<T>(), E = p.E_tensor<T>();
  const auto labels = p.label_tensor();
  const Reference ref = reference(p, rounded<T>(p.h), rounded<T>(p.E), Reduction::SumPerSequenceMeanBatch);
  for (std::int64_t chunk : {1, 3, 1000}) {
    const auto pp = cross_entropy_per_position(h, E, labels, chunk);
    REQUIRE(pp.shape() == Shape{p.B, p.T});
    CHECK(max_rel_diff(pp.to_vector(), ref.per_position) < tolerance<T>());
    double sum = 0;
    for (T x : pp.to_vector()) sum += double(x);
    const auto r = cross_entropy_forward(h, E, labels, Reduction::SumPerSequenceMeanBatch, false, false, chunk);
    CHECK(std::abs(sum - r.loss * double(p.B)) / (1.0 + std::abs(sum)) < tolerance<T>());
  }
}

TEST_CASE("the float fast exp agrees with std::exp over the whole non-positive range") {
  std::vector<float> x;
  for (float a = 0.0f; a > -95.0f; a -= 0.0137f) x.push_back(a);
  for (float a : {-0.0f, -1e-30f, -0.34657359f, -0.34657360f, -87.3f, -88.0f, -88.8f, -1e6f, -1e9f}) x.push_back(a);
  std::vector<float> y(x.size());
  detail::exp_shifted_f32(x.data(), y.data(), static_cast<std::int64_t>(x.size()), 0.0f);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp(double(x[i]));
    INFO("x = ", x[i], " fast ", y[i], " std ", e);
    if (e >= double(std::numeric_limits<float>::min()) * 2) {
      REQUIRE(std::abs(y[i] - e) <= 3e-7 * e);
    } else {
      REQUIRE(y[i] >= 0.0f);  // below ~2^-126: flushed to 0 or a tiny value
      REQUIRE(y[i] <= 3e-38f);
    }
  }
  // shift: exp(x - shift), in place
  std::vector<float> z = {1000.0f, 999.0f, 990.0f};
  detail::exp_shifted_f32(z.data(), z.data(), 3, 1000.0f);
  CHECK(z[0] == 1.0f);
  CHECK(std::abs(z[1] - std::exp(-1.0)) < 1e-7);
  CHECK(std::abs(z[2] - std::exp(-10.0)) < 1e-10);
}

TEST_CASE("cross_entropy checks labels, shapes and chunk_rows before any work") {
  const Problem p(1);
  const auto h = p.h_tensor<float>(), E = p.E_tensor<float>();
  auto bad = [&](std::int32_t value) {
    auto labels = p.label_tensor();
    labels(1, 2) = value;
    return labels;
  };
  for (std::int32_t value : {11, -5, -1, 1 << 30}) {
    const auto labels = bad(value);
    const std::string e = error_of([&] { cross_entropy_forward(h, E, labels, Reduction::MeanPerToken, true, true); });
    INFO(e);
    CHECK(e.find("label " + std::to_string(value)) != std::string::npos);
    CHECK(e.find("(b=1, t=2)") != std::string::npos);
    CHECK(e.find("V = 11") != std::string::npos);
    CHECK(error_of([&] { cross_entropy_per_position(h, E, labels); }).find("cross_entropy_per_position: label") !=
          std::string::npos);
  }
  const auto labels = p.label_tensor();
  auto fwd = [&](const Tensor<float, Cpu>& hh, const Tensor<float, Cpu>& EE, const Tensor<std::int32_t, Cpu>& ll,
                 std::int64_t chunk = 128) {
    return error_of([&] { cross_entropy_forward(hh, EE, ll, Reduction::SumPerSequenceMeanBatch, true, false, chunk); });
  };
  const std::string e_c = fwd(h, Tensor<float, Cpu>::zeros(Shape{11, 6}), labels);
  CHECK(e_c.find("E shape (11, 6) does not match h (3, 7, 5)") != std::string::npos);
  const std::string e_l = fwd(h, E, Tensor<std::int32_t, Cpu>::zeros(Shape{3, 6}));
  CHECK(e_l.find("labels shape (3, 6) does not match h (3, 7, 5)") != std::string::npos);
  CHECK(fwd(h, E, Tensor<std::int32_t, Cpu>::zeros(Shape{21})).find("labels shape (21)") != std::string::npos);
  CHECK(fwd(h.reshape({21, 5}), E, labels).find("h must be (B, T, C), got shape (21, 5)") != std::string::npos);
  CHECK(fwd(h, E, labels, 0).find("chunk_rows must be >= 1, got 0") != std::string::npos);
  CHECK(fwd(h, E, labels, -3).find("chunk_rows must be >= 1, got -3") != std::string::npos);
  CHECK(fwd(Tensor<float, Cpu>(), E, labels).find("undefined tensor argument") != std::string::npos);
  CHECK(error_of([&] { cross_entropy_per_position(h, E, labels, 0); }).find("chunk_rows") != std::string::npos);
  CHECK(fwd(h, E, labels).empty());
}
