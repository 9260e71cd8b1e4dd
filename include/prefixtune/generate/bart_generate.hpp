// SPDX-License-Identifier: MIT
// Generation with a BART encoder-decoder and per-row three-part prefixes from a Seq2SeqBank. The encoder runs once
// per source (with that row's encoder prefix); every decoder layer's cross-attention K/V of the source are
// computed once and kept apart from the growing decoder self-attention KV cache; the cross prefix and the decoder
// prefix are read from the bank by index. Greedy, sampling and beam search (with the paper's XSUM preset) share
// the loops of the GPT-2 path.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

#include "prefixtune/autograd/tape.hpp"
#include "prefixtune/generate/beam_search.hpp"
#include "prefixtune/generate/decode_loops.hpp"
#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/generate/request.hpp"
#include "prefixtune/models/bart.hpp"
#include "prefixtune/ops/cached_attention.hpp"
#include "prefixtune/ops/cross_attention.hpp"
#include "prefixtune/prefix/seq2seq_bank.hpp"

namespace prefixtune {

/// Greedy decoding settings of a BART model: its end token, its forced first token (forced_bos_token_id, -1 =
/// none), at most max_new_tokens new tokens.
inline GenerateConfig bart_generate_config(const BartConfig& c, std::int64_t max_new_tokens = 64) {
  GenerateConfig g;
  g.eos_id = static_cast<std::int32_t>(c.eos_token_id);
  g.forced_bos_id = static_cast<std::int32_t>(c.forced_bos_token_id);
  g.max_new_tokens = max_new_tokens;
  return g;
}

/// The paper's XSUM decoding (facebook/bart-large-xsum's generation settings): beam 6, max_length 62 and
/// min_length 11 counted as HuggingFace does (the decoder start token included: at most 61 new tokens, the end
/// token allowed from the 11th on), length penalty 1.0, no repeated 3-gram, early stopping.
inline GenerateConfig bart_xsum_config(const BartConfig& c) {
  GenerateConfig g = bart_generate_config(c, 61);
  g.num_beams = 6;
  g.min_new_tokens = 10;
  g.length_penalty = 1.0;
  g.no_repeat_ngram_size = 3;
  g.early_stopping = true;
  return g;
}

/// Throws an Error naming request `index` unless its prompt (the source ids) is non-empty, in the vocabulary and
/// within max_position_embeddings, and its prefix is in the bank (or kNoPrefix).
template <class T, class Device, class Param>
void check_generation_request(const Bart<T, Device, Param>& m, const Seq2SeqBank<T, Device>& bank,
                              const GenerationRequest& r, std::size_t index) {
  const BartConfig& c = m.config;
  PREFIXTUNE_CHECK(!r.prompt.empty(), "generate: request ", index, " has an empty source");
  PREFIXTUNE_CHECK(r.prefix == kNoPrefix || (r.prefix >= 0 && r.prefix < bank.size()), "generate: request ", index,
                   " names prefix ", r.prefix, " but the bank holds ", bank.size(), " prefixes");
  for (std::size_t j = 0; j < r.prompt.size(); ++j)
    PREFIXTUNE_CHECK(r.prompt[j] >= 0 && r.prompt[j] < c.vocab_size, "generate: request ", index, " source token ", j,
                     " has id ", r.prompt[j], ", outside the vocabulary [0, ", c.vocab_size, ")");
  PREFIXTUNE_CHECK(static_cast<std::int64_t>(r.prompt.size()) <= c.max_position_embeddings, "generate: request ", index,
                   " has a source of ", r.prompt.size(),
                   " tokens, longer than max_position_embeddings = ", c.max_position_embeddings);
}

namespace detail {

/// A bank entry's per-layer K/V of one stack as a PrefixKv (1, NH, P, HS) per layer (none for kNoPrefix).
template <class T, class Device>
PrefixKv<T, Device> bank_prefix_kv(const PrefixBank<T, Device>& bank, std::int64_t pi, std::int64_t layers) {
  PrefixKv<T, Device> kv;
  if (pi == kNoPrefix) return kv;
  for (std::int64_t l = 0; l < layers; ++l) {
    const auto& k = bank.k(pi, l);
    kv.k.emplace_back(k.reshape({1, k.size(0), k.size(1), k.size(2)}));
    kv.v.emplace_back(bank.v(pi, l).reshape({1, k.size(0), k.size(1), k.size(2)}));
  }
  return kv;
}

/// The encoder side of a batch: every request's cross-attention keys/values [k | v] (1, S, 2C) per decoder layer.
/// Requests sharing an encoder prefix are encoded together (sources padded and masked).
template <class T, class Device, class Param>
std::vector<std::vector<Tensor<T, Device>>> bart_cross_memory(const Bart<T, Device, Param>& m,
                                                              const Seq2SeqBank<T, Device>& bank,
                                                              const std::vector<GenerationRequest>& requests) {
  const BartConfig& c = m.config;
  const std::int64_t C = c.d_model;
  std::map<std::int64_t, std::vector<std::size_t>> groups;  // encoder prefix -> requests
  for (std::size_t i = 0; i < requests.size(); ++i) groups[requests[i].prefix].push_back(i);
  std::vector<std::vector<Tensor<T, Device>>> memory(requests.size());
  NoGradGuard no_grad;
  for (const auto& [pi, members] : groups) {
    const auto B = static_cast<std::int64_t>(members.size());
    std::int64_t S = 0;
    for (auto i : members) S = std::max<std::int64_t>(S, static_cast<std::int64_t>(requests[i].prompt.size()));
    auto ids = Tensor<std::int32_t, Cpu>::empty({B, S});
    auto mask = Tensor<std::uint8_t, Cpu>::empty({B, S});
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& src = requests[members[static_cast<std::size_t>(b)]].prompt;
      for (std::int64_t s = 0; s < S; ++s) {
        const bool real = s < static_cast<std::int64_t>(src.size());
        ids(b, s) = real ? src[static_cast<std::size_t>(s)] : static_cast<std::int32_t>(c.pad_token_id);
        mask(b, s) = real ? 1 : 0;
      }
    }
    Tape<T, Device> tape;
    const auto states = bart_encode(tape, m, ids.template to<Device>(), mask.template to<Device>(),
                                    bank_prefix_kv(bank.encoder(), pi, c.encoder_layers))
                            .value()
                            .reshape({B * S, C});
    for (std::int64_t l = 0; l < c.decoder_layers; ++l) {
      const auto& L = m.decoder[static_cast<std::size_t>(l)];
      Tensor<T, Device> kv({B * S, 2 * C});
      linear_forward(states, value_of(L.cross_kv_w), value_of(L.cross_kv_b), kv);
      for (std::int64_t b = 0; b < B; ++b) {
        const std::size_t i = members[static_cast<std::size_t>(b)];
        const auto n = static_cast<std::int64_t>(requests[i].prompt.size());
        Tensor<T, Device> own({1, n, 2 * C});  // the request's real tokens only: no mask needed when decoding
        own.reshape({n, 2 * C}).copy_from(kv.rows(b * S, b * S + n));
        memory[i].push_back(own);
      }
    }
  }
  return memory;
}

}  // namespace detail

