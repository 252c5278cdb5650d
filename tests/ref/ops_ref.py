"""Reference values for the op suites (tests/test_elementwise.c, test_reduce.c,
test_matmul.c, test_nn_ops.c), computed with PyTorch.

Each case stores its inputs x0, x1, ... (integer inputs as whole floats), the
output y, and for differentiable cases a fixed random R of y's shape and the
autograd gradients g0, g1, ... of sum(y * R) with respect to the inputs that
take one. Inputs are float32 values; the math runs in float64 so that the
stored numbers are the exact answer rounded once (casts run in float32, since
their rounding is the point). Inputs stay away from kinks (relu at 0, ties,
clamp bounds) unless a case is about the kink, so the C suites can also check
finite differences on the same data.

Run: /usr/bin/python3 tests/ref/ops_ref.py   (writes tests/ref/ops.txt)
"""
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reffile import RefFile  # noqa: E402

D = torch.float64
ref = RefFile(os.path.join(HERE, "ops.txt"), "tests/ref/ops_ref.py")


def rng(name, k=0):
    return np.random.RandomState(zlib.crc32(f"{name}/{k}".encode()))


def f32(a):
    return np.asarray(a, dtype=np.float32)


def U(name, k, shape, lo, hi, avoid=(), gap=0.05):
    """Uniform float32 values, resampled until none lies within gap of a kink."""
    r = rng(name, k)
    a = f32(r.uniform(lo, hi, shape))
    for _ in range(1000):
        bad = np.zeros(a.shape, dtype=bool)
        for p in avoid:
            bad |= np.abs(a - p) < gap
        if not bad.any():
            return a
        a[bad] = f32(r.uniform(lo, hi, int(bad.sum())))
    raise RuntimeError("could not avoid kinks")


def grid(name, k, shape, lo, hi, step, shift=0.0):
    """Values on a grid (lo + i*step + shift): ties are controlled exactly."""
    r = rng(name, k)
    n = int(round((hi - lo) / step))
    return f32(lo + r.randint(0, n + 1, shape) * step + shift)


def labels(name, k, shape, classes):
    return rng(name, k).randint(0, classes, shape).astype(np.int64)


def emit(name, inputs, fn, grad=(), dtype=D, **extra):
    """inputs: numpy arrays (float32 or int64); grad: input indices that take a gradient.
    fn returns y (or (y, dict of extra arrays))."""
    ts = []
    for i, a in enumerate(inputs):
        if a.dtype.kind in "iu":
            ts.append(torch.tensor(a, dtype=torch.long))
        else:
            ts.append(torch.tensor(f32(a), dtype=dtype, requires_grad=i in grad))
    out = fn(*ts)
    more = {}
    if isinstance(out, tuple):
        out, more = out
    arrays = {f"x{i}": (a.astype(np.float32) if a.dtype.kind in "iu" else a)
              for i, a in enumerate(inputs)}
    arrays["y"] = out.detach().to(torch.float64 if out.is_floating_point() else torch.float64)
    if grad:
        R = torch.tensor(f32(rng(name, 99).uniform(-1, 1, tuple(out.shape))), dtype=out.dtype)
        (out * R).sum().backward()
        arrays["R"] = R
        for i in grad:
            g = ts[i].grad
            arrays[f"g{i}"] = g if g is not None else torch.zeros_like(ts[i])
    arrays.update(more)
    arrays.update(extra)
    ref.case(name, **arrays)


# ---- elementwise binary (numpy broadcasting) -----------------------------------------

def tmax(a, b):
    return torch.maximum(a, b)


def tmin(a, b):
    return torch.minimum(a, b)


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "pow": torch.pow, "maximum": tmax, "minimum": tmin,
}


def binary_inputs(op, name, s0, s1):
    if op == "div":
        b = U(name, 1, s1, 0.5, 2.0) * np.where(rng(name, 2).rand(*s1) < 0.5, -1, 1)
        return U(name, 0, s0, -2, 2), f32(b)
    if op == "pow":
        return U(name, 0, s0, 0.5, 2.0), U(name, 1, s1, -2, 2)
    if op in ("maximum", "minimum"):
        # two interleaved grids: never equal, always >= 0.125 apart
        return grid(name, 0, s0, -2, 2, 0.25, 0.125), grid(name, 1, s1, -2, 2, 0.25)
    return U(name, 0, s0, -2, 2), U(name, 1, s1, -2, 2)


