// SPDX-License-Identifier: MIT
// Tests of core/: Shape, Tensor views and copies, Storage sharing, Rng determinism and moments, Error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"

using namespace prefixtune;

namespace {
// The message of the Error thrown by f, or "" if none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("Shape basics, strides and printing") {
  Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s[0] == 2);
  CHECK(s[-1] == 4);
  CHECK(s.stride(0) == 12);
  CHECK(s.stride(1) == 4);
  CHECK(s.stride(2) == 1);
  CHECK(s.to_string() == "(2, 3, 4)");
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{0, 5}.numel() == 0);
  CHECK(s == Shape{2, 3, 4});
  CHECK(s != Shape{2, 3});
  CHECK(s.with(1, 7) == Shape{2, 7, 4});
}

TEST_CASE("Shape rejects bad dimensions with a clear Error") {
  CHECK(error_of([] { Shape s{1, 2, 3, 4, 5}; }).find("at most 4") != std::string::npos);
  CHECK(error_of([] { Shape s{2, -1}; }).find("negative dimension -1") != std::string::npos);
  const std::int64_t big = std::int64_t{1} << 40;
  CHECK(error_of([&] { Shape s{big, big}; }).find("overflows") != std::string::npos);
  CHECK(error_of([] { (void)Shape({2, 3})[2]; }).find("out of range for shape (2, 3)") != std::string::npos);
}

TEST_CASE("Tensor creation, fill, from_vector and element access") {
  auto t = Tensor<float>::zeros({2, 3});
  CHECK(t.defined());
  CHECK(t.numel() == 6);
  for (float v : t.to_vector()) CHECK(v == 0.0f);
  t.fill(2.5f);
  CHECK(t(1, 2) == 2.5f);
  auto u = Tensor<double>::from_vector({2, 2}, {1, 2, 3, 4});
  CHECK(u(0, 1) == 2);
  CHECK(u(1, 0) == 3);
  u(1, 1) = 9;
  CHECK(u.to_vector()[3] == 9);
  CHECK(Tensor<int>::full({3}, 7).to_vector() == std::vector<int>{7, 7, 7});
  CHECK_FALSE(Tensor<float>().defined());
  CHECK(Tensor<float>::from_vector({1}, {4.0f}).item() == 4.0f);
  CHECK(reinterpret_cast<std::uintptr_t>(Tensor<float>::empty({17}).data()) % Cpu::kAlignment == 0);
}

