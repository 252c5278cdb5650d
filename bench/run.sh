#!/usr/bin/env bash
# One command for the nabla vs PyTorch comparison: builds nabla in Release in
# build/bench, then runs every case side by side and prints a Markdown table.
# See bench/README.md. Extra arguments go to bench/run.py, e.g.
#   bench/run.sh --quick              # smoke test, about a minute
#   bench/run.sh --cases mnist_train --rounds 5
#   bench/run.sh --threads 1
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${NABLA_BENCH_BUILD:-$root/build/bench}"
python="${NABLA_BENCH_PYTHON:-/usr/bin/python3}"

if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
  echo "bench/run.sh: $python cannot import torch and numpy (Debian: apt-get install python3-torch)" >&2
  exit 1
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DNABLA_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_models >/dev/null

mkdir -p "$build/results"
stamp="$(date +%Y%m%d-%H%M%S)"
echo "bench/run.sh: raw records in $build/results/$stamp.jsonl" >&2
"$python" "$root/bench/run.py" --bin "$build/bench/bench_models" --python "$python" \
  --json "$build/results/$stamp.jsonl" "$@" | tee "$build/results/$stamp.md"
