"""Reference values for tests/test_conv.c and tests/test_pool.c.

Writes tests/ref/conv.txt. Every case stores its parameters, the inputs the
C test feeds (x, w, R), PyTorch's output y, and the gradients of sum(y * R)
with respect to x (and w) from torch autograd.

    conv params: stride h w | padding h w | dilation h w | groups
    pool params: kernel h w | stride h w | padding h w | ceil_mode | count_include_pad

Run with Debian's torch: /usr/bin/python3 tests/ref/conv_ref.py
"""
import os

import torch
import torch.nn.functional as F

from reffile import RefFile

HERE = os.path.dirname(os.path.abspath(__file__))

# name, x shape, w shape, stride, padding, dilation, groups
CONV_CASES = [
    ("conv_basic", (2, 3, 5, 5), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ("conv_stride2_pad1", (2, 3, 7, 6), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1),
    ("conv_dilation2", (1, 2, 7, 7), (3, 2, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    ("conv_groups2", (2, 4, 5, 5), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ("conv_depthwise", (2, 3, 6, 6), (3, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3),
    ("conv_depthwise_mult2", (1, 2, 5, 5), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ("conv_1x1", (2, 4, 4, 5), (3, 4, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ("conv_1x1_stride2", (1, 3, 5, 5), (2, 3, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    ("conv_1x1_pad1_groups", (1, 4, 3, 3), (2, 2, 1, 1), (1, 1), (1, 1), (1, 1), 2),
    ("conv_nonsquare", (1, 2, 6, 7), (3, 2, 2, 4), (2, 1), (1, 2), (1, 2), 1),
    ("conv_stride_gt_kernel", (1, 2, 7, 8), (2, 2, 2, 2), (3, 3), (0, 1), (1, 1), 1),
]

# name, kind, x shape, kernel, stride, padding, ceil_mode, count_include_pad, ties
POOL_CASES = [
    ("max_basic", "max", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0), 0, 1, False),
    ("max_pad_stride2", "max", (1, 2, 7, 7), (3, 3), (2, 2), (1, 1), 0, 1, False),
    ("max_overlap", "max", (1, 2, 5, 5), (3, 3), (1, 1), (0, 0), 0, 1, False),
    ("max_ceil", "max", (1, 2, 6, 6), (3, 3), (2, 2), (0, 0), 1, 1, False),
    ("max_ceil_pad", "max", (1, 2, 6, 5), (3, 3), (2, 2), (1, 1), 1, 1, False),
    ("max_nonsquare", "max", (2, 2, 7, 5), (3, 2), (2, 1), (1, 1), 0, 1, False),
    ("max_ties", "max", (1, 2, 6, 6), (3, 3), (1, 1), (1, 1), 0, 1, True),
    ("max_ties_ceil", "max", (1, 2, 5, 5), (2, 2), (2, 2), (1, 1), 1, 1, True),
    ("avg_basic", "avg", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0), 0, 1, False),
    ("avg_pad_include", "avg", (1, 2, 7, 7), (3, 3), (2, 2), (1, 1), 0, 1, False),
    ("avg_pad_exclude", "avg", (1, 2, 7, 7), (3, 3), (2, 2), (1, 1), 0, 0, False),
    ("avg_ceil_include", "avg", (1, 2, 6, 6), (3, 3), (2, 2), (1, 1), 1, 1, False),
    ("avg_ceil_exclude", "avg", (1, 2, 6, 6), (3, 3), (2, 2), (1, 1), 1, 0, False),
    ("avg_ceil_nopad", "avg", (1, 2, 5, 5), (2, 2), (2, 2), (0, 0), 1, 1, False),
    ("avg_overlap", "avg", (1, 2, 5, 5), (3, 3), (1, 1), (1, 1), 0, 1, False),
    ("avg_nonsquare_ceil", "avg", (2, 2, 7, 5), (3, 2), (2, 1), (1, 1), 1, 1, False),
    ("avg_nonsquare_ceil_ex", "avg", (2, 2, 7, 5), (3, 2), (2, 1), (1, 1), 1, 0, False),
]


def main():
    torch.manual_seed(1234)
    out = RefFile(os.path.join(HERE, "conv.txt"), "tests/ref/conv_ref.py")
    for name, xs, ws, stride, pad, dil, groups in CONV_CASES:
        x = (torch.rand(xs) * 2 - 1).requires_grad_()
        w = (torch.rand(ws) * 2 - 1).requires_grad_()
        y = F.conv2d(x, w, None, stride, pad, dil, groups)
        r = torch.rand(y.shape) * 2 - 1
        dx, dw = torch.autograd.grad((y * r).sum(), [x, w])
        params = torch.tensor([*stride, *pad, *dil, groups], dtype=torch.float32)
        out.case(name, params=params, x=x, w=w, R=r, y=y, dx=dx, dw=dw)
    for name, kind, xs, k, s, p, ceil, cip, ties in POOL_CASES:
        if ties:
            # small integers: many equal values per window, to pin down which
            # of several maxima receives the gradient
            x = torch.randint(0, 3, xs).float()
        else:
            x = torch.rand(xs) * 2 - 1
        x.requires_grad_()
        if kind == "max":
            y = F.max_pool2d(x, k, s, p, ceil_mode=bool(ceil))
        else:
            y = F.avg_pool2d(x, k, s, p, ceil_mode=bool(ceil), count_include_pad=bool(cip))
        r = torch.rand(y.shape) * 2 - 1
        (dx,) = torch.autograd.grad((y * r).sum(), [x])
        params = torch.tensor([*k, *s, *p, ceil, cip], dtype=torch.float32)
        out.case(name, params=params, x=x, R=r, y=y, dx=dx)
    out.close()


if __name__ == "__main__":
    main()
