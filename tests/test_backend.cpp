// SPDX-License-Identifier: MIT
// Tests of the CPU GEMM (pointer and tensor APIs) against a naive double-precision loop: odd shapes, all four
// transposes, leading dimensions, alpha/beta, strided batches, broadcasting, and argument errors. The checks of the
// AVX2 and AVX-512 kernels themselves are in the test suites isa_avx2 / isa_avx512, run by their own CTest entries
// (`test_backend --isa=avx2`, `--isa=avx512`) that exit 77, "skipped", on a CPU without the instructions.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <limits>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/gemm.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::max_rel_diff;
using test::naive_gemm;

namespace {

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

// The product under test: gemm(Cpu{}), whichever kernel it picks on this CPU.
struct CpuGemm {
  template <class T>
  void operator()(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                  std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) const {
    gemm(Cpu{}, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
};

// Checks one pointer-level GEMM of the given shape (with padded leading dimensions) against the reference.
template <class T, class Run = CpuGemm>
void check_gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, double beta, Rng& rng,
                int pad, Run run = {}) {
  const std::int64_t a_rows = ta == Trans::N ? m : k, a_cols = ta == Trans::N ? k : m;
  const std::int64_t b_rows = tb == Trans::N ? k : n, b_cols = tb == Trans::N ? n : k;
  const std::int64_t lda = std::max<std::int64_t>(1, a_cols + pad), ldb = std::max<std::int64_t>(1, b_cols + pad);
  const std::int64_t ldc = std::max<std::int64_t>(1, n + pad);
  auto a = test::random_values(a_rows * lda, rng), b = test::random_values(b_rows * ldb, rng);
  auto c = test::random_values(m * ldc, rng);
  auto ta_ = cast<T>(a), tb_ = cast<T>(b), tc = cast<T>(c);
  // Reference from the rounded inputs so only the product's rounding is measured.
  std::vector<double> ar(ta_.begin(), ta_.end()), br(tb_.begin(), tb_.end()), cr(tc.begin(), tc.end());
  naive_gemm(ta == Trans::T, tb == Trans::T, m, n, k, alpha, ar, lda, br, ldb, beta, cr, ldc);
  run(ta, tb, m, n, k, T(alpha), ta_.data(), lda, tb_.data(), ldb, T(beta), tc.data(), ldc);
  double err = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      err = std::max(err, std::abs(tc[i * ldc + j] - cr[i * ldc + j]) / (1.0 + std::abs(cr[i * ldc + j])));
  // Padding columns are never written.
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = n; j < ldc; ++j) REQUIRE(tc[i * ldc + j] == T(c[i * ldc + j]));
  INFO("ta=", to_string(ta), " tb=", to_string(tb), " m=", m, " n=", n, " k=", k, " alpha=", alpha, " beta=", beta);
  CHECK(err < tolerance<T>() * std::sqrt(double(k + 1)));
}

}  // namespace

TEST_CASE_TEMPLATE("gemm matches a naive double loop on odd shapes, all transposes, alpha and beta", T, float, double) {
  Rng rng(2024);
  // then GEMVs above kGemvParallelMin (split over the threads in output blocks) and skinny A B^T products above
  // kSkinnyMinWork (dot products per row of B) next to their other transposes (BLAS)
  const std::int64_t shapes[][3] = {{1, 1, 1},    {7, 5, 3},      {1, 33, 17},   {29, 1, 13},     {17, 19, 1},
                                    {64, 48, 96}, {65, 130, 67},  {3, 257, 5},   {131, 7, 200},   {0, 4, 3},
                                    {4, 3, 0},    {1, 1001, 300}, {999, 1, 257}, {5, 1100, 1000}, {8, 1031, 1030}};
  const double ab[][2] = {{1.0, 0.0}, {0.5, 1.0}, {-1.5, 0.25}};
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T})
      for (auto& s : shapes)
        for (auto& p : ab) check_gemm<T>(ta, tb, s[0], s[1], s[2], p[0], p[1], rng, int(s[0] % 3));
}

