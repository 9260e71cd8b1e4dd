// SPDX-License-Identifier: MIT
// Tensor-level GEMM for any device: shape checks, then the device's pointer-level gemm / gemm_strided_batched,
// found by argument-dependent lookup on the device tag (cpu/gemm.hpp, cuda/gemm.hpp). Device-independent: the
// layers above ops/ include prefixtune/ops/gemm.hpp, which brings this with the CPU kernels.
#pragma once

#include "prefixtune/backend/common/gemm.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// c = alpha * op(a) * op(b) + beta * c on the tensors' device.
/// Plain:   a (M, K) or (K, M), b (K, N) or (N, K), c (M, N).
/// Batched: a (Bt, ., .), c (Bt, M, N) and b either (Bt, ., .) or 2-D (shared by every batch entry).
template <class T, class Device>
void gemm(const Tensor<T, Device>& a, Trans ta, const Tensor<T, Device>& b, Trans tb, Tensor<T, Device>& c,
          T alpha = T(1), T beta = T(0)) {
  PREFIXTUNE_CHECK(a.defined() && b.defined() && c.defined(), "gemm: undefined tensor argument");
  PREFIXTUNE_CHECK(a.rank() == c.rank() && (a.rank() == 2 || a.rank() == 3) && (b.rank() == 2 || b.rank() == a.rank()),
                   "gemm: unsupported ranks a", a.shape(), " b", b.shape(), " c", c.shape());
  const int r = a.rank();
  const std::int64_t m = ta == Trans::N ? a.size(r - 2) : a.size(r - 1);
  const std::int64_t k = ta == Trans::N ? a.size(r - 1) : a.size(r - 2);
  const std::int64_t kb = tb == Trans::N ? b.size(-2) : b.size(-1);
  const std::int64_t n = tb == Trans::N ? b.size(-1) : b.size(-2);
  PREFIXTUNE_CHECK(k == kb && c.size(r - 2) == m && c.size(r - 1) == n, "gemm: shape mismatch: op", to_string(ta), "(a",
                   a.shape(), ") x op", to_string(tb), "(b", b.shape(), ") -> c", c.shape());
  const std::int64_t lda = a.size(-1), ldb = b.size(-1), ldc = n;
  if (r == 2) {
    gemm(Device{}, ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
    return;
  }
  const std::int64_t batch = a.size(0);
  PREFIXTUNE_CHECK(c.size(0) == batch && (b.rank() == 2 || b.size(0) == batch), "gemm: batch sizes differ: a",
                   a.shape(), " b", b.shape(), " c", c.shape());
  if (b.rank() == 2 && ta == Trans::N) {
    // (Bt, M, K) x (K, N): one large GEMM over Bt*M rows is faster than Bt small ones.
    gemm(Device{}, ta, tb, batch * m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
    return;
  }
  const std::int64_t stride_b = b.rank() == 2 ? 0 : b.size(1) * b.size(2);
  gemm_strided_batched(Device{}, ta, tb, m, n, k, alpha, a.data(), lda, a.size(1) * a.size(2), b.data(), ldb, stride_b,
                       beta, c.data(), ldc, m * n, batch);
}

}  // namespace prefixtune
