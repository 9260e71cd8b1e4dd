#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Independent plain-PyTorch float64 reference for prefix-tuning the Llama family (llama, mistral, qwen2, qwen3).

Writes four tiny random HuggingFace-layout model folders ``DIR/<family>/`` (config.json in the transformers 4.x or
5.x layout; F32, F16 or sharded BF16 / F32 safetensors), ``DIR/<family>_reference.safetensors`` with the batch,
the rotary frequencies, PEFT's prefix encoder (prefix_projection=True), the prefix table, logits, losses,
gradients and a greedy generation computed in float64, and ``DIR/<family>_peft/``, the PEFT adapter folder PEFT
saves for that encoder.  See tests/reference/README.md ("Llama family") for the conventions.

Only torch and the Python standard library are used (plus gpt2_prefix_reference.py's safetensors helpers).

    /usr/bin/python3 tests/reference/llama_prefix_reference.py --out DIR [--seed 0] [--no-check]
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
import gpt2_prefix_reference as ref  # noqa: E402  (safetensors writer and reader, bf16 rounding)

F64 = torch.float64

# ----------------------------------------------------------------------------------------------------------
# sizes and conventions shared by the four families
# ----------------------------------------------------------------------------------------------------------
L = 2                    # num_hidden_layers
V = 67                   # vocab_size
MAXPOS = 64              # max_position_embeddings
BOS = 1                  # bos_token_id

P = 3                    # num_virtual_tokens
MID = 16                 # PEFT encoder_hidden_size
B = 2                    # batch
T = 7                    # sequence length
SRC = 3                  # the first SRC tokens of each row are "source": label -100
PAD_TAIL = 2             # row 1 is right-padded over its last PAD_TAIL positions (id 0, mask 0)
IGNORE = -100
ID_LOW = 3               # batch and prompt ids are drawn from [ID_LOW, V)
GREEDY_PROMPT = 5        # greedy generation: prompt length
GREEDY_NEW = 8           # new tokens, no end-of-sequence stop

# Initialisation (float32 draws).  HF's initializer_range 0.02 would leave a 2-layer toy model almost blind to a
# prefix (logits move by ~1e-3, gradients ~1e-5: too small for a float64 finite-difference check at 1e-6 relative,
# as bart_prefix_reference.py found).  Linear weights ~1/sqrt(in) and O(1) embeddings make the prefix move the
# logits by O(1) and its gradients ~1e-2.  The prefix encoder keeps PyTorch's default init (as PEFT creates it).
LIN_STD = 0.2            # every nn.Linear weight
BIAS_STD = 0.05          # every nn.Linear bias (llama: q/k/v/o; qwen2: q/k/v)
EMB_STD = 0.5            # model.embed_tokens.weight
NORM_STD = 0.1           # RMSNorm weights 1 + N(0, NORM_STD) (input/post_attention_layernorm, norm, q_norm, k_norm)
SEED_STRIDE = 1000       # family k draws from Generator().manual_seed(seed + SEED_STRIDE * k), k in FAMILY order

PEFT_VERSION = "0.17.1"  # written as adapter_config.json's peft_version (newer PEFT writes the key; ignored on read)

# The four families.  bias: None, "qkv" (Qwen2: q/k/v only) or "qkvo" (Llama's attention_bias: o_proj too).
FAMILY = ("llama", "mistral", "qwen2", "qwen3")
FAMILIES = {
    "llama": dict(arch="LlamaForCausalLM", hidden=64, heads=4, kv_heads=2, head_dim=16, head_dim_in_config=False,
                  inter=40, bias="qkvo", qk_norm=False, tie=False, eps=1e-5, theta=10000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                  layout="4.x", storage="F32", shards=1, eos=[2, 5],
                  generation_config={"eos_token_id": [2, 5, 6], "bos_token_id": BOS}),
    "mistral": dict(arch="MistralForCausalLM", hidden=32, heads=4, kv_heads=1, head_dim=12, head_dim_in_config=True,
                    inter=48, bias=None, qk_norm=False, tie=False, eps=1e-6, theta=1000000.0, rope_scaling=None,
                    layout="5.x", storage="F16", shards=1, eos=2, generation_config=None),
    "qwen2": dict(arch="Qwen2ForCausalLM", hidden=32, heads=4, kv_heads=2, head_dim=8, head_dim_in_config=False,
                  inter=48, bias="qkv", qk_norm=False, tie=True, eps=1e-6, theta=1000000.0, rope_scaling=None,
                  layout="4.x", storage="BF16", shards=2, eos=2, generation_config=None),
    "qwen3": dict(arch="Qwen3ForCausalLM", hidden=32, heads=4, kv_heads=2, head_dim=16, head_dim_in_config=True,
                  inter=48, bias=None, qk_norm=True, tie=True, eps=1e-6, theta=1000000.0, rope_scaling=None,
                  layout="5.x", storage="F32", shards=2, eos=2, generation_config=None),
}
STORAGE_TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def kv_dim(f):
    """PEFT's token_dim for a Llama-family model: num_key_value_heads * head_dim."""
    return f["kv_heads"] * f["head_dim"]


# ----------------------------------------------------------------------------------------------------------
# config.json in the transformers 4.x or 5.x layout
# ----------------------------------------------------------------------------------------------------------
def make_config(name, f):
    """The config.json dict of family `name` as save_pretrained writes it (4.x: rope_theta / rope_scaling at the
    top, torch_dtype; 5.x: rope_parameters, dtype).  Mistral's and Qwen3's dtype says float32 although
    mistral's file is F16: a loader must go by the dtypes in the safetensors header."""
    c = {
        "architectures": [f["arch"]], "model_type": name,
        "attention_dropout": 0.0, "bos_token_id": BOS, "eos_token_id": f["eos"], "hidden_act": "silu",
        "hidden_size": f["hidden"], "initializer_range": 0.02, "intermediate_size": f["inter"],
        "max_position_embeddings": MAXPOS, "num_attention_heads": f["heads"], "num_hidden_layers": L,
        "num_key_value_heads": f["kv_heads"], "rms_norm_eps": f["eps"], "tie_word_embeddings": f["tie"],
        "use_cache": True, "vocab_size": V,
    }
    if f["head_dim_in_config"]:
        c["head_dim"] = f["head_dim"]
    if name == "llama":
        c.update(attention_bias=True, mlp_bias=False, pretraining_tp=1)
    if name == "qwen3":
        c["attention_bias"] = False
    if name == "mistral":
        c["sliding_window"] = None
    if name == "qwen2":
        c.update(use_sliding_window=False, sliding_window=32, max_window_layers=L)
    if name == "qwen3":
        c.update(use_sliding_window=False, sliding_window=None, max_window_layers=L)
    if f["layout"] == "4.x":
        c["rope_theta"] = f["theta"]
        c["rope_scaling"] = f["rope_scaling"]
        c["torch_dtype"] = STORAGE_TORCH_DTYPE[f["storage"]] if name == "qwen2" else "float32"
        c["transformers_version"] = "4.46.3"
    else:
        rp = {"rope_type": "default", "rope_theta": f["theta"]}
        if f["rope_scaling"]:
            rp.update(f["rope_scaling"])
        c["rope_parameters"] = rp
        c["dtype"] = "float32"
        c["transformers_version"] = "5.0.0"
    return dict(sorted(c.items()))


# ----------------------------------------------------------------------------------------------------------
# weights (transformers' state_dict names; nn.Linear layout: weight is [out, in])
# ----------------------------------------------------------------------------------------------------------
def make_weights(f, g):
    """float32 weights of one family in the fixed drawing order (the state_dict order), lm_head only when untied."""
    C, NH, KVH, HD, I = f["hidden"], f["heads"], f["kv_heads"], f["head_dim"], f["inter"]

    def n(*shape, std, mean=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean).contiguous()

    w = {"model.embed_tokens.weight": n(V, C, std=EMB_STD)}
    for i in range(L):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = n(C, std=NORM_STD, mean=1.0)
        for proj, fout in (("q_proj", NH * HD), ("k_proj", KVH * HD), ("v_proj", KVH * HD)):
            w[p + "self_attn.%s.weight" % proj] = n(fout, C, std=LIN_STD)
            if f["bias"]:
                w[p + "self_attn.%s.bias" % proj] = n(fout, std=BIAS_STD)
        w[p + "self_attn.o_proj.weight"] = n(C, NH * HD, std=LIN_STD)
        if f["bias"] == "qkvo":
            w[p + "self_attn.o_proj.bias"] = n(C, std=BIAS_STD)
        if f["qk_norm"]:
            w[p + "self_attn.q_norm.weight"] = n(HD, std=NORM_STD, mean=1.0)
            w[p + "self_attn.k_norm.weight"] = n(HD, std=NORM_STD, mean=1.0)
        w[p + "post_attention_layernorm.weight"] = n(C, std=NORM_STD, mean=1.0)
        w[p + "mlp.gate_proj.weight"] = n(I, C, std=LIN_STD)
        w[p + "mlp.up_proj.weight"] = n(I, C, std=LIN_STD)
        w[p + "mlp.down_proj.weight"] = n(C, I, std=LIN_STD)
    w["model.norm.weight"] = n(C, std=NORM_STD, mean=1.0)
    if not f["tie"]:
        w["lm_head.weight"] = n(V, C, std=LIN_STD)
    return w


def round_to_storage(w32, storage):
    """The float32 values a file of dtype `storage` holds: F16 via torch's float16, BF16 round-to-nearest-even."""
    if storage == "F16":
        return {k: v.to(torch.float16).to(torch.float32) for k, v in w32.items()}
    if storage == "BF16":
        return {k: ref.round_bf16(v) for k, v in w32.items()}
    return dict(w32)


def make_encoder(f, g):
    """PEFT PrefixEncoder (prefix_projection=True) with PyTorch's default init: Embedding N(0, 1); Linear weight
    and bias U(+-1/sqrt(fan_in)).  Names without the 'prefix_encoder.' prefix."""
    D = kv_dim(f)

    def u(fan_in, *shape):
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1) * bound

    return {
        "embedding.weight": torch.randn(P, D, generator=g, dtype=torch.float32),
        "transform.0.weight": u(D, MID, D),
        "transform.0.bias": u(D, MID),
        "transform.2.weight": u(MID, 2 * L * D, MID),
        "transform.2.bias": u(MID, 2 * L * D),
    }


