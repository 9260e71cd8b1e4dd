// SPDX-License-Identifier: MIT
// The prefix-tuning loop: epochs of seeded shuffled batches, AdamW with linear warmup/decay, global-norm clipping,
// validation every N steps keeping the best (merged) prefix, and training checkpoints that resume bit for bit.
#pragma once

#include <charconv>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "prefixtune/io/dataset.hpp"
#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/gpt2.hpp"
#include "prefixtune/models/llama.hpp"
#include "prefixtune/prefix/prefix.hpp"
#include "prefixtune/train/adamw.hpp"
#include "prefixtune/train/clip.hpp"
#include "prefixtune/train/schedule.hpp"

namespace prefixtune {

/// What train_prefix does when a step's loss or gradient is NaN or infinite.
enum class NonFinitePolicy {
  Stop,      // throw an Error naming the step and the tensor; the last checkpoint on disk is the last good state
  SkipStep,  // leave the weights and the optimizer state as they were, record the step in skipped_steps, go on
};

/// Hyper-parameters of train_prefix (defaults: the paper's table-to-text settings).
struct TrainConfig {
  std::int64_t epochs = 10;
  std::int64_t batch_size = 5;
  double lr = 5e-5;
  std::int64_t warmup_steps = 0;
  std::int64_t max_steps = 0;  // > 0: the schedule's length instead of epochs (the paper's low-data runs: 400)
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;         // <= 0: no clipping
  std::int64_t eval_every = 0;        // validation every N steps; 0: at the end of every epoch
  std::uint64_t seed = 42;            // batch order and dropout: the same seed gives the same run
  std::string checkpoint_path;        // where training checkpoints go ("" = none)
  std::int64_t checkpoint_every = 0;  // steps between checkpoints; 0: at the end of every epoch
  bool resume = false;                // continue from checkpoint_path when it exists
  std::int64_t stop_after = 0;        // > 0: return after this step, checkpointed (the schedule is unchanged)
  NonFinitePolicy on_nonfinite = NonFinitePolicy::Stop;  // a NaN/Inf loss or gradient
  double label_smoothing = 0;  // eps in [0, 1) of the training loss (train_bart_prefix only; the GPT-2 trainers
                               // refuse a non-zero value); validation always reports the plain NLL

