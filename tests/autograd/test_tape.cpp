// SPDX-License-Identifier: MIT
// Tests of Var / Tape / NoGradGuard and of the differentiable wrappers composed into a tiny GPT-2 with a
// trainable prefix: its prefix gradient (and, for full fine-tuning, a weight gradient) matches finite differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "prefixtune/autograd/autograd.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;

namespace {

Tensor<double> random_tensor(const Shape& s, Rng& rng, double scale = 1.0) {
  auto t = Tensor<double>::empty(s);
  fill_uniform(t, rng, -scale, scale);
  return t;
}

// A tiny pre-LN GPT-2: embedding -> L blocks (LN, attention with prefix, residual, LN, MLP, residual) -> LN ->
// tied-head cross-entropy. W is Tensor<double> (frozen weights) or Var<double> (trainable, full fine-tuning).
template <class W>
struct TinyGpt {
  static constexpr std::int64_t V = 13, C = 8, NH = 2, HS = C / NH, L = 2, P = 3, NPOS = 16;
  Tensor<double> wte, wpe;  // the tied embedding stays frozen
  struct Block {
    W ln1_g, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_g, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
  };
  std::vector<Block> blocks;
  W lnf_g, lnf_b;

  static W make(Tensor<double> t) {
    if constexpr (std::is_same_v<W, Var<double>>) {
      return Var<double>(t, true);
    } else {
      return t;
    }
  }
  explicit TinyGpt(Rng& rng) {
    wte = random_tensor({V, C}, rng, 0.5);
    wpe = random_tensor({NPOS, C}, rng, 0.1);
    auto ones_ish = [&](std::int64_t n) {
      auto t = random_tensor({n}, rng, 0.1);
      for (std::int64_t i = 0; i < n; ++i) t(i) += 1.0;
      return t;
    };
    for (int l = 0; l < L; ++l) {
      blocks.push_back(Block{make(ones_ish(C)), make(random_tensor({C}, rng, 0.1)),
                             make(random_tensor({C, 3 * C}, rng, 0.4)), make(random_tensor({3 * C}, rng, 0.1)),
                             make(random_tensor({C, C}, rng, 0.4)), make(random_tensor({C}, rng, 0.1)),
                             make(ones_ish(C)), make(random_tensor({C}, rng, 0.1)),
                             make(random_tensor({C, 4 * C}, rng, 0.4)), make(random_tensor({4 * C}, rng, 0.1)),
                             make(random_tensor({4 * C, C}, rng, 0.3)), make(random_tensor({C}, rng, 0.1))});
    }
    lnf_g = make(ones_ish(C));
    lnf_b = make(random_tensor({C}, rng, 0.1));
  }

  // prefix_k/prefix_v: per layer (1, NH, P, HS); positions P..P+T-1 as in the paper's code.
  Var<double> loss(Tape<double>& tape, const Tensor<std::int32_t>& ids, const Tensor<std::int32_t>& labels,
                   const Tensor<std::uint8_t>& mask, const std::vector<Var<double>>& prefix_k,
                   const std::vector<Var<double>>& prefix_v) const {
    const std::int64_t B = ids.size(0), T = ids.size(1);
    auto pos = Tensor<std::int32_t>::empty({B, T});
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) pos(b, t) = static_cast<std::int32_t>(P + t);
    Var<double> x = add(tape, embedding(tape, ids, wte), embedding(tape, pos, wpe));
    for (int l = 0; l < L; ++l) {
      const Block& k = blocks[l];
      auto h = layer_norm(tape, x, k.ln1_g, k.ln1_b, 1e-5);
      auto a = attention(tape, linear(tape, h, k.attn_w, k.attn_b), NH, prefix_k[l], prefix_v[l], mask);
      x = add(tape, x, linear(tape, a, k.proj_w, k.proj_b));
      auto m = linear(tape, gelu(tape, linear(tape, layer_norm(tape, x, k.ln2_g, k.ln2_b, 1e-5), k.fc_w, k.fc_b)),
                      k.fc2_w, k.fc2_b);
      x = add(tape, x, m);
    }
    auto hf = layer_norm(tape, x, lnf_g, lnf_b, 1e-5);
    return cross_entropy(tape, hf, wte, labels, Reduction::SumPerSequenceMeanBatch, 4);
  }
};

