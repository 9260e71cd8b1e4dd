// SPDX-License-Identifier: MIT
// A small, dependency-free SVG line-chart writer (lines, markers, error bars, nice ticks, log x axis, legend), used
// by the ablation runner to plot scores against prefix length and training-set size.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <clocale>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace prefixtune_examples {

/// One line of a chart: points (x[i], y[i]); y_err (empty, or one value per point) draws +-y_err error bars.
struct PlotSeries {
  std::string name;
  std::vector<double> x, y, y_err;
};

/// What the chart shows and how big it is.
struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false;  // logarithmic x axis (all x > 0), e.g. training-set sizes 50..500
  int width = 640, height = 400;
};

namespace svg_detail {

/// Colorblind-safe palette (Okabe-Ito, yellow last since it is faint on white); series cycle through it.
inline const char* palette_color(std::size_t i) {
  static const char* const colors[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                       "#CC79A7", "#56B4E9", "#000000", "#F0E442"};
  return colors[i % (sizeof colors / sizeof colors[0])];
}

/// buf, printed by snprintf, with the decimal point of the current C locale (if a program changed it) as '.'.
inline std::string c_locale_number(const char* buf) {
  std::string s = buf;
  const std::string point = std::localeconv()->decimal_point;
  if (point.empty() || point == ".") return s;
  for (std::size_t at = s.find(point); at != std::string::npos; at = s.find(point, at + 1))
    s.replace(at, point.size(), ".");
  return s;
}

/// A coordinate with one decimal ("12.3"; never "-0.0").
inline std::string coord(double v) {
  char buf[64];
  v = std::round(v * 10.0) / 10.0 + 0.0;
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return c_locale_number(buf);
}

/// v with `precision` significant digits in %g style ("0.5", "20", "1e+04").
inline std::string number(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v + 0.0);
  return c_locale_number(buf);
}

/// Text escaped for XML content and attributes; control characters XML 1.0 forbids become '?'.
inline std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += (c < 0x20 && c != '\t' && c != '\n' && c != '\r') ? '?' : ch;
    }
  }
  return out;
}

/// Rough rendered width in pixels of s in a sans-serif font of size font_px (counts UTF-8 code points).
inline double text_width(const std::string& s, double font_px) {
  std::size_t n = 0;
  for (const char ch : s)
    if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80) ++n;
  return static_cast<double>(n) * font_px * 0.6;
}

/// The "nice" step (1, 2 or 5 x 10^k) nearest to raw > 0 on a log scale.
inline double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  return (f < 1.4142 ? 1.0 : f < 3.1623 ? 2.0 : f < 7.0711 ? 5.0 : 10.0) * p;
}

/// One axis tick: where (in data units: log10(x) on a log axis) and its label.
struct Tick {
  double at;
  std::string label;
};

/// Ticks at multiples of a nice step inside [lo, hi] (about `target` of them: 0.6x to 1.6x), labelled with just
/// enough digits.
inline std::vector<Tick> linear_ticks(double lo, double hi, int target) {
  const double step = nice_step((hi - lo) / target);
  const double k0 = std::ceil(lo / step - 1e-9), k1 = std::floor(hi / step + 1e-9);
  std::vector<double> values;
  if (std::isfinite(k0) && std::isfinite(k1) && k1 >= k0 && k1 - k0 <= 50) {
    for (double k = k0; k <= k1; k += 1.0) values.push_back(std::fabs(k) < 0.5 ? 0.0 : k * step);
  } else {
    values = {lo, hi};  // the step is lost in the magnitude of the values: label the ends
  }
  double max_abs = 0.0;
  for (const double v : values) max_abs = std::max(max_abs, std::fabs(v));
  const int mag = max_abs > 0.0 ? static_cast<int>(std::floor(std::log10(max_abs))) : 0;
  const int needed = mag - static_cast<int>(std::floor(std::log10(step) + 1e-9)) + 1;
  const int precision = std::clamp(std::max(needed, std::min(mag + 1, 4)), 1, 15);
  std::vector<Tick> ticks;
  for (const double v : values) ticks.push_back({v, number(v, precision)});
  return ticks;
}

