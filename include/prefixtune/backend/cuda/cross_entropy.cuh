// SPDX-License-Identifier: MIT
// CUDA kernel of the fused LM head + cross-entropy: labelled rows of h gathered per chunk, one cuBLAS GEMM
// against E^T, a stable log-softmax row kernel (optional frozen logits bias and label smoothing; max shift, sums
// in double) that turns the logits into their gradient in place, and cuBLAS GEMMs for dh and dE from that buffer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/cuda/gemm.hpp"
#include "prefixtune/backend/cuda/rows.cuh"

namespace prefixtune::detail {

/// Same contract as cross_entropy_chunked_kernel(Cpu, ...): rows and targets are host arrays, bias (V) a device
/// array or nullptr; the loss sum is formed on the host in row order (independent of the chunking).
template <class T>
double cross_entropy_chunked_kernel(Cuda, const T* h, const T* E, const std::int64_t* rows, const std::int32_t* targets,
                                    std::int64_t n, std::int64_t C, std::int64_t V, double weight,
                                    std::int64_t chunk_rows, T* row_loss, T* dh, T* dE, const T* bias = nullptr,
                                    double label_smoothing = 0) {
  if (n == 0) return 0.0;
  const bool want_grad = dh != nullptr || dE != nullptr;
  const std::int64_t cap = std::min(chunk_rows, n);
  const auto d_rows = cuda_upload(rows, n);
  const auto d_targets = cuda_upload(targets, n);
  auto losses = Tensor<double, Cuda>::empty(Shape{n});
  auto hc = Tensor<T, Cuda>::empty(Shape{cap, C});
  auto logits = Tensor<T, Cuda>::empty(Shape{cap, V});
  Tensor<T, Cuda> dhc = dh ? Tensor<T, Cuda>::empty(Shape{cap, C}) : Tensor<T, Cuda>();
  for (std::int64_t c0 = 0; c0 < n; c0 += cap) {
    const std::int64_t m = std::min(cap, n - c0);
    const std::int64_t* ri = d_rows.data() + c0;
    const std::int32_t* ti = d_targets.data() + c0;
    T* hcp = hc.data();
    cuda_for_elements("cross_entropy gather", m * C,
                      [=] __device__(std::int64_t i) { hcp[i] = h[ri[i / C] * C + i % C]; });
    prefixtune::gemm(Cuda{}, Trans::N, Trans::T, m, V, C, T(1), hcp, C, E, C, T(0), logits.data(), V);
    T* z = logits.data();
    double* loss = losses.data() + c0;
    const double eps = label_smoothing;
    cuda_for_rows("cross_entropy rows", m, [=] __device__(std::int64_t r) {
      T* zr = z + r * V;
      // the logits z_j = zr[j] (+ bias[j]); the bias is added on the fly, the row is only written after block_max
      const std::int32_t label = ti[r];
      const T z_label = bias ? zr[label] + bias[label] : zr[label];  // read before any thread overwrites the row
      T mx = -INFINITY;
      double zsum = 0;  // for label smoothing's mean_j z_j
      for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const T zj = bias ? zr[j] + bias[j] : zr[j];
        mx = zj > mx ? zj : mx;
        if (eps != 0) zsum += static_cast<double>(zj);
      }
      mx = block_max(mx);  // synchronizes: every z_label read is done
      double sum = 0;
      for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const T e = exp((bias ? zr[j] + bias[j] : zr[j]) - mx);
        if (want_grad) zr[j] = e;
        sum += static_cast<double>(e);
      }
      sum = block_sum(sum);
      const double lse = static_cast<double>(mx) + log(sum);
      if (eps != 0) {  // (1 - eps) (lse - z[label]) + eps (lse - mean_j z_j)
        const double z_mean = block_sum(zsum) / static_cast<double>(V);
        if (threadIdx.x == 0) loss[r] = lse - (1 - eps) * static_cast<double>(z_label) - eps * z_mean;
      } else if (threadIdx.x == 0) {
        loss[r] = lse - static_cast<double>(z_label);
      }
      if (!want_grad) return;
      // weight * (softmax(z) - (1 - eps) onehot(label) - eps / V)
      const T s = static_cast<T>(weight / sum);
      const T uniform = static_cast<T>(weight * eps / static_cast<double>(V));
      for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) zr[j] = eps != 0 ? zr[j] * s - uniform : zr[j] * s;
      __syncthreads();
      if (threadIdx.x == 0) zr[label] -= static_cast<T>(eps != 0 ? weight * (1 - eps) : weight);
    });
    if (dh) {  // dhc (m, C) = dlogits (m, V) E (V, C), scattered to the rows' positions
      prefixtune::gemm(Cuda{}, Trans::N, Trans::N, m, C, V, T(1), z, V, E, C, T(0), dhc.data(), C);
      const T* src = dhc.data();
      cuda_for_elements("cross_entropy scatter dh", m * C,
                        [=] __device__(std::int64_t i) { dh[ri[i / C] * C + i % C] = src[i]; });
    }
    if (dE)  // dE (V, C) += dlogits^T (V, m) hc (m, C)
      prefixtune::gemm(Cuda{}, Trans::T, Trans::N, V, C, m, T(1), z, V, hcp, C, T(1), dE, C);
  }
  if (row_loss) {
    const std::int64_t* ri = d_rows.data();
    const double* l = losses.data();
    cuda_for_elements("cross_entropy row losses", n,
                      [=] __device__(std::int64_t i) { row_loss[ri[i]] = static_cast<T>(l[i]); });
  }
  double total = 0;
  for (double l : losses.to_vector()) total += l;  // in row order, as on the CPU
  return total;
}

}  // namespace prefixtune::detail
