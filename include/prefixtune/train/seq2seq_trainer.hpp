// SPDX-License-Identifier: MIT
// Prefix-tuning an encoder-decoder: source/target examples with BART's special tokens, padded teacher-forcing
// batches (decoder inputs = shift_tokens_right(labels)), the per-token loss of the three prefixes, validation, and
// train_bart_prefix on the shared training loop (checkpoints, resume, non-finite guard as for GPT-2).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "prefixtune/io/bpe.hpp"
#include "prefixtune/io/dataset.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"
#include "prefixtune/train/trainer.hpp"

namespace prefixtune {

/// One source-target pair as token ids with their special tokens (<s> ... </s>), from data file line `line`.
struct Seq2SeqExample {
  std::vector<std::int32_t> source, target;
  std::size_t line = 0;
};

/// `<s> text </s>` ids of both sides of every pair, the special tokens looked up in the tokenizer's vocabulary
/// ("<s>", "</s>": BART's, from its vocab.json, never GPT-2's); sources longer than max_source tokens (0: no
/// limit) are cut before their </s>, targets longer than max_target are refused (the model would learn a cut).
inline std::vector<Seq2SeqExample> encode_seq2seq(const Gpt2Tokenizer& tok, const std::vector<TextPair>& pairs,
                                                  std::size_t max_source = 0, std::size_t max_target = 0) {
  const auto bos = tok.id_of("<s>"), eos = tok.id_of("</s>");
  PREFIXTUNE_CHECK(bos && eos, "encode_seq2seq: the vocabulary has no <s> / </s> tokens (not a BART vocabulary)");
  PREFIXTUNE_CHECK(max_source == 0 || max_source >= 3, "encode_seq2seq: max_source ", max_source,
                   " leaves no room for a source token between <s> and </s> (0 = no limit, else >= 3)");
  std::vector<Seq2SeqExample> out;
  for (const TextPair& p : pairs) {
    Seq2SeqExample ex;
    ex.line = p.line;
    ex.source = tok.encode(p.source);
    if (max_source > 0 && ex.source.size() + 2 > max_source) ex.source.resize(max_source - 2);
    ex.source.insert(ex.source.begin(), *bos);
    ex.source.push_back(*eos);
    ex.target = tok.encode(p.target);
    ex.target.insert(ex.target.begin(), *bos);
    ex.target.push_back(*eos);
    PREFIXTUNE_CHECK(max_target == 0 || ex.target.size() <= max_target, "line ", p.line, ": the target has ",
                     ex.target.size(), " tokens, more than the limit ", max_target);
    out.push_back(std::move(ex));
  }
  return out;
}

/// A padded teacher-forcing batch: source (B, S) with its mask, labels (B, T) (-100 after each target), decoder
/// inputs (B, T) = shift_tokens_right(labels).
struct Seq2SeqBatch {
  Tensor<std::int32_t, Cpu> source, decoder_inputs, labels;
  Tensor<std::uint8_t, Cpu> source_mask;
};

/// Batches examples[order[begin..end)] for `c` (its pad and decoder start ids), after checking ids and lengths.
inline Seq2SeqBatch make_seq2seq_batch(const std::vector<Seq2SeqExample>& examples,
                                       const std::vector<std::size_t>& order, std::size_t begin, std::size_t end,
                                       const BartConfig& c) {
  PREFIXTUNE_CHECK(begin < end && end <= order.size(), "make_seq2seq_batch: range [", begin, ", ", end,
                   ") is empty or outside the ", order.size(), " indices");
  std::size_t S = 1, T = 1;
  for (std::size_t i = begin; i < end; ++i) {
    PREFIXTUNE_CHECK(order[i] < examples.size(), "make_seq2seq_batch: index ", order[i], " out of range");
    const Seq2SeqExample& ex = examples[order[i]];
    PREFIXTUNE_CHECK(!ex.source.empty() && !ex.target.empty(), "line ", ex.line, ": empty source or target");
    for (const auto* side : {&ex.source, &ex.target}) {
      PREFIXTUNE_CHECK(static_cast<std::int64_t>(side->size()) <= c.max_position_embeddings, "line ", ex.line, ": ",
                       side->size(), " tokens, more than max_position_embeddings = ", c.max_position_embeddings);
      for (std::int32_t id : *side)
        PREFIXTUNE_CHECK(id >= 0 && id < c.vocab_size, "line ", ex.line, ": token id ", id,
                         " is outside the vocabulary [0, ", c.vocab_size, ")");
    }
    S = std::max(S, ex.source.size());
    T = std::max(T, ex.target.size());
  }
  const auto B = static_cast<std::int64_t>(end - begin);
  const auto pad = static_cast<std::int32_t>(c.pad_token_id);
  Seq2SeqBatch b{Tensor<std::int32_t, Cpu>::full({B, static_cast<std::int64_t>(S)}, pad),
                 {},
                 Tensor<std::int32_t, Cpu>::full({B, static_cast<std::int64_t>(T)}, kIgnoreLabel),
                 Tensor<std::uint8_t, Cpu>::zeros({B, static_cast<std::int64_t>(S)})};
  for (std::int64_t r = 0; r < B; ++r) {
    const Seq2SeqExample& ex = examples[order[begin + static_cast<std::size_t>(r)]];
    for (std::size_t t = 0; t < ex.source.size(); ++t) {
      b.source(r, static_cast<std::int64_t>(t)) = ex.source[t];
      b.source_mask(r, static_cast<std::int64_t>(t)) = 1;
    }
    for (std::size_t t = 0; t < ex.target.size(); ++t) b.labels(r, static_cast<std::int64_t>(t)) = ex.target[t];
  }
  b.decoder_inputs = shift_tokens_right(b.labels, pad, static_cast<std::int32_t>(c.decoder_start_token_id));
  return b;
}

/// The per-token mean loss of `batch` with the three prefixes (kv from Seq2SeqPrefix::prefix_kv or
/// seq2seq_prefix_kv; empty members = no prefix there); label_smoothing as in bart_loss.
template <class T, class Device, class Param>
Var<T, Device> bart_batch_loss(Tape<T, Device>& tape, const Bart<T, Device, Param>& m,
                               const Seq2SeqPrefixKv<T, Device>& kv, const Seq2SeqBatch& batch,
                               double label_smoothing = 0) {
  return bart_prefix_loss(tape, m, kv, batch.source.template to<Device>(), batch.source_mask.template to<Device>(),
                          batch.decoder_inputs.template to<Device>(), batch.labels.template to<Device>(),
                          label_smoothing);
}

/// The mean target-token NLL over all of `data` with merged `tables` (no gradient): the validation metric.
template <class T, class Device>
double evaluate_bart_prefix(const Bart<T, Device>& m, const Seq2SeqTables<T, Device>& tables,
                            const std::vector<Seq2SeqExample>& data, std::int64_t batch_size) {
  PREFIXTUNE_CHECK(!data.empty() && batch_size >= 1, "evaluate_bart_prefix: no examples or batch_size < 1");
  NoGradGuard no_grad;
  std::vector<std::size_t> order(data.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  double total = 0;
  std::int64_t tokens = 0;
  for (std::size_t b = 0; b < data.size(); b += static_cast<std::size_t>(batch_size)) {
    const auto batch =
        make_seq2seq_batch(data, order, b, std::min(data.size(), b + static_cast<std::size_t>(batch_size)), m.config);
    std::int64_t n = 0;
    for (std::int64_t i = 0; i < batch.labels.numel(); ++i) n += batch.labels.data()[i] != kIgnoreLabel;
    Tape<T, Device> tape;
    total += bart_batch_loss(tape, m, seq2seq_prefix_kv(tape, tables, m.config), batch).value().item() *
             static_cast<double>(n);
    tokens += n;
  }
  return total / static_cast<double>(tokens);
}

/// train_prefix's result plus the best merged tables of the three prefixes.
template <class T, class Device>
struct Seq2SeqTrainResult : TrainResult<T, Device> {
  Seq2SeqTables<T, Device> best_tables;
};

/// Trains the three prefixes of `prefix` (the only trainable weights) on `train` against the frozen BART, with the
/// per-token mean loss of the paper's summarization runs, label-smoothed by cfg.label_smoothing; validates on
/// `valid` (may be empty) by evaluate_bart_prefix (always the plain per-token NLL, never smoothed), keeping the
/// best merged tables. Checkpoints, resume and the non-finite policy as in train_prefix.
template <class T, class Device>
Seq2SeqTrainResult<T, Device> train_bart_prefix(const Bart<T, Device>& model, Seq2SeqPrefix<T, Device>& prefix,
                                                const std::vector<Seq2SeqExample>& train,
                                                const std::vector<Seq2SeqExample>& valid, const TrainConfig& cfg,
                                                const std::function<void(const TrainProgress&)>& on_progress = {}) {
  detail::TrainHooks<T, Device, Seq2SeqBatch> hooks;
  hooks.params = prefix.parameters();
  hooks.make = [&](const std::vector<std::size_t>& order, std::size_t begin, std::size_t end) {
    return make_seq2seq_batch(train, order, begin, end, model.config);
  };
  hooks.loss = [&](Tape<T, Device>& tape, const Seq2SeqBatch& batch, Rng& dropout_rng) {
    return bart_batch_loss(tape, model, prefix.prefix_kv(tape, &dropout_rng), batch, cfg.label_smoothing);
  };
  hooks.smooths_labels = true;
  Seq2SeqTables<T, Device> best;
  if (!valid.empty())
    hooks.validate = [&] { return evaluate_bart_prefix(model, prefix.merged(), valid, cfg.batch_size); };
  hooks.keep_best = [&] { best = prefix.merged(); };
  hooks.best_vars = [&] {
    return std::vector<Var<T, Device>>{best.encoder.table, best.decoder.table, best.cross.table};
  };
  Seq2SeqTrainResult<T, Device> result;
  static_cast<TrainResult<T, Device>&>(result) = detail::train_loop(hooks, train, cfg, on_progress);
  result.best_tables = best;
  return result;
}

}  // namespace prefixtune
