// SPDX-License-Identifier: MIT
// Batched generation where every row carries its own prompt (any length) and its own prefix from a PrefixBank:
// one batched prompt pass, then one token per unfinished row per step; rows stop independently and finished rows
// cost nothing. Greedy, sampling (temperature / top-k / top-p, seeded per request) and beam search.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "prefixtune/generate/beam_search.hpp"
#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/generate/sampling.hpp"

namespace prefixtune {

/// Throws an Error naming request `index` unless it can be generated from: a non-empty prompt of ids in the
/// vocabulary, a prefix index in the bank (or kNoPrefix), and a prompt that fits the model's context after
/// the prefix's position offset.
template <class T, class Device, class Param>
void check_generation_request(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                              const GenerationRequest& r, std::size_t index) {
  const Gpt2Config& c = m.config;
  PREFIXTUNE_CHECK(!r.prompt.empty(), "generate: request ", index, " has an empty prompt");
  PREFIXTUNE_CHECK(r.prefix == kNoPrefix || (r.prefix >= 0 && r.prefix < bank.size()), "generate: request ", index,
                   " names prefix ", r.prefix, " but the bank holds ", bank.size(), " prefixes");
  for (std::size_t j = 0; j < r.prompt.size(); ++j)
    PREFIXTUNE_CHECK(r.prompt[j] >= 0 && r.prompt[j] < c.vocab_size, "generate: request ", index, " token ", j,
                     " has id ", r.prompt[j], ", outside the vocabulary [0, ", c.vocab_size, ")");
  const std::int64_t room = c.n_positions - bank.position_offset(r.prefix);
  PREFIXTUNE_CHECK(static_cast<std::int64_t>(r.prompt.size()) <= room, "generate: request ", index, " has a prompt of ",
                   r.prompt.size(), " tokens but the model's context holds ", room, " after the prefix (n_positions ",
                   c.n_positions, ")");
}

namespace detail {

/// Greedy or sampled decoding of every request in one batch.
template <class T, class Device, class Param>
std::vector<Generation> generate_sampled(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                                         const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  const auto R = static_cast<std::int64_t>(requests.size());
  KvCache<T, Device> cache(m.config, R, generation_capacity(m.config, bank, requests, cfg));
  std::vector<Generation> out(static_cast<std::size_t>(R));
  std::vector<Rng> rngs;
  for (std::int64_t i = 0; i < R; ++i) {
    const std::int64_t stream = requests[static_cast<std::size_t>(i)].stream;
    rngs.emplace_back(cfg.seed, static_cast<std::uint64_t>(stream >= 0 ? stream : i));
  }
  std::vector<std::int64_t> active;
  std::vector<std::vector<std::int32_t>> feed;
  for (std::int64_t i = 0; i < R; ++i) {
    const GenerationRequest& r = requests[static_cast<std::size_t>(i)];
    cache.reset(i, r.prefix, bank.visible_from(r.prefix, r.prompt.size()));
    active.push_back(i);
    feed.push_back(requests[static_cast<std::size_t>(i)].prompt);
  }
  std::vector<std::int32_t> toks;
  std::vector<double> logps;
  std::vector<std::uint8_t> ban_eos;
  while (!active.empty()) {
    Tensor<T, Device> logits = gpt2_extend(m, bank, cache, active, feed);
    const std::int64_t V = logits.size(1), A = static_cast<std::int64_t>(active.size());
    if (cfg.sample) {  // on the host: the draws come from each request's own Rng stream
      Tensor<T, Cpu> host = logits.template to<Cpu>();
      toks.resize(static_cast<std::size_t>(A));
      logps.resize(static_cast<std::size_t>(A));
      for (std::int64_t a = 0; a < A; ++a) {
        const std::int64_t i = active[static_cast<std::size_t>(a)];
        T* row = host.data() + a * V;
        process_logits(row, cfg, static_cast<std::int64_t>(out[static_cast<std::size_t>(i)].ids.size()));
        toks[static_cast<std::size_t>(a)] = sample_token(row, V, cfg, rngs[static_cast<std::size_t>(i)]);
        logps[static_cast<std::size_t>(a)] =
            static_cast<double>(row[toks[static_cast<std::size_t>(a)]]) - log_sum_exp_row(row, V);
      }
    } else {  // where the logits are: a GPU returns 2 numbers per row instead of V
      ban_eos.assign(static_cast<std::size_t>(A), 0);
      for (std::int64_t a = 0; a < A; ++a)
        ban_eos[static_cast<std::size_t>(a)] =
            static_cast<std::int64_t>(out[static_cast<std::size_t>(active[static_cast<std::size_t>(a)])].ids.size()) <
            cfg.min_new_tokens;
      greedy_select_kernel(Device{}, logits.data(), A, V, cfg, ban_eos, toks, logps);
    }
    std::vector<std::int64_t> next_active;
    std::vector<std::vector<std::int32_t>> next_feed;
    for (std::size_t a = 0; a < active.size(); ++a) {
      const std::int64_t i = active[a];
      Generation& g = out[static_cast<std::size_t>(i)];
      const std::int32_t tok = toks[a];
      g.score += logps[a];
      if (tok == cfg.eos_id) {
        g.ended = true;
        continue;
      }
      g.ids.push_back(tok);
      if (static_cast<std::int64_t>(g.ids.size()) >= cfg.max_new_tokens ||
          cache.length(i) + bank.position_offset(cache.prefix(i)) >= m.config.n_positions)
        continue;  // the length limit or the end of the context (within the capacity, which covers both)
      next_active.push_back(i);
      next_feed.push_back({tok});
    }
    active = std::move(next_active);
    feed = std::move(next_feed);
  }
  return out;
}

}  // namespace detail

/// Generates for every request in one batch (each row with its own prompt and prefix; see GenerateConfig).
/// Every request is checked first (check_generation_request); a bad one fails the call with an Error naming it.
template <class T, class Device, class Param>
std::vector<Generation> generate(const Gpt2<T, Device, Param>& m, const PrefixBank<T, Device>& bank,
                                 const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  cfg.validate(m.config.vocab_size);
  for (std::size_t i = 0; i < requests.size(); ++i) check_generation_request(m, bank, requests[i], i);
  if (requests.empty()) return {};
  if (cfg.num_beams > 1) return detail::generate_beam(m, bank, requests, cfg);
  return detail::generate_sampled(m, bank, requests, cfg);
}

}  // namespace prefixtune
