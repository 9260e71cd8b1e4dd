// SPDX-License-Identifier: MIT
// Tests of the point-wise ops (accumulate, add, scale, gelu, gelu_exact, tanh, dropout) and the last-axis softmax:
// naive double references, central finite differences, accumulation, aliasing, the dropout mask contract, extreme
// softmax inputs and the error messages of bad arguments.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/softmax.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::as_double;
using test::dot;
using test::error_of;
using test::max_rel_diff;
using test::random_tensor;
using test::to_double;
using test::tolerance;

namespace {

// Shapes of assorted ranks and odd sizes; the last is large enough for the multi-threaded path.
const Shape kShapes[] = {Shape{1},           Shape{7},    Shape{3, 5},    Shape{2, 3, 17},
                         Shape{2, 1, 3, 33}, Shape{0, 4}, Shape{256, 129}};

double ref_gelu(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}

// Plain softmax of each row of `cols` values, no max subtraction (only for moderate inputs).
std::vector<double> ref_softmax(const std::vector<double>& x, std::int64_t cols) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r * cols < x.size(); ++r) {
    double s = 0;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(x[r * cols + j]);
    for (std::int64_t j = 0; j < cols; ++j) y[r * cols + j] = std::exp(x[r * cols + j]) / s;
  }
  return y;
}

// Draw of element i for dropout, written from the contract: word i % 4 of philox(seed, i / 4 + offset, 0).
float ref_dropout_draw(std::uint64_t seed, std::uint64_t offset, std::int64_t i) {
  std::uint32_t w[4];
  detail::philox4x32(seed, static_cast<std::uint64_t>(i / 4) + offset, 0, w);
  return detail::u32_to_unit_float(w[i % 4]);
}

using UnaryForward = std::function<void(const Tensor<double>& x, Tensor<double>& y)>;
// Backward given dout, the forward input x and output y, accumulating into dx.
using UnaryBackward = std::function<void(const Tensor<double>& dout, const Tensor<double>& x, const Tensor<double>& y,
                                         Tensor<double>& dx)>;

// Checks a unary op's backward against central differences of L(x) = sum(w * f(x)), that it accumulates into a
// non-zero dx, and that an undefined dx is accepted and skipped.
void check_unary_backward(const Shape& s, const UnaryForward& fwd, const UnaryBackward& bwd, Rng& rng, double lo = -2.0,
                          double hi = 2.0) {
  auto x = random_tensor<double>(s, rng, lo, hi), w = random_tensor<double>(s, rng);
  auto y = Tensor<double>::zeros(s);
  auto loss = [&] {
    fwd(x, y);
    return dot(w, y);
  };
  fwd(x, y);
  auto dx = Tensor<double>::zeros(s);
  bwd(w, x, y, dx);
  const GradcheckResult r = gradcheck(loss, x, dx, 1e-6);
  INFO("shape ", s, " max_rel_error ", r.max_rel_error);
  CHECK(r.ok(1e-6));

  fwd(x, y);
  auto acc = random_tensor<double>(s, rng);
  const auto before = acc.to_vector();
  bwd(w, x, y, acc);
  for (std::int64_t i = 0; i < s.numel(); ++i) CHECK(acc.data()[i] == doctest::Approx(before[i] + dx.data()[i]));

  Tensor<double> none;
  CHECK(error_of([&] { bwd(w, x, y, none); }) == "");
  CHECK(!none.defined());
}

}  // namespace

// ---- accumulate, add, scale -----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("accumulate adds alpha * src and is a no-op on an undefined dst", T, float, double) {
  Rng rng(1);
  for (const Shape& s : kShapes) {
    auto dst = random_tensor<T>(s, rng), src = random_tensor<T>(s, rng);
    const auto d0 = as_double(dst), s0 = as_double(src);
    accumulate(dst, src, T(-0.75));
    std::vector<double> ref(d0.size());
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = d0[i] - 0.75 * s0[i];
    CHECK(max_rel_diff(dst.to_vector(), ref) < tolerance<T>());
    accumulate(dst, dst);  // aliasing: doubles dst
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] *= 2;
    CHECK(max_rel_diff(dst.to_vector(), ref) < tolerance<T>());
  }
  Tensor<T> none;
  accumulate(none, Tensor<T>::zeros({3}));
  CHECK(!none.defined());
  auto dst = Tensor<T>::zeros({2, 3});
  const std::string msg = error_of([&] { accumulate(dst, Tensor<T>::zeros({3, 2})); });
  CHECK(msg.find("accumulate: src shape (3, 2) does not match dst (2, 3)") != std::string::npos);
  CHECK(error_of([&] { accumulate(dst, Tensor<T>()); }).find("accumulate: src is undefined") != std::string::npos);
}

