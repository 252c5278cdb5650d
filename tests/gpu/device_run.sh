#!/usr/bin/env bash
# The GPU machine's half of tests/gpu/device_pack.sh: unpacks the prebuilt
# binaries from .gpupack/ into /tmp/nabla-gpu, puts the packed datasets
# where run.sh looks (data/, git-ignored) and runs every GPU check
# (tests/gpu/run.sh with PREBUILT=1). Everything run.sh prints goes to
# $OUT/gpu_run.log when $OUT is set (the device tool brings $OUT back),
# else to the terminal; its summary is printed either way. Environment
# such as QUICK=1, GPU_BENCH=0, GPU_BENCH_ARGS, GPU_TEST_TIMEOUT passes
# through to run.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -f .gpupack/prebuilt.tar.xz ] || { echo "no .gpupack/prebuilt.tar.xz: run tests/gpu/device_pack.sh first"; exit 1; }
# a pack built from other sources than this tree tests the wrong code
packed=$(cat .gpupack/SOURCE_HASH 2>/dev/null || echo unknown)
here=$(bash tests/gpu/source_hash.sh)
echo "pack: commit $(cat .gpupack/COMMIT 2>/dev/null || echo unknown), sources $packed"
if [ "$packed" != "$here" ]; then
  echo "WARNING: .gpupack was built from other sources than this tree ($here): run"
  echo "         tests/gpu/device_pack.sh again where nabla builds, then carry .gpupack"
  [ "${ALLOW_STALE:-0}" = 1 ] || { echo "(ALLOW_STALE=1 runs it anyway)"; exit 3; }
fi
bin=/tmp/nabla-gpu
rm -rf "$bin" && mkdir -p "$bin" && tar xJf .gpupack/prebuilt.tar.xz -C "$bin" || exit 1
if [ -d .gpupack/data ]; then
  mkdir -p data && cp -r .gpupack/data/. data/
fi
log=${OUT:+$OUT/gpu_run.log}
log=${log:-/dev/stdout}
t0=$(date +%s)
PREBUILT=1 BUILD_DIR=$bin bash tests/gpu/run.sh >"$log" 2>&1
rc=$?
echo "tests/gpu/run.sh: exit $rc after $(($(date +%s) - t0)) s"
[ "$log" != /dev/stdout ] && sed -n '/===== summary/,$p' "$log"
if [ -n "${OUT:-}" ]; then # the per-step logs run.sh leaves in the build folder
  (cd "$bin" && ls ./*.log >/dev/null 2>&1 && tar czf "$OUT/logs.tgz" ./*.log)
fi
exit $rc
