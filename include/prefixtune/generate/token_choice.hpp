// SPDX-License-Identifier: MIT
// The per-row token choice on the host: the logit processors (banned ids, minimum length, forced first token,
// no-repeat n-grams), greedy argmax and sampling with temperature, top-k and top-p (in that order, as HuggingFace's
// warpers) from a seeded Rng. The batched greedy choice on the device is ops/greedy.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/ops/greedy.hpp"

namespace prefixtune::detail {

/// Applies the logit processors to one row of V logits in place: banned ids and, before min_new_tokens new
/// tokens exist, the end tokens become -inf.
template <class T>
void process_logits(T* logits, const GenerateConfig& cfg, std::int64_t generated) {
  ban_tokens(logits, cfg.ban_ids, cfg.eos_ids(), generated < cfg.min_new_tokens);
}

/// The processors that look at a row's sequence (start tokens, then the generated ones), after process_logits:
/// the forced first token (every other logit -inf while nothing was generated), and HuggingFace's no-repeat
/// n-gram rule: a token that would complete an n-gram already present in the sequence becomes -inf.
template <class T>
void process_sequence_logits(T* logits, std::int64_t V, const GenerateConfig& cfg,
                             const std::vector<std::int32_t>& start, const std::vector<std::int32_t>& generated) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  if (cfg.forced_bos_id >= 0 && generated.empty()) {
    const T keep = logits[cfg.forced_bos_id];
    std::fill(logits, logits + V, kNegInf);
    logits[cfg.forced_bos_id] = keep;
  }
  const std::int64_t n = cfg.no_repeat_ngram_size;
  const auto L = static_cast<std::int64_t>(start.size() + generated.size());
  if (n <= 0 || L + 1 < n) return;
  auto at = [&](std::int64_t i) {
    const auto s = static_cast<std::int64_t>(start.size());
    return i < s ? start[static_cast<std::size_t>(i)] : generated[static_cast<std::size_t>(i - s)];
  };
  for (std::int64_t i = 0; i + n <= L; ++i) {  // the n-gram at i matches the last n - 1 tokens: ban its end
    bool same = true;
    for (std::int64_t j = 0; j < n - 1 && same; ++j) same = at(i + j) == at(L - n + 1 + j);
    if (same) logits[at(i + n - 1)] = kNegInf;
  }
}

/// log_softmax of one row in double (-inf stays -inf); a row with nothing finite is an Error.
template <class T>
void log_softmax_row(const T* logits, std::int64_t V, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(V));
  const double lse = log_sum_exp_row(logits, V);
  for (std::int64_t i = 0; i < V; ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(logits[i]) - lse;
}

/// Samples one token from processed logits: divide by temperature, keep the top_k largest (0: all), keep the
/// smallest set of most likely tokens whose probability reaches top_p (always at least one), draw from the rest.
template <class T>
std::int32_t sample_token(const T* logits, std::int64_t V, const GenerateConfig& cfg, Rng& rng) {
  std::vector<std::pair<double, std::int32_t>> cand;
  cand.reserve(static_cast<std::size_t>(V));
  for (std::int64_t i = 0; i < V; ++i) {
    const double z = static_cast<double>(logits[i]) / cfg.temperature;
    if (z > -std::numeric_limits<double>::infinity()) cand.emplace_back(z, static_cast<std::int32_t>(i));
  }
  PREFIXTUNE_CHECK(!cand.empty(), "generate: no token is allowed (every logit is -inf)");
  auto by_score = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::size_t keep = cand.size();
  if (cfg.top_k > 0 && static_cast<std::size_t>(cfg.top_k) < keep) {
    keep = static_cast<std::size_t>(cfg.top_k);
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(keep), cand.end(), by_score);
  } else {
    std::sort(cand.begin(), cand.end(), by_score);
  }
  cand.resize(keep);
  const double mx = cand.front().first;
  std::vector<double> p(keep);
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) sum += (p[i] = std::exp(cand[i].first - mx));
  if (cfg.top_p < 1.0) {
    double cum = 0;
    std::size_t n = 0;
    while (n < keep) {
      cum += p[n] / sum;
      ++n;
      if (cum >= cfg.top_p) break;
    }
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  }
  const double u = rng.uniform() * sum;
  double acc = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return cand[i].second;
  }
  return cand[keep - 1].second;
}

}  // namespace prefixtune::detail
