#!/usr/bin/env bash
# Installs every build and test dependency from Debian 12's repositories (run as root or with sudo available).
# python3-torch runs the independent PyTorch reference the model tests compare against; python3-regex gives that
# reference its own copy of OpenAI's GPT-2 pre-tokenizer (the `score` check). clang and its runtime
# (libclang-rt-14-dev) build the libFuzzer targets (tests/fuzz, scripts/fuzz.sh).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(build-essential cmake ccache clang-format libeigen3-dev libopenblas-openmp-dev doctest-dev libbenchmark-dev
      nlohmann-json3-dev libcli11-dev python3-torch python3-regex clang libclang-rt-14-dev)
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}"; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}"
fi
