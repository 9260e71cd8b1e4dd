// SPDX-License-Identifier: MIT
// The model-running commands of the `prefixtune` CLI (score, train, generate), templated over the device: the CLI
// runs them on Cpu, and on Cuda through cuda_commands.cu when the build has CUDA (`--device cuda`).
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "request_lines.hpp"

namespace prefixtune_cli {

using namespace prefixtune;
using prefixtune_examples::parse_request_object;
using prefixtune_examples::RequestLine;
using prefixtune_examples::serve_request_lines;
namespace fs = std::filesystem;

/// A frozen model on Device and its tokenizer.
template <class Device>
struct Model {
  Gpt2<float, Device> gpt2;
  Gpt2Tokenizer tok;
};

template <class Device>
Model<Device> load_model(const std::string& dir) {
  PREFIXTUNE_CHECK(fs::is_directory(dir), "--model '", dir,
                   "' is not a folder (expected a HuggingFace GPT-2 folder "
                   "with config.json, model.safetensors, vocab.json, merges.txt)");
  if constexpr (std::is_same_v<Device, Cpu>) {
    return Model<Device>{load_gpt2<float>(dir), Gpt2Tokenizer::load_dir(dir)};
  } else {
    return Model<Device>{to_device<Device>(load_gpt2<float>(dir)), Gpt2Tokenizer::load_dir(dir)};
  }
}

template <class Device>
int cmd_score(const std::string& model_dir, const std::string& prefix_path, const std::string& data,
              std::int64_t batch_size, const std::string& instruction) {
  const Model<Device> m = load_model<Device>(model_dir);
  auto examples = encode_examples(m.tok, read_pairs(data));
  if (!instruction.empty()) examples = prepend_prompt(examples, m.tok.encode(instruction));
  DirectPrefix<float, Device> prefix;
  if (!prefix_path.empty()) prefix = to_device<Device>(load_prefix<float>(prefix_path, m.gpt2.config));
  ProgressBar bar(static_cast<std::int64_t>(examples.size()), "score");
  const auto scores = score_examples(m.gpt2, prefix, examples, batch_size,
                                     [&](std::size_t done) { bar.update(static_cast<std::int64_t>(done)); });
  for (std::size_t i = 0; i < scores.size(); ++i)
    std::cout << nlohmann::json{{"index", i}, {"loss", scores[i].first}, {"tokens", scores[i].second}}.dump() << "\n";
  bar.finish();
  return 0;
}

/// Everything `prefixtune train` needs: data, what is trained (the paper's method or one of its variants and
/// baselines) and how it starts.
struct TrainOptions {
  std::string model_dir, train_path, valid_path, out;
  PrefixConfig pc;
  TrainConfig cfg;
  std::size_t max_length = 0;
  std::string method = "mlp";       // mlp, deep, direct, emb, emb-mlp, full, ft-top2
  std::string init = "random";      // random, uniform (direct only), words
  std::string init_words;           // the text whose K/V (or embeddings) start the prefix, with init = words
  std::int64_t prefit_steps = 500;  // MSE pre-fit of an MLP to the words' K/V (the paper's code)
  double prefit_lr = 1e-4;
  std::set<std::string> given;  // the options passed on the command line ("--mid", ...), whatever their values
};

namespace detail_cli {

/// A train option that only some trainers read: where it applies (said to the user), the GPT-2 methods that read
/// it, whether BART's three prefixes do, what the other prefix methods have none of, and why BART or GPT-2 does not.
struct MethodFlag {
  const char* flag;
  const char* applies_to;
  std::vector<std::string> methods;
  bool bart;
  const char* lacks;     // "MLP": "--method direct has no MLP"
  const char* not_here;  // for a BART model when !bart, for a GPT-2 model when methods is empty
};

inline const std::vector<MethodFlag>& method_flags() {
  const std::vector<std::string> prefix = {"mlp", "deep", "direct", "emb", "emb-mlp"}, mlp = {"mlp", "deep"},
                                 with_mlp = {"mlp", "deep", "emb-mlp"},
                                 with_dropout = {"mlp", "deep", "emb", "emb-mlp"};
  const char* prefit = "--init words with the MLP methods (mlp, deep)";
  const char* bart_prefit = "a BART model's prefixes start at random, with no --init words to pre-fit to";
  static const std::vector<MethodFlag> table = {
      {"--prefix-length", "the prefix methods (mlp, deep, direct, emb, emb-mlp) and BART", prefix, true, "prefix", ""},
      {"--infix", "the prefix methods of GPT-2 (mlp, deep, direct, emb, emb-mlp)", prefix, false, "prefix",
       "a BART model's prefixes have no --infix form"},
      {"--init", "the prefix methods (mlp, deep, direct, emb, emb-mlp) and BART (random only)", prefix, true, "prefix",
       ""},
      {"--mid", "the MLP methods (mlp, deep, emb-mlp) and BART", with_mlp, true, "MLP", ""},
      {"--prefix-dropout", "the methods with an MLP or embeddings (mlp, deep, emb, emb-mlp) and BART", with_dropout,
       true, "dropout", ""},
      {"--prefit-steps", prefit, mlp, false, "MLP pre-fit", bart_prefit},
      {"--prefit-lr", prefit, mlp, false, "MLP pre-fit", bart_prefit},
      {"--label-smoothing", "BART models only", {}, true, "", "the GPT-2 trainers do not smooth labels"},
  };
  return table;
}

/// What --method m trains, for messages.
inline std::string method_trains(const std::string& m) {
  if (m == "mlp") return "the paper's MLP-reparameterized prefix";
  if (m == "deep") return "a prefix through a two-layer MLP";
  if (m == "direct") return "the prefix table itself";
  if (m == "emb") return "P input embeddings";
  if (m == "emb-mlp") return "P input embeddings through an MLP";
  if (m == "full") return "every weight of the model (fine-tuning)";
  return "the model's top 2 blocks (fine-tuning)";
}

}  // namespace detail_cli

/// Refuses the options given on the command line (o.given) that this run would ignore: an option of another method
/// or of the other model family, or one that needs another option (--init-words without --init words, --eval-every
/// without --valid, ...). One line per option in the message.
inline void check_train_flags(const TrainOptions& o, bool bart) {
  const auto given = [&](const std::string& flag) { return o.given.count(flag) > 0; };
  std::vector<std::string> refused;
  std::set<std::string> named;  // one reason per option
  const auto refuse = [&](const std::string& flag, const std::string& why) {
    if (named.insert(flag).second) refused.push_back(why);
  };
  const bool fine_tunes = !bart && (o.method == "full" || o.method == "ft-top2");
  for (const detail_cli::MethodFlag& f : detail_cli::method_flags()) {
    if (!given(f.flag)) continue;
    const bool gpt2_reads = std::find(f.methods.begin(), f.methods.end(), o.method) != f.methods.end();
    if (bart ? f.bart : gpt2_reads) continue;
    std::string why = std::string(f.flag) + " applies to " + f.applies_to + "; ";
    if (bart || f.methods.empty()) {
      why += f.not_here;
    } else {
      why += "--method " + o.method + " has no " + (fine_tunes ? "prefix" : f.lacks) + ": it trains " +
             detail_cli::method_trains(o.method);
    }
    refuse(f.flag, why);
  }
  const std::string steps =
      given("--max-steps") ? "--max-steps " + std::to_string(o.cfg.max_steps) : "--low-data's 400 steps";
  const struct {
    const char* flag;
    bool applies;
    std::string why;
  } needs[] = {
      {"--init-words", o.init == "words", "--init-words applies to --init words only; --init is " + o.init},
      {"--prefit-steps", o.init == "words",
       "--prefit-steps applies to --init words (the MLP's pre-fit); --init is " + o.init},
      {"--prefit-lr", o.init == "words",
       "--prefit-lr applies to --init words (the MLP's pre-fit); --init is " + o.init},
      {"--eval-every", !o.valid_path.empty(), "--eval-every applies with --valid; no --valid was given"},
      {"--checkpoint-every", !o.cfg.checkpoint_path.empty(),
       "--checkpoint-every applies with --checkpoint; no --checkpoint was given"},
      {"--resume", !o.cfg.checkpoint_path.empty(), "--resume continues from --checkpoint; no --checkpoint was given"},
      {"--epochs", o.cfg.max_steps == 0,
       "--epochs applies to a schedule counted in epochs; this one is " + steps + " long"},
      {"--low-data", !given("--max-steps") || !given("--warmup-steps"),
       "--low-data sets --max-steps and --warmup-steps when they are not given; both were given"},
  };
  for (const auto& n : needs)
    if (given(n.flag) && !n.applies) refuse(n.flag, n.why);
  if (!bart && !named.count("--init")) {
    if (o.init == "uniform" && o.method != "direct") refuse("--init", "--init uniform applies to --method direct only");
    if (o.init == "words" && o.method == "emb-mlp")
      refuse("--init", "--init words with --method emb-mlp: the MLP has no word-shaped start; use emb");
  }
  if (refused.size() == 1) PREFIXTUNE_FAIL("train: ", refused[0]);
  if (!refused.empty()) {
    std::string all;
    for (const auto& r : refused) all += "\n  " + r;
    PREFIXTUNE_FAIL("train: ", refused.size(), " options given do not apply to this run:", all);
  }
}

namespace detail_cli {

/// A progress bar for train_prefix / fine_tune.
class TrainDisplay {
 public:
  void operator()(const TrainProgress& p) {
    if (!bar_) bar_ = std::make_unique<ProgressBar>(p.total_steps, "train");
    bar_->update(p.step, p.loss, p.valid_loss ? "valid " + std::to_string(*p.valid_loss) : "");
    if (p.skipped)
      std::fprintf(stderr, "\nstep %lld: non-finite loss or gradient, step skipped\n", static_cast<long long>(p.step));
  }
  template <class Result>
  void finish(const Result& r) {
    if (bar_) bar_->finish();
    if (!r.skipped_steps.empty()) std::fprintf(stderr, "%zu steps skipped as non-finite\n", r.skipped_steps.size());
  }

