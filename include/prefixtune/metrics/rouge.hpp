// SPDX-License-Identifier: MIT
// ROUGE-1, ROUGE-2 and ROUGE-L compatible with Google's rouge_score (the scorer behind HuggingFace evaluate's
// "rouge"): its default tokenizer, nltk's Porter stemmer, score_multi over several references, the corpus mean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// Which variant of nltk's PorterStemmer (nltk/stem/porter.py) porter_stem follows.
enum class PorterMode {
  /// PorterStemmer() — nltk's default, NLTK_EXTENSIONS, and the one rouge_score's DefaultTokenizer uses: a table of
  /// irregular forms (skies -> sky, dying -> die, news -> news, ...), words of 1-2 letters left alone, "ies"/"ied"
  /// -> "ie" in 4-letter words and -> "i" otherwise, *o also true for a 2-letter vowel-consonant stem, y -> i only
  /// after a consonant that is not the first letter, ALLI -> AL tried first (then step 2 again), BLI -> BLE in place
  /// of ABLI -> ABLE, and FULLI -> FUL, LOGI -> LOG.
  NltkExtensions,
  /// PorterStemmer(mode="ORIGINAL_ALGORITHM"): the rules of Porter (1980) as published, words of any length.
  Original,
};

/// Precision, recall and F-measure (F1) of one ROUGE variant, each in [0, 1] (rouge_score's Score).
struct RougeScore {
  double precision = 0.0;
  double recall = 0.0;
  double fmeasure = 0.0;
};

/// rouge_score's "rouge1", "rouge2" and "rougeL" (sentence-level LCS; not the newline-split "rougeLsum").
struct RougeScores {
  RougeScore rouge1, rouge2, rougeL;
};

namespace detail {

inline bool porter_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

inline bool porter_ends(std::string_view w, std::string_view suffix) {
  return w.size() >= suffix.size() && w.substr(w.size() - suffix.size()) == suffix;
}

/// Porter's consonant: not a, e, i, o, u, and not a y that follows a consonant (a y that starts the word is one).
/// Any other byte (a digit) is a consonant, as in nltk. Walks back over a run of y's instead of recursing.
inline bool porter_cons(std::string_view w, std::size_t i) {
  if (porter_vowel(w[i])) return false;
  if (w[i] != 'y') return true;
  std::size_t run = 0;  // y's right before w[i]
  while (run < i && w[i - 1 - run] == 'y') ++run;
  const std::size_t first = i - run;  // the run's first y: a consonant when it starts the word or follows a vowel
  const bool first_cons = first == 0 || porter_vowel(w[first - 1]);
  return run % 2 == 0 ? first_cons : !first_cons;
}

/// Porter's measure m of [C](VC){m}[V]: the number of vowel-consonant transitions.
inline int porter_measure(std::string_view s) {
  int m = 0;
  bool prev_cons = true, prev_vowel = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool cons = porter_vowel(c) ? false : (c == 'y' ? (i == 0 || !prev_cons) : true);
    if (cons && prev_vowel) ++m;
    prev_cons = cons;
    prev_vowel = !cons;
  }
  return m;
}

/// *v*: the stem contains a vowel.
inline bool porter_has_vowel(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!porter_cons(s, i)) return true;
  }
  return false;
}

/// *d: the word ends with a double consonant.
inline bool porter_double_cons(std::string_view w) {
  return w.size() >= 2 && w[w.size() - 1] == w[w.size() - 2] && porter_cons(w, w.size() - 1);
}

/// *o: the word ends consonant-vowel-consonant, the last not w, x or y (NLTK mode: or is a 2-letter vowel-consonant).
inline bool porter_cvc(std::string_view w, PorterMode mode) {
  const std::size_t n = w.size();
  if (n >= 3 && porter_cons(w, n - 3) && !porter_cons(w, n - 2) && porter_cons(w, n - 1) && w[n - 1] != 'w' &&
      w[n - 1] != 'x' && w[n - 1] != 'y') {
    return true;
  }
  return mode == PorterMode::NltkExtensions && n == 2 && !porter_cons(w, 0) && porter_cons(w, 1);
}

/// One suffix rule; `only` limits it to one mode: 'n' NltkExtensions, 'o' Original, 0 both.
struct PorterRule {
  std::string_view suffix, replacement;
  char only = 0;
};