  void validate() const {
    PREFIXTUNE_CHECK(epochs >= 1 && batch_size >= 1, "train: epochs and batch_size must be >= 1");
    PREFIXTUNE_CHECK(lr >= 0 && std::isfinite(lr), "train: learning rate ", lr, " is invalid");
    PREFIXTUNE_CHECK(warmup_steps >= 0 && max_steps >= 0 && eval_every >= 0 && checkpoint_every >= 0 && stop_after >= 0,
                     "train: step counts must be >= 0");
    PREFIXTUNE_CHECK(std::isfinite(label_smoothing) && label_smoothing >= 0 && label_smoothing < 1,
                     "train: label_smoothing must be finite and in [0, 1), got ", label_smoothing);
  }
};

/// What a progress display needs after each step.
struct TrainProgress {
  std::int64_t step = 0, total_steps = 0, epoch = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  std::optional<double> valid_loss;  // set on steps that ran validation
  bool skipped = false;              // the step's loss or gradient was not finite and no update was made
};

/// The outcome of train_prefix.
template <class T, class Device = Cpu>
struct TrainResult {
  std::vector<double> losses;  // training loss of every step run in this call
  double best_valid_loss = std::numeric_limits<double>::infinity();
  std::int64_t best_step = -1;
  DirectPrefix<T, Device> best_prefix;      // merged at the best validation step (or at the end without validation);
                                            // undefined for full fine-tuning (the model itself is trained)
  std::int64_t steps = 0;                   // the step count reached
  std::vector<std::int64_t> skipped_steps;  // steps (1-based, as TrainProgress::step) left out as non-finite
};

namespace detail {

/// Per row, the first position that carries a label (T when none does): where an infix goes.
inline Tensor<std::int32_t, Cpu> first_labelled(const TokenBatch& batch) {
  const std::int64_t B = batch.targets.size(0), T = batch.targets.size(1);
  auto from = Tensor<std::int32_t, Cpu>::full({B}, static_cast<std::int32_t>(T));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      if (batch.targets(b, t) != kIgnoreLabel) {
        from(b) = static_cast<std::int32_t>(t);
        break;
      }
  return from;
}

/// Places kv for `batch`: an infix sits right before each row's first labelled position (the separator that
/// predicts the first target token), so [X, infix, <eot>, Y]; a prefix is seen by everything.
template <class T, class Device>
void place_prefix(PrefixKv<T, Device>& kv, Placement placement, const TokenBatch& batch) {
  if (placement == Placement::Infix && !kv.empty()) kv.visible_from = first_labelled(batch);
}

template <class T, class Device>
Placement placement_of(const DirectPrefix<T, Device>& p) {
  return p.placement;
}
template <class M>
Placement placement_of(const M& m) {
  return m.config.placement;
}

}  // namespace detail

/// The summed negative log-likelihood (natural log) of every example's target tokens and their count, in order,
/// with `prefix` (its table undefined: the bare model) at its placement and position offset; no gradient.
/// on_batch(done) follows progress. Model: any decoder-only model with a hidden_states overload (Gpt2, Llama).
template <class Model, class T, class Device>
std::vector<std::pair<double, std::int64_t>> score_examples(const Model& model, const DirectPrefix<T, Device>& prefix,
                                                            const std::vector<Example>& data, std::int64_t batch_size,
                                                            const std::function<void(std::size_t)>& on_batch = {}) {
  PREFIXTUNE_CHECK(batch_size >= 1, "score_examples: batch_size must be >= 1, got ", batch_size);
  NoGradGuard no_grad;
  std::vector<std::size_t> order(data.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  const bool has_prefix = prefix.table.defined();
  const std::int64_t offset = has_prefix ? prefix.offset() : 0;
  std::vector<std::pair<double, std::int64_t>> out;
  for (std::size_t b = 0; b < data.size(); b += static_cast<std::size_t>(batch_size)) {
    const std::size_t e = std::min(data.size(), b + static_cast<std::size_t>(batch_size));
    const TokenBatch batch = make_batch(data, order, b, e, 0);
    Tape<T, Device> tape;
    PrefixKv<T, Device> kv;
    if (has_prefix) {
      kv = prefix_kv_from_table(tape, prefix.table, model.config.kv_shape());
      detail::place_prefix(kv, prefix.placement, batch);
    }
    const auto targets = batch.targets.template to<Device>();
    auto h = hidden_states(tape, model, batch.ids.template to<Device>(), batch.mask.template to<Device>(), kv, offset);
    const auto losses =
        cross_entropy_per_position(h.value(), detail::value_of(model.head()), targets).template to<Cpu>();
    for (std::int64_t r = 0; r < batch.ids.size(0); ++r) {
      double sum = 0;
      std::int64_t count = 0;
      for (std::int64_t t = 0; t < batch.ids.size(1); ++t) {
        if (batch.targets(r, t) == kIgnoreLabel) continue;
        sum += static_cast<double>(losses(r, t));
        ++count;
      }
      out.emplace_back(sum, count);
    }
    if (on_batch) on_batch(e);
  }
  return out;
}

/// score_examples with a prefix `table` (P, 2*L*C) (undefined: the bare model) placed before the sequence, real
/// tokens from position_offset.
template <class Model, class T, class Device>
std::vector<std::pair<double, std::int64_t>> score_examples(const Model& model, const Var<T, Device>& table,
                                                            const std::vector<Example>& data, std::int64_t batch_size,
                                                            std::int64_t position_offset,
                                                            const std::function<void(std::size_t)>& on_batch = {}) {
  return score_examples(model, DirectPrefix<T, Device>{table, Placement::Prefix, position_offset}, data, batch_size,
                        on_batch);
}

/// Mean over examples of the summed negative log-likelihood of their target tokens (the paper's objective), with
/// `prefix` at its placement (table undefined: no prefix); no gradient.
template <class Model, class T, class Device>
double evaluate_prefix(const Model& model, const DirectPrefix<T, Device>& prefix, const std::vector<Example>& data,
                       std::int64_t batch_size) {
  PREFIXTUNE_CHECK(!data.empty(), "evaluate_prefix: no examples");
  double total = 0;
  for (const auto& s : score_examples(model, prefix, data, batch_size)) total += s.first;
  return total / static_cast<double>(data.size());
}

/// evaluate_prefix with a prefix `table` (P, 2*L*C) (undefined: no prefix) and real tokens from position_offset.
template <class Model, class T, class Device>
double evaluate_prefix(const Model& model, const Var<T, Device>& table, const std::vector<Example>& data,
                       std::int64_t batch_size, std::int64_t position_offset) {
  return evaluate_prefix(model, DirectPrefix<T, Device>{table, Placement::Prefix, position_offset}, data, batch_size);
}

namespace detail {

/// The name of the first parameter whose gradient holds a NaN or an infinity ("?" if none does).
template <class T, class Device>
std::string first_nonfinite_grad(const std::vector<Var<T, Device>>& params) {
  for (const auto& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    if (!std::isfinite(sum_squares_kernel(Device{}, p.grad().data(), p.grad().numel()))) return p.name();
  }
  return "?";
}

inline const char* kCheckpointFormat = "prefixtune.checkpoint";

/// What a checkpoint holds beside the weights and the optimizer: the step, the seed, and the best validation so far
/// (best_step -1: none yet), whose kept tensors (the best merged prefix) are stored as "best.<i>".
struct CheckpointBest {
  std::int64_t step = -1;
  double valid_loss = std::numeric_limits<double>::infinity();
  bool validated = false;  // the run that wrote the checkpoint validated
};

/// A double written so that reading it back gives the same bits (shortest round-trip form; "inf" for none).
inline std::string exact_double(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  PREFIXTUNE_CHECK(ec == std::errc(), "checkpoint: cannot write ", v);
  return std::string(buf, end);
}

template <class T, class Device>
void save_checkpoint(const std::string& path, const std::vector<Var<T, Device>>& params, const AdamW<T, Device>& opt,
                     std::int64_t step, std::uint64_t seed, const CheckpointBest& best = {},
                     const std::vector<Var<T, Device>>& best_vars = {}) {
  SafeTensorsWriter w;
  constexpr DType dtype = std::is_same_v<T, double> ? DType::F64 : DType::F32;
  for (const auto& p : params) w.add(p.name(), p.value().template to<Cpu>(), dtype);
  opt.save_state(w, "optim.");
  for (std::size_t i = 0; i < best_vars.size(); ++i)
    w.add("best." + std::to_string(i), best_vars[i].value().template to<Cpu>(), dtype);
  w.add_metadata("format", kCheckpointFormat);
  w.add_metadata("step", std::to_string(step));
  w.add_metadata("seed", std::to_string(seed));
  w.add_metadata("validated", best.validated ? "1" : "0");
  w.add_metadata("best_step", std::to_string(best.step));
  w.add_metadata("best_valid_loss", exact_double(best.valid_loss));
  w.add_metadata("best_tensors", std::to_string(best_vars.size()));
  w.write(path);
}

/// A checkpoint's metadata: the step reached and the best validation state saved with it.
struct LoadedCheckpoint {
  std::int64_t step = 0;
  CheckpointBest best;
  std::int64_t best_tensors = 0;  // how many "best.<i>" tensors the file holds
};

/// Reads and checks a checkpoint's metadata (format, seed, step, the best validation state); changes nothing.
inline LoadedCheckpoint read_checkpoint_metadata(const SafeTensorsFile& f, const std::string& path,
                                                 std::uint64_t seed) {
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) {
    const auto it = meta.find(key);
    PREFIXTUNE_CHECK(it != meta.end(), path, ": not a prefixtune training checkpoint (no '", key, "' metadata)");
    return it->second;
  };
  auto get_int = [&](const std::string& key, std::int64_t min) {
    const std::string text = get(key);
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    PREFIXTUNE_CHECK(ec == std::errc() && end == text.data() + text.size() && value >= min, path,
                     ": checkpoint metadata '", key, "' must be ",
                     min == 0 ? "a non-negative integer" : "an integer >= -1", ", got '", text, "'");
    return value;
  };
  PREFIXTUNE_CHECK(get("format") == kCheckpointFormat, path, ": not a prefixtune training checkpoint");
  PREFIXTUNE_CHECK(get("seed") == std::to_string(seed), path, ": checkpoint was made with seed ", get("seed"),
                   ", this run uses ", seed, " (resuming would not reproduce the run)");
  LoadedCheckpoint out;
  out.step = get_int("step", 0);
  PREFIXTUNE_CHECK(meta.count("best_step") != 0, path,
                   ": checkpoint from an older prefixtune without the best-validation state (best_step, "
                   "best_valid_loss and the best prefix); a resumed run could not keep the uninterrupted run's best "
                   "prefix. Start the run afresh (remove the checkpoint or drop --resume)");
  out.best.step = get_int("best_step", -1);
  out.best_tensors = get_int("best_tensors", 0);
  const std::string validated = get("validated");
  PREFIXTUNE_CHECK(validated == "0" || validated == "1", path,
                   ": checkpoint metadata 'validated' must be 0 or 1, got '", validated, "'");
  out.best.validated = validated == "1";
  const std::string loss = get("best_valid_loss");
  const auto [end, ec] = std::from_chars(loss.data(), loss.data() + loss.size(), out.best.valid_loss);
  PREFIXTUNE_CHECK(ec == std::errc() && end == loss.data() + loss.size() && !std::isnan(out.best.valid_loss), path,
                   ": checkpoint metadata 'best_valid_loss' must be a number, got '", loss, "'");
  PREFIXTUNE_CHECK((out.best.step >= 0) == std::isfinite(out.best.valid_loss) && out.best.step <= out.step, path,
                   ": checkpoint metadata best_step ", out.best.step, " / best_valid_loss ", loss,
                   " do not describe a validation at or before step ", out.step);
  return out;
}

/// Loads the trained weights and the optimizer state into the given (same-shaped) objects. Every tensor is read and
/// checked before anything is changed.
template <class T, class Device>
void load_checkpoint_weights(const SafeTensorsFile& f, const std::vector<Var<T, Device>>& params,
                             AdamW<T, Device>& opt) {
  std::vector<Tensor<T, Cpu>> values;
  for (const auto& p : params) values.push_back(f.load<T>(p.name(), p.shape(), true));
  opt.load_state(f, "optim.");
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor<T, Device> value = params[i].value();
    value.copy_from(values[i]);
  }
}

/// load_checkpoint from a path; returns the step.
template <class T, class Device>
std::int64_t load_checkpoint(const std::string& path, const std::vector<Var<T, Device>>& params, AdamW<T, Device>& opt,
                             std::uint64_t seed) {
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  const std::int64_t step = read_checkpoint_metadata(f, path, seed).step;
  load_checkpoint_weights(f, params, opt);
  return step;
}

/// Copies the checkpoint's "best.<i>" tensors into best_vars (same count and shapes, else an Error naming them).
template <class T, class Device>
void load_checkpoint_best(const SafeTensorsFile& f, const std::string& path, std::int64_t stored,
                          const std::vector<Var<T, Device>>& best_vars) {
  PREFIXTUNE_CHECK(stored == static_cast<std::int64_t>(best_vars.size()), path, ": checkpoint holds ", stored,
                   " best-prefix tensors, this trainer keeps ", best_vars.size(), " (a checkpoint of another method?)");
  std::vector<Tensor<T, Cpu>> values;
  for (std::size_t i = 0; i < best_vars.size(); ++i)
    values.push_back(f.load<T>("best." + std::to_string(i), best_vars[i].shape(), true));
  for (std::size_t i = 0; i < best_vars.size(); ++i) {
    Tensor<T, Device> value = best_vars[i].value();
    value.copy_from(values[i]);
  }
}

}  // namespace detail