struct Batch {
  Tensor<std::int32_t> ids, labels;
  Tensor<std::uint8_t> mask;
};

// Two rows, T = 6; row 1 is right-padded by two positions (mask 0, labels -100), as real batches are.
Batch make_batch(Rng& rng, std::int64_t V) {
  const std::int64_t B = 2, T = 6;
  Batch bt{Tensor<std::int32_t>::empty({B, T}), Tensor<std::int32_t>::empty({B, T}),
           Tensor<std::uint8_t>::full({B, T}, 1)};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      bt.ids(b, t) = static_cast<std::int32_t>(rng.below(V));
      bt.labels(b, t) = t < 2 ? -100 : static_cast<std::int32_t>(rng.below(V));  // labels only on a "target"
    }
  for (std::int64_t t = 4; t < T; ++t) bt.mask(1, t) = 0, bt.labels(1, t) = -100;
  return bt;
}

std::vector<Var<double>> make_prefix(Rng& rng, std::int64_t L, std::int64_t NH, std::int64_t P, std::int64_t HS) {
  std::vector<Var<double>> v;
  for (std::int64_t l = 0; l < L; ++l) v.emplace_back(random_tensor({1, NH, P, HS}, rng, 1.0), true, "prefix");
  return v;
}

}  // namespace

TEST_CASE("a tiny GPT-2 with a trainable prefix: prefix gradients match finite differences") {
  Rng rng(31);
  using Net = TinyGpt<Tensor<double>>;
  Net net(rng);
  Batch batch = make_batch(rng, Net::V);
  auto pk = make_prefix(rng, Net::L, Net::NH, Net::P, Net::HS);
  auto pv = make_prefix(rng, Net::L, Net::NH, Net::P, Net::HS);
  Tape<double> tape;
  auto loss = net.loss(tape, batch.ids, batch.labels, batch.mask, pk, pv);
  CHECK(loss.shape() == Shape{});
  tape.backward(loss);
  CHECK(tape.size() == 0);
  auto f = [&] {
    NoGradGuard ng;
    Tape<double> t2;
    auto l = net.loss(t2, batch.ids, batch.labels, batch.mask, pk, pv);
    CHECK(t2.size() == 0);
    return l.value().item();
  };
  for (int l = 0; l < Net::L; ++l) {
    Tensor<double> k = pk[l].value(), v = pv[l].value();
    REQUIRE(pk[l].grad().defined());
    auto rk = gradcheck(f, k, pk[l].grad());
    auto rv = gradcheck(f, v, pv[l].grad());
    INFO("layer ", l, " key err ", rk.max_rel_error, " value err ", rv.max_rel_error);
    CHECK(rk.ok(1e-6));
    CHECK(rv.ok(1e-6));
  }
}

TEST_CASE("full fine-tuning of the tiny GPT-2: weight gradients match finite differences") {
  Rng rng(32);
  using Net = TinyGpt<Var<double>>;
  Net net(rng);
  Batch batch = make_batch(rng, Net::V);
  std::vector<Var<double>> no_prefix(Net::L);  // undefined Vars: P = 0
  Tape<double> tape;
  tape.backward(net.loss(tape, batch.ids, batch.labels, batch.mask, no_prefix, no_prefix));
  auto f = [&] {
    NoGradGuard ng;
    Tape<double> t2;
    return net.loss(t2, batch.ids, batch.labels, batch.mask, no_prefix, no_prefix).value().item();
  };
  for (const Var<double>* w : {&net.blocks[0].attn_w, &net.blocks[1].fc_b, &net.blocks[0].ln1_g, &net.lnf_b}) {
    Tensor<double> value = w->value();
    auto r = gradcheck(f, value, w->grad());
    CHECK(r.ok(1e-6));
  }
}

