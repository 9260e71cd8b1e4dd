#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The paper's ablations (examples/ablations.cpp) on the quickstart's base model and data set; the table, CSV and
# plots go to ablations-out/ (docs/ablations.md holds a committed run and what it shows). Extra arguments go to
# the program (e.g. --experiments lowdata --seeds 3). The base model is pretrained by scripts/quickstart.sh on
# first use.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${PREFIXTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prefixtune}
base="$cache/tiny-gpt2"
if [ ! -f "$base/model.safetensors" ]; then
  echo "== no base model in $base yet: running scripts/quickstart.sh first (it pretrains one)"
  scripts/quickstart.sh
fi
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j"$(nproc)" --target ablations
build/examples/ablations --model "$base" --out ablations-out "$@"
