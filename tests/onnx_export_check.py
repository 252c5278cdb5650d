"""Checks nabla's ONNX export with the onnx package (Debian's python3-onnx)
and PyTorch, independently of nabla's own ONNX importer.

    /usr/bin/python3 tests/onnx_export_check.py NABLA TEST_ONNX_EXPORT MODELS_DIR

1. `nabla export` of each shipped model (models/*.cfg) with random weights
   written here as safetensors; mnist_cnn also with --normalize --softmax.
   Each file must pass onnx.checker.check_model(full_check=True) and strict
   shape inference (output [N, 10]), and running it with the ONNX
   interpreter below must give what the same network written in PyTorch
   (tests/ref/model_params_ref.py) gives with those weights, for a batch of
   5 (the export was built with 2: the batch is symbolic).
2. The exports test_onnx_export writes when NB_ONNX_EXPORT_DUMP is set (the
   shipped models and a graph with every op the exporter maps, with nabla's
   inputs and outputs): checker, strict shape inference agreeing with the
   declared output shapes, and the interpreter against nabla's outputs.

The interpreter runs ONNX nodes with torch.nn.functional, written from the
operator specification (opset 17). onnx 1.12 has no reference evaluator
(onnx.reference came in 1.13); where one exists it is used as well.

Exit 77 (skipped) when the onnx package is missing; without torch only the
checker runs.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import onnx
    from onnx import numpy_helper
except ImportError as e:
    print(f"onnx_export_check: skipped ({e}; apt-get install python3-onnx)")
    sys.exit(77)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

try:
    from onnx.reference import ReferenceEvaluator
except ImportError:
    ReferenceEvaluator = None

HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def fail(msg):
    print("FAIL", msg)
    failures.append(msg)


# ---- an ONNX interpreter on torch ------------------------------------------------------

DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool"}


def _ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


def _slice(x, starts, ends, axes, steps):
    idx = [slice(None)] * x.dim()
    for s, e, a, st in zip(_ints(starts), _ints(ends), _ints(axes), _ints(steps)):
        n = x.shape[a]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        idx[a] = slice(s, e, st)
    return x[tuple(idx)]


def _reshape(x, shape):
    shape = _ints(shape)
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


def _pad(x, pads, value):
    pads = _ints(pads)
    n = x.dim()
    tp = []
    for d in reversed(range(n)):
        tp += [pads[d], pads[n + d]]
    return F.pad(x, tp, value=float(value))


def _gather(x, idx, axis):
    axis %= x.dim()
    flat = x.index_select(axis, idx.reshape(-1).long())
    return flat.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


def _onehot(idx, depth, values):
    d = int(depth.reshape(-1)[0])
    idx = torch.where(idx < 0, idx + d, idx).long()
    oh = F.one_hot(idx, d).to(values.dtype)
    return values[0] + (values[1] - values[0]) * oh


def _conv(x, w, b, a):
    p = a.get("pads", [0, 0, 0, 0])
    assert p[:2] == p[2:], "asymmetric pads"
    return F.conv2d(x, w, b, stride=a.get("strides", [1, 1]), padding=p[:2],
                    dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))


def _pool(x, a, avg):
    p = a.get("pads", [0, 0, 0, 0])
    assert p[:2] == p[2:], "asymmetric pads"
    k, s, c = a["kernel_shape"], a.get("strides", [1, 1]), bool(a.get("ceil_mode", 0))
    if avg:
        return F.avg_pool2d(x, k, s, p[:2], ceil_mode=c,
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    return F.max_pool2d(x, k, s, p[:2], ceil_mode=c)


def _reduce(fn, x, axes, keep):
    return fn(x, dim=list(axes), keepdim=bool(keep)) if axes else fn(x)


OPS = {
    "Identity": lambda x, a: x[0],
    "Add": lambda x, a: x[0] + x[1],
    "Sub": lambda x, a: x[0] - x[1],
    "Mul": lambda x, a: x[0] * x[1],
    "Div": lambda x, a: x[0] / x[1],
    "Pow": lambda x, a: torch.pow(x[0], x[1]),
    "Max": lambda x, a: torch.maximum(x[0], x[1]),
    "Min": lambda x, a: torch.minimum(x[0], x[1]),
    "Neg": lambda x, a: -x[0],
    "Abs": lambda x, a: torch.abs(x[0]),
    "Sign": lambda x, a: torch.sign(x[0]),
    "Exp": lambda x, a: torch.exp(x[0]),
    "Log": lambda x, a: torch.log(x[0]),
    "Sqrt": lambda x, a: torch.sqrt(x[0]),
    "Reciprocal": lambda x, a: torch.reciprocal(x[0]),
    "Tanh": lambda x, a: torch.tanh(x[0]),
    "Erf": lambda x, a: torch.erf(x[0]),
    "Sigmoid": lambda x, a: torch.sigmoid(x[0]),
    "Relu": lambda x, a: torch.relu(x[0]),
    "LeakyRelu": lambda x, a: F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Softplus": lambda x, a: torch.log(torch.exp(x[0]) + 1),
    "Clip": lambda x, a: torch.clamp(x[0], float(x[1]), float(x[2])),
    "Equal": lambda x, a: torch.eq(x[0], x[1]),
    "Not": lambda x, a: torch.logical_not(x[0]),
    "Less": lambda x, a: torch.lt(x[0], x[1]),
    "LessOrEqual": lambda x, a: torch.le(x[0], x[1]),
    "Greater": lambda x, a: torch.gt(x[0], x[1]),
    "GreaterOrEqual": lambda x, a: torch.ge(x[0], x[1]),
    "Cast": lambda x, a: x[0].to(getattr(torch, DTYPES[a["to"]])),
    "Where": lambda x, a: torch.where(x[0], x[1], x[2]),
    "MatMul": lambda x, a: torch.matmul(x[0], x[1]),
    "Gemm": lambda x, a: (x[0] @ (x[1].t() if a.get("transB", 0) else x[1])
                          + (x[2] if len(x) > 2 else 0)),
    "Reshape": lambda x, a: _reshape(x[0], x[1]),
    "Transpose": lambda x, a: x[0].permute(a["perm"]),
    "Slice": lambda x, a: _slice(*x),
    "Expand": lambda x, a: torch.broadcast_to(
        x[0], torch.broadcast_shapes(x[0].shape, tuple(_ints(x[1])))),
    "Concat": lambda x, a: torch.cat(x, dim=a["axis"]),
    "Pad": lambda x, a: _pad(x[0], x[1], x[2]),
    "Gather": lambda x, a: _gather(x[0], x[1], a.get("axis", 0)),
    "OneHot": lambda x, a: _onehot(*x),
    "ReduceSum": lambda x, a: _reduce(torch.sum, x[0], _ints(x[1]) if len(x) > 1 else [],
                                      a.get("keepdims", 1)),
    "ReduceMax": lambda x, a: _reduce(torch.amax, x[0], a.get("axes"), a.get("keepdims", 1)),
    "ReduceMin": lambda x, a: _reduce(torch.amin, x[0], a.get("axes"), a.get("keepdims", 1)),
    "ReduceMean": lambda x, a: _reduce(torch.mean, x[0], a.get("axes"), a.get("keepdims", 1)),
    "ReduceLogSumExp": lambda x, a: _reduce(torch.logsumexp, x[0], a.get("axes"),
                                            a.get("keepdims", 1)),
    "ArgMax": lambda x, a: torch.argmax(x[0], dim=a.get("axis", 0),
                                        keepdim=bool(a.get("keepdims", 1))),
    "Conv": lambda x, a: _conv(x[0], x[1], x[2] if len(x) > 2 else None, a),
    "MaxPool": lambda x, a: _pool(x[0], a, False),
    "AveragePool": lambda x, a: _pool(x[0], a, True),
    "GlobalAveragePool": lambda x, a: x[0].mean(dim=(2, 3), keepdim=True),
    "Softmax": lambda x, a: F.softmax(x[0], dim=a.get("axis", -1)),
    "LogSoftmax": lambda x, a: F.log_softmax(x[0], dim=a.get("axis", -1)),
    "BatchNormalization": lambda x, a: F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0,
                                                    a.get("epsilon", 1e-5)),
    "LayerNormalization": lambda x, a: F.layer_norm(
        x[0], x[0].shape[a.get("axis", -1) % x[0].dim():], x[1], x[2], a.get("epsilon", 1e-5)),
}


def interpret(model, feeds):
    env = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
           for i in model.graph.initializer}
    env.update({k: torch.from_numpy(np.array(v)) for k, v in feeds.items()})
    with torch.no_grad():
        for n in model.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type not in OPS:
                raise KeyError(f"the interpreter has no {n.op_type}")
            env[n.output[0]] = OPS[n.op_type]([env[i] if i else None for i in n.input], attrs)
    return [env[o.name].numpy() for o in model.graph.output]


def compare(what, got, want, rtol=1e-4, atol=1e-5):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return fail(f"{what}: shape {got.shape}, want {want.shape}")
    if got.dtype == np.bool_ or want.dtype == np.bool_:
        got, want = got.astype(np.float32), want.astype(np.float32)
    bad = ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
    if bad.any():
        i = np.argwhere(bad)[0]
        return fail(f"{what}: {bad.sum()} elements differ, first at {tuple(i)}: "
                    f"{got[tuple(i)]} vs {want[tuple(i)]}")


def check(path, want_out_shapes=None):
    """onnx.checker (full) and strict shape inference, whose output shapes
    must be the ones the file declares."""
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    declared = {o.name: [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                         for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    bare = onnx.ModelProto()
    bare.CopyFrom(m)
    for o in bare.graph.output:
        o.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True)
    for o in inferred.graph.output:
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in o.type.tensor_type.shape.dim]
        # a declared "N" or unknown axis may be inferred as anything symbolic
        if len(dims) != len(declared[o.name]) or any(
                a != b and isinstance(b, int) and isinstance(a, int)
                for a, b in zip(dims, declared[o.name])):
            fail(f"{path}: output {o.name}: inferred {dims}, declared {declared[o.name]}")
    if want_out_shapes is not None and list(declared.values()) != want_out_shapes:
        fail(f"{path}: outputs {list(declared.values())}, want {want_out_shapes}")
    return m


# ---- 1. nabla export of the shipped models ------------------------------------------------

def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def check_cli(nabla, models_dir, tmp):
    sys.path.insert(0, os.path.join(HERE, "ref"))
    import model_params_ref as ref

    torch.manual_seed(0)
    for name in ["mnist_cnn", "lenet5", "cifar_cnn", "cifar_resnet"]:
        m, forward, shape = getattr(ref, name)()
        m.eval()
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        weights = os.path.join(tmp, name + ".safetensors")
        save_safetensors(weights, {k: v for k, v in m.state_dict().items()
                                   if not k.endswith("num_batches_tracked")})
        x = torch.rand(5, *shape)
        for flags in ([], ["--normalize", "--softmax"]) if name == "mnist_cnn" else ([],):
            out = os.path.join(tmp, f"{name}{len(flags)}.onnx")
            cfg = os.path.join(models_dir, name + ".cfg")
            r = subprocess.run([nabla, "export", cfg, weights, "-o", out] + flags,
                               capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"nabla export {name} {flags}: {r.stderr.strip()}")
                continue
            label = f"{name} {' '.join(flags)}".strip()
            model = check(out, [["N", 10]])
            with torch.no_grad():
                if flags:
                    mean, std = 0.1307, 0.3081  # models/mnist_cnn.cfg's recipe
                    want = torch.softmax(forward((x - mean) * (1 / std)), -1).numpy()
                else:
                    want = forward(x).numpy()
            got = interpret(model, {"input": x.numpy()})[0]
            compare(f"{label}: ONNX interpreted vs PyTorch", got, want)
            print(f"ok   nabla export {label}: checker, shapes [N, 10], "
                  f"max |diff| vs PyTorch {np.abs(got - want).max():.2g}")


# ---- 2. test_onnx_export's files ------------------------------------------------------------

def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def check_dumps(test_bin, tmp):
    dump = os.path.join(tmp, "dump")
    os.makedirs(dump)
    r = subprocess.run([test_bin], env=dict(os.environ, NB_ONNX_EXPORT_DUMP=dump),
                       capture_output=True, text=True)
    if r.returncode != 0:
        return fail(f"test_onnx_export: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    for case in sorted(os.listdir(dump)):
        d = os.path.join(dump, case)
        model = check(os.path.join(d, "model.onnx"))
        data = os.path.join(d, "test_data_set_0")
        feeds = dict(load_pb(os.path.join(data, f"input_{k}.pb"))
                     for k in range(len(model.graph.input)))
        wants = [load_pb(os.path.join(data, f"output_{j}.pb"))[1]
                 for j in range(len(model.graph.output))]
        ops = sorted({n.op_type for n in model.graph.node})
        if torch is not None:
            gots = interpret(model, feeds)
            for o, got, want in zip(model.graph.output, gots, wants):
                compare(f"{case}: {o.name}", got, want)
        if ReferenceEvaluator is not None:
            gots = ReferenceEvaluator(model).run(None, feeds)
            for o, got, want in zip(model.graph.output, gots, wants):
                compare(f"{case} (onnx.reference): {o.name}", got, want)
        print(f"ok   {case}: checker, shape inference, {len(wants)} outputs equal nabla's; "
              f"{len(ops)} op types: {' '.join(ops)}")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    nabla, test_bin, models_dir = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        if torch is None:
            print("note: no torch: the exports are checked with onnx.checker only")
        else:
            check_cli(nabla, models_dir, tmp)
        check_dumps(test_bin, tmp)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
