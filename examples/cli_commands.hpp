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
              std::int64_t batch_size) {
  const Model<Device> m = load_model<Device>(model_dir);
  const auto examples = encode_examples(m.tok, read_pairs(data));
  DirectPrefix<float, Device> prefix;
  if (!prefix_path.empty()) prefix = to_device<Device>(load_prefix<float>(prefix_path, m.gpt2.config));
  ProgressBar bar(static_cast<std::int64_t>(examples.size()), "score");
  const std::int64_t offset = prefix.table.defined() ? prefix.length() : 0;
  const auto scores = score_examples(m.gpt2, prefix.table, examples, batch_size, offset,
                                     [&](std::size_t done) { bar.update(static_cast<std::int64_t>(done)); });
  for (std::size_t i = 0; i < scores.size(); ++i)
    std::cout << nlohmann::json{{"index", i}, {"loss", scores[i].first}, {"tokens", scores[i].second}}.dump() << "\n";
  bar.finish();
  return 0;
}

template <class Device>
int cmd_train(const std::string& model_dir, const std::string& train_path, const std::string& valid_path,
              const std::string& out, const PrefixConfig& pc, const TrainConfig& cfg, std::size_t max_length) {
  const Model<Device> m = load_model<Device>(model_dir);
  const auto policy = max_length > 0 ? LengthPolicy::TruncateSource : LengthPolicy::Error;
  const auto train = encode_examples(m.tok, read_pairs(train_path), max_length, policy);
  const auto valid =
      valid_path.empty() ? std::vector<Example>{} : encode_examples(m.tok, read_pairs(valid_path), max_length, policy);
  Rng rng(cfg.seed);
  auto encoder = to_device<Device>(PrefixEncoder<float>::create(pc, m.gpt2.config, rng));
  std::fprintf(stderr, "training a prefix of length %lld (mid %lld) on %zu examples, %zu for validation\n",
               static_cast<long long>(pc.length), static_cast<long long>(pc.mid), train.size(), valid.size());
  std::unique_ptr<ProgressBar> bar;
  const auto result = train_prefix(m.gpt2, encoder, train, valid, cfg, [&](const TrainProgress& p) {
    if (!bar) bar = std::make_unique<ProgressBar>(p.total_steps, "train");
    bar->update(p.step, p.loss, p.valid_loss ? "valid " + std::to_string(*p.valid_loss) : "");
    if (p.skipped)
      std::fprintf(stderr, "\nstep %lld: non-finite loss or gradient, step skipped\n", static_cast<long long>(p.step));
  });
  if (bar) bar->finish();
  if (!result.skipped_steps.empty())
    std::fprintf(stderr, "%zu steps skipped as non-finite\n", result.skipped_steps.size());
  save_prefix(out, to_device<Cpu>(result.best_prefix), m.gpt2.config);
  std::fprintf(stderr, "saved the %s prefix to %s\n", valid.empty() ? "final" : "best validated", out.c_str());
  return 0;
}

/// Parses and checks input line n; a bad line comes back with "error" set and ok = false.
template <class Device>
RequestLine parse_generate_line(const std::string& line, std::size_t n, const Model<Device>& m,
                                const PrefixBank<float, Device>& bank, std::int64_t prefix_index) {
  RequestLine p;
  if (!parse_request_object(line, n, "a JSON object with \"source\" or \"prompt\"", p)) return p;
  try {
    const bool has_source = p.out.contains("source"), has_prompt = p.out.contains("prompt");
    PREFIXTUNE_CHECK(has_source != has_prompt, "stdin:", n, ": expected exactly one of the fields \"source\" and ",
                     "\"prompt\", found ", has_source ? "both" : "neither");
    const char* key = has_source ? "source" : "prompt";
    PREFIXTUNE_CHECK(p.out[key].is_string(), "stdin:", n, ": field \"", key, "\" is not a string");
    const std::string text = p.out[key].get<std::string>();
    p.request.prompt = has_source ? encode_source_prompt(m.tok, text) : m.tok.encode(text, /*parse_special=*/true);
    p.request.prefix = prefix_index;
    p.request.stream = static_cast<std::int64_t>(n);       // sampling draws depend on the line, not on the batching
    check_generation_request(m.gpt2, bank, p.request, n);  // "request n": n is the input line
    p.ok = true;
  } catch (const std::exception& e) {
    p.out["error"] = e.what();
  }
  return p;
}

template <class Device>
int cmd_generate(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                 std::int64_t batch_size) {
  const Model<Device> m = load_model<Device>(model_dir);
  PrefixBank<float, Device> bank(m.gpt2.config);
  const std::int64_t prefix_index =
      prefix_path.empty() ? kNoPrefix
                          : bank.add(load_prefix<float>(prefix_path, m.gpt2.config).table.value(), prefix_path);
  cfg.validate(m.gpt2.config.vocab_size);
  std::vector<RequestLine> pending;
  std::int64_t ready = 0, batches = 0, tokens = 0, requests = 0, errors = 0;
  const auto flush = [&] {
    tokens += serve_request_lines(pending, m.gpt2, m.tok, bank, cfg).tokens;
    batches += ready > 0;
    ready = 0;
  };
  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    pending.push_back(parse_generate_line(line, n, m, bank, prefix_index));
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

}  // namespace prefixtune_cli
