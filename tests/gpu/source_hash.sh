#!/usr/bin/env bash
# Prints one hash of the sources the GPU pack is built from (C/CUDA sources,
# headers, tests, scripts, CMake and model files under src, include, tools,
# tests, bench): device_pack.sh records it, device_run.sh compares it with
# the tree it runs in. Where git works, the files are the ones a copy of
# the working tree carries (tracked, and untracked but not ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
dirs=(src include tools tests bench CMakeLists.txt)
pattern='\.(c|h|cu|cuh|sh|py|cfg)$|CMakeLists\.txt$'
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files -co --exclude-standard -- "${dirs[@]}")
else
  files=$(find "${dirs[@]}" -type f)
fi
printf '%s\n' "$files" | grep -E "$pattern" | LC_ALL=C sort | tr '\n' '\0' |
  xargs -0 sha256sum | sha256sum | cut -c1-16
