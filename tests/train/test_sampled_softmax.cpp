// SPDX-License-Identifier: MIT
// Tests of train/sampled_softmax.hpp: the drawn vocabulary, equality with the full cross-entropy when every row is
// scored, central finite differences with a few negatives, the unbiasedness of the partition-function estimate,
// ignored labels and bad labels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/train/sampled_softmax.hpp"

using namespace prefixtune;

namespace {

template <class T>
Tensor<T> random_tensor(const Shape& s, std::uint64_t seed, double std) {
  auto t = Tensor<T>::empty(s);
  Rng rng(seed);
  fill_normal(t, rng, 0.0, std);
  return t;
}

}  // namespace

TEST_CASE("sample_vocabulary: distinct labels first, then distinct uniform negatives outside them") {
  Rng rng(7);
  const SampledVocabulary s = sample_vocabulary({5, 3, 5, 90, 3}, 100, 10, rng);
  CHECK(s.num_labels == 3);
  REQUIRE(s.ids.size() == 13);
  CHECK(std::vector<std::int32_t>(s.ids.begin(), s.ids.begin() + 3) == std::vector<std::int32_t>{3, 5, 90});
  const std::vector<std::int32_t> neg(s.ids.begin() + 3, s.ids.end());
  CHECK(std::is_sorted(neg.begin(), neg.end()));
  CHECK(std::set<std::int32_t>(neg.begin(), neg.end()).size() == 10);
  for (const auto v : neg) CHECK((v >= 0 && v < 100 && v != 3 && v != 5 && v != 90));
  CHECK(s.negative_log_weight == doctest::Approx(std::log(97.0 / 10.0)).epsilon(1e-15));
  Rng again(7);
  CHECK(sample_vocabulary({5, 3, 5, 90, 3}, 100, 10, again).ids == s.ids);  // seeded: reproducible

  // Every row of [0, 100) is a negative equally often (uniform draw): 4000 draws of 10 out of 97.
  std::vector<int> hits(100, 0);
  Rng r2(11);
  for (int k = 0; k < 4000; ++k) {
    const auto d = sample_vocabulary({3, 5, 90}, 100, 10, r2);
    for (std::size_t i = 3; i < d.ids.size(); ++i) ++hits[static_cast<std::size_t>(d.ids[i])];
  }
  const double expected = 4000.0 * 10.0 / 97.0;  // 412.4, standard deviation about 19
  for (int v = 0; v < 100; ++v) {
    if (v == 3 || v == 5 || v == 90) {
      CHECK(hits[static_cast<std::size_t>(v)] == 0);
    } else {
      CHECK(std::abs(hits[static_cast<std::size_t>(v)] - expected) < 100);
    }
  }

  Rng r3(1);
  const auto all = sample_vocabulary({1}, 6, 50, r3);  // more negatives than rows left: all of them, weight 1
  CHECK(all.ids == std::vector<std::int32_t>{1, 0, 2, 3, 4, 5});
  CHECK(all.negative_log_weight == 0.0);
  CHECK_THROWS_WITH(sample_vocabulary({6}, 6, 2, r3), doctest::Contains("outside [0, 6)"));
}

TEST_CASE("sampled_softmax_loss scoring every row equals cross_entropy, value and gradients") {
  const std::int64_t B = 2, T_len = 5, C = 8, V = 40;
  auto hv = random_tensor<double>({B, T_len, C}, 1, 1.0);
  auto Ev = random_tensor<double>({V, C}, 2, 0.5);
  const auto labels =
      Tensor<std::int32_t>::from_vector({B, T_len}, {3, 7, kIgnoreLabel, 3, 39, 0, 12, 12, kIgnoreLabel, 25});
  Var<double> h1(hv.clone(), true, "h"), E1(Ev.clone(), true, "E"), h2(hv.clone(), true, "h"),
      E2(Ev.clone(), true, "E");
  Tape<double> t1, t2;
  Rng rng(3);
  const auto full = cross_entropy(t1, h1, E1, labels, Reduction::MeanPerToken);
  const auto sampled = sampled_softmax_loss(t2, h2, E2, labels, V, rng);
  CHECK(sampled.value().item() == doctest::Approx(full.value().item()).epsilon(1e-13));
  t1.backward(full);
  t2.backward(sampled);
  for (std::int64_t i = 0; i < hv.numel(); ++i)
    CHECK(h2.grad().data()[i] == doctest::Approx(h1.grad().data()[i]).epsilon(1e-12));
  for (std::int64_t i = 0; i < Ev.numel(); ++i)
    CHECK(E2.grad().data()[i] == doctest::Approx(E1.grad().data()[i]).epsilon(1e-12));
}

