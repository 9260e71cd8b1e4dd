#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fails (exit 1, one line per violation) unless every #include "prefixtune/..." under include/ runs downward.

The layers of include/prefixtune/, lowest first (docs/internals.md and ARCHITECTURE.md): a header may include its
own layer and the layers before it, never one after it. On top of the order:
  - backend/ is reached only through ops/: nothing above ops/ includes a backend/ header;
  - backend/cuda/ never includes backend/cpu/, backend/cpu/ never includes backend/cuda/, and the common headers
    directly in backend/ never include backend/cuda/;
  - a model family (models/<family>*.hpp: gpt2, bart, ...) never includes another family; the shared files
    models/kv_shape.hpp, prefix_kv.hpp, positions.hpp and hf_reader.hpp belong to no family;
  - every included prefixtune header exists.
The umbrella headers prefixtune.hpp, cuda.hpp and cuda.cuh may include anything.

Usage: scripts/check_layering.py [ROOT]   (ROOT: the repository, default: this script's parent folder)
"""
import pathlib
import re
import sys

LAYERS = ["core", "backend", "ops", "autograd", "io", "models", "prefix", "train", "generate", "metrics"]
UMBRELLAS = {"prefixtune.hpp", "cuda.hpp", "cuda.cuh"}
MODELS_SHARED = {"kv_shape.hpp", "prefix_kv.hpp", "positions.hpp", "hf_reader.hpp"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"prefixtune/([^"]+)"', re.M)


def family(name):
    """The model family of a file in models/: the part of its name before the first '_' or '.'."""
    return re.split(r"[_.]", name, maxsplit=1)[0]


def check(root):
    base = root / "include" / "prefixtune"
    errors = []
    headers = sorted(p for p in base.rglob("*") if p.suffix in (".hpp", ".cuh", ".h"))
    if not headers:
        return [f"{base}: no headers found"]
    for path in headers:
        rel = path.relative_to(base).as_posix()
        parts = rel.split("/")
        for lineno, target in ((path.read_text().count("\n", 0, m.start()) + 1, m.group(1))
                               for m in INCLUDE.finditer(path.read_text())):
            where = f"include/prefixtune/{rel}:{lineno}: includes prefixtune/{target}"
            if not (base / target).is_file():
                errors.append(f"{where}, which does not exist")
                continue
            if rel in UMBRELLAS:
                continue
            tparts = target.split("/")
            if parts[0] not in LAYERS or tparts[0] not in LAYERS:
                unknown = parts[0] if parts[0] not in LAYERS else tparts[0]
                errors.append(f"{where}: '{unknown}/' is not a layer ({', '.join(LAYERS)}); add it to this script")
                continue
            src, dst = LAYERS.index(parts[0]), LAYERS.index(tparts[0])
            if dst > src:
                errors.append(f"{where}: {tparts[0]}/ is a layer above {parts[0]}/")
            if tparts[0] == "backend" and src > LAYERS.index("ops"):
                errors.append(f"{where}: {parts[0]}/ reaches a kernel around ops/ (only backend/ and ops/ include "
                              "backend/ headers)")
            if parts[0] == "backend" and tparts[0] == "backend":
                sub = parts[1] if len(parts) > 2 else "common"
                tsub = tparts[1] if len(tparts) > 2 else "common"
                if (sub, tsub) in (("cuda", "cpu"), ("cpu", "cuda"), ("common", "cuda")):
                    errors.append(f"{where}: backend/{sub} must not include backend/{tsub}")
            if parts[0] == "models" and tparts[0] == "models":
                if tparts[1] not in MODELS_SHARED and parts[1] not in MODELS_SHARED and \
                        family(parts[1]) != family(tparts[1]):
                    errors.append(f"{where}: model family '{family(parts[1])}' includes family "
                                  f"'{family(tparts[1])}'")
                elif parts[1] in MODELS_SHARED and tparts[1] not in MODELS_SHARED:
                    errors.append(f"{where}: the shared models/{parts[1]} includes a model family")
    return errors


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"check_layering: {len(errors)} include(s) run against the layering")
        return 1
    print("check_layering: every include runs downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
