"""Reference trajectories for nabla's optimizers (tests/test_optim.c).

A tiny least-squares problem, 5 steps of each optimizer; the parameters after
every step are stored. Run: /usr/bin/python3 tests/ref/optim_ref.py
"""
import os
import torch
from reffile import RefFile

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
out = RefFile(os.path.join(here, "optim.txt"), "tests/ref/optim_ref.py")

x = torch.randn(8, 3)
t = torch.randn(8, 2)
w0 = torch.randn(3, 2)
out.case("data", x=x, t=t, w0=w0)

configs = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1),
}
for name, make in configs.items():
    w = w0.clone().requires_grad_(True)
    opt = make([w])
    steps = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((x @ w - t) ** 2).mean()
        loss.backward()
        opt.step()
        steps.append(w.detach().clone())
    out.case(name, w=torch.stack(steps))
out.close()
