"""Random GPT-2 weights shared by the PyTorch benchmark scripts (torch_train_step.py, torch_generate.py).

Plain tensors (no nn.Module, requires_grad False): the frozen model the prefix-tuning workloads run against.
"""

import torch
import torch.nn.functional as F


def gelu_new(x):
    return F.gelu(x, approximate="tanh")  # == 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))


class Gpt2Weights:
    """GPT-2 weights (Conv1D layout [in, out]) drawn from `gen`: matrices N(0, 0.02), wpe N(0, 0.01)."""

    def __init__(self, L, C, NH, V, NP, gen):
        self.L, self.C, self.NH, self.HS = L, C, NH, C // NH

        def n(*shape, std=0.02):
            return torch.randn(*shape, generator=gen) * std

        self.wte = n(V, C)
        self.wpe = n(NP, C, std=0.01)
        self.layers = []
        for _ in range(L):
            self.layers.append(dict(
                ln1_w=torch.ones(C), ln1_b=torch.zeros(C),
                attn_w=n(C, 3 * C), attn_b=torch.zeros(3 * C),
                proj_w=n(C, C), proj_b=torch.zeros(C),
                ln2_w=torch.ones(C), ln2_b=torch.zeros(C),
                fc_w=n(C, 4 * C), fc_b=torch.zeros(4 * C),
                fc2_w=n(4 * C, C), fc2_b=torch.zeros(C)))
        self.lnf_w, self.lnf_b = torch.ones(C), torch.zeros(C)

    def to(self, device):
        """Moves every weight to `device` (e.g. "cuda"); returns self."""
        self.wte, self.wpe = self.wte.to(device), self.wpe.to(device)
        self.layers = [{k: v.to(device) for k, v in p.items()} for p in self.layers]
        self.lnf_w, self.lnf_b = self.lnf_w.to(device), self.lnf_b.to(device)
        return self
