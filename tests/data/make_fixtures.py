"""Writes the .npy and ONNX fixtures under tests/data/npy and tests/data/onnx
that tests/test_npy.c, test_onnx_external.c, test_fuzz_readers.c and
cli_onnx_run.sh read. Deterministic: rerunning gives the same bytes.

  npy/         arrays written by numpy.save / numpy.lib.format (every dtype
               nabla reads, format versions 1.0, 2.0 and 3.0, big-endian,
               a scalar, an empty array) and files nabla must refuse
               (Fortran order, complex). Values follow value(k) below, so
               the C test recomputes them from the element index.
  onnx/mlp_external/   an MLP whose weights are ONNX external data
               (onnx.save_model(..., save_as_external_data=True)) with a
               dynamic batch, an input x.npy and the expected outputs
               probs.npy and logits.npy (output name "logits:0/raw" tests
               file-name sanitizing).
  onnx/tiny_classifier/  an image classifier on 8x8 grey images that
               outputs logits, two PNG images and the expected softmax
               probabilities (expected_probs.npy) for `nabla predict`.
  onnx/huge_input/  image models whose input sizes `nabla predict` must
               refuse with an error instead of overflowing: H x W past
               int64 (wrap.onnx), H past a C int (tall.onnx), a fixed
               batch N with N x C x H x W past int64 (batch.onnx).

Run: /usr/bin/python3 tests/data/make_fixtures.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def value(k):
    """Element k of every integer-valued fixture: small, signed, varied."""
    return (k * 7) % 23 - 11


def npy_fixtures():
    d = os.path.join(HERE, "npy")
    os.makedirs(d, exist_ok=True)
    k = np.arange(24)
    v = value(k)
    arrays = {
        "f4": (v * 0.25).astype("<f4").reshape(2, 3, 4),
        "f8": (v / 3.0).astype("<f8").reshape(4, 6),  # rounds to f32 when read
        "f2": (v * 0.5).astype("<f2").reshape(24),
        "i1": v.astype("i1").reshape(6, 4),
        "i2": (v * 1000).astype("<i2").reshape(6, 4),
        "i4": (v * 100000).astype("<i4").reshape(6, 4),
        "i8": (v * (1 << 40) + k).astype("<i8").reshape(6, 4),
        "u1": (v + 11).astype("u1").reshape(6, 4),
        "u2": (60000 - k).astype("<u2").reshape(6, 4),
        "u4": (4000000000 - k).astype("<u4").reshape(6, 4),
        "b1": (k % 3 == 0).reshape(6, 4),
        "be_f4": (v * 0.25).astype(">f4").reshape(4, 6),
        "be_i8": (v * (1 << 40) + k).astype(">i8").reshape(24),
        "scalar": np.array(2.5, dtype="<f4"),
        "empty": np.zeros((0, 3), dtype="<f4"),
    }
    for name, a in arrays.items():
        np.save(os.path.join(d, name + ".npy"), a)
    for ver in ((2, 0), (3, 0)):
        with open(os.path.join(d, f"f4_v{ver[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, arrays["f4"], version=ver)
    np.save(os.path.join(d, "fortran.npy"), np.asfortranarray((v * 0.25).astype("<f4").reshape(4, 6)))
    np.save(os.path.join(d, "c8.npy"), np.ones(3, dtype="<c8"))


def mlp_external():
    d = os.path.join(HERE, "onnx", "mlp_external")
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(7)
    w1 = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    b1 = rng.uniform(-1, 1, (5,)).astype(np.float32)
    w2 = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    b2 = rng.uniform(-1, 1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits:0/raw"]),
        helper.make_node("Softmax", ["logits:0/raw"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp_external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("logits:0/raw", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="nabla tests/data/make_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    # onnx appends to an existing data file: start afresh so reruns give the same bytes
    if os.path.exists(os.path.join(d, "weights.bin")):
        os.remove(os.path.join(d, "weights.bin"))
    onnx.save_model(model, os.path.join(d, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    x = rng.uniform(-2, 2, (2, 3)).astype(np.float32)
    h = np.maximum(x.astype(np.float64) @ w1 + b1, 0)
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(d, "probs.npy"), (e / e.sum(axis=-1, keepdims=True)).astype(np.float32))
    # five rows for batching tests (nabla run --batch 2: two full batches and a last one)
    np.save(os.path.join(d, "x5.npy"), np.random.RandomState(5).uniform(-2, 2, (5, 3)))


def tiny_classifier():
    d = os.path.join(HERE, "onnx", "tiny_classifier")
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(11)
    w = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    b = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="nabla tests/data/make_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, os.path.join(d, "model.onnx"))
    probs = []
    for i in range(2):
        img = rng.randint(0, 256, (8, 8)).astype(np.uint8)
        Image.fromarray(img, mode="L").save(os.path.join(d, f"img{i}.png"))
        x = img.astype(np.float64).reshape(1, 64) / 255.0
        logits = x @ w + b
        e = np.exp(logits - logits.max())
        probs.append((e / e.sum())[0])
    np.save(os.path.join(d, "expected_probs.npy"), np.array(probs, dtype=np.float32))


def huge_input():
    d = os.path.join(HERE, "onnx", "huge_input")
    os.makedirs(d, exist_ok=True)
    for name, n, c, h, w in (("wrap", "batch", 3, 1 << 32, 1 << 32),
                             ("tall", "batch", 1, 3000000000, 1), ("batch", 1 << 62, 3, 8, 8)):
        nodes = [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
        ]
        graph = helper.make_graph(
            nodes, name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, c, h, w])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, c])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="nabla tests/data/make_fixtures.py")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save_model(model, os.path.join(d, name + ".onnx"))


if __name__ == "__main__":
    npy_fixtures()
    mlp_external()
    tiny_classifier()
    huge_input()