namespace detail {

/// What train_loop asks of the thing being trained. Batch is what one step reads (TokenBatch for decoder-only
/// examples); make builds it from examples order[begin..end) (empty: make_batch, for Example data).
template <class T, class Device, class Batch = TokenBatch>
struct TrainHooks {
  std::vector<Var<T, Device>> params;  // the trainable weights (named: checkpoints store them by name)
  std::function<Batch(const std::vector<std::size_t>& order, std::size_t begin, std::size_t end)> make;
  std::function<Var<T, Device>(Tape<T, Device>&, const Batch&, Rng& dropout_rng)> loss;  // of one batch
  std::function<double()> validate;  // the validation loss, or empty (no validation set)
  std::function<void()> keep_best;   // after a validation that improved (or once at the end without one)
  // The tensors keep_best keeps (e.g. the merged prefix), stored in checkpoints so that a resumed run keeps the
  // uninterrupted run's best; empty or unset: only the best loss and step are stored (fine-tuning).
  std::function<std::vector<Var<T, Device>>()> best_vars;
  bool smooths_labels = false;  // loss applies TrainConfig::label_smoothing (else a non-zero one is refused)
};

/// The training loop every trainer shares: epochs of seeded shuffled batches, AdamW with linear warmup/decay,
/// clipping, non-finite handling, validation keeping the best, checkpoints that resume bit for bit.
template <class T, class Device, class Batch, class Data>
TrainResult<T, Device> train_loop(const TrainHooks<T, Device, Batch>& hooks, const std::vector<Data>& train,
                                  const TrainConfig& cfg,
                                  const std::function<void(const TrainProgress&)>& on_progress) {
  cfg.validate();
  PREFIXTUNE_CHECK(cfg.label_smoothing == 0 || hooks.smooths_labels, "train: label_smoothing ", cfg.label_smoothing,
                   " is not supported by this trainer (only train_bart_prefix applies it)");
  PREFIXTUNE_CHECK(!train.empty(), "train: the training set is empty");
  const auto n = static_cast<std::int64_t>(train.size());
  const std::int64_t per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;
  const std::int64_t total = cfg.max_steps > 0 ? cfg.max_steps : cfg.epochs * per_epoch;
  AdamWConfig oc;
  oc.lr = cfg.lr;
  oc.weight_decay = cfg.weight_decay;
  AdamW<T, Device> opt(hooks.params, oc);
  const LinearSchedule schedule{cfg.lr, cfg.warmup_steps, total};
  TrainResult<T, Device> result;
  std::int64_t step = 0;
  if (!cfg.checkpoint_path.empty()) remove_stale_temp_files(cfg.checkpoint_path);  // left by a killed run
  const bool validates = static_cast<bool>(hooks.validate);
  auto kept = [&] { return validates && hooks.best_vars ? hooks.best_vars() : std::vector<Var<T, Device>>(); };
  if (cfg.resume && !cfg.checkpoint_path.empty() && std::filesystem::exists(cfg.checkpoint_path)) {
    const SafeTensorsFile f = SafeTensorsFile::open(cfg.checkpoint_path);
    // Everything is read and checked before the trained weights change: the metadata, then the best state (into
    // the trainer's own kept state, shaped by keep_best from the weights as they are), then the weights.
    const LoadedCheckpoint loaded = read_checkpoint_metadata(f, cfg.checkpoint_path, cfg.seed);
    PREFIXTUNE_CHECK(!validates || loaded.best.validated || loaded.step == 0, cfg.checkpoint_path,
                     ": checkpoint of a run without validation; this run validates, and the best prefix of its first ",
                     loaded.step, " steps is unknown (resume without validation, or start afresh)");
    const bool restore_best = validates && loaded.best.step >= 0;  // the best so far, as the uninterrupted run has it
    if (restore_best) {
      if (hooks.keep_best) hooks.keep_best();
      load_checkpoint_best(f, cfg.checkpoint_path, loaded.best_tensors, kept());
    }
    load_checkpoint_weights(f, hooks.params, opt);
    step = loaded.step;
    if (restore_best) {
      result.best_valid_loss = loaded.best.valid_loss;
      result.best_step = loaded.best.step;
    }
  }
  const std::int64_t eval_every = cfg.eval_every > 0 ? cfg.eval_every : per_epoch;
  const std::int64_t ckpt_every = cfg.checkpoint_every > 0 ? cfg.checkpoint_every : per_epoch;
  std::vector<std::size_t> order;
  std::int64_t order_epoch = -1;
  while (step < total && (cfg.stop_after == 0 || step < cfg.stop_after)) {
    const std::int64_t epoch = step / per_epoch, within = step % per_epoch;
    if (epoch != order_epoch) {
      Rng shuffle_rng(cfg.seed, static_cast<std::uint64_t>(epoch));  // the order of epoch e depends on (seed, e) only
      order = shuffled_order(train.size(), shuffle_rng);
      order_epoch = epoch;
    }
    const auto b = static_cast<std::size_t>(within * cfg.batch_size);
    const std::size_t e = std::min(train.size(), b + cfg.batch_size);
    Batch batch;
    if constexpr (std::is_same_v<Batch, TokenBatch> && std::is_same_v<Data, Example>) {
      batch = hooks.make ? hooks.make(order, b, e) : make_batch(train, order, b, e, 0);
    } else {
      batch = hooks.make(order, b, e);
    }
    Rng dropout_rng(cfg.seed, 0x8000000000000000ull + static_cast<std::uint64_t>(step));
    Tape<T, Device> tape;
    auto loss = hooks.loss(tape, batch, dropout_rng);
    const double loss_value = loss.value().item();
    std::string bad;  // what was not finite, for the message
    double norm = 0;
    if (!std::isfinite(loss_value)) {
      bad = "loss " + std::to_string(loss_value);
    } else {
      tape.backward(loss);
      norm = cfg.max_grad_norm > 0 ? clip_grad_norm(opt.parameters(), cfg.max_grad_norm)
                                   : global_grad_norm(opt.parameters());
      if (!std::isfinite(norm)) bad = "gradient of '" + first_nonfinite_grad(opt.parameters()) + "'";
    }
    if (bad.empty()) {
      opt.set_lr(schedule.lr_at(step));
      opt.step();
    } else {
      PREFIXTUNE_CHECK(cfg.on_nonfinite == NonFinitePolicy::SkipStep, "train: non-finite ", bad, " at step ", step + 1,
                       " (epoch ", epoch, ", batch of examples from line ", train[order[b]].line,
                       "); stopped without updating: the last checkpoint",
                       cfg.checkpoint_path.empty() ? std::string() : " (" + cfg.checkpoint_path + ")",
                       " holds the last good state. NonFinitePolicy::SkipStep (--skip-nonfinite) skips such steps");
      result.skipped_steps.push_back(step + 1);
    }
    opt.zero_grad();
    ++step;
    result.losses.push_back(loss_value);
    TrainProgress progress{step, total, epoch, loss_value, schedule.lr_at(step - 1), norm, std::nullopt, !bad.empty()};
    if (hooks.validate && (step % eval_every == 0 || step == total)) {
      const double v = hooks.validate();
      progress.valid_loss = v;
      if (v < result.best_valid_loss) {
        result.best_valid_loss = v;
        result.best_step = step;
        if (hooks.keep_best) hooks.keep_best();
      }
    }
    if (!cfg.checkpoint_path.empty() && (step % ckpt_every == 0 || step == total || step == cfg.stop_after))
      save_checkpoint(cfg.checkpoint_path, hooks.params, opt, step, cfg.seed,
                      CheckpointBest{result.best_step, result.best_valid_loss, validates},
                      result.best_step >= 0 ? kept() : std::vector<Var<T, Device>>());
    if (on_progress) on_progress(progress);
  }
  result.steps = step;
  if (!hooks.validate && hooks.keep_best) hooks.keep_best();
  return result;
}

}  // namespace detail

