// SPDX-License-Identifier: MIT
// pretrain_tiny_gpt2: pretrains a small GPT-2 (GPT-2's own tokenizer, 50257 tokens) from scratch on a plain-text
// corpus (the Brown corpus of scripts/fetch_brown.sh) and writes a HuggingFace GPT-2 folder (config.json,
// model.safetensors, vocab.json, merges.txt) that load_gpt2 and transformers' GPT2LMHeadModel both read.
//
// Seeded and reproducible: the same flags and --steps give the same weights (with the same thread count). With
// --minutes M and no --steps, the step count is fixed from the speed measured during warmup (printed, so
// `--steps N` repeats the run) and training stops early, still saving, if the budget runs out anyway.
#include <prefixtune/prefixtune.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "example_options.hpp"

using namespace prefixtune;
namespace fs = std::filesystem;

namespace {

/// Command-line options (see usage()).
struct Options {
  std::string corpus, vocab, out, validation_out;
  std::int64_t layers = 4, embd = 256, heads = 8, positions = 128;
  std::int64_t block = 128, batch = 8, steps = 0, warmup = 100, eval_every = 0, eval_blocks = 64;
  double minutes = 0, lr = 3e-3, weight_decay = 0.1, clip = 1.0, val_fraction = 0.01;
  std::uint64_t seed = 0;
  std::string dtype = "f32";
  std::int64_t sample_tokens = 32;
  std::int64_t sampled_softmax = 0;
};

void usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s --corpus FILE --vocab DIR --out DIR [options]\n"
      "  --corpus FILE      UTF-8 text: one paragraph per line, an empty line between documents\n"
      "  --vocab DIR        GPT-2 tokenizer: vocab.json + merges.txt or encoder.json + vocab.bpe\n"
      "  --out DIR          the HuggingFace folder to write (replaced atomically if it holds a model)\n"
      "  --layers N (4) --embd N (256) --heads N (8) --positions N (128)   model size\n"
      "  --block T (128)    tokens per training sequence (<= --positions)\n"
      "  --batch B (8)      sequences per step\n"
      "  --steps N (0)      optimizer steps; 0: fit --minutes, or one epoch without --minutes\n"
      "  --minutes M (0)    time budget for the whole run (tokenizing, training, evaluation, saving); 0: none\n"
      "  --lr X (3e-3) --warmup N (100) --weight-decay X (0.1, matrices only) --clip X (1.0)\n"
      "  --eval-every N (0: about 8 evaluations per run) --eval-blocks N (64: validation blocks per evaluation)\n"
      "  --val-fraction X (0.01)   share of the blocks held out for validation\n"
      "  --seed S (0) --dtype f32|f16|bf16 (f32) --sample-tokens N (32; 0: no greedy samples at the end)\n"
      "  --validation-out FILE   also write the validation blocks' token ids (JSON: block, blocks) for checks\n"
      "  --sampled-softmax K (0)  train the head on the batch's labels + K uniform negatives per step\n"
      "                     (train/sampled_softmax.hpp; 0: the full softmax); evaluation always uses the full one\n",
      argv0);
}