// Shapes for the small-m kernels: column counts around their block widths (8 lanes (AVX2) and 16-lane vectors in
// tiles of 48 (AVX-512) for B (k, n); 3 columns for B (n, k)) and k around the 8 lanes and the 4- and 8-row passes;
// then products above kSmallGemmParallelMin (split over the threads, with k beyond the NN kernels' prefetch
// distances and columns per thread beyond the AVX-512 kernel's column pieces of at most 2016).
template <class Run>
void check_small_m_shapes(Rng& rng, Run run) {
  const std::int64_t ns[] = {1, 3, 7, 8, 9, 16, 17, 31, 47, 48, 50, 97};
  const std::int64_t ks[] = {1, 7, 8, 13, 64};
  const double ab[][2] = {{1.0, 0.0}, {-1.5, 0.25}};
  for (std::int64_t m = 1; m <= detail::kSmallGemmMaxRows; ++m)
    for (std::int64_t n : ns)
      for (std::int64_t k : ks)
        for (Trans tb : {Trans::N, Trans::T})
          for (auto& p : ab) check_gemm<float>(Trans::N, tb, m, n, k, p[0], p[1], rng, int(m % 2), run);
  for (std::int64_t m : {1, 6, 16})
    for (Trans tb : {Trans::N, Trans::T}) check_gemm<float>(Trans::N, tb, m, 4801, 70, -1.5, 0.25, rng, 1, run);
}

TEST_CASE("small-m float products through gemm: every row count, column and k tails, alpha/beta, both B layouts") {
  // Whichever kernel this CPU runs (AVX-512 NN, AVX2, or BLAS/Eigen); the kernels themselves: isa_avx2, isa_avx512.
  Rng rng(77);
  check_small_m_shapes(rng, CpuGemm{});
}

TEST_SUITE("isa_avx2") {
  TEST_CASE("small-m AVX2 + FMA kernels: every row count, column and k tails, alpha/beta, both B layouts" *
            doctest::skip(!detail::cpu_has_avx2_fma())) {
    Rng rng(76);
    check_small_m_shapes(
        rng, [](Trans, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
          REQUIRE(detail::gemm_small_m(tb == Trans::T, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                       detail::SmallGemmIsa::avx2));
        });
  }

  TEST_CASE("small-m float kernels: a row's result does not depend on the rows batched with it" *
            doctest::skip(!detail::cpu_has_avx2_fma())) {
    Rng rng(78);
    const std::int64_t n = 301, k = 203, m = 11;
    for (Trans tb : {Trans::N, Trans::T}) {
      auto a = test::random_values(m * k, rng), b = test::random_values(n * k, rng);
      const std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end());
      std::vector<float> all(m * n), one(n);
      const std::int64_t ldb = tb == Trans::N ? n : k;
      gemm(Cpu{}, Trans::N, tb, m, n, k, 1.0f, af.data(), k, bf.data(), ldb, 0.0f, all.data(), n);
      for (std::int64_t i = 0; i < m; ++i) {
        gemm(Cpu{}, Trans::N, tb, 1, n, k, 1.0f, af.data() + i * k, k, bf.data(), ldb, 0.0f, one.data(), n);
        INFO("tb=", to_string(tb), " row ", i);
        CHECK(std::equal(one.begin(), one.end(), all.begin() + i * n));
      }
      // The kernel took the product (and, with beta == 0, never read C's NaNs); so does the AVX2-only choice,
      // row by row too.
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> c(m * n, nan), c2(m * n, nan);
      CHECK(detail::gemm_small_m(tb == Trans::T, m, n, k, 1.0f, af.data(), k, bf.data(), ldb, 0.0f, c.data(), n));
      CHECK(c == all);
      CHECK(detail::gemm_small_m(tb == Trans::T, m, n, k, 1.0f, af.data(), k, bf.data(), ldb, 0.0f, c2.data(), n,
                                 detail::SmallGemmIsa::avx2));
      for (std::int64_t i = 0; i < m; ++i) {
        CHECK(detail::gemm_small_m(tb == Trans::T, 1, n, k, 1.0f, af.data() + i * k, k, bf.data(), ldb, 0.0f,
                                   one.data(), n, detail::SmallGemmIsa::avx2));
        INFO("AVX2 only, tb=", to_string(tb), " row ", i);
        CHECK(std::equal(one.begin(), one.end(), c2.begin() + i * n));
      }
    }
  }
}

