"""Reference values for tests/test_softmax.c and tests/test_movement.c.

Every case stores its inputs, a fixed weight tensor r, the op's output y and
the gradients of sum(y * r) from torch autograd (d<input>). Integer inputs
(indices, labels, pads) are stored as floats; they are small and exact.

Run from the repository root with Debian's torch:
    /usr/bin/python3 tests/ref/movement_ref.py
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reffile import RefFile  # noqa: E402

torch.manual_seed(20240611)
out = RefFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "movement.txt"),
              "tests/ref/movement_ref.py")


def leaf(t):
    return t.detach().clone().float().requires_grad_(True)


def grads(y, *xs):
    r = torch.randn(y.shape)
    gs = torch.autograd.grad((y * r).sum(), xs)
    return r, gs


# ---- softmax / log_softmax ----------------------------------------------------
# Logits around 1000 overflow a naive exp. One row is pushed 30 higher (so
# some rows along axes 0 and 1 saturate) and one logit down to about -1000:
# log_softmax must give about -2000 there, not log(0) = -inf.
logits = torch.randn(3, 4, 5) * 2 + 1000.0
logits[0, 1, :] += 30.0
logits[2, 3, 2] -= 2000.0
for fname, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
    for axis, tag in ((0, "ax0"), (1, "ax1"), (-1, "axm1")):
        x = leaf(logits)
        y = fn(x, axis)
        r, (dx,) = grads(y, x)
        out.case(f"{fname}_{tag}", x=x, r=r, y=y, dx=dx)

# ---- concat along the middle axis --------------------------------------------
a = leaf(torch.randn(2, 3, 4))
b = leaf(torch.randn(2, 2, 4))
y = torch.cat([a, b], dim=1)
r, (da, db) = grads(y, a, b)
out.case("concat", a=a, b=b, r=r, y=y, da=da, db=db)

# ---- pad: nabla's pads are (before, after) per axis from axis 0; F.pad wants
# them from the last axis first -------------------------------------------------
x = leaf(torch.randn(2, 3, 4))
pads = [1, 0, 0, 2, 2, 1]
torch_pads = []
for i in reversed(range(x.dim())):
    torch_pads += [pads[2 * i], pads[2 * i + 1]]
y = F.pad(x, torch_pads, value=0.5)
r, (dx,) = grads(y, x)
out.case("pad", x=x, pads=torch.tensor(pads, dtype=torch.float32), r=r, y=y, dx=dx)

# ---- index_select with repeated indices (their gradients accumulate) ---------
x = leaf(torch.randn(4, 5, 3))
idx = torch.tensor([4, 0, 0, 2, 4, 1])
y = torch.index_select(x, 1, idx)
r, (dx,) = grads(y, x)
out.case("index_select", x=x, index=idx.float(), r=r, y=y, dx=dx)

# ---- index_add with duplicate indices, on axis 0 and on a middle axis ----------
for tag, xs, axis, idx_list, ss in (("ax0", (5, 3), 0, [1, 3, 1, 0, 1], (5, 3)),
                                    ("ax1", (2, 4, 3), 1, [3, 3, 0], (2, 3, 3))):
    x = leaf(torch.randn(*xs))
    src = leaf(torch.randn(*ss))
    idx = torch.tensor(idx_list)
    y = x.index_add(axis, idx, src)
    r, (dx, dsrc) = grads(y, x, src)
    out.case(f"index_add_{tag}", x=x, index=idx.float(), src=src, r=r, y=y, dx=dx, dsrc=dsrc)

# ---- slice with step 2 (its gradient is an index_add) -------------------------
x = leaf(torch.randn(3, 7))
y = x[:, 1:7:2]
r, (dx,) = grads(y, x)
out.case("slice_step2", x=x, r=r, y=y, dx=dx)

# ---- one_hot -----------------------------------------------------------------
labels = torch.tensor([[0, 4, 2], [3, 3, 1]])
y = F.one_hot(labels, 5).float()
out.case("one_hot", labels=labels.float(), y=y)

out.close()
