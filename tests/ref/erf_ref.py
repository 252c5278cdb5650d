"""Reference values for tests/test_erf.c: torch.erf on float32 inputs and
the gradient of sum(erf(x) * R), computed in float64 so the stored numbers
are the exact answer rounded once.

Run: /usr/bin/python3 tests/ref/erf_ref.py   (writes tests/ref/erf.txt)
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reffile import RefFile  # noqa: E402

ref = RefFile(os.path.join(HERE, "erf.txt"), "tests/ref/erf_ref.py")
r = np.random.RandomState(20240)
# the bulk of the range, the tails where erf saturates, zero and tiny values
x = np.concatenate([
    r.uniform(-3, 3, 40),
    [0.0, 1e-7, -1e-7, 1e-3, -0.5, 0.5, 3.5, -3.5, 5.0, -6.0, 10.0, -10.0],
]).astype(np.float32).reshape(4, 13)
R = r.uniform(-1, 1, x.shape).astype(np.float32)
xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
y = torch.erf(xt)
(y * torch.tensor(R, dtype=torch.float64)).sum().backward()
ref.case("erf", x0=x, y=y, R=R, g0=xt.grad)
ref.close()
