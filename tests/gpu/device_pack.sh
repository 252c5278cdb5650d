#!/usr/bin/env bash
# Prepares a GPU check on a machine that cannot build nabla itself (no -dev
# packages, no network; e.g. a GPU machine that receives a copy of this
# working tree): builds the CUDA backend HERE, packs the binaries and the
# libraries they need (pack_prebuilt.sh) and the datasets run.sh uses into
# .gpupack/ (git-ignored), about 20 MB. Then, on the GPU machine, from a
# copy of the working tree that includes .gpupack/:
#   bash tests/gpu/device_run.sh        (QUICK=1 for the test programs only)
# Usage: tests/gpu/device_pack.sh [BUILD_DIR]   (default build-gpu90)
#   NABLA_CUDA_ARCHITECTURES=90 (H100/H200) by default; 80 for an A100.
#   Data from $NABLA_DATA or ../shared/data (mnist/, tinyshakespeare/).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu90}
arch=${NABLA_CUDA_ARCHITECTURES:-90}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNABLA_CUDA=ON \
  -DNABLA_CUDA_ARCHITECTURES="$arch" -DNABLA_MPI=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" | tail -1
rm -rf .gpu .gpupack
bash tests/gpu/pack_prebuilt.sh "$build" .gpu >/dev/null
mkdir -p .gpupack/data/mnist .gpupack/data/tinyshakespeare
tar cf - -C .gpu . | xz -T2 -6 >.gpupack/prebuilt.tar.xz
rm -rf .gpu
data=""
for d in "${NABLA_DATA:-}" ../shared/data shared/data data; do
  [ -n "$d" ] && [ -d "$d/mnist" ] && { data=$d; break; }
done
if [ -n "$data" ]; then
  cp "$data"/mnist/*-ubyte.gz .gpupack/data/mnist/
  [ -f "$data/tinyshakespeare/input.txt" ] && cp "$data/tinyshakespeare/input.txt" .gpupack/data/tinyshakespeare/
else
  echo "no MNIST found: the training step of run.sh will be skipped there"
fi
# what the binaries were built from, so device_run.sh can tell a stale pack
bash tests/gpu/source_hash.sh >.gpupack/SOURCE_HASH
git rev-parse --short HEAD >.gpupack/COMMIT 2>/dev/null || true
du -sh .gpupack
