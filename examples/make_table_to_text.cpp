// SPDX-License-Identifier: MIT
// make_table_to_text: writes a seeded synthetic restaurant table-to-text data set (train/valid/test) in the
// paper's E2E format "name : X | Type : pub | ...||Target text ." for the prefix-tuning quickstart.
//
// Tables have the E2E attributes in E2E's order (name, Type, food, price, customer rating, area, family friendly,
// near), always a name and 3-8 attributes in all. Targets come from a grammar of sentence forms, phrase synonyms
// and one- or two-sentence realizations that mention every attribute, tokenized like the E2E references (" , ",
// " ."). Train has one reference per table; valid and test have 3 different realizations per table, written as
// 3 consecutive lines with the same source.
//
// Held-out rule (nothing in valid or test is a copy of a train table):
//  - names: train tables use only the 40 names of kTrainNames, valid only the 10 of kValidNames, test only the 10
//    of kTestNames, so every valid/test name is unseen in train (and valid and test share none);
//  - (food, area) pairs: the 8 pairs of kHeldOutPairs never occur in a train table; half of the valid and test
//    tables (chosen by the RNG) are built around one of them.
//
// The RNG is std::mt19937_64 (fully specified by the standard) with hand-written integer sampling and shuffling,
// so the output is byte-identical with every standard library. Each split has its own stream derived from --seed,
// so changing --train leaves valid and test unchanged.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------------- random numbers

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : gen_(seed) {}

  /// Uniform in [0, n), n >= 1: rejection of the 2^64 mod n lowest values leaves a multiple of n outcomes.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t reject_under = (0 - n) % n;
    for (;;) {
      const std::uint64_t x = gen_();
      if (x >= reject_under) return x % n;
    }
  }
  bool chance(std::uint64_t num, std::uint64_t den) { return below(den) < num; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(below(v.size()))];
  }
  template <class T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<std::size_t>(below(i))]);
  }

 private:
  std::mt19937_64 gen_;
};

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// ------------------------------------------------------------------------------------------------------- value sets

using Strings = std::vector<std::string>;

const Strings kTrainNames = {
    "The Golden Goose", "The Copper Kettle", "Blue Lantern",       "The Silver Spoon", "Green Olive",
    "The Red Fox",      "Maple Leaf",        "The Old Anchor",     "Sunflower",        "The Crooked Spire",
    "Hazel Tree",       "The Brass Monkey",  "The Wandering Pig",  "Juniper",          "The Black Swan",
    "Orchard House",    "The Jolly Miller",  "Cinnamon",           "The White Hart",   "The Lemon Tree",
    "Bluebell",         "The Iron Gate",     "Willow Bank",        "The Grey Heron",   "Pepper Pot",
    "The Cosy Corner",  "Honeycomb",         "The Fat Badger",     "Rosemary",         "The Stone Bridge",
    "Saffron",          "The Wild Boar",     "Starlight",          "The Green Man",    "Copperfield",
    "The Tin Drum",     "Oak and Ivy",       "The Salted Pretzel", "Nutmeg",           "The Velvet Fig"};
const Strings kValidNames = {"The Painted Door", "Clover",    "The Quiet Owl",   "Amber Room",
                             "The Twisted Oak",  "Tangerine", "The Hungry Hare", "Driftwood",
                             "The Paper Moon",   "Bramble"};
const Strings kTestNames = {"The Dancing Bear",   "Marigold",     "The Rusty Nail", "Moonstone",
                            "The Singing Kettle", "Blackberry",   "The Lost Sheep", "Thistle",
                            "The Purple Plum",    "Lavender Hill"};
const Strings kTypeValues = {"restaurant", "pub", "coffee shop"};
const Strings kFoodValues = {"English",  "French",    "Italian", "Chinese", "Indian",
                             "Japanese", "Fast food", "Mexican", "Thai",    "Greek"};
const Strings kPriceValues = {"cheap",        "moderate",           "high", "less than 20 pounds",
                              "20-25 pounds", "more than 30 pounds"};
