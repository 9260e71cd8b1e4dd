// SPDX-License-Identifier: MIT
// CPU kernel of the fused LM head + cross-entropy: gathers labelled rows of h in chunks, one GEMM against E^T
// per chunk (plus an optional frozen logits bias), a stable log-softmax per row with optional label smoothing,
// and (optionally) dh / dE from the same logits buffer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/cpu/vec_math.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune::detail {

/// Cross-entropy of one logits row z (V) with target `label`: returns logsumexp(z) - z[label] in double.
/// Log-sum-exp trick: with m = max_j z_j, logsumexp(z) = m + log sum_j exp(z_j - m); every exponent is <= 0
/// and the largest term is exactly 1, so nothing overflows and the sum never underflows to 0.
/// z is overwritten with exp(z - m); with want_grad, with the loss gradient weight * (softmax(z) - onehot(label)).
/// Label smoothing eps (PyTorch's F.cross_entropy(label_smoothing=eps)) mixes the target with the uniform
/// distribution: loss = (1 - eps) (lse - z[label]) + eps (lse - mean_j z_j) = lse - (1 - eps) z[label] - eps mean(z),
/// gradient weight * (softmax(z) - (1 - eps) onehot(label) - eps / V). eps = 0 runs exactly the plain arithmetic.
template <class T>
double cross_entropy_row(T* z, std::int64_t V, std::int32_t label, double weight, bool want_grad,
                         double label_smoothing = 0) {
  T mx = z[0], mn = z[0];
#if defined(_OPENMP)
#pragma omp simd reduction(max : mx) reduction(min : mn)
#endif
  for (std::int64_t j = 0; j < V; ++j) {
    mx = z[j] > mx ? z[j] : mx;
    mn = z[j] < mn ? z[j] : mn;
  }
  const double z_label = static_cast<double>(z[label]);
  const double eps = label_smoothing;
  const double z_mean = eps != 0 ? sum_double(z, V) / static_cast<double>(V) : 0.0;  // before z is overwritten
  bool fast = false;
  if constexpr (std::is_same_v<T, float>) {
    if (mn - mx >= -kFastExpMaxSpread) {  // false for NaN or infinite spread: std::exp handles those
      exp_shifted_f32(z, z, V, mx);
      fast = true;
    }
  }
  double sum;
  if (fast) {
    sum = sum_double(z, V);
  } else {
    sum = 0;
    for (std::int64_t j = 0; j < V; ++j) {
      z[j] = std::exp(z[j] - mx);
      sum += static_cast<double>(z[j]);
    }
  }
  const double lse = static_cast<double>(mx) + std::log(sum);
  const double loss = eps != 0 ? lse - (1 - eps) * z_label - eps * z_mean : lse - z_label;
  if (want_grad) {
    const T scale = static_cast<T>(weight / sum);
#if defined(_OPENMP)
#pragma omp simd
#endif
    for (std::int64_t j = 0; j < V; ++j) z[j] *= scale;
    if (eps != 0) {
      const T uniform = static_cast<T>(weight * eps / static_cast<double>(V));
#if defined(_OPENMP)
#pragma omp simd
#endif
      for (std::int64_t j = 0; j < V; ++j) z[j] -= uniform;
    }
    z[label] -= static_cast<T>(eps != 0 ? weight * (1 - eps) : weight);
  }
  return loss;
}

/// Fused LM head + cross-entropy over n selected rows, chunk_rows at a time, never holding more than
/// (chunk_rows, V) logits. rows[i] (host array) is the flat index of a row of h (N_all, C) and targets[i] in
/// [0, V) its label (both checked by the caller). E is (V, C). Returns sum_i loss_i in double (unweighted).
/// Optional outputs (nullptr = skip, no work): row_loss (N_all) gets loss_i at rows[i]; dh (N_all, C) gets
/// weight * d loss_i / d h at rows[i] (other rows untouched); dE (V, C) += weight * sum_i d loss_i / d E.
/// bias (V, nullptr = none) is added to every logits row (it gets no gradient); label_smoothing in [0, 1) as in
/// cross_entropy_row (checked by the caller).
template <class T>
double cross_entropy_chunked_kernel(Cpu, const T* h, const T* E, const std::int64_t* rows, const std::int32_t* targets,
                                    std::int64_t n, std::int64_t C, std::int64_t V, double weight,
                                    std::int64_t chunk_rows, T* row_loss, T* dh, T* dE, const T* bias = nullptr,
                                    double label_smoothing = 0) {
  if (n == 0) return 0.0;
  const bool want_grad = dh != nullptr || dE != nullptr;
  const std::int64_t cap = std::min(chunk_rows, n);
  auto hc = Tensor<T, Cpu>::empty(Shape{cap, C});      // gathered rows of h
  auto logits = Tensor<T, Cpu>::empty(Shape{cap, V});  // logits, then their gradient in place
  Tensor<T, Cpu> dhc = dh ? Tensor<T, Cpu>::empty(Shape{cap, C}) : Tensor<T, Cpu>();
  std::vector<double> losses(static_cast<std::size_t>(cap));
  double total = 0;
  for (std::int64_t c0 = 0; c0 < n; c0 += cap) {
    const std::int64_t m = std::min(cap, n - c0);
    for (std::int64_t i = 0; i < m; ++i) std::memcpy(hc.data() + i * C, h + rows[c0 + i] * C, sizeof(T) * C);
    // logits (m, V) = hc (m, C) E^T (+ bias, added per row below)
    gemm(Cpu{}, Trans::N, Trans::T, m, V, C, T(1), hc.data(), C, E, C, T(0), logits.data(), V);
    T* z = logits.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (std::int64_t i = 0; i < m; ++i) {
      T* zi = z + i * V;
      if (bias) {
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (std::int64_t j = 0; j < V; ++j) zi[j] += bias[j];
      }
      losses[i] = cross_entropy_row(zi, V, targets[c0 + i], weight, want_grad, label_smoothing);
    }
    for (std::int64_t i = 0; i < m; ++i) {  // in row order: the total does not depend on chunking or threads
      total += losses[i];
      if (row_loss) row_loss[rows[c0 + i]] = static_cast<T>(losses[i]);
    }
    if (dh) {
      // dhc (m, C) = dlogits (m, V) E (V, C), then scattered to the rows' positions
      gemm(Cpu{}, Trans::N, Trans::N, m, C, V, T(1), z, V, E, C, T(0), dhc.data(), C);
      for (std::int64_t i = 0; i < m; ++i) std::memcpy(dh + rows[c0 + i] * C, dhc.data() + i * C, sizeof(T) * C);
    }
    if (dE) {
      // dE (V, C) += dlogits^T (V, m) hc (m, C)
      gemm(Cpu{}, Trans::T, Trans::N, V, C, m, T(1), z, V, hc.data(), C, T(1), dE, C);
    }
  }
  return total;
}

}  // namespace prefixtune::detail