for op, fn in BINARY.items():
    emit(f"bin_{op}", list(binary_inputs(op, f"bin_{op}", (3, 1, 4), (2, 4))), fn, grad=(0, 1))
    emit(f"bin_{op}_s", list(binary_inputs(op, f"bin_{op}_s", (2, 3), ())), fn, grad=(0, 1))
# a scalar on the left of the non-commutative ones
emit("bin_div_ls", [U("bin_div_ls", 0, (), -2, 2), f32([[0.7, -1.3, 1.9], [-0.6, 1.1, 0.8]])],
     torch.div, grad=(0, 1))
emit("bin_pow_ls", [f32(1.7), U("bin_pow_ls", 1, (2, 3), -2, 2)], torch.pow, grad=(0, 1))
emit("bin_sub_ls", [f32(0.3), U("bin_sub_ls", 1, (2, 3), -2, 2)], torch.sub, grad=(0, 1))

# ties: the gradient is split 0.5 / 0.5 like PyTorch
a = f32([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
b = f32([[0.5, 1.0, 2.0], [-1.5, 0.25, 0.0]])
emit("bin_maximum_tie", [a, b], tmax, grad=(0, 1))
emit("bin_minimum_tie", [a, b], tmin, grad=(0, 1))
# ties under broadcasting: the column of b meets equal entries of a
emit("bin_maximum_tie_b", [f32([[1.0, 2.0, 3.0], [2.0, 2.0, 0.0]]), f32([[2.0], [2.0]])],
     tmax, grad=(0, 1))

# comparisons: value only (many ties on purpose)
CMP = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt,
       "ge": torch.ge}
for op, fn in CMP.items():
    x0 = grid(f"cmp_{op}", 0, (3, 1, 4), -1, 1, 1.0)
    x1 = grid(f"cmp_{op}", 1, (2, 4), -1, 1, 1.0)
    emit(f"cmp_{op}", [x0, x1], lambda p, q, fn=fn: fn(p, q).to(D))

# where: gradient to both branches, none to cond
emit("where", [f32([[1], [0], [1]]), U("where", 1, (3, 4), -2, 2), U("where", 2, (4,), -2, 2)],
     lambda c, p, q: torch.where(c != 0, p, q), grad=(1, 2))
emit("where_s", [f32([1, 0, 0, 1]), f32(2.5), U("where_s", 2, (3, 4), -2, 2)],
     lambda c, p, q: torch.where(c != 0, p, q), grad=(1, 2))

# ---- elementwise unary ------------------------------------------------------------------

SIGNED = dict(lo=-3, hi=3, avoid=(0.0,), gap=0.1)
ANY = dict(lo=-3, hi=3)
POS = dict(lo=0.2, hi=3)

UNARY = {
    "neg": (torch.neg, ANY),
    "abs": (torch.abs, SIGNED),
    "sign": (torch.sign, SIGNED),
    "exp": (torch.exp, ANY),
    "log": (torch.log, POS),
    "sqrt": (torch.sqrt, POS),
    "rsqrt": (torch.rsqrt, POS),
    "square": (torch.square, ANY),
    "reciprocal": (torch.reciprocal, POS),
    "tanh": (torch.tanh, ANY),
    "sigmoid": (torch.sigmoid, ANY),
    "relu": (torch.relu, SIGNED),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), SIGNED),
    "gelu": (lambda x: F.gelu(x), ANY),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), ANY),
    "silu": (F.silu, ANY),
    "softplus": (F.softplus, ANY),
    # beta 2, threshold 1: the linear branch starts at x = 0.5
    "softplus_b2": (lambda x: F.softplus(x, beta=2.0, threshold=1.0),
                    dict(lo=-2, hi=2, avoid=(0.5,))),
    "clamp": (lambda x: torch.clamp(x, -0.5, 0.7), dict(lo=-2, hi=2, avoid=(-0.5, 0.7))),
}
for op, (fn, dist) in UNARY.items():
    x = U(f"un_{op}", 0, (4, 6), dist["lo"], dist["hi"], dist.get("avoid", ()),
          dist.get("gap", 0.05))
    emit(f"un_{op}", [x], fn, grad=(0,))