TEST_CASE_TEMPLATE("add_forward matches a + b, also when out aliases an input", T, float, double) {
  Rng rng(2);
  for (const Shape& s : kShapes) {
    auto a = random_tensor<T>(s, rng), b = random_tensor<T>(s, rng), out = Tensor<T>::full(s, T(7));
    const auto av = as_double(a), bv = as_double(b);
    std::vector<double> ref(av.size());
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = av[i] + bv[i];
    add_forward(a, b, out);
    CHECK(max_rel_diff(out.to_vector(), ref) < tolerance<T>());
    auto a2 = a.clone(), b2 = b.clone();
    add_forward(a2, b, a2);  // out is a
    add_forward(a, b2, b2);  // out is b
    CHECK(a2.to_vector() == out.to_vector());
    CHECK(b2.to_vector() == out.to_vector());
  }
}

TEST_CASE("add_backward accumulates dout into both gradients, skipping an undefined one") {
  Rng rng(3);
  const Shape s{3, 7};
  auto a = random_tensor<double>(s, rng), b = random_tensor<double>(s, rng), w = random_tensor<double>(s, rng);
  auto out = Tensor<double>::zeros(s);
  auto loss = [&] {
    add_forward(a, b, out);
    return dot(w, out);
  };
  auto da = Tensor<double>::zeros(s), db = Tensor<double>::zeros(s);
  add_backward(w, da, db);
  CHECK(gradcheck(loss, a, da).ok(1e-6));
  CHECK(gradcheck(loss, b, db).ok(1e-6));
  add_backward(w, da, db);  // accumulates: now 2 * w
  for (std::int64_t i = 0; i < s.numel(); ++i) CHECK(db.data()[i] == doctest::Approx(2 * w.data()[i]));
  // "Frozen" b: no gradient wanted. da still gets its share and nothing is allocated for b.
  auto da2 = Tensor<double>::zeros(s);
  Tensor<double> frozen;
  add_backward(w, da2, frozen);
  CHECK(!frozen.defined());
  CHECK(da2.to_vector() == w.to_vector());
  Tensor<double> none;
  add_backward(w, none, frozen);  // nothing wanted at all
}

TEST_CASE_TEMPLATE("scale_forward / scale_backward multiply by s", T, float, double) {
  Rng rng(4);
  for (const Shape& s : kShapes) {
    auto x = random_tensor<T>(s, rng), out = Tensor<T>::zeros(s);
    scale_forward(x, T(-2.5), out);
    std::vector<double> ref = as_double(x);
    for (auto& v : ref) v *= -2.5;
    CHECK(max_rel_diff(out.to_vector(), ref) < tolerance<T>());
    scale_forward(x, T(-2.5), x);  // in place
    CHECK(x.to_vector() == out.to_vector());
  }
  check_unary_backward(
      Shape{4, 5}, [](const Tensor<double>& x, Tensor<double>& y) { scale_forward(x, 0.3, y); },
      [](const Tensor<double>& g, const Tensor<double>&, const Tensor<double>&, Tensor<double>& dx) {
        scale_backward(g, 0.3, dx);
      },
      rng);
}

TEST_CASE("scalar arguments of another arithmetic type convert to the tensor's element type") {
  auto x = Tensor<float>::full({2, 3}, 2.0f), out = Tensor<float>::zeros({2, 3});
  scale_forward(x, 0.25, out);  // double literal, float tensors
  CHECK(out(1, 2) == 0.5f);
  accumulate(out, x, 2);  // int literal
  CHECK(out(0, 0) == 4.5f);
  dropout_forward(x, 0.0, 1, 0, out);
  CHECK(out.to_vector() == x.to_vector());
}

