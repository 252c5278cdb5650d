#!/usr/bin/env bash
# Builds nabla with CUDA and runs every GPU check, then prints a summary:
#   1. test_gpu_backend  device memory, transfers, allocator, faults, OOM
#   2. test_gpu_ops      every op of the op table on cuda:0 against the CPU
#   3. test_gpu_train    the MNIST CNN trained on cpu and cuda:0 side by side
#   4. nabla train models/mnist_cnn.cfg --device cuda:0 --epochs 2 (needs MNIST)
#   5. nabla bench on cuda:0 (and on the CPU for comparison)
#   6. the whole ctest suite on the CUDA build
# Usage (from anywhere, on a machine with an NVIDIA GPU):
#   tests/gpu/run.sh            BUILD_DIR=... to build elsewhere (default build-gpu)
#   QUICK=1 tests/gpu/run.sh    steps 1-3 only
#   PREBUILT=1 BUILD_DIR=dir tests/gpu/run.sh   use binaries built elsewhere
#     (dir/nabla, dir/tests/test_gpu_*): for GPU machines without the -dev
#     packages; step 6 (ctest) is skipped then
# Data for step 4: $NABLA_DATA, ../shared/data, shared/data or data (mnist/);
# on a machine that gets a copy of the working tree only, copy it in first:
#   mkdir -p data && cp -r ../shared/data/mnist data/   (data/ is git-ignored)
# Exit status: 0 when nothing failed (skipped steps do not count), else 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${BUILD_DIR:-build-gpu}
jobs=$(nproc 2>/dev/null || echo 2)
results=()
failed=0

record() { # name status detail
  results+=("$(printf '%-28s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = FAIL ] && failed=1
  return 0
}

section() { printf '\n===== %s =====\n' "$1"; }

section "machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
else
  echo "nvidia-smi not found: the GPU checks will report SKIPPED"
fi

# Build for this GPU only when we can tell which it is (much faster than 80;90).
archs="80;90"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
[ -n "$cap" ] && archs=$cap

if [ "${PREBUILT:-0}" = 1 ]; then
  section "prebuilt binaries in $build"
else
  section "build ($build, CUDA architectures $archs)"
  # (scripts/deps.sh is not run here: GPU machines are often offline, and
  # apt-get would wait on the network. Run it first where packages are missing.)
  if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNABLA_CUDA=ON \
    -DNABLA_CUDA_ARCHITECTURES="$archs" >"$build.configure.log" 2>&1; then
    tail -30 "$build.configure.log"
    echo "configure failed (missing packages? see scripts/deps.sh)"
    exit 1
  fi
  if ! cmake --build "$build" -j"$jobs" 2>&1 | tail -5; then
    echo "build failed"
    exit 1
  fi
fi
case $build in /*) ;; *) build="$root/$build" ;; esac
nabla="$build/nabla"
if [ "${PREBUILT:-0}" = 1 ]; then
  # Packed libraries first, then cuBLAS / cuDNN wherever this machine has
  # them (the CUDA toolkit, or the nvidia-* wheels that PyTorch installs).
  libs="$build/lib"
  for want in libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
    dir=$(find /usr/local /opt /usr/lib -name "$want" 2>/dev/null | head -1)
    [ -n "$dir" ] && libs="$libs:$(dirname "$dir")"
  done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$nabla" | grep -E 'not found|cublas|cudnn' || true
fi
[ -x "$nabla" ] || { echo "build failed: no $nabla"; exit 1; }
"$nabla" --version

run_test() { # name: runs $build/tests/name, records PASS/FAIL/SKIP with its last line
  local name=$1 rc
  section "$name"
  # A time limit, so a hung kernel fails this step instead of the whole run.
  (cd "$build" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} timeout "${GPU_TEST_TIMEOUT:-300}" \
    "tests/$name") 2>&1 | tee "$build/$name.log"
  rc=${PIPESTATUS[0]}
  local last
  last=$(grep -v '^\s*$' "$build/$name.log" | tail -1)
  case $rc in
  0) record "$name" PASS "$last" ;;
  77)
    record "$name" SKIP "$last"
    have_gpu=0
    ;;
  *) record "$name" FAIL "exit $rc: $last" ;;
  esac
}

have_gpu=1
run_test test_gpu_backend
run_test test_gpu_ops
run_test test_gpu_train

if [ "${QUICK:-0}" != 1 ] && [ "$have_gpu" = 0 ]; then
  record "train, bench on cuda:0" SKIP "no GPU"
elif [ "${QUICK:-0}" != 1 ]; then
  section "nabla train models/mnist_cnn.cfg --device cuda:0 --epochs 2"
  data=""
  for d in "${NABLA_DATA:-}" ../shared/data shared/data data; do
    [ -n "$d" ] && [ -d "$d/mnist" ] && { data="$d/mnist"; break; }
  done
  if [ -z "$data" ]; then
    echo "no MNIST data found (set NABLA_DATA to a folder holding mnist/)"
    record "train mnist_cnn cuda:0" SKIP "no MNIST data"
  else
    out=$(mktemp -d)
    start=$(date +%s)
    if "$nabla" train models/mnist_cnn.cfg --device cuda:0 --epochs 2 --data "$data" \
      --out "$out" 2>&1 | tee "$build/train_cuda.log"; then
      secs=$(($(date +%s) - start))
      last=$(grep '^epoch' "$build/train_cuda.log" | tail -1 | tr -s ' ')
      record "train mnist_cnn cuda:0" PASS "${secs}s: ${last:-see $build/train_cuda.log}"
    else
      record "train mnist_cnn cuda:0" FAIL "see $build/train_cuda.log"
    fi
    rm -rf "$out"
  fi

  for model in mnist_cnn lenet5 cifar_cnn; do
    section "nabla bench models/$model.cfg --device cuda:0"
    if "$nabla" bench "models/$model.cfg" --device cuda:0 2>&1 | tee "$build/bench_$model.log"; then
      record "bench $model cuda:0" PASS "$(grep -m1 '^training' "$build/bench_$model.log" |
        tr -s ' ')"
    else
      record "bench $model cuda:0" FAIL "see $build/bench_$model.log"
    fi
  done
  section "nabla bench models/mnist_cnn.cfg --device cpu (for comparison)"
  "$nabla" bench models/mnist_cnn.cfg --device cpu --windows 3 2>&1 | tee "$build/bench_cpu.log"
  record "bench mnist_cnn cpu" INFO "$(grep -m1 '^training' "$build/bench_cpu.log" | tr -s ' ')"
fi

if [ "${QUICK:-0}" != 1 ] && [ "${PREBUILT:-0}" != 1 ]; then
  section "the whole ctest suite on the CUDA build"
  if (cd "$build" && ctest -j"$jobs" --output-on-failure 2>&1 | tee ctest.log | tail -15); then
    record "ctest (all)" PASS "$(grep 'tests passed' "$build/ctest.log")"
  else
    record "ctest (all)" FAIL "$(grep 'tests passed' "$build/ctest.log")"
  fi
fi

section "summary"
for r in "${results[@]}"; do echo "$r"; done
exit $failed
