// SPDX-License-Identifier: MIT
// An independent, deliberately naive beam search for tests, following HuggingFace transformers' BeamSearchScorer and
// BeamHypotheses (v4.36 and later) step by step over a step function (next-token log-probabilities after a prefix).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

namespace prefixtune::reference {

/// transformers' early_stopping: kTrue (True) stops a request once it holds num_beams hypotheses; kNever ("never")
/// once no running beam can still beat the worst of them. (False, transformers' default heuristic, is not modelled.)
enum class EarlyStopping { kTrue, kNever };

struct BeamOptions {
  int num_beams = 2;
  int max_new_tokens = 4;
  std::int32_t eos_id = 0;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kNever;
};

/// A finished hypothesis: the generated tokens (the end token not stored), whether it ended with the end token, and
/// its score sum_logprobs / generated_len^length_penalty, where generated_len counts the end token if there is one.
struct Hypothesis {
  std::vector<std::int32_t> ids;
  bool ended = false;
  double score = 0;
};

/// What the rules decided during one search, so that a test can show each rule mattered somewhere.
struct BeamTrace {
  int eos_outside_top = 0;         // end-token candidates at rank >= num_beams, not made hypotheses
  int beams_past_rank = 0;         // continuations taken from rank >= num_beams (needs the 2 * num_beams candidates)
  bool done_before_limit = false;  // is_done ended the search before max_new_tokens
};

struct BeamSearchResult {
  Hypothesis best;
  BeamTrace trace;
};

/// log-probabilities (V) of the next token after the generated tokens (-inf: not allowed).
using StepFn = std::function<std::vector<double>(const std::vector<std::int32_t>& generated)>;

/// transformers' BeamHypotheses: the num_beams best hypotheses and the worst score among them.
class ReferenceHypotheses {
 public:
  explicit ReferenceHypotheses(const BeamOptions& o) : o_(o) {}

  // add(hyp, sum_logprobs, generated_len): kept if there is room or it beats the worst; over num_beams, the
  // lowest score (the earliest of equal lowest scores) leaves and worst_score becomes the next lowest.
  void add(const std::vector<std::int32_t>& ids, bool ended, double sum_logprobs, int generated_len) {
    const double score = sum_logprobs / std::pow(static_cast<double>(generated_len), o_.length_penalty);
    if (static_cast<int>(beams_.size()) < o_.num_beams || score > worst_score_) {
      beams_.push_back(Hypothesis{ids, ended, score});
      if (static_cast<int>(beams_.size()) > o_.num_beams) {
        std::vector<std::size_t> order(beams_.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t a, std::size_t b) { return beams_[a].score < beams_[b].score; });
        worst_score_ = beams_[order[1]].score;
        beams_.erase(beams_.begin() + static_cast<std::ptrdiff_t>(order[0]));
      } else {
        worst_score_ = std::min(score, worst_score_);
      }
    }
  }

  // is_done(best_sum_logprobs, cur_len): cur_len = generated tokens after this step; best_sum_logprobs = the best of
  // the step's 2 * num_beams candidate sums.
  bool is_done(double best_sum_logprobs, int cur_len) const {
    if (static_cast<int>(beams_.size()) < o_.num_beams) return false;
    switch (o_.early_stopping) {
      case EarlyStopping::kTrue:
        return true;
      case EarlyStopping::kNever: {
        const int len = o_.length_penalty > 0.0 ? o_.max_new_tokens : cur_len;
        return worst_score_ >= best_sum_logprobs / std::pow(static_cast<double>(len), o_.length_penalty);
      }
    }
    return false;
  }

  // finalize's choice: sorted(beams, key=score).pop(), the highest score (the last of equal highest scores).
  Hypothesis best() const {
    Hypothesis b;
    b.score = -std::numeric_limits<double>::infinity();
    for (const auto& h : beams_)
      if (h.score >= b.score) b = h;
    return b;
  }

 private:
  BeamOptions o_;
  std::vector<Hypothesis> beams_;
  double worst_score_ = 1e9;
};

/// Beam search of one request. transformers starts num_beams copies of the prompt, all but the first scored -1e9;
/// here only the first exists, which is the same while the first step has num_beams continuations that are not the
/// end token. Candidates of equal sum rank by beam, then token (torch.topk leaves that order unspecified). Where
/// transformers raises (fewer than num_beams continuations among the 2 * num_beams candidates), this throws.
inline BeamSearchResult reference_beam_search(const StepFn& step, const BeamOptions& o) {
  struct Running {
    std::vector<std::int32_t> ids;
    double sum;
  };
  struct Candidate {
    double sum;
    int beam;
    std::int32_t token;
  };
  BeamSearchResult r;
  ReferenceHypotheses hyps(o);
  std::vector<Running> running = {{{}, 0.0}};
  for (int cur = 0; cur < o.max_new_tokens; ++cur) {
    std::vector<Candidate> cands;
    for (int b = 0; b < static_cast<int>(running.size()); ++b) {
      const std::vector<double> logp = step(running[static_cast<std::size_t>(b)].ids);
      for (std::size_t v = 0; v < logp.size(); ++v)
        if (logp[v] > -std::numeric_limits<double>::infinity())
          cands.push_back(
              Candidate{running[static_cast<std::size_t>(b)].sum + logp[v], b, static_cast<std::int32_t>(v)});
    }
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
      if (a.sum != b.sum) return a.sum > b.sum;
      if (a.beam != b.beam) return a.beam < b.beam;
      return a.token < b.token;
    });
    if (cands.size() > static_cast<std::size_t>(2 * o.num_beams))
      cands.resize(static_cast<std::size_t>(2 * o.num_beams));
    std::vector<Running> next;
    for (int rank = 0; rank < static_cast<int>(cands.size()); ++rank) {
      const Candidate& c = cands[static_cast<std::size_t>(rank)];
      const Running& parent = running[static_cast<std::size_t>(c.beam)];
      if (c.token == o.eos_id) {
        if (rank >= o.num_beams) {  // transformers skips these
          ++r.trace.eos_outside_top;
          continue;
        }
        hyps.add(parent.ids, true, c.sum, cur + 1);  // generated_len = cur_len - decoder_prompt_len: the end token too
      } else {
        if (rank >= o.num_beams) ++r.trace.beams_past_rank;
        next.push_back(Running{parent.ids, c.sum});
        next.back().ids.push_back(c.token);
      }
      if (static_cast<int>(next.size()) == o.num_beams) break;
    }
    if (static_cast<int>(next.size()) < o.num_beams)
      throw std::runtime_error("reference_beam_search: fewer than num_beams continuations");
    if (hyps.is_done(cands.front().sum, cur + 1)) {
      r.trace.done_before_limit = cur + 1 < o.max_new_tokens;
      r.best = hyps.best();
      return r;
    }
    running = std::move(next);
  }
  for (const auto& b : running)  // finalize: every open beam, generated_len = its length
    hyps.add(b.ids, false, b.sum, static_cast<int>(b.ids.size()));
  r.best = hyps.best();
  return r;
}

}  // namespace prefixtune::reference
