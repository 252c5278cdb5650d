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
  # a checkpoint that already holds every epoch asked for: not a result of zeros
  expect_error "resume with nothing left to train" "has trained 1 epochs already, the run asks for 1" \
    "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 128 --epochs 1 \
    --resume "$tmp/ok/checkpoint.safetensors" --out "$tmp/ok2"
  # a learning rate that blows the weights up: stop, keep the checkpoint
  cp "$tmp/ok/checkpoint.safetensors" "$tmp/ok/keep.safetensors"
  expect_error "diverging run" "training diverged: the loss is .*nan at epoch 1, batch 2; the last checkpoint is left" \
    "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 128 --epochs 1 --lr 1e30 \
    --out "$tmp/ok"
  check "the checkpoint of a diverged run is untouched" cmp -s "$tmp/ok/checkpoint.safetensors" "$tmp/ok/keep.safetensors"
  # another batch size would continue with another data order
  expect_error "resume with another batch" "trained with batches of 64 examples, this run asks for 32; give --batch 64" \
    "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 128 --epochs 2 --batch 32 \
    --resume "$tmp/ok/checkpoint.safetensors" --out "$tmp/ok2"
  # another optimizer: its moments are not in the checkpoint (the path said once)
  expect_error "resume with another optimizer" "^nabla train: resume from [^:]*checkpoint.safetensors: tensor .*(resume with the model file, optimizer" \
    "$nabla" train "$root/models/mnist_cnn.cfg" --data "$mnist" --limit 128 --epochs 2 --optimizer sgd \
    --resume "$tmp/ok/checkpoint.safetensors" --out "$tmp/ok2"
fi
if [ -f "$mnist/t10k-images-idx3-ubyte.gz" ]; then
  # a model whose input is not the data's examples, even with as many values
  printf '[net]\ninput = 1, 14, 56\nclasses = 10\n[flatten]\n[linear fc]\nout = 10\n' >"$tmp/wide.cfg"
  expect_error "input shape is not the data's" "input is \[1, 14, 56\] but mnist examples are \[1, 28, 28\]" \
    "$nabla" train "$tmp/wide.cfg" --dataset mnist --data "$mnist" --limit 128 --out "$tmp/wide"
  # logits of rank 4 (no [flatten]) are named before cross_entropy sees them
  printf '[net]\ninput = 1, 28, 28\nclasses = 10\n[linear fc]\nout = 10\n' >"$tmp/noflat.cfg"
  expect_error "classifier output not [batch, classes]" "outputs \[64, 1, 28, 10\].*\[flatten\]" \
    "$nabla" train "$tmp/noflat.cfg" --data "$mnist" --limit 128 --out "$tmp/noflat"
fi
# BPE vocabularies: a missing training text, a merge of a later id
expect_error "missing tokenizer text" "nope.txt" "$nabla" tokenizer train "$tmp/nope.txt" --vocab 300 -o "$tmp/v.bpe"
printf 'nabla-bpe 1\nsplit gpt4-bytes\nmerges 1\n300 97\nspecial 0\n' >"$tmp/bad.bpe"
expect_error "corrupt BPE vocabulary" "bad.bpe:4" "$nabla" tokenizer encode "$tmp/bad.bpe" --text hi
# a pipe (no size to check the count against) claiming the largest vocabulary
expect_error "BPE vocabulary pipe claiming 1048320 merges" "file ends after 1 of 1048320 merges" \
  "$nabla" tokenizer encode <(printf 'nabla-bpe 1\nsplit gpt4-bytes\nmerges 1048320\n97 98\n') --text hi
expect_error "unknown option" "--bogus" "$nabla" train "$root/models/mnist_cnn.cfg" --bogus 1
# an empty number would read as 0 ("the recipe's"), NaN as no --lr at all
expect_error "empty number" "--epochs expects a number, got ''" "$nabla" train "$root/models/mnist_cnn.cfg" --epochs ""
expect_error "NaN learning rate" "--lr expects a number, got 'nan'" "$nabla" train "$root/models/mnist_cnn.cfg" --lr nan
expect_error "a range error names its flag" "nabla predict: --top-k must be >= 1" \
  "$nabla" predict a.cfg w.safetensors x.png --top-k 0
