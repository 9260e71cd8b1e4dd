// SPDX-License-Identifier: MIT
// The model-running commands of the `prefixtune` CLI (score, train, generate), templated over the device: the CLI
// runs them on Cpu, and on Cuda through cli_cuda.cu when the build has CUDA (`--device cuda`).
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
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
};

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
  Model<Device> m = load_model<Device>(o.model_dir);
  const auto policy = o.max_length > 0 ? LengthPolicy::TruncateSource : LengthPolicy::Error;
  const auto train = encode_examples(m.tok, read_pairs(o.train_path), o.max_length, policy);
  const auto valid = o.valid_path.empty() ? std::vector<Example>{}
                                          : encode_examples(m.tok, read_pairs(o.valid_path), o.max_length, policy);
  const std::string& method = o.method;
  const bool infix = o.pc.placement == Placement::Infix;
  detail_cli::TrainDisplay display;
  if (method == "full" || method == "ft-top2") {
    PREFIXTUNE_CHECK(!infix && o.init == "random", "--method ", method,
                     " fine-tunes the model itself: --infix and --init do not apply");
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
    if (pc.length != static_cast<std::int64_t>(words.size()))
      std::fprintf(stderr, "--init words: the prefix takes the length of '%s': %zu tokens\n", o.init_words.c_str(),
                   words.size());
    pc.length = static_cast<std::int64_t>(words.size());
  }
  PREFIXTUNE_CHECK(o.init != "uniform" || method == "direct", "--init uniform applies to --method direct only");
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
  auto emb = EmbeddingPrefix<float, Device>::create(pc, m.gpt2.config, rng, method == "emb-mlp");
  if (!words.empty()) {  // start from the words' own input embeddings
    PREFIXTUNE_CHECK(method == "emb", "--init words with --method emb-mlp: the MLP has no word-shaped start; use emb");
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
