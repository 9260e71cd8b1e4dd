// SPDX-License-Identifier: MIT
// CUDA kernel of the batched greedy choice: the bans, argmax and the chosen token's log-probability per row, so
// that a decoding step copies 2 numbers per row to the host instead of the V logits.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/backend/cuda/rows.cuh"
#include "prefixtune/core/error.hpp"

namespace prefixtune::detail {

/// (value, index) pair order of the greedy choice: the larger value, the lower index on ties.
template <class T>
__device__ bool greedy_better(T v, std::int64_t i, T bv, std::int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

/// Same contract as greedy_select_kernel(Cpu, ...).
template <class T>
void greedy_select_kernel(Cuda, T* logits, std::int64_t R, std::int64_t V, const std::vector<std::int32_t>& ban_ids,
                          const std::vector<std::int32_t>& eos_ids, const std::vector<std::uint8_t>& ban_eos,
                          std::vector<std::int32_t>& tok, std::vector<double>& logp) {
  tok.assign(static_cast<std::size_t>(R), 0);
  logp.assign(static_cast<std::size_t>(R), 0.0);
  if (R == 0) return;
  // The processors, in place: banned ids, and the end tokens of the flagged rows, become -inf.
  std::vector<std::int32_t> ids = ban_ids;  // the bans, then the end ids
  ids.insert(ids.end(), eos_ids.begin(), eos_ids.end());
  const auto nb = static_cast<std::int64_t>(ban_ids.size()), n = static_cast<std::int64_t>(ids.size());
  const auto d_ids = cuda_upload(ids.data(), n);
  const auto d_flags = cuda_upload(ban_eos.data(), R);
  const std::int32_t* ip = d_ids.data();
  const std::uint8_t* fp = d_flags.data();
  if (n > 0)
    cuda_for_elements("greedy bans", R * n, [=] __device__(std::int64_t x) {
      const std::int64_t r = x / n, k = x % n;
      if (k < nb || fp[r]) logits[r * V + ip[k]] = -INFINITY;
    });
  auto d_tok = Tensor<std::int32_t, Cuda>::empty(Shape{R});
  auto d_logp = Tensor<double, Cuda>::empty(Shape{R});
  std::int32_t* tp = d_tok.data();
  double* lp = d_logp.data();
  const T* z = logits;
  cuda_for_rows("greedy select", R, [=] __device__(std::int64_t r) {
    const T* row = z + r * V;
    T bv = -INFINITY;
    std::int64_t bi = V;
    for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x)
      if (greedy_better(row[j], j, bv, bi)) bv = row[j], bi = j;
    for (int o = 16; o > 0; o >>= 1) {  // warp, then block: the best (value, index) pair
      const T v = __shfl_xor_sync(0xffffffffu, bv, o);
      const std::int64_t i = __shfl_xor_sync(0xffffffffu, bi, o);
      if (greedy_better(v, i, bv, bi)) bv = v, bi = i;
    }
    __shared__ T wv[32];
    __shared__ std::int64_t wi[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) wv[warp] = bv, wi[warp] = bi;
    __syncthreads();
    bv = wv[0], bi = wi[0];
    for (int w = 1; w < warps; ++w)
      if (greedy_better(wv[w], wi[w], bv, bi)) bv = wv[w], bi = wi[w];
    const double mx = static_cast<double>(bv);
    double sum = 0;
    for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += exp(static_cast<double>(row[j]) - mx);
    sum = block_sum(sum);
    if (threadIdx.x == 0) {
      tp[r] = static_cast<std::int32_t>(bi < V ? bi : 0);
      lp[r] = isfinite(mx) ? -log(sum) : static_cast<double>(NAN);  // row[bi] - (mx + log sum), row[bi] == mx
    }
  });
  tok = d_tok.to_vector();
  logp = d_logp.to_vector();
  for (std::int64_t r = 0; r < R; ++r)
    PREFIXTUNE_CHECK(std::isfinite(logp[static_cast<std::size_t>(r)]),
                     "generate: no token is allowed (every logit is -inf or NaN)");
}

}  // namespace prefixtune::detail
