// SPDX-License-Identifier: MIT
// GenerateConfig and the per-row token choice: banned ids and minimum length (logit processors), greedy argmax,
// and sampling with temperature, top-k and top-p (in that order, as HuggingFace's warpers), from a seeded Rng.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <numeric>
#include <vector>

#include "prefixtune/backend/cpu/elementwise.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/models/gpt2_config.hpp"

namespace prefixtune {

/// How to decode. num_beams > 1 selects beam search (sample must then be false); otherwise sample chooses
/// between greedy (false) and sampling (true).
struct GenerateConfig {
  std::int64_t max_new_tokens = 64;
  std::int64_t min_new_tokens = 0;  // the end token is banned until this many tokens were generated
  bool sample = false;
  double temperature = 1.0;
  std::int64_t top_k = 0;  // 0: off
  double top_p = 1.0;      // 1: off
  std::uint64_t seed = 0;  // a request samples from Rng(seed, its stream): the same with or without batching
  std::int64_t num_beams = 1;
  double length_penalty =
      1.0;  // beam hypothesis score = sum log p / (generated tokens, an end token included)^length_penalty
  bool early_stopping = false;            // beam search: stop a request once num_beams hypotheses ended
  std::vector<std::int32_t> ban_ids;      // never generated (the paper bans 198 and 628: "\n", "\n\n")
  std::int32_t eos_id = 50256;            // generation of a row ends at this token (not included in the output)
  std::int64_t no_repeat_ngram_size = 0;  // > 0: no n-gram of the row's decoder sequence appears twice
  std::int32_t forced_bos_id = -1;        // >= 0: the first generated token is this one (BART's forced_bos_token_id)

  void validate(std::int64_t vocab_size) const {
    PREFIXTUNE_CHECK(max_new_tokens >= 1, "generate: max_new_tokens must be >= 1, got ", max_new_tokens);
    PREFIXTUNE_CHECK(min_new_tokens >= 0 && min_new_tokens <= max_new_tokens, "generate: min_new_tokens ",
                     min_new_tokens, " must be in [0, max_new_tokens = ", max_new_tokens, "]");
    PREFIXTUNE_CHECK(std::isfinite(temperature) && temperature > 0, "generate: temperature must be > 0, got ",
                     temperature);
    PREFIXTUNE_CHECK(top_k >= 0, "generate: top_k must be >= 0, got ", top_k);
    PREFIXTUNE_CHECK(top_p > 0 && top_p <= 1, "generate: top_p must be in (0, 1], got ", top_p);
    PREFIXTUNE_CHECK(num_beams >= 1, "generate: num_beams must be >= 1, got ", num_beams);
    PREFIXTUNE_CHECK(num_beams == 1 || !sample, "generate: beam search with sampling is not supported");
    PREFIXTUNE_CHECK(std::isfinite(length_penalty), "generate: length_penalty must be finite");
    PREFIXTUNE_CHECK(no_repeat_ngram_size >= 0, "generate: no_repeat_ngram_size must be >= 0, got ",
                     no_repeat_ngram_size);
    PREFIXTUNE_CHECK(forced_bos_id >= -1 && forced_bos_id < vocab_size, "generate: forced_bos_id ", forced_bos_id,
                     " is outside the vocabulary [0, ", vocab_size, ") (-1 = none)");
    PREFIXTUNE_CHECK(eos_id >= 0 && eos_id < vocab_size, "generate: eos_id ", eos_id, " is outside the vocabulary [0, ",
                     vocab_size, ")");
    for (auto id : ban_ids)
      PREFIXTUNE_CHECK(id >= 0 && id < vocab_size, "generate: banned id ", id, " is outside the vocabulary [0, ",
                       vocab_size, ")");
  }
};

/// One row to generate from: prompt token ids and a PrefixBank index (kNoPrefix: the bare model).
struct GenerationRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t prefix = -1;
  std::int64_t stream = -1;  // sampling draws from Rng(cfg.seed, stream); -1: the request's index in the call
};

/// What a row generated: the new tokens, without the end token; ended = stopped at the end token (false: the
/// length limit or the end of the context). score: greedy/sampling, the summed log-probability of the chosen tokens
/// (end token included) under the processed distribution; beam search, the hypothesis score (see GenerateConfig).
struct Generation {
  std::vector<std::int32_t> ids;
  bool ended = false;
  double score = 0;
};

namespace detail {

/// Applies the logit processors to one row of V logits in place: banned ids and, before min_new_tokens new
/// tokens exist, the end token become -inf.
template <class T>
void process_logits(T* logits, const GenerateConfig& cfg, std::int64_t generated) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (auto id : cfg.ban_ids) logits[id] = kNegInf;
  if (generated < cfg.min_new_tokens) logits[cfg.eos_id] = kNegInf;
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

/// log_softmax of one row in double (-inf stays -inf); a row with nothing finite is an Error.
template <class T>
void log_softmax_row(const T* logits, std::int64_t V, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(V));
  const double lse = log_sum_exp_row(logits, V);
  for (std::int64_t i = 0; i < V; ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(logits[i]) - lse;
}

/// Tokens a row must hold in the KV cache (its prompt and every generated token but the last, capped by the
/// context after its prefix's position offset), maximized over the requests: the cache capacity of one call.
template <class Bank>
std::int64_t generation_capacity(const Gpt2Config& c, const Bank& bank, const std::vector<GenerationRequest>& requests,
                                 const GenerateConfig& cfg) {
  std::int64_t capacity = 1;
  for (const auto& r : requests) {
    const auto len = static_cast<std::int64_t>(r.prompt.size());
    capacity =
        std::max(capacity, std::min(len + cfg.max_new_tokens - 1, c.n_positions - bank.position_offset(r.prefix)));
  }
  return capacity;
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

/// The greedy choice of R rows of V logits in place on the host: the logit processors (bans, and the end token for
/// rows flagged in ban_eos), then tok[r] = argmax (lowest index on ties) and logp[r] = its log-probability among the
/// allowed tokens (in double). The CUDA kernel does the same on the GPU and returns only these 2R numbers.
template <class T>
void greedy_select_kernel(Cpu, T* logits, std::int64_t R, std::int64_t V, const GenerateConfig& cfg,
                          const std::vector<std::uint8_t>& ban_eos, std::vector<std::int32_t>& tok,
                          std::vector<double>& logp) {
  tok.resize(static_cast<std::size_t>(R));
  logp.resize(static_cast<std::size_t>(R));
  // Rows are independent and each costs V exponentials: split over the threads; an error (a row with no allowed
  // token) is rethrown after the loop, the first row's first.
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(R));
  [[maybe_unused]] const bool parallel = R > 1 && R * V >= kElementwiseParallelMin && num_threads() > 1;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (parallel)
#endif
  for (std::int64_t r = 0; r < R; ++r) {
    try {
      T* row = logits + r * V;
      // process_logits bans the end token while generated < min_new_tokens (ban_eos implies min_new_tokens >= 1)
      process_logits(row, cfg, ban_eos[static_cast<std::size_t>(r)] ? 0 : cfg.min_new_tokens);
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

}  // namespace detail
}  // namespace prefixtune
