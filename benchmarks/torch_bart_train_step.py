#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch baseline for bench_bart's BM_bart_train_step: one prefix-tuning step of a frozen BART-base with the
paper's three prefixes.

facebook/bart-base shape (d_model 768, 6 encoder + 6 decoder layers, 12 heads, ffn 3072, V=50265, 1024 positions
+ BART's offset of 2) with random frozen weights (plain tensors, HF nn.Linear layout [out, in], F.linear as
HuggingFace's BartAttention / fc1 / fc2; matrices N(0, 0.02), biases 0, LayerNorm 1 / 0), float32, eval mode (no
dropout).  Written the way HF's eager BartForConditionalGeneration computes: embeddings + learned positions (row
p + 2), layernorm_embedding, post-LN blocks, exact GELU, q scaled by head_dim**-0.5, q k^T + additive mask ->
softmax -> @ v, tied head; final_logits_bias is zero and left out (bench_bart's fused loss skips it too).

Three PEFT-style PrefixEncoders (Embedding(P, C) -> Linear(C, mid) -> tanh -> Linear(mid, 2*L*C), PyTorch default
init; P=100, mid=800, the paper's XSUM sizes), each table viewed (P, 2L, NH, HS) and permuted to (2L, NH, P, HS):
block 2i is layer i's key, 2i+1 its value.  The encoder prefix is joined before the keys / values of every encoder
self-attention, the decoder prefix before every decoder self-attention's (always visible, causal among the real
tokens), the cross prefix before every cross-attention's encoder states.  Positions are not shifted.

B=4 sources of 128 and targets of 32 random ids (no padding; the all-ones source mask is still applied as an
additive mask, as HF does), decoder inputs = shift_tokens_right(labels) (decoder start 2), loss = per-token mean
F.cross_entropy of logits = h @ shared^T over all 128 labels; backward to the prefix parameters only; AdamW
(lr 5e-5) on them.  --forward-only: the same forward and loss with autograd recording, no backward or update
(bench_bart's step:0).

    /usr/bin/python3 benchmarks/torch_bart_train_step.py [--threads 2] [--steps 3] [--prefix 100] [--forward-only]

The last line of stdout is JSON: tokens_per_s ((source + target) tokens per second), step_ms, step_ms_min,
step_ms_median, peak_rss_mb, threads, torch (+ the config).
"""

import argparse
import json

import torch
import torch.nn.functional as F

from torch_train_step import time_steps

POS_OFFSET = 2  # BartLearnedPositionalEmbedding: position p uses row p + 2


class FrozenBart:
    """BART weights drawn from `gen`; plain tensors, requires_grad False everywhere."""

    def __init__(self, C, LE, LD, NH, FF, V, NP, gen):
        self.C, self.LE, self.LD, self.NH, self.HS, self.V = C, LE, LD, NH, C // NH, V

        def n(*shape):
            return torch.randn(*shape, generator=gen) * 0.02

        def lin(fin, fout):
            return (n(fout, fin), torch.zeros(fout))

        def ln():
            return (torch.ones(C), torch.zeros(C))

        self.shared = n(V, C)
        self.enc_pos, self.dec_pos = n(NP + POS_OFFSET, C), n(NP + POS_OFFSET, C)
        self.enc_ln, self.dec_ln = ln(), ln()
        self.encoder = [dict(q=lin(C, C), k=lin(C, C), v=lin(C, C), o=lin(C, C), attn_ln=ln(),
                             fc1=lin(C, FF), fc2=lin(FF, C), ffn_ln=ln()) for _ in range(LE)]
        self.decoder = [dict(q=lin(C, C), k=lin(C, C), v=lin(C, C), o=lin(C, C), self_ln=ln(),
                             cq=lin(C, C), ck=lin(C, C), cv=lin(C, C), co=lin(C, C), cross_ln=ln(),
                             fc1=lin(C, FF), fc2=lin(FF, C), ffn_ln=ln()) for _ in range(LD)]

    def attention(self, p, names, xq, xkv, prefix, mask):
        """xq (B, Tq, C), xkv (B, Tk, C); prefix (k, v) each (NH, P, HS) shared by every row; mask additive,
        broadcastable to (B, NH, Tq, P + Tk)."""
        Bn, Tq, C = xq.shape
        Tk, NH, HS = xkv.shape[1], self.NH, self.HS
        q = F.linear(xq, *p[names[0]]) * HS ** -0.5
        k, v = F.linear(xkv, *p[names[1]]), F.linear(xkv, *p[names[2]])
        q = q.view(Bn, Tq, NH, HS).transpose(1, 2)
        k = k.view(Bn, Tk, NH, HS).transpose(1, 2)
        v = v.view(Bn, Tk, NH, HS).transpose(1, 2)
        pk, pv = prefix
        Pn = pk.shape[1]
        k = torch.cat([pk[None].expand(Bn, NH, Pn, HS), k], dim=2)
        v = torch.cat([pv[None].expand(Bn, NH, Pn, HS), v], dim=2)
        o = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) + mask, dim=-1), v)
        return F.linear(o.transpose(1, 2).reshape(Bn, Tq, C), *p[names[3]])

    def embed(self, ids, pos_table, ln):
        pos = torch.arange(ids.shape[1], device=ids.device) + POS_OFFSET
        return F.layer_norm(self.shared[ids] + pos_table[pos][None], (self.C,), *ln, 1e-5)

    def hidden(self, src, src_mask, dec_in, enc_kv, dec_kv, cross_kv):
        """src / src_mask (B, S), dec_in (B, T); *_kv: per layer (k, v) each (NH, P, HS). Returns the decoder's
        final states (B, T, C)."""
        C, Pn = self.C, enc_kv[0][0].shape[1]
        Bn, Tn = dec_in.shape
        # source keys: prefix always visible, padding (none here) masked
        key_mask = torch.zeros(Bn, 1, 1, Pn + src.shape[1], device=src.device)
        key_mask[:, 0, 0, Pn:] = (1.0 - src_mask.float()) * torch.finfo(torch.float32).min
        causal = torch.zeros(Tn, Pn + Tn, device=src.device)
        causal[:, Pn:] = torch.full((Tn, Tn), float("-inf"), device=src.device).triu(1)
        x = self.embed(src, self.enc_pos, self.enc_ln)
        for i, p in enumerate(self.encoder):
            a = self.attention(p, ("q", "k", "v", "o"), x, x, enc_kv[i], key_mask)
            x = F.layer_norm(x + a, (C,), *p["attn_ln"], 1e-5)
            f = F.linear(F.gelu(F.linear(x, *p["fc1"])), *p["fc2"])
            x = F.layer_norm(x + f, (C,), *p["ffn_ln"], 1e-5)
        y = self.embed(dec_in, self.dec_pos, self.dec_ln)
        for i, p in enumerate(self.decoder):
            a = self.attention(p, ("q", "k", "v", "o"), y, y, dec_kv[i], causal)
            y = F.layer_norm(y + a, (C,), *p["self_ln"], 1e-5)
            a = self.attention(p, ("cq", "ck", "cv", "co"), y, x, cross_kv[i], key_mask)
            y = F.layer_norm(y + a, (C,), *p["cross_ln"], 1e-5)
            f = F.linear(F.gelu(F.linear(y, *p["fc1"])), *p["fc2"])
            y = F.layer_norm(y + f, (C,), *p["ffn_ln"], 1e-5)
        return y


class PrefixEncoder(torch.nn.Module):
    """PEFT names: embedding, transform.0, transform.2 (PyTorch default init)."""

    def __init__(self, P, C, mid, L, NH):
        super().__init__()
        self.P, self.L, self.NH, self.HS = P, L, NH, C // NH
        self.embedding = torch.nn.Embedding(P, C)
        self.transform = torch.nn.Sequential(torch.nn.Linear(C, mid), torch.nn.Tanh(),
                                             torch.nn.Linear(mid, 2 * L * C))

    def forward(self):
        table = self.transform(self.embedding(torch.arange(self.P, device=self.embedding.weight.device)))
        kv = table.view(self.P, 2 * self.L, self.NH, self.HS).permute(1, 2, 0, 3)  # (2L, NH, P, HS)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.L)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--source", type=int, default=128)
    ap.add_argument("--target", type=int, default=32)
    ap.add_argument("--prefix", type=int, default=100)
    ap.add_argument("--mid", type=int, default=800)
    ap.add_argument("--forward-only", action="store_true", help="forward and loss only (autograd recording)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    C, LE, LD, NH, FF, V, NP = 768, 6, 6, 12, 3072, 50265, 1024
    PAD, DEC_START = 1, 2
    Bn, Sn, Tn = args.batch, args.source, args.target
    model = FrozenBart(C, LE, LD, NH, FF, V, NP, gen)
    prefixes = torch.nn.ModuleList([PrefixEncoder(args.prefix, C, args.mid, L, NH) for L in (LE, LD, LD)])
    opt = torch.optim.AdamW(prefixes.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    src = torch.randint(0, V, (Bn, Sn), generator=gen)
    src_mask = torch.ones(Bn, Sn, dtype=torch.long)
    labels = torch.randint(0, V, (Bn, Tn), generator=gen)
    dec_in = torch.cat([torch.full((Bn, 1), DEC_START), labels[:, :-1]], dim=1)  # shift_tokens_right
    dec_in = dec_in.masked_fill(dec_in == -100, PAD)

    def step():
        if not args.forward_only:
            opt.zero_grad(set_to_none=True)
        enc_kv, dec_kv, cross_kv = (p() for p in prefixes)
        h = model.hidden(src, src_mask, dec_in, enc_kv, dec_kv, cross_kv)
        logits = h.reshape(-1, C) @ model.shared.t()
        loss = F.cross_entropy(logits, labels.reshape(-1), ignore_index=-100)
        if not args.forward_only:
            loss.backward()
            opt.step()
        return loss.item()

    print(json.dumps({
        **time_steps(step, args.steps, Bn * (Sn + Tn)),
        "threads": args.threads,
        "torch": torch.__version__,
        "workload": "bart_train_step", "forward_only": args.forward_only, "batch": Bn, "source": Sn, "target": Tn,
        "prefix": args.prefix, "mid": args.mid, "steps": args.steps,
    }))


if __name__ == "__main__":
    main()