const Strings kRatingValues = {"low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"};
const Strings kAreaValues = {"city centre", "riverside", "old town", "harbour", "university district"};
const Strings kFamilyValues = {"yes", "no"};
const Strings kNearValues = {"Crown Hotel",       "Victoria Station", "Kings Market",  "St Mary's Church",
                             "Elm Street Cinema", "Central Library",  "Castle Museum", "Queens Park",
                             "Burger Palace",     "Rose Theatre",     "Market Square", "Northgate Mall",
                             "Westfield Stadium", "Grand Hotel",      "Bell Tower",    "Sea Life Centre"};
const std::vector<std::pair<std::string, std::string>> kHeldOutPairs = {{"Italian", "riverside"},
                                                                        {"Chinese", "old town"},
                                                                        {"French", "harbour"},
                                                                        {"Indian", "city centre"},
                                                                        {"Japanese", "university district"},
                                                                        {"Mexican", "riverside"},
                                                                        {"English", "harbour"},
                                                                        {"Thai", "city centre"}};

bool held_out(const std::string& food, const std::string& area) {
  for (const auto& p : kHeldOutPairs)
    if (p.first == food && p.second == area) return true;
  return false;
}

// ------------------------------------------------------------------------------------------------------------ tables

enum Attr { kType, kFood, kPrice, kRating, kArea, kFamily, kNear, kNumAttrs };
const std::array<const char*, kNumAttrs> kKeys = {"Type", "food", "price", "customer rating", "area", "family friendly",
                                                  "near"};
const std::array<const Strings*, kNumAttrs> kValues = {&kTypeValues, &kFoodValues,   &kPriceValues, &kRatingValues,
                                                       &kAreaValues, &kFamilyValues, &kNearValues};

struct Table {
  std::string name;
  std::array<std::string, kNumAttrs> v;  // empty: attribute absent
  bool has(int a) const { return !v[static_cast<std::size_t>(a)].empty(); }
  const std::string& at(int a) const { return v[static_cast<std::size_t>(a)]; }
};

std::string source_of(const Table& t) {
  std::string s = "name : " + t.name;
  for (int a = 0; a < kNumAttrs; ++a)
    if (t.has(a)) s += std::string(" | ") + kKeys[static_cast<std::size_t>(a)] + " : " + t.at(a);
  return s;
}

/// A table of 3-8 attributes (name included). force_held_out: it has food and area forming a held-out pair;
/// otherwise it never has one when train is set.
Table make_table(Rng& rng, const Strings& names, bool train, bool force_held_out) {
  for (;;) {
    Table t;
    t.name = rng.pick(names);
    const std::size_t k = 2 + static_cast<std::size_t>(rng.below(6));  // attributes besides the name: 2..7
    std::vector<int> attrs;
    if (force_held_out) {
      std::vector<int> rest = {kType, kPrice, kRating, kFamily, kNear};
      rng.shuffle(rest);
      attrs = {kFood, kArea};
      attrs.insert(attrs.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(k - 2));
    } else {
      std::vector<int> all = {kType, kFood, kPrice, kRating, kArea, kFamily, kNear};
      rng.shuffle(all);
      attrs.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k));
    }
    for (const int a : attrs) t.v[static_cast<std::size_t>(a)] = rng.pick(*kValues[static_cast<std::size_t>(a)]);
    if (force_held_out) {
      const auto& p = rng.pick(kHeldOutPairs);
      t.v[kFood] = p.first;
      t.v[kArea] = p.second;
    }
    if (train && t.has(kFood) && t.has(kArea) && held_out(t.at(kFood), t.at(kArea))) continue;
    return t;
  }
}

// --------------------------------------------------------------------------------------------------------- phrasing

bool starts_with_vowel(const std::string& w) {
  if (w.empty()) return false;
  switch (w[0]) {
    case 'a':
    case 'e':
    case 'i':
    case 'o':
    case 'u':
    case 'A':
    case 'E':
    case 'I':
    case 'O':
    case 'U':
      return true;
    default:
      return false;
  }
}
/// "a"/"an" + phrase, by the phrase's first letter (right for every phrase this grammar builds).
std::string art(const std::string& phrase) { return (starts_with_vowel(phrase) ? "an " : "a ") + phrase; }

