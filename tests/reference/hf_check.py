#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""prefixtune against the real transformers + PEFT (issue 23's check for the machine whose image has them).

For GPT-2 and every Llama family (llama with llama3 rope scaling, mistral with an explicit head_dim, qwen2 with
q/k/v biases and a tied head, qwen3 with q/k norms and head_dim != hidden / heads), from small configs:
  1. a real ``transformers`` model (random init, ``save_pretrained`` with sharding) and a real PEFT prefix adapter
     (``get_peft_model(model, PrefixTuningConfig(prefix_projection=True))``, its encoder randomized so the prefix
     matters, ``save_pretrained``);
  2. ``prefixtune score`` on pre-tokenized lines against transformers+PEFT's loss of each line (one at a time: PEFT
     drops ``position_ids``, so its left-padded batches are not row-independent), and ``prefixtune generate``
     (greedy) against ``peft_model.generate``;
  3. an adapter exported by ``prefixtune export-peft`` loaded by ``PeftModel.from_pretrained``: the same loss.
Everything runs in float32 on the CPU (transformers 5 would keep BF16 checkpoints in BF16; here the checkpoints
are float32). BART is not here: PEFT's encoder-decoder prefix is not the paper's three prefixes.

    python3 tests/reference/hf_check.py --cli build/tools/prefixtune/prefixtune [--out DIR]

Prints one JSON line per check and a summary; exits 1 when a check fails. Needs torch, transformers, peft.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

P = 4            # prefix length
MID = 16         # PEFT encoder_hidden_size
NEW = 8          # greedy tokens
LOSS_TOL = 2e-4  # relative, summed NLL (float32 on both sides)

FAMILIES = {
    "gpt2": dict(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=50257),
    "llama": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=97, attention_bias=True,
                  tie_word_embeddings=False, rope_theta=10000.0, eos_token_id=[2, 5], bos_token_id=1,
                  rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "mistral": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=12, max_position_embeddings=64, vocab_size=97,
                    sliding_window=None, tie_word_embeddings=False, eos_token_id=2, bos_token_id=1),
    "qwen2": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=97, tie_word_embeddings=True,
                  use_sliding_window=False, eos_token_id=2, bos_token_id=1),
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=64, vocab_size=97,
                  tie_word_embeddings=True, use_sliding_window=False, eos_token_id=2, bos_token_id=1),
}


def make_model(family, folder, seed):
    """A random transformers model of `family`, scaled so that the prefix and the inputs matter, saved sharded."""
    import transformers
    cls = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[family]
    config = cls(**FAMILIES[family])
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2 if "emb" not in name and "wte" not in name else 0.5)
            elif "norm" in name or "ln_" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(folder, max_shard_size="200KB", safe_serialization=True)
    if family == "gpt2":  # our GPT-2 loader wants the tokenizer files beside the weights
        data = os.path.join(os.path.dirname(__file__), "..", "data", "gpt2-bpe")
        shutil.copy(os.path.join(data, "encoder.json"), os.path.join(folder, "vocab.json"))
        shutil.copy(os.path.join(data, "vocab.bpe"), os.path.join(folder, "merges.txt"))
    return model


def make_adapter(model, folder, seed):
    """A PEFT prefix adapter with a randomized MLP, saved as PEFT saves it (the projected table)."""
    from peft import PrefixTuningConfig, get_peft_model
    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=True,
                             encoder_hidden_size=MID)
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in peft_model.prompt_encoder.parameters():
            p.normal_(0.0, 0.5)
    peft_model.save_pretrained(folder)
    return peft_model.eval()


def hf_losses(peft_model, lines):
    """Summed NLL and label count of every line, one line at a time."""
    out = []
    for line in lines:
        ids = torch.tensor([line["input_ids"]])
        labels = torch.tensor([line.get("labels", line["input_ids"])])
        with torch.no_grad():
            logits = peft_model(input_ids=ids).logits[0, :-1].double()
        targets = labels[0, 1:]
        keep = targets != -100
        nll = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
        out.append((float(nll), int(keep.sum())))
    return out


