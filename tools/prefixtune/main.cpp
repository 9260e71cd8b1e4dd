// SPDX-License-Identifier: MIT
// The `prefixtune` command: tokenize, score, train, generate, export-peft and inspect, over HuggingFace GPT-2, BART
// and Llama-family (llama, mistral, qwen2, qwen3) folders, E2E / JSON-lines / pre-tokenized data and prefix files
// (ours or PEFT adapter folders).
#include <CLI/CLI.hpp>
#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bart_commands.hpp"
#include "commands.hpp"
#include "cuda_commands.hpp"

using namespace prefixtune;
using namespace prefixtune_cli;
namespace fs = std::filesystem;

namespace {

int cmd_tokenize(const std::string& model_dir) {
  PREFIXTUNE_CHECK(!is_llama_folder(model_dir), "tokenize: prefixtune does not read the tokenizers of Llama-family ",
                   "folders (", model_dir, ") yet");
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

int cmd_export_peft(const std::string& model_dir, const std::string& prefix_path, const std::string& out) {
  const KvShape s = decoder_kv_shape(model_dir);
  export_peft(out, load_prefix<float>(prefix_path, s), s, fs::absolute(model_dir).string());
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
  if (fs::is_directory(path) && is_llama_folder(path)) {
    const LlamaConfig c = load_llama_config(path);
    std::cout << c.model_type << " folder " << path << ": " << c.num_hidden_layers << " layers, hidden_size "
              << c.hidden_size << ", " << c.num_attention_heads << " heads, " << c.num_key_value_heads
              << " K/V heads of head_dim " << c.head_dim << ", intermediate_size " << c.intermediate_size
              << ", vocab_size " << c.vocab_size << ", " << (c.tie_word_embeddings ? "tied" : "untied") << " head\n";
    const SafeTensorsCheckpoint ck = SafeTensorsCheckpoint::open(path);
    std::cout << "weights " << ck.path() << ": " << ck.names().size() << " tensors\n";
    for (const auto& name : ck.names()) {
      const TensorInfo& info = ck.file_of(name).info(name);
      std::cout << "  " << name << " " << dtype_name(info.dtype) << " [";
      for (std::size_t i = 0; i < info.shape.size(); ++i) std::cout << (i ? ", " : "") << info.shape[i];
      std::cout << "]\n";
    }
    return 0;
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
  CLI::App app{"prefixtune: prefix-tuning of frozen GPT-2, BART, Llama, Mistral and Qwen models (Li & Liang 2021)"};
  app.require_subcommand(1);
  std::string model, prefix, data, out, device = "cpu";
  std::int64_t batch = 8;
  const auto device_option = [&](CLI::App* cmd) {
    cmd->add_option("--device", device, "cpu, or cuda (an NVIDIA GPU; needs a build with PREFIXTUNE_ENABLE_CUDA)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
  };

  auto* tokenize = app.add_subcommand("tokenize", "JSON lines with \"text\" on stdin -> the same lines with \"ids\"");
  tokenize->add_option("--model", model, "HuggingFace GPT-2 folder (vocab.json + merges.txt)")->required();

  auto* score = app.add_subcommand("score", "summed target NLL (natural log) and token count per example");
  score->add_option("--model", model, "HuggingFace GPT-2 or Llama-family (llama, mistral, qwen2, qwen3) folder")
      ->required();
  score->add_option("--prefix", prefix, "prefix file or PEFT adapter folder (none: the bare model)");
  score
      ->add_option("--data", data,
                   "E2E 'source||target' lines, JSON lines {\"source\", \"target\"}, or pre-tokenized JSON lines "
                   "{\"input_ids\": [...], \"labels\": [...]} (labels optional, -100 ignored; HF's convention)")
      ->required();
  score->add_option("--batch-size", batch, "examples per forward pass")->check(CLI::PositiveNumber);
  std::string instruction;
  const char* instruction_help = "text put before every source (the paper's discrete-prompting baseline)";
  score->add_option("--instruction", instruction, instruction_help);
  device_option(score);

  TrainOptions topt;
  PrefixConfig& pc = topt.pc;
  TrainConfig& cfg = topt.cfg;
  bool low_data = false;
  auto* tr = app.add_subcommand("train",
                                "prefix-tune a frozen model (or a variant / baseline, --method); saves the best "
                                "validated (merged) prefix");
  tr->add_option("--model", topt.model_dir,
                 "HuggingFace GPT-2 or Llama-family (llama, mistral, qwen2, qwen3) folder, or BART folder "
                 "(model_type \"bart\" in config.json: the paper's three prefixes, encoder / decoder / cross, saved "
                 "as one seq2seq prefix file)")
      ->required();
  std::string arch = "auto";
  tr->add_option("--arch", arch,
                 "auto (config.json's model_type), gpt2 (decoder-only: [prefix, X, Y]) or bart (encoder-decoder: the "
                 "paper's three prefixes, [prefix, X, prefix', Y]); a named one must match config.json")
      ->check(CLI::IsMember({"auto", "gpt2", "bart"}))
      ->capture_default_str();
  tr->add_option("--train", topt.train_path,
                 "training data (E2E lines, JSON lines, or pre-tokenized {\"input_ids\", \"labels\"} lines)")
      ->required();
  tr->add_option("--valid", topt.valid_path, "validation data");
  tr->add_option("--out", topt.out, "where the merged prefix goes (safetensors); a model folder for full, ft-top2")
      ->required();
  tr->add_option("--method", topt.method,
                 "mlp (the paper: MLP-reparameterized prefix), deep (a second MLP layer), direct (the table itself), "
                 "emb / emb-mlp (embedding-only: P input embeddings, optionally through an MLP), full / ft-top2 "
                 "(fine-tune every weight / the top 2 blocks)")
      ->check(CLI::IsMember({"mlp", "deep", "direct", "emb", "emb-mlp", "full", "ft-top2"}))
      ->capture_default_str();
  tr->add_flag_function(
      "--infix", [&](std::int64_t) { pc.placement = Placement::Infix; },
      "place the trained vectors between source and target ([X, infix, Y]) instead of before everything");
  tr->add_option("--init", topt.init,
                 "random (N(0,1) table / PyTorch MLP init), uniform (U(0,1), direct only), or words (the K/V of "
                 "--init-words; an MLP is pre-fit to them by MSE)")
      ->check(CLI::IsMember({"random", "uniform", "words"}))
      ->capture_default_str();
  tr->add_option("--init-words", topt.init_words, "the text for --init words, e.g. ' table-to-text:' (P = its tokens)");
  tr->add_option("--prefit-steps", topt.prefit_steps, "Adam steps of the MSE pre-fit (--init words with mlp, deep)")
      ->capture_default_str();
  tr->add_option("--prefit-lr", topt.prefit_lr, "learning rate of the MSE pre-fit (--init words with mlp, deep)")
      ->capture_default_str();
  tr->add_flag(
      "--low-data", low_data,
      "the paper's low-data schedule: --max-steps 400 with --warmup-steps 100 (a quarter of the steps) unless given");
  tr->add_option("--prefix-length", pc.length,
                 "P, prefix slots per layer (--init words: the words' token count; not for full, ft-top2)")
      ->capture_default_str();
  tr->add_option("--mid", pc.mid, "width of the reparameterization MLP (mlp, deep, emb-mlp, BART)")
      ->capture_default_str();
  tr->add_option("--prefix-dropout", pc.dropout,
                 "dropout on the MLP output, or on emb's embeddings (mlp, deep, emb, emb-mlp, BART)")
      ->capture_default_str();
  tr->add_option("--epochs", cfg.epochs)->capture_default_str();
  tr->add_option("--batch-size", cfg.batch_size)->capture_default_str();
  tr->add_option("--lr", cfg.lr, "AdamW learning rate")->capture_default_str();
  auto* warmup_opt = tr->add_option("--warmup-steps", cfg.warmup_steps)->capture_default_str();
  auto* max_steps_opt = tr->add_option("--max-steps", cfg.max_steps, "schedule length instead of epochs (0: epochs)")
                            ->capture_default_str();
  tr->add_option("--weight-decay", cfg.weight_decay)->capture_default_str();
  tr->add_option("--max-grad-norm", cfg.max_grad_norm)->capture_default_str();
  tr->add_option("--label-smoothing", cfg.label_smoothing, "label smoothing epsilon of the training loss (BART only)")
      ->check(CLI::Range(0.0, 0.999))
      ->capture_default_str();
  tr->add_option("--eval-every", cfg.eval_every, "validation every N steps (0: every epoch; with --valid)")
      ->capture_default_str();
  tr->add_option("--seed", cfg.seed)->capture_default_str();
  tr->add_option("--max-length", topt.max_length, "truncate sources so examples fit (0: no limit)")
      ->capture_default_str();
  tr->add_option("--checkpoint", cfg.checkpoint_path,
                 "training checkpoint file (replaced atomically: a killed run leaves the previous one whole)");
  tr->add_option("--checkpoint-every", cfg.checkpoint_every,
                 "steps between checkpoints (0: every epoch; with --checkpoint)")
      ->capture_default_str();
  tr->add_flag("--resume", cfg.resume, "continue from --checkpoint when it exists");
  tr->add_flag_function(
      "--skip-nonfinite", [&](std::int64_t) { cfg.on_nonfinite = NonFinitePolicy::SkipStep; },
      "skip a step whose loss or gradient is NaN/Inf (default: stop, naming the step and the tensor)");
  device_option(tr);

  GenerateConfig gen_cfg;
  std::int64_t gen_batch = 8;
  auto* gen = app.add_subcommand(
      "generate",
      "JSON lines with \"source\" (a table, decoded from the paper's prompt ' ' + source + ' <|endoftext|>') or "
      "\"prompt\" (raw text, <|endoftext|> parsed) or \"input_ids\" (token ids, used as given) on stdin -> the same "
      "lines with \"ids\" (the new tokens, without the end token) and \"text\" (where the folder's tokenizer is "
      "read), in input order; a bad line gets an \"error\" field instead (\"request N\" in a message is input "
      "line N) and the others are still served");
  gen->add_option("--model", model,
                  "HuggingFace GPT-2 or Llama-family folder (Llama, Mistral, Qwen2, Qwen3: lines with \"input_ids\"), "
                  "or BART folder (lines need \"source\", encoded as <s> source </s>; the text leaves out <s>, </s>, "
                  "<pad>)")
      ->required();
  gen->add_option("--prefix", prefix, "prefix file or PEFT adapter folder (none: the bare model)");
  auto* greedy = gen->add_flag("--greedy", "greedy decoding (the default)");
  auto* beam = gen->add_option("--beam", gen_cfg.num_beams, "beam search with N beams")->check(CLI::PositiveNumber);
  auto* temperature =
      gen->add_option("--temperature", gen_cfg.temperature, "sampling: divide logits by T")->check(CLI::PositiveNumber);
  auto* top_k = gen->add_option("--top-k", gen_cfg.top_k, "sampling: keep the K most likely tokens (0: all)")
                    ->check(CLI::NonNegativeNumber);
  auto* top_p = gen->add_option("--top-p", gen_cfg.top_p, "sampling: keep the most likely tokens up to mass P")
                    ->check(CLI::Range(0.0, 1.0));
  auto* seed = gen->add_option(
      "--seed", gen_cfg.seed,
      "sampling seed (line n samples from stream n: the same input and seed give the same output at any --batch-size)");
  for (CLI::Option* s : {temperature, top_k, top_p, seed}) {
    s->excludes(greedy);
    s->excludes(beam);
  }
  beam->excludes(greedy);
  auto* max_new = gen->add_option("--max-new-tokens", gen_cfg.max_new_tokens,
                                  "most tokens generated per line (required, except with --xsum)")
                      ->check(CLI::PositiveNumber);
  bool xsum = false;
  auto* xsum_flag = gen->add_flag("--xsum", xsum,
                                  "BART: the paper's XSUM decoding (beam 6, HF max_length 62 / min_length 11 = 61 / "
                                  "10 new tokens, no repeated 3-gram, length penalty 1, early stopping); later "
                                  "decoding options override it");
  xsum_flag->excludes(greedy);
  for (CLI::Option* s : {temperature, top_k, top_p, seed}) s->excludes(xsum_flag);
  auto* no_repeat = gen->add_option("--no-repeat-ngram", gen_cfg.no_repeat_ngram_size,
                                    "never repeat an n-gram of the decoded sequence (0: off)")
                        ->check(CLI::NonNegativeNumber);
  auto* min_new =
      gen->add_option("--min-new-tokens", gen_cfg.min_new_tokens, "the end token is banned before this many")
          ->capture_default_str();
  gen->add_option("--ban-ids", gen_cfg.ban_ids, "token ids never generated, comma-separated (the paper: 198,628)")
      ->delimiter(',');
  auto* length_penalty = gen->add_option("--length-penalty", gen_cfg.length_penalty, "beam score = log p / length^X")
                             ->capture_default_str();
  auto* eos = gen->add_option("--eos-id", gen_cfg.eos_id,
                              "generation of a line ends at this token (default: 50256; BART: its eos_token_id; the "
                              "Llama family: every id of config.json's / generation_config.json's eos_token_id)");
  gen->add_option("--instruction", instruction, instruction_help);
  gen->add_option("--batch-size", gen_batch, "lines per generate call (one batch)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  device_option(gen);

  auto* exp = app.add_subcommand("export-peft", "write a prefix as a PEFT PREFIX_TUNING adapter folder");
  exp->add_option("--model", model, "HuggingFace GPT-2 or Llama-family folder")->required();
  exp->add_option("--prefix", prefix, "prefix file or PEFT adapter folder")->required();
  exp->add_option("--out", out, "adapter folder to write")->required();

  std::string path;
  auto* inspect = app.add_subcommand("inspect", "what a model folder, prefix, adapter or checkpoint holds");
  inspect->add_option("path", path, "file or folder")->required();

  CLI11_PARSE(app, argc, argv);
  try {
    if (*tokenize) return cmd_tokenize(model);
    const bool cuda = device == "cuda";
    if (*score)
      return cuda ? cmd_score_cuda(model, prefix, data, batch, instruction)
                  : cmd_score<Cpu>(model, prefix, data, batch, instruction);
    if (*tr) {
      for (const CLI::Option* opt : tr->get_options())  // what was given, whatever its value
        if (opt->count() > 0)
          for (const std::string& name : opt->get_lnames()) topt.given.insert("--" + name);
      if (low_data) {
        if (max_steps_opt->count() == 0) cfg.max_steps = 400;
        if (warmup_opt->count() == 0) cfg.warmup_steps = cfg.max_steps / 4;  // 100 of 400
      }
      const std::string type = model_type_of(topt.model_dir);
      PREFIXTUNE_CHECK(arch == "auto" || arch == (type == "bart" ? "bart" : "gpt2"), "train: --arch ", arch, " but ",
                       topt.model_dir, "/config.json says model_type '", type, "'");
      if (type == "bart") return cuda ? cmd_train_bart_cuda(topt) : cmd_train_bart<Cpu>(topt);
      return cuda ? cmd_train_cuda(topt) : cmd_train<Cpu>(topt);
    }
    if (*gen) {
      gen_cfg.sample = temperature->count() + top_k->count() + top_p->count() + seed->count() > 0;
      PREFIXTUNE_CHECK(max_new->count() > 0 || xsum, "generate: --max-new-tokens is required (or --xsum)");
      if (model_type_of(model) == "bart") {
        PREFIXTUNE_CHECK(instruction.empty(), "generate: --instruction applies to GPT-2 models only");
        const BartConfig bc = load_bart_config(model);
        GenerateConfig b = xsum ? bart_xsum_config(bc) : bart_generate_config(bc);
        if (eos->count() == 0) gen_cfg.eos_id = b.eos_id;
        if (xsum) {  // the preset, then whatever was given explicitly
          if (beam->count() == 0) gen_cfg.num_beams = b.num_beams;
          if (max_new->count() == 0) gen_cfg.max_new_tokens = b.max_new_tokens;
          if (min_new->count() == 0) gen_cfg.min_new_tokens = b.min_new_tokens;
          if (no_repeat->count() == 0) gen_cfg.no_repeat_ngram_size = b.no_repeat_ngram_size;
          if (length_penalty->count() == 0) gen_cfg.length_penalty = b.length_penalty;
          gen_cfg.early_stopping = b.early_stopping;
        }
        gen_cfg.forced_bos_id = b.forced_bos_id;
        return cuda ? cmd_generate_bart_cuda(model, prefix, gen_cfg, gen_batch)
                    : cmd_generate_bart<Cpu>(model, prefix, gen_cfg, gen_batch);
      }
      PREFIXTUNE_CHECK(!xsum, "generate: --xsum is BART's summarization preset; ", model, " is not a BART folder");
      if (is_llama_folder(model) && eos->count() == 0) {  // the model's end ids (Llama 3 lists several)
        const LlamaConfig lc = load_llama_config(model);
        PREFIXTUNE_CHECK(!lc.eos_token_ids.empty(), "generate: ", model,
                         " names no eos_token_id (config.json, generation_config.json); give --eos-id");
        gen_cfg.eos_id = lc.eos_token_ids[0];
        gen_cfg.more_eos_ids.assign(lc.eos_token_ids.begin() + 1, lc.eos_token_ids.end());
      }
      return cuda ? cmd_generate_cuda(model, prefix, gen_cfg, gen_batch, instruction)
                  : cmd_generate<Cpu>(model, prefix, gen_cfg, gen_batch, instruction);
    }
    if (*exp) return cmd_export_peft(model, prefix, out);
    if (*inspect) return cmd_inspect(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