# large magnitudes: no overflow to nan (float32 math, like the kernels)
EXTREME = f32([-100, -50, -20, -10, -1, 0, 1, 10, 20, 50, 100])
for op in ("sigmoid", "tanh", "silu", "softplus", "gelu", "gelu_tanh", "exp", "leaky_relu"):
    emit(f"ext_{op}", [EXTREME], UNARY[op][0], grad=(0,), dtype=torch.float32)

# NaN propagates like PyTorch (value only; -0.0 and 0.0 ride along)
NANX = f32([np.nan, -0.0, 0.0, 1.5, -2.0])
for op in ("relu", "abs", "sign", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "softplus",
           "leaky_relu", "clamp", "exp", "log", "sqrt", "square", "neg", "reciprocal"):
    emit(f"nan_{op}", [NANX], UNARY[op][0], dtype=torch.float32)
for op in ("maximum", "minimum", "add", "pow"):
    emit(f"nan_{op}", [f32([np.nan, 1.0, 2.0, np.nan]), f32([0.0, np.nan, 1.0, np.nan])],
         BINARY[op], dtype=torch.float32)

# ---- casts (float32 math: the rounding is the point) -----------------------------------

F16_VALUES = f32([1.0, 1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 0.1, -0.333333, 65504,
                  65519.99, 65520, 1e5, -1e5, 6e-8, 2.9e-8, 3.0e-8, 1e-5, -2.5e-6, 0.0, -0.0,
                  np.inf, -np.inf, np.nan, 1234.5678, 3.14159265])
BF16_VALUES = f32([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 0.1, -0.333333, 3.38e38,
                   3.4e38, -3.4e38, 1e-39, 1e-40, 0.0, np.inf, -np.inf, np.nan, 1234.5678,
                   3.14159265, 65520.0, 1e20])
emit("cast_f16", [F16_VALUES], lambda x: x.half().float(), grad=(0,), dtype=torch.float32)
emit("cast_bf16", [BF16_VALUES], lambda x: x.bfloat16().float(), grad=(0,),
     dtype=torch.float32)
# through a transposed view (strided copy with a dtype change)
emit("cast_f16_t", [U("cast_f16_t", 0, (3, 4), -70000, 70000)],
     lambda x: x.t().half().float(), grad=(0,), dtype=torch.float32)
# f16 -> bf16 -> f32 chain
emit("cast_f16_bf16", [U("cast_f16_bf16", 0, (2, 5), -3, 3)],
     lambda x: x.half().bfloat16().float(), grad=(0,), dtype=torch.float32)

# ---- non-contiguous views into elementwise ops ----------------------------------------

emit("view_bin", [U("view_bin", 0, (4, 3), -2, 2), U("view_bin", 1, (3, 8), -2, 2),
                  U("view_bin", 2, (3, 1), -2, 2)],
     lambda a, b, c: a.t() * b[:, 0:8:2] + c.expand(3, 4), grad=(0, 1, 2))
emit("view_exp_t", [U("view_exp_t", 0, (3, 5), -2, 2)], lambda a: torch.exp(a.t()), grad=(0,))
emit("view_tanh_s", [U("view_tanh_s", 0, (6, 4), -2, 2)], lambda a: torch.tanh(a[1:6:2]),
     grad=(0,))
emit("view_sqrt_b", [U("view_sqrt_b", 0, (4,), 0.5, 2)],
     lambda a: torch.sqrt(a.expand(3, 4)), grad=(0,))
emit("view_perm", [U("view_perm", 0, (2, 3, 4), -2, 2), U("view_perm", 1, (4, 1, 3), -2, 2)],
     lambda a, b: a.permute(2, 0, 1) * b, grad=(0, 1))
emit("view_slice_t", [U("view_slice_t", 0, (6, 4), -2, 2)],
     lambda a: torch.square(a.t()[:, 0:6:2]), grad=(0,))
emit("view_where", [f32([1, 0, 1, 1, 0, 0, 1, 0]), U("view_where", 1, (4, 3), -2, 2),
                    U("view_where", 2, (3,), -2, 2)],
     lambda c, a, b: torch.where(c[0:8:2] != 0, a.t(), b.reshape(3, 1).expand(3, 4)),
     grad=(1, 2))
emit("view_max_t", [grid("view_max_t", 0, (4, 3), -2, 2, 0.25, 0.125),
                    grid("view_max_t", 1, (3, 8), -2, 2, 0.25)],
     lambda a, b: torch.maximum(a.t(), b[:, 1:8:2]), grad=(0, 1))

