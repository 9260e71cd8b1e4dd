// SPDX-License-Identifier: MIT
// CUDA kernels of causal multi-head attention with prefix K/V and a key padding mask, forward and backward.
// The products are cuBLAS strided-batched GEMMs over the (batch row, head) pairs on head-major copies of q, k, v;
// the masked softmax and its backward are row kernels with the CPU kernel's rules (hidden columns exactly 0, a
// row with nothing visible all zeros, sums in double).
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cuda/gemm.hpp"
#include "prefixtune/backend/cuda/rows.cuh"

namespace prefixtune::detail {

/// heads (B, NH, T, HS) = the `part`-th third (0 q, 1 k, 2 v) of qkv (B, T, 3C), or with part = -1 a (B, T, C)
/// tensor such as dout.
template <class T>
void cuda_split_heads(const AttentionDims& d, const T* src, int part, T* heads) {
  const std::int64_t Tn = d.T, C = d.C, NH = d.NH, HS = d.HS;
  const std::int64_t stride = part < 0 ? C : 3 * C, off = part < 0 ? 0 : part * C;
  cuda_for_elements("attention split heads", d.B * NH * Tn * HS, [=] __device__(std::int64_t i) {
    const std::int64_t e = i % HS, t = (i / HS) % Tn, h = (i / (HS * Tn)) % NH, b = i / (HS * Tn * NH);
    heads[i] = src[(b * Tn + t) * stride + off + h * HS + e];
  });
}

/// dst (B, T, width) at channel offset `off` (+)= heads (B, NH, T, HS), width = C or 3C.
template <class T>
void cuda_merge_heads(const AttentionDims& d, const T* heads, T* dst, std::int64_t width, std::int64_t off,
                      bool accumulate) {
  const std::int64_t Tn = d.T, NH = d.NH, HS = d.HS;
  cuda_for_elements("attention merge heads", d.B * NH * Tn * HS, [=] __device__(std::int64_t i) {
    const std::int64_t e = i % HS, t = (i / HS) % Tn, h = (i / (HS * Tn)) % NH, b = i / (HS * Tn * NH);
    T* o = dst + (b * Tn + t) * width + off + h * HS + e;
    if (accumulate) {
      *o += heads[i];
    } else {
      *o = heads[i];
    }
  });
}

/// For every (b, h): C_bh = alpha op(A_bh) op(B_bh) + beta C_bh, where the operands flagged *_is_prefix are a
/// prefix tensor (Bp, NH, P, HS): per head shared across b (Bp == 1: one batched call per b; a prefix C accumulates
/// in b order) or per row (Bp == B). Strides are per (b, h).
template <class T>
void cuda_prefix_gemm(const AttentionDims& d, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                      T alpha, const T* a, std::int64_t lda, std::int64_t sa, bool a_is_prefix, const T* b,
                      std::int64_t ldb, std::int64_t sb, bool b_is_prefix, T beta, T* c, std::int64_t ldc,
                      std::int64_t sc, bool c_is_prefix) {
  if (d.Bp != 1) {
    prefixtune::gemm_strided_batched(Cuda{}, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc,
                                     d.B * d.NH);
    return;
  }
  for (std::int64_t bi = 0; bi < d.B; ++bi) {  // prefix operands at offset 0 for every b
    const std::int64_t row = bi * d.NH;
    prefixtune::gemm_strided_batched(Cuda{}, ta, tb, m, n, k, alpha, a + (a_is_prefix ? 0 : row * sa), lda, sa,
                                     b + (b_is_prefix ? 0 : row * sb), ldb, sb, c_is_prefix && bi > 0 ? T(1) : beta,
                                     c + (c_is_prefix ? 0 : row * sc), ldc, sc, d.NH);
  }
}

/// Masked causal softmax of the score rows s (B*NH*T rows of L = P + T), in place (see attention_softmax_row).
template <class T>
void cuda_attention_softmax(const AttentionDims& d, T* s, const std::uint8_t* mask) {
  const std::int64_t Tn = d.T, NH = d.NH, P = d.P, L = d.L();
  const std::int32_t* from = d.prefix_from;
  cuda_for_rows("attention softmax", d.B * NH * Tn, [=] __device__(std::int64_t row) {
    const std::int64_t t = row % Tn, b = row / (Tn * NH), end = P + t + 1;
    T* sr = s + row * L;
    const std::uint8_t* m = mask ? mask + b * Tn : nullptr;
    const bool prefix_visible = !from || t >= from[b];
    auto visible = [&](std::int64_t j) { return j < P ? prefix_visible : (j < end && (!m || m[j - P])); };
    T mx = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < end; j += blockDim.x)
      if (visible(j)) mx = sr[j] > mx ? sr[j] : mx;
    mx = block_max(mx);
    if (mx == T(-INFINITY)) {  // nothing visible (no prefix in view and every key so far padded)
      for (std::int64_t j = threadIdx.x; j < L; j += blockDim.x) sr[j] = T(0);
      return;
    }
    double sum = 0;
    for (std::int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      const T e = visible(j) ? exp(sr[j] - mx) : T(0);
      sr[j] = e;
      sum += static_cast<double>(e);
    }
    const T inv = static_cast<T>(1.0 / block_sum(sum));
    for (std::int64_t j = threadIdx.x; j < end; j += blockDim.x) sr[j] *= inv;
  });
}

