#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch baseline for bench_llama: the Llama family on the Qwen2.5-0.5B configuration, in plain PyTorch.

A compact Qwen2-style decoder written the way transformers' Qwen2 runs in eager mode: 24 layers, C=896, 14 query
heads over 2 K/V heads of 64 (GQA by repeat_kv), fused q|k|v projection with biases, RMSNorm (eps 1e-6), rotate-half
RoPE (theta 1e6), SwiGLU MLP (4864), LM head tied to the embedding (V=151936); random frozen weights (N(0, 0.02),
zero biases, unit norms, as random_llama), float32, eval mode.

--workload train: W1, one prefix-tuning step.  A PEFT-style PrefixEncoder (Embedding(P, D) -> Linear(D, mid) ->
tanh -> Linear(mid, 2*L*D), D = KVH*HD = 128, P=10, mid=512) whose table (P, 2*L*D) is viewed (P, 2L, KVH, HD) and
permuted to (2L, KVH, P, HD): slot 2i is layer i's key, 2i+1 its value; as PEFT injects them (past_key_values),
prefix keys are not rotated, and real tokens take positions P..P+T-1, attend to all P slots and causally among
themselves.  B=4, T=128, loss on every position: logits = h @ embed^T, F.cross_entropy(reduction="sum") / B;
backward reaches the encoder only; AdamW (lr 5e-5) on it.  Same JSON fields as torch_train_step.py.