std::string food_text(const std::string& f) { return f == "Fast food" ? "fast food" : f; }
bool numeric_price(const std::string& p) { return p.find("pounds") != std::string::npos; }
bool numeric_rating(const std::string& r) { return r.find("out of") != std::string::npos; }

/// A prenominal modifier for the attribute, or "" when it has none.
std::string adjective(Rng& rng, const Table& t, int a) {
  const std::string& v = t.at(a);
  switch (a) {
    case kFood:
      return food_text(v);
    case kPrice:
      if (v == "cheap") return rng.pick(Strings{"cheap", "inexpensive", "low priced"});
      if (v == "moderate") return rng.pick(Strings{"moderately priced", "mid priced"});
      if (v == "high") return rng.pick(Strings{"expensive", "high priced", "pricey"});
      return "";
    case kRating:
      if (v == "low") return rng.pick(Strings{"low rated", "poorly rated"});
      if (v == "average") return "average rated";
      if (v == "high") return rng.pick(Strings{"highly rated", "well rated"});
      return v.substr(0, 1) + " star";  // "1 out of 5" -> "1 star"
    case kFamily:
      return v == "yes" ? rng.pick(Strings{"family friendly", "kid friendly", "child friendly"}) : "adults only";
    default:
      return "";
  }
}

std::string area_pp(Rng& rng, const std::string& v) {
  if (v == "city centre")
    return rng.pick(Strings{"in the city centre", "in the centre of town", "in the city centre area"});
  if (v == "riverside") return rng.pick(Strings{"by the riverside", "in the riverside area", "on the riverside"});
  if (v == "old town") return rng.pick(Strings{"in the old town", "in the old town area"});
  if (v == "harbour") return rng.pick(Strings{"by the harbour", "in the harbour area", "down by the harbour"});
  return rng.pick(Strings{"in the university district", "in the university area"});
}

/// A postnominal phrase ("near X", "with a low customer rating"), or "" when the attribute has none (type and
/// family friendly: "an Italian pub welcoming children with low prices" reads badly).
std::string postnominal(Rng& rng, const Table& t, int a) {
  const std::string& v = t.at(a);
  switch (a) {
    case kFood:
      if (v == "Fast food") return rng.pick(Strings{"serving fast food", "offering fast food"});
      return rng.pick(Strings{"serving " + v + " food", "offering " + v + " cuisine"});
    case kPrice:
      if (numeric_price(v)) return rng.pick(Strings{"with prices of " + v, "with meals for " + v});
      return rng.pick(
          Strings{std::string("with ") + (v == "cheap" ? "low" : v) + " prices", "in the " + v + " price range"});
    case kRating:
      if (numeric_rating(v)) return rng.pick(Strings{"with a customer rating of " + v, "with a " + v + " rating"});
      return "with " + art(v + " customer rating");
    case kArea:
      return area_pp(rng, v);
    case kNear:
      return rng.pick(Strings{"near " + v, "close to " + v, "not far from " + v});
    default:
      return "";
  }
}