/// In place: dprobs rows -> dscores = scale * p * (d - sum_j d_j p_j); hidden columns (p == 0) become 0.
template <class T>
void cuda_attention_softmax_backward(const AttentionDims& d, const T* p, T* ds, T scale) {
  const std::int64_t Tn = d.T, P = d.P, L = d.L();
  cuda_for_rows("attention softmax backward", d.B * d.NH * Tn, [=] __device__(std::int64_t row) {
    const std::int64_t t = row % Tn, end = P + t + 1;
    const T* pr = p + row * L;
    T* dr = ds + row * L;
    double dot = 0;
    for (std::int64_t j = threadIdx.x; j < end; j += blockDim.x)
      if (pr[j] != T(0)) dot += static_cast<double>(dr[j]) * pr[j];
    const T tdot = static_cast<T>(block_sum(dot));
    for (std::int64_t j = threadIdx.x; j < L; j += blockDim.x)
      dr[j] = j < end && pr[j] != T(0) ? scale * pr[j] * (dr[j] - tdot) : T(0);
  });
}

/// Same contract as attention_forward_kernel(Cpu, ...).
template <class T>
void attention_forward_kernel(Cuda, const AttentionDims& d, const T* qkv, const T* prefix_k, const T* prefix_v,
                              const std::uint8_t* mask, T* out, T* cache_q, T* cache_k, T* cache_v, T* probs) {
  const std::int64_t Tn = d.T, HS = d.HS, P = d.P, L = d.L(), BH = d.B * d.NH, TH = Tn * HS, PH = P * HS;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const Shape heads{d.B, d.NH, Tn, HS};
  Tensor<T, Cuda> sq, sk, sv, ss, so;  // scratch when the caller keeps no cache
  T* q = cache_q ? cache_q : (sq = Tensor<T, Cuda>::empty(heads)).data();
  T* k = cache_k ? cache_k : (sk = Tensor<T, Cuda>::empty(heads)).data();
  T* v = cache_v ? cache_v : (sv = Tensor<T, Cuda>::empty(heads)).data();
  T* s = probs ? probs : (ss = Tensor<T, Cuda>::empty(Shape{BH, Tn, L})).data();
  T* o = (so = Tensor<T, Cuda>::empty(heads)).data();
  cuda_split_heads(d, qkv, 0, q);
  cuda_split_heads(d, qkv, 1, k);
  cuda_split_heads(d, qkv, 2, v);
  // Scores: scale q @ prefix_k^T into the first P columns, scale q @ k^T after them.
  if (P > 0)
    cuda_prefix_gemm(d, Trans::N, Trans::T, Tn, P, HS, scale, q, HS, TH, false, prefix_k, HS, PH, true, T(0), s, L,
                     Tn * L, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::T, Tn, Tn, HS, scale, q, HS, TH, k, HS, TH, T(0), s + P, L,
                                   Tn * L, BH);
  cuda_attention_softmax(d, s, mask);
  // Heads out = probs_prefix @ prefix_v + probs_tokens @ v, then merged into (B, T, C).
  if (P > 0)
    cuda_prefix_gemm(d, Trans::N, Trans::N, Tn, HS, P, T(1), s, L, Tn * L, false, prefix_v, HS, PH, true, T(0), o, HS,
                     TH, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::N, Tn, HS, Tn, T(1), s + P, L, Tn * L, v, HS, TH,
                                   P > 0 ? T(1) : T(0), o, HS, TH, BH);
  cuda_merge_heads(d, o, out, d.C, 0, false);
}

