// SPDX-License-Identifier: MIT
// Corpus BLEU compatible with sacreBLEU's corpus_bleu (BLEU-4, brevity penalty, the 13a tokenizer, exp smoothing),
// with any number of references per hypothesis; also sentence BLEU and the 13a tokenizer on its own.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// sacreBLEU's `tokenize` argument: "13a" (mteval-v13a, the default) or "none" (split on whitespace only).
enum class BleuTokenizer { V13a, None };

/// sacreBLEU's `smooth_method`: what a precision becomes when an order has no matching n-gram.
enum class BleuSmooth {
  Exp,    // "exp" (default, mteval-v13a's NIST smoothing): the k-th zero order gets 1 / (2^k * total)
  None,   // "none": the precision stays 0 and so does the score
  Floor,  // "floor": smooth_value / total (smooth_value defaults to 0.1)
  AddK,   // "add-k": adds smooth_value (default 1) to matches and totals of orders 2..4
};

/// The options of sacreBLEU's BLEU metric; the defaults are sacreBLEU's corpus_bleu defaults.
struct BleuOptions {
  bool lowercase = false;  ///< lowercase before tokenizing (str.lower() for most European scripts; see bleu_lowercase)
  BleuTokenizer tokenizer = BleuTokenizer::V13a;
  BleuSmooth smooth = BleuSmooth::Exp;
  double smooth_value = -1.0;    ///< for Floor / AddK; < 0 means sacreBLEU's default (0.1 / 1)
  bool effective_order = false;  ///< leave out the orders the hypotheses have no n-gram of (sentence BLEU)
};

/// A BLEU score and its sufficient statistics, as sacreBLEU's BLEUScore (max n-gram order 4).
struct BleuScore {
  double score = 0.0;                     ///< 0..100
  std::array<double, 4> precisions{};     ///< percent, after smoothing
  double bp = 0.0;                        ///< brevity penalty
  std::int64_t sys_len = 0, ref_len = 0;  ///< hypothesis tokens; sum of the closest reference lengths
  std::array<std::int64_t, 4> counts{};   ///< clipped matching n-grams per order (before any add-k)
  std::array<std::int64_t, 4> totals{};   ///< hypothesis n-grams per order (before any add-k)

  /// sacreBLEU's text form (BLEUScore.format() without signature), e.g. for sacreBLEU's README example:
  /// "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)".
  std::string to_string() const {
    const double ratio = ref_len != 0 ? static_cast<double>(sys_len) / static_cast<double>(ref_len) : 0.0;
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = %lld)", score,
                  precisions[0], precisions[1], precisions[2], precisions[3], bp, ratio,
                  static_cast<long long>(sys_len), static_cast<long long>(ref_len));
    return buf;
  }
};

