// SPDX-License-Identifier: MIT
// serve_many_prefixes: one frozen GPT-2 serving many users' prefixes, the paper's multi-user batching (Li & Liang
// 2021, section 1). Every user's merged prefix is loaded once into a PrefixBank, which materializes its per-layer
// key/values; a batch then mixes requests of different users, each row naming its own bank entry, so one forward
// pass of the shared model serves them all and no prefix K/V is ever copied per request or per batch.
//
//   serve_many_prefixes --model DIR --prefixes DIR [--batch-size 8] [--max-new-tokens 64] [--beam 1] < requests
//
// Requests are JSON lines {"user": U, "source": S}; user U's prefix is PREFIXES/U.safetensors (a prefixtune prefix
// file) or else the PEFT adapter folder PREFIXES/U/. Each response is the request line with "text" and "ids" (the
// new tokens) added, or with "error", in request order; a summary goes to stderr.
#include <prefixtune/prefixtune.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "request_lines.hpp"

using namespace prefixtune;
namespace fs = std::filesystem;
using prefixtune_examples::BatchResult;
using prefixtune_examples::parse_request_object;
using prefixtune_examples::RequestLine;
using prefixtune_examples::serve_request_lines;

namespace {

constexpr const char* kUsage =
    "usage: serve_many_prefixes --model DIR --prefixes DIR [--batch-size N] [--max-new-tokens N] [--beam N]\n"
    "\n"
    "Serves JSON-lines requests {\"user\": U, \"source\": S} from stdin with one frozen GPT-2 and a prefix per user,\n"
    "many users in one batch. Writes each request line back, in order, with \"text\" and \"ids\" (the generated\n"
    "tokens, without the end token) or with \"error\"; prints a summary on stderr.\n"
    "\n"
    "  --model DIR           HuggingFace GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt)\n"
    "  --prefixes DIR        user U's prefix is DIR/U.safetensors (a prefixtune prefix file, as `prefixtune train`\n"
    "                        writes) or else DIR/U/ (a PEFT PREFIX_TUNING adapter folder, as `prefixtune\n"
    "                        export-peft` writes); loaded once, the first time U asks\n"
    "  --batch-size N        requests per batch, users mixed (default 8)\n"
    "  --max-new-tokens N    most tokens generated per request (default 64)\n"
    "  --beam N              beam search with N beams (default 1: greedy)\n"
    "\n"
    "The prompt is the paper's: ' ' + source + ' <|endoftext|>'; generation ends at <|endoftext|>.\n";

struct Options {
  std::string model, prefixes;
  std::int64_t batch_size = 8, max_new_tokens = 64, beam = 1;
};

std::int64_t positive_int(const std::string& flag, const char* value) {
  char* end = nullptr;
  const long long v = std::strtoll(value, &end, 10);
  PREFIXTUNE_CHECK(end != value && *end == '\0' && v >= 1, flag, " expects a positive integer, got '", value, "'");
  return v;
}

/// Parses the command line; "--help" prints the usage and exits.
Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    PREFIXTUNE_CHECK(i + 1 < argc, "option '", a, "' needs a value (see --help)");
    const char* v = argv[++i];
    if (a == "--model") {
      o.model = v;
    } else if (a == "--prefixes") {
      o.prefixes = v;
    } else if (a == "--batch-size") {
      o.batch_size = positive_int(a, v);
    } else if (a == "--max-new-tokens") {
      o.max_new_tokens = positive_int(a, v);
    } else if (a == "--beam") {
      o.beam = positive_int(a, v);
    } else {
      PREFIXTUNE_FAIL("unknown option '", a, "' (see --help)");
    }
  }
  PREFIXTUNE_CHECK(!o.model.empty() && !o.prefixes.empty(), "--model and --prefixes are required (see --help)");
  PREFIXTUNE_CHECK(fs::is_directory(o.model), "--model '", o.model, "' is not a folder");
  PREFIXTUNE_CHECK(fs::is_directory(o.prefixes), "--prefixes '", o.prefixes, "' is not a folder");
  return o;
}

/// The users' prefixes, loaded into one PrefixBank on first use; a user whose prefix cannot be loaded keeps the
/// error, so the file is looked at only once.
class Users {
 public:
  Users(const std::string& dir, const Gpt2Config& c) : dir_(dir), config_(c), bank_(c) {}

