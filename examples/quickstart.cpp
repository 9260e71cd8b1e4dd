// SPDX-License-Identifier: MIT
// Quickstart: the whole mission on a small model. Loads a frozen GPT-2 (a HuggingFace folder; scripts/quickstart.sh
// pretrains a tiny one on the Brown corpus on first use), measures the table-to-text task without a prefix
// (validation loss, BLEU of beam-searched descriptions of held-out tables), prefix-tunes with the MLP
// reparameterizer, merges, measures again, prints side-by-side examples and saves the prefix and a PEFT adapter.
//
//   quickstart --model DIR [--data data/table2text] [--out quickstart-out] [--steps N] ...   (--help lists all)
//   quickstart --smoke --random-base VOCAB_DIR   (CI: a random 2-layer model, seconds; checks the loss went down)
#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "example_options.hpp"
#include "table_eval.hpp"

using namespace prefixtune;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model, random_base, data = "data/table2text", out = "quickstart-out";
  std::int64_t train_examples = 1000, valid_examples = 100, test_tables = 40, steps = 300, batch = 5;
  std::int64_t prefix_length = 10, mid = 256, beam = 5, max_new_tokens = 48, shown = 3;
  double lr = 5e-3;
  std::uint64_t seed = 1;
  bool smoke = false;
};

void usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s (--model DIR | --random-base VOCAB_DIR) [options]\n"
      "  --model DIR            frozen GPT-2 (HuggingFace folder: config.json, model.safetensors, vocab.json,\n"
      "                         merges.txt); scripts/quickstart.sh passes its pretrained tiny GPT-2\n"
      "  --random-base DIR      instead: a random 2-layer GPT-2 with the tokenizer files in DIR (smoke tests)\n"
      "  --data DIR (data/table2text)   train.txt, valid.txt, test.txt in the E2E 'table||text' format\n"
      "  --out DIR (quickstart-out)     prefix.safetensors, peft/ (a PEFT adapter) and results.json\n"
      "  --train-examples N (1000) --valid-examples N (100) --test-tables N (40)\n"
      "  --steps N (300) --batch N (5) --lr X (5e-3) --prefix-length P (10) --mid N (256) --seed S (1)\n"
      "  --beam N (5) --max-new-tokens N (48) --show N (3: side-by-side examples)\n"
      "  --smoke                a few seconds: tiny sizes; fails unless tuning lowered the validation loss\n",
      argv0);
}

/// Parses argv into o; returns false (after printing usage) on a bad command line.
bool parse(int argc, char** argv, Options& o) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--smoke") != args.end()) {  // defaults first, flags may override them
    o.smoke = true;
    o.train_examples = 24, o.valid_examples = 8, o.test_tables = 3, o.steps = 30, o.batch = 4;
    o.prefix_length = 4, o.mid = 32, o.beam = 2, o.max_new_tokens = 8, o.lr = 1e-2, o.shown = 1;
  }
  const prefixtune_examples::OptionTargets targets{
      {{"--model", &o.model}, {"--random-base", &o.random_base}, {"--data", &o.data}, {"--out", &o.out}},
      {{"--train-examples", &o.train_examples},
       {"--valid-examples", &o.valid_examples},
       {"--test-tables", &o.test_tables},
       {"--steps", &o.steps},
       {"--batch", &o.batch},
       {"--prefix-length", &o.prefix_length},
       {"--mid", &o.mid},
       {"--beam", &o.beam},
       {"--max-new-tokens", &o.max_new_tokens},
       {"--show", &o.shown}},
      {{"--lr", &o.lr}},
      {{"--seed", &o.seed}}};
  if (!prefixtune_examples::parse_options(args, targets, "--smoke", [&] { usage(argv[0]); })) return false;
  if (o.model.empty() == o.random_base.empty()) {
    std::fprintf(stderr, "give exactly one of --model and --random-base\n");
    usage(argv[0]);
    return false;
  }
  return true;
}

