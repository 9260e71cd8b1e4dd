// SPDX-License-Identifier: MIT
// Linear layer in GPT-2's Conv1D layout (w is (Cin, Cout): out = x w + b) and plain / batched matmul,
// forward and backward, each one GEMM over all rows (plus a bias row kernel) on the tensors' device.
#pragma once

#include <algorithm>
#include <cstdint>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/cpu/linear.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

namespace detail {

/// Whether the elements of two defined, non-empty tensors share any byte (views of one storage may).
template <class T, class Device>
bool dense_overlaps(const Tensor<T, Device>& a, const Tensor<T, Device>& b) {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return false;
  const auto pa = reinterpret_cast<std::uintptr_t>(a.data()), pb = reinterpret_cast<std::uintptr_t>(b.data());
  return pa < pb + b.bytes() && pb < pa + a.bytes();
}

/// Product of every dimension but the last (the row count of a (..., C) tensor, also when C == 0).
inline std::int64_t dense_leading_rows(const Shape& s) {
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < s.rank(); ++i) rows *= s[i];
  return rows;
}

/// Shapes of a matmul a (..., M, K) x b (..., K, N): which side carries the batch, and the output shape.
struct MatmulDims {
  std::int64_t batch = 1, m = 0, k = 0, n = 0;
  bool a_batched = false, b_batched = false;
  Shape out;
};

template <class T, class Device>
MatmulDims matmul_dims(const char* op, const Tensor<T, Device>& a, const Tensor<T, Device>& b) {
  PREFIXTUNE_CHECK(a.defined() && b.defined(), op, ": a and b must be defined");
  PREFIXTUNE_CHECK(a.rank() >= 2 && b.rank() >= 2, op, ": a ", a.shape(), " and b ", b.shape(),
                   " must have rank 2 to 4 (matrices, optionally batched)");
  MatmulDims d;
  d.a_batched = a.rank() > 2;
  d.b_batched = b.rank() > 2;
  if (d.a_batched && d.b_batched) {
    bool same = a.rank() == b.rank();
    for (int i = 0; same && i + 2 < a.rank(); ++i) same = a.size(i) == b.size(i);
    PREFIXTUNE_CHECK(same, op, ": batch dimensions of a ", a.shape(), " and b ", b.shape(), " differ");
  }
  d.m = a.size(-2);
  d.k = a.size(-1);
  d.n = b.size(-1);
  PREFIXTUNE_CHECK(b.size(-2) == d.k, op, ": a ", a.shape(), " and b ", b.shape(), " do not multiply: a's last dim ",
                   d.k, " != b's rows ", b.size(-2));
  const Shape& batched = d.a_batched ? a.shape() : b.shape();
  for (int i = 0; i + 2 < batched.rank(); ++i) d.batch *= batched[i];
  d.out = batched.with(-2, d.m).with(-1, d.n);
  return d;
}

}  // namespace detail

/// out = x w + b over all rows at once (GPT-2 Conv1D layout). b may be undefined (no bias).
/// x (..., Cin) e.g. (N, Cin) or (B, T, Cin); w (Cin, Cout); b (Cout); out (..., Cout), written (not added to).
template <class T, class Device>
void linear_forward(const Tensor<T, Device>& x, const Tensor<T, Device>& w, const Tensor<T, Device>& b,
                    Tensor<T, Device>& out) {
  PREFIXTUNE_CHECK(x.defined() && w.defined() && out.defined(), "linear_forward: x, w and out must be defined");
  PREFIXTUNE_CHECK(w.rank() == 2, "linear_forward: w must be 2-D (Cin, Cout), got ", w.shape());
  PREFIXTUNE_CHECK(x.rank() >= 1, "linear_forward: x must have rank >= 1, got ", x.shape());
  const std::int64_t cin = w.size(0), cout = w.size(1);
  PREFIXTUNE_CHECK(x.size(-1) == cin, "linear_forward: x ", x.shape(), " last dim ", x.size(-1), " does not match w ",
                   w.shape(), " in-features ", cin);
  PREFIXTUNE_CHECK(!b.defined() || (b.rank() == 1 && b.size(0) == cout), "linear_forward: b shape ", b.shape(),
                   " does not match w ", w.shape(), " out-features ", cout);
  const Shape expect = x.shape().with(-1, cout);
  PREFIXTUNE_CHECK(out.shape() == expect, "linear_forward: out shape ", out.shape(), " should be ", expect, " for x ",
                   x.shape(), " and w ", w.shape());
  PREFIXTUNE_CHECK(
      !detail::dense_overlaps(out, x) && !detail::dense_overlaps(out, w) && !detail::dense_overlaps(out, b),
      "linear_forward: out must not overlap x, w or b");
  const std::int64_t rows = detail::dense_leading_rows(x.shape());
  const std::int64_t ldi = std::max<std::int64_t>(1, cin), ldo = std::max<std::int64_t>(1, cout);
  gemm(Device{}, Trans::N, Trans::N, rows, cout, cin, T(1), x.data(), ldi, w.data(), ldo, T(0), out.data(), ldo);
  if (b.defined()) bias_add_kernel(Device{}, out.data(), b.data(), rows, cout);
}

