#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Independent plain-PyTorch float64 reference for the paper's prefix-tuning variants.

Reads the tiny GPT-2 and the batch that gpt2_prefix_reference.py wrote into DIR (``DIR/model/model.safetensors``,
``DIR/reference.safetensors``) and writes ``DIR/variants.safetensors`` with, all in float64:

- ``emb.*``      embedding-only prefix: P trainable input embeddings run through the frozen model; their per-layer
                 K/V are the prefix (and ``emb_mlp.*``: the same with an MLP in front of the embeddings);
- ``infix.*``    an infix between source and target: only tokens from the first labelled position see it;
- ``words.*``    prefix initialised from real words: the K/V of three token ids run alone;
- ``deep.*``     a deeper reparameterisation (Embedding -> Linear -> tanh -> Linear -> tanh -> Linear);
- ``full.*``     full fine-tuning gradients of the per-token mean loss, no prefix.

See tests/reference/README.md ("Prefix-tuning variants") for the conventions.  Only torch and the standard
library are used (through gpt2_prefix_reference.py's safetensors helpers).

    /usr/bin/python3 tests/reference/variants_reference.py --out DIR [--no-check]
"""

import argparse
import math
import os
import sys
import time

import torch

sys.dont_write_bytecode = True                                  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_prefix_reference as ref  # noqa: E402  (sizes, safetensors I/O, losses, the ordinary prefix forward)

F64 = torch.float64
CFG, P, MID, IGNORE = ref.CFG, ref.P, ref.MID, ref.IGNORE
L, NH, C, V = CFG["n_layer"], CFG["n_head"], CFG["n_embd"], CFG["vocab_size"]
HS = C // NH
WIDTH = 2 * L * C                      # prefix table row width
WORD_IDS = [17, 923, 5]                # "initialise from real words": token ids run through the frozen model
SEED_OFFSET = 7                        # variant parameters come from Generator().manual_seed(seed + 7)


# ----------------------------------------------------------------------------------------------------------
# GPT-2 forward on input embeddings, per-row position ids, per-query prefix visibility
# ----------------------------------------------------------------------------------------------------------
def forward(W, x, attention_mask, position_ids, prefix_kv=None, prefix_visible=None, return_kv=False):
    """x: (B, T, C) input embeddings (wte rows, or anything else), position_ids (B, T): wpe is added here.
    prefix_kv: per-layer (k, v), each (NH, P, HS), shared by every row.  prefix_visible: (B, T) bool, whether
    query t of row b sees the P prefix slots (None: every query sees them).  Real keys j are visible to query t
    iff j <= t and attention_mask[b, j] == 1; one softmax over [visible prefix | visible real] scores.
    Returns logits (B, T, V) [and the per-layer (k, v) of the real tokens, each (B, NH, T, HS)]."""
    eps = CFG["layer_norm_epsilon"]
    Bn, Tn, _ = x.shape
    h = x + W["wpe.weight"][position_ids]
    keep = torch.ones(Tn, Tn, dtype=torch.bool).tril()[None] & attention_mask.bool()[:, None, :]  # (B, Tq, Tk)
    kv_out = []
    for i in range(L):
        p = "h.%d." % i
        a = ref.layer_norm(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        q, k, v = (a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]).split(C, dim=-1)
        q, k, v = [t.reshape(Bn, Tn, NH, HS).transpose(1, 2) for t in (q, k, v)]     # (B, NH, T, HS)
        kv_out.append((k, v))
        scores = ((q @ k.transpose(-1, -2)) / math.sqrt(HS)).masked_fill(~keep[:, None], float("-inf"))
        if prefix_kv is not None:
            pk, pv = prefix_kv[i]
            Pn = pk.shape[1]
            s_pref = (q @ pk.transpose(-1, -2)[None]) / math.sqrt(HS)                # (B, NH, T, P)
            if prefix_visible is not None:
                s_pref = s_pref.masked_fill(~prefix_visible[:, None, :, None], float("-inf"))
            prob = torch.softmax(torch.cat([s_pref, scores], dim=-1), dim=-1)
            o = prob[..., :Pn] @ pv[None] + prob[..., Pn:] @ v
        else:
            o = torch.softmax(scores, dim=-1) @ v
        h = h + o.transpose(1, 2).reshape(Bn, Tn, C) @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = ref.layer_norm(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = ref.gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    logits = ref.layer_norm(h, W["ln_f.weight"], W["ln_f.bias"], eps) @ W["wte.weight"].t()
    return (logits, kv_out) if return_kv else logits


def kv_to_table(kv):
    """Per-layer (k, v), each (NH, Pn, HS) -> (Pn, 2LC) table, the exact inverse of ref.table_to_kv:
    row p, flat index ((2*layer + kv) * NH + head) * HS + e."""
    stacked = torch.stack([t for pair in kv for t in pair])                          # (2L, NH, Pn, HS)
    return stacked.permute(2, 0, 1, 3).reshape(stacked.shape[2], WIDTH)


def prefix_from_embeddings(W, emb):
    """Run (Pn, C) input embeddings through the frozen model at positions 0..Pn-1 (causal, no padding, no
    prefix); return their per-layer (k, v), each (NH, Pn, HS)."""
    Pn = emb.shape[0]
    _, kv = forward(W, emb[None], torch.ones(1, Pn, dtype=torch.int64), torch.arange(Pn)[None], return_kv=True)
    return [(k[0], v[0]) for k, v in kv]


def mlp2(x, w1, b1, w2, b2):
    """[in, out] layout: tanh(x @ w1 + b1) @ w2 + b2."""
    return torch.tanh(x @ w1 + b1) @ w2 + b2


def deep_forward(d):
    """Deep reparameterisation: embedding -> Linear(C, MID) -> tanh -> Linear(MID, MID) -> tanh -> Linear(MID, 2LC)."""
    hmid = torch.tanh(torch.tanh(d["embedding"] @ d["w1"] + d["b1"]) @ d["w_mid"] + d["b_mid"])
    return hmid @ d["w2"] + d["b2"]


def infix_layout(targets, offset):
    """from[b] = first labelled position of row b.  Query t sees the infix iff t >= from[b]; its position id is t
    before from[b] and t + offset from there on.  Returns (from (B,), position_ids (B, T), visible (B, T))."""
    Bn, Tn = targets.shape
    frm = torch.tensor([int((targets[b] != IGNORE).nonzero()[0, 0]) for b in range(Bn)], dtype=torch.int64)
    t = torch.arange(Tn, dtype=torch.int64)[None].expand(Bn, Tn)
    visible = t >= frm[:, None]
    return frm, torch.where(visible, t + offset, t).contiguous(), visible


# ----------------------------------------------------------------------------------------------------------
# parameters of the variants (float32 draws; the math runs in float64)
# ----------------------------------------------------------------------------------------------------------
def make_params(seed):
    """Drawn from one generator seeded seed + 7, in exactly this order."""
    g = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * scale

    def unif(fan_in, *shape):
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1) * bound

    p = {"emb.embedding": randn(P, C, scale=0.5), "emb_mlp.embedding": randn(P, C)}
    p.update({"emb_mlp.w1": unif(C, C, MID), "emb_mlp.b1": unif(C, MID),
              "emb_mlp.w2": unif(MID, MID, C), "emb_mlp.b2": unif(MID, C)})
    p["infix.table"] = randn(P, WIDTH)
    p["deep.embedding"] = randn(P, C)
    p.update({"deep.w1": unif(C, C, MID), "deep.b1": unif(C, MID),
              "deep.w_mid": unif(MID, MID, MID), "deep.b_mid": unif(MID, MID),
              "deep.w2": unif(MID, MID, WIDTH), "deep.b2": unif(MID, WIDTH)})
    return p


def leaves(params, prefix):
    """float64 leaf tensors requiring grad, keyed by the name without `prefix.`."""
    return {k[len(prefix) + 1:]: v.to(F64).requires_grad_(True) for k, v in params.items()
            if k.startswith(prefix + ".")}


# ----------------------------------------------------------------------------------------------------------
# the variants' losses as functions of their parameters (reused by the finite-difference checks)
# ----------------------------------------------------------------------------------------------------------
class Batch:
    def __init__(self, W, input_ids, attention_mask, targets):
        self.W, self.ids, self.mask, self.targets = W, input_ids, attention_mask, targets
        Bn, Tn = input_ids.shape
        self.pos_prefixed = (torch.arange(Tn) + P)[None].expand(Bn, Tn).contiguous()
        self.pos_plain = torch.arange(Tn)[None].expand(Bn, Tn).contiguous()
        self.frm, self.pos_infix, self.vis_infix = infix_layout(targets, P)

    def tokens(self, W=None):
        return (W or self.W)["wte.weight"][self.ids]

    def with_prefix(self, kv):
        return forward(self.W, self.tokens(), self.mask, self.pos_prefixed, kv)

    def emb(self, e):
        kv = prefix_from_embeddings(self.W, e["embedding"])
        return self.with_prefix(kv), kv

    def emb_mlp(self, e):
        kv = prefix_from_embeddings(self.W, mlp2(e["embedding"], e["w1"], e["b1"], e["w2"], e["b2"]))
        return self.with_prefix(kv), kv

    def infix(self, table):
        return forward(self.W, self.tokens(), self.mask, self.pos_infix, ref.table_to_kv(table), self.vis_infix)

    def deep(self, d):
        table = deep_forward(d)
        return self.with_prefix(ref.table_to_kv(table)), table

    def full(self, W):
        return forward(W, self.tokens(W), self.mask, self.pos_plain)


def read_inputs(out):
    """Model weights (float64, buffers dropped) and the batch written by gpt2_prefix_reference.py."""
    _, m = ref.read_safetensors(os.path.join(out, "model", "model.safetensors"))
    W = {k: t.to(F64) for k, (dt, t) in m.items()
         if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
    assert all(dt == "F32" for dt, _ in m.values()), "model/model.safetensors must be F32"
    assert W["wte.weight"].shape == (V, C) and W["h.0.attn.c_attn.weight"].shape == (C, 3 * C), "sizes"
    assert "h.%d.ln_1.weight" % (L - 1) in W and "h.%d.ln_1.weight" % L not in W, "n_layer"
    hdr, r = ref.read_safetensors(os.path.join(out, "reference.safetensors"))
    meta = hdr["__metadata__"]
    for key, want in (("n_layer", L), ("n_head", NH), ("n_embd", C), ("vocab_size", V), ("prefix_length", P),
                      ("prefix_mid", MID)):
        assert int(meta[key]) == want, "reference.safetensors metadata %s = %s, expected %d" % (key, meta[key], want)
    batch = [r[k][1] for k in ("input_ids", "attention_mask", "targets")]
    return W, batch, int(meta["seed"]), r


# ----------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory gpt2_prefix_reference.py wrote; variants.safetensors "
                                                 "is added to it")
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(1)

    W, (input_ids, attention_mask, targets), seed, stored = read_inputs(args.out)
    bt = Batch(W, input_ids, attention_mask, targets)
    params32 = make_params(seed)
    res = {}

    # 1. embedding-only prefix, and with an MLP in front of the embeddings ------------------------------------
    emb = leaves(params32, "emb")
    logits, kv = bt.emb(emb)
    lsum, lmean = ref.losses(logits, targets)
    lsum.backward()
    res["emb"] = dict(logits=logits, loss_sum=lsum, loss_mean=lmean, table=kv_to_table(kv))

    emb_mlp = leaves(params32, "emb_mlp")
    logits, kv = bt.emb_mlp(emb_mlp)
    lsum, lmean = ref.losses(logits, targets)
    lsum.backward()
    res["emb_mlp"] = dict(loss_sum=lsum, loss_mean=lmean, table=kv_to_table(kv))

    # 2. infix -------------------------------------------------------------------------------------------------
    infix_table = params32["infix.table"].to(F64).requires_grad_(True)
    logits = bt.infix(infix_table)
    lsum, lmean = ref.losses(logits, targets)
    lsum.backward()
    res["infix"] = dict(logits=logits, loss_sum=lsum, loss_mean=lmean)

    # 3. initialisation from real words ----------------------------------------------------------------------
    word_ids = torch.tensor(WORD_IDS, dtype=torch.int64)
    with torch.no_grad():
        words_table = kv_to_table(prefix_from_embeddings(W, W["wte.weight"][word_ids]))

    # 4. deep reparameterisation -----------------------------------------------------------------------------
    deep = leaves(params32, "deep")
    logits, table = bt.deep(deep)
    lsum, lmean = ref.losses(logits, targets)
    lsum.backward()
    res["deep"] = dict(logits=logits, loss_sum=lsum, loss_mean=lmean, table=table)

    # 5. full fine-tuning: gradients of the per-token mean loss ----------------------------------------------
    Wg = {k: v.clone().requires_grad_(True) for k, v in W.items()}
    logits = bt.full(Wg)
    lsum, lmean = ref.losses(logits, targets)
    lmean.backward()
    res["full"] = dict(logits=logits, loss_mean=lmean)
    full_names = ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.ln_1.weight",
                  "h.%d.mlp.c_proj.weight" % (L - 1), "ln_f.weight"]

    # --- self-checks -----------------------------------------------------------------------------------------
    if not args.no_check:
        self_check(bt, params32, res, emb, infix_table, deep, Wg, words_table, word_ids, stored)

    # --- write -----------------------------------------------------------------------------------------------
    d = lambda t: t.detach().to(F64)
    one = lambda t: t.detach().to(F64).reshape(1)
    out = [("emb.embedding", d(params32["emb.embedding"]), "F64"),
           ("emb.table", d(res["emb"]["table"]), "F64"),
           ("emb.logits", d(res["emb"]["logits"]), "F64"),
           ("emb.loss_sum", one(res["emb"]["loss_sum"]), "F64"),
           ("emb.loss_mean", one(res["emb"]["loss_mean"]), "F64"),
           ("emb.grad.embedding", d(emb["embedding"].grad), "F64")]
    mlp_names = ("embedding", "w1", "b1", "w2", "b2")
    out += [("emb_mlp." + k, d(params32["emb_mlp." + k]), "F64") for k in mlp_names]
    out += [("emb_mlp.table", d(res["emb_mlp"]["table"]), "F64"),
            ("emb_mlp.loss_sum", one(res["emb_mlp"]["loss_sum"]), "F64"),
            ("emb_mlp.loss_mean", one(res["emb_mlp"]["loss_mean"]), "F64")]
    out += [("emb_mlp.grad." + k, d(emb_mlp[k].grad), "F64") for k in mlp_names]
    out += [("infix.table", d(params32["infix.table"]), "F64"),
            ("infix.from", bt.frm, "I64"),
            ("infix.position_ids", bt.pos_infix, "I64"),
            ("infix.logits", d(res["infix"]["logits"]), "F64"),
            ("infix.loss_sum", one(res["infix"]["loss_sum"]), "F64"),
            ("infix.loss_mean", one(res["infix"]["loss_mean"]), "F64"),
            ("infix.grad.table", d(infix_table.grad), "F64"),
            ("words.ids", word_ids, "I64"),
            ("words.table", d(words_table), "F64")]
    deep_names = ("embedding", "w1", "b1", "w_mid", "b_mid", "w2", "b2")
    out += [("deep." + k, d(params32["deep." + k]), "F64") for k in deep_names]
    out += [("deep.table", d(res["deep"]["table"]), "F64"),
            ("deep.logits", d(res["deep"]["logits"]), "F64"),
            ("deep.loss_sum", one(res["deep"]["loss_sum"]), "F64"),
            ("deep.loss_mean", one(res["deep"]["loss_mean"]), "F64")]
    out += [("deep.grad." + k, d(deep[k].grad), "F64") for k in deep_names]
    out += [("full.loss_mean", one(res["full"]["loss_mean"]), "F64")]
    out += [("full.grad." + k, d(Wg[k].grad), "F64") for k in full_names]

    meta = dict(
        generator="tests/reference/variants_reference.py", seed=seed, param_seed=seed + SEED_OFFSET,
        inputs="model/model.safetensors and input_ids, attention_mask, targets of reference.safetensors",
        prefix_length=P, prefix_mid=MID, n_layer=L, n_head=NH, n_embd=C,
        table_layout="(P, 2*n_layer*n_embd), row index ((2*layer+kv)*n_head+head)*head_size+e, kv 0=key 1=value",
        linear_layout="[in, out]: y = x @ w + b",
        loss_sum="sum of token CE over targets != -100, divided by batch; every grad.* except full.* is of it",
        loss_mean="mean token CE over targets != -100; full.grad.* are of full.loss_mean",
        emb="prefix K/V = per-layer keys/values of the P embeddings run through the frozen model at positions "
            "0..P-1 (causal, no padding); batch at positions t+P, every query sees all P slots",
        emb_mlp="as emb with embeddings tanh(embedding @ w1 + b1) @ w2 + b2",
        infix="from[b] = first t with targets != -100; query t sees the P slots iff t >= from[b]; "
              "position ids t (t < from[b]) or t+P (t >= from[b])",
        words="per-layer K/V of words.ids run alone at positions 0..2 (batch 1, no prefix)",
        deep="table = tanh(tanh(embedding @ w1 + b1) @ w_mid + b_mid) @ w2 + b2, used as an ordinary prefix",
        full="no prefix, positions 0..T-1, gradients of loss_mean w.r.t. the model weights (wte includes the tied "
             "head)")
    path = os.path.join(args.out, "variants.safetensors")
    ref.write_safetensors(path, out, meta)
    if not args.no_check:
        _, back = ref.read_safetensors(path)
        for name, t, dt in out:
            assert back[name][0] == dt and torch.equal(back[name][1], t.to(back[name][1].dtype)), "read back " + name
        print("check: %s read back bit for bit (%d tensors)" % (os.path.basename(path), len(out)))

    print("variants_reference: wrote %s (seed %d) in %.2f s" % (path, seed, time.time() - t0))
    print("  loss_sum  emb %.10f emb_mlp %.10f infix %.10f deep %.10f" % tuple(
        float(res[k]["loss_sum"]) for k in ("emb", "emb_mlp", "infix", "deep")))
    print("  loss_mean emb %.10f infix %.10f full %.10f; infix.from %s" % (
        float(res["emb"]["loss_mean"]), float(res["infix"]["loss_mean"]), float(res["full"]["loss_mean"]),
        bt.frm.tolist()))
    return 0


# ----------------------------------------------------------------------------------------------------------
def self_check(bt, params32, res, emb, infix_table, deep, Wg, words_table, word_ids, stored):
    W, ids, mask, targets = bt.W, bt.ids, bt.mask, bt.targets
    Bn, Tn = ids.shape

    def maxerr(a, b):
        return (a - b).abs().max().item()

    with torch.no_grad():
        # (a) infix with from = 0 everywhere and positions t+P == the ordinary prefix forward of the main script
        tbl = infix_table.detach()
        all_vis = torch.ones(Bn, Tn, dtype=torch.bool)
        a = forward(W, bt.tokens(), mask, bt.pos_prefixed, ref.table_to_kv(tbl), all_vis)
        b = ref.gpt2_forward(W, ids, mask, bt.pos_prefixed, ref.table_to_kv(tbl))
        e1 = maxerr(a, b)
        assert e1 <= 1e-12, "infix from=0 vs gpt2_forward: %.3e" % e1
        a = forward(W, bt.tokens(), mask, bt.pos_plain)
        e2 = max(maxerr(a, ref.gpt2_forward(W, ids, mask, bt.pos_plain)), maxerr(a, stored["logits_noprefix"][1]))
        assert e2 <= 1e-12, "no-prefix forward vs gpt2_forward / logits_noprefix: %.3e" % e2
        print("check (a): infix with from=0, positions t+P == gpt2_forward prefix logits (max err %.1e); "
              "no prefix == gpt2_forward and stored logits_noprefix (%.1e)" % (e1, e2))

        # (b) K/V of input embeddings: words.ids through gpt2_forward(return_kv); the EMB prefix used as
        #     past K/V == the P embeddings prepended to the batch as ordinary inputs; table <-> K/V inverse
        _, kvs = ref.gpt2_forward(W, word_ids[None], torch.ones(1, len(WORD_IDS), dtype=torch.int64),
                                  torch.arange(len(WORD_IDS))[None], return_kv=True)
        e1 = maxerr(words_table, kv_to_table([(k[0], v[0]) for k, v in kvs]))
        assert e1 <= 1e-12, "words.table vs gpt2_forward K/V: %.3e" % e1
        E = emb["embedding"].detach()
        seq = torch.cat([E[None].expand(Bn, P, C), bt.tokens()], dim=1)
        full_mask = torch.cat([torch.ones(Bn, P, dtype=torch.int64), mask], dim=1)
        concat = forward(W, seq, full_mask, torch.arange(P + Tn)[None].expand(Bn, P + Tn))[:, P:]
        e2 = maxerr(res["emb"]["logits"], concat)
        assert e2 <= 1e-12, "EMB prefix vs prepended embeddings: %.3e" % e2
        kv = ref.table_to_kv(res["emb"]["table"])
        kv2 = prefix_from_embeddings(W, E)
        inv = all(torch.equal(x, y) for p1, p2 in zip(kv, kv2) for x, y in zip(p1, p2))
        inv = inv and torch.equal(kv_to_table(ref.table_to_kv(tbl)), tbl)
        assert inv, "kv_to_table is not the inverse of table_to_kv"
        print("check (b): words.table == gpt2_forward(return_kv) K/V (max err %.1e); EMB prefix == its embeddings "
              "prepended as inputs (%.1e); kv_to_table inverts table_to_kv exactly" % (e1, e2))

    # (c) central finite differences (float64, eps 1e-6) against autograd
    eps = 1e-6
    gsel = torch.Generator().manual_seed(12345)

    def pick(grad, n):
        """n random entries among those with |grad| >= max|grad| / 2: the rounding error of a float64 central
        difference of a loss ~24 with eps 1e-6 is ~1e-9 absolute, so tiny entries cannot reach 1e-6 relative."""
        flat = (grad.abs() >= 0.5 * grad.abs().max()).reshape(-1).nonzero()[:, 0]
        chosen = flat[torch.randperm(flat.numel(), generator=gsel)[:n]]
        return [unravel(int(c), grad.shape) for c in chosen]

    def fd(loss_of, tensor, idx):
        old = tensor[idx].item()
        vals, steps = [], []
        for s in (+1, -1):
            tensor[idx] = old + s * eps
            steps.append(tensor[idx].item())            # the step actually taken (old + eps is rounded)
            vals.append(loss_of().item())
        tensor[idx] = old
        return (vals[0] - vals[1]) / (steps[0] - steps[1])

    worst = {}
    with torch.no_grad():
        cases = [
            ("emb.grad.embedding", emb["embedding"], 3, lambda: ref.losses(bt.emb(emb)[0], targets)[0]),
            ("infix.grad.table", infix_table, 3, lambda: ref.losses(bt.infix(infix_table), targets)[0]),
            ("deep.grad.w_mid", deep["w_mid"], 3, lambda: ref.losses(bt.deep(deep)[0], targets)[0]),
            ("full.grad.wte.weight", Wg["wte.weight"], 1, lambda: ref.losses(bt.full(Wg), targets)[1]),
        ]
        for name, tensor, n, loss_of in cases:
            for idx in pick(tensor.grad, n):
                an = tensor.grad[idx].item()
                num = fd(loss_of, tensor, idx)
                rel = abs(num - an) / abs(an)
                assert rel < 1e-6, "FD %s%s: fd %.10e autograd %.10e (rel %.2e)" % (name, idx, num, an, rel)
                worst[name] = max(worst.get(name, 0.0), rel)
    print("check (c): central differences (eps 1e-6) vs autograd, max rel err: " +
          ", ".join("%s %.1e" % kv for kv in worst.items()))

    # (d) the infix is used, and only from from[b] on
    with torch.no_grad():
        row_max = infix_table.grad.abs().amax(dim=1)
        assert bool((row_max > 1e-6).all()), "an infix gradient row is zero: %s" % row_max.tolist()
        plain = ref.gpt2_forward(W, ids, mask, bt.pos_plain)
        lg = res["infix"]["logits"]
        src = ~bt.vis_infix
        e1 = maxerr(lg[src], plain[src])
        assert e1 <= 1e-12, "source logits depend on the infix: %.3e" % e1
        moved = (lg[~src] - plain[~src]).abs().amax(dim=-1).min().item()
        assert moved > 1e-3, "infix does not change the logits from from[b] on (%.3e)" % moved
    print("check (d): infix grad rows non-zero (smallest row max %.2e); source logits (t < from) == no-prefix "
          "logits (max err %.1e); every later position moves (min %.2e)" % (row_max.min(), e1, moved))


def unravel(flat, shape):
    """Flat index -> index tuple (torch 1.13 has no torch.unravel_index)."""
    out = []
    for s in reversed(shape):
        out.append(flat % s)
        flat //= s
    return tuple(reversed(out))


if __name__ == "__main__":
    sys.exit(main())
