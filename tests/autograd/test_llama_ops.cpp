// SPDX-License-Identifier: MIT
// Tests of the Llama family's ops (rms_norm, rotary, swiglu, gqa_qkv, repeat_heads): forward against naive double
// references in float and double, backward (through the tape) against central finite differences in double,
// accumulation into existing gradients, the multi-threaded sizes, in-place use, and the error messages of bad
// arguments.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/autograd/llama_functions.hpp"
#include "prefixtune/models/llama_rope.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::dot;
using test::error_of;
using test::max_rel_diff;
using test::random_tensor;

namespace {

std::vector<double> ref_rms_norm(const std::vector<double>& x, const std::vector<double>& g, std::int64_t C,
                                 double eps) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r * C < x.size(); ++r) {
    double sq = 0;
    for (std::int64_t j = 0; j < C; ++j) sq += x[r * C + j] * x[r * C + j];
    const double s = 1.0 / std::sqrt(sq / double(C) + eps);
    for (std::int64_t j = 0; j < C; ++j) y[r * C + j] = x[r * C + j] * s * g[j];
  }
  return y;
}

// transformers' q * cos + rotate_half(q) * sin, head by head, from the angle table written out in double.
std::vector<double> ref_rotary(const std::vector<double>& x, const std::vector<double>& angles, std::int64_t N,
                               std::int64_t H, std::int64_t HD) {
  std::vector<double> y(x.size());
  const std::int64_t half = HD / 2;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < HD; ++i) {
        const std::size_t at = static_cast<std::size_t>((n * H + h) * HD);
        const double a = angles[static_cast<std::size_t>(n * half + i % half)];
        const double rotated = i < half ? -x[at + std::size_t(i + half)] : x[at + std::size_t(i - half)];
        y[at + std::size_t(i)] = x[at + std::size_t(i)] * std::cos(a) + rotated * std::sin(a);
      }
  return y;
}

// <w, y> as a scalar on the tape (y a Var, w a constant of y's shape).
Var<double> weighted_sum(Tape<double>& tape, const Var<double>& y, const Tensor<double>& w) {
  const std::int64_t n = y.value().numel();
  return matmul(tape, reshape(tape, y, Shape{1, n}), w.reshape({n, 1}));
}

double silu(double g) { return g / (1.0 + std::exp(-g)); }

// Shapes (rows, C): small, odd, and one past the thread threshold.
const std::int64_t kRowShapes[][2] = {{1, 1}, {3, 5}, {7, 64}, {300, 130}};

}  // namespace

TEST_CASE_TEMPLATE("rms_norm: forward against double, backward against finite differences", T, float, double) {
  Rng rng(3);
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  for (const auto& [rows, C] : kRowShapes) {
    const auto x = random_tensor<T>({rows, C}, rng, -2, 2), g = random_tensor<T>({C}, rng, 0.5, 1.5);
    Tensor<T> y({rows, C}), rstd({rows});
    rms_norm_forward(x, g, 1e-6, y, rstd);
    const auto want = ref_rms_norm(test::as_double(x), test::as_double(g), C, 1e-6);
    CHECK(max_rel_diff(test::as_double(y), want) < tol);
    Tensor<T> same = x.clone();  // in place
    rms_norm_forward(same, g, 1e-6, same, rstd);
    CHECK(max_rel_diff(same.to_vector(), y.to_vector()) == 0.0);
  }
  // Backward through the tape, in double, against central differences of sum(w * y).
  for (const auto& [rows, C] : {std::array<std::int64_t, 2>{2, 7}, std::array<std::int64_t, 2>{3, 16}}) {
    auto xv = random_tensor<double>({rows, C}, rng, -2, 2), gv = random_tensor<double>({C}, rng, 0.5, 1.5);
    const auto w = random_tensor<double>({rows, C}, rng);
    Var<double> x(xv, true), g(gv, true);
    Tape<double> tape;
    tape.backward(weighted_sum(tape, rms_norm(tape, x, g, 1e-5), w));
    auto f = [&] {
      Tensor<double> out({rows, C}), none;
      rms_norm_forward(xv, gv, 1e-5, out, none);
      return dot(w, out);
    };
    CHECK(gradcheck(f, xv, x.grad()).ok(1e-8));
    CHECK(gradcheck(f, gv, g.grad()).ok(1e-8));
    // A second backward into the same gradients adds (accumulation contract of every op).
    const auto first = x.grad().clone();
    Tape<double> t2;
    t2.backward(weighted_sum(t2, rms_norm(t2, x, g, 1e-5), w));
    CHECK(max_rel_diff(x.grad().to_vector(), [&] {
            auto v = first.to_vector();
            for (auto& e : v) e *= 2;
            return v;
          }()) < 1e-14);
  }
  Tensor<T> x({2, 4}), g({5}), y({2, 4}), none;
  CHECK(error_of([&] { rms_norm_forward(x, g, 1e-6, y, none); }).find("gamma shape (5) does not match x (2, 4)") !=
        std::string::npos);
}