/// Gradients of linear_forward, ADDED into dx = dout w^T, dw = x^T dout, db = column sums of dout.
/// Any of dx, dw, db may be undefined: that gradient is skipped (a frozen weight costs no weight-gradient work).
/// dout (..., Cout); x (..., Cin); w (Cin, Cout); dx like x; dw like w; db (Cout).
template <class T, class Device>
void linear_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, const Tensor<T, Device>& w,
                     Tensor<T, Device>& dx, Tensor<T, Device>& dw, Tensor<T, Device>& db) {
  PREFIXTUNE_CHECK(dout.defined() && x.defined() && w.defined(), "linear_backward: dout, x and w must be defined");
  PREFIXTUNE_CHECK(w.rank() == 2, "linear_backward: w must be 2-D (Cin, Cout), got ", w.shape());
  PREFIXTUNE_CHECK(x.rank() >= 1, "linear_backward: x must have rank >= 1, got ", x.shape());
  const std::int64_t cin = w.size(0), cout = w.size(1);
  PREFIXTUNE_CHECK(x.size(-1) == cin, "linear_backward: x ", x.shape(), " last dim ", x.size(-1), " does not match w ",
                   w.shape(), " in-features ", cin);
  const Shape expect = x.shape().with(-1, cout);
  PREFIXTUNE_CHECK(dout.shape() == expect, "linear_backward: dout shape ", dout.shape(), " should be ", expect,
                   " for x ", x.shape(), " and w ", w.shape());
  PREFIXTUNE_CHECK(!dx.defined() || dx.shape() == x.shape(), "linear_backward: dx shape ", dx.shape(),
                   " does not match x ", x.shape());
  PREFIXTUNE_CHECK(!dw.defined() || dw.shape() == w.shape(), "linear_backward: dw shape ", dw.shape(),
                   " does not match w ", w.shape());
  PREFIXTUNE_CHECK(!db.defined() || (db.rank() == 1 && db.size(0) == cout), "linear_backward: db shape ", db.shape(),
                   " does not match w ", w.shape(), " out-features ", cout);
  for (const Tensor<T, Device>* g : {&dx, &dw, &db}) {
    PREFIXTUNE_CHECK(
        !detail::dense_overlaps(*g, dout) && !detail::dense_overlaps(*g, x) && !detail::dense_overlaps(*g, w),
        "linear_backward: gradients must not overlap dout, x or w");
  }
  const std::int64_t rows = detail::dense_leading_rows(x.shape());
  const std::int64_t ldi = std::max<std::int64_t>(1, cin), ldo = std::max<std::int64_t>(1, cout);
  if (dx.defined()) {  // (rows, Cin) += (rows, Cout) x (Cin, Cout)^T
    gemm(Device{}, Trans::N, Trans::T, rows, cin, cout, T(1), dout.data(), ldo, w.data(), ldo, T(1), dx.data(), ldi);
  }
  if (dw.defined()) {  // (Cin, Cout) += (rows, Cin)^T x (rows, Cout)
    gemm(Device{}, Trans::T, Trans::N, cin, cout, rows, T(1), x.data(), ldi, dout.data(), ldo, T(1), dw.data(), ldo);
  }
  if (db.defined()) column_sum_kernel(Device{}, dout.data(), rows, cout, db.data());
}