/// The paper's objective on one batch (summed target NLL per sequence, mean over the batch) with `method`'s
/// prefix at its placement: what a training step differentiates. dropout_rng null: no dropout.
template <class T, class Device, class Model, class Method>
Var<T, Device> prefix_batch_loss(Tape<T, Device>& tape, const Model& model, const Method& method,
                                 const TokenBatch& batch, Rng* dropout_rng = nullptr) {
  auto kv = method.prefix_kv(tape, model, dropout_rng);
  detail::place_prefix(kv, detail::placement_of(method), batch);
  auto h = hidden_states(tape, model, batch.ids.template to<Device>(), batch.mask.template to<Device>(), kv,
                         method.offset());
  return cross_entropy(tape, h, model.head(), batch.targets.template to<Device>(), Reduction::SumPerSequenceMeanBatch);
}

/// Trains `method` (its parameters are the only trainable weights) on `train` against the frozen `model`;
/// validates on `valid` (may be empty). `method` is a PrefixEncoder (the paper's MLP, shallow or deep), a
/// DirectPrefix, an EmbeddingPrefix, or anything with their members: parameters(), offset(), a placement
/// (config.placement or placement), prefix_kv(tape, model, dropout_rng) and merged(model). An infix is placed
/// right before each example's first labelled token. `on_progress` is called after every step.
template <class Model, class Method, class T = typename Model::value_type, class Device = typename Model::device_type>
TrainResult<T, Device> train_prefix(const Model& model, Method& method, const std::vector<Example>& train,
                                    const std::vector<Example>& valid, const TrainConfig& cfg,
                                    const std::function<void(const TrainProgress&)>& on_progress = {}) {
  TrainResult<T, Device> result;
  detail::TrainHooks<T, Device> hooks;
  hooks.params = method.parameters();
  hooks.loss = [&](Tape<T, Device>& tape, const TokenBatch& batch, Rng& dropout_rng) {
    return prefix_batch_loss(tape, model, method, batch, &dropout_rng);
  };
  DirectPrefix<T, Device> best;
  if (!valid.empty())
    hooks.validate = [&] { return evaluate_prefix(model, method.merged(model), valid, cfg.batch_size); };
  hooks.keep_best = [&] { best = method.merged(model); };
  hooks.best_vars = [&] { return std::vector<Var<T, Device>>{best.table}; };
  result = detail::train_loop(hooks, train, cfg, on_progress);
  result.best_prefix = best;
  return result;
}

}  // namespace prefixtune
