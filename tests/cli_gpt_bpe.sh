#!/usr/bin/env bash
# A GPT on byte-level BPE tokens end to end: `nabla train` on a model file
# with [net] tokenizer = bpe learns a 300-token vocabulary from the training
# text, trains on its ids (the loss falls well below ln 300) and saves
# vocab.bpe beside the weights; the saved vocabulary round-trips the text;
# `nabla eval` and `nabla generate` use it (greedy output reproducible, a
# prefix of a longer run, multi-byte prompt characters kept); a corrupt or
# missing vocabulary is a one-line error; --tokenizer-vocab learns another
# size. (tests/test_gpt_bpe.c checks the
# cached decoding against full recomputation.)
# Usage: cli_gpt_bpe.sh path/to/nabla path/to/source
set -u
nabla=$1
src=$2
. "$(dirname "$0")/cli_lib.sh"

cat >"$tmp/tiny.cfg" <<'EOF'
[net]
input = 16
input_dtype = i32
classes = vocab
init = normal_002
tokenizer = bpe
tokenizer_vocab = 300
[train]
optimizer = adamw
lr = 1e-2
batch = 8
steps = 30
eval_every = 30
eval_batches = 4
[embedding wte]
vocab = vocab
dim = 16
[positional wpe]
[transformer h]
repeat = 1
heads = 2
[layernorm ln_f]
[linear lm_head]
tie = wte
EOF
text=$src/tests/data/tiny_text.txt
if ! "$nabla" train "$tmp/tiny.cfg" --data "$text" --out "$tmp/run" --threads 1 --json \
  >"$tmp/train.json" 2>"$tmp/train.log"; then
  echo "FAIL: training the tiny BPE model"
  cat "$tmp/train.log"
  exit 1
fi
cat "$tmp/train.json"
num() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$tmp/train.json"; }
check "vocabulary of 300" [ "$(num vocab_size)" = 300 ]
check "val loss well below ln 300 = 5.70" awk -v l="$(num val_loss)" 'BEGIN { exit !(l > 0 && l < 5.2) }'
check "more than a byte per token" awk -v b="$(num bytes_per_token)" 'BEGIN { exit !(b > 1.2) }'
check "log reports BPE tokens" grep -q "3000 bytes, [0-9]* BPE tokens" "$tmp/train.log"
v=$tmp/run/vocab.bpe
check "vocab.bpe beside the weights" [ -f "$v" ]
check "no vocab.txt" [ ! -e "$tmp/run/vocab.txt" ]

# the saved vocabulary round-trips the training text
ids=$("$nabla" tokenizer encode "$v" --file "$text" | head -1)
"$nabla" tokenizer decode "$v" $ids >"$tmp/decoded"
check "vocab.bpe round-trips the text" cmp -s "$tmp/decoded" "$text"

"$nabla" eval "$tmp/tiny.cfg" "$tmp/run/weights.safetensors" --data "$text" >"$tmp/eval" 2>&1
check "eval with the saved vocabulary" grep -q "vocabulary 300): loss [0-9.]* nats per token" \
  "$tmp/eval"

w=$tmp/run/weights.safetensors
gen() { "$nabla" generate "$tmp/tiny.cfg" "$@" --threads 1; }
gen "$w" --prompt "First Citizen:" --tokens 12 --temperature 0 >"$tmp/g1" 2>"$tmp/e1"
check "greedy exit status" [ $? -eq 0 ]
gen "$w" --prompt "First Citizen:" --tokens 12 --temperature 0 >"$tmp/g2" 2>/dev/null
check "greedy is reproducible" cmp -s "$tmp/g1" "$tmp/g2"
check "stderr reports 12 tokens" grep -q "^12 tokens in .* tokens/s" "$tmp/e1"
check "output starts with the prompt" [ "$(head -c 14 "$tmp/g1")" = "First Citizen:" ]
# 12 BPE tokens hold at least 12 bytes, and the 6 first are a prefix of them
check "12 tokens, 12 bytes or more" [ "$(wc -c <"$tmp/g1")" -ge 27 ]
gen "$w" --prompt "First Citizen:" --tokens 6 --temperature 0 2>/dev/null | head -c -1 >"$tmp/g6"
check "6 tokens are a prefix of 12" cmp -s "$tmp/g6" <(head -c "$(wc -c <"$tmp/g6")" "$tmp/g1")
# any bytes work with BPE: a 2-byte UTF-8 character comes out unchanged
gen "$w" --prompt "caf$(printf '\303\251')" --tokens 3 --temperature 0 >"$tmp/g3" 2>/dev/null
check "UTF-8 prompt" [ "$(head -c 5 "$tmp/g3" | od -An -tx1 | tr -d ' \n')" = 636166c3a9 ]

echo "not a vocabulary" >"$tmp/bad.bpe"
expect_error "corrupt --vocab" "bad.bpe:1: not a nabla BPE vocabulary" gen "$w" --vocab "$tmp/bad.bpe"
expect_error "missing vocabulary" "nope/vocab.bpe" gen "$tmp/nope/weights.safetensors"
mkdir -p "$tmp/w2"
cp "$w" "$tmp/w2/weights.safetensors"
cp "$tmp/bad.bpe" "$tmp/w2/vocab.bpe"
expect_error "eval with a corrupt vocab.bpe" "vocab.bpe:1: not a nabla BPE vocabulary" \
  "$nabla" eval "$tmp/tiny.cfg" "$tmp/w2/weights.safetensors" --data "$text"
sed 's|^tokenizer_vocab = 300|tokenizer_file = '"$tmp"'/none.bpe|' "$tmp/tiny.cfg" >"$tmp/file.cfg"
expect_error "missing tokenizer_file" "none.bpe: cannot open.*tokenizer_file" \
  "$nabla" train "$tmp/file.cfg" --data "$text" --out "$tmp/run2" --steps 1
# a vocabulary named by the model file is used as is
sed 's|^tokenizer_vocab = 300|tokenizer_file = '"$v"'|' "$tmp/tiny.cfg" >"$tmp/file.cfg"
"$nabla" train "$tmp/file.cfg" --data "$text" --out "$tmp/run3" --steps 1 --threads 1 \
  >/dev/null 2>&1
check "tokenizer_file copied beside the weights" cmp -s "$v" "$tmp/run3/vocab.bpe"
# --tokenizer-vocab learns another size, also over a tokenizer_file
"$nabla" train "$tmp/file.cfg" --data "$text" --out "$tmp/run4" --steps 1 --threads 1 --json \
  --tokenizer-vocab 280 >"$tmp/run4.json" 2>/dev/null
check "--tokenizer-vocab 280" grep -q '"vocab_size": 280' "$tmp/run4.json"
differs() { ! cmp -s "$1" "$2"; }
check "--tokenizer-vocab writes its own vocab.bpe" differs "$v" "$tmp/run4/vocab.bpe"
expect_error "--tokenizer-vocab below 256" "--tokenizer-vocab 100 is too small" \
  "$nabla" train "$tmp/tiny.cfg" --data "$text" --out "$tmp/run5" --tokenizer-vocab 100
expect_error "--tokenizer-vocab on a char model" "needs a text model with \[net\] tokenizer = bpe (this one reads characters)" \
  "$nabla" train "$src/tests/data/tiny_gpt.cfg" --data "$text" --out "$tmp/run6" \
  --tokenizer-vocab 300
expect_error "--tokenizer-vocab on an image model" "tokenizer = bpe (this is not a text model)" \
  "$nabla" train "$src/models/mnist_cnn.cfg" --tokenizer-vocab 300
finish