/// [lo, hi] widened by `fraction` of its width on both sides; a single value is widened by 1 (or 5% of it where
/// 1 would vanish in its magnitude).
inline std::pair<double, double> padded(double lo, double hi, double fraction) {
  if (hi > lo) {
    const double pad = (hi - lo) * fraction;
    return {lo - pad, hi + pad};
  }
  double pad = 1.0;
  if (lo - pad == lo + pad) pad = std::fabs(lo) * 0.05;
  return {lo - pad, hi + pad};
}

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("svg_line_chart: " + what);
}

}  // namespace svg_detail

/// An SVG document (a complete, standalone <svg> with xmlns) of the series as lines with point markers, axes
/// with "nice" tick values (1, 2, 5 x 10^k steps; on a log axis, the distinct x values of the data as ticks),
/// axis labels, a title and a legend. Throws std::invalid_argument on bad input (no series, x/y size mismatch,
/// y_err size mismatch, a non-finite value, log_x with x <= 0). Text is XML-escaped.
/// Also rejected: a series without points, a negative y_err, width < 200 or height < 150, and labels that leave
/// the plot area too small. Each line joins its points in order of x; the legend (of the series with a name)
/// sits below the plot. The output depends only on the arguments (same input, same bytes).
inline std::string svg_line_chart(const PlotSpec& spec, const std::vector<PlotSeries>& series) {
  using namespace svg_detail;
  check(!series.empty(), "no series");
  check(spec.width >= 200 && spec.height >= 150, "the chart must be at least 200 x 150 pixels");
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  std::vector<double> distinct_x;
  for (const PlotSeries& s : series) {
    const std::string who = "series '" + s.name + "': ";
    check(!s.x.empty(), who + "no points");
    check(s.x.size() == s.y.size(), who + "x and y have different sizes");
    check(s.y_err.empty() || s.y_err.size() == s.y.size(), who + "y_err must be empty or have one value per point");
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      const double err = s.y_err.empty() ? 0.0 : s.y_err[i];
      check(std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && std::isfinite(err), who + "a value is not finite");
      check(err >= 0.0, who + "a y_err is negative");
      check(!spec.log_x || s.x[i] > 0.0, who + "x must be > 0 on a logarithmic axis");
      x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i] - err), y_hi = std::max(y_hi, s.y[i] + err);
      distinct_x.push_back(s.x[i]);
    }
  }
  check(std::isfinite(y_lo) && std::isfinite(y_hi), "y +- y_err is too large");

  // Axis ranges (x in log10 units on a log axis) and ticks.
  double y_from = 0.0, y_to = 0.0;
  std::tie(y_from, y_to) = padded(y_lo, y_hi, 0.05);
  check(std::isfinite(y_from) && std::isfinite(y_to) && y_to > y_from, "the y values are too large");
  const std::vector<Tick> y_ticks = linear_ticks(y_from, y_to, std::clamp((spec.height - 100) / 60, 3, 8));
  std::vector<Tick> x_ticks;
  double x_from = 0.0, x_to = 0.0;
  if (spec.log_x) {
    std::tie(x_from, x_to) = padded(std::log10(x_lo), std::log10(x_hi), 0.05);
    if (x_lo == x_hi) x_from = std::log10(x_lo) - 0.5, x_to = std::log10(x_lo) + 0.5;
    std::sort(distinct_x.begin(), distinct_x.end());
    distinct_x.erase(std::unique(distinct_x.begin(), distinct_x.end()), distinct_x.end());
    for (const double v : distinct_x) x_ticks.push_back({std::log10(v), number(v, 4)});
  } else {
    std::tie(x_from, x_to) = padded(x_lo, x_hi, 0.03);
    check(std::isfinite(x_from) && std::isfinite(x_to) && x_to > x_from, "the x values are too large");
    x_ticks = linear_ticks(x_from, x_to, std::clamp((spec.width - 100) / 100, 3, 10));
  }

  // Layout: title on top, y label and tick labels on the left, x tick labels, x label and legend rows below.
  const double tick_font = 12.0, label_font = 13.0, legend_font = 12.0, row_h = 18.0;
  const double width = spec.width, height = spec.height;
  double y_tick_w = 0.0;
  for (const Tick& t : y_ticks) y_tick_w = std::max(y_tick_w, text_width(t.label, tick_font));
  const double left = 10.0 + (spec.y_label.empty() ? 0.0 : 20.0) + y_tick_w + 8.0;
  const double right = 20.0 + text_width(x_ticks.back().label, tick_font) / 2.0;
  const double top = spec.title.empty() ? 16.0 : 42.0;
  const double plot_w = width - left - right;
  // Legend entries: a line sample with a marker (26 px), a gap, the name; entries packed into centered rows.
  struct Entry {
    std::size_t series;
    double w;
  };
  std::vector<std::vector<Entry>> rows;
  double row_w = 0.0;
  const double gap = 18.0;
  for (std::size_t i = 0; i < series.size(); ++i) {
    if (series[i].name.empty()) continue;  // unnamed series have no legend entry
    if (rows.empty()) rows.emplace_back();
    const double w = 32.0 + text_width(series[i].name, legend_font);
    if (!rows.back().empty() && row_w + gap + w > plot_w) rows.emplace_back(), row_w = 0.0;
    row_w += (rows.back().empty() ? 0.0 : gap) + w;
    rows.back().push_back({i, w});
  }
  const double bottom = 24.0 + (spec.x_label.empty() ? 0.0 : 20.0) + 8.0 + static_cast<double>(rows.size()) * row_h;
  const double plot_h = height - top - bottom;
  check(plot_w >= 60.0 && plot_h >= 40.0, "the labels and legend leave too little room for the plot");
  const double plot_l = left, plot_t = top, plot_r = left + plot_w, plot_b = top + plot_h;
  const auto sx = [&](double x) {
    return plot_l + ((spec.log_x ? std::log10(x) : x) - x_from) / (x_to - x_from) * plot_w;
  };
  const auto sy = [&](double y) { return plot_b - (y - y_from) / (y_to - y_from) * plot_h; };
  const auto tx = [&](double at) { return plot_l + (at - x_from) / (x_to - x_from) * plot_w; };

  std::string o;
  const std::string w_str = std::to_string(spec.width), h_str = std::to_string(spec.height);
  o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + w_str + "\" height=\"" + h_str + "\" viewBox=\"0 0 " +
       w_str + " " + h_str + "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o += "<rect x=\"0\" y=\"0\" width=\"" + w_str + "\" height=\"" + h_str + "\" fill=\"#ffffff\"/>\n";
  if (!spec.title.empty())
    o += "<text x=\"" + coord(width / 2.0) + "\" y=\"26.0\" text-anchor=\"middle\" font-size=\"15\" " +
         "font-weight=\"bold\">" + escape(spec.title) + "</text>\n";

  // Grid lines and tick labels.
  o += "<g stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (const Tick& t : y_ticks)
    o += "<line x1=\"" + coord(plot_l) + "\" y1=\"" + coord(sy(t.at)) + "\" x2=\"" + coord(plot_r) + "\" y2=\"" +
         coord(sy(t.at)) + "\"/>\n";
  for (const Tick& t : x_ticks)
    o += "<line x1=\"" + coord(tx(t.at)) + "\" y1=\"" + coord(plot_t) + "\" x2=\"" + coord(tx(t.at)) + "\" y2=\"" +
         coord(plot_b) + "\"/>\n";
  o += "</g>\n<g fill=\"#333333\" font-size=\"12\">\n";
  for (const Tick& t : y_ticks)
    o += "<text x=\"" + coord(plot_l - 6.0) + "\" y=\"" + coord(sy(t.at) + 4.0) + "\" text-anchor=\"end\">" +
         escape(t.label) + "</text>\n";
  double last_label_r = -INFINITY;  // x tick labels that would overlap the previous one are left out
  for (const Tick& t : x_ticks) {
    const double c = tx(t.at), half = text_width(t.label, tick_font) / 2.0;
    if (c - half < last_label_r + 6.0) continue;
    last_label_r = c + half;
    o += "<text x=\"" + coord(c) + "\" y=\"" + coord(plot_b + 17.0) + "\" text-anchor=\"middle\">" + escape(t.label) +
         "</text>\n";
  }
  o += "</g>\n";
  o += "<rect x=\"" + coord(plot_l) + "\" y=\"" + coord(plot_t) + "\" width=\"" + coord(plot_w) + "\" height=\"" +
       coord(plot_h) + "\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";

  // Axis labels.
  if (!spec.x_label.empty())
    o += "<text x=\"" + coord(plot_l + plot_w / 2.0) + "\" y=\"" + coord(plot_b + 38.0) +
         "\" text-anchor=\"middle\" font-size=\"13\">" + escape(spec.x_label) + "</text>\n";
  if (!spec.y_label.empty())
    o += "<text transform=\"translate(" + coord(10.0 + label_font) + "," + coord(plot_t + plot_h / 2.0) +
         ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">" + escape(spec.y_label) + "</text>\n";

  // Series: error bars, then the line through the points in order of x, then the markers.
  for (std::size_t si = 0; si < series.size(); ++si) {
    const PlotSeries& s = series[si];
    const std::string color = palette_color(si);
    std::vector<std::size_t> order(s.x.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s.x[a] < s.x[b]; });
    o += "<g stroke=\"" + color + "\" fill=\"" + color + "\">\n";
    if (!s.y_err.empty()) {
      for (const std::size_t i : order) {
        if (s.y_err[i] <= 0.0) continue;
        const std::string cx = coord(sx(s.x[i])), l = coord(sx(s.x[i]) - 4.0), r = coord(sx(s.x[i]) + 4.0);
        const std::string lo = coord(sy(s.y[i] - s.y_err[i])), hi = coord(sy(s.y[i] + s.y_err[i]));
        o += "<path d=\"M" + cx + "," + lo + "V" + hi + "M" + l + "," + lo + "H" + r + "M" + l + "," + hi + "H" + r +
             "\" fill=\"none\" stroke-width=\"1.2\"/>\n";
      }
    }
    if (order.size() > 1) {
      o += "<polyline fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"";
      for (std::size_t k = 0; k < order.size(); ++k)
        o += (k ? " " : "") + coord(sx(s.x[order[k]])) + "," + coord(sy(s.y[order[k]]));
      o += "\"/>\n";
    }
    for (const std::size_t i : order)
      o += "<circle cx=\"" + coord(sx(s.x[i])) + "\" cy=\"" + coord(sy(s.y[i])) +
           "\" r=\"3.5\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n";
    o += "</g>\n";
  }

  // Legend rows, centered under the plot.
  double row_y = plot_b + 24.0 + (spec.x_label.empty() ? 0.0 : 20.0) + row_h / 2.0;
  for (const auto& row : rows) {
    double w = 0.0;
    for (const Entry& e : row) w += (w > 0.0 ? gap : 0.0) + e.w;
    double x = plot_l + (plot_w - w) / 2.0;
    for (const Entry& e : row) {
      const std::string color = palette_color(e.series);
      o += "<line x1=\"" + coord(x) + "\" y1=\"" + coord(row_y) + "\" x2=\"" + coord(x + 26.0) + "\" y2=\"" +
           coord(row_y) + "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
      o += "<circle cx=\"" + coord(x + 13.0) + "\" cy=\"" + coord(row_y) + "\" r=\"3.5\" fill=\"" + color +
           "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n";
      o += "<text x=\"" + coord(x + 32.0) + "\" y=\"" + coord(row_y + 4.0) + "\">" + escape(series[e.series].name) +
           "</text>\n";
      x += e.w + gap;
    }
    row_y += row_h;
  }
  o += "</svg>\n";
  return o;
}

/// Writes svg_line_chart(...) to `path` (via a temporary file and rename, so a reader never sees half a file).
/// Throws std::invalid_argument as svg_line_chart does, and std::runtime_error naming path when writing fails
/// (the temporary file is then removed and path is left as it was).
inline void write_svg_line_chart(const std::string& path, const PlotSpec& spec, const std::vector<PlotSeries>& series) {
  const std::string svg = svg_line_chart(spec, series);
  static std::atomic<unsigned long long> counter{0};
  const auto stamp = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  const std::string tmp = path + ".tmp." + std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id())) +
                          "." + std::to_string(stamp) + "." + std::to_string(counter++);
  bool ok = false;
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (f) {
      f.write(svg.data(), static_cast<std::streamsize>(svg.size()));
      f.close();
      ok = !f.fail();
    }
  }
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) {
    const std::string why = ok ? ": renaming '" + tmp + "' over it failed: " + ec.message()
                               : ": cannot write the temporary file '" + tmp + "'";
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error("cannot write '" + path + "'" + why);
  }
}

}  // namespace prefixtune_examples
