// SPDX-License-Identifier: MIT
// GPU tests: Tensor<T, Cuda> memory and copies, and cuBLAS GEMM against the CPU GEMM (fp32 < 1e-5 relative,
// TF32 < 1e-3). Exits 77 (CTest: skipped) on a machine without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

#include "prefixtune/cuda.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::max_rel_diff;

TEST_CASE("Cuda tensors: allocate, fill, copy host <-> device, views") {
  auto h = Tensor<float>::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  auto d = h.to<Cuda>();
  CHECK(d.to_vector() == h.to_vector());
  auto z = Tensor<float, Cuda>::zeros({3, 5});
  for (float v : z.to_vector()) CHECK(v == 0.0f);
  z.fill(1.5f);
  for (float v : z.to_vector()) CHECK(v == 1.5f);
  auto rows = d.rows(1, 2);
  CHECK(rows.to_vector() == std::vector<float>{4, 5, 6});
  auto d2 = Tensor<float, Cuda>::empty({2, 3});
  d2.copy_from(d);  // device to device
  CHECK(d2.to<Cpu>().to_vector() == h.to_vector());
  CHECK(d.reshape({3, 2}).shares_storage_with(d));
}

TEST_CASE_TEMPLATE("cuBLAS gemm matches the CPU gemm on odd shapes and all transposes", T, float, double) {
  Rng rng(11);
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T})
      for (auto s : {std::array<std::int64_t, 3>{7, 5, 3}, {65, 130, 67}, {1, 257, 33}, {128, 64, 200}}) {
        const std::int64_t m = s[0], n = s[1], k = s[2];
        auto a = Tensor<T>::empty(ta == Trans::N ? Shape{m, k} : Shape{k, m});
        auto b = Tensor<T>::empty(tb == Trans::N ? Shape{k, n} : Shape{n, k});
        auto c = Tensor<T>::empty({m, n});
        fill_uniform(a, rng, -1, 1);
        fill_uniform(b, rng, -1, 1);
        fill_uniform(c, rng, -1, 1);
        auto dc = c.template to<Cuda>();
        gemm(a, ta, b, tb, c, T(0.5), T(0.25));
        auto da = a.template to<Cuda>(), db = b.template to<Cuda>();
        gemm(da, ta, db, tb, dc, T(0.5), T(0.25));
        INFO("m=", m, " n=", n, " k=", k);
        CHECK(max_rel_diff(dc.to_vector(), c.to_vector()) < (std::is_same_v<T, float> ? 1e-5 : 1e-12));
      }
}

TEST_CASE("cuBLAS strided-batched gemm, TF32 and bf16 modes") {
  Rng rng(12);
  auto a = Tensor<float>::empty({6, 33, 40}), b = Tensor<float>::empty({6, 40, 27}),
       c = Tensor<float>::zeros({6, 33, 27});
  fill_uniform(a, rng, -1, 1);
  fill_uniform(b, rng, -1, 1);
  gemm(a, Trans::N, b, Trans::N, c);
  auto da = a.to<Cuda>(), db = b.to<Cuda>();
  auto dc = Tensor<float, Cuda>::zeros({6, 33, 27});
  gemm(da, Trans::N, db, Trans::N, dc);
  CHECK(max_rel_diff(dc.to_vector(), c.to_vector()) < 1e-5);
  CudaContext::current().set_math(CudaMath::Tf32);
  gemm(da, Trans::N, db, Trans::N, dc);
  CudaContext::current().set_math(CudaMath::Fp32);
  CHECK(max_rel_diff(dc.to_vector(), c.to_vector()) < 1e-3);
  CudaContext::current().set_math(CudaMath::Bf16);
  gemm(da, Trans::N, db, Trans::N, dc);
  CudaContext::current().set_math(CudaMath::Fp32);
  double num = 0, den = 0;  // normwise: bf16 keeps 8 significant bits of each input
  const auto g = dc.to_vector(), r = c.to_vector();
  for (std::size_t i = 0; i < r.size(); ++i) num += (g[i] - r[i]) * (g[i] - r[i]), den += r[i] * r[i];
  CHECK(std::sqrt(num / den) < 1e-2);  // (cuBLAS may keep fp32 kernels for shapes without a bf16 one)
}

TEST_CASE("CUDA errors become prefixtune::Error") {
  CHECK(test::error_of([] { Tensor<float, Cuda> huge({std::int64_t{1} << 44}); }).find("prefixtune:") == 0);
  CHECK(test::error_of([] { CudaContext ctx(cuda_device_count() + 3); }).find("not available") != std::string::npos);
}

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::printf("test_cuda: no CUDA device, skipping\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
