#!/usr/bin/env bash
# `nabla run` and `nabla predict MODEL.onnx` on the fixtures of
# tests/data/onnx (written by tests/data/make_fixtures.py): outputs and their
# file names, batching that gives the same bytes, predictions that match
# numpy's, and bad inputs that end in one error line (exit 1 or 2, never a
# signal). Values are also compared with numpy's when /usr/bin/python3 has
# numpy. Usage: cli_onnx_run.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
data=$root/tests/data
mlp=$data/onnx/mlp_external
tiny=$data/onnx/tiny_classifier
. "$(dirname "$0")/cli_lib.sh"

# --info lists inputs with symbolic dims and outputs
if "$nabla" run "$mlp/model.onnx" --info >"$tmp/info" 2>&1 &&
  grep -q "x  *float  *\[?, 3\]" "$tmp/info" && grep -q "logits:0/raw" "$tmp/info" &&
  grep -q "every op has an importer" "$tmp/info"; then ok; else
  bad "--info"
  cat "$tmp/info"
fi

# a run: one file per output, unsafe characters replaced, a numpy header
if "$nabla" run "$mlp/model.onnx" --input "x=$mlp/x.npy" --output "$tmp/o1" >"$tmp/log" 2>&1 &&
  [ -f "$tmp/o1/probs.npy" ] && [ -f "$tmp/o1/logits_0_raw.npy" ] &&
  head -c 80 "$tmp/o1/probs.npy" | grep -q "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }"; then ok; else
  bad "run"
  cat "$tmp/log"
fi

# batches of 2 over 5 rows (one plan for the two full batches, one for the
# last row): the same numbers as one run over all rows (up to the rounding
# of a GEMM of another size), joined in order
"$nabla" run "$mlp/model.onnx" --input "x=$mlp/x5.npy" --output "$tmp/o5" >/dev/null 2>&1
if "$nabla" run "$mlp/model.onnx" --input "x=$mlp/x5.npy" --output "$tmp/o5b" --batch 2 >"$tmp/log" 2>&1 &&
  grep -q "^3 batches" "$tmp/log" &&
  head -c 80 "$tmp/o5b/probs.npy" | grep -q "'shape': (5, 4), }"; then ok; else
  bad "run --batch 2"
  cat "$tmp/log"
fi

# values against numpy's, when numpy is at hand
py=/usr/bin/python3
if [ -x $py ] && $py -c "import numpy" 2>/dev/null; then
  if $py - "$tmp" "$mlp" <<'EOF'; then ok; else bad "run values differ from numpy's"; fi
import sys
import numpy as np
tmp, ref = sys.argv[1], sys.argv[2]
for got, want in (("probs", "probs"), ("logits_0_raw", "logits")):
    a, b = np.load(f"{tmp}/o1/{got}.npy"), np.load(f"{ref}/{want}.npy")
    assert a.dtype == np.float32 and a.shape == b.shape, (got, a.dtype, a.shape)
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6), (got, np.abs(a - b).max())
    a, b = np.load(f"{tmp}/o5/{got}.npy"), np.load(f"{tmp}/o5b/{got}.npy")
    assert a.shape == (5, 4) and np.allclose(a, b, rtol=1e-6, atol=1e-7), (got, np.abs(a - b).max())
EOF
fi

# predict: the classes and probabilities numpy computed (expected_probs.npy:
# [0.7463, 0.0573, 0.1964] and [0.9862, 0.0123, 0.0015]), the same with a
# batch of 2 over 3 images (the last batch padded)
"$nabla" predict "$tiny/model.onnx" "$tiny/img0.png" "$tiny/img1.png" "$tiny/img0.png" --batch 2 >"$tmp/pred" 2>&1
if grep -q "img0.png:  0 (0.7463)  2 (0.1964)  1 (0.0573)" "$tmp/pred" &&
  grep -q "img1.png:  0 (0.9862)  1 (0.0123)  2 (0.0015)" "$tmp/pred" &&
  [ "$(grep -c "img0.png:  0 (0.7463)" "$tmp/pred")" -eq 2 ]; then ok; else
  bad "predict"
  cat "$tmp/pred"
fi

# bad inputs: one line each
printf 'not npy' >"$tmp/bad.npy"
printf 'garbage\x08\xff' >"$tmp/bad.onnx"
expect_error "missing input" "input 'x' is not given" "$nabla" run "$mlp/model.onnx" --output "$tmp/e"
expect_error "unknown input" "no input 'y'" "$nabla" run "$mlp/model.onnx" --input "y=$mlp/x.npy" --output "$tmp/e"
expect_error "wrong shape" "does not fit input 'x'" "$nabla" run "$mlp/model.onnx" --input "x=$data/npy/f4.npy" --output "$tmp/e"
expect_error "wrong dtype" "holds <i8 values" "$nabla" run "$mlp/model.onnx" --input "x=$data/npy/i8.npy" --output "$tmp/e"
expect_error "fortran order" "Fortran order" "$nabla" run "$mlp/model.onnx" --input "x=$data/npy/fortran.npy" --output "$tmp/e"
expect_error "corrupt npy" "bad.npy" "$nabla" run "$mlp/model.onnx" --input "x=$tmp/bad.npy" --output "$tmp/e"
expect_error "corrupt model" "bad.onnx" "$nabla" run "$tmp/bad.onnx" --info
expect_error "bad --input" "NAME=FILE.npy" "$nabla" run "$mlp/model.onnx" --input x --output "$tmp/e"
expect_error "predict: not an image model" "must be float \[N, C, H, W\]" "$nabla" predict "$mlp/model.onnx" "$tiny/img0.png"
expect_error "predict: corrupt image" "bad.npy" "$nabla" predict "$tiny/model.onnx" "$tmp/bad.npy"
# a NaN mean is refused; a tiny std overflows the pixels to inf, and the
# logits become NaN: an error, not a read before the probabilities
expect_error "predict: NaN mean" "--mean expects" "$nabla" predict "$tiny/model.onnx" "$tiny/img0.png" --mean nan
expect_error "predict: NaN logits" "holds NaN or inf" "$nabla" predict "$tiny/model.onnx" "$tiny/img0.png" --std 1e-45
# input sizes whose products overflow (make_fixtures.py's huge_input): one
# line naming the shape, before anything is sized by them
huge=$data/onnx/huge_input
expect_error "predict: H x W past int64" "input 'image' of \[1, 3, 4294967296, 4294967296\] is too large" \
  "$nabla" predict "$huge/wrap.onnx" "$tiny/img0.png"
expect_error "predict: H past an int" "input 'image' of \[1, 1, 3000000000, 1\] is too large" \
  "$nabla" predict "$huge/tall.onnx" "$tiny/img0.png"
expect_error "predict: N x C x H x W past int64" "\[4611686018427387904, 3, 8, 8\] is too large" \
  "$nabla" predict "$huge/batch.onnx" "$tiny/img0.png"

finish
