#!/usr/bin/env bash
# Corrupt or missing inputs to the nabla command line: each must end with a
# non-zero exit (not a crash: no signal) and one clear error line naming
# the file. Usage: cli_errors.sh path/to/nabla repo_root
set -u
nabla=$1
root=$2
. "$(dirname "$0")/cli_lib.sh"

mnist=$root/../shared/data/mnist
mkdir -p "$tmp/mnist" "$tmp/cifar"
printf 'this is not a model\n[conv2d\n' >"$tmp/bad.cfg"
expect_error "missing model file" "nope.cfg" "$nabla" train "$tmp/nope.cfg"
expect_error "corrupt model file" "bad.cfg:1" "$nabla" train "$tmp/bad.cfg"
expect_error "missing data dir" "/nonexistent" "$nabla" train "$root/models/mnist_cnn.cfg" --data /nonexistent
# truncated IDX files
if [ -f "$mnist/t10k-images-idx3-ubyte.gz" ]; then
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    zcat "$mnist/$f.gz" | head -c 20000 >"$tmp/mnist/$f"
  done
  expect_error "truncated IDX" "train-images-idx3-ubyte" "$nabla" train "$root/models/mnist_cnn.cfg" --data "$tmp/mnist"
fi
# truncated CIFAR batch
for i in 1 2 3 4 5; do head -c 3073 /dev/zero >"$tmp/cifar/data_batch_$i.bin"; done
head -c 5000 /dev/zero >"$tmp/cifar/test_batch.bin"
expect_error "truncated CIFAR" "test_batch.bin" "$nabla" eval "$root/models/cifar_cnn.cfg" "$tmp/none.safetensors" --data "$tmp/cifar"
# corrupt weights and checkpoints
printf 'garbage' >"$tmp/w.safetensors"
if [ -f "$mnist/t10k-images-idx3-ubyte.gz" ]; then
  expect_error "corrupt weights" "w.safetensors" "$nabla" eval "$root/models/mnist_cnn.cfg" "$tmp/w.safetensors" --data "$mnist" --limit 100
  expect_error "corrupt checkpoint" "w.safetensors" "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 200 --resume "$tmp/w.safetensors" --out "$tmp/run"
fi
# corrupt image, with real weights from a tiny run
if [ -f "$mnist/t10k-images-idx3-ubyte.gz" ] &&
  "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 128 --epochs 1 \
    --out "$tmp/ok" >/dev/null 2>&1; then
  printf '\x89PNG\r\n\x1a\nbroken' >"$tmp/img.png"
  expect_error "corrupt image" "img.png" "$nabla" predict "$root/models/mnist_cnn.cfg" \
    "$tmp/ok/weights.safetensors" "$tmp/img.png"
fi
# BPE vocabularies: a missing training text, a merge of a later id
expect_error "missing tokenizer text" "nope.txt" "$nabla" tokenizer train "$tmp/nope.txt" --vocab 300 -o "$tmp/v.bpe"
printf 'nabla-bpe 1\nsplit gpt4-bytes\nmerges 1\n300 97\nspecial 0\n' >"$tmp/bad.bpe"
expect_error "corrupt BPE vocabulary" "bad.bpe:4" "$nabla" tokenizer encode "$tmp/bad.bpe" --text hi
# a pipe (no size to check the count against) claiming the largest vocabulary
expect_error "BPE vocabulary pipe claiming 1048320 merges" "file ends after 1 of 1048320 merges" \
  "$nabla" tokenizer encode <(printf 'nabla-bpe 1\nsplit gpt4-bytes\nmerges 1048320\n97 98\n') --text hi
expect_error "unknown option" "--bogus" "$nabla" train "$root/models/mnist_cnn.cfg" --bogus 1
# an unknown last option is named as unknown, not as one lacking a value
expect_error "run: unknown option" "unknown option --bogus" "$nabla" run a.onnx --bogus
expect_error "generate: unknown option" "unknown option --bogus" "$nabla" generate a.cfg w --bogus
expect_error "export: unknown option" "unknown option --bogus" "$nabla" export a.cfg w --bogus
expect_error "run: a batch that is not a number" "--batch expects a number" \
  "$nabla" run "$tmp/m.onnx" --batch "" --output "$tmp/o"
# text models: a missing text, a corrupt checkpoint, a bad GPT section
expect_error "missing text" "/nonexistent" "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data /nonexistent
expect_error "corrupt text checkpoint" "w.safetensors" "$nabla" train "$root/tests/data/tiny_gpt.cfg" \
  --data "$root/tests/data/tiny_text.txt" --resume "$tmp/w.safetensors" --out "$tmp/text"
printf '' >"$tmp/empty.txt"
expect_error "empty text" "empty.txt: the text is empty" "$nabla" train "$root/tests/data/tiny_gpt.cfg" \
  --data "$tmp/empty.txt" --out "$tmp/text"
printf 'nabla-char-vocab 1 0\n' >"$tmp/vocab0.txt"
expect_error "empty vocabulary" "vocab0.txt: the vocabulary is empty" "$nabla" generate \
  "$root/tests/data/tiny_gpt.cfg" "$tmp/none.safetensors" --vocab "$tmp/vocab0.txt"
sed 's/^tie = wte/tie = wtx/' "$root/tests/data/tiny_gpt.cfg" >"$tmp/tie.cfg"
expect_error "tie to a missing layer" "tie.cfg:43: expected 'tie' to name an earlier" "$nabla" train "$tmp/tie.cfg"

finish