/// Decoder slots of a BART decoding batch: the self-attention KV cache (bound to bank entries' decoder prefixes),
/// each slot's request, and every request's cross-attention memory (see detail::bart_cross_memory).
template <class T, class Device = Cpu>
struct BartDecoderState {
  KvCache<T, Device> cache;
  std::vector<std::int64_t> request;                   // per slot
  std::vector<std::vector<Tensor<T, Device>>> memory;  // per request, per decoder layer: (1, S, 2C)
};

/// Appends tokens[r] to decoder slot slots[r] for every row r (rows may belong to different requests and carry
/// different prefixes, past lengths and token counts >= 1) and returns the logits (R, V) (final_logits_bias
/// included) at each row's last new token. Decoder positions are the slot indices (BART's prefixes shift none).
template <class T, class Device, class Param>
Tensor<T, Device> bart_extend(const Bart<T, Device, Param>& m, const Seq2SeqBank<T, Device>& bank,
                              BartDecoderState<T, Device>& state, const std::vector<std::int64_t>& slots,
                              const std::vector<std::vector<std::int32_t>>& tokens) {
  using detail::value_of;
  const BartConfig& c = m.config;
  KvCache<T, Device>& cache = state.cache;
  auto step = detail::pack_cached_step("bart_extend", cache, bank.decoder(), slots, tokens, c.vocab_size,
                                       c.max_position_embeddings + BartConfig::kPositionOffset,
                                       [](std::int64_t, std::int64_t i) { return i + BartConfig::kPositionOffset; });
  auto& rows = step.rows;
  const auto R = static_cast<std::int64_t>(rows.size());
  const std::int64_t N = step.tokens;
  const std::int64_t C = c.d_model, F = c.decoder_ffn_dim, NH = c.decoder_attention_heads;
  const T eps = static_cast<T>(c.layer_norm_epsilon);
  Tensor<T, Device> x({N, C}), y({N, C}), tmp({N, C}), a({N, C}), q({N, C}), qkv({N, 3 * C}), f({N, F}), g({N, F}),
      none;
  embedding_forward(step.ids.template to<Device>(), value_of(m.shared), x);
  if (c.scale_embedding) scale_forward(x, static_cast<T>(std::sqrt(static_cast<double>(C))), x);
  embedding_forward(step.pos.template to<Device>(), value_of(m.dec_pos), tmp);
  accumulate(x, tmp);
  layer_norm_forward(x, value_of(m.dec_ln_w), value_of(m.dec_ln_b), eps, y, none, none);
  std::swap(x, y);
  // Runs of consecutive rows of one request share its source memory and cross prefix: one call per run.
  std::vector<std::pair<std::int64_t, std::int64_t>> runs;  // (first row, end row)
  for (std::int64_t r = 0, last = -1; r < R; ++r) {
    const std::int64_t i = state.request.at(static_cast<std::size_t>(rows[static_cast<std::size_t>(r)].slot));
    if (i != last) runs.emplace_back(r, r);
    runs.back().second = r + 1;
    last = i;
  }
  auto post_ln = [&](const Param& w, const Param& b) {  // x = LN(x + tmp)
    accumulate(x, tmp);
    layer_norm_forward(x, value_of(w), value_of(b), eps, y, none, none);
    std::swap(x, y);
  };
  for (std::int64_t l = 0; l < c.decoder_layers; ++l) {
    const auto& L = m.decoder[static_cast<std::size_t>(l)];
    linear_forward(x, value_of(L.qkv_w), value_of(L.qkv_b), qkv);
    detail::bind_prefix(rows, cache, bank.decoder(), l);
    cached_attention_forward(cache.dims(NH), rows, qkv, cache.k(l), cache.v(l), a);
    linear_forward(a, value_of(L.self_out_w), value_of(L.self_out_b), tmp);
    post_ln(L.self_ln_w, L.self_ln_b);
    linear_forward(x, value_of(L.cross_q_w), value_of(L.cross_q_b), q);
    for (const auto& [r0, r1] : runs) {  // the cross prefix of a run's slots is its request's bank entry
      const auto& w0 = rows[static_cast<std::size_t>(r0)];
      const auto& w1 = rows[static_cast<std::size_t>(r1 - 1)];
      const std::int64_t t0 = w0.first, t1 = w1.first + w1.count, n = t1 - t0, pi = cache.prefix(w0.slot);
      Tensor<T, Device> pk, pv;
      if (pi != kNoPrefix) {
        const auto& k = bank.cross().k(pi, l);
        pk = k.reshape({1, k.size(0), k.size(1), k.size(2)});
        pv = bank.cross().v(pi, l).reshape({1, k.size(0), k.size(1), k.size(2)});
      }
      Tensor<T, Device> out = a.rows(t0, t1).reshape({1, n, C});
      cross_attention_forward(q.rows(t0, t1).reshape({1, n, C}),
                              state.memory[static_cast<std::size_t>(state.request[static_cast<std::size_t>(w0.slot)])]
                                          [static_cast<std::size_t>(l)],
                              NH, pk, pv, Tensor<std::uint8_t, Device>(), out,
                              static_cast<Tensor<T, Device>*>(nullptr));
    }
    linear_forward(a, value_of(L.cross_out_w), value_of(L.cross_out_b), tmp);
    post_ln(L.cross_ln_w, L.cross_ln_b);
    linear_forward(x, value_of(L.fc1_w), value_of(L.fc1_b), f);
    gelu_exact_forward(f, g);
    linear_forward(g, value_of(L.fc2_w), value_of(L.fc2_b), tmp);
    post_ln(L.ffn_ln_w, L.ffn_ln_b);
  }
  for (const auto& w : rows) cache.advance(w.slot, w.count);
  const Tensor<T, Device> last = detail::last_token_states(x, rows).reshape({R, 1, C});
  return bart_logits(m, last).reshape({R, c.vocab_size});
}

