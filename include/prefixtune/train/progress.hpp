// SPDX-License-Identifier: MIT
// ProgressBar: a one-line progress display for long work (bar, count, rate, ETA, current loss) on a terminal, or
// periodic plain lines when the stream is not a terminal (logs, CI).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

namespace prefixtune {

/// Shows progress of `total` units of work on stderr: update(done, loss) after each unit, finish() at the end.
class ProgressBar {
 public:
  explicit ProgressBar(std::int64_t total, std::string label = "", std::FILE* out = stderr)
      : total_(total),
        label_(std::move(label)),
        out_(out),
        tty_(::isatty(::fileno(out)) == 1),
        start_(std::chrono::steady_clock::now()) {}

  void update(std::int64_t done, std::optional<double> loss = std::nullopt, const std::string& extra = "") {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(static_cast<std::size_t>(width), '.');
    char line[256];
    std::snprintf(line, sizeof line, "%s[%s] %lld/%lld %.2f it/s ETA %s", label_.empty() ? "" : (label_ + " ").c_str(),
                  bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_), rate,
                  format_duration(eta).c_str());
    std::string text = line;
    if (loss) text += " loss " + std::to_string(*loss);
    if (!extra.empty()) text += " " + extra;
    if (tty_) {
      std::fprintf(out_, "\r%s\033[K", text.c_str());
      std::fflush(out_);
    } else if (done == total_ || secs - last_line_ >= 10.0 || !extra.empty()) {
      std::fprintf(out_, "%s\n", text.c_str());
      last_line_ = secs;
    }
  }
  void finish() {
    if (tty_) std::fprintf(out_, "\n");
  }

  static std::string format_duration(double s) {
    const auto t = static_cast<long long>(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
  }

 private:
  std::int64_t total_;
  std::string label_;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  double last_line_ = -1e9;
};

}  // namespace prefixtune