expect_error "a count past int" "nabla train: --epochs is out of range, got '99999999999'" \
  "$nabla" train a.cfg --epochs 99999999999
expect_error "a flag of another command" "nabla train: unknown option --top-k" \
  "$nabla" train a.cfg --top-k 3
expect_error "--limit on a text model" "--limit applies to image models; .*tiny_gpt.cfg is a text model" \
  "$nabla" eval "$root/tests/data/tiny_gpt.cfg" w.safetensors --data "$root/tests/data/tiny_text.txt" --limit 5
# a flag the model's kind ignores is an error, not silently dropped
expect_error "--steps on an image model" "--steps and --eval-every apply to text models" \
  "$nabla" train "$root/models/mnist_cnn.cfg" --steps 5
expect_error "--epochs on a text model" "--epochs and --limit apply to image models" \
  "$nabla" train "$root/tests/data/tiny_gpt.cfg" --epochs 1
expect_error "unknown dataset" "unknown dataset 'foo' (expected mnist" \
  "$nabla" train "$root/models/mnist_cnn.cfg" --dataset foo
expect_error "predict ONNX: unknown option" "unknown option --bogus" "$nabla" predict a.onnx x.png --bogus
expect_error "run: no --output" "--output DIR is needed" "$nabla" run a.onnx --input x=x.npy
expect_error "run: a model file" "is a model file, not an ONNX model; write one with nabla export" \
  "$nabla" run "$root/models/mnist_cnn.cfg" --info
mkdir -p "$tmp/nocases"
expect_error "onnx-test: a folder without cases" "nocases: not a test case or a folder of them" \
  "$nabla" onnx-test "$tmp/nocases"
expect_error "onnx-test: a bad --min-pass" "--min-pass expects a number" "$nabla" onnx-test "$tmp/nocases" --min-pass x
# an unknown last option is named as unknown, not as one lacking a value
expect_error "run: unknown option" "unknown option --bogus" "$nabla" run a.onnx --bogus
expect_error "generate: unknown option" "unknown option --bogus" "$nabla" generate a.cfg w --bogus
expect_error "export: unknown option" "unknown option --bogus" "$nabla" export a.cfg w --bogus
expect_error "run: a batch that is not a number" "--batch expects a number" \
  "$nabla" run "$tmp/m.onnx" --batch "" --output "$tmp/o"
# text models: a missing text, a corrupt checkpoint, a bad GPT section
expect_error "missing text" "/nonexistent: no such file or folder (--data takes a text file" \
  "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data /nonexistent
expect_error "corrupt text checkpoint" "w.safetensors" "$nabla" train "$root/tests/data/tiny_gpt.cfg" \
  --data "$root/tests/data/tiny_text.txt" --resume "$tmp/w.safetensors" --out "$tmp/text"
if "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data "$root/tests/data/tiny_text.txt" --steps 2 \
  --out "$tmp/text_ok" >/dev/null 2>&1; then
  expect_error "text resume with another batch" "trained with batches of 4 windows, this run asks for 2" \
    "$nabla" train "$root/tests/data/tiny_gpt.cfg" --data "$root/tests/data/tiny_text.txt" --steps 4 \
    --batch 2 --resume "$tmp/text_ok/checkpoint.safetensors" --out "$tmp/text_ok2"
else
  bad "tiny GPT training for the resume checks"
fi
printf '' >"$tmp/empty.txt"
expect_error "empty text" "empty.txt: the text is empty" "$nabla" train "$root/tests/data/tiny_gpt.cfg" \
  --data "$tmp/empty.txt" --out "$tmp/text"
printf 'nabla-char-vocab 1 0\n' >"$tmp/vocab0.txt"
expect_error "empty vocabulary" "vocab0.txt: the vocabulary is empty" "$nabla" generate \
  "$root/tests/data/tiny_gpt.cfg" "$tmp/none.safetensors" --vocab "$tmp/vocab0.txt"
sed 's/^tie = wte/tie = wtx/' "$root/tests/data/tiny_gpt.cfg" >"$tmp/tie.cfg"
expect_error "tie to a missing layer" "tie.cfg:43: expected 'tie' to name an earlier" "$nabla" train "$tmp/tie.cfg"

finish
