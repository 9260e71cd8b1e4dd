#!/bin/sh
# Generates the PyTorch reference into $1 (gpt2_prefix_reference.py, then variants_reference.py on the same folder,
# then bart_prefix_reference.py and llama_prefix_reference.py), or exits 77 (CTest: skipped) when Debian's
# python3-torch is missing.
set -e
if ! /usr/bin/python3 -c "import torch" >/dev/null 2>&1; then
  echo "python3-torch is not installed: the PyTorch parity tests are skipped"
  rm -rf "$1"
  exit 77
fi
/usr/bin/python3 "$(dirname "$0")/gpt2_prefix_reference.py" --out "$1"
/usr/bin/python3 "$(dirname "$0")/variants_reference.py" --out "$1"
/usr/bin/python3 "$(dirname "$0")/bart_prefix_reference.py" --out "$1"
exec /usr/bin/python3 "$(dirname "$0")/llama_prefix_reference.py" --out "$1"
