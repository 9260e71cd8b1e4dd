#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Proves that scripts/check_layering.py can fail: a small tree of headers with one include of each forbidden kind
# must be refused, naming each, and the same tree without them must pass.
set -euo pipefail
check="$(cd "$(dirname "$0")/../.." && pwd)/scripts/check_layering.py"
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
base=$tree/include/prefixtune
mkdir -p "$base"/{core,backend/cpu,backend/cuda,ops,models,prefix,generate}
header() { printf '#pragma once\n' >"$base/$1"; for inc in "${@:2}"; do printf '#include "prefixtune/%s"\n' "$inc" >>"$base/$1"; done; }
header core/tensor.hpp
header backend/cpu/gemm.hpp core/tensor.hpp
header backend/cuda/gemm.cuh core/tensor.hpp
header ops/linear.hpp backend/cpu/gemm.hpp
header models/kv_shape.hpp core/tensor.hpp
header models/gpt2.hpp ops/linear.hpp models/kv_shape.hpp
header models/bart.hpp models/kv_shape.hpp
header prefix/prefix.hpp models/kv_shape.hpp
header generate/gpt2_generate.hpp models/gpt2.hpp prefix/prefix.hpp
"$check" "$tree" >/dev/null || { echo "selftest: a clean tree was refused"; "$check" "$tree"; exit 1; }
# One violation of each rule.
header core/bad_up.hpp models/gpt2.hpp
header generate/bad_kernel.hpp backend/cpu/gemm.hpp
header backend/cuda/bad_cpu.cuh backend/cpu/gemm.hpp
header models/bart_bad.hpp models/gpt2.hpp
header prefix/bad_missing.hpp prefix/nowhere.hpp
out=$("$check" "$tree") && { echo "selftest: a tree with bad includes passed"; exit 1; }
for want in "core/bad_up.hpp:2: includes prefixtune/models/gpt2.hpp: models/ is a layer above core/" \
  "generate/bad_kernel.hpp:2: includes prefixtune/backend/cpu/gemm.hpp: generate/ reaches a kernel around ops/" \
  "backend/cuda/bad_cpu.cuh:2: includes prefixtune/backend/cpu/gemm.hpp: backend/cuda must not include backend/cpu" \
  "models/bart_bad.hpp:2: includes prefixtune/models/gpt2.hpp: model family 'bart' includes family 'gpt2'" \
  "prefix/bad_missing.hpp:2: includes prefixtune/prefix/nowhere.hpp, which does not exist" \
  "check_layering: 5 include(s) run against the layering"; do
  grep -qF "$want" <<<"$out" || { echo "selftest: missing '$want' in:"; echo "$out"; exit 1; }
done
echo "check_layering selftest: the clean tree passes, each of 5 bad includes is named"
