// SPDX-License-Identifier: MIT
// The paper's ablations on your model and data: prefix length, the variants (deep MLP, direct table, embedding-only,
// infix) and baselines (discrete prompt, full fine-tuning, FT-top2) and the low-data setting (random vs real-word
// initialization at several training-set sizes, several seeds). Every run is scored by validation loss and by BLEU
// of descriptions of held-out tables; results go to ablations.csv (every run), ablations.md (means and standard
// deviations over seeds) and two SVG plots (score vs prefix length, score vs training-set size).
//
//   ablations --model DIR [--data data/table2text] [--out ablations-out] [--experiments length,methods,lowdata] ...
//   ablations --smoke --random-base VOCAB_DIR   (CI: a random 2-layer model, every experiment, seconds)
#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "example_options.hpp"
#include "svg_plot.hpp"
#include "table_eval.hpp"

using namespace prefixtune;
using prefixtune_examples::seconds_since;
using prefixtune_examples::TableRefs;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model, random_base, data = "data/table2text", out = "ablations-out";
  std::string experiments = "length,methods,lowdata";
  std::string lengths = "1,5,10,20", sizes = "50,100,200,500";
  std::string methods = "mlp,deep,direct,emb,emb-mlp,infix,prompt,full,ft-top2";
  std::string init_words = " table-to-text:";
  std::string instruction = " Describe the restaurant in this table in one sentence:";
  std::int64_t train_examples = 1000, valid_examples = 100, test_tables = 40, seeds = 2;
  std::int64_t steps = 300, low_steps = 400, low_warmup = 100, batch = 5, prefix_length = 10, mid = 256;
  std::int64_t beam = 5, max_new_tokens = 48, gen_batch = 20, evals = 4, prefit_steps = 500;
  double lr = 5e-3, ft_lr = 5e-4;
  std::uint64_t seed = 1;
};

void usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s (--model DIR | --random-base VOCAB_DIR) [options]\n"
      "  --model DIR           frozen GPT-2 (HuggingFace folder); scripts/ablations.sh passes the quickstart's\n"
      "  --random-base DIR     a random 2-layer GPT-2 with the tokenizer files in DIR (smoke tests)\n"
      "  --data DIR (data/table2text)  train.txt, valid.txt, test.txt ('table||text')\n"
      "  --out DIR (ablations-out)     ablations.csv, ablations.md, length.svg, lowdata.svg\n"
      "  --experiments LIST (length,methods,lowdata)\n"
      "  --lengths LIST (1,5,10,20)    prefix lengths of the length sweep (MLP prefix, all training examples)\n"
      "  --methods LIST (mlp,deep,direct,emb,emb-mlp,infix,prompt,full,ft-top2)   at --prefix-length\n"
      "  --sizes LIST (50,100,200,500) training-set sizes of the low-data runs (random vs --init-words init,\n"
      "                                both with P = the words' token count)\n"
      "  --seeds N (2)                 seeds of the low-data runs (each draws its own training subset)\n"
      "  --init-words TEXT (' table-to-text:')   --instruction TEXT (the discrete prompt)\n"
      "  --train-examples N (1000) --valid-examples N (100) --test-tables N (40)\n"
      "  --steps N (300) --low-steps N (400) --low-warmup N (100) --batch N (5) --lr X (5e-3) --ft-lr X (5e-4)\n"
      "  --prefix-length P (10) --mid N (256) --beam N (5) --max-new-tokens N (48) --gen-batch N (20) --seed S (1)\n"
      "  --evals N (4: validations per run, the best is kept) --prefit-steps N (500: MSE pre-fit, lr 1e-4)\n"
      "  --smoke                       seconds: tiny sizes, every experiment\n",
      argv0);
}