namespace detail {

/// The decoding engine of a BART batch (see decode_loops.hpp): slots_per_request decoder slots per request, every
/// request's decoding starting from [decoder_start_token_id].
template <class T, class Device, class Param>
class BartDecoding {
 public:
  using value_type = T;
  using device_type = Device;
  BartDecoding(const Bart<T, Device, Param>& m, const Seq2SeqBank<T, Device>& bank,
               const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg,
               std::int64_t slots_per_request)
      : m_(m), bank_(bank), requests_(requests), start_{static_cast<std::int32_t>(m.config.decoder_start_token_id)} {
    const BartConfig& c = m.config;
    const auto R = static_cast<std::int64_t>(requests.size());
    const std::int64_t capacity = std::min<std::int64_t>(cfg.max_new_tokens, c.max_position_embeddings);
    state_.cache = KvCache<T, Device>(c.decoder_kv_shape(), R * slots_per_request, capacity);
    state_.request.assign(static_cast<std::size_t>(R * slots_per_request), 0);
    state_.memory = bart_cross_memory(m, bank, requests);
  }

  const std::vector<std::int32_t>& start_tokens(std::int64_t) const { return start_; }
  void start(std::int64_t slot, std::int64_t i) {
    state_.cache.reset(slot, requests_.at(static_cast<std::size_t>(i)).prefix);
    state_.request.at(static_cast<std::size_t>(slot)) = i;
  }
  Tensor<T, Device> extend(const std::vector<std::int64_t>& slots,
                           const std::vector<std::vector<std::int32_t>>& tokens) {
    return bart_extend(m_, bank_, state_, slots, tokens);
  }
  void copy_slot(std::int64_t dst, std::int64_t src) {
    state_.cache.copy_slot(dst, src);
    state_.request.at(static_cast<std::size_t>(dst)) = state_.request.at(static_cast<std::size_t>(src));
  }
  bool full(std::int64_t slot) const { return state_.cache.length(slot) >= m_.config.max_position_embeddings; }