TEST_CASE_TEMPLATE("rotary: transformers' rotate-half rotation, and its transpose as the gradient", T, float, double) {
  Rng rng(5);
  RopeConfig rc;
  rc.theta = 10000;
  for (const auto& [N, H, HD] : {std::array<std::int64_t, 3>{1, 1, 2}, std::array<std::int64_t, 3>{5, 3, 8},
                                 std::array<std::int64_t, 3>{70, 14, 64}}) {
    const auto inv = rope_inv_freq(rc, HD);
    std::vector<std::int64_t> pos(static_cast<std::size_t>(N));
    for (std::int64_t n = 0; n < N; ++n) pos[static_cast<std::size_t>(n)] = (n * 7) % 41;  // any positions
    Tensor<T> cos, sin;
    rope_tables(inv, pos, cos, sin);
    std::vector<double> angles;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < HD / 2; ++i)
        angles.push_back(double(T(pos[std::size_t(n)]) * T(inv[std::size_t(i)])));  // the angle in T, as rope_tables
    const auto x = random_tensor<T>({N, H * HD}, rng, -2, 2);
    Tensor<T> y(x.shape());
    rotary_forward(x, cos, sin, H, y);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    CHECK(max_rel_diff(test::as_double(y), ref_rotary(test::as_double(x), angles, N, H, HD)) < tol);
    // The gradient of <w, rotary(x)> is the inverse rotation of w: rotating y back gives x, up to cos^2 + sin^2 of
    // the tables (1 within T's precision).
    Tensor<T> back = Tensor<T>::zeros(x.shape());
    rotary_backward(y, cos, sin, H, back);
    CHECK(max_rel_diff(test::as_double(back), test::as_double(x)) < (std::is_same_v<T, float> ? 2e-7 : 1e-14));
  }
  // Through the tape in double against central differences (a (B, T, H * HD) input).
  const std::int64_t B = 2, TT = 3, H = 2, HD = 6;
  Tensor<double> cos, sin;
  rope_tables(rope_inv_freq(rc, HD), {0, 1, 2, 5, 6, 7}, cos, sin);
  auto xv = random_tensor<double>({B, TT, H * HD}, rng);
  const auto w = random_tensor<double>({B, TT, H * HD}, rng);
  Var<double> x(xv, true);
  Tape<double> tape;
  tape.backward(weighted_sum(tape, rotary(tape, x, cos, sin, H), w));
  auto f = [&] {
    Tensor<double> out(xv.shape());
    rotary_forward(xv, cos, sin, H, out);
    return dot(w, out);
  };
  CHECK(gradcheck(f, xv, x.grad()).ok(1e-9));
  Tensor<double> bad({3, 12}), out({3, 12});
  CHECK(error_of([&] { rotary_forward(bad, cos, sin, H, out); }).find("over the 6 tokens of the tables") !=
        std::string::npos);
}