bool parse(int argc, char** argv, Options& o) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--smoke") != args.end()) {
    o.train_examples = 8, o.valid_examples = 4, o.test_tables = 2, o.seeds = 2, o.steps = 2, o.low_steps = 2;
    o.low_warmup = 1, o.batch = 4, o.prefix_length = 3, o.mid = 16, o.beam = 2, o.max_new_tokens = 4;
    o.lengths = "1,3", o.sizes = "4", o.gen_batch = 2, o.evals = 1, o.prefit_steps = 3;
  }
  const prefixtune_examples::OptionTargets targets{{{"--model", &o.model},
                                                    {"--random-base", &o.random_base},
                                                    {"--data", &o.data},
                                                    {"--out", &o.out},
                                                    {"--experiments", &o.experiments},
                                                    {"--lengths", &o.lengths},
                                                    {"--sizes", &o.sizes},
                                                    {"--methods", &o.methods},
                                                    {"--init-words", &o.init_words},
                                                    {"--instruction", &o.instruction}},
                                                   {{"--train-examples", &o.train_examples},
                                                    {"--valid-examples", &o.valid_examples},
                                                    {"--test-tables", &o.test_tables},
                                                    {"--seeds", &o.seeds},
                                                    {"--steps", &o.steps},
                                                    {"--low-steps", &o.low_steps},
                                                    {"--low-warmup", &o.low_warmup},
                                                    {"--batch", &o.batch},
                                                    {"--prefix-length", &o.prefix_length},
                                                    {"--mid", &o.mid},
                                                    {"--beam", &o.beam},
                                                    {"--max-new-tokens", &o.max_new_tokens},
                                                    {"--gen-batch", &o.gen_batch},
                                                    {"--evals", &o.evals},
                                                    {"--prefit-steps", &o.prefit_steps}},
                                                   {{"--lr", &o.lr}, {"--ft-lr", &o.ft_lr}},
                                                   {{"--seed", &o.seed}}};
  if (!prefixtune_examples::parse_options(args, targets, "--smoke", [&] { usage(argv[0]); })) return false;
  if (o.model.empty() == o.random_base.empty()) {
    std::fprintf(stderr, "give exactly one of --model and --random-base\n");
    usage(argv[0]);
    return false;
  }
  return true;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<std::int64_t> split_ints(const std::string& s, const char* what) {
  std::vector<std::int64_t> out;
  for (const auto& item : split(s)) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    PREFIXTUNE_CHECK(*end == '\0' && v >= 1, what, ": '", item, "' is not a positive integer");
    out.push_back(v);
  }
  PREFIXTUNE_CHECK(!out.empty(), what, ": empty list");
  return out;
}

/// One run: what was trained, on what, and how it scored.
struct Row {
  std::string experiment, method, init = "random";
  std::int64_t prefix_length = 0, train_size = 0, seed = 0, trained = 0, steps = 0;
  double valid_loss = 0, bleu = 0, seconds = 0;
};

/// The model, the tokenizer, the data and the decoding settings every run shares.
struct Env {
  const Options& o;
  Gpt2<float> model;
  Gpt2Tokenizer tok;
  std::vector<Example> train, valid;
  std::vector<TableRefs> tables;
  GenerateConfig gen;
};

/// BLEU of the descriptions of env.tables with `prefix` (table undefined: none) after `instruction`.
double bleu_of(const Env& env, const Gpt2<float>& model, const DirectPrefix<float>& prefix,
               const std::vector<std::int32_t>& instruction) {
  PrefixBank<float> bank(model.config);
  const std::int64_t id = prefix.table.defined() ? bank.add(prefix, "run") : kNoPrefix;
  const auto hyps = prefixtune_examples::describe_tables(model, env.tok, bank, id, env.tables, env.gen, instruction,
                                                         static_cast<std::size_t>(env.o.gen_batch), [](std::size_t) {});
  return corpus_bleu(hyps, prefixtune_examples::references(env.tables)).score;
}

/// The first n training examples of a seeded shuffle (the low-data subsets), or all of them.
std::vector<Example> subset(const std::vector<Example>& all, std::int64_t n, std::uint64_t seed) {
  if (n >= static_cast<std::int64_t>(all.size())) return all;
  Rng rng(seed, 77);
  const auto order = shuffled_order(all.size(), rng);
  std::vector<Example> out;
  for (std::int64_t i = 0; i < n; ++i) out.push_back(all[order[static_cast<std::size_t>(i)]]);
  return out;
}

