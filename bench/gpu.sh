#!/usr/bin/env bash
# nabla against PyTorch on one GPU, in one command: training images/s of the
# reference MNIST CNN and the small CIFAR CNN at batch 64 and 512 in fp32,
# tf32 and bf16, nabla and PyTorch eager side by side, as a Markdown table.
# See bench/README.md ("GPU"). Needs a CUDA build of nabla (bench_models) and
# a python3 whose torch sees the GPU; nothing is built here.
#   bench/gpu.sh                          # build-gpu; about 2.5 minutes on an H100
#   NABLA_BUILD=path/to/build bench/gpu.sh    (or --build DIR)
#   bench/gpu.sh --precisions fp32 --batches 64 --compile
# NABLA_BENCH_PYTHON picks the interpreter (default python3). The raw JSON
# records and the table go to $OUT when it is set, else BUILD/results/.
# Exit status: 0 done, 1 no GPU / no build / a run failed, 2 bad arguments.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${NABLA_BENCH_PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "bench/gpu.sh: no $python (set NABLA_BENCH_PYTHON)" >&2
  exit 1
fi
exec "$python" "$root/bench/gpu.py" --python "$python" "$@"