// ---- gelu, tanh -------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("gelu_forward matches GPT-2's gelu_new, tanh_forward matches std::tanh", T, float, double) {
  Rng rng(5);
  for (const Shape& s : kShapes) {
    auto x = random_tensor<T>(s, rng, -6.0, 6.0), g = Tensor<T>::zeros(s), t = Tensor<T>::zeros(s);
    gelu_forward(x, g);
    tanh_forward(x, t);
    std::vector<double> rg = as_double(x), rt = as_double(x);
    for (auto& v : rg) v = ref_gelu(v);
    for (auto& v : rt) v = std::tanh(v);
    CHECK(max_rel_diff(g.to_vector(), rg) < tolerance<T>());
    CHECK(max_rel_diff(t.to_vector(), rt) < tolerance<T>());
    gelu_forward(x, x);  // in place
    CHECK(x.to_vector() == g.to_vector());
  }
  // Relative accuracy also where gelu is tiny (x << 0): the tanh form would cancel there in float.
  auto xs = random_tensor<T>({4096}, rng, -6.0, 0.0), gs = Tensor<T>::zeros({4096});
  gelu_forward(xs, gs);
  double worst = 0;
  for (std::int64_t i = 0; i < xs.numel(); ++i) {
    // 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), in long double: the tanh form cancels even in double here.
    const long double x = xs(i), u = std::sqrt(2.0L / 3.14159265358979323846L) * (x + 0.044715L * x * x * x);
    const double ref = double(x / (1.0L + std::exp(-2.0L * u)));
    worst = std::max(worst, std::abs(double(gs(i)) - ref) / std::abs(ref));
  }
  CHECK(worst < (std::is_same_v<T, float> ? 1e-5 : 1e-12));
  // Known values and the large-|x| limits (gelu -> x for x >> 0, -> 0 for x << 0; no NaN).
  auto x = Tensor<T>::from_vector({5}, {T(0), T(1), T(-1), T(30), T(-30)}), y = Tensor<T>::zeros({5});
  gelu_forward(x, y);
  CHECK(y(0) == T(0));
  CHECK(double(y(1)) == doctest::Approx(0.8411919906082768).epsilon(1e-6));
  CHECK(double(y(2)) == doctest::Approx(-0.15880800939172324).epsilon(1e-6));
  CHECK(y(3) == T(30));
  CHECK(std::abs(double(y(4))) < 1e-30);
}

TEST_CASE("gelu_backward and tanh_backward match central differences and accumulate") {
  Rng rng(6);
  for (const Shape& s : {Shape{5}, Shape{3, 4}, Shape{2, 3, 5}}) {
    check_unary_backward(
        s, [](const Tensor<double>& x, Tensor<double>& y) { gelu_forward(x, y); },
        [](const Tensor<double>& g, const Tensor<double>& x, const Tensor<double>&, Tensor<double>& dx) {
          gelu_backward(g, x, dx);
        },
        rng, -4.0, 4.0);
    check_unary_backward(
        s, [](const Tensor<double>& x, Tensor<double>& y) { tanh_forward(x, y); },
        [](const Tensor<double>& g, const Tensor<double>&, const Tensor<double>& y, Tensor<double>& dx) {
          tanh_backward(g, y, dx);
        },
        rng, -3.0, 3.0);
  }
}

TEST_CASE("gelu_backward in float agrees with the double derivative") {
  Rng rng(7);
  auto xs = random_tensor<float>({4, 33}, rng, -5.0, 5.0), gs = random_tensor<float>({4, 33}, rng);
  auto xd = to_double(xs), gd = to_double(gs);
  auto dxs = Tensor<float>::zeros(xs.shape());
  auto dxd = Tensor<double>::zeros(xs.shape());
  gelu_backward(gs, xs, dxs);
  gelu_backward(gd, xd, dxd);
  CHECK(max_rel_diff(dxs.to_vector(), dxd.to_vector()) < 1e-5);
}

TEST_CASE_TEMPLATE("gelu_exact (BART's erf GELU) matches x Phi(x) in long double; its backward, differences", T, float,
                   double) {
  Rng rng(9);
  auto x = random_tensor<T>({4097}, rng, -9.0, 6.0), y = Tensor<T>::zeros({4097});
  gelu_exact_forward(x, y);
  double worst = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const long double v = x(i), ref = 0.5L * v * std::erfc(-v / std::sqrt(2.0L));
    worst = std::max(worst, double(std::abs((static_cast<long double>(y(i)) - ref) / ref)));
  }
  CHECK(worst < (std::is_same_v<T, float> ? 1e-5 : 1e-13));  // relative, also far left where erf would cancel
  auto k = Tensor<T>::from_vector({3}, {T(0), T(1), T(-1)}), ky = Tensor<T>::zeros({3});
  gelu_exact_forward(k, ky);
  CHECK(ky(0) == T(0));
  CHECK(double(ky(1)) == doctest::Approx(0.8413447460685429).epsilon(1e-6));  // torch.nn.functional.gelu(1.)
  CHECK(double(ky(2)) == doctest::Approx(-0.15865525393145707).epsilon(1e-6));
  if constexpr (std::is_same_v<T, double>)
    for (const Shape& s : {Shape{5}, Shape{3, 4}})
      check_unary_backward(
          s, [](const Tensor<double>& in, Tensor<double>& out) { gelu_exact_forward(in, out); },
          [](const Tensor<double>& g, const Tensor<double>& in, const Tensor<double>&, Tensor<double>& dx) {
            gelu_exact_backward(g, in, dx);
          },
          rng, -5.0, 5.0);
}