/// A verb phrase for a singular subject ("serves Italian food", "is located near X").
std::string verb_phrase(Rng& rng, const Table& t, int a) {
  const std::string& v = t.at(a);
  switch (a) {
    case kType:
      return "is " + art(v);
    case kFood:
      if (v == "Fast food")
        return rng.pick(Strings{"serves fast food", "offers fast food", "specialises in fast food"});
      return rng.pick(Strings{"serves " + v + " food", "offers " + v + " cuisine", "specialises in " + v + " food",
                              "has " + v + " food on the menu"});
    case kPrice:
      if (numeric_price(v))
        return rng.pick(Strings{"has a price range of " + v, "offers meals for " + v, "has prices of " + v});
      if (v == "cheap")
        return rng.pick(Strings{"is cheap", "has low prices", "is inexpensive", "is in the cheap price range"});
      if (v == "moderate")
        return rng.pick(Strings{"is moderately priced", "has moderate prices", "is in the moderate price range"});
      return rng.pick(Strings{"is expensive", "has high prices", "is in the high price range"});
    case kRating:
      if (numeric_rating(v))
        return rng.pick(Strings{"has a customer rating of " + v, "is rated " + v + " by customers",
                                "has received a rating of " + v});
      return rng.pick(Strings{"has " + art(v + " customer rating"), "is rated " + v + " by customers",
                              "has received " + art(v + " rating")});
    case kArea: {  // two draws: sequenced explicitly (the operands of + are evaluated in an unspecified order)
      const std::string verb = rng.pick(Strings{"is located ", "is ", "can be found "});
      return verb + area_pp(rng, v);
    }
    case kFamily:
      if (v == "yes")
        return rng.pick(
            Strings{"is family friendly", "is kid friendly", "welcomes families", "is suitable for children"});
      return rng.pick(
          Strings{"is not family friendly", "is not kid friendly", "does not welcome children", "is for adults only"});
    case kNear:
      return rng.pick(Strings{"is near ", "is located near ", "is close to ", "can be found near "}) + v;
    default:
      return "";
  }
}

std::string first_two_words(const std::string& s) {
  const auto sp = s.find(' ');
  return sp == std::string::npos ? s : s.substr(0, s.find(' ', sp + 1));
}

/// Appends a verb phrase for the attribute, avoiding a repeated opening ("is located ... and is located ...")
/// when a few redraws find another.
void add_verb_phrase(Rng& rng, const Table& t, int a, Strings& vps) {
  std::string vp;
  for (int tries = 0; tries < 8; ++tries) {
    vp = verb_phrase(rng, t, a);
    bool repeated = false;
    for (const auto& earlier : vps) repeated = repeated || first_two_words(earlier) == first_two_words(vp);
    if (!repeated) break;
  }
  vps.push_back(vp);
}

/// "a", "a and b", "a , b and c" (commas spaced as in the tokenized E2E references).
std::string join_list(const Strings& items) {
  std::string s;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) s += i + 1 == items.size() ? " and " : " , ";
    s += items[i];
  }
  return s;
}

std::string join_words(const Strings& items) {
  std::string s;
  for (const auto& w : items) {
    if (w.empty()) continue;
    if (!s.empty()) s += ' ';
    s += w;
  }
  return s;
}

std::string sentence(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s + " .";
}

