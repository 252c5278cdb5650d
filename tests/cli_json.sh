#!/usr/bin/env bash
# `--json` result lines with a hostile output folder: `nabla train` and
# `nabla eval` write into a folder whose name holds a quote, a backslash, a
# newline, a tab and a byte that is not UTF-8. Every result line must be one
# valid JSON object whose paths are the real ones (the stray byte as
# U+FFFD), checked with Python's json module. The tiny text GPT always
# runs; the MNIST CNN (the image path of cmd_train.c) when MNIST is here.
# Skipped (77) without /usr/bin/python3. Usage: cli_json.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
py=/usr/bin/python3
[ -x $py ] || exit 77
. "$(dirname "$0")/cli_lib.sh"
odd=$(printf '%s/run "q" \\b\nn\tt\xff' "$tmp")
mkdir -p "$odd"

# json_check FILE KEY=PATH...: FILE is exactly one JSON object (one line)
# and each KEY holds PATH, as Python reads the bytes (errors=replace).
json_check() {
  $py - "$@" <<'PYEOF'
import json, os, sys
raw = open(sys.argv[1], "rb").read()
assert raw.endswith(b"\n") and raw.count(b"\n") == 1, ("not one line", raw)
obj = json.loads(raw.decode("utf-8"))  # strict: raises on bad escapes or bytes
for kv in sys.argv[2:]:
    k, v = os.fsencode(kv).split(b"=", 1)
    want = v.decode("utf-8", errors="replace")
    got = obj[k.decode()]
    assert got == want, (k, got, want)
PYEOF
}

text=(--data "$root/tests/data/tiny_text.txt")
if "$nabla" train "$root/tests/data/tiny_gpt.cfg" "${text[@]}" --steps 2 --out "$odd/gpt" --json \
  >"$tmp/train.json" 2>"$tmp/train.err"; then
  check "text train --json" json_check "$tmp/train.json" "weights=$odd/gpt/weights.safetensors" \
    "vocab=$odd/gpt/vocab.txt"
else
  bad "text train"
  cat "$tmp/train.err"
fi
if "$nabla" eval "$root/tests/data/tiny_gpt.cfg" "$odd/gpt/weights.safetensors" "${text[@]}" \
  --json >"$tmp/eval.json" 2>"$tmp/eval.err"; then
  check "text eval --json" json_check "$tmp/eval.json" "weights=$odd/gpt/weights.safetensors"
else
  bad "text eval"
  cat "$tmp/eval.err"
fi

mnist=$root/../shared/data/mnist
if [ -f "$mnist/t10k-images-idx3-ubyte.gz" ]; then
  img=(--data "$mnist" --limit 128 --threads 2)
  if "$nabla" train "$root/models/mnist_cnn.cfg" "${img[@]}" --epochs 1 --out "$odd/cnn" --json \
    >"$tmp/train.json" 2>"$tmp/train.err"; then
    check "image train --json" json_check "$tmp/train.json" \
      "weights=$odd/cnn/weights.safetensors"
  else
    bad "image train"
    cat "$tmp/train.err"
  fi
  if "$nabla" eval "$root/models/mnist_cnn.cfg" "$odd/cnn/weights.safetensors" "${img[@]}" \
    --json >"$tmp/eval.json" 2>"$tmp/eval.err"; then
    check "image eval --json" json_check "$tmp/eval.json" "weights=$odd/cnn/weights.safetensors"
  else
    bad "image eval"
    cat "$tmp/eval.err"
  fi
fi
finish