TEST_CASE("Tensor views share storage: reshape, rows, select") {
  auto t = Tensor<float>::from_vector({3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  auto r = t.reshape({2, 6});
  CHECK(r.shares_storage_with(t));
  CHECK(r.shape() == Shape{2, 6});
  CHECK(r(1, 0) == 6);
  auto inferred = t.reshape({-1, 2});
  CHECK(inferred.shape() == Shape{6, 2});
  auto rows = t.rows(1, 3);
  CHECK(rows.shape() == Shape{2, 4});
  CHECK(rows(0, 0) == 4);
  CHECK(rows.shares_storage_with(t));
  rows(1, 3) = 100;
  CHECK(t(2, 3) == 100);  // writes through a view land in the parent
  auto row = t.select(1);
  CHECK(row.shape() == Shape{4});
  CHECK(row(2) == 6);
  auto c = t.clone();
  CHECK_FALSE(c.shares_storage_with(t));
  c(0, 0) = -1;
  CHECK(t(0, 0) == 0);
  auto empty_rows = t.rows(2, 2);
  CHECK(empty_rows.numel() == 0);
}

TEST_CASE("Tensor copies between tensors and the storage lifetime of views") {
  Tensor<float> view;
  {
    auto owner = Tensor<float>::full({4, 2}, 3.0f);
    view = owner.rows(2, 4);
    CHECK(owner.storage().use_count() == 2);
  }
  // The view keeps the storage alive after the owner is gone.
  CHECK(view(1, 1) == 3.0f);
  auto dst = Tensor<float>::zeros({2, 2});
  dst.copy_from(view);
  CHECK(dst(1, 0) == 3.0f);
  auto moved = view.to<Cpu>();
  CHECK(moved.to_vector() == view.to_vector());
}

TEST_CASE("Tensor bad shapes and indices throw Error naming the shapes") {
  auto t = Tensor<float>::zeros({2, 3});
  CHECK(error_of([&] {
          (void)t.reshape({4, 2});
        }).find("cannot reshape (2, 3) (6 elements) to (4, 2)") != std::string::npos);
  CHECK(error_of([&] { (void)t.reshape({-1, 4}); }).find("cannot infer") != std::string::npos);
  CHECK(error_of([&] { (void)t.reshape({-1, -1}); }).find("at most one") != std::string::npos);
  CHECK(error_of([&] { (void)t.rows(1, 3); }).find("out of bounds for shape (2, 3)") != std::string::npos);
  CHECK(error_of([&] { (void)t.select(2); }).find("out of bounds") != std::string::npos);
  CHECK(error_of([&] { (void)t(2, 0); }).find("index 2 out of bounds for dimension 0") != std::string::npos);
  CHECK(error_of([&] { (void)t(0); }).find("1 indices for a tensor of shape (2, 3)") != std::string::npos);
  auto other = Tensor<float>::zeros({3, 2});
  CHECK(error_of([&] { t.copy_from(other); }).find("source shape (3, 2) differs from destination (2, 3)") !=
        std::string::npos);
  CHECK(error_of([] {
          (void)Tensor<float>::from_vector({2, 2}, {1, 2, 3});
        }).find("3 values for shape (2, 2)") != std::string::npos);
  CHECK(error_of([] { (void)Tensor<float>().reshape({1}); }).find("undefined tensor") != std::string::npos);
  CHECK(error_of([] { (void)Tensor<float>::zeros({2}).item(); }).find("exactly one element") != std::string::npos);
  const std::int64_t huge = std::int64_t{1} << 45;
  CHECK(error_of([&] { Tensor<float> big({huge, 4}); }).find("too large") != std::string::npos);
}

TEST_CASE("Rng is deterministic, seed- and stream-dependent, and resumable") {
  Rng a(42), b(42), c(43), d(42, 1);
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next_u32();
    CHECK(x == b.next_u32());
    (void)c.next_u32();
    (void)d.next_u32();
  }
  Rng e(42), f(43), g(42, 1);
  int same_seed = 0, same_stream = 0;
  for (int i = 0; i < 64; ++i) {
    const auto x = e.next_u32();
    same_seed += x == f.next_u32();
    same_stream += x == g.next_u32();
  }
  CHECK(same_seed < 2);
  CHECK(same_stream < 2);

  Rng r(7);
  for (int i = 0; i < 5; ++i) (void)r.normal();  // odd count: a Box-Muller spare is pending
  const Rng::State st = r.state();
  std::vector<double> expected;
  for (int i = 0; i < 9; ++i) expected.push_back(i % 3 ? r.normal() : r.uniform());
  Rng resumed(0);
  resumed.set_state(st);
  for (int i = 0; i < 9; ++i) CHECK((i % 3 ? resumed.normal() : resumed.uniform()) == expected[i]);
}

TEST_CASE("Rng distributions have the right moments") {
  Rng r(123);
  const int n = 200000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform(), z = r.normal();
    CHECK_UNARY(u >= 0.0);
    CHECK_UNARY(u < 1.0);
    su += u, su2 += u * u, sn += z, sn2 += z * z;
  }
  CHECK(su / n == doctest::Approx(0.5).epsilon(0.01));
  CHECK(su2 / n - (su / n) * (su / n) == doctest::Approx(1.0 / 12).epsilon(0.02));
  CHECK(std::abs(sn / n) < 0.01);
  CHECK(sn2 / n == doctest::Approx(1.0).epsilon(0.02));
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) counts[r.below(7)]++;
  for (int k : counts) CHECK(std::abs(k - 10000) < 500);

  auto t = Tensor<float>::empty({100, 100});
  Rng r1(5), r2(5);
  fill_normal(t, r1, 1.0, 2.0);
  auto u = Tensor<float>::empty({100, 100});
  fill_normal(u, r2, 1.0, 2.0);
  CHECK(t.to_vector() == u.to_vector());
  double mean = 0;
  for (float v : t.to_vector()) mean += v;
  CHECK(mean / 1e4 == doctest::Approx(1.0).epsilon(0.05));
  fill_uniform(t, r1, -2.0, -1.0);
  for (float v : t.to_vector()) CHECK_UNARY(v >= -2.0f && v <= -1.0f);
}

TEST_CASE("Philox matches the published Random123 known-answer vectors") {
  // Random123 kat_vectors: philox4x32 10 rounds, counter = key = 0 and counter = key = all ones.
  std::uint32_t out[4];
  detail::philox4x32(0, 0, 0, out);
  CHECK(out[0] == 0x6627e8d5u);
  CHECK(out[1] == 0xe169c58du);
  CHECK(out[2] == 0xbc57ac4cu);
  CHECK(out[3] == 0x9b00dbd8u);
  detail::philox4x32(~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}, out);
  CHECK(out[0] == 0x408f276du);
  CHECK(out[1] == 0x41c83b0eu);
  CHECK(out[2] == 0xa20bc7c6u);
  CHECK(out[3] == 0x6d5451fdu);
}

TEST_CASE("Error messages say what and where") {
  const std::string msg = error_of([] { PREFIXTUNE_CHECK(1 == 2, "value ", 3, " is wrong"); });
  CHECK(msg.find("prefixtune: value 3 is wrong") == 0);
  CHECK(msg.find("[in ") != std::string::npos);
}
