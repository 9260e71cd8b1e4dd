// SPDX-License-Identifier: MIT
// CUDA kernels of the element-wise ops (accumulate, add, scale, GELU, tanh, dropout), the optimizer (AdamW step,
// sum of squares), bias and column sums, the axis swap, and embedding lookups. The scalar math (gelu_value,
// gelu_derivative, dropout_keeps, Philox) is the CPU kernels' own, written once for host and device.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/adamw.hpp"
#include "prefixtune/backend/common/elementwise.hpp"
#include "prefixtune/backend/common/embedding.hpp"
#include "prefixtune/backend/cuda/launch.cuh"

namespace prefixtune::detail {

template <class T>
void accumulate_kernel(Cuda, T* dst, const T* src, T alpha, std::int64_t n) {
  cuda_for_elements("accumulate", n, [=] __device__(std::int64_t i) { dst[i] += alpha * src[i]; });
}

template <class T>
void add_forward_kernel(Cuda, const T* a, const T* b, T* out, std::int64_t n) {
  cuda_for_elements("add_forward", n, [=] __device__(std::int64_t i) { out[i] = a[i] + b[i]; });
}

template <class T>
void scale_forward_kernel(Cuda, const T* x, T s, T* out, std::int64_t n) {
  cuda_for_elements("scale_forward", n, [=] __device__(std::int64_t i) { out[i] = s * x[i]; });
}

template <class T>
void gelu_forward_kernel(Cuda, const T* x, T* out, std::int64_t n) {
  cuda_for_elements("gelu_forward", n, [=] __device__(std::int64_t i) { out[i] = gelu_value(x[i]); });
}

template <class T>
void gelu_backward_kernel(Cuda, const T* dout, const T* x, T* dx, std::int64_t n) {
  cuda_for_elements("gelu_backward", n, [=] __device__(std::int64_t i) { dx[i] += dout[i] * gelu_derivative(x[i]); });
}

template <class T>
void gelu_exact_forward_kernel(Cuda, const T* x, T* out, std::int64_t n) {
  cuda_for_elements("gelu_exact_forward", n, [=] __device__(std::int64_t i) { out[i] = gelu_exact_value(x[i]); });
}

template <class T>
void gelu_exact_backward_kernel(Cuda, const T* dout, const T* x, T* dx, std::int64_t n) {
  cuda_for_elements("gelu_exact_backward", n,
                    [=] __device__(std::int64_t i) { dx[i] += dout[i] * gelu_exact_derivative(x[i]); });
}

template <class T>
void tanh_forward_kernel(Cuda, const T* x, T* out, std::int64_t n) {
  cuda_for_elements("tanh_forward", n, [=] __device__(std::int64_t i) { out[i] = tanh(x[i]); });
}

template <class T>
void tanh_backward_kernel(Cuda, const T* dout, const T* y, T* dx, std::int64_t n) {
  cuda_for_elements("tanh_backward", n,
                    [=] __device__(std::int64_t i) { dx[i] += dout[i] * tanh_derivative_from_output(y[i]); });
}

/// The CPU kernel's mask, element for element: one thread per Philox block of four elements.
template <class T>
void dropout_apply_kernel(Cuda, const T* src, T p, std::uint64_t seed, std::uint64_t offset, T* dst, std::int64_t n,
                          bool accumulate) {
  const T scale = T(1) / (T(1) - p);
  cuda_for_elements("dropout", (n + 3) / 4, [=] __device__(std::int64_t b) {
    dropout_apply_block(src, p, scale, seed, offset, dst, n, b, accumulate);
  });
}

template <class T>
void dropout_forward_kernel(Cuda, const T* x, T p, std::uint64_t seed, std::uint64_t offset, T* out, std::int64_t n) {
  dropout_apply_kernel(Cuda{}, x, p, seed, offset, out, n, false);
}

template <class T>
void dropout_backward_kernel(Cuda, const T* dout, T p, std::uint64_t seed, std::uint64_t offset, T* dx,
                             std::int64_t n) {
  dropout_apply_kernel(Cuda{}, dout, p, seed, offset, dx, n, true);
}

/// The CPU kernel's AdamW update (the same AdamWStep::update per element).
template <class T>
void adamw_step_kernel(Cuda, T* p, const T* g, T* m, T* v, std::int64_t n, const AdamWScalars& s) {
  const AdamWStep<T> step(s);
  cuda_for_elements("adamw_step", n, [=] __device__(std::int64_t i) { step.update(p[i], g[i], m[i], v[i]); });
}

inline constexpr int kSumSquaresBlocks = 264;  // two per SM of an H100; the partials are summed on the host

template <class T>
__global__ void sum_squares_partials(const T* x, std::int64_t n, double* partial) {
  double acc = 0;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const double xi = static_cast<double>(x[i]);
    acc += xi * xi;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/// sum_i x[i]^2 in double, deterministic: fixed grid, per-block partials added on the host in block order.
template <class T>
double sum_squares_kernel(Cuda, const T* x, std::int64_t n) {
  if (n <= 0) return 0.0;
  const unsigned blocks = std::min<unsigned>(kSumSquaresBlocks, cuda_blocks(n));
  auto partial = Tensor<double, Cuda>::empty(Shape{static_cast<std::int64_t>(blocks)});
  sum_squares_partials<<<blocks, kCudaThreads, 0, cuda_stream()>>>(x, n, partial.data());
  cuda_check_launch("sum_squares");
  double total = 0;
  for (double v : partial.to_vector()) total += v;
  return total;
}

/// y (B, A, X) = x (A, B, X) (accumulate: y +=).
template <class T>
void transpose01_kernel(Cuda, const T* x, T* y, std::int64_t A, std::int64_t B, std::int64_t X, bool accumulate) {
  cuda_for_elements("transpose01", A * B * X, [=] __device__(std::int64_t i) {
    const std::int64_t xi = i % X, ab = i / X, b = ab % B, a = ab / B;  // i indexes x (A, B, X)
    const std::int64_t o = (b * A + a) * X + xi;
    if (accumulate) {
      y[o] += x[i];
    } else {
      y[o] = x[i];
    }
  });
}

template <class T>
void bias_add_kernel(Cuda, T* out, const T* bias, std::int64_t rows, std::int64_t cols) {
  cuda_for_elements("bias_add", rows * cols, [=] __device__(std::int64_t i) { out[i] += bias[i % cols]; });
}

/// sums[j] += sum_r x[r, j] in double; one thread per column walks the rows in order (deterministic).
template <class T>
void column_sum_kernel(Cuda, const T* x, std::int64_t rows, std::int64_t cols, T* sums) {
  cuda_for_elements("column_sum", cols, [=] __device__(std::int64_t j) {
    double acc = 0;
    for (std::int64_t r = 0; r < rows; ++r) acc += static_cast<double>(x[r * cols + j]);
    sums[j] = static_cast<T>(static_cast<double>(sums[j]) + acc);
  });
}

/// The ids are checked on the host (one small copy): the checks name the position of the first bad id.
inline BadTokenId find_bad_token_id(Cuda, const std::int32_t* ids, std::int64_t n, std::int64_t V) {
  std::vector<std::int32_t> host(static_cast<std::size_t>(n));
  if (n > 0) Cuda::copy_to_host(host.data(), ids, static_cast<std::size_t>(n) * sizeof(std::int32_t));
  return find_bad_token_id(Cpu{}, host.data(), n, V);
}

template <class T>
void embedding_forward_kernel(Cuda, const std::int32_t* ids, const T* table, T* out, std::int64_t n, std::int64_t C) {
  cuda_for_elements("embedding_forward", n * C, [=] __device__(std::int64_t i) {
    const std::int64_t r = i / C;
    out[i] = table[static_cast<std::int64_t>(ids[r]) * C + i % C];
  });
}

/// dtable[ids[i], :] += dout[i, :]: one thread per column walks the ids in order, so repeated ids never race and
/// the sums are deterministic (as on the CPU).
template <class T>
void embedding_backward_kernel(Cuda, const T* dout, const std::int32_t* ids, T* dtable, std::int64_t n,
                               std::int64_t C) {
  cuda_for_elements("embedding_backward", C, [=] __device__(std::int64_t j) {
    for (std::int64_t i = 0; i < n; ++i) dtable[static_cast<std::int64_t>(ids[i]) * C + j] += dout[i * C + j];
  });
}

}  // namespace prefixtune::detail