/// Parses argv into Options; returns nullopt (after printing usage) on a bad command line.
std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  const prefixtune_examples::OptionTargets targets{{{"--corpus", &o.corpus},
                                                    {"--vocab", &o.vocab},
                                                    {"--out", &o.out},
                                                    {"--dtype", &o.dtype},
                                                    {"--validation-out", &o.validation_out}},
                                                   {{"--layers", &o.layers},
                                                    {"--embd", &o.embd},
                                                    {"--heads", &o.heads},
                                                    {"--positions", &o.positions},
                                                    {"--block", &o.block},
                                                    {"--batch", &o.batch},
                                                    {"--steps", &o.steps},
                                                    {"--warmup", &o.warmup},
                                                    {"--eval-every", &o.eval_every},
                                                    {"--eval-blocks", &o.eval_blocks},
                                                    {"--sample-tokens", &o.sample_tokens},
                                                    {"--sampled-softmax", &o.sampled_softmax}},
                                                   {{"--minutes", &o.minutes},
                                                    {"--lr", &o.lr},
                                                    {"--weight-decay", &o.weight_decay},
                                                    {"--clip", &o.clip},
                                                    {"--val-fraction", &o.val_fraction}},
                                                   {{"--seed", &o.seed}}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: '%s' needs a value\n", argv[0], a.c_str());
      usage(argv[0]);
      return std::nullopt;
    }
    if (!prefixtune_examples::set_option(targets, a, argv[++i])) {
      std::fprintf(stderr, "%s: unknown option '%s'\n", argv[0], a.c_str());
      usage(argv[0]);
      return std::nullopt;
    }
  }
  if (o.corpus.empty() || o.vocab.empty() || o.out.empty()) {
    std::fprintf(stderr, "%s: --corpus, --vocab and --out are required\n", argv[0]);
    usage(argv[0]);
    return std::nullopt;
  }
  PREFIXTUNE_CHECK(o.block >= 2 && o.block <= o.positions, "--block ", o.block,
                   " must be in [2, --positions = ", o.positions, "]");
  PREFIXTUNE_CHECK(o.batch >= 1 && o.steps >= 0 && o.warmup >= 0 && o.eval_every >= 0 && o.eval_blocks >= 1,
                   "--batch, --eval-blocks must be >= 1 and --steps, --warmup, --eval-every >= 0");
  PREFIXTUNE_CHECK(o.minutes >= 0 && o.lr > 0 && o.clip > 0 && o.weight_decay >= 0,
                   "--minutes, --weight-decay "
                   "must be >= 0 and --lr, --clip > 0");
  PREFIXTUNE_CHECK(o.sampled_softmax >= 0, "--sampled-softmax must be >= 0");
  PREFIXTUNE_CHECK(o.val_fraction > 0 && o.val_fraction < 0.5, "--val-fraction must be in (0, 0.5)");
  PREFIXTUNE_CHECK(o.dtype == "f32" || o.dtype == "f16" || o.dtype == "bf16", "--dtype must be f32, f16 or bf16");
  PREFIXTUNE_CHECK(o.sample_tokens >= 0 && o.sample_tokens < o.positions, "--sample-tokens must be in [0, ",
                   o.positions, ")");
  return o;
}

using prefixtune_examples::seconds_since;

// ------------------------------------------------------------------------------------------------------------ data

/// The corpus as one token stream: each document's paragraphs joined by "\n" (id 198 for GPT-2), every document
/// followed by <|endoftext|>. Documents are tokenized in parallel, concatenated in file order.
std::vector<std::int32_t> tokenize_corpus(const std::string& path, const Gpt2Tokenizer& tok) {
  const std::string text = read_text_file(path);
  std::vector<std::string> docs(1);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      if (!docs.back().empty()) docs.emplace_back();
    } else {
      if (!docs.back().empty()) docs.back() += '\n';
      docs.back() += line;
    }
    pos = end + 1;
  }
  if (docs.back().empty()) docs.pop_back();
  PREFIXTUNE_CHECK(!docs.empty(), path, ": no text");
  std::vector<std::vector<std::int32_t>> ids(docs.size());
  const auto n = static_cast<std::int64_t>(docs.size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic)
#endif
  for (std::int64_t d = 0; d < n; ++d) ids[static_cast<std::size_t>(d)] = tok.encode(docs[static_cast<std::size_t>(d)]);
  std::vector<std::int32_t> stream;
  for (const auto& d : ids) {
    stream.insert(stream.end(), d.begin(), d.end());
    stream.push_back(tok.eot_id());
  }
  std::printf("corpus: %zu documents, %zu tokens\n", docs.size(), stream.size());
  return stream;
}

/// One batch: ids (B, T) and the next-token targets (B, T) of the blocks `blocks` of `stream`.
struct Batch {
  Tensor<std::int32_t, Cpu> ids, targets;
};

Batch make_batch(const std::vector<std::int32_t>& stream, const std::vector<std::int64_t>& blocks, std::int64_t T) {
  const auto B = static_cast<std::int64_t>(blocks.size());
  std::vector<std::int32_t> ids(static_cast<std::size_t>(B * T)), tg(static_cast<std::size_t>(B * T));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int32_t* src = stream.data() + blocks[static_cast<std::size_t>(b)] * T;
    std::copy(src, src + T, ids.begin() + b * T);
    std::copy(src + 1, src + T + 1, tg.begin() + b * T);
  }
  return {Tensor<std::int32_t, Cpu>::from_vector({B, T}, ids), Tensor<std::int32_t, Cpu>::from_vector({B, T}, tg)};
}

/// Fisher-Yates shuffle with the library's platform-independent Rng.
void shuffle(std::vector<std::int64_t>& v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<std::size_t>(rng.below(i))]);
}

