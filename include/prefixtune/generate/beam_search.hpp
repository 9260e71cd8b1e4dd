// SPDX-License-Identifier: MIT
// Beam search over batched requests (HuggingFace's BeamSearchScorer rules): each step takes the 2 * num_beams best
// continuations of a request's beams; an end token among the first num_beams of them closes a hypothesis scored
// sum log p / (generated tokens, the end token included)^length_penalty, the others continue. A request stops when it
// holds num_beams hypotheses and no running beam can beat the worst of them (an exact bound, transformers'
// early_stopping="never"), or at once with early_stopping; at max_new_tokens its running beams become hypotheses.
// Beams live in the decoding engine's cache slots (see decode_loops.hpp); a beam's first child keeps its parent's
// slot, so only branching costs a copy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "prefixtune/core/tensor.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/generate/token_choice.hpp"

namespace prefixtune::detail {

/// The best num_beams finished hypotheses of one request, best first.
class BeamHypotheses {
 public:
  explicit BeamHypotheses(std::size_t n) : n_(n) {}
  void add(double score, std::vector<std::int32_t> ids, bool ended) {
    if (hyps_.size() >= n_ && score <= hyps_.back().score) return;
    Generation g{std::move(ids), ended, score};
    auto at =
        std::upper_bound(hyps_.begin(), hyps_.end(), score, [](double s, const Generation& h) { return s > h.score; });
    hyps_.insert(at, std::move(g));
    if (hyps_.size() > n_) hyps_.pop_back();
  }
  bool full() const { return hyps_.size() >= n_; }
  double worst() const { return hyps_.back().score; }
  Generation best() const { return hyps_.empty() ? Generation{} : hyps_.front(); }