  /// The bank index of user's prefix, loading it the first time; throws an Error when it cannot be had.
  std::int64_t index(const std::string& user) {
    auto it = known_.find(user);
    if (it == known_.end()) it = known_.emplace(user, load(user)).first;
    if (!it->second.error.empty()) throw Error(it->second.error);
    return it->second.index;
  }
  const PrefixBank<float>& bank() const { return bank_; }
  std::size_t loaded() const { return static_cast<std::size_t>(bank_.size()); }

 private:
  struct Entry {
    std::int64_t index = kNoPrefix;
    std::string error;
  };
  Entry load(const std::string& user) {
    Entry e;
    try {
      PREFIXTUNE_CHECK(!user.empty() && user != "." && user != ".." && user.find('/') == std::string::npos &&
                           user.find('\\') == std::string::npos,
                       "user name '", user, "' cannot name a prefix file (empty, '.', '..' or a path)");
      const fs::path file = fs::path(dir_) / (user + ".safetensors"), folder = fs::path(dir_) / user;
      PREFIXTUNE_CHECK(fs::is_regular_file(file) || fs::is_directory(folder), "user '", user, "' has no prefix (no ",
                       file.string(), " and no adapter folder ", folder.string(), ")");
      const std::string path = fs::is_regular_file(file) ? file.string() : folder.string();
      e.index = bank_.add(load_prefix<float>(path, config_), user);
    } catch (const std::exception& ex) {
      e.error = ex.what();
    }
    return e;
  }
  std::string dir_;
  Gpt2Config config_;
  PrefixBank<float> bank_;
  std::map<std::string, Entry> known_;
};

RequestLine parse_line(const std::string& line, std::size_t n, const Gpt2<float>& model, const Gpt2Tokenizer& tok,
                       Users& users) {
  RequestLine p;
  const char* expected = "an object with string fields \"user\" and \"source\"";
  if (!parse_request_object(line, n, expected, p)) return p;
  try {
    PREFIXTUNE_CHECK(
        p.out.contains("user") && p.out["user"].is_string() && p.out.contains("source") && p.out["source"].is_string(),
        "stdin:", n, ": expected ", expected);
    p.request.prefix = users.index(p.out["user"].get<std::string>());
    p.request.prompt = encode_source_prompt(tok, p.out["source"].get<std::string>());  // the paper's prompt
    check_generation_request(model, users.bank(), p.request, n);  // "request n": n is the input line
    p.ok = true;
  } catch (const std::exception& e) {
    p.out["error"] = e.what();
  }
  return p;
}

struct Totals {
  std::int64_t requests = 0, errors = 0, batches = 0, tokens = 0;
  double generate_seconds = 0;
};

/// One generate call for the good lines of `lines` (users mixed), then every line written in order.
void serve_batch(std::vector<RequestLine>& lines, const Gpt2<float>& model, const Gpt2Tokenizer& tok,
                 const PrefixBank<float>& bank, const GenerateConfig& cfg, Totals& totals) {
  const BatchResult r = serve_request_lines(lines, model, &tok, bank, cfg);
  totals.tokens += r.tokens;
  totals.errors += r.failed;
  totals.batches += r.ran;
  totals.generate_seconds += r.seconds;
}

int run(const Options& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const Gpt2<float> model = load_gpt2<float>(o.model);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(o.model);
  GenerateConfig cfg;
  cfg.max_new_tokens = o.max_new_tokens;
  cfg.num_beams = o.beam;
  cfg.eos_id = tok.eot_id();
  cfg.validate(model.config.vocab_size);
  Users users(o.prefixes, model.config);
  Totals totals;
  std::vector<RequestLine> pending;
  std::int64_t ready = 0;
  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    pending.push_back(parse_line(line, n, model, tok, users));
    ++totals.requests;
    totals.errors += !pending.back().ok;
    ready += pending.back().ok;
    if (ready == o.batch_size) {
      serve_batch(pending, model, tok, users.bank(), cfg, totals);
      ready = 0;
    }
  }
  serve_batch(pending, model, tok, users.bank(), cfg, totals);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "serve_many_prefixes: %lld requests (%lld errors), %zu users' prefixes loaded, %lld batches, %lld new "
               "tokens in %.2f s of generation: %.1f tokens/s (%.2f s in all)\n",
               static_cast<long long>(totals.requests), static_cast<long long>(totals.errors), users.loaded(),
               static_cast<long long>(totals.batches), static_cast<long long>(totals.tokens), totals.generate_seconds,
               totals.generate_seconds > 0 ? static_cast<double>(totals.tokens) / totals.generate_seconds : 0.0, wall);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
