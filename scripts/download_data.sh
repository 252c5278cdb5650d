#!/usr/bin/env bash
# Downloads the official dataset files into data/ and verifies their
# SHA-256 checksums. Usage: scripts/download_data.sh [mnist|cifar10|all]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
check() { # sum file: sha256 (64 hex) or, where only that is published, md5 (32 hex)
  if [ ${#1} -eq 64 ]; then echo "$1  $2" | sha256sum -c --status; else echo "$1  $2" | md5sum -c --status; fi
}
fetch() { # url dest checksum
  if [ -f "$2" ] && check "$3" "$2"; then return; fi
  mkdir -p "$(dirname "$2")"
  echo "downloading $1"
  curl -fL --retry 3 -o "$2.part" "$1"
  if ! check "$3" "$2.part"; then
    echo "checksum mismatch for $1" >&2; rm -f "$2.part"; exit 1
  fi
  mv "$2.part" "$2"
}
if [ "$what" = mnist ] || [ "$what" = all ]; then
  base=https://ossci-datasets.s3.amazonaws.com/mnist
  fetch $base/train-images-idx3-ubyte.gz data/mnist/train-images-idx3-ubyte.gz 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
  fetch $base/train-labels-idx1-ubyte.gz data/mnist/train-labels-idx1-ubyte.gz 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
  fetch $base/t10k-images-idx3-ubyte.gz data/mnist/t10k-images-idx3-ubyte.gz 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
  fetch $base/t10k-labels-idx1-ubyte.gz data/mnist/t10k-labels-idx1-ubyte.gz f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
fi
if [ "$what" = cifar10 ] || [ "$what" = all ]; then
  fetch https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz data/cifar-10-binary.tar.gz c32a1d4ab5d03f1284b67883e8d87530
  tar -xzf data/cifar-10-binary.tar.gz -C data
fi