namespace detail {

/// Length in bytes of the whitespace character starting at s[i] (as Python's str.split() sees it: ASCII
/// \t\n\v\f\r, \x1c-\x1f, space, and the UTF-8 encodings of U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028,
/// U+2029, U+202F, U+205F, U+3000), or 0 when it is none.
inline std::size_t bleu_space_len(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned c = b(0);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  if (c == 0xc2 && (b(1) == 0x85 || b(1) == 0xa0)) return 2;
  if (c == 0xe1 && b(1) == 0x9a && b(2) == 0x80) return 3;
  if (c == 0xe3 && b(1) == 0x80 && b(2) == 0x80) return 3;
  if (c == 0xe2 && b(1) == 0x80 && ((b(2) >= 0x80 && b(2) <= 0x8a) || b(2) == 0xa8 || b(2) == 0xa9 || b(2) == 0xaf))
    return 3;
  if (c == 0xe2 && b(1) == 0x81 && b(2) == 0x9f) return 3;
  return 0;
}

/// Python's str.split(): the non-empty runs between whitespace characters.
inline std::vector<std::string> bleu_split(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0, start = 0;
  bool in_word = false;
  while (i < s.size()) {
    const std::size_t w = bleu_space_len(s, i);
    if (w != 0) {
      if (in_word) out.emplace_back(s.substr(start, i - start));
      in_word = false;
      i += w;
    } else {
      if (!in_word) start = i;
      in_word = true;
      ++i;
    }
  }
  if (in_word) out.emplace_back(s.substr(start));
  return out;
}

/// Python's str.replace(from, to): every non-overlapping occurrence, left to right.
inline void bleu_replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

inline bool bleu_digit(char c) { return c >= '0' && c <= '9'; }

/// mteval-v13a's first class [{-~[-` -&(-+:-@/]: space and the ASCII punctuation and symbols but ' , - .
inline bool bleu_13a_symbol(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
         (c >= ':' && c <= '@') || c == '/';
}

/// One re.sub pass of a two-character pattern `(A)(B)` -> f(A, B), scanning left to right without overlaps.
template <class Match, class Emit>
std::string bleu_pair_pass(const std::string& s, Match match, Emit emit) {
  std::string out;
  out.reserve(s.size() + s.size() / 2);
  std::size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && match(s[i], s[i + 1])) {
      emit(out, s[i], s[i + 1]);
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace detail

namespace detail {

/// Python's str.lower() of one code point below U+0800, for the ranges bleu_lowercase covers (else unchanged).
inline unsigned bleu_lower_cp(unsigned c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 0x20;  // Latin-1
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177) || (c >= 0x200 && c <= 0x21f)) {
    return c % 2 == 0 ? c + 1 : c;  // Latin Extended-A and -B: capital even, small odd
  }
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c % 2 == 1 ? c + 1 : c;
  if (c == 0x178) return 0xff;
  if (c >= 0x410 && c <= 0x42f) return c + 0x20;  // Cyrillic
  if (c >= 0x400 && c <= 0x40f) return c + 0x50;
  return c;
}

}  // namespace detail

