// SPDX-License-Identifier: MIT
// CPU kernels of multi-head causal attention with prefix K/V and key padding mask: one parallel loop over the
// (batch row, head) pairs, each doing its own GEMMs and masked softmax rows (forward and backward).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/backend/cpu/vec_math.hpp"
#include "prefixtune/core/device.hpp"

namespace prefixtune::detail {

/// Query rows per block of the causal token GEMMs: block [r0, r1) only needs key columns [0, r1), so the
/// products skip most of the hidden upper triangle (measured faster than the full square at T = 128).
inline constexpr std::int64_t kAttentionCausalTile = 32;

/// Below this many multiply-adds of score work the (b, h) loop runs on one thread: counted in multiply-adds of
/// the score products (B NH T L HS), not in elements, hence twice the element threshold.
inline constexpr std::int64_t kAttentionParallelMin = 2 * kParallelMinElements;

/// Whether the (b, h) loop is worth a parallel region (else the GEMMs may still thread internally).
inline bool attention_parallel(const AttentionDims& d) {
  return d.B * d.NH >= num_threads() && d.B * d.NH * d.T * d.L() * d.HS >= kAttentionParallelMin;
}

/// exp(x[j] - shift) in place for j < n, every x[j] <= shift: the vectorized float exp of the cross-entropy
/// kernel when the row's spread allows it, std::exp otherwise (and always for double).
template <class T>
void attention_exp_shifted(T* x, std::int64_t n, T shift, T min_value) {
  if constexpr (std::is_same_v<T, float>) {
    if (min_value - shift >= -kFastExpMaxSpread) {  // false for NaN or infinite spread
      exp_shifted_f32(x, x, n, shift);
      return;
    }
  }
  for (std::int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j] - shift);
}

/// One score row s (P + T columns) of query t, in place: the masked, max-shifted softmax. Visible: the P prefix
/// columns (unless prefix_visible is false: an infix not yet reached), and token columns P + j for j <= t with
/// m[j] != 0 (m may be null: no padding). Hidden columns become exactly 0; those right of the causal edge are
/// never read (they may hold garbage). A row with nothing visible becomes all zeros. The sum is accumulated in
/// double.
template <class T>
void attention_softmax_row(T* s, const std::uint8_t* m, std::int64_t P, std::int64_t t, std::int64_t L,
                           bool prefix_visible = true) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const std::int64_t end = P + t + 1;  // columns >= end: causally hidden
  if (m)
    for (std::int64_t j = 0; j <= t; ++j)
      if (!m[j]) s[P + j] = kNegInf;
  if (!prefix_visible) std::fill(s, s + P, kNegInf);
  T mx = kNegInf;
  for (std::int64_t j = 0; j < end; ++j) mx = s[j] > mx ? s[j] : mx;
  if (mx == kNegInf) {  // nothing visible
    std::fill(s, s + L, T(0));
    return;
  }
  if (m)  // hidden keys take the max so the exp below stays in range; they are zeroed right after
    for (std::int64_t j = 0; j <= t; ++j)
      if (!m[j]) s[P + j] = mx;
  if (!prefix_visible) std::fill(s, s + P, mx);
  T mn = mx;
  for (std::int64_t j = 0; j < end; ++j) mn = s[j] < mn ? s[j] : mn;
  attention_exp_shifted(s, end, mx, mn);
  if (m)
    for (std::int64_t j = 0; j <= t; ++j)
      if (!m[j]) s[P + j] = T(0);
  if (!prefix_visible) std::fill(s, s + P, T(0));
  const T inv = static_cast<T>(1.0 / sum_double(s, end));
  for (std::int64_t j = 0; j < end; ++j) s[j] *= inv;
  std::fill(s + end, s + L, T(0));
}

/// One row in place: dprobs d -> dscores = scale * p * (d - sum_j d_j p_j) for the first `end` columns, taking
/// the gradient back through the softmax and the score scaling. Hidden columns (p exactly 0; d there is never
/// read, it may be garbage) and columns >= end become exactly 0, so dscores can feed full GEMMs.
template <class T>
void attention_softmax_backward_row(const T* p, T* d, std::int64_t end, std::int64_t L, T scale) {
  double dot = 0;
  for (std::int64_t j = 0; j < end; ++j) dot += p[j] != T(0) ? static_cast<double>(d[j]) * p[j] : 0.0;
  const T tdot = static_cast<T>(dot);
  for (std::int64_t j = 0; j < end; ++j) d[j] = p[j] != T(0) ? scale * p[j] * (d[j] - tdot) : T(0);
  std::fill(d + end, d + L, T(0));
}