def encoder_forward(e):
    """(P, 2*L*D) table = transform.2(tanh(transform.0(embedding.weight[arange(P)])))."""
    x = e["embedding.weight"][torch.arange(e["embedding.weight"].shape[0])]
    hmid = torch.tanh(x @ e["transform.0.weight"].t() + e["transform.0.bias"])
    return hmid @ e["transform.2.weight"].t() + e["transform.2.bias"]


def table_to_kv(table, f):
    """(P, 2*L*KVH*HD) -> list over layers of (key, value), each (KVH, P, HD): view (P, 2L, KVH, HD), permute
    (2L, KVH, P, HD), layer i key = block 2i, value = block 2i + 1."""
    KVH, HD = f["kv_heads"], f["head_dim"]
    kv = table.view(table.shape[0], 2 * L, KVH, HD).permute(1, 2, 0, 3)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(L)]


# ----------------------------------------------------------------------------------------------------------
# rotary embeddings
# ----------------------------------------------------------------------------------------------------------
def rope_inv_freq(f):
    """inv_freq (HD/2,) float64 holding float32 values: 1 / theta^(2i/HD) in float64, llama3 scaling applied in
    float64 (transformers' _compute_llama3_parameters), then rounded to float32."""
    HD = f["head_dim"]
    inv = 1.0 / torch.pow(torch.tensor(f["theta"], dtype=F64), torch.arange(0, HD, 2, dtype=F64) / HD)
    rs = f["rope_scaling"]
    if rs and rs["rope_type"] == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_len = float(rs["original_max_position_embeddings"])
        low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv.to(torch.float32).to(F64)