TEST_CASE("sampled_softmax_loss gradients match central finite differences (double, 6 negatives)") {
  const std::int64_t B = 2, T_len = 3, C = 4, V = 30;
  auto hv = random_tensor<double>({B, T_len, C}, 4, 1.0);
  auto Ev = random_tensor<double>({V, C}, 5, 0.7);
  const auto labels = Tensor<std::int32_t>::from_vector({B, T_len}, {1, 4, 4, kIgnoreLabel, 29, 17});
  Var<double> h(hv, true, "h"), E(Ev, true, "E");
  Tape<double> tape;
  Rng rng(9);
  const auto loss = sampled_softmax_loss(tape, h, E, labels, 6, rng);
  tape.backward(loss);
  // The same draw for every evaluation: a fresh Rng with the same seed.
  const auto f = [&] {
    NoGradGuard no_grad;
    Tape<double> t;
    Rng r(9);
    return sampled_softmax_loss(t, hv, Ev, labels, 6, r).value().item();
  };
  CHECK(gradcheck(f, hv, h.grad()).ok(1e-7));
  CHECK(gradcheck(f, Ev, E.grad()).ok(1e-7));
}

TEST_CASE("sampled_softmax_loss: the partition-function estimate is unbiased") {
  // One labelled position: loss = log Z_hat - z_label, so exp(loss) averages to Z / exp(z_label) = exp(full loss).
  const std::int64_t C = 6, V = 200;
  auto hv = random_tensor<double>({1, 1, C}, 21, 1.0);
  auto Ev = random_tensor<double>({V, C}, 22, 0.6);
  const auto labels = Tensor<std::int32_t>::from_vector({1, 1}, {17});
  NoGradGuard no_grad;
  Tape<double> tape;
  const double full = cross_entropy(tape, hv, Ev, labels, Reduction::MeanPerToken).value().item();
  Rng rng(23);
  double mean = 0, mean_sq = 0;
  const int draws = 4000;
  for (int k = 0; k < draws; ++k) {
    const double z = std::exp(sampled_softmax_loss(tape, hv, Ev, labels, 20, rng).value().item());
    mean += z / draws;
    mean_sq += z * z / draws;
  }
  const double stderr_mean = std::sqrt((mean_sq - mean * mean) / draws);
  CHECK(stderr_mean > 0);  // the draws really vary
  CHECK(std::abs(mean - std::exp(full)) < 4 * stderr_mean);
}

TEST_CASE("sampled_softmax_loss: no labelled position gives 0; bad labels and arguments throw") {
  auto hv = random_tensor<float>({1, 2, 4}, 1, 1.0);
  auto Ev = random_tensor<float>({10, 4}, 2, 1.0);
  Var<float> h(hv, true, "h"), E(Ev, true, "E");
  Tape<float> tape;
  Rng rng(1);
  const auto none = Tensor<std::int32_t>::from_vector({1, 2}, {kIgnoreLabel, kIgnoreLabel});
  const auto loss = sampled_softmax_loss(tape, h, E, none, 3, rng);
  CHECK(loss.value().item() == 0.0f);
  tape.backward(loss);
  for (std::int64_t i = 0; i < hv.numel(); ++i) CHECK(h.grad().data()[i] == 0.0f);
  Tape<float> t2;
  CHECK_THROWS_WITH(sampled_softmax_loss(t2, h, E, Tensor<std::int32_t>::from_vector({1, 2}, {1, 10}), 3, rng),
                    doctest::Contains("label 10 at (b=0, t=1) is outside [0, V)"));
  CHECK_THROWS_WITH(sampled_softmax_loss(t2, h, E, Tensor<std::int32_t>::from_vector({1, 2}, {1, 2}), 0, rng),
                    doctest::Contains("negatives must be >= 1"));
  CHECK_THROWS_WITH(sampled_softmax_loss(t2, h, E, Tensor<std::int32_t>::from_vector({2, 1}, {1, 2}), 3, rng),
                    doctest::Contains("labels shape"));
}
