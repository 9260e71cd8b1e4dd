// SPDX-License-Identifier: MIT
// Fuzz target: a HuggingFace sharded checkpoint, model.safetensors.index.json and the shards it names, opened by
// SafeTensorsCheckpoint. The input is the index text, then "\n--8<--\n" and the bytes of the one shard written as
// model-00001-of-00001.safetensors (a valid shard when the input has no separator).
#include <prefixtune/io/safetensors_checkpoint.hpp>
#include <prefixtune/io/safetensors_write.hpp>

#include <filesystem>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(checkpoint_index) {
  using namespace prefixtune;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto cut = in.find("\n--8<--\n");
  std::filesystem::remove(prefixtune_fuzz::scratch_dir() / "model.safetensors");  // left by another target
  prefixtune_fuzz::write_scratch("model.safetensors.index.json", in.substr(0, cut));
  if (cut != std::string_view::npos) {
    prefixtune_fuzz::write_scratch("model-00001-of-00001.safetensors", in.substr(cut + 8));
  } else {
    SafeTensorsWriter w;
    w.add("model.norm.weight", Tensor<float>::zeros({4}));
    const auto b = w.to_bytes();
    prefixtune_fuzz::write_scratch("model-00001-of-00001.safetensors",
                                   std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  }
  prefixtune_fuzz::expect_ok_or_error([&] {
    const SafeTensorsCheckpoint ck = SafeTensorsCheckpoint::open(prefixtune_fuzz::scratch_dir().string());
    for (const auto& key : ck.names()) {
      FUZZ_CHECK(ck.has(key));
      const TensorInfo& info = ck.file_of(key).info(key);
      if (info.shape.size() <= 4 && dtype_is_floating(info.dtype)) (void)ck.file_of(key).load<float>(key);
    }
  });
}
