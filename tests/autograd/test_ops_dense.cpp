// SPDX-License-Identifier: MIT
// Tests of the dense ops (linear, matmul, layer_norm, embedding): forward against naive double loops, backward
// against central finite differences, frozen (undefined) gradients, accumulation, and shape / id errors.
#include <doctest/doctest.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/ops/embedding.hpp"
#include "prefixtune/ops/layer_norm.hpp"
#include "prefixtune/ops/linear.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::as_double;
using test::dot;
using test::error_of;
using test::max_rel_diff;
using test::random_tensor;
using test::tolerance;

namespace {

using Ids = Tensor<std::int32_t, Cpu>;

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <class T>
Tensor<T> cast_t(const Tensor<double>& t) {
  auto v = t.to_vector();
  return Tensor<T>::from_vector(t.shape(), std::vector<T>(v.begin(), v.end()));
}

/// Checks an analytic gradient of f against central differences w.r.t. x (double tensors).
void check_grad(const std::function<double()>& f, Tensor<double>& x, const Tensor<double>& analytic,
                const std::string& what) {
  const GradcheckResult r = gradcheck(f, x, analytic);
  INFO(what, ": max_rel_error=", r.max_rel_error, " at ", r.worst_index);
  CHECK(r.ok(1e-6));
}

/// The elements of t plus c (what a backward pass accumulates onto a gradient prefilled with c).
std::vector<double> shifted(const Tensor<double>& t, double c) {
  auto v = t.to_vector();
  for (auto& e : v) e += c;
  return v;
}

template <class T>
bool same(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

// ---------------------------------------------------------------------------------------------------- linear

std::vector<double> ref_linear(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                               std::int64_t rows, std::int64_t cin, std::int64_t cout) {
  std::vector<double> out(rows * cout);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t o = 0; o < cout; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (std::int64_t i = 0; i < cin; ++i) s += x[r * cin + i] * w[i * cout + o];
      out[r * cout + o] = s;
    }
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("linear_forward matches a naive double loop (with and without bias)", T, float, double) {
  Rng rng(11);
  const std::vector<std::pair<Shape, std::int64_t>> cases = {
      {Shape{5, 7}, 3}, {Shape{2, 3, 17}, 33}, {Shape{1, 1}, 1}, {Shape{2, 2, 3, 9}, 130}, {Shape{13}, 6}};
  for (const auto& c : cases)
    for (bool bias : {true, false}) {
      const Shape xs = c.first;
      const std::int64_t cout = c.second, cin = xs[-1], rows = xs.numel() / cin;
      auto x = random_tensor<T>(xs, rng), w = random_tensor<T>({cin, cout}, rng);
      auto b = bias ? random_tensor<T>({cout}, rng) : Tensor<T>();
      auto out = Tensor<T>::full(xs.with(-1, cout), std::numeric_limits<T>::quiet_NaN());
      linear_forward(x, w, b, out);
      const auto ref =
          ref_linear(as_double(x), as_double(w), bias ? as_double(b) : std::vector<double>{}, rows, cin, cout);
      INFO("x", xs, " cout=", cout, " bias=", bias);
      CHECK(max_rel_diff(out.to_vector(), ref) < tolerance<T>());
    }
}

TEST_CASE("linear_backward matches finite differences for x, w and b") {
  Rng rng(12);
  auto x = random_tensor<double>({2, 3, 5}, rng), w = random_tensor<double>({5, 4}, rng),
       b = random_tensor<double>({4}, rng);
  auto r = random_tensor<double>({2, 3, 4}, rng);  // loss = sum(out * r), so dout = r
  auto out = Tensor<double>::empty({2, 3, 4});
  auto f = [&] {
    linear_forward(x, w, b, out);
    return dot(out, r);
  };
  auto dx = Tensor<double>::zeros(x.shape()), dw = Tensor<double>::zeros(w.shape()), db = Tensor<double>::zeros({4});
  linear_backward(r, x, w, dx, dw, db);
  check_grad(f, x, dx, "dx");
  check_grad(f, w, dw, "dw");
  check_grad(f, b, db, "db");
}

TEST_CASE("linear_backward in float agrees with double; frozen weight computes dx only; grads accumulate") {
  Rng rng(13);
  auto x = random_tensor<double>({4, 6, 37}, rng), w = random_tensor<double>({37, 29}, rng),
       r = random_tensor<double>({4, 6, 29}, rng);
  auto dx = Tensor<double>::zeros(x.shape()), dw = Tensor<double>::zeros(w.shape()), db = Tensor<double>::zeros({29});
  linear_backward(r, x, w, dx, dw, db);

  auto xf = cast_t<float>(x), wf = cast_t<float>(w), rf = cast_t<float>(r);
  auto dxf = Tensor<float>::zeros(x.shape()), dwf = Tensor<float>::zeros(w.shape()), dbf = Tensor<float>::zeros({29});
  linear_backward(rf, xf, wf, dxf, dwf, dbf);
  CHECK(max_rel_diff(dxf.to_vector(), dx.to_vector()) < 1e-5);
  CHECK(max_rel_diff(dwf.to_vector(), dw.to_vector()) < 1e-5);
  CHECK(max_rel_diff(dbf.to_vector(), db.to_vector()) < 1e-5);

  // Frozen weight and no bias gradient: dx is bit-identical, inputs untouched.
  const auto x0 = x.clone(), w0 = w.clone(), r0 = r.clone();
  auto dx_frozen = Tensor<double>::zeros(x.shape());
  Tensor<double> none_w, none_b;
  linear_backward(r, x, w, dx_frozen, none_w, none_b);
  CHECK(same(dx_frozen, dx));
  CHECK(!none_w.defined());
  CHECK(!none_b.defined());
  CHECK((same(x, x0) && same(w, w0) && same(r, r0)));
  // Weight gradient only.
  auto dw_only = Tensor<double>::zeros(w.shape());
  Tensor<double> none_x;
  linear_backward(r, x, w, none_x, dw_only, none_b);
  CHECK(same(dw_only, dw));

  // Accumulation: backward adds into non-zero gradients.
  auto dx2 = Tensor<double>::full(x.shape(), 0.5), dw2 = Tensor<double>::full(w.shape(), -0.25);
  auto db2 = Tensor<double>::full({29}, 2.0);
  linear_backward(r, x, w, dx2, dw2, db2);
  CHECK(max_rel_diff(dx2.to_vector(), shifted(dx, 0.5)) < 1e-14);
  CHECK(max_rel_diff(dw2.to_vector(), shifted(dw, -0.25)) < 1e-14);
  CHECK(max_rel_diff(db2.to_vector(), shifted(db, 2.0)) < 1e-14);
}

TEST_CASE("linear ops reject mismatched shapes and overlapping outputs") {
  auto x = Tensor<float>::zeros({2, 5}), w = Tensor<float>::zeros({4, 3}), b = Tensor<float>::zeros({3});
  auto out = Tensor<float>::zeros({2, 3});
  CHECK(has(error_of([&] { linear_forward(x, w, b, out); }),
            "linear_forward: x (2, 5) last dim 5 does not match w (4, 3) in-features 4"));
  auto x4 = Tensor<float>::zeros({2, 4}), b4 = Tensor<float>::zeros({4});
  CHECK(has(error_of([&] { linear_forward(x4, w, b4, out); }),
            "linear_forward: b shape (4) does not match w (4, 3) out-features 3"));
  auto out_bad = Tensor<float>::zeros({2, 4});
  CHECK(has(error_of([&] { linear_forward(x4, w, b, out_bad); }), "out shape (2, 4) should be (2, 3)"));
  auto w1 = Tensor<float>::zeros({12});
  CHECK(has(error_of([&] { linear_forward(x4, w1, b, out); }), "w must be 2-D (Cin, Cout), got (12)"));
  CHECK(has(error_of([&] { linear_forward(Tensor<float>(), w, b, out); }), "must be defined"));
  auto sq = Tensor<float>::zeros({4, 4}), x_io = Tensor<float>::zeros({3, 4});
  CHECK(has(error_of([&] { linear_forward(x_io, sq, Tensor<float>(), x_io); }), "must not overlap"));

  auto dout = Tensor<float>::zeros({2, 3}), dx = Tensor<float>::zeros({2, 4}), dw = Tensor<float>::zeros({4, 3});
  auto db = Tensor<float>::zeros({3});
  CHECK(error_of([&] { linear_backward(dout, x4, w, dx, dw, db); }).empty());
  auto dout_bad = Tensor<float>::zeros({2, 4});
  CHECK(has(error_of([&] { linear_backward(dout_bad, x4, w, dx, dw, db); }), "dout shape (2, 4) should be (2, 3)"));
  auto dw_bad = Tensor<float>::zeros({3, 4});
  CHECK(
      has(error_of([&] { linear_backward(dout, x4, w, dx, dw_bad, db); }), "dw shape (3, 4) does not match w (4, 3)"));
  auto dx_bad = Tensor<float>::zeros({4, 2});
  CHECK(
      has(error_of([&] { linear_backward(dout, x4, w, dx_bad, dw, db); }), "dx shape (4, 2) does not match x (2, 4)"));
  CHECK(has(error_of([&] { linear_backward(dout, x4, w, dx, dw, b4); }), "db shape (4) does not match"));
  CHECK(has(error_of([&] { linear_backward(dout, x, w, dx, dw, db); }), "x (2, 5) last dim 5 does not match"));
}

// ---------------------------------------------------------------------------------------------------- matmul

namespace {

struct MatmulCase {
  Shape a, b;
};

/// out = a b per batch entry, with a stride of 0 for an unbatched operand.
std::vector<double> ref_matmul(const MatmulCase& c, const std::vector<double>& a, const std::vector<double>& b) {
  const std::int64_t m = c.a[-2], k = c.a[-1], n = c.b[-1];
  const std::int64_t batch = c.a.rank() > 2 ? c.a.numel() / (m * k) : c.b.numel() / (k * n);
  const std::int64_t sa = c.a.rank() > 2 ? m * k : 0, sb = c.b.rank() > 2 ? k * n : 0;
  std::vector<double> out(batch * m * n, 0.0);
  for (std::int64_t i = 0; i < batch; ++i)
    test::naive_gemm(false, false, m, n, k, 1.0, a, k, b, n, 0.0, out, n, i * sa, i * sb, i * m * n);
  return out;
}

Shape matmul_out_shape(const MatmulCase& c) {
  const Shape& s = c.a.rank() >= c.b.rank() ? c.a : c.b;
  return s.with(-2, c.a[-2]).with(-1, c.b[-1]);
}

const std::vector<MatmulCase>& matmul_cases() {
  static const std::vector<MatmulCase> cases = {
      {{4, 5}, {5, 3}},    {{3, 4, 5}, {3, 5, 2}},       {{3, 4, 5}, {5, 2}},
      {{4, 5}, {3, 5, 2}}, {{2, 3, 4, 5}, {2, 3, 5, 6}}, {{2, 3, 4, 5}, {5, 6}},
      {{1, 1}, {1, 7}}};
  return cases;
}

}  // namespace

TEST_CASE_TEMPLATE("matmul_forward matches a naive loop for plain, batched and broadcast operands", T, float, double) {
  Rng rng(21);
  for (const auto& c : matmul_cases()) {
    auto a = random_tensor<T>(c.a, rng), b = random_tensor<T>(c.b, rng);
    auto out = Tensor<T>::full(matmul_out_shape(c), std::numeric_limits<T>::quiet_NaN());
    matmul_forward(a, b, out);
    INFO("a", c.a, " b", c.b);
    CHECK(max_rel_diff(out.to_vector(), ref_matmul(c, as_double(a), as_double(b))) < tolerance<T>());
  }
}

TEST_CASE("matmul_backward matches finite differences (an unbatched operand's gradient sums the batch)") {
  Rng rng(22);
  for (const auto& c : matmul_cases()) {
    auto a = random_tensor<double>(c.a, rng), b = random_tensor<double>(c.b, rng);
    auto r = random_tensor<double>(matmul_out_shape(c), rng);
    auto out = Tensor<double>::empty(r.shape());
    auto f = [&] {
      matmul_forward(a, b, out);
      return dot(out, r);
    };
    auto da = Tensor<double>::zeros(c.a), db = Tensor<double>::zeros(c.b);
    matmul_backward(r, a, b, da, db);
    INFO("a", c.a, " b", c.b);
    check_grad(f, a, da, "da");
    check_grad(f, b, db, "db");
    // Accumulation and skipping: da alone, added onto 1.
    auto da1 = Tensor<double>::full(c.a, 1.0);
    Tensor<double> none;
    matmul_backward(r, a, b, da1, none);
    CHECK(max_rel_diff(da1.to_vector(), shifted(da, 1.0)) < 1e-14);
  }
}

TEST_CASE("matmul ops reject shapes that do not multiply") {
  auto a = Tensor<float>::zeros({2, 4, 5}), b = Tensor<float>::zeros({2, 6, 3}), out = Tensor<float>::zeros({2, 4, 3});
  CHECK(has(error_of([&] { matmul_forward(a, b, out); }),
            "matmul_forward: a (2, 4, 5) and b (2, 6, 3) do not multiply: a's last dim 5 != b's rows 6"));
  auto b3 = Tensor<float>::zeros({3, 5, 3});
  CHECK(has(error_of([&] { matmul_forward(a, b3, out); }), "batch dimensions of a (2, 4, 5) and b (3, 5, 3) differ"));
  auto b2 = Tensor<float>::zeros({5, 3}), out_bad = Tensor<float>::zeros({4, 3});
  CHECK(has(error_of([&] { matmul_forward(a, b2, out_bad); }), "out shape (4, 3) should be (2, 4, 3)"));
  auto v = Tensor<float>::zeros({5});
  CHECK(has(error_of([&] { matmul_forward(a, v, out); }), "must have rank 2 to 4"));
  auto da_bad = Tensor<float>::zeros({4, 5}), db = Tensor<float>::zeros({5, 3});
  CHECK(has(error_of([&] { matmul_backward(out, a, b2, da_bad, db); }), "da shape (4, 5) does not match a (2, 4, 5)"));
  CHECK(has(error_of([&] { matmul_backward(out_bad, a, b2, da_bad, db); }), "dout shape (4, 3) should be (2, 4, 3)"));
}

// ------------------------------------------------------------------------------------------------ layer_norm

namespace {

/// Reference layer norm in double; fills per-row mean and rstd.
std::vector<double> ref_layer_norm(const std::vector<double>& x, const std::vector<double>& g,
                                   const std::vector<double>& b, std::int64_t C, double eps, std::vector<double>& mean,
                                   std::vector<double>& rstd) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / C;
  std::vector<double> out(x.size());
  mean.assign(rows, 0.0);
  rstd.assign(rows, 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (std::int64_t j = 0; j < C; ++j) m += x[r * C + j];
    m /= C;
    for (std::int64_t j = 0; j < C; ++j) v += (x[r * C + j] - m) * (x[r * C + j] - m);
    v /= C;
    const double s = 1.0 / std::sqrt(v + eps);
    for (std::int64_t j = 0; j < C; ++j) out[r * C + j] = (x[r * C + j] - m) * s * g[j] + b[j];
    mean[r] = m;
    rstd[r] = s;
  }
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("layer_norm_forward matches a naive double loop; saves mean and rstd; works in place", T, float,
                   double) {
  Rng rng(31);
  for (const Shape& xs : {Shape{3, 7}, Shape{2, 3, 5}, Shape{1, 1}, Shape{4, 300}, Shape{2, 1, 2, 33}}) {
    const std::int64_t C = xs[-1], rows = xs.numel() / C;
    auto x = random_tensor<T>(xs, rng, 2.0, 4.0);  // a mean far from 0 exposes one-pass variance cancellation
    auto g = random_tensor<T>({C}, rng), b = random_tensor<T>({C}, rng);
    auto out = Tensor<T>::empty(xs), mean = Tensor<T>::empty({rows}), rstd = Tensor<T>::empty({rows});
    layer_norm_forward(x, g, b, 1e-5, out, mean, rstd);
    std::vector<double> rm, rs;
    const auto ref = ref_layer_norm(as_double(x), as_double(g), as_double(b), C, 1e-5, rm, rs);
    INFO("x", xs);
    CHECK(max_rel_diff(out.to_vector(), ref) < tolerance<T>());
    CHECK(max_rel_diff(mean.to_vector(), rm) < tolerance<T>());
    CHECK(max_rel_diff(rstd.to_vector(), rs) < tolerance<T>());  // C == 1: var = 0, rstd = 1/sqrt(eps)
    // Without saved statistics, and in place (out is x).
    Tensor<T> none_m, none_s;
    auto y = x.clone();
    layer_norm_forward(y, g, b, 1e-5, y, none_m, none_s);
    CHECK(same(y, out));
  }
}

TEST_CASE("layer_norm_forward uses the given eps and maps a constant row to beta") {
  Rng rng(32);
  const std::int64_t C = 6;
  auto x = Tensor<double>::from_vector({2, C}, {1, 1.001, 0.999, 1.002, 0.998, 1, 5, 5, 5, 5, 5, 5});
  auto g = random_tensor<double>({C}, rng), b = random_tensor<double>({C}, rng), out = Tensor<double>::empty({2, C});
  Tensor<double> none;
  for (double eps : {1e-5, 1e-1, 0.0}) {
    std::vector<double> rm, rs;
    const auto ref = ref_layer_norm(as_double(x), as_double(g), as_double(b), C, eps, rm, rs);
    if (eps == 0.0) {  // the constant row divides 0 by 0 in the reference too; compare the first row only
      auto out0 = out.rows(0, 1);
      layer_norm_forward(x.rows(0, 1), g, b, eps, out0, none, none);
    } else {
      layer_norm_forward(x, g, b, eps, out, none, none);
      for (std::int64_t j = 0; j < C; ++j) CHECK(out(1, j) == doctest::Approx(b(j)).epsilon(1e-15));
    }
    std::vector<double> got = out.rows(0, 1).to_vector(), want(ref.begin(), ref.begin() + C);
    INFO("eps=", eps);
    CHECK(max_rel_diff(got, want) < 1e-10);
  }
}

TEST_CASE("layer_norm_backward matches finite differences for x, gamma and beta (saved and recomputed stats)") {
  Rng rng(33);
  for (const Shape& xs : {Shape{2, 3, 6}, Shape{3, 1}, Shape{2, 260}}) {
    const std::int64_t C = xs[-1], rows = xs.numel() / C;
    const double eps = 1e-5;
    auto x = random_tensor<double>(xs, rng, -2.0, 3.0), g = random_tensor<double>({C}, rng, 0.5, 1.5),
         b = random_tensor<double>({C}, rng);
    auto r = random_tensor<double>(xs, rng);
    auto out = Tensor<double>::empty(xs), mean = Tensor<double>::empty({rows}), rstd = Tensor<double>::empty({rows});
    Tensor<double> none;
    auto f = [&] {
      layer_norm_forward(x, g, b, eps, out, none, none);
      return dot(out, r);
    };
    layer_norm_forward(x, g, b, eps, out, mean, rstd);
    auto dx = Tensor<double>::zeros(xs), dg = Tensor<double>::zeros({C}), db = Tensor<double>::zeros({C});
    layer_norm_backward(r, x, g, mean, rstd, dx, dg, db);
    INFO("x", xs);
    if (C <= 8) check_grad(f, x, dx, "dx");  // keep finite differences small
    check_grad(f, g, dg, "dgamma");
    check_grad(f, b, db, "dbeta");
    // Recomputed statistics give the same gradients.
    auto dx2 = Tensor<double>::zeros(xs), dg2 = Tensor<double>::zeros({C}), db2 = Tensor<double>::zeros({C});
    layer_norm_backward(r, x, g, none, none, dx2, dg2, db2, eps);
    CHECK(max_rel_diff(dx2.to_vector(), dx.to_vector()) < 1e-12);
    CHECK(max_rel_diff(dg2.to_vector(), dg.to_vector()) < 1e-12);
    CHECK(max_rel_diff(db2.to_vector(), db.to_vector()) < 1e-12);
  }
}

TEST_CASE("layer_norm_backward: float agrees with double, frozen gamma/beta skip work, gradients accumulate") {
  Rng rng(34);
  const Shape xs{4, 5, 200};
  auto x = random_tensor<double>(xs, rng, -1.0, 2.0), g = random_tensor<double>({200}, rng),
       b = random_tensor<double>({200}, rng);
  auto r = random_tensor<double>(xs, rng);
  auto out = Tensor<double>::empty(xs), mean = Tensor<double>::empty({20}), rstd = Tensor<double>::empty({20});
  layer_norm_forward(x, g, b, 1e-5, out, mean, rstd);
  auto dx = Tensor<double>::zeros(xs), dg = Tensor<double>::zeros({200}), db = Tensor<double>::zeros({200});
  layer_norm_backward(r, x, g, mean, rstd, dx, dg, db);

  auto xf = cast_t<float>(x), gf = cast_t<float>(g), bf = cast_t<float>(b), rf = cast_t<float>(r);
  auto outf = Tensor<float>::empty(xs), meanf = Tensor<float>::empty({20}), rstdf = Tensor<float>::empty({20});
  layer_norm_forward(xf, gf, bf, 1e-5, outf, meanf, rstdf);
  auto dxf = Tensor<float>::zeros(xs), dgf = Tensor<float>::zeros({200}), dbf = Tensor<float>::zeros({200});
  layer_norm_backward(rf, xf, gf, meanf, rstdf, dxf, dgf, dbf);
  CHECK(max_rel_diff(dxf.to_vector(), dx.to_vector()) < 2e-5);
  CHECK(max_rel_diff(dgf.to_vector(), dg.to_vector()) < 2e-5);
  CHECK(max_rel_diff(dbf.to_vector(), db.to_vector()) < 2e-5);

  // Frozen gamma and beta: dx bit-identical, the undefined gradients stay undefined.
  Tensor<double> none_g, none_b;
  auto dx_frozen = Tensor<double>::zeros(xs);
  layer_norm_backward(r, x, g, mean, rstd, dx_frozen, none_g, none_b);
  CHECK(same(dx_frozen, dx));
  CHECK((!none_g.defined() && !none_b.defined()));
  // Only dbeta.
  Tensor<double> none_x;
  auto db_only = Tensor<double>::zeros({200});
  layer_norm_backward(r, x, g, mean, rstd, none_x, none_g, db_only);
  CHECK(same(db_only, db));

  // Accumulation.
  auto dx2 = Tensor<double>::full(xs, 1.0), dg2 = Tensor<double>::full({200}, -2.0),
       db2 = Tensor<double>::full({200}, 3.0);
  layer_norm_backward(r, x, g, mean, rstd, dx2, dg2, db2);
  CHECK(max_rel_diff(dx2.to_vector(), shifted(dx, 1.0)) < 1e-14);
  CHECK(max_rel_diff(dg2.to_vector(), shifted(dg, -2.0)) < 1e-14);
  CHECK(max_rel_diff(db2.to_vector(), shifted(db, 3.0)) < 1e-14);
}

TEST_CASE("layer_norm ops reject mismatched shapes") {
  auto x = Tensor<float>::zeros({2, 3, 4}), g = Tensor<float>::full({4}, 1.0f), b = Tensor<float>::zeros({4});
  auto out = Tensor<float>::zeros({2, 3, 4}), mean = Tensor<float>::zeros({6}), rstd = Tensor<float>::zeros({6});
  CHECK(error_of([&] { layer_norm_forward(x, g, b, 1e-5, out, mean, rstd); }).empty());
  auto g5 = Tensor<float>::zeros({5});
  CHECK(has(error_of([&] { layer_norm_forward(x, g5, b, 1e-5, out, mean, rstd); }),
            "layer_norm_forward: gamma shape (5) does not match x (2, 3, 4) last dim 4"));
  CHECK(has(error_of([&] { layer_norm_forward(x, g, g5, 1e-5, out, mean, rstd); }),
            "layer_norm_forward: beta shape (5) does not match x (2, 3, 4) last dim 4"));
  auto out_bad = Tensor<float>::zeros({6, 4});
  CHECK(has(error_of([&] { layer_norm_forward(x, g, b, 1e-5, out_bad, mean, rstd); }),
            "out shape (6, 4) does not match x (2, 3, 4)"));
  auto mean_bad = Tensor<float>::zeros({2, 3});
  CHECK(has(error_of([&] { layer_norm_forward(x, g, b, 1e-5, out, mean_bad, rstd); }),
            "mean shape (2, 3) should be (6) for x (2, 3, 4)"));
  Tensor<float> none;
  CHECK(has(error_of([&] { layer_norm_forward(x, g, b, 1e-5, out, mean, none); }), "both defined or both undefined"));
  CHECK(has(error_of([&] { layer_norm_forward(x, g, b, -1.0, out, mean, rstd); }), "eps must be >= 0"));
  auto x0 = Tensor<float>::zeros({3, 0}), g0 = Tensor<float>::zeros({0});
  CHECK(has(error_of([&] { layer_norm_forward(x0, g0, g0, 1e-5, x0, none, none); }), "last dim >= 1"));

  auto dx = Tensor<float>::zeros({2, 3, 4}), dg = Tensor<float>::zeros({4}), db = Tensor<float>::zeros({4});
  CHECK(error_of([&] { layer_norm_backward(out, x, g, mean, rstd, dx, dg, db); }).empty());
  CHECK(has(error_of([&] { layer_norm_backward(out_bad, x, g, mean, rstd, dx, dg, db); }),
            "dout shape (6, 4) does not match x (2, 3, 4)"));
  CHECK(has(error_of([&] { layer_norm_backward(out, x, g5, mean, rstd, dx, dg, db); }),
            "layer_norm_backward: gamma shape (5) does not match x (2, 3, 4) last dim 4"));
  CHECK(has(error_of([&] { layer_norm_backward(out, x, g, mean, rstd, dx, g5, db); }),
            "dgamma shape (5) does not match gamma (4)"));
  CHECK(has(error_of([&] { layer_norm_backward(out, x, g, mean, rstd, dx, dg, g5); }),
            "dbeta shape (5) does not match gamma (4)"));
  CHECK(has(error_of([&] { layer_norm_backward(out, x, g, mean, rstd, out_bad, dg, db); }),
            "dx shape (6, 4) does not match x (2, 3, 4)"));
  CHECK(has(error_of([&] { layer_norm_backward(out, x, g, mean_bad, rstd, dx, dg, db); }), "mean shape (2, 3)"));
}

// ------------------------------------------------------------------------------------------------- embedding

TEST_CASE_TEMPLATE("embedding_forward gathers table rows for ids of any rank", T, float, double) {
  Rng rng(41);
  const std::int64_t V = 11;
  for (std::int64_t C : {7, 300}) {
    auto table = random_tensor<T>({V, C}, rng);
    for (const Shape& is : {Shape{2, 5}, Shape{6}, Shape{}, Shape{2, 2, 3}}) {
      std::vector<std::int32_t> idv(static_cast<std::size_t>(is.numel()));
      for (auto& id : idv) id = static_cast<std::int32_t>(rng.below(V));
      auto ids = Ids::from_vector(is, idv);
      auto out = Tensor<T>::full(detail::embedding_out_shape(is, C), std::numeric_limits<T>::quiet_NaN());
      embedding_forward(ids, table, out);
      INFO("ids", is, " C=", C);
      CHECK(out.rank() == is.rank() + 1);
      auto got = out.to_vector(), tv = table.to_vector();
      bool ok = true;
      for (std::size_t i = 0; i < idv.size(); ++i)
        for (std::int64_t j = 0; j < C; ++j) ok = ok && got[i * C + j] == tv[idv[i] * C + j];
      CHECK(ok);
    }
  }
}

TEST_CASE("embedding ops name the first out-of-range id, its position and V, and write nothing") {
  const std::int64_t V = 50257;
  auto table = Tensor<float>::zeros({V, 2});
  std::vector<std::int32_t> idv(20, 7);
  idv[17] = 50300;
  idv[19] = -3;
  auto ids = Ids::from_vector({2, 10}, idv);
  auto out = Tensor<float>::full({2, 10, 2}, 42.0f);
  CHECK(has(error_of([&] { embedding_forward(ids, table, out); }),
            "embedding_forward: token id 50300 at position 17 is out of range for a table of 50257 rows"));
  CHECK(out.to_vector() == std::vector<float>(40, 42.0f));
  auto neg = Ids::from_vector({3}, {-1, 2, 3});
  auto out3 = Tensor<float>::full({3, 2}, 42.0f);
  CHECK(has(error_of([&] { embedding_forward(neg, table, out3); }),
            "token id -1 at position 0 is out of range for a table of 50257 rows"));
  CHECK(out3.to_vector() == std::vector<float>(6, 42.0f));
  auto edge = Ids::from_vector({2}, {50256, 50257});
  auto out2 = Tensor<float>::full({2, 2}, 42.0f);
  CHECK(has(error_of([&] { embedding_forward(edge, table, out2); }), "token id 50257 at position 1"));

  auto dtable = Tensor<float>::zeros({V, 2}), dout = Tensor<float>::full({2, 10, 2}, 1.0f);
  CHECK(has(error_of([&] { embedding_backward(dout, ids, dtable); }),
            "embedding_backward: token id 50300 at position 17 is out of range for a table of 50257 rows"));
  bool untouched = true;
  for (float v : dtable.to_vector()) untouched = untouched && v == 0.0f;
  CHECK(untouched);
}

TEST_CASE("embedding ops reject mismatched shapes") {
  auto table = Tensor<float>::zeros({5, 3});
  auto ids = Ids::from_vector({2, 2}, {0, 1, 2, 3});
  auto out_bad = Tensor<float>::zeros({2, 2, 4});
  CHECK(has(error_of([&] { embedding_forward(ids, table, out_bad); }),
            "embedding_forward: out shape (2, 2, 4) should be (2, 2, 3) for ids (2, 2) and table (5, 3)"));
  auto flat = Tensor<float>::zeros({15}), out = Tensor<float>::zeros({2, 2, 3});
  CHECK(has(error_of([&] { embedding_forward(ids, flat, out); }), "table must be 2-D (V, C), got (15)"));
  auto ids4 = Ids::zeros({1, 1, 1, 1});
  CHECK(has(error_of([&] { embedding_forward(ids4, table, out); }), "ids (1, 1, 1, 1) must be defined with rank <= 3"));
  auto dtable = Tensor<float>::zeros({5, 3}), dout_bad = Tensor<float>::zeros({4, 3});
  CHECK(has(error_of([&] { embedding_backward(dout_bad, ids, dtable); }),
            "embedding_backward: dout shape (4, 3) should be (2, 2, 3) for ids (2, 2) and dtable (5, 3)"));
  auto dtable_c = Tensor<float>::zeros({5, 4}), dout = Tensor<float>::zeros({2, 2, 3});
  CHECK(has(error_of([&] { embedding_backward(dout, ids, dtable_c); }), "should be (2, 2, 4)"));
}

TEST_CASE("embedding_backward scatter-adds repeated ids (finite differences, naive loop, accumulation)") {
  Rng rng(42);
  {  // finite differences on a small table
    const std::int64_t V = 6, C = 5;
    auto table = random_tensor<double>({V, C}, rng);
    auto ids = Ids::from_vector({2, 4}, {3, 3, 0, 5, 3, 1, 0, 3});
    auto r = random_tensor<double>({2, 4, C}, rng), out = Tensor<double>::empty({2, 4, C});
    auto f = [&] {
      embedding_forward(ids, table, out);
      return dot(out, r);
    };
    auto dtable = Tensor<double>::zeros({V, C});
    embedding_backward(r, ids, dtable);
    check_grad(f, table, dtable, "dtable");
    for (std::int64_t j = 0; j < C; ++j) CHECK(dtable(2, j) == 0.0);  // id 2 never appears
  }
  {  // many repeated ids over several column blocks, large enough to run threaded; accumulates onto 0.5
    const std::int64_t V = 9, C = 300, n = 240;
    std::vector<std::int32_t> idv(n);
    for (auto& id : idv) id = static_cast<std::int32_t>(rng.below(V));
    auto ids = Ids::from_vector({4, 60}, idv);
    auto dout = random_tensor<float>({4, 60, C}, rng);
    auto dtable = Tensor<float>::full({V, C}, 0.5f);
    embedding_backward(dout, ids, dtable);
    std::vector<double> ref(V * C, 0.5);
    const auto dov = as_double(dout);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < C; ++j) ref[idv[i] * C + j] += dov[i * C + j];
    CHECK(max_rel_diff(dtable.to_vector(), ref) < 1e-5);
  }
  {  // a frozen table: an undefined dtable is skipped
    auto ids = Ids::from_vector({2}, {0, 1});
    auto dout = Tensor<float>::zeros({2, 3});
    Tensor<float> none;
    CHECK(error_of([&] { embedding_backward(dout, ids, none); }).empty());
    CHECK(!none.defined());
  }
}