// ---- dropout ----------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("dropout_forward follows the Philox mask contract exactly", T, float, double) {
  Rng rng(8);
  const T p = T(0.3);
  for (const Shape& s : kShapes) {
    auto x = random_tensor<T>(s, rng, 0.5, 1.5), out = Tensor<T>::zeros(s);
    dropout_forward(x, p, 42, 5, out);
    const auto xv = as_double(x);
    std::vector<double> ref(xv.size());
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const bool keep = T(ref_dropout_draw(42, 5, std::int64_t(i))) >= p;
      ref[i] = keep ? xv[i] / (1.0 - double(p)) : 0.0;
      CHECK((out.data()[i] != T(0)) == keep);
    }
    CHECK(max_rel_diff(out.to_vector(), ref) < tolerance<T>());
  }
}

TEST_CASE_TEMPLATE("dropout masks: same seed and offset repeat, other seeds and offsets differ", T, float, double) {
  const Shape s{37, 29};
  const auto x = Tensor<T>::full(s, T(1));
  auto run = [&](std::uint64_t seed, std::uint64_t offset) {
    auto out = Tensor<T>::zeros(s);
    dropout_forward(x, T(0.5), seed, offset, out);
    return out.to_vector();
  };
  const auto a = run(7, 0);
  CHECK(a == run(7, 0));
  auto differing = [&](const std::vector<T>& b) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.size(); ++i) n += (a[i] == T(0)) != (b[i] == T(0));
    return double(n) / double(a.size());
  };
  CHECK(differing(run(8, 0)) > 0.4);  // independent masks differ in about half the places
  CHECK(differing(run(7, 1)) > 0.4);
  // The offset counts blocks of 4 elements: offset 2 gives element i the draw offset 0 gives element i + 8.
  const auto shifted = run(7, 2);
  for (std::size_t i = 0; i + 8 < a.size(); ++i) CHECK(shifted[i] == a[i + 8]);
  // In place gives the same result.
  auto inplace = x.clone();
  dropout_forward(inplace, T(0.5), 7, 0, inplace);
  CHECK(inplace.to_vector() == a);
}

TEST_CASE("dropout keeps a fraction 1 - p of a large tensor and preserves the mean") {
  const Shape s{1 << 20};
  const auto x = Tensor<float>::full(s, 1.0f);
  auto out = Tensor<float>::zeros(s);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    dropout_forward(x, p, 1234, 0, out);
    double kept = 0, sum = 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      kept += out.data()[i] != 0.0f;
      sum += out.data()[i];
    }
    INFO("p = ", p);
    CHECK(std::abs(kept / double(s.numel()) - (1.0 - p)) < 0.003);  // ~10 standard deviations at p = 0.5
    CHECK(std::abs(sum / double(s.numel()) - 1.0) < 0.03);
  }
}

TEST_CASE("dropout masks agree between float and double for a representable p") {
  const Shape s{5, 41};
  auto xf = Tensor<float>::full(s, 1.0f), of = Tensor<float>::zeros(s);
  auto xd = Tensor<double>::full(s, 1.0), od = Tensor<double>::zeros(s);
  dropout_forward(xf, 0.25f, 99, 3, of);
  dropout_forward(xd, 0.25, 99, 3, od);
  for (std::int64_t i = 0; i < s.numel(); ++i) CHECK((of.data()[i] == 0.0f) == (od.data()[i] == 0.0));
}