 private:
  std::unique_ptr<ProgressBar> bar_;
};

}  // namespace detail_cli

template <class Device>
int cmd_train(const TrainOptions& o) {
  check_train_flags(o, /*bart=*/false);
  Model<Device> m = load_model<Device>(o.model_dir);
  const auto policy = o.max_length > 0 ? LengthPolicy::TruncateSource : LengthPolicy::Error;
  const auto train = encode_examples(m.tok, read_pairs(o.train_path), o.max_length, policy);
  const auto valid = o.valid_path.empty() ? std::vector<Example>{}
                                          : encode_examples(m.tok, read_pairs(o.valid_path), o.max_length, policy);
  const std::string& method = o.method;
  const bool infix = o.pc.placement == Placement::Infix;
  detail_cli::TrainDisplay display;
  if (method == "full" || method == "ft-top2") {
    std::fprintf(stderr, "fine-tuning %s on %zu examples, %zu for validation\n",
                 method == "full" ? "every weight" : "the top 2 blocks", train.size(), valid.size());
    const auto r = fine_tune(m.gpt2, train, valid, o.cfg, method == "full" ? 0 : 2, std::ref(display));
    display.finish(r);
    const fs::path dir(o.out), tmp = dir.string() + ".tmp";  // the whole folder appears at once
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    save_gpt2(tmp.string(), to_device<Cpu>(m.gpt2));
    for (const char* f : {"vocab.json", "merges.txt"})
      write_text_file_atomic((tmp / f).string(), read_text_file((fs::path(o.model_dir) / f).string()));
    fs::remove_all(dir);
    fs::rename(tmp, dir);
    std::fprintf(stderr, "saved the fine-tuned model (last step) to %s\n", o.out.c_str());
    return 0;
  }
  PrefixConfig pc = o.pc;
  pc.deep = method == "deep";
  std::vector<std::int32_t> words;
  if (o.init == "words") {
    words = m.tok.encode(o.init_words);
    PREFIXTUNE_CHECK(!words.empty(), "--init words needs --init-words TEXT that encodes to at least one token");
    PREFIXTUNE_CHECK(o.given.count("--prefix-length") == 0 || pc.length == static_cast<std::int64_t>(words.size()),
                     "train: --prefix-length ", pc.length, " with --init words: the prefix takes the length of '",
                     o.init_words, "', ", words.size(), " tokens; leave out --prefix-length");
    if (pc.length != static_cast<std::int64_t>(words.size()))
      std::fprintf(stderr, "--init words: the prefix takes the length of '%s': %zu tokens\n", o.init_words.c_str(),
                   words.size());
    pc.length = static_cast<std::int64_t>(words.size());
  }
  Rng rng(o.cfg.seed);
  const auto run = [&](auto& trained) {
    std::fprintf(stderr, "training a %s%s of length %lld on %zu examples, %zu for validation\n", method.c_str(),
                 infix ? " infix" : " prefix", static_cast<long long>(pc.length), train.size(), valid.size());
    const auto r = train_prefix(m.gpt2, trained, train, valid, o.cfg, std::ref(display));
    display.finish(r);
    save_prefix(o.out, to_device<Cpu>(r.best_prefix), m.gpt2.config);
    std::fprintf(stderr, "saved the %s %s to %s\n", valid.empty() ? "final" : "best validated",
                 infix ? "infix" : "prefix", o.out.c_str());
    return 0;
  };
  if (method == "mlp" || method == "deep") {
    auto encoder = to_device<Device>(PrefixEncoder<float>::create(pc, m.gpt2.config, rng));
    if (!words.empty()) {
      const auto target = prefix_from_words(m.gpt2, words).table.value();
      const double mse = fit_encoder_to_table(encoder, target, o.prefit_steps, o.prefit_lr);
      std::fprintf(stderr, "pre-fit the MLP to the K/V of '%s': MSE %.4g after %lld steps\n", o.init_words.c_str(), mse,
                   static_cast<long long>(o.prefit_steps));
    }
    return run(encoder);
  }
  if (method == "direct") {
    DirectPrefix<float, Device> table;
    if (!words.empty()) {
      table = prefix_from_words(m.gpt2, words);
    } else {
      auto host = o.init == "uniform" ? DirectPrefix<float>::random_uniform(pc.length, m.gpt2.config, rng)
                                      : DirectPrefix<float>::random_normal(pc.length, m.gpt2.config, rng);
      table = to_device<Device>(host);
    }
    table.placement = pc.placement;
    table.position_offset = pc.position_offset;
    return run(table);
  }
  PREFIXTUNE_CHECK(method == "emb" || method == "emb-mlp", "--method '", method,
                   "' is not one of mlp, deep, direct, emb, emb-mlp, full, ft-top2");
  auto emb = EmbeddingPrefix<float, Device>::create(pc, m.gpt2.config.n_embd, rng, method == "emb-mlp");
  if (!words.empty()) {  // start from the words' own input embeddings
    const auto ids = Tensor<std::int32_t, Cpu>::from_vector({pc.length}, words).template to<Device>();
    Tensor<float, Device> e = emb.embedding.value();
    embedding_forward(ids, m.gpt2.wte, e);
  }
  return run(emb);
}

/// Parses and checks input line n; a bad line comes back with "error" set and ok = false.
template <class Device>
RequestLine parse_generate_line(const std::string& line, std::size_t n, const Model<Device>& m,
                                const PrefixBank<float, Device>& bank, std::int64_t prefix_index,
                                const std::vector<std::int32_t>& instruction) {
  RequestLine p;
  if (!parse_request_object(line, n, "a JSON object with \"source\" or \"prompt\"", p)) return p;
  try {
    const bool has_source = p.out.contains("source"), has_prompt = p.out.contains("prompt");
    PREFIXTUNE_CHECK(has_source != has_prompt, "stdin:", n, ": expected exactly one of the fields \"source\" and ",
                     "\"prompt\", found ", has_source ? "both" : "neither");
    const char* key = has_source ? "source" : "prompt";
    PREFIXTUNE_CHECK(p.out[key].is_string(), "stdin:", n, ": field \"", key, "\" is not a string");
    const std::string text = p.out[key].get<std::string>();
    p.request.prompt = instruction;  // a discrete prompt before every line (usually empty)
    const auto ids = has_source ? encode_source_prompt(m.tok, text) : m.tok.encode(text, /*parse_special=*/true);
    p.request.prompt.insert(p.request.prompt.end(), ids.begin(), ids.end());
    p.request.prefix = prefix_index;
    p.request.stream = static_cast<std::int64_t>(n);       // sampling draws depend on the line, not on the batching
    check_generation_request(m.gpt2, bank, p.request, n);  // "request n": n is the input line
    p.ok = true;
  } catch (const std::exception& e) {
    p.out["error"] = e.what();
  }
  return p;
}

/// The stdin loop of `prefixtune generate`: JSON lines parsed by parse(line, n) into RequestLines, the good ones
/// served batch_size at a time by serve(lines) (which writes every line in order and returns the new tokens), a
/// summary on stderr.
template <class Parse, class Serve>
int serve_stdin(std::int64_t batch_size, Parse&& parse, Serve&& serve) {
  std::vector<RequestLine> pending;
  std::int64_t ready = 0, batches = 0, tokens = 0, requests = 0, errors = 0;
  const auto flush = [&] {
    tokens += serve(pending);
    batches += ready > 0;
    ready = 0;
  };
  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    pending.push_back(parse(line, n));
    ++requests;
    if (pending.back().ok) {
      ++ready;
    } else {
      ++errors;
    }
    if (ready == batch_size) flush();
  }
  flush();
  std::fprintf(stderr, "generate: %lld lines, %lld errors, %lld batches, %lld new tokens\n",
               static_cast<long long>(requests), static_cast<long long>(errors), static_cast<long long>(batches),
               static_cast<long long>(tokens));
  return 0;
}

template <class Device>
int cmd_generate(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                 std::int64_t batch_size, const std::string& instruction) {
  const Model<Device> m = load_model<Device>(model_dir);
  const std::vector<std::int32_t> instruction_ids =
      instruction.empty() ? std::vector<std::int32_t>{} : m.tok.encode(instruction);
  PrefixBank<float, Device> bank(m.gpt2.config);
  const std::int64_t prefix_index =
      prefix_path.empty() ? kNoPrefix : bank.add(load_prefix<float>(prefix_path, m.gpt2.config), prefix_path);
  cfg.validate(m.gpt2.config.vocab_size);
  return serve_stdin(
      batch_size,
      [&](const std::string& line, std::size_t n) {
        return parse_generate_line(line, n, m, bank, prefix_index, instruction_ids);
      },
      [&](std::vector<RequestLine>& lines) { return serve_request_lines(lines, m.gpt2, m.tok, bank, cfg).tokens; });
}

}  // namespace prefixtune_cli
