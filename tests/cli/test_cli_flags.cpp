// SPDX-License-Identifier: MIT
// `prefixtune train` refuses every option given on the command line that the run would ignore (another method's,
// the other model family's, or one that needs an option not given), naming it; each method still runs with the
// options it reads. Tiny random GPT-2 and BART folders with GPT-2's real vocabulary.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_util.hpp"
#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::Run;
using test::run;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kBpe = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe/";

// A 2-layer GPT-2 (C = 16) in a HuggingFace folder.
std::string make_gpt2(const TempDir& dir) {
  const std::string m = dir.file("gpt2");
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.n_positions = 64;
  Rng rng(5);
  save_gpt2(m, random_gpt2<float>(c, rng));
  fs::copy_file(kBpe + "encoder.json", m + "/vocab.json");
  fs::copy_file(kBpe + "vocab.bpe", m + "/merges.txt");
  return m;
}

// A 1+1-layer BART (d_model 16) whose vocabulary is GPT-2's with <s>, <pad>, </s> appended.
std::string make_bart(const TempDir& dir) {
  const std::string m = dir.file("bart");
  fs::create_directories(m);
  auto vocab = nlohmann::json::parse(read_text_file(kBpe + "encoder.json"));
  BartConfig c;
  c.bos_token_id = static_cast<std::int64_t>(vocab.size());
  c.pad_token_id = c.bos_token_id + 1;
  c.eos_token_id = c.decoder_start_token_id = c.bos_token_id + 2;
  vocab["<s>"] = c.bos_token_id, vocab["<pad>"] = c.pad_token_id, vocab["</s>"] = c.eos_token_id;
  c.vocab_size = c.eos_token_id + 1;
  c.d_model = 16, c.encoder_layers = 1, c.decoder_layers = 1, c.encoder_attention_heads = 2;
  c.decoder_attention_heads = 2, c.encoder_ffn_dim = 32, c.decoder_ffn_dim = 32, c.max_position_embeddings = 64;
  Rng rng(6);
  save_bart(m, random_bart<float>(c, rng, 0.3));
  write_text_file_atomic(m + "/vocab.json", vocab.dump());
  fs::copy_file(kBpe + "vocab.bpe", m + "/merges.txt");
  return m;
}

}  // namespace