def run_cli(cli, args, stdin=None):
    r = subprocess.run([cli] + args, input=stdin, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("prefixtune %s failed: %s" % (" ".join(args), r.stderr[-2000:]))
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def check_family(family, cli, root, seed, results):
    folder, adapter = os.path.join(root, family), os.path.join(root, family + "_peft")
    model = make_model(family, folder, seed)
    peft_model = make_adapter(model, adapter, seed)
    V = FAMILIES[family]["vocab_size"]
    g = torch.Generator().manual_seed(seed + 2)
    lines = []
    for n in (7, 11, 5):
        ids = torch.randint(3, min(V, 1000), (n,), generator=g).tolist()
        labels = [-100, -100] + ids[2:]
        lines.append({"input_ids": ids, "labels": labels})
    lines.append({"input_ids": torch.randint(3, min(V, 1000), (6,), generator=g).tolist()})
    data = os.path.join(root, family + "_data.jsonl")
    with open(data, "w") as f:
        f.write("".join(json.dumps(l) + "\n" for l in lines))
    want = hf_losses(peft_model, lines)
    got = run_cli(cli, ["score", "--model", folder, "--prefix", adapter, "--data", data, "--batch-size", "2"])
    worst = max(abs(g_["loss"] - w[0]) / max(1e-12, abs(w[0])) for g_, w in zip(got, want))
    ok = len(got) == len(want) and all(g_["tokens"] == w[1] for g_, w in zip(got, want)) and worst < LOSS_TOL
    results.append({"family": family, "check": "score vs transformers+PEFT", "worst_rel": worst, "ok": ok})
    # greedy generation, one prompt at a time
    prompts = [l["input_ids"][:4] for l in lines[:3]]
    eos = FAMILIES[family].get("eos_token_id", 50256)
    eos = eos if isinstance(eos, list) else [eos]
    got = run_cli(cli, ["generate", "--model", folder, "--prefix", adapter, "--max-new-tokens", str(NEW)],
                  "".join(json.dumps({"input_ids": p}) + "\n" for p in prompts))
    same = True
    for p, line in zip(prompts, got):
        with torch.no_grad():
            out = peft_model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                      max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=eos[0])
        new = out[0, len(p):].tolist()
        if new and new[-1] in eos:
            new = new[:-1]
        same = same and new == line["ids"]
    results.append({"family": family, "check": "greedy generate vs peft_model.generate", "ok": same})
    # our export loads in PEFT and gives the same losses
    from peft import PeftModel
    exported = os.path.join(root, family + "_exported")
    run_cli(cli, ["export-peft", "--model", folder, "--prefix", adapter, "--out", exported])
    reloaded = PeftModel.from_pretrained(make_model(family, os.path.join(root, family + "_again"), seed), exported)
    again = hf_losses(reloaded.eval(), lines)
    worst = max(abs(a[0] - w[0]) / max(1e-12, abs(w[0])) for a, w in zip(again, want))
    results.append({"family": family, "check": "export-peft loads in PeftModel", "worst_rel": worst,
                    "ok": worst < LOSS_TOL})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True, help="the prefixtune binary")
    ap.add_argument("--out", default=None, help="keep the folders here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(FAMILIES))
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() // 2))
    import peft
    import transformers
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__}))
    root = a.out or tempfile.mkdtemp(prefix="hf_check_")
    results = []
    for family in a.families.split(","):
        try:
            check_family(family, a.cli, root, a.seed, results)
        except Exception as e:  # one family's failure (e.g. a PEFT without GQA support) does not hide the others
            results.append({"family": family, "check": "ran", "ok": False, "error": repr(e)[:500]})
    for r in results:
        print(json.dumps(r))
    failed = [r for r in results if not r["ok"]]
    print("hf_check: %d checks, %d failed" % (len(results), len(failed)))
    if not a.out:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