using prefixtune_examples::references;
using prefixtune_examples::seconds_since;
using prefixtune_examples::TableRefs;

/// Beam-searched descriptions of every table with the prefix `prefix_index` of `bank` (or kNoPrefix).
std::vector<std::string> describe(const Gpt2<float>& m, const Gpt2Tokenizer& tok, const PrefixBank<float>& bank,
                                  std::int64_t prefix_index, const std::vector<TableRefs>& tables, const Options& o,
                                  const char* label) {
  GenerateConfig cfg;
  cfg.num_beams = o.beam;
  cfg.max_new_tokens = o.max_new_tokens;
  cfg.ban_ids = {198, 628};  // "\n" and "\n\n", as the paper's decoding does
  ProgressBar bar(static_cast<std::int64_t>(tables.size()), label);
  auto out = prefixtune_examples::describe_tables(m, tok, bank, prefix_index, tables, cfg, {}, 1,
                                                  [&](std::size_t n) { bar.update(static_cast<std::int64_t>(n)); });
  bar.finish();
  return out;
}

int run(const Options& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const bool random = !o.random_base.empty();
  const Gpt2<float> model = random ? prefixtune_examples::random_base_model(o.seed) : load_gpt2<float>(o.model);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(random ? o.random_base : o.model);
  const Gpt2Config& c = model.config;
  std::printf("base model: %s (%lld layers, C=%lld, %lld heads, %lld positions, %.1fM parameters, frozen)\n",
              random ? "random (smoke test)" : o.model.c_str(), static_cast<long long>(c.n_layer),
              static_cast<long long>(c.n_embd), static_cast<long long>(c.n_head), static_cast<long long>(c.n_positions),
              static_cast<double>(num_parameters(model)) * 1e-6);

  // Data: the first N pairs of train / valid, the first N held-out tables of test (with all their references).
  const auto take = [](std::vector<TextPair> v, std::int64_t n) {
    if (static_cast<std::int64_t>(v.size()) > n) v.resize(static_cast<std::size_t>(n));
    return v;
  };
  const std::size_t max_length = static_cast<std::size_t>(c.n_positions - o.prefix_length);
  const auto train = encode_examples(tok, take(read_pairs((fs::path(o.data) / "train.txt").string()), o.train_examples),
                                     max_length, LengthPolicy::TruncateSource);
  const auto valid = encode_examples(tok, take(read_pairs((fs::path(o.data) / "valid.txt").string()), o.valid_examples),
                                     max_length, LengthPolicy::TruncateSource);
  const auto tables = prefixtune_examples::test_tables((fs::path(o.data) / "test.txt").string(),
                                                       static_cast<std::size_t>(o.test_tables));
  std::printf("data: %zu training and %zu validation examples, %zu held-out tables (%s)\n", train.size(), valid.size(),
              tables.size(), o.data.c_str());

  // Before: the frozen model alone.
  const double loss_before = evaluate_prefix(model, Var<float>(), valid, o.batch, 0);
  PrefixBank<float> bank(c);
  const auto hyps_before = describe(model, tok, bank, kNoPrefix, tables, o, "describe (no prefix)");
  const auto refs = references(tables);
  const BleuScore bleu_before = corpus_bleu(hyps_before, refs);

  // Prefix-tuning: P = MLP(P') trained, the model frozen; the best validated prefix is merged into a table.
  PrefixConfig pc;
  pc.length = o.prefix_length;
  pc.mid = o.mid;
  Rng rng(o.seed);
  auto encoder = PrefixEncoder<float>::create(pc, c, rng);
  TrainConfig cfg;
  cfg.max_steps = o.steps;
  cfg.epochs = 1000;  // the schedule's length is max_steps
  cfg.batch_size = o.batch;
  cfg.lr = o.lr;
  cfg.warmup_steps = o.steps / 10;
  cfg.eval_every = std::max<std::int64_t>(1, o.steps / 4);
  cfg.seed = o.seed;
  const auto t_train = std::chrono::steady_clock::now();
  std::unique_ptr<ProgressBar> bar;
  const auto result = train_prefix(model, encoder, train, valid, cfg, [&](const TrainProgress& p) {
    if (!bar) bar = std::make_unique<ProgressBar>(p.total_steps, "prefix-tune");
    bar->update(p.step, p.loss, p.valid_loss ? "valid " + std::to_string(*p.valid_loss) : "");
  });
  if (bar) bar->finish();
  const double train_seconds = seconds_since(t_train);
  const double loss_after = result.best_valid_loss;
  const std::int64_t prefix_index = bank.add(result.best_prefix, "quickstart");
  const auto hyps_after = describe(model, tok, bank, prefix_index, tables, o, "describe (prefix)");
  const BleuScore bleu_after = corpus_bleu(hyps_after, refs);

  // Results, examples, files.
  std::printf("\n%-34s %12s %12s\n", "", "no prefix", "prefix");
  std::printf("%-34s %12.3f %12.3f\n", "validation loss (nats / example)", loss_before, loss_after);
  std::printf("%-34s %12.2f %12.2f\n", "BLEU on held-out tables", bleu_before.score, bleu_after.score);
  std::int64_t trainable = 0;
  for (const auto& p : encoder.parameters()) trainable += p.value().numel();
  const std::int64_t served = result.best_prefix.table.value().numel();  // what is kept after merging
  std::printf(
      "prefix: P=%lld; %lld parameters trained (MLP reparameterization), %lld served after merging "
      "(%.2f%% of the model's %lld); %lld steps in %.1f s\n",
      static_cast<long long>(pc.length), static_cast<long long>(trainable), static_cast<long long>(served),
      100.0 * static_cast<double>(served) / static_cast<double>(num_parameters(model)),
      static_cast<long long>(num_parameters(model)), static_cast<long long>(result.steps), train_seconds);
  std::printf("BLEU before: %s\nBLEU after:  %s\n", bleu_before.to_string().c_str(), bleu_after.to_string().c_str());
  for (std::int64_t i = 0; i < std::min<std::int64_t>(o.shown, static_cast<std::int64_t>(tables.size())); ++i) {
    const auto k = static_cast<std::size_t>(i);
    std::printf("\ntable:     %s\nno prefix: %s\nprefix:    %s\nreference: %s\n", tables[k].first.c_str(),
                hyps_before[k].c_str(), hyps_after[k].c_str(), tables[k].second.at(0).c_str());
  }
  fs::create_directories(o.out);
  const std::string prefix_path = (fs::path(o.out) / "prefix.safetensors").string();
  save_prefix(prefix_path, result.best_prefix, c);
  export_peft((fs::path(o.out) / "peft").string(), result.best_prefix, c,
              random ? std::string() : fs::absolute(o.model).string());
  const nlohmann::json results = {{"valid_loss_before", loss_before},
                                  {"valid_loss_after", loss_after},
                                  {"bleu_before", bleu_before.score},
                                  {"bleu_after", bleu_after.score},
                                  {"steps", result.steps},
                                  {"train_seconds", train_seconds},
                                  {"total_seconds", seconds_since(t_start)},
                                  {"prefix_length", pc.length},
                                  {"train_examples", train.size()},
                                  {"test_tables", tables.size()}};
  write_text_file_atomic((fs::path(o.out) / "results.json").string(), results.dump(2) + "\n");
  std::printf("\nsaved %s, %s/peft (PEFT adapter) and %s/results.json; total %.1f s\n", prefix_path.c_str(),
              o.out.c_str(), o.out.c_str(), seconds_since(t_start));
  if (!(loss_after < loss_before)) {
    std::fprintf(stderr, "quickstart: prefix-tuning did not lower the validation loss (%.4f -> %.4f)\n", loss_before,
                 loss_after);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
  }
}
