#!/usr/bin/python3
"""Checks that the folder pretrain_tiny_gpt2 writes is a real HuggingFace GPT-2 that gives the same loss in PyTorch.

Runs examples/pretrain_tiny_gpt2 for a few steps (2 layers, sampled softmax, F32 output) on a small text, then
reads the folder it wrote with nothing from prefixtune: config.json (HF GPT-2 keys), model.safetensors (parsed here;
HF names, Conv1D layout) and the validation blocks it saved (--validation-out), and recomputes the mean next-token
loss over those blocks with tests/reference/gpt2_prefix_reference.py's plain-PyTorch GPT-2 in float64. It must
equal the `validation_loss` the program recorded in pretrain.json (relative 2e-5: our evaluation runs in float32).
A second run writes F16 and must give the loss of the F32 weights rounded to F16 (same tolerance, recomputed here).

Exit status 0: match; 1: a mismatch or a malformed folder; 77: python3-torch is missing (CTest: skipped).

    /usr/bin/python3 tests/reference/pretrain_reference.py --pretrain build/examples/pretrain_tiny_gpt2 \
        --corpus tests/data/gpt2-bpe/README.md --vocab tests/data/gpt2-bpe --work /tmp/pretrain_ref
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print("skipped: %s (install python3-torch)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_prefix_reference as ref  # noqa: E402

REL_TOL = 2e-5
CONFIG_KEYS = ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "layer_norm_epsilon")


def pretrain(args, out, dtype):
    val = out + ".validation.json"
    cmd = [args.pretrain, "--corpus", args.corpus, "--vocab", args.vocab, "--out", out, "--layers", "2", "--embd",
           "32", "--heads", "2", "--positions", "32", "--block", "16", "--batch", "4", "--steps", "6", "--warmup",
           "2", "--lr", "1e-2", "--val-fraction", "0.1", "--sampled-softmax", "512", "--sample-tokens", "0",
           "--dtype", dtype, "--validation-out", val]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(val) as f:
        return json.load(f)


def load_folder(out):
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config.get("model_type") == "gpt2", config
    ref.CFG.clear()
    ref.CFG.update({k: config[k] for k in CONFIG_KEYS})
    header, tensors = ref.read_safetensors(os.path.join(out, "model.safetensors"))
    W = {}
    for name, (dtype, t) in tensors.items():
        key = name[len("transformer."):] if name.startswith("transformer.") else name
        W[key] = t.to(torch.float64)
    dtypes = sorted({d for d, _ in tensors.values()})
    for name in ("vocab.json", "merges.txt", "pretrain.json"):
        assert os.path.exists(os.path.join(out, name)), "%s: no %s" % (out, name)
    with open(os.path.join(out, "pretrain.json")) as f:
        record = json.load(f)
    return W, dtypes, record


def mean_loss(W, blocks):
    ids = torch.tensor(blocks["blocks"], dtype=torch.long)  # (N, T + 1)
    x, y = ids[:, :-1], ids[:, 1:]
    n, t = x.shape
    logits = ref.gpt2_forward(W, x, torch.ones(n, t, dtype=torch.long), torch.arange(t)[None].expand(n, t))
    return torch.nn.functional.cross_entropy(logits.reshape(n * t, -1), y.reshape(-1)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain", required=True, help="the pretrain_tiny_gpt2 program")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    failures = 0
    out32 = os.path.join(args.work, "tiny_f32")
    blocks = pretrain(args, out32, "f32")
    W32, dtypes, record = load_folder(out32)
    ours, want = record["validation_loss"], mean_loss(W32, blocks)
    rel = abs(ours - want) / abs(want)
    ok = dtypes == ["F32"] and len(blocks["blocks"]) == record["validation_blocks"] and rel <= REL_TOL
    failures += not ok
    print("F32: %d validation blocks of %d, loss %.7f (PyTorch %.7f), rel diff %.2e %s"
          % (len(blocks["blocks"]), blocks["block"], ours, want, rel, "ok" if ok else "MISMATCH"))

    # F16: the same seeded run; the stored weights must be the F32 ones rounded to F16.
    out16 = os.path.join(args.work, "tiny_f16")
    pretrain(args, out16, "f16")
    W16, dtypes16, _ = load_folder(out16)
    same = all(torch.equal(W16[k], W32[k].to(torch.float16).to(torch.float64)) for k in W32)
    want16 = mean_loss(W16, blocks)
    ok = dtypes16 == ["F16"] and same and sorted(W16) == sorted(W32)
    failures += not ok
    print("F16: weights are the F32 ones rounded: %s; PyTorch loss %.7f (F32 %.7f) %s"
          % (same, want16, want, "ok" if ok else "MISMATCH"))
    print("pretrain_reference: %s" % ("ok" if failures == 0 else "%d mismatches" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
