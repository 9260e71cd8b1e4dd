#!/usr/bin/python3
"""Independent plain-PyTorch reference for prefix-tuning a frozen GPT-2.

Writes a tiny random GPT-2 checkpoint in HuggingFace layouts (F32 with and without the ``transformer.``
prefix, F16, BF16) plus ``reference.safetensors`` with inputs, prefix parameters, logits, losses,
gradients and greedy generations computed in float64.  See tests/reference/README.md for the conventions.

Only torch and the Python standard library are used: no transformers, no safetensors package.

    /usr/bin/python3 tests/reference/gpt2_prefix_reference.py --out /tmp/ref [--seed 0]
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import torch

# ----------------------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------------------
CFG = dict(n_layer=3, n_embd=96, n_head=4, vocab_size=1000, n_positions=64, layer_norm_epsilon=1e-5)
P = 5        # prefix length
MID = 32     # prefix encoder hidden width
B = 2        # batch
T = 10       # sequence length
SRC = 4      # first SRC positions are "source": no loss there
PAD_TAIL = 3  # row 1 is right-padded over its last PAD_TAIL positions
IGNORE = -100
GREEDY_PROMPT_LENS = (3, 6, 9)  # greedy generation: one prompt of each length
GREEDY_NEW = 12                 # new tokens per prompt (at most)
GREEDY_EOS = 933                # a row stops when its argmax is this id (not stored); chosen so that with seed 0
                                # three of the six rows end, at steps 0, 6 and 8 (config.json's eos is 999)

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------
# safetensors writer (format: u64 LE header length, JSON header padded with spaces to a multiple of 8, data)
# ----------------------------------------------------------------------------------------------------------
def _f32_to_bf16_bits(x):
    """float32 tensor -> int16 tensor of bf16 bit patterns, round to nearest even (no NaNs expected)."""
    bits = x.contiguous().to(torch.float32).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16) & 0xFFFF
    return torch.where(rounded >= 0x8000, rounded - 0x10000, rounded).to(torch.int16)


def _bf16_bits_to_f32(b16):
    bits = (b16.to(torch.int64) & 0xFFFF) << 16
    bits = torch.where(bits >= 0x80000000, bits - 0x100000000, bits).to(torch.int32)
    return bits.view(torch.float32)


def round_bf16(x):
    """float32 -> bf16-rounded values as float32."""
    return _bf16_bits_to_f32(_f32_to_bf16_bits(x))


def _to_bytes(t, dtype):
    t = t.detach().contiguous()
    if dtype == "F32":
        a = t.to(torch.float32)
    elif dtype == "F64":
        a = t.to(torch.float64)
    elif dtype == "F16":
        a = t.to(torch.float32).to(torch.float16)
    elif dtype == "BF16":
        a = _f32_to_bf16_bits(t.to(torch.float32))
    elif dtype == "I64":
        a = t.to(torch.int64)
    else:
        raise ValueError(dtype)
    assert sys.byteorder == "little"
    return a.reshape(-1).numpy().tobytes() if a.numel() else b""


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor, dtype-string). Written in the given order, atomically."""
    header = {}
    blobs = []
    off = 0
    for name, t, dtype in tensors:
        data = _to_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    meta = {"format": "pt"}
    if metadata:
        meta.update({k: str(v) for k, v in metadata.items()})
    header["__metadata__"] = meta
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Minimal reader used only for the self-check of the writer."""
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    npd = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "BF16": np.int16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        a = np.frombuffer(raw[base + b:base + e], dtype=npd[info["dtype"]]).reshape(info["shape"])
        t = torch.from_numpy(a.copy())
        if info["dtype"] == "BF16":
            t = _bf16_bits_to_f32(t)
        out[name] = (info["dtype"], t)
    return header, out


# ----------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------
def make_weights(g):
    """float32 GPT-2 weights, HF names without the 'transformer.' prefix, Conv1D layout [in, out]."""
    C, V, NP, L = CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]

    def n(*shape, std=0.02, mean=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean).contiguous()

    w = {"wte.weight": n(V, C), "wpe.weight": n(NP, C)}
    for i in range(L):
        p = "h.%d." % i
        w[p + "ln_1.weight"] = n(C, std=0.1, mean=1.0)
        w[p + "ln_1.bias"] = n(C, std=0.1)
        w[p + "attn.c_attn.weight"] = n(C, 3 * C)
        w[p + "attn.c_attn.bias"] = n(3 * C)
        w[p + "attn.c_proj.weight"] = n(C, C)
        w[p + "attn.c_proj.bias"] = n(C)
        w[p + "ln_2.weight"] = n(C, std=0.1, mean=1.0)
        w[p + "ln_2.bias"] = n(C, std=0.1)
        w[p + "mlp.c_fc.weight"] = n(C, 4 * C)
        w[p + "mlp.c_fc.bias"] = n(4 * C)
        w[p + "mlp.c_proj.weight"] = n(4 * C, C)
        w[p + "mlp.c_proj.bias"] = n(C)
    w["ln_f.weight"] = n(C, std=0.1, mean=1.0)
    w["ln_f.bias"] = n(C, std=0.1)
    return w


def make_encoder(g):
    """PEFT PrefixEncoder with PyTorch default init: Embedding N(0,1); Linear weight and bias U(+-1/sqrt(in))."""
    C, L = CFG["n_embd"], CFG["n_layer"]

    def u(fan_in, *shape):
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1) * bound

    return {
        "embedding.weight": torch.randn(P, C, generator=g, dtype=torch.float32),
        "transform.0.weight": u(C, MID, C),
        "transform.0.bias": u(C, MID),
        "transform.2.weight": u(MID, 2 * L * C, MID),
        "transform.2.bias": u(MID, 2 * L * C),
    }


def encoder_forward(e):
    """(P, 2*L*C) table = transform.2(tanh(transform.0(embedding.weight[arange(P)])))."""
    x = e["embedding.weight"][torch.arange(e["embedding.weight"].shape[0])]
    hmid = torch.tanh(x @ e["transform.0.weight"].t() + e["transform.0.bias"])
    return hmid @ e["transform.2.weight"].t() + e["transform.2.bias"]


def table_to_kv(table):
    """(P, 2LC) -> list over layers of (key, value), each (NH, P, HS).  view (P,2L,NH,HS), permute (2L,NH,P,HS)."""
    L, NH = CFG["n_layer"], CFG["n_head"]
    HS = CFG["n_embd"] // NH
    Pn = table.shape[0]
    kv = table.view(Pn, 2 * L, NH, HS).permute(1, 2, 0, 3)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(L)]


# ----------------------------------------------------------------------------------------------------------
# implementation 1: batched GPT-2 with prefix (joint softmax over [prefix | real] scores)
# ----------------------------------------------------------------------------------------------------------
def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_forward(W, input_ids, attention_mask, position_ids, prefix_kv=None, return_kv=False):
    """W: dict of float64 tensors (HF names, no 'transformer.').  prefix_kv: list of (k, v), each (NH, P, HS),
    shared by every row.  Returns logits (B, T, V) [and per-layer (k, v) of the real tokens, (B, NH, T, HS)]."""
    L, NH, C, eps = CFG["n_layer"], CFG["n_head"], CFG["n_embd"], CFG["layer_norm_epsilon"]
    HS = C // NH
    Bn, Tn = input_ids.shape
    h = W["wte.weight"][input_ids] + W["wpe.weight"][position_ids]
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()                 # query i sees key j <= i
    keep = causal[None] & attention_mask.bool()[:, None, :]             # (B, Tq, Tk)
    kv_out = []
    for i in range(L):
        p = "h.%d." % i
        a = layer_norm(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = [t.view(Bn, Tn, NH, HS).transpose(1, 2) for t in (q, k, v)]  # (B, NH, T, HS)
        kv_out.append((k, v))
        s_real = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        s_real = s_real.masked_fill(~keep[:, None], float("-inf"))
        if prefix_kv is not None and prefix_kv[i][0].shape[1] > 0:
            pk, pv = prefix_kv[i]                                           # (NH, P, HS)
            Pn = pk.shape[1]
            s_pref = (q @ pk.transpose(-1, -2)[None]) / math.sqrt(HS)    # (B, NH, T, P): always visible
            prob = torch.softmax(torch.cat([s_pref, s_real], dim=-1), dim=-1)
            o = prob[..., :Pn] @ pv[None] + prob[..., Pn:] @ v
        else:
            o = torch.softmax(s_real, dim=-1) @ v
        o = o.transpose(1, 2).reshape(Bn, Tn, C)
        h = h + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = layer_norm(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    h = layer_norm(h, W["ln_f.weight"], W["ln_f.bias"], eps)
    logits = h @ W["wte.weight"].t()
    return (logits, kv_out) if return_kv else logits


# ----------------------------------------------------------------------------------------------------------
# implementation 2 (cross-check only): per row / per query / per head loops, K/V built with torch.cat
# ----------------------------------------------------------------------------------------------------------
def gpt2_forward_loops(W, input_ids, attention_mask, position_ids, prefix_kv=None):
    L, NH, C, eps = CFG["n_layer"], CFG["n_head"], CFG["n_embd"], CFG["layer_norm_epsilon"]
    HS = C // NH
    Bn, Tn = input_ids.shape

    def ln(x, w, b):
        out = torch.empty_like(x)
        for r in range(x.shape[0]):
            row = x[r]
            mu = row.sum() / row.numel()
            var = ((row - mu) * (row - mu)).sum() / row.numel()
            out[r] = (row - mu) * (1.0 / math.sqrt(float(var) + eps)) * w + b
        return out

    def gelu(x):
        c = math.sqrt(2.0 / math.pi)
        return x * 0.5 * (1.0 + torch.tanh(c * (x + 0.044715 * x * x * x)))

    all_logits = []
    for b in range(Bn):
        h = torch.stack([W["wte.weight"][int(input_ids[b, t])] + W["wpe.weight"][int(position_ids[b, t])]
                         for t in range(Tn)])                            # (T, C)
        for i in range(L):
            p = "h.%d." % i
            a = ln(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"])
            Wa, ba = W[p + "attn.c_attn.weight"], W[p + "attn.c_attn.bias"]
            q = a @ Wa[:, :C] + ba[:C]
            k = a @ Wa[:, C:2 * C] + ba[C:2 * C]
            v = a @ Wa[:, 2 * C:] + ba[2 * C:]
            o = torch.zeros(Tn, C, dtype=F64)
            for t in range(Tn):
                visible = [j for j in range(t + 1) if int(attention_mask[b, j]) == 1]
                for hh in range(NH):
                    sl = slice(hh * HS, (hh + 1) * HS)
                    keys = k[visible, sl]
                    vals = v[visible, sl]
                    if prefix_kv is not None:
                        keys = torch.cat([prefix_kv[i][0][hh], keys], dim=0)
                        vals = torch.cat([prefix_kv[i][1][hh], vals], dim=0)
                    sc = (keys @ q[t, sl]) / math.sqrt(HS)
                    ex = torch.exp(sc - sc.max())
                    o[t, sl] = (ex / ex.sum()) @ vals
            h = h + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
            m = ln(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"])
            m = gelu(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
            h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
        h = ln(h, W["ln_f.weight"], W["ln_f.bias"])
        all_logits.append(h @ W["wte.weight"].t())
    return torch.stack(all_logits)


def table_to_kv_loops(table):
    """Element-by-element use of the documented flat index ((2i + kv) * NH + h) * HS + e."""
    L, NH = CFG["n_layer"], CFG["n_head"]
    HS = CFG["n_embd"] // NH
    Pn = table.shape[0]
    out = [[torch.zeros(NH, Pn, HS, dtype=table.dtype) for _ in range(2)] for _ in range(L)]
    flat = table.reshape(-1).tolist()
    width = table.shape[1]
    for p in range(Pn):
        for i in range(L):
            for kv in range(2):
                for h in range(NH):
                    for e in range(HS):
                        out[i][kv][h, p, e] = flat[p * width + ((2 * i + kv) * NH + h) * HS + e]
    return [(a, b) for a, b in out]


# ----------------------------------------------------------------------------------------------------------
# greedy generation: no KV cache, the whole sequence is recomputed at every step
# ----------------------------------------------------------------------------------------------------------
def greedy_generate(W, prompt, prefix_kv, offset):
    """prompt: list of ids; real tokens at positions offset, offset+1, ...  Returns (new ids without the end token,
    ended, margins): at each step the argmax (lowest index on ties) of the last position's logits is taken; the
    row stops at GREEDY_EOS (ended = True, not appended) or after GREEDY_NEW tokens.  margins[s] = top-1 minus
    top-2 logit of step s (one entry per step taken, the end-token step included)."""
    ids, new, margins = list(prompt), [], []
    ended = False
    for _ in range(GREEDY_NEW):
        n = len(ids)
        logits = gpt2_forward(W, torch.tensor([ids], dtype=torch.int64), torch.ones(1, n, dtype=torch.int64),
                              torch.arange(offset, offset + n, dtype=torch.int64)[None], prefix_kv)[0, -1]
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        tok = int((logits == top[0]).nonzero()[0, 0])
        if tok == GREEDY_EOS:
            ended = True
            break
        ids.append(tok)
        new.append(tok)
    return new, ended, margins


# ----------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------
def token_ce(logits, targets):
    """Cross-entropies at labelled positions (targets are aligned with positions)."""
    sel = targets != IGNORE
    lg = logits[sel]
    return torch.logsumexp(lg, dim=-1) - lg.gather(-1, targets[sel][:, None])[:, 0]


def losses(logits, targets):
    ce = token_ce(logits, targets)
    return ce.sum() / targets.shape[0], ce.mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks (saves ~1 s)")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(args.seed)
    L, NH, C, V, NP = CFG["n_layer"], CFG["n_head"], CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"]
    HS = C // NH

    W32 = make_weights(g)
    enc32 = make_encoder(g)
    direct32 = torch.randn(P, 2 * L * C, generator=g, dtype=torch.float32)
    input_ids = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, T - PAD_TAIL:] = 0
    targets = torch.full((B, T), IGNORE, dtype=torch.int64)
    for b in range(B):
        for t in range(SRC, T - 1):
            if attention_mask[b, t] == 1 and attention_mask[b, t + 1] == 1:
                targets[b, t] = input_ids[b, t + 1]
    pos_prefixed = (torch.arange(T, dtype=torch.int64) + P)[None].expand(B, T).contiguous()
    pos_plain = torch.arange(T, dtype=torch.int64)[None].expand(B, T).contiguous()

    W = {k: v.to(F64) for k, v in W32.items()}

    # --- encoder path: loss_sum and its gradients w.r.t. every encoder parameter -------------------------
    enc = {k: v.to(F64).requires_grad_(True) for k, v in enc32.items()}
    table_enc = encoder_forward(enc)
    table_enc.retain_grad()
    logits_enc = gpt2_forward(W, input_ids, attention_mask, pos_prefixed, table_to_kv(table_enc))
    lsum_enc, lmean_enc = losses(logits_enc, targets)
    lsum_enc.backward()

    # --- direct table -------------------------------------------------------------------------------------
    direct = direct32.to(F64).requires_grad_(True)
    logits_dir = gpt2_forward(W, input_ids, attention_mask, pos_prefixed, table_to_kv(direct))
    lsum_dir, lmean_dir = losses(logits_dir, targets)
    lsum_dir.backward()

    # --- no prefix ----------------------------------------------------------------------------------------
    with torch.no_grad():
        logits_np = gpt2_forward(W, input_ids, attention_mask, pos_plain, None)
        lsum_np, lmean_np = losses(logits_np, targets)

    # --- reduced-precision checkpoints: reference from the rounded weights --------------------------------
    rounded = {
        "f16": {k: v.to(torch.float16).to(F64) for k, v in W32.items()},
        "bf16": {k: round_bf16(v).to(F64) for k, v in W32.items()},
    }
    lowp = {}
    with torch.no_grad():
        kv_enc = table_to_kv(table_enc.detach())
        for tag, Wr in rounded.items():
            lg = gpt2_forward(Wr, input_ids, attention_mask, pos_prefixed, kv_enc)
            lowp[tag] = (lg, losses(lg, targets)[0])

    # --- greedy generation, without and with the encoder's merged prefix (positions from P) ---------------
    # Prompts come from their own generator so that everything above stays as it was before they were added.
    gprompt = torch.Generator().manual_seed(args.seed + 1)
    prompts = [torch.randint(0, V - 1, (n,), generator=gprompt, dtype=torch.int64).tolist()
               for n in GREEDY_PROMPT_LENS]
    greedy = {}
    with torch.no_grad():
        for tag, kv, offset in (("noprefix", None, 0), ("prefix", table_to_kv(table_enc.detach()), P)):
            greedy[tag] = [greedy_generate(W, pr, kv, offset) for pr in prompts]

    # --- self-checks (not written) ------------------------------------------------------------------------
    if not args.no_check:
        self_check(W, enc32, table_enc.detach(), direct32.to(F64), input_ids, attention_mask, targets,
                   pos_prefixed, pos_plain, logits_enc.detach(), logits_dir.detach(), g, W32)
        check_greedy(W, table_enc.detach(), prompts, greedy)

    # --- write ---------------------------------------------------------------------------------------------
    out = args.out
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_layer": L, "n_head": NH, "n_embd": C, "n_positions": NP, "n_ctx": NP, "vocab_size": V,
        "layer_norm_epsilon": CFG["layer_norm_epsilon"], "activation_function": "gelu_new",
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02,
        "bos_token_id": V - 1, "eos_token_id": V - 1, "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    buffers = []
    tri = torch.ones(NP, NP).tril().view(1, 1, NP, NP)
    for i in range(L):
        buffers.append(("h.%d.attn.bias" % i, tri))
        buffers.append(("h.%d.attn.masked_bias" % i, torch.tensor(-1e4)))

    def model_dir(name, tensors, dtype_name):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        cfg = dict(config, torch_dtype=dtype_name)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)

    weights_list = list(W32.items())
    model_dir("model", [(k, v, "F32") for k, v in weights_list + buffers], "float32")
    model_dir("model_prefixed",
              [("transformer." + k, v, "F32") for k, v in weights_list] + [("lm_head.weight", W32["wte.weight"], "F32")],
              "float32")
    model_dir("model_f16", [(k, v, "F16") for k, v in weights_list + buffers], "float16")
    model_dir("model_bf16", [(k, v, "BF16") for k, v in weights_list + buffers], "bfloat16")

    d = lambda t: t.detach().to(F64)
    one = lambda t: t.detach().to(F64).reshape(1)
    ref = [
        ("input_ids", input_ids, "I64"),
        ("attention_mask", attention_mask, "I64"),
        ("targets", targets, "I64"),
        ("position_ids", pos_prefixed, "I64"),
        ("position_ids_noprefix", pos_plain, "I64"),
    ]
    for k, v in enc32.items():
        ref.append(("prefix_encoder." + k, d(v), "F64"))
    ref += [
        ("prefix_table_from_encoder", d(table_enc), "F64"),
        ("direct_prefix", d(direct32), "F64"),
        ("logits_encoder", d(logits_enc), "F64"),
        ("loss_sum_encoder", one(lsum_enc), "F64"),
        ("loss_mean_encoder", one(lmean_enc), "F64"),
    ]
    for k in enc32:
        ref.append(("grad.prefix_encoder." + k, d(enc[k].grad), "F64"))
    ref += [
        ("grad.prefix_table_from_encoder", d(table_enc.grad), "F64"),
        ("logits_direct", d(logits_dir), "F64"),
        ("loss_sum_direct", one(lsum_dir), "F64"),
        ("loss_mean_direct", one(lmean_dir), "F64"),
        ("grad.direct_prefix", d(direct.grad), "F64"),
        ("logits_noprefix", d(logits_np), "F64"),
        ("loss_sum_noprefix", one(lsum_np), "F64"),
        ("loss_mean_noprefix", one(lmean_np), "F64"),
        ("logits_encoder_f16", d(lowp["f16"][0]), "F64"),
        ("loss_sum_encoder_f16", one(lowp["f16"][1]), "F64"),
        ("logits_encoder_bf16", d(lowp["bf16"][0]), "F64"),
        ("loss_sum_encoder_bf16", one(lowp["bf16"][1]), "F64"),
    ]
    ref.append(("greedy.config", torch.tensor([len(prompts), GREEDY_NEW, GREEDY_EOS]), "I64"))
    for i, pr in enumerate(prompts):
        ref.append(("greedy.prompt%d" % i, torch.tensor(pr, dtype=torch.int64), "I64"))
    for tag in ("noprefix", "prefix"):
        for i, (new, ended, margins) in enumerate(greedy[tag]):
            ref.append(("greedy.%s.ids%d" % (tag, i), torch.tensor(new, dtype=torch.int64), "I64"))
            ref.append(("greedy.%s.ended%d" % (tag, i), torch.tensor([int(ended)]), "I64"))
            ref.append(("greedy.%s.margin%d" % (tag, i), torch.tensor(margins, dtype=F64), "F64"))
    meta = dict(n_layer=L, n_head=NH, n_embd=C, vocab_size=V, n_positions=NP,
                layer_norm_epsilon=CFG["layer_norm_epsilon"], prefix_length=P, prefix_mid=MID, batch=B,
                seq_len=T, source_len=SRC, seed=args.seed, ignore_index=IGNORE,
                loss_sum="sum of token CE over targets != -100, divided by batch",
                loss_mean="mean token CE over targets != -100",
                prefix_layout="row index ((2*layer+kv)*n_head+head)*head_size+e, kv 0=key 1=value",
                generator="tests/reference/gpt2_prefix_reference.py",
                greedy_prompts=len(prompts), greedy_max_new_tokens=GREEDY_NEW, greedy_eos_id=GREEDY_EOS,
                greedy="greedy.{noprefix,prefix}.ids{i}: argmax decoding of greedy.prompt{i}, end token excluded; "
                       "prefix = prefix_table_from_encoder with real positions from prefix_length")
    write_safetensors(os.path.join(out, "reference.safetensors"), ref, meta)

    if not args.no_check:
        check_files(out, W32, ref)

    print("gpt2_prefix_reference: wrote %s (seed %d) in %.2f s" % (out, args.seed, time.time() - t0))
    print("  labelled tokens: %d; max|logit| encoder %.4f direct %.4f noprefix %.4f" % (
        int((targets != IGNORE).sum()), logits_enc.abs().max(), logits_dir.abs().max(), logits_np.abs().max()))
    print("  loss_sum  encoder %.10f direct %.10f noprefix %.10f f16 %.10f bf16 %.10f" % (
        lsum_enc, lsum_dir, lsum_np, lowp["f16"][1], lowp["bf16"][1]))
    print("  loss_mean encoder %.10f direct %.10f noprefix %.10f" % (lmean_enc, lmean_dir, lmean_np))
    print("  max|grad| encoder.transform.2.weight %.3e  direct_prefix %.3e" % (
        enc["transform.2.weight"].grad.abs().max(), direct.grad.abs().max()))
    for tag in ("noprefix", "prefix"):
        print("  greedy %-8s new tokens %s, ended %s, smallest top-2 margin %.3e" % (
            tag, [len(r[0]) for r in greedy[tag]], [r[1] for r in greedy[tag]],
            min(min(r[2]) for r in greedy[tag])))
    return 0


def self_check(W, enc32, table_enc, direct, input_ids, attention_mask, targets, pos_prefixed, pos_plain,
               logits_enc, logits_dir, g, W32):
    def close(a, b, what, tol=1e-10):
        err = (a - b).abs().max().item()
        scale = max(1.0, b.abs().max().item())
        assert err <= tol * scale, "self-check failed: %s (max abs err %.3e)" % (what, err)

    full_mask = torch.ones_like(attention_mask)
    with torch.no_grad():
        # table layout: view/permute == documented flat index
        for tbl, nm in ((table_enc, "encoder"), (direct, "direct")):
            for (k1, v1), (k2, v2) in zip(table_to_kv(tbl), table_to_kv_loops(tbl)):
                close(k1, k2, "prefix layout keys " + nm, 0)
                close(v1, v2, "prefix layout values " + nm, 0)
        # P = 0, no padding: batched == loop implementation
        a = gpt2_forward(W, input_ids, full_mask, pos_plain, None)
        b = gpt2_forward_loops(W, input_ids, full_mask, pos_plain, None)
        close(a, b, "no prefix, no padding")
        # with prefix and padding: joint-softmax == torch.cat K/V loop implementation (real positions only
        # are compared for row 1's padded queries too: both implementations define them the same way)
        b = gpt2_forward_loops(W, input_ids, attention_mask, pos_prefixed, table_to_kv_loops(table_enc))
        close(logits_enc, b, "encoder prefix, padded")
        b = gpt2_forward_loops(W, input_ids, attention_mask, pos_prefixed, table_to_kv_loops(direct))
        close(logits_dir, b, "direct prefix, padded")
        # padding must not leak: row 1's real positions equal a run on the unpadded row alone
        nreal = T - PAD_TAIL
        c = gpt2_forward(W, input_ids[1:, :nreal], attention_mask[1:, :nreal], pos_prefixed[1:, :nreal],
                         table_to_kv(table_enc))
        close(logits_enc[1, :nreal], c[0], "padding leak")
        # HF past_key_values semantics: K/V of P real tokens at positions 0..P-1, used as a prefix for X at
        # positions P..P+T-1, equal the last T logits of the full sequence [w ; X] (no padding)
        w = torch.randint(0, CFG["vocab_size"], (1, P), generator=g)
        _, kvs = gpt2_forward(W, w, torch.ones(1, P, dtype=torch.int64),
                              torch.arange(P)[None], None, return_kv=True)
        past = [(k[0], v[0]) for k, v in kvs]
        a = gpt2_forward(W, input_ids, full_mask, pos_prefixed, past)
        full = torch.cat([w.expand(B, P), input_ids], 1)
        b = gpt2_forward(W, full, torch.ones(B, P + T, dtype=torch.int64),
                         torch.arange(P + T)[None].expand(B, P + T), None)
        close(a, b[:, P:], "past_key_values semantics")
        # the reference CE equals torch's own cross_entropy
        ls, lm = losses(logits_enc, targets)
        tl = torch.nn.functional.cross_entropy(logits_enc.reshape(-1, logits_enc.shape[-1]), targets.reshape(-1),
                                               ignore_index=IGNORE, reduction="sum") / B
        close(ls, tl, "loss_sum vs F.cross_entropy")
        # bf16 rounding equals torch's own conversion (round to nearest even)
        for k, v in W32.items():
            assert torch.equal(round_bf16(v), v.to(torch.bfloat16).to(torch.float32)), "bf16 rounding " + k
    # gradients: central differences on a few encoder parameters (float64)
    enc = {k: v.to(F64).requires_grad_(True) for k, v in enc32.items()}
    ls = losses(gpt2_forward(W, input_ids, attention_mask, pos_prefixed, table_to_kv(encoder_forward(enc))),
                targets)[0]
    ls.backward()
    eps = 1e-6
    with torch.no_grad():
        for name, idx in (("embedding.weight", (1, 3)), ("transform.0.weight", (7, 11)),
                          ("transform.0.bias", (5,)), ("transform.2.weight", (300, 20)),
                          ("transform.2.bias", (2 * CFG["n_embd"] + 1,))):
            vals = []
            for s in (+1, -1):
                e2 = {k: v.detach().clone() for k, v in enc.items()}
                e2[name][idx] += s * eps
                vals.append(losses(gpt2_forward(W, input_ids, attention_mask, pos_prefixed,
                                                table_to_kv(encoder_forward(e2))), targets)[0].item())
            fd = (vals[0] - vals[1]) / (2 * eps)
            an = enc[name].grad[idx].item()
            assert abs(fd - an) <= 1e-5 * abs(an) + 1e-9, "grad check %s: fd %.3e an %.3e" % (
                name, fd, an)


def check_greedy(W, table_enc, prompts, greedy):
    """Teacher-forced cross-check with the loop implementation: over prompt + generated tokens, the argmax at
    every position from the prompt's last one predicts the next generated token (and the end token, if any)."""
    for tag, kv, offset in (("noprefix", None, 0), ("prefix", table_to_kv_loops(table_enc), P)):
        for pr, (new, ended, margins) in zip(prompts, greedy[tag]):
            seq = pr + new
            n = len(seq)
            lg = gpt2_forward_loops(W, torch.tensor([seq]), torch.ones(1, n, dtype=torch.int64),
                                    torch.arange(offset, offset + n)[None], kv)[0]
            expect = new + ([GREEDY_EOS] if ended else [])
            assert len(margins) == len(expect), "self-check failed: greedy margins " + tag
            for s, tok in enumerate(expect):
                row = lg[len(pr) - 1 + s]
                assert int(row.argmax()) == tok, "self-check failed: greedy %s step %d" % (tag, s)
                top = torch.topk(row, 2).values
                assert abs(float(top[0] - top[1]) - margins[s]) <= 1e-10, "self-check failed: margin " + tag


def check_files(out, W32, ref):
    """Read back what was written and compare (the writer is hand-rolled)."""
    for sub, prefix in (("model", ""), ("model_prefixed", "transformer.")):
        _, t = read_safetensors(os.path.join(out, sub, "model.safetensors"))
        for k, v in W32.items():
            assert torch.equal(t[prefix + k][1], v), sub + " " + k
    _, t = read_safetensors(os.path.join(out, "model_f16", "model.safetensors"))
    _, tb = read_safetensors(os.path.join(out, "model_bf16", "model.safetensors"))
    for k, v in W32.items():
        assert torch.equal(t[k][1], v.to(torch.float16)), "f16 " + k
        assert torch.equal(tb[k][1], round_bf16(v)), "bf16 " + k
    hdr, t = read_safetensors(os.path.join(out, "reference.safetensors"))
    for name, v, dt in ref:
        assert t[name][0] == dt and torch.equal(t[name][1], v.to(t[name][1].dtype)), "reference " + name
    with open(os.path.join(out, "reference.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
    assert n % 8 == 0


if __name__ == "__main__":
    sys.exit(main())