/// Trains `method` ("mlp", "deep", "direct", "emb", "emb-mlp", "infix", "prompt", "full", "ft-top2") as described
/// by `row` (its prefix length, training-set size, seed and init) and fills in the scores.
Row run(const Env& env, Row row, std::int64_t steps, std::int64_t warmup, double lr) {
  const Options& o = env.o;
  const auto t0 = std::chrono::steady_clock::now();
  const auto train = subset(env.train, row.train_size, static_cast<std::uint64_t>(row.seed));
  row.train_size = static_cast<std::int64_t>(train.size());
  TrainConfig cfg;
  cfg.max_steps = steps;
  cfg.epochs = 1000000;  // the schedule's length is max_steps
  cfg.batch_size = o.batch;
  cfg.lr = lr;
  cfg.warmup_steps = warmup;
  cfg.eval_every = std::max<std::int64_t>(1, steps / o.evals);
  cfg.seed = static_cast<std::uint64_t>(row.seed);
  const std::string& m = row.method;
  std::fprintf(stderr, "%-8s %-8s P=%-3lld n=%-5lld seed %lld init %s ... ", row.experiment.c_str(), m.c_str(),
               static_cast<long long>(row.prefix_length), static_cast<long long>(row.train_size),
               static_cast<long long>(row.seed), row.init.c_str());
  if (m == "prompt") {  // nothing trained: the instruction before every source
    const auto instruction = env.tok.encode(o.instruction);
    row.valid_loss = evaluate_prefix(env.model, DirectPrefix<float>(), prepend_prompt(env.valid, instruction), o.batch);
    row.bleu = bleu_of(env, env.model, DirectPrefix<float>(), instruction);
    row.prefix_length = static_cast<std::int64_t>(instruction.size());
  } else if (m == "full" || m == "ft-top2") {
    Gpt2<float> tuned = to_device<Cpu>(env.model);  // a private copy
    cfg.lr = o.ft_lr;
    const auto r = fine_tune(tuned, train, env.valid, cfg, m == "full" ? 0 : 2);
    auto t = make_trainable(tuned);
    for (const auto& p : fine_tune_parameters(t, m == "full" ? 0 : 2)) row.trained += p.value().numel();
    row.steps = r.steps;
    row.valid_loss = evaluate_prefix(tuned, DirectPrefix<float>(), env.valid, o.batch);
    row.bleu = bleu_of(env, tuned, DirectPrefix<float>(), {});
    row.prefix_length = 0;
  } else {
    PrefixConfig pc;
    pc.length = row.prefix_length;
    pc.mid = o.mid;
    pc.deep = m == "deep";
    if (m == "infix") pc.placement = Placement::Infix;
    Rng rng(static_cast<std::uint64_t>(row.seed));
    std::vector<std::int32_t> words;
    if (row.init == "words") {
      words = env.tok.encode(o.init_words);
      pc.length = row.prefix_length = static_cast<std::int64_t>(words.size());
    }
    const auto train_it = [&](auto& method) {
      for (const auto& p : method.parameters()) row.trained += p.value().numel();
      const auto r = train_prefix(env.model, method, train, env.valid, cfg);
      row.steps = r.steps;
      row.valid_loss = r.best_valid_loss;
      row.bleu = bleu_of(env, env.model, r.best_prefix, {});
    };
    if (m == "mlp" || m == "deep" || m == "infix") {
      auto enc = PrefixEncoder<float>::create(pc, env.model.config, rng);
      if (!words.empty()) fit_encoder_to_table(enc, prefix_from_words(env.model, words).table.value(), o.prefit_steps);
      train_it(enc);
    } else if (m == "direct") {
      auto table = words.empty() ? DirectPrefix<float>::random_normal(pc.length, env.model.config, rng)
                                 : prefix_from_words(env.model, words);
      train_it(table);
    } else {
      PREFIXTUNE_CHECK(m == "emb" || m == "emb-mlp", "--methods: unknown method '", m,
                       "' (mlp, deep, direct, emb, emb-mlp, infix, prompt, full, ft-top2)");
      auto emb = EmbeddingPrefix<float>::create(pc, env.model.config.n_embd, rng, m == "emb-mlp");
      train_it(emb);
    }
  }
  row.seconds = seconds_since(t0);
  std::fprintf(stderr, "valid loss %.3f, BLEU %.2f (%.0f s)\n", row.valid_loss, row.bleu, row.seconds);
  return row;
}

/// Mean and sample standard deviation.
std::pair<double, double> mean_sd(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(s / static_cast<double>(v.size() - 1)) : 0.0};
}

/// "m" for one value, "m +- sd" for several.
std::string summary(const std::vector<double>& v) {
  const auto [m, sd] = mean_sd(v);
  char buf[64];
  if (v.size() > 1) {
    std::snprintf(buf, sizeof buf, "%.2f +- %.2f", m, sd);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", m);
  }
  return buf;
}

