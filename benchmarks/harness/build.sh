#!/usr/bin/env bash
# Build kernel variants as torch-free shared libraries for benchmarks/harness/diag.py.
#   benchmarks/harness/build.sh OUT_DIR NAME [CSRC_DIR] [-DFOO=1 ...]
set -euo pipefail
out=$1 name=$2 csrc=${3:-$(dirname "$0")/../../csrc}
shift 3 || shift $#
mkdir -p "$out"
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
"$nvcc" -O3 -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -lineinfo -I"$csrc" "$@" \
  -shared -Xcompiler -fPIC -o "$out/libpt_$name.so" "$(dirname "$0")/ctypes_harness.cu"
