// SPDX-License-Identifier: MIT
// The `prefixtune` command: tokenize, score, train, export-peft and inspect, over HuggingFace GPT-2 folders,
// E2E / JSON-lines data and prefix files (ours or PEFT adapter folders).
#include <CLI/CLI.hpp>
#include <prefixtune/prefixtune.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

using namespace prefixtune;
namespace fs = std::filesystem;

namespace {

struct Model {
  Gpt2<float> gpt2;
  Gpt2Tokenizer tok;
};

Model load_model(const std::string& dir) {
  PREFIXTUNE_CHECK(fs::is_directory(dir), "--model '", dir,
                   "' is not a folder (expected a HuggingFace GPT-2 folder "
                   "with config.json, model.safetensors, vocab.json, merges.txt)");
  return Model{load_gpt2<float>(dir), Gpt2Tokenizer::load_dir(dir)};
}

int cmd_tokenize(const std::string& model_dir) {
  const auto tok = Gpt2Tokenizer::load_dir(model_dir);
  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      PREFIXTUNE_FAIL("stdin:", n, ": invalid JSON: ", e.what());
    }
    PREFIXTUNE_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "stdin:", n,
                     ": expected an object with a string field \"text\"");
    j["ids"] = tok.encode(j["text"].get<std::string>());
    std::cout << j.dump() << "\n";
  }
  return 0;
}

int cmd_score(const std::string& model_dir, const std::string& prefix_path, const std::string& data,
              std::int64_t batch_size) {
  const Model m = load_model(model_dir);
  const auto examples = encode_examples(m.tok, read_pairs(data));
  DirectPrefix<float> prefix;
  if (!prefix_path.empty()) prefix = load_prefix<float>(prefix_path, m.gpt2.config);
  ProgressBar bar(static_cast<std::int64_t>(examples.size()), "score");
  const std::int64_t offset = prefix.table.defined() ? prefix.length() : 0;
  const auto scores = score_examples(m.gpt2, prefix.table, examples, batch_size, offset,
                                     [&](std::size_t done) { bar.update(static_cast<std::int64_t>(done)); });
  for (std::size_t i = 0; i < scores.size(); ++i)
    std::cout << nlohmann::json{{"index", i}, {"loss", scores[i].first}, {"tokens", scores[i].second}}.dump() << "\n";
  bar.finish();
  return 0;
}

int cmd_train(const std::string& model_dir, const std::string& train_path, const std::string& valid_path,
              const std::string& out, const PrefixConfig& pc, const TrainConfig& cfg, std::size_t max_length) {
  const Model m = load_model(model_dir);
  const auto policy = max_length > 0 ? LengthPolicy::TruncateSource : LengthPolicy::Error;
  const auto train = encode_examples(m.tok, read_pairs(train_path), max_length, policy);
  const auto valid =
      valid_path.empty() ? std::vector<Example>{} : encode_examples(m.tok, read_pairs(valid_path), max_length, policy);
  Rng rng(cfg.seed);
  auto encoder = PrefixEncoder<float>::create(pc, m.gpt2.config, rng);
  std::fprintf(stderr, "training a prefix of length %lld (mid %lld) on %zu examples, %zu for validation\n",
               static_cast<long long>(pc.length), static_cast<long long>(pc.mid), train.size(), valid.size());
  std::unique_ptr<ProgressBar> bar;
  const auto result = train_prefix(m.gpt2, encoder, train, valid, cfg, [&](const TrainProgress& p) {
    if (!bar) bar = std::make_unique<ProgressBar>(p.total_steps, "train");
    bar->update(p.step, p.loss, p.valid_loss ? "valid " + std::to_string(*p.valid_loss) : "");
  });
  if (bar) bar->finish();
  save_prefix(out, result.best_prefix, m.gpt2.config);
  std::fprintf(stderr, "saved the %s prefix to %s\n", valid.empty() ? "final" : "best validated", out.c_str());
  return 0;
}

int cmd_export_peft(const std::string& model_dir, const std::string& prefix_path, const std::string& out) {
  const Gpt2Config c = load_gpt2_config(model_dir);
  export_peft(out, load_prefix<float>(prefix_path, c), c, fs::absolute(model_dir).string());
  std::fprintf(stderr, "wrote a PEFT PREFIX_TUNING adapter to %s\n", out.c_str());
  return 0;
}