TEST_CASE_TEMPLATE("dropout_backward recomputes the forward mask and accumulates", T, float, double) {
  Rng rng(9);
  const Shape s{6, 19};
  const T p = T(0.4);
  auto x = random_tensor<T>(s, rng, 0.5, 1.5), out = Tensor<T>::zeros(s);
  dropout_forward(x, p, 11, 3, out);
  auto g = random_tensor<T>(s, rng, 0.5, 1.5), dx0 = random_tensor<T>(s, rng), dx = dx0.clone();
  dropout_backward(g, p, 11, 3, dx);
  const T scale = T(1) / (T(1) - p);
  for (std::int64_t i = 0; i < s.numel(); ++i) {
    const bool kept = out.data()[i] != T(0);
    const double expect = double(dx0.data()[i]) + (kept ? double(g.data()[i]) * double(scale) : 0.0);
    CHECK(double(dx.data()[i]) == doctest::Approx(expect).epsilon(tolerance<T>()));
  }
  Tensor<T> none;
  dropout_backward(g, p, 11, 3, none);
  CHECK(!none.defined());
}

TEST_CASE("dropout_backward matches central differences for a fixed mask") {
  Rng rng(10);
  check_unary_backward(
      Shape{3, 11}, [](const Tensor<double>& x, Tensor<double>& y) { dropout_forward(x, 0.35, 77, 1, y); },
      [](const Tensor<double>& g, const Tensor<double>&, const Tensor<double>&, Tensor<double>& dx) {
        dropout_backward(g, 0.35, 77, 1, dx);
      },
      rng);
}

TEST_CASE_TEMPLATE("dropout with p == 0 is the identity; p outside [0, 1) is an Error", T, float, double) {
  Rng rng(11);
  auto x = random_tensor<T>({4, 9}, rng), out = Tensor<T>::zeros({4, 9});
  dropout_forward(x, T(0), 5, 0, out);
  CHECK(out.to_vector() == x.to_vector());
  auto dx = Tensor<T>::full({4, 9}, T(1));
  dropout_backward(x, T(0), 5, 0, dx);
  for (std::int64_t i = 0; i < x.numel(); ++i) CHECK(dx.data()[i] == T(1) + x.data()[i]);
  for (T p : {T(-0.1), T(1), T(1.5), std::numeric_limits<T>::quiet_NaN()}) {
    INFO("p = ", p);
    CHECK(error_of([&] { dropout_forward(x, p, 5, 0, out); }).find("dropout_forward: dropout probability p=") !=
          std::string::npos);
    CHECK(error_of([&] { dropout_backward(x, p, 5, 0, dx); }).find("is not in [0, 1)") != std::string::npos);
  }
}

// ---- softmax ----------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("softmax_forward matches exp(x) / sum exp(x) along the last axis", T, float, double) {
  Rng rng(12);
  for (const Shape& s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 17}, Shape{2, 1, 3, 33}, Shape{4, 138},
                         Shape{0, 4}, Shape{3, 0}, Shape{130, 138}}) {
    auto x = random_tensor<T>(s, rng, -4.0, 4.0), y = Tensor<T>::full(s, T(9));
    softmax_forward(x, y);
    CHECK(max_rel_diff(y.to_vector(), ref_softmax(as_double(x), s[-1])) < tolerance<T>());
    softmax_forward(x, x);  // in place
    CHECK(x.to_vector() == y.to_vector());
  }
}

TEST_CASE_TEMPLATE("softmax stays finite for large logits and gives zeros for an all -inf row", T, float, double) {
  const T inf = std::numeric_limits<T>::infinity();
  auto x = Tensor<T>::from_vector({5, 3}, {T(1000), T(999), T(998),       // huge: exp would overflow unshifted
                                           T(-1000), T(-1001), T(-1002),  // tiny: exp would underflow to 0/0
                                           T(1000), T(-1000), T(0),       // one-hot in the limit
                                           -inf, -inf, -inf,              // fully masked row
                                           -inf, T(2), T(2)});            // partly masked row
  auto y = Tensor<T>::zeros({5, 3});
  softmax_forward(x, y);
  const auto shifted = ref_softmax({0.0, -1.0, -2.0}, 3);
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 3; ++j) CHECK(double(y(r, j)) == doctest::Approx(shifted[j]).epsilon(tolerance<T>()));
  CHECK(y(2, 0) == T(1));
  CHECK(y(2, 1) == T(0));
  CHECK(y(3, 0) == T(0));
  CHECK(y(3, 1) == T(0));
  CHECK(y(3, 2) == T(0));
  CHECK(y(4, 0) == T(0));
  CHECK(double(y(4, 1)) == doctest::Approx(0.5));
  for (T v : y.to_vector()) CHECK(std::isfinite(double(v)));
  // The backward through the masked rows is finite too (zero for the fully masked one).
  Rng rng(13);
  auto g = random_tensor<T>({5, 3}, rng), dx = Tensor<T>::zeros({5, 3});
  softmax_backward(g, y, dx);
  for (T v : dx.to_vector()) CHECK(std::isfinite(double(v)));
  for (int j = 0; j < 3; ++j) CHECK(dx(3, j) == T(0));
  CHECK(dx(4, 0) == T(0));
}