/// nltk's _apply_rule_list: the first rule (of this mode) whose suffix ends the word decides alone; when
/// cond(stem, suffix) holds for the stem (the word less the suffix) the suffix becomes the replacement, else the
/// word stays as it is.
template <class Cond>
std::string porter_apply(const std::string& word, std::initializer_list<PorterRule> rules, PorterMode mode, Cond cond) {
  for (const PorterRule& r : rules) {
    if (r.only == 'n' && mode != PorterMode::NltkExtensions) continue;
    if (r.only == 'o' && mode != PorterMode::Original) continue;
    if (!porter_ends(word, r.suffix)) continue;
    std::string stem = word.substr(0, word.size() - r.suffix.size());
    if (!cond(std::string_view(stem), r.suffix)) return word;
    stem.append(r.replacement);
    return stem;
  }
  return word;
}

inline std::string porter_step1a(const std::string& w, PorterMode mode) {
  if (mode == PorterMode::NltkExtensions && w.size() == 4 && porter_ends(w, "ies")) return w.substr(0, 1) + "ie";
  return porter_apply(w, {{"sses", "ss"}, {"ies", "i"}, {"ss", "ss"}, {"s", ""}}, mode,
                      [](std::string_view, std::string_view) { return true; });
}

inline std::string porter_step1b(const std::string& w, PorterMode mode) {
  if (mode == PorterMode::NltkExtensions && porter_ends(w, "ied")) {
    return w.substr(0, w.size() - 3) + (w.size() == 4 ? "ie" : "i");
  }
  if (porter_ends(w, "eed")) {  // (m>0) EED -> EE; when m = 0 the word stays (ED is not tried)
    const std::string stem = w.substr(0, w.size() - 3);
    return porter_measure(stem) > 0 ? stem + "ee" : w;
  }
  std::string s;  // (*v*) ED -> , (*v*) ING ->
  bool removed = false;
  for (std::string_view suffix : {std::string_view("ed"), std::string_view("ing")}) {
    if (porter_ends(w, suffix)) {
      s = w.substr(0, w.size() - suffix.size());
      if (porter_has_vowel(s)) {
        removed = true;
        break;
      }
    }
  }
  if (!removed) return w;
  if (porter_ends(s, "at") || porter_ends(s, "bl") || porter_ends(s, "iz")) return s + "e";
  if (porter_double_cons(s)) {  // (*d and not (*L or *S or *Z)) -> single letter
    const char last = s.back();
    if (last != 'l' && last != 's' && last != 'z') s.pop_back();
    return s;
  }
  if (porter_measure(s) == 1 && porter_cvc(s, mode)) s += 'e';  // (m=1 and *o) -> E
  return s;
}

inline std::string porter_step1c(const std::string& w, PorterMode mode) {
  if (!porter_ends(w, "y")) return w;
  std::string stem = w.substr(0, w.size() - 1);
  const bool ok = mode == PorterMode::NltkExtensions ? stem.size() > 1 && porter_cons(stem, stem.size() - 1)
                                                     : porter_has_vowel(stem);
  if (!ok) return w;
  stem += 'i';
  return stem;
}

inline std::string porter_step2(const std::string& w, PorterMode mode) {
  if (mode == PorterMode::NltkExtensions && porter_ends(w, "alli") &&
      porter_measure(std::string_view(w).substr(0, w.size() - 4)) > 0) {
    return porter_step2(w.substr(0, w.size() - 4) + "al", mode);
  }
  return porter_apply(
      w, {{"ational", "ate"},    {"tional", "tion"},    {"enci", "ence"},    {"anci", "ance"}, {"izer", "ize"},
          {"abli", "able", 'o'}, {"bli", "ble", 'n'},   {"alli", "al"},      {"entli", "ent"}, {"eli", "e"},
          {"ousli", "ous"},      {"ization", "ize"},    {"ation", "ate"},    {"ator", "ate"},  {"alism", "al"},
          {"iveness", "ive"},    {"fulness", "ful"},    {"ousness", "ous"},  {"aliti", "al"},  {"iviti", "ive"},
          {"biliti", "ble"},     {"fulli", "ful", 'n'}, {"logi", "log", 'n'}},
      mode, [&w](std::string_view stem, std::string_view suffix) {
        // LOGI -> LOG measures the stem with its 'l' (nltk: "geo" and "theo" work like "philo")
        if (suffix == "logi") return porter_measure(std::string_view(w).substr(0, w.size() - 3)) > 0;
        return porter_measure(stem) > 0;
      });
}

