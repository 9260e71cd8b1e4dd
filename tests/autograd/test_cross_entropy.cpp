// SPDX-License-Identifier: MIT
// Tests of the fused LM head + cross-entropy: a naive full-logits double reference for both reductions and
// every chunk size (also with label smoothing and a logits bias), gradients against finite differences, frozen E,
// large logits, ignored positions, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "prefixtune/autograd/autograd.hpp"
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

// Naive reference in double over the full (B*T, V) logits z = h E^T + bias (empty: none), with analytic
// gradients; label smoothing eps as PyTorch's: loss_i = -(1 - eps) log p[label] - eps / V sum_v log p_v.
struct Reference {
  double loss = 0;
  std::int64_t num_labels = 0;
  std::vector<double> per_position, dh, dE;  // per_position: the plain NLL (cross_entropy_per_position's)
};

Reference reference(const Problem& p, const std::vector<double>& h, const std::vector<double>& E, Reduction red,
                    double eps = 0, const std::vector<double>& bias = {}) {
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
      if (!bias.empty()) z[v] += bias[v];
      mx = std::max(mx, z[v]);
    }
    double s = 0;
    for (std::int64_t v = 0; v < p.V; ++v) s += std::exp(z[v] - mx);
    const double lse = mx + std::log(s);
    double sum_log_p = 0;  // sum_v log_softmax(z)_v
    for (std::int64_t v = 0; v < p.V; ++v) sum_log_p += z[v] - lse;
    r.per_position[i] = lse - z[label];
    r.loss += (1 - eps) * r.per_position[i] - eps / double(p.V) * sum_log_p;
    for (std::int64_t v = 0; v < p.V; ++v) {
      const double g = w * (std::exp(z[v] - lse) - (v == label ? 1.0 - eps : 0.0) - eps / double(p.V));
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

// r (with dh and dE) against the reference, relative to 1 + |reference|; unlabelled positions get exactly zero dh.
template <class T>
void check_against(const CrossEntropyResult<T, Cpu>& r, const Reference& ref, const Problem& p, double tol) {
  CHECK(r.num_labels == ref.num_labels);
  CHECK(std::abs(r.loss - ref.loss) / (1.0 + std::abs(ref.loss)) < tol);
  REQUIRE(r.dh.shape() == Shape{p.B, p.T, p.C});
  REQUIRE(r.dE.shape() == Shape{p.V, p.C});
  CHECK(max_rel_diff(r.dh.to_vector(), ref.dh) < tol);
  CHECK(max_rel_diff(r.dE.to_vector(), ref.dE) < tol);
  for (std::int64_t i = 0; i < p.B * p.T; ++i)
    if (p.labels[i] == kIgnoreLabel)
      for (std::int64_t c = 0; c < p.C; ++c) CHECK(r.dh.data()[i * p.C + c] == T(0));
}

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
      check_against(r, ref, p, tolerance<T>());
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

namespace {

// A logits bias (V) in [-2, 2): large enough to move the softmax.
std::vector<double> random_bias(std::int64_t V, std::uint64_t seed) {
  Rng rng(seed);
  auto b = test::random_values(V, rng);
  for (auto& x : b) x *= 2;
  return b;
}

template <class T>
Tensor<T, Cpu> bias_tensor(const std::vector<double>& b) {
  return Tensor<T, Cpu>::from_vector(Shape{static_cast<std::int64_t>(b.size())}, std::vector<T>(b.begin(), b.end()));
}

// Against a double reference: float 1e-5, double 1e-12 (relative to 1 + |reference|).
template <class T>
double smoothing_tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

}  // namespace

TEST_CASE_TEMPLATE("cross_entropy_forward with label smoothing and a logits bias matches a naive reference", T, float,
                   double) {
  const Problem p(17);
  const auto h = p.h_tensor<T>(), E = p.E_tensor<T>();
  const auto labels = p.label_tensor();
  const std::vector<double> bias = random_bias(p.V, 23);
  struct Case {
    double eps;
    bool biased;
  };
  for (const Case k : {Case{0.1, false}, Case{0.0, true}, Case{0.25, true}, Case{0.9, true}}) {
    const CrossEntropyOptions<T, Cpu> opt{k.eps, k.biased ? bias_tensor<T>(bias) : Tensor<T, Cpu>()};
    const std::vector<double> ref_bias = k.biased ? rounded<T>(bias) : std::vector<double>();
    for (Reduction red : kReductions) {
      const Reference ref = reference(p, rounded<T>(p.h), rounded<T>(p.E), red, k.eps, ref_bias);
      for (std::int64_t chunk : {1, 3, 1000}) {
        INFO("eps ", k.eps, " biased ", k.biased, " reduction ", int(red), " chunk_rows ", chunk);
        const auto r = cross_entropy_forward(h, E, labels, red, true, true, opt, chunk);
        check_against(r, ref, p, smoothing_tolerance<T>());
        const auto f = cross_entropy_forward(h, E, labels, red, false, false, opt, chunk);
        CHECK(f.loss == r.loss);  // forward only: the same loss, bit for bit
        // the autograd wrapper gives the same value and, for dloss = 1, the same gradients
        Tape<T, Cpu> tape;
        Var<T, Cpu> hv(h, true), Ev(E, true);
        auto loss = cross_entropy(tape, hv, Ev, labels, red, opt, chunk);
        CHECK(double(loss.value().item()) == double(static_cast<T>(r.loss)));
        tape.backward(loss);
        CHECK(hv.grad().to_vector() == r.dh.to_vector());
        CHECK(Ev.grad().to_vector() == r.dE.to_vector());
      }
    }
    if (k.biased) {  // per-position losses: the plain NLL of the biased logits (label smoothing is not theirs)
      const Reference ref = reference(p, rounded<T>(p.h), rounded<T>(p.E), Reduction::MeanPerToken, 0.0, ref_bias);
      for (std::int64_t chunk : {1, 1000}) {
        const auto pp = cross_entropy_per_position(h, E, labels, opt.bias, chunk);
        CHECK(max_rel_diff(pp.to_vector(), ref.per_position) < smoothing_tolerance<T>());
      }
    }
  }
}

TEST_CASE(
    "cross_entropy with label smoothing and a bias: gradients of the autograd wrapper match central finite "
    "differences in double") {
  const Problem p(19);
  auto h = p.h_tensor<double>(), E = p.E_tensor<double>();
  const auto labels = p.label_tensor();
  const auto bias = bias_tensor<double>(random_bias(p.V, 29));
  const auto bias_before = bias.to_vector();
  const CrossEntropyOptions<double, Cpu> opt{0.1, bias};
  for (Reduction red : kReductions) {
    INFO("reduction ", int(red));
    Tape<double, Cpu> tape;
    Var<double, Cpu> hv(h, true), Ev(E, true);  // share storage with h and E
    auto loss = cross_entropy(tape, hv, Ev, labels, red, opt, 2);
    tape.backward(loss);
    const auto dh = hv.grad().clone(), dE = Ev.grad().clone();
    auto f = [&] {
      Tape<double, Cpu> t;
      return cross_entropy(t, Var<double, Cpu>(h), Var<double, Cpu>(E), labels, red, opt, 2).value().item();
    };
    const GradcheckResult gh = gradcheck(f, h, dh);
    const GradcheckResult gE = gradcheck(f, E, dE);
    INFO("dh max_rel ", gh.max_rel_error, " dE max_rel ", gE.max_rel_error);
    CHECK(gh.ok(1e-6));
    CHECK(gE.ok(1e-6));
  }
  CHECK(bias.to_vector() == bias_before);  // frozen: never written
}

TEST_CASE_TEMPLATE(
    "cross_entropy with label smoothing 0 and no bias (or a zero bias) gives the plain results bit for bit", T, float,
    double) {
  const Problem p(21);
  const auto h = p.h_tensor<T>(), E = p.E_tensor<T>();
  const auto labels = p.label_tensor();
  const CrossEntropyOptions<T, Cpu> none{}, zero_eps{0.0, Tensor<T, Cpu>()},
      zero_bias{0.0, Tensor<T, Cpu>::zeros(Shape{p.V})};
  for (Reduction red : kReductions)
    for (std::int64_t chunk : {2, 1000}) {
      INFO("reduction ", int(red), " chunk_rows ", chunk);
      const auto plain = cross_entropy_forward(h, E, labels, red, true, true, chunk);
      for (const auto* opt : {&none, &zero_eps, &zero_bias}) {
        const auto r = cross_entropy_forward(h, E, labels, red, true, true, *opt, chunk);
        CHECK(r.loss == plain.loss);
        CHECK(r.dh.to_vector() == plain.dh.to_vector());
        CHECK(r.dE.to_vector() == plain.dE.to_vector());
        Tape<T, Cpu> t1, t2;
        Var<T, Cpu> h1(h, true), E1(E, true), h2(h, true), E2(E, true);
        auto l1 = cross_entropy(t1, h1, E1, labels, red, chunk);
        auto l2 = cross_entropy(t2, h2, E2, labels, red, *opt, chunk);
        CHECK(l1.value().item() == l2.value().item());
        t1.backward(l1);
        t2.backward(l2);
        CHECK(h1.grad().to_vector() == h2.grad().to_vector());
        CHECK(E1.grad().to_vector() == E2.grad().to_vector());
      }
      CHECK(cross_entropy_per_position(h, E, labels, zero_bias.bias, chunk).to_vector() ==
            cross_entropy_per_position(h, E, labels, chunk).to_vector());
      CHECK(cross_entropy_per_position(h, E, labels, Tensor<T, Cpu>(), chunk).to_vector() ==
            cross_entropy_per_position(h, E, labels, chunk).to_vector());
    }
  // the row kernel's smoothing argument at 0 is the plain arithmetic
  std::vector<T> z1(p.V), z2(p.V);
  for (std::int64_t v = 0; v < p.V; ++v) z1[v] = z2[v] = static_cast<T>(p.E[v]);
  const double l1 = detail::cross_entropy_row(z1.data(), p.V, 3, 0.5, true);
  const double l2 = detail::cross_entropy_row(z2.data(), p.V, 3, 0.5, true, 0.0);
  CHECK(l1 == l2);
  CHECK(z1 == z2);
}

TEST_CASE("cross_entropy refuses a bad label_smoothing and a wrongly shaped bias") {
  const Problem p(1);
  const auto h = p.h_tensor<float>(), E = p.E_tensor<float>();
  const auto labels = p.label_tensor();
  using Opt = CrossEntropyOptions<float, Cpu>;
  for (double eps :
       {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    INFO("eps ", eps);
    const std::string e = error_of([&] {
      cross_entropy_forward(h, E, labels, Reduction::MeanPerToken, true, true, Opt{eps, {}});
    });
    CHECK(e.find("cross_entropy_forward: label_smoothing must be finite and in [0, 1), got") != std::string::npos);
    Tape<float, Cpu> tape;
    CHECK(error_of([&] {
            cross_entropy(tape, Var<float, Cpu>(h, true), Var<float, Cpu>(E), labels, Reduction::MeanPerToken,
                          Opt{eps, {}});
          }).find("label_smoothing") != std::string::npos);
  }
  for (const Shape& s : {Shape{p.V + 1}, Shape{p.V - 1}, Shape{1, p.V}, Shape{p.V, p.C}}) {
    INFO("bias shape ", s);
    const std::string e = error_of([&] {
      cross_entropy_forward(h, E, labels, Reduction::SumPerSequenceMeanBatch, true, false,
                            Opt{0.1, Tensor<float, Cpu>::zeros(s)});
    });
    CHECK(e.find("cross_entropy_forward: logits bias shape " + s.to_string() + " does not match E") !=
          std::string::npos);
    CHECK(e.find("(V) = (11)") != std::string::npos);
    CHECK(error_of([&] {
            cross_entropy_per_position(h, E, labels, Tensor<float, Cpu>::zeros(s));
          }).find("cross_entropy_per_position: logits bias shape") != std::string::npos);
  }
  // good options pass
  CHECK(error_of([&] {
          cross_entropy_forward(h, E, labels, Reduction::MeanPerToken, true, true,
                                Opt{0.1, Tensor<float, Cpu>::zeros(Shape{p.V})});
        }).empty());
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