# ---- reductions ------------------------------------------------------------------------

X3 = (2, 3, 4)


def red(name, fn, x, grad=True):
    emit(name, [x], fn, grad=(0,) if grad else ())


def rx(name):
    return U(name, 0, X3, -2, 2)


red("sum_all", lambda x: x.sum(), rx("sum_all"))
red("sum_all_k", lambda x: x.sum((0, 1, 2), keepdim=True), rx("sum_all_k"))
red("sum_1", lambda x: x.sum(1), rx("sum_1"))
red("sum_02_k", lambda x: x.sum((0, 2), keepdim=True), rx("sum_02_k"))
red("sum_m1", lambda x: x.sum(-1), rx("sum_m1"))
red("mean_all", lambda x: x.mean(), rx("mean_all"))
red("mean_1_k", lambda x: x.mean(1, keepdim=True), rx("mean_1_k"))
red("mean_02", lambda x: x.mean((0, 2)), rx("mean_02"))
red("max_all", lambda x: x.amax(), rx("max_all"))
red("max_1", lambda x: x.amax(1), rx("max_1"))
red("max_02_k", lambda x: x.amax((0, 2), keepdim=True), rx("max_02_k"))
red("min_m1", lambda x: x.amin(-1), rx("min_m1"))
red("min_01", lambda x: x.amin((0, 1)), rx("min_01"))
# ties: the gradient is shared evenly among equal extrema, like torch.amax
red("max_tie_1", lambda x: x.amax(1), grid("max_tie_1", 0, X3, 0, 2, 1.0))
red("min_tie_all", lambda x: x.amin(), grid("min_tie_all", 0, X3, 0, 3, 1.0))
red("max_tie_02_k", lambda x: x.amax((0, 2), keepdim=True), grid("max_tie_02_k", 0, X3, 0, 2, 1.0))
red("var_1_c1", lambda x: x.var(1, unbiased=True), rx("var_1_c1"))
red("var_02_c0_k", lambda x: x.var((0, 2), unbiased=False, keepdim=True), rx("var_02_c0_k"))
red("var_all_c1", lambda x: x.var(), rx("var_all_c1"))
red("var_m1_c0", lambda x: x.var(-1, unbiased=False), rx("var_m1_c0"))
red("lse_1", lambda x: torch.logsumexp(x, 1), rx("lse_1"))
red("lse_02_k", lambda x: torch.logsumexp(x, (0, 2), keepdim=True), rx("lse_02_k"))
red("lse_all", lambda x: torch.logsumexp(x, (0, 1, 2)), rx("lse_all"))
red("lse_big", lambda x: torch.logsumexp(x, -1), f32(rx("lse_big") * 3 + 1000))
red("lse_small", lambda x: torch.logsumexp(x, -1), f32(rx("lse_small") * 3 - 1000))
red("lse_neginf", lambda x: torch.logsumexp(x, 1),
    f32([[-np.inf, -np.inf, -np.inf], [0.5, -np.inf, 1.5], [np.inf, 1.0, 2.0]]), grad=False)
red("argmax_0", lambda x: x.argmax(0), rx("argmax_0"), grad=False)
red("argmax_m1_k", lambda x: x.argmax(-1, keepdim=True), rx("argmax_m1_k"), grad=False)
red("argmax_tie_1", lambda x: x.argmax(1), grid("argmax_tie_1", 0, X3, 0, 2, 1.0), grad=False)
# reductions of views
red("sum_t", lambda x: x.t().sum(0), U("sum_t", 0, (3, 4), -2, 2))
red("max_s", lambda x: x[:, 0:8:2].amax(1), U("max_s", 0, (3, 8), -2, 2))
red("max_b", lambda x: x.expand(4, 3).amax(0), U("max_b", 0, (3,), -2, 2))
red("var_t", lambda x: x.permute(2, 0, 1).var((1, 2)), rx("var_t"))
red("mean_s_b", lambda x: x[1:4:2].expand(2, 2, 5).mean((0, 2)), U("mean_s_b", 0, (4, 5), -2, 2))
red("argmax_t", lambda x: x.t().argmax(1), rx("argmax_t")[0], grad=False)
red("lse_t", lambda x: torch.logsumexp(x.t(), 0), U("lse_t", 0, (3, 4), -2, 2))