inline std::string porter_step3(const std::string& w, PorterMode mode) {
  return porter_apply(
      w, {{"icate", "ic"}, {"ative", ""}, {"alize", "al"}, {"iciti", "ic"}, {"ical", "ic"}, {"ful", ""}, {"ness", ""}},
      mode, [](std::string_view stem, std::string_view) { return porter_measure(stem) > 0; });
}

inline std::string porter_step4(const std::string& w, PorterMode mode) {
  return porter_apply(w,
                      {{"al", ""},
                       {"ance", ""},
                       {"ence", ""},
                       {"er", ""},
                       {"ic", ""},
                       {"able", ""},
                       {"ible", ""},
                       {"ant", ""},
                       {"ement", ""},
                       {"ment", ""},
                       {"ent", ""},
                       {"ion", ""},
                       {"ou", ""},
                       {"ism", ""},
                       {"ate", ""},
                       {"iti", ""},
                       {"ous", ""},
                       {"ive", ""},
                       {"ize", ""}},
                      mode, [](std::string_view stem, std::string_view suffix) {
                        if (porter_measure(stem) <= 1) return false;
                        return suffix != "ion" || stem.back() == 's' || stem.back() == 't';  // (m>1 and (*S or *T))
                      });
}

inline std::string porter_step5(std::string w, PorterMode mode) {
  if (porter_ends(w, "e")) {  // 5a: (m>1) E -> ; (m=1 and not *o) E ->
    const std::string_view stem = std::string_view(w).substr(0, w.size() - 1);
    const int m = porter_measure(stem);
    if (m > 1 || (m == 1 && !porter_cvc(stem, mode))) w.pop_back();
  }
  if (porter_ends(w, "ll") && porter_measure(std::string_view(w).substr(0, w.size() - 1)) > 1) {
    w.pop_back();  // 5b: (m>1 and *d and *L) -> single letter
  }
  return w;
}

/// nltk's NLTK_EXTENSIONS table of irregular forms, or nullptr.
inline const char* porter_irregular(std::string_view w) {
  static const std::pair<const char*, const char*> kForms[] = {
      {"sky", "sky"},        {"skies", "sky"},       {"dying", "die"},        {"lying", "lie"},
      {"tying", "tie"},      {"news", "news"},       {"innings", "inning"},   {"inning", "inning"},
      {"outings", "outing"}, {"outing", "outing"},   {"cannings", "canning"}, {"canning", "canning"},
      {"howe", "howe"},      {"proceed", "proceed"}, {"exceed", "exceed"},    {"succeed", "succeed"}};
  for (const auto& [form, stem] : kForms) {
    if (w == form) return stem;
  }
  return nullptr;
}

}  // namespace detail

/// nltk's PorterStemmer(mode).stem(word) (nltk 3.8, nltk/stem/porter.py): ASCII letters are lowercased first, then
/// steps 1a, 1b, 1c, 2, 3, 4, 5a and 5b of Porter (1980) as nltk implements them in that mode (see PorterMode).
/// Meant for ASCII words such as rouge_tokenize's tokens; other bytes count as consonants and are kept.
inline std::string porter_stem(const std::string& word, PorterMode mode = PorterMode::NltkExtensions) {
  if (mode == PorterMode::NltkExtensions) {
    if (const char* stem = detail::porter_irregular(word)) return stem;  // nltk looks up the word before lowercasing
  }
  std::string w = word;
  for (char& c : w) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (mode == PorterMode::NltkExtensions && w.size() <= 2) return w;
  w = detail::porter_step1a(w, mode);
  w = detail::porter_step1b(w, mode);
  w = detail::porter_step1c(w, mode);
  w = detail::porter_step2(w, mode);
  w = detail::porter_step3(w, mode);
  w = detail::porter_step4(w, mode);
  return detail::porter_step5(std::move(w), mode);
}

