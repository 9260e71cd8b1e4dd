// SPDX-License-Identifier: MIT
// CPU kernel of the batched greedy choice: per row of logits, banned ids (and the end token where flagged) become
// -inf, then the argmax (lowest index on ties, torch.argmax's choice) and its log-probability in double. Also the
// row helpers the host-side token choice shares.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <vector>

#include "prefixtune/backend/cpu/parallel.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/error.hpp"

namespace prefixtune::detail {

/// argmax with the lowest index on ties (torch.argmax's choice).
template <class T>
std::int32_t argmax_token(const T* logits, std::int64_t V) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

/// log sum exp of one row in double; a row with nothing finite is an Error.
template <class T>
double log_sum_exp_row(const T* logits, std::int64_t V) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  PREFIXTUNE_CHECK(std::isfinite(mx), "generate: no token is allowed (every logit is -inf or NaN)");
  double sum = 0;
  for (std::int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return mx + std::log(sum);
}

/// The bans of one row of logits in place: every id of ban_ids, and every end id when ban_eos, becomes -inf. The host's
/// logit processors and the CPU greedy kernel both apply them this way.
template <class T>
void ban_tokens(T* row, const std::vector<std::int32_t>& ban_ids, const std::vector<std::int32_t>& eos_ids,
                bool ban_eos) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (auto id : ban_ids) row[id] = kNegInf;
  if (ban_eos)
    for (auto id : eos_ids) row[id] = kNegInf;
}

/// The greedy choice of R rows of V logits in place: ban_ids and, in rows flagged in ban_eos, eos_ids become -inf;
/// then tok[r] = argmax (lowest index on ties) and logp[r] = its log-probability among the allowed tokens (in
/// double). The CUDA kernel does the same on the GPU and returns only these 2R numbers.
template <class T>
void greedy_select_kernel(Cpu, T* logits, std::int64_t R, std::int64_t V, const std::vector<std::int32_t>& ban_ids,
                          const std::vector<std::int32_t>& eos_ids, const std::vector<std::uint8_t>& ban_eos,
                          std::vector<std::int32_t>& tok, std::vector<double>& logp) {
  tok.resize(static_cast<std::size_t>(R));
  logp.resize(static_cast<std::size_t>(R));
  // Rows are independent and each costs V exponentials: split over the threads; an error (a row with no allowed
  // token) is rethrown after the loop, the first row's first.
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(R));
  [[maybe_unused]] const bool parallel = R > 1 && R * V >= kParallelMinElements && num_threads() > 1;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (parallel)
#endif
  for (std::int64_t r = 0; r < R; ++r) {
    try {
      T* row = logits + r * V;
      ban_tokens(row, ban_ids, eos_ids, ban_eos[static_cast<std::size_t>(r)] != 0);
      const std::int32_t t = argmax_token(row, V);
      tok[static_cast<std::size_t>(r)] = t;
      logp[static_cast<std::size_t>(r)] = static_cast<double>(row[t]) - log_sum_exp_row(row, V);
    } catch (...) {
      errors[static_cast<std::size_t>(r)] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace prefixtune::detail
