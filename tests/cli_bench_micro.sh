#!/usr/bin/env bash
# `nabla bench` options and micro-batches from the command line: a training
# step of 64 in 4 micro-batches (gradient accumulation, 1F1B) plans about
# the memory of one step of 16, not of 64; the thread count follows
# OMP_NUM_THREADS; bad values fail with one line; a text model trains in
# micro-batches. Usage: cli_bench_micro.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
. "$(dirname "$0")/cli_lib.sh"
model=$root/models/mnist_cnn.cfg
quick=(--windows 1 --steps 1 --threads 1)

arena() { # arena FILE: the training step's arena in MiB
  sed -n 's/^training .* arena \([0-9.]*\) MiB.*/\1/p' "$1"
}
"$nabla" bench "$model" --batch 16 "${quick[@]}" >"$tmp/b16" 2>&1 || bad "bench batch 16"
"$nabla" bench "$model" --batch 64 "${quick[@]}" >"$tmp/b64" 2>&1 || bad "bench batch 64"
"$nabla" bench "$model" --batch 64 --micro-batches 4 "${quick[@]}" >"$tmp/m4" 2>&1 ||
  bad "bench --micro-batches 4"
"$nabla" bench "$model" --batch 64 --micro-batches 4 --schedule gpipe "${quick[@]}" >"$tmp/g4" 2>&1 ||
  bad "bench --schedule gpipe"
a16=$(arena "$tmp/b16") a64=$(arena "$tmp/b64") m4=$(arena "$tmp/m4") g4=$(arena "$tmp/g4")
echo "training arenas (MiB): batch 16 $a16, batch 64 $a64, 4 x 16 1f1b $m4, gpipe $g4"
# one micro-batch's arena (plus each one's loss, kept apart) instead of four
check "4 micro-batches of 16 plan like a batch of 16" \
  awk -v m="$m4" -v a="$a16" -v b="$a64" 'BEGIN { exit !(m != "" && m <= 1.1 * a && m < 0.5 * b) }'
check "one device: the schedules plan the same memory" test "$m4" = "$g4"
check "the header names the schedule" grep -q "batch 64 (1f1b micro-batches)" "$tmp/m4"

OMP_NUM_THREADS=1 "$nabla" bench "$model" --batch 8 --windows 1 --steps 1 >"$tmp/omp" 2>&1
check "OMP_NUM_THREADS sets the default thread count" grep -q " 1 threads," "$tmp/omp"

expect_error "micro-batches that do not divide the batch" "does not divide the batch of 64" \
  "$nabla" bench "$model" --batch 64 --micro-batches 3 "${quick[@]}"
expect_error "unknown schedule" "takes 1f1b or gpipe" \
  "$nabla" bench "$model" --schedule fifo "${quick[@]}"
expect_error "a batch that is not a number" "--batch expects a whole number >= 0, got 'abc'" \
  "$nabla" bench "$model" --batch abc "${quick[@]}"
expect_error "no windows" "--windows expects a whole number >= 1, got '0'" \
  "$nabla" bench "$model" --threads 1 --windows 0

# a text model in micro-batches: gradient accumulation and a pipeline
for args in "--micro-batches 2" "--micro-batches 2 --place h=cpu:1 --device-threads 1"; do
  # shellcheck disable=SC2086
  "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data "$root/tests/data/tiny_text.txt" --steps 2 \
    --threads 1 $args --out "$tmp/text" >"$tmp/text.log" 2>&1 || { bad "text model $args"; cat "$tmp/text.log"; }
  check "text model $args: the log says so" grep -q "in 2 micro-batches" "$tmp/text.log"
done
expect_error "text batch that does not split" "does not split into 3 equal micro-batches" \
  "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data "$root/tests/data/tiny_text.txt" --steps 2 \
  --threads 1 --micro-batches 3 --out "$tmp/text3"

finish