/// rouge_score's default tokenizer (tokenize.tokenize): Python's str.lower(), every run of characters outside
/// [a-z0-9] becomes a separator, and with `stem` each token longer than 3 characters is replaced by its Porter stem
/// (rouge_score uses nltk's default mode, PorterMode::NltkExtensions). Works on UTF-8: non-ASCII characters
/// separate tokens, except the two whose lowercase is ASCII (U+0130 -> "i" + a combining dot, so "i" then a
/// separator; U+212A KELVIN SIGN -> "k"), as in Python.
inline std::vector<std::string> rouge_tokenize(const std::string& text, bool stem,
                                               PorterMode mode = PorterMode::NltkExtensions) {
  std::vector<std::string> tokens;
  std::string cur;
  const auto flush = [&] {
    if (cur.empty()) return;
    tokens.push_back(stem && cur.size() > 3 ? porter_stem(cur, mode) : cur);
    cur.clear();
  };
  const auto byte = [&](std::size_t i) { return i < text.size() ? static_cast<unsigned char>(text[i]) : 0u; };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned c = byte(i);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      cur += static_cast<char>(c);
    } else if (c >= 'A' && c <= 'Z') {
      cur += static_cast<char>(c - 'A' + 'a');
    } else if (c == 0xc4 && byte(i + 1) == 0xb0) {  // U+0130 LATIN CAPITAL LETTER I WITH DOT ABOVE
      cur += 'i';
      flush();
      ++i;
    } else if (c == 0xe2 && byte(i + 1) == 0x84 && byte(i + 2) == 0xaa) {  // U+212A KELVIN SIGN
      cur += 'k';
      i += 2;
    } else {
      flush();
    }
  }
  flush();
  return tokens;
}

namespace detail {

/// rouge_score's scoring.fmeasure, with Python's order of operations.
inline double rouge_f(double p, double r) { return p + r > 0.0 ? 2.0 * p * r / (p + r) : 0.0; }

inline RougeScore rouge_from_counts(std::int64_t overlap, std::int64_t hyp_total, std::int64_t ref_total) {
  RougeScore s;
  s.precision = static_cast<double>(overlap) / static_cast<double>(hyp_total > 1 ? hyp_total : 1);
  s.recall = static_cast<double>(overlap) / static_cast<double>(ref_total > 1 ? ref_total : 1);
  s.fmeasure = rouge_f(s.precision, s.recall);
  return s;
}

/// Maps each token of a and b to a small integer id (equal tokens, equal ids).
inline std::pair<std::vector<std::uint32_t>, std::vector<std::uint32_t>> rouge_ids(const std::vector<std::string>& a,
                                                                                   const std::vector<std::string>& b) {
  std::unordered_map<std::string_view, std::uint32_t> ids;
  const auto map = [&ids](const std::vector<std::string>& toks) {
    std::vector<std::uint32_t> out;
    out.reserve(toks.size());
    for (const std::string& t : toks)
      out.push_back(ids.emplace(t, static_cast<std::uint32_t>(ids.size())).first->second);
    return out;
  };
  auto ia = map(a);
  auto ib = map(b);
  return {std::move(ia), std::move(ib)};
}

inline std::unordered_map<std::string, std::int64_t> rouge_ngram_counts(const std::vector<std::uint32_t>& ids,
                                                                        std::size_t n) {
  std::unordered_map<std::string, std::int64_t> counts;
  for (std::size_t i = 0; i + n <= ids.size(); ++i) {
    std::string key(n * sizeof(std::uint32_t), '\0');
    std::memcpy(key.data(), ids.data() + i, key.size());
    ++counts[key];
  }
  return counts;
}

}  // namespace detail

/// ROUGE-N of hypothesis tokens against reference tokens (rouge_score's _score_ngrams): the n-grams they share,
/// each counted min(hypothesis count, reference count) times; precision = shared / hypothesis n-grams, recall =
/// shared / reference n-grams (each 0 when there are none), F = 2PR / (P + R) (0 when P + R = 0). n >= 1.
inline RougeScore rouge_n(const std::vector<std::string>& hyp, const std::vector<std::string>& ref, int n) {
  PREFIXTUNE_CHECK(n >= 1, "rouge_n: n must be at least 1, got ", n);
  const auto [h, r] = detail::rouge_ids(hyp, ref);
  const auto hc = detail::rouge_ngram_counts(h, static_cast<std::size_t>(n));
  const auto rc = detail::rouge_ngram_counts(r, static_cast<std::size_t>(n));
  std::int64_t overlap = 0, hyp_total = 0, ref_total = 0;
  for (const auto& [key, count] : hc) hyp_total += count;
  for (const auto& [key, count] : rc) {
    ref_total += count;
    const auto it = hc.find(key);
    if (it != hc.end()) overlap += count < it->second ? count : it->second;
  }
  return detail::rouge_from_counts(overlap, hyp_total, ref_total);
}