/// Rows grouped by everything but the seed, in first-seen order.
std::vector<std::vector<Row>> groups(const std::vector<Row>& rows) {
  std::vector<std::vector<Row>> out;
  for (const Row& r : rows) {
    auto same = [&](const std::vector<Row>& g) {
      const Row& f = g.front();
      return f.experiment == r.experiment && f.method == r.method && f.init == r.init &&
             f.prefix_length == r.prefix_length && f.train_size == r.train_size;
    };
    auto it = std::find_if(out.begin(), out.end(), same);
    if (it == out.end()) {
      out.push_back({r});
    } else {
      it->push_back(r);
    }
  }
  return out;
}

void write_outputs(const Options& o, const std::vector<Row>& rows, const std::string& model_name, const Gpt2Config& c) {
  fs::create_directories(o.out);
  std::string csv =
      "experiment,method,init,prefix_length,train_size,seed,trained_parameters,steps,valid_loss,bleu,"
      "seconds\n";
  for (const Row& r : rows) {
    char line[512];
    std::snprintf(line, sizeof line, "%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%.4f,%.2f,%.1f\n", r.experiment.c_str(),
                  r.method.c_str(), r.init.c_str(), static_cast<long long>(r.prefix_length),
                  static_cast<long long>(r.train_size), static_cast<long long>(r.seed),
                  static_cast<long long>(r.trained), static_cast<long long>(r.steps), r.valid_loss, r.bleu, r.seconds);
    csv += line;
  }
  write_text_file_atomic((fs::path(o.out) / "ablations.csv").string(), csv);

  std::string md = "# Ablations\n\nBase model: " + model_name + " (" + std::to_string(c.n_layer) +
                   " layers, C=" + std::to_string(c.n_embd) +
                   "), frozen except for full / ft-top2. Validation loss: summed target " +
                   "NLL per example (nats; lower is better). BLEU on " + std::to_string(o.test_tables) +
                   " held-out tables, beam " + std::to_string(o.beam) + ". Mean +- standard deviation over seeds " +
                   "where there are several.\n\n| experiment | method | init | P | train examples | seeds | trained " +
                   "parameters | valid loss | BLEU |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& g : groups(rows)) {
    std::vector<double> loss, bleu;
    for (const Row& r : g) loss.push_back(r.valid_loss), bleu.push_back(r.bleu);
    const Row& f = g.front();
    md += "| " + f.experiment + " | " + f.method + " | " + f.init + " | " + std::to_string(f.prefix_length) + " | " +
          std::to_string(f.train_size) + " | " + std::to_string(g.size()) + " | " + std::to_string(f.trained) + " | " +
          summary(loss) + " | " + summary(bleu) + " |\n";
  }
  write_text_file_atomic((fs::path(o.out) / "ablations.md").string(), md);

  // Plots: BLEU vs prefix length (length sweep), BLEU vs training-set size per initialization (low data).
  prefixtune_examples::PlotSeries by_length{"MLP prefix", {}, {}, {}};
  std::map<std::string, prefixtune_examples::PlotSeries> by_size;
  for (const auto& g : groups(rows)) {
    std::vector<double> bleu;
    for (const Row& r : g) bleu.push_back(r.bleu);
    const auto [bm, bs] = mean_sd(bleu);
    const Row& f = g.front();
    if (f.experiment == "length") {
      by_length.x.push_back(static_cast<double>(f.prefix_length));
      by_length.y.push_back(bm);
    } else if (f.experiment == "lowdata") {
      auto& s = by_size[f.init];
      s.name = f.init == "words" ? "initialized from '" + o.init_words + "'" : "random initialization";
      s.x.push_back(static_cast<double>(f.train_size));
      s.y.push_back(bm);
      s.y_err.push_back(bs);
    }
  }
  if (!by_length.x.empty())
    prefixtune_examples::write_svg_line_chart((fs::path(o.out) / "length.svg").string(),
                                              {"BLEU vs prefix length", "prefix length P", "BLEU", false}, {by_length});
  std::vector<prefixtune_examples::PlotSeries> series;
  for (auto& [init, s] : by_size) series.push_back(s);
  if (!series.empty())
    prefixtune_examples::write_svg_line_chart(
        (fs::path(o.out) / "lowdata.svg").string(),
        {"BLEU vs training examples (mean +- sd over seeds)", "training examples", "BLEU", true}, series);
}

