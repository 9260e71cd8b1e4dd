// SPDX-License-Identifier: MIT
// The model-running commands of the `prefixtune` CLI (score, train, generate) for decoder-only folders (GPT-2 and
// the Llama family: llama, mistral, qwen2, qwen3, by config.json's model_type), templated over the device: the CLI
// runs them on Cpu, and on Cuda through cuda_commands.cu when the build has CUDA (`--device cuda`).
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
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

/// model_type from `dir`/config.json ("" when there is no config or no model_type).
inline std::string model_type_of(const std::string& dir) {
  const fs::path config = fs::path(dir) / "config.json";
  if (!fs::is_regular_file(config)) return "";
  const nlohmann::json j = read_json_file(config.string());
  return j.is_object() && j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>()
                                                                                  : "";
}

/// Whether `dir` is a Llama-family folder (llama, mistral, qwen2, qwen3).
inline bool is_llama_folder(const std::string& dir) {
  const std::string t = model_type_of(dir);
  return t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3";
}

/// The K/V shape a prefix for the decoder-only folder `dir` fills (GPT-2 or the Llama family).
inline KvShape decoder_kv_shape(const std::string& dir) {
  if (is_llama_folder(dir)) return load_llama_config(dir).kv_shape();
  return load_gpt2_config(dir).kv_shape();
}

/// A frozen decoder-only model (Net: Gpt2 or Llama) on Device, and its tokenizer when the folder has one (GPT-2's
/// vocab.json + merges.txt; the Llama family's tokenizers are not read yet: such folders take pre-tokenized data).
template <class Net, class Device>
struct Model {
  Net net;
  std::optional<Gpt2Tokenizer> tok;
  std::string dir;

  /// The tokenizer, or an Error saying that `what` needs one and that token ids can be given instead.
  const Gpt2Tokenizer& tokenizer(const std::string& what) const {
    PREFIXTUNE_CHECK(
        tok.has_value(), what, " needs the model's tokenizer, and prefixtune does not read the tokenizers ",
        "of Llama-family folders (", dir, ") yet: give pre-tokenized JSON lines {\"input_ids\": [...]} ", "instead");
    return *tok;
  }
};

/// The input embedding table (V, C) and its width.
template <class Device>
const Tensor<float, Device>& input_embeddings(const Gpt2<float, Device>& m) {
  return m.wte;
}
template <class Device>
const Tensor<float, Device>& input_embeddings(const Llama<float, Device>& m) {
  return m.embed;
}

/// Loads the decoder-only folder `dir` (GPT-2, or the Llama family by model_type) onto Device and calls f(model).
template <class Device, class F>
int with_model(const std::string& dir, F&& f) {
  PREFIXTUNE_CHECK(fs::is_directory(dir), "--model '", dir,
                   "' is not a folder (expected a HuggingFace folder with config.json and model.safetensors: GPT-2, "
                   "Llama, Mistral, Qwen2 or Qwen3)");
  if (is_llama_folder(dir)) {
    Model<Llama<float, Device>, Device> m{to_device<Device>(load_llama<float>(dir)), std::nullopt, dir};
    return f(m);
  }
  Model<Gpt2<float, Device>, Device> m{to_device<Device>(load_gpt2<float>(dir)), Gpt2Tokenizer::load_dir(dir), dir};
  return f(m);
}

/// The examples of a data file: pre-tokenized JSON lines ({"input_ids", "labels"}, used as given; longer than
/// max_length refused) for any model, or text (E2E lines, {"source", "target"} JSON lines) through the tokenizer.
template <class M>
std::vector<Example> read_examples(const M& m, const std::string& path, std::size_t max_length, LengthPolicy policy) {
  const std::string text = read_text_file(path);  // read once, whichever format it holds
  if (is_token_data(text)) return parse_token_examples(text, path, m.net.config.vocab_size, max_length);
  return encode_examples(m.tokenizer("text data (" + path + ")"), parse_pairs(text, path), max_length, policy);
}

