#!/usr/bin/env bash
# `NABLA_DIST=self nabla train --distributed`: one process whose training
# step still averages its gradients through the allreduce ops (NB_DIST_SELF;
# on a GPU the NCCL path, tests/gpu/run.sh) must train exactly like plain
# `nabla train`: the same losses and accuracy, the same weights file byte
# for byte. Without the variable, --distributed without a launcher stays a
# one-line error that names it. Skipped (77) without MNIST.
# Usage: cli_dist_self.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
mnist=$root/../shared/data/mnist
[ -f "$mnist/t10k-images-idx3-ubyte.gz" ] || exit 77
. "$(dirname "$0")/cli_lib.sh"
model=$root/models/lenet5.cfg
common=(--data "$mnist" --limit 256 --batch 32 --epochs 1 --threads 1 --json)
# the numbers of a --json line, without the speed and the file names
numbers() {
  sed -E 's/"images_per_sec": [0-9.e+-]+//; s/"(checkpoint|weights)": "[^"]*"//g' "$1"
}

"$nabla" train "$model" "${common[@]}" --out "$tmp/plain" >"$tmp/plain.json" 2>"$tmp/plain.err" ||
  { echo "FAIL: plain run"; cat "$tmp/plain.err"; exit 1; }
NABLA_DIST=self "$nabla" train "$model" "${common[@]}" --distributed --out "$tmp/self" \
  >"$tmp/self.json" 2>"$tmp/self.err" || { echo "FAIL: NABLA_DIST=self run"; cat "$tmp/self.err"; exit 1; }
check "says the gradients are averaged in the step" \
  grep -q "1 process (NABLA_DIST=self: gradients averaged in the step)" "$tmp/self.err"
check "same losses and accuracy" diff <(numbers "$tmp/plain.json") <(numbers "$tmp/self.json")
check "same weights, byte for byte" cmp "$tmp/plain/weights.safetensors" "$tmp/self/weights.safetensors"
expect_error "--distributed without a launcher names NABLA_DIST=self" \
  "distributed training needs.*NABLA_DIST=self runs one process" \
  env -u NABLA_DIST "$nabla" train "$model" --data "$mnist" --limit 64 --distributed
finish