TEST_CASE("softmax_backward matches central differences and accumulates") {
  Rng rng(14);
  for (const Shape& s : {Shape{6}, Shape{3, 5}, Shape{2, 2, 7}, Shape{2, 1, 2, 4}}) {
    check_unary_backward(
        s, [](const Tensor<double>& x, Tensor<double>& y) { softmax_forward(x, y); },
        [](const Tensor<double>& g, const Tensor<double>&, const Tensor<double>& y, Tensor<double>& dx) {
          softmax_backward(g, y, dx);
        },
        rng, -3.0, 3.0);
  }
}

TEST_CASE("softmax_backward in float agrees with double") {
  Rng rng(15);
  auto x = random_tensor<float>({8, 138}, rng, -5.0, 5.0), y = Tensor<float>::zeros({8, 138});
  auto g = random_tensor<float>({8, 138}, rng), dx = Tensor<float>::zeros({8, 138});
  softmax_forward(x, y);
  softmax_backward(g, y, dx);
  auto yd = to_double(y), gd = to_double(g);
  auto dxd = Tensor<double>::zeros(y.shape());
  softmax_backward(gd, yd, dxd);
  CHECK(max_rel_diff(dx.to_vector(), dxd.to_vector()) < 1e-6);
}

// ---- argument errors --------------------------------------------------------------------------------------------

TEST_CASE("shape mismatches and undefined tensors throw Errors that name the op and the shapes") {
  using Tf = Tensor<float>;
  Tf a = Tf::zeros({2, 3}), b = Tf::zeros({2, 4}), c = Tf::zeros({2, 3}), none;
  auto has = [](const std::string& msg, const char* what) {
    INFO(msg);
    CHECK(msg.find(what) != std::string::npos);
  };
  has(error_of([&] { add_forward(a, b, c); }), "add_forward: b shape (2, 4) does not match a (2, 3)");
  has(error_of([&] { add_forward(a, c, b); }), "add_forward: out shape (2, 4) does not match a (2, 3)");
  has(error_of([&] { add_forward(a, c, none); }), "add_forward: out is undefined");
  has(error_of([&] { add_backward(a, c, b); }), "add_backward: db shape (2, 4) does not match dout (2, 3)");
  has(error_of([&] { add_backward(none, c, c); }), "add_backward: dout is undefined");
  has(error_of([&] { scale_forward(a, 2.0f, b); }), "scale_forward: out shape (2, 4) does not match x (2, 3)");
  has(error_of([&] { scale_backward(a, 2.0f, b); }), "scale_backward: dx shape (2, 4) does not match dout (2, 3)");
  has(error_of([&] { gelu_forward(a, b); }), "gelu_forward: out shape (2, 4)");
  has(error_of([&] { gelu_backward(a, b, c); }), "gelu_backward: x shape (2, 4) does not match dout (2, 3)");
  has(error_of([&] { gelu_backward(a, none, c); }), "gelu_backward: x is undefined");
  has(error_of([&] { tanh_forward(none, a); }), "tanh_forward: x is undefined");
  has(error_of([&] { tanh_backward(a, c, b); }), "tanh_backward: dx shape (2, 4) does not match dout (2, 3)");
  has(error_of([&] { dropout_forward(a, 0.5f, 1, 0, b); }), "dropout_forward: out shape (2, 4) does not match x");
  has(error_of([&] { dropout_backward(a, 0.5f, 1, 0, b); }), "dropout_backward: dx shape (2, 4)");
  has(error_of([&] { softmax_forward(a, b); }), "softmax_forward: out shape (2, 4) does not match x (2, 3)");
  has(error_of([&] { softmax_backward(a, b, c); }), "softmax_backward: y shape (2, 4) does not match dout (2, 3)");
  has(error_of([&] { softmax_backward(a, c, b); }), "softmax_backward: dx shape (2, 4) does not match dout (2, 3)");
  Tf scalar = Tf::zeros({}), scalar_out = Tf::zeros({});
  has(error_of([&] { softmax_forward(scalar, scalar_out); }), "softmax_forward: x must have rank >= 1");
  // The message also says where it was thrown.
  has(error_of([&] { gelu_forward(a, b); }), "[in gelu_forward]");
}
