#!/usr/bin/env bash
# Builds nabla with CUDA and runs every GPU check, then prints a summary:
#   1. test_gpu_backend  device memory, transfers, allocator, faults, OOM
#   2. test_gpu_ops      every op of the op table on cuda:0 against the CPU
#   3. test_gpu_train    the MNIST CNN trained on cpu and cuda:0 side by side
#      test_gpu_nccl     a one-rank NCCL gradient reduction on cuda:0 (known
#                        buffers; MNIST CNN steps equal to plain training)
#      test_gpu_graphs   the same trained with CUDA graphs on and off
#      test_gpu_amp      bf16/f16 matmul and conv kernels against the CPU, and
#                        the MNIST CNN in fp32, bf16 and fp16 side by side
#      test_gpu_transfer pinned uploads: round trips, ordering with a run in
#                        flight, the copy stream overlapping a long run
#      test_gpu_lt       cuBLASLt bias/activation epilogues (Linear + bias,
#                        + relu, + gelu, batched) against the CPU and against
#                        NABLA_CUBLASLT=0: outputs, gradients, f32 and bf16
#   4. nabla train models/mnist_cnn.cfg --device cuda:0 --epochs 2 (needs MNIST),
#      and one epoch on 6400 images with and without NABLA_DIST=self --distributed
#      (gradients through NCCL), which must end with the same losses
#   5. nabla bench on cuda:0 (and on the CPU for comparison), and
#      bench/gpu.sh: nabla vs PyTorch eager on this GPU (if python3 has torch)
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
# NCCL is loaded at run time (docs/cuda.md): point at one when the dynamic
# loader would not find it (PyTorch's nvidia-nccl wheel, a CUDA folder)
if [ -z "${NABLA_NCCL_LIBRARY:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2 '; then
  nccl=$(find /usr/local /opt /usr/lib -name libnccl.so.2 2>/dev/null | head -1)
  if [ -n "$nccl" ]; then
    export NABLA_NCCL_LIBRARY=$nccl
    echo "NABLA_NCCL_LIBRARY=$nccl"
  else
    echo "no libnccl.so.2 found: the NCCL checks will report SKIP"
  fi
fi

# the GPU tests read models/mnist_cnn.cfg from this checkout (prebuilt
# binaries carry the path of the checkout they were built in)
export NABLA_MODELS_DIR="$root/models"

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
gpu_before=$have_gpu
run_test test_gpu_nccl
have_gpu=$gpu_before # its skip means no NCCL, not no GPU
run_test test_gpu_graphs
run_test test_gpu_amp
run_test test_gpu_transfer
run_test test_gpu_lt

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

    # the same training as a one-rank distributed job: gradients through NCCL
    section "nabla train models/mnist_cnn.cfg --device cuda:0, plain and NABLA_DIST=self --distributed"
    out=$(mktemp -d)
    common=(train models/mnist_cnn.cfg --device cuda:0 --epochs 1 --limit 6400 --data "$data" --json)
    if "$nabla" "${common[@]}" --out "$out/plain" >"$build/nccl_plain.json" 2>"$build/nccl_plain.log" &&
      NABLA_DIST=self "$nabla" "${common[@]}" --out "$out/dist" --distributed \
        >"$build/nccl_dist.json" 2>"$build/nccl_dist.log"; then
      cat "$build/nccl_plain.json" "$build/nccl_dist.json"
      # train_loss and test_loss of both runs, and their largest relative difference
      val() { grep -o "\"$2\": [-0-9.eE+]*" "$1" | tail -1 | awk '{print $2}'; }
      cmp=$(awk -v a="$(val "$build/nccl_plain.json" train_loss)" \
        -v b="$(val "$build/nccl_dist.json" train_loss)" \
        -v c="$(val "$build/nccl_plain.json" test_loss)" \
        -v d="$(val "$build/nccl_dist.json" test_loss)" 'function rel(x, y) {
          r = x - y; if (r < 0) r = -r; m = x < 0 ? -x : x; return r / (m > 0 ? m : 1) }
        BEGIN { e = rel(a, b); f = rel(c, d); if (f > e) e = f
          printf "train_loss %s / %s, test_loss %s / %s, max rel diff %.2e %s\n", a, b, c, d, e,
            (a != "" && c != "" && e <= 1e-5) ? "OK" : "DIFFER" }')
      echo "$cmp"
      case $cmp in
      *OK) record "train one-rank NCCL cuda:0" PASS "$cmp" ;;
      *) record "train one-rank NCCL cuda:0" FAIL "${cmp:-see $build/nccl_*.log}" ;;
      esac
    elif grep -q "NCCL not found\|not a usable NCCL" "$build/nccl_dist.log" 2>/dev/null; then
      cat "$build/nccl_dist.log"
      record "train one-rank NCCL cuda:0" SKIP "NCCL cannot be loaded"
    else
      cat "$build/nccl_plain.log" "$build/nccl_dist.log" 2>/dev/null | tail -20
      record "train one-rank NCCL cuda:0" FAIL "see $build/nccl_plain.log, nccl_dist.log"
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
  for prec in bf16 fp16; do # mixed precision (docs/cuda.md)
    section "nabla bench models/cifar_cnn.cfg --device cuda:0 --precision $prec"
    if "$nabla" bench models/cifar_cnn.cfg --device cuda:0 --precision "$prec" 2>&1 |
      tee "$build/bench_cifar_$prec.log"; then
      record "bench cifar_cnn cuda:0 $prec" PASS "$(grep -m1 '^training' \
        "$build/bench_cifar_$prec.log" | tr -s ' ')"
    else
      record "bench cifar_cnn cuda:0 $prec" FAIL "see $build/bench_cifar_$prec.log"
    fi
  done
  section "nabla bench models/mnist_cnn.cfg --device cpu (for comparison)"
  "$nabla" bench models/mnist_cnn.cfg --device cpu --windows 3 2>&1 | tee "$build/bench_cpu.log"
  record "bench mnist_cnn cpu" INFO "$(grep -m1 '^training' "$build/bench_cpu.log" | tr -s ' ')"

  # nabla against PyTorch eager on this GPU (bench/README.md, "GPU");
  # GPU_BENCH=0 leaves it out, GPU_BENCH_ARGS passes options to bench/gpu.sh
  section "bench/gpu.sh: nabla vs PyTorch on cuda:0"
  if [ "${GPU_BENCH:-1}" = 0 ]; then
    record "bench/gpu.sh vs PyTorch" SKIP "GPU_BENCH=0"
  elif ! ${NABLA_BENCH_PYTHON:-python3} -c 'import torch' 2>/dev/null; then
    record "bench/gpu.sh vs PyTorch" SKIP "no python3 with torch"
  elif NABLA_BUILD="$build" bash bench/gpu.sh ${GPU_BENCH_ARGS:-} 2>&1 | tee "$build/gpu_bench.log"; then
    record "bench/gpu.sh vs PyTorch" PASS "$(grep -m1 'Target' "$build/gpu_bench.log")"
  else
    record "bench/gpu.sh vs PyTorch" FAIL "see $build/gpu_bench.log"
  fi
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
