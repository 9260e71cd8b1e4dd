#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Independent plain-PyTorch float64 reference for prefix-tuning a frozen BART with the paper's three prefixes.

Writes a tiny random BART in the HuggingFace ``BartForConditionalGeneration`` layout (``DIR/bart/``: F32, zero
``final_logits_bias``, tied copies ``model.{encoder,decoder}.embed_tokens.weight`` and ``lm_head.weight`` written
out; ``DIR/bart_bias/``: the same weights with a random ``final_logits_bias`` and without the tied copies) and
``DIR/bart_reference.safetensors`` with inputs, the three prefix tables (encoder self-attention, decoder
self-attention, decoder cross-attention), logits, losses, gradients, the encoder output and greedy generations,
all computed in float64.  See tests/reference/README.md ("BART with three prefixes") for the conventions.

Only torch and the Python standard library are used (plus gpt2_prefix_reference.py's safetensors helpers).

    /usr/bin/python3 tests/reference/bart_prefix_reference.py --out DIR [--seed 0] [--no-check]
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.dont_write_bytecode = True                                  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_prefix_reference as ref  # noqa: E402  (safetensors writer and reader)

F64 = torch.float64

# ----------------------------------------------------------------------------------------------------------
# sizes and conventions
# ----------------------------------------------------------------------------------------------------------
CONFIG = {
    "model_type": "bart", "architectures": ["BartForConditionalGeneration"],
    "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "encoder_ffn_dim": 48, "decoder_ffn_dim": 48,
    "max_position_embeddings": 40, "vocab_size": 60,
    "activation_function": "gelu", "scale_embedding": False,
    "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    "decoder_start_token_id": 2, "forced_bos_token_id": 0,
    "tie_word_embeddings": True, "normalize_before": False, "add_final_layer_norm": False,
}
D = CONFIG["d_model"]
LE, LD = CONFIG["encoder_layers"], CONFIG["decoder_layers"]
NHE, NHD = CONFIG["encoder_attention_heads"], CONFIG["decoder_attention_heads"]
FE, FD = CONFIG["encoder_ffn_dim"], CONFIG["decoder_ffn_dim"]
V, MAXPOS = CONFIG["vocab_size"], CONFIG["max_position_embeddings"]
PAD, EOS, DEC_START = CONFIG["pad_token_id"], CONFIG["eos_token_id"], CONFIG["decoder_start_token_id"]
EMBED_SCALE = math.sqrt(D) if CONFIG["scale_embedding"] else 1.0
LN_EPS = 1e-5            # nn.LayerNorm default; HF BART has no config key for it
POS_OFFSET = 2           # BartLearnedPositionalEmbedding: position p uses row p + 2 (table has max_pos + 2 rows)

P = 3                    # prefix length (each of the three prefixes)
B = 2                    # batch
S = 7                    # source length; row 1 is right-padded over its last SRC_PAD positions
SRC_PAD = 2
T = 6                    # target length; row 1's last TGT_PAD labels are -100
TGT_PAD = 2
IGNORE = -100
LS_EPS = 0.1             # label smoothing (HF label_smoothing_factor)
GREEDY_NEW = 8           # greedy decoding: at most this many new tokens, stop at EOS (not stored)
# Beam search (HF BeamSearchScorer rules, early_stopping=True) and greedy with the sequence processors:
BEAM = dict(num_beams=3, max_new=7, min_new=3, no_repeat=2, length_penalty=1.0, forced_bos=None)
GREEDY_PROC = dict(num_beams=1, max_new=8, min_new=2, no_repeat=2, length_penalty=1.0,
                   forced_bos=CONFIG["forced_bos_token_id"])

# Initialisation.  HF's init_std 0.02 everywhere makes this post-LN model nearly blind to the encoder: the encoder
# prefix then moves the logits by only 2e-4 and its gradient is ~3e-6, below what float64 central differences
# can check to 1e-6 relative (and a float32 C++ test could barely see it).  Linear weights ~ 1/sqrt(d_model) and
# embeddings at 0.1 make all three prefixes matter (each moves the logits by > 1, gradients ~1e-2).
LIN_STD = 0.2            # every nn.Linear weight (q/k/v/out_proj, fc1, fc2)
EMB_STD = 0.1            # model.shared.weight and both embed_positions
BIAS_STD = 0.02          # every nn.Linear bias
LN_STD = 0.1             # LayerNorm weight 1 + N(0, LN_STD), bias N(0, LN_STD)
FINAL_BIAS_STD = 0.1     # final_logits_bias of bart_bias/

PREFIXES = ("encoder", "decoder", "cross")
PREFIX_LAYERS = {"encoder": LE, "decoder": LD, "cross": LD}
PREFIX_HEADS = {"encoder": NHE, "decoder": NHD, "cross": NHD}


# ----------------------------------------------------------------------------------------------------------
# weights (HF BartForConditionalGeneration state_dict names; nn.Linear layout: weight is [out, in])
# ----------------------------------------------------------------------------------------------------------
def make_weights(g):
    """float32 weights without the tied copies and without final_logits_bias, in a fixed drawing order."""
    def n(*shape, std, mean=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean).contiguous()

    w = {"model.shared.weight": n(V, D, std=EMB_STD)}

    def linear(name, fin, fout):
        w[name + ".weight"] = n(fout, fin, std=LIN_STD)
        w[name + ".bias"] = n(fout, std=BIAS_STD)

    def norm(name):
        w[name + ".weight"] = n(D, std=LN_STD, mean=1.0)
        w[name + ".bias"] = n(D, std=LN_STD)

    for stack, nl, ffn in (("encoder", LE, FE), ("decoder", LD, FD)):
        pre = "model.%s." % stack
        w[pre + "embed_positions.weight"] = n(MAXPOS + POS_OFFSET, D, std=EMB_STD)
        for i in range(nl):
            p = pre + "layers.%d." % i
            attns = ("self_attn", "encoder_attn") if stack == "decoder" else ("self_attn",)
            for a in attns:
                for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                    linear(p + a + "." + proj, D, D)
                norm(p + a + "_layer_norm")
            linear(p + "fc1", D, ffn)
            linear(p + "fc2", ffn, D)
            norm(p + "final_layer_norm")
        norm(pre + "layernorm_embedding")
    return w


# ----------------------------------------------------------------------------------------------------------
# implementation 1: batched BART, prefix K/V joined to the real K/V in one softmax
# ----------------------------------------------------------------------------------------------------------
def table_to_kv(table, n_layer, n_head):
    """(P, 2*L*D) -> list over layers of (key, value), each (NH, P, HS): view (P, 2L, NH, HS),
    permute (2L, NH, P, HS), layer i key = block 2i, value = block 2i + 1 (as gpt2_prefix_reference.py)."""
    Pn = table.shape[0]
    kv = table.view(Pn, 2 * n_layer, n_head, D // n_head).permute(1, 2, 0, 3)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(n_layer)]


def layer_norm(x, W, name):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + LN_EPS) * W[name + ".weight"] + W[name + ".bias"]


def linear(x, W, name):
    return x @ W[name + ".weight"].t() + W[name + ".bias"]


def attention(W, name, xq, xkv, keep, n_head, prefix=None):
    """xq (B, Tq, D), xkv (B, Tk, D), keep (B, Tq, Tk) bool (visible real keys); prefix (k, v), each (NH, P, HS),
    shared by every row, always visible.  q = q_proj(xq) * HS**-0.5; prefix K/V used as given (no k/v_proj)."""
    Bn, Tq, _ = xq.shape
    Tk = xkv.shape[1]
    HS = D // n_head
    q = linear(xq, W, name + ".q_proj") * HS ** -0.5
    k = linear(xkv, W, name + ".k_proj")
    v = linear(xkv, W, name + ".v_proj")
    q = q.view(Bn, Tq, n_head, HS).transpose(1, 2)                      # (B, NH, Tq, HS)
    k = k.view(Bn, Tk, n_head, HS).transpose(1, 2)
    v = v.view(Bn, Tk, n_head, HS).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)).masked_fill(~keep[:, None], float("-inf"))
    if prefix is not None:
        pk, pv = prefix
        Pn = pk.shape[1]
        sp = q @ pk.transpose(-1, -2)[None]                              # (B, NH, Tq, P)
        prob = torch.softmax(torch.cat([sp, s], dim=-1), dim=-1)
        o = prob[..., :Pn] @ pv[None] + prob[..., Pn:] @ v
    else:
        o = torch.softmax(s, dim=-1) @ v
    return linear(o.transpose(1, 2).reshape(Bn, Tq, D), W, name + ".out_proj")


