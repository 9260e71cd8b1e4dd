#!/usr/bin/env bash
# The main job: builds the quickstart; on first use makes its base model (fetches the Brown corpus, adds generated
# restaurant descriptions without their tables, pretrains a tiny GPT-2 for 1600 steps; cached in
# ${PREFIXTUNE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/prefixtune}/tiny-gpt2); then
# prefix-tunes it on data/table2text and prints BLEU before and after (examples/quickstart.cpp). Extra arguments go
# to the quickstart (e.g. --steps 600, or --model DIR for your own HuggingFace GPT-2 folder).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${PREFIXTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prefixtune}
base="$cache/tiny-gpt2"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j"$(nproc)" --target quickstart_programs
model=("--model" "$base")
for a in "$@"; do
  if [ "$a" = "--model" ] || [ "$a" = "--random-base" ]; then model=(); fi
done
if [ ${#model[@]} -gt 0 ] && [ ! -f "$base/model.safetensors" ]; then
  echo "== first run: pretraining the base model (a tiny GPT-2, 1600 steps: about 6 minutes on 2 cores, cached in $base)"
  scripts/fetch_brown.sh "$cache/brown"
  # In-domain English: 16000 documents of 2-3 descriptions of one train-rule table each, no tables (docs/data.md).
  build/examples/make_table_to_text --out "$cache/descriptions" --train 0 --valid 0 --test 0 --descriptions 16000
  cat "$cache/brown/brown.txt" <(echo) "$cache/descriptions/descriptions.txt" > "$cache/pretrain-corpus.txt"
  # Always the full 1600 steps (no time budget: a slower machine takes longer, not fewer steps). OpenBLAS picks its
  # kernels by CPU, and different kernels round differently: on a CPU with AVX2 + FMA its Haswell kernels are
  # asked for (unless OPENBLAS_CORETYPE is already set), so that more machines pretrain the same weights. What still
  # varies (other CPUs, thread counts) is in the README.
  coretype=${OPENBLAS_CORETYPE:-}
  if [ -z "$coretype" ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then coretype=Haswell; fi
  env ${coretype:+OPENBLAS_CORETYPE=$coretype} build/examples/pretrain_tiny_gpt2 --corpus "$cache/pretrain-corpus.txt" \
    --vocab tests/data/gpt2-bpe --out "$base" --layers 4 --embd 128 --heads 4 --positions 128 --block 128 --batch 8 \
    --lr 6e-3 --warmup 30 --sampled-softmax 4096 --steps 1600
fi
build/examples/quickstart "${model[@]}" "$@"
