#!/usr/bin/env bash
# Sets up nabla and trains the reference MNIST CNN on the CPU (2 epochs).
# Data: --data DIR, $NABLA_DATA, ../shared/data/mnist, or downloaded.
# Extra arguments go to the trainer (see build/release/mnist_cnn --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target mnist_cnn
have_data=0
for a in "$@"; do [ "$a" = "--data" ] && have_data=1; done
if [ $have_data -eq 0 ] && [ -z "${NABLA_DATA:-}" ] && \
   [ ! -f ../shared/data/mnist/train-images-idx3-ubyte.gz ] && \
   [ ! -f data/mnist/train-images-idx3-ubyte.gz ]; then
  bash scripts/download_data.sh mnist
fi
if [ $have_data -eq 0 ] && [ -z "${NABLA_DATA:-}" ] && [ -f data/mnist/train-images-idx3-ubyte.gz ]; then
  set -- --data data/mnist "$@"
fi
exec build/release/mnist_cnn --epochs 2 "$@"
