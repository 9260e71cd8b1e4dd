// SPDX-License-Identifier: MIT
// CPU kernels of non-causal multi-head attention with separate queries and keys/values (an encoder-decoder's cross
// attention, or with both from one sequence an encoder's bidirectional self-attention), prefix K/V and a key
// padding mask: one loop over the (batch row, head) pairs, each with its own GEMMs and softmax rows.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cpu/attention.hpp"

namespace prefixtune::detail {

/// Forward over every (b, h): q (B, Tq, C), kv (B, Tk, 2C) = [k | v], prefix_k/v (Bp, NH, P, HS) or null, mask
/// (B, Tk) or null, out (B, Tq, C); probs (B, NH, Tq, P + Tk) receives the probabilities, or is null (inference).
template <class T>
void cross_attention_forward_kernel(Cpu, const CrossAttentionDims& d, const T* q, const T* kv, const T* prefix_k,
                                    const T* prefix_v, const std::uint8_t* mask, T* out, T* probs) {
  const std::int64_t Tq = d.Tq, Tk = d.Tk, C = d.C, NH = d.NH, HS = d.HS, P = d.P, L = d.L();
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  [[maybe_unused]] const bool parallel = d.B * NH >= num_threads() && d.B * NH * Tq * L * HS >= kAttentionParallelMin;
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<T> scratch(probs ? 0 : static_cast<std::size_t>(Tq * L));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t bh = 0; bh < d.B * NH; ++bh) {
      const std::int64_t b = bh / NH, h = bh % NH;
      const T* qb = q + b * Tq * C + h * HS;
      const T* kb = kv + b * Tk * 2 * C + h * HS;  // values at kb + C; both with stride 2C
      const std::int64_t pre = ((d.Bp == 1 ? 0 : b) * NH + h) * P * HS;
      T* s = probs ? probs + bh * Tq * L : scratch.data();
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, Tq, P, HS, scale, qb, C, prefix_k + pre, HS, T(0), s, L);
      gemm(Cpu{}, Trans::N, Trans::T, Tq, Tk, HS, scale, qb, C, kb, 2 * C, T(0), s + P, L);
      const std::uint8_t* m = mask ? mask + b * Tk : nullptr;
      for (std::int64_t t = 0; t < Tq; ++t) attention_softmax_row(s + t * L, m, P, Tk - 1, L);  // every key
      T* ob = out + b * Tq * C + h * HS;
      if (P > 0) gemm(Cpu{}, Trans::N, Trans::N, Tq, HS, P, T(1), s, L, prefix_v + pre, HS, T(0), ob, C);
      gemm(Cpu{}, Trans::N, Trans::N, Tq, HS, Tk, T(1), s + P, L, kb + C, 2 * C, P > 0 ? T(1) : T(0), ob, C);
    }
  }
}

/// Backward over every (b, h) from the forward's probabilities: accumulates into dq (B, Tq, C), dkv (B, Tk, 2C),
/// dprefix_k, dprefix_v (shaped like the prefix; with Bp == 1 summed over the batch); null gradients are skipped.
template <class T>
void cross_attention_backward_kernel(Cpu, const CrossAttentionDims& d, const T* dout, const T* q, const T* kv,
                                     const T* probs, const T* prefix_k, const T* prefix_v, T* dq, T* dkv, T* dprefix_k,
                                     T* dprefix_v) {
  const std::int64_t Tq = d.Tq, Tk = d.Tk, C = d.C, NH = d.NH, HS = d.HS, P = d.P, L = d.L();
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const bool shared_prefix_grads = P > 0 && d.Bp == 1 && (dprefix_k || dprefix_v);
  // Rows b write the same shared prefix gradient: then one thread per head, looping over b.
  const std::int64_t outer = shared_prefix_grads ? NH : d.B * NH, inner = shared_prefix_grads ? d.B : 1;
  [[maybe_unused]] const bool parallel = outer >= num_threads() && d.B * NH * Tq * L * HS >= kAttentionParallelMin;
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<T> ds(static_cast<std::size_t>(Tq * L));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        const std::int64_t b = shared_prefix_grads ? i : o / NH, h = shared_prefix_grads ? o : o % NH;
        const std::int64_t bh = b * NH + h;
        const T* qb = q + b * Tq * C + h * HS;
        const T* kb = kv + b * Tk * 2 * C + h * HS;
        const T* dob = dout + b * Tq * C + h * HS;
        const T* p = probs + bh * Tq * L;
        const std::int64_t pre = ((d.Bp == 1 ? 0 : b) * NH + h) * P * HS;
        T* s = ds.data();
        // dprobs = dout @ [prefix_v; v]^T, then back through the softmax and the scaling.
        if (P > 0) gemm(Cpu{}, Trans::N, Trans::T, Tq, P, HS, T(1), dob, C, prefix_v + pre, HS, T(0), s, L);
        gemm(Cpu{}, Trans::N, Trans::T, Tq, Tk, HS, T(1), dob, C, kb + C, 2 * C, T(0), s + P, L);
        for (std::int64_t t = 0; t < Tq; ++t) attention_softmax_backward_row(p + t * L, s + t * L, L, L, scale);
        if (dq) {
          T* dqb = dq + b * Tq * C + h * HS;
          if (P > 0) gemm(Cpu{}, Trans::N, Trans::N, Tq, HS, P, T(1), s, L, prefix_k + pre, HS, T(1), dqb, C);
          gemm(Cpu{}, Trans::N, Trans::N, Tq, HS, Tk, T(1), s + P, L, kb, 2 * C, T(1), dqb, C);
        }
        if (dkv) {
          T* dkb = dkv + b * Tk * 2 * C + h * HS;
          gemm(Cpu{}, Trans::T, Trans::N, Tk, HS, Tq, T(1), s + P, L, qb, C, T(1), dkb, 2 * C);
          gemm(Cpu{}, Trans::T, Trans::N, Tk, HS, Tq, T(1), p + P, L, dob, C, T(1), dkb + C, 2 * C);
        }
        if (P > 0 && dprefix_k)
          gemm(Cpu{}, Trans::T, Trans::N, P, HS, Tq, T(1), s, L, qb, C, T(1), dprefix_k + pre, HS);
        if (P > 0 && dprefix_v)
          gemm(Cpu{}, Trans::T, Trans::N, P, HS, Tq, T(1), p, L, dob, C, T(1), dprefix_v + pre, HS);
      }
  }
}

}  // namespace prefixtune::detail
