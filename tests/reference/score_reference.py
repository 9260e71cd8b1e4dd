#!/usr/bin/python3
"""Checks `prefixtune score` against an independent PyTorch computation, from raw text to summed NLL.

Builds a tiny random GPT-2 with GPT-2's real vocabulary in a HuggingFace folder, an E2E data file with awkward
text (contractions, digits, accents, CJK, emoji, runs of spaces) and a PEFT PREFIX_TUNING adapter; runs the
command with and without the adapter; and recomputes every example in float64 here:

- tokenization: OpenAI's GPT-2 encoder algorithm (its regex over the `regex` module, byte-to-unicode map, merge
  ranks), written here from the published description, not taken from prefixtune;
- the example text ' ' + source + ' <|endoftext|> ' + target + ' <|endoftext|>' with <|endoftext|> as id 50256,
  labels on every token after the first 50256 (the target and the closing 50256);
- the model: tests/reference/gpt2_prefix_reference.py's plain-PyTorch GPT-2; the adapter's prompt_embeddings
  [P, 2*L*C] read as PEFT does (view (P, 2L, NH, HS), layer l key = 2l, value = 2l + 1); real tokens at positions
  P..P+T-1 with a prefix (as PEFT/HF compute them from the past length), 0..T-1 without.

Exit status 0: every loss within 2e-5 relative and every token count equal; 1: a mismatch; 77: python3-torch or
python3-regex is missing (CTest: skipped).

    /usr/bin/python3 tests/reference/score_reference.py --cli build/tools/prefixtune/prefixtune --bpe tests/data/gpt2-bpe \
        --work /tmp/score_ref
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

try:
    import regex
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print("skipped: %s (install python3-torch and python3-regex)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_prefix_reference as ref  # noqa: E402

EOT = 50256
CFG = dict(n_layer=2, n_embd=16, n_head=2, vocab_size=50257, n_positions=128, layer_norm_epsilon=1e-5)
P = 4
REL_TOL = 2e-5

DATA = [
    ("name : The Eagle | Type : coffee shop | food : French | priceRange : £20-25",
     "The Eagle is a French coffee shop costing £20-25 ."),
    ("name : Café Rouge | area : riverside", "Café Rouge's on the riverside, isn't it?"),
    ("name : 東京 Sushi | customer rating : 5 out of 5", "東京 Sushi is rated 5 out of 5 🍣 ."),
    ("name : Zizzi", "Zizzi   serves  food\tand drinks ."),
    ("name : Blue Spice | near : Burger King | eatType : pub",
     "Near Burger King there's a pub called Blue Spice, they'll serve you 1990s-style 123456 dishes ."),
]


# ----------------------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE (OpenAI's algorithm)
# ----------------------------------------------------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Bpe:
    PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, encoder_path, merges_path):
        with open(encoder_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token):
        word = list(token)
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text):
        ids = []
        for piece in self.PAT.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


def example_ids(bpe, source, target):
    """The paper's example with <|endoftext|> as the special token; label start = index after the first EOT."""
    ids = bpe.encode(" " + source + " ") + [EOT]
    first_label = len(ids)
    ids += bpe.encode(" " + target + " ") + [EOT]
    return ids, first_label


# ----------------------------------------------------------------------------------------------------------
# the reference score
# ----------------------------------------------------------------------------------------------------------
def score(W, ids, first_label, prefix_kv):
    offset = 0 if prefix_kv is None else prefix_kv[0][0].shape[1]
    x = torch.tensor([ids])
    pos = torch.arange(offset, offset + len(ids))[None]
    logits = ref.gpt2_forward(W, x, torch.ones_like(x), pos, prefix_kv)[0]  # (T, V) float64
    logp = torch.log_softmax(logits, dim=-1)
    # token t (t >= first_label) is predicted at position t - 1
    nll = -sum(float(logp[t - 1, ids[t]]) for t in range(first_label, len(ids)))
    return nll, len(ids) - first_label


def run_cli(cli, args):
    r = subprocess.run([cli] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print("prefixtune %s failed (%d):\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        sys.exit(1)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--bpe", required=True, help="folder with encoder.json and vocab.bpe")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()

    ref.CFG.clear()
    ref.CFG.update(CFG)
    shutil.rmtree(args.work, ignore_errors=True)
    model = os.path.join(args.work, "model")
    adapter = os.path.join(args.work, "adapter")
    os.makedirs(model)
    os.makedirs(adapter)

    g = torch.Generator().manual_seed(11)
    W32 = ref.make_weights(g)
    W32["wte.weight"] *= 50  # sharper next-token distributions than std 0.02 gives: a stronger check
    ref.write_safetensors(os.path.join(model, "model.safetensors"),
                          [("transformer." + k, v, "F32") for k, v in W32.items()])
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(dict(CFG, model_type="gpt2", activation_function="gelu_new"), f)
    shutil.copy(os.path.join(args.bpe, "encoder.json"), os.path.join(model, "vocab.json"))
    shutil.copy(os.path.join(args.bpe, "vocab.bpe"), os.path.join(model, "merges.txt"))

    L, C, NH = CFG["n_layer"], CFG["n_embd"], CFG["n_head"]
    table = (torch.randn(P, 2 * L * C, generator=g) * 2.0).to(torch.float32)
    ref.write_safetensors(os.path.join(adapter, "adapter_model.safetensors"), [("prompt_embeddings", table, "F32")])
    with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": P,
                   "token_dim": C, "num_layers": L, "num_attention_heads": NH, "num_transformer_submodules": 1,
                   "prefix_projection": False, "inference_mode": True}, f)

    data = os.path.join(args.work, "data.txt")
    with open(data, "w", encoding="utf-8") as f:
        f.write("".join("%s||%s\n" % pair for pair in DATA))

    W = {k: v.to(torch.float64) for k, v in W32.items()}
    kv = table.to(torch.float64).view(P, 2 * L, NH, C // NH).permute(1, 2, 0, 3)
    prefix_kv = [(kv[2 * i], kv[2 * i + 1]) for i in range(L)]
    bpe = Bpe(os.path.join(args.bpe, "encoder.json"), os.path.join(args.bpe, "vocab.bpe"))

    failures = 0
    for label, extra, pkv in (("no prefix", [], None), ("PEFT prefix", ["--prefix", adapter], prefix_kv)):
        got = run_cli(args.cli, ["score", "--model", model, "--data", data, "--batch-size", "2"] + extra)
        if len(got) != len(DATA):
            print("%s: %d score lines for %d examples" % (label, len(got), len(DATA)))
            return 1
        for i, (src, tgt) in enumerate(DATA):
            ids, first = example_ids(bpe, src, tgt)
            want, n = score(W, ids, first, pkv)
            rel = abs(got[i]["loss"] - want) / abs(want)
            ok = got[i]["index"] == i and got[i]["tokens"] == n and rel <= REL_TOL
            failures += not ok
            print("%-11s example %d: tokens %d (ref %d), loss %.6f (ref %.6f), rel diff %.2e %s"
                  % (label, i, got[i]["tokens"], n, got[i]["loss"], want, rel, "ok" if ok else "MISMATCH"))
    print("score_reference: %s" % ("all scores match" if failures == 0 else "%d mismatches" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
