#!/usr/bin/python3
"""PyTorch baseline for workload W1: one prefix-tuning training step of a frozen GPT-2 small.

GPT-2 small shape (12 layers, C=768, 12 heads, V=50257, n_positions=1024) with random frozen weights,
a PEFT-style PrefixEncoder (Embedding(P, C) -> Linear(C, mid) -> tanh -> Linear(mid, 2*L*C), P=10, mid=512)
whose output (P, 2*L*C) is viewed (P, 2L, NH, HS) and permuted to (2L, NH, P, HS): slot 2i is layer i's key,
2i+1 its value.  Real tokens attend to all P prefix slots and causally among themselves, at positions
P..P+T-1.  B=4, T=128, loss on every position: logits = h @ wte.T, F.cross_entropy(reduction="sum") / B.
AdamW (lr 5e-5) on the encoder only (bench_train_step runs our AdamW with the same settings).  float32, eval
mode (no dropout).

    /usr/bin/python3 benchmarks/torch_train_step.py [--threads 2] [--steps 5] [--device cuda [--tf32]]

The last line of stdout is JSON: tokens_per_s, step_ms, idle_rss_mb (the process's resident size with Python and
libtorch loaded, before the model is built), peak_rss_mb, peak_rss_above_idle_mb (the difference: the workload's
own memory, what bench_train_step's peak_rss_above_idle_MB measures for us), optimizer, threads, torch (+ the
config).
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F

from torch_gpt2_weights import Gpt2Weights, gelu_new


class FrozenGPT2(Gpt2Weights):
    """Frozen: plain tensors, requires_grad False everywhere."""

    def hidden(self, ids, prefix_kv):
        """ids (B, T); prefix_kv: list of (k, v) each (NH, P, HS).  Returns final hidden states (B, T, C)."""
        Bn, Tn = ids.shape
        C, NH, HS = self.C, self.NH, self.HS
        Pn = prefix_kv[0][0].shape[1]
        dev = ids.device
        pos = torch.arange(Pn, Pn + Tn, device=dev)
        h = self.wte[ids] + self.wpe[pos][None]
        # (T, P+T) additive mask: prefix always visible, causal among real tokens
        mask = torch.zeros(Tn, Pn + Tn, device=dev)
        mask[:, Pn:] = torch.full((Tn, Tn), float("-inf"), device=dev).triu(1)
        scale = 1.0 / math.sqrt(HS)
        for i, p in enumerate(self.layers):
            a = F.layer_norm(h, (C,), p["ln1_w"], p["ln1_b"], 1e-5)
            qkv = torch.addmm(p["attn_b"], a.view(-1, C), p["attn_w"]).view(Bn, Tn, 3 * C)
            q, k, v = qkv.split(C, dim=2)
            q, k, v = [t.view(Bn, Tn, NH, HS).transpose(1, 2) for t in (q, k, v)]
            pk, pv = prefix_kv[i]
            k = torch.cat([pk[None].expand(Bn, NH, Pn, HS), k], dim=2)
            v = torch.cat([pv[None].expand(Bn, NH, Pn, HS), v], dim=2)
            s = torch.matmul(q, k.transpose(-1, -2)) * scale + mask
            o = torch.matmul(torch.softmax(s, dim=-1), v)
            o = o.transpose(1, 2).reshape(Bn * Tn, C)
            h = h + torch.addmm(p["proj_b"], o, p["proj_w"]).view(Bn, Tn, C)
            m = F.layer_norm(h, (C,), p["ln2_w"], p["ln2_b"], 1e-5)
            m = gelu_new(torch.addmm(p["fc_b"], m.view(-1, C), p["fc_w"]))
            h = h + torch.addmm(p["fc2_b"], m, p["fc2_w"]).view(Bn, Tn, C)
        return F.layer_norm(h, (C,), self.lnf_w, self.lnf_b, 1e-5)


class PrefixEncoder(torch.nn.Module):
    """PEFT names: embedding, transform.0, transform.2 (PyTorch default init)."""

    def __init__(self, P, C, mid, L, NH):
        super().__init__()
        self.P, self.L, self.NH, self.HS = P, L, NH, C // NH
        self.embedding = torch.nn.Embedding(P, C)
        self.transform = torch.nn.Sequential(torch.nn.Linear(C, mid), torch.nn.Tanh(),
                                             torch.nn.Linear(mid, 2 * L * C))

    def forward(self):
        table = self.transform(self.embedding(torch.arange(self.P, device=self.embedding.weight.device)))          # (P, 2LC)
        kv = table.view(self.P, 2 * self.L, self.NH, self.HS).permute(1, 2, 0, 3)  # (2L, NH, P, HS)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.L)]


def status_mb(field):
    """A field of /proc/self/status in MB: "VmRSS" (resident now) or "VmHWM" (peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no %s in /proc/self/status" % field)


def time_steps(step, steps, tokens_per_step, idle_rss_mb=None):
    """One warm-up call of step() (returns the loss), then `steps` timed calls; prints the losses and step times
    and returns the timing fields of the JSON line (tokens/s, step ms mean/min/median, peak RSS, and with
    idle_rss_mb, the process's size before the workload, the peak above it)."""
    t0 = time.perf_counter()
    first_loss = step()  # warm-up
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print("warm-up step %.1f ms, loss %.4f -> %.4f; step times ms: %s" % (
        warm_s * 1e3, first_loss, loss, ", ".join("%.1f" % (t * 1e3) for t in times)))
    fields = {
        "tokens_per_s": round(tokens_per_step / step_s, 2),
        "step_ms": round(step_s * 1e3, 2),
        "step_ms_min": round(min(times) * 1e3, 2),
        "step_ms_median": round(sorted(times)[len(times) // 2] * 1e3, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    if idle_rss_mb is not None:
        fields["idle_rss_mb"] = round(idle_rss_mb, 1)
        fields["peak_rss_above_idle_mb"] = round(peak_rss_mb - idle_rss_mb, 1)
    return fields


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--prefix", type=int, default=10)
    ap.add_argument("--mid", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tf32", action="store_true", help="TF32 matrix products (cuda)")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    torch.set_num_threads(args.threads)
    torch.zeros(1).add_(1)  # libtorch's CPU side initialized, before the workload's memory
    idle_rss_mb = status_mb("VmRSS")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    L, C, NH, V, NP = 12, 768, 12, 50257, 1024
    Bn, Tn = args.batch, args.seq
    model = FrozenGPT2(L, C, NH, V, NP, gen).to(args.device)
    enc = PrefixEncoder(args.prefix, C, args.mid, L, NH).to(args.device)
    opt = torch.optim.AdamW(enc.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.randint(0, V, (Bn, Tn), generator=gen).to(args.device)
    targets = torch.randint(0, V, (Bn, Tn), generator=gen).to(args.device)

    def step():
        opt.zero_grad(set_to_none=True)
        h = model.hidden(ids, enc())
        logits = h.view(-1, C) @ model.wte.t()
        loss = F.cross_entropy(logits, targets.view(-1), reduction="sum") / Bn
        loss.backward()
        opt.step()
        return loss.item()

    print(json.dumps({
        **time_steps(step, args.steps, Bn * Tn, idle_rss_mb),
        "optimizer": type(opt).__name__,
        "threads": args.threads,
        "torch": torch.__version__,
        "device": args.device, "tf32": args.tf32,
        "workload": "W1", "batch": Bn, "seq": Tn, "prefix": args.prefix, "mid": args.mid, "steps": args.steps,
    }))


if __name__ == "__main__":
    main()