/// One target text for the table, every attribute mentioned exactly once.
std::string realize(Rng& rng, const Table& t) {
  enum Form { kIsNp, kThereIs, kNpCalled, kAppositive, kVerbsOnly, kLocatedFirst, kNumForms };
  std::vector<int> attrs;
  for (int a = kFood; a < kNumAttrs; ++a)
    if (t.has(a)) attrs.push_back(a);
  rng.shuffle(attrs);

  Form form = static_cast<Form>(rng.below(kNumForms));
  if (form == kLocatedFirst && !t.has(kArea) && !t.has(kNear)) form = kIsNp;

  if (form == kVerbsOnly) {  // "N serves X food , is near Y and has low prices ." (maybe split in two sentences)
    Strings vps;
    if (t.has(kType)) add_verb_phrase(rng, t, kType, vps);  // "is a pub" first
    for (const int a : attrs) add_verb_phrase(rng, t, a, vps);
    if (vps.size() >= 4 || (vps.size() == 3 && rng.chance(1, 2))) {
      const std::size_t m = 1 + static_cast<std::size_t>(rng.below(vps.size() - 1));
      return sentence(t.name + " " + join_list(Strings(vps.begin(), vps.begin() + static_cast<std::ptrdiff_t>(m)))) +
             " " + sentence("it " + join_list(Strings(vps.begin() + static_cast<std::ptrdiff_t>(m), vps.end())));
    }
    return sentence(t.name + " " + join_list(vps));
  }

  // The noun phrase around the type (or a generic head noun), its modifiers and the verb phrases left over.
  const std::string head = t.has(kType) ? t.at(kType) : rng.pick(Strings{"place", "venue", "eatery"});
  std::array<std::string, kNumAttrs> adj;  // by attribute, put in canonical order below
  Strings front, pps, vps;
  std::vector<int> pp_attrs;
  std::size_t n_adj = 0;
  for (const int a : attrs) {
    if (form == kLocatedFirst && (a == kArea || a == kNear)) {
      front.push_back(postnominal(rng, t, a));
      continue;
    }
    const bool adj_ok = a != kArea && a != kNear && !(a == kPrice && numeric_price(t.at(a)));
    if (adj_ok && n_adj < 2 && rng.chance(a == kFood ? 3 : 1, 4)) {
      adj[static_cast<std::size_t>(a)] = adjective(rng, t, a);
      ++n_adj;
    } else if (a != kFamily && pps.size() < 2 && rng.chance(1, 2)) {
      pps.push_back(postnominal(rng, t, a));
      pp_attrs.push_back(a);
    } else {
      add_verb_phrase(rng, t, a, vps);
    }
  }
  if ((form == kNpCalled || form == kAppositive) && vps.empty()) {  // these forms need a verb phrase
    if (pp_attrs.empty()) {
      form = kIsNp;
    } else {  // say the last postnominal attribute as a verb phrase instead
      add_verb_phrase(rng, t, pp_attrs.back(), vps);
      pps.pop_back();
      pp_attrs.pop_back();
    }
  }
  const std::string np = art(join_words({adj[kPrice], adj[kRating], adj[kFamily], adj[kFood], head}));
  const std::string np_pps = join_words({np, join_words(pps)});

  std::string first;
  bool vps_used = false;
  switch (form) {
    case kIsNp:
      first = t.name + " is " + np_pps;
      break;
    case kThereIs:
      first = "there is " + join_words({np, rng.pick(Strings{"called", "named"}), t.name, join_words(pps)});
      break;
    case kNpCalled:
      first = join_words({np, rng.pick(Strings{"called", "named"}), t.name, join_words(pps), join_list(vps)});
      vps_used = true;
      break;
    case kAppositive:
      first = t.name + " , " + np_pps + " , " + join_list(vps);
      vps_used = true;
      break;
    case kLocatedFirst:
      first = rng.pick(Strings{"located ", "situated "}) + join_words(front) + " , " + t.name + " is " + np_pps;
      break;
    default:
      break;
  }
  if (vps_used || vps.empty()) return sentence(first);
  switch (rng.below(vps.size() == 1 ? 4 : 3)) {
    case 0:
      return sentence(first + " that " + join_list(vps));
    case 1:
      return sentence(first) + " " + sentence("it " + join_list(vps));
    case 2:
      return sentence(first) + " " + sentence("the " + head + " " + join_list(vps));
    default:
      return sentence(first + " and " + join_list(vps));
  }
}

// ---------------------------------------------------------------------------------------------------------- driver

struct Options {
  std::string out = "data/table2text";
  std::uint64_t seed = 1;
  std::size_t train = 2000, valid = 200, test = 200, descriptions = 0;
};

[[noreturn]] void usage(int code) {
  (code == 0 ? std::cout : std::cerr)
      << "usage: make_table_to_text [--out DIR] [--seed N] [--train N] [--valid N] [--test N] [--descriptions N]\n"
         "Writes DIR/train.txt (1 reference per table), DIR/valid.txt and DIR/test.txt (3 references per table,\n"
         "consecutive lines with the same source) in the E2E format 'source||target'. Defaults: --out "
         "data/table2text\n--seed 1 --train 2000 --valid 200 --test 200 (tables).\n"
         "--descriptions N also writes DIR/descriptions.txt: N documents of 2-3 different descriptions (no table)\n"
         "of one train-rule table each (train names, no held-out pair), from a stream of their own: one line per\n"
         "description, an empty line after each document (the pretraining corpus format). Default 0: no file.\n";
  std::exit(code);
}