TEST_CASE_TEMPLATE("swiglu: silu(gate) * up against double, both gradients against finite differences", T, float,
                   double) {
  Rng rng(9);
  for (const std::int64_t n : {1, 33, 5000}) {
    const auto gate = random_tensor<T>({n}, rng, -6, 6), up = random_tensor<T>({n}, rng, -2, 2);
    Tensor<T> y({n});
    swiglu_forward(gate, up, y);
    std::vector<double> want;
    for (std::int64_t i = 0; i < n; ++i) want.push_back(silu(double(gate.data()[i])) * double(up.data()[i]));
    CHECK(max_rel_diff(test::as_double(y), want) < (std::is_same_v<T, float> ? 1e-6 : 1e-14));
  }
  auto gv = random_tensor<double>({4, 9}, rng, -6, 6), uv = random_tensor<double>({4, 9}, rng, -2, 2);
  const auto w = random_tensor<double>({4, 9}, rng);
  Var<double> gate(gv, true), up(uv, true);
  Tape<double> tape;
  tape.backward(weighted_sum(tape, swiglu(tape, gate, up), w));
  auto f = [&] {
    Tensor<double> out(gv.shape());
    swiglu_forward(gv, uv, out);
    return dot(w, out);
  };
  CHECK(gradcheck(f, gv, gate.grad()).ok(1e-8));
  CHECK(gradcheck(f, uv, up.grad()).ok(1e-8));
  // A frozen up (a plain Tensor) gets no gradient; gate's is still right.
  Var<double> gate2(gv, true);
  Tape<double> t2;
  t2.backward(weighted_sum(t2, swiglu(t2, gate2, uv), w));
  CHECK(max_rel_diff(gate2.grad().to_vector(), gate.grad().to_vector()) < 1e-15);
  Tensor<double> a({3}), b({4}), o({3});
  CHECK(error_of([&] { swiglu_forward(a, b, o); }).find("must share one shape") != std::string::npos);
}

