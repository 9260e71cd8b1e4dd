// SPDX-License-Identifier: MIT
// The paper's baselines that change the model: full fine-tuning (every weight) and FT-top-k (only the top k
// transformer blocks and the final layer norm; the paper's FT-top2), through the same autograd and training
// loop as prefix-tuning, with the per-token mean loss of the paper's fine-tuning runs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "prefixtune/train/trainer.hpp"

namespace prefixtune {

/// The weights fine_tune trains in `t`: all of them (top_layers = 0), or blocks n_layer-top_layers.. and ln_f.
template <class T, class Device>
std::vector<Var<T, Device>> fine_tune_parameters(const Gpt2<T, Device, Var<T, Device>>& t, std::int64_t top_layers) {
  const std::int64_t L = t.config.n_layer;
  PREFIXTUNE_CHECK(top_layers >= 0 && top_layers <= L, "fine_tune: top_layers ", top_layers,
                   " must be in [0, n_layer = ", L, "] (0 = every weight)");
  std::vector<Var<T, Device>> params;
  if (top_layers == 0) {
    for (const auto* w : detail::gpt2_weight_slots(t)) params.push_back(*w);
    if (t.lm_head.defined()) params.push_back(t.lm_head);
    return params;
  }
  for (std::int64_t l = L - top_layers; l < L; ++l) {
    const auto& b = t.h[static_cast<std::size_t>(l)];
    for (const auto* w : {&b.ln_1_w, &b.ln_1_b, &b.attn_w, &b.attn_b, &b.attn_proj_w, &b.attn_proj_b, &b.ln_2_w,
                          &b.ln_2_b, &b.fc_w, &b.fc_b, &b.mlp_proj_w, &b.mlp_proj_b})
      params.push_back(*w);
  }
  params.push_back(t.ln_f_w);
  params.push_back(t.ln_f_b);
  return params;
}

/// Fine-tunes `model` in place (its weights change) on `train`, validating on `valid` (may be empty) with the
/// same metric as prefix-tuning (summed target NLL per example, evaluate_prefix without a prefix). The loss is the
/// mean over labelled tokens. top_layers = 0 trains every weight; k > 0 only the top k blocks and ln_f (the
/// embeddings, and so the tied head, stay frozen). The returned best_prefix is undefined; best_valid_loss and
/// best_step say when validation was best, and the model holds the last step's weights.
template <class T, class Device>
TrainResult<T, Device> fine_tune(Gpt2<T, Device>& model, const std::vector<Example>& train,
                                 const std::vector<Example>& valid, const TrainConfig& cfg, std::int64_t top_layers = 0,
                                 const std::function<void(const TrainProgress&)>& on_progress = {}) {
  auto trainable = make_trainable(model);  // shares storage with model
  const auto params = fine_tune_parameters(trainable, top_layers);
  {  // freeze what is not trained: those weights get no gradient buffers and no tape work
    auto slots = detail::gpt2_weight_slots(trainable);
    std::vector<Var<T, Device>*> all(slots.begin(), slots.end());
    if (trainable.lm_head.defined()) all.push_back(&trainable.lm_head);
    for (auto* w : all) {
      bool train_it = false;
      for (const auto& p : params) train_it = train_it || p.value().data() == w->value().data();
      if (!train_it) *w = Var<T, Device>(w->value(), false, w->name());
    }
  }
  detail::TrainHooks<T, Device> hooks;
  hooks.params = params;
  hooks.loss = [&](Tape<T, Device>& tape, const TokenBatch& batch, Rng&) {
    auto h = gpt2_hidden(tape, trainable, batch.ids.template to<Device>(), batch.mask.template to<Device>(),
                         PrefixKv<T, Device>(), 0);
    return gpt2_loss(tape, trainable, h, batch.targets.template to<Device>(), Reduction::MeanPerToken);
  };
  if (!valid.empty())
    hooks.validate = [&] { return evaluate_prefix(model, DirectPrefix<T, Device>(), valid, cfg.batch_size); };
  return detail::train_loop(hooks, train, cfg, on_progress);
}

}  // namespace prefixtune