/// Sentence-level ROUGE-L (rouge_score's "rougeL", _score_lcs): with l the length of the longest common
/// subsequence of the two token sequences, precision = l / |hyp|, recall = l / |ref|, F as rouge_n; all 0 when
/// either side has no token.
inline RougeScore rouge_l(const std::vector<std::string>& hyp, const std::vector<std::string>& ref) {
  if (hyp.empty() || ref.empty()) return {};
  const auto [h, r] = detail::rouge_ids(hyp, ref);
  std::vector<std::size_t> prev(h.size() + 1, 0), row(h.size() + 1, 0);  // one row of the LCS table per ref token
  for (std::uint32_t rt : r) {
    for (std::size_t j = 1; j <= h.size(); ++j) {
      row[j] = rt == h[j - 1] ? prev[j - 1] + 1 : (prev[j] > row[j - 1] ? prev[j] : row[j - 1]);
    }
    prev.swap(row);
  }
  const auto lcs = static_cast<double>(prev[h.size()]);
  RougeScore s;
  s.precision = lcs / static_cast<double>(hyp.size());
  s.recall = lcs / static_cast<double>(ref.size());
  s.fmeasure = detail::rouge_f(s.precision, s.recall);
  return s;
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one hypothesis against its references, as rouge_score's
/// RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stem).score_multi(refs, hyp): each metric independently
/// takes the scores of the reference with the highest F-measure (the first one on ties). With one reference this is
/// RougeScorer.score(ref, hyp). Texts are tokenized by rouge_tokenize; an empty (or punctuation-only) hypothesis or
/// reference scores 0 against it. `stem` defaults to true (the usual setting for summarization, e.g. BART's;
/// rouge_score and evaluate default to false). Throws prefixtune::Error when refs is empty.
inline RougeScores rouge(const std::string& hyp, const std::vector<std::string>& refs, bool stem = true) {
  PREFIXTUNE_CHECK(!refs.empty(), "rouge: no reference for the hypothesis (rouge_score's score_multi needs one)");
  const std::vector<std::string> h = rouge_tokenize(hyp, stem);
  RougeScores best;
  for (std::size_t k = 0; k < refs.size(); ++k) {
    const std::vector<std::string> r = rouge_tokenize(refs[k], stem);
    const RougeScore s1 = rouge_n(h, r, 1), s2 = rouge_n(h, r, 2), sl = rouge_l(h, r);
    if (k == 0 || s1.fmeasure > best.rouge1.fmeasure) best.rouge1 = s1;
    if (k == 0 || s2.fmeasure > best.rouge2.fmeasure) best.rouge2 = s2;
    if (k == 0 || sl.fmeasure > best.rougeL.fmeasure) best.rougeL = sl;
  }
  return best;
}

/// Corpus ROUGE: the mean over the corpus of each hypothesis's rouge(hyps[i], refs_per_hyp[i], stem) — precision,
/// recall and F-measure each averaged on their own (summed in order, divided by the count), in [0, 1] (multiply by
/// 100 for the usual percentages). This is the mean of the per-example scores HuggingFace evaluate returns with
/// use_aggregator=False; its default bootstrap aggregate ("mid") is the median of resampled means, which comes
/// close to this mean but is random. Throws prefixtune::Error when the sizes differ or a hypothesis has no
/// reference; an empty corpus scores 0.
inline RougeScores corpus_rouge(const std::vector<std::string>& hyps,
                                const std::vector<std::vector<std::string>>& refs_per_hyp, bool stem = true) {
  PREFIXTUNE_CHECK(hyps.size() == refs_per_hyp.size(), "corpus_rouge: ", hyps.size(), " hypotheses but ",
                   refs_per_hyp.size(), " reference lists (refs_per_hyp[i] must hold the references of hyps[i])");
  RougeScores sum;
  const auto add = [](RougeScore& acc, const RougeScore& s) {
    acc.precision += s.precision;
    acc.recall += s.recall;
    acc.fmeasure += s.fmeasure;
  };
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    PREFIXTUNE_CHECK(!refs_per_hyp[i].empty(), "corpus_rouge: hypothesis ", i, " has no reference");
    const RougeScores s = rouge(hyps[i], refs_per_hyp[i], stem);
    add(sum.rouge1, s.rouge1);
    add(sum.rouge2, s.rouge2);
    add(sum.rougeL, s.rougeL);
  }
  if (hyps.empty()) return sum;
  const auto n = static_cast<double>(hyps.size());
  for (RougeScore* s : {&sum.rouge1, &sum.rouge2, &sum.rougeL}) {
    s->precision /= n;
    s->recall /= n;
    s->fmeasure /= n;
  }
  return sum;
}

}  // namespace prefixtune