TEST_CASE("frozen weights are plain tensors: no weight gradient, same input gradient") {
  Rng rng(5);
  auto x = Var<double>(random_tensor({3, 4, 5}, rng), true, "x");
  auto w = random_tensor({5, 6}, rng);
  auto b = random_tensor({6}, rng);
  Tape<double> tape;
  auto y = linear(tape, x, w, b);
  auto loss = cross_entropy(tape, y, random_tensor({7, 6}, rng), Tensor<std::int32_t>::full({3, 4}, 2),
                            Reduction::MeanPerToken);
  tape.backward(loss);
  const auto dx_frozen = x.grad().to_vector();

  x.clear_grad();
  Var<double> wv(w, true, "w"), bv(b, false, "b");  // trainable w, a Var bias that does not require grad
  Tape<double> tape2;
  auto e = random_tensor({7, 6}, rng);
  tape2.backward(cross_entropy(tape2, linear(tape2, x, wv, bv), e, Tensor<std::int32_t>::full({3, 4}, 2),
                               Reduction::MeanPerToken));
  CHECK_FALSE(bv.grad().defined());  // requires_grad = false: nothing allocated
  REQUIRE(wv.grad().defined());
  auto f = [&] {
    NoGradGuard ng;
    Tape<double> t;
    return cross_entropy(t, linear(t, x, wv, bv), e, Tensor<std::int32_t>::full({3, 4}, 2), Reduction::MeanPerToken)
        .value()
        .item();
  };
  Tensor<double> wval = wv.value();
  CHECK(gradcheck(f, wval, wv.grad()).ok(1e-6));
  CHECK(dx_frozen.size() == 60);
}

TEST_CASE("nothing is recorded where nothing upstream requires grad") {
  Rng rng(6);
  auto ids = Tensor<std::int32_t>::full({2, 3}, 1);
  auto table = random_tensor({4, 8}, rng);
  auto prefix = Var<double>(random_tensor({1, 2, 2, 4}, rng), true);
  auto w = random_tensor({8, 24}, rng);
  Tape<double> tape;
  auto x = embedding(tape, ids, table);  // frozen table: no closure
  auto h = gelu(tape, linear(tape, x, w, Tensor<double>()));
  CHECK(tape.size() == 0);
  CHECK_FALSE(h.requires_grad());
  auto a = attention(tape, h, 2, prefix, prefix, Tensor<std::uint8_t>());
  CHECK(tape.size() == 1);  // the first op that sees the prefix
  CHECK(a.requires_grad());
  {
    NoGradGuard ng;
    auto a2 = attention(tape, h, 2, prefix, prefix, Tensor<std::uint8_t>());
    CHECK_FALSE(a2.requires_grad());
    {
      NoGradGuard nested;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());
  }
  CHECK(grad_enabled());
  CHECK(tape.size() == 1);
}

TEST_CASE("a Var used twice in one graph gets the sum of both uses' gradients (finite differences, exact 2x)") {
  // Gradients a tape that overwrote instead of accumulating, or ran a node's backward before all of its uses
  // had added theirs, would get wrong: x feeds gelu and an add, h = gelu(x) feeds a linear and an add, and
  // add(x, x) uses x twice in one op. The loss has a random tied embedding (a constant one would give zero
  // gradients, which every tape gets "right").
  Rng rng(7);
  auto x = Var<double>(random_tensor({2, 3}, rng), true, "x");
  const auto w = random_tensor({3, 3}, rng);
  const auto table = random_tensor({4, 3}, rng);
  const auto targets = Tensor<std::int32_t>::from_vector({1, 2}, {1, 3});
  const auto loss_of = [&](Tape<double>& tape, const Var<double>& z) {
    return cross_entropy(tape, reshape(tape, z, Shape{1, 2, 3}), table, targets, Reduction::SumPerSequenceMeanBatch);
  };
  const auto forward = [&](Tape<double>& tape) {
    auto h = gelu(tape, x);
    auto y = add(tape, linear(tape, h, w, Tensor<double>()), h);
    return loss_of(tape, add(tape, y, add(tape, x, x)));
  };
  {
    Tape<double> tape;
    tape.backward(forward(tape));
  }
  Tensor<double> xv = x.value();
  const auto numeric = numeric_gradient(
      [&] {
        NoGradGuard ng;
        Tape<double> t;
        return forward(t).value().item();
      },
      xv);
  const GradcheckResult r = compare_gradients(x.grad(), numeric);
  double largest = 0;
  for (double g : numeric.to_vector()) largest = std::max(largest, std::abs(g));
  INFO("max relative error ", r.max_rel_error, " at ", r.worst_index, "; largest |d loss / dx| ", largest);
  CHECK(largest > 0.1);  // a gradient of a size that a missing or overwritten use changes visibly
  CHECK(r.ok(1e-7));

  // add(x, x) alone: d loss / dx is exactly twice d loss / dz at z = x + x (z a leaf of the same value).
  x.clear_grad();
  std::vector<double> twice;
  for (double v : test::as_double(x.value())) twice.push_back(v + v);
  Var<double> z(Tensor<double>::from_vector({2, 3}, twice), true, "z");
  {
    Tape<double> tape;
    tape.backward(loss_of(tape, add(tape, x, x)));
  }
  {
    Tape<double> tape;
    tape.backward(loss_of(tape, z));
  }
  const auto dz = z.grad().to_vector(), dx = x.grad().to_vector();
  REQUIRE(dz.size() == dx.size());
  for (std::size_t i = 0; i < dz.size(); ++i) CHECK(dx[i] == 2 * dz[i]);
  CHECK(std::abs(dz[0]) > 0.01);
}

