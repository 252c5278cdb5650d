#!/usr/bin/env bash
# Data-parallel training throughput on one machine: the reference MNIST CNN
# (models/mnist_cnn.cfg) trained by `nabla train` as 2 processes x 1 thread
# (mpirun -np 2, each rank bound to a core) against 1 process x 2 threads,
# with the same global batch. Prints images/s per round and the median.
#   bench/dist.sh                      # 3 rounds of 6400 images (100 steps of 64)
#   ROUNDS=5 LIMIT=12800 bench/dist.sh
#   NABLA_BIN=build-x/nabla bench/dist.sh  # use a built nabla (else builds build/bench)
# Needs Open MPI (mpirun) and MNIST (../shared/data/mnist or $NABLA_DATA).
# See docs/distributed.md; a shared machine makes the numbers noisy.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${MODEL:-$root/models/mnist_cnn.cfg}"
limit="${LIMIT:-6400}"
rounds="${ROUNDS:-3}"
batch="${BATCH:-64}"
nabla="${NABLA_BIN:-}"
if [ -z "$nabla" ]; then
  build="${NABLA_BENCH_BUILD:-$root/build/bench}"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DNABLA_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target nabla >/dev/null
  nabla="$build/nabla"
fi
command -v mpirun >/dev/null || { echo "bench/dist.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
"$nabla" --version | grep -q "mpi: yes" || { echo "bench/dist.sh: $nabla was built without MPI" >&2; exit 1; }
# Open MPI refuses root unless told (containers, CI)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(train "$model" --limit "$limit" --epochs 1 --batch "$batch" --json)

ips() { sed -n 's/.*"images_per_sec": \([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "model $(basename "$model"), global batch $batch, $limit images per run, $rounds rounds, $(nproc) cores"
: >"$tmp/one"
: >"$tmp/two"
for r in $(seq "$rounds"); do
  a=$("$nabla" "${args[@]}" --threads 2 --out "$tmp/run1" 2>/dev/null | ips)
  b=$(mpirun -np 2 --bind-to core "$nabla" "${args[@]}" --threads 1 --out "$tmp/run2" 2>/dev/null | ips)
  echo "round $r: 1 process x 2 threads $a img/s, 2 processes x 1 thread $b img/s"
  echo "$a" >>"$tmp/one"
  echo "$b" >>"$tmp/two"
done
echo "median: 1 process x 2 threads $(median <"$tmp/one") img/s, 2 processes x 1 thread $(median <"$tmp/two") img/s"
