// SPDX-License-Identifier: MIT
// Attention over a KV cache (generation), for the layers above ops/: the row and size descriptions
// (detail::CachedAttentionRow, detail::CachedAttentionDims) and the raw-pointer kernels that generate/ calls as
// cached_attention_kernel(Device{}, ...) and cache_copy_slot_kernel(Device{}, ...). The CPU kernels come with
// this header; the CUDA ones with prefixtune/cuda.cuh (found by argument-dependent lookup on the device tag).
#pragma once

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/backend/cpu/cached_attention.hpp"