TEST_SUITE("isa_avx512") {
#if defined(PREFIXTUNE_X86_KERNELS)
  TEST_CASE("small-m NN kernels: AVX2 and AVX-512 give bit-identical sums and write only their columns" *
            doctest::skip(!detail::cpu_has_avx512f())) {
    Rng rng(79);
    const double ab[][2] = {{1.0, 0.0}, {-1.5, 0.25}};
    for (std::int64_t m = 1; m <= detail::kSmallGemmMaxRows; ++m)
      for (std::int64_t n : {1, 15, 16, 33, 47, 48, 49, 130, 2100})
        for (std::int64_t k : {1, 8, 9, 17, 40})
          for (auto& p : ab) {
            const std::int64_t lda = k + 1, ldb = n + 2, ldc = n + 3;
            auto a = test::random_values(m * lda, rng), b = test::random_values(k * ldb, rng);
            auto c = test::random_values(m * ldc, rng);
            const std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), c0(c.begin(), c.end());
            // Columns j0..j1 only (a thread's range): the others, and the padding, keep their values.
            const std::int64_t j0 = n > 20 ? 5 : 0, j1 = n > 20 ? n - 3 : n;
            auto c2 = c0, c5 = c0;
            detail::nn_columns_avx2(m, j0, j1, k, float(p[0]), af.data(), lda, bf.data(), ldb, float(p[1]), c2.data(),
                                    ldc);
            detail::nn_columns_avx512(m, j0, j1, k, float(p[0]), af.data(), lda, bf.data(), ldb, float(p[1]), c5.data(),
                                      ldc);
            INFO("m=", m, " n=", n, " k=", k, " beta=", p[1]);
            CHECK(c2 == c5);
            bool outside_kept = true;
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < ldc; ++j)
                if ((j < j0 || j >= j1) && c5[i * ldc + j] != c0[i * ldc + j]) outside_kept = false;
            CHECK(outside_kept);
          }
  }

  TEST_CASE("small-m NN products through gemm run the AVX-512 kernel: every row count and tail" *
            doctest::skip(!detail::cpu_has_avx512f())) {
    // gemm(Cpu{}) picks the AVX-512 NN kernel here (B (k, n)); the same shapes as the AVX2 case.
    Rng rng(80);
    check_small_m_shapes(
        rng, [](Trans, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
          REQUIRE(detail::gemm_small_m(tb == Trans::T, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
        });
  }
#endif
}

TEST_CASE("gemm with beta == 0 never reads C (NaN in C does not propagate)") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> a = {1, 2, 3, 4}, b = {1, 0, 0, 1}, c(4, nan);
  gemm(Cpu{}, Trans::N, Trans::N, 2, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
  CHECK(c == std::vector<float>{1, 2, 3, 4});
  std::vector<float> c2(4, nan);  // k == 0 with beta == 0 zeroes C
  gemm(Cpu{}, Trans::N, Trans::N, 2, 2, 0, 1.0f, a.data(), 1, b.data(), 2, 0.0f, c2.data(), 2);
  CHECK(c2 == std::vector<float>{0, 0, 0, 0});
}

TEST_CASE("Eigen and BLAS kernels agree with each other") {
  Rng rng(9);
  const std::int64_t m = 70, n = 90, k = 110;
  auto a = test::random_values(m * k, rng), b = test::random_values(k * n, rng);
  auto af = std::vector<float>(a.begin(), a.end()), bf = std::vector<float>(b.begin(), b.end());
  std::vector<float> c1(m * n), c2(m * n);
  detail::gemm_eigen(Trans::N, Trans::T, m, n, k, 1.0f, af.data(), k, bf.data(), k, 0.0f, c1.data(), n);
  detail::gemm_cpu_dispatch(Trans::N, Trans::T, m, n, k, 1.0f, af.data(), k, bf.data(), k, 0.0f, c2.data(), n);
  CHECK(max_rel_diff(c1, c2) < 1e-5);
}

TEST_CASE_TEMPLATE("gemm_strided_batched matches per-matrix references, with and without broadcasting", T, float,
                   double) {
  Rng rng(77);
  for (std::int64_t batch : {1, 2, 5, 12}) {
    for (Trans ta : {Trans::N, Trans::T})
      for (Trans tb : {Trans::N, Trans::T})
        for (bool broadcast_b : {false, true}) {
          const std::int64_t m = 9, n = 13, k = 11;
          const std::int64_t sa = m * k + 3, sb = broadcast_b ? 0 : k * n + 1, sc = m * n + 2;
          const std::int64_t lda = ta == Trans::N ? k : m, ldb = tb == Trans::N ? n : k;
          auto a = test::random_values(sa * batch, rng), b = test::random_values(k * n + sb * batch, rng);
          auto c = test::random_values(sc * batch, rng);
          auto af = cast<T>(a), bf = cast<T>(b), cf = cast<T>(c);
          std::vector<double> ar(af.begin(), af.end()), br(bf.begin(), bf.end()), cr(cf.begin(), cf.end());
          for (std::int64_t i = 0; i < batch; ++i)
            naive_gemm(ta == Trans::T, tb == Trans::T, m, n, k, 0.75, ar, lda, br, ldb, 0.5, cr, n, i * sa, i * sb,
                       i * sc);
          gemm_strided_batched(Cpu{}, ta, tb, m, n, k, T(0.75), af.data(), lda, sa, bf.data(), ldb, sb, T(0.5),
                               cf.data(), n, sc, batch);
          INFO("batch=", batch, " ta=", to_string(ta), " tb=", to_string(tb), " broadcast=", broadcast_b);
          CHECK(max_rel_diff(cf, cr) < tolerance<T>() * 10);
        }
  }
}

TEST_CASE("tensor-level gemm: plain, batched, broadcast weight, shape errors") {
  Rng rng(3);
  auto a = Tensor<double>::empty({4, 6, 5});
  auto b = Tensor<double>::empty({4, 5, 7});
  auto w = Tensor<double>::empty({5, 7});
  fill_uniform(a, rng, -1, 1);
  fill_uniform(b, rng, -1, 1);
  fill_uniform(w, rng, -1, 1);
  auto c = Tensor<double>::zeros({4, 6, 7});
  gemm(a, Trans::N, b, Trans::N, c);
  auto cw = Tensor<double>::zeros({4, 6, 7});
  gemm(a, Trans::N, w, Trans::N, cw);
  auto av = a.to_vector(), bv = b.to_vector(), wv = w.to_vector();
  for (int i = 0; i < 4; ++i) {
    std::vector<double> ref(42, 0.0), refw(42, 0.0);
    naive_gemm(false, false, 6, 7, 5, 1.0, av, 5, bv, 7, 0.0, ref, 7, i * 30, i * 35, 0);
    naive_gemm(false, false, 6, 7, 5, 1.0, av, 5, wv, 7, 0.0, refw, 7, i * 30, 0, 0);
    auto got = c.select(i).to_vector(), gotw = cw.select(i).to_vector();
    CHECK(max_rel_diff(got, ref) < 1e-12);
    CHECK(max_rel_diff(gotw, refw) < 1e-12);
  }
  // a^T (batched, transposed, broadcast weight): (4, 5, 6)^T x (5, 7)
  auto at = Tensor<double>::empty({4, 5, 6});
  fill_uniform(at, rng, -1, 1);
  auto ct = Tensor<double>::zeros({4, 6, 7});
  gemm(at, Trans::T, w, Trans::N, ct, 2.0);
  auto atv = at.to_vector();
  std::vector<double> ref(42, 0.0);
  naive_gemm(true, false, 6, 7, 5, 2.0, atv, 6, wv, 7, 0.0, ref, 7, 3 * 30, 0, 0);
  CHECK(max_rel_diff(ct.select(3).to_vector(), ref) < 1e-12);

  auto bad = Tensor<double>::zeros({4, 6, 8});
  CHECK(error_of([&] { gemm(a, Trans::N, b, Trans::N, bad); }).find("shape mismatch") != std::string::npos);
  CHECK(error_of([&] { gemm(a, Trans::T, b, Trans::N, c); }).find("(4, 6, 5)") != std::string::npos);
  auto b3 = Tensor<double>::zeros({3, 5, 7});
  CHECK(error_of([&] { gemm(a, Trans::N, b3, Trans::N, c); }).find("batch sizes differ") != std::string::npos);
  CHECK(error_of([&] { gemm(Tensor<double>(), Trans::N, b, Trans::N, c); }).find("undefined") != std::string::npos);
}

TEST_CASE("pointer-level gemm rejects bad leading dimensions and sizes") {
  std::vector<float> a(100), b(100), c(100);
  CHECK(error_of([&] {
          gemm(Cpu{}, Trans::N, Trans::N, 4, 4, 5, 1.f, a.data(), 4, b.data(), 4, 0.f, c.data(), 4);
        }).find("lda=4 < 5") != std::string::npos);
  CHECK(error_of([&] {
          gemm(Cpu{}, Trans::N, Trans::T, 4, 6, 4, 1.f, a.data(), 4, b.data(), 3, 0.f, c.data(), 6);
        }).find("ldb=3 < 4") != std::string::npos);
  CHECK(error_of([&] {
          gemm(Cpu{}, Trans::N, Trans::N, 4, 6, 4, 1.f, a.data(), 4, b.data(), 6, 0.f, c.data(), 5);
        }).find("ldc=5 < n=6") != std::string::npos);
  CHECK(error_of([&] {
          gemm(Cpu{}, Trans::N, Trans::N, -1, 6, 4, 1.f, a.data(), 4, b.data(), 6, 0.f, c.data(), 6);
        }).find("negative size") != std::string::npos);
  CHECK(error_of([&] {
          gemm(Cpu{}, Trans::N, Trans::N, 2, 2, 2, 1.f, static_cast<const float*>(nullptr), 2, b.data(), 2, 0.f,
               c.data(), 2);
        }).find("null data pointer") != std::string::npos);
  CHECK(error_of([&] {
          gemm_strided_batched(Cpu{}, Trans::N, Trans::N, 3, 3, 3, 1.f, a.data(), 3, 9, b.data(), 3, 9, 0.f, c.data(),
                               3, 4, 2);
        }).find("overlap") != std::string::npos);
}

TEST_CASE("thread control reaches OpenMP, Eigen and BLAS") {
  const int before = num_threads();
  set_num_threads(1);
  CHECK(num_threads() == 1);
  CHECK(Eigen::nbThreads() == 1);
  set_num_threads(before);
  CHECK(error_of([] { set_num_threads(0); }).find("must be >= 1") != std::string::npos);
  CHECK((cpu_gemm_backend() == "openblas" || cpu_gemm_backend() == "eigen"));
}

// `--isa=avx2` / `--isa=avx512`: run only that suite, or exit 77 (CTest: skipped) when this CPU lacks the
// instructions (or PREFIXTUNE_NO_AVX512 turns AVX-512 off). Without --isa every case runs; the kernels' cases this
// CPU cannot run are reported as skipped by doctest.
int main(int argc, char** argv) {
  std::vector<char*> args;
  const char* isa = nullptr;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--isa=", 6) == 0) {
      isa = argv[i] + 6;
    } else {
      args.push_back(argv[i]);
    }
  }
  doctest::Context ctx(static_cast<int>(args.size()), args.data());
  if (isa != nullptr) {
    bool has = false;
    if (std::strcmp(isa, "avx2") == 0) {
      has = detail::cpu_has_avx2_fma();
    } else if (std::strcmp(isa, "avx512") == 0) {
      has = detail::cpu_has_avx512f();
    } else {
      std::fprintf(stderr, "test_backend: unknown --isa=%s (avx2 or avx512)\n", isa);
      return 2;
    }
    if (!has) {
      std::printf("this CPU does not run the %s kernels (or PREFIXTUNE_NO_AVX512 is set): skipped\n", isa);
      return 77;
    }
    ctx.addFilter("test-suite", (std::string("isa_") + isa).c_str());
  }
  return ctx.run();
}
