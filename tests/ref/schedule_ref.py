"""Reference learning rates for nabla's schedules (tests/test_schedule.c).

For each case, the lr that torch.optim.lr_scheduler gives update t = 1..N
(the optimizer's lr before the t-th optimizer.step(), i.e. after t - 1
scheduler.step() calls). The configurations are repeated in the C test.
Each case is also checked here against the closed form nb_schedule_lr()
implements, so a disagreement shows up when the file is regenerated.
Run: /usr/bin/python3 tests/ref/schedule_ref.py
"""
import math
import os
import warnings

import torch
from torch.optim import lr_scheduler as S
from reffile import RefFile

warnings.filterwarnings("ignore")
here = os.path.dirname(os.path.abspath(__file__))
out = RefFile(os.path.join(here, "schedule.txt"), "tests/ref/schedule_ref.py")


def trace(base_lr, make, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def warmup_cosine(opt, lr, min_lr, w, t):
    return S.SequentialLR(opt, [
        S.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1),
        S.CosineAnnealingLR(opt, T_max=t - w, eta_min=min_lr)], milestones=[w - 1])


def closed_warmup_cosine(lr, min_lr, w, t, step):
    if step <= w:
        return lr * step / w
    if step >= t:
        return min_lr
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * (step - w) / (t - w))) / 2


cases = [
    # name, base lr, scheduler, updates, closed form of update t (1-based) or None
    ("constant", 0.01, lambda o: S.LambdaLR(o, lambda e: 1.0), 10, lambda t: 0.01),
    ("step", 0.1, lambda o: S.StepLR(o, step_size=7, gamma=0.5), 40,
     lambda t: 0.1 * 0.5 ** ((t - 1) // 7)),
    ("cosine", 0.1, lambda o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.001), 51,
     lambda t: 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * (t - 1) / 50)) / 2),
    ("cosine_zero", 0.5, lambda o: S.CosineAnnealingLR(o, T_max=10), 11,
     lambda t: 0.5 * (1 + math.cos(math.pi * (t - 1) / 10)) / 2),
    ("one_cycle", 3e-3, lambda o: S.OneCycleLR(o, max_lr=3e-3, total_steps=100,
                                               cycle_momentum=False), 100, None),
    ("one_cycle_mnist", 3e-3, lambda o: S.OneCycleLR(o, max_lr=3e-3, total_steps=1874,
                                                     cycle_momentum=False), 1874, None),
    ("one_cycle_options", 0.1,
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=57, pct_start=0.25, div_factor=10.0,
                            final_div_factor=100.0, anneal_strategy="linear",
                            cycle_momentum=False), 57, None),
    ("one_cycle_three_phase", 0.1,
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=40, three_phase=True,
                            cycle_momentum=False), 40, None),
    ("warmup_cosine", 1e-3, lambda o: warmup_cosine(o, 1e-3, 1e-5, 10, 100), 100,
     lambda t: closed_warmup_cosine(1e-3, 1e-5, 10, 100, t)),
    ("warmup_cosine_short", 0.2, lambda o: warmup_cosine(o, 0.2, 0.0, 2, 7), 7,
     lambda t: closed_warmup_cosine(0.2, 0.0, 2, 7, t)),
]
for name, lr, make, n, closed in cases:
    lrs = trace(lr, make, n)
    if closed is not None:
        for t, v in enumerate(lrs, 1):
            want = closed(t)
            assert abs(v - want) <= 1e-12 + 1e-9 * abs(want), (name, t, v, want)
    out.case(name, lr=lrs)
out.close()
