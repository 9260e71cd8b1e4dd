// SPDX-License-Identifier: MIT
// Greedy generation against the PyTorch reference (tests/reference/gpt2_prefix_reference.py, `greedy.*` tensors):
// one batch mixing rows with the reference encoder's merged prefix and rows without, and each row alone.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "models/parity_util.hpp"
#include "prefixtune/prefixtune.hpp"

using namespace prefixtune;
using test::reference_encoder;

extern std::string g_reference_dir;  // test_models.cpp: --reference=DIR

namespace {

// Below this top-2 logit gap (float64 reference) a float32 run may legitimately pick the other token, so rows are
// compared only up to the first such step.
constexpr double kTieMargin = 1e-4;

std::vector<std::int32_t> load_ids(const SafeTensorsFile& f, const std::string& name) {
  std::vector<std::int32_t> out;
  for (std::int64_t v : f.load<std::int64_t>(name).to_vector()) out.push_back(static_cast<std::int32_t>(v));
  return out;
}

std::string to_string(const std::vector<std::int32_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "]";
}

// What the reference generated for one request.
struct Expected {
  std::string what;  // e.g. "prefix, prompt 1"
  std::vector<std::int32_t> ids;
  bool ended = false;
  std::vector<double> margin;  // top-2 logit gap per step taken (the end-token step included)
};

// Checks a generation against the reference up to the first tie-near step (margin < kTieMargin), if any.
void check_row(const Generation& got, const Expected& ref) {
  std::size_t steps = ref.margin.size();
  for (std::size_t s = 0; s < ref.margin.size(); ++s)
    if (ref.margin[s] < kTieMargin) {
      steps = s;
      MESSAGE(ref.what, ": reference top-2 margin ", ref.margin[s], " < ", kTieMargin, " at step ", s,
              "; only the steps before it are compared");
      break;
    }
  const std::string rows = ref.what + ": got " + to_string(got.ids) + (got.ended ? " + eos" : "") + ", reference " +
                           to_string(ref.ids) + (ref.ended ? " + eos" : "");
  INFO(rows);
  const std::size_t n = std::min(steps, ref.ids.size());  // tokens before the first tie-near step
  const std::vector<std::int32_t> got_head(got.ids.begin(), got.ids.begin() + std::min(n, got.ids.size()));
  CHECK(got_head == std::vector<std::int32_t>(ref.ids.begin(), ref.ids.begin() + n));
  if (steps == ref.margin.size()) {  // no tie-near step: the whole row, its length and its end must agree
    CHECK(got.ids == ref.ids);
    CHECK(got.ended == ref.ended);
  }
}

}  // namespace

TEST_CASE("PyTorch parity: greedy generation with and without the merged prefix") {
  const std::string dir = g_reference_dir;
  REQUIRE_MESSAGE(!dir.empty(), "run with --reference=DIR");
  const auto f = SafeTensorsFile::open((std::filesystem::path(dir) / "reference.safetensors").string());
  REQUIRE_MESSAGE(f.has("greedy.config"), dir, " predates the greedy reference: regenerate it");
  const auto m = load_gpt2<float>(dir + "/model");

  // The served prefix: the reference encoder merged into its table, real tokens from position P.
  const DirectPrefix<float> merged = merge(reference_encoder(f, m.config));
  const auto table_ref = f.load<double>("prefix_table_from_encoder").to_vector();
  const auto table = merged.table.value().to_vector();
  REQUIRE(table.size() == table_ref.size());
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < table.size(); ++i) {
    err = std::max(err, std::abs(table[i] - table_ref[i]));
    scale = std::max(scale, std::abs(table_ref[i]));
  }
  CHECK(err / scale < 1e-5);
  PrefixBank<float> bank(m.config);
  const std::int64_t pid = bank.add(merged, "reference");
  CHECK(bank.position_offset(pid) == merged.length());

  const auto gc = f.load<std::int64_t>("greedy.config").to_vector();  // [prompts, max_new_tokens, eos_id]
  REQUIRE(gc.size() == 3);
  GenerateConfig cfg;
  cfg.max_new_tokens = gc[1];
  cfg.eos_id = static_cast<std::int32_t>(gc[2]);

  // Rows alternate between no prefix and the prefix, with the prompt lengths in opposite orders:
  // (none, 0), (prefix, n-1), (none, 1), (prefix, n-2), ...
  std::vector<GenerationRequest> requests;
  std::vector<Expected> expected;
  for (std::int64_t k = 0; k < 2 * gc[0]; ++k) {
    const bool with_prefix = k % 2 == 1;
    const std::int64_t i = with_prefix ? gc[0] - 1 - k / 2 : k / 2;
    const std::string tag = with_prefix ? "prefix" : "noprefix", n = std::to_string(i);
    requests.push_back({load_ids(f, "greedy.prompt" + n), with_prefix ? pid : kNoPrefix});
    Expected e;
    e.what = tag + ", prompt " + n;
    e.ids = load_ids(f, "greedy." + tag + ".ids" + n);
    e.ended = f.load<std::int64_t>("greedy." + tag + ".ended" + n).to_vector().at(0) != 0;
    e.margin = f.load<double>("greedy." + tag + ".margin" + n).to_vector();
    expected.push_back(std::move(e));
  }
  double smallest = 1e300;
  for (const auto& e : expected)
    for (double g : e.margin) smallest = std::min(smallest, g);
  MESSAGE("smallest reference top-2 margin ", smallest);

  const auto batched = generate(m, bank, requests, cfg);
  REQUIRE(batched.size() == requests.size());
  for (std::size_t r = 0; r < requests.size(); ++r) {
    CAPTURE(r);
    check_row(batched[r], expected[r]);
    // Each request alone gives what its row gave in the batch.
    const auto alone = generate(m, bank, {requests[r]}, cfg);
    REQUIRE(alone.size() == 1);
    CHECK(alone[0].ids == batched[r].ids);
    CHECK(alone[0].ended == batched[r].ended);
    CHECK(alone[0].score == doctest::Approx(batched[r].score).epsilon(1e-5));
  }
}
