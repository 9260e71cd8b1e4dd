// SPDX-License-Identifier: MIT
// The encoder-decoder (BART) side of the `prefixtune` CLI: `train` and `generate` on a HuggingFace BART folder,
// chosen by config.json's model_type. The paper's three prefixes (encoder, decoder, cross), each MLP-reparameterized;
// data as `source||target` lines or JSON lines; generation with users' three-part prefix files.
#pragma once

#include <prefixtune/prefixtune.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "request_lines.hpp"

namespace prefixtune_cli {

/// A frozen BART on Device and its tokenizer (BART's vocab.json / merges.txt, byte-level BPE as GPT-2's).
template <class Device>
struct BartModel {
  Bart<float, Device> bart;
  Gpt2Tokenizer tok;
};

template <class Device>
BartModel<Device> load_bart_model(const std::string& dir) {
  return BartModel<Device>{load_bart<float, Device>(dir), Gpt2Tokenizer::load_dir(dir)};
}

/// `prefixtune train` on a BART folder: the paper's three MLP-reparameterized prefixes, per-token mean loss
/// (label-smoothed by --label-smoothing), the best validated merged tables saved as one seq2seq prefix file.
template <class Device>
int cmd_train_bart(const TrainOptions& o) {
  check_train_flags(o, /*bart=*/true);
  PREFIXTUNE_CHECK(o.method == "mlp", "--method ", o.method,
                   ": a BART model trains the paper's three MLP-reparameterized prefixes (--method mlp) only");
  PREFIXTUNE_CHECK(o.pc.placement == Placement::Prefix && o.init == "random",
                   "a BART model's prefixes have no --infix form and start at random (--init random)");
  BartModel<Device> m = load_bart_model<Device>(o.model_dir);
  const auto train = encode_seq2seq(m.tok, read_pairs(o.train_path), o.max_length);
  const auto valid = o.valid_path.empty() ? std::vector<Seq2SeqExample>{}
                                          : encode_seq2seq(m.tok, read_pairs(o.valid_path), o.max_length);
  Rng rng(o.cfg.seed);
  auto prefix = to_device<Device>(Seq2SeqPrefix<float>::create(o.pc, m.bart.config, rng));
  std::fprintf(stderr,
               "training the three prefixes (encoder, decoder, cross) of length %lld on %zu examples, %zu for "
               "validation\n",
               static_cast<long long>(o.pc.length), train.size(), valid.size());
  detail_cli::TrainDisplay display;
  const auto r = train_bart_prefix(m.bart, prefix, train, valid, o.cfg, std::ref(display));
  display.finish(r);
  save_seq2seq_prefix(o.out, r.best_tables, m.bart.config);
  std::fprintf(stderr, "saved the %s prefixes to %s\n", valid.empty() ? "final" : "best validated", o.out.c_str());
  return 0;
}

/// Parses and checks input line n of `prefixtune generate` on a BART folder: a "source" text, encoded as
/// `<s> source </s>`; a bad line comes back with "error" set and ok = false.
template <class Device>
RequestLine parse_bart_line(const std::string& line, std::size_t n, const BartModel<Device>& m,
                            const Seq2SeqBank<float, Device>& bank, std::int64_t prefix_index) {
  RequestLine p;
  if (!parse_request_object(line, n, "a JSON object with \"source\"", p)) return p;
  try {
    PREFIXTUNE_CHECK(p.out.contains("source") && p.out["source"].is_string(), "stdin:", n,
                     ": a BART model needs a string field \"source\" (the text to encode)");
    const std::vector<TextPair> one = {TextPair{p.out["source"].get<std::string>(), "", n}};
    p.request.prompt = encode_seq2seq(m.tok, one).front().source;
    p.request.prefix = prefix_index;
    p.request.stream = static_cast<std::int64_t>(n);
    check_generation_request(m.bart, bank, p.request, n);
    p.ok = true;
  } catch (const std::exception& e) {
    p.out["error"] = e.what();
  }
  return p;
}

/// `prefixtune generate` on a BART folder: JSON lines with "source" on stdin -> the same lines with "text" (the
/// special tokens left out) and "ids" (the new tokens, without the end token), in input order.
template <class Device>
int cmd_generate_bart(const std::string& model_dir, const std::string& prefix_path, GenerateConfig cfg,
                      std::int64_t batch_size) {
  const BartModel<Device> m = load_bart_model<Device>(model_dir);
  const BartConfig& c = m.bart.config;
  Seq2SeqBank<float, Device> bank(c);
  const std::int64_t prefix_index =
      prefix_path.empty() ? kNoPrefix : bank.add(load_seq2seq_prefix<float>(prefix_path, c), prefix_path);
  cfg.validate(c.vocab_size);
  const std::vector<std::int32_t> specials = {static_cast<std::int32_t>(c.bos_token_id),
                                              static_cast<std::int32_t>(c.pad_token_id),
                                              static_cast<std::int32_t>(c.eos_token_id)};
  return serve_stdin(
      batch_size,
      [&](const std::string& line, std::size_t n) { return parse_bart_line(line, n, m, bank, prefix_index); },
      [&](std::vector<RequestLine>& lines) {
        return serve_request_lines(lines, m.bart, &m.tok, bank, cfg, specials).tokens;
      });
}

}  // namespace prefixtune_cli
