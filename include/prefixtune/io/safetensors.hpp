// SPDX-License-Identifier: MIT
// safetensors (https://huggingface.co/docs/safetensors) reading through a validated memory map, and writing
// (atomic, byte-identical to the Python library's layout); F16/BF16 <-> float conversions with exact rounding.
// The pieces: dtype.hpp, safetensors_header.hpp, safetensors_read.hpp and safetensors_write.hpp.
#pragma once

#include "prefixtune/io/dtype.hpp"
#include "prefixtune/io/safetensors_header.hpp"
#include "prefixtune/io/safetensors_read.hpp"
#include "prefixtune/io/safetensors_write.hpp"