TEST_CASE("gradients accumulate across backward passes; zero_grad resets") {
  Rng rng(7);
  auto x = Var<double>(random_tensor({2, 3}, rng), true, "x");
  const auto table = random_tensor({4, 3}, rng);
  auto run = [&] {
    Tape<double> tape;
    auto loss = cross_entropy(tape, reshape(tape, gelu(tape, x), Shape{1, 2, 3}), table,
                              Tensor<std::int32_t>::from_vector({1, 2}, {0, 2}), Reduction::SumPerSequenceMeanBatch);
    tape.backward(loss);
  };
  run();
  const auto g1 = x.grad().to_vector();
  run();
  const auto g2 = x.grad().to_vector();
  for (std::size_t i = 0; i < g1.size(); ++i) {
    CHECK(g1[i] != 0.0);
    CHECK(g2[i] == 2 * g1[i]);  // g + g: exact
  }
  zero_grad(std::vector<Var<double>>{x});
  for (double v : x.grad().to_vector()) CHECK(v == 0.0);
}

// test::max_rel_diff, which most comparisons here and in the other areas go through, checked with the assertions
// those write: each must fail (doctest::should_fail turns the failure into a pass, and a pass into a failure).
TEST_CASE("test::max_rel_diff fails the calling test on sequences of different lengths (expected to fail)" *
          doctest::should_fail()) {
  // Unchecked, the first two elements alone would be compared, and pass.
  CHECK(test::max_rel_diff(std::vector<double>{1, 2}, std::vector<double>{1, 2, 3}) < 1e-12);
}

TEST_CASE("test::max_rel_diff fails the calling test on a NaN (expected to fail)" * doctest::should_fail()) {
  // std::max(m, NaN) keeps m: unchecked, the NaN would be dropped and this pass.
  CHECK(test::max_rel_diff(std::vector<float>{1, std::nanf("")}, std::vector<double>{1, 2}) == 0.0);
}

TEST_CASE("dropout is deterministic per rng, identity under no-grad, and differentiable") {
  Rng rng(8);
  auto x = Var<double>(random_tensor({4, 50}, rng), true);
  Rng r1(99), r2(99);
  Tape<double> t1, t2;
  auto y1 = dropout(t1, x, 0.3, r1);
  auto y2 = dropout(t2, x, 0.3, r2);
  CHECK(y1.value().to_vector() == y2.value().to_vector());
  {
    NoGradGuard ng;
    auto y3 = dropout(t1, x, 0.3, r1);
    CHECK(y3.same_node(x));
  }
  CHECK(error_of([&] { (void)dropout(t1, x, 1.0, r1); }).find("outside [0, 1)") != std::string::npos);
}