 private:
  std::size_t n_;
  std::vector<Generation> hyps_;
};

inline double beam_length_norm(std::int64_t generated, double length_penalty) {
  return std::pow(static_cast<double>(std::max<std::int64_t>(generated, 1)), length_penalty);
}

/// Beam search of every request in one batch on a decoding engine (see decode_loops.hpp) with num_beams slots
/// per request: request i's beams live in slots i * num_beams ...
template <class Engine>
std::vector<Generation> generate_beam(Engine& engine, const std::vector<GenerationRequest>& requests,
                                      const GenerateConfig& cfg) {
  using T = typename Engine::value_type;
  struct Beam {
    std::vector<std::int32_t> ids;
    double score = 0;
    std::int64_t slot = 0;
  };
  struct Cand {
    double score;
    std::int64_t beam;
    std::int32_t token;
  };
  const auto R = static_cast<std::int64_t>(requests.size()), nb = cfg.num_beams;
  std::vector<std::vector<Beam>> beams(static_cast<std::size_t>(R));
  std::vector<BeamHypotheses> hyps(static_cast<std::size_t>(R), BeamHypotheses(static_cast<std::size_t>(nb)));
  std::vector<std::int64_t> slots, row_request;  // the rows of the next model call
  std::vector<std::vector<std::int32_t>> feed;
  for (std::int64_t i = 0; i < R; ++i) {
    engine.start(i * nb, i);
    beams[static_cast<std::size_t>(i)].push_back(Beam{{}, 0.0, i * nb});
    slots.push_back(i * nb);
    row_request.push_back(i);
    feed.push_back(engine.start_tokens(i));
  }
  std::vector<double> logp;
  std::vector<Cand> cands;
  while (!slots.empty()) {
    Tensor<T, Cpu> logits = engine.extend(slots, feed).template to<Cpu>();
    const std::int64_t V = logits.size(1);
    std::vector<std::int64_t> next_slots, next_request;
    std::vector<std::vector<std::int32_t>> next_feed;
    std::size_t row = 0;
    while (row < slots.size()) {  // the rows of one request are contiguous, in beam order
      const std::int64_t i = row_request[row];
      auto& bs = beams[static_cast<std::size_t>(i)];
      const auto cur = static_cast<std::int64_t>(bs.front().ids.size());
      cands.clear();
      for (std::size_t b = 0; b < bs.size(); ++b, ++row) {
        T* lr = logits.data() + static_cast<std::int64_t>(row) * V;
        process_logits(lr, cfg, cur);
        process_sequence_logits(lr, V, cfg, engine.start_tokens(i), bs[b].ids);
        log_softmax_row(lr, V, logp);
        for (std::int64_t v = 0; v < V; ++v) {
          const double s = logp[static_cast<std::size_t>(v)];
          if (s > -std::numeric_limits<double>::infinity())
            cands.push_back(Cand{bs[b].score + s, static_cast<std::int64_t>(b), static_cast<std::int32_t>(v)});
        }
      }
      const std::size_t top = std::min(cands.size(), static_cast<std::size_t>(2 * nb));
      std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(top), cands.end(),
                        [](const Cand& a, const Cand& b) {
                          return a.score > b.score ||
                                 (a.score == b.score && (a.beam < b.beam || (a.beam == b.beam && a.token < b.token)));
                        });
      BeamHypotheses& h = hyps[static_cast<std::size_t>(i)];
      std::vector<Beam> next;
      for (std::size_t rank = 0; rank < top && static_cast<std::int64_t>(next.size()) < nb; ++rank) {
        const Cand& c = cands[rank];
        const Beam& parent = bs[static_cast<std::size_t>(c.beam)];
        if (cfg.is_eos(c.token)) {
          if (static_cast<std::int64_t>(rank) < nb)  // the end token counts in the length (transformers >= 4.36)
            h.add(c.score / beam_length_norm(cur + 1, cfg.length_penalty), parent.ids, true);
          continue;
        }
        Beam nbm{parent.ids, c.score, -1 - c.beam};  // slot decided below; remember the parent
        nbm.ids.push_back(c.token);
        next.push_back(std::move(nbm));
      }
      const std::int64_t len = cur + 1;
      const bool at_limit = len >= cfg.max_new_tokens || engine.full(bs.front().slot);
      bool done = next.empty();
      if (!done && h.full()) {
        if (cfg.early_stopping) {
          done = true;
        } else {  // the best score any running beam can still reach: log-probabilities only lower the sum, and
                  // a later hypothesis is len to max_new_tokens long (an end token included)
          const double best = next.front().score;
          const std::int64_t reach = cfg.length_penalty > 0 && best < 0 ? cfg.max_new_tokens : len;
          done = h.worst() >= best / beam_length_norm(reach, cfg.length_penalty);
        }
      }
      if (!done && at_limit) {  // finalize: running beams become hypotheses
        for (const auto& b : next) h.add(b.score / beam_length_norm(len, cfg.length_penalty), b.ids, false);
        done = true;
      }
      if (done) {
        bs.clear();
        continue;
      }
      // Slots: the first child of a beam keeps the parent's slot; further children copy into freed slots.
      std::vector<char> taken(static_cast<std::size_t>(nb), 0);
      std::vector<std::int64_t> child_of(bs.size(), 0);
      for (auto& b : next) {
        const std::int64_t p = -1 - b.slot;
        if (child_of[static_cast<std::size_t>(p)]++ == 0) {
          b.slot = bs[static_cast<std::size_t>(p)].slot;
          taken[static_cast<std::size_t>(b.slot - i * nb)] = 1;
        }
      }
      for (auto& b : next) {
        if (b.slot >= 0) continue;
        const std::int64_t p = -1 - b.slot;
        std::int64_t s = 0;
        while (taken[static_cast<std::size_t>(s)]) ++s;
        taken[static_cast<std::size_t>(s)] = 1;
        b.slot = i * nb + s;
        engine.copy_slot(b.slot, bs[static_cast<std::size_t>(p)].slot);
      }
      bs = std::move(next);
      for (const auto& b : bs) {
        next_slots.push_back(b.slot);
        next_request.push_back(i);
        next_feed.push_back({b.ids.back()});
      }
    }
    slots = std::move(next_slots);
    row_request = std::move(next_request);
    feed = std::move(next_feed);
  }
  std::vector<Generation> out;
  for (const auto& h : hyps) out.push_back(h.best());
  return out;
}

}  // namespace prefixtune::detail