int run_all(const Options& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool random = !o.random_base.empty();
  Env env{o,
          random ? prefixtune_examples::random_base_model(o.seed) : load_gpt2<float>(o.model),
          Gpt2Tokenizer::load_dir(random ? o.random_base : o.model),
          {},
          {},
          {},
          {}};
  const Gpt2Config& c = env.model.config;
  const auto take = [](std::vector<TextPair> v, std::int64_t n) {
    if (static_cast<std::int64_t>(v.size()) > n) v.resize(static_cast<std::size_t>(n));
    return v;
  };
  std::int64_t longest = o.prefix_length;
  for (auto p : split_ints(o.lengths, "--lengths")) longest = std::max(longest, p);
  const auto max_length = static_cast<std::size_t>(c.n_positions - longest);
  env.train = encode_examples(env.tok, take(read_pairs((fs::path(o.data) / "train.txt").string()), o.train_examples),
                              max_length, LengthPolicy::TruncateSource);
  env.valid = encode_examples(env.tok, take(read_pairs((fs::path(o.data) / "valid.txt").string()), o.valid_examples),
                              max_length, LengthPolicy::TruncateSource);
  env.tables = prefixtune_examples::test_tables((fs::path(o.data) / "test.txt").string(),
                                                static_cast<std::size_t>(o.test_tables));
  env.gen.num_beams = o.beam;
  env.gen.max_new_tokens = o.max_new_tokens;
  env.gen.ban_ids = {198, 628};
  const std::set<std::string> experiments = [&] {
    const auto v = split(o.experiments);
    return std::set<std::string>(v.begin(), v.end());
  }();
  for (const auto& e : experiments)
    PREFIXTUNE_CHECK(e == "length" || e == "methods" || e == "lowdata", "--experiments: unknown experiment '", e,
                     "' (length, methods, lowdata)");
  const auto all = static_cast<std::int64_t>(env.train.size());
  const auto seed = static_cast<std::int64_t>(o.seed);
  const std::string model_name = random ? "random 2-layer GPT-2 (smoke test)" : o.model;
  std::vector<Row> rows;
  struct Rows {  // every finished run is written out at once: an interrupted sweep keeps what it measured
    std::vector<Row>& rows;
    const Options& o;
    const std::string& name;
    const Gpt2Config& c;
    void push_back(const Row& r) {
      rows.push_back(r);
      write_outputs(o, rows, name, c);
    }
  } out{rows, o, model_name, c};
  if (experiments.count("length"))
    for (std::int64_t p : split_ints(o.lengths, "--lengths"))
      out.push_back(run(env, Row{"length", "mlp", "random", p, all, seed}, o.steps, o.steps / 10, o.lr));
  if (experiments.count("methods"))
    for (const auto& m : split(o.methods)) {
      const auto same = std::find_if(rows.begin(), rows.end(), [&](const Row& r) {  // the sweep's run at this P
        return m == "mlp" && r.experiment == "length" && r.prefix_length == o.prefix_length;
      });
      Row row = same != rows.end()
                    ? *same
                    : run(env, Row{"methods", m, "random", o.prefix_length, all, seed}, o.steps, o.steps / 10, o.lr);
      row.experiment = "methods";
      out.push_back(row);
    }
  if (experiments.count("lowdata")) {
    // Both initializations at the words' length, so that only the initialization differs.
    const auto p_words = static_cast<std::int64_t>(env.tok.encode(o.init_words).size());
    PREFIXTUNE_CHECK(p_words >= 1, "--init-words '", o.init_words, "' encodes to no tokens");
    for (std::int64_t n : split_ints(o.sizes, "--sizes"))
      for (const char* init : {"random", "words"})
        for (std::int64_t s = 0; s < o.seeds; ++s)
          out.push_back(run(env, Row{"lowdata", "mlp", init, p_words, n, seed + s}, o.low_steps, o.low_warmup, o.lr));
  }
  std::printf("%zu runs in %.0f s; wrote %s/ablations.{csv,md} and the plots\n", rows.size(), seconds_since(t0),
              o.out.c_str());
  std::fputs(read_text_file((fs::path(o.out) / "ablations.md").string()).c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  try {
    return run_all(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ablations: %s\n", e.what());
    return 1;
  }
}
