#!/usr/bin/env bash
# `nabla generate` end to end on a tiny GPT model file trained for 3 steps on
# a made-up text: greedy and seeded sampling are reproducible, the output is
# the prompt plus exactly --tokens characters of the vocabulary, weights and
# checkpoint give the same text, and bad prompts, a missing vocabulary and a
# full context without sliding are one-line errors.
# Usage: cli_generate.sh path/to/nabla
set -u
nabla=$1
. "$(dirname "$0")/cli_lib.sh"

cat >"$tmp/tiny.cfg" <<'EOF'
[net]
input = 16
input_dtype = i32
classes = vocab
init = normal_002
[train]
optimizer = adamw
lr = 1e-2
batch = 4
steps = 3
eval_batches = 2
[embedding wte]
vocab = vocab
dim = 16
[positional wpe]
[transformer h]
repeat = 1
heads = 2
causal = 1
[layernorm ln_f]
[linear lm_head]
tie = wte
EOF
words=(the cat sat on a mat and dog ran)
for i in $(seq 600); do printf '%s ' "${words[$((i * 7 % 9))]}"; done >"$tmp/text.txt"
if ! "$nabla" train "$tmp/tiny.cfg" --data "$tmp/text.txt" --out "$tmp/run" --threads 1 \
  >"$tmp/train.log" 2>&1; then
  echo "FAIL: training the tiny model"
  cat "$tmp/train.log"
  exit 1
fi
w=$tmp/run/weights.safetensors
gen() { "$nabla" generate "$tmp/tiny.cfg" "$@" --threads 1; }

gen "$w" --prompt "the " --tokens 40 --temperature 0 >"$tmp/g1" 2>"$tmp/e1"
check "greedy exit status" [ $? -eq 0 ]
gen "$w" --prompt "the " --tokens 40 --temperature 0 >"$tmp/g2" 2>/dev/null
check "greedy is reproducible" cmp -s "$tmp/g1" "$tmp/g2"
check "stderr reports tokens/s" grep -q "40 tokens in .* tokens/s" "$tmp/e1"
# the prompt, 40 characters of the text's alphabet, a newline
check "prompt then 40 characters" [ "$(head -c 4 "$tmp/g1")" = "the " ]
check "output length" [ "$(wc -c <"$tmp/g1")" -eq 45 ]
check "only vocabulary characters" [ -z "$(tr -d 'thecasonmdgr \n' <"$tmp/g1")" ]
gen "$tmp/run/checkpoint.safetensors" --prompt "the " --tokens 40 --temperature 0 \
  >"$tmp/g3" 2>/dev/null
check "the checkpoint gives the weights' text" cmp -s "$tmp/g1" "$tmp/g3"
gen "$w" --prompt "a " --tokens 30 --temperature 1.2 --top-k 5 --seed 7 >"$tmp/s1" 2>/dev/null
gen "$w" --prompt "a " --tokens 30 --temperature 1.2 --top-k 5 --seed 7 >"$tmp/s2" 2>/dev/null
check "seeded sampling is reproducible" cmp -s "$tmp/s1" "$tmp/s2"

expect_error "character outside the vocabulary" "'Z' at position 2" gen "$w" --prompt "a Z"
expect_error "missing vocabulary" "nope/vocab.txt" gen "$tmp/nope/weights.safetensors"
expect_error "full context without sliding" "context of 16 positions is full .*without --no-slide" gen "$w" \
  --prompt "the " --tokens 30 --no-slide
expect_error "default prompt (a newline) outside the vocabulary" "byte 0x0a at position 0" gen "$w"
expect_error "bad number" "--temperature" gen "$w" --temperature hot
finish