/// C (row blocks of the causal token part) = alpha * A @ X^T + beta * C: rows [r0, r1) of C get columns [0, r1).
/// A (T, HS) with leading dimension lda, X (T, HS) with ldx, C (T, >= T) with ldc.
template <class T>
void attention_causal_abt(std::int64_t Tn, std::int64_t HS, T alpha, const T* a, std::int64_t lda, const T* x,
                          std::int64_t ldx, T* c, std::int64_t ldc) {
  for (std::int64_t r0 = 0; r0 < Tn; r0 += kAttentionCausalTile) {
    const std::int64_t r1 = std::min(Tn, r0 + kAttentionCausalTile);
    gemm(Cpu{}, Trans::N, Trans::T, r1 - r0, r1, HS, alpha, a + r0 * lda, lda, x, ldx, T(0), c + r0 * ldc, ldc);
  }
}

/// Y = S @ X + beta * Y with S (T, T) lower triangular (leading dimension lds), X (T, HS), Y (T, HS).
template <class T>
void attention_causal_sx(std::int64_t Tn, std::int64_t HS, const T* s, std::int64_t lds, const T* x, std::int64_t ldx,
                         T beta, T* y, std::int64_t ldy) {
  for (std::int64_t r0 = 0; r0 < Tn; r0 += kAttentionCausalTile) {
    const std::int64_t r1 = std::min(Tn, r0 + kAttentionCausalTile);
    gemm(Cpu{}, Trans::N, Trans::N, r1 - r0, HS, r1, T(1), s + r0 * lds, lds, x, ldx, beta, y + r0 * ldy, ldy);
  }
}

/// Y += S^T @ X with S (T, T) lower triangular: key rows [c0, c1) gather from the query rows [c0, T).
template <class T>
void attention_causal_stx(std::int64_t Tn, std::int64_t HS, const T* s, std::int64_t lds, const T* x, std::int64_t ldx,
                          T* y, std::int64_t ldy) {
  for (std::int64_t c0 = 0; c0 < Tn; c0 += kAttentionCausalTile) {
    const std::int64_t c1 = std::min(Tn, c0 + kAttentionCausalTile);
    gemm(Cpu{}, Trans::T, Trans::N, c1 - c0, HS, Tn - c0, T(1), s + c0 * lds + c0, lds, x + c0 * ldx, ldx, T(1),
         y + c0 * ldy, ldy);
  }
}

/// Forward over every (b, h): qkv (B, T, 3C), prefix_k/v (Bp, NH, P, HS) (null when P == 0), mask (B, T) or
/// null, out (B, T, C). cache_q/k/v (B, NH, T, HS) receive the split heads unless null; probs (B, NH, T, P + T)
/// receives the probabilities, or is null (inference: a per-thread row buffer is used instead).
template <class T>
void attention_forward_kernel(Cpu, const AttentionDims& d, const T* qkv, const T* prefix_k, const T* prefix_v,
                              const std::uint8_t* mask, T* out, T* cache_q, T* cache_k, T* cache_v, T* probs) {
  const std::int64_t Tn = d.T, C = d.C, NH = d.NH, HS = d.HS, P = d.P, L = d.L();
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
#if defined(_OPENMP)
#pragma omp parallel if (attention_parallel(d))
#endif
  {
    std::vector<T> scratch(probs ? 0 : static_cast<std::size_t>(Tn * L));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t bh = 0; bh < d.B * NH; ++bh) {
      const std::int64_t b = bh / NH, h = bh % NH;
      const T* q = qkv + b * Tn * 3 * C + h * HS;  // rows of q, k = q + C and v = q + 2C: stride 3C
      if (cache_q)
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* row = q + t * 3 * C;
          const std::int64_t o = (bh * Tn + t) * HS;
          std::copy(row, row + HS, cache_q + o);
          std::copy(row + C, row + C + HS, cache_k + o);
          std::copy(row + 2 * C, row + 2 * C + HS, cache_v + o);
        }
      T* s = probs ? probs + bh * Tn * L : scratch.data();
      const std::int64_t pre = ((d.Bp == 1 ? 0 : b) * NH + h) * P * HS;
      // Scores: q @ prefix_k^T into the first P columns, the causal q @ k^T after them; then the softmax rows.
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, Tn, P, HS, scale, q, 3 * C, prefix_k + pre, HS, T(0), s, L);
      attention_causal_abt(Tn, HS, scale, q, 3 * C, q + C, 3 * C, s + P, L);
      const std::uint8_t* m = mask ? mask + b * Tn : nullptr;
      const std::int64_t from = d.prefix_from ? d.prefix_from[b] : 0;
      for (std::int64_t t = 0; t < Tn; ++t) attention_softmax_row(s + t * L, m, P, t, L, t >= from);
      // out (this head's channels) = probs @ [prefix_v; v].
      T* o = out + b * Tn * C + h * HS;
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::N, Tn, HS, P, T(1), s, L, prefix_v + pre, HS, T(0), o, C);
      attention_causal_sx(Tn, HS, s + P, L, q + 2 * C, 3 * C, P > 0 ? T(1) : T(0), o, C);
    }
  }
}