def rope_inv_freq_hf_float32(f):
    """For information only: transformers' own float32 computation (what llama_rope.hpp mirrors)."""
    HD = f["head_dim"]
    inv = 1.0 / (f["theta"] ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    rs = f["rope_scaling"]
    if rs and rs["rope_type"] == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_len = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    """HF rotate_half: cat(-x[..., HD/2:], x[..., :HD/2])."""
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope_cos_sin(inv_freq, positions):
    """cos, sin (..., HD) of integer positions (...): angle = position * inv_freq in float64, both halves equal."""
    ang = positions.to(F64)[..., None] * inv_freq
    ang = torch.cat([ang, ang], dim=-1)
    return torch.cos(ang), torch.sin(ang)


# ----------------------------------------------------------------------------------------------------------
# implementation 1: batched forward, prefix K/V concatenated before the real K/V, one masked softmax
# ----------------------------------------------------------------------------------------------------------
def rms_norm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w over the last dimension."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def linear(x, W, name):
    """nn.Linear: x W^T (+ b when the checkpoint has the bias)."""
    y = x @ W[name + ".weight"].t()
    return y + W[name + ".bias"] if name + ".bias" in W else y


def lm_head(W):
    """The output matrix (V, C): lm_head.weight, or embed_tokens when tied."""
    return W.get("lm_head.weight", W["model.embed_tokens.weight"])


def forward(W, f, inv_freq, ids, mask, positions, table=None):
    """Logits (B, T, V).  W: float64 weights; ids, mask, positions (B, T); table (P, 2LD) or None.  Every query
    sees all P prefix slots and the real keys j <= t with mask 1; prefix keys are used as stored (no rotation,
    no k_norm)."""
    NH, KVH, HD, eps = f["heads"], f["kv_heads"], f["head_dim"], f["eps"]
    Bn, Tn = ids.shape
    group = NH // KVH
    x = W["model.embed_tokens.weight"][ids]
    cos, sin = rope_cos_sin(inv_freq, positions)                        # (B, T, HD)
    cos, sin = cos[:, None], sin[:, None]
    keep = torch.ones(Tn, Tn, dtype=torch.bool).tril()[None] & mask.bool()[:, None, :]   # (B, Tq, Tk)
    prefix = table_to_kv(table, f) if table is not None else None
    if prefix is not None:
        keep = torch.cat([torch.ones(Bn, Tn, table.shape[0], dtype=torch.bool), keep], dim=-1)
    for i in range(L):
        p = "model.layers.%d." % i
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = linear(h, W, p + "self_attn.q_proj").view(Bn, Tn, NH, HD).transpose(1, 2)
        k = linear(h, W, p + "self_attn.k_proj").view(Bn, Tn, KVH, HD).transpose(1, 2)
        v = linear(h, W, p + "self_attn.v_proj").view(Bn, Tn, KVH, HD).transpose(1, 2)
        if f["qk_norm"]:
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if prefix is not None:
            pk, pv = prefix[i]
            k = torch.cat([pk[None].expand(Bn, -1, -1, -1), k], dim=2)
            v = torch.cat([pv[None].expand(Bn, -1, -1, -1), v], dim=2)
        k = k.repeat_interleave(group, dim=1)                            # query head h reads kv head h // group
        v = v.repeat_interleave(group, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(HD)
        s = s.masked_fill(~keep[:, None], float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(Bn, Tn, NH * HD)
        x = x + linear(o, W, p + "self_attn.o_proj")
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, W, p + "mlp.gate_proj")
        x = x + linear(torch.nn.functional.silu(gate) * linear(h, W, p + "mlp.up_proj"), W, p + "mlp.down_proj")
    x = rms_norm(x, W["model.norm.weight"], eps)
    return x @ lm_head(W).t()


def loss_of(logits, targets):
    """Sum of -log softmax(logits[b, t])[targets[b, t]] over targets != -100, divided by the batch size."""
    logp = torch.log_softmax(logits, dim=-1)
    sel = targets != IGNORE
    return -logp[sel].gather(-1, targets[sel][:, None]).sum() / logits.shape[0]


# ----------------------------------------------------------------------------------------------------------
# implementation 2 (cross-check only): one row, token and head at a time; explicit key/value lists; the prefix
# read from the table by the flat index; repeat_kv by index; rotation by the explicit pair formula
# ----------------------------------------------------------------------------------------------------------
def forward_loops(W, f, inv_freq, ids, mask, positions, table=None):
    """Logits (B, T, V) computed without batching, masks or view/permute."""
    NH, KVH, HD, eps = f["heads"], f["kv_heads"], f["head_dim"], f["eps"]
    Bn, Tn = ids.shape
    half = HD // 2
    inv = inv_freq.tolist()

    def rms(vec, w):
        ms = sum(float(a) * float(a) for a in vec) / vec.numel()
        return vec * (1.0 / math.sqrt(ms + eps)) * w

    def lin(vec, name):
        y = torch.mv(W[name + ".weight"], vec)
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def rotate(vec, pos):
        out = torch.empty_like(vec)
        for j in range(half):
            c, s = math.cos(pos * inv[j]), math.sin(pos * inv[j])
            out[j] = vec[j] * c - vec[j + half] * s
            out[j + half] = vec[j + half] * c + vec[j] * s
        return out

    def prefix_slot(layer, kv, head, slot):
        start = ((2 * layer + kv) * KVH + head) * HD
        return table[slot, start:start + HD]

    logits = torch.zeros(Bn, Tn, V, dtype=F64)
    for b in range(Bn):
        xs = [W["model.embed_tokens.weight"][int(ids[b, t])].clone() for t in range(Tn)]
        for i in range(L):
            p = "model.layers.%d." % i
            qs, ks, vs = [], [], []
            for t in range(Tn):
                h = rms(xs[t], W[p + "input_layernorm.weight"])
                q, k, v = (lin(h, p + "self_attn." + n) for n in ("q_proj", "k_proj", "v_proj"))
                qh = [q[hh * HD:(hh + 1) * HD] for hh in range(NH)]
                kh = [k[g * HD:(g + 1) * HD] for g in range(KVH)]
                vh = [v[g * HD:(g + 1) * HD] for g in range(KVH)]
                if f["qk_norm"]:
                    qh = [rms(a, W[p + "self_attn.q_norm.weight"]) for a in qh]
                    kh = [rms(a, W[p + "self_attn.k_norm.weight"]) for a in kh]
                pos = int(positions[b, t])
                qs.append([rotate(a, pos) for a in qh])
                ks.append([rotate(a, pos) for a in kh])
                vs.append(vh)
            new = []
            for t in range(Tn):
                visible = [j for j in range(t + 1) if int(mask[b, j]) == 1]
                heads = []
                for hh in range(NH):
                    g = hh // (NH // KVH)
                    keys = [ks[j][g] for j in visible]
                    vals = [vs[j][g] for j in visible]
                    if table is not None:
                        keys = [prefix_slot(i, 0, g, s) for s in range(table.shape[0])] + keys
                        vals = [prefix_slot(i, 1, g, s) for s in range(table.shape[0])] + vals
                    sc = [float(torch.dot(qs[t][hh], kk)) / math.sqrt(HD) for kk in keys]
                    m = max(sc)
                    ex = [math.exp(a - m) for a in sc]
                    z = sum(ex)
                    acc = torch.zeros(HD, dtype=F64)
                    for e, vv in zip(ex, vals):
                        acc = acc + (e / z) * vv
                    heads.append(acc)
                new.append(xs[t] + lin(torch.cat(heads), p + "self_attn.o_proj"))
            xs = new
            for t in range(Tn):
                h = rms(xs[t], W[p + "post_attention_layernorm.weight"])
                gate = lin(h, p + "mlp.gate_proj")
                act = gate / (1.0 + torch.exp(-gate))
                xs[t] = xs[t] + lin(act * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        head = lm_head(W)
        for t in range(Tn):
            logits[b, t] = torch.mv(head, rms(xs[t], W["model.norm.weight"]))
    return logits


# ----------------------------------------------------------------------------------------------------------
# greedy generation
# ----------------------------------------------------------------------------------------------------------
def greedy_generate(W, f, inv_freq, prompt, table):
    """GREEDY_NEW tokens after `prompt` with the prefix (positions from P), full recomputation at each step,
    argmax of the last position (lowest index on ties), no end-of-sequence stop.  Returns (ids, margins), margins
    being the top-1 minus top-2 logit of each step."""
    seq, new, margins = list(prompt), [], []
    Pn = table.shape[0]
    for _ in range(GREEDY_NEW):
        n = len(seq)
        lg = forward(W, f, inv_freq, torch.tensor([seq]), torch.ones(1, n, dtype=torch.int64),
                     torch.arange(Pn, Pn + n)[None], table)[0, -1]
        top = torch.topk(lg, 2).values
        margins.append(float(top[0] - top[1]))
        tok = int(torch.argmax(lg))
        new.append(tok)
        seq.append(tok)
    return new, margins


def greedy_cached(W, f, inv_freq, prompt, table):
    """The same greedy run with an incremental KV cache, one token per step: each layer's cache starts with the
    prefix K/V (KVH, P, HD) and appends each token's key after rotation (and after k_norm) and its value."""
    NH, KVH, HD, eps = f["heads"], f["kv_heads"], f["head_dim"], f["eps"]
    group = NH // KVH
    cache = [[pk.clone(), pv.clone()] for pk, pv in table_to_kv(table, f)]
    pos = table.shape[0]

    def step(tok):
        nonlocal pos
        x = W["model.embed_tokens.weight"][tok]
        cos, sin = rope_cos_sin(inv_freq, torch.tensor(pos))
        for i in range(L):
            p = "model.layers.%d." % i
            h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
            q = linear(h, W, p + "self_attn.q_proj").view(NH, HD)
            k = linear(h, W, p + "self_attn.k_proj").view(KVH, HD)
            v = linear(h, W, p + "self_attn.v_proj").view(KVH, HD)
            if f["qk_norm"]:
                q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
                k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            cache[i][0] = torch.cat([cache[i][0], k[:, None]], dim=1)
            cache[i][1] = torch.cat([cache[i][1], v[:, None]], dim=1)
            o = torch.stack([torch.softmax(cache[i][0][hh // group] @ q[hh] / math.sqrt(HD), dim=0)
                             @ cache[i][1][hh // group] for hh in range(NH)]).reshape(NH * HD)
            x = x + linear(o, W, p + "self_attn.o_proj")
            h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
            x = x + linear(torch.nn.functional.silu(linear(h, W, p + "mlp.gate_proj")) *
                           linear(h, W, p + "mlp.up_proj"), W, p + "mlp.down_proj")
        pos += 1
        return rms_norm(x, W["model.norm.weight"], eps) @ lm_head(W).t()

    for tok in prompt:
        lg = step(tok)
    new = []
    for _ in range(GREEDY_NEW):
        tok = int(torch.argmax(lg))
        new.append(tok)
        lg = step(tok)
    return new


# ----------------------------------------------------------------------------------------------------------
# one family: compute, check, write
# ----------------------------------------------------------------------------------------------------------
def make_batch(g):
    """ids, mask, targets (B, T) and the greedy prompt.  Row 1 is right-padded (id 0, mask 0); HF labels are the
    ids with -100 on the first SRC tokens and on padding; targets[b, t] = labels[b, t + 1], -100 at t = T-1."""
    ids = torch.randint(ID_LOW, V, (B, T), generator=g, dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.int64)
    ids[1, T - PAD_TAIL:] = 0
    mask[1, T - PAD_TAIL:] = 0
    labels = ids.clone()
    labels[:, :SRC] = IGNORE
    labels[mask == 0] = IGNORE
    targets = torch.full((B, T), IGNORE, dtype=torch.int64)
    targets[:, :-1] = labels[:, 1:]
    prompt = torch.randint(ID_LOW, V, (GREEDY_PROMPT,), generator=g, dtype=torch.int64)
    return ids, mask, targets, prompt


def run_family(name, k, args):
    """Computes everything for family `name` (index k in FAMILY).  Returns a dict of results."""
    f = FAMILIES[name]
    g = torch.Generator().manual_seed(args.seed + SEED_STRIDE * k)
    w32 = make_weights(f, g)
    enc32 = make_encoder(f, g)
    ids, mask, targets, prompt = make_batch(g)

    stored = round_to_storage(w32, f["storage"])                        # what the files hold, as float32
    W = {key: v.to(F64) for key, v in stored.items()}
    inv_freq = rope_inv_freq(f)
    pos_p = torch.arange(P, P + T)[None].expand(B, T)
    pos_0 = torch.arange(T)[None].expand(B, T)

    enc = {key: v.to(F64).requires_grad_(True) for key, v in enc32.items()}
    table = encoder_forward(enc)
    table.retain_grad()                                                # d loss / d table as if it were a leaf
    logits = forward(W, f, inv_freq, ids, mask, pos_p, table)
    loss = loss_of(logits, targets)
    loss.backward()
    with torch.no_grad():
        tab = table.detach()
        logits_offset0 = forward(W, f, inv_freq, ids, mask, pos_0, tab)
        logits_noprefix = forward(W, f, inv_freq, ids, mask, pos_0, None)
        loss_noprefix = loss_of(logits_noprefix, targets)
        greedy_ids, greedy_margins = greedy_generate(W, f, inv_freq, prompt.tolist(), tab)
    return dict(f=f, w32=w32, stored=stored, W=W, enc32=enc32, enc=enc, ids=ids, mask=mask, targets=targets,
                prompt=prompt, inv_freq=inv_freq, pos_p=pos_p, pos_0=pos_0, table=tab, table_grad=table.grad,
                logits=logits.detach(), logits_offset0=logits_offset0, logits_noprefix=logits_noprefix,
                loss=loss.detach(), loss_noprefix=loss_noprefix, greedy_ids=greedy_ids,
                greedy_margins=greedy_margins)


def reference_tensors(r):
    """The (name, tensor, dtype) list of <family>_reference.safetensors."""
    one = lambda t: t.detach().to(F64).reshape(1)
    ts = [("ids", r["ids"], "I64"), ("mask", r["mask"], "I64"), ("targets", r["targets"], "I64"),
          ("inv_freq", r["inv_freq"], "F64")]
    ts += [("prefix_encoder." + key, v.to(F64), "F64") for key, v in r["enc32"].items()]
    ts += [("table", r["table"], "F64"),
           ("logits", r["logits"], "F64"),
           ("logits_offset0", r["logits_offset0"], "F64"),
           ("logits_noprefix", r["logits_noprefix"], "F64"),
           ("loss", one(r["loss"]), "F64"),
           ("loss_noprefix", one(r["loss_noprefix"]), "F64")]
    ts += [("grad.prefix_encoder." + key, r["enc"][key].grad.detach(), "F64") for key in r["enc32"]]
    ts += [("grad.table", r["table_grad"].detach(), "F64"),
           ("greedy_prompt", r["prompt"], "I64"),
           ("greedy_ids", torch.tensor(r["greedy_ids"], dtype=torch.int64), "I64"),
           ("greedy_margin", torch.tensor(r["greedy_margins"], dtype=F64), "F64")]
    return ts


def reference_metadata(name, r, args):
    """__metadata__ of <family>_reference.safetensors: sizes and conventions as strings."""
    f = r["f"]
    return dict(
        generator="tests/reference/llama_prefix_reference.py", family=name, seed=args.seed,
        num_hidden_layers=L, hidden_size=f["hidden"], num_attention_heads=f["heads"],
        num_key_value_heads=f["kv_heads"], head_dim=f["head_dim"], vocab_size=V, prefix_length=P,
        encoder_hidden_size=MID, token_dim=kv_dim(f), batch=B, seq_len=T, ignore_index=IGNORE,
        positions="logits: real tokens at P..P+T-1; logits_offset0 and logits_noprefix: 0..T-1",
        prefix_layout="table (P, 2*L*KVH*HD) -> view (P, 2L, KVH, HD) -> permute (2L, KVH, P, HD); layer i key = "
                      "block 2i, value = block 2i+1; prefix keys used as stored (not rotated, no k_norm)",
        attention="query head h reads kv head h // (NH/KVH); scores / sqrt(HD); prefix slots always visible; "
                  "real keys causal with mask 1; one softmax",
        rope="inv_freq = 1/theta^(2i/HD) in float64 (llama3 scaling in float64), rounded to float32; angles "
             "position * inv_freq in float64; rotate-half",
        targets="targets[b, t] = label of token t+1 (shifted already), -100 = ignored",
        loss="sum of token cross-entropies over targets != -100, divided by the batch (2); grad.* are of loss",
        greedy="greedy_ids: %d argmax tokens after greedy_prompt with the prefix (positions from P), full "
               "recomputation, no end-of-sequence stop; greedy_margin: top-1 minus top-2 logit per step"
               % GREEDY_NEW)


def shard_plan(f, keys):
    """Shard file of each key: one file, or (as save_pretrained splits by size) embeddings + layer 0 in the first
    and the rest in the second of two."""
    if f["shards"] == 1:
        return {key: "model.safetensors" for key in keys}
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    return {key: first if key.startswith(("model.embed_tokens.", "model.layers.0.")) else second for key in keys}


def write_family(out, name, r, args):
    """Writes DIR/<name>/ (config, weights, index), DIR/<name>_reference.safetensors and DIR/<name>_peft/.
    Returns the list of files written with their tensor lists (for the read-back check)."""
    f = r["f"]
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(make_config(name, f), fh, indent=2)
        fh.write("\n")
    gen_path = os.path.join(d, "generation_config.json")
    if f["generation_config"]:
        with open(gen_path, "w") as fh:
            json.dump(f["generation_config"], fh, indent=2)
            fh.write("\n")
    elif os.path.exists(gen_path):
        os.remove(gen_path)
    plan = shard_plan(f, list(r["w32"]))
    files = {}
    for key, v in r["w32"].items():
        files.setdefault(plan[key], []).append((key, v, f["storage"]))
    for fn in ("model.safetensors", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors"):
        if fn not in files and os.path.exists(os.path.join(d, fn)):
            os.remove(os.path.join(d, fn))                          # a previous run's other layout
    written = []
    for fn, ts in files.items():
        ref.write_safetensors(os.path.join(d, fn), ts)
        written.append((os.path.join(d, fn), ts))
    if f["shards"] > 1:
        elem = {"F32": 4, "F16": 2, "BF16": 2}[f["storage"]]
        index = {"metadata": {"total_size": sum(v.numel() * elem for v in r["w32"].values())},
                 "weight_map": dict(sorted(plan.items()))}
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as fh:
            json.dump(index, fh, indent=2, sort_keys=True)
            fh.write("\n")

    ts = reference_tensors(r)
    path = os.path.join(out, name + "_reference.safetensors")
    ref.write_safetensors(path, ts, reference_metadata(name, r, args))
    written.append((path, ts))

    pd = os.path.join(out, name + "_peft")
    os.makedirs(pd, exist_ok=True)
    pts = [("prompt_embeddings", r["table"], "F32")]
    ref.write_safetensors(os.path.join(pd, "adapter_model.safetensors"), pts)
    written.append((os.path.join(pd, "adapter_model.safetensors"), pts))
    with open(os.path.join(pd, "adapter_config.json"), "w") as fh:
        json.dump(peft_config(f), fh, indent=2, sort_keys=True)
        fh.write("\n")
    return written


def peft_config(f):
    """adapter_config.json as PEFT's save_pretrained writes it for PrefixTuningConfig(prefix_projection=True):
    inference_mode forced to true; the saved prompt_embeddings is the encoder's output, the (P, 2LD) table."""
    return {
        "auto_mapping": None, "base_model_name_or_path": None, "encoder_hidden_size": MID,
        "inference_mode": True, "modules_to_save": None, "num_attention_heads": f["kv_heads"], "num_layers": L,
        "num_transformer_submodules": 1, "num_virtual_tokens": P, "peft_type": "PREFIX_TUNING",
        "peft_version": PEFT_VERSION, "prefix_projection": True, "revision": None, "task_type": "CAUSAL_LM",
        "token_dim": kv_dim(f),
    }


# ----------------------------------------------------------------------------------------------------------
# self-checks
# ----------------------------------------------------------------------------------------------------------
def maxerr(a, b):
    """Largest absolute difference."""
    return float((a - b).abs().max())


def check_family(name, r):
    """Second implementation, finite differences, greedy with a KV cache, F16/BF16 rounding.  Raises on failure;
    returns a short description of what was observed."""
    f, W, inv = r["f"], r["W"], r["inv_freq"]
    tab = r["table"]
    notes = []
    with torch.no_grad():
        # (a) the loop implementation, with and without the prefix, both position offsets
        err = 0.0
        for lg, pos, t in ((r["logits"], r["pos_p"], tab), (r["logits_offset0"], r["pos_0"], tab),
                           (r["logits_noprefix"], r["pos_0"], None)):
            err = max(err, maxerr(lg, forward_loops(W, f, inv, r["ids"], r["mask"], pos, t)))
        assert err < 1e-12, "%s: loop implementation differs by %.3e" % (name, err)
        notes.append("loops %.1e" % err)
        # the reference loss equals torch's cross_entropy (sum / B)
        ce = torch.nn.functional.cross_entropy(r["logits"].reshape(-1, V), r["targets"].reshape(-1),
                                               ignore_index=IGNORE, reduction="sum") / B
        assert abs(float(ce - r["loss"])) < 1e-12, name + ": loss vs F.cross_entropy"
        # (b) greedy with an incremental KV cache
        cached = greedy_cached(W, f, inv, r["prompt"].tolist(), tab)
        assert cached == r["greedy_ids"], "%s: cached greedy %s != %s" % (name, cached, r["greedy_ids"])
        # (c) the stored values equal torch's own f16 / bf16 rounding
        if f["storage"] != "F32":
            dt = torch.float16 if f["storage"] == "F16" else torch.bfloat16
            for key, v in r["w32"].items():
                assert torch.equal(r["stored"][key], v.to(dt).to(torch.float32)), name + ": rounding " + key
        # sensitivities (what a float32 test can tell apart)
        notes.append("prefix moves logits %.2f, offset %.2f" % (
            maxerr(r["logits"], r["logits_noprefix"]), maxerr(r["logits"], r["logits_offset0"])))
        # float32 inverse frequencies the transformers way, for information
        hf = rope_inv_freq_hf_float32(f).to(F64)
        ulps = int(((hf - inv).abs() / (inv.to(torch.float32).abs() * 2.0 ** -23).to(F64)).round().max())
        notes.append("inv_freq vs HF float32 %d ulp" % ulps)
    # (d) central differences against autograd: table entries and one encoder weight
    def loss_table(tb):
        return float(loss_of(forward(W, f, inv, r["ids"], r["mask"], r["pos_p"], tb), r["targets"]))

    def loss_enc(e):
        return loss_of(forward(W, f, inv, r["ids"], r["mask"], r["pos_p"], encoder_forward(e)), r["targets"])

    eps, worst = 1e-6, 0.0
    gt = r["table_grad"]
    gsel = torch.Generator().manual_seed(12345)
    big = (gt.abs() >= 0.5 * gt.abs().max()).nonzero().tolist()
    picks = [("table", tuple(big[int(j)])) for j in torch.randperm(len(big), generator=gsel)[:3]]
    ge = r["enc"]["transform.0.weight"].grad
    big = (ge.abs() >= 0.5 * ge.abs().max()).nonzero().tolist()
    picks.append(("transform.0.weight", tuple(big[int(torch.randint(len(big), (1,), generator=gsel))])))
    with torch.no_grad():
        for what, idx in picks:
            vals = []
            for s in (+1, -1):
                if what == "table":
                    tb = tab.clone()
                    tb[idx] += s * eps
                    vals.append(loss_table(tb))
                else:
                    e2 = {key: v.detach().clone() for key, v in r["enc"].items()}
                    e2[what][idx] += s * eps
                    vals.append(float(loss_enc(e2)))
            fd = (vals[0] - vals[1]) / (2 * eps)
            an = float(gt[idx] if what == "table" else ge[idx])
            rel = abs(fd - an) / abs(an)
            worst = max(worst, rel)
            assert rel < 1e-6, "%s: grad check %s %s: fd %.10e autograd %.10e" % (name, what, idx, fd, an)
    notes.append("fd rel %.1e" % worst)
    return ", ".join(notes)


def check_files(written, r):
    """Re-reads every file written for a family (index + shards included) and compares bit for bit; the F16 /
    BF16 values equal torch's own conversion of the float32 draws."""
    f = r["f"]
    for path, ts in written:
        _, back = ref.read_safetensors(path)
        assert set(back) == {n for n, _, _ in ts}, "tensor names of " + path
        for n, t, dt in ts:
            got = back[n][1]
            assert back[n][0] == dt, path + " " + n
            if dt == "F16":
                want = t.to(torch.float16)
            elif dt == "BF16":
                want = t.to(torch.bfloat16).to(torch.float32)
            else:
                want = t.to(got.dtype)
            assert torch.equal(got, want), path + " " + n
    d = os.path.dirname(written[0][0])
    idx_path = os.path.join(d, "model.safetensors.index.json")
    loaded = {}
    if f["shards"] > 1:
        with open(idx_path) as fh:
            index = json.load(fh)
        nbytes = 0
        for shard in sorted(set(index["weight_map"].values())):
            header, back = ref.read_safetensors(os.path.join(d, shard))
            for n, (_, t) in back.items():
                assert index["weight_map"][n] == shard, "index entry " + n
                loaded[n] = t.to(torch.float32)
                b, e = header[n]["data_offsets"]
                nbytes += e - b
        assert nbytes == index["metadata"]["total_size"], "index total_size"
        assert set(loaded) == set(index["weight_map"]), "index weight_map"
    else:
        assert not os.path.exists(idx_path)
        _, back = ref.read_safetensors(os.path.join(d, "model.safetensors"))
        loaded = {n: t.to(torch.float32) for n, (_, t) in back.items()}
    assert set(loaded) == set(r["stored"]), "model keys"
    for n, v in r["stored"].items():
        assert torch.equal(loaded[n], v), "model weights the reference computed with: " + n


# ----------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = ap.parse_args()
    t_all = time.time()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for k, name in enumerate(FAMILY):
        t0 = time.time()
        r = run_family(name, k, args)
        written = write_family(args.out, name, r, args)
        notes = ""
        if not args.no_check:
            notes = check_family(name, r)
            check_files(written, r)
        print("%-7s %.2f s  loss %.10f  loss_noprefix %.10f  max|grad.table| %.2e  greedy %s%s" % (
            name, time.time() - t0, float(r["loss"]), float(r["loss_noprefix"]), float(r["table_grad"].abs().max()),
            r["greedy_ids"], "\n        check: " + notes if notes else ""))
    print("llama_prefix_reference: wrote %s (seed %d) in %.2f s" % (args.out, args.seed, time.time() - t_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
