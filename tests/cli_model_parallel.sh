#!/usr/bin/env bash
# Model parallelism from the command line on the MNIST CNN: `nabla train
# --place` over cpu:0 and cpu:1, without and with micro-batches, must end
# with the one-device run's test loss (within 1e-5) and accuracy; bad
# placements fail with one clear line. Skipped (77) without MNIST.
# Usage: cli_model_parallel.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
mnist=$root/../shared/data/mnist
[ -f "$mnist/t10k-images-idx3-ubyte.gz" ] || exit 77
. "$(dirname "$0")/cli_lib.sh"
model=$root/models/mnist_cnn.cfg
common=(--data "$mnist" --limit 128 --epochs 1 --threads 2)
json_field() { # json_field FILE KEY
  sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" "$1"
}
close() { # close A B: |A - B| <= 1e-5 |B|
  awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b
    exit !(a != "" && b != "" && d <= 1e-5 * m) }'
}

"$nabla" train "$model" "${common[@]}" --out "$tmp/one" --json >"$tmp/one.json" 2>/dev/null ||
  { echo "FAIL: one-device run"; exit 1; }
runs=("--place fc1=cpu:1" "--place conv2=cpu:1,fc1=cpu:0 --micro-batches 4"
  "--place fc1=cpu:1 --micro-batches 2 --device-threads 1")
for i in 0 1 2; do
  # shellcheck disable=SC2086
  "$nabla" train "$model" "${common[@]}" ${runs[$i]} --out "$tmp/mp$i" --json \
    >"$tmp/mp$i.json" 2>"$tmp/mp$i.err" || { echo "FAIL: ${runs[$i]}"; cat "$tmp/mp$i.err"; exit 1; }
  check "${runs[$i]}: says where the layers run" grep -q "layers also on cpu:1" "$tmp/mp$i.err"
  for k in test_loss train_loss test_accuracy; do
    a=$(json_field "$tmp/mp$i.json" $k)
    b=$(json_field "$tmp/one.json" $k)
    check "${runs[$i]}: $k $a equals one device's $b" close "$a" "$b"
  done
done
check "the micro-batch count is printed" grep -q "4 micro-batches per batch" "$tmp/mp1.err"

expect_error "an unknown layer" "has no layer 'conv9' (layers: conv1, layer2, conv2" \
  "$nabla" train "$model" "${common[@]}" --place conv9=cpu:1
expect_error "an unknown device" "placement of layer 'fc1': unknown device 'tpu:0'" \
  "$nabla" train "$model" "${common[@]}" --place fc1=tpu:0
expect_error "a bad list" "expected LAYER=DEVICE pairs" \
  "$nabla" train "$model" "${common[@]}" --place fc1
expect_error "an unavailable device" "cuda:1" \
  "$nabla" train "$model" "${common[@]}" --place fc1=cuda:1
expect_error "micro-batches that do not divide the batch" \
  "does not split into 3 equal micro-batches; use micro-batches that divide it (2 or 4)" \
  "$nabla" train "$model" "${common[@]}" --place fc1=cpu:1 --micro-batches 3
expect_error "a layer placed twice" "layer 'fc1' is placed twice" \
  "$nabla" train "$model" "${common[@]}" --place fc1=cpu:1,fc1=cpu:2
finish
