"""Reference values for mixed precision (tests/test_amp.c).

nabla's autocast (graph.h, nb_graph_set_autocast) casts the operands of
matmul and conv2d to bf16 or f16, multiplies them with f32 accumulation and
returns f32; the gradient ops cast the incoming f32 gradient to the same
dtype and return f32. The references compute exactly that in float32 on
operands rounded with torch's own .bfloat16() / .half():
  - "mm_*": a @ b of rounded operands, and a @ b^T (a strided operand);
  - "conv_*": conv2d and its two gradients (torch.nn.grad) of rounded
    operands, the incoming gradient dy rounded too;
  - "mlp_*": a 2-layer MLP with cross-entropy whose matmuls go through a
    custom autograd Function that rounds its operands in forward and the
    incoming gradient in backward: the loss and the parameter gradients,
    for f32 (no rounding), bf16 and f16.
Run: /usr/bin/python3 tests/ref/amp_ref.py
"""
import os
import torch
import torch.nn.functional as F
from reffile import RefFile

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
out = RefFile(os.path.join(here, "amp.txt"), "tests/ref/amp_ref.py")

ROUND = {
    "f32": lambda t: t,
    "bf16": lambda t: t.bfloat16().float(),
    "f16": lambda t: t.half().float(),
}

# ---- matmul ----
a = torch.randn(5, 7)
b = torch.randn(7, 3)
a3 = torch.randn(2, 4, 6)
bt = torch.randn(3, 6)
out.case("mm_data", a=a, b=b, a3=a3, bt=bt)
for name in ("bf16", "f16"):
    r = ROUND[name]
    out.case("mm_" + name, y=r(a) @ r(b), y3=r(a3) @ r(bt).t())

# ---- conv2d (stride 2, padding 1) ----
x = torch.randn(2, 3, 7, 7)
w = torch.randn(4, 3, 3, 3) * 0.5
dy = torch.randn(2, 4, 4, 4)
out.case("conv_data", x=x, w=w, dy=dy)
for name in ("bf16", "f16"):
    r = ROUND[name]
    y = F.conv2d(r(x), r(w), stride=2, padding=1)
    dx = torch.nn.grad.conv2d_input(x.shape, r(w), r(dy), stride=2, padding=1)
    dw = torch.nn.grad.conv2d_weight(r(x), w.shape, r(dy), stride=2, padding=1)
    out.case("conv_" + name, y=y, dx=dx, dw=dw)


# ---- MLP with autocast matmuls ----
def autocast_mm(r):
    class MM(torch.autograd.Function):
        @staticmethod
        def forward(ctx, p, q):
            rp, rq = r(p), r(q)
            ctx.save_for_backward(rp, rq)
            return rp @ rq

        @staticmethod
        def backward(ctx, g):
            rp, rq = ctx.saved_tensors
            rg = r(g)
            return rg @ rq.t(), rp.t() @ rg

    return MM.apply


xm = torch.randn(8, 5)
labels = torch.randint(0, 3, (8,))
w1 = torch.randn(6, 5) * 0.6
b1 = torch.randn(6) * 0.1
w2 = torch.randn(3, 6) * 0.6
b2 = torch.randn(3) * 0.1
out.case("mlp_data", x=xm, labels=labels.float(), w1=w1, b1=b1, w2=w2, b2=b2)
for name in ("f32", "bf16", "f16"):
    mm = autocast_mm(ROUND[name])
    ps = [p.clone().requires_grad_(True) for p in (w1, b1, w2, b2)]
    h = torch.relu(mm(xm, ps[0].t()) + ps[1])
    logits = mm(h, ps[2].t()) + ps[3]
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out.case("mlp_" + name, loss=loss, g_w1=ps[0].grad, g_b1=ps[1].grad, g_w2=ps[2].grad,
             g_b2=ps[3].grad)
out.close()