def encode(W, input_ids, attention_mask, kv=None, pos_start=0):
    Bn, Sn = input_ids.shape
    pos = torch.arange(pos_start, pos_start + Sn) + POS_OFFSET
    x = W["model.shared.weight"][input_ids] * EMBED_SCALE + W["model.encoder.embed_positions.weight"][pos]
    x = layer_norm(x, W, "model.encoder.layernorm_embedding")
    keep = attention_mask.bool()[:, None, :].expand(Bn, Sn, Sn)
    for i in range(LE):
        p = "model.encoder.layers.%d." % i
        a = attention(W, p + "self_attn", x, x, keep, NHE, kv[i] if kv is not None else None)
        x = layer_norm(x + a, W, p + "self_attn_layer_norm")
        f = linear(torch.nn.functional.gelu(linear(x, W, p + "fc1")), W, p + "fc2")
        x = layer_norm(x + f, W, p + "final_layer_norm")
    return x


def decode(W, decoder_input_ids, enc, attention_mask, self_kv=None, cross_kv=None, pos_start=0,
           decoder_attention_mask=None):
    Bn, Tn = decoder_input_ids.shape
    pos = torch.arange(pos_start, pos_start + Tn) + POS_OFFSET
    y = W["model.shared.weight"][decoder_input_ids] * EMBED_SCALE + W["model.decoder.embed_positions.weight"][pos]
    y = layer_norm(y, W, "model.decoder.layernorm_embedding")
    keep_self = torch.ones(Tn, Tn, dtype=torch.bool).tril()[None].expand(Bn, Tn, Tn)
    if decoder_attention_mask is not None:
        keep_self = keep_self & decoder_attention_mask.bool()[:, None, :]
    keep_cross = attention_mask.bool()[:, None, :].expand(Bn, Tn, enc.shape[1])
    for i in range(LD):
        p = "model.decoder.layers.%d." % i
        a = attention(W, p + "self_attn", y, y, keep_self, NHD, self_kv[i] if self_kv is not None else None)
        y = layer_norm(y + a, W, p + "self_attn_layer_norm")
        a = attention(W, p + "encoder_attn", y, enc, keep_cross, NHD, cross_kv[i] if cross_kv is not None else None)
        y = layer_norm(y + a, W, p + "encoder_attn_layer_norm")
        f = linear(torch.nn.functional.gelu(linear(y, W, p + "fc1")), W, p + "fc2")
        y = layer_norm(y + f, W, p + "final_layer_norm")
    return y @ W["model.shared.weight"].t() + W["final_logits_bias"][0]


