#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch baseline for bench_generate's batch-1 workload: greedy decoding of GPT-2 small with a KV cache.

GPT-2 small shape (12 layers, C=768, 12 heads, V=50257, n_positions=1024), random weights, float32, eager mode,
no autograd (torch.no_grad, as HuggingFace's generate).  Written the way HuggingFace's GPT2LMHeadModel decodes
with use_cache=True: Conv1D = addmm, per layer the past keys / values (B, NH, past, HS) are concatenated with the
new ones every step (torch.cat, as GPT2Attention with layer_past), scores = q k^T / sqrt(HS), causal mask only
while the prompt runs, softmax, @ v; gelu_new; logits = ln_f(h) @ wte^T.  Prompt 32 random tokens, then exactly
64 new tokens (greedy argmax, the end token 50256 banned, as bench_generate's min_new_tokens does).  Only the last
position's logits are computed in the prompt pass (HF computes all of them: this favours PyTorch slightly).

--prefix P (default 0) serves a merged prefix the way PEFT does: its (NH, P, HS) keys / values per layer are the
initial past_key_values and real tokens take positions P.. .

--batch N (default 1) decodes N rows at once, each with its own random prompt and (with --prefix) its own prefix:
the 8-users-in-one-batch workload.  --device cuda runs on the GPU.

    /usr/bin/python3 benchmarks/torch_generate.py [--threads 2] [--runs 3] [--prefix 0] [--batch 1] [--device cpu]

The last line of stdout is JSON: tokens_per_s (new tokens per second, mean over the timed runs), run_ms,
run_ms_min, ms_per_token, threads, torch, and the config.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from torch_gpt2_weights import Gpt2Weights, gelu_new


class GPT2(Gpt2Weights):
    def forward(self, ids, pos0, past):
        """ids (B, T) at positions pos0..pos0+T-1; past: per layer (k, v) each (B, NH, past_len, HS) or None.
        Returns the last position's logits (B, V) and the new past (the old one with these T tokens appended)."""
        Bn, Tn = ids.shape
        C, NH, HS = self.C, self.NH, self.HS
        h = self.wte[ids] + self.wpe[pos0:pos0 + Tn][None]
        scale = 1.0 / math.sqrt(HS)
        presents = []
        for i, p in enumerate(self.layers):
            a = F.layer_norm(h, (C,), p["ln1_w"], p["ln1_b"], 1e-5)
            qkv = torch.addmm(p["attn_b"], a.view(-1, C), p["attn_w"]).view(Bn, Tn, 3 * C)
            q, k, v = qkv.split(C, dim=2)
            q, k, v = [t.view(Bn, Tn, NH, HS).permute(0, 2, 1, 3) for t in (q, k, v)]
            if past[i] is not None:  # GPT2Attention with layer_past
                k = torch.cat((past[i][0], k), dim=-2)
                v = torch.cat((past[i][1], v), dim=-2)
            presents.append((k, v))
            s = torch.matmul(q, k.transpose(-1, -2)) * scale
            if Tn > 1:  # causal among the new tokens; everything in the past is visible
                S = k.shape[-2]
                causal = torch.ones(Tn, S, dtype=torch.bool, device=s.device).tril(S - Tn)
                s = torch.where(causal, s, torch.tensor(torch.finfo(s.dtype).min, device=s.device))
            o = torch.matmul(torch.softmax(s, dim=-1), v)
            o = o.permute(0, 2, 1, 3).reshape(Bn * Tn, C)
            h = h + torch.addmm(p["proj_b"], o, p["proj_w"]).view(Bn, Tn, C)
            m = F.layer_norm(h, (C,), p["ln2_w"], p["ln2_b"], 1e-5)
            m = gelu_new(torch.addmm(p["fc_b"], m.view(-1, C), p["fc_w"]))
            h = h + torch.addmm(p["fc2_b"], m, p["fc2_w"]).view(Bn, Tn, C)
        last = F.layer_norm(h[:, -1], (C,), self.lnf_w, self.lnf_b, 1e-5)
        return last @ self.wte.t(), presents


def greedy(model, prompt, new_tokens, prefix_kv, eos):
    """prompt (B, T); prefix_kv: per layer (k, v) (B, NH, P, HS) (row b's own prefix) or None. Returns the new
    token ids (B, new_tokens)."""
    past = prefix_kv if prefix_kv is not None else [None] * model.L
    pos = prefix_kv[0][0].shape[2] if prefix_kv is not None else 0
    ids, out = prompt, []
    for _ in range(new_tokens):
        logits, past = model.forward(ids, pos, past)
        pos += ids.shape[1]
        logits[:, eos] = -float("inf")  # exactly new_tokens tokens (min_new_tokens = max_new_tokens)
        ids = logits.argmax(dim=-1, keepdim=True)
        out.append(ids)
    out = torch.cat(out, dim=1)
    if out.is_cuda:
        torch.cuda.synchronize()
    return out


def time_generation(run, runs, out_shape):
    """One warm-up call of run() (greedy's new ids, out_shape (B, new tokens)), then `runs` timed calls, all
    without autograd; prints the run times and returns the timing fields of the JSON line (tokens_per_s = new
    tokens per second, run_ms mean and min, ms_per_token)."""
    with torch.no_grad():
        t0 = time.perf_counter()
        run()  # warm-up
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
    assert tuple(out.shape) == tuple(out_shape), (out.shape, out_shape)
    run_s = sum(times) / len(times)
    print("warm-up run %.1f ms; run times ms: %s" % (warm_s * 1e3, ", ".join("%.1f" % (t * 1e3) for t in times)))
    return {
        "tokens_per_s": round(out_shape[0] * out_shape[1] / run_s, 3),
        "run_ms": round(run_s * 1e3, 2),
        "run_ms_min": round(min(times) * 1e3, 2),
        "ms_per_token": round(run_s * 1e3 / out_shape[1], 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed generate calls after one warm-up call")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=0, help="merged prefix length P as past_key_values (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1, help="rows decoded together, each with its own prefix")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    L, C, NH, V, NP, EOS = 12, 768, 12, 50257, 1024, 50256
    Bn, dev = args.batch, args.device
    model = GPT2(L, C, NH, V, NP, gen).to(dev)
    prompt = torch.randint(0, EOS, (Bn, args.prompt), generator=gen).to(dev)
    prefix_kv = None
    if args.prefix > 0:
        prefix_kv = [((torch.randn(Bn, NH, args.prefix, C // NH, generator=gen) * 0.5).to(dev),
                      (torch.randn(Bn, NH, args.prefix, C // NH, generator=gen) * 0.5).to(dev)) for _ in range(L)]

    fields = time_generation(lambda: greedy(model, prompt, args.new_tokens, prefix_kv, EOS), args.runs,
                             (Bn, args.new_tokens))
    print(json.dumps({
        **fields,
        "threads": args.threads,
        "torch": torch.__version__,
        "device": dev,
        "workload": "generate", "batch": Bn, "prompt": args.prompt, "new_tokens": args.new_tokens,
        "prefix": args.prefix, "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