/// Python's str.lower() for ASCII, Latin-1, Latin Extended-A, U+0200-U+021F and basic Cyrillic in UTF-8 (U+0130
/// becomes "i" + U+0307 as in Python); other characters (Greek, other scripts) and invalid bytes pass unchanged.
inline std::string bleu_lowercase(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto d = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0u;
    if (c < 0x80) {
      out += static_cast<char>(detail::bleu_lower_cp(c));
    } else if (c >= 0xc2 && c <= 0xdf && (d & 0xc0) == 0x80) {  // a two-byte sequence: U+0080..U+07FF
      const unsigned cp = ((c & 0x1fu) << 6) | (d & 0x3fu), lc = detail::bleu_lower_cp(cp);
      if (cp == 0x130) {
        out += "i\xcc\x87";
      } else {
        out += static_cast<char>(0xc0 | (lc >> 6));
        out += static_cast<char>(0x80 | (lc & 0x3f));
      }
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

/// sacreBLEU's Tokenizer13a (mteval-v13a.pl): drops "<skipped>", joins "-\n", turns newlines into spaces,
/// unescapes &quot; &amp; &lt; &gt; (in that order), splits off ASCII punctuation and symbols, splits off '.'
/// and ',' unless both neighbours are digits ("1,000.5" stays), splits '-' after a digit, and joins the tokens
/// with single spaces. Works on bytes: non-ASCII bytes, valid UTF-8 or not, are never split.
inline std::string tokenize_13a(std::string line) {
  using detail::bleu_digit;
  detail::bleu_replace_all(line, "<skipped>", "");
  detail::bleu_replace_all(line, "-\n", "");
  detail::bleu_replace_all(line, "\n", " ");
  detail::bleu_replace_all(line, "&quot;", "\"");
  detail::bleu_replace_all(line, "&amp;", "&");
  detail::bleu_replace_all(line, "&lt;", "<");
  detail::bleu_replace_all(line, "&gt;", ">");
  // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 " on " line "
  std::string s;
  s.reserve(line.size() * 2 + 2);
  s += "   ";  // the leading pad is itself a space, which the class matches
  for (char c : line) {
    if (detail::bleu_13a_symbol(c)) {
      s += ' ';
      s += c;
      s += ' ';
    } else {
      s += c;
    }
  }
  s += "   ";
  // ([^0-9])([\.,]) -> "\1 \2 "
  s = detail::bleu_pair_pass(
      s, [](char a, char b) { return !bleu_digit(a) && (b == '.' || b == ','); },
      [](std::string& o, char a, char b) { o += a, o += ' ', o += b, o += ' '; });
  // ([\.,])([^0-9]) -> " \1 \2"
  s = detail::bleu_pair_pass(
      s, [](char a, char b) { return (a == '.' || a == ',') && !bleu_digit(b); },
      [](std::string& o, char a, char b) { o += ' ', o += a, o += ' ', o += b; });
  // ([0-9])(-) -> "\1 \2 "
  s = detail::bleu_pair_pass(
      s, [](char a, char b) { return bleu_digit(a) && b == '-'; },
      [](std::string& o, char a, char b) { o += a, o += ' ', o += b, o += ' '; });
  std::string out;
  for (const std::string& tok : detail::bleu_split(s)) {
    if (!out.empty()) out += ' ';
    out += tok;
  }
  return out;
}

/// The tokens BLEU counts for one segment, as sacreBLEU's preprocessing: optional lowercasing, trailing
/// whitespace removed, the tokenizer, then a split on whitespace.
inline std::vector<std::string> bleu_tokens(const std::string& segment, const BleuOptions& opts = {}) {
  std::string s = opts.lowercase ? bleu_lowercase(segment) : segment;
  std::size_t end = s.size();  // rstrip(): drop trailing whitespace characters
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t w = detail::bleu_space_len(s, i);
    if (w == 0)
      end = ++i;
    else
      i += w;
  }
  s.resize(end);
  if (opts.tokenizer == BleuTokenizer::V13a) s = tokenize_13a(std::move(s));
  return detail::bleu_split(s);
}

/// sacreBLEU's BLEU.compute_bleu: the score from corpus statistics (matches and totals per order, hypothesis
/// length, reference length) with the smoothing and effective order of opts (tokenizer and case are unused).
/// No match at any order gives 0; an order with no hypothesis n-gram (without effective order) gives 0.
inline BleuScore compute_bleu(const std::array<std::int64_t, 4>& counts, const std::array<std::int64_t, 4>& totals,
                              std::int64_t sys_len, std::int64_t ref_len, const BleuOptions& opts = {}) {
  BleuScore r;
  r.counts = counts;
  r.totals = totals;
  r.sys_len = sys_len;
  r.ref_len = ref_len;
  if (sys_len < ref_len) {
    r.bp = sys_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(sys_len)) : 0.0;
  } else {
    r.bp = 1.0;
  }
  bool any_match = false;
  for (std::int64_t c : counts) any_match = any_match || c != 0;
  if (!any_match) return r;  // score and precisions 0 (sacreBLEU #141)
  double smooth_value = opts.smooth_value;
  if (smooth_value < 0.0) smooth_value = opts.smooth == BleuSmooth::Floor ? 0.1 : 1.0;
  double smooth_mteval = 1.0;
  int eff_order = 4;
  for (int n = 1; n <= 4; ++n) {
    double correct = static_cast<double>(counts[n - 1]), total = static_cast<double>(totals[n - 1]);
    if (opts.smooth == BleuSmooth::AddK && n > 1) {
      correct += smooth_value;
      total += smooth_value;
    }
    if (total == 0.0) break;
    if (opts.effective_order) eff_order = n;
    double& p = r.precisions[n - 1];
    if (correct == 0.0) {
      if (opts.smooth == BleuSmooth::Exp) {
        smooth_mteval *= 2.0;
        p = 100.0 / (smooth_mteval * total);
      } else if (opts.smooth == BleuSmooth::Floor) {
        p = 100.0 * smooth_value / total;
      }
    } else {
      p = 100.0 * correct / total;
    }
  }
  double log_sum = 0.0;  // sacreBLEU's my_log: log(0) is floored to -9999999999
  for (int n = 0; n < eff_order; ++n) log_sum += r.precisions[n] == 0.0 ? -9999999999.0 : std::log(r.precisions[n]);
  r.score = r.bp * std::exp(log_sum / eff_order);
  return r;
}

