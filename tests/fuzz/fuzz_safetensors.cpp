// SPDX-License-Identifier: MIT
// Fuzz target: a safetensors image (header and data) validated in memory, then every tensor read as its kind.
#include <prefixtune/io/safetensors.hpp>

#include <vector>

#include "fuzz_target.hpp"

PREFIXTUNE_FUZZ_TARGET(safetensors) {
  using namespace prefixtune;
  prefixtune_fuzz::expect_ok_or_error([&] {
    const SafeTensorsFile f = SafeTensorsFile::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    for (const std::string& name : f.names()) {
      const TensorInfo& t = f.info(name);
      FUZZ_CHECK(f.raw(name).size == static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype));
      FUZZ_CHECK(t.end <= size);
      prefixtune_fuzz::expect_ok_or_error([&] {
        if (dtype_is_floating(t.dtype)) {
          const auto v = f.load<float>(name, true);
          FUZZ_CHECK(v.numel() == t.numel());
          f.load<double>(name);
        } else {
          const auto v = f.load<std::int64_t>(name);
          FUZZ_CHECK(v.numel() == t.numel());
          f.load<std::int32_t>(name);
        }
      });
    }
  });
}