def bart_forward(W, input_ids, attention_mask, decoder_input_ids, tables=None, **kw):
    """tables: dict with any of 'encoder', 'decoder', 'cross' -> (P, 2*L*D) table.  Returns (logits, encoder out)."""
    tables = tables or {}
    kv = {k: table_to_kv(t, PREFIX_LAYERS[k], PREFIX_HEADS[k]) for k, t in tables.items()}
    pos_start = kw.pop("pos_start", 0)
    enc = encode(W, input_ids, attention_mask, kv.get("encoder"), pos_start)
    logits = decode(W, decoder_input_ids, enc, attention_mask, kv.get("decoder"), kv.get("cross"), pos_start, **kw)
    return logits, enc


# ----------------------------------------------------------------------------------------------------------
# implementation 2 (cross-check only): per row / per query / per head loops, [prefix_k ; k] by torch.cat,
# prefix slices read with the flat index ((2*layer + kv) * NH + head) * HS + e
# ----------------------------------------------------------------------------------------------------------
def bart_forward_loops(W, input_ids, attention_mask, decoder_input_ids, tables=None):
    tables = tables or {}
    sqrt2 = math.sqrt(2.0)

    def ln(x, name):
        out = torch.empty_like(x)
        for r in range(x.shape[0]):
            row = x[r]
            mu = row.sum() / row.numel()
            var = ((row - mu) * (row - mu)).sum() / row.numel()
            out[r] = (row - mu) * (1.0 / math.sqrt(float(var) + LN_EPS)) * W[name + ".weight"] + W[name + ".bias"]
        return out

    def lin(x, name):
        return x @ W[name + ".weight"].t() + W[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1.0 + torch.erf(x / sqrt2))

    def prefix_slice(kind, layer, kv, h, n_head):
        if kind not in tables:
            return None
        HS = D // n_head
        c0 = ((2 * layer + kv) * n_head + h) * HS
        return tables[kind][:, c0:c0 + HS]                               # (P, HS)

    def attn(name, xq, xkv, visible, n_head, kind, layer):
        """visible[t]: list of visible real key indices for query t."""
        HS = D // n_head
        q, k, v = lin(xq, name + ".q_proj"), lin(xkv, name + ".k_proj"), lin(xkv, name + ".v_proj")
        o = torch.zeros(xq.shape[0], D, dtype=F64)
        for t in range(xq.shape[0]):
            for h in range(n_head):
                sl = slice(h * HS, (h + 1) * HS)
                keys, vals = k[visible[t], sl], v[visible[t], sl]
                pk, pv = prefix_slice(kind, layer, 0, h, n_head), prefix_slice(kind, layer, 1, h, n_head)
                if pk is not None:
                    keys = torch.cat([pk, keys], dim=0)
                    vals = torch.cat([pv, vals], dim=0)
                sc = (keys @ q[t, sl]) / math.sqrt(HS)
                ex = torch.exp(sc - sc.max())
                o[t, sl] = (ex / ex.sum()) @ vals
        return lin(o, name + ".out_proj")

    all_logits, all_enc = [], []
    for b in range(input_ids.shape[0]):
        Sn, Tn = input_ids.shape[1], decoder_input_ids.shape[1]
        x = torch.stack([W["model.shared.weight"][int(input_ids[b, j])] * EMBED_SCALE +
                         W["model.encoder.embed_positions.weight"][j + POS_OFFSET] for j in range(Sn)])
        x = ln(x, "model.encoder.layernorm_embedding")
        src_vis = [j for j in range(Sn) if int(attention_mask[b, j]) == 1]
        for i in range(LE):
            p = "model.encoder.layers.%d." % i
            x = ln(x + attn(p + "self_attn", x, x, [src_vis] * Sn, NHE, "encoder", i), p + "self_attn_layer_norm")
            x = ln(x + lin(gelu(lin(x, p + "fc1")), p + "fc2"), p + "final_layer_norm")
        all_enc.append(x)
        y = torch.stack([W["model.shared.weight"][int(decoder_input_ids[b, t])] * EMBED_SCALE +
                         W["model.decoder.embed_positions.weight"][t + POS_OFFSET] for t in range(Tn)])
        y = ln(y, "model.decoder.layernorm_embedding")
        causal = [list(range(t + 1)) for t in range(Tn)]
        for i in range(LD):
            p = "model.decoder.layers.%d." % i
            y = ln(y + attn(p + "self_attn", y, y, causal, NHD, "decoder", i), p + "self_attn_layer_norm")
            y = ln(y + attn(p + "encoder_attn", y, x, [src_vis] * Tn, NHD, "cross", i), p + "encoder_attn_layer_norm")
            y = ln(y + lin(gelu(lin(y, p + "fc1")), p + "fc2"), p + "final_layer_norm")
        logits = torch.stack([sum(y[t, c] * W["model.shared.weight"][:, c] for c in range(D)) for t in range(Tn)])
        all_logits.append(logits + W["final_logits_bias"][0])
    return torch.stack(all_logits), torch.stack(all_enc)


