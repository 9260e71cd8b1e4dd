// SPDX-License-Identifier: MIT
// A consumer of the prefixtune package: a 2x2 GEMM, checked, through the public umbrella header.
#include <prefixtune/prefixtune.hpp>

#include <cstdio>

int main() {
  using namespace prefixtune;
  auto a = Tensor<float>::from_vector({2, 2}, {1, 2, 3, 4});
  auto b = Tensor<float>::from_vector({2, 2}, {5, 6, 7, 8});
  auto c = Tensor<float>::zeros({2, 2});
  gemm(a, Trans::N, b, Trans::N, c);
  const bool ok = c(0, 0) == 19 && c(0, 1) == 22 && c(1, 0) == 43 && c(1, 1) == 50;
  std::printf("consumer: %s (cpu gemm backend: %s)\n", ok ? "ok" : "WRONG", cpu_gemm_backend().c_str());
  return ok ? 0 : 1;
}
