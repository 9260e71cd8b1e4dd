// SPDX-License-Identifier: MIT
// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define PREFIXTUNE_HOST_DEVICE __host__ __device__
#else
#define PREFIXTUNE_HOST_DEVICE
#endif

#define PREFIXTUNE_VERSION_MAJOR 0
#define PREFIXTUNE_VERSION_MINOR 1
#define PREFIXTUNE_VERSION_PATCH 0
