# SPDX-License-Identifier: MIT
# PyTorch reference values for tests/train/test_optim.cpp: torch.optim.AdamW on a fixed tiny problem, and the
# learning rates LambdaLR applies with transformers' get_linear_schedule_with_warmup lambda.
# The AdamW values are what torch computes with its AVX2 CPU kernels (torch.__config__.show(): "CPU capability
# usage: AVX2"), whose add_ with alpha and addcmul_ use fused multiply-adds; a DEFAULT or AVX512 build of the
# kernels may round differently, so print the capability with the values.
#
#   /usr/bin/python3 tests/reference/optim_reference.py
#
# Prints C++-ready initializers (17 significant digits). Needs only Debian's python3-torch (1.13).
import torch

# Every input is a multiple of 1/64, so float32 and float64 hold exactly the same values.
A0 = [0.5, -1.25, 2.0, 0.0, -0.75, 1.5]  # parameter "a", shape (2, 3)
B0 = [1.0, -2.0, 0.25, 3.5]  # parameter "b", shape (4)
GRADS_A = [
    [0.25, -0.5, 1.0, 0.125, -2.0, 0.0],
    [-0.75, 0.5, 0.375, -1.0, 1.5, 0.25],
    [0.5, 0.5, -0.25, 0.0, -0.125, 2.0],
]
# None: "b" receives no gradient in that step (PyTorch skips it and does not advance its step count).
GRADS_B = [
    [1.0, -0.25, 0.5, -1.5],
    None,
    [-0.5, 0.75, 0.0, 2.5],
]


def lcg_values(seed, n, scale):
    """n values k * scale with k a 24-bit integer from a 64-bit LCG (exact in float, every mantissa bit used)."""
    out = []
    for _ in range(n):
        seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(((seed >> 40) - 2**23) * scale)
    return out


# Parameter "c", shape (37): long enough for torch's vectorized loops (16 floats or 8 doubles a pass on AVX2) and
# their scalar tails, and for 4 or 9 AVX2 vectors plus a tail in ours. Full mantissas, values in [-1/64, 1/64) (as
# small as one update, so that p shows the update's rounding) and gradients in [-2, 2). Same formula in
# test_optim.cpp.
C0 = lcg_values(1, 37, 2.0**-29)
GRADS_C = [lcg_values(2 + s, 37, 2.0**-22) for s in range(3)]
LR, WEIGHT_DECAY = 1e-2, 0.1


def adamw_run(dtype):
    a = torch.tensor(A0, dtype=dtype).reshape(2, 3).requires_grad_()
    b = torch.tensor(B0, dtype=dtype).requires_grad_()
    c = torch.tensor(C0, dtype=dtype).requires_grad_()
    # foreach=False: the per-tensor path (_single_tensor_adamw), the 1.13 default on the CPU.
    opt = torch.optim.AdamW([a, b, c], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY,
                            foreach=False)
    for ga, gb, gc in zip(GRADS_A, GRADS_B, GRADS_C):
        a.grad = torch.tensor(ga, dtype=dtype).reshape(2, 3)
        b.grad = None if gb is None else torch.tensor(gb, dtype=dtype)
        c.grad = torch.tensor(gc, dtype=dtype)
        opt.step()
    state = opt.state[c]
    return (a.detach().flatten().tolist(), b.detach().tolist(), c.detach().tolist(), state["exp_avg"].tolist(),
            state["exp_avg_sq"].tolist())


def linear_schedule_lrs(base_lr, warmup, total):
    # transformers.optimization.get_linear_schedule_with_warmup, verbatim lambda.
    def lr_lambda(current_step):
        if current_step < warmup:
            return float(current_step) / float(max(1, warmup))
        return max(0.0, float(total - current_step) / float(max(1, total - warmup)))

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=base_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    used = []  # the lr of update k (k = 0, 1, ...), with the usual optimizer.step(); scheduler.step() loop
    for _ in range(total + 2):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used


def fmt(values):
    return "{" + ", ".join("%.17g" % v for v in values) + "}"


if __name__ == "__main__":
    capability = [l.strip() for l in torch.__config__.show().splitlines() if "CPU capability" in l]
    print("// torch", torch.__version__, *capability)
    for name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        a, b, c, c_exp_avg, c_exp_avg_sq = adamw_run(dtype)
        print("adamw_%s_a = %s;" % (name, fmt(a)))
        print("adamw_%s_b = %s;" % (name, fmt(b)))
        print("adamw_%s_c = %s;" % (name, fmt(c)))
        print("adamw_%s_c_exp_avg = %s;" % (name, fmt(c_exp_avg)))
        print("adamw_%s_c_exp_avg_sq = %s;" % (name, fmt(c_exp_avg_sq)))
    print("linear_schedule_1e-2_w3_t10 = %s;" % fmt(linear_schedule_lrs(1e-2, 3, 10)))
    print("linear_schedule_1e-2_w0_t4 = %s;" % fmt(linear_schedule_lrs(1e-2, 0, 4)))
