// SPDX-License-Identifier: MIT
// Ops find a backend's kernels by argument-dependent lookup on the device tag, whatever the include order: a
// device declared after the ops headers (as the CUDA backend may be) gets its own kernel overloads called.
#include <doctest/doctest.h>

#include "prefixtune/ops/elementwise.hpp"

namespace prefixtune {
// A host-memory device declared after ops/elementwise.hpp, with its own accumulate kernel.
struct LateDevice : Cpu {};
namespace detail {
inline int late_kernel_calls = 0;
template <class T>
void accumulate_kernel(LateDevice, T* dst, const T* src, T alpha, std::int64_t n) {
  ++late_kernel_calls;
  for (std::int64_t i = 0; i < n; ++i) dst[i] += alpha * src[i];
}
}  // namespace detail
}  // namespace prefixtune

using namespace prefixtune;

TEST_CASE("ops dispatch to kernels declared after the ops headers") {
  auto dst = Tensor<float, LateDevice>::full({3}, 1.0f);
  auto src = Tensor<float, LateDevice>::full({3}, 2.0f);
  accumulate(dst, src, 0.5f);
  CHECK(detail::late_kernel_calls == 1);
  CHECK(dst.to_vector() == std::vector<float>{2.0f, 2.0f, 2.0f});
}