// ----------------------------------------------------------------------------------------------------------- model

using TrainableGpt2 = Gpt2<float, Cpu, Var<float>>;

/// The trainable parameters of a model in HuggingFace key order, and which of them take weight decay.
struct ParamList {
  std::vector<Var<float>> all, decay, no_decay;
};

/// A trainable GPT-2 with GPT-2's initialization: N(0, 0.02) weights, LayerNorm weights 1, biases 0, and the
/// residual projections (attn.c_proj, mlp.c_proj) drawn with std 0.02 / sqrt(2 n_layer). The LM head is tied.
TrainableGpt2 init_trainable(const Gpt2Config& config, std::uint64_t seed, ParamList& params) {
  Rng rng(seed, 0);
  Gpt2<float> init = random_gpt2<float>(config, rng);
  Rng proj_rng(seed, 1);
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.n_layer));
  for (auto& b : init.h) {
    fill_normal(b.attn_proj_w, proj_rng, 0.0, proj_std);
    fill_normal(b.mlp_proj_w, proj_rng, 0.0, proj_std);
  }
  TrainableGpt2 m = make_trainable(init);  // shares init's storage, which outlives this function through the Vars
  const auto keys = detail::gpt2_weight_shapes(config);
  const auto slots = detail::gpt2_weight_slots(m);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    params.all.push_back(*slots[i]);
    // Weight decay on the block matrices only: not on biases, LayerNorm, or the (tied) embeddings.
    const bool matrix = slots[i]->value().rank() == 2 && keys[i].first.rfind("h.", 0) == 0;
    (matrix ? params.decay : params.no_decay).push_back(*slots[i]);
  }
  return m;
}

/// Mean next-token loss (nats per token) over the validation blocks, batch at a time, no gradients.
double evaluate(const TrainableGpt2& m, const std::vector<std::int32_t>& stream, const std::vector<std::int64_t>& val,
                std::int64_t T, std::int64_t B) {
  NoGradGuard no_grad;
  double sum = 0;
  std::int64_t count = 0;
  for (std::size_t i = 0; i < val.size(); i += static_cast<std::size_t>(B)) {
    const std::vector<std::int64_t> blocks(val.begin() + static_cast<std::ptrdiff_t>(i),
                                           val.begin() + static_cast<std::ptrdiff_t>(std::min(val.size(), i + B)));
    const Batch batch = make_batch(stream, blocks, T);
    Tape<float> tape;
    const auto h = gpt2_hidden(tape, m, batch.ids, Tensor<std::uint8_t, Cpu>(), PrefixKv<float>{}, 0);
    const auto n = static_cast<std::int64_t>(blocks.size()) * T;
    sum += static_cast<double>(gpt2_loss(tape, m, h, batch.targets, Reduction::MeanPerToken).value().item()) *
           static_cast<double>(n);
    count += n;
  }
  return sum / static_cast<double>(count);
}

// ---------------------------------------------------------------------------------------------------------- saving

/// Copies the tokenizer files into `dir` under HuggingFace's names (encoder.json / vocab.bpe are the same formats).
void copy_vocab(const std::string& vocab_dir, const fs::path& dir) {
  const fs::path v(vocab_dir);
  const bool hf = fs::exists(v / "vocab.json") && fs::exists(v / "merges.txt");
  write_text_file_atomic((dir / "vocab.json").string(),
                         read_text_file((v / (hf ? "vocab.json" : "encoder.json")).string()));
  write_text_file_atomic((dir / "merges.txt").string(),
                         read_text_file((v / (hf ? "merges.txt" : "vocab.bpe")).string()));
}

/// Writes the whole folder next to `out` first, then swaps it in, so `out` is never a half-written model.
void save_folder(const Options& o, const Gpt2<float>& model, const nlohmann::json& record) {
  const fs::path out(o.out);
  if (fs::exists(out)) {
    PREFIXTUNE_CHECK(fs::is_directory(out) && (fs::is_empty(out) || fs::exists(out / "config.json")), "--out '", o.out,
                     "' exists and is not a model folder: refusing to replace it");
  }
  const fs::path tmp = out.string() + ".partial", old = out.string() + ".old";
  fs::remove_all(tmp);
  const DType dtype = o.dtype == "f16" ? DType::F16 : o.dtype == "bf16" ? DType::BF16 : DType::F32;
  save_gpt2(tmp.string(), model, dtype);
  copy_vocab(o.vocab, tmp);
  write_text_file_atomic((tmp / "pretrain.json").string(), record.dump(2) + "\n");
  fs::remove_all(old);
  if (fs::exists(out)) fs::rename(out, old);
  fs::rename(tmp, out);
  fs::remove_all(old);
}