# ---- matmul ------------------------------------------------------------------------------


def mm(name, shapes, fn=torch.matmul):
    xs = [U(name, i, s, -1, 1) for i, s in enumerate(shapes)]
    emit(name, xs, fn, grad=tuple(range(len(xs))))


mm("mm_2d", [(3, 4), (4, 5)])
mm("mm_3d", [(2, 3, 4), (2, 4, 5)])
mm("mm_bcast", [(2, 1, 3, 4), (5, 4, 6)])
mm("mm_bcast_l", [(4, 3, 2), (2, 5)])
mm("mm_vec_l", [(4,), (4, 5)])
mm("mm_vec_r", [(3, 4), (4,)])
mm("mm_vec_vv", [(4,), (4,)])
mm("mm_vec_batch_r", [(2, 3, 4), (4,)])
mm("mm_vec_batch_l", [(4,), (2, 4, 5)])
mm("mm_tA", [(4, 3), (4, 5)], lambda a, b: a.t() @ b)
mm("mm_tB", [(3, 4), (5, 4)], lambda a, b: a @ b.t())
mm("mm_tAB", [(4, 3), (5, 4)], lambda a, b: a.t() @ b.t())
mm("mm_t3", [(2, 4, 3), (2, 5, 4)], lambda a, b: a.transpose(-1, -2) @ b.transpose(-1, -2))
mm("mm_tbatch", [(3, 2, 4), (2, 4, 5)], lambda a, b: a.transpose(0, 1) @ b)
mm("mm_slice", [(3, 8), (4, 5)], lambda a, b: a[:, 0:8:2] @ b)
mm("mm_slice_rows", [(6, 4), (4, 5)], lambda a, b: a[0:6:2] @ b)
mm("mm_bview_a", [(1, 4), (4, 5)], lambda a, b: a.expand(3, 4) @ b)
mm("mm_bview_b", [(3, 4), (4, 1)], lambda a, b: a @ b.expand(4, 5))
mm("mm_bview_batch", [(3, 4), (2, 4, 5)], lambda a, b: a.expand(2, 3, 4) @ b)
mm("mm_vec_t", [(4, 3), (4,)], lambda a, b: a.t() @ b)

# ---- normalisation, losses, embedding ------------------------------------------------


def bn_train(x, g, b, rm0, rv0):
    rm, rv = rm0.detach().clone(), rv0.detach().clone()
    y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
    rm1, rv1 = rm.clone(), rv.clone()
    F.batch_norm(x.detach(), rm, rv, None, None, training=True, momentum=0.1, eps=1e-5)
    return y, {"rm1": rm1, "rv1": rv1, "rm2": rm, "rv2": rv}


bx = f32(U("bn_train", 0, (4, 3, 2), -2, 2) * f32([1.0, 2.0, 0.5]).reshape(1, 3, 1)
         + f32([0.5, -1.0, 2.0]).reshape(1, 3, 1))
emit("bn_train", [bx, U("bn_train", 1, (3,), 0.5, 1.5), U("bn_train", 2, (3,), -1, 1),
                  f32([0.2, 0.2, 0.2]), f32([1.5, 1.5, 1.5])], bn_train, grad=(0, 1, 2))
emit("bn_train_2d", [U("bn_train_2d", 0, (5, 2), -2, 2)],
     lambda x: F.batch_norm(x, None, None, None, None, training=True, eps=1e-5), grad=(0,))
emit("bn_eval", [U("bn_eval", 0, (4, 3, 2), -2, 2), U("bn_eval", 1, (3,), 0.5, 1.5),
                 U("bn_eval", 2, (3,), -1, 1), U("bn_eval", 3, (3,), -0.5, 0.5),
                 U("bn_eval", 4, (3,), 0.5, 2.0)],
     lambda x, g, b, rm, rv: F.batch_norm(x, rm, rv, g, b, training=False, eps=1e-5),
     grad=(0, 1, 2))
emit("bn_eval_4d", [U("bn_eval_4d", 0, (2, 2, 2, 3), -2, 2), U("bn_eval_4d", 1, (2,), -0.5, 0.5),
                    U("bn_eval_4d", 2, (2,), 0.5, 2.0)],
     lambda x, rm, rv: F.batch_norm(x, rm, rv, None, None, training=False, eps=1e-3), grad=(0,))

