#!/usr/bin/env bash
# ONNX export after training: `nabla train` a few hundred MNIST images for
# one epoch, `nabla export --verify` the weights and the checkpoint (the file
# is read back through nabla's ONNX importer and must predict exactly what
# the model predicts on every test image), and the failures a user meets:
# a missing weights file, a weights file of another model.
# Usage: onnx_export_train.sh NABLA REPO_ROOT. Exit 77 (skipped) without MNIST.
set -euo pipefail
nabla=$1
root=$2
data=${NABLA_DATA:-$root/../shared/data}
if [ ! -d "$data/mnist" ]; then
  echo "skipped: no MNIST under $data"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=$root/models/mnist_cnn.cfg

"$nabla" train "$cfg" --data "$data/mnist" --limit 200 --epochs 1 --out "$tmp/run" >"$tmp/train.log"
out=$("$nabla" export "$cfg" "$tmp/run/weights.safetensors" -o "$tmp/m.onnx" --verify \
  --data "$data/mnist" --limit 200)
echo "$out"
grep -q "identical predictions 200/200" <<<"$out"

# a checkpoint holds optimizer moments too; normalisation and softmax in the file
out=$("$nabla" export "$cfg" "$tmp/run/checkpoint.safetensors" -o "$tmp/p.onnx" --verify \
  --normalize --softmax --data "$data/mnist" --limit 100)
echo "$out"
grep -q "identical predictions 100/100" <<<"$out"

# errors are one line naming the problem, exit status 1
if "$nabla" export "$cfg" "$tmp/missing.safetensors" -o "$tmp/x.onnx" 2>"$tmp/err"; then
  echo "FAIL: a missing weights file was accepted"
  exit 1
fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "missing.safetensors" "$tmp/err"
if "$nabla" export "$root/models/lenet5.cfg" "$tmp/run/weights.safetensors" -o "$tmp/x.onnx" \
  2>"$tmp/err"; then
  echo "FAIL: the weights of another model were accepted"
  exit 1
fi
cat "$tmp/err"
[ "$(wc -l <"$tmp/err")" -eq 1 ]
[ ! -e "$tmp/x.onnx" ]
echo "ok"