// -------------------------------------------------------------------------------------------------------- training

int run(const Options& o) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines reach logs as they happen
  const auto t0 = std::chrono::steady_clock::now();
  const double budget_s = o.minutes * 60.0;

  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(o.vocab);
  const std::vector<std::int32_t> stream = tokenize_corpus(o.corpus, tok);
  std::printf("tokenized in %.1f s\n", seconds_since(t0));

  // Blocks i = tokens [i T, i T + T) with targets shifted by one; a seeded 1% of them are held out.
  const std::int64_t T = o.block, B = o.batch;
  const std::int64_t n_blocks = (static_cast<std::int64_t>(stream.size()) - 1) / T;
  const std::int64_t n_val = std::max<std::int64_t>(1, std::llround(o.val_fraction * static_cast<double>(n_blocks)));
  PREFIXTUNE_CHECK(n_blocks - n_val >= B, "the corpus holds ", n_blocks, " blocks of ", T, " tokens: too few for ",
                   n_val, " validation blocks and a batch of ", B);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_blocks));
  for (std::int64_t i = 0; i < n_blocks; ++i) order[static_cast<std::size_t>(i)] = i;
  Rng split_rng(o.seed, 2);
  shuffle(order, split_rng);
  std::vector<std::int64_t> val(order.begin(), order.begin() + n_val), train(order.begin() + n_val, order.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  // Periodic evaluations use a fixed subset of at most --eval-blocks blocks; the final one uses all of them.
  const std::vector<std::int64_t> val_subset(val.begin(), val.begin() + std::min<std::int64_t>(n_val, o.eval_blocks));
  const std::int64_t steps_per_epoch = static_cast<std::int64_t>(train.size()) / B;
  std::printf("blocks of %lld tokens: %zu train (%lld steps of %lld per epoch), %zu validation\n",
              static_cast<long long>(T), train.size(), static_cast<long long>(steps_per_epoch),
              static_cast<long long>(B), val.size());

  Gpt2Config config;
  config.n_layer = o.layers;
  config.n_embd = o.embd;
  config.n_head = o.heads;
  config.n_positions = o.positions;
  config.vocab_size = tok.vocab_size();
  config.validate("pretrain_tiny_gpt2");
  ParamList params;
  const TrainableGpt2 model = init_trainable(config, o.seed, params);
  std::int64_t n_params = 0;
  for (const auto& p : params.all) n_params += p.value().numel();
  std::printf("model: %lld layers, %lld embd, %lld heads, %lld positions, %.2fM parameters (%.2fM in wte)\n",
              static_cast<long long>(o.layers), static_cast<long long>(o.embd), static_cast<long long>(o.heads),
              static_cast<long long>(o.positions), static_cast<double>(n_params) * 1e-6,
              static_cast<double>(config.vocab_size * config.n_embd) * 1e-6);

  AdamWConfig adam;
  adam.lr = o.lr;
  adam.beta1 = 0.9;
  adam.beta2 = 0.95;
  adam.weight_decay = o.weight_decay;
  AdamW<float> opt_decay(params.decay, adam);
  adam.weight_decay = 0;
  AdamW<float> opt_plain(params.no_decay, adam);

  nlohmann::json curve = nlohmann::json::array();
  const auto t_eval = std::chrono::steady_clock::now();
  const double val0 = evaluate(model, stream, val_subset, T, B);
  const double eval_s = seconds_since(t_eval);
  curve.push_back({{"step", 0}, {"tokens", 0}, {"seconds", seconds_since(t0)}, {"val_loss", val0}});
  std::printf("step 0: validation loss %.4f (ln V = %.4f), %.1f s per evaluation\n", val0,
              std::log(static_cast<double>(config.vocab_size)), eval_s);
  // Reserve for the final evaluation over every validation block, the save and the samples.
  const double reserve_s = eval_s * static_cast<double>(n_val) / static_cast<double>(val_subset.size()) + 5.0;

  std::int64_t total_steps = o.steps > 0 ? o.steps : (budget_s > 0 ? 0 : steps_per_epoch);
  std::int64_t eval_every = o.eval_every;
  // With --minutes and no --steps, steps 2..calibrate_end (inside the warmup, whose lrs do not depend on the
  // step count) are timed to fix the step count; the first step (allocations, page faults) is not counted.
  const std::int64_t calibrate_end = std::min<std::int64_t>(12, std::max<std::int64_t>(o.warmup, 4));
  const bool tty = ::isatty(::fileno(stderr)) == 1;
  std::optional<ProgressBar> bar;
  std::int64_t bar_offset = 0;  // steps done before the bar was made (ProgressBar counts from its creation)
  if (total_steps > 0) bar.emplace(total_steps, "pretrain");
  if (total_steps > 0 && eval_every == 0) eval_every = std::max<std::int64_t>(1, total_steps / 8);

  Rng sample_rng(o.seed, 3);  // the sampled softmax's negatives
  std::int64_t epoch = -1, cursor = steps_per_epoch * B, step = 0;
  std::vector<std::int64_t> epoch_order;
  double loss_ema = 0, last_line_s = 0;
  bool stopped_early = false;
  const auto t_train = std::chrono::steady_clock::now();
  auto t_calibrate = t_train;
  double eval_time_in_training = 0;
  while (total_steps == 0 || step < total_steps) {
    if (budget_s > 0 && seconds_since(t0) + reserve_s > budget_s) {
      stopped_early = true;
      break;
    }
    if (cursor + B > static_cast<std::int64_t>(train.size())) {  // a new epoch: a fresh seeded order
      ++epoch;
      epoch_order = train;
      Rng epoch_rng(o.seed, 100 + static_cast<std::uint64_t>(epoch));
      shuffle(epoch_order, epoch_rng);
      cursor = 0;
    }
    const Batch batch = make_batch(
        stream, std::vector<std::int64_t>(epoch_order.begin() + cursor, epoch_order.begin() + cursor + B), T);
    cursor += B;

    Tape<float> tape;
    const auto h = gpt2_hidden(tape, model, batch.ids, Tensor<std::uint8_t, Cpu>(), PrefixKv<float>{}, 0);
    const auto loss = o.sampled_softmax > 0
                          ? sampled_softmax_loss(tape, h, model.head(), batch.targets, o.sampled_softmax, sample_rng)
                          : gpt2_loss(tape, model, h, batch.targets, Reduction::MeanPerToken);
    zero_grad(params.all);
    tape.backward(loss);
    const double norm = clip_grad_norm(params.all, o.clip);
    const double lr = total_steps > 0
                          ? LinearSchedule{o.lr, std::min(o.warmup, total_steps), total_steps}.lr_at(step)
                          : o.lr * std::min(1.0, static_cast<double>(step) /
                                                     static_cast<double>(std::max<std::int64_t>(1, o.warmup)));
    if (std::isfinite(norm)) {
      opt_decay.set_lr(lr);
      opt_plain.set_lr(lr);
      opt_decay.step();
      opt_plain.step();
    } else {
      std::fprintf(stderr, "step %lld: non-finite gradient norm, update skipped\n", static_cast<long long>(step));
    }
    ++step;
    const double l = loss.value().item();
    loss_ema = step == 1 ? l : 0.95 * loss_ema + 0.05 * l;

    if (total_steps == 0 && step == 1) t_calibrate = std::chrono::steady_clock::now();
    if (total_steps == 0 && step == calibrate_end) {
      // Fit the run to the budget: the steps left and the periodic evaluations (7 by default) must fit in it.
      const double step_s = seconds_since(t_calibrate) / static_cast<double>(step - 1);
      const double left = budget_s - seconds_since(t0) - reserve_s;
      const std::int64_t more =
          o.eval_every > 0 ? static_cast<std::int64_t>(left / (step_s + eval_s / static_cast<double>(o.eval_every)))
                           : static_cast<std::int64_t>((left - 7 * eval_s) / step_s);
      total_steps = step + std::max<std::int64_t>(1, more);
      if (eval_every == 0) eval_every = std::max<std::int64_t>(1, total_steps / 8);
      std::printf("%.3f s per step: %lld steps fit in --minutes %g%s\n", step_s, static_cast<long long>(total_steps),
                  o.minutes,
                  step <= o.warmup ? (" (--steps " + std::to_string(total_steps) + " repeats this run)").c_str() : "");
      bar.emplace(total_steps - step, "pretrain");
      bar_offset = step;
    }
    const double train_s = seconds_since(t_train) - eval_time_in_training;
    const double tok_s = static_cast<double>(step * B * T) / std::max(1e-9, train_s);
    char extra[96];
    std::snprintf(extra, sizeof extra, "step %lld lr %.2e %.0f tok/s", static_cast<long long>(step), lr, tok_s);
    if (bar) {
      const bool line_due = tty || seconds_since(t0) - last_line_s >= 10.0;  // one plain line per 10 s in logs
      bar->update(step - bar_offset, loss_ema, line_due ? std::string(extra) : std::string());
      if (line_due) last_line_s = seconds_since(t0);
    }
    if (eval_every > 0 && step % eval_every == 0 && step != total_steps) {
      const auto te = std::chrono::steady_clock::now();
      const double v = evaluate(model, stream, val_subset, T, B);
      eval_time_in_training += seconds_since(te);
      curve.push_back({{"step", step}, {"tokens", step * B * T}, {"seconds", seconds_since(t0)}, {"val_loss", v}});
      if (bar && tty) bar->finish();
      std::printf("step %lld: validation loss %.4f (train %.4f, %.0f tok/s, %.0f s)\n", static_cast<long long>(step), v,
                  loss_ema, tok_s, seconds_since(t0));
      std::fflush(stdout);
    }
  }
  if (bar) bar->finish();
  if (stopped_early)
    std::printf("time budget reached after %lld of %lld steps\n", static_cast<long long>(step),
                static_cast<long long>(total_steps));
  const double train_s = seconds_since(t_train) - eval_time_in_training;
  const double val_final = evaluate(model, stream, val, T, B);
  curve.push_back({{"step", step}, {"tokens", step * B * T}, {"seconds", seconds_since(t0)}, {"val_loss", val_final}});
  std::printf(
      "final: %lld steps, %lld tokens (%.2f epochs), %.0f tok/s, validation loss %.4f (perplexity %.1f) "
      "over %zu blocks\n",
      static_cast<long long>(step), static_cast<long long>(step * B * T),
      static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, steps_per_epoch)),
      static_cast<double>(step * B * T) / std::max(1e-9, train_s), val_final, std::exp(val_final), val.size());

  const Gpt2<float> frozen = frozen_view(model);
  nlohmann::json record = {{"corpus", o.corpus},
                           {"seed", o.seed},
                           {"steps", step},
                           {"planned_steps", total_steps},
                           {"batch", B},
                           {"block", T},
                           {"lr", o.lr},
                           {"warmup", o.warmup},
                           {"weight_decay", o.weight_decay},
                           {"clip", o.clip},
                           {"sampled_softmax", o.sampled_softmax},
                           {"train_tokens", step * B * T},
                           {"validation_blocks", val.size()},
                           {"validation_loss", val_final},
                           {"curve", curve}};
  save_folder(o, frozen, record);
  if (!o.validation_out.empty()) {  // each block: its T inputs and the next token, as evaluate() scores them
    nlohmann::json blocks = nlohmann::json::array();
    for (const std::int64_t b : val)
      blocks.push_back(std::vector<std::int32_t>(stream.begin() + b * T, stream.begin() + b * T + T + 1));
    write_text_file_atomic(o.validation_out, nlohmann::json{{"block", T}, {"blocks", blocks}}.dump() + "\n");
  }
  std::printf("wrote %s (%s) in %.1f s total\n", o.out.c_str(), o.dtype.c_str(), seconds_since(t0));

  if (o.sample_tokens > 0) {
    PrefixBank<float> bank(config);
    GenerateConfig cfg;  // greedy
    cfg.max_new_tokens = o.sample_tokens;
    cfg.eos_id = tok.eot_id();
    std::vector<GenerationRequest> requests;
    for (const char* prompt : {"The jury said", "It was a", "In the morning, he", "The United States"})
      requests.push_back({tok.encode(prompt), kNoPrefix});
    const auto gens = generate(frozen, bank, requests, cfg);
    for (std::size_t i = 0; i < gens.size(); ++i) {
      std::string text = tok.decode_lossy(requests[i].prompt) + "|" + tok.decode_lossy(gens[i].ids);
      std::replace(text.begin(), text.end(), '\n', ' ');
      std::printf("sample: %s\n", text.c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::optional<Options> o = parse_args(argc, argv);
    if (!o) return 2;
    return run(*o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pretrain_tiny_gpt2: %s\n", e.what());
    return 1;
  }
}
