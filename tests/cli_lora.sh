#!/usr/bin/env bash
# LoRA from the command line on the MNIST CNN: a short base run, a LoRA
# fine-tune from its weights (--init-from, adapters on fc1 and fc2), then
# `nabla lora merge`. The merged weights, evaluated without adapters, must
# give the test loss and accuracy that the fine-tune reported with them;
# the fine-tune's base weights must equal the base run's byte for byte; bad
# settings must fail with one clear line. Skipped (77) without MNIST.
# Usage: cli_lora.sh path/to/nabla repo_root
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

"$nabla" train "$model" "${common[@]}" --out "$tmp/base" --json >"$tmp/base.json" 2>/dev/null ||
  { echo "FAIL: base run"; exit 1; }
"$nabla" train "$model" "${common[@]}" --init-from "$tmp/base/weights.safetensors" \
  --lora-rank 4 --lora-alpha 8 --lora-targets fc --out "$tmp/ft" --json \
  >"$tmp/ft.json" 2>"$tmp/ft.err" || { echo "FAIL: LoRA run"; cat "$tmp/ft.err"; exit 1; }
check "reports 7,464 trainable parameters" grep -q "7,464 trainable of 225,034" "$tmp/ft.err"
check "writes the adapter file" test -s "$tmp/ft/lora.safetensors"
"$nabla" lora merge "$model" "$tmp/base/weights.safetensors" "$tmp/ft/lora.safetensors" \
  -o "$tmp/merged.safetensors" >"$tmp/merge.out" || { echo "FAIL: merge"; exit 1; }
check "merge names 2 layers" grep -q "merged 2 adapted layers" "$tmp/merge.out"
"$nabla" eval "$model" "$tmp/merged.safetensors" --data "$mnist" --limit 128 --threads 2 --json \
  >"$tmp/eval.json" 2>/dev/null || { echo "FAIL: eval of the merged weights"; exit 1; }
for k in test_loss test_accuracy; do
  a=$(json_field "$tmp/ft.json" $k)
  b=$(json_field "$tmp/eval.json" $k)
  check "merged $k $b equals the adapted run's $a" \
    awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }'
done
# merging the fine-tune's weights.safetensors (base + adapters) gives the same
# bytes: its base tensors are the base run's, untouched
"$nabla" lora merge "$model" "$tmp/ft/weights.safetensors" "$tmp/ft/lora.safetensors" \
  -o "$tmp/merged2.safetensors" >/dev/null
check "base weights unchanged by the LoRA run" cmp -s "$tmp/merged.safetensors" "$tmp/merged2.safetensors"

expect_error "rank 0" "bad value '0' for --lora-rank" \
  "$nabla" train "$model" "${common[@]}" --lora-rank 0 --lora-targets fc
expect_error "targets matching nothing" "targets 'attn' match no Linear layer (Linear layers: fc1, fc2)" \
  "$nabla" train "$model" "${common[@]}" --lora-rank 4 --lora-targets attn
expect_error "rank above min(in, out)" "fc2: LoRA rank 11 exceeds min(in 128, out 10)" \
  "$nabla" train "$model" "${common[@]}" --lora-rank 11 --lora-targets fc
expect_error "targets without a rank" "needs both --lora-rank" \
  "$nabla" train "$model" "${common[@]}" --lora-targets fc
expect_error "merge with a weights file as adapters" "not a LoRA adapter file" \
  "$nabla" lora merge "$model" "$tmp/base/weights.safetensors" "$tmp/base/weights.safetensors" -o "$tmp/x.safetensors"
expect_error "merge into another model's weights" "do not fit" \
  "$nabla" lora merge "$root/models/lenet5.cfg" "$tmp/base/weights.safetensors" "$tmp/ft/lora.safetensors" -o "$tmp/x.safetensors"
finish