std::uint64_t parse_count(const std::string& flag, const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18) {
    std::cerr << "make_table_to_text: " << flag << " expects a non-negative integer, got '" << s << "'\n";
    std::exit(2);
  }
  return std::stoull(s);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (i + 1 >= argc) {
      std::cerr << "make_table_to_text: unknown option or missing value: " << a << "\n";
      usage(2);
    }
    const std::string v = argv[++i];
    if (a == "--out") {
      o.out = v;
    } else if (a == "--seed") {
      o.seed = parse_count(a, v);
    } else if (a == "--train") {
      o.train = parse_count(a, v);
    } else if (a == "--valid") {
      o.valid = parse_count(a, v);
    } else if (a == "--test") {
      o.test = parse_count(a, v);
    } else if (a == "--descriptions") {
      o.descriptions = parse_count(a, v);
    } else {
      std::cerr << "make_table_to_text: unknown option: " << a << "\n";
      usage(2);
    }
  }
  return o;
}

/// Writes one split; returns the number of lines written.
std::size_t write_split(const std::string& path, std::uint64_t seed, const Strings& names, std::size_t tables,
                        bool train, std::size_t refs) {
  Rng rng(seed);
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  std::set<std::string> seen;
  std::size_t lines = 0, held = 0;
  for (std::size_t i = 0; i < tables; ++i) {
    Table t;
    std::string src;
    for (int tries = 0;; ++tries) {
      const bool force = !train && rng.chance(1, 2);
      t = make_table(rng, names, train, force);
      src = source_of(t);
      if (seen.insert(src).second) break;
      if (tries > 10000) throw std::runtime_error("too few distinct tables for " + path);
    }
    held += t.has(kFood) && t.has(kArea) && held_out(t.at(kFood), t.at(kArea));
    std::set<std::string> targets;
    for (int tries = 0; targets.size() < refs && tries < 100; ++tries) {
      std::string tgt = realize(rng, t);
      if (!targets.insert(tgt).second) continue;
      f << src << "||" << tgt << '\n';
      ++lines;
    }
  }
  if (!f) throw std::runtime_error("error writing " + path);
  std::cout << path << ": " << tables << " tables, " << lines << " lines, " << held
            << " with a held-out (food, area) pair\n";
  return lines;
}

/// Writes n documents of in-domain text without tables: each is 2 or 3 different descriptions of one train-rule
/// table, one paragraph (line) each, then an empty line. Saying the same facts again in other words is what a
/// model needs to learn to find facts earlier in its context and repeat them.
void write_descriptions(const std::string& path, std::uint64_t seed, std::size_t n) {
  Rng rng(seed);
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  std::size_t paragraphs = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Table t = make_table(rng, kTrainNames, true, false);
    const std::size_t want = 2 + static_cast<std::size_t>(rng.below(2));
    std::set<std::string> done;
    for (int tries = 0; done.size() < want && tries < 100; ++tries) {
      std::string text = realize(rng, t);
      if (done.insert(text).second) f << text << '\n';
    }
    paragraphs += done.size();
    f << '\n';
  }
  if (!f) throw std::runtime_error("error writing " + path);
  std::cout << path << ": " << n << " documents, " << paragraphs << " descriptions of train-rule tables (no tables)\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    std::filesystem::create_directories(o.out);
    write_split(o.out + "/train.txt", splitmix64(o.seed * 3 + 0), kTrainNames, o.train, true, 1);
    write_split(o.out + "/valid.txt", splitmix64(o.seed * 3 + 1), kValidNames, o.valid, false, 3);
    write_split(o.out + "/test.txt", splitmix64(o.seed * 3 + 2), kTestNames, o.test, false, 3);
    if (o.descriptions > 0)
      write_descriptions(o.out + "/descriptions.txt", splitmix64(splitmix64(o.seed) ^ 0x6465736372697074ULL),
                         o.descriptions);
  } catch (const std::exception& e) {
    std::cerr << "make_table_to_text: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
