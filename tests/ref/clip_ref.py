"""Reference values for nb_clip_grad_norm (tests/test_clip.c).

A two-layer MLP with an MSE loss; torch.nn.utils.clip_grad_norm_ with a
max_norm that clips (0.5) and one that does not (100): the total norm and the
clipped gradients. Then 3 steps of SGD (momentum 0.9, lr 0.1) with clipping
at 0.5 before every step: the norm of each step and the parameters after it.
Run: /usr/bin/python3 tests/ref/clip_ref.py
"""
import os
import torch
from reffile import RefFile

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
out = RefFile(os.path.join(here, "clip.txt"), "tests/ref/clip_ref.py")

x = torch.randn(6, 3)
t = torch.randn(6, 2)
w1 = torch.randn(3, 4)
b1 = torch.randn(4) * 0.1
w2 = torch.randn(4, 2)
out.case("data", x=x, t=t, w1=w1, b1=b1, w2=w2)


def params():
    return [p.clone().requires_grad_(True) for p in (w1, b1, w2)]


def loss_of(ps):
    a, b, c = ps
    return torch.nn.functional.mse_loss(torch.relu(x @ a + b) @ c, t)


for name, max_norm in (("clip", 0.5), ("noclip", 100.0)):
    ps = params()
    loss_of(ps).backward()
    norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    out.case(name, norm=norm, g_w1=ps[0].grad, g_b1=ps[1].grad, g_w2=ps[2].grad)

ps = params()
opt = torch.optim.SGD(ps, lr=0.1, momentum=0.9)
norms, traj = [], {"w1": [], "b1": [], "w2": []}
for _ in range(3):
    opt.zero_grad()
    loss_of(ps).backward()
    norms.append(torch.nn.utils.clip_grad_norm_(ps, 0.5).item())
    opt.step()
    for k, p in zip(("w1", "b1", "w2"), ps):
        traj[k].append(p.detach().clone())
out.case("sgd", norm=norms, w1=torch.stack(traj["w1"]), b1=torch.stack(traj["b1"]),
         w2=torch.stack(traj["w2"]))
out.close()
