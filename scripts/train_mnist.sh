#!/usr/bin/env bash
# Sets up nabla and trains the reference MNIST CNN on the CPU:
#   nabla train models/mnist_cnn.cfg --epochs 2
# Data: --data DIR, $NABLA_DATA, ../shared/data/mnist, data/mnist, or else
# downloaded (with checksums) by scripts/download_data.sh.
# Extra arguments go to `nabla train` (see build/release/nabla train --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target nabla
have_data=0
for a in "$@"; do [ "$a" = "--data" ] && have_data=1; done
# the IDX files, gzipped or not, where nabla train looks for them
found() { [ -f "$1/train-images-idx3-ubyte.gz" ] || [ -f "$1/train-images-idx3-ubyte" ]; }
if [ $have_data -eq 0 ] && [ -z "${NABLA_DATA:-}" ] && ! found ../shared/data/mnist &&
  ! found data/mnist; then
  bash scripts/download_data.sh mnist
fi
exec build/release/nabla train models/mnist_cnn.cfg --epochs 2 "$@"