/// Same contract as attention_backward_kernel(Cpu, ...).
template <class T>
void attention_backward_kernel(Cuda, const AttentionDims& d, const T* dout, const T* cache_q, const T* cache_k,
                               const T* cache_v, const T* probs, const T* prefix_k, const T* prefix_v, T* dqkv,
                               T* dprefix_k, T* dprefix_v) {
  const std::int64_t Tn = d.T, C = d.C, HS = d.HS, P = d.P, L = d.L(), BH = d.B * d.NH, TH = Tn * HS, PH = P * HS;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const bool want_pk = dprefix_k && P > 0, want_pv = dprefix_v && P > 0, want_ds = dqkv || want_pk;
  const Shape heads{d.B, d.NH, Tn, HS};
  auto dy = Tensor<T, Cuda>::empty(heads);
  cuda_split_heads(d, dout, -1, dy.data());
  if (want_pv)  // dprefix_v += probs_prefix^T @ dy
    cuda_prefix_gemm(d, Trans::T, Trans::N, P, HS, Tn, T(1), probs, L, Tn * L, false, dy.data(), HS, TH, false, T(1),
                     dprefix_v, HS, PH, true);
  if (!want_ds) return;
  // dprobs = dy @ [prefix_v; v]^T, then dscores in place.
  auto ds = Tensor<T, Cuda>::empty(Shape{BH, Tn, L});
  if (P > 0)
    cuda_prefix_gemm(d, Trans::N, Trans::T, Tn, P, HS, T(1), dy.data(), HS, TH, false, prefix_v, HS, PH, true, T(0),
                     ds.data(), L, Tn * L, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::T, Tn, Tn, HS, T(1), dy.data(), HS, TH, cache_v, HS, TH,
                                   T(0), ds.data() + P, L, Tn * L, BH);
  cuda_attention_softmax_backward(d, probs, ds.data(), scale);
  if (want_pk)  // dprefix_k += dscores_prefix^T @ q
    cuda_prefix_gemm(d, Trans::T, Trans::N, P, HS, Tn, T(1), ds.data(), L, Tn * L, false, cache_q, HS, TH, false, T(1),
                     dprefix_k, HS, PH, true);
  if (!dqkv) return;
  auto g = Tensor<T, Cuda>::empty(heads);
  // dq = dscores_prefix @ prefix_k + dscores_tokens @ k
  if (P > 0)
    cuda_prefix_gemm(d, Trans::N, Trans::N, Tn, HS, P, T(1), ds.data(), L, Tn * L, false, prefix_k, HS, PH, true, T(0),
                     g.data(), HS, TH, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::N, Tn, HS, Tn, T(1), ds.data() + P, L, Tn * L, cache_k, HS,
                                   TH, P > 0 ? T(1) : T(0), g.data(), HS, TH, BH);
  cuda_merge_heads(d, g.data(), dqkv, 3 * C, 0, true);
  // dk = dscores_tokens^T @ q
  prefixtune::gemm_strided_batched(Cuda{}, Trans::T, Trans::N, Tn, HS, Tn, T(1), ds.data() + P, L, Tn * L, cache_q, HS,
                                   TH, T(0), g.data(), HS, TH, BH);
  cuda_merge_heads(d, g.data(), dqkv, 3 * C, C, true);
  // dv = probs_tokens^T @ dy
  prefixtune::gemm_strided_batched(Cuda{}, Trans::T, Trans::N, Tn, HS, Tn, T(1), probs + P, L, Tn * L, dy.data(), HS,
                                   TH, T(0), g.data(), HS, TH, BH);
  cuda_merge_heads(d, g.data(), dqkv, 3 * C, 2 * C, true);
}

}  // namespace prefixtune::detail