namespace {

// The grouped-query attention input written out in double: per token, q heads [normed] then rotated, k heads the
// same, v copied; with expand each K/V head repeated for its NH / KVH query heads.
std::vector<double> ref_gqa(const std::vector<double>& x, const std::vector<double>& angles, std::int64_t N,
                            std::int64_t NH, std::int64_t KVH, std::int64_t HD, const std::vector<double>& qn,
                            const std::vector<double>& kn, double eps, bool expand) {
  const std::int64_t W = (NH + 2 * KVH) * HD, reps = expand ? NH / KVH : 1, OW = (NH + 2 * KVH * reps) * HD;
  std::vector<double> out(static_cast<std::size_t>(N * OW));
  auto head = [&](std::int64_t n, std::int64_t h, const std::vector<double>& g, bool rotate) {
    std::vector<double> v(x.begin() + n * W + h * HD, x.begin() + n * W + (h + 1) * HD);
    if (!g.empty()) v = ref_rms_norm(v, g, HD, eps);
    if (!rotate) return v;
    std::vector<double> a(angles.begin() + n * (HD / 2), angles.begin() + (n + 1) * (HD / 2));
    return ref_rotary(v, a, 1, 1, HD);
  };
  for (std::int64_t n = 0; n < N; ++n) {
    double* o = out.data() + n * OW;
    for (std::int64_t h = 0; h < NH; ++h) {
      const auto v = head(n, h, qn, true);
      std::copy(v.begin(), v.end(), o + h * HD);
    }
    for (std::int64_t j = 0; j < KVH; ++j)
      for (std::int64_t r = 0; r < reps; ++r) {
        const auto k = head(n, NH + j, kn, true), v = head(n, NH + KVH + j, {}, false);
        std::copy(k.begin(), k.end(), o + (NH + j * reps + r) * HD);
        std::copy(v.begin(), v.end(), o + (NH + KVH * reps + j * reps + r) * HD);
      }
  }
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("gqa_qkv: per-head norm, rotation and K/V repetition against double; gradient by differences", T,
                   float, double) {
  Rng rng(13);
  RopeConfig rc;
  rc.theta = 10000;
  for (const auto& [N, NH, KVH, HD] :
       {std::array<std::int64_t, 4>{1, 1, 1, 2}, std::array<std::int64_t, 4>{5, 6, 2, 8},
        std::array<std::int64_t, 4>{4, 4, 1, 12}, std::array<std::int64_t, 4>{300, 14, 2, 64}}) {
    const auto inv = rope_inv_freq(rc, HD);
    std::vector<std::int64_t> pos;
    std::vector<double> angles;
    for (std::int64_t n = 0; n < N; ++n) pos.push_back((n * 5) % 37);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < HD / 2; ++i)
        angles.push_back(double(T(pos[std::size_t(n)]) * T(inv[std::size_t(i)])));
    Tensor<T> cos, sin;
    rope_tables(inv, pos, cos, sin);
    const auto x = random_tensor<T>({N, (NH + 2 * KVH) * HD}, rng, -2, 2);
    for (const bool norm : {false, true})
      for (const bool expand : {false, true}) {
        GqaHeads<T, Cpu> h{NH, KVH, HD, {}, {}, 1e-6};
        std::vector<double> qn, kn;
        if (norm) {
          h.q_norm = random_tensor<T>({HD}, rng, 0.5, 1.5);
          h.k_norm = random_tensor<T>({HD}, rng, 0.5, 1.5);
          qn = test::as_double(h.q_norm), kn = test::as_double(h.k_norm);
        }
        const std::int64_t kv = expand ? NH : KVH;
        Tensor<T> y({N, (NH + 2 * kv) * HD});
        gqa_qkv_forward(x, cos, sin, h, expand, y);
        const auto want = ref_gqa(test::as_double(x), angles, N, NH, KVH, HD, qn, kn, 1e-6, expand);
        CHECK(max_rel_diff(test::as_double(y), want) < (std::is_same_v<T, float> ? 2e-6 : 1e-13));
      }
  }
  // The gradient through the tape in double against central differences: GQA with norms, (B, T, W) input.
  const std::int64_t B = 2, TT = 3, NH = 4, KVH = 2, HD = 6;
  Tensor<double> cos, sin;
  rope_tables(rope_inv_freq(rc, HD), {3, 4, 5, 3, 4, 5}, cos, sin);
  for (const bool norm : {false, true}) {
    GqaHeads<double, Cpu> h{NH, KVH, HD, {}, {}, 1e-5};
    if (norm) h.q_norm = random_tensor<double>({HD}, rng, 0.5, 1.5), h.k_norm = random_tensor<double>({HD}, rng);
    auto xv = random_tensor<double>({B, TT, (NH + 2 * KVH) * HD}, rng);
    for (const bool expand : {true, false}) {
      const std::int64_t kv = expand ? NH : KVH;
      const auto w = random_tensor<double>({B, TT, (NH + 2 * kv) * HD}, rng);
      Var<double> x(xv, true);
      Tape<double> tape;
      tape.backward(weighted_sum(tape, gqa_qkv(tape, x, cos, sin, h, expand), w));
      auto f = [&] {
        Tensor<double> out(w.shape());
        gqa_qkv_forward(xv, cos, sin, h, expand, out);
        return dot(w, out);
      };
      CHECK(gradcheck(f, xv, x.grad()).ok(1e-8));
    }
  }
  GqaHeads<double, Cpu> bad{6, 4, 8, {}, {}, 0};
  Tensor<double> x({2, 128}), out({2, 144});
  CHECK(error_of([&] { gqa_qkv_forward(x, cos, sin, bad, true, out); }).find("4 K/V heads must divide 6") !=
        std::string::npos);
  GqaHeads<double, Cpu> ok{4, 2, 6, {}, {}, 0};
  Tensor<double> x2({6, 40}), o2({6, 72});
  CHECK(error_of([&] { gqa_qkv_forward(x2, cos, sin, ok, true, o2); }).find("must be (..., (4 + 2 * 2) heads * 6)") !=
        std::string::npos);
}

TEST_CASE("repeat_heads: every head repeated in place; the gradient sums the copies") {
  Rng rng(17);
  auto xv = random_tensor<double>({2, 3, 4, 5}, rng);
  Var<double> x(xv, true);
  Tape<double> tape;
  const auto y = repeat_heads(tape, x, 4);
  REQUIRE(y.shape() == Shape({2, 12, 4, 5}));
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 12; ++h)
      for (std::int64_t p = 0; p < 4; ++p)
        for (std::int64_t e = 0; e < 5; ++e)
          CHECK(y.value().data()[((b * 12 + h) * 4 + p) * 5 + e] == xv.data()[((b * 3 + h / 4) * 4 + p) * 5 + e]);
  const auto w = random_tensor<double>({2, 12, 4, 5}, rng);
  tape.backward(weighted_sum(tape, y, w));
  auto f = [&] {
    Tensor<double> out({2, 12, 4, 5});
    repeat_heads_forward(xv, 4, out);
    return dot(w, out);
  };
  const auto r = gradcheck(f, xv, x.grad());
  CHECK_MESSAGE(r.ok(1e-8), r.max_rel_error);
  Tape<double> t1;
  CHECK(repeat_heads(t1, x, 1).value().data() == xv.data());  // group 1: x itself
}
