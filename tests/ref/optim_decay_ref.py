"""Reference trajectories for weight decay limited to parameters with >= 2
axes (nanoGPT's rule; tests/test_optim_decay.c): torch.optim.AdamW and Adam
with two param groups, {ndim >= 2: weight_decay} and {ndim < 2: 0}.

A tiny problem with a matrix w [3, 2], a bias b [2] and a gain s [2]:
loss = mean(((x @ w + b) * s - t)^2); the parameters after each of 5 steps
are stored. Run: /usr/bin/python3 tests/ref/optim_decay_ref.py
"""
import os

import torch

from reffile import RefFile

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
out = RefFile(os.path.join(here, "optim_decay.txt"), "tests/ref/optim_decay_ref.py")

x = torch.randn(8, 3)
t = torch.randn(8, 2)
w0 = torch.randn(3, 2)
b0 = torch.randn(2)
s0 = 1 + 0.5 * torch.randn(2)
out.case("data", x=x, t=t, w0=w0, b0=b0, s0=s0)


def groups(params, wd):
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


configs = {
    "adamw_2d": lambda p: torch.optim.AdamW(groups(p, 0.5), lr=0.05, betas=(0.9, 0.95)),
    "adam_l2_2d": lambda p: torch.optim.Adam(groups(p, 0.5), lr=0.05),
    "adamw_all": lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.9, 0.95), weight_decay=0.5),
}
for name, make in configs.items():
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    s = s0.clone().requires_grad_(True)
    opt = make([w, b, s])
    ws, bs, ss = [], [], []
    for _ in range(5):
        opt.zero_grad()
        loss = (((x @ w + b) * s - t) ** 2).mean()
        loss.backward()
        opt.step()
        ws.append(w.detach().clone())
        bs.append(b.detach().clone())
        ss.append(s.detach().clone())
    out.case(name, w=torch.stack(ws), b=torch.stack(bs), s=torch.stack(ss))
out.close()
