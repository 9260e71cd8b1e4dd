// SPDX-License-Identifier: MIT
// Seq2seq prefix files: the merged three-part prefix of an encoder-decoder (encoder self-attention, decoder
// self-attention, cross-attention tables) as one safetensors file, written atomically, read back checked against
// the model.
#pragma once

#include <string>

#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/bart_config.hpp"
#include "prefixtune/prefix/seq2seq_prefix.hpp"

namespace prefixtune {

namespace detail {

/// The tensor names of the three tables, in Seq2SeqTables order, with the layer count each table spans.
inline const char* const kSeq2SeqTableNames[3] = {"encoder_prefix.table", "decoder_prefix.table", "cross_prefix.table"};

inline KvShape seq2seq_table_shape(const BartConfig& c, int which) {
  return which == 0 ? c.encoder_kv_shape() : c.decoder_kv_shape();
}

}  // namespace detail

/// Writes merged tables to `path` (safetensors: "encoder_prefix.table", "decoder_prefix.table", "cross_prefix.table",
/// each (P, 2 * layers * d_model) F32; the model's shape in the metadata). The file is replaced atomically.
template <class T, class Device>
void save_seq2seq_prefix(const std::string& path, const Seq2SeqTables<T, Device>& t, const BartConfig& c) {
  SafeTensorsWriter w;
  const DirectPrefix<T, Device>* parts[3] = {&t.encoder, &t.decoder, &t.cross};
  std::int64_t P = -1;
  for (int i = 0; i < 3; ++i) {
    const auto table = parts[i]->table.value().template to<Cpu>();
    const std::int64_t width = detail::seq2seq_table_shape(c, i).table_width();
    PREFIXTUNE_CHECK(table.rank() == 2 && table.size(0) >= 1 && table.size(1) == width && (P < 0 || table.size(0) == P),
                     path, ": ", detail::kSeq2SeqTableNames[i], " of shape ", table.shape(),
                     " does not fit the model (expected (P, ", width, ") with one P for all three)");
    P = table.size(0);
    w.add(detail::kSeq2SeqTableNames[i], table, DType::F32);
  }
  w.add_metadata("format", "prefixtune.seq2seq_prefix");
  w.add_metadata("model_type", "bart");
  w.add_metadata("num_virtual_tokens", std::to_string(P));
  w.add_metadata("encoder_layers", std::to_string(c.encoder_layers));
  w.add_metadata("decoder_layers", std::to_string(c.decoder_layers));
  w.add_metadata("d_model", std::to_string(c.d_model));
  w.write(path);
}

/// Reads a file written by save_seq2seq_prefix, every table checked against the model `c` (a GPT-2 prefix file is
/// refused with a pointer to load_prefix).
template <class T, class Device = Cpu>
Seq2SeqTables<T, Device> load_seq2seq_prefix(const std::string& path, const BartConfig& c) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  PREFIXTUNE_CHECK(!file.has("prefix.table"), path,
                   ": a decoder-only (GPT-2) prefix file, not an encoder-decoder prefix (load it with load_prefix)");
  Seq2SeqTables<T, Device> t;
  DirectPrefix<T, Device>* parts[3] = {&t.encoder, &t.decoder, &t.cross};
  std::int64_t P = -1;
  for (int i = 0; i < 3; ++i) {
    const char* name = detail::kSeq2SeqTableNames[i];
    PREFIXTUNE_CHECK(file.has(name), path, ": no '", name, "' tensor (not a prefixtune seq2seq prefix file)");
    auto table = file.load<T>(name, true);
    const KvShape shape = detail::seq2seq_table_shape(c, i);
    const std::int64_t width = shape.table_width();
    PREFIXTUNE_CHECK(table.rank() == 2 && table.size(0) >= 1 && table.size(1) == width && (P < 0 || table.size(0) == P),
                     path, ": ", name, " of shape ", table.shape(), " does not fit the model (expected (P, ", width,
                     ") = (P, 2 * ", shape.layers, " layers * d_model ", c.d_model, ") with one P for all three)");
    P = table.size(0);
    *parts[i] = DirectPrefix<T, Device>{Var<T, Device>(table.template to<Device>(), true, name)};
  }
  return t;
}

}  // namespace prefixtune