emit("ln_gb", [U("ln_gb", 0, (2, 3, 4), -2, 2), U("ln_gb", 1, (4,), 0.5, 1.5),
               U("ln_gb", 2, (4,), -1, 1)],
     lambda x, g, b: F.layer_norm(x, (4,), g, b, eps=1e-5), grad=(0, 1, 2))
emit("ln_2", [U("ln_2", 0, (2, 3, 4), -2, 2), U("ln_2", 1, (3, 4), 0.5, 1.5),
              U("ln_2", 2, (3, 4), -1, 1)],
     lambda x, g, b: F.layer_norm(x, (3, 4), g, b, eps=1e-5), grad=(0, 1, 2))
emit("ln_nogb", [U("ln_nogb", 0, (3, 5), -2, 2)],
     lambda x: F.layer_norm(x, (5,), eps=1e-5), grad=(0,))

emit("ce", [U("ce", 0, (4, 5), -3, 3), labels("ce", 1, (4,), 5)],
     lambda x, t: F.cross_entropy(x, t), grad=(0,))
emit("ce_ls", [U("ce_ls", 0, (4, 5), -3, 3), labels("ce_ls", 1, (4,), 5)],
     lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), grad=(0,))
emit("ce_i32", [U("ce_i32", 0, (3, 4), -3, 3), labels("ce_i32", 1, (3,), 4)],
     lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), grad=(0,))
emit("ce_big", [f32([[100, 0, -100], [50, 60, 55], [-80, -90, -85]]), np.array([1, 1, 0])],
     lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), grad=(0,))
emit("nll", [U("nll", 0, (4, 5), -3, 0), labels("nll", 1, (4,), 5)],
     lambda x, t: F.nll_loss(x, t), grad=(0,))
emit("mse", [U("mse", 0, (3, 4), -2, 2), U("mse", 1, (3, 4), -2, 2)],
     lambda p, t: F.mse_loss(p, t), grad=(0, 1))
bce_x = f32([[50, -50, 0.0, 1.5, -2.25], [30, -30, 3.0, -0.5, 0.0]])
emit("bce", [bce_x, U("bce", 1, (2, 5), 0, 1)],
     lambda x, t: F.binary_cross_entropy_with_logits(x, t), grad=(0, 1))
emit("bce_small", [U("bce_small", 0, (3, 4), -3, 3), f32(rng("bce_small", 1).randint(0, 2, (3, 4)))],
     lambda x, t: F.binary_cross_entropy_with_logits(x, t), grad=(0, 1))
emit("emb", [U("emb", 0, (5, 3), -1, 1), np.array([[0, 4, 2], [2, 2, 1]])],
     lambda w, i: F.embedding(i, w), grad=(0,))
emit("emb_1d", [U("emb_1d", 0, (4, 2), -1, 1), np.array([3, 3, 0, 1, 3])],
     lambda w, i: F.embedding(i, w), grad=(0,))

# the composites on strided views
emit("ln_t", [U("ln_t", 0, (5, 3), -2, 2), U("ln_t", 1, (5,), 0.5, 1.5)],
     lambda x, g: F.layer_norm(x.t(), (5,), g, None, eps=1e-5), grad=(0, 1))
emit("bn_perm", [U("bn_perm", 0, (3, 4, 2), -2, 2)],
     lambda x: F.batch_norm(x.permute(1, 0, 2), None, None, training=True, eps=1e-5), grad=(0,))
emit("ce_t", [U("ce_t", 0, (5, 4), -3, 3), labels("ce_t", 1, (4,), 5)],
     lambda x, t: F.cross_entropy(x.t(), t, label_smoothing=0.1), grad=(0,))
emit("mse_s", [U("mse_s", 0, (3, 8), -2, 2), U("mse_s", 1, (4,), -2, 2)],
     lambda p, t: F.mse_loss(p[:, 0:8:2], t.expand(3, 4)), grad=(0, 1))
emit("bce_t", [U("bce_t", 0, (4, 3), -3, 3), U("bce_t", 1, (3, 1), 0, 1)],
     lambda x, t: F.binary_cross_entropy_with_logits(x.t(), t.expand(3, 4)), grad=(0, 1))
emit("emb_t", [U("emb_t", 0, (3, 5), -1, 1), np.array([[4, 0], [4, 2]])],
     lambda w, i: F.embedding(i, w.t()), grad=(0,))

ref.close()
