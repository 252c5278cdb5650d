"""Independent safetensors writer and checker for nabla's tests.

Implements the format from its specification with json + struct + numpy only
(the `safetensors` package is not in Debian), so it shares no code or
assumptions with src/io/safetensors.c:

    u64 little-endian N | N bytes of JSON header | raw little-endian data

    header = {"TENSOR": {"dtype": "F32", "shape": [2, 3],
                         "data_offsets": [BEGIN, END]}, ...,
              "__metadata__": {"key": "value", ...}}   (optional)

Usage (Debian's /usr/bin/python3):
    safetensors_ref.py                 write tests/ref/fixture.safetensors
    safetensors_ref.py --check FILE    validate FILE (e.g. one nabla wrote),
                                       print its tensors; exit 1 if invalid
"""
import json
import os
import struct
import sys

import numpy as np

# dtype name -> (numpy dtype, bytes per element); BF16 is kept as raw u16 bits
DTYPES = {
    "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I32": ("<i4", 4), "I64": ("<i8", 8), "U8": ("u1", 1),
}


def bf16_bits(values):
    """bf16 bit patterns of values that bf16 holds exactly (checked)."""
    bits = np.asarray(values, dtype="<f4").view("<u4")
    if np.any(bits & 0xFFFF):
        raise ValueError("value not exactly representable in bf16")
    return (bits >> 16).astype("<u2")


def fixture_tensors():
    """The fixture's tensors, in DATA order (deliberately not name order)."""
    return [
        ("e.i64", "I64", [3], np.array([1, -2**63, 2**53 + 1], dtype="<i8")),
        ("a.f32", "F32", [2, 3],
         np.array([-1.5, 0.0, 0.25, 3.14159274, 1e-8, -65504.0], dtype="<f4")),
        ("h.empty", "F32", [0, 3], np.zeros((0, 3), dtype="<f4")),
        ("c.bf16", "BF16", [3], bf16_bits([1.0, -0.15625, 256.0])),
        ("b.f16", "F16", [5], np.array([1.0, -2.5, 65504.0, 2.0**-14, 2.0**-24], dtype="<f2")),
        ("f.u8", "U8", [5], np.array([0, 1, 127, 128, 255], dtype="u1")),
        ("g.scalar", "F32", [], np.array(42.0, dtype="<f4")),
        ("d.i32", "I32", [2, 2], np.array([[0, -1], [2**31 - 1, -2**31]], dtype="<i4")),
    ]


def write_fixture(path):
    header, blobs, offset = {}, [], 0
    for name, dtype, shape, array in fixture_tensors():
        blob = np.ascontiguousarray(array, dtype=DTYPES[dtype][0]).tobytes()
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    # JSON key order: reversed name order with the metadata in the middle, so
    # a reader cannot rely on the header being sorted like the data
    names = sorted(header, reverse=True)
    ordered = {k: header[k] for k in names[:4]}
    ordered["__metadata__"] = {"format": "pt", "note": 'fixture "quoted", caf\u00e9'}
    ordered.update({k: header[k] for k in names[4:]})
    text = json.dumps(ordered).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    print(f"wrote {path} ({8 + len(text) + offset} bytes)")


def check(path):
    """Validates a safetensors file per the format; returns a list of problems."""
    problems = []
    data = open(path, "rb").read()
    if len(data) < 8:
        return [f"file is {len(data)} bytes, shorter than the header length"]
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > len(data) - 8:
        return [f"header length {n} exceeds the file"]
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return [f"header is not UTF-8 JSON: {e}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    if (8 + n) % 8:
        problems.append(f"data section starts at {8 + n}, not 8-byte aligned")
    if data[8:8 + n].rstrip(b" ") != data[8:8 + n].rstrip():
        problems.append("header padding is not spaces")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        problems.append("__metadata__ is not a map of strings")
    body = data[8 + n:]
    spans = []
    for name, info in header.items():
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            problems.append(f"{name}: unknown dtype {dtype!r}")
            continue
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            problems.append(f"{name}: bad shape {shape!r}")
            continue
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            problems.append(f"{name}: bad data_offsets {offs!r}")
            continue
        size = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1]
        if offs[1] - offs[0] != size:
            problems.append(f"{name}: data_offsets {offs} span {offs[1] - offs[0]} bytes, "
                            f"{dtype} {shape} needs {size}")
        spans.append((offs[0], offs[1], name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            problems.append(f"{name}: begins at {begin}, previous tensor ends at {pos}")
        pos = max(pos, end)
    if pos != len(body):
        problems.append(f"tensors cover {pos} data bytes, file has {len(body)}")
    if problems:
        return problems
    print(f"{path}: {len(header)} tensors, {len(body)} data bytes, header {n} bytes")
    # nabla's own promise, beyond the format: the header lists the tensors in
    # data order, sorted by element size (largest first) then name, so each
    # tensor is aligned to its element size (the fixture breaks it on purpose)
    nabla_order = sorted(header, key=lambda k: (-DTYPES[header[k]["dtype"]][1], k))
    if list(header) != nabla_order or [s[2] for s in sorted(spans)] != nabla_order:
        print("  note: tensors are not in nabla's order (element size, then name)")
    for name, info in header.items():
        if (8 + n + info["data_offsets"][0]) % DTYPES[info["dtype"]][1]:
            print(f"  note: {name} is not aligned to its element size")
    for k, v in meta.items():
        print(f"  __metadata__ {k} = {v!r}")
    for name, info in header.items():
        b, e = info["data_offsets"]
        a = np.frombuffer(body[b:e], dtype=DTYPES[info["dtype"]][0])
        if info["dtype"] == "BF16":
            a = (a.astype("<u4") << 16).view("<f4")
        with np.errstate(all="ignore"):  # random test bits include NaN and Inf
            summary = f"sum={a.astype(np.float64).sum():.9g}" if a.size else "empty"
        print(f"  {name}: {info['dtype']} {info['shape']} {summary}")
    return []


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        problems = check(sys.argv[2])
        for p in problems:
            print(f"{sys.argv[2]}: {p}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    write_fixture(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture.safetensors"))


if __name__ == "__main__":
    main()