/// Backward over every (b, h) from the forward's q, k, v (B, NH, T, HS) and probs (B, NH, T, P + T); dout
/// (B, T, C). Accumulates into dqkv (B, T, 3C), dprefix_k, dprefix_v (Bp, NH, P, HS); a null gradient is skipped
/// with the work only it needs. With Bp == 1 the per-row prefix gradients are summed over b in a fixed order.
template <class T>
void attention_backward_kernel(Cpu, const AttentionDims& d, const T* dout, const T* cache_q, const T* cache_k,
                               const T* cache_v, const T* probs, const T* prefix_k, const T* prefix_v, T* dqkv,
                               T* dprefix_k, T* dprefix_v) {
  const std::int64_t Tn = d.T, C = d.C, NH = d.NH, HS = d.HS, P = d.P, L = d.L(), PH = P * HS;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const bool want_pk = dprefix_k && P > 0, want_pv = dprefix_v && P > 0, shared = d.Bp == 1;
  const bool want_ds = dqkv || want_pk;
  // A shared prefix gets one gradient per (b, h) first; the sum over b follows the parallel loop.
  std::vector<T> part_k(want_pk && shared ? d.B * NH * PH : 0), part_v(want_pv && shared ? d.B * NH * PH : 0);
#if defined(_OPENMP)
#pragma omp parallel if (attention_parallel(d))
#endif
  {
    std::vector<T> ds(want_ds ? static_cast<std::size_t>(Tn * L) : 0);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t bh = 0; bh < d.B * NH; ++bh) {
      const std::int64_t b = bh / NH, h = bh % NH, pre = ((shared ? 0 : b) * NH + h) * PH;
      const T *q = cache_q + bh * Tn * HS, *k = cache_k + bh * Tn * HS, *v = cache_v + bh * Tn * HS;
      const T* p = probs + bh * Tn * L;
      const T* dy = dout + b * Tn * C + h * HS;  // rows of stride C
      if (want_pv) {                             // dprefix_v += probs_prefix^T @ dy
        T* dst = shared ? part_v.data() + bh * PH : dprefix_v + pre;
        gemm(Cpu{}, Trans::T, Trans::N, P, HS, Tn, T(1), p, L, dy, C, shared ? T(0) : T(1), dst, HS);
      }
      if (!want_ds) continue;
      // dscores from dprobs = dy @ [prefix_v; v]^T (the prefix columns enter every row's sum even when the
      // prefix itself is frozen).
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, Tn, P, HS, T(1), dy, C, prefix_v + pre, HS, T(0), ds.data(), L);
      attention_causal_abt(Tn, HS, T(1), dy, C, v, HS, ds.data() + P, L);
      for (std::int64_t t = 0; t < Tn; ++t)
        attention_softmax_backward_row(p + t * L, ds.data() + t * L, P + t + 1, L, scale);
      if (want_pk) {  // dprefix_k += dscores_prefix^T @ q
        T* dst = shared ? part_k.data() + bh * PH : dprefix_k + pre;
        gemm(Cpu{}, Trans::T, Trans::N, P, HS, Tn, T(1), ds.data(), L, q, HS, shared ? T(0) : T(1), dst, HS);
      }
      if (!dqkv) continue;
      // dq += dscores @ [prefix_k; k], dk += dscores_tok^T @ q, dv += probs_tok^T @ dy, straight into dqkv.
      T* dq = dqkv + b * Tn * 3 * C + h * HS;
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::N, Tn, HS, P, T(1), ds.data(), L, prefix_k + pre, HS, T(1), dq, 3 * C);
      attention_causal_sx(Tn, HS, ds.data() + P, L, k, HS, T(1), dq, 3 * C);
      attention_causal_stx(Tn, HS, ds.data() + P, L, q, HS, dq + C, 3 * C);
      attention_causal_stx(Tn, HS, p + P, L, dy, C, dq + 2 * C, 3 * C);
    }
  }
  for (auto [part, dst] : {std::pair<const std::vector<T>*, T*>{&part_k, dprefix_k}, {&part_v, dprefix_v}}) {
    if (part->empty()) continue;
    for (std::int64_t b = 0; b < d.B; ++b)
      for (std::int64_t i = 0; i < NH * PH; ++i) dst[i] += (*part)[b * NH * PH + i];
  }
}

}  // namespace prefixtune::detail
