"""Reference values for tests/test_lora.c: the LoRA forward and gradients.

loralib (microsoft/LoRA, loralib/layers.py) computes a LoRA Linear as
    result = F.linear(x, W, bias)
    result += (dropout(x) @ lora_A.T @ lora_B.T) * (lora_alpha / r)
with lora_A [r, in] and lora_B [out, r]. Neither loralib nor peft is on the
machine, so that forward is written out here, in float64 from the stored
float32 values. Every case stores x, W, b (zeros when the layer has none),
A, B, a fixed weight tensor rr, the output y, the gradients dx, dA, dB of
sum(y * rr), and the settings (alpha, rank) as one-element arrays. The
merged weight W + (alpha / r) B A is stored as wm.

Run from the repository root with Debian's torch:
    /usr/bin/python3 tests/ref/lora_ref.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import RefFile  # noqa: E402

torch.manual_seed(20250611)
out = RefFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lora.txt"),
              "tests/ref/lora_ref.py")


def lora_linear(x, w, b, a, bb, alpha, r):
    y = torch.nn.functional.linear(x, w, b)
    return y + (x @ a.transpose(0, 1) @ bb.transpose(0, 1)) * (alpha / r)


def case(name, xshape, out_f, r, alpha, bias):
    in_f = xshape[-1]
    x32 = torch.randn(*xshape)
    w32 = torch.randn(out_f, in_f) * 0.5
    b32 = torch.randn(out_f) if bias else torch.zeros(out_f)
    a32 = torch.randn(r, in_f) * 0.5
    # B != 0, as after some training (a fresh B is zero and hides errors)
    bb32 = torch.randn(out_f, r) * 0.5
    x, w, b, a, bb = (t.double().requires_grad_(True) for t in (x32, w32, b32, a32, bb32))
    y = lora_linear(x, w, b if bias else None, a, bb, alpha, r)
    rr = torch.randn(y.shape).float()
    dx, da, dbb = torch.autograd.grad((y * rr.double()).sum(), (x, a, bb))
    wm = w.detach() + (alpha / r) * (bb.detach() @ a.detach())
    out.case(name, x=x32, w=w32, b=b32, a=a32, bb=bb32, rr=rr, y=y, dx=dx, da=da, dbb=dbb, wm=wm,
             alpha=torch.tensor([alpha]), rank=torch.tensor([float(r)]),
             bias=torch.tensor([float(bias)]))


case("seq_2x3x5_to_4_r2", (2, 3, 5), 4, 2, 3.0, True)
case("flat_6x7_to_3_r3_nobias", (6, 7), 3, 3, 1.0, False)
case("wide_4x16_to_12_r1", (4, 16), 12, 1, 16.0, True)
out.close()
