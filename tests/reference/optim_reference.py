# SPDX-License-Identifier: MIT
# PyTorch reference values for tests/train/test_optim.cpp: torch.optim.AdamW on a fixed tiny problem, and the
# learning rates LambdaLR applies with transformers' get_linear_schedule_with_warmup lambda.
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
LR, WEIGHT_DECAY = 1e-2, 0.1


def adamw_run(dtype):
    a = torch.tensor(A0, dtype=dtype).reshape(2, 3).requires_grad_()
    b = torch.tensor(B0, dtype=dtype).requires_grad_()
    opt = torch.optim.AdamW([a, b], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY)
    for ga, gb in zip(GRADS_A, GRADS_B):
        a.grad = torch.tensor(ga, dtype=dtype).reshape(2, 3)
        b.grad = None if gb is None else torch.tensor(gb, dtype=dtype)
        opt.step()
    return a.detach().flatten().tolist(), b.detach().tolist()


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
    print("// torch", torch.__version__)
    for name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        a, b = adamw_run(dtype)
        print("adamw_%s_a = %s;" % (name, fmt(a)))
        print("adamw_%s_b = %s;" % (name, fmt(b)))
    print("linear_schedule_1e-2_w3_t10 = %s;" % fmt(linear_schedule_lrs(1e-2, 3, 10)))
    print("linear_schedule_1e-2_w0_t4 = %s;" % fmt(linear_schedule_lrs(1e-2, 0, 4)))