TEST_CASE("prefixtune train refuses the options a run would ignore, naming each; every method runs with its own") {
  TempDir dir;
  const std::string gpt2 = make_gpt2(dir), bart = make_bart(dir), data = dir.file("data.txt");
  write_text_file_atomic(data,
                         "name : Blue Spice | Type : pub||Blue Spice is a pub .\n"
                         "name : Aromi | area : riverside||Aromi is by the riverside .\n"
                         "name : Zizzi||Zizzi serves food .\n");
  // `train` writes nothing on stdout: the output is its stderr.
  const auto train = [&](const std::string& model, const std::string& flags) {
    return run("train --model " + model + " --train " + data + " --out " + dir.file("out") + " " + flags);
  };

  SUBCASE("refused") {
    struct Refused {
      std::string model, flags;
      std::vector<std::string> says;  // the option named first, then why
    };
    const std::string words = "--init words --init-words ' table-to-text:'";
    const std::vector<Refused> cases = {
        // No MLP, no dropout: the table itself; no MLP: P embeddings.
        {gpt2, "--method direct --mid 8", {"--mid applies to the MLP methods", "--method direct has no MLP"}},
        {gpt2, "--method direct --prefix-dropout 0.1", {"--prefix-dropout applies", "--method direct has no dropout"}},
        {gpt2, "--method emb --mid 8", {"--mid applies", "--method emb has no MLP"}},
        // Fine-tuning has no prefix, whatever the value given (the default included).
        {gpt2, "--method full --prefix-length 2", {"--prefix-length applies", "--method full has no prefix"}},
        {gpt2, "--method full --mid 512", {"--mid applies", "--method full has no prefix"}},
        {gpt2, "--method full --prefix-dropout 0.1", {"--prefix-dropout applies", "--method full has no prefix"}},
        {gpt2, "--method ft-top2 --prefix-length 10", {"--prefix-length applies", "--method ft-top2 has no prefix"}},
        {gpt2, "--method ft-top2 --mid 8", {"--mid applies", "--method ft-top2 has no prefix"}},
        {gpt2, "--method ft-top2 --prefix-dropout 0", {"--prefix-dropout applies", "--method ft-top2 has no prefix"}},
        {gpt2, "--method ft-top2 --infix", {"--infix applies", "--method ft-top2 has no prefix"}},
        {gpt2, "--method full --init random", {"--init applies", "--method full has no prefix"}},
        // The MLP pre-fit: only with --init words, only for an MLP.
        {gpt2, "--prefit-steps 20", {"--prefit-steps applies to --init words", "--init is random"}},
        {gpt2, "--method mlp --prefit-lr 1e-3", {"--prefit-lr applies to --init words", "--init is random"}},
        {gpt2, "--method direct " + words + " --prefit-steps 20", {"--prefit-steps", "direct has no MLP pre-fit"}},
        {gpt2, "--method emb " + words + " --prefit-lr 1e-3", {"--prefit-lr", "--method emb has no MLP pre-fit"}},
        {gpt2, "--init-words ' table-to-text:'", {"--init-words applies to --init words only"}},
        {gpt2, words + " --prefix-length 2", {"--prefix-length 2 with --init words", "takes the length"}},
        // BART-only, GPT-2-only.
        {gpt2, "--label-smoothing 0.1", {"--label-smoothing applies to BART models only"}},
        {gpt2, "--label-smoothing 0", {"--label-smoothing applies to BART models only"}},
        {bart, "--infix", {"--infix applies", "a BART model's prefixes have no --infix form"}},
        {bart, "--prefit-steps 20", {"--prefit-steps applies", "a BART model's prefixes start at random"}},
        {bart, "--init-words ' x'", {"--init-words applies to --init words only"}},
        // Options that need another option.
        {gpt2, "--eval-every 2", {"--eval-every applies with --valid"}},
        {gpt2, "--checkpoint-every 2", {"--checkpoint-every applies with --checkpoint"}},
        {bart, "--resume", {"--resume continues from --checkpoint"}},
        {gpt2, "--max-steps 4 --epochs 3", {"--epochs applies to a schedule counted in epochs", "--max-steps 4"}},
        {gpt2, "--low-data --epochs 3", {"--epochs applies", "--low-data's 400 steps"}},
        {gpt2, "--low-data --max-steps 4 --warmup-steps 1", {"--low-data sets --max-steps and --warmup-steps"}},
        // Several at once: each named.
        {gpt2,
         "--method direct --mid 8 --prefix-dropout 0.1",
         {"2 options given do not apply", "--method direct has no MLP", "--method direct has no dropout"}},
    };
    for (const Refused& c : cases) {
      const Run r = train(c.model, c.flags);
      INFO(c.flags, "\n", r.output);
      CHECK(r.status != 0);
      for (const std::string& s : c.says) CHECK(r.output.find(s) != std::string::npos);
    }
  }

  SUBCASE("accepted: each method with the options it reads") {
    const auto words = Gpt2Tokenizer::load_dir(gpt2).encode(" table-to-text:");
    const std::string valid = "--valid " + data + " --eval-every 1";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {gpt2, "--method mlp --prefix-length 2 --mid 8 --prefix-dropout 0.1 --max-steps 2 " + valid + " --checkpoint " +
                   dir.file("ck") + " --checkpoint-every 1 --resume"},
        {gpt2, "--init words --init-words ' table-to-text:' --prefix-length " + std::to_string(words.size()) +
                   " --prefit-steps 2 --prefit-lr 1e-3 --mid 8 --max-steps 1"},
        {gpt2, "--method deep --prefix-length 2 --mid 8 --prefix-dropout 0.1 --infix --init random --max-steps 1"},
        {gpt2, "--method direct --prefix-length 2 --init uniform --infix --max-steps 1"},
        {gpt2, "--method emb --prefix-length 2 --prefix-dropout 0.1 --max-steps 1"},
        {gpt2, "--method emb-mlp --prefix-length 2 --mid 8 --prefix-dropout 0.1 --max-steps 1 " + valid},
        {gpt2, "--method full --lr 1e-3 --weight-decay 0.01 --max-grad-norm 0.5 --seed 3 --epochs 1 --batch-size 3"},
        {gpt2, "--method ft-top2 --low-data --max-steps 1 --skip-nonfinite --max-length 32"},
        {bart, "--prefix-length 2 --mid 8 --prefix-dropout 0.1 --label-smoothing 0.1 --init random --max-steps 1"},
    };
    for (const auto& [model, flags] : cases) {
      fs::remove(dir.file("ck"));
      fs::remove_all(dir.file("out"));  // full and ft-top2 write a model folder there
      const Run r = train(model, flags);
      INFO(flags, "\n", r.output);
      CHECK(r.status == 0);
      CHECK(r.output.find("saved the") != std::string::npos);
    }
  }
}