/// out = a b, batched over leading dimensions. Either operand may be a plain matrix shared by the whole batch;
/// when both are batched their leading dimensions must agree.
/// a (M, K) or (..., M, K); b (K, N) or (..., K, N); out (..., M, N) with the batched operand's leading dims.
template <class T, class Device>
void matmul_forward(const Tensor<T, Device>& a, const Tensor<T, Device>& b, Tensor<T, Device>& out) {
  const detail::MatmulDims d = detail::matmul_dims("matmul_forward", a, b);
  PREFIXTUNE_CHECK(out.defined() && out.shape() == d.out, "matmul_forward: out shape ", out.shape(), " should be ",
                   d.out, " for a ", a.shape(), " and b ", b.shape());
  PREFIXTUNE_CHECK(!detail::dense_overlaps(out, a) && !detail::dense_overlaps(out, b),
                   "matmul_forward: out must not overlap a or b");
  const std::int64_t ldk = std::max<std::int64_t>(1, d.k), ldn = std::max<std::int64_t>(1, d.n);
  if (!d.b_batched) {  // a's rows are contiguous over the batch: one (batch*M, K) x (K, N) GEMM
    const std::int64_t rows = (d.a_batched ? d.batch : 1) * d.m;
    gemm(Device{}, Trans::N, Trans::N, rows, d.n, d.k, T(1), a.data(), ldk, b.data(), ldn, T(0), out.data(), ldn);
    return;
  }
  gemm_strided_batched(Device{}, Trans::N, Trans::N, d.m, d.n, d.k, T(1), a.data(), ldk, d.a_batched ? d.m * d.k : 0,
                       b.data(), ldn, d.k * d.n, T(0), out.data(), ldn, d.m * d.n, d.batch);
}

/// Gradients of matmul_forward, ADDED into da = dout b^T and db = a^T dout; an unbatched operand's gradient is
/// summed over the batch. da or db may be undefined (skipped).
/// dout like matmul_forward's out; a, b as there; da like a; db like b.
template <class T, class Device>
void matmul_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& a, const Tensor<T, Device>& b,
                     Tensor<T, Device>& da, Tensor<T, Device>& db) {
  const detail::MatmulDims d = detail::matmul_dims("matmul_backward", a, b);
  PREFIXTUNE_CHECK(dout.defined() && dout.shape() == d.out, "matmul_backward: dout shape ", dout.shape(), " should be ",
                   d.out, " for a ", a.shape(), " and b ", b.shape());
  PREFIXTUNE_CHECK(!da.defined() || da.shape() == a.shape(), "matmul_backward: da shape ", da.shape(),
                   " does not match a ", a.shape());
  PREFIXTUNE_CHECK(!db.defined() || db.shape() == b.shape(), "matmul_backward: db shape ", db.shape(),
                   " does not match b ", b.shape());
  for (const Tensor<T, Device>* g : {&da, &db}) {
    PREFIXTUNE_CHECK(
        !detail::dense_overlaps(*g, dout) && !detail::dense_overlaps(*g, a) && !detail::dense_overlaps(*g, b),
        "matmul_backward: gradients must not overlap dout, a or b");
  }
  const std::int64_t ldk = std::max<std::int64_t>(1, d.k), ldn = std::max<std::int64_t>(1, d.n);
  const std::int64_t a_rows = (d.a_batched ? d.batch : 1) * d.m;
  if (da.defined()) {  // (M, K) += (M, N) x (K, N)^T per batch entry
    if (!d.b_batched) {
      gemm(Device{}, Trans::N, Trans::T, a_rows, d.k, d.n, T(1), dout.data(), ldn, b.data(), ldn, T(1), da.data(), ldk);
    } else if (d.a_batched) {
      gemm_strided_batched(Device{}, Trans::N, Trans::T, d.m, d.k, d.n, T(1), dout.data(), ldn, d.m * d.n, b.data(),
                           ldn, d.k * d.n, T(1), da.data(), ldk, d.m * d.k, d.batch);
    } else {  // a shared by the batch: its gradient sums the batch's products
      for (std::int64_t i = 0; i < d.batch; ++i) {
        gemm(Device{}, Trans::N, Trans::T, d.m, d.k, d.n, T(1), dout.data() + i * d.m * d.n, ldn,
             b.data() + i * d.k * d.n, ldn, T(1), da.data(), ldk);
      }
    }
  }
  if (db.defined()) {    // (K, N) += (M, K)^T x (M, N) per batch entry
    if (!d.b_batched) {  // b shared: the batch sum folds into one GEMM over all batch*M rows
      gemm(Device{}, Trans::T, Trans::N, d.k, d.n, a_rows, T(1), a.data(), ldk, dout.data(), ldn, T(1), db.data(), ldn);
    } else {
      gemm_strided_batched(Device{}, Trans::T, Trans::N, d.k, d.n, d.m, T(1), a.data(), ldk,
                           d.a_batched ? d.m * d.k : 0, dout.data(), ldn, d.m * d.n, T(1), db.data(), ldn, d.k * d.n,
                           d.batch);
    }
  }
}

}  // namespace prefixtune
