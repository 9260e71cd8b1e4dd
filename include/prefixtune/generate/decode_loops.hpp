// SPDX-License-Identifier: MIT
// The greedy / sampling loop shared by every model: one batched pass over each request's start tokens, then one
// token per unfinished row per step; rows stop independently and finished rows cost nothing. The model side is a
// decoding engine (CausalDecoding in causal_generate.hpp, BartDecoding in bart_generate.hpp) with
//   start_tokens(i)        the tokens request i starts from (fed first; the start of its n-gram history)
//   start(slot, i)         empties a cache slot and binds it to request i
//   extend(slots, tokens)  appends tokens to slots, returns the logits (rows, V) of each row's last new token
//   copy_slot(dst, src)    (beam search) makes dst a copy of src
//   full(slot)             whether the slot's context has no room for another token
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/generate/token_choice.hpp"
#include "prefixtune/ops/greedy.hpp"

namespace prefixtune::detail {

/// Whether the greedy choice must see whole rows on the host: the sequence processors (forced first token,
/// no-repeat n-grams) read each row's history, which lives there.
inline bool needs_sequence_processors(const GenerateConfig& cfg) {
  return cfg.forced_bos_id >= 0 || cfg.no_repeat_ngram_size > 0;
}

/// Greedy or sampled decoding of every request in one batch, request i in slot i of the engine.
template <class Engine>
std::vector<Generation> generate_sampled(Engine& engine, const std::vector<GenerationRequest>& requests,
                                         const GenerateConfig& cfg) {
  using T = typename Engine::value_type;
  using Device = typename Engine::device_type;
  const auto R = static_cast<std::int64_t>(requests.size());
  std::vector<Generation> out(static_cast<std::size_t>(R));
  std::vector<Rng> rngs;
  for (std::int64_t i = 0; i < R; ++i) {
    const std::int64_t stream = requests[static_cast<std::size_t>(i)].stream;
    rngs.emplace_back(cfg.seed, static_cast<std::uint64_t>(stream >= 0 ? stream : i));
  }
  std::vector<std::int64_t> active;
  std::vector<std::vector<std::int32_t>> feed;
  for (std::int64_t i = 0; i < R; ++i) {
    engine.start(i, i);
    active.push_back(i);
    feed.push_back(engine.start_tokens(i));
  }
  const bool on_host = cfg.sample || needs_sequence_processors(cfg);
  std::vector<std::int32_t> toks;
  std::vector<double> logps;
  std::vector<std::uint8_t> ban_eos;
  while (!active.empty()) {
    Tensor<T, Device> logits = engine.extend(active, feed);
    const std::int64_t V = logits.size(1), A = static_cast<std::int64_t>(active.size());
    if (on_host) {  // the draws come from each request's own Rng stream; the processors read its history
      Tensor<T, Cpu> host = logits.template to<Cpu>();
      toks.resize(static_cast<std::size_t>(A));
      logps.resize(static_cast<std::size_t>(A));
      for (std::int64_t a = 0; a < A; ++a) {
        const std::int64_t i = active[static_cast<std::size_t>(a)];
        const auto& generated = out[static_cast<std::size_t>(i)].ids;
        T* row = host.data() + a * V;
        process_logits(row, cfg, static_cast<std::int64_t>(generated.size()));
        process_sequence_logits(row, V, cfg, engine.start_tokens(i), generated);
        const std::int32_t tok =
            cfg.sample ? sample_token(row, V, cfg, rngs[static_cast<std::size_t>(i)]) : argmax_token(row, V);
        toks[static_cast<std::size_t>(a)] = tok;
        logps[static_cast<std::size_t>(a)] = static_cast<double>(row[tok]) - log_sum_exp_row(row, V);
      }
    } else {  // where the logits are: a GPU returns 2 numbers per row instead of V
      ban_eos.assign(static_cast<std::size_t>(A), 0);
      for (std::int64_t a = 0; a < A; ++a)
        ban_eos[static_cast<std::size_t>(a)] =
            static_cast<std::int64_t>(out[static_cast<std::size_t>(active[static_cast<std::size_t>(a)])].ids.size()) <
            cfg.min_new_tokens;
      greedy_select(logits, cfg.ban_ids, cfg.eos_ids(), ban_eos, toks, logps);
    }
    std::vector<std::int64_t> next_active;
    std::vector<std::vector<std::int32_t>> next_feed;
    for (std::size_t a = 0; a < active.size(); ++a) {
      const std::int64_t i = active[a];
      Generation& g = out[static_cast<std::size_t>(i)];
      const std::int32_t tok = toks[a];
      g.score += logps[a];
      if (cfg.is_eos(tok)) {
        g.ended = true;
        continue;
      }
      g.ids.push_back(tok);
      if (static_cast<std::int64_t>(g.ids.size()) >= cfg.max_new_tokens || engine.full(i))
        continue;  // the length limit or the end of the context
      next_active.push_back(i);
      next_feed.push_back({tok});
    }
    active = std::move(next_active);
    feed = std::move(next_feed);
  }
  return out;
}

}  // namespace prefixtune::detail
