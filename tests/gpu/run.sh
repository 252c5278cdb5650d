#!/usr/bin/env bash
# Builds nabla with CUDA and runs every GPU check in one go: the GPU-labelled
# ctest suites (skipped without a GPU), then the whole suite on this build.
# Usage (from the repository root, on a machine with an NVIDIA GPU):
#   tests/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/deps.sh
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
cmake -S . -B build/cuda -DCMAKE_BUILD_TYPE=Release -DNABLA_CUDA=ON >/dev/null
cmake --build build/cuda -j"$(nproc)"
echo "== GPU tests"
(cd build/cuda && ctest -L gpu --output-on-failure)
echo "== full suite on the CUDA build"
(cd build/cuda && ctest -j"$(nproc)" --output-on-failure)