int cmd_inspect(const std::string& path) {
  PREFIXTUNE_CHECK(fs::exists(path), "'", path, "' does not exist");
  if (fs::is_directory(path) && fs::exists(fs::path(path) / "adapter_config.json")) {
    std::cout << "PEFT adapter folder " << path << "\n"
              << read_text_file((fs::path(path) / "adapter_config.json").string());
    return cmd_inspect((fs::path(path) / "adapter_model.safetensors").string());
  }
  if (fs::is_directory(path)) {
    const Gpt2Config c = load_gpt2_config(path);
    std::cout << "GPT-2 folder " << path << ": n_layer " << c.n_layer << ", n_head " << c.n_head << ", n_embd "
              << c.n_embd << ", n_positions " << c.n_positions << ", vocab_size " << c.vocab_size << "\n";
    return cmd_inspect((fs::path(path) / "model.safetensors").string());
  }
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  std::cout << "safetensors file " << path << ": " << f.names().size() << " tensors\n";
  for (const auto& [k, v] : f.metadata()) std::cout << "  metadata " << k << " = " << v << "\n";
  for (const auto& name : f.names()) {
    const TensorInfo& info = f.info(name);
    std::cout << "  " << name << " " << dtype_name(info.dtype) << " [";
    for (std::size_t i = 0; i < info.shape.size(); ++i) std::cout << (i ? ", " : "") << info.shape[i];
    std::cout << "]\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prefixtune: prefix-tuning of frozen GPT-2 models (Li & Liang 2021)"};
  app.require_subcommand(1);
  std::string model, prefix, data, train, valid, out;
  std::int64_t batch = 8;

  auto* tokenize = app.add_subcommand("tokenize", "JSON lines with \"text\" on stdin -> the same lines with \"ids\"");
  tokenize->add_option("--model", model, "HuggingFace GPT-2 folder (vocab.json + merges.txt)")->required();

  auto* score = app.add_subcommand("score", "summed target NLL (natural log) and token count per example");
  score->add_option("--model", model, "HuggingFace GPT-2 folder")->required();
  score->add_option("--prefix", prefix, "prefix file or PEFT adapter folder (none: the bare model)");
  score->add_option("--data", data, "E2E 'source||target' lines or JSON lines")->required();
  score->add_option("--batch-size", batch, "examples per forward pass")->check(CLI::PositiveNumber);

  PrefixConfig pc;
  TrainConfig cfg;
  std::size_t max_length = 0;
  auto* tr = app.add_subcommand("train", "prefix-tune a frozen model; saves the best validated (merged) prefix");
  tr->add_option("--model", model, "HuggingFace GPT-2 folder")->required();
  tr->add_option("--train", train, "training data (E2E lines or JSON lines)")->required();
  tr->add_option("--valid", valid, "validation data");
  tr->add_option("--out", out, "where the merged prefix goes (safetensors)")->required();
  tr->add_option("--prefix-length", pc.length, "P, prefix slots per layer")->capture_default_str();
  tr->add_option("--mid", pc.mid, "width of the reparameterization MLP")->capture_default_str();
  tr->add_option("--prefix-dropout", pc.dropout, "dropout on the MLP output")->capture_default_str();
  tr->add_option("--epochs", cfg.epochs)->capture_default_str();
  tr->add_option("--batch-size", cfg.batch_size)->capture_default_str();
  tr->add_option("--lr", cfg.lr, "AdamW learning rate")->capture_default_str();
  tr->add_option("--warmup-steps", cfg.warmup_steps)->capture_default_str();
  tr->add_option("--max-steps", cfg.max_steps, "schedule length instead of epochs (0: epochs)")->capture_default_str();
  tr->add_option("--weight-decay", cfg.weight_decay)->capture_default_str();
  tr->add_option("--max-grad-norm", cfg.max_grad_norm)->capture_default_str();
  tr->add_option("--eval-every", cfg.eval_every, "validation every N steps (0: every epoch)")->capture_default_str();
  tr->add_option("--seed", cfg.seed)->capture_default_str();
  tr->add_option("--max-length", max_length, "truncate sources so examples fit (0: no limit)")->capture_default_str();
  tr->add_option("--checkpoint", cfg.checkpoint_path, "training checkpoint file (written every epoch)");
  tr->add_flag("--resume", cfg.resume, "continue from --checkpoint when it exists");

  auto* exp = app.add_subcommand("export-peft", "write a prefix as a PEFT PREFIX_TUNING adapter folder");
  exp->add_option("--model", model, "HuggingFace GPT-2 folder")->required();
  exp->add_option("--prefix", prefix, "prefix file or PEFT adapter folder")->required();
  exp->add_option("--out", out, "adapter folder to write")->required();

  std::string path;
  auto* inspect = app.add_subcommand("inspect", "what a model folder, prefix, adapter or checkpoint holds");
  inspect->add_option("path", path, "file or folder")->required();

  CLI11_PARSE(app, argc, argv);
  try {
    if (*tokenize) return cmd_tokenize(model);
    if (*score) return cmd_score(model, prefix, data, batch);
    if (*tr) return cmd_train(model, train, valid, out, pc, cfg, max_length);
    if (*exp) return cmd_export_peft(model, prefix, out);
    if (*inspect) return cmd_inspect(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
