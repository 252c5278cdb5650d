#!/usr/bin/env bash
# Installs the Debian packages nabla builds with, if any are missing.
# Sourced or run by the other scripts; safe to run again.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libopenblas-openmp-dev libcmocka-dev zlib1g-dev libcjson-dev libpng-dev libjpeg62-turbo-dev libopenmpi-dev openmpi-bin clang-format python3-onnx)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "nabla: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