TEST_CASE("bad use of the tape throws clear errors") {
  Rng rng(9);
  auto x = Var<double>(random_tensor({2, 3}, rng), true, "x");
  Tape<double> tape;
  auto y = scale(tape, x, 2.0);
  CHECK(error_of([&] { tape.backward(y); }).find("needs a scalar loss, got shape (2, 3)") != std::string::npos);
  auto loss = cross_entropy(tape, reshape(tape, y, Shape{1, 2, 3}), Tensor<double>::full({4, 3}, 0.5),
                            Tensor<std::int32_t>::full({1, 2}, 1), Reduction::MeanPerToken);
  tape.backward(loss);
  CHECK(error_of([&] { tape.backward(loss); }).find("called twice") != std::string::npos);
  auto c = Var<double>(Tensor<double>::full({}, 1.0), false, "constant");
  Tape<double> t2;
  CHECK(error_of([&] { t2.backward(c); }).find("does not depend on any Var that requires grad") != std::string::npos);
  CHECK(error_of([&] { t2.backward(Var<double>()); }).find("undefined") != std::string::npos);
  CHECK(error_of([&] {
          (void)linear(t2, x, random_tensor({4, 5}, rng), Tensor<double>());
        }).find("linear") != std::string::npos);
  CHECK(error_of([] { Var<double> v(Tensor<double>(), true, "w"); }).find("undefined value") != std::string::npos);
}

// The device is a type: mixing devices or element types does not compile (no runtime device checks needed).
template <class X, class W, class = void>
struct can_linear : std::false_type {};
template <class X, class W>
struct can_linear<X, W,
                  std::void_t<decltype(linear(std::declval<Tape<double>&>(), std::declval<const X&>(),
                                              std::declval<const W&>(), std::declval<const Tensor<double>&>()))>>
    : std::true_type {};
static_assert(can_linear<Var<double>, Tensor<double>>::value, "frozen weight must be accepted");
static_assert(can_linear<Var<double>, Var<double>>::value, "trainable weight must be accepted");

TEST_CASE("a prefix table (P, 2*L*C) split into per-layer K/V by transpose01 + rows + reshape: gradcheck") {
  Rng rng(10);
  const std::int64_t P = 3, L = 2, NH = 2, HS = 3, C = NH * HS, B = 2, T = 4;
  auto table = Var<double>(random_tensor({P, 2 * L * C}, rng), true, "prefix_table");
  auto qkv = random_tensor({B, T, 3 * C}, rng);
  auto w = random_tensor({C, 5}, rng);
  auto labels = Tensor<std::int32_t>::full({B, T}, 1);
  auto f_loss = [&](Tape<double>& tape) {
    // Row p of the table holds ((2i + kv) * NH + h) * HS + e: view (P, 2L*NH, HS), swap to (2L*NH, P, HS).
    auto kv = transpose01(tape, reshape(tape, table, Shape{P, 2 * L * NH, HS}));
    Var<double> total;
    for (std::int64_t i = 0; i < L; ++i) {
      auto k = reshape(tape, rows(tape, kv, (2 * i) * NH, (2 * i + 1) * NH), Shape{1, NH, P, HS});
      auto v = reshape(tape, rows(tape, kv, (2 * i + 1) * NH, (2 * i + 2) * NH), Shape{1, NH, P, HS});
      auto a = attention(tape, qkv, NH, k, v, Tensor<std::uint8_t>());
      auto l = cross_entropy(tape, a, w.reshape({5, C}), labels, Reduction::SumPerSequenceMeanBatch);
      total = total.defined() ? add(tape, total, l) : l;
    }
    return total;
  };
  Tape<double> tape;
  tape.backward(f_loss(tape));
  // The layout itself: layer 1's value block, head 1, slot 2, element 0 is table[2][((2*1+1)*NH+1)*HS+0].
  {
    NoGradGuard ng;
    Tape<double> t;
    auto kv = transpose01(t, reshape(t, table, Shape{P, 2 * L * NH, HS}));
    CHECK(kv.value()(3 * NH + 1, 2, 0) == table.value()(2, ((2 * 1 + 1) * NH + 1) * HS + 0));
  }
  Tensor<double> tv = table.value();
  auto r = gradcheck(
      [&] {
        NoGradGuard ng;
        Tape<double> t;
        return f_loss(t).value().item();
      },
      tv, table.grad());
  CHECK(r.ok(1e-6));
}
