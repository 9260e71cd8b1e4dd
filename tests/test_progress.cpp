// SPDX-License-Identifier: MIT
// ProgressBar's rate on a clock the test moves: none on the first update nor within 1 s of it, then the units done
// since the first update over the time since then (never counting work the bar did not see).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "prefixtune/core/progress.hpp"

using prefixtune::ProgressBar;
using namespace std::chrono_literals;

namespace {

/// A bar on a temporary file (not a terminal: one line per update given an `extra` text) and a clock it reads.
struct BarOnFile {
  std::chrono::steady_clock::time_point now{};
  std::FILE* file = std::tmpfile();
  ProgressBar bar;
  explicit BarOnFile(std::int64_t total) : bar(total, "train", file, [this] { return now; }) { REQUIRE(file); }
  ~BarOnFile() { std::fclose(file); }
  BarOnFile(const BarOnFile&) = delete;
  BarOnFile& operator=(const BarOnFile&) = delete;

  /// The line written by update(done) at the current time.
  std::string update(std::int64_t done) {
    const long from = std::ftell(file);
    bar.update(done, 2.5, "valid 3.0");
    std::fflush(file);
    std::string line(static_cast<std::size_t>(std::ftell(file) - from), '\0');
    std::fseek(file, from, SEEK_SET);
    REQUIRE(std::fread(line.data(), 1, line.size(), file) == line.size());
    std::fseek(file, 0, SEEK_END);  // the next update writes after this line
    return line;
  }
};

const std::string kNoRate = " --.-- it/s ETA -:--:--";

}  // namespace

TEST_CASE("ProgressBar: no rate on the first update nor within 1 s of it, then the rate since the first update") {
  BarOnFile b(100);
  b.now += 1us;  // the first step ended just before the bar saw it (TrainDisplay makes the bar in that callback)
  std::string line = b.update(1);
  INFO(line);
  CHECK(line.find("train [") == 0);
  CHECK(line.find("1/100" + kNoRate + " loss 2.5") != std::string::npos);  // was "1/100 1000000.00 it/s ..."
  b.now += 500ms;
  line = b.update(3);
  CHECK(line.find("3/100" + kNoRate) != std::string::npos);  // 0.5 s: too short a span to trust
  b.now += 1500ms;
  line = b.update(5);  // 4 steps in 2 s since the first update; 95 left: 47.5 s
  CHECK(line.find("5/100 2.00 it/s ETA 0:00:48 loss 2.5") != std::string::npos);
  CHECK(line.find("valid 3.0\n") != std::string::npos);
}

TEST_CASE("ProgressBar: a bar made in the middle of a run (a resumed one) counts only the steps it saw") {
  BarOnFile b(1000);
  b.now += 3s;
  CHECK(b.update(500).find("500/1000" + kNoRate) != std::string::npos);
  b.now += 5s;  // 10 steps in 5 s; 490 left: 245 s
  const std::string line = b.update(510);
  INFO(line);
  CHECK(line.find("510/1000 2.00 it/s ETA 0:04:05") != std::string::npos);  // not 510 steps / 8 s
}

TEST_CASE("ProgressBar: the steady clock by default; format_duration") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    ProgressBar bar(2, "", f);
    bar.update(1);  // not a terminal: a line on the first update, then every 10 s and when done
    bar.update(2);
    bar.finish();
  }
  std::rewind(f);
  std::vector<char> buf(256, '\0');
  const std::size_t n = std::fread(buf.data(), 1, buf.size() - 1, f);
  std::fclose(f);
  const std::string text(buf.data(), n);
  CHECK(text.find("[############............] 1/2" + kNoRate + "\n") == 0);
  CHECK(text.find("\n[########################] 2/2 ") != std::string::npos);
  CHECK(ProgressBar::format_duration(3725.4) == "1:02:05");
}