# ----------------------------------------------------------------------------------------------------------
# batch, losses, greedy decoding
# ----------------------------------------------------------------------------------------------------------
def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """HF modeling_bart.shift_tokens_right: shift right, start token first, -100 -> pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == IGNORE, pad_token_id)


def losses(logits, labels):
    """(mean token CE over labels != -100, HF LabelSmoother loss with epsilon LS_EPS)."""
    sel = labels != IGNORE
    lp = torch.log_softmax(logits[sel], dim=-1)
    nll = -lp.gather(-1, labels[sel][:, None])[:, 0]
    smooth = -lp.mean(dim=-1)
    return nll.mean(), ((1.0 - LS_EPS) * nll + LS_EPS * smooth).mean()


def greedy_generate(W, src, tables):
    """src: list of ids (no padding).  Full recompute each step (no cache); argmax of the last position, lowest
    index on ties; stops at EOS (not appended) or after GREEDY_NEW tokens.  Returns (new ids, ended, margins,
    step logits (steps, V)): one margin / logits row per step taken, the EOS step included."""
    ids_src = torch.tensor([src], dtype=torch.int64)
    mask = torch.ones_like(ids_src)
    dec, new, margins, rows, ended = [DEC_START], [], [], [], False
    for _ in range(GREEDY_NEW):
        logits = bart_forward(W, ids_src, mask, torch.tensor([dec], dtype=torch.int64), tables)[0][0, -1]
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        rows.append(logits)
        tok = int((logits == top[0]).nonzero()[0, 0])
        if tok == EOS:
            ended = True
            break
        dec.append(tok)
        new.append(tok)
    return new, ended, margins, torch.stack(rows)


def process(logits, seq, generated, st):
    """The logit processors on one row (a copy): min length (eos banned while fewer than min_new tokens were
    generated), forced first token, HF's no-repeat n-gram rule over the decoder sequence seq."""
    z = logits.clone()
    if generated < st["min_new"]:
        z[EOS] = -math.inf
    if st["forced_bos"] is not None and generated == 0:
        keep = z[st["forced_bos"]].clone()
        z[:] = -math.inf
        z[st["forced_bos"]] = keep
    n = st["no_repeat"]
    if n > 0 and len(seq) + 1 >= n:
        tail = tuple(seq[len(seq) - n + 1:])
        for i in range(len(seq) - n + 1):
            if tuple(seq[i:i + n - 1]) == tail:
                z[seq[i + n - 1]] = -math.inf
    return z


def search_generate(W, src, tables, st):
    """Beam search (num_beams > 1) or greedy (num_beams 1) by full recompute, log-probabilities renormalised after
    the processors. Beam rules (HF BeamSearchScorer, early_stopping=True): per step the 2 * num_beams best (score,
    beam, token) candidates over all beams (ties: lower beam, then lower token); an eos candidate among the first
    num_beams ranks closes a hypothesis scored sum_logp / (generated + 1) ** length_penalty (eos counted),
    other eos candidates are skipped; the first num_beams non-eos candidates continue; a request stops once it
    holds num_beams hypotheses, when no beam continues, or at max_new tokens (running beams become hypotheses
    scored by their length). Returns (ids of the best hypothesis, its score)."""
    ids_src = torch.tensor([src], dtype=torch.int64)
    mask = torch.ones_like(ids_src)
    nb = st["num_beams"]
    beams, hyps, cur = [([], 0.0)], [], 0
    norm = lambda n: max(n, 1) ** st["length_penalty"]

    def add(score, ids):
        if len(hyps) >= nb and score <= hyps[-1][0]:
            return
        at = len(hyps)
        while at > 0 and hyps[at - 1][0] < score:
            at -= 1
        hyps.insert(at, (score, ids))
        del hyps[nb:]

    while True:
        cands = []
        for b, (ids, sc) in enumerate(beams):
            dec = [DEC_START] + ids
            logits = bart_forward(W, ids_src, mask, torch.tensor([dec], dtype=torch.int64), tables)[0][0, -1]
            lp = torch.log_softmax(process(logits, dec, cur, st), dim=-1)
            cands += [(sc + float(lp[v]), b, v) for v in range(V) if lp[v] > -math.inf]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        if nb == 1:  # greedy: the best token continues; eos ends
            s_, b_, v_ = cands[0]
            if v_ == EOS:
                return beams[0][0], s_
            beams = [(beams[0][0] + [v_], s_)]
            cur += 1
            if cur >= st["max_new"]:
                return beams[0][0], s_
            continue
        nxt = []
        for rank, (sc, b, v) in enumerate(cands[:2 * nb]):
            if len(nxt) >= nb:
                break
            if v == EOS:
                if rank < nb:
                    add(sc / norm(cur + 1), beams[b][0])
                continue
            nxt.append((beams[b][0] + [v], sc))
        done = not nxt or len(hyps) >= nb
        if not done and cur + 1 >= st["max_new"]:
            for ids, sc in nxt:
                add(sc / norm(cur + 1), ids)
            done = True
        if done:
            return hyps[0][1], hyps[0][0]
        beams = nxt
        cur += 1


