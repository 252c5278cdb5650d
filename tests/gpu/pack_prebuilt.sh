#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that cannot build nabla itself (no
# -dev packages, no network): the nabla binary, the GPU tests, bench_models
# and the shared libraries they need that such a machine may lack (OpenBLAS,
# cJSON, libpng, libjpeg, ...). cuBLAS and cuDNN are NOT packed (hundreds of
# MB): run.sh finds them on the GPU machine (CUDA toolkit or the nvidia-*
# Python wheels PyTorch brings).
# Usage: tests/gpu/pack_prebuilt.sh BUILD_DIR OUT_DIR
#   then on the GPU machine: PREBUILT=1 BUILD_DIR=OUT_DIR tests/gpu/run.sh
set -euo pipefail
build=${1:?usage: pack_prebuilt.sh BUILD_DIR OUT_DIR}
out=${2:?usage: pack_prebuilt.sh BUILD_DIR OUT_DIR}
rm -rf "$out"
mkdir -p "$out/tests" "$out/lib" "$out/bench"
cp "$build/nabla" "$out/"
cp "$build"/tests/test_gpu_* "$out/tests/"
[ -x "$build/bench/bench_models" ] && cp "$build/bench/bench_models" "$out/bench/"
# Libraries outside glibc, the compiler runtime and CUDA's own.
for bin in "$out/nabla" "$out"/tests/* "$out"/bench/*; do
  [ -f "$bin" ] || continue
  ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    case $name in
    libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | libstdc++* | libgcc_s*) ;;
    libcublas* | libcudnn* | libcudart* | libnccl*) ;;
    *) cp -L "$path" "$out/lib/$name" ;;
    esac
  done
done
du -sh "$out"