 private:
  const Bart<T, Device, Param>& m_;
  const Seq2SeqBank<T, Device>& bank_;
  const std::vector<GenerationRequest>& requests_;
  std::vector<std::int32_t> start_;
  BartDecoderState<T, Device> state_;
};

}  // namespace detail

/// Generates a target for every request in one batch: request.prompt holds the source ids (e.g. encode_seq2seq's
/// `<s> text </s>`), request.prefix a Seq2SeqBank entry (kNoPrefix: the bare model); the decoder starts from
/// decoder_start_token_id. cfg.eos_id must be the model's eos_token_id (start from bart_generate_config or
/// bart_xsum_config). Every request is checked first; a bad one fails the call with an Error naming it.
template <class T, class Device, class Param>
std::vector<Generation> generate(const Bart<T, Device, Param>& m, const Seq2SeqBank<T, Device>& bank,
                                 const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) {
  cfg.validate(m.config.vocab_size);
  PREFIXTUNE_CHECK(cfg.eos_id == m.config.eos_token_id, "generate: eos_id ", cfg.eos_id,
                   " is not the model's eos_token_id ", m.config.eos_token_id,
                   " (start from bart_generate_config(config) or bart_xsum_config(config))");
  PREFIXTUNE_CHECK(bank.size() == 0 || bank.config().d_model == m.config.d_model, "generate: the bank was made for ",
                   "another model (d_model ", bank.config().d_model, " vs ", m.config.d_model, ")");
  for (std::size_t i = 0; i < requests.size(); ++i) check_generation_request(m, bank, requests[i], i);
  if (requests.empty()) return {};
  detail::BartDecoding<T, Device, Param> engine(m, bank, requests, cfg, cfg.num_beams);
  if (cfg.num_beams > 1) return detail::generate_beam(engine, requests, cfg);
  return detail::generate_sampled(engine, requests, cfg);
}

}  // namespace prefixtune
