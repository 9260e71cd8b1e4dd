// SPDX-License-Identifier: MIT
// ProgressBar: a one-line progress display for long work (bar, count, rate, ETA, current loss) on a terminal, or
// periodic plain lines when the stream is not a terminal (logs, CI). The rate is the units done since the first
// update over the time since then, shown (with the ETA) only once at least 1 s has passed since the first update:
// work done before it was never timed (a bar made in the first step's callback, a resumed run), and a rate over a
// shorter span is noise. Until then the line shows "--.-- it/s ETA -:--:--".
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace prefixtune {

/// Shows progress of `total` units of work on stderr: update(done, loss) after each unit, finish() at the end.
class ProgressBar {
 public:
  /// Where the bar reads the time: std::chrono::steady_clock::now unless a test gives another.
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  /// Seconds after the first update before a rate and an ETA are shown.
  static constexpr double kRateAfterSeconds = 1.0;

  explicit ProgressBar(std::int64_t total, std::string label = "", std::FILE* out = stderr,
                       Clock clock = &std::chrono::steady_clock::now)
      : total_(total),
        label_(std::move(label)),
        out_(out),
        tty_(::isatty(::fileno(out)) == 1),
        clock_(std::move(clock)),
        start_(clock_()) {}

  void update(std::int64_t done, std::optional<double> loss = std::nullopt, const std::string& extra = "") {
    const auto now = clock_();
    const double secs = seconds(start_, now);
    if (!first_) first_.emplace(now, done);
    const double span = seconds(first_->first, now);
    const std::int64_t units = done - first_->second;
    std::string rate = "--.-- it/s ETA -:--:--";
    if (span >= kRateAfterSeconds && units > 0) {
      const double per_second = static_cast<double>(units) / span;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f it/s ETA %s", per_second,
                    format_duration(static_cast<double>(total_ - done) / per_second).c_str());
      rate = buf;
    }
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(static_cast<std::size_t>(width), '.');
    char line[256];
    std::snprintf(line, sizeof line, "%s[%s] %lld/%lld %s", label_.empty() ? "" : (label_ + " ").c_str(), bar.c_str(),
                  static_cast<long long>(done), static_cast<long long>(total_), rate.c_str());
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
  using TimePoint = std::chrono::steady_clock::time_point;
  static double seconds(TimePoint from, TimePoint to) { return std::chrono::duration<double>(to - from).count(); }

  std::int64_t total_;
  std::string label_;
  std::FILE* out_;
  bool tty_;
  Clock clock_;
  TimePoint start_;
  std::optional<std::pair<TimePoint, std::int64_t>> first_;  // the time and count of the first update
  double last_line_ = -1e9;
};

}  // namespace prefixtune
