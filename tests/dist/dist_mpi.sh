#!/usr/bin/env bash
# Data-parallel training across processes (docs/distributed.md), with
# `mpirun -np 2` on this machine: collectives between real processes, 2
# ranks ending with the same weights and test metrics as 1 process with the
# same global batch (SGD and Adam, clipping on), an exact --resume, a
# mismatched rank failing on every rank, a rank that dies ending the job,
# and `mpirun -np 2 nabla train` (MNIST, when ../shared/data has it).
# Usage: dist_mpi.sh DIST_WORKER TEST_DIST_MPI NABLA REPO_ROOT
# Exit 77 (skipped) without mpirun or in a build without MPI.
set -u
worker=$1
suite=$2
nabla=$3
root=$4
command -v mpirun >/dev/null 2>&1 || { echo "dist_mpi: no mpirun: skipped"; exit 77; }
"$nabla" --version | grep -q "mpi: yes" || { echo "dist_mpi: built without MPI: skipped"; exit 77; }

# CI runs as root, which Open MPI refuses unless told; the job may have more
# ranks than cores (--oversubscribe), and ranks are not pinned to one core
# each (--bind-to none) since other jobs share the machine. MPIEXEC_TIMEOUT
# is Open MPI's own limit on a job: a hang fails the test instead of CI.
# Containers often forbid the cross-process memory copies (CMA) that Open
# MPI's shared-memory transport uses for large messages; plain copies work
# everywhere.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export MPIEXEC_TIMEOUT=120
run2=(mpirun -np 2 --oversubscribe --bind-to none)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
skip=0

ok() { pass=$((pass + 1)); echo "ok: $1"; }
ko() {
  fail=$((fail + 1))
  echo "FAIL: $1"
  [ -f "$tmp/log" ] && sed 's/^/    /' "$tmp/log" | tail -15
}

# expect_ok DESCRIPTION COMMAND...: exit 0
expect_ok() {
  local what=$1
  shift
  if "$@" >"$tmp/log" 2>&1; then ok "$what"; else ko "$what (exit $?)"; fi
  grep "^compare" "$tmp/log" | sed 's/^/    /' # the measured differences
}

expect_ok "collectives between 2 processes" "${run2[@]}" "$suite"

expect_ok "training in 1 process" "$worker" train "$tmp/one"
expect_ok "training in 2 processes" "${run2[@]}" "$worker" train "$tmp/two"
for opt in sgd adam; do
  expect_ok "$opt: 2 processes = 1 process (1e-5 of each tensor's scale)" \
    "$worker" compare "$tmp/one/$opt" "$tmp/two/$opt" 1e-5
done
# rank 0 reads the checkpoint and hands state and position to the others
expect_ok "2 processes: 1 epoch + --resume = 2 epochs, bit for bit" \
  "$worker" compare "$tmp/two/adam" "$tmp/two/rest" 0

# a rank with another batch size: the same clear error on both, no hang
start=$SECONDS
timeout 90 "${run2[@]}" "$worker" train "$tmp/mis" --mismatch >"$tmp/log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
  grep -q "rank 0/2: the ranks disagree on the global batch size (16 on some, 32 on others" "$tmp/log" &&
  grep -q "rank 1/2: the ranks disagree on the global batch size" "$tmp/log"; then
  ok "mismatched batch: error on every rank ($((SECONDS - start)) s)"
else
  ko "mismatched batch (exit $rc)"
fi

# a rank that exits while the other waits in a collective ends the job
start=$SECONDS
timeout 90 "${run2[@]}" "$worker" die >"$tmp/log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $((SECONDS - start)) -lt 60 ]; then
  ok "a dead rank ends the job (exit $rc after $((SECONDS - start)) s)"
else
  ko "a dead rank (exit $rc after $((SECONDS - start)) s)"
fi

# the command line: detected under mpirun, refused without it
"$nabla" train "$root/models/lenet5.cfg" --distributed >"$tmp/log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "needs an MPI launcher: run it as \`mpirun -np N" "$tmp/log"; then
  ok "nabla train --distributed without mpirun: a clear error"
else
  ko "nabla train --distributed without mpirun (exit $rc)"
fi
mnist=$root/../shared/data/mnist
if [ -f "$mnist/train-images-idx3-ubyte.gz" ]; then
  # (its equality with one process is the worker's job above; this checks
  # the command line's own part: detection, rank 0's output and files)
  expect_ok "mpirun -np 2 nabla train" "${run2[@]}" "$nabla" train "$root/models/lenet5.cfg" \
    --data "$mnist" --limit 256 --epochs 1 --batch 32 --threads 1 --out "$tmp/cli"
  if grep -q "2 processes (MPI)" "$tmp/log" && [ "$(grep -c "^epoch 1/1  train loss" "$tmp/log")" -eq 1 ] &&
    [ "$(grep -c "^test accuracy" "$tmp/log")" -eq 1 ] && [ -s "$tmp/cli/weights.safetensors" ] &&
    [ -s "$tmp/cli/checkpoint.safetensors" ] && [ -s "$tmp/cli/log.csv" ]; then
    ok "mpirun -np 2 nabla train: rank 0 alone prints and writes its files"
  else
    ko "mpirun -np 2 nabla train: output and files"
  fi
else
  skip=$((skip + 1))
  echo "skipped: nabla train on MNIST ($mnist not found)"
fi

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