template <class Device>
int cmd_score(const std::string& model_dir, const std::string& prefix_path, const std::string& data,
              std::int64_t batch_size, const std::string& instruction) {
  return with_model<Device>(model_dir, [&](const auto& m) {
    auto examples = read_examples(m, data, 0, LengthPolicy::Error);
    if (!instruction.empty()) examples = prepend_prompt(examples, m.tokenizer("--instruction").encode(instruction));
    DirectPrefix<float, Device> prefix;
    if (!prefix_path.empty()) prefix = to_device<Device>(load_prefix<float>(prefix_path, m.net.config.kv_shape()));
    ProgressBar bar(static_cast<std::int64_t>(examples.size()), "score");
    const auto scores = score_examples(m.net, prefix, examples, batch_size,
                                       [&](std::size_t done) { bar.update(static_cast<std::int64_t>(done)); });
    for (std::size_t i = 0; i < scores.size(); ++i)
      std::cout << nlohmann::json{{"index", i}, {"loss", scores[i].first}, {"tokens", scores[i].second}}.dump() << "\n";
    bar.finish();
    return 0;
  });
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

/// `prefixtune train` on a decoder-only model m (GPT-2 or the Llama family).
template <class Device, class Net>
int train_decoder(const TrainOptions& o, Model<Net, Device>& m) {
  constexpr bool gpt2 = std::is_same_v<Net, Gpt2<float, Device>>;
  const auto policy = o.max_length > 0 ? LengthPolicy::TruncateSource : LengthPolicy::Error;
  const auto train = read_examples(m, o.train_path, o.max_length, policy);
  const auto valid =
      o.valid_path.empty() ? std::vector<Example>{} : read_examples(m, o.valid_path, o.max_length, policy);
  const std::string& method = o.method;
  const bool infix = o.pc.placement == Placement::Infix;
  detail_cli::TrainDisplay display;
  if (method == "full" || method == "ft-top2") {
    if constexpr (!gpt2) {
      PREFIXTUNE_FAIL("train: --method ", method, " fine-tunes GPT-2 models only; ", o.model_dir, " is a ",
                      m.net.config.model_type, " folder, whose weights prefixtune keeps frozen");
    } else {
      std::fprintf(stderr, "fine-tuning %s on %zu examples, %zu for validation\n",
                   method == "full" ? "every weight" : "the top 2 blocks", train.size(), valid.size());
      const auto r = fine_tune(m.net, train, valid, o.cfg, method == "full" ? 0 : 2, std::ref(display));
      display.finish(r);
      const fs::path dir(o.out), tmp = dir.string() + ".tmp";  // the whole folder appears at once
      fs::remove_all(tmp);
      fs::create_directories(tmp);
      save_gpt2(tmp.string(), to_device<Cpu>(m.net));
      for (const char* f : {"vocab.json", "merges.txt"})
        write_text_file_atomic((tmp / f).string(), read_text_file((fs::path(o.model_dir) / f).string()));
      fs::remove_all(dir);
      fs::rename(tmp, dir);
      std::fprintf(stderr, "saved the fine-tuned model (last step) to %s\n", o.out.c_str());
      return 0;
    }
  }
  PrefixConfig pc = o.pc;
  pc.deep = method == "deep";
  std::vector<std::int32_t> words;
  if (o.init == "words") {
    words = m.tokenizer("--init words").encode(o.init_words);
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
    const auto r = train_prefix(m.net, trained, train, valid, o.cfg, std::ref(display));
    display.finish(r);
    save_prefix(o.out, to_device<Cpu>(r.best_prefix), m.net.config.kv_shape());
    std::fprintf(stderr, "saved the %s %s to %s\n", valid.empty() ? "final" : "best validated",
                 infix ? "infix" : "prefix", o.out.c_str());
    return 0;
  };
  if (method == "mlp" || method == "deep") {
    auto encoder = to_device<Device>(PrefixEncoder<float>::create(pc, m.net.config.kv_shape(), rng));
    if (!words.empty()) {
      const auto target = prefix_from_words(m.net, words).table.value();
      const double mse = fit_encoder_to_table(encoder, target, o.prefit_steps, o.prefit_lr);
      std::fprintf(stderr, "pre-fit the MLP to the K/V of '%s': MSE %.4g after %lld steps\n", o.init_words.c_str(), mse,
                   static_cast<long long>(o.prefit_steps));
    }
    return run(encoder);
  }
  if (method == "direct") {
    DirectPrefix<float, Device> table;
    if (!words.empty()) {
      table = prefix_from_words(m.net, words);
    } else {
      auto host = o.init == "uniform" ? DirectPrefix<float>::random_uniform(pc.length, m.net.config.kv_shape(), rng)
                                      : DirectPrefix<float>::random_normal(pc.length, m.net.config.kv_shape(), rng);
      table = to_device<Device>(host);
    }
    table.placement = pc.placement;
    table.position_offset = pc.position_offset;
    return run(table);
  }
  PREFIXTUNE_CHECK(method == "emb" || method == "emb-mlp", "--method '", method,
                   "' is not one of mlp, deep, direct, emb, emb-mlp, full, ft-top2");
  auto emb = EmbeddingPrefix<float, Device>::create(pc, input_embeddings(m.net).size(1), rng, method == "emb-mlp");
  if (!words.empty()) {  // start from the words' own input embeddings
    const auto ids = Tensor<std::int32_t, Cpu>::from_vector({pc.length}, words).template to<Device>();
    Tensor<float, Device> e = emb.embedding.value();
    embedding_forward(ids, input_embeddings(m.net), e);
  }
  return run(emb);
}

template <class Device>
int cmd_train(const TrainOptions& o) {
  check_train_flags(o, /*bart=*/false);
  return with_model<Device>(o.model_dir, [&](auto& m) { return train_decoder(o, m); });
}

/// Parses and checks input line n: exactly one of "source" (the paper's table prompt), "prompt" (raw text) and
/// "input_ids" (token ids used as given); a bad line comes back with "error" set and ok = false.
template <class M, class Device>
RequestLine parse_generate_line(const std::string& line, std::size_t n, const M& m,
                                const PrefixBank<float, Device>& bank, std::int64_t prefix_index,
                                const std::vector<std::int32_t>& instruction) {
  RequestLine p;
  if (!parse_request_object(line, n, "a JSON object with \"source\", \"prompt\" or \"input_ids\"", p)) return p;
  try {
    const char* keys[] = {"source", "prompt", "input_ids"};
    std::vector<const char*> found;
    for (const char* k : keys)
      if (p.out.contains(k)) found.push_back(k);
    PREFIXTUNE_CHECK(found.size() == 1, "stdin:", n, ": expected exactly one of the fields \"source\", \"prompt\" ",
                     "and \"input_ids\", found ", found.empty() ? "none" : std::to_string(found.size()));
    const std::string key = found[0];
    p.request.prompt = instruction;  // a discrete prompt before every line (usually empty)
    std::vector<std::int32_t> ids;
    if (key == "input_ids") {
      ids = prompt_token_ids(p.out, m.net.config.vocab_size, "stdin", n);
    } else {
      PREFIXTUNE_CHECK(p.out[key].is_string(), "stdin:", n, ": field \"", key, "\" is not a string");
      const std::string text = p.out[key].template get<std::string>();
      const Gpt2Tokenizer& tok = m.tokenizer("stdin:" + std::to_string(n) + ": \"" + key + "\"");
      ids = key == "source" ? encode_source_prompt(tok, text) : tok.encode(text, /*parse_special=*/true);
    }
    p.request.prompt.insert(p.request.prompt.end(), ids.begin(), ids.end());
    p.request.prefix = prefix_index;
    p.request.stream = static_cast<std::int64_t>(n);      // sampling draws depend on the line, not on the batching
    check_generation_request(m.net, bank, p.request, n);  // "request n": n is the input line
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
  return with_model<Device>(model_dir, [&](const auto& m) {
    const std::vector<std::int32_t> instruction_ids =
        instruction.empty() ? std::vector<std::int32_t>{} : m.tokenizer("--instruction").encode(instruction);
    PrefixBank<float, Device> bank(m.net.config.kv_shape());
    const std::int64_t prefix_index =
        prefix_path.empty() ? kNoPrefix
                            : bank.add(load_prefix<float>(prefix_path, m.net.config.kv_shape()), prefix_path);
    cfg.validate(m.net.config.vocab_size);
    const Gpt2Tokenizer* tok = m.tok ? &*m.tok : nullptr;  // no tokenizer: the output has "ids" only
    return serve_stdin(
        batch_size,
        [&](const std::string& line, std::size_t n) {
          return parse_generate_line(line, n, m, bank, prefix_index, instruction_ids);
        },
        [&](std::vector<RequestLine>& lines) { return serve_request_lines(lines, m.net, tok, bank, cfg).tokens; });
  });
}

}  // namespace prefixtune_cli