# ----------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(args.seed)
    W32 = make_weights(g)
    bias32 = torch.randn(1, V, generator=g, dtype=torch.float32) * FINAL_BIAS_STD
    tables32 = {k: torch.randn(P, 2 * PREFIX_LAYERS[k] * D, generator=g, dtype=torch.float32) for k in PREFIXES}
    input_ids = torch.randint(3, V, (B, S), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(B, S, dtype=torch.int64)
    input_ids[1, S - SRC_PAD:] = PAD
    attention_mask[1, S - SRC_PAD:] = 0
    labels = torch.randint(3, V, (B, T), generator=g, dtype=torch.int64)
    labels[1, T - TGT_PAD:] = IGNORE
    decoder_input_ids = shift_tokens_right(labels, PAD, DEC_START)

    W = {k: v.to(F64) for k, v in W32.items()}
    W["final_logits_bias"] = torch.zeros(1, V, dtype=F64)
    Wb = dict(W, final_logits_bias=bias32.to(F64))

    # --- with the three prefixes: losses, gradients of loss_mean w.r.t. the tables ---------------------------
    tables = {k: t.to(F64).requires_grad_(True) for k, t in tables32.items()}
    logits_p, enc_p = bart_forward(W, input_ids, attention_mask, decoder_input_ids, tables)
    lmean_p, lsmooth_p = losses(logits_p, labels)
    lmean_p.backward()

    # --- without a prefix; the model with a final_logits_bias ----------------------------------------------
    with torch.no_grad():
        logits_np, enc_np = bart_forward(W, input_ids, attention_mask, decoder_input_ids)
        lmean_np, lsmooth_np = losses(logits_np, labels)
        logits_bias_np = bart_forward(Wb, input_ids, attention_mask, decoder_input_ids)[0]

    # --- greedy decoding with the three prefixes, one source at a time (row 1 without its padding) ----------
    srcs = [input_ids[b, :int(attention_mask[b].sum())].tolist() for b in range(B)]
    tables_d = {k: t.detach() for k, t in tables.items()}
    with torch.no_grad():
        greedy = [greedy_generate(W, s, tables_d) for s in srcs]
        beam = [search_generate(W, s, tables_d, BEAM) for s in srcs]
        greedy_proc = [search_generate(W, s, tables_d, GREEDY_PROC) for s in srcs]

    # --- self-checks (not written) --------------------------------------------------------------------------
    if not args.no_check:
        self_check(W, tables, input_ids, attention_mask, labels, decoder_input_ids, logits_p.detach(),
                   enc_p.detach(), logits_np, enc_np, logits_bias_np, Wb, srcs, greedy)

    # --- write -----------------------------------------------------------------------------------------------
    out = args.out
    shared = W32["model.shared.weight"]

    def model_dir(name, bias, tied_copies):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(CONFIG, f, indent=2)
            f.write("\n")
        ts = [("final_logits_bias", bias, "F32"), ("model.shared.weight", shared, "F32")]
        for k, v in W32.items():
            if k == "model.shared.weight":
                continue
            if tied_copies and k == "model.encoder.embed_positions.weight":
                ts.append(("model.encoder.embed_tokens.weight", shared, "F32"))
            if tied_copies and k == "model.decoder.embed_positions.weight":
                ts.append(("model.decoder.embed_tokens.weight", shared, "F32"))
            ts.append((k, v, "F32"))
        if tied_copies:
            ts.append(("lm_head.weight", shared, "F32"))
        ref.write_safetensors(os.path.join(d, "model.safetensors"), ts)
        return ts

    files = {"bart": model_dir("bart", torch.zeros(1, V), True),
             "bart_bias": model_dir("bart_bias", bias32, False)}

    dd = lambda t: t.detach().to(F64)
    one = lambda t: t.detach().to(F64).reshape(1)
    tensors = [("input_ids", input_ids, "I64"),
               ("attention_mask", attention_mask, "I64"),
               ("labels", labels, "I64"),
               ("decoder_input_ids", decoder_input_ids, "I64")]
    tensors += [("prefix." + k, dd(tables32[k]), "F64") for k in PREFIXES]
    tensors += [("logits_prefix", dd(logits_p), "F64"),
                ("loss_mean_prefix", one(lmean_p), "F64"),
                ("loss_smoothed_prefix", one(lsmooth_p), "F64")]
    tensors += [("grad.prefix." + k, dd(tables[k].grad), "F64") for k in PREFIXES]
    tensors += [("encoder_hidden_prefix", dd(enc_p), "F64"),
                ("logits_noprefix", dd(logits_np), "F64"),
                ("loss_mean_noprefix", one(lmean_np), "F64"),
                ("logits_bias_noprefix", dd(logits_bias_np), "F64")]
    for i, (new, ended, margins, rows) in enumerate(greedy):
        tensors.append(("greedy.ids%d" % i, torch.tensor(new, dtype=torch.int64), "I64"))
    tensors += [("greedy.ended", torch.tensor([r[1] for r in greedy], dtype=torch.int64), "I64"),
                ("greedy.margin", torch.tensor([min(r[2]) for r in greedy], dtype=F64), "F64")]
    tensors += [("greedy.logits%d" % i, rows, "F64") for i, (_, _, _, rows) in enumerate(greedy)]
    for name, res in (("beam", beam), ("greedy_proc", greedy_proc)):
        for i, (ids, _) in enumerate(res):
            tensors.append(("%s.ids%d" % (name, i), torch.tensor(ids, dtype=torch.int64), "I64"))
        tensors.append((name + ".score", torch.tensor([sc for _, sc in res], dtype=F64), "F64"))
    meta = dict(
        generator="tests/reference/bart_prefix_reference.py", seed=args.seed,
        d_model=D, encoder_layers=LE, decoder_layers=LD, encoder_attention_heads=NHE, decoder_attention_heads=NHD,
        encoder_ffn_dim=FE, decoder_ffn_dim=FD, vocab_size=V, max_position_embeddings=MAXPOS,
        layer_norm_eps=LN_EPS, prefix_length=P, batch=B, source_len=S, target_len=T, ignore_index=IGNORE,
        models="bart/: final_logits_bias zeros, tied copies model.{encoder,decoder}.embed_tokens.weight and "
               "lm_head.weight written; bart_bias/: final_logits_bias N(0,0.1), no tied copies; same weights",
        layout="HF BartForConditionalGeneration state_dict names; nn.Linear weight [out, in], y = x W^T + b",
        init="float32 draws: Linear weights N(0,%g), Linear biases N(0,%g), shared and embed_positions N(0,%g), "
             "LayerNorm weight 1+N(0,%g) bias N(0,%g), prefix tables N(0,1); bart_bias final_logits_bias N(0,%g)"
             % (LIN_STD, BIAS_STD, EMB_STD, LN_STD, LN_STD, FINAL_BIAS_STD),
        positions="learned, offset 2: position p uses embed_positions row p + 2; positions start at 0 in both "
                  "stacks and are NOT shifted by the prefixes",
        embedding="x = shared[ids] * 1 (scale_embedding false) + embed_positions[p + 2], then layernorm_embedding",
        layers="post-LN: x = LN(x + attn(x)); decoder: self-attn, cross-attn, FFN each followed by its LN; "
               "FFN fc2(gelu(fc1(x))) with exact erf GELU; LayerNorm eps 1e-5 biased variance; no final LN",
        attention="q = q_proj(x) * head_dim**-0.5; scores q.k; one softmax over [prefix | visible real] keys; "
                  "masked keys -inf; out_proj",
        prefix_layout="each table (P, 2*L*d_model) -> view (P, 2L, NH, HS) -> permute (2L, NH, P, HS); layer i "
                      "key = block 2i, value = block 2i+1; flat row index ((2*layer+kv)*NH+head)*HS+e",
        prefixes="prefix.encoder: encoder self-attention; prefix.decoder: decoder causal self-attention; "
                 "prefix.cross: decoder cross-attention (before the encoder states); every query sees all P "
                 "slots of its prefix, never masked; prefix K/V used as given (no k_proj/v_proj)",
        masks="encoder self-attn and cross-attn: source attention_mask over keys (padded queries still computed); "
              "decoder self-attn: causal only, NO decoder padding mask",
        decoder_input_ids="shift_tokens_right(labels, pad 1, decoder_start 2): [2, labels[:-1]] with -100 -> 1",
        loss_mean="mean token cross-entropy over labels != -100; grad.prefix.* are of loss_mean_prefix",
        loss_smoothed="HF LabelSmoother eps 0.1: mean over labels != -100 of 0.9 * nll + 0.1 * mean_v(-log p_v)",
        logits="logits = decoder_out @ shared^T + final_logits_bias, every position (padded ones included)",
        greedy="per source (row 1 without padding), all three prefixes, decoder starts [2], full recompute each "
               "step, argmax (lowest index on ties), stop at eos 2 (not stored) or after 8 new tokens, no forced "
               "BOS; greedy.margin = smallest top-1 minus top-2 logit over the steps taken; greedy.ended 1 = eos; "
               "greedy.logits{i} = the last position's logits at each step taken (eos step included)",
        beam="per source, all three prefixes, search_generate with %s: beam.ids{i} the best hypothesis (eos "
             "not stored), beam.score its score" % BEAM,
        greedy_proc="per source, all three prefixes, greedy with the processors %s: greedy_proc.ids{i}, "
                    "greedy_proc.score the summed log-probabilities (eos step included)" % GREEDY_PROC,
    )
    path = os.path.join(out, "bart_reference.safetensors")
    ref.write_safetensors(path, tensors, meta)

    if not args.no_check:
        for sub, ts in list(files.items()) + [(None, tensors)]:
            p = path if sub is None else os.path.join(out, sub, "model.safetensors")
            _, back = ref.read_safetensors(p)
            assert set(back) == {n for n, _, _ in ts}, "tensor names of " + p
            for name, t, dt in ts:
                assert back[name][0] == dt and torch.equal(back[name][1], t.to(back[name][1].dtype)), p + " " + name
        print("check: bart/, bart_bias/ model.safetensors and bart_reference.safetensors read back bit for bit "
              "(%d, %d, %d tensors)" % (len(files["bart"]), len(files["bart_bias"]), len(tensors)))
        check_transformers(out, (input_ids, attention_mask, decoder_input_ids), logits_np, logits_bias_np)

    print("bart_prefix_reference: wrote %s (seed %d) in %.2f s" % (out, args.seed, time.time() - t0))
    print("  max|logit| prefix %.4f noprefix %.4f; max|logits_prefix - logits_noprefix| %.4f" % (
        logits_p.abs().max(), logits_np.abs().max(), (logits_p - logits_np).abs().max()))
    print("  loss_mean prefix %.10f noprefix %.10f; loss_smoothed prefix %.10f" % (lmean_p, lmean_np, lsmooth_p))
    print("  max|grad| " + ", ".join("%s %.3e" % (k, tables[k].grad.abs().max()) for k in PREFIXES))
    for i, (new, ended, margins, _) in enumerate(greedy):
        print("  greedy source %d (%d ids): %s ended %s, smallest top-2 margin %.3e" % (
            i, len(srcs[i]), new, ended, min(margins)))
    for i in range(len(srcs)):
        print("  beam source %d: %s score %.6f; greedy with processors: %s score %.6f" % (
            i, beam[i][0], beam[i][1], greedy_proc[i][0], greedy_proc[i][1]))
    return 0


# ----------------------------------------------------------------------------------------------------------
def self_check(W, tables, input_ids, attention_mask, labels, decoder_input_ids, logits_p, enc_p, logits_np, enc_np,
               logits_bias_np, Wb, srcs, greedy):
    td = {k: t.detach() for k, t in tables.items()}
    args = (input_ids, attention_mask, decoder_input_ids)

    def maxerr(a, b):
        return (a - b).abs().max().item()

    with torch.no_grad():
        # (a) three prefixes of length 0 == no prefix
        empty = {k: torch.zeros(0, 2 * PREFIX_LAYERS[k] * D, dtype=F64) for k in PREFIXES}
        lg, en = bart_forward(W, *args, empty)
        e = max(maxerr(lg, logits_np), maxerr(en, enc_np))
        assert e <= 1e-14, "(a) P = 0 vs no prefix: %.3e" % e
        print("check (a): three prefixes of length 0 == no-prefix forward (logits and encoder output, max err "
              "%.1e)" % e)

        # (b) loop implementation (per row / query / head, torch.cat of [prefix_k ; k], flat-index slices)
        e1 = max(maxerr(x, y) for x, y in zip(bart_forward_loops(W, *args, td), (logits_p, enc_p)))
        e2 = max(maxerr(x, y) for x, y in zip(bart_forward_loops(W, *args), (logits_np, enc_np)))
        e3 = maxerr(bart_forward_loops(Wb, *args)[0], logits_bias_np)
        e = max(e1, e2, e3)
        assert e <= 1e-12, "(b) loop implementation: prefix %.3e noprefix %.3e bias %.3e" % (e1, e2, e3)
        print("check (b): loop implementation (torch.cat [prefix_k ; k], erf GELU, flat-index prefix slices) == "
              "batched: prefix %.1e, no prefix %.1e, bart_bias %.1e (logits and encoder output)" % (e1, e2, e3))

    # (c) central finite differences (float64, eps 1e-6) for 3 entries of each prefix gradient
    eps = 1e-6
    gsel = torch.Generator().manual_seed(12345)
    worst = {}
    with torch.no_grad():
        for kind in PREFIXES:
            grad = tables[kind].grad
            big = (grad.abs() >= 0.5 * grad.abs().max()).reshape(-1).nonzero()[:, 0]
            for c in big[torch.randperm(big.numel(), generator=gsel)[:3]].tolist():
                idx = (c // grad.shape[1], c % grad.shape[1])
                t = {k: v.clone() for k, v in td.items()}
                old = t[kind][idx].item()
                vals, steps = [], []
                for s in (+1, -1):
                    t[kind][idx] = old + s * eps
                    steps.append(t[kind][idx].item())
                    vals.append(losses(bart_forward(W, *args, t)[0], labels)[0].item())
                num = (vals[0] - vals[1]) / (steps[0] - steps[1])
                an = grad[idx].item()
                rel = abs(num - an) / abs(an)
                assert rel < 1e-6, "(c) FD grad.prefix.%s%s: fd %.10e autograd %.10e (rel %.2e)" % (
                    kind, idx, num, an, rel)
                worst[kind] = max(worst.get(kind, 0.0), rel)
    print("check (c): central differences (eps 1e-6) vs autograd, 3 entries each, max rel err: " +
          ", ".join("%s %.1e" % kv for kv in worst.items()))

    with torch.no_grad():
        # (d) the encoder prefix changes the encoder output; the decoder and cross prefixes do not; each prefix
        #     changes the logits; every gradient is non-zero
        _, en_enc = bart_forward(W, *args, {"encoder": td["encoder"]})
        lg_dc, en_dc = bart_forward(W, *args, {"decoder": td["decoder"], "cross": td["cross"]})
        moved = maxerr(en_enc, enc_np)
        assert moved > 1e-2, "(d) encoder prefix does not change the encoder output (%.3e)" % moved
        assert torch.equal(en_dc, enc_np), "(d) decoder/cross prefixes change the encoder output"
        assert torch.equal(en_enc, enc_p), "(d) encoder output depends on more than the encoder prefix"
        lg_moves = {k: maxerr(bart_forward(W, *args, {k: td[k]})[0], logits_np) for k in PREFIXES}
        assert min(lg_moves.values()) > 1e-3, "(d) a prefix does not change the logits: %s" % lg_moves
        gmin = min(tables[k].grad.abs().amax(dim=1).min().item() for k in PREFIXES)
        assert gmin > 1e-8, "(d) a prefix gradient row is zero"
        print("check (d): encoder prefix moves the encoder output by %.3f; decoder + cross prefixes leave it "
              "bit-identical; each prefix alone moves the logits (%s); every gradient row non-zero" % (
                  moved, ", ".join("%s %.3f" % kv for kv in lg_moves.items())))

        # (f) padding and bias: row 1 alone without its padding == row 1 of the batch (encoder real positions and
        #     every decoder position); logits_bias - logits == final_logits_bias; losses vs torch.nn.functional
        n1 = int(attention_mask[1].sum())
        lg1, en1 = bart_forward(W, input_ids[1:, :n1], attention_mask[1:, :n1], decoder_input_ids[1:], td)
        e_pad = max(maxerr(lg1[0], logits_p[1]), maxerr(en1[0], enc_p[1, :n1]))
        assert e_pad <= 1e-12, "(f) padding leak: %.3e" % e_pad
        e_bias = maxerr(logits_bias_np - logits_np, Wb["final_logits_bias"].expand_as(logits_np))
        assert e_bias <= 1e-12, "(f) final_logits_bias: %.3e" % e_bias
        lm, ls = losses(logits_p, labels)
        flat_lg, flat_lb = logits_p.reshape(-1, V), labels.reshape(-1)
        tm = torch.nn.functional.cross_entropy(flat_lg, flat_lb, ignore_index=IGNORE)
        ts = torch.nn.functional.cross_entropy(flat_lg, flat_lb, ignore_index=IGNORE, label_smoothing=LS_EPS)
        e_loss = max(abs(lm - tm).item(), abs(ls - ts).item())
        assert e_loss <= 1e-13, "(f) losses vs F.cross_entropy: %.3e" % e_loss
        dec_mask = (decoder_input_ids != PAD).long()
        dec_mask[:, 0] = 1
        lg_dm = bart_forward(W, *args, td, decoder_attention_mask=dec_mask)[0]
        dm_moves = (lg_dm - logits_p).abs().amax(dim=-1)                 # (B, T)
        lg_shift = bart_forward(W, *args, td, pos_start=P)[0]
        print("check (f): row 1 alone without padding == batch row 1 (%.1e); logits_bias - logits == "
              "final_logits_bias (%.1e); loss_mean / loss_smoothed == F.cross_entropy(ignore_index, "
              "label_smoothing=0.1) (%.1e)" % (e_pad, e_bias, e_loss))
        print("  sensitivities: a decoder padding mask would move only %s by %.3f (labels -100 there); "
              "positions shifted by P move the logits by %.3f" % (
                  [tuple(x) for x in (dm_moves > 1e-12).nonzero().tolist()], dm_moves.max(),
                  maxerr(lg_shift, logits_p)))

        # (g) greedy: teacher-forced through the loop implementation, every step's argmax and margin agree
        e_steps = 0.0
        for i, (src, (new, ended, margins, rows)) in enumerate(zip(srcs, greedy)):
            dec = [DEC_START] + new
            lg = bart_forward_loops(W, torch.tensor([src]), torch.ones(1, len(src), dtype=torch.int64),
                                    torch.tensor([dec]), td)[0][0]
            expect = new + ([EOS] if ended else [])
            assert len(margins) == len(expect) == rows.shape[0], "(g) greedy %d: steps" % i
            e_steps = max(e_steps, maxerr(rows, lg[:len(expect)]))
            for s, tok in enumerate(expect):
                top = torch.topk(lg[s], 2).values
                assert int(lg[s].argmax()) == tok, "(g) greedy %d step %d" % (i, s)
                assert abs(float(top[0] - top[1]) - margins[s]) <= 1e-10, "(g) greedy %d margin %d" % (i, s)
        assert e_steps <= 1e-12, "(g) greedy step logits: %.3e" % e_steps
        print("check (g): greedy tokens, margins and step logits == teacher-forced loop implementation at every "
              "step (%.1e)" % e_steps)



def check_transformers(out, args, logits_np, logits_bias_np):
    """(e) HF BartForConditionalGeneration loaded from DIR/bart and DIR/bart_bias (float64), no prefix, when the
    transformers package happens to be importable (it is not a dependency)."""
    try:
        import transformers
    except ImportError:
        print("check (e): skipped: the transformers package is not importable")
        return
    try:
        from transformers import BartForConditionalGeneration
        errs = []
        for sub, want in (("bart", logits_np), ("bart_bias", logits_bias_np)):
            m = BartForConditionalGeneration.from_pretrained(os.path.join(out, sub)).to(F64).eval()
            with torch.no_grad():
                got = m(input_ids=args[0], attention_mask=args[1], decoder_input_ids=args[2]).logits
            errs.append(maxerr_abs(got, want))
    except Exception as exc:                                            # e.g. no safetensors package
        print("check (e): skipped: transformers could not load or run the model (%s: %s)" % (
            type(exc).__name__, exc))
        return
    assert max(errs) <= 1e-10, "(e) transformers BartForConditionalGeneration logits: %s" % errs
    print("check (e): transformers %s BartForConditionalGeneration (float64) no-prefix logits == reference: "
          "bart %.1e, bart_bias %.1e" % (transformers.__version__, errs[0], errs[1]))


def maxerr_abs(a, b):
    return (a - b).abs().max().item()


if __name__ == "__main__":
    sys.exit(main())
