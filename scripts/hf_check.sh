#!/usr/bin/env bash
# prefixtune against the real transformers + PEFT (tests/reference/hf_check.py): GPT-2 and the Llama family built by
# transformers from small configs and saved sharded, PEFT prefix adapters, and `prefixtune score` / `generate` /
# `export-peft` on them compared with transformers+PEFT. Needs python3 with torch, transformers and peft (the GPU
# machine's image has them; Debian's does not); runs on the CPU in about a minute.
#   scripts/hf_check.sh [BUILD_DIR]   (default build; prefixtune_cli is built there first)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [[ -f "$build/CMakeCache.txt" ]]; then cmake --build "$build" --target prefixtune_cli >/dev/null; fi
python3 -c "import torch, transformers, peft" 2>/dev/null || { echo "hf_check: python3 lacks torch, transformers or peft"; exit 77; }
exec python3 tests/reference/hf_check.py --cli "$build/tools/prefixtune/prefixtune" "${@:2}"
