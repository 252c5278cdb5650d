"""Reference values for tests/test_attention.c.

torch 1.13 has no F.scaled_dot_product_attention, so attention is written
out as softmax(q k^T * scale + causal mask) v, in float64 from the stored
float32 inputs. Every case stores q, k, v, a fixed weight tensor r, the
output y, the gradients dq, dk, dv of sum(y * r), and the settings
(causal, scale) as one-element arrays.

Run from the repository root with Debian's torch:
    /usr/bin/python3 tests/ref/attention_ref.py
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import RefFile  # noqa: E402

torch.manual_seed(20240923)
out = RefFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention.txt"),
              "tests/ref/attention_ref.py")


def attention(q, k, v, causal, scale):
    s = q @ k.transpose(-1, -2) * scale
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        # top-left aligned like torch's is_causal: query i sees keys j <= i
        keep = torch.ones(tq, tk, dtype=torch.bool).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def case(name, b, h, tq, tk, d, dv, causal, scale=None, spread=1.0):
    q32 = torch.randn(b, h, tq, d) * spread
    k32 = torch.randn(b, h, tk, d) * spread
    v32 = torch.randn(b, h, tk, dv)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    q, k, v = (t.double().requires_grad_(True) for t in (q32, k32, v32))
    y = attention(q, k, v, causal, scale)
    r = torch.randn(y.shape).float()
    dq, dk, dv_ = torch.autograd.grad((y * r.double()).sum(), (q, k, v))
    out.case(name, q=q32, k=k32, v=v32, r=r, y=y, dq=dq, dk=dk, dv=dv_,
             causal=torch.tensor([float(causal)]), scale=torch.tensor([scale]))


case("causal_2x3x5x4", 2, 3, 5, 5, 4, 4, True)
case("full_1x2x3x7", 1, 2, 3, 7, 5, 6, False)
case("causal_rect_1x2x4x6", 1, 2, 4, 6, 3, 3, True, scale=0.7)
case("t1_causal", 2, 1, 1, 1, 3, 3, True)
# scores in the hundreds: a softmax that does not subtract the row max
# overflows exp() here
case("large_logits", 1, 2, 7, 7, 8, 8, True, spread=12.0)
out.close()
