// SPDX-License-Identifier: MIT
// CUDA kernels of non-causal multi-head attention with separate queries and keys/values (cross-attention, or an
// encoder's bidirectional self-attention), prefix K/V and a key padding mask, forward and backward. As in the causal
// kernels (attention.cuh): cuBLAS strided-batched GEMMs over the (batch row, head) pairs on head-major copies, and
// row kernels for the masked softmax and its backward with the CPU kernel's rules.
#pragma once

#include <cmath>
#include <cstdint>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cuda/attention.cuh"

namespace prefixtune::detail {

/// The causal kernels' dims for the head split/merge and prefix GEMM helpers, over rows of Tn tokens `width`
/// values wide: cuda_split_heads(..., part = -1, ...) gathers head h from channels h*HS.. of rows d.C = width wide,
/// so width 2C with src kv (or kv + C) gathers the keys (or the values) of kv (B, Tk, 2C).
inline AttentionDims cross_attention_rows(const CrossAttentionDims& d, std::int64_t Tn, std::int64_t width) {
  AttentionDims a;
  a.B = d.B, a.T = Tn, a.C = width, a.NH = d.NH, a.HS = d.HS, a.P = d.P, a.Bp = d.Bp;
  return a;
}

/// Masked softmax of the score rows s (B*NH*Tq rows of L = P + Tk), in place, with attention_softmax_row's rules
/// (every key in view unless mask[b, j] == 0, the prefix always): hidden scores become -inf, then the plain row
/// softmax (softmax_forward_kernel: max-subtracted, sum in double) makes them exactly 0 and a row with nothing
/// visible all zeros.
template <class T>
void cuda_cross_attention_softmax(const CrossAttentionDims& d, T* s, const std::uint8_t* mask) {
  const std::int64_t Tq = d.Tq, Tk = d.Tk, NH = d.NH, P = d.P, L = d.L(), rows = d.B * NH * Tq;
  if (mask)
    cuda_for_elements("cross_attention mask", rows * Tk, [=] __device__(std::int64_t i) {
      const std::int64_t row = i / Tk, j = i % Tk;
      if (!mask[(row / (NH * Tq)) * Tk + j]) s[row * L + P + j] = -INFINITY;
    });
  softmax_forward_kernel(Cuda{}, s, s, rows, L);
}

/// In place: dprobs rows ds -> dscores = scale * p * (d - sum_j d_j p_j), hidden columns (p == 0) exactly 0. The
/// causal kernel's row backward serves with every row seen as the single query (T = 1) of a row of its own whose
/// first L - 1 columns are prefix slots: then no column is causally hidden.
template <class T>
void cuda_cross_attention_softmax_backward(const CrossAttentionDims& d, const T* p, T* ds, T scale) {
  AttentionDims rows;
  rows.B = d.B * d.Tq, rows.T = 1, rows.NH = d.NH, rows.P = d.L() - 1;
  cuda_attention_softmax_backward(rows, p, ds, scale);
}

/// Same contract as cross_attention_forward_kernel(Cpu, ...).
template <class T>
void cross_attention_forward_kernel(Cuda, const CrossAttentionDims& d, const T* q, const T* kv, const T* prefix_k,
                                    const T* prefix_v, const std::uint8_t* mask, T* out, T* probs) {
  const std::int64_t Tq = d.Tq, Tk = d.Tk, C = d.C, HS = d.HS, P = d.P, L = d.L(), BH = d.B * d.NH;
  const std::int64_t QH = Tq * HS, KH = Tk * HS, PH = P * HS, SL = Tq * L;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const AttentionDims qd = cross_attention_rows(d, Tq, C), kd = cross_attention_rows(d, Tk, 2 * C);
  auto qh = Tensor<T, Cuda>::empty(Shape{d.B, d.NH, Tq, HS}), oh = Tensor<T, Cuda>::empty(qh.shape());
  auto kh = Tensor<T, Cuda>::empty(Shape{d.B, d.NH, Tk, HS}), vh = Tensor<T, Cuda>::empty(kh.shape());
  Tensor<T, Cuda> ss;  // scores scratch when the caller keeps no probabilities
  T* s = probs ? probs : (ss = Tensor<T, Cuda>::empty(Shape{BH, Tq, L})).data();
  cuda_split_heads(qd, q, -1, qh.data());
  cuda_split_heads(kd, kv, -1, kh.data());
  cuda_split_heads(kd, kv + C, -1, vh.data());
  // Scores: scale q @ prefix_k^T into the first P columns, scale q @ k^T after them.
  if (P > 0)
    cuda_prefix_gemm(qd, Trans::N, Trans::T, Tq, P, HS, scale, qh.data(), HS, QH, false, prefix_k, HS, PH, true, T(0),
                     s, L, SL, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::T, Tq, Tk, HS, scale, qh.data(), HS, QH, kh.data(), HS, KH,
                                   T(0), s + P, L, SL, BH);
  cuda_cross_attention_softmax(d, s, mask);
  // Heads out = probs_prefix @ prefix_v + probs_keys @ v, then merged into (B, Tq, C).
  if (P > 0)
    cuda_prefix_gemm(qd, Trans::N, Trans::N, Tq, HS, P, T(1), s, L, SL, false, prefix_v, HS, PH, true, T(0), oh.data(),
                     HS, QH, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::N, Tq, HS, Tk, T(1), s + P, L, SL, vh.data(), HS, KH,
                                   P > 0 ? T(1) : T(0), oh.data(), HS, QH, BH);
  cuda_merge_heads(qd, oh.data(), out, C, 0, false);
}

/// Same contract as cross_attention_backward_kernel(Cpu, ...).
template <class T>
void cross_attention_backward_kernel(Cuda, const CrossAttentionDims& d, const T* dout, const T* q, const T* kv,
                                     const T* probs, const T* prefix_k, const T* prefix_v, T* dq, T* dkv, T* dprefix_k,
                                     T* dprefix_v) {
  const std::int64_t Tq = d.Tq, Tk = d.Tk, C = d.C, HS = d.HS, P = d.P, L = d.L(), BH = d.B * d.NH;
  const std::int64_t QH = Tq * HS, KH = Tk * HS, PH = P * HS, SL = Tq * L;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const bool want_pk = dprefix_k && P > 0, want_pv = dprefix_v && P > 0, want_ds = dq || dkv || want_pk;
  const AttentionDims qd = cross_attention_rows(d, Tq, C), kd = cross_attention_rows(d, Tk, 2 * C);
  const Shape q_heads{d.B, d.NH, Tq, HS}, k_heads{d.B, d.NH, Tk, HS};
  auto dy = Tensor<T, Cuda>::empty(q_heads);
  cuda_split_heads(qd, dout, -1, dy.data());
  if (want_pv)  // dprefix_v += probs_prefix^T @ dy
    cuda_prefix_gemm(qd, Trans::T, Trans::N, P, HS, Tq, T(1), probs, L, SL, false, dy.data(), HS, QH, false, T(1),
                     dprefix_v, HS, PH, true);
  if (!want_ds) return;
  // dprobs = dy @ [prefix_v; v]^T, then dscores in place.
  auto vh = Tensor<T, Cuda>::empty(k_heads);
  cuda_split_heads(kd, kv + C, -1, vh.data());
  auto ds = Tensor<T, Cuda>::empty(Shape{BH, Tq, L});
  if (P > 0)
    cuda_prefix_gemm(qd, Trans::N, Trans::T, Tq, P, HS, T(1), dy.data(), HS, QH, false, prefix_v, HS, PH, true, T(0),
                     ds.data(), L, SL, false);
  prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::T, Tq, Tk, HS, T(1), dy.data(), HS, QH, vh.data(), HS, KH,
                                   T(0), ds.data() + P, L, SL, BH);
  cuda_cross_attention_softmax_backward(d, probs, ds.data(), scale);
  Tensor<T, Cuda> qh;
  if (want_pk || dkv) {
    qh = Tensor<T, Cuda>::empty(q_heads);
    cuda_split_heads(qd, q, -1, qh.data());
  }
  if (want_pk)  // dprefix_k += dscores_prefix^T @ q
    cuda_prefix_gemm(qd, Trans::T, Trans::N, P, HS, Tq, T(1), ds.data(), L, SL, false, qh.data(), HS, QH, false, T(1),
                     dprefix_k, HS, PH, true);
  if (dq) {
    // dq += dscores_prefix @ prefix_k + dscores_keys @ k; v's heads are no longer needed: their buffer takes k's.
    T* kh = vh.data();
    cuda_split_heads(kd, kv, -1, kh);
    auto g = Tensor<T, Cuda>::empty(q_heads);
    if (P > 0)
      cuda_prefix_gemm(qd, Trans::N, Trans::N, Tq, HS, P, T(1), ds.data(), L, SL, false, prefix_k, HS, PH, true, T(0),
                       g.data(), HS, QH, false);
    prefixtune::gemm_strided_batched(Cuda{}, Trans::N, Trans::N, Tq, HS, Tk, T(1), ds.data() + P, L, SL, kh, HS, KH,
                                     P > 0 ? T(1) : T(0), g.data(), HS, QH, BH);
    cuda_merge_heads(qd, g.data(), dq, C, 0, true);
  }
  if (!dkv) return;
  auto g = Tensor<T, Cuda>::empty(k_heads);
  // dk = dscores_keys^T @ q
  prefixtune::gemm_strided_batched(Cuda{}, Trans::T, Trans::N, Tk, HS, Tq, T(1), ds.data() + P, L, SL, qh.data(), HS,
                                   QH, T(0), g.data(), HS, KH, BH);
  cuda_merge_heads(kd, g.data(), dkv, 2 * C, 0, true);
  // dv = probs_keys^T @ dy
  prefixtune::gemm_strided_batched(Cuda{}, Trans::T, Trans::N, Tk, HS, Tq, T(1), probs + P, L, SL, dy.data(), HS, QH,
                                   T(0), g.data(), HS, KH, BH);
  cuda_merge_heads(kd, g.data(), dkv, 2 * C, C, true);
}

}  // namespace prefixtune::detail