/// Corpus BLEU as sacreBLEU's corpus_bleu(hyps, ref_streams, ...): refs_per_hyp[i] holds the references of
/// hyps[i] (any number, may differ between hypotheses; empty strings are skipped, as sacreBLEU skips missing
/// references). Matches are clipped by the maximum count of the n-gram over the references; the reference length
/// of a hypothesis is the closest reference length (ties: the shorter). Throws prefixtune::Error when the two
/// sizes differ or a hypothesis has no non-empty reference. An empty corpus scores 0.
inline BleuScore corpus_bleu(const std::vector<std::string>& hyps,
                             const std::vector<std::vector<std::string>>& refs_per_hyp, const BleuOptions& opts = {}) {
  PREFIXTUNE_CHECK(hyps.size() == refs_per_hyp.size(), "corpus_bleu: ", hyps.size(), " hypotheses but ",
                   refs_per_hyp.size(), " reference lists (refs_per_hyp[i] must hold the references of hyps[i])");
  using Counts = std::array<std::unordered_map<std::string, std::int64_t>, 4>;
  const auto ngrams = [](const std::vector<std::string>& toks) {
    Counts c;
    for (std::size_t i = 0; i < toks.size(); ++i) {
      std::string key = toks[i];
      for (std::size_t n = 0; n < 4 && i + n < toks.size(); ++n) {
        if (n > 0) key.append(1, ' ').append(toks[i + n]);  // tokens never contain spaces: keys are unambiguous
        ++c[n][key];
      }
    }
    return c;
  };
  std::array<std::int64_t, 4> counts{}, totals{};
  std::int64_t sys_len = 0, ref_len = 0;
  for (std::size_t h = 0; h < hyps.size(); ++h) {
    Counts ref_max;
    std::vector<std::int64_t> ref_lens;
    for (const std::string& ref : refs_per_hyp[h]) {
      if (ref.empty()) continue;
      const std::vector<std::string> toks = bleu_tokens(ref, opts);
      ref_lens.push_back(static_cast<std::int64_t>(toks.size()));
      Counts c = ngrams(toks);
      for (int n = 0; n < 4; ++n) {
        for (const auto& [key, count] : c[n]) {
          std::int64_t& m = ref_max[n][key];
          if (count > m) m = count;
        }
      }
    }
    PREFIXTUNE_CHECK(!ref_lens.empty(), "corpus_bleu: hypothesis ", h, " has no reference (", refs_per_hyp[h].size(),
                     " given, all empty strings)");
    const std::vector<std::string> toks = bleu_tokens(hyps[h], opts);
    const auto hyp_len = static_cast<std::int64_t>(toks.size());
    std::int64_t closest_len = -1, closest_diff = -1;
    for (std::int64_t len : ref_lens) {
      const std::int64_t diff = len > hyp_len ? len - hyp_len : hyp_len - len;
      if (closest_diff < 0 || diff < closest_diff || (diff == closest_diff && len < closest_len)) {
        closest_diff = diff;
        closest_len = len;
      }
    }
    sys_len += hyp_len;
    ref_len += closest_len;
    const Counts c = ngrams(toks);
    for (int n = 0; n < 4; ++n) {
      for (const auto& [key, count] : c[n]) {
        totals[n] += count;
        const auto it = ref_max[n].find(key);
        if (it != ref_max[n].end()) counts[n] += count < it->second ? count : it->second;
      }
    }
  }
  return compute_bleu(counts, totals, sys_len, ref_len, opts);
}

/// The options sacreBLEU's sentence_bleu uses by default: corpus defaults plus effective order.
inline BleuOptions sentence_bleu_options() {
  BleuOptions o;
  o.effective_order = true;
  return o;
}

/// BLEU of one hypothesis against its references (sacreBLEU's sentence_bleu; effective order on by default).
inline BleuScore sentence_bleu(const std::string& hyp, const std::vector<std::string>& refs,
                               const BleuOptions& opts = sentence_bleu_options()) {
  return corpus_bleu({hyp}, {refs}, opts);
}

}  // namespace prefixtune