--workload generate: greedy decoding with a KV cache (torch.no_grad; per layer the past keys / values (B, KVH,
past, HD) are concatenated with the new ones every step, as transformers' DynamicCache), prompt 32 random tokens,
exactly 64 new tokens (the end token V-1 banned, as bench_llama's min_new_tokens does); only the last position's
logits are computed.  --prefix P serves a merged prefix as PEFT does (its per-layer (KVH, P, HD) keys / values are
the initial past_key_values; real tokens from position P); --batch N decodes N rows at once, each with its own
prompt and prefix (the 8-users-in-one-batch workload).  Same JSON fields as torch_generate.py, plus the memory.

    /usr/bin/python3 benchmarks/torch_llama.py --workload train [--threads 2] [--steps 2]
    /usr/bin/python3 benchmarks/torch_llama.py --workload generate [--threads 2] [--runs 2] [--prefix 0] [--batch 1]

The last line of stdout is JSON; both workloads report the memory as bench_llama does: peak_rss_mb (VmHWM restarted
once the model is built: the workload with the model resident, without the random weights' construction),
idle_rss_mb (Python and libtorch loaded, before the model), peak_rss_above_idle_mb, and ru_maxrss_mb (the whole
process's peak).
"""

import argparse
import json
import math
import resource

import torch
import torch.nn.functional as F

from torch_generate import greedy, time_generation
from torch_train_step import status_mb, time_steps

# Qwen2.5-0.5B's config.json (the fields the forward pass reads).
QWEN25_05B = dict(L=24, C=896, NH=14, KVH=2, HD=64, I=4864, V=151936, theta=1e6, eps=1e-6)


def rms_norm(x, w, eps):
    """transformers' Qwen2RMSNorm (float32 throughout here)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def repeat_kv(x, groups):
    """(B, KVH, S, HD) -> (B, KVH * groups, S, HD): each K/V head serves `groups` query heads."""
    if groups == 1:
        return x
    Bn, KVH, S, HD = x.shape
    return x[:, :, None].expand(Bn, KVH, groups, S, HD).reshape(Bn, KVH * groups, S, HD)


class Qwen2:
    """Frozen weights as plain tensors (requires_grad False), nn.Linear's (out, in) layout, applied with F.linear."""

    def __init__(self, cfg, gen):
        self.__dict__.update(cfg)
        L, C, NH, KVH, HD, I, V = (cfg[k] for k in ("L", "C", "NH", "KVH", "HD", "I", "V"))
        W = (NH + 2 * KVH) * HD

        def normal(*shape):
            return torch.randn(*shape, generator=gen) * 0.02

        self.embed = normal(V, C)  # also the LM head (tied)
        self.layers = [dict(in_norm=torch.ones(C), qkv_w=normal(W, C), qkv_b=torch.zeros(W), o_w=normal(C, NH * HD),
                            post_norm=torch.ones(C), gate_w=normal(I, C), up_w=normal(I, C), down_w=normal(C, I))
                       for _ in range(L)]
        self.norm = torch.ones(C)
        self.inv_freq = 1.0 / (cfg["theta"] ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))

    def to(self, dev):
        self.embed, self.norm, self.inv_freq = self.embed.to(dev), self.norm.to(dev), self.inv_freq.to(dev)
        self.layers = [{k: t.to(dev) for k, t in p.items()} for p in self.layers]
        return self

    def rope(self, pos):
        """cos, sin (T, HD) of positions pos (T)."""
        freqs = pos[:, None].float() * self.inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def layer(self, i, h, cos, sin, past, mask):
        """Decoder layer i on h (B, T, C); past: (k, v) each (B, KVH, S, HD) (prefix and / or cache) or None; mask:
        additive (T, S + T) or None.  Returns the new h and this layer's keys / values with the T tokens appended."""
        p = self.layers[i]
        Bn, Tn, _ = h.shape
        NH, KVH, HD = self.NH, self.KVH, self.HD
        a = rms_norm(h, p["in_norm"], self.eps)
        q, k, v = F.linear(a, p["qkv_w"], p["qkv_b"]).split([NH * HD, KVH * HD, KVH * HD], dim=-1)
        q = q.view(Bn, Tn, NH, HD).transpose(1, 2)
        k = k.view(Bn, Tn, KVH, HD).transpose(1, 2)
        v = v.view(Bn, Tn, KVH, HD).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        groups = NH // KVH
        s = torch.matmul(q, repeat_kv(k, groups).transpose(-1, -2)) * (1.0 / math.sqrt(HD))
        if mask is not None:
            s = s + mask
        o = torch.matmul(torch.softmax(s, dim=-1), repeat_kv(v, groups))
        h = h + F.linear(o.transpose(1, 2).reshape(Bn, Tn, NH * HD), p["o_w"])
        m = rms_norm(h, p["post_norm"], self.eps)
        h = h + F.linear(F.silu(F.linear(m, p["gate_w"])) * F.linear(m, p["up_w"]), p["down_w"])
        return h, (k, v)

    def causal_mask(self, Tn, past_len, dev):
        """(T, past + T) additive: everything past visible, causal among the T new tokens."""
        mask = torch.zeros(Tn, past_len + Tn, device=dev)
        mask[:, past_len:] = torch.full((Tn, Tn), float("-inf"), device=dev).triu(1)
        return mask

    def hidden(self, ids, prefix_kv):
        """Training forward: ids (B, T) at positions P..P+T-1; prefix_kv: per layer (k, v) each (1, KVH, P, HD).
        Returns the final hidden states (B, T, C)."""
        Bn, Tn = ids.shape
        Pn = prefix_kv[0][0].shape[2]
        cos, sin = self.rope(torch.arange(Pn, Pn + Tn, device=ids.device))
        mask = self.causal_mask(Tn, Pn, ids.device)
        h = self.embed[ids]
        for i, (pk, pv) in enumerate(prefix_kv):
            past = (pk.expand(Bn, -1, -1, -1), pv.expand(Bn, -1, -1, -1))
            h, _ = self.layer(i, h, cos, sin, past, mask)
        return rms_norm(h, self.norm, self.eps)

    def forward(self, ids, pos0, past):
        """Cached decoding (torch_generate.greedy calls it): ids (B, T) at positions pos0..; past: per layer (k, v)
        (B, KVH, S, HD) or None.  Returns the last position's logits (B, V) and the new past."""
        Bn, Tn = ids.shape
        cos, sin = self.rope(torch.arange(pos0, pos0 + Tn, device=ids.device))
        S = past[0][0].shape[2] if past[0] is not None else 0
        mask = self.causal_mask(Tn, S, ids.device) if Tn > 1 else None
        h = self.embed[ids]
        presents = []
        for i in range(self.L):
            h, kv = self.layer(i, h, cos, sin, past[i], mask)
            presents.append(kv)
        return F.linear(rms_norm(h[:, -1], self.norm, self.eps), self.embed), presents


class PrefixEncoder(torch.nn.Module):
    """PEFT's prefix_projection encoder (names embedding, transform.0, transform.2; PyTorch default init); token
    dim D = KVH * HD, as PEFT sizes it for grouped-query attention."""

    def __init__(self, P, mid, L, KVH, HD):
        super().__init__()
        self.P, self.L, self.KVH, self.HD = P, L, KVH, HD
        D = KVH * HD
        self.embedding = torch.nn.Embedding(P, D)
        self.transform = torch.nn.Sequential(torch.nn.Linear(D, mid), torch.nn.Tanh(), torch.nn.Linear(mid, 2 * L * D))

    def forward(self):
        table = self.transform(self.embedding(torch.arange(self.P, device=self.embedding.weight.device)))  # (P, 2LD)
        kv = table.view(self.P, 2 * self.L, self.KVH, self.HD).permute(1, 2, 0, 3)  # (2L, KVH, P, HD)
        return [(kv[2 * i][None], kv[2 * i + 1][None]) for i in range(self.L)]


def reset_peak_rss():
    """Restarts VmHWM (not ru_maxrss) from the current size, as bench_llama does after building its model."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def memory_fields(idle_rss_mb):
    """peak_rss_mb: VmHWM since reset_peak_rss (after the model was built), and above idle; ru_maxrss_mb: the
    process's peak, never reset (it includes building the random model)."""
    peak = status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "idle_rss_mb": round(idle_rss_mb, 1),
            "peak_rss_above_idle_mb": round(peak - idle_rss_mb, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}  # KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=("train", "generate"), required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="train: timed steps after one warm-up step")
    ap.add_argument("--batch", type=int, default=None, help="rows (train: 4; generate: 1, each with its own prefix)")
    ap.add_argument("--seq", type=int, default=128, help="train: tokens per row")
    ap.add_argument("--mid", type=int, default=512, help="train: the encoder's hidden width")
    ap.add_argument("--runs", type=int, default=2, help="generate: timed calls after one warm-up call")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=None, help="P (train: 10; generate: 0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    train = args.workload == "train"
    Bn = args.batch if args.batch is not None else (4 if train else 1)
    Pn = args.prefix if args.prefix is not None else (10 if train else 0)

    torch.set_num_threads(args.threads)
    torch.zeros(1).add_(1)  # libtorch's CPU side initialized, before the workload's memory
    idle_rss_mb = status_mb("VmRSS")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = QWEN25_05B
    L, KVH, HD, V = cfg["L"], cfg["KVH"], cfg["HD"], cfg["V"]
    dev = args.device
    model = Qwen2(cfg, gen).to(dev)
    reset_peak_rss()
    common = {"threads": args.threads, "torch": torch.__version__, "device": dev, "model": "qwen2.5-0.5b (random)",
              "workload": args.workload, "batch": Bn, "prefix": Pn}

    if train:
        enc = PrefixEncoder(Pn, args.mid, L, KVH, HD).to(dev)
        opt = torch.optim.AdamW(enc.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        ids = torch.randint(0, V, (Bn, args.seq), generator=gen).to(dev)
        targets = torch.randint(0, V, (Bn, args.seq), generator=gen).to(dev)

        def step():
            opt.zero_grad(set_to_none=True)
            h = model.hidden(ids, enc())
            logits = F.linear(h.view(-1, cfg["C"]), model.embed)
            loss = F.cross_entropy(logits, targets.view(-1), reduction="sum") / Bn
            loss.backward()
            opt.step()
            return loss.item()

        fields = time_steps(step, args.steps, Bn * args.seq, idle_rss_mb)
        print(json.dumps({**fields, **memory_fields(idle_rss_mb), "optimizer": type(opt).__name__, **common, "seq": args.seq, "mid": args.mid,
                          "steps": args.steps}))
        return

    eos = V - 1  # banned: exactly new_tokens tokens per row
    prompt = torch.randint(0, eos, (Bn, args.prompt), generator=gen).to(dev)
    prefix_kv = None
    if Pn > 0:
        prefix_kv = [((torch.randn(Bn, KVH, Pn, HD, generator=gen) * 0.5).to(dev),
                      (torch.randn(Bn, KVH, Pn, HD, generator=gen) * 0.5).to(dev)) for _ in range(L)]
    fields = time_generation(lambda: greedy(model, prompt, args.new_tokens, prefix_kv, eos), args.runs,
                             (Bn, args.new_tokens))
    print(json.dumps({**fields, **memory_fields(idle_rss_mb), **common, "prompt": args.prompt,
                      "new_tokens": args.new_tokens, "runs": args.runs}))


if __name__ == "__main__":
    main()
